/**
 * A WebUSB `USB` object whose devices are the simulated devices of a vusb bus directory
 * (docs/ARCHITECTURE.md "The vusb wire"): the TypeScript USB path (usb-webusb-link.ts) runs against
 * it exactly as it runs against the `usb` package's WebUSB on real hardware, so tests and CI
 * exercise that path end to end without hardware, as the vusb libusb library does for the native
 * path.
 *
 * It behaves as an operating system's USB stack does under WebUSB:
 * - every `*.vusb` socket in the directory is a plugged-in device; the stack connects, takes the
 *   HELLO (speed) and reads the device and configuration descriptors and the serial number at
 *   enumeration, so `configurations` and `serialNumber` are there before `open()`;
 * - `transferIn(ep, n)` calls queue in order; one device write (BULK_IN) fills them in turn, each
 *   completing with min(remaining, n) bytes, and an empty write completes one with 0 bytes; a
 *   write that arrives with no transfer queued waits (bounded: past 4 MiB the socket is not read,
 *   as a NAKing endpoint holds a real device back);
 * - `transferOut(ep, data)` is one BULK_OUT message (an empty one is a zero-length packet);
 * - the socket closing or the file disappearing is a 'disconnect'; pending transfers then reject
 *   with MUXWIRE_ERR_NO_DEVICE. `close()` on a device lets go of it (the socket is closed), and
 *   the device is found again by the next scan, as one whose host stack released it.
 */
import { createConnection, type Socket } from 'node:net';
import { MuxwireError } from '../errors.js';
import { log as rootLog, type Logger } from '../log.js';
import {
  encodeBulkHeader,
  VUSB_MAX_PAYLOAD,
  VusbDecoder,
  VusbMessageType,
  type UsbSetupPacket,
  type VusbMessage,
} from '../protocol/vusb-wire.js';
import { VusbControlChannel } from './vusb-control.js';
import { sameSocket, VusbBusWatcher, type BusSocket } from './vusb-bus-watcher.js';
import {
  configurationTotalLength,
  parseConfigurationDescriptor,
  parseDeviceDescriptor,
  type UsbConfigurationDescriptor,
  type UsbDeviceDescriptor,
} from './usb-descriptor-parser.js';
import { serialFromStringDescriptor } from './usb-ids.js';
import { USB_DIR_IN, USB_DIR_OUT, UsbDescriptorType, UsbRequest, UsbTransferType } from './usb-standard.js';
import type {
  WebUsbConfiguration,
  WebUsbControlSetup,
  WebUsbDevice,
  WebUsbInResult,
  WebUsbLike,
  WebUsbOutResult,
} from './usb-webusb-link.js';

/** Options of VusbWebUsb. */
export interface VusbWebUsbOptions {
  readonly dir: string;
  /** USB bus number reported as `bus`. Default 1. */
  readonly busNumber?: number;
  /** Rescan interval as a safety net for missed change notifications. Default 2000 ms; 0: off. */
  readonly pollIntervalMs?: number;
  /** Per control request. Default 5000 ms (a simulated device shares a loaded CI machine). */
  readonly controlTimeoutMs?: number;
}

type Listener = (event: { device: WebUsbDevice }) => void;

/** A socket file of the bus, and the device connected to it or the connection being made. */
interface BusEntry {
  id: BusSocket;
  device?: VusbWebUsbDevice;
  socket?: Socket;
  retryAt?: number;
}

const STASH_LIMIT = 4 * 1024 * 1024;
const HELLO_TIMEOUT_MS = 5000;
const SPEED_NAMES = ['', 'low', 'full', 'high', 'super', 'superPlus'];
const REQUEST_TYPE_BITS = { standard: 0x00, class: 0x20, vendor: 0x40 } as const;
const RECIPIENT_BITS = { device: 0, interface: 1, endpoint: 2, other: 3 } as const;

/** The vusb bus as a WebUSB `USB` object. Events: 'connect', 'disconnect' ({device}). */
export class VusbWebUsb implements WebUsbLike {
  readonly dir: string;
  readonly #bus: number;
  readonly #pollIntervalMs: number;
  readonly #controlTimeoutMs: number;
  readonly #log: Logger;
  readonly #listeners = { connect: new Set<Listener>(), disconnect: new Set<Listener>() };
  /** By socket file name: the device connected to it, or a connection being made. */
  readonly #entries = new Map<string, BusEntry>();
  readonly #watcher: VusbBusWatcher;
  #nextAddress = 1;

  constructor(opts: VusbWebUsbOptions) {
    this.dir = opts.dir;
    this.#bus = opts.busNumber ?? 1;
    this.#pollIntervalMs = opts.pollIntervalMs ?? 2000;
    this.#controlTimeoutMs = opts.controlTimeoutMs ?? 5000;
    this.#log = rootLog.child({ webusb: 'vusb' });
    this.#watcher = new VusbBusWatcher({
      dir: this.dir,
      pollIntervalMs: this.#pollIntervalMs,
      log: this.#log,
      onScan: (present) => this.#reconcile(present),
    });
  }

  /** Starts watching the directory; resolves once the devices present are enumerated. */
  start(): Promise<void> {
    return this.#watcher.start();
  }

  /** Stops watching and lets go of every device. */
  async close(): Promise<void> {
    await this.#watcher.stop();
    for (const e of this.#entries.values()) {
      e.socket?.destroy();
      e.device?._destroy();
    }
    this.#entries.clear();
  }

  getDevices(): Promise<WebUsbDevice[]> {
    const out: WebUsbDevice[] = [];
    for (const e of this.#entries.values()) if (e.device && !e.device.gone) out.push(e.device);
    return Promise.resolve(out);
  }

  addEventListener(type: 'connect' | 'disconnect', listener: Listener): void {
    this.#listeners[type].add(listener);
  }

  removeEventListener(type: 'connect' | 'disconnect', listener: Listener): void {
    this.#listeners[type].delete(listener);
  }

  #emit(type: 'connect' | 'disconnect', device: VusbWebUsbDevice): void {
    for (const l of [...this.#listeners[type]]) {
      try {
        l({ device });
      } catch (err) {
        this.#log.error(`'${type}' listener threw: ${(err as Error).message}`);
      }
    }
  }

  /** Removed or replaced socket files let go of their device; new ones are enumerated. */
  async #reconcile(present: Map<string, BusSocket>): Promise<void> {
    for (const [name, e] of [...this.#entries]) {
      const now = present.get(name);
      if (!now || !sameSocket(now, e.id)) {
        this.#entries.delete(name);
        e.socket?.destroy();
      }
    }
    const now = Date.now();
    const found: Promise<void>[] = [];
    for (const [name, id] of present) {
      const e = this.#entries.get(name);
      if (e && (e.device || e.socket || (e.retryAt ?? 0) > now)) continue;
      found.push(this.#enumerate(name, id));
    }
    await Promise.all(found);
  }

  /** Connects to one socket and enumerates the device behind it, as the OS does at plug-in. */
  async #enumerate(name: string, id: BusSocket): Promise<void> {
    const entry: BusEntry = { id };
    this.#entries.set(name, entry);
    const log = this.#log.child({ dev: name.slice(0, 8) });
    let socket: Socket;
    try {
      socket = await new Promise<Socket>((resolve, reject) => {
        const s = createConnection(id.path);
        s.once('connect', () => {
          s.off('error', reject);
          resolve(s);
        });
        s.once('error', reject);
      });
    } catch (err) {
      // Not accepting yet, or gone: look again after a while (the next scan).
      entry.retryAt = Date.now() + 200;
      setTimeout(() => this.#watcher.rescan(), 250).unref();
      log.debug(`connect failed: ${(err as Error).message}`);
      return;
    }
    entry.socket = socket;
    const wire = new VusbWire(socket, this.#controlTimeoutMs, log);
    let device: VusbWebUsbDevice;
    try {
      const speed = await wire.hello(HELLO_TIMEOUT_MS);
      const desc = parseDeviceDescriptor(await wire.control(getDescriptor(UsbDescriptorType.DEVICE, 0, 18)));
      const configs: UsbConfigurationDescriptor[] = [];
      for (let i = 0; i < Math.min(desc.bNumConfigurations, 16); i++) {
        const total = configurationTotalLength(await wire.control(getDescriptor(UsbDescriptorType.CONFIGURATION, i, 9)));
        configs.push(parseConfigurationDescriptor(await wire.control(getDescriptor(UsbDescriptorType.CONFIGURATION, i, total))));
      }
      const current = (await wire.control({ bmRequestType: USB_DIR_IN, bRequest: UsbRequest.GET_CONFIGURATION, wValue: 0, wIndex: 0, wLength: 1 }))[0] ?? 0;
      let serial: string | null = null;
      if (desc.iSerialNumber !== 0) {
        const langs = await wire.control(getDescriptor(UsbDescriptorType.STRING, 0, 255));
        const lang = langs.length >= 4 ? langs.readUInt16LE(2) : 0x0409;
        serial = serialFromStringDescriptor(await wire.control(getDescriptor(UsbDescriptorType.STRING, desc.iSerialNumber, 255, lang)));
      }
      device = new VusbWebUsbDevice(wire, desc, configs, current, serial, {
        bus: this.#bus, address: this.#nextAddress, speed: SPEED_NAMES[speed] ?? '',
      });
      this.#nextAddress = (this.#nextAddress % 127) + 1;
    } catch (err) {
      // Dropped before HELLO: another host stack holds the device. Look again in a second.
      log.debug(`enumeration failed: ${(err as Error).message}`);
      socket.destroy();
      entry.socket = undefined;
      entry.retryAt = Date.now() + 1000;
      setTimeout(() => this.#watcher.rescan(), 1050).unref();
      return;
    }
    if (!this.#watcher.running || this.#entries.get(name) !== entry) {
      socket.destroy();
      return;
    }
    entry.device = device;
    wire.onEnd = () => {
      device._destroy();
      if (this.#entries.get(name) === entry) this.#entries.delete(name);
      this.#emit('disconnect', device);
      // Released by its user (close()) or re-enumerating: the file may still be there.
      this.#watcher.rescan();
    };
    if (wire.ended) {
      wire.onEnd();
      return;
    }
    this.#emit('connect', device);
  }
}

function getDescriptor(type: number, index: number, wLength: number, langId = 0): UsbSetupPacket {
  return { bmRequestType: USB_DIR_IN, bRequest: UsbRequest.GET_DESCRIPTOR, wValue: (type << 8) | index, wIndex: langId, wLength };
}

interface PendingIn {
  length: number;
  resolve(result: WebUsbInResult): void;
  reject(err: Error): void;
}

/** The host end of one vusb connection: control requests, IN transfer queues, OUT writes. */
class VusbWire {
  readonly #socket: Socket;
  readonly #decoder = new VusbDecoder();
  readonly #log: Logger;
  readonly #control: VusbControlChannel;
  readonly #ins = new Map<number, PendingIn[]>();
  /** Device writes that arrived with no IN transfer queued: the unread rest of each, in order. */
  readonly #stash = new Map<number, Buffer[]>();
  #stashed = 0;
  ended = false;
  onEnd: (() => void) | undefined;

  constructor(socket: Socket, timeoutMs: number, log: Logger) {
    this.#socket = socket;
    this.#log = log;
    // A timed-out request fails on its own; the wire stays usable, as a host stack's would.
    this.#control = new VusbControlChannel({ write: (frame) => socket.write(frame), timeoutMs });
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (err) => log.debug(`vusb connection: ${err.message}`));
    socket.on('close', () => this.#end());
  }

  hello(timeoutMs: number): Promise<number> {
    if (this.ended) return Promise.reject(gone());
    return this.#control.hello(timeoutMs);
  }

  /** Resolves with the IN data stage; a stall rejects MUXWIRE_ERR_USB_STALL. */
  control(setup: UsbSetupPacket, data?: Uint8Array): Promise<Buffer> {
    if (this.ended) return Promise.reject(gone());
    return this.#control.control(setup, data ? Buffer.from(data.buffer, data.byteOffset, data.byteLength) : undefined);
  }

  transferIn(endpoint: number, length: number): Promise<WebUsbInResult> {
    if (this.ended) return Promise.reject(gone());
    return new Promise((resolve, reject) => {
      let queue = this.#ins.get(endpoint);
      if (!queue) this.#ins.set(endpoint, (queue = []));
      queue.push({ length, resolve, reject });
      this.#fill(endpoint);
    });
  }

  transferOut(endpoint: number, data: Uint8Array): Promise<WebUsbOutResult> {
    if (this.ended) return Promise.reject(gone());
    if (data.byteLength > VUSB_MAX_PAYLOAD) {
      return Promise.reject(new MuxwireError('MUXWIRE_ERR_BAD_LENGTH', `OUT transfer of ${data.byteLength} bytes exceeds ${VUSB_MAX_PAYLOAD}`));
    }
    const bytes = data.byteLength;
    return new Promise((resolve, reject) => {
      const done = (err?: Error | null): void => {
        if (err) reject(gone());
        else resolve({ bytesWritten: bytes, status: 'ok' });
      };
      if (bytes === 0) {
        this.#socket.write(encodeBulkHeader(VusbMessageType.BULK_OUT, endpoint, 0), done);
      } else {
        this.#socket.write(encodeBulkHeader(VusbMessageType.BULK_OUT, endpoint, bytes));
        this.#socket.write(Buffer.from(data.buffer, data.byteOffset, bytes), done);
      }
    });
  }

  close(): void {
    this.#socket.destroy();
  }

  #onData(chunk: Buffer): void {
    this.#decoder.push(chunk);
    try {
      for (let msg = this.#decoder.next(); msg !== undefined; msg = this.#decoder.next()) this.#onMessage(msg);
    } catch (err) {
      this.#log.warn(`vusb connection failed: ${(err as Error).message}`);
      this.#socket.destroy();
    }
  }

  #onMessage(msg: VusbMessage): void {
    switch (msg.type) {
      case VusbMessageType.HELLO:
        this.#control.onHello(msg);
        return;
      case VusbMessageType.CONTROL_DONE:
        this.#control.onControlDone(msg);
        return;
      case VusbMessageType.BULK_IN: {
        let stash = this.#stash.get(msg.endpoint);
        if (!stash) this.#stash.set(msg.endpoint, (stash = []));
        stash.push(msg.data);
        this.#stashed += msg.data.length;
        this.#fill(msg.endpoint);
        if (this.#stashed > STASH_LIMIT) this.#socket.pause();
        return;
      }
      default:
        throw new MuxwireError('MUXWIRE_ERR_VUSB_BAD_MESSAGE', `device sent a host-to-device message (type ${msg.type})`);
    }
  }

  /** Completes queued IN transfers from stashed device writes, in order. */
  #fill(endpoint: number): void {
    const queue = this.#ins.get(endpoint);
    const stash = this.#stash.get(endpoint);
    while (queue && queue.length > 0 && stash && stash.length > 0) {
      const write = stash[0]!;
      const t = queue.shift()!;
      const n = Math.min(write.length, t.length);
      const bytes = write.subarray(0, n);
      if (n === write.length) stash.shift();
      else stash[0] = write.subarray(n);
      this.#stashed -= n;
      t.resolve({ status: 'ok', data: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength) });
    }
    if (this.#stashed <= STASH_LIMIT && this.#socket.isPaused()) this.#socket.resume();
  }

  #end(): void {
    if (this.ended) return;
    this.ended = true;
    this.#control.fail(gone());
    for (const q of this.#ins.values()) for (const t of q) t.reject(gone());
    this.#ins.clear();
    this.#stash.clear();
    this.onEnd?.();
  }
}

function gone(): MuxwireError {
  return new MuxwireError('MUXWIRE_ERR_NO_DEVICE', 'the device was disconnected');
}

/** WebUSB's configuration objects from parsed descriptors. */
function webConfiguration(c: UsbConfigurationDescriptor, claimed: Set<number>): WebUsbConfiguration {
  const numbers = [...new Set(c.interfaces.map((i) => i.bInterfaceNumber))];
  return {
    configurationValue: c.bConfigurationValue,
    interfaces: numbers.map((n) => {
      const alternates = c.interfaces.filter((i) => i.bInterfaceNumber === n).map((i) => ({
        alternateSetting: i.bAlternateSetting,
        interfaceClass: i.bInterfaceClass,
        interfaceSubclass: i.bInterfaceSubClass,
        interfaceProtocol: i.bInterfaceProtocol,
        endpoints: i.endpoints.map((e) => ({
          endpointNumber: e.bEndpointAddress & 0x0f,
          direction: (e.bEndpointAddress & 0x80) !== 0 ? 'in' as const : 'out' as const,
          type: endpointType(e.bmAttributes),
          packetSize: e.maxPacketSize,
        })),
      }));
      return {
        interfaceNumber: n,
        alternate: alternates.find((a) => a.alternateSetting === 0) ?? alternates[0]!,
        alternates,
        get claimed() {
          return claimed.has(n);
        },
      };
    }),
  };
}

function endpointType(bmAttributes: number): 'bulk' | 'interrupt' | 'isochronous' {
  const t = bmAttributes & 3;
  return t === UsbTransferType.BULK ? 'bulk' : t === UsbTransferType.INTERRUPT ? 'interrupt' : 'isochronous';
}

/** One simulated device as a WebUSB USBDevice. */
export class VusbWebUsbDevice implements WebUsbDevice {
  readonly vendorId: number;
  readonly productId: number;
  readonly serialNumber: string | null;
  readonly bus: number;
  readonly address: number;
  readonly speed: string;
  readonly configurations: readonly WebUsbConfiguration[];
  readonly descriptor: UsbDeviceDescriptor;
  readonly #wire: VusbWire;
  readonly #claimed = new Set<number>();
  #configurationValue: number;
  #opened = false;

  /** @internal Created by VusbWebUsb at enumeration. */
  constructor(wire: VusbWire, desc: UsbDeviceDescriptor, configs: UsbConfigurationDescriptor[], current: number,
    serial: string | null, where: { bus: number; address: number; speed: string }) {
    this.#wire = wire;
    this.descriptor = desc;
    this.vendorId = desc.idVendor;
    this.productId = desc.idProduct;
    this.serialNumber = serial;
    this.bus = where.bus;
    this.address = where.address;
    this.speed = where.speed;
    this.configurations = configs.map((c) => webConfiguration(c, this.#claimed));
    this.#configurationValue = current;
  }

  get opened(): boolean {
    return this.#opened;
  }

  get gone(): boolean {
    return this.#wire.ended;
  }

  get configuration(): WebUsbConfiguration | null {
    return this.configurations.find((c) => c.configurationValue === this.#configurationValue) ?? null;
  }

  open(): Promise<void> {
    if (this.#wire.ended) return Promise.reject(gone());
    this.#opened = true;
    return Promise.resolve();
  }

  /** Lets go of the device: the vusb connection closes, and the bus finds it again as free. */
  close(): Promise<void> {
    this.#opened = false;
    this.#claimed.clear();
    this.#wire.close();
    return Promise.resolve();
  }

  async selectConfiguration(value: number): Promise<void> {
    this.#check();
    if (!this.configurations.some((c) => c.configurationValue === value)) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `no configuration ${value}`);
    }
    await this.#wire.control({ bmRequestType: USB_DIR_OUT, bRequest: UsbRequest.SET_CONFIGURATION, wValue: value, wIndex: 0, wLength: 0 });
    this.#configurationValue = value;
    this.#claimed.clear();
  }

  async claimInterface(n: number): Promise<void> {
    this.#check();
    if (!this.configuration?.interfaces.some((i) => i.interfaceNumber === n)) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `no interface ${n} in the current configuration`);
    }
    this.#claimed.add(n);
  }

  async controlTransferIn(setup: WebUsbControlSetup, length: number): Promise<WebUsbInResult> {
    this.#check();
    try {
      const data = await this.#wire.control({ ...usbSetup(setup, USB_DIR_IN), wLength: length });
      return { status: 'ok', data: new DataView(data.buffer, data.byteOffset, data.byteLength) };
    } catch (err) {
      if ((err as MuxwireError).code === 'MUXWIRE_ERR_USB_STALL') return { status: 'stall' };
      throw err;
    }
  }

  async controlTransferOut(setup: WebUsbControlSetup, data?: Uint8Array): Promise<WebUsbOutResult> {
    this.#check();
    try {
      await this.#wire.control({ ...usbSetup(setup, USB_DIR_OUT), wLength: data?.byteLength ?? 0 }, data);
      return { status: 'ok', bytesWritten: data?.byteLength ?? 0 };
    } catch (err) {
      if ((err as MuxwireError).code === 'MUXWIRE_ERR_USB_STALL') return { status: 'stall', bytesWritten: 0 };
      throw err;
    }
  }

  transferIn(endpointNumber: number, length: number): Promise<WebUsbInResult> {
    const err = this.#state();
    return err ? Promise.reject(err) : this.#wire.transferIn(0x80 | endpointNumber, length);
  }

  transferOut(endpointNumber: number, data: Uint8Array): Promise<WebUsbOutResult> {
    const err = this.#state();
    return err ? Promise.reject(err) : this.#wire.transferOut(endpointNumber, data);
  }

  /** @internal The connection is over. */
  _destroy(): void {
    this.#opened = false;
    this.#wire.close();
  }

  #check(): void {
    const err = this.#state();
    if (err) throw err;
  }

  #state(): MuxwireError | undefined {
    if (this.#wire.ended) return gone();
    if (!this.#opened) return new MuxwireError('MUXWIRE_ERR_NOT_READY', 'the device is not open');
    return undefined;
  }
}

function usbSetup(s: WebUsbControlSetup, direction: number): Omit<UsbSetupPacket, 'wLength'> {
  return { bmRequestType: direction | REQUEST_TYPE_BITS[s.requestType] | RECIPIENT_BITS[s.recipient], bRequest: s.request, wValue: s.value, wIndex: s.index };
}
