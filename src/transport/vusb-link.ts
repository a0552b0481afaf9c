/**
 * The host end of one vusb connection (docs/ARCHITECTURE.md "The vusb wire"): control transfers
 * while the device is being enumerated, then the DeviceLink the mux engine drives.
 *
 * IN side. A real host keeps `inTransfersInFlight` bulk IN transfers of `inTransferSize` bytes
 * queued (usbmuxd: 3 × 16384, usbmux.md §1.5). One device write (one BULK_IN message) fills them
 * in order, each completing with min(remaining, inTransferSize) bytes, so a 40000-byte write
 * completes three transfers: 16384, 16384, 7232. Each completed transfer is one `onData` call with
 * a view of the message (no copy), and the transfer is resubmitted when `onData` returns, as
 * usbmuxd resubmits inside its callback; so with a synchronous consumer the number in flight
 * changes when bytes arrive, never how they are cut. A zero-length write completes one transfer
 * with 0 bytes, and nothing is delivered for it (usbmuxd's device_data_input ignores length 0).
 *
 * Backpressure. Messages are parsed and delivered synchronously as the socket is read, so the
 * link holds at most one partial message (≤ 1 MiB, the decoder's limit) — never a queue. A consumer
 * that cannot keep up blocks the loop, the socket is not read, and the device's writes wait in the
 * kernel buffer, as they would wait on a NAKed USB endpoint. Until `start()` the socket is paused
 * the same way (no IN transfers are queued yet).
 *
 * OUT side. `sendPacket` writes one BULK_OUT (6-byte header + the caller's buffer, no copy),
 * followed by a zero-length BULK_OUT when the length is a multiple of the endpoint's
 * wMaxPacketSize (usbmuxd's ZLP rule, usbmux.md §1.4). The socket stays corked until the end of the
 * current tick, so the packets (and ACKs) sent in one turn of the loop leave in one writev: each is
 * still its own message, only the system calls are shared. Small packets (ACKs, window updates,
 * short requests) are copied, with their headers, into one buffer per tick (`OutBatch`), so a
 * tick's dozens of ACKs are one write of the socket object instead of two each.
 */
import { createConnection, type Socket } from 'node:net';
import { MuxwireError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  encodeBulkHeader,
  VUSB_BULK_HEADER_SIZE,
  VUSB_MAX_PAYLOAD,
  VusbMessageType,
  VusbStreamDecoder,
  type UsbSetupPacket,
  type VusbMessage,
} from '../protocol/vusb-wire.js';
import type { DeviceLink, DeviceLinkHandlers, DeviceLinkInfo } from './device-link.js';
import { VusbControlChannel } from './vusb-control.js';

/** Options of VusbLink. */
export interface VusbLinkOptions {
  /** Bytes per IN transfer (usbmuxd USB_MRU = 16384). */
  inTransferSize: number;
  /** IN transfers kept queued (usbmuxd NUM_RX_LOOPS = 3). */
  inTransfersInFlight: number;
  /** Per control transfer; usbmuxd uses 1000 ms on real hardware. */
  controlTimeoutMs: number;
  log: Logger;
}

/** The mux function's pipes, found by enumeration. */
export interface VusbMuxPipes {
  outEndpoint: number;
  inEndpoint: number;
  maxPacketSize: number;
}


/** Where connectVusb's reads go: the link's reader once it exists, else kept. */
interface ReadTarget {
  link?: (chunk: Buffer) => void;
  early: Buffer[];
}
/** The read targets of sockets made by connectVusb, for the VusbLink made on each. */
const readTargets = new WeakMap<Socket, ReadTarget>();

/** Bytes one read of the device's socket may return (`connectVusb`): several device writes. */
const READ_BUFFER = 256 * 1024;

/**
 * Connects to a vusb device socket whose reads land in one reused buffer (net's `onread`) instead
 * of a new 64 KiB buffer per read, so a busy link makes no garbage and fewer, larger reads. The
 * bytes go to the VusbLink made on this socket; any before it exists are kept (copied).
 */
export function connectVusb(path: string): Socket {
  const target: ReadTarget = { early: [] };
  const socket = createConnection({
    path,
    onread: {
      buffer: Buffer.allocUnsafeSlow(READ_BUFFER),
      callback: (n: number, buf: Uint8Array): boolean => {
        const chunk = Buffer.from(buf.buffer, buf.byteOffset, n);
        if (target.link) target.link(chunk);
        else target.early.push(Buffer.from(chunk));
        return true;
      },
    },
  });
  readTargets.set(socket, target);
  return socket;
}

const EMPTY_BUFFER = Buffer.alloc(0);

/** Packets up to this size are copied into the tick's batch; larger ones are written as they are. */
const BATCH_MAX_PACKET = 2048;
/** A batch buffer is cut from a slab of this size; a new slab when the rest is too small. */
const BATCH_SLAB = 64 * 1024;

/**
 * Small OUT messages of one tick, back to back in one buffer, with the callbacks of their packets.
 * Cut from a slab as Node's Buffer pool does: a flushed batch is a view the socket may hold while
 * it waits to write, so the next batch starts after it, never over it.
 */
class OutBatch {
  #slab = Buffer.allocUnsafeSlow(BATCH_SLAB);
  #start = 0;
  #end = 0;
  #callbacks: ((err?: Error | null) => void)[] = [];

  get empty(): boolean {
    return this.#end === this.#start;
  }

  /** Room for `n` more bytes without a flush. */
  fits(n: number): boolean {
    return this.#end + n <= this.#slab.length || (this.empty && n <= BATCH_SLAB);
  }

  /** Appends one BULK_OUT message (`ep`, `packet`), and a ZLP after it when `zlp`. */
  add(ep: number, packet: Buffer, zlp: boolean, done: ((err?: Error | null) => void) | undefined): void {
    const need = VUSB_BULK_HEADER_SIZE * (zlp ? 2 : 1) + packet.length;
    if (this.#end + need > this.#slab.length) {
      // Only when empty (see fits): start a fresh slab.
      this.#slab = Buffer.allocUnsafeSlow(BATCH_SLAB);
      this.#start = this.#end = 0;
    }
    const slab = this.#slab;
    let at = this.#end;
    at = writeBulkOutHeader(slab, at, ep, packet.length);
    at += packet.copy(slab, at);
    if (zlp) at = writeBulkOutHeader(slab, at, ep, 0);
    this.#end = at;
    if (done) this.#callbacks.push(done);
  }

  /** Hands the batch to `socket` as one write; its callback runs the packets' callbacks. */
  flush(socket: Socket): void {
    if (this.empty) return;
    const chunk = this.#slab.subarray(this.#start, this.#end);
    this.#start = this.#end;
    if (this.#slab.length - this.#end < BATCH_MAX_PACKET + 2 * VUSB_BULK_HEADER_SIZE) {
      this.#slab = Buffer.allocUnsafeSlow(BATCH_SLAB);
      this.#start = this.#end = 0;
    }
    const callbacks = this.#callbacks;
    if (callbacks.length === 0) {
      socket.write(chunk);
      return;
    }
    this.#callbacks = [];
    socket.write(chunk, (err) => {
      for (const cb of callbacks) cb(err);
    });
  }
}

function writeBulkOutHeader(buf: Buffer, at: number, ep: number, length: number): number {
  buf.writeUInt32LE(2 + length, at);
  buf[at + 4] = VusbMessageType.BULK_OUT;
  buf[at + 5] = ep;
  return at + VUSB_BULK_HEADER_SIZE;
}

const NO_DEVICE = (): MuxwireError => new MuxwireError('MUXWIRE_ERR_NO_DEVICE', 'the device is gone');

/**
 * One vusb connection seen from the host. Created on a connected socket; `hello()` and `control()`
 * serve enumeration, `bindMux()` makes it a DeviceLink.
 */
export class VusbLink implements DeviceLink {
  readonly #socket: Socket;
  readonly #decoder = new VusbStreamDecoder();
  readonly #opts: VusbLinkOptions;
  readonly #log: Logger;
  readonly #onEnd: (err?: Error) => void;
  readonly #control: VusbControlChannel;
  #info: DeviceLinkInfo | undefined;
  #pipes: VusbMuxPipes | undefined;
  #zlp: Buffer | undefined;
  #handlers: DeviceLinkHandlers | undefined;
  /** BULK_IN that arrived before start(): at most what one socket chunk held. */
  #early: Buffer[] = [];
  #closed = false;
  #endError: Error | undefined;
  #corked = false;
  readonly #batch = new OutBatch();
  #strayWarned = false;
  /** End of the tick (or `flush`): the packets of this turn go out together. */
  readonly #uncork = (): void => {
    if (!this.#corked) return;
    this.#corked = false;
    this.#batch.flush(this.#socket);
    this.#socket.uncork();
  };

  /** `onEnd` runs once when the connection ends, after onClose. */
  constructor(socket: Socket, opts: VusbLinkOptions, onEnd: (err?: Error) => void) {
    if (!Number.isInteger(opts.inTransferSize) || opts.inTransferSize < 1 || opts.inTransferSize > VUSB_MAX_PAYLOAD) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `inTransferSize ${opts.inTransferSize} outside 1..${VUSB_MAX_PAYLOAD}`);
    }
    if (!Number.isInteger(opts.inTransfersInFlight) || opts.inTransfersInFlight < 1 || opts.inTransfersInFlight > 64) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `inTransfersInFlight ${opts.inTransfersInFlight} outside 1..64`);
    }
    this.#socket = socket;
    this.#opts = opts;
    this.#log = opts.log;
    this.#onEnd = onEnd;
    // A device that loses a control transfer cannot be trusted with the next one: close the link.
    this.#control = new VusbControlChannel({
      write: (frame) => socket.write(frame),
      timeoutMs: opts.controlTimeoutMs,
      onTimeout: (err) => this.#fail(err),
    });
    const reads = readTargets.get(socket);
    if (reads) {
      // connectVusb: chunks are views of a reused buffer, valid during the call (the decoder
      // keeps nothing of them; see #deliverIn for what consumers get).
      reads.link = (chunk) => this.#onSocketData(chunk);
      for (const chunk of reads.early.splice(0)) this.#onSocketData(chunk);
    } else {
      socket.on('data', (chunk: Buffer) => this.#onSocketData(chunk));
    }
    socket.on('error', (err) => {
      this.#endError ??= new MuxwireError('MUXWIRE_ERR_NO_DEVICE', `vusb connection failed: ${err.message}`, { cause: err });
    });
    socket.on('close', () => this.#end());
  }

  /** Identity as published; throws until enumeration has bound the link. */
  get info(): DeviceLinkInfo {
    if (!this.#info) throw new MuxwireError('MUXWIRE_ERR_NOT_READY', 'the vusb link is not enumerated yet');
    return this.#info;
  }

  get closed(): boolean {
    return this.#closed;
  }

  get maxPacketSize(): number | undefined {
    return this.#pipes?.maxPacketSize;
  }

  /** Waits for the device's HELLO; resolves with its libusb speed. */
  hello(timeoutMs: number): Promise<number> {
    if (this.#closed) return Promise.reject(this.#endError ?? NO_DEVICE());
    return this.#control.hello(timeoutMs);
  }

  /**
   * One control transfer (see VusbControlChannel.control); a timeout also closes the link.
   */
  control(setup: UsbSetupPacket, data?: Buffer): Promise<Buffer> {
    if (this.#closed) return Promise.reject(this.#endError ?? NO_DEVICE());
    return this.#control.control(setup, data);
  }

  /** Enumeration is done: publish `info`, use `pipes`, and hold IN data until start(). */
  bindMux(info: DeviceLinkInfo, pipes: VusbMuxPipes): void {
    this.#info = info;
    this.#pipes = pipes;
    this.#zlp = encodeBulkHeader(VusbMessageType.BULK_OUT, pipes.outEndpoint, 0);
    // No IN transfer is queued until start(): the device's writes wait, as on a NAKed endpoint.
    if (!this.#handlers) this.#socket.pause();
  }

  flush(): void {
    this.#uncork();
  }

  sendPacket(packet: Buffer, done?: (err?: Error) => void): void {
    const length = packet.length;
    const pipes = this.#pipesFor(length, done);
    if (pipes === undefined) return;
    const zlp = length > 0 && length % pipes.maxPacketSize === 0;
    const socket = this.#socket;
    // net may pass null for success; `done` treats any falsy value as success.
    const cb = done as ((err?: Error | null) => void) | undefined;
    this.#corkForTick();
    if (length <= BATCH_MAX_PACKET) {
      const batch = this.#batch;
      if (!batch.fits(length + 2 * VUSB_BULK_HEADER_SIZE)) batch.flush(socket);
      batch.add(pipes.outEndpoint, packet, zlp, cb);
      return;
    }
    // A large packet: what the batch holds goes first, to keep the order.
    this.#batch.flush(socket);
    socket.write(encodeBulkHeader(VusbMessageType.BULK_OUT, pipes.outEndpoint, length));
    if (zlp) {
      socket.write(packet);
      socket.write(this.#zlp!, cb);
    } else {
      socket.write(packet, cb);
    }
  }

  /**
   * One BULK_OUT of `head` + `body` (a data packet whose payload lies in the writer's memory):
   * the vusb header and `head` in one small buffer, then the payload's views as they are, all
   * in the tick's writev.
   */
  sendPacketParts(head: Buffer, body: readonly Buffer[], done: (err?: Error) => void): void {
    let length = head.length;
    for (const b of body) length += b.length;
    const pipes = this.#pipesFor(length, done);
    if (pipes === undefined) return;
    const socket = this.#socket;
    this.#corkForTick();
    this.#batch.flush(socket);
    const first = Buffer.allocUnsafe(VUSB_BULK_HEADER_SIZE + head.length);
    writeBulkOutHeader(first, 0, pipes.outEndpoint, length);
    head.copy(first, VUSB_BULK_HEADER_SIZE);
    socket.write(first);
    const last = body.length - 1;
    for (let i = 0; i < last; i++) socket.write(body[i]!);
    const cb = done as (err?: Error | null) => void;
    if (length % pipes.maxPacketSize === 0) {
      if (last >= 0) socket.write(body[last]!);
      socket.write(this.#zlp!, cb);
    } else if (last >= 0) {
      socket.write(body[last]!, cb);
    } else {
      socket.write(EMPTY_BUFFER, cb);
    }
  }

  /** The pipes to send `length` bytes on, or undefined (and `done` told why) when they cannot go. */
  #pipesFor(length: number, done: ((err?: Error) => void) | undefined): VusbMuxPipes | undefined {
    const pipes = this.#pipes;
    if (this.#closed || !pipes) {
      const err = this.#closed ? (this.#endError ?? NO_DEVICE()) : new MuxwireError('MUXWIRE_ERR_NOT_READY', 'the vusb link is not enumerated yet');
      if (done) process.nextTick(done, err);
      return undefined;
    }
    if (length > VUSB_MAX_PAYLOAD) {
      if (done) process.nextTick(done, new MuxwireError('MUXWIRE_ERR_BAD_LENGTH', `OUT transfer of ${length} bytes exceeds ${VUSB_MAX_PAYLOAD}`));
      return undefined;
    }
    return pipes;
  }

  /** The socket stays corked until the end of this tick: the tick's packets leave in one writev. */
  #corkForTick(): void {
    if (this.#corked) return;
    this.#corked = true;
    this.#socket.cork();
    process.nextTick(this.#uncork);
  }

  start(handlers: DeviceLinkHandlers): void {
    if (this.#handlers) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', 'the vusb link was already started');
    this.#handlers = handlers;
    if (this.#closed) {
      process.nextTick(() => handlers.onClose(this.#endError));
      return;
    }
    const early = this.#early;
    this.#early = [];
    for (const data of early) {
      this.#deliverIn(data);
      if (this.#closed) return;
    }
    this.#socket.resume();
  }

  close(): void {
    if (this.#closed) return;
    this.#socket.destroy();
  }

  #fail(err: Error): void {
    this.#endError ??= err;
    this.#socket.destroy();
  }

  #onSocketData(chunk: Buffer): void {
    try {
      this.#decoder.feed(chunk, this.#onMessage);
    } catch (err) {
      // Malformed wire input, or a consumer's onData that threw: either way this link is over.
      this.#log.warn(`vusb link failed: ${(err as Error).message}`);
      this.#fail(err as Error);
    }
  }

  /** One message, its buffers views valid only during the call; false once the link closed. */
  readonly #onMessage = (msg: VusbMessage): boolean => {
    this.#handleMessage(msg);
    return !this.#closed;
  };

  #handleMessage(msg: VusbMessage): void {
    switch (msg.type) {
      case VusbMessageType.BULK_IN:
        if (!this.#pipes || msg.endpoint !== this.#pipes.inEndpoint) {
          // No IN transfer is queued on that endpoint: a real host would never see these bytes.
          // Warned once per link (a device doing this does it for every write), then at debug.
          const text = `ignored ${msg.data.length} bytes from endpoint 0x${msg.endpoint.toString(16)} with no transfer queued`;
          if (!this.#strayWarned) {
            this.#strayWarned = true;
            this.#log.warn(text);
          } else if (this.#log.enabled('debug')) {
            this.#log.debug(text);
          }
          return;
        }
        if (!this.#handlers) {
          if (msg.data.length > 0) this.#early.push(Buffer.from(msg.data));
          return;
        }
        this.#deliverIn(msg.data);
        return;
      case VusbMessageType.CONTROL_DONE:
        // The reply outlives this call (it resolves a promise): a copy of its bytes.
        this.#control.onControlDone({ ...msg, data: Buffer.from(msg.data) });
        return;
      case VusbMessageType.HELLO:
        this.#control.onHello(msg);
        return;
      default:
        throw new MuxwireError('MUXWIRE_ERR_VUSB_BAD_MESSAGE', `device sent a host-to-device message (type ${msg.type})`);
    }
  }

  /**
   * One device write fills the queued IN transfers in order. `data` may be a view of memory the
   * next read reuses: a consumer that `borrow`s finishes with each chunk before onData returns (the
   * ring demuxer copies or sends synchronously); any other gets a copy it may keep.
   */
  #deliverIn(input: Buffer): void {
    const length = input.length;
    if (length === 0) return;
    const handlers = this.#handlers!;
    const data = handlers.borrow === true ? input : Buffer.from(input);
    const size = this.#opts.inTransferSize;
    if (length <= size) {
      handlers.onData(data);
      return;
    }
    for (let offset = 0; offset < length && !this.#closed; offset += size) {
      handlers.onData(data.subarray(offset, Math.min(offset + size, length)));
    }
  }

  #end(): void {
    if (this.#closed) return;
    this.#closed = true;
    const err = this.#endError;
    this.#control.fail(err ?? NO_DEVICE());
    this.#early = [];
    const handlers = this.#handlers;
    if (handlers) {
      try {
        handlers.onClose(err);
      } catch (e) {
        this.#log.error(`onClose threw: ${(e as Error).message}`);
      }
    }
    this.#onEnd(err);
  }
}
