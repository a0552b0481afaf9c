/**
 * A device file as a Node Readable, read with several FILE_READs in flight.
 *
 * Why pipelined: one request per round trip lets latency set the speed (ifuse's 1–2 MB/s, §10 of
 * lockdown-afc.md). With `inFlight` reads of `chunkSize` outstanding, the device always has the next
 * request queued when it finishes one. The device answers a connection's requests in order and each
 * FILE_READ advances the file position, so the k-th reply holds the k-th chunk; replies are still
 * placed by their slot, not by arrival, so a device that answered out of order could not reorder data.
 *
 * The end of the file is a DATA reply with zero bytes (§9.7). A short reply is not taken as the
 * end: a device may return less than asked, and the reads already in flight answer zero bytes right
 * after the real end anyway.
 *
 * Backpressure: no new read is issued while `push()` says the consumer is full, so memory holds at
 * most `inFlight` chunks beyond the stream's buffer.
 */
import { Readable } from 'node:stream';

import type { AfcClient } from './afc-client.js';

const MiB = 1024 * 1024;

/** Options of {@link AfcReadStream}. */
export interface AfcReadStreamOptions {
  /** Bytes per FILE_READ. Default 1 MiB (afcclient and idevice use 1 MiB, §9.8). */
  chunkSize?: number;
  /** FILE_READs outstanding at once. Default 4. */
  inFlight?: number;
  /** Byte offset to start at (a FILE_SEEK after the open). */
  start?: number;
}

/** Progress of a transfer: bytes done, and the total when known. */
export interface AfcProgress {
  bytes: number;
  total?: number;
}

interface Slot {
  data: Buffer | undefined;
}

/** Readable of one device file. Emits `'progress'` ({@link AfcProgress}) after each chunk. */
export class AfcReadStream extends Readable {
  /** The device path. */
  readonly remote: string;
  readonly #client: AfcClient;
  readonly #chunkSize: number;
  readonly #depth: number;
  readonly #start: number;
  readonly #slots: Slot[] = [];
  #handle: number | undefined;
  #eof = false;
  #wantMore = false;
  #bytes = 0;

  constructor(client: AfcClient, remote: string, opts: AfcReadStreamOptions = {}) {
    const chunkSize = opts.chunkSize ?? MiB;
    super({ highWaterMark: chunkSize });
    this.remote = remote;
    this.#client = client;
    this.#chunkSize = chunkSize;
    this.#depth = Math.max(1, opts.inFlight ?? 4);
    this.#start = opts.start ?? 0;
  }

  /** Bytes delivered so far. */
  get bytesRead(): number {
    return this.#bytes;
  }

  override _construct(callback: (err?: Error | null) => void): void {
    void (async () => {
      try {
        this.#handle = await this.#client.open(this.remote, 'r');
        if (this.#start > 0) await this.#client.seek(this.#handle, this.#start);
      } catch (err) {
        callback(err as Error);
        return;
      }
      callback();
    })();
  }

  override _read(): void {
    this.#wantMore = true;
    this.#fill();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    const handle = this.#handle;
    this.#handle = undefined;
    if (handle === undefined) {
      callback(err);
      return;
    }
    // Reads still in flight are answered before the close: the device serves requests in order.
    this.#client.close(handle).then(
      () => callback(err),
      (closeErr: Error) => callback(err ?? closeErr),
    );
  }

  #fill(): void {
    const handle = this.#handle;
    if (handle === undefined) return;
    while (this.#wantMore && !this.#eof && !this.destroyed && this.#slots.length < this.#depth) {
      const slot: Slot = { data: undefined };
      this.#slots.push(slot);
      this.#client.read(handle, this.#chunkSize).then(
        (data) => {
          slot.data = data;
          this.#flush();
        },
        (err: Error) => this.destroy(err),
      );
    }
  }

  /** Delivers finished slots from the front, in request order. */
  #flush(): void {
    while (this.#slots.length > 0 && this.#slots[0]!.data !== undefined) {
      const data = this.#slots.shift()!.data!;
      if (this.#eof || this.destroyed) continue;
      if (data.length === 0) {
        this.#eof = true;
        this.push(null);
        continue;
      }
      this.#bytes += data.length;
      if (!this.push(data)) this.#wantMore = false;
      this.emit('progress', { bytes: this.#bytes } satisfies AfcProgress);
    }
    this.#fill();
  }
}
