/**
 * The daemon's devices: IDs, mux sessions, and visibility to clients (usbmux.md §4.9, §4.11).
 *
 * ```
 *  attach(link) ─> negotiating ──ready──> preflight (hidden) ──done / trust pending / hideMs──> visible
 *                       │                       │                                            │
 *                       └── link closes ────────┴────────────── link closes ─────────────────┴─> gone
 * ```
 *
 * - IDs start at 1 and only increase; a re-plugged device gets a new one (as usbmuxd in practice).
 * - A hidden device is left out of ListDevices and Listen, but Connect by ID works (as usbmuxd, so
 *   preflight can use the device). Unlike usbmuxd, a device is hidden at most `hideMs` and never
 *   for good: whatever preflight's outcome, it becomes visible (§6.13).
 *
 * Events: 'attached' (entry) when a device becomes visible, 'detached' (entry) when a visible device
 * goes, 'paired' (entry) for a saved pair record of a present device.
 */
import { EventEmitter } from 'node:events';
import { log as rootLog, diagnostics } from '../log.js';
import type { Logger } from '../log.js';
import { DeviceSession } from '../mux/device-session.js';
import type { DeviceLink } from '../transport/device-link.js';
import type { DeviceProperties } from '../protocol/client-plist.js';

/** Where a device is in its life (see the drawing above). */
export type DeviceEntryState = 'negotiating' | 'preflight' | 'visible' | 'gone';

/** One attached device. */
export interface DeviceEntry {
  readonly id: number;
  readonly link: DeviceLink;
  readonly session: DeviceSession;
  readonly properties: DeviceProperties;
  readonly log: Logger;
  state: DeviceEntryState;
}

/**
 * Runs once per device after the mux is up. `announce()` makes the device visible early (the
 * trust dialog is showing); the registry announces it anyway when the promise settles.
 */
export type PreflightHook = (entry: DeviceEntry, announce: () => void) => Promise<void>;

export interface DeviceRegistryOptions {
  preflight?: PreflightHook;
  /** Longest time a device stays hidden while preflight runs (default 3000 ms). */
  hideMs?: number;
  /** Connect timeout handed to each device session (ms). */
  connectTimeoutMs?: number;
}

export class DeviceRegistry extends EventEmitter {
  #nextId = 1;
  #devices = new Map<number, DeviceEntry>();
  #byLink = new Map<DeviceLink, DeviceEntry>();
  #preflight: PreflightHook | undefined;
  #hideMs: number;
  #connectTimeoutMs: number | undefined;
  #closing = false;

  constructor(opts: DeviceRegistryOptions = {}) {
    super();
    this.#preflight = opts.preflight;
    this.#hideMs = opts.hideMs ?? 3000;
    this.#connectTimeoutMs = opts.connectTimeoutMs;
  }

  /** Number of devices attached (visible or not). */
  get size(): number {
    return this.#devices.size;
  }

  /** A device by ID, visible or not (Connect by ID works during preflight, as usbmuxd). */
  get(id: number): DeviceEntry | undefined {
    return this.#devices.get(id);
  }

  /** Devices clients may see, in ID order. */
  visible(): DeviceEntry[] {
    return [...this.#devices.values()].filter((d) => d.state === 'visible');
  }

  /** Every attached device, in ID order. */
  all(): DeviceEntry[] {
    return [...this.#devices.values()];
  }

  /** The present device whose serial number (UDID) is `udid`, if any. */
  findBySerial(udid: string): DeviceEntry | undefined {
    for (const d of this.#devices.values()) if (d.properties.serialNumber === udid) return d;
    return undefined;
  }

  /** Takes a newly attached link: gives it an ID and starts its mux session. */
  attach(link: DeviceLink): DeviceEntry | undefined {
    if (this.#closing || this.#byLink.has(link)) return this.#byLink.get(link);
    const id = this.#nextId++;
    const logger = rootLog.child({ dev: id });
    let session: DeviceSession;
    try {
      session = new DeviceSession(link, { deviceId: id, logger, connectTimeoutMs: this.#connectTimeoutMs });
    } catch (err) {
      // A link that cannot start (already held by another host stack) is left alone, not fatal.
      logger.warn(`cannot start the device link of ${link.info.serialNumber}: ${(err as Error).message}`);
      return undefined;
    }
    const info = link.info;
    const entry: DeviceEntry = {
      id,
      link,
      session,
      log: logger,
      state: 'negotiating',
      properties: {
        deviceId: id,
        productId: info.productId,
        serialNumber: info.serialNumber,
        locationId: info.locationId,
        connectionSpeed: info.speed,
        connectionType: info.network ? 'Network' : 'USB',
        ...(info.network
          ? { networkAddress: info.network.networkAddress, escapedFullServiceName: info.network.serviceName, interfaceIndex: info.network.interfaceIndex }
          : {}),
      },
    };
    this.#devices.set(id, entry);
    this.#byLink.set(link, entry);
    logger.info(`attached ${info.serialNumber} (product 0x${info.productId.toString(16)}, location 0x${info.locationId.toString(16)})`);
    session.once('closed', () => this.#remove(entry));
    session.ready.then(
      () => this.#afterReady(entry),
      (err: Error) => logger.warn(`device not usable: ${err.message}`),
    );
    return entry;
  }

  /** The source reports the link gone (unplug): treat it as the link closing. */
  detach(link: DeviceLink): void {
    const entry = this.#byLink.get(link);
    if (entry === undefined) return;
    entry.session.detach();
  }

  /** A pair record was saved for `udid`, naming `deviceId`: Paired goes out if they match (§4.4). */
  notePaired(udid: string, deviceId: number | undefined): void {
    if (deviceId === undefined || deviceId <= 0) return;
    const entry = this.#devices.get(deviceId);
    if (entry === undefined || entry.properties.serialNumber !== udid) return;
    entry.log.debug('paired');
    this.emit('paired', entry);
  }

  /** Closes every device session (RST to every connection). */
  async close(): Promise<void> {
    this.#closing = true;
    await Promise.all([...this.#devices.values()].map((d) => d.session.close()));
  }

  #afterReady(entry: DeviceEntry): void {
    if (entry.state !== 'negotiating') return;
    const preflight = this.#preflight;
    if (preflight === undefined) {
      this.#announce(entry);
      return;
    }
    entry.state = 'preflight';
    const announce = (): void => this.#announce(entry);
    const timer = setTimeout(announce, this.#hideMs);
    timer.unref();
    preflight(entry, announce)
      .catch((err: unknown) => entry.log.warn(`preflight failed: ${err instanceof Error ? err.message : String(err)}`))
      .finally(() => {
        clearTimeout(timer);
        announce();
      });
  }

  #announce(entry: DeviceEntry): void {
    if (entry.state !== 'preflight' && entry.state !== 'negotiating') return;
    entry.state = 'visible';
    diagnostics.attach.publish({ deviceId: entry.id, serialNumber: entry.properties.serialNumber });
    this.emit('attached', entry);
  }

  #remove(entry: DeviceEntry): void {
    if (entry.state === 'gone') return;
    const wasVisible = entry.state === 'visible';
    entry.state = 'gone';
    this.#devices.delete(entry.id);
    this.#byLink.delete(entry.link);
    entry.log.info('detached');
    if (wasVisible) {
      diagnostics.detach.publish({ deviceId: entry.id, serialNumber: entry.properties.serialNumber });
      this.emit('detached', entry);
    }
  }
}
