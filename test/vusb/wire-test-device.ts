/**
 * A small device on the vusb wire for testing the libusb-compatible library (native/vusb) at the
 * level of USB transfers, below any mux protocol: iPhone-like descriptors (VID 0x05AC, PID 0x12A8,
 * four configurations, the mux interface FF/FE/02 with bulk OUT 0x04 and IN 0x85 in the highest),
 * standard requests answered, unknown requests stalled, and bulk data echoed: every BULK_OUT
 * message comes back as one BULK_IN write of the same bytes on 0x85 (an empty one as an empty
 * write, i.e. a zero-length packet), so tests see exactly how one device write is split over IN
 * transfers.
 *
 * The simulated iPhone (src/sim/) is the real device; this one exists so the C library's transfer
 * semantics can be checked byte for byte without a mux in between.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  VusbDecoder,
  VusbMessageType,
  encodeBulkHeader,
  encodeControlDone,
  encodeHello,
  type VusbMessage,
} from '../../src/protocol/vusb-wire.js';

export const TEST_VID = 0x05ac;
export const TEST_PID = 0x12a8;
export const MUX_OUT = 0x04;
export const MUX_IN = 0x85;

function stringDescriptor(text: string): Buffer {
  const utf16 = Buffer.from(text, 'utf16le');
  return Buffer.concat([Buffer.from([2 + utf16.length, 0x03]), utf16]);
}

function endpoint(address: number, attributes: number, maxPacket: number, interval = 0): Buffer {
  const b = Buffer.from([7, 0x05, address, attributes, 0, 0, interval]);
  b.writeUInt16LE(maxPacket, 4);
  return b;
}

function iface(number: number, alt: number, endpoints: number, cls: number, sub: number, proto: number): Buffer {
  return Buffer.from([9, 0x04, number, alt, endpoints, cls, sub, proto, 0]);
}

function config(value: number, parts: Buffer[], interfaces: number): Buffer {
  const body = Buffer.concat(parts);
  const head = Buffer.from([9, 0x02, 0, 0, interfaces, value, 0, 0xc0, 250]);
  head.writeUInt16LE(9 + body.length, 2);
  return Buffer.concat([head, body]);
}

/** The four configurations of an iPhone, as far as hosts look at them. */
function configurations(maxPacket: number): Buffer[] {
  const ptp = [
    iface(0, 0, 3, 0x06, 0x01, 0x01),
    endpoint(0x81, 0x02, maxPacket),
    endpoint(0x02, 0x02, maxPacket),
    endpoint(0x83, 0x03, 64, 10),
  ];
  return [
    config(1, ptp, 1),
    config(2, [...ptp, iface(1, 0, 0, 0x02, 0x06, 0x00)], 2),
    config(3, [...ptp, iface(1, 0, 2, 0xff, 0xfd, 0x01), endpoint(0x86, 0x02, maxPacket), endpoint(0x07, 0x02, maxPacket)], 2),
    config(
      4,
      [
        ...ptp,
        iface(1, 0, 2, 0xff, 0xfe, 0x02),
        endpoint(MUX_OUT, 0x02, maxPacket),
        endpoint(MUX_IN, 0x02, maxPacket),
        // Interface 2 has two alternate settings and a class-specific descriptor (libusb "extra").
        iface(2, 0, 0, 0xff, 0xfd, 0x01),
        Buffer.from([5, 0x24, 0x01, 0x02, 0x03]),
        iface(2, 1, 2, 0xff, 0xfd, 0x01),
        endpoint(0x88, 0x02, maxPacket),
        endpoint(0x09, 0x02, maxPacket),
      ],
      3,
    ),
  ];
}

export interface WireTestDeviceOptions {
  busDir: string;
  /** Socket file name without `.vusb`. */
  name: string;
  serial?: string;
  /** libusb speed: 3 high (512-byte packets), 4 super (1024). */
  speed?: number;
}

/** Counters a test can assert on. */
export interface WireTestDeviceStats {
  controls: number;
  bulkOut: Array<{ endpoint: number; length: number }>;
  setConfiguration: number[];
}

export class WireTestDevice {
  readonly path: string;
  readonly serial: string;
  readonly stats: WireTestDeviceStats = { controls: 0, bulkOut: [], setConfiguration: [] };
  readonly #speed: number;
  readonly #configs: Buffer[];
  #server: Server | undefined;
  #socket: Socket | undefined;
  #config = 0;
  #connected: Promise<Socket>;
  #resolveConnected!: (s: Socket) => void;
  /** When set, BULK_OUT payloads are not echoed (a device that stays silent). */
  silent = false;
  /** When set and true for a request, the device never answers it (timeout tests). */
  ignoreControl: ((setup: { bmRequestType: number; bRequest: number }) => boolean) | undefined;
  /** When set, every control reply passes through it first (hostile-device tests). */
  mutateReply: ((setup: { bmRequestType: number; bRequest: number; wValue: number }, data: Buffer | undefined) => Buffer | undefined) | undefined;

  constructor(opts: WireTestDeviceOptions) {
    this.path = join(opts.busDir, `${opts.name}.vusb`);
    this.serial = opts.serial ?? '00008030001A2B3C4D5E6F70';
    this.#speed = opts.speed ?? 3;
    this.#configs = configurations(this.#speed >= 4 ? 1024 : 512);
    this.#connected = new Promise((resolve) => (this.#resolveConnected = resolve));
  }

  /** Starts listening; the socket file appearing is the plug-in. */
  async plug(): Promise<string> {
    const server = createServer((socket) => this.#accept(socket));
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => resolve());
    });
    return this.path;
  }

  /** Resolves when a host has connected. */
  connected(): Promise<Socket> {
    return this.#connected;
  }

  /** Sends one device write on the IN endpoint, as BULK_IN. */
  write(data: Buffer, endpointAddress = MUX_IN): void {
    this.#socket?.write(Buffer.concat([encodeBulkHeader(VusbMessageType.BULK_IN, endpointAddress, data.length), data]));
  }

  /** Sends raw bytes (for malformed-input tests). */
  writeRaw(bytes: Buffer): void {
    this.#socket?.write(bytes);
  }

  /** Closes the host's connection only: the socket file stays (EOF = unplug). */
  dropConnection(): void {
    this.#socket?.destroy();
  }

  /** Unplug: close the connection and the listening socket, remove the file. */
  async unplug(): Promise<void> {
    this.#socket?.destroy();
    const server = this.#server;
    this.#server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(this.path, { force: true });
  }

  #accept(socket: Socket): void {
    if (this.#socket) {
      socket.destroy(); // one host stack at a time, like a cable
      return;
    }
    this.#socket = socket;
    socket.on('error', () => {});
    socket.on('close', () => {
      if (this.#socket === socket) this.#socket = undefined;
    });
    const decoder = new VusbDecoder();
    socket.on('data', (chunk: Buffer) => {
      decoder.push(chunk);
      for (let m = decoder.next(); m !== undefined; m = decoder.next()) this.#handle(socket, m);
    });
    socket.write(encodeHello(this.#speed));
    this.#resolveConnected(socket);
  }

  #handle(socket: Socket, m: VusbMessage): void {
    if (m.type === VusbMessageType.CONTROL) {
      this.stats.controls++;
      if (this.ignoreControl?.(m.setup)) return;
      const answer = this.#control(m.setup, m.data);
      const data = this.mutateReply ? this.mutateReply(m.setup, answer.data) : answer.data;
      const status = answer.status;
      const reply = data && data.length > m.setup.wLength && !this.mutateReply ? data.subarray(0, m.setup.wLength) : data;
      socket.write(encodeControlDone(m.id, status, reply));
    } else if (m.type === VusbMessageType.BULK_OUT) {
      this.stats.bulkOut.push({ endpoint: m.endpoint, length: m.data.length });
      if (!this.silent && m.endpoint === MUX_OUT) this.write(Buffer.from(m.data));
    }
  }

  #control(
    setup: { bmRequestType: number; bRequest: number; wValue: number; wIndex: number; wLength: number },
    _out: Buffer,
  ): { status: number; data?: Buffer } {
    const STALL = -9;
    const key = (setup.bmRequestType << 8) | setup.bRequest;
    switch (key) {
      case 0x8006: {
        const type = setup.wValue >> 8;
        const index = setup.wValue & 0xff;
        if (type === 0x01) {
          const d = Buffer.from([18, 0x01, 0x00, 0x02, 0, 0, 0, 64, 0, 0, 0, 0, 0x02, 0x10, 1, 2, 3, this.#configs.length]);
          d.writeUInt16LE(TEST_VID, 8);
          d.writeUInt16LE(TEST_PID, 10);
          return { status: 0, data: d };
        }
        if (type === 0x02) return index < this.#configs.length ? { status: 0, data: this.#configs[index] } : { status: STALL };
        if (type === 0x03) {
          if (index === 0) return { status: 0, data: Buffer.from([4, 0x03, 0x09, 0x04]) };
          const strings = ['', 'Apple Inc.', 'iPhone', this.serial];
          return index < strings.length ? { status: 0, data: stringDescriptor(strings[index]!) } : { status: STALL };
        }
        return { status: STALL };
      }
      case 0x8008:
        return { status: 0, data: Buffer.from([this.#config]) };
      case 0x0009:
        if (setup.wValue > this.#configs.length) return { status: STALL };
        this.#config = setup.wValue;
        this.stats.setConfiguration.push(setup.wValue);
        return { status: 0 };
      case 0x010b:
        return { status: 0 };
      default:
        return { status: STALL };
    }
  }
}
