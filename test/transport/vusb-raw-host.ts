/**
 * A bare host end of the vusb wire for tests: speaks the codec directly, with no enumeration
 * logic of its own, so a test can send exactly the requests (and the malformed input) it means.
 */
import { createConnection, type Socket } from 'node:net';
import {
  encodeBulkHeader,
  encodeControl,
  VusbDecoder,
  VusbMessageType,
  type UsbSetupPacket,
  type VusbMessage,
} from '../../src/protocol/vusb-wire.js';

export interface RawControlResult {
  status: number;
  data: Buffer;
}

export class RawVusbHost {
  readonly socket: Socket;
  readonly #decoder = new VusbDecoder();
  readonly #queue: VusbMessage[] = [];
  #waiters: Array<() => void> = [];
  #nextId = 1;
  closed = false;
  /** Every BULK_IN received, in order. */
  readonly bulkIn: Array<{ endpoint: number; data: Buffer }> = [];

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#decoder.push(chunk);
      for (let m = this.#decoder.next(); m !== undefined; m = this.#decoder.next()) {
        if (m.type === VusbMessageType.BULK_IN) this.bulkIn.push({ endpoint: m.endpoint, data: Buffer.from(m.data) });
        else this.#queue.push(m);
      }
      this.#wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
    socket.on('error', () => undefined);
  }

  static connect(path: string): Promise<RawVusbHost> {
    return new Promise((resolve, reject) => {
      const socket = createConnection(path);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new RawVusbHost(socket));
      });
    });
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /** Resolves when `cond` holds, re-checked on every received chunk and on close. */
  async until(cond: () => boolean, what: string, timeoutMs = 10000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 50);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** The next non-bulk message. */
  async nextMessage(): Promise<VusbMessage> {
    await this.until(() => this.#queue.length > 0 || this.closed, 'a message');
    const m = this.#queue.shift();
    if (!m) throw new Error('connection closed');
    return m;
  }

  async control(setup: UsbSetupPacket, data?: Buffer): Promise<RawControlResult> {
    const id = this.#nextId++;
    this.socket.write(encodeControl(id, setup, data));
    const m = await this.nextMessage();
    if (m.type !== VusbMessageType.CONTROL_DONE || m.id !== id) throw new Error(`unexpected reply ${JSON.stringify(m)}`);
    return { status: m.status, data: Buffer.from(m.data) };
  }

  getDescriptor(type: number, index: number, wLength: number, langId = 0): Promise<RawControlResult> {
    return this.control({ bmRequestType: 0x80, bRequest: 6, wValue: (type << 8) | index, wIndex: langId, wLength });
  }

  bulkOut(endpoint: number, data: Buffer): void {
    this.socket.write(encodeBulkHeader(VusbMessageType.BULK_OUT, endpoint, data.length));
    if (data.length > 0) this.socket.write(data);
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.socket.once('close', () => resolve());
      this.socket.destroy();
    });
  }
}
