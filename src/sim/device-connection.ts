/**
 * One TCP-like connection on the device side of the mux (usbmux.md §3), as the stream a service
 * reads and writes. Like a `net.Socket`, the connection IS the stream: the service gets a Duplex
 * whose readable side carries what the host sent and whose writable side goes to the host.
 *
 * Sequence numbers (u32, wrapping), as a real device keeps them (usbmux.md §3.3, §3.4):
 *
 * ```
 *  device → host                            host → device
 *  snd_una ≤ snd_nxt                        rcv_nxt = next host byte expected
 *   │ in flight │ sendable │                 │ queued for the service │ free │
 *   snd_una   snd_nxt   snd_una+snd_wnd     (consumed)            rcv_nxt    rcv_nxt+free
 *  (host ACK)          (host window)         window advertised = capacity − queued
 * ```
 *
 * - The device's SYN|ACK carries seq 0, so its first data byte is seq 1; the host's first data byte
 *   is its SYN's seq + 1 (usbmuxd starts at 0, usbmuxd2 at a random number).
 * - Flow control toward the host: never more than `snd_una + snd_wnd − snd_nxt` bytes, in packets of
 *   at most the mux's segment size. A service's `write()` completes only when its bytes went out, so a
 *   source streams at window speed holding at most one chunk plus the Writable's buffer.
 * - Flow control toward the service: host data waits in a receive queue bounded by the window this
 *   connection advertises (a real TCP stack's 128 KiB receive buffer); it moves into the Readable only
 *   while the service reads. The window re-opens as the service consumes, so a slow service slows the
 *   host instead of growing memory.
 * - No half-close (usbmux.md §3.7): the service ending its side sends RST with a reason string, after
 *   every written byte went out; the host's RST ends the readable side (after what was already
 *   received) and fails writes that are still pending.
 */
import { Duplex } from 'node:stream';
import { MuxwireError } from '../errors.js';
import { TcpFlag } from '../protocol/tcp-header.js';
import type { TcpHeader } from '../protocol/tcp-header.js';
import type { Logger } from '../log.js';

/** What a connection needs from the mux that carries it (DeviceMux implements it). */
export interface ConnectionCarrier {
  /** Largest data payload of one device packet. */
  readonly maxSegment: number;
  /** Sends one TCP packet: `payload` parts are sent back to back, `length` bytes in all. */
  sendTcp(header: TcpHeader, payload: readonly Buffer[], length: number): void;
  /** Asks for a pure ACK soon (coalesced: at most one per connection per batch of input). */
  scheduleAck(conn: DeviceConnection): void;
  /** Removes the connection from the mux's table; it will not see host packets again. */
  forget(conn: DeviceConnection): void;
  /** The mux's logger (context: the device). */
  readonly log: Logger;
}

/** How a connection starts: the host's SYN and the device's receive window. */
export interface DeviceConnectionInit {
  carrier: ConnectionCarrier;
  /** The service port on the device (the host's destination port). */
  devicePort: number;
  /** The host's source port. */
  hostPort: number;
  /** Sequence number of the host's SYN. */
  hostSynSeq: number;
  /** Window the host advertised in its SYN, in bytes. */
  hostWindow: number;
  /** Receive buffer of this connection in bytes: the largest window it advertises. */
  window: number;
}

/** The device's initial sequence number, as real devices send it (usbmux.md §3.3). */
export const DEVICE_ISN = 0;

/** Payloads smaller than this are copied out of the transfer that carried them. */
const COPY_BELOW = 2048;

/** Readable buffer in front of the service: data beyond it waits in the (window-bounded) queue. */
const READABLE_HIGH_WATER = 64 * 1024;

type State = 'open' | 'closed';

/**
 * The device side of one mux connection, as a Duplex stream handed to a service.
 * Created by DeviceMux for every accepted SYN; services never construct it.
 */
export class DeviceConnection extends Duplex {
  /** The service port on the device. */
  readonly devicePort: number;
  /** The host's source port. */
  readonly hostPort: number;

  #carrier: ConnectionCarrier;
  // 'open' until either side sends RST or the device goes away; the stream may outlive it.
  #state: State = 'open';

  // Sending (device → host).
  #sndNxt: number;
  #sndUna: number;
  #sndWnd: number;
  #pending: Buffer[] = [];
  #pendingIndex = 0;
  #pendingOffset = 0;
  #pendingBytes = 0;
  #pendingCallback: ((err?: Error | null) => void) | undefined;

  // Receiving (host → device).
  #rcvNxt: number;
  readonly #capacity: number;
  #rxQueue: Buffer[] = [];
  #rxQueued = 0;
  #wantRead = false;
  #eofPending = false;
  // Right edge (rcv_nxt + window) the host last heard of; a window update goes out when the edge
  // the service's reading opens up has moved far enough past it.
  #advertisedEdge: number;

  constructor(init: DeviceConnectionInit) {
    super({ allowHalfOpen: true, readableHighWaterMark: READABLE_HIGH_WATER, decodeStrings: true });
    this.#carrier = init.carrier;
    this.devicePort = init.devicePort;
    this.hostPort = init.hostPort;
    this.#sndNxt = (DEVICE_ISN + 1) >>> 0;
    this.#sndUna = this.#sndNxt;
    this.#sndWnd = init.hostWindow;
    this.#rcvNxt = (init.hostSynSeq + 1) >>> 0;
    this.#capacity = init.window;
    this.#advertisedEdge = (this.#rcvNxt + init.window) >>> 0;
  }

  /** True until either side reset the connection or the device went away. */
  get isOpen(): boolean {
    return this.#state === 'open';
  }

  /** Bytes this connection may still send before the host's next ACK or window update. */
  get sendWindow(): number {
    const inFlight = (this.#sndNxt - this.#sndUna) >>> 0;
    return Math.max(0, this.#sndWnd - inFlight);
  }

  /** Host bytes received but not yet taken by the service. */
  get receiveQueued(): number {
    return this.#rxQueued;
  }

  /** The window this connection advertises now: receive buffer minus what waits for the service. */
  get receiveWindow(): number {
    return this.#capacity - this.#rxQueued;
  }

  /** The TCP header for the device's SYN|ACK answering the host's SYN. */
  synAckHeader(): TcpHeader {
    return this.#header(TcpFlag.SYN | TcpFlag.ACK, DEVICE_ISN);
  }

  /**
   * Handles one host TCP packet for this connection (DeviceMux routes by port pair). `payload` may
   * be a view into the transfer the host sent; large payloads are queued as such views (see
   * DeviceMux.receive), small ones are copied.
   */
  handleSegment(h: TcpHeader, payload: Buffer): void {
    if (this.#state !== 'open') return;
    if ((h.flags & TcpFlag.RST) !== 0) {
      this.#peerReset(payload);
      return;
    }
    if (h.flags !== TcpFlag.ACK) {
      // The host side of the protocol sends exactly ACK on a live connection (usbmux.md §3.4); the
      // device answers anything else the way usbmuxd answers the device: RST and teardown (§3.7).
      this.#abort(`unexpected TCP flags 0x${h.flags.toString(16).padStart(2, '0')}`);
      return;
    }
    // An ACK can only cover bytes the device has sent; a stale one still carries a valid window.
    const acked = (h.ack - this.#sndUna) >>> 0;
    if (acked <= ((this.#sndNxt - this.#sndUna) >>> 0)) {
      this.#sndUna = h.ack >>> 0;
      this.#sndWnd = h.window;
    }
    if (payload.length > 0) {
      // There is no retransmission in the mux (usbmux.md §2.7): a gap means bytes were lost and the
      // stream is corrupt, so the connection must end rather than deliver wrong data.
      if (h.seq >>> 0 !== this.#rcvNxt) {
        this.#abort(`sequence ${h.seq >>> 0} received, ${this.#rcvNxt} expected`);
        return;
      }
      if (payload.length > this.#capacity - this.#rxQueued) {
        this.#abort(`receive window overflow (${payload.length} bytes, ${this.#capacity - this.#rxQueued} free)`);
        return;
      }
      this.#rcvNxt = (this.#rcvNxt + payload.length) >>> 0;
      // A small payload is copied so that its view cannot keep a whole transfer buffer alive while
      // it waits; large ones stay views (the transfer is mostly this payload anyway).
      this.#rxQueue.push(payload.length < COPY_BELOW ? Buffer.from(payload) : payload);
      this.#rxQueued += payload.length;
      this.#carrier.scheduleAck(this);
      this.#deliver();
    }
    this.#pump();
  }

  /** Sends a pure ACK with the current ack number and window (the mux calls it when one is due). */
  sendAck(): void {
    if (this.#state !== 'open') return;
    this.#carrier.sendTcp(this.#header(TcpFlag.ACK, this.#sndNxt), [], 0);
  }

  /**
   * Ends the connection because the device went away or the mux was reset: no RST can be sent; the
   * stream is destroyed with `err`.
   */
  terminate(err: Error): void {
    if (this.#state === 'open') {
      this.#state = 'closed';
      this.#carrier.forget(this);
    }
    this.destroy(err);
  }

  /**
   * Ends the connection with an RST carrying `reason` (usbmuxd logs the string, usbmux.md §3.7) and
   * destroys the stream with a MuxwireError of `code`.
   */
  reset(reason: string, code = 'MUXWIRE_ERR_CONN_RESET'): void {
    if (this.#state === 'open') this.#sendReset(reason);
    this.destroy(new MuxwireError(code, reason));
  }

  // ---- Duplex plumbing ----

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.#queueWrite([chunk], chunk.length, callback);
  }

  override _writev(chunks: { chunk: Buffer }[], callback: (err?: Error | null) => void): void {
    const buffers: Buffer[] = [];
    let length = 0;
    for (const c of chunks) {
      buffers.push(c.chunk);
      length += c.chunk.length;
    }
    this.#queueWrite(buffers, length, callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    // Every written byte went out (writes complete on transmission), so the RST follows the data in
    // the same packet order, and usbmuxd flushes that data to its client before tearing down.
    if (this.#state === 'open') {
      this.#sendReset('connection closed by the device service');
      this.#endReadable();
    }
    callback();
  }

  override _read(): void {
    this.#wantRead = true;
    this.#deliver();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    if (this.#state === 'open') this.#sendReset(err ? err.message : 'connection closed by the device service');
    this.#failPending(() => err ?? new MuxwireError('MUXWIRE_ERR_CLOSED', 'connection destroyed'));
    this.#rxQueue = [];
    this.#rxQueued = 0;
    callback(err);
  }

  // ---- sending ----

  #queueWrite(buffers: Buffer[], length: number, callback: (err?: Error | null) => void): void {
    if (this.#state !== 'open') {
      callback(new MuxwireError('MUXWIRE_ERR_CONN_RESET', 'the host closed the connection'));
      return;
    }
    this.#pending = buffers;
    this.#pendingIndex = 0;
    this.#pendingOffset = 0;
    this.#pendingBytes = length;
    this.#pendingCallback = callback;
    this.#pump();
  }

  /** Sends pending bytes as far as the host's window allows; completes the write when all went. */
  #pump(): void {
    while (this.#pendingBytes > 0 && this.#state === 'open') {
      const room = this.sendWindow;
      if (room <= 0) return;
      const n = Math.min(room, this.#carrier.maxSegment, this.#pendingBytes);
      // Sender-side silly-window avoidance (RFC 1122 §4.2.3.4): the host ACKs each packet on its
      // own, so each ACK opens the window a little; sending into every such gap degrades a stream
      // into ever smaller packets. Send a full segment, half the host's window, or the rest of this
      // write; otherwise wait for more ACKs (data is in flight, so they will come).
      if (n < this.#pendingBytes && n < Math.min(this.#carrier.maxSegment, Math.ceil(this.#sndWnd / 4))) return;
      const parts = this.#takePending(n);
      const header = this.#header(TcpFlag.ACK, this.#sndNxt);
      this.#sndNxt = (this.#sndNxt + n) >>> 0;
      this.#carrier.sendTcp(header, parts, n);
    }
    if (this.#pendingBytes === 0 && this.#pendingCallback !== undefined) {
      const callback = this.#pendingCallback;
      this.#pendingCallback = undefined;
      this.#pending = [];
      callback();
    }
  }

  /** Views of the next `n` pending bytes (no copy: the packet encoder copies once). */
  #takePending(n: number): Buffer[] {
    const parts: Buffer[] = [];
    let left = n;
    while (left > 0) {
      const buf = this.#pending[this.#pendingIndex]!;
      const take = Math.min(left, buf.length - this.#pendingOffset);
      parts.push(take === buf.length ? buf : buf.subarray(this.#pendingOffset, this.#pendingOffset + take));
      this.#pendingOffset += take;
      left -= take;
      if (this.#pendingOffset === buf.length) {
        this.#pendingIndex++;
        this.#pendingOffset = 0;
      }
    }
    this.#pendingBytes -= n;
    return parts;
  }

  /**
   * Fails the write that waits for the host's window, if one does. The error is made only then:
   * an Error captures a stack, and every connection the host closes would pay for it (about 20 µs
   * a connection in the connect benchmark's profile of the sim).
   */
  #failPending(makeError: () => Error): void {
    const callback = this.#pendingCallback;
    this.#pendingCallback = undefined;
    this.#pending = [];
    this.#pendingBytes = 0;
    if (callback) callback(makeError());
  }

  // ---- receiving ----

  /** Moves queued host data into the Readable while the service reads; re-opens the window. */
  #deliver(): void {
    let moved = false;
    while (this.#wantRead && this.#rxQueue.length > 0) {
      const buf = this.#rxQueue.shift()!;
      this.#rxQueued -= buf.length;
      moved = true;
      if (!this.push(buf)) this.#wantRead = false;
    }
    if (this.#rxQueue.length === 0 && this.#eofPending) {
      this.#eofPending = false;
      this.push(null);
    }
    if (moved && this.#state === 'open') this.#maybeWindowUpdate();
  }

  /**
   * A window update goes out once the service has freed a useful amount: a quarter of the buffer or
   * one full segment, whichever is less (silly-window avoidance, RFC 1122 §4.2.3.3). It cannot stall:
   * a window smaller than that means more than that waits in the queue, and reading it reopens it.
   */
  #maybeWindowUpdate(): void {
    const edge = (this.#rcvNxt + this.receiveWindow) >>> 0;
    const opened = (edge - this.#advertisedEdge) | 0;
    const threshold = Math.min(this.#capacity >>> 2, this.#carrier.maxSegment);
    if (opened >= threshold) this.#carrier.scheduleAck(this);
  }

  #endReadable(): void {
    this.#eofPending = true;
    this.#deliver();
  }

  // ---- closing ----

  /** The host reset the connection: the usual way a host closes (usbmuxd never sends FIN). */
  #peerReset(payload: Buffer): void {
    this.#state = 'closed';
    this.#carrier.forget(this);
    // Data the host sent before its RST is still the service's to read, as after a FIN.
    this.#endReadable();
    if (payload.length > 0 && this.#carrier.log.enabled('debug')) {
      this.#carrier.log.debug(`conn ${this.hostPort}→${this.devicePort} reset by the host: ${payload.toString('utf8')}`);
    }
    this.#failPending(() => new MuxwireError('MUXWIRE_ERR_CONN_RESET', 'the host closed the connection'));
  }

  #abort(reason: string): void {
    this.reset(reason, 'MUXWIRE_ERR_PROTOCOL');
  }

  #sendReset(reason: string): void {
    this.#state = 'closed';
    this.#carrier.forget(this);
    // The reason is diagnostic text for the host's log; one packet holds it whole in practice, and a
    // longer one (an error message is the only source) is cut at the packet limit rather than split.
    const text = Buffer.from(reason, 'utf8');
    const payload = text.subarray(0, Math.min(text.length, this.#carrier.maxSegment));
    this.#carrier.sendTcp(this.#header(TcpFlag.RST, this.#sndNxt), [payload], payload.length);
  }

  #header(flags: number, seq: number): TcpHeader {
    // Every packet carries ack and window, so each one tells the host the current right edge.
    const window = this.receiveWindow;
    this.#advertisedEdge = (this.#rcvNxt + window) >>> 0;
    return {
      sport: this.devicePort,
      dport: this.hostPort,
      seq: seq >>> 0,
      ack: this.#rcvNxt,
      flags,
      window,
    };
  }
}
