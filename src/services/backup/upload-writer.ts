/**
 * Writes the files of a DLMessageUploadFiles stream to disk while the stream is still being read.
 *
 * The device sends file after file without waiting; a host that finishes each file on disk (open,
 * write, close, rename: four trips to libuv's thread pool) before it reads the next one's bytes
 * stops the device every few kilobytes, and a backup of thousands of small files then spends most
 * of its time waiting. Here:
 *
 * - a file that arrives whole within `flushBytes` (most files of a backup) is written at its end in
 *   four syscalls on this thread (open, writev, close, rename), which costs less than four round
 *   trips to the thread pool with their wake-ups, and holds the loop for one small file at a time;
 * - a larger file's disk work runs in a chain of its own, started as its bytes arrive, so it is on
 *   its way to disk while the next files are being read:
 *
 * ```
 *  stream:  name a │ data a … data a │ end a │ name b │ data b │ end b │ name c …
 *  disk:      ╰─ open tmp → writev → … → writev → close → rename a       (file a's chain)
 *                                                          ╰─ b: open, writev, close, rename at once
 * ```
 *
 * What keeps it safe and bounded:
 * - every file is written under a temporary name in its own folder and renamed to its real name
 *   only when the device ended it whole and every byte is written, so a host killed midway (kill -9)
 *   never leaves a partial file under a real name (no fsync: a killed process loses no written
 *   bytes, and the device commits a snapshot only after the whole upload was answered);
 * - bytes not yet on disk are bounded (`maxPendingBytes`, and `maxPendingFiles` files): past the
 *   bound the caller awaits, so it stops reading and the device is paced by the mux window;
 * - a file's bytes are written in pieces of at least `flushBytes` (one writev of the chunks as they
 *   came), not one write per network chunk;
 * - the first disk error stops everything: later calls and {@link finish} reject with it, and the
 *   temporary files of unfinished files are removed.
 *
 * Chunks are kept as the stream handed them (a Readable's chunks are the reader's to keep), never
 * copied.
 */
import { closeSync, mkdirSync, openSync, renameSync, rmSync, writevSync } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';
import { viewsAfter } from '../../buffer-views.js';

/** Bounds of an {@link UploadWriter}. */
export interface UploadWriterOptions {
  /** Bytes received and not yet written (default 16 MiB). */
  maxPendingBytes?: number;
  /** Files received and not yet renamed into place (default 64). */
  maxPendingFiles?: number;
  /** A file's bytes are written once this many are buffered, and at its end (default 1 MiB). */
  flushBytes?: number;
}

/** One file on its way to disk. */
interface PendingFile {
  readonly path: string;
  readonly tmp: string;
  /** Chunks received and not yet handed to a write. */
  parts: Buffer[];
  buffered: number;
  /** Bytes received and not yet written (what counts against maxPendingBytes). */
  unwritten: number;
  fh?: FileHandle;
  /** The file's disk work so far: each step runs after the one before (never rejects: see #step). */
  chain: Promise<void>;
  /** Settles when the file is renamed into place or given up (never rejects). */
  settled?: Promise<void>;
  /** Set once the file's temporary name was renamed to its real one. */
  placed: boolean;
  /** Set once disk work was handed to the chain (the file is then finished there too). */
  queued: boolean;
}

/** The disk side of one upload stream. */
export class UploadWriter {
  readonly #maxBytes: number;
  readonly #maxFiles: number;
  readonly #flush: number;
  /** Folders made (or found) in this stream: each is made once, not once per file. */
  readonly #dirs = new Set<string>();
  readonly #pending = new Set<PendingFile>();
  readonly #prefix = `.muxwire-part-${randomBytes(4).toString('hex')}-`;
  #serial = 0;
  #unwritten = 0;
  #current: PendingFile | undefined;
  #error: Error | undefined;
  /** Wakes a caller waiting for room. */
  #wake: (() => void) | undefined;

  constructor(opts: UploadWriterOptions = {}) {
    this.#maxBytes = opts.maxPendingBytes ?? 16 * 1024 * 1024;
    this.#maxFiles = opts.maxPendingFiles ?? 64;
    this.#flush = opts.flushBytes ?? 1024 * 1024;
  }

  /** Bytes received and not yet written, all files together. */
  get pendingBytes(): number {
    return this.#unwritten;
  }

  /** Starts the file whose real name is `path` (checked by the caller), after the previous one ended. */
  async begin(path: string): Promise<void> {
    this.#check();
    if (this.#current) throw new Error('UploadWriter: a file began before the previous one ended');
    while (this.#pending.size >= this.#maxFiles) await this.#room();
    const dir = dirname(path);
    if (!this.#dirs.has(dir)) {
      // Once per folder (the device made most of them already): one syscall, done at once.
      mkdirSync(dir, { recursive: true });
      this.#dirs.add(dir);
    }
    const f: PendingFile = { path, tmp: `${path}${this.#prefix}${this.#serial++}`, parts: [], buffered: 0, unwritten: 0, chain: Promise.resolve(), placed: false, queued: false };
    this.#pending.add(f);
    this.#current = f;
  }

  /** Bytes of the current file; resolves when there is room for more. */
  async data(chunk: Buffer): Promise<void> {
    this.#check();
    const f = this.#current;
    if (!f) throw new Error('UploadWriter: data before a file began');
    f.parts.push(chunk);
    f.buffered += chunk.length;
    f.unwritten += chunk.length;
    this.#unwritten += chunk.length;
    if (f.buffered >= this.#flush) this.#write(f);
    if (this.#unwritten > this.#maxBytes) {
      // Whatever this file holds goes to disk too, so the wait always has a write to end it.
      this.#write(f);
      while (this.#unwritten > this.#maxBytes && !this.#error) await this.#room();
    }
    this.#check();
  }

  /** The current file ended: whole (`ok`, renamed into place once written) or not (removed). */
  end(ok: boolean): void {
    this.#check();
    const f = this.#current;
    if (!f) throw new Error('UploadWriter: end of a file that did not begin');
    this.#current = undefined;
    if (ok && !f.queued) {
      this.#writeSmall(f);
      return;
    }
    if (ok) {
      this.#write(f);
      this.#step(f, async () => {
        const fh = f.fh ?? (await open(f.tmp, 'wx', 0o644));
        f.fh = undefined;
        await fh.close();
        await rename(f.tmp, f.path);
        f.placed = true;
      });
    }
    this.#settle(f);
  }

  /**
   * A file that arrived whole before any of it was written (at most `flushBytes`): open, writev,
   * close and rename at once, on this thread. Four syscalls cost less than four round trips to the
   * thread pool and their wake-ups, and hold the loop for one small file at a time.
   */
  #writeSmall(f: PendingFile): void {
    try {
      const fd = openSync(f.tmp, 'wx', 0o644);
      try {
        let buffers = f.parts;
        for (let left = f.buffered; left > 0; ) {
          const n = writevSync(fd, buffers);
          left -= n;
          buffers = viewsAfter(buffers, n);
        }
      } finally {
        closeSync(fd);
      }
      renameSync(f.tmp, f.path);
      f.placed = true;
    } catch (err) {
      this.#error ??= err as Error;
      try {
        rmSync(f.tmp, { force: true });
      } catch {
        // The error above is the one reported.
      }
    }
    f.parts = [];
    this.#unwritten -= f.unwritten;
    f.unwritten = 0;
    this.#pending.delete(f);
  }

  /** Waits for every file to be on disk; rejects with the first error (after cleaning up). */
  async finish(): Promise<void> {
    const f = this.#current;
    if (f) {
      // The stream stopped inside a file: it is not whole.
      this.#current = undefined;
      this.#settle(f);
    }
    while (this.#pending.size > 0) await Promise.all([...this.#pending].map((p) => p.settled));
    if (this.#error) throw this.#error;
  }

  /** Gives up: waits for the disk work in flight and removes every temporary file. */
  async abort(): Promise<void> {
    this.#error ??= new Error('UploadWriter: aborted');
    await this.finish().catch(() => undefined);
  }

  /** Hands the buffered chunks of `f` to one writev, after its earlier steps. */
  #write(f: PendingFile): void {
    if (f.buffered === 0) return;
    const parts = f.parts;
    const n = f.buffered;
    f.parts = [];
    f.buffered = 0;
    this.#step(f, async () => {
      f.fh ??= await open(f.tmp, 'wx', 0o644);
      let left = n;
      let buffers = parts;
      // writev may write less than asked: the rest goes again.
      for (;;) {
        const { bytesWritten } = await f.fh!.writev(buffers);
        left -= bytesWritten;
        if (left === 0) break;
        buffers = viewsAfter(buffers, bytesWritten);
      }
      f.unwritten -= n;
      this.#unwritten -= n;
      this.#wakeUp();
    });
  }

  /**
   * Appends a step to `f`'s chain. Steps after a failure (of any file) are skipped; a step's error
   * is kept as the writer's and wakes a waiting caller, and the chain itself never rejects, so no
   * rejection is ever left unhandled while a file is still being received.
   */
  #step(f: PendingFile, run: () => Promise<void>): void {
    f.queued = true;
    f.chain = f.chain.then(async () => {
      if (this.#error) return;
      try {
        await run();
      } catch (err) {
        this.#error ??= err as Error;
        this.#wakeUp();
      }
    });
  }

  /**
   * Ends `f`: once its chain has run, a file that was not renamed into place (ended as failed,
   * cut off, or stopped by an error) has its temporary file closed and removed.
   */
  #settle(f: PendingFile): void {
    f.parts = [];
    f.settled = f.chain.then(async () => {
      if (!f.placed) {
        await f.fh?.close().catch(() => undefined);
        f.fh = undefined;
        await rm(f.tmp, { force: true }).catch((err: Error) => void (this.#error ??= err));
      }
      this.#unwritten -= f.unwritten;
      f.unwritten = 0;
      this.#pending.delete(f);
      this.#wakeUp();
    });
  }

  #room(): Promise<void> {
    // Something is always in flight when this waits: the current file's writes or a pending file.
    return new Promise((resolve) => (this.#wake = resolve));
  }

  #wakeUp(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  #check(): void {
    if (this.#error) throw this.#error;
  }
}
