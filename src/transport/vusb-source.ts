/**
 * Device discovery on a vusb bus directory (docs/ARCHITECTURE.md "The vusb wire"): every `*.vusb`
 * UNIX socket in the directory is a plugged-in device. The source watches the directory (fs.watch
 * plus an initial scan, and a slow poll as a safety net; every change triggers a rescan of the
 * whole directory, so missed or coalesced events cannot lose a device), connects to each socket,
 * enumerates the device as usbmuxd would (vusb-enumerate.ts) and emits 'attach' with a DeviceLink;
 * the connection ending or the file disappearing emits 'detach'.
 *
 * Per socket file, the states are:
 * ```
 *  connecting ──connect──> enumerating ──mux found──> attached ──EOF / file gone──> (forgotten)
 *      │ ECONNREFUSED: retry with backoff, then stale   │ not an iOS device: ignored
 *      │ ENOENT: forgotten                              │ closed before HELLO (another host holds
 *                                                       │ it): retry in 1 s, as usbmuxd polls
 *                                                       │ misbehaving device: failed
 * ```
 * stale, ignored and failed entries are retried only when the file is replaced (new inode or
 * birth time; not ctime, which a chmod changes), so a broken device costs nothing while it sits there.
 */
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { MuxwireError } from '../errors.js';
import { log as rootLog, type Logger } from '../log.js';
import type { DeviceSource } from './device-link.js';
import { speedToBitsPerSecond } from './usb-ids.js';
import { enumerateMuxDevice } from './vusb-enumerate.js';
import { connectVusb, VusbLink } from './vusb-link.js';
import { sameSocket, VusbBusWatcher, VUSB_SUFFIX, type BusSocket } from './vusb-bus-watcher.js';

/** Options of VusbSource. */
export interface VusbSourceOptions {
  /** The bus directory; created if missing. */
  dir: string;
  /**
   * Bytes per emulated IN transfer. Default 49152, as the native USB backend (usbmuxd2's USB_MRU):
   * a device's largest packet then arrives in one transfer instead of usbmuxd's three of 16384.
   */
  inTransferSize?: number;
  /** Emulated IN transfers in flight. Default 4, as the native USB backend (usbmuxd keeps 3). */
  inTransfersInFlight?: number;
  /** USB bus number for LocationID = (bus << 16) | address. Default 1. */
  busNumber?: number;
  /**
   * A full rescan this often, as a safety net for file systems whose change notifications are
   * unreliable (network mounts, some containers); usbmuxd without hotplug polls every 1000 ms.
   * Default 2000 ms; 0 turns it off.
   */
  pollIntervalMs?: number;
  /**
   * Per control transfer. Default 5000 ms: usbmuxd's 1000 ms is for hardware; a simulated device
   * shares a loaded CI machine with many others.
   */
  controlTimeoutMs?: number;
}

type EntryState = 'connecting' | 'enumerating' | 'attached' | 'ignored' | 'stale' | 'failed' | 'busy' | 'gone';

interface Entry {
  name: string;
  path: string;
  /** Identity of the file we connected to: a replaced socket is a new device. */
  ino: number;
  birthtimeMs: number;
  state: EntryState;
  socket?: Socket;
  link?: VusbLink;
  address?: number;
  attempts: number;
  timer?: NodeJS.Timeout;
  log: Logger;
}

/** ECONNREFUSED retries: a socket file exists a moment before its listener accepts. */
const CONNECT_RETRIES = 6;
const CONNECT_RETRY_BASE_MS = 25;
/** A device held by another host is looked at again after usbmuxd's DEVICE_POLL_TIME. */
const BUSY_RETRY_MS = 1000;
const HELLO_TIMEOUT_MS = 5000;

/**
 * Watches a vusb bus directory. Events: 'attach' (link: DeviceLink), 'detach' (link: DeviceLink),
 * 'error' is never emitted: per-device failures are logged and the device is left alone.
 */
export class VusbSource extends EventEmitter implements DeviceSource {
  readonly dir: string;
  readonly #inTransferSize: number;
  readonly #inTransfersInFlight: number;
  readonly #busNumber: number;
  readonly #controlTimeoutMs: number;
  readonly #pollIntervalMs: number;
  readonly #log: Logger;
  readonly #entries = new Map<string, Entry>();
  readonly #watcher: VusbBusWatcher;
  #starting: Promise<void> | undefined;
  #lastAddress = 0;
  #usedAddresses = new Set<number>();
  #ending = new Set<Promise<void>>();

  constructor(opts: VusbSourceOptions) {
    super();
    this.dir = opts.dir;
    this.#inTransferSize = opts.inTransferSize ?? 49152;
    this.#inTransfersInFlight = opts.inTransfersInFlight ?? 4;
    this.#busNumber = opts.busNumber ?? 1;
    this.#controlTimeoutMs = opts.controlTimeoutMs ?? 5000;
    this.#pollIntervalMs = opts.pollIntervalMs ?? 2000;
    if (!Number.isInteger(this.#pollIntervalMs) || this.#pollIntervalMs < 0) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `pollIntervalMs ${this.#pollIntervalMs} must be a non-negative integer`);
    }
    if (!Number.isInteger(this.#busNumber) || this.#busNumber < 0 || this.#busNumber > 0xffff) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `bus number ${this.#busNumber} is not a u16`);
    }
    if (!Number.isInteger(this.#controlTimeoutMs) || this.#controlTimeoutMs < 1) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `controlTimeoutMs ${this.#controlTimeoutMs} must be a positive integer`);
    }
    this.#log = rootLog.child({ vusb: this.#busNumber });
    this.#watcher = new VusbBusWatcher({
      dir: this.dir,
      pollIntervalMs: this.#pollIntervalMs,
      log: this.#log,
      onScan: (present) => this.#reconcile(present),
    });
  }

  /** Starts watching; resolves after the initial scan has started every connection. */
  start(): Promise<void> {
    this.#starting ??= this.#start().finally(() => (this.#starting = undefined));
    return this.#starting;
  }

  async #start(): Promise<void> {
    if (this.#running) return;
    await this.#watcher.start();
    this.#log.debug(`watching ${this.dir}`);
  }

  /** Stops watching and releases every device; attached ones are detached first. */
  async stop(): Promise<void> {
    await this.#starting?.catch(() => undefined);
    if (!this.#running) return;
    await this.#watcher.stop();
    for (const entry of [...this.#entries.values()]) this.#forget(entry);
    await Promise.all([...this.#ending]);
  }

  /** Devices currently attached. */
  get attachedCount(): number {
    let n = 0;
    for (const e of this.#entries.values()) if (e.state === 'attached') n++;
    return n;
  }

  get #running(): boolean {
    return this.#watcher.running;
  }

  /** Matches the entries to the sockets present: removed or replaced files unplug, new ones plug in. */
  #reconcile(present: Map<string, BusSocket>): void {
    for (const entry of [...this.#entries.values()]) {
      const now = present.get(entry.name);
      if (!now || !sameSocket(now, entry)) {
        entry.log.debug(now ? 'socket file replaced' : 'socket file removed');
        this.#forget(entry);
      }
    }
    for (const [name, id] of present) {
      if (!this.#entries.has(name)) this.#add(name, id.ino, id.birthtimeMs);
    }
  }

  #add(name: string, ino: number, birthtimeMs: number): void {
    const entry: Entry = {
      name, path: join(this.dir, name), ino, birthtimeMs, state: 'connecting', attempts: 0,
      log: this.#log.child({ dev: name.slice(0, -VUSB_SUFFIX.length).slice(0, 8) }),
    };
    this.#entries.set(name, entry);
    this.#connect(entry);
  }

  /** Drops an entry: closes its connection (an attached link then detaches). */
  #forget(entry: Entry): void {
    if (this.#entries.get(entry.name) === entry) this.#entries.delete(entry.name);
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = undefined;
    if (entry.state !== 'attached') entry.state = 'gone';
    if (entry.link) entry.link.close();
    else entry.socket?.destroy();
  }

  #connect(entry: Entry): void {
    entry.state = 'connecting';
    entry.attempts++;
    const socket = connectVusb(entry.path);
    entry.socket = socket;
    const onConnectError = (err: NodeJS.ErrnoException): void => {
      entry.socket = undefined;
      if (entry.state === 'gone' || !this.#running) return;
      if ((err.code === 'ECONNREFUSED' || err.code === 'EAGAIN') && entry.attempts < CONNECT_RETRIES) {
        const delay = CONNECT_RETRY_BASE_MS * 2 ** (entry.attempts - 1);
        entry.timer = setTimeout(() => {
          entry.timer = undefined;
          if (entry.state === 'connecting' && this.#running) this.#connect(entry);
        }, delay);
        return;
      }
      if (err.code === 'ENOENT') {
        this.#forget(entry);
        return;
      }
      entry.state = 'stale';
      entry.log.info(`nothing answers ${entry.path} (${err.code ?? err.message}); waiting for it to be replaced`);
    };
    socket.once('error', onConnectError);
    socket.once('connect', () => {
      socket.off('error', onConnectError);
      if (entry.state === 'gone' || !this.#running) {
        socket.destroy();
        return;
      }
      this.#enumerate(entry, socket);
    });
  }

  #enumerate(entry: Entry, socket: Socket): void {
    entry.state = 'enumerating';
    let resolveEnded!: () => void;
    const ended = new Promise<void>((r) => (resolveEnded = r));
    this.#ending.add(ended);
    const link = new VusbLink(socket, {
      inTransferSize: this.#inTransferSize,
      inTransfersInFlight: this.#inTransfersInFlight,
      controlTimeoutMs: this.#controlTimeoutMs,
      log: entry.log,
    }, (err) => {
      this.#linkEnded(entry, link, err);
      this.#ending.delete(ended);
      resolveEnded();
    });
    entry.link = link;
    void this.#setUp(entry, link);
  }

  async #setUp(entry: Entry, link: VusbLink): Promise<void> {
    let speed: number;
    try {
      speed = await link.hello(HELLO_TIMEOUT_MS);
    } catch (err) {
      // Closed before HELLO: the device accepted and dropped us, which is what it does while
      // another host stack holds it. Look again later, as usbmuxd's poll would.
      if (entry.state === 'enumerating') entry.state = 'busy';
      entry.log.debug(`no HELLO: ${(err as Error).message}`);
      link.close();
      return;
    }
    try {
      const found = await enumerateMuxDevice(link, entry.log);
      if (entry.state !== 'enumerating') return;
      if (!found) {
        entry.state = 'ignored';
        link.close();
        return;
      }
      const address = this.#allocateAddress();
      entry.address = address;
      link.bindMux(
        {
          serialNumber: found.udid,
          productId: found.device.idProduct,
          locationId: ((this.#busNumber << 16) | address) >>> 0,
          speed: speedToBitsPerSecond(speed),
        },
        { outEndpoint: found.mux.outEndpoint, inEndpoint: found.mux.inEndpoint, maxPacketSize: found.mux.maxPacketSize },
      );
      entry.state = 'attached';
      entry.log.info(`attached ${found.udid} (config ${found.configurationValue}, ${found.mux.maxPacketSize}-byte packets, address ${address})`);
      this.#emitSafely('attach', link);
    } catch (err) {
      if (entry.state !== 'enumerating') return;
      entry.state = 'failed';
      entry.log.warn(`enumeration failed: ${(err as Error).message}`);
      link.close();
    }
  }

  #linkEnded(entry: Entry, link: VusbLink, err?: Error): void {
    if (entry.address !== undefined) this.#usedAddresses.delete(entry.address);
    entry.link = undefined;
    entry.socket = undefined;
    const was = entry.state;
    if (was === 'attached') {
      entry.log.info(`detached${err ? `: ${err.message}` : ''}`);
      if (this.#entries.get(entry.name) === entry) this.#entries.delete(entry.name);
      entry.state = 'gone';
      this.#emitSafely('detach', link);
      // The file may still be there (the device re-enumerated): look again.
      this.#watcher.rescan();
    } else if ((was === 'busy' || was === 'enumerating') && this.#running && this.#entries.get(entry.name) === entry) {
      // Dropped before or during enumeration: held by another host, or re-enumerating. Look
      // again after a poll interval (a removed file is noticed by the scan before that).
      entry.state = 'busy';
      entry.timer = setTimeout(() => {
        entry.timer = undefined;
        if (entry.state === 'busy' && this.#running) {
          entry.attempts = 0;
          this.#connect(entry);
        }
      }, BUSY_RETRY_MS);
    }
  }

  /** USB addresses run 1..127; like a host controller, take the next free one after the last. */
  #allocateAddress(): number {
    for (let i = 1; i <= 127; i++) {
      const candidate = ((this.#lastAddress + i - 1) % 127) + 1;
      if (!this.#usedAddresses.has(candidate)) {
        this.#usedAddresses.add(candidate);
        this.#lastAddress = candidate;
        return candidate;
      }
    }
    throw new MuxwireError('MUXWIRE_ERR_BUS_FULL', `more than 127 devices on vusb bus ${this.#busNumber}`);
  }

  #emitSafely(event: 'attach' | 'detach', link: VusbLink): void {
    try {
      this.emit(event, link);
    } catch (err) {
      this.#log.error(`'${event}' listener threw: ${(err as Error).message}`);
    }
  }
}
