/**
 * The simulated device's AFC service (`com.apple.afc`, lockdown-afc.md §9): serves one connection
 * over a directory on the host.
 *
 * One connection is one session with these states:
 * - `opening`: the root is being resolved; requests that arrive are queued.
 * - `serving`: requests are answered one at a time in arrival order (§9.3: a server may answer in
 *   order), each reply echoing the request's packet number.
 * - `draining`: the client ended its side; queued requests are still answered, then the session
 *   ends its side and closes.
 * - `closed`: every handle is closed and its locks dropped; nothing more is read or written.
 *
 * Input keeps being read while replies are written, so a client that pipelines requests and reads
 * replies only afterwards never deadlocks (§9.3). Memory stays bounded both ways: queued requests
 * are capped (`maxQueuedBytes`, then reading pauses until the queue shrinks), and after a reply that
 * the stream did not take at once (`write()` false) the next request waits for 'drain', so a client
 * that stops reading holds at most one reply here. A FILE_READ reads at most what was asked
 * (≤ `maxPacket`) from disk, never the whole file.
 *
 * A FILE_WRITE larger than `maxPacket` is not held whole: its data is written to the file as it
 * arrives (a streamed write, in its place in the request order), its buffered pieces counting
 * toward `maxQueuedBytes` like queued requests, so memory stays bounded however large the packet.
 * Clients send such packets: pymobiledevice3 writes a whole file as one FILE_WRITE (its single-write
 * cap is `MAXIMUM_WRITE_SIZE = 1 << 32`, "not really necessary" in its own comment), and
 * appium-ios-device's write stream sends each chunk it is given as one. A device accepts them, so
 * the simulator does, up to `maxWritePacket` (default 4 GiB of data: pymobiledevice3's cap, the
 * largest single write a known client sends). Every other packet stays bounded by `maxPacket`.
 *
 * Malformed framing (bad magic, impossible lengths, a packet over the limit) cannot be skipped
 * reliably, so it closes the connection, as the device does.
 */
import type { Duplex } from 'node:stream';

import { log } from '../log.js';
import { MuxwireError } from '../errors.js';
import { AFC_HEADER_SIZE, AfcOp, AfcPacketDecoder, AfcStatus, encodeAfcPacketParts } from '../protocol/afc.js';
import type { AfcPacket } from '../protocol/afc.js';
import { AfcArgs } from './afc-args.js';
import { AfcRoot, statusForError } from './afc-fs.js';
import { AfcHandleTable } from './afc-handles.js';
import type { AfcOpenFile } from './afc-handles.js';
import { AFC_HANDLERS, statusReply, writableFile, writeParts } from './afc-operations.js';
import type { AfcDeviceContext, AfcReply } from './afc-operations.js';

const MiB = 1024 * 1024;
/** Room for the header and a FILE_WRITE's handle, or a long path, beyond a data limit. */
const ARGS_ROOM = 64 * 1024;
/** Default largest data part of one FILE_WRITE: pymobiledevice3's `MAXIMUM_WRITE_SIZE` (1 << 32). */
export const AFC_MAX_WRITE_PACKET_DEFAULT = 2 ** 32;

/** Options of {@link serveAfc}. */
export interface AfcServerOptions {
  /** Host directory shown as the device's media partition (`/var/mobile/Media`). */
  root: string;
  /** GET_DEVINFO `Model` (ProductType). Default `iPhone12,8`. */
  deviceModel?: string;
  /** GET_DEVINFO `FSTotalBytes`. Default: the size of the host file system holding the root. */
  fsTotalBytes?: number;
  /** GET_DEVINFO `FSBlockSize`. Default 4096 (§9.7). */
  fsBlockSize?: number;
  /**
   * Largest data part of a packet held whole: the most a FILE_READ returns (more is TOO_MUCH_DATA),
   * and the bound of every request but FILE_WRITE (more closes the connection). Default 16 MiB; at
   * least 4 MiB, which PMD3 uses (§9.8).
   */
  maxPacket?: number;
  /**
   * Largest data part of one FILE_WRITE; one above `maxPacket` is streamed to the file as it
   * arrives, not held whole. Default 4 GiB (see the file comment); never below `maxPacket`.
   */
  maxWritePacket?: number;
  /** Open files per connection before NO_RESOURCES. Default 256. */
  maxOpenFiles?: number;
  /**
   * Opcodes to answer UNKNOWN_PACKET_TYPE (6) although implemented, to play an older iOS: before
   * iOS 6 there was no REMOVE_PATH_AND_CONTENTS, before 3.1 no SET_FILE_MOD_TIME (§9.4).
   */
  disabledOps?: readonly number[];
  /** Bytes of requests queued before reading pauses. Default 64 MiB (more than 4 pipelined 16 MiB writes). */
  maxQueuedBytes?: number;
}

/** Counters of one session, for diagnostics and tests. */
export interface AfcSessionStats {
  /** Requests answered. */
  requests: number;
  /** Most requests received and not yet answered at one time (>1 means the client pipelines). */
  maxPending: number;
  /** FILE_WRITEs larger than `maxPacket`, written as they arrived. */
  streamedWrites: number;
  /** Most bytes of requests (and of streamed write data) held at one time. */
  maxQueuedBytes: number;
}

/**
 * A FILE_WRITE too large to hold whole, from its header on: the body (u64 handle, then the data)
 * arrives in pieces; the data pieces wait here, counted in the session's queued bytes, until the
 * pump writes them to the file.
 */
class StreamedWrite {
  readonly packetNum: bigint | number;
  /** Body bytes not yet received. */
  remaining: number;
  /** Received data not yet written. */
  pieces: Buffer[] = [];
  /** The client ended or the session closed before the body was complete. */
  aborted = false;
  readonly #handle = Buffer.alloc(8);
  #handleBytes = 0;
  #wake: (() => void) | undefined;

  constructor(packetNum: bigint | number, bodyLength: number) {
    this.packetNum = packetNum;
    this.remaining = bodyLength;
  }

  /** The handle, once its 8 bytes are in. */
  get handle(): bigint | undefined {
    return this.#handleBytes === 8 ? this.#handle.readBigUInt64LE(0) : undefined;
  }

  get complete(): boolean {
    return this.remaining === 0;
  }

  /** Takes the next piece of the body; returns how many data bytes it added to `pieces`. */
  receive(piece: Buffer): number {
    this.remaining -= piece.length;
    let data = piece;
    if (this.#handleBytes < 8) {
      const n = Math.min(8 - this.#handleBytes, piece.length);
      piece.copy(this.#handle, this.#handleBytes, 0, n);
      this.#handleBytes += n;
      data = piece.subarray(n);
    }
    if (data.length > 0) this.pieces.push(data);
    this.#notify();
    return data.length;
  }

  abort(): void {
    this.aborted = true;
    this.#notify();
  }

  /** Resolves once more of the body arrived, or the write was aborted. */
  more(): Promise<void> {
    return new Promise((resolve) => (this.#wake = resolve));
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

type QueuedRequest = AfcPacket | StreamedWrite;

type SessionState = 'opening' | 'serving' | 'draining' | 'closed';

/** Serves AFC on `stream` until it ends. Returns the session (for `stats` and `close()`). */
export function serveAfc(stream: Duplex, opts: AfcServerOptions): AfcSession {
  return new AfcSession(stream, opts);
}

/** One AFC connection on the simulated device. */
export class AfcSession {
  readonly stats: AfcSessionStats = { requests: 0, maxPending: 0, streamedWrites: 0, maxQueuedBytes: 0 };
  readonly #stream: Duplex;
  readonly #opts: AfcServerOptions;
  readonly #decoder: AfcPacketDecoder;
  readonly #files: AfcHandleTable;
  readonly #maxPacket: number;
  /** entire_length limits: of a packet held whole, and of a streamed FILE_WRITE. */
  readonly #wholeLimit: number;
  readonly #writeLimit: number;
  readonly #maxQueued: number;
  readonly #queue: QueuedRequest[] = [];
  /** The streamed write whose body is still arriving. */
  #streaming: StreamedWrite | undefined;
  readonly #log = log.child({ svc: 'afc' });
  #queuedBytes = 0;
  #state: SessionState = 'opening';
  #ctx: AfcDeviceContext | undefined;
  #running = false;
  #paused = false;
  #finished: Promise<void>;
  #resolveFinished!: () => void;

  constructor(stream: Duplex, opts: AfcServerOptions) {
    this.#stream = stream;
    this.#opts = opts;
    this.#maxPacket = Math.max(4 * MiB, opts.maxPacket ?? 16 * MiB);
    this.#maxQueued = opts.maxQueuedBytes ?? 64 * MiB;
    this.#wholeLimit = this.#maxPacket + ARGS_ROOM;
    this.#writeLimit = Math.max(this.#maxPacket, opts.maxWritePacket ?? AFC_MAX_WRITE_PACKET_DEFAULT) + ARGS_ROOM;
    this.#decoder = new AfcPacketDecoder({ maxLength: this.#wholeLimit });
    this.#files = new AfcHandleTable(opts.maxOpenFiles ?? 256);
    this.#finished = new Promise((resolve) => (this.#resolveFinished = resolve));
    stream.on('data', this.#onData);
    stream.on('end', this.#onEnd);
    stream.on('error', this.#onError);
    stream.on('close', this.#onClose);
    void this.#open();
  }

  /** Files this connection holds open. */
  get openFiles(): number {
    return this.#files.size;
  }

  /** Resolves once the session has closed and released every handle. */
  get finished(): Promise<void> {
    return this.#finished;
  }

  /** Closes the connection now (queued requests are dropped). */
  close(): void {
    this.#shutdown();
    this.#stream.destroy();
  }

  async #open(): Promise<void> {
    try {
      // The same AfcRoot as every other session of this directory: its path lock is what keeps a
      // client's second session from racing this one's checks (afc-fs.ts).
      const root = await AfcRoot.open(this.#opts.root);
      this.#ctx = {
        root,
        files: this.#files,
        deviceModel: this.#opts.deviceModel ?? 'iPhone12,8',
        fsTotalBytes: this.#opts.fsTotalBytes,
        fsBlockSize: this.#opts.fsBlockSize ?? 4096,
        maxRead: this.#maxPacket,
      };
    } catch (err) {
      this.#log.warn(`cannot serve: ${(err as Error).message}`);
      this.close();
      return;
    }
    if (this.#state === 'opening') this.#state = 'serving';
    void this.#pump();
  }

  readonly #onData = (chunk: Buffer): void => {
    if (this.#state === 'closed') return;
    try {
      this.#decoder.push(chunk);
      this.#takeRequests();
    } catch (err) {
      this.#log.debug(`bad AFC framing, closing: ${(err as Error).message}`);
      this.close();
      return;
    }
    const pending = this.#queue.length + (this.#running ? 1 : 0);
    if (pending > this.stats.maxPending) this.stats.maxPending = pending;
    this.#account(0);
    void this.#pump();
  };

  /**
   * Moves what the decoder holds into the queue: whole packets, and the header and body pieces of
   * a FILE_WRITE above the whole-packet limit (streamed). Throws on bad framing.
   */
  #takeRequests(): void {
    const decoder = this.#decoder;
    for (;;) {
      const w = this.#streaming;
      if (w !== undefined) {
        const piece = decoder.takeUpTo(w.remaining);
        if (piece.length === 0) return;
        this.#queuedBytes += w.receive(piece);
        if (w.complete) this.#streaming = undefined;
        continue;
      }
      const h = decoder.peekHeader(this.#writeLimit);
      if (h === undefined) return;
      if (h.entireLength > this.#wholeLimit) {
        if (h.operation !== AfcOp.FILE_WRITE) {
          throw new MuxwireError('MUXWIRE_ERR_BAD_LENGTH', `AFC ${AfcOp[h.operation] ?? h.operation} of ${h.entireLength} bytes exceeds ${this.#wholeLimit}`);
        }
        decoder.discard(AFC_HEADER_SIZE);
        this.#streaming = new StreamedWrite(h.packetNum, h.entireLength - AFC_HEADER_SIZE);
        this.#queue.push(this.#streaming);
        continue;
      }
      const packet = decoder.next();
      if (packet === undefined) return;
      this.#queue.push(packet);
      this.#queuedBytes += packetBytes(packet);
    }
  }

  /** Adds `delta` to the queued bytes; pauses reading above the limit, resumes below half of it. */
  #account(delta: number): void {
    this.#queuedBytes += delta;
    if (this.#queuedBytes > this.stats.maxQueuedBytes) this.stats.maxQueuedBytes = this.#queuedBytes;
    if (this.#queuedBytes > this.#maxQueued) {
      if (!this.#paused && !this.#closed) {
        this.#paused = true;
        this.#stream.pause();
      }
    } else if (this.#paused && this.#queuedBytes <= this.#maxQueued / 2) {
      this.#paused = false;
      this.#stream.resume();
    }
  }

  readonly #onEnd = (): void => {
    if (this.#state === 'closed') return;
    this.#state = 'draining';
    // A write whose body never finished gets no answer: there is nobody left to read one.
    this.#streaming?.abort();
    this.#streaming = undefined;
    void this.#pump();
  };

  readonly #onError = (err: Error): void => {
    this.#log.debug(`stream error: ${err.message}`);
    this.#shutdown();
  };

  readonly #onClose = (): void => {
    this.#shutdown();
  };

  /** Answers queued requests in order until the queue is empty. Only one pump runs at a time. */
  async #pump(): Promise<void> {
    if (this.#running || !this.#ctx) return;
    this.#running = true;
    try {
      while (this.#queue.length > 0 && this.#state !== 'closed') {
        const request = this.#queue.shift()!;
        let reply: AfcReply | undefined;
        if (request instanceof StreamedWrite) {
          reply = await this.#streamWrite(this.#ctx, request);
        } else {
          this.#account(-packetBytes(request));
          reply = await this.#dispatch(this.#ctx, request);
        }
        if (this.#closed) break;
        if (reply === undefined) continue;
        this.stats.requests++;
        if (!this.#send(request, reply)) await this.#drained();
      }
    } finally {
      this.#running = false;
    }
    if (this.#state === 'draining' && this.#queue.length === 0) {
      this.#stream.end();
      this.#shutdown();
    } else if (this.#closed) {
      // A handler that was running when the session closed may have opened a file since.
      this.#release();
    }
  }

  async #dispatch(ctx: AfcDeviceContext, packet: AfcPacket): Promise<AfcReply> {
    const op = Number(packet.operation);
    const handler = this.#opts.disabledOps?.includes(op) ? undefined : AFC_HANDLERS.get(op);
    if (this.#log.enabled('trace')) {
      this.#log.trace(`#${packet.packetNum} op 0x${Number(packet.operation).toString(16)} ${AfcOp[packet.operation] ?? '?'}`);
    }
    if (!handler) return statusReply(AfcStatus.UNKNOWN_PACKET_TYPE);
    try {
      return await handler(ctx, new AfcArgs(packet.headerPayload, packet.payload));
    } catch (err) {
      const status = statusForError(err);
      if (this.#log.enabled('debug')) {
        this.#log.debug(`#${packet.packetNum} ${AfcOp[packet.operation] ?? packet.operation}: ${AfcStatus[status]} (${(err as Error).message})`);
      }
      return statusReply(status);
    }
  }

  /**
   * Answers a streamed FILE_WRITE: writes its data pieces as they come (in the order received, so
   * the file ends up as if the packet had been written whole), then STATUS. A bad handle or a
   * failed write still takes in the rest of the body, to stay in step with the stream, and answers
   * the failure's status once it is complete. Undefined (no answer) when the body never completed.
   */
  async #streamWrite(ctx: AfcDeviceContext, w: StreamedWrite): Promise<AfcReply | undefined> {
    this.stats.streamedWrites++;
    let file: AfcOpenFile | undefined;
    let failure: unknown;
    for (;;) {
      if (w.aborted || this.#closed) return undefined;
      const pieces = w.pieces;
      if (pieces.length > 0) {
        w.pieces = [];
        let n = 0;
        for (const p of pieces) n += p.length;
        if (failure === undefined) {
          try {
            file ??= writableFile(ctx, w.handle!);
            await writeParts(file, pieces);
          } catch (err) {
            failure = err;
          }
        }
        this.#account(-n);
        continue;
      }
      if (w.complete) break;
      await w.more();
    }
    if (failure === undefined) {
      try {
        // A write of no data still names a handle that must be open for writing.
        file ??= writableFile(ctx, w.handle!);
      } catch (err) {
        failure = err;
      }
    }
    if (failure === undefined) return statusReply(AfcStatus.SUCCESS);
    const status = statusForError(failure);
    this.#log.debug(`#${w.packetNum} streamed FILE_WRITE: ${AfcStatus[status]} (${(failure as Error).message})`);
    return statusReply(status);
  }

  /** Writes one reply (header+args, then the data as a separate buffer: no copy). */
  #send(request: QueuedRequest, reply: AfcReply): boolean {
    const parts = encodeAfcPacketParts({
      packetNum: request.packetNum,
      operation: reply.operation,
      headerPayload: reply.headerPayload,
      payload: reply.payload,
    });
    const stream = this.#stream;
    let ok = true;
    stream.cork();
    for (const part of parts) if (part.length > 0) ok = stream.write(part);
    stream.uncork();
    return ok;
  }

  #drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.#stream.off('drain', done);
        this.#stream.off('close', done);
        resolve();
      };
      this.#stream.on('drain', done);
      this.#stream.on('close', done);
    });
  }

  /** A getter, so the compiler does not narrow the state across awaits. */
  get #closed(): boolean {
    return this.#state === 'closed';
  }

  /** The one way out: drop the queue, close every handle, report once. */
  #shutdown(): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    for (const request of this.#queue) if (request instanceof StreamedWrite) request.abort();
    this.#streaming?.abort();
    this.#streaming = undefined;
    this.#queue.length = 0;
    this.#queuedBytes = 0;
    this.#stream.off('data', this.#onData);
    if (!this.#running) this.#release();
  }

  #release(): void {
    void this.#files.closeAll().then(this.#resolveFinished, this.#resolveFinished);
  }
}

function packetBytes(p: AfcPacket): number {
  return 40 + p.headerPayload.length + p.payload.length;
}
