/**
 * A device file as a Node Writable, written with several FILE_WRITEs in flight.
 *
 * Whatever sizes the source writes, the data leaves in `chunkSize` FILE_WRITEs (small pieces are
 * gathered; a large piece is cut into views, not copied). Up to `inFlight` writes are outstanding;
 * the write callback is held back while that many are, which is how the source is paused. The device
 * serves a connection's requests in order and each FILE_WRITE advances the file position, so chunks
 * land in the order they were sent (one WRITE per 64 KiB round trip was what made a 60 MB push take
 * ~950 serial round trips in appium-ios-remotexpc PR #226, lockdown-afc.md §10).
 *
 * `end()` resolves ('finish') only after every write is acknowledged and the file is closed, so a
 * finished push is on the device. The first failed write fails the stream.
 */
import { Writable } from 'node:stream';

import type { AfcClient, AfcOpenMode } from './afc-client.js';
import type { AfcProgress } from './afc-read-stream.js';

const MiB = 1024 * 1024;

/** Options of {@link AfcWriteStream}. */
export interface AfcWriteStreamOptions {
  /** Bytes per FILE_WRITE. Default 1 MiB. */
  chunkSize?: number;
  /** FILE_WRITEs outstanding at once. Default 4. */
  inFlight?: number;
  /** FILE_OPEN mode. Default `'w'` (create or truncate, as PMD3 and GOIOS push). */
  mode?: Exclude<AfcOpenMode, 'r'>;
}

type Callback = (err?: Error | null) => void;

/** Writable into one device file. Emits `'progress'` ({@link AfcProgress}) after each acknowledged write. */
export class AfcWriteStream extends Writable {
  /** The device path. */
  readonly remote: string;
  readonly #client: AfcClient;
  readonly #chunkSize: number;
  readonly #depth: number;
  readonly #mode: Exclude<AfcOpenMode, 'r'>;
  readonly #pieces: Buffer[] = [];
  #buffered = 0;
  #outstanding = 0;
  #acked = 0;
  #handle: number | undefined;
  #failure: Error | undefined;
  /** The write callback held back while `inFlight` writes are outstanding. */
  #waiting: Callback | undefined;
  /** Called when nothing is outstanding any more (end of the stream). */
  #idle: (() => void) | undefined;

  constructor(client: AfcClient, remote: string, opts: AfcWriteStreamOptions = {}) {
    const chunkSize = opts.chunkSize ?? MiB;
    super({ highWaterMark: chunkSize });
    this.remote = remote;
    this.#client = client;
    this.#chunkSize = chunkSize;
    this.#depth = Math.max(1, opts.inFlight ?? 4);
    this.#mode = opts.mode ?? 'w';
  }

  /** Bytes the device has acknowledged. */
  get bytesWritten(): number {
    return this.#acked;
  }

  override _construct(callback: Callback): void {
    this.#client.open(this.remote, this.#mode).then(
      (handle) => {
        this.#handle = handle;
        callback();
      },
      (err: Error) => callback(err),
    );
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: Callback): void {
    if (this.#failure) {
      callback(this.#failure);
      return;
    }
    if (chunk.length > 0) {
      this.#pieces.push(chunk);
      this.#buffered += chunk.length;
    }
    while (this.#buffered >= this.#chunkSize) this.#send(this.#take(this.#chunkSize));
    if (this.#outstanding < this.#depth) callback();
    else this.#waiting = callback;
  }

  override _final(callback: Callback): void {
    if (this.#buffered > 0 && !this.#failure) this.#send(this.#take(this.#buffered));
    const finish = (): void => {
      if (this.#failure) {
        callback(this.#failure);
        return;
      }
      const handle = this.#handle!;
      this.#handle = undefined;
      this.#client.close(handle).then(() => callback(), (err: Error) => callback(err));
    };
    if (this.#outstanding === 0) finish();
    else this.#idle = finish;
  }

  override _destroy(err: Error | null, callback: Callback): void {
    const handle = this.#handle;
    this.#handle = undefined;
    if (handle === undefined) {
      callback(err);
      return;
    }
    this.#client.close(handle).then(
      () => callback(err),
      (closeErr: Error) => callback(err ?? closeErr),
    );
  }

  /** The first `n` buffered bytes: a view when one piece holds them, else one gathered copy. */
  #take(n: number): Buffer {
    const first = this.#pieces[0]!;
    this.#buffered -= n;
    if (first.length >= n) {
      if (first.length === n) this.#pieces.shift();
      else this.#pieces[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const piece = this.#pieces[0]!;
      const used = Math.min(piece.length, n - filled);
      piece.copy(out, filled, 0, used);
      filled += used;
      if (used === piece.length) this.#pieces.shift();
      else this.#pieces[0] = piece.subarray(used);
    }
    return out;
  }

  #send(data: Buffer): void {
    this.#outstanding++;
    this.#client.write(this.#handle!, data).then(
      () => {
        this.#outstanding--;
        this.#acked += data.length;
        this.emit('progress', { bytes: this.#acked } satisfies AfcProgress);
        this.#settled();
      },
      (err: Error) => {
        this.#outstanding--;
        this.#failure ??= err;
        this.#settled();
      },
    );
  }

  #settled(): void {
    const waiting = this.#waiting;
    if (waiting && (this.#failure || this.#outstanding < this.#depth)) {
      this.#waiting = undefined;
      waiting(this.#failure);
    }
    const idle = this.#idle;
    if (idle && this.#outstanding === 0) {
      this.#idle = undefined;
      idle();
    }
  }
}
