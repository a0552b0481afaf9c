/**
 * One TCP-like connection over the device mux (usbmux.md §3), as a Node Duplex.
 *
 * States (one function performs each transition):
 *
 * ```
 *  connecting ──SYN|ACK──────────────> connected        #establish()
 *  connecting ──RST / odd flags──────> closed           #fail()      (CONNREFUSED)
 *  connecting ──timeout──────────────> closed           #fail()      (RST sent, TIMEOUT)
 *  connecting ──unplug / shutdown────> closed           #fail()      (NO_DEVICE / CLOSED)
 *  connected  ──device RST or FIN────> closing          #startClosing()  (no RST back for RST)
 *  connected  ──client end()─────────> closing          #startClosing()  (RST sent, no half-close)
 *  connected  ──unplug───────────────> closing          #startClosing()
 *  closing    ──received data handed to the reader, end pushed──> closed (once the stream closes)
 *  any        ──destroy()────────────> closed           (RST sent if the device still knows us)
 * ```
 *
 *  - connecting: SYN sent, waiting for the device's SYN|ACK (or RST: nobody listens there).
 *  - connected: data both ways, flow-controlled by the two windows.
 *  - closing: the mux side is over (no more device data can come); what the device sent is still
 *    being delivered to the reader, then the readable side ends.
 *  - closed: the port is released and nothing more happens.
 *
 * Flow control, device → reader: we advertise a constant 128 KiB window like usbmuxd, and our ACK
 * number counts bytes handed to the readable side (`push`), never bytes merely received. While
 * the reader is slow, `push` says stop, data waits in `#rxQueue`, our ACK stops moving and the
 * device stops at its window: memory is bounded by the window plus the stream's highWaterMark.
 * When the reader drains (`_read`), the queue is pushed and a window-update ACK goes out at once —
 * usbmuxd waits for a 30 ms idle timer there (§3.6, §5 consequence 1), which stalls a device that
 * only sends when ACKed.
 *
 * When ACKs go out (`#ackSoon`): at once when the device has used half our window or more
 * (bytes acknowledged by nothing yet, handed over or still queued, ≥ 64 KiB), so it never waits
 * for one; otherwise after ACK_DELAY_MS, unless data we send carries the ACK first. usbmuxd ACKs
 * every device packet at once (and again on a 30 ms timer, §3.6); one ACK per half window instead
 * halves the OUT transfers of a bulk download (a 48 KiB packet each) and the device's wake-ups,
 * and a device with a window to spare does not need to hear sooner.
 *
 * Ring mode (DeviceSession `demux: 'ring'`): device data waits in the connection's ring in the
 * session's demuxer instead of `#rxQueue`; the ring's capacity is our window, so an overrun is a
 * full ring. Handing bytes to the readable side copies them out of the ring (a Readable's consumer
 * may keep what it is given for as long as it likes), so the ACK still counts bytes handed over.
 * `relayTo(socket)` is the zero-copy way out: views of ring memory go to the socket and are
 * released, and ACKed, only in its write callbacks, i.e. once the socket has taken the bytes.
 *
 * Flow control, writer → device: at most `deviceWindow - (txSeq - deviceAck)` bytes in flight and
 * at most 49116 data bytes per packet (§3.5). A write that does not fit keeps its callback until
 * the device ACKs, so the Writable buffers at most its highWaterMark and then pushes back.
 */
import { Duplex } from 'node:stream';
import { MuxwireError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Demuxer } from '../accel/demuxer.js';

/** Named connection states (see the drawing above). */
export type MuxConnectionState = 'connecting' | 'connected' | 'closing' | 'closed';

/** Why a connection left `connected`. */
export type MuxCloseReason = 'local' | 'reset' | 'fin' | 'device-gone' | 'shutdown' | 'overrun';

// TCP flags (usbmux.md §3.1), duplicated here as plain constants for the hot path.
const FIN = 0x01;
const SYN = 0x02;
const RST = 0x04;
const ACK = 0x10;

/** The window the host advertises, in bytes (usbmuxd: 131072, sent as 512). */
export const HOST_WINDOW = 131072;
/** Largest data payload per host→device packet: 49152 − 16 − 20 (usbmux.md §3.3). */
export const MAX_PAYLOAD = 49116;
/** Device bytes unacknowledged (handed over or queued) at which our ACK goes out at once. */
const ACK_AT_ONCE = HOST_WINDOW / 2;
/** Otherwise a pending ACK goes out after this long (usbmuxd's idle timer is 30 ms). */
const ACK_DELAY_MS = 2;
/** Payloads smaller than this are copied out of the transfer buffer so a view cannot pin it. */
const COPY_BELOW = 2048;
/** Largest chunk handed to the readable side from a ring at once: one device packet's worth, so
 * the readable buffer stays within its highWaterMark plus one packet as on the stream path. */
const RING_CHUNK = 65536;
/** A chunk this long filled a socket read (Node reads 64 KiB at a time): the stream goes on. */
const FULL_READ = 65536;

/** What a connection needs from its device session: sending segments and giving its port back. */
export interface MuxConnectionHost {
  /**
   * Sends one TCP segment for `conn` with `length` payload bytes, which the host copies into its
   * packet with `conn.takePayload`, or, when its link can send a packet in parts, borrows as views
   * with `conn.lendPayload` (no copy: the link gives them back through `conn.lentWritten`).
   */
  sendSegment(conn: MuxConnection, flags: number, length?: number): void;
  /** Forgets `conn`: its port is free again and device packets for it get an anonymous RST. */
  releaseConnection(conn: MuxConnection): void;
  /** Ring mode: `conn` has delivered (or dropped) everything in its ring; close its slot. */
  closeRing?(conn: MuxConnection, slot: number): void;
}

/**
 * Where a ring-mode connection's device data lies: its slot in the session's demuxer, whose ring
 * receives the payloads (one copy, transfer → ring) before the connection sees the packet.
 */
export interface MuxConnectionRing {
  readonly demuxer: Demuxer;
  readonly slot: number;
}

/**
 * Where a ring-mode connection can hand views of its ring (`relayTo`): a client socket, or any
 * Writable whose write callback means "these bytes are no longer needed" (a net.Socket calls it
 * once the kernel has taken them).
 */
export interface RingSink {
  write(chunk: Buffer, callback: (err?: Error | null) => void): boolean;
  once(event: 'drain' | 'close', listener: () => void): unknown;
  cork(): void;
  uncork(): void;
  /** Bytes written and not yet taken (a net.Socket's count). */
  readonly writableLength: number;
}

/** Buffered bytes of one connection, for tests and diagnostics (bounded by the windows). */
export interface MuxConnectionStats {
  state: MuxConnectionState;
  /** Device data received but not yet handed to the readable side (bounded by HOST_WINDOW). */
  rxQueued: number;
  /** Device data in the readable side's buffer (bounded by its highWaterMark plus one packet). */
  readableBuffered: number;
  /** Writer data held for the device's window (one write) plus the Writable's own buffer. */
  txPending: number;
  /** Bytes sent but not yet ACKed by the device. */
  inFlight: number;
  bytesReceived: number;
  bytesSent: number;
  /** Ring mode with a sink descriptor: device bytes the demuxer sent straight to the sink. */
  bytesRelayedDirect: number;
}

export interface MuxConnectionOptions {
  host: MuxConnectionHost;
  sourcePort: number;
  devicePort: number;
  logger: Logger;
  /** highWaterMark of the readable side in bytes (default 128 KiB). */
  readableHighWaterMark?: number;
  /** highWaterMark of the writable side in bytes (default 64 KiB, usbmuxd's output buffer). */
  writableHighWaterMark?: number;
  /** Ring mode: device data arrives in this demuxer slot (`handleRingSegment`), not as views. */
  ring?: MuxConnectionRing;
}

/**
 * A connection to one port of one device. Emits 'closing' (reason) when the mux side is over and
 * only the delivery of received data remains. Created by `DeviceSession.connect`, which resolves with
 * it once the device has accepted (SYN|ACK). There is no half-close on the mux: ending the
 * writable side resets the connection after the written data has gone out, and the readable side
 * ends once what the device had sent has been read.
 */
export class MuxConnection extends Duplex {
  /** The host's source port (1..65535). */
  readonly sourcePort: number;
  /** The device port (e.g. 62078 for lockdownd). */
  readonly devicePort: number;
  readonly log: Logger;

  #host: MuxConnectionHost;
  #state: MuxConnectionState = 'connecting';
  #closeReason: MuxCloseReason | undefined;
  #closeError: MuxwireError | undefined;

  // Sequence numbers (u32, wrapping). usbmuxd's scheme (§3.3): both sides start at 0, SYN counts 1.
  #txSeq = 0;
  #deviceAck = 0;
  #deviceWindow = 0;
  #rxAck = 0;
  #ackSent = 0;

  // Ring mode: the slot holding device data not yet handed to the reader (then #rxQueue is unused
  // and #rxQueued counts the ring's bytes that belong to the reader).
  #ring: MuxConnectionRing | undefined;

  // Ring mode with a sink (`relayTo`): bytes of #rxQueued already written to the sink and not yet
  // released by its callbacks, whether the sink asked us to wait for 'drain', and the batching
  // of one tick's writes (cork) and of the window updates their callbacks cause.
  #sink: RingSink | undefined;
  #sinkPending = 0;
  #sinkBlocked = false;
  #sinkCorked = false;
  /** The sink's descriptor is the demuxer's sink too: the native core may send to it directly. */
  #sinkAttached = false;
  /** The sink's descriptor, until it is given to the demuxer (#attachSinkFdOnceBulk). */
  #sinkFd: number | undefined;
  /** Device bytes after which the descriptor is given (relayTo's `directAfter`). */
  #directAfter = 0;
  #sinkAckScheduled = false;
  /** A delayed ACK (#ackSoon), if one is pending. */
  #ackTimer: NodeJS.Timeout | undefined;

  // Device data not yet handed to the reader.
  #rxQueue: Buffer[] = [];
  #rxHead = 0;
  #rxQueued = 0;
  #readPaused = false;
  #readableEnded = false;

  // Writer bytes not yet sent: the chunks of the current write, after the unsent tail of the
  // writes before it (less than one packet), oldest first. #wCallback is the current write's.
  #tx: Buffer[] = [];
  #txHead = 0;
  #txOffset = 0;
  #txBytes = 0;
  #wCallback: ((err?: Error | null) => void) | undefined;
  #pumping = false;
  /** The last chunk written was a full socket read: more of the stream is probably on its way. */
  #lastReadFull = false;
  /** A short tail waits for the rest of this loop turn's reads (flushed by setImmediate). */
  #tailFlushScheduled = false;
  /** The writer has ended while some of its bytes were still to be sent (see _final). */
  #finalCallback: ((err?: Error | null) => void) | undefined;

  /**
   * Told each time `n` more of the writer's bytes, in write order, are no longer needed: copied
   * into packets, or lent to the link and written by it (the daemon's ring reader reuses their
   * memory, src/accel/client-reader.ts).
   */
  onPayloadTaken: ((n: number) => void) | undefined = undefined;
  /** The payload of the segment being sent was lent (lendPayload), not copied. */
  #lentLast = false;
  /**
   * Byte counts not yet told to onPayloadTaken, oldest first: negative while lent to the link and
   * not written yet, positive once free. The head is always a lent one still out (or the queue is
   * empty), since a free count at the head is told at once.
   */
  #untold: number[] = [];
  #untoldHead = 0;
  #bytesReleased = 0;

  #bytesReceived = 0;
  #bytesSent = 0;
  #bytesDirect = 0;

  // Connect promise plumbing.
  #resolve: ((conn: MuxConnection) => void) | undefined;
  #reject: ((err: Error) => void) | undefined;
  #timer: NodeJS.Timeout | undefined;

  /** @internal Sessions create connections; users get them from `DeviceSession.connect`. */
  constructor(opts: MuxConnectionOptions) {
    super({
      allowHalfOpen: false,
      readableHighWaterMark: opts.readableHighWaterMark ?? 131072,
      writableHighWaterMark: opts.writableHighWaterMark ?? 65536,
    });
    this.#host = opts.host;
    this.sourcePort = opts.sourcePort;
    this.devicePort = opts.devicePort;
    this.log = opts.logger;
    this.#ring = opts.ring;
  }

  /** @internal The demuxer slot of a ring-mode connection whose ring is still open. */
  get ringSlot(): number | undefined {
    return this.#ring?.slot;
  }

  /** The current state (see the class drawing). */
  get state(): MuxConnectionState {
    return this.#state;
  }

  /** Why the connection left `connected`, once it has. */
  get closeReason(): MuxCloseReason | undefined {
    return this.#closeReason;
  }

  /** The error behind an abnormal close (device reset, unplug, overrun), once there is one. */
  get closeError(): MuxwireError | undefined {
    return this.#closeError;
  }

  /** Sequence number of the next byte the host sends (for the segment header). */
  get txSeq(): number {
    return this.#txSeq;
  }

  /** Acknowledgement number the host sends: device bytes handed to the reader, plus the SYN. */
  get rxAck(): number {
    return this.#rxAck;
  }

  /** Writer bytes told to `onPayloadTaken` so far (whether or not anyone listens). */
  get bytesReleased(): number {
    return this.#bytesReleased;
  }

  /** Buffered bytes, for tests and diagnostics. */
  stats(): MuxConnectionStats {
    return {
      state: this.#state,
      rxQueued: this.#rxQueued,
      readableBuffered: this.readableLength,
      txPending: this.#wCallback === undefined ? this.#txBytes + this.writableLength : Math.max(this.#txBytes, this.writableLength),
      inFlight: (this.#txSeq - this.#deviceAck) >>> 0,
      bytesReceived: this.#bytesReceived,
      bytesSent: this.#bytesSent,
      bytesRelayedDirect: this.#bytesDirect,
    };
  }

  // ---- called by the session -----------------------------------------------------------------

  /**
   * @internal Waits for the device's answer to the SYN the session has just sent (seq 0, ack 0,
   * usbmux.md §3.3 step 2): `resolve` on SYN|ACK, `reject` on RST, timeout or shutdown.
   */
  open(timeoutMs: number, resolve: (conn: MuxConnection) => void, reject: (err: Error) => void): void {
    this.#resolve = resolve;
    this.#reject = reject;
    if (timeoutMs > 0) this.#timer = setTimeout(onConnectTimeout, timeoutMs, this);
  }

  /**
   * @internal One device segment for this connection (hot path). `payload` is the data after the
   * 20-byte header, possibly empty; it may be a view into the transfer buffer.
   */
  handleSegment(flags: number, ack: number, window: number, payload: Buffer): void {
    this.#segment(flags, ack, window, payload.length, payload, false);
  }

  /**
   * @internal Ring mode: one device segment whose `length` payload bytes the demuxer appended to
   * this connection's ring, or could not (`overflow`: the ring, sized to our window, was full).
   * `payload` is a view of them only when the caller needs the text (an RST's reason).
   */
  handleRingSegment(flags: number, ack: number, window: number, length: number, overflow: boolean, payload: Buffer = EMPTY, sent = 0): void {
    this.#segment(flags, ack, window, length, payload, overflow, sent);
  }

  /** `sent`: ring mode, payload bytes the demuxer already sent to the sink (the rest is in the ring). */
  #segment(flags: number, ack: number, window: number, length: number, payload: Buffer, overflow: boolean, sent = 0): void {
    switch (this.#state) {
      case 'connecting':
        if (flags & RST) {
          // Nobody listens on that port: the device answers the SYN with RST (§3.7).
          this.#fail(new MuxwireError('MUXWIRE_ERR_CONN_REFUSED', `device refused the connection to port ${this.devicePort}`, { detail: resetReason(payload) }), false);
        } else if ((flags & (SYN | ACK)) === (SYN | ACK)) {
          this.#establish(ack, window);
          if (length > 0 && (this.#state as MuxConnectionState) === 'connected') this.#receive(length, payload, overflow);
        } else {
          // usbmuxd tears down with RST and answers CONNREFUSED to anything else (§3.2).
          this.#fail(new MuxwireError('MUXWIRE_ERR_CONN_REFUSED', `device answered the SYN to port ${this.devicePort} with flags 0x${flags.toString(16)}`), true);
        }
        return;
      case 'connected':
        break;
      default:
        // closing/closed: the session already released us; late packets are harmless.
        return;
    }
    if (flags & RST) {
      if (this.log.enabled('debug')) {
        const reason = resetReason(payload);
        this.log.debug(`device reset the connection${reason ? `: ${reason}` : ''}`);
      }
      // The RST's payload is its reason, never data: the demuxer neither stores nor sends it.
      this.#startClosing('reset', false, undefined);
      return;
    }
    if (flags & ACK) {
      this.#deviceAck = ack;
      this.#deviceWindow = window;
    }
    // usbmuxd drops the data of any packet whose flags are not exactly ACK and resets (§6.4).
    // We keep PSH|ACK data, and take FIN as the end of the connection after its data.
    if (length > 0) {
      if (!this.#receive(length, payload, overflow, sent)) return;
    }
    if (flags & FIN) {
      this.log.debug('device sent FIN; closing (the mux has no half-close)');
      this.#startClosing('fin', true, undefined);
      return;
    }
    const sentBefore = this.#bytesSent;
    if (this.#txBytes > 0) this.#pump();
    // At least one ACK per device data packet, as usbmuxd (§3.6); a data packet we just sent
    // carried it already.
    // With a sink, the ACK waits for the sink to take the bytes (#sinkWritten): an ACK now could
    // not move.
    if (length > 0 && this.#bytesSent === sentBefore && this.#state === 'connected' && this.#sink === undefined) this.#ackSoon();
  }

  /**
   * Ring mode, zero-copy delivery to `sink` (the daemon's client socket). From now on the device's
   * bytes are written to the sink as views of ring memory, not pushed to the readable side; each
   * view is released (`consume`), and our ACK moves past it to reopen the device's window, only
   * when the sink's write callback says it has taken the bytes. Memory stays the ring's: a sink
   * that stops taking bytes stops our ACKs, and the device stops at its window. The readable side
   * carries no data from here on but still ends ('end') once the device side is over and every
   * byte was taken. Bytes already in the readable buffer are written first.
   *
   * Returns false, changing nothing, on the stream path (no ring) or once a sink is attached.
   *
   * `fd`: the sink's socket, which the native demuxer may send payloads to with no copy and no
   * JavaScript (native/demuxer.h, "Sinks") whenever nothing waits here before them. The demuxer
   * then holds a duplicate of it; with `directAfter`, only once the device has sent that many
   * bytes, so a tunnel that carries requests and replies never pays for the duplicate.
   */
  relayTo(sink: RingSink, fd?: number, directAfter = 0): boolean {
    const ring = this.#ring;
    if (ring === undefined || this.#sink !== undefined || this.#state === 'closed') return false;
    this.#sink = sink;
    for (let chunk = this.read() as Buffer | null; chunk !== null; chunk = this.read() as Buffer | null) {
      sink.write(chunk, ignoreError);
    }
    if (fd !== undefined) {
      // Let go of the core's duplicate with the socket; a socket closed first is never attached.
      sink.once('close', () => {
        this.#sinkFd = undefined;
        this.#detachSink();
      });
      this.#sinkFd = fd;
      this.#directAfter = directAfter;
      this.#attachSinkFdOnceBulk();
    }
    // Flowing with nothing to read: 'end' is emitted as soon as the end is pushed.
    this.resume();
    this.#feedSink();
    if (this.#state === 'closing' && this.#rxQueued === 0) this.#drainQueue();
    return true;
  }

  /** @internal The device is gone (unplug or link failure). */
  deviceGone(): void {
    const err = new MuxwireError('MUXWIRE_ERR_NO_DEVICE', 'the device was disconnected');
    if (this.#state === 'connecting') this.#fail(err, false);
    else if (this.#state === 'connected') this.#startClosing('device-gone', false, err);
  }

  /** @internal The session shuts down: reset the connection. */
  shutdown(): void {
    const err = new MuxwireError('MUXWIRE_ERR_CLOSED', 'the device session was closed');
    if (this.#state === 'connecting') this.#fail(err, true);
    else if (this.#state === 'connected') this.#startClosing('shutdown', true, err);
  }

  /** @internal The connect timer fired. */
  connectTimedOut(): void {
    this.#timer = undefined;
    if (this.#state !== 'connecting') return;
    this.#fail(new MuxwireError('MUXWIRE_ERR_TIMEOUT', `no answer from the device to a connect to port ${this.devicePort}`), true);
  }

  // ---- transitions -------------------------------------------------------------------------------

  /** connecting → connected. */
  #establish(ack: number, window: number): void {
    this.#clearTimer();
    this.#state = 'connected';
    // usbmuxd does not copy the device's seq: it assumes the device starts at 0 (§3.3, §6.3).
    this.#txSeq = 1;
    this.#rxAck = 1;
    this.#deviceAck = ack;
    this.#deviceWindow = window;
    const resolve = this.#resolve;
    this.#resolve = undefined;
    this.#reject = undefined;
    // The opener hears of it first (the daemon writes Result 0 at once, while the handshake ACK
    // below waits for the link's end-of-tick flush), and any data it writes now carries the ACK.
    resolve?.(this);
    if (this.#state === 'connected' && this.#txBytes > 0) this.#pump();
    if (this.#state === 'connected' && this.#ackSent !== this.#rxAck) this.#sendAck();
  }

  /** connecting → closed, rejecting the connect. */
  #fail(err: MuxwireError, sendRst: boolean): void {
    this.#clearTimer();
    if (sendRst) this.#host.sendSegment(this, RST);
    this.#state = 'closed';
    this.#closeError = err;
    this.#host.releaseConnection(this);
    this.#closeRing();
    const reject = this.#reject;
    this.#resolve = undefined;
    this.#reject = undefined;
    // Nobody holds this stream yet: destroy it quietly; the error goes to the connect promise.
    this.destroy();
    reject?.(err);
  }

  /** connected → closing: no more device data; deliver what came, then end the readable side. */
  #startClosing(reason: MuxCloseReason, sendRst: boolean, err: MuxwireError | undefined): void {
    if (sendRst) this.#host.sendSegment(this, RST);
    this.#state = 'closing';
    this.#closeReason = reason;
    this.#closeError = err;
    this.#host.releaseConnection(this);
    // The client gets what the ring holds now and nothing more: until the slot closes, the
    // demuxer still matches the ports, and must not send a late device packet (data behind an
    // RST, or after a FIN or an overrun) straight to the client.
    const ring = this.#ring;
    if (this.#sinkAttached && ring !== undefined) ring.demuxer.setDirect(ring.slot, false);
    // Writes waiting for a window that will never open are finished; their bytes cannot go out.
    this.#completePendingWrite();
    this.emit('closing', reason);
    this.#drainQueue();
  }

  // ---- device → reader ---------------------------------------------------------------------------

  #receive(length: number, payload: Buffer, overflow: boolean, sent = 0): boolean {
    return this.#ring === undefined ? this.#receiveData(payload) : this.#receiveRing(length, overflow, sent);
  }

  /**
   * Ring mode: `len` bytes were appended to the ring (or not, on overflow). Hands them to the
   * reader at once when nothing waits before them, else leaves them in the ring. The ring's
   * capacity is our window, so an overflow is exactly the stream path's overrun.
   */
  #receiveRing(len: number, overflow: boolean, sent: number): boolean {
    this.#bytesReceived += len;
    if (overflow) {
      this.log.warn(`device overran the window (${this.#rxQueued + len} bytes unacknowledged); resetting`);
      this.#startClosing('overrun', true, new MuxwireError('MUXWIRE_ERR_PROTOCOL', 'the device sent more than the advertised window'));
      return false;
    }
    if (sent > 0) {
      this.#bytesDirect += sent;
      // Already in the sink's socket: taken, so acknowledged (with this batch's window updates).
      this.#rxAck = (this.#rxAck + sent) >>> 0;
      this.#scheduleSinkAck();
    }
    const rest = len - sent;
    if (rest === 0) return true;
    this.#rxQueued += rest;
    // After counting these bytes as queued: direct sends wait until the sink has written them.
    if (this.#sinkFd !== undefined) this.#attachSinkFdOnceBulk();
    if (this.#sink !== undefined) this.#feedSink();
    else if (this.#rxQueued === rest && !this.#readPaused) this.#drainQueue();
    return true;
  }

  /** Direct sends resume once every byte the ring held has been written through the socket. */
  #directWhenIdle(): void {
    const ring = this.#ring;
    if (!this.#sinkAttached || ring === undefined || this.#state !== 'connected') return;
    if (this.#rxQueued === 0 && this.#sink!.writableLength === 0) ring.demuxer.setDirect(ring.slot, true);
  }

  /** Gives the demuxer the sink's descriptor once the device has sent `directAfter` bytes. */
  #attachSinkFdOnceBulk(): void {
    const fd = this.#sinkFd;
    const ring = this.#ring;
    if (fd === undefined || ring === undefined || this.#state !== 'connected' || this.#bytesReceived < this.#directAfter) return;
    this.#sinkFd = undefined;
    if (!ring.demuxer.attachSink(ring.slot, fd)) return;
    this.#sinkAttached = true;
    // Direct sends start off, and go on once what the ring holds has been written (in order).
    this.#directWhenIdle();
  }

  #detachSink(): void {
    if (!this.#sinkAttached) return;
    this.#sinkAttached = false;
    const ring = this.#ring;
    if (ring !== undefined) ring.demuxer.detachSink(ring.slot);
  }

  /** Writes the ring's bytes not yet given to the sink, as views, unless the sink is full. */
  #feedSink(): void {
    const ring = this.#ring;
    const sink = this.#sink!;
    if (ring === undefined || this.#sinkBlocked) return;
    let skip = this.#sinkPending;
    let left = this.#rxQueued - skip;
    if (left === 0) return;
    if (!this.#sinkCorked) {
      // One writev per batch of IN transfers instead of one system call per packet.
      this.#sinkCorked = true;
      sink.cork();
      process.nextTick(uncorkSink, this);
    }
    for (const view of ring.demuxer.readable(ring.slot)) {
      if (skip >= view.length) {
        skip -= view.length;
        continue;
      }
      const n = Math.min(view.length - skip, left);
      const chunk = skip === 0 && n === view.length ? view : view.subarray(skip, skip + n);
      skip = 0;
      left -= n;
      this.#sinkPending += n;
      if (!sink.write(chunk, (err) => this.#sinkWritten(n, err))) {
        this.#sinkBlocked = true;
        sink.once('drain', () => this.#sinkDrained());
        return;
      }
      if (left === 0) return;
    }
  }

  /** @internal End of the tick: the corked writes go out together. */
  uncorkSink(): void {
    this.#sinkCorked = false;
    this.#sink?.uncork();
  }

  #sinkDrained(): void {
    this.#sinkBlocked = false;
    if (this.#sink !== undefined) this.#feedSink();
  }

  /** The sink has taken `n` bytes (callbacks come in write order): release them, reopen the window. */
  #sinkWritten(n: number, err?: Error | null): void {
    const ring = this.#ring;
    // Destroyed meanwhile: the slot is closed; the views stay valid memory until dropped.
    if (ring === undefined || this.#state === 'closed') return;
    if (err) {
      // The sink failed (client gone): its owner tears the connection down.
      return;
    }
    ring.demuxer.consume(ring.slot, n);
    this.#sinkPending -= n;
    this.#rxQueued -= n;
    this.#rxAck = (this.#rxAck + n) >>> 0;
    if (this.#state === 'closing') {
      if (this.#rxQueued === 0) this.#drainQueue();
      return;
    }
    this.#scheduleSinkAck();
    if (this.#rxQueued === 0) this.#directWhenIdle();
  }

  /** One window update for the bytes the sink took in this batch. */
  #scheduleSinkAck(): void {
    if (!this.#sinkAckScheduled && this.#state === 'connected') {
      this.#sinkAckScheduled = true;
      process.nextTick(sendSinkAck, this);
    }
  }

  /** @internal The window update for the bytes the sink took this tick. */
  sinkAck(): void {
    this.#sinkAckScheduled = false;
    if (this.#state === 'connected') this.#ackSoon();
  }

  /**
   * Copies `n` bytes from the front of the ring into a Buffer of their own and releases them, so
   * the device may overwrite them once our ACK says so. A Readable's consumer keeps what it is
   * given for as long as it likes; only a copy can be handed to one safely.
   */
  #takeFromRing(ring: MuxConnectionRing, n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    for (const view of ring.demuxer.readable(ring.slot)) {
      const take = Math.min(view.length, n - at);
      view.copy(out, at, 0, take);
      at += take;
      if (at === n) break;
    }
    ring.demuxer.consume(ring.slot, n);
    return out;
  }

  /** Ring mode: this connection will read no more of its ring; the session closes the slot. */
  #closeRing(): void {
    const ring = this.#ring;
    if (ring === undefined) return;
    this.#ring = undefined;
    this.#host.closeRing?.(this, ring.slot);
  }

  /** Hands device data to the reader or queues it. Returns false if the connection died. */
  #receiveData(payload: Buffer): boolean {
    const len = payload.length;
    this.#bytesReceived += len;
    let data = payload;
    if (len < COPY_BELOW && payload.buffer.byteLength > 4 * len) data = Buffer.from(payload);
    if (this.#rxQueued === 0 && !this.#readPaused) {
      this.#rxAck = (this.#rxAck + len) >>> 0;
      if (!this.push(data)) this.#readPaused = true;
      return true;
    }
    if (this.#rxQueued + len > HOST_WINDOW) {
      // usbmuxd: "Input buffer overflow" teardown. A device that honours our window cannot get here.
      this.log.warn(`device overran the window (${this.#rxQueued + len} bytes unacknowledged); resetting`);
      this.#startClosing('overrun', true, new MuxwireError('MUXWIRE_ERR_PROTOCOL', 'the device sent more than the advertised window'));
      return false;
    }
    this.#rxQueue.push(data);
    this.#rxQueued += len;
    return true;
  }

  /** Pushes queued device data while the reader wants it; ends the readable side when closing. */
  #drainQueue(): boolean {
    let moved = false;
    const ring = this.#sink === undefined ? this.#ring : undefined;
    while (ring !== undefined && this.#rxQueued > 0 && !this.#readPaused) {
      const n = Math.min(this.#rxQueued, RING_CHUNK);
      const chunk = this.#takeFromRing(ring, n);
      this.#rxQueued -= n;
      this.#rxAck = (this.#rxAck + n) >>> 0;
      moved = true;
      if (!this.push(chunk)) this.#readPaused = true;
    }
    // The stream path's queue (in ring mode it stays empty: the bytes wait in the ring or a sink).
    while (this.#rxHead < this.#rxQueue.length && !this.#readPaused) {
      const chunk = this.#rxQueue[this.#rxHead]!;
      this.#rxQueue[this.#rxHead++] = EMPTY;
      this.#rxQueued -= chunk.length;
      this.#rxAck = (this.#rxAck + chunk.length) >>> 0;
      moved = true;
      if (!this.push(chunk)) this.#readPaused = true;
    }
    if (this.#rxQueued === 0 && this.#rxHead > 0) {
      this.#rxQueue.length = 0;
      this.#rxHead = 0;
    } else if (this.#rxHead > 64 && this.#rxHead * 2 > this.#rxQueue.length) {
      this.#rxQueue = this.#rxQueue.slice(this.#rxHead);
      this.#rxHead = 0;
    }
    if (this.#rxQueued === 0 && this.#state === 'closing' && !this.#readableEnded) {
      this.#readableEnded = true;
      this.#closeRing();
      this.push(null);
    }
    return moved;
  }

  override _read(): void {
    this.#readPaused = false;
    if (this.#rxQueued === 0 && this.#state !== 'closing') return;
    const moved = this.#drainQueue();
    // The reader consumed data the device may be waiting on: reopen its window (at once when the
    // device has used half of it, see #ackSoon).
    if (moved && this.#state === 'connected') this.#ackSoon();
  }

  // ---- writer → device ---------------------------------------------------------------------------

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.#state !== 'connecting' && this.#state !== 'connected') {
      // The device side is over (reset, FIN, unplug): like a TCP peer gone, the bytes go nowhere.
      if (this.log.enabled('debug')) this.log.debug(`discarding ${chunk.length} bytes written after the connection ${this.#closeReason ?? 'closed'}`);
      callback();
      return;
    }
    this.#queueTx(chunk);
    this.#wCallback = callback;
    // Written before the device accepted: held (with its callback) until the handshake is done.
    if (this.#state === 'connected') this.#pump();
  }

  override _writev(chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>, callback: (err?: Error | null) => void): void {
    if (this.#state !== 'connecting' && this.#state !== 'connected') {
      callback();
      return;
    }
    // Many small writes become one packet instead of one USB transfer each (usbmux.md §5.2): the
    // packet is filled from all of them, with no joined copy in between.
    for (const c of chunks) this.#queueTx(c.chunk);
    this.#wCallback = callback;
    if (this.#state === 'connected') this.#pump();
  }

  #queueTx(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#tx.push(chunk);
    this.#txBytes += chunk.length;
    this.#lastReadFull = chunk.length >= FULL_READ;
  }

  /**
   * Sends what the device's window allows, in packets as full as the writer's bytes make them.
   *
   * A socket hands the daemon its bytes in reads of 64 KiB, which is not a multiple of a packet
   * (49116): sending each read on its own would split every second packet at the read's end. So
   * a short tail is held back while a write is in progress, its callback is called (the tail is
   * less than a packet, so this buffers little), and if the writer has more buffered the Writable
   * hands it over at once (synchronously) and the tail leaves in a full packet with its head.
   * When nothing more comes, the tail goes out at once: an interactive write is never delayed.
   * The callback of a write is held while more than one packet of it waits for the window, so
   * the writer is pushed back by the Writable's highWaterMark as before.
   */
  #pump(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      for (;;) {
        this.#sendQueued();
        const cb = this.#wCallback;
        if (cb === undefined || this.#txBytes > MAX_PAYLOAD || this.#state !== 'connected') return;
        this.#wCallback = undefined;
        // May call _write/_writev again at once with what the writer has buffered.
        cb();
        if (this.#wCallback === undefined) {
          this.#sendQueued();
          return;
        }
      }
    } finally {
      this.#pumping = false;
    }
  }

  /** Sends packets while the window has room; holds a short tail while a write is in progress. */
  #sendQueued(): void {
    while (this.#txBytes > 0 && this.#state === 'connected') {
      const inFlight = (this.#txSeq - this.#deviceAck) >>> 0;
      // A device ACK beyond what we sent would make inFlight huge: treat as nothing sendable.
      const room = inFlight >= this.#deviceWindow ? 0 : this.#deviceWindow - inFlight;
      if (room === 0) return;
      let n = this.#txBytes;
      if (n > room) n = room;
      if (n > MAX_PAYLOAD) n = MAX_PAYLOAD;
      if (n === this.#txBytes && n < MAX_PAYLOAD && (this.#wCallback !== undefined || this.#holdTail())) return;
      this.#lentLast = false;
      this.#host.sendSegment(this, ACK, n);
      this.#ackSent = this.#rxAck;
      this.#txSeq = (this.#txSeq + n) >>> 0;
      this.#bytesSent += n;
      this.#payloadGone(n, this.#lentLast);
      if (this.#txBytes === 0 && this.#finalCallback !== undefined) {
        this.#finishFinal();
        return;
      }
    }
  }

  /**
   * A short tail after a full socket read waits until the end of this turn of the event loop: the
   * socket's next reads, already in the kernel, usually come in the same turn and complete its
   * packet. Anything else (a short write: a request, the stream's end) goes out at once.
   */
  #holdTail(): boolean {
    if (!this.#lastReadFull) return false;
    if (!this.#tailFlushScheduled) {
      this.#tailFlushScheduled = true;
      setImmediate(flushTail, this);
    }
    return true;
  }

  /** @internal The end of the loop turn: send the held tail with whatever joined it. */
  flushTail(): void {
    this.#tailFlushScheduled = false;
    this.#lastReadFull = false;
    if (this.#state === 'connected' && this.#txBytes > 0) this.#pump();
  }

  /**
   * @internal The host copies the next `n` unsent writer bytes into `dst` at `at` (the packet
   * being built for them) and they count as sent.
   */
  takePayload(dst: Buffer, at: number, n: number): void {
    this.#consumeTx(n, dst, at, undefined);
  }

  /**
   * @internal The host borrows the next `n` unsent writer bytes as views, pushed onto `out`, and
   * they count as sent. The link reads them until it calls `lentWritten` (once per lend, in order).
   */
  lendPayload(n: number, out: Buffer[]): void {
    this.#lentLast = true;
    this.#consumeTx(n, undefined, 0, out);
  }

  /**
   * @internal The link has written the oldest payload lent to it (or failed to: the connection is
   * going anyway). Its bytes, and those freed behind it, are told to onPayloadTaken in order.
   */
  readonly lentWritten = (): void => {
    const q = this.#untold;
    if (this.#untoldHead < q.length && q[this.#untoldHead]! < 0) q[this.#untoldHead] = -q[this.#untoldHead]!;
    while (this.#untoldHead < q.length && q[this.#untoldHead]! > 0) this.#tell(q[this.#untoldHead++]!);
    if (this.#untoldHead === q.length) {
      q.length = 0;
      this.#untoldHead = 0;
    } else if (this.#untoldHead > 64 && this.#untoldHead * 2 > q.length) {
      q.splice(0, this.#untoldHead);
      this.#untoldHead = 0;
    }
  };

  #tell(n: number): void {
    this.#bytesReleased += n;
    this.onPayloadTaken?.(n);
  }

  /** `n` writer bytes went into a packet: free now (copied), or once the link has written them. */
  #payloadGone(n: number, lent: boolean): void {
    if (lent || this.#untoldHead < this.#untold.length) this.#untold.push(lent ? -n : n);
    else this.#tell(n);
  }

  /** Moves the next `n` unsent writer bytes into `dst` at `at`, or as views onto `out`. */
  #consumeTx(n: number, dst: Buffer | undefined, at: number, out: Buffer[] | undefined): void {
    let left = n;
    while (left > 0) {
      const chunk = this.#tx[this.#txHead]!;
      const take = Math.min(left, chunk.length - this.#txOffset);
      if (dst !== undefined) chunk.copy(dst, at, this.#txOffset, this.#txOffset + take);
      else out!.push(take === chunk.length ? chunk : chunk.subarray(this.#txOffset, this.#txOffset + take));
      at += take;
      left -= take;
      this.#txOffset += take;
      if (this.#txOffset === chunk.length) {
        this.#tx[this.#txHead++] = EMPTY;
        this.#txOffset = 0;
      }
    }
    this.#txBytes -= n;
    if (this.#txHead === this.#tx.length) {
      this.#tx.length = 0;
      this.#txHead = 0;
    } else if (this.#txHead > 64) {
      this.#tx = this.#tx.slice(this.#txHead);
      this.#txHead = 0;
    }
  }

  /** The device side is over: unsent writer bytes can never go out; finish the write. */
  #completePendingWrite(): void {
    const cb = this.#wCallback;
    const final = this.#finalCallback;
    this.#finalCallback = undefined;
    this.#tx = [];
    this.#txHead = 0;
    this.#txOffset = 0;
    this.#txBytes = 0;
    this.#wCallback = undefined;
    cb?.();
    final?.();
  }

  /** Sends our ACK now if the device has used half our window, else within ACK_DELAY_MS. */
  #ackSoon(): void {
    const unacked = (this.#rxAck - this.#ackSent) >>> 0;
    if (unacked === 0) return;
    if (unacked + this.#rxQueued >= ACK_AT_ONCE) {
      this.#sendAck();
    } else if (this.#ackTimer === undefined) {
      this.#ackTimer = setTimeout(onAckTimer, ACK_DELAY_MS, this);
      this.#ackTimer.unref();
    }
  }

  /** @internal The delayed ACK is due. */
  ackTimerFired(): void {
    this.#ackTimer = undefined;
    if (this.#state === 'connected' && this.#ackSent !== this.#rxAck) this.#sendAck();
  }

  #sendAck(): void {
    this.#host.sendSegment(this, ACK);
    this.#ackSent = this.#rxAck;
  }

  override _final(callback: (err?: Error | null) => void): void {
    // No half-close on the mux (§6.5): the writer is done, so the connection is reset. Whatever the
    // device had already sent is still delivered before the readable side ends. Bytes the writer
    // was told were taken but that have not left yet (a tail held for a fuller packet, or waiting
    // for the device's window) go out first: the RST follows them (#finishFinal).
    if (this.#state === 'connected' && this.#txBytes > 0) {
      this.#finalCallback = callback;
      this.#lastReadFull = false;
      this.#pump();
      return;
    }
    if (this.#state === 'connected') this.#startClosing('local', true, undefined);
    callback();
  }

  /** The writer's last bytes have left: reset the connection and let the Writable finish. */
  #finishFinal(): void {
    const callback = this.#finalCallback;
    this.#finalCallback = undefined;
    if (this.#state === 'connected') this.#startClosing('local', true, undefined);
    callback?.();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.#clearTimer();
    if (this.#state === 'connecting') {
      this.#host.sendSegment(this, RST);
      const reject = this.#reject;
      this.#resolve = undefined;
      this.#reject = undefined;
      this.#host.releaseConnection(this);
      reject?.(err ?? new MuxwireError('MUXWIRE_ERR_CLOSED', 'the connection was destroyed while connecting'));
    } else if (this.#state === 'connected') {
      this.#closeReason = 'local';
      this.#host.sendSegment(this, RST);
      this.#host.releaseConnection(this);
    }
    this.#state = 'closed';
    this.#closeRing();
    this.#rxQueue = [];
    this.#rxHead = 0;
    this.#rxQueued = 0;
    this.#tx = [];
    this.#txHead = 0;
    this.#txOffset = 0;
    this.#txBytes = 0;
    this.#wCallback = undefined;
    this.#finalCallback = undefined;
    callback(err);
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }
}

const EMPTY = Buffer.alloc(0);

function ignoreError(): void {
  // A failed sink write is its owner's to handle (the socket emits 'error'/'close').
}

function uncorkSink(conn: MuxConnection): void {
  conn.uncorkSink();
}

function flushTail(conn: MuxConnection): void {
  conn.flushTail();
}

function onAckTimer(conn: MuxConnection): void {
  conn.ackTimerFired();
}

function sendSinkAck(conn: MuxConnection): void {
  conn.sinkAck();
}

function onConnectTimeout(conn: MuxConnection): void {
  conn.connectTimedOut();
}

/** An RST's payload, if any, is a readable reason (usbmuxd logs it with a trailing \n removed). */
function resetReason(payload: Buffer): string | undefined {
  if (payload.length === 0) return undefined;
  return payload.subarray(0, 256).toString('latin1').replace(/\n$/, '');
}
