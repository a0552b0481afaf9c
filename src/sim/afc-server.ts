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
 * Malformed framing (bad magic, impossible lengths, a packet over the limit) cannot be skipped
 * reliably, so it closes the connection, as the device does.
 */
import type { Duplex } from 'node:stream';

import { log } from '../log.js';
import { AfcOp, AfcPacketDecoder, AfcStatus, encodeAfcPacketParts } from '../protocol/afc.js';
import type { AfcPacket } from '../protocol/afc.js';
import { AfcArgs } from './afc-args.js';
import { AfcRoot, statusForError } from './afc-fs.js';
import { AfcHandleTable } from './afc-handles.js';
import { AFC_HANDLERS, statusReply } from './afc-operations.js';
import type { AfcDeviceContext, AfcReply } from './afc-operations.js';

const MiB = 1024 * 1024;

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
   * Largest data part of one packet: the most a FILE_READ returns (more is TOO_MUCH_DATA) and the
   * most a FILE_WRITE may carry (more closes the connection). Default 16 MiB; at least 4 MiB, which
   * PMD3 uses (§9.8).
   */
  maxPacket?: number;
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
}

type SessionState = 'opening' | 'serving' | 'draining' | 'closed';

/** Serves AFC on `stream` until it ends. Returns the session (for `stats` and `close()`). */
export function serveAfc(stream: Duplex, opts: AfcServerOptions): AfcSession {
  return new AfcSession(stream, opts);
}

/** One AFC connection on the simulated device. */
export class AfcSession {
  readonly stats: AfcSessionStats = { requests: 0, maxPending: 0 };
  readonly #stream: Duplex;
  readonly #opts: AfcServerOptions;
  readonly #decoder: AfcPacketDecoder;
  readonly #files: AfcHandleTable;
  readonly #maxPacket: number;
  readonly #maxQueued: number;
  readonly #queue: AfcPacket[] = [];
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
    // Room for the header and a FILE_WRITE's handle, or a long path, beyond the data limit.
    this.#decoder = new AfcPacketDecoder({ maxLength: this.#maxPacket + 64 * 1024 });
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
      for (let packet = this.#decoder.next(); packet; packet = this.#decoder.next()) {
        this.#queue.push(packet);
        this.#queuedBytes += packetBytes(packet);
      }
    } catch (err) {
      this.#log.debug(`bad AFC framing, closing: ${(err as Error).message}`);
      this.close();
      return;
    }
    const pending = this.#queue.length + (this.#running ? 1 : 0);
    if (pending > this.stats.maxPending) this.stats.maxPending = pending;
    if (this.#queuedBytes > this.#maxQueued && !this.#paused) {
      this.#paused = true;
      this.#stream.pause();
    }
    void this.#pump();
  };

  readonly #onEnd = (): void => {
    if (this.#state === 'closed') return;
    this.#state = 'draining';
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
        const packet = this.#queue.shift()!;
        this.#queuedBytes -= packetBytes(packet);
        if (this.#paused && this.#queuedBytes <= this.#maxQueued / 2) {
          this.#paused = false;
          this.#stream.resume();
        }
        const reply = await this.#dispatch(this.#ctx, packet);
        if (this.#closed) break;
        this.stats.requests++;
        if (!this.#send(packet, reply)) await this.#drained();
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

  /** Writes one reply (header+args, then the data as a separate buffer: no copy). */
  #send(request: AfcPacket, reply: AfcReply): boolean {
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
