/**
 * The values a simulated lockdownd answers GetValue with (lockdown-afc.md §6): the default domain's
 * keys with real-looking values and the plist types real devices use (§6.1), every domain
 * `ideviceinfo -q` knows (§6.2), and the smaller set a device shows before a session (what
 * libimobiledevice, PMD3 and appium read unauthenticated, §6.2 and §7).
 *
 * Values set with SetValue overlay the built-in ones per domain; RemoveValue drops the overlay.
 */
import { createHash } from 'node:crypto';
import { PlistReal, type PlistDict, type PlistValue } from '../protocol/plist.js';
import type { DeviceIdentity } from './identity.js';

/** The domain name used for "no Domain" in the overlay tables. */
const DEFAULT = '';

/**
 * Default-domain keys visible without a session: lockdown-afc.md §6.2's recommended set plus what
 * real devices show to `ideviceinfo -s` before trust (baseband and chip facts).
 */
export const PRE_SESSION_KEYS: ReadonlySet<string> = new Set([
  'ActivationState', 'BasebandCertId', 'BasebandKeyHashInformation', 'BasebandSerialNumber', 'BasebandVersion',
  'BoardId', 'BuildVersion', 'CPUArchitecture', 'ChipID', 'DeviceClass', 'DeviceColor', 'DeviceName',
  'DevicePublicKey', 'DieID', 'HardwareModel', 'HasSiDP', 'HumanReadableProductVersionString', 'PartitionType',
  'ProductName', 'ProductType', 'ProductVersion', 'ProductionSOC', 'ProtocolVersion', 'SerialNumber',
  'SoftwareBehavior', 'TelephonyCapability', 'UniqueChipID', 'UniqueDeviceID', 'UntrustedHostBUID',
  'WiFiAddress',
]);

/** Keys of other domains visible without a session (LIMD issue #1199 shows these for iTunes). */
const PRE_SESSION_DOMAIN_KEYS: Record<string, ReadonlySet<string>> = {
  'com.apple.mobile.iTunes': new Set(['FamilyID', 'MinITunesVersion', 'MinMacOSVersion', 'iTunesSetupComplete']),
};

/** Every domain `ideviceinfo` knows (§6.2) plus the AMFI one; GetValue on others is MissingValue. */
export const KNOWN_DOMAINS: readonly string[] = [
  'com.apple.disk_usage', 'com.apple.disk_usage.factory', 'com.apple.mobile.battery', 'com.apple.iqagent',
  'com.apple.purplebuddy', 'com.apple.PurpleBuddy', 'com.apple.mobile.chaperone',
  'com.apple.mobile.third_party_termination', 'com.apple.mobile.lockdownd', 'com.apple.mobile.lockdown_cache',
  'com.apple.xcode.developerdomain', 'com.apple.international', 'com.apple.mobile.data_sync',
  'com.apple.mobile.tethered_sync', 'com.apple.mobile.mobile_application_usage', 'com.apple.mobile.backup',
  'com.apple.mobile.nikita', 'com.apple.mobile.restriction', 'com.apple.mobile.user_preferences',
  'com.apple.mobile.sync_data_class', 'com.apple.mobile.software_behavior',
  'com.apple.mobile.iTunes.SQLMusicLibraryPostProcessCommands', 'com.apple.mobile.iTunes.accessories',
  'com.apple.mobile.internal', 'com.apple.mobile.wireless_lockdown', 'com.apple.fairplay', 'com.apple.iTunes',
  'com.apple.mobile.iTunes.store', 'com.apple.mobile.iTunes', 'com.apple.fmip', 'com.apple.Accessibility',
  'com.apple.security.mac.amfi',
];

/** Keys that identify the hardware or software; SetValue on them is ImmutableValue. */
const IMMUTABLE_KEYS: ReadonlySet<string> = new Set([
  'UniqueDeviceID', 'UniqueChipID', 'SerialNumber', 'ProductType', 'ProductVersion', 'BuildVersion',
  'DevicePublicKey', 'HardwareModel', 'HardwarePlatform', 'ChipID', 'BoardId', 'CPUArchitecture', 'DeviceClass',
  'WiFiAddress', 'BluetoothAddress', 'EthernetAddress', 'ModelNumber', 'ProductName', 'DieID',
]);

/**
 * Keys a host may change inside a session, per domain ('' = default domain). DeviceName is what
 * `idevicename NAME` sets; the others are the settings tools are known to toggle.
 */
const WRITABLE_KEYS: Record<string, ReadonlySet<string>> = {
  [DEFAULT]: new Set(['DeviceName', 'TimeZone', 'Uses24HourClock']),
  'com.apple.mobile.wireless_lockdown': new Set(['EnableWifiConnections', 'EnableWifiDebugging']),
  'com.apple.international': new Set(['Language', 'Locale']),
  'com.apple.mobile.iTunes': new Set(['iTunesSetupComplete']),
  'com.apple.Accessibility': new Set([
    'ClosedCaptioningEnabledByiTunes', 'InvertDisplayEnabledByiTunes', 'MonoAudioEnabledByiTunes',
    'SpeakAutoCorrectionsEnabledByiTunes', 'VoiceOverTouchEnabledByiTunes', 'ZoomTouchEnabledByiTunes',
  ]),
};

/** What a GetValue / SetValue / RemoveValue resolves to: a value or a lockdown error string. */
export type ValueResult = { value: PlistValue } | { error: string };

/** Deterministic pseudo-random bytes derived from the identity, so values are stable per device. */
function derived(identity: DeviceIdentity, label: string, bytes: number): Buffer {
  const out: Buffer[] = [];
  for (let i = 0; out.length * 32 < bytes; i++) {
    out.push(createHash('sha256').update(`${identity.udid}/${label}/${i}`).digest());
  }
  return Buffer.concat(out).subarray(0, bytes);
}

function derivedInt(identity: DeviceIdentity, label: string, max: number): number {
  return derived(identity, label, 4).readUInt32BE(0) % max;
}

function digits(identity: DeviceIdentity, label: string, n: number): string {
  return Array.from(derived(identity, label, n), (b) => String(b % 10)).join('');
}

/** A plist integer: a number when it is safe, else a bigint. */
function int(v: bigint): number | bigint {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** The values a simulated device reports; holds SetValue overlays. */
export class DeviceValues {
  readonly #identity: DeviceIdentity;
  /** domain ('' for default) → key → value set by SetValue. */
  readonly #overlay = new Map<string, Map<string, PlistValue>>();

  constructor(identity: DeviceIdentity) {
    this.#identity = identity;
  }

  /**
   * GetValue. `domain`/`key` undefined mean "none given". Without a session only the pre-session
   * subset is visible; a key outside it, an unknown key or an unknown domain is `MissingValue`
   * (the error LIMD issue #1078 shows a device using for an absent value).
   */
  async get(domain: string | undefined, key: string | undefined, inSession: boolean): Promise<ValueResult> {
    const d = domain ?? DEFAULT;
    // The device key is generated lazily, so only a read that includes DevicePublicKey pays for it.
    const withKey = d === DEFAULT && (key === undefined || key === 'DevicePublicKey');
    const all = await this.#domain(d, inSession, withKey);
    if (all === undefined) return { error: 'MissingValue' };
    if (key === undefined) return { value: all };
    const v = all[key];
    return v === undefined ? { error: 'MissingValue' } : { value: v };
  }

  /** SetValue: DeviceName is persisted; UntrustedHostBUID is the one key allowed without a session. */
  async set(domain: string | undefined, key: string, value: PlistValue, inSession: boolean): Promise<ValueResult> {
    const d = domain ?? DEFAULT;
    // usbmuxd's preflight sets UntrustedHostBUID before any pairing (usbmux.md §4.11).
    const preSessionAllowed = d === DEFAULT && key === 'UntrustedHostBUID';
    if (!inSession && !preSessionAllowed) return { error: 'SessionInactive' };
    if (d === DEFAULT && IMMUTABLE_KEYS.has(key)) return { error: 'ImmutableValue' };
    if (!preSessionAllowed && !(WRITABLE_KEYS[d]?.has(key) ?? false)) return { error: 'SetProhibited' };
    if (d === DEFAULT && key === 'DeviceName') {
      if (typeof value !== 'string' || value === '') return { error: 'SetProhibited' };
      await this.#identity.setDeviceName(value);
      return { value };
    }
    let table = this.#overlay.get(d);
    if (table === undefined) this.#overlay.set(d, (table = new Map()));
    table.set(key, value);
    return { value };
  }

  /** RemoveValue: drops a SetValue overlay (DeviceName returns to the model's default). */
  async remove(domain: string | undefined, key: string, inSession: boolean): Promise<ValueResult> {
    if (!inSession) return { error: 'SessionInactive' };
    const d = domain ?? DEFAULT;
    if (d === DEFAULT && key === 'DeviceName') {
      await this.#identity.setDeviceName(`Muxwire\u2019s ${this.#identity.model.deviceClass}`);
      return { value: true };
    }
    const removable = (d === DEFAULT && key === 'UntrustedHostBUID') || (WRITABLE_KEYS[d]?.has(key) ?? false);
    if (!removable) return { error: 'RemoveProhibited' };
    this.#overlay.get(d)?.delete(key);
    return { value: true };
  }

  async #domain(domain: string, inSession: boolean, withKey: boolean): Promise<PlistDict | undefined> {
    let base: PlistDict | undefined;
    if (domain === DEFAULT) base = await this.#defaultDomain(withKey);
    else if (KNOWN_DOMAINS.includes(domain)) base = this.#otherDomain(domain);
    else return undefined;
    const overlay = this.#overlay.get(domain);
    if (overlay) for (const [k, v] of overlay) base[k] = v;
    if (inSession) return base;
    const visible = domain === DEFAULT ? PRE_SESSION_KEYS : PRE_SESSION_DOMAIN_KEYS[domain];
    if (visible === undefined) return undefined;
    const out: PlistDict = {};
    for (const [k, v] of Object.entries(base)) if (visible.has(k)) out[k] = v;
    return out;
  }

  async #defaultDomain(withKey: boolean): Promise<PlistDict> {
    const id = this.#identity;
    const m = id.model;
    const key = withKey ? await id.deviceKey() : undefined;
    const now = Date.now() / 1000;
    const isPhone = m.deviceClass === 'iPhone';
    const [major] = id.versionParts;
    return {
      ActivationState: 'Activated',
      ActivationStateAcknowledged: true,
      BasebandActivationTicketVersion: 'V2',
      BasebandCertId: 2315222105,
      BasebandChipID: 1876193,
      BasebandKeyHashInformation: {
        AKeyStatus: 2,
        SKeyHash: derived(id, 'skeyhash', 32),
        SKeyStatus: 0,
      },
      BasebandMasterKeyHash: derived(id, 'bbmaster', 32).toString('hex').toUpperCase(),
      BasebandRegionSKU: derived(id, 'bbsku', 4),
      BasebandSerialNumber: derived(id, 'bbserial', 12),
      BasebandStatus: 'BBInfoAvailable',
      BasebandVersion: isPhone ? '3.50.00' : undefined,
      BluetoothAddress: id.bluetoothAddress,
      BoardId: m.boardId,
      BootSessionID: derived(id, 'bootsession', 16).toString('hex').toUpperCase(),
      BrickState: false,
      BuildVersion: id.buildVersion,
      CPUArchitecture: m.cpuArchitecture,
      CarrierBundleInfoArray: isPhone
        ? [{ CFBundleIdentifier: 'com.apple.Unknown', CFBundleVersion: '50.0', InternationalMobileSubscriberIdentity: digits(id, 'imsi', 15), IntegratedCircuitCardIdentity: digits(id, 'iccid', 19) }]
        : [],
      CertID: 3840149528,
      ChipID: m.chipId,
      ChipSerialNo: derived(id, 'chipserial', 4),
      DeviceClass: m.deviceClass,
      DeviceColor: '1',
      DeviceName: id.deviceName,
      DevicePublicKey: key ? Buffer.from(key.publicKeyPem, 'utf8') : undefined,
      DieID: int(BigInt('0x' + derived(id, 'die', 7).toString('hex')) & 0x001f_ffff_ffff_ffffn),
      EthernetAddress: id.ethernetAddress,
      FirmwareVersion: `iBoot-${8400 + major * 100}.0.${derivedInt(id, 'iboot', 150)}`,
      FusingStatus: 3,
      HardwareModel: m.hardwareModel,
      HardwarePlatform: m.hardwarePlatform,
      HasSiDP: true,
      HostAttached: true,
      HumanReadableProductVersionString: id.productVersion,
      InternationalMobileEquipmentIdentity: isPhone ? digits(id, 'imei', 15) : undefined,
      InternationalMobileEquipmentIdentity2: isPhone ? digits(id, 'imei2', 15) : undefined,
      MLBSerialNumber: `F${digits(id, 'mlb', 16)}`,
      MobileEquipmentIdentifier: isPhone ? digits(id, 'meid', 14) : undefined,
      MobileSubscriberCountryCode: isPhone ? '310' : undefined,
      MobileSubscriberNetworkCode: isPhone ? '260' : undefined,
      ModelNumber: m.modelNumber,
      NonVolatileRAM: {
        'auto-boot': Buffer.from('true'),
        'backlight-level': Buffer.from('1'),
        'boot-args': Buffer.alloc(0),
        bootdelay: Buffer.from('0'),
      },
      PartitionType: 'GUID_partition_scheme',
      PasswordProtected: false,
      PhoneNumber: isPhone ? '+1 (555) 010-' + digits(id, 'phone', 4) : undefined,
      PkHash: derived(id, 'pkhash', 32),
      ProductName: 'iPhone OS',
      ProductType: id.productType,
      ProductVersion: id.productVersion,
      ProductionSOC: true,
      ProtocolVersion: '2',
      ProximitySensorCalibration: derived(id, 'prox', 48),
      RegionInfo: 'LL/A',
      SIMStatus: isPhone ? 'kCTSIMSupportSIMStatusReady' : undefined,
      SIMTrayStatus: isPhone ? 'kCTSIMSupportSIMTrayInsertedSIM' : undefined,
      SerialNumber: id.serialNumber,
      SoftwareBehavior: derived(id, 'swbehavior', 16),
      SoftwareBundleVersion: undefined,
      SupportedDeviceFamilies: m.deviceClass === 'iPad' ? [2] : [1],
      TelephonyCapability: isPhone,
      TimeIntervalSince1970: new PlistReal(now),
      TimeZone: 'Europe/Berlin',
      TimeZoneOffsetFromUTC: new PlistReal(3600),
      TrustedHostAttached: true,
      UniqueChipID: int(id.uniqueChipId),
      UniqueDeviceID: id.udid,
      UseRaptorCerts: true,
      Uses24HourClock: true,
      WiFiAddress: id.wifiAddress,
      WirelessBoardSerialNumber: derived(id, 'wbsn', 6).toString('hex').toUpperCase(),
      kCTPostponementInfoPRIVersion: isPhone ? '0.1.200' : undefined,
      kCTPostponementInfoServiceProvisioningState: isPhone ? false : undefined,
      kCTPostponementStatus: isPhone ? 'kCTPostponementStatusActivated' : undefined,
    };
  }

  #otherDomain(domain: string): PlistDict {
    const id = this.#identity;
    const GB = 1_000_000_000;
    switch (domain) {
      case 'com.apple.disk_usage':
      case 'com.apple.disk_usage.factory':
        return {
          AmountDataAvailable: 81 * GB + derivedInt(id, 'avail', GB),
          AmountDataReserved: 209_715_200,
          AmountRestoreAvailable: 11 * GB,
          CalendarUsage: 1_048_576,
          CameraUsage: 2 * GB,
          MediaCacheUsage: 0,
          NANDInfo: derived(id, 'nand', 16),
          PhotoUsage: 3 * GB,
          TotalDataAvailable: 81 * GB + 209_715_200,
          TotalDataCapacity: 117 * GB,
          TotalDiskCapacity: 128 * GB,
          TotalSystemAvailable: 0,
          TotalSystemCapacity: 11 * GB,
          WebAppCacheUsage: 0,
        };
      case 'com.apple.mobile.battery':
        return {
          BatteryCurrentCapacity: 60 + derivedInt(id, 'battery', 40),
          BatteryIsCharging: true,
          ExternalChargeCapable: true,
          ExternalConnected: true,
          FullyCharged: false,
          GasGaugeCapability: true,
          HasBattery: true,
        };
      case 'com.apple.international':
        return {
          Keyboard: 'en_US',
          Language: 'en',
          Locale: 'en_US',
          SupportedKeyboards: ['en_US', 'de_DE', 'fr_FR', 'ja_JP-Kana'],
          SupportedLanguages: ['en', 'de', 'fr', 'ja', 'es', 'zh-Hans'],
          SupportedLocales: ['en_US', 'en_GB', 'de_DE', 'fr_FR', 'ja_JP', 'es_ES'],
        };
      case 'com.apple.mobile.wireless_lockdown':
        return {
          BonjourFullServiceName: `${id.wifiAddress}@fe80::${id.wifiAddress.slice(9).replace(/:/g, '')}._apple-mobdev2._tcp.local.`,
          EnableWifiConnections: false,
          SupportsWifi: true,
          SupportsWifiSyncing: true,
          WirelessBuddyID: '',
        };
      case 'com.apple.mobile.iTunes':
        return {
          FamilyID: 10001,
          MinITunesVersion: '12.12.0',
          MinMacOSVersion: '10.15.0',
          iTunesSetupComplete: true,
          DBVersion: 5,
          SupportsAntiPhishing: true,
          SupportsApplicationInstall: true,
        };
      case 'com.apple.mobile.lockdownd':
        return { LogToDisk: false };
      case 'com.apple.mobile.chaperone':
        return { DeviceIsChaperoned: false };
      case 'com.apple.mobile.restriction':
        return { ProhibitAppInstall: false, ProhibitAppDelete: false };
      case 'com.apple.mobile.backup':
        return { CloudBackupEnabled: false, RequiresEncrypt: false, WillEncrypt: false };
      case 'com.apple.mobile.data_sync':
        return { Bookmarks: { AccountNames: ['iCloud'] }, Calendars: { AccountNames: ['iCloud'] }, Contacts: { AccountNames: ['iCloud'] } };
      case 'com.apple.mobile.sync_data_class':
        return { Bookmarks: {}, Calendars: {}, Contacts: {}, Notes: {} };
      case 'com.apple.mobile.software_behavior':
        return { Valid: false, GoogleMail: false };
      case 'com.apple.mobile.user_preferences':
        return { DiagnosticsAllowed: false };
      case 'com.apple.mobile.third_party_termination':
        return { TerminationEnabled: false };
      case 'com.apple.mobile.lockdown_cache':
        return { LastLockdownCacheFlush: new PlistReal(Math.floor(Date.now() / 1000) - 3600) };
      case 'com.apple.xcode.developerdomain':
        return { DeveloperStatus: 'Development' };
      case 'com.apple.fmip':
        return { IsAssociated: false };
      case 'com.apple.purplebuddy':
      case 'com.apple.PurpleBuddy':
        return { SetupDone: true, SetupFinishedAllSteps: true, SetupState: 'SetupUsingAssistant' };
      case 'com.apple.Accessibility':
        return {
          ClosedCaptioningEnabledByiTunes: false,
          InvertDisplayEnabledByiTunes: false,
          MonoAudioEnabledByiTunes: false,
          SpeakAutoCorrectionsEnabledByiTunes: false,
          VoiceOverTouchEnabledByiTunes: false,
          ZoomTouchEnabledByiTunes: false,
        };
      case 'com.apple.security.mac.amfi':
        return { DeveloperModeStatus: false };
      case 'com.apple.mobile.iTunes.store':
        return { AccountKind: '0', AppleID: '', CreditDisplayString: '', DSPersonID: 0, StorefrontCountryCode: 'USA' };
      case 'com.apple.iqagent':
      case 'com.apple.mobile.internal':
      case 'com.apple.mobile.nikita':
      case 'com.apple.mobile.tethered_sync':
      case 'com.apple.mobile.mobile_application_usage':
      case 'com.apple.mobile.iTunes.SQLMusicLibraryPostProcessCommands':
      case 'com.apple.mobile.iTunes.accessories':
      case 'com.apple.fairplay':
      case 'com.apple.iTunes':
      default:
        // Domains real devices answer with an empty or opaque dict to an ordinary host.
        return {};
    }
  }
}
