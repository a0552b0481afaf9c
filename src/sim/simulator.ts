/**
 * A whole simulated iPhone: identity, the device side of the mux, lockdownd with pairing and TLS,
 * AFC over a host directory, and the bench services, reachable over the vusb wire (`plug`) or an
 * in-memory link (`inProcessLink`, for `muxwire daemon --simulate N`).
 *
 * ```
 *            ┌────────────── SimulatedDevice ──────────────┐
 *  vusb ───> │ SimUsbDevice ─┐                              │
 *            │               ├─> DeviceMux ─┬─ 62078 Lockdownd ── StartService ─> com.apple.afc
 *  memory ─> │ InProcessLink ┘              ├─ 7 echo · 9 sink · 19 source · 13 reset (serveAfc)
 *            └──────────────────────────────┴──────────────────────────────────────┘
 * ```
 *
 * One host at a time, like one cable: while plugged on a bus the device has no in-process link, and
 * the reverse. Creating a device is cheap: no RSA key is made until lockdownd needs one (identity.ts
 * makes it lazily, or takes it from a shared DeviceKeyPool), so a test may start dozens.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { makeDirectory } from '../make-directory.js';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { MuxwireError } from '../errors.js';
import { log as rootLog } from '../log.js';
import type { Logger } from '../log.js';
import type { DeviceLink } from '../transport/device-link.js';
import { PID_IPHONE, speedToBitsPerSecond } from '../transport/usb-ids.js';
import { serveAfc } from './afc-server.js';
import { DIAGNOSTICS_RELAY_OLD_SERVICE, DIAGNOSTICS_RELAY_SERVICE, serveDiagnosticsRelay } from './diagnostics-relay.js';
import type { DiagnosticsDevice } from './diagnostics-relay.js';
import { AfcRoot } from './afc-fs.js';
import type { AfcServerOptions } from './afc-server.js';
import { serveBenchServices } from './bench-services.js';
import {
  DigestCache,
  INSTALLATION_PROXY_SERVICE,
  MOBILEBACKUP2_SERVICE,
  SPRINGBOARD_SERVICE,
  serveInstallationProxy,
  serveMobileBackup2,
  serveSpringboardServices,
  writeBuiltinContent,
} from './backup/index.js';
import { isPlistDict } from '../protocol/plist.js';
import type { BenchPorts, BenchServicePorts, BenchServices } from './bench-services.js';
import { DeviceMux } from './device-mux.js';
import { DeviceIdentity } from './identity.js';
import type { DeviceKeyPool } from './identity.js';
import { InProcessLink } from './in-process-link.js';
import { Lockdownd } from './lockdownd.js';
import { createServiceRegistry } from './service-registry.js';
import { DevicePorts } from './device-ports.js';
import { SimNetworkSide } from './network-side.js';
import type { TrustMode } from './sim-pairing.js';
import { simSpeedToUsbSpeed } from './usb-descriptors.js';
import type { SimUsbSpeed } from './usb-descriptors.js';
import { SimUsbDevice } from './usb-device.js';

/** The lockdown service name of AFC over the media partition. */
export const AFC_SERVICE = 'com.apple.afc';
/** How long a restarting device stays unplugged (a real one takes tens of seconds; hosts only need to see it go). */
export const RESTART_OFF_MS = 1000;

/** idProduct by device class, as Apple's devices report them (usbmux.md §1.1 range 0x1290–0x12AF). */
const PRODUCT_IDS: Record<string, number> = { iPhone: PID_IPHONE, iPad: 0x12ab, iPod: 0x12aa };

/** Options of {@link SimulatedDevice.create}; everything has a default. */
export interface SimulatedDeviceOptions {
  /** UDID (25-character dashed or 40 hex). Default: made from the model's chip id and a random ECID. */
  udid?: string;
  /** DeviceName. */
  name?: string;
  /** ProductType, e.g. `iPhone15,2`. */
  productType?: string;
  /** ProductVersion, e.g. `17.5`. */
  iosVersion?: string;
  /** Host directory served as the media partition over AFC. Default `<stateDir>/Media`, else a fresh temporary directory removed by close(). */
  afcRoot?: string;
  /**
   * Host directory of the content mobilebackup2 backs up and restores, `<dir>/<Domain>/<path>`.
   * Default `<stateDir>/Backup`, else a fresh temporary directory with a small built-in set, removed by close().
   */
  backupRoot?: string;
  /** Limits of the AFC service (afc-server.ts), e.g. `maxWritePacket`; the defaults are a device's. */
  afc?: Omit<AfcServerOptions, 'root' | 'deviceModel'>;
  /** The Trust dialog: `accept` (default), `deny`, `passcode` or `delay:MS`. */
  trust?: TrustMode | string;
  /** Where identity and trusted hosts persist; without it the device forgets them when it closes. */
  stateDir?: string;
  /** StartService answers EnableServiceSSL (default false). */
  enableServiceSSL?: boolean;
  /** Highest mux version (default 2). */
  muxVersion?: 1 | 2;
  /** Receive window per connection (default 131072). */
  window?: number;
  /** Largest device packet, headers included (default 49152). */
  maxPacketSize?: number;
  /** USB speed on the vusb wire and the speed an in-process link reports (default 'high'). */
  speed?: SimUsbSpeed;
  /** idProduct (default by device class: iPhone 0x12A8, iPad 0x12AB, iPod 0x12AA). */
  productId?: number;
  /** Bench service ports (default 7, 9, 19, 13), or false for none. */
  benchPorts?: BenchPorts | false;
  /** Shared source of pre-generated device keys, for processes that start many devices. */
  keyPool?: DeviceKeyPool;
}

let nextLocation = 1;

/** A simulated iPhone. */
export class SimulatedDevice {
  readonly identity: DeviceIdentity;
  readonly mux: DeviceMux;
  readonly lockdownd: Lockdownd;
  /** The listening ports every link serves (lockdownd, started services). */
  readonly ports: DevicePorts;
  /** Ports of the bench services (absent when turned off). */
  readonly benchPorts: BenchServicePorts;
  /** The directory AFC serves. */
  readonly afcRoot: string;
  /** The content tree mobilebackup2 backs up and restores. */
  readonly backupRoot: string;
  readonly productId: number;
  readonly speed: SimUsbSpeed;

  readonly #bench: BenchServices | undefined;
  readonly #ownsAfcRoot: boolean;
  readonly #ownsBackupRoot: boolean;
  readonly #log: Logger;
  readonly #locationId: number;
  #usb: SimUsbDevice | undefined;
  #link: InProcessLink | undefined;
  #network: SimNetworkSide | undefined;
  #closed = false;

  private constructor(parts: {
    identity: DeviceIdentity;
    mux: DeviceMux;
    ports: DevicePorts;
    lockdownd: Lockdownd;
    bench: BenchServices | undefined;
    afcRoot: string;
    ownsAfcRoot: boolean;
    backupRoot: string;
    ownsBackupRoot: boolean;
    productId: number;
    speed: SimUsbSpeed;
  }) {
    this.identity = parts.identity;
    this.mux = parts.mux;
    this.lockdownd = parts.lockdownd;
    this.ports = parts.ports;
    this.#bench = parts.bench;
    this.benchPorts = parts.bench?.ports ?? {};
    this.afcRoot = parts.afcRoot;
    this.#ownsAfcRoot = parts.ownsAfcRoot;
    this.backupRoot = parts.backupRoot;
    this.#ownsBackupRoot = parts.ownsBackupRoot;
    this.productId = parts.productId;
    this.speed = parts.speed;
    this.#log = rootLog.child({ sim: parts.identity.udid });
    // A bus number no real host controller uses, one address per device: unique in the process.
    const n = nextLocation++;
    this.#locationId = ((0x80 + (n >>> 7)) << 16) | ((n & 0x7f) + 1);
  }

  /** Makes a device: identity (loaded from `stateDir` when there is one), services, lockdownd. */
  static async create(opts: SimulatedDeviceOptions = {}): Promise<SimulatedDevice> {
    const speed = opts.speed ?? 'high';
    if (speed !== 'high' && speed !== 'super') {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `speed '${String(speed)}' is not high or super`);
    }
    const identity = await DeviceIdentity.create({
      ...(opts.udid !== undefined ? { udid: opts.udid } : {}),
      ...(opts.name !== undefined ? { deviceName: opts.name } : {}),
      ...(opts.productType !== undefined ? { productType: opts.productType } : {}),
      ...(opts.iosVersion !== undefined ? { productVersion: opts.iosVersion } : {}),
      ...(opts.stateDir !== undefined ? { stateDir: opts.stateDir } : {}),
      ...(opts.keyPool !== undefined ? { keyPool: opts.keyPool } : {}),
    });
    const productId = opts.productId ?? PRODUCT_IDS[identity.model.deviceClass] ?? PID_IPHONE;
    if (!Number.isInteger(productId) || productId < 0 || productId > 0xffff) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `productId ${productId} is not a 16-bit number`);
    }
    const mux = new DeviceMux({
      ...(opts.muxVersion !== undefined ? { version: opts.muxVersion } : {}),
      ...(opts.window !== undefined ? { window: opts.window } : {}),
      ...(opts.maxPacketSize !== undefined ? { maxPacketSize: opts.maxPacketSize } : {}),
      log: rootLog.child({ sim: identity.udid }),
    });

    let afcRoot = opts.afcRoot;
    let ownsAfcRoot = false;
    if (afcRoot === undefined && opts.stateDir !== undefined) {
      afcRoot = join(opts.stateDir, 'Media');
    } else if (afcRoot === undefined) {
      afcRoot = await mkdtemp(join(tmpdir(), 'muxwire-sim-media-'));
      ownsAfcRoot = true;
    }
    const root = afcRoot;
    // A missing root is made (the caller's, or <state-dir>/Media); one that cannot be served (a
    // file, no permission) fails here with MUXWIRE_ERR_AFC_ROOT, before the device is plugged in
    // and says it is ready, not at each AFC session later.
    if (!ownsAfcRoot) await makeDirectory(root).catch(() => undefined);
    await AfcRoot.open(root);
    let backupRoot = opts.backupRoot;
    let ownsBackupRoot = false;
    if (backupRoot === undefined && opts.stateDir !== undefined) {
      backupRoot = join(opts.stateDir, 'Backup');
      await mkdir(backupRoot, { recursive: true });
    } else if (backupRoot === undefined) {
      backupRoot = await mkdtemp(join(tmpdir(), 'muxwire-sim-backup-'));
      ownsBackupRoot = true;
      await writeBuiltinContent(backupRoot);
    }
    if (!ownsBackupRoot) {
      await mkdir(backupRoot, { recursive: true }).catch((err: unknown) => {
        throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `backup root ${backupRoot}: ${(err as Error).message}`, { cause: err });
      });
    }
    const contentRoot = backupRoot;
    const digests = new DigestCache();
    const backupLog = rootLog.child({ sim: identity.udid, svc: 'mobilebackup2' });
    // lockdownd and the device are made below; the services use them only once a host connects.
    let lockdowndRef: Lockdownd | undefined;
    let deviceRef: SimulatedDevice | undefined;
    const diagnostics: DiagnosticsDevice = {
      productVersion: () => identity.productVersion,
      gestalt: async () => {
        const r = await lockdowndRef!.values.get(undefined, undefined, true);
        const values = 'value' in r && isPlistDict(r.value) ? r.value : {};
        // MobileGestalt's names for what lockdown calls UniqueDeviceID and WiFiAddress.
        return { ...values, UniqueDeviceID: identity.udid, ...(values.WiFiAddress !== undefined ? { WifiAddress: values.WiFiAddress } : {}) };
      },
      restart: () => deviceRef!.restart(),
      shutdown: () => deviceRef!.unplug(),
    };
    const diagnosticsLog = rootLog.child({ sim: identity.udid, svc: 'diagnostics_relay' });
    const services = createServiceRegistry([
      [AFC_SERVICE, (stream) => void serveAfc(stream, { ...opts.afc, root, deviceModel: identity.productType })],
      [
        MOBILEBACKUP2_SERVICE,
        (stream) =>
          void serveMobileBackup2(stream, {
            root: contentRoot,
            udid: identity.udid,
            digests,
            log: backupLog,
            lockdownValues: async () => {
              const r = await lockdowndRef!.values.get(undefined, undefined, true);
              return 'value' in r && isPlistDict(r.value) ? r.value : {};
            },
          }),
      ],
      // The apps a backup lists are the AppDomain-<id> domains of the backup content.
      [INSTALLATION_PROXY_SERVICE, (stream) => serveInstallationProxy(stream, contentRoot)],
      [SPRINGBOARD_SERVICE, (stream) => serveSpringboardServices(stream, contentRoot)],
      [DIAGNOSTICS_RELAY_SERVICE, (stream) => serveDiagnosticsRelay(stream, diagnostics, diagnosticsLog)],
      [DIAGNOSTICS_RELAY_OLD_SERVICE, (stream) => serveDiagnosticsRelay(stream, diagnostics, diagnosticsLog)],
    ]);
    const ports = new DevicePorts(mux);
    const lockdownd = new Lockdownd({
      identity,
      mux: ports,
      services,
      ...(opts.trust !== undefined ? { trust: opts.trust } : {}),
      ...(opts.enableServiceSSL !== undefined ? { enableServiceSSL: opts.enableServiceSSL } : {}),
      ...(opts.stateDir !== undefined ? { stateDir: opts.stateDir } : {}),
    });
    lockdowndRef = lockdownd;
    let bench: BenchServices | undefined;
    try {
      await lockdownd.start();
      bench = opts.benchPorts === false ? undefined : serveBenchServices(mux, opts.benchPorts);
    } catch (err) {
      lockdownd.stop();
      if (ownsAfcRoot) await rm(root, { recursive: true, force: true });
      if (ownsBackupRoot) await rm(contentRoot, { recursive: true, force: true });
      throw err;
    }
    deviceRef = new SimulatedDevice({ identity, mux, ports, lockdownd, bench, afcRoot: root, ownsAfcRoot, backupRoot: contentRoot, ownsBackupRoot, productId, speed });
    return deviceRef;
  }

  get udid(): string {
    return this.identity.udid;
  }

  /** The bus socket while plugged on a vusb bus. */
  get socketPath(): string | undefined {
    return this.#usb?.plugged ? this.#usb.socketPath : undefined;
  }

  /** The USB side while plugged (stats, configuration), for tests and diagnostics. */
  get usb(): SimUsbDevice | undefined {
    return this.#usb;
  }

  /**
   * Plugs the device into the vusb bus directory `busDir` (created if missing) and resolves with its
   * socket path once hosts can open it.
   */
  async plug(busDir: string): Promise<string> {
    this.#checkOpen();
    if (this.#link) throw this.#busy('an in-process link holds it');
    if (this.#usb?.plugged) {
      if (this.#usb.socketPath === join(busDir, `${this.udid}.vusb`)) return this.#usb.socketPath;
      throw this.#busy(`it is plugged at ${this.#usb.socketPath}`);
    }
    // A fresh USB side per plug: it takes the mux's onTransmit for itself.
    this.#usb = new SimUsbDevice({ busDir, udid: this.udid, productId: this.productId, speed: this.speed, mux: this.mux });
    const path = await this.#usb.plug();
    this.#log.debug(`plugged at ${path}`);
    return path;
  }

  /** Unplugs from the bus or the in-process link; every device connection ends. Safe to repeat. */
  async unplug(): Promise<void> {
    const usb = this.#usb;
    this.#usb = undefined;
    if (usb) await usb.unplug();
    this.#link?.unplug();
    this.mux.detach();
  }

  /**
   * Restarts as the diagnostics relay's Restart does: the USB side unplugs (every connection ends,
   * the host sees a detach) and plugs back into the same bus after `offMs`. The identity and the
   * pairings stay. Only on a vusb bus: an in-process link belongs to the daemon that made it.
   */
  async restart(offMs = RESTART_OFF_MS): Promise<void> {
    const path = this.socketPath;
    if (path === undefined) throw new MuxwireError('MUXWIRE_ERR_BUSY', `device ${this.udid} can restart only on a vusb bus`);
    this.#log.info('restarting');
    await this.unplug();
    await new Promise((resolve) => setTimeout(resolve, offMs));
    if (!this.#closed) await this.plug(dirname(path));
  }

  /**
   * A DeviceLink for a host mux engine in this process (`daemon --simulate N`). The device is held
   * until the link closes (either side); asking again while it is held is MUXWIRE_ERR_BUSY.
   */
  inProcessLink(): DeviceLink {
    this.#checkOpen();
    if (this.#link) throw this.#busy('an in-process link holds it already');
    if (this.#usb?.plugged) throw this.#busy(`it is plugged at ${this.#usb.socketPath}`);
    const info = {
      serialNumber: this.udid,
      productId: this.productId,
      locationId: this.#locationId,
      speed: speedToBitsPerSecond(simSpeedToUsbSpeed(this.speed)),
    };
    const link = new InProcessLink(this.mux, info, (released) => {
      if (this.#link === released) this.#link = undefined;
    });
    this.#link = link;
    return link;
  }

  /** The network side while it runs (`startNetwork`). */
  get network(): SimNetworkSide | undefined {
    return this.#network;
  }

  /**
   * Puts the device on the network at `address` (network-side.ts): lockdownd and its services on
   * TCP there, advertised over mDNS unless `advertise` is false. The USB side is not affected.
   */
  async startNetwork(address: string, opts: { advertise?: boolean } = {}): Promise<SimNetworkSide> {
    this.#checkOpen();
    if (this.#network) throw this.#busy(`it is on the network at ${this.#network.address}`);
    const side = new SimNetworkSide(this.ports, {
      address,
      wifiMac: this.identity.wifiAddress,
      hostName: `muxwire-${this.udid.slice(-8).toLowerCase()}`,
      log: this.#log.child({ net: address }),
      ...opts,
    });
    this.#network = side;
    try {
      await side.start();
    } catch (err) {
      this.#network = undefined;
      throw err;
    }
    return side;
  }

  /** Takes the device off the network (mDNS goodbye, listeners and connections closed). */
  async stopNetwork(): Promise<void> {
    const side = this.#network;
    this.#network = undefined;
    await side?.stop();
  }

  /** Unplugs, stops lockdownd and the bench services, and removes a temporary media directory. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.unplug();
    await this.stopNetwork();
    this.lockdownd.stop();
    this.#bench?.close();
    if (this.#ownsAfcRoot) await rm(this.afcRoot, { recursive: true, force: true });
    if (this.#ownsBackupRoot) await rm(this.backupRoot, { recursive: true, force: true });
  }

  #checkOpen(): void {
    if (this.#closed) throw new MuxwireError('MUXWIRE_ERR_CLOSED', `simulated device ${this.udid} was closed`);
  }

  #busy(why: string): MuxwireError {
    return new MuxwireError('MUXWIRE_ERR_BUSY', `simulated device ${this.udid} is in use: ${why}`);
  }
}
