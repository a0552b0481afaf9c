/**
 * Who a simulated device is: UDID, model, iOS version, names, hardware addresses, chip ids, and its
 * RSA-2048 device key (whose public half lockdownd hands out as `DevicePublicKey`, PKCS#1 PEM,
 * lockdown-afc.md §4.1).
 *
 * Many devices in one process must be cheap, so the key is made lazily: nothing is generated until
 * something needs it (GetValue DevicePublicKey, Pair, StartSession). Tests and benchmarks that start
 * many devices can also hand every identity a {@link DeviceKeyPool}, which keeps a few keys
 * generated ahead in the background (node:crypto generates off the main thread), so a device's
 * first Pair does not wait ~100 ms for key generation.
 *
 * With `stateDir`, the identity (including the private key and a renamed DeviceName) lives in
 * `<stateDir>/identity.json`, written atomically (temporary file + rename), and the same device
 * comes back after a restart.
 */
import { randomBytes, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readFile, mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { writeFileAtomic as writeWhole } from '../atomic-file.js';
import { MuxwireError } from '../errors.js';
import { generateRsaKeyPair, publicKeyToPkcs1Pem, type RsaKeyPairPem } from '../lockdown/certificates.js';

/** Code for an identity option or state file that is not usable. */
export const ERR_BAD_IDENTITY = 'MUXWIRE_ERR_BAD_IDENTITY';

/** A device model: what ProductType implies about the hardware. */
export interface DeviceModel {
  productType: string;
  deviceClass: 'iPhone' | 'iPad' | 'iPod';
  hardwareModel: string;
  hardwarePlatform: string;
  chipId: number;
  boardId: number;
  cpuArchitecture: string;
  modelNumber: string;
  marketingName: string;
}

/** Models the simulator knows; an unknown ProductType borrows the closest known hardware. */
export const DEVICE_MODELS: readonly DeviceModel[] = [
  { productType: 'iPhone11,8', deviceClass: 'iPhone', hardwareModel: 'N841AP', hardwarePlatform: 't8020', chipId: 0x8020, boardId: 12, cpuArchitecture: 'arm64e', modelNumber: 'MRY42', marketingName: 'iPhone XR' },
  { productType: 'iPhone12,1', deviceClass: 'iPhone', hardwareModel: 'N104AP', hardwarePlatform: 't8030', chipId: 0x8030, boardId: 4, cpuArchitecture: 'arm64e', modelNumber: 'MWLT2', marketingName: 'iPhone 11' },
  { productType: 'iPhone14,5', deviceClass: 'iPhone', hardwareModel: 'D17AP', hardwarePlatform: 't8110', chipId: 0x8110, boardId: 14, cpuArchitecture: 'arm64e', modelNumber: 'MLPF3', marketingName: 'iPhone 13' },
  { productType: 'iPhone15,2', deviceClass: 'iPhone', hardwareModel: 'D73AP', hardwarePlatform: 't8120', chipId: 0x8120, boardId: 12, cpuArchitecture: 'arm64e', modelNumber: 'MQ0G3', marketingName: 'iPhone 14 Pro' },
  { productType: 'iPhone16,1', deviceClass: 'iPhone', hardwareModel: 'D83AP', hardwarePlatform: 't8130', chipId: 0x8130, boardId: 10, cpuArchitecture: 'arm64e', modelNumber: 'MTUW3', marketingName: 'iPhone 15 Pro' },
  { productType: 'iPad13,4', deviceClass: 'iPad', hardwareModel: 'J517AP', hardwarePlatform: 't8103', chipId: 0x8103, boardId: 8, cpuArchitecture: 'arm64e', modelNumber: 'MHQR3', marketingName: 'iPad Pro (11-inch) (3rd generation)' },
  { productType: 'iPod9,1', deviceClass: 'iPod', hardwareModel: 'N112AP', hardwarePlatform: 't8020', chipId: 0x8020, boardId: 20, cpuArchitecture: 'arm64e', modelNumber: 'MVHV2', marketingName: 'iPod touch (7th generation)' },
];

/** iOS versions and their build numbers (public release builds). */
const BUILDS: Record<string, string> = {
  '12.4': '16G77', '13.3.1': '17D50', '14.8': '18H17', '15.7': '19H12', '16.7.8': '20H343',
  '17.0': '21A329', '17.4.1': '21E236', '17.5': '21F79', '17.5.1': '21F90', '18.0': '22A3354',
};

/** The options a simulated device can be given; everything has a default. */
export interface IdentityOptions {
  udid?: string;
  productType?: string;
  productVersion?: string;
  buildVersion?: string;
  deviceName?: string;
  serialNumber?: string;
  wifiAddress?: string;
  bluetoothAddress?: string;
  ethernetAddress?: string;
  uniqueChipId?: number | bigint;
  /** Where to persist the identity (and, through sim-pairing.ts, the pair records). */
  stateDir?: string;
  /** A private key to use as the device key (PKCS#8 or PKCS#1 PEM). */
  devicePrivateKeyPem?: string;
  /** Source of pre-generated keys (see {@link DeviceKeyPool}). */
  keyPool?: DeviceKeyPool;
}

/** The persisted form (identity.json). */
interface StoredIdentity {
  udid: string;
  productType: string;
  productVersion: string;
  buildVersion: string;
  deviceName: string;
  serialNumber: string;
  wifiAddress: string;
  bluetoothAddress: string;
  ethernetAddress: string;
  uniqueChipId: string;
  devicePrivateKeyPem?: string;
}

/** The device key in the forms lockdownd needs. */
export interface DeviceKey {
  privateKey: KeyObject;
  /** PKCS#1 `-----BEGIN RSA PUBLIC KEY-----` text, as `DevicePublicKey` carries it. */
  publicKeyPem: string;
}

/**
 * Keeps `size` RSA-2048 keys generated ahead, for processes that start many devices. `take()`
 * hands out a ready key when there is one and starts generating a replacement.
 */
export class DeviceKeyPool {
  readonly #size: number;
  readonly #ready: Promise<RsaKeyPairPem>[] = [];

  constructor(size = 2) {
    this.#size = Math.max(1, size);
    this.#fill();
  }

  /** A fresh key pair, never handed out twice. */
  take(): Promise<RsaKeyPairPem> {
    const next = this.#ready.shift() ?? generateRsaKeyPair();
    this.#fill();
    return next;
  }

  #fill(): void {
    while (this.#ready.length < this.#size) {
      const p = generateRsaKeyPair();
      p.catch(() => undefined); // surfaced to whoever takes it
      this.#ready.push(p);
    }
  }
}

const UDID_24 = /^[0-9A-F]{8}-[0-9A-F]{16}$/;
const UDID_40 = /^[0-9a-f]{40}$/;
const VERSION = /^\d+\.\d+(\.\d+)?$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

function hex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

/** A MAC address with Apple's OUI-looking prefix and the locally random rest, lower case. */
function randomMac(prefix: string): string {
  const tail = randomBytes(3).toString('hex').match(/../g)!.join(':');
  return `${prefix}:${tail}`;
}

/** A serial number in Apple's 10-character random form. */
function randomSerial(): string {
  const alphabet = 'CDFGHJKLMNPQRTVWXY0123456789';
  const bytes = randomBytes(10);
  let out = '';
  for (const b of bytes) out += alphabet[b % alphabet.length];
  return out;
}

/** Picks the model for a ProductType (exact, else same family, else the default). */
export function modelFor(productType: string): DeviceModel {
  const exact = DEVICE_MODELS.find((m) => m.productType === productType);
  if (exact) return exact;
  const family = productType.replace(/[\d,]+$/, '');
  const base = DEVICE_MODELS.find((m) => m.productType.startsWith(family) && family !== '') ?? DEVICE_MODELS[3]!;
  return { ...base, productType };
}

/** The simulated device's identity. */
export class DeviceIdentity {
  readonly udid: string;
  readonly productType: string;
  readonly productVersion: string;
  readonly buildVersion: string;
  readonly serialNumber: string;
  readonly wifiAddress: string;
  readonly bluetoothAddress: string;
  readonly ethernetAddress: string;
  /** ECID; the 16 hex digits after the dash in a 25-character UDID. */
  readonly uniqueChipId: bigint;
  readonly model: DeviceModel;
  readonly stateDir: string | undefined;
  #deviceName: string;
  #key: Promise<DeviceKey> | undefined;
  #privateKeyPem: string | undefined;
  readonly #keyPool: DeviceKeyPool | undefined;
  #saving: Promise<void> = Promise.resolve();

  private constructor(stored: StoredIdentity, opts: { stateDir?: string; keyPool?: DeviceKeyPool }) {
    this.udid = stored.udid;
    this.productType = stored.productType;
    this.productVersion = stored.productVersion;
    this.buildVersion = stored.buildVersion;
    this.#deviceName = stored.deviceName;
    this.serialNumber = stored.serialNumber;
    this.wifiAddress = stored.wifiAddress;
    this.bluetoothAddress = stored.bluetoothAddress;
    this.ethernetAddress = stored.ethernetAddress;
    this.uniqueChipId = BigInt(stored.uniqueChipId);
    this.model = modelFor(stored.productType);
    this.stateDir = opts.stateDir;
    this.#privateKeyPem = stored.devicePrivateKeyPem;
    this.#keyPool = opts.keyPool;
  }

  /**
   * Makes an identity from options, or loads the one persisted in `opts.stateDir` (options that are
   * given explicitly win over stored values except the key). Throws MUXWIRE_ERR_BAD_IDENTITY for a
   * malformed UDID, version or MAC address.
   */
  static async create(opts: IdentityOptions = {}): Promise<DeviceIdentity> {
    let stored: Partial<StoredIdentity> = {};
    if (opts.stateDir !== undefined) stored = await readStored(opts.stateDir);
    const productType = opts.productType ?? stored.productType ?? 'iPhone15,2';
    const model = modelFor(productType);
    const productVersion = opts.productVersion ?? stored.productVersion ?? '17.5';
    if (!VERSION.test(productVersion)) {
      throw new MuxwireError(ERR_BAD_IDENTITY, `ProductVersion '${productVersion}' is not X.Y[.Z]`);
    }
    let udid = opts.udid ?? stored.udid;
    let ecid: bigint;
    if (udid === undefined) {
      // ECIDs fit in 53 bits in practice; keep them there so every plist reader gets a number.
      ecid = BigInt('0x' + hex(7)) & 0x001f_ffff_ffff_ffffn;
      udid = `0000${model.chipId.toString(16).toUpperCase().padStart(4, '0')}-${ecid.toString(16).toUpperCase().padStart(16, '0')}`;
    } else if (UDID_24.test(udid)) {
      ecid = BigInt('0x' + udid.slice(9));
    } else if (UDID_40.test(udid)) {
      ecid = BigInt(opts.uniqueChipId ?? stored.uniqueChipId ?? '0x' + udid.slice(0, 13)) & 0x001f_ffff_ffff_ffffn;
    } else {
      throw new MuxwireError(ERR_BAD_IDENTITY, `UDID '${udid}' is neither 8-16 upper-case hex with a dash nor 40 lower-case hex`);
    }
    if (opts.uniqueChipId !== undefined) ecid = BigInt(opts.uniqueChipId);
    const full: StoredIdentity = {
      udid,
      productType,
      productVersion,
      buildVersion: opts.buildVersion ?? stored.buildVersion ?? BUILDS[productVersion] ?? buildFor(productVersion),
      deviceName: opts.deviceName ?? stored.deviceName ?? `Muxwire\u2019s ${model.deviceClass}`,
      serialNumber: opts.serialNumber ?? stored.serialNumber ?? randomSerial(),
      wifiAddress: opts.wifiAddress ?? stored.wifiAddress ?? randomMac('a4:83:e7'),
      bluetoothAddress: opts.bluetoothAddress ?? stored.bluetoothAddress ?? randomMac('a4:83:e7'),
      ethernetAddress: opts.ethernetAddress ?? stored.ethernetAddress ?? randomMac('a4:83:e8'),
      uniqueChipId: ecid.toString(),
      devicePrivateKeyPem: opts.devicePrivateKeyPem ?? stored.devicePrivateKeyPem,
    };
    for (const [name, mac] of [['WiFiAddress', full.wifiAddress], ['BluetoothAddress', full.bluetoothAddress], ['EthernetAddress', full.ethernetAddress]] as const) {
      if (!MAC.test(mac)) throw new MuxwireError(ERR_BAD_IDENTITY, `${name} '${mac}' is not a lower-case colon-separated MAC address`);
    }
    const identity = new DeviceIdentity(full, { stateDir: opts.stateDir, keyPool: opts.keyPool });
    if (full.devicePrivateKeyPem !== undefined) identity.#key = Promise.resolve(keyFromPem(full.devicePrivateKeyPem));
    if (opts.stateDir !== undefined) await identity.save();
    return identity;
  }

  /** The current DeviceName (SetValue can change it). */
  get deviceName(): string {
    return this.#deviceName;
  }

  /** Renames the device and persists the new name when there is a state directory. */
  async setDeviceName(name: string): Promise<void> {
    this.#deviceName = name;
    await this.save();
  }

  /** The ProductVersion as numbers, e.g. [17, 5, 0]. */
  get versionParts(): [number, number, number] {
    const [a = 0, b = 0, c = 0] = this.productVersion.split('.').map((n) => Number(n));
    return [a, b, c];
  }

  /** True when the device key exists already (no generation would happen). */
  get hasKey(): boolean {
    return this.#key !== undefined;
  }

  /** The device key, generated (or taken from the pool) on first use and persisted. */
  deviceKey(): Promise<DeviceKey> {
    if (this.#key === undefined) {
      const source = this.#keyPool ? this.#keyPool.take() : generateRsaKeyPair();
      this.#key = source.then(async (pair) => {
        this.#privateKeyPem = pair.privateKeyPem;
        await this.save();
        return keyFromPem(pair.privateKeyPem);
      });
      this.#key.catch(() => {
        this.#key = undefined; // let a later request try again
      });
    }
    return this.#key;
  }

  /** Writes identity.json (atomically) when there is a state directory; serialised. */
  save(): Promise<void> {
    const dir = this.stateDir;
    if (dir === undefined) return Promise.resolve();
    const data: StoredIdentity = {
      udid: this.udid,
      productType: this.productType,
      productVersion: this.productVersion,
      buildVersion: this.buildVersion,
      deviceName: this.#deviceName,
      serialNumber: this.serialNumber,
      wifiAddress: this.wifiAddress,
      bluetoothAddress: this.bluetoothAddress,
      ethernetAddress: this.ethernetAddress,
      uniqueChipId: this.uniqueChipId.toString(),
      devicePrivateKeyPem: this.#privateKeyPem,
    };
    this.#saving = this.#saving.then(() => writeFileAtomic(join(dir, 'identity.json'), JSON.stringify(data, null, 2) + '\n'));
    return this.#saving;
  }
}

function keyFromPem(pem: string): DeviceKey {
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(pem);
  } catch (err) {
    throw new MuxwireError(ERR_BAD_IDENTITY, `device private key is unreadable: ${(err as Error).message}`, { cause: err });
  }
  if (privateKey.asymmetricKeyType !== 'rsa') throw new MuxwireError(ERR_BAD_IDENTITY, 'device key must be RSA');
  return { privateKey, publicKeyPem: publicKeyToPkcs1Pem(createPublicKey(privateKey)) };
}

/** A plausible build number for a version with no table entry (e.g. 17.3 → 21D…). */
function buildFor(version: string): string {
  const [major = 17, minor = 0] = version.split('.').map(Number);
  const letter = String.fromCharCode(65 + Math.min(25, minor));
  return `${major + 4}${letter}${50 + ((major * 7 + minor * 13) % 40)}`;
}

async function readStored(dir: string): Promise<Partial<StoredIdentity>> {
  let text: string;
  try {
    text = await readFile(join(dir, 'identity.json'), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new MuxwireError(ERR_BAD_IDENTITY, `cannot read ${join(dir, 'identity.json')}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const parsed = JSON.parse(text) as unknown;
    if (typeof parsed !== 'object' || parsed === null) throw new Error('not an object');
    const out: Partial<StoredIdentity> = {};
    for (const [k, v] of Object.entries(parsed)) if (typeof v === 'string') (out as Record<string, string>)[k] = v;
    return out;
  } catch (err) {
    throw new MuxwireError(ERR_BAD_IDENTITY, `${join(dir, 'identity.json')} is not valid identity JSON: ${(err as Error).message}`, { cause: err });
  }
}

/** Writes a file whole (src/atomic-file.ts), mode 0600, making its directory first. */
export async function writeFileAtomic(path: string, data: string | Buffer): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeWhole(path, data, 0o600);
}
