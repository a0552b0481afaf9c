/**
 * Real USB discovery (usbmux.md §1): Apple devices arriving and leaving, each set up as usbmuxd
 * sets it up (usb-mux-setup.ts) and announced as a DeviceLink, through one of two backends:
 *
 * - `native`: the addon's libusb pipeline (src/accel/usb-host.ts; libusb loaded at run time,
 *   MUXWIRE_LIBUSB_PATH overrides which), hotplug or 1 s polling as libusb allows;
 * - `js`: WebUSB — the `usb` package's WebUSB, or, when MUXWIRE_VUSB_DIR (or `vusbDir`) names a
 *   vusb bus directory, webusb-vusb.ts over the vusb wire, so the TypeScript path can be run
 *   against simulated devices exactly as the native one is through the vusb libusb library.
 *
 * `backend: 'auto'` (the default) takes the native path when the addon loads and libusb loads,
 * else the TypeScript one, and keeps the reason (`backendReason`). The environment switches are
 * src/accel/select.ts's: MUXWIRE_NO_NATIVE=1 forces `js`, MUXWIRE_REQUIRE_NATIVE=1 makes a native
 * path that cannot serve an error.
 *
 * Per device: arrived → opening → setting up → attached → (left / IN pipe failed / stop) ended.
 * A device that is not usbmuxd's (PID outside §1.1), offers no mux interface, or switches mode is
 * left alone; a setup failure is logged and the device is left alone until it is plugged again.
 */
import { EventEmitter } from 'node:events';
import { MuxwireError } from '../errors.js';
import { log as rootLog, type Logger } from '../log.js';
import type { AccelMode } from '../accel/accel.js';
import { isAccelMode, resolveAccel } from '../accel/select.js';
import { NativeUsbHost, type NativeUsbHandle, type UsbArrival } from '../accel/usb-host.js';
import type { DeviceLink, DeviceLinkInfo, DeviceSource } from './device-link.js';
import { isAppleMuxDevice, speedToBitsPerSecond } from './usb-ids.js';
import { setUpMuxDevice, type MuxSetupResult, type UsbSetupHandle } from './usb-mux-setup.js';
import { UsbNativeLink } from './usb-native-link.js';
import { UsbWebUsbLink, webUsbSetupHandle, type WebUsbDevice, type WebUsbLike } from './usb-webusb-link.js';

/** Which USB implementation to use. */
export type UsbBackend = AccelMode;

/** Options of UsbSource. */
export interface UsbSourceOptions {
  /** Default: as the environment says (see the file comment), else `auto`. */
  readonly backend?: UsbBackend;
  /** IN transfers in flight per device. Default 4 (netmuxd's count; usbmuxd keeps 3). */
  readonly inTransfers?: number;
  /** Bytes per IN transfer. Default 49152 (usbmuxd2's USB_MRU; usbmuxd uses 16384). */
  readonly inTransferSize?: number;
  /** Mode to request from devices (1–5, usbmux.md §1.2). Default: leave it alone. */
  readonly desiredMode?: number;
  /** Per control request during setup. Default 1000 ms, as usbmuxd. */
  readonly controlTimeoutMs?: number;
  /** Native: the libusb to load (default MUXWIRE_LIBUSB_PATH, else the system's). */
  readonly libusbPath?: string;
  /** Native: the addon (default build/Release/muxwire.node). */
  readonly addonPath?: string;
  /**
   * Native: poll every 1000 ms instead of waiting for hotplug events (as usbmuxd does where libusb
   * has no hotplug; for containers without udev). Default: MUXWIRE_USB_POLL=1, else false.
   */
  readonly poll?: boolean;
  /** TypeScript: the WebUSB object to use (default: VusbWebUsb when a vusb dir is set, else `usb`'s). */
  readonly webusb?: WebUsbLike;
  /** TypeScript: a vusb bus directory to take devices from (default MUXWIRE_VUSB_DIR). */
  readonly vusbDir?: string;
}

interface Device {
  readonly key: number | WebUsbDevice;
  readonly log: Logger;
  gone: boolean;
  link?: UsbNativeLink | UsbWebUsbLink;
  handle?: NativeUsbHandle;
}

// Measured against usbmuxd's 3 × 16384 with the device in another process (host CPU per MB of a
// device→host stream, vusb library in place of libusb): 4 × 49152 costs about a third less on
// both backends, since one device packet of up to 49152 bytes then completes one transfer instead
// of three. A transfer longer than the device's write is harmless: its short packet ends it.
const DEFAULT_IN_TRANSFERS = 4;
const DEFAULT_IN_TRANSFER_SIZE = 49152;
const WEBUSB_SPEEDS: Record<string, number> = { low: 1, full: 2, high: 3, super: 4, superPlus: 5 };

/**
 * Finds Apple devices on USB. Events: 'attach' (link), 'detach' (link). Never emits 'error':
 * per-device failures are logged.
 */
export class UsbSource extends EventEmitter implements DeviceSource {
  readonly #opts: UsbSourceOptions;
  readonly #log: Logger;
  readonly #inTransfers: number;
  readonly #inTransferSize: number;
  readonly #devices = new Map<number | WebUsbDevice, Device>();
  #backend: 'native' | 'js' | undefined;
  #reason = '';
  #host: NativeUsbHost | undefined;
  #webusb: WebUsbLike | undefined;
  #ownedWebUsb: { close(): Promise<void> } | undefined;
  #running = false;
  #setups = new Set<Promise<void>>();
  #nextAddress = 1;
  readonly #onConnect = (event: { device: WebUsbDevice }): void => this.#webArrived(event.device);
  readonly #onDisconnect = (event: { device: WebUsbDevice }): void => this.#left(event.device);
  #listening = false;

  constructor(opts: UsbSourceOptions = {}) {
    super();
    this.#opts = opts;
    this.#inTransfers = opts.inTransfers ?? DEFAULT_IN_TRANSFERS;
    this.#inTransferSize = opts.inTransferSize ?? DEFAULT_IN_TRANSFER_SIZE;
    if (!Number.isInteger(this.#inTransfers) || this.#inTransfers < 1 || this.#inTransfers > 64) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `inTransfers ${this.#inTransfers} outside 1..64`);
    }
    if (!Number.isInteger(this.#inTransferSize) || this.#inTransferSize < 512 || this.#inTransferSize > 1 << 20) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `inTransferSize ${this.#inTransferSize} outside 512..1048576`);
    }
    if (opts.desiredMode !== undefined && !(Number.isInteger(opts.desiredMode) && opts.desiredMode >= 1 && opts.desiredMode <= 5)) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `desiredMode ${opts.desiredMode} outside 1..5`);
    }
    this.#log = rootLog.child({ usb: 'source' });
  }

  /** The backend in use once started. */
  get backend(): 'native' | 'js' | undefined {
    return this.#backend;
  }

  /** Why that backend was chosen. */
  get backendReason(): string {
    return this.#reason;
  }

  /** Devices currently attached. */
  get attachedCount(): number {
    let n = 0;
    for (const d of this.#devices.values()) if (d.link && !d.link.closed) n++;
    return n;
  }

  /**
   * Chooses the backend and starts discovery; devices already present arrive as 'attach' events
   * once set up.
   * @throws MuxwireError `MUXWIRE_ERR_NATIVE_UNAVAILABLE` / `MUXWIRE_ERR_LIBUSB_UNAVAILABLE` when
   *   the native path is required and cannot serve; `MUXWIRE_ERR_USB_UNAVAILABLE` when no backend
   *   can serve at all.
   */
  async start(): Promise<void> {
    if (this.#running) return;
    const explicit = this.#opts.backend;
    if (explicit !== undefined && !isAccelMode(explicit)) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `USB backend must be auto, native or js, not '${String(explicit)}'`);
    }
    // select.ts interprets the mode and the environment switches the same way for every caller,
    // except that an explicit `auto` under MUXWIRE_NO_NATIVE=1 means TypeScript here (select.ts
    // refuses it as if `native` had been asked for).
    const noNative = process.env.MUXWIRE_NO_NATIVE === '1';
    const mode = explicit === 'auto' && noNative ? 'js' : explicit;
    const { info } = resolveAccel({ mode, addonPath: this.#opts.addonPath });
    // As select.ts: MUXWIRE_REQUIRE_NATIVE=1 makes a native path that cannot serve an error
    // unless `js` was asked for.
    const nativeRequired = explicit === 'native' || (explicit !== 'js' && process.env.MUXWIRE_REQUIRE_NATIVE === '1' && !noNative);
    if (info.selected === 'native') {
      try {
        const host = NativeUsbHost.create({
          libusbPath: this.#opts.libusbPath,
          addonPath: this.#opts.addonPath,
          poll: this.#opts.poll ?? process.env.MUXWIRE_USB_POLL === '1',
          log: this.#log,
        });
        host.on('arrived', (a: UsbArrival) => this.#nativeArrived(a));
        host.on('left', (device: number) => this.#left(device));
        this.#host = host;
        this.#running = true;
        await host.start();
        this.#backend = 'native';
        this.#reason = `libusb loaded from ${host.libusbPath}${host.hotplug ? '' : ', polled every 1000 ms'}`;
        this.#log.info(`USB backend native (${this.#reason})`);
        return;
      } catch (err) {
        this.#running = false;
        this.#host?.stop();
        this.#host = undefined;
        if (nativeRequired) throw err;
        this.#reason = `native USB unavailable: ${(err as Error).message}`;
      }
    } else {
      this.#reason = mode !== explicit ? 'MUXWIRE_NO_NATIVE=1' : info.reason;
    }
    await this.#chooseWebUsb();
    this.#running = true;
    this.#log.info(`USB backend js (${this.#reason})`);
    const usb = this.#webusb!;
    try {
      await usb.getDevices();
    } catch (err) {
      // No USB bus visible (a container without /sys/bus/usb): nothing to find, and no hotplug to
      // watch (the usb package turns a failed watch into an uncaught exception, so none is set).
      this.#log.info(`no USB devices can be listed here: ${(err as Error).message}`);
      return;
    }
    usb.addEventListener('connect', this.#onConnect);
    usb.addEventListener('disconnect', this.#onDisconnect);
    this.#listening = true;
    // Listed again after listening, so a device plugged in between is not missed (#track ignores
    // one already known).
    for (const d of await usb.getDevices().catch(() => [])) this.#webArrived(d);
  }

  /** Ends every link and stops discovery. */
  async stop(): Promise<void> {
    if (!this.#running) return;
    this.#running = false;
    if (this.#webusb && this.#listening) {
      this.#listening = false;
      this.#webusb.removeEventListener('connect', this.#onConnect);
      this.#webusb.removeEventListener('disconnect', this.#onDisconnect);
    }
    await Promise.all([...this.#setups]);
    const closing: Promise<void>[] = [];
    for (const d of [...this.#devices.values()]) {
      d.gone = true;
      d.link?.end();
      if (d.handle) closing.push(d.handle.close());
    }
    // Bounded: a handle whose transfers never call back must not hang shutdown.
    await Promise.race([Promise.all(closing), new Promise((r) => setTimeout(r, 2000).unref())]);
    this.#devices.clear();
    this.#host?.stop();
    this.#host = undefined;
    await this.#ownedWebUsb?.close();
  }

  async #chooseWebUsb(): Promise<void> {
    this.#backend = 'js';
    if (this.#opts.webusb) {
      this.#webusb = this.#opts.webusb;
      return;
    }
    const dir = this.#opts.vusbDir ?? process.env.MUXWIRE_VUSB_DIR;
    if (dir) {
      const { VusbWebUsb } = await import('./webusb-vusb.js');
      const usb = new VusbWebUsb({ dir });
      await usb.start();
      this.#webusb = usb;
      this.#ownedWebUsb = usb;
      this.#reason += `; WebUSB over the vusb bus ${dir}`;
      return;
    }
    try {
      const mod = (await import('usb')) as unknown as { WebUSB: new (o: { allowAllDevices: boolean }) => WebUsbLike };
      this.#webusb = new mod.WebUSB({ allowAllDevices: true });
      this.#reason += '; WebUSB from the usb package';
    } catch (err) {
      throw new MuxwireError('MUXWIRE_ERR_USB_UNAVAILABLE', `no USB backend can serve: ${this.#reason}; the usb package did not load: ${(err as Error).message}`, { cause: err });
    }
  }

  #track(key: number | WebUsbDevice, label: string, run: (d: Device) => Promise<void>): void {
    if (!this.#running || this.#devices.has(key)) return;
    const d: Device = { key, gone: false, log: this.#log.child({ dev: label }) };
    this.#devices.set(key, d);
    const p = run(d)
      .catch((err: Error) => {
        if (!d.gone) d.log.warn(`setting the device up failed: ${err.message}`);
        void d.handle?.close();
        if (this.#devices.get(key) === d && !d.link) this.#devices.delete(key);
      })
      .finally(() => this.#setups.delete(p));
    this.#setups.add(p);
  }

  #nativeArrived(a: UsbArrival): void {
    const label = `${a.bus}-${a.address}`;
    if (!isAppleMuxDevice(a.vendorId, a.productId)) {
      this.#log.debug(`ignoring ${hex4(a.vendorId)}:${hex4(a.productId)} at ${label}: not an iOS device`);
      return;
    }
    this.#track(a.device, label, async (d) => {
      const host = this.#host!;
      const handle = await host.open(a.device);
      d.handle = handle;
      if (d.gone) throw new MuxwireError('MUXWIRE_ERR_NO_DEVICE', 'left during setup');
      const timeout = this.#opts.controlTimeoutMs ?? 1000;
      const setupHandle: UsbSetupHandle = {
        control: (setup, data) => handle.control(setup, data, timeout),
        getConfiguration: () => handle.getConfiguration(),
        setConfiguration: (value, interfaces) => handle.setConfiguration(value, interfaces),
        claimInterface: (n) => handle.claimInterface(n),
      };
      const result = await setUpMuxDevice(setupHandle, { log: d.log, desiredMode: this.#desiredMode(), controlTimeoutMs: timeout });
      if (!this.#ready(d, result)) {
        await handle.close();
        return;
      }
      const info = this.#info(result, a.productId, ((a.bus << 16) | a.address) >>> 0, speedToBitsPerSecond(a.speed));
      const link = new UsbNativeLink(handle, info, result.mux, {
        inTransfers: this.#inTransfers,
        inTransferSize: this.#inTransferSize,
        log: d.log,
        onEnd: (l) => this.#ended(d, l),
      });
      this.#attach(d, link, result);
    });
  }

  #webArrived(device: WebUsbDevice): void {
    if (!isAppleMuxDevice(device.vendorId, device.productId)) return;
    const bus = typeof device.bus === 'number' ? device.bus : Number.parseInt(String(device.bus ?? '0'), 10) || 0;
    const address = device.address ?? this.#nextAddress++;
    this.#track(device, `${bus}-${address}`, async (d) => {
      try {
        await device.open();
      } catch (err) {
        throw new MuxwireError('MUXWIRE_ERR_USB_TRANSFER', `open: ${(err as Error).message}`, { cause: err });
      }
      if (d.gone) throw new MuxwireError('MUXWIRE_ERR_NO_DEVICE', 'disconnected during setup');
      const result = await setUpMuxDevice(webUsbSetupHandle(device), { log: d.log, desiredMode: this.#desiredMode(), controlTimeoutMs: this.#opts.controlTimeoutMs });
      if (!this.#ready(d, result)) {
        await device.close().catch(() => undefined);
        return;
      }
      const speed = speedToBitsPerSecond(WEBUSB_SPEEDS[device.speed ?? ''] ?? 0);
      const info = this.#info(result, device.productId, ((bus << 16) | address) >>> 0, speed);
      const link = new UsbWebUsbLink(device, info, {
        ...result.mux,
        inTransfers: this.#inTransfers,
        inTransferSize: this.#inTransferSize,
        log: d.log,
        onEnd: (l) => this.#ended(d, l),
      });
      this.#attach(d, link, result);
    });
  }

  #desiredMode(): number | undefined {
    if (this.#opts.desiredMode !== undefined) return this.#opts.desiredMode;
    // usbmuxd's switch, honoured only when set (usbmuxd's own default, 1, is what devices with
    // ≤ 4 configurations already are in).
    const env = process.env.USBMUXD_DEFAULT_DEVICE_MODE;
    const n = env === undefined ? NaN : Number.parseInt(env, 10);
    return n >= 1 && n <= 5 ? n : undefined;
  }

  #ready(d: Device, result: MuxSetupResult): result is Extract<MuxSetupResult, { kind: 'ready' }> {
    if (d.gone) throw new MuxwireError('MUXWIRE_ERR_NO_DEVICE', 'left during setup');
    if (result.kind === 'ready') return true;
    d.log.info(result.kind === 'no-mux' ? `no usable usbmux interface (mode ${result.mode})` : `mode switch ${result.from} → ${result.to} requested`);
    this.#devices.delete(d.key);
    return false;
  }

  #info(result: Extract<MuxSetupResult, { kind: 'ready' }>, productId: number, locationId: number, speed: number): DeviceLinkInfo {
    return { serialNumber: result.udid, productId, locationId, speed };
  }

  #attach(d: Device, link: UsbNativeLink | UsbWebUsbLink, result: Extract<MuxSetupResult, { kind: 'ready' }>): void {
    d.link = link;
    d.log.info(`attached ${result.udid} (config ${result.configurationValue}, interface ${result.mux.interfaceNumber}, endpoints ${hex2(result.mux.outEndpoint)}/${hex2(result.mux.inEndpoint)}, ${result.mux.maxPacketSize}-byte packets)`);
    if (!this.#running) {
      link.end();
      return;
    }
    try {
      this.emit('attach', link);
    } catch (err) {
      d.log.error(`'attach' listener threw: ${(err as Error).message}`);
    }
  }

  #left(key: number | WebUsbDevice): void {
    const d = this.#devices.get(key);
    if (!d) return;
    d.gone = true;
    if (d.link) d.link.end(new MuxwireError('MUXWIRE_ERR_NO_DEVICE', 'the device was unplugged'));
    else void d.handle?.close();
  }

  #ended(d: Device, link: DeviceLink): void {
    if (this.#devices.get(d.key) === d) this.#devices.delete(d.key);
    d.log.info('detached');
    try {
      this.emit('detach', link);
    } catch (err) {
      d.log.error(`'detach' listener threw: ${(err as Error).message}`);
    }
  }
}

function hex4(n: number): string {
  return n.toString(16).padStart(4, '0');
}
function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}
