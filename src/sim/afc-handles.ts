/**
 * The open files of one AFC connection on the simulated device.
 *
 * Handle rules (lockdown-afc.md §9.7 FILE_OPEN): a handle is never 0 (LIMD rejects 0 in read, write
 * and close) and fits in 32 bits (APPIUM reads handles as UInt32LE and ignores the upper halves of
 * every u64). Handles count up from 1 as on a device, wrap before 2^32, and skip numbers in use.
 * The table is bounded so a client that opens without closing gets NO_RESOURCES, not an fd leak.
 */
import type { FileHandle } from 'node:fs/promises';

import { AfcStatus } from '../protocol/afc.js';
import { AfcStatusError } from './afc-fs.js';
import { releaseLock } from './afc-locks.js';

/** How a file was opened. */
export interface AfcAccess {
  readonly readable: boolean;
  readonly writable: boolean;
  readonly append: boolean;
}

/** One open file. The position is kept here, and reads and writes use it explicitly (pread). */
export class AfcOpenFile {
  readonly handle: number;
  readonly fh: FileHandle;
  /** Opened with O_APPEND: every write goes to the end of the file. */
  readonly append: boolean;
  /** Opened for reading (modes r, r+, w+, a+) and for writing (all but r). */
  readonly readable: boolean;
  readonly writable: boolean;
  /** `dev:ino`, the key of this file's locks. */
  readonly lockKey: string;
  position = 0;

  constructor(handle: number, fh: FileHandle, access: AfcAccess, lockKey: string) {
    this.handle = handle;
    this.fh = fh;
    this.append = access.append;
    this.readable = access.readable;
    this.writable = access.writable;
    this.lockKey = lockKey;
  }
}

const MAX_HANDLE = 0xffff_ffff;

/** Handle number → open file, for one connection. */
export class AfcHandleTable {
  readonly #files = new Map<number, AfcOpenFile>();
  readonly #limit: number;
  #next = 1;

  constructor(limit: number) {
    this.#limit = limit;
  }

  /** Number of open files. */
  get size(): number {
    return this.#files.size;
  }

  /** Registers an opened file; NO_RESOURCES when the table is full (the caller closes `fh`). */
  add(fh: FileHandle, access: AfcAccess, lockKey: string): AfcOpenFile {
    if (this.#files.size >= this.#limit) {
      throw new AfcStatusError(AfcStatus.NO_RESOURCES, `too many open files (${this.#limit})`);
    }
    while (this.#files.has(this.#next)) this.#advance();
    const file = new AfcOpenFile(this.#next, fh, access, lockKey);
    this.#files.set(file.handle, file);
    this.#advance();
    return file;
  }

  /** The open file for a handle from the wire; INVALID_ARG when there is none. */
  get(handle: bigint): AfcOpenFile {
    const file = handle <= BigInt(MAX_HANDLE) ? this.#files.get(Number(handle)) : undefined;
    if (!file) throw new AfcStatusError(AfcStatus.INVALID_ARG, `no open file with handle ${handle}`);
    return file;
  }

  /** Closes one file and drops its locks. */
  async close(file: AfcOpenFile): Promise<void> {
    this.#files.delete(file.handle);
    releaseLock(file.lockKey, file);
    await file.fh.close();
  }

  /** Closes everything (the connection ended). Errors are ignored: there is nobody to tell. */
  async closeAll(): Promise<void> {
    const files = [...this.#files.values()];
    this.#files.clear();
    await Promise.all(
      files.map(async (file) => {
        releaseLock(file.lockKey, file);
        await file.fh.close().catch(() => undefined);
      }),
    );
  }

  #advance(): void {
    this.#next = this.#next >= MAX_HANDLE ? 1 : this.#next + 1;
  }
}
