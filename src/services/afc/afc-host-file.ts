/**
 * The host side of AFC copies: where a pull writes, a temporary `.part` file beside the destination
 * that becomes the destination only once every byte is in it and on disk (so a failed or
 * interrupted pull never harms an existing file and never leaves a partial one under the real
 * name), streams over an open FileHandle, and host errors as coded MuxwireErrors.
 *
 * The part file's steps are those of src/atomic-file.ts (exclusive create, fsync, rename, directory
 * fsync), but streamed: writeFileAtomic takes the whole content as one buffer, which a multi-GiB
 * pull cannot be.
 */
import { randomBytes } from 'node:crypto';
import type { Stats } from 'node:fs';
import { open, readFile, realpath, rename, stat, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { basename, dirname, join, posix } from 'node:path';
import { Readable, Writable } from 'node:stream';

import { MuxwireError } from '../../errors.js';

/** Code of a failed host file-system operation (README "Error codes"). */
const IO_ERROR = 'MUXWIRE_ERR_IO';

/** Longest part of a destination name kept in a part name, in UTF-8 bytes: NAME_MAX is 255. */
const MAX_BASE_BYTES = 200;

/**
 * `.<base>.muxwire-<8 hex>.part`: hidden, says what it will become and that it is not complete, and
 * random so two pulls to one destination do not share it. Used for the device-side part file too.
 */
export function partName(base: string): string {
  const chars = [...base]; // code points, so a cut never splits a surrogate pair
  while (Buffer.byteLength(chars.join('')) > MAX_BASE_BYTES) chars.pop();
  return `.${chars.join('')}.muxwire-${randomBytes(4).toString('hex')}.part`;
}

/** True for a Node system-call error (ENOENT, EISDIR, ENOSPC…), as opposed to a bug or a device error. */
function isSystemError(err: unknown): err is NodeJS.ErrnoException {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return err instanceof Error && typeof code === 'string' && /^E[A-Z0-9]+$/.test(code);
}

/** Node's `ENOSPC: no space left on device, write` without the leading code and the system call. */
function reason(err: NodeJS.ErrnoException): string {
  return /^E[A-Z0-9]+: (.+?)(?:, [a-z_]+(?: '.*')?)?$/s.exec(err.message)?.[1] ?? err.message;
}

/**
 * A host file-system failure as one coded line naming the user's path (not a part file's):
 * `cannot write /x: no space left on device (ENOSPC)`, `detail` the errno name. Anything that is not
 * a system-call error (a device error, a bug) is returned as it is.
 */
export function localIoError(action: string, path: string, err: unknown): unknown {
  if (!isSystemError(err)) return err;
  return new MuxwireError(IO_ERROR, `${action} ${path}: ${reason(err)} (${err.code})`, { cause: err, detail: err.code });
}

/** The coded error for a directory where a file is needed, worded as the others. */
export function directoryError(action: string, path: string): MuxwireError {
  return new MuxwireError(IO_ERROR, `${action} ${path}: is a directory (EISDIR)`, { detail: 'EISDIR' });
}

/**
 * Where a pull writes:
 * - `new`: nothing there; a part file, renamed into place with the mode a new file gets;
 * - `replace`: a regular file (a symlink to one is followed, so the link stays); a part file renamed
 *   over it, keeping its permission bits (as `cp` keeps them);
 * - `special`: a device, FIFO or socket (`/dev/null`), or any path under /dev; written in place,
 *   since renaming a file over `/dev/null` would replace the device node, not write into it.
 */
export type PullTarget = { kind: 'new'; path: string } | { kind: 'replace'; path: string; mode: number } | { kind: 'special'; path: string };

/** stat(2) that answers undefined for a missing path and a coded error for any other failure. */
async function statIfExists(path: string): Promise<Stats | undefined> {
  try {
    return await stat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw localIoError('cannot write', path, err);
  }
}

/** The last component of a device path, as `cp` names a copy made into a directory. */
function remoteBaseName(remote: string): string {
  const base = posix.basename(remote);
  if (base === '' || base === '.' || base === '..') {
    throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `${remote} has no file name to give a copy inside a directory`);
  }
  return base;
}

/** Resolves a pull's destination; an existing directory receives `<dir>/<remote basename>`, as with `cp`. */
export async function resolvePullTarget(localPath: string, remote: string): Promise<PullTarget> {
  // /dev/stdout and /dev/fd/N name a descriptor someone holds: a rename over the file behind it
  // would leave that descriptor on the old file. Everything under /dev is written in place.
  if (localPath.startsWith('/dev/')) return { kind: 'special', path: localPath };
  let path = localPath;
  let st = await statIfExists(path);
  if (st?.isDirectory()) {
    path = join(path, remoteBaseName(remote));
    st = await statIfExists(path);
  }
  if (st === undefined) return { kind: 'new', path };
  if (st.isDirectory()) throw directoryError('cannot write', path);
  if (!st.isFile()) return { kind: 'special', path };
  return { kind: 'replace', path: await resolveLinks(path), mode: st.mode & 0o777 };
}

/** The file a path names, symlinks followed: replacing it keeps the links pointing at it. */
async function resolveLinks(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch (err) {
    throw localIoError('cannot write', path, err);
  }
}

/**
 * The umask, read without process.umask(): with no argument that call sets the umask to 0 and back
 * (DEP0139), and a file another thread creates in between would be world-writable. Linux (4.7+)
 * shows it in /proc/self/status; elsewhere process.umask() is the only way.
 */
async function currentUmask(): Promise<number> {
  try {
    const match = /^Umask:\s*([0-7]+)\s*$/m.exec(await readFile('/proc/self/status', 'utf8'));
    if (match) return parseInt(match[1]!, 8);
  } catch {
    // Not Linux: fall through.
  }
  return process.umask();
}

/** The permission bits open(2) would give a new file here: 0666 less the umask. */
export async function newFileMode(): Promise<number> {
  return 0o666 & ~(await currentUmask());
}

/** A part file beside its destination: write through `stream()`, then `commit()` or `discard()`. */
export class PartFile {
  /** Where the data goes once complete. */
  readonly target: string;
  /** The part file itself. */
  readonly path: string;
  #handle: FileHandle | undefined;

  private constructor(target: string, path: string, handle: FileHandle) {
    this.target = target;
    this.path = path;
    this.#handle = handle;
  }

  /**
   * Creates the part file exclusively, mode 0600: nobody else can open it while the data arrives,
   * whatever the final mode will be. Fails with a coded error naming `target`.
   */
  static async create(target: string): Promise<PartFile> {
    const path = join(dirname(target), partName(basename(target)));
    try {
      return new PartFile(target, path, await open(path, 'wx', 0o600));
    } catch (err) {
      throw localIoError('cannot write', target, err);
    }
  }

  /** A Writable into the part file; it leaves the file open for commit() to fsync. */
  stream(): Writable {
    return handleSink(this.#handle!);
  }

  /** fsync, the final mode, rename over the target, then a best-effort fsync of the directory. */
  async commit(mode: number): Promise<void> {
    const handle = this.#handle!;
    try {
      await handle.sync();
      // Best effort: where fchmod is refused (vfat, some network mounts) the copy is still whole,
      // and 0600 is the safer mode to be left with.
      await handle.chmod(mode).catch(() => undefined);
      this.#handle = undefined;
      await handle.close();
      await rename(this.path, this.target);
    } catch (err) {
      throw localIoError('cannot write', this.target, err);
    }
    await syncDirectory(dirname(this.target));
  }

  /** Closes and removes the part file. Never throws: it runs on the way out of another failure. */
  async discard(): Promise<void> {
    const handle = this.#handle;
    this.#handle = undefined;
    await handle?.close().catch(() => undefined);
    await unlink(this.path).catch(() => undefined);
  }
}

/** Makes a rename durable. Best effort: not every file system lets a directory be fsynced. */
async function syncDirectory(dir: string): Promise<void> {
  try {
    const handle = await open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // As in src/atomic-file.ts: the data itself is already on disk.
  }
}

/*
 * Streams over a FileHandle that stays the caller's to fsync and close. Not fs.ReadStream /
 * fs.WriteStream from handle.createReadStream(): those hold a reference on the handle that only
 * their own close drops, so with autoClose off FileHandle.close() waits forever, and with it on the
 * file is closed before it can be fsynced.
 */

/** A Writable that writes each chunk whole at the handle's position. */
export function handleSink(handle: FileHandle): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      writeAll(handle, chunk).then(() => callback(), callback);
    },
  });
}

/** write(2) may take less than it is given (a nearly full disk): loop until all of it is written. */
async function writeAll(handle: FileHandle, data: Buffer): Promise<void> {
  for (let done = 0; done < data.length; ) done += (await handle.write(data, done, data.length - done)).bytesWritten;
}

/**
 * A Readable of the handle from its current position, `chunkSize` bytes per read. Reading at the
 * current position (not at an offset) is what lets a FIFO or /dev/stdin be pushed.
 */
export function handleSource(handle: FileHandle, chunkSize: number): Readable {
  return new Readable({
    highWaterMark: chunkSize,
    read() {
      const buffer = Buffer.allocUnsafe(chunkSize);
      handle.read(buffer, 0, chunkSize, null).then(
        ({ bytesRead }) => {
          if (bytesRead === 0) this.push(null);
          // A short read (a pipe, the end of a file) is copied so it does not pin a whole chunk.
          else this.push(bytesRead === chunkSize ? buffer : Buffer.from(buffer.subarray(0, bytesRead)));
        },
        (err: Error) => this.destroy(err),
      );
    },
  });
}
