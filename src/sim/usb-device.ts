/**
 * A simulated iPhone on the vusb wire (docs/ARCHITECTURE.md "The vusb wire"): the USB side of the
 * device. It listens on `<busDir>/<udid>.vusb` (the socket appearing is the plug-in), holds one
 * host stack at a time like a cable, answers control requests from its descriptor set
 * (usb-descriptors.ts), and moves the usbmux function's bulk traffic to and from a device-side mux:
 *
 * ```
 *  host ──BULK_OUT ep 0x04──> device read (ends at a short packet) ──> mux.receive(bytes)
 *  host <──BULK_IN ep 0x85──  one BULK_IN message per device write  <── mux.onTransmit(packet)
 * ```
 *
 * Decisions worth knowing:
 * - Bulk traffic is only accepted on the mux endpoints while the mux configuration (4) is set, as
 *   a real device has no such endpoints otherwise; anything else is ignored and logged.
 * - A device read ends at a short packet (USB 2.0 §5.8.3): an OUT transfer whose length is a
 *   multiple of wMaxPacketSize does not end it, so without the host's zero-length packet the next
 *   transfer's bytes join the same read, exactly the failure usbmuxd's ZLP rule prevents
 *   (usbmux.md §1.4). The read also ends when the device's 64 KiB read buffer is full.
 * - SET_MODE (0x52) is refused with a reply byte 1: this simulator has only the initial mode's
 *   descriptor set, and a refusal makes usbmuxd carry on in the current mode (usbmux.md §1.2)
 *   rather than wait for a re-enumeration that would never bring the requested interfaces.
 * - When the host goes away (or changes away from the mux configuration) the mux function is
 *   reset with `mux.detach()` if the mux has one, as a real device's usbmux sessions end when the
 *   cable does; the next host starts with VERSION again.
 */
import { EventEmitter } from 'node:events';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { lstat, rm } from 'node:fs/promises';
import { makeDirectory } from '../make-directory.js';
import { join } from 'node:path';
import { MuxwireError } from '../errors.js';
import { log, type Logger } from '../log.js';
import {
  encodeBulkHeader,
  encodeControlDone,
  encodeHello,
  UsbTransferStatus,
  VUSB_MAX_PAYLOAD,
  VusbDecoder,
  VusbMessageType,
  type UsbSetupPacket,
  type VusbMessage,
} from '../protocol/vusb-wire.js';
import {
  AppleVendorRequest,
  USB_DIR_IN,
  USB_FEATURE_ENDPOINT_HALT,
  USB_RECIP_DEVICE,
  USB_RECIP_ENDPOINT,
  USB_RECIP_INTERFACE,
  USB_TYPE_STANDARD,
  USB_TYPE_VENDOR,
  UsbDescriptorType,
  UsbRequest,
} from '../transport/usb-standard.js';
import { PID_IPHONE, usbSerialFromUdid } from '../transport/usb-ids.js';
import {
  encodeLangIdDescriptor,
  encodeStringDescriptor,
  iphoneDescriptors,
  simSpeedToUsbSpeed,
  type SimUsbConfiguration,
  type SimUsbDescriptorSet,
  type SimUsbSpeed,
} from './usb-descriptors.js';

/**
 * The device-side mux as the USB function sees it. `DeviceMux` (device-mux.ts) fits this shape;
 * SimUsbDevice sets `onTransmit`.
 */
export interface UsbMuxFunction {
  /** The bytes of one device read on the mux OUT endpoint. */
  receive(chunk: Buffer): void;
  /** Called by the mux for each packet it sends: one device write on the mux IN endpoint. */
  onTransmit: (packet: Buffer) => void;
  /** Ends every mux connection: the host is gone. */
  detach?(): void;
}

/** Options of SimUsbDevice. */
export interface SimUsbDeviceOptions {
  /** The vusb bus directory; created if missing. */
  busDir: string;
  /** The UDID: 25-character dashed, 24-character or 40-character form. Names the socket file. */
  udid: string;
  /** idProduct. Default 0x12A8 (iPhone). */
  productId?: number;
  /** Default 'high' (HELLO speed 3, 512-byte bulk packets); 'super' is speed 4, 1024 bytes. */
  speed?: SimUsbSpeed;
  /** iProduct text. Default "iPhone". */
  productName?: string;
  /**
   * A descriptor set other than the iPhone's mode-1 set, for testing host code against devices
   * laid out differently (its `mux` names where the mux function lives). Its serial string is used
   * as given; productId, productName and speed only set HELLO's speed then.
   */
  descriptors?: SimUsbDescriptorSet;
  mux: UsbMuxFunction;
}

/** Counters a test or a benchmark can read; never reset while the device lives. */
export interface SimUsbDeviceStats {
  /** Host connections accepted. */
  hosts: number;
  /** Host connections dropped because another host held the device. */
  refusedHosts: number;
  /** BULK_OUT transfers on the mux OUT endpoint, zero-length ones included. */
  bulkOutTransfers: number;
  /** Zero-length BULK_OUT transfers on the mux OUT endpoint. */
  zeroLengthPackets: number;
  /** Device reads handed to the mux. */
  reads: number;
  /** BULK_IN messages written (device writes). */
  writes: number;
  /** Bulk messages ignored because the device was not configured for them. */
  refusedBulk: number;
  /** Control requests answered with a stall. */
  stalls: number;
}

/** A device read completes when its buffer is full even without a short packet. */
const DEVICE_READ_SIZE = 65536;

const GET_MODE_REPLY = Buffer.from([3, 3, 3, 0]);
const SET_MODE_REFUSED = Buffer.from([1]);

interface ControlResult {
  status: number;
  data?: Buffer;
}

const STALL: ControlResult = { status: UsbTransferStatus.PIPE };
const OK: ControlResult = { status: UsbTransferStatus.OK };

/**
 * A simulated iPhone's USB side. Cheap: one listening socket and at most one host connection.
 * Events: 'host' (a host connected), 'host-gone', 'configuration' (value: number).
 */
export class SimUsbDevice extends EventEmitter {
  /** The UDID as given. */
  readonly udid: string;
  /** The USB serial number string (dashless for 8-16 UDIDs). */
  readonly usbSerial: string;
  readonly socketPath: string;
  readonly speed: SimUsbSpeed;
  readonly descriptors: SimUsbDescriptorSet;
  readonly #mux: UsbMuxFunction;
  readonly #busDir: string;
  readonly #log: Logger;
  readonly #stats: SimUsbDeviceStats = {
    hosts: 0, refusedHosts: 0, bulkOutTransfers: 0, zeroLengthPackets: 0, reads: 0, writes: 0, refusedBulk: 0, stalls: 0,
  };

  #server: Server | undefined;
  #socketIno = -1;
  #host: Socket | undefined;
  /** bConfigurationValue; 0 = unconfigured (the udev rule leaves iPhones so, usbmux.md §1.1). */
  #configuration = 0;
  /** Interface number → selected alternate setting, for the current configuration. */
  #altSettings = new Map<number, number>();
  /** OUT transfers of whole packets waiting for the short packet that ends the device's read. */
  #pendingRead: Buffer[] = [];
  #pendingBytes = 0;
  #refusedLogged = false;
  /** The host socket corked for this tick, if any; #uncork flushes it at the end of the tick. */
  #corked: Socket | undefined;
  readonly #uncork = (): void => {
    const socket = this.#corked;
    this.#corked = undefined;
    socket?.uncork();
  };

  constructor(opts: SimUsbDeviceOptions) {
    super();
    if (typeof opts.udid !== 'string' || !/^[A-Za-z0-9-]{1,64}$/.test(opts.udid)) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `UDID ${JSON.stringify(opts.udid)} is not 1-64 letters, digits or dashes`);
    }
    this.udid = opts.udid;
    this.usbSerial = usbSerialFromUdid(opts.udid);
    this.speed = opts.speed ?? 'high';
    this.#busDir = opts.busDir;
    this.socketPath = join(opts.busDir, `${opts.udid}.vusb`);
    // sockaddr_un.sun_path holds 108 bytes including the NUL.
    if (Buffer.byteLength(this.socketPath) > 107) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `socket path too long for a UNIX socket: ${this.socketPath}`);
    }
    this.descriptors = opts.descriptors ?? iphoneDescriptors({
      productId: opts.productId ?? PID_IPHONE,
      serialNumber: this.usbSerial,
      speed: this.speed,
      ...(opts.productName !== undefined ? { productName: opts.productName } : {}),
    });
    this.#mux = opts.mux;
    this.#mux.onTransmit = (packet) => this.#transmit(packet);
    this.#log = log.child({ sim: opts.udid.slice(0, 8) });
  }

  /** A copy of the counters. */
  get stats(): SimUsbDeviceStats {
    return { ...this.#stats };
  }

  get plugged(): boolean {
    return this.#server !== undefined;
  }

  /** True while a host holds the device. */
  get hostConnected(): boolean {
    return this.#host !== undefined;
  }

  /** The current bConfigurationValue (0 = unconfigured). */
  get configuration(): number {
    return this.#configuration;
  }

  /** Plugs the device in: creates the socket. Resolves with its path once it accepts hosts. */
  async plug(): Promise<string> {
    if (this.#server) return this.socketPath;
    await makeDirectory(this.#busDir);
    const server = createServer((socket) => this.#onConnection(socket));
    try {
      await listen(server, this.socketPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || (await isLive(this.socketPath))) {
        throw new MuxwireError('MUXWIRE_ERR_ADDR_IN_USE', `cannot plug ${this.udid}: ${(err as Error).message}`, { cause: err });
      }
      // A socket file left behind by a process that died: nothing answers it, so take its place.
      await rm(this.socketPath, { force: true });
      await listen(server, this.socketPath);
    }
    server.on('error', (err) => this.#log.warn(`bus socket error: ${err.message}`));
    this.#server = server;
    this.#socketIno = (await lstat(this.socketPath)).ino;
    this.#log.debug(`plugged at ${this.socketPath} (${this.speed} speed)`);
    return this.socketPath;
  }

  /** Unplugs the device: closes the host connection, then removes the socket file. */
  async unplug(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    this.#server = undefined;
    if (this.#host) this.#host.destroy();
    // Closing a UNIX-socket server unlinks its file (libuv). Should it still be there, remove it,
    // but only if it is still ours: a device plugged at the same path since then keeps its file.
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const left = await lstat(this.socketPath).catch(() => undefined);
    if (left && left.ino === this.#socketIno) await rm(this.socketPath, { force: true }).catch(() => undefined);
    this.#log.debug('unplugged');
  }

  #onConnection(socket: Socket): void {
    if (this.#host || !this.#server) {
      // One host stack holds a device at a time, like a cable: a second one sees it vanish.
      this.#stats.refusedHosts++;
      this.#log.debug('refused a second host');
      socket.destroy();
      return;
    }
    this.#host = socket;
    this.#stats.hosts++;
    const decoder = new VusbDecoder();
    socket.on('data', (chunk: Buffer) => this.#onData(socket, decoder, chunk));
    socket.on('error', (err) => this.#log.debug(`host connection error: ${err.message}`));
    socket.on('close', () => this.#hostGone(socket));
    socket.write(encodeHello(simSpeedToUsbSpeed(this.speed)));
    this.#log.debug('host connected');
    this.emit('host');
  }

  #onData(socket: Socket, decoder: VusbDecoder, chunk: Buffer): void {
    if (socket !== this.#host) return;
    decoder.push(chunk);
    try {
      for (let msg = decoder.next(); msg !== undefined; msg = decoder.next()) {
        this.#onMessage(socket, msg);
        if (socket !== this.#host) return;
      }
    } catch (err) {
      // Malformed wire input (or a mux that threw on it): drop the host, the one fatal path.
      this.#log.warn(`dropping the host: ${(err as Error).message}`);
      socket.destroy();
    }
  }

  #onMessage(socket: Socket, msg: VusbMessage): void {
    switch (msg.type) {
      case VusbMessageType.CONTROL: {
        const result = this.#control(msg.setup, msg.data);
        if (result.status !== UsbTransferStatus.OK) this.#stats.stalls++;
        socket.write(encodeControlDone(msg.id, result.status, result.data));
        return;
      }
      case VusbMessageType.BULK_OUT:
        this.#bulkOut(msg.endpoint, msg.data);
        return;
      default:
        throw new MuxwireError('MUXWIRE_ERR_VUSB_BAD_MESSAGE', `host sent a device-to-host message (type ${msg.type})`);
    }
  }

  #hostGone(socket: Socket): void {
    if (socket !== this.#host) return;
    this.#host = undefined;
    this.#setConfiguration(0);
    this.#log.debug('host disconnected');
    this.emit('host-gone');
  }

  /** Moves to configuration `value` (0 = unconfigured), resetting the mux when it leaves. */
  #setConfiguration(value: number): void {
    const muxValue = this.descriptors.mux.configurationValue;
    const wasMux = this.#configuration === muxValue;
    this.#configuration = value;
    this.#altSettings = new Map();
    this.#pendingRead = [];
    this.#pendingBytes = 0;
    if (wasMux && value !== muxValue) this.#mux.detach?.();
    this.emit('configuration', value);
  }

  // --- control requests --------------------------------------------------------------------

  #control(setup: UsbSetupPacket, data: Buffer): ControlResult {
    const dirIn = (setup.bmRequestType & USB_DIR_IN) !== 0;
    // The data stage must match the request: an IN request carries none, an OUT one wLength bytes.
    if (dirIn ? data.length !== 0 : data.length !== setup.wLength) {
      this.#log.warn(`control request with a ${data.length}-byte data stage for wLength ${setup.wLength}`);
      return STALL;
    }
    const result = this.#answer(setup, dirIn);
    if (result.status !== UsbTransferStatus.OK) {
      if (this.#log.enabled('debug')) {
        this.#log.debug(`stall bmRequestType=0x${setup.bmRequestType.toString(16)} bRequest=0x${setup.bRequest.toString(16)} wValue=0x${setup.wValue.toString(16)} wIndex=${setup.wIndex}`);
      }
      return result;
    }
    // The IN data stage never exceeds wLength: a short read of a longer descriptor is normal.
    if (result.data && result.data.length > setup.wLength) return { status: result.status, data: result.data.subarray(0, setup.wLength) };
    return result;
  }

  #answer(setup: UsbSetupPacket, dirIn: boolean): ControlResult {
    const type = setup.bmRequestType & 0x60;
    const recipient = setup.bmRequestType & 0x1f;
    if (type === USB_TYPE_VENDOR && setup.bmRequestType === 0xc0) {
      if (setup.bRequest === AppleVendorRequest.GET_MODE) return { status: 0, data: GET_MODE_REPLY };
      if (setup.bRequest === AppleVendorRequest.SET_MODE) {
        this.#log.info(`refused SET_MODE ${setup.wIndex}: only the initial mode is simulated`);
        return { status: 0, data: SET_MODE_REFUSED };
      }
      return STALL;
    }
    if (type !== USB_TYPE_STANDARD) return STALL;
    switch (setup.bRequest) {
      case UsbRequest.GET_DESCRIPTOR:
        if (!dirIn || recipient !== USB_RECIP_DEVICE) return STALL;
        return this.#getDescriptor(setup.wValue >> 8, setup.wValue & 0xff);
      case UsbRequest.GET_CONFIGURATION:
        if (!dirIn || recipient !== USB_RECIP_DEVICE || setup.wLength < 1) return STALL;
        return { status: 0, data: Buffer.from([this.#configuration]) };
      case UsbRequest.SET_CONFIGURATION: {
        if (dirIn || recipient !== USB_RECIP_DEVICE) return STALL;
        const value = setup.wValue & 0xff;
        if (value !== 0 && !this.descriptors.configurations.some((c) => c.value === value)) return STALL;
        // Setting the current configuration again resets its endpoints, not the function.
        if (value !== this.#configuration) this.#setConfiguration(value);
        else this.#altSettings = new Map();
        return OK;
      }
      case UsbRequest.GET_INTERFACE: {
        if (!dirIn || recipient !== USB_RECIP_INTERFACE) return STALL;
        const alts = this.#interfaceAlts(setup.wIndex);
        if (alts === undefined) return STALL;
        return { status: 0, data: Buffer.from([this.#altSettings.get(setup.wIndex) ?? 0]) };
      }
      case UsbRequest.SET_INTERFACE: {
        if (dirIn || recipient !== USB_RECIP_INTERFACE) return STALL;
        const alts = this.#interfaceAlts(setup.wIndex);
        if (alts === undefined || setup.wValue >= alts) return STALL;
        this.#altSettings.set(setup.wIndex, setup.wValue);
        return OK;
      }
      case UsbRequest.GET_STATUS:
        if (!dirIn || setup.wValue !== 0) return STALL;
        return this.#getStatus(recipient, setup.wIndex);
      case UsbRequest.CLEAR_FEATURE:
        // libusb_clear_halt: no endpoint of this device ever halts, so clearing is a no-op that
        // must still be refused for endpoints the configuration does not have.
        if (dirIn || recipient !== USB_RECIP_ENDPOINT || setup.wValue !== USB_FEATURE_ENDPOINT_HALT) return STALL;
        return this.#endpointExists(setup.wIndex & 0xff) ? OK : STALL;
      default:
        return STALL;
    }
  }

  #getDescriptor(type: number, index: number): ControlResult {
    const d = this.descriptors;
    switch (type) {
      case UsbDescriptorType.DEVICE:
        return index === 0 ? { status: 0, data: d.device } : STALL;
      case UsbDescriptorType.CONFIGURATION: {
        const config = d.configurations[index];
        return config ? { status: 0, data: config.descriptor } : STALL;
      }
      case UsbDescriptorType.OTHER_SPEED_CONFIGURATION: {
        const other = d.configurations[index]?.otherSpeed;
        return other ? { status: 0, data: other } : STALL;
      }
      case UsbDescriptorType.DEVICE_QUALIFIER:
        return d.deviceQualifier && index === 0 ? { status: 0, data: d.deviceQualifier } : STALL;
      case UsbDescriptorType.BOS:
        return d.bos && index === 0 ? { status: 0, data: d.bos } : STALL;
      case UsbDescriptorType.STRING: {
        if (index === 0) return { status: 0, data: encodeLangIdDescriptor(d.langIds) };
        // Any LANGID gets the English text: the device has only one language.
        const text = d.strings.get(index);
        return text === undefined ? STALL : { status: 0, data: encodeStringDescriptor(text) };
      }
      default:
        return STALL;
    }
  }

  #getStatus(recipient: number, index: number): ControlResult {
    switch (recipient) {
      case USB_RECIP_DEVICE:
        // Bit 0 self-powered (bmAttributes 0xC0), bit 1 remote wakeup off.
        return index === 0 ? { status: 0, data: Buffer.from([0x01, 0x00]) } : STALL;
      case USB_RECIP_INTERFACE:
        return this.#interfaceAlts(index) !== undefined ? { status: 0, data: Buffer.from([0, 0]) } : STALL;
      case USB_RECIP_ENDPOINT:
        return this.#endpointExists(index & 0xff) ? { status: 0, data: Buffer.from([0, 0]) } : STALL;
      default:
        return STALL;
    }
  }

  /** Number of alternate settings of interface `num` in the current configuration. */
  #interfaceAlts(num: number): number | undefined {
    return this.#currentConfig()?.interfaces.get(num);
  }

  #endpointExists(address: number): boolean {
    if ((address & 0x7f) === 0) return true;
    return this.#currentConfig()?.endpoints.has(address) ?? false;
  }

  #currentConfig(): SimUsbConfiguration | undefined {
    if (this.#configuration === 0) return undefined;
    return this.descriptors.configurations.find((c) => c.value === this.#configuration);
  }

  // --- bulk --------------------------------------------------------------------------------

  #muxActive(): boolean {
    return this.#configuration === this.descriptors.mux.configurationValue;
  }

  #refuse(what: string): void {
    this.#stats.refusedBulk++;
    // Logged once per device at warn (a host doing this does it repeatedly), then at debug.
    if (!this.#refusedLogged) {
      this.#refusedLogged = true;
      this.#log.warn(`ignored ${what}: configuration ${this.#configuration}, mux needs ${this.descriptors.mux.configurationValue}`);
    } else if (this.#log.enabled('debug')) {
      this.#log.debug(`ignored ${what}`);
    }
  }

  #bulkOut(endpoint: number, data: Buffer): void {
    const mux = this.descriptors.mux;
    if (!this.#muxActive() || endpoint !== mux.outEndpoint) {
      this.#refuse(`BULK_OUT of ${data.length} bytes to endpoint 0x${endpoint.toString(16)}`);
      return;
    }
    this.#stats.bulkOutTransfers++;
    if (data.length === 0) this.#stats.zeroLengthPackets++;
    if (this.#log.enabled('trace')) this.#log.trace(`bulk out ${data.length} bytes`);
    const short = data.length % mux.maxPacketSize !== 0;
    if (this.#pendingBytes === 0 && short) {
      this.#deliver(data);
      return;
    }
    if (data.length > 0) {
      this.#pendingRead.push(data);
      this.#pendingBytes += data.length;
    }
    if (short || data.length === 0 || this.#pendingBytes >= DEVICE_READ_SIZE) {
      const parts = this.#pendingRead;
      const total = this.#pendingBytes;
      this.#pendingRead = [];
      this.#pendingBytes = 0;
      if (total > 0) this.#deliver(parts.length === 1 ? parts[0]! : Buffer.concat(parts, total));
    }
  }

  #deliver(read: Buffer): void {
    this.#stats.reads++;
    this.#mux.receive(read);
  }

  #transmit(packet: Buffer): void {
    const host = this.#host;
    if (!host || !this.#muxActive()) {
      this.#refuse(`device write of ${packet.length} bytes with no configured host`);
      return;
    }
    if (this.#log.enabled('trace')) this.#log.trace(`bulk in ${packet.length} bytes`);
    const ep = this.descriptors.mux.inEndpoint;
    // One device write is one BULK_IN message; one larger than a message can carry goes out as
    // several writes, as a device would split it.
    let offset = 0;
    do {
      const part = packet.length - offset > VUSB_MAX_PAYLOAD ? packet.subarray(offset, offset + VUSB_MAX_PAYLOAD) : offset === 0 ? packet : packet.subarray(offset);
      if (this.#corked !== host) {
        // Writes of one turn of the loop leave in one writev; each stays its own BULK_IN.
        this.#uncork();
        this.#corked = host;
        host.cork();
        process.nextTick(this.#uncork);
      }
      host.write(encodeBulkHeader(VusbMessageType.BULK_IN, ep, part.length));
      if (part.length > 0) host.write(part);
      this.#stats.writes++;
      offset += part.length;
    } while (offset < packet.length);
  }
}

function listen(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(path, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** True when something accepts connections at `path`. */
function isLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createConnection(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}
