/**
 * The native USB pipeline (native/usb-host.cc) seen from TypeScript: discovery events, device
 * handles, control transfers as promises, the bulk IN pipeline and bulk OUT sends. This is the only
 * user of the addon's `UsbHost` class; src/transport/ builds device links on it.
 *
 * libusb's events are handled on this thread's libuv loop (the addon watches libusb's pollfds, as
 * usbmuxd does with its poll loop), and each round's events are handed over right after it; where
 * libusb cannot be polled from outside, or `eventThread` asks for it, a thread of the addon's
 * handles them and wakes this one per round. Either way events arrive in batches (never keeping an
 * idle Node alive), as a Uint32Array of records and an array of Buffers (control data):
 *
 * ```
 * record (8 × u32):  0 kind  1 device  2 handle  3 request  4 status (i32)  5 length  6 aux1  7 aux2
 *   1 ARRIVED       aux1 = idVendor << 16 | idProduct ; aux2 = bus << 16 | address << 8 | speed
 *   2 LEFT          device
 *   3 IN_DATA       handle ; one completed IN transfer: length bytes at offset aux1 of the
 *                   handle's IN region ; aux2 = its buffer's index
 *   4 IN_END        handle ; status = the libusb transfer status that ended the IN pipe
 *   5 OUT_DONE      handle, request ; status ; length = bytes sent
 *   6 CONTROL_DONE  handle, request ; status ; buffers[i] = IN data stage
 *   7 CLOSED        handle (transfers finished, interface released, libusb handle closed)
 * ```
 *
 * A Buffer handed to `send` stays referenced here until its OUT_DONE, since libusb reads it in
 * place (no copy), as node-usb pins a buffer while a transfer holds it.
 *
 * IN transfers read straight into the handle's IN region, a Buffer the addon allocates in startIn
 * and pins until the handle is closed (twice as many buffers as transfers in flight): each IN_DATA
 * is a view of one buffer, which goes back in flight once the batch's callback has returned. A
 * consumer that `borrow`s reads the view in place; others get a copy.
 */
import { EventEmitter } from 'node:events';
import { MuxwireError } from '../errors.js';
import { log as rootLog, type Logger } from '../log.js';
import { loadAddon } from './addon-loader.js';

/** Must equal kUsbAbiVersion in native/usb-binding.cc. */
export const USB_HOST_ABI_VERSION = 6;
const EVENT_FIELDS = 8;

const enum EventKind {
  ARRIVED = 1,
  LEFT = 2,
  IN_DATA = 3,
  IN_END = 4,
  OUT_DONE = 5,
  CONTROL_DONE = 6,
  CLOSED = 7,
}

/** libusb_transfer_status values. */
export const enum TransferStatus {
  COMPLETED = 0,
  ERROR = 1,
  TIMED_OUT = 2,
  CANCELLED = 3,
  STALL = 4,
  NO_DEVICE = 5,
  OVERFLOW = 6,
}

const STATUS_NAMES = ['COMPLETED', 'ERROR', 'TIMED_OUT', 'CANCELLED', 'STALL', 'NO_DEVICE', 'OVERFLOW'];

/** The raw class the addon exports (native/usb-binding.cc). */
interface RawUsbHost {
  start(poll: boolean, eventThread: boolean): Promise<number>;
  stop(): void;
  info(): { path: string; hotplug: boolean; events: '' | 'loop' | 'thread' };
  open(device: number): Promise<number>;
  getConfiguration(handle: number): Promise<number>;
  setConfiguration(handle: number, value: number, interfaces: number[]): Promise<number>;
  claimInterface(handle: number, interfaceNumber: number): Promise<number>;
  control(handle: number, request: number, bmRequestType: number, bRequest: number, wValue: number,
    wIndex: number, wLength: number, data: Uint8Array | null, timeoutMs: number): number;
  /** The IN region (Buffer) on success, else a libusb error. */
  startIn(handle: number, inEndpoint: number, outEndpoint: number, maxPacket: number, count: number, size: number): Buffer | number;
  send(handle: number, request: number, data: Uint8Array): number;
  closeHandle(handle: number): number;
  errorName(code: number): string;
  ref(): void;
  unref(): void;
}

/**
 * Counts awaits on native events: while one is pending the event function is ref'd, so Node does
 * not exit under a pending control transfer or close; at zero it is unref'd again, so an idle host
 * (IN transfers waiting on a quiet device) never keeps Node alive.
 */
class Keepalive {
  readonly #raw: RawUsbHost;
  #count = 0;
  constructor(raw: RawUsbHost) {
    this.#raw = raw;
  }
  hold(): void {
    if (this.#count++ === 0) this.#raw.ref();
  }
  release(): void {
    if (--this.#count === 0) this.#raw.unref();
  }
}
interface RawUsbHostConstructor {
  readonly abiVersion: number;
  new (libusbPath: string, onEvents: (records: Uint32Array, buffers: (Buffer | undefined)[]) => void): RawUsbHost;
}

/** A device announced by discovery (VID 0x05AC only; the PID is checked by the caller). */
export interface UsbArrival {
  readonly device: number;
  readonly vendorId: number;
  readonly productId: number;
  readonly bus: number;
  readonly address: number;
  /** libusb_speed: 1 low, 2 full, 3 high, 4 super, 5 super-plus, 0 unknown. */
  readonly speed: number;
}

/** A control request's setup packet (USB 2.0 §9.3). */
export interface ControlSetup {
  readonly bmRequestType: number;
  readonly bRequest: number;
  readonly wValue: number;
  readonly wIndex: number;
  readonly wLength: number;
}

/** Options of {@link NativeUsbHost.create}. */
export interface NativeUsbHostOptions {
  /** The libusb to dlopen. Default: MUXWIRE_LIBUSB_PATH, else the system's libusb-1.0. */
  readonly libusbPath?: string;
  /** The addon; default build/Release/muxwire.node (tests point elsewhere to simulate none). */
  readonly addonPath?: string;
  /**
   * Poll for devices every 1000 ms (usbmuxd's DEVICE_POLL_TIME) even where libusb has hotplug:
   * for hosts whose hotplug events never come (containers without udev). Default false.
   */
  readonly poll?: boolean;
  /**
   * Handle libusb's events on a thread of the addon's instead of this thread's libuv loop (the
   * fallback where libusb cannot be polled from outside). Default: MUXWIRE_USB_EVENT_THREAD=1.
   */
  readonly eventThread?: boolean;
  readonly log?: Logger;
}

/** Turns a libusb transfer status into a coded error. */
export function transferError(status: number, what: string): MuxwireError {
  const name = STATUS_NAMES[status] ?? `status ${status}`;
  switch (status) {
    case TransferStatus.STALL:
      return new MuxwireError('MUXWIRE_ERR_USB_STALL', `${what}: the device stalled`, { detail: status });
    case TransferStatus.NO_DEVICE:
      return new MuxwireError('MUXWIRE_ERR_NO_DEVICE', `${what}: the device is gone`, { detail: status });
    case TransferStatus.CANCELLED:
      return new MuxwireError('MUXWIRE_ERR_CLOSED', `${what}: cancelled, the device was closed`, { detail: status });
    case TransferStatus.TIMED_OUT:
      return new MuxwireError('MUXWIRE_ERR_TIMEOUT', `${what}: timed out`, { detail: status });
    default:
      return new MuxwireError('MUXWIRE_ERR_USB_TRANSFER', `${what}: LIBUSB_TRANSFER_${name}`, { detail: status });
  }
}

/** Turns a (negative) libusb error code into a coded error. */
function libusbError(code: number, name: string, what: string): MuxwireError {
  if (code === -4) return new MuxwireError('MUXWIRE_ERR_NO_DEVICE', `${what}: ${name}`, { detail: code });
  if (code === -9) return new MuxwireError('MUXWIRE_ERR_USB_STALL', `${what}: ${name}`, { detail: code });
  if (code === -6) return new MuxwireError('MUXWIRE_ERR_BUSY', `${what}: ${name}`, { detail: code });
  if (code === -7) return new MuxwireError('MUXWIRE_ERR_TIMEOUT', `${what}: ${name}`, { detail: code });
  return new MuxwireError('MUXWIRE_ERR_USB_TRANSFER', `${what}: ${name}`, { detail: code });
}

function rejected(err: unknown, what: string): MuxwireError {
  const e = err as { message?: string; libusbError?: number };
  return libusbError(e.libusbError ?? -99, e.message ?? String(err), what);
}

/**
 * One libusb context and its event handling. Events: 'arrived' (UsbArrival), 'left' (device id).
 */
export class NativeUsbHost extends EventEmitter {
  readonly #raw: RawUsbHost;
  readonly #keepalive: Keepalive;
  readonly #handles = new Map<number, NativeUsbHandle>();
  readonly #log: Logger;
  readonly #poll: boolean;
  readonly #eventThread: boolean;
  #hotplug = false;
  #stopped = false;

  /**
   * Loads the addon and libusb and creates a context.
   * @throws MuxwireError `MUXWIRE_ERR_NATIVE_UNAVAILABLE` when the addon does not load or has no
   *   USB host of this version; `MUXWIRE_ERR_LIBUSB_UNAVAILABLE` when libusb does not load or
   *   initialise (the reason is in the message).
   */
  static create(options: NativeUsbHostOptions = {}): NativeUsbHost {
    const load = loadAddon(options.addonPath);
    if (!load.ok) {
      throw new MuxwireError('MUXWIRE_ERR_NATIVE_UNAVAILABLE', `native addon did not load from ${load.path ?? '(no package root)'}: ${load.error.message.split('\n')[0]}`, { cause: load.error });
    }
    const Ctor = (load.binding as unknown as { UsbHost?: RawUsbHostConstructor }).UsbHost;
    if (typeof Ctor !== 'function' || Ctor.abiVersion !== USB_HOST_ABI_VERSION) {
      throw new MuxwireError('MUXWIRE_ERR_NATIVE_UNAVAILABLE', `the addon at ${load.path} has no USB host of ABI ${USB_HOST_ABI_VERSION}: rebuild it (npx node-gyp rebuild)`);
    }
    return new NativeUsbHost(Ctor, options);
  }

  private constructor(Ctor: RawUsbHostConstructor, options: NativeUsbHostOptions) {
    super();
    this.#log = options.log ?? rootLog.child({ usb: 'native' });
    this.#poll = options.poll ?? false;
    this.#eventThread = options.eventThread ?? process.env.MUXWIRE_USB_EVENT_THREAD === '1';
    const path = options.libusbPath ?? process.env.MUXWIRE_LIBUSB_PATH ?? '';
    try {
      this.#raw = new Ctor(path, (records, buffers) => this.#onEvents(records, buffers));
    } catch (err) {
      throw new MuxwireError('MUXWIRE_ERR_LIBUSB_UNAVAILABLE', (err as Error).message, { cause: err });
    }
    this.#keepalive = new Keepalive(this.#raw);
  }

  /** Where libusb was loaded from. */
  get libusbPath(): string {
    return this.#raw.info().path;
  }

  /**
   * Where libusb's events are handled once started: `'loop'` (this thread's libuv loop) or
   * `'thread'` (a thread of the addon's); `''` before start.
   */
  get events(): '' | 'loop' | 'thread' {
    return this.#raw.info().events;
  }

  /** Whether libusb reports devices through hotplug (else it is polled every second). */
  get hotplug(): boolean {
    return this.#hotplug;
  }

  /**
   * Creates the libusb context (on a worker: it may block) and starts discovery: devices present
   * now and later arrive as 'arrived' events.
   * @throws MuxwireError `MUXWIRE_ERR_LIBUSB_UNAVAILABLE` when libusb_init fails.
   */
  async start(): Promise<void> {
    try {
      this.#hotplug = (await this.#raw.start(this.#poll, this.#eventThread)) === 1;
    } catch (err) {
      throw new MuxwireError('MUXWIRE_ERR_LIBUSB_UNAVAILABLE', `libusb_init failed: ${(err as Error).message}`, { cause: err });
    }
    this.#log.debug(`libusb ${this.libusbPath}: ${this.#hotplug ? 'hotplug' : 'polling every 1000 ms'}, events on the ${this.events === 'loop' ? 'Node loop' : 'event thread'}`);
  }

  /** Cancels every transfer, closes every handle and ends event handling. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#raw.stop();
    for (const h of this.#handles.values()) h._closed();
    this.#handles.clear();
  }

  /** Opens a device announced by 'arrived'. Rejects with a coded error (NO_DEVICE, ACCESS…). */
  async open(device: number): Promise<NativeUsbHandle> {
    if (this.#stopped) throw new MuxwireError('MUXWIRE_ERR_CLOSED', 'the USB host is stopped');
    let id: number;
    try {
      id = await this.#raw.open(device);
    } catch (err) {
      throw rejected(err, `opening device ${device}`);
    }
    const handle = new NativeUsbHandle(this.#raw, this.#keepalive, id, device);
    this.#handles.set(id, handle);
    return handle;
  }

  #onEvents(records: Uint32Array, buffers: (Buffer | undefined)[]): void {
    // Runs inside the addon's thread-safe-function call: nothing may throw out of it.
    for (let i = 0, r = 0; r < records.length; i++, r += EVENT_FIELDS) {
      try {
        this.#dispatch(records, r, buffers[i]);
      } catch (err) {
        this.#log.error(`USB event handler threw: ${(err as Error).stack ?? String(err)}`);
      }
    }
  }

  #dispatch(records: Uint32Array, r: number, data: Buffer | undefined): void {
    const kind = records[r]!;
    if (kind === EventKind.ARRIVED) {
      const aux1 = records[r + 6]!;
      const aux2 = records[r + 7]!;
      const arrival: UsbArrival = {
        device: records[r + 1]!, vendorId: aux1 >>> 16, productId: aux1 & 0xffff,
        bus: aux2 >>> 16, address: (aux2 >>> 8) & 0xff, speed: aux2 & 0xff,
      };
      this.emit('arrived', arrival);
      return;
    }
    if (kind === EventKind.LEFT) {
      this.emit('left', records[r + 1]!);
      return;
    }
    const handle = this.#handles.get(records[r + 2]!);
    if (handle === undefined) return;
    const status = records[r + 4]! | 0;
    switch (kind) {
      case EventKind.IN_DATA:
        handle._inData(records[r + 6]!, records[r + 5]!);
        return;
      case EventKind.IN_END:
        handle._inEnd(status);
        return;
      case EventKind.OUT_DONE:
        handle._outDone(records[r + 3]!, status);
        return;
      case EventKind.CONTROL_DONE:
        handle._controlDone(records[r + 3]!, status, data);
        return;
      case EventKind.CLOSED:
        this.#handles.delete(handle.id);
        handle._closed();
        return;
    }
  }
}

interface PendingControl {
  setup: ControlSetup;
  resolve(data: Buffer): void;
  reject(err: Error): void;
}

/** What the IN pipeline reports. */
export interface InHandlers {
  /** One completed IN transfer's bytes: a copy of its own, or with `borrow` a view of the
   * transfer's buffer, which goes back to libusb once this batch's callbacks have returned. */
  onData(chunk: Buffer): void;
  /** onData is done with each chunk when it returns (no copy is made). */
  borrow?: boolean;
  /** The IN pipe stopped (unplug, error); a coded error says why. Called at most once. */
  onEnd(err: MuxwireError): void;
}

/** Endpoints and sizes of the bulk pipes. */
export interface BulkPipes {
  readonly inEndpoint: number;
  readonly outEndpoint: number;
  /** wMaxPacketSize of the OUT endpoint, for the zero-length-packet rule. */
  readonly maxPacketSize: number;
}

const EMPTY = Buffer.alloc(0);
/** OUT packets up to this size without a `done` callback go untracked (request 0, copied). */
const UNTRACKED_OUT_MAX = 1024;

/** One opened device. Methods after close() reject or report MUXWIRE_ERR_CLOSED. */
export class NativeUsbHandle {
  readonly id: number;
  readonly device: number;
  readonly #raw: RawUsbHost;
  readonly #keepalive: Keepalive;
  readonly #controls = new Map<number, PendingControl>();
  readonly #sends = new Map<number, { packet: Buffer; done: ((err?: Error) => void) | undefined }>();
  #nextRequest = 1;
  #in: InHandlers | undefined;
  /** The IN transfers' buffers (startIn). */
  #region: Buffer = EMPTY;
  #closing = false;
  #closed = false;
  readonly #closedWaiters: (() => void)[] = [];

  /** @internal Created by NativeUsbHost.open. */
  constructor(raw: RawUsbHost, keepalive: Keepalive, id: number, device: number) {
    this.#raw = raw;
    this.#keepalive = keepalive;
    this.id = id;
    this.device = device;
  }

  /** One control transfer; resolves with the IN data stage (empty for OUT requests). */
  control(setup: ControlSetup, data: Buffer | undefined, timeoutMs: number): Promise<Buffer> {
    if (this.#closing) return Promise.reject(new MuxwireError('MUXWIRE_ERR_CLOSED', 'the device handle is closed'));
    const isIn = (setup.bmRequestType & 0x80) !== 0;
    if (!isIn && (data?.length ?? 0) !== setup.wLength) {
      return Promise.reject(new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `control OUT data of ${data?.length ?? 0} bytes for wLength ${setup.wLength}`));
    }
    const request = this.#request();
    const r = this.#raw.control(this.id, request, setup.bmRequestType, setup.bRequest, setup.wValue, setup.wIndex,
      setup.wLength, isIn ? null : (data ?? null), timeoutMs);
    if (r !== 0) return Promise.reject(libusbError(r, this.#raw.errorName(r), describe(setup)));
    this.#keepalive.hold();
    return new Promise((resolve, reject) => this.#controls.set(request, { setup, resolve, reject }));
  }

  /** The current configuration value (0: unconfigured). */
  async getConfiguration(): Promise<number> {
    try {
      return await this.#raw.getConfiguration(this.id);
    } catch (err) {
      throw rejected(err, 'libusb_get_configuration');
    }
  }

  /** Detaches kernel drivers from `interfaces`, then sets configuration `value`. */
  async setConfiguration(value: number, interfaces: number[]): Promise<void> {
    try {
      await this.#raw.setConfiguration(this.id, value, interfaces);
    } catch (err) {
      throw rejected(err, `libusb_set_configuration(${value})`);
    }
  }

  /** Detaches a kernel driver from the interface if one is bound, then claims it. */
  async claimInterface(interfaceNumber: number): Promise<void> {
    try {
      await this.#raw.claimInterface(this.id, interfaceNumber);
    } catch (err) {
      throw rejected(err, `libusb_claim_interface(${interfaceNumber})`);
    }
  }

  /** Starts `count` bulk IN transfers of `size` bytes, kept in flight until the pipe ends. */
  startIn(pipes: BulkPipes, count: number, size: number, handlers: InHandlers): void {
    if (this.#in) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', 'the IN pipeline was already started');
    this.#in = handlers;
    const r = this.#raw.startIn(this.id, pipes.inEndpoint, pipes.outEndpoint, pipes.maxPacketSize, count, size);
    if (typeof r !== 'number') {
      this.#region = r;
    } else {
      const err = libusbError(r, this.#raw.errorName(r), 'starting the IN transfers');
      process.nextTick(() => this._inEnd(-1, err));
    }
  }

  /**
   * Sends one OUT transfer (≤ 49152 bytes), followed by a zero-length transfer when its length is
   * a multiple of wMaxPacketSize (usbmux.md §1.4). `done` runs once the data transfer completes.
   */
  send(packet: Buffer, done?: (err?: Error) => void): void {
    if (this.#closing) {
      if (done) process.nextTick(done, new MuxwireError('MUXWIRE_ERR_CLOSED', 'the device handle is closed'));
      return;
    }
    if (packet.length > 49152) {
      if (done) process.nextTick(done, new MuxwireError('MUXWIRE_ERR_BAD_LENGTH', `OUT transfer of ${packet.length} bytes exceeds 49152`));
      return;
    }
    // A small packet nobody waits on (an ACK) is copied by the addon and never reported done:
    // cheaper than tracking it and handling its OUT_DONE event.
    const untracked = done === undefined && packet.length <= UNTRACKED_OUT_MAX;
    const request = untracked ? 0 : this.#request();
    const r = this.#raw.send(this.id, request, packet.length === 0 ? EMPTY : packet);
    if (r !== 0) {
      if (done) process.nextTick(done, libusbError(r, this.#raw.errorName(r), 'bulk OUT'));
      return;
    }
    if (!untracked) this.#sends.set(request, { packet, done });
  }

  /** Cancels every transfer; resolves once the handle is closed. */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#keepalive.hold();
    const waiting = new Promise<void>((resolve) => this.#closedWaiters.push(() => {
      this.#keepalive.release();
      resolve();
    }));
    if (!this.#closing) {
      this.#closing = true;
      if (this.#raw.closeHandle(this.id) !== 0) this._closed();
    }
    return waiting;
  }

  get closed(): boolean {
    return this.#closed;
  }

  #request(): number {
    const r = this.#nextRequest;
    this.#nextRequest = r === 0xffffffff ? 1 : r + 1;
    return r;
  }

  /** @internal One IN transfer's `length` bytes at `offset` of the IN region. */
  _inData(offset: number, length: number): void {
    const handlers = this.#in;
    if (this.#closing || handlers === undefined) return;
    const view = this.#region.subarray(offset, offset + length);
    handlers.onData(handlers.borrow === true ? view : Buffer.from(view));
  }

  /** @internal */
  _inEnd(status: number, err?: MuxwireError): void {
    const handlers = this.#in;
    if (!handlers) return;
    this.#in = undefined;
    handlers.onEnd(err ?? transferError(status, 'bulk IN'));
  }

  /** @internal */
  _outDone(request: number, status: number): void {
    const pending = this.#sends.get(request);
    if (!pending) return;
    this.#sends.delete(request);
    pending.done?.(status === TransferStatus.COMPLETED ? undefined : transferError(status, 'bulk OUT'));
  }

  /** @internal */
  _controlDone(request: number, status: number, data: Buffer | undefined): void {
    const pending = this.#controls.get(request);
    if (!pending) return;
    this.#controls.delete(request);
    this.#keepalive.release();
    if (status === TransferStatus.COMPLETED) pending.resolve(data ?? EMPTY);
    else pending.reject(transferError(status, describe(pending.setup)));
  }

  /** @internal The handle is gone: whatever is still pending fails. */
  _closed(): void {
    if (this.#closed) return;
    this.#closing = true;
    this.#closed = true;
    const gone = (): MuxwireError => new MuxwireError('MUXWIRE_ERR_CLOSED', 'the device handle is closed');
    for (const c of this.#controls.values()) {
      this.#keepalive.release();
      c.reject(gone());
    }
    this.#controls.clear();
    for (const s of this.#sends.values()) s.done?.(gone());
    this.#sends.clear();
    this._inEnd(-1, gone());
    for (const w of this.#closedWaiters.splice(0)) w();
  }
}

function describe(setup: ControlSetup): string {
  const hex = (n: number, w: number): string => n.toString(16).padStart(w, '0');
  return `control ${hex(setup.bmRequestType, 2)}/${hex(setup.bRequest, 2)} wValue 0x${hex(setup.wValue, 4)} wIndex ${setup.wIndex}`;
}
