/**
 * The request/reply core of the AFC client: numbers requests, writes them, and routes each reply to
 * its request by packet number (lockdown-afc.md §9.3), so any number of requests may be in flight on
 * one connection. The device echoes the number; numbering starts at 1 as in LIMD and GOIOS.
 *
 * A request is written as header+arguments and then its payload as a second buffer inside one
 * cork/uncork, so a 1 MiB FILE_WRITE goes out as one writev with no copy of the data (appium-ios-
 * remotexpc PR #226: header and payload in one write matters for speed, §10).
 *
 * One fatal path (`#fail`): a closed stream, a stream error or unparseable reply framing rejects every
 * outstanding request once and refuses new ones.
 */
import type { Duplex } from 'node:stream';

import { MuxwireError } from '../../errors.js';
import { log } from '../../log.js';
import { AfcPacketDecoder, encodeAfcPacketParts } from '../../protocol/afc.js';
import type { AfcPacket } from '../../protocol/afc.js';
import { AFC_ERROR, afcOpName } from './afc-error.js';

const EMPTY = Buffer.alloc(0);
const MiB = 1024 * 1024;

/** Options of an {@link AfcChannel}. */
export interface AfcChannelOptions {
  /** Milliseconds to wait for each reply before failing it with MUXWIRE_ERR_TIMEOUT. Default 30000. */
  timeoutMs?: number;
  /** Largest reply accepted (header included). Default 64 MiB + 64 KiB. */
  maxReply?: number;
}

interface Pending {
  readonly op: number;
  readonly resolve: (reply: AfcPacket) => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
}

/** Request/reply routing over one AFC stream. */
export class AfcChannel {
  readonly #stream: Duplex;
  readonly #decoder: AfcPacketDecoder;
  readonly #timeoutMs: number;
  readonly #pending = new Map<number, Pending>();
  readonly #log = log.child({ svc: 'afc-client' });
  #next = 1;
  #failure: MuxwireError | undefined;

  constructor(stream: Duplex, opts: AfcChannelOptions = {}) {
    this.#stream = stream;
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
    this.#decoder = new AfcPacketDecoder({ maxLength: opts.maxReply ?? 64 * MiB + 64 * 1024 });
    stream.on('data', this.#onData);
    stream.on('error', this.#onError);
    stream.on('end', this.#onEnd);
    stream.on('close', this.#onEnd);
  }

  /** Requests sent and not yet answered. */
  get inFlight(): number {
    return this.#pending.size;
  }

  /** The error that closed the channel, if it is closed. */
  get failure(): MuxwireError | undefined {
    return this.#failure;
  }

  /**
   * Sends one request and resolves with its reply, whatever its opcode (the caller checks it).
   * Rejects with MUXWIRE_ERR_TIMEOUT after the timeout, or the channel's failure.
   */
  request(operation: number, headerPayload: Buffer, payload: Buffer = EMPTY, timeoutMs = this.#timeoutMs): Promise<AfcPacket> {
    if (this.#failure) return Promise.reject(this.#failure);
    const packetNum = this.#next++;
    return new Promise<AfcPacket>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (!this.#pending.delete(packetNum)) return;
        reject(
          new MuxwireError('MUXWIRE_ERR_TIMEOUT', `AFC ${afcOpName(operation)} got no reply within ${timeoutMs} ms`, {
            detail: packetNum,
          }),
        );
      }, timeoutMs);
      this.#pending.set(packetNum, { op: operation, resolve, reject, timer });
      const parts = encodeAfcPacketParts({ packetNum, operation, headerPayload, payload });
      const stream = this.#stream;
      stream.cork();
      for (const part of parts) if (part.length > 0) stream.write(part);
      stream.uncork();
    });
  }

  /** Resolves when the stream's write buffer is below its high-water mark (or it closed). */
  writable(): Promise<void> {
    const stream = this.#stream;
    if (!stream.writableNeedDrain || this.#failure) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        stream.off('drain', done);
        stream.off('close', done);
        resolve();
      };
      stream.on('drain', done);
      stream.on('close', done);
    });
  }

  /** Ends the connection; outstanding requests fail with MUXWIRE_ERR_CLOSED. */
  close(): void {
    this.#fail(new MuxwireError('MUXWIRE_ERR_CLOSED', 'AFC connection closed by the client'));
    this.#stream.end();
    this.#stream.destroy();
  }

  readonly #onData = (chunk: Buffer): void => {
    if (this.#failure) return;
    try {
      this.#decoder.push(chunk);
      for (let reply = this.#decoder.next(); reply; reply = this.#decoder.next()) this.#route(reply);
    } catch (err) {
      this.#fail(new MuxwireError(AFC_ERROR, `bad AFC reply framing: ${(err as Error).message}`, { cause: err }));
      this.#stream.destroy();
    }
  };

  #route(reply: AfcPacket): void {
    const num = Number(reply.packetNum);
    const pending = this.#pending.get(num);
    if (!pending) {
      // A reply to a request that timed out, or a device bug; LIMD would reject the mismatch.
      this.#log.debug(`dropping AFC reply #${num} (${afcOpName(Number(reply.operation))}): no request waits for it`);
      return;
    }
    this.#pending.delete(num);
    clearTimeout(pending.timer);
    pending.resolve(reply);
  }

  readonly #onError = (err: Error): void => {
    this.#fail(new MuxwireError('MUXWIRE_ERR_CLOSED', `AFC connection failed: ${err.message}`, { cause: err }));
  };

  readonly #onEnd = (): void => {
    this.#fail(new MuxwireError('MUXWIRE_ERR_CLOSED', 'AFC connection closed by the device'));
  };

  #fail(err: MuxwireError): void {
    if (this.#failure) return;
    this.#failure = err;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(err);
    }
  }
}
