/**
 * Pair records and the SystemBUID on disk, in usbmuxd's layout (usbmux.md §4.10), so a pair made
 * through muxwire works with libimobiledevice's usbmuxd and the other way round:
 *
 * ```
 * <dir>/                          default /var/lib/lockdown, mode 0700
 *   SystemConfiguration.plist     XML dict { SystemBUID: "<36-char upper-case UUID>" }, 0600
 *   <UDID>.plist                  XML pair record, mode 0600 (it holds private keys)
 *   <UDID>.plist.<pid>.<hex>.tmp  a save in progress (temp file → fsync → rename → fsync dir)
 * ```
 *
 * `prepare()` (the daemon's start-up) puts a directory left by anyone else right: the directory
 * owned by the daemon's user (taken over when the daemon is root) and made 0700, every record
 * 0600, and the temp files of a writer that died (kill -9 mid-save: each is a full or partial copy
 * of a private key) removed, each fix with a log line.
 *
 * Nothing is ever done through a symbolic link: whoever could write the directory may have left
 * links to files elsewhere (a root-only secret, a file to chmod). Every file is opened with
 * O_NOFOLLOW and checked on its descriptor; a symlink, anything but a regular file, or a file with
 * other hard links reads as no such record (ENOENT) and is left alone by `prepare()`, with a
 * warning naming it. Writes rename over the name, which replaces a link rather than its target.
 * A pair directory that is itself a symlink is used but never changed or tidied through.
 *
 * Differences from usbmuxd, on purpose:
 * - Writes are atomic: a temporary file in the same directory, fsync, rename. usbmuxd removes the
 *   old file and rewrites it, so a crash in between loses the pairing.
 * - Files are created 0600, not with the umask's 0644, in a 0700 directory (usbmuxd: 0755).
 * - A PairRecordID is a file name, never a path: `/`, `\`, `..`, NUL, control characters and the
 *   empty string are refused with EINVAL (usbmuxd uses it unsanitised, §6.9).
 * - The BUID is a random UUID (crypto), not `rand()` seeded with the time.
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import type { Stats } from 'node:fs';
import { lstat, open, readdir, readlink, unlink } from 'node:fs/promises';
import { makeDirectory } from '../make-directory.js';
import type { FileHandle } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { writeFileAtomic } from '../atomic-file.js';
import { MuxwireError } from '../errors.js';
import { log } from '../log.js';
import type { Logger } from '../log.js';
import { decodePlist, encodeXmlPlist, isPlistDict } from '../protocol/plist.js';
import type { PlistDict } from '../protocol/plist.js';
import type { PairRecordStore } from '../lockdown/pair-record.js';

/** Default pair-record directory on Linux (usbmuxd's). */
export const DEFAULT_PAIR_DIR = '/var/lib/lockdown';
/** Largest pair record or configuration file read (real ones are ~4 KiB). */
const MAX_RECORD_BYTES = 1024 * 1024;
const SYSTEM_CONFIGURATION = 'SystemConfiguration.plist';
/** Mode of the pair directory: only the daemon's user may list or open what it holds. */
export const PAIR_DIR_MODE = 0o700;
/** Mode of every record and of SystemConfiguration.plist. */
export const PAIR_RECORD_MODE = 0o600;
/** The name writeAtomic gives its temp file: `<name>.<pid>.<hex>.tmp`. */
const TEMP_FILE = /^(.+)\.(\d+)\.[0-9a-f]+\.tmp$/;
/**
 * open(2) flags for every file of the directory the store reads or tidies: O_NOFOLLOW, so a planted
 * symlink fails (ELOOP) instead of opening its target; O_NONBLOCK, so a planted FIFO cannot hang
 * the open (and with it a thread of libuv's pool) waiting for a writer. Regular files ignore it.
 */
const ENTRY_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
/** open(2) flags for the directory itself, whose owner and mode are then set on the descriptor. */
const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

/** What `PairStore.prepare()` found and fixed. */
export interface PairStorePrepared {
  /** The directory belonged to another user and was given to the daemon's (as root only). */
  dirOwnerFixed: boolean;
  /** The directory's mode was changed to 0700. */
  dirModeFixed: boolean;
  /** Records (and SystemConfiguration.plist) whose mode was changed to 0600. */
  modesFixed: string[];
  /** Temp files of dead writers, removed. */
  tempFilesRemoved: string[];
  /** Records and temp files left alone because they are symlinks or not plain files (each warned). */
  skipped: string[];
}

/** errno values usbmuxd puts in Result.Number for pair-record commands (§4.4, §6.9). */
export const ENOENT = 2;
export const EIO = 5;
export const EACCES = 13;
export const EINVAL = 22;

/** The store interface lockdown pairing uses (the contract lives in src/lockdown). */
export type { PairRecordStore };

/** Emitted as 'saved' after a record was written: the daemon turns it into a Paired event. */
export interface PairRecordSaved {
  udid: string;
  deviceId?: number;
}

/**
 * A pair-record directory. Errors are MuxwireErrors whose `detail` is the errno number usbmuxd
 * would answer with (`errnoOf(err)` reads it).
 */
export class PairStore extends EventEmitter implements PairRecordStore {
  /** The directory holding the records. */
  readonly dir: string;
  #buid: Promise<string> | undefined;

  constructor(dir: string = DEFAULT_PAIR_DIR) {
    super();
    this.dir = dir;
  }

  /**
   * Start-up tidy (the daemon calls it before serving): creates the directory 0700 or makes an
   * existing one the daemon user's and 0700, makes every `*.plist` 0600, and removes temp files
   * whose writer process is gone. Each fix is logged; a fix the file system refuses is a warning,
   * not a failure. Symlinks and other odd entries are skipped with a warning, never followed.
   */
  async prepare(): Promise<PairStorePrepared> {
    const done: PairStorePrepared = { dirOwnerFixed: false, dirModeFixed: false, modesFixed: [], tempFilesRemoved: [], skipped: [] };
    const plog = log.child({ pairstore: this.dir });
    try {
      await this.#ensureDir();
    } catch (err) {
      // A daemon without access to the directory still serves devices; every record request
      // reports the error itself (EACCES, EIO).
      plog.warn(`pair directory unusable: ${(err as Error).message}`);
      return done;
    }
    if (!(await this.#tidyDirectory(done, plog))) return done;
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      plog.warn(`pair directory unreadable, not tidied: ${(err as Error).message}`);
      return done;
    }
    for (const name of names) {
      const temp = TEMP_FILE.exec(name);
      if (temp !== null) await this.#removeDeadTemp(name, Number(temp[2]), done, plog);
      else if (name.endsWith('.plist')) await this.#fixRecordMode(name, done, plog);
    }
    return done;
  }

  /**
   * The directory itself, through a descriptor opened without following a link: owner first (as
   * root, taken over), then mode. False when it is a symlink or cannot be opened: then its files
   * are not tidied either, since they are wherever the link points.
   */
  async #tidyDirectory(done: PairStorePrepared, plog: Logger): Promise<boolean> {
    let fh: FileHandle;
    try {
      if ((await lstat(this.dir)).isSymbolicLink()) {
        // Its target is whatever the link's writer chose (another user's directory, /etc...):
        // chown, chmod or removals there would hit files that are not ours. Records are still
        // read and written through it; an administrator who made the link can point the daemon
        // at the real directory to get the tidy back.
        const target = await readlink(this.dir).catch(() => '?');
        plog.warn(`pair directory is a symbolic link (to ${target}): its owner, mode and files are not changed through it; give the daemon the real directory`);
        return false;
      }
      fh = await open(this.dir, DIR_FLAGS);
    } catch (err) {
      plog.warn(`pair directory unusable: ${(err as Error).message}`);
      return false;
    }
    try {
      const st = await fh.stat();
      await fixDirOwner(fh, st, done, plog);
      await fixDirMode(fh, st, done, plog);
    } finally {
      await fh.close();
    }
    return true;
  }

  /** Removes a temp file whose writer is dead; a live writer's is a save about to be renamed. */
  async #removeDeadTemp(name: string, pid: number, done: PairStorePrepared, plog: Logger): Promise<void> {
    if (processAlive(pid)) return;
    const path = join(this.dir, name);
    try {
      const st = await lstat(path);
      if (!st.isFile()) {
        skip(name, `is ${kindOf(st)}`, done, plog);
        return;
      }
      // unlink(2) removes the name itself, never what a link points to.
      await unlink(path);
      done.tempFilesRemoved.push(name);
      plog.warn(`removed ${name}, left by a save that never finished`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') plog.warn(`cannot remove ${name}: ${(err as Error).message}`);
    }
  }

  /** Makes a record (or SystemConfiguration.plist) 0600, on a descriptor that is the file itself. */
  async #fixRecordMode(name: string, done: PairStorePrepared, plog: Logger): Promise<void> {
    let entry: OpenedEntry;
    try {
      entry = await openEntry(join(this.dir, name));
    } catch {
      return; // gone meanwhile, or unreadable: a read of it reports that itself
    }
    if ('refused' in entry) {
      skip(name, entry.refused, done, plog);
      return;
    }
    const { fh, st } = entry;
    const mode = st.mode & 0o777;
    try {
      if (mode === PAIR_RECORD_MODE) return;
      await fh.chmod(PAIR_RECORD_MODE);
      done.modesFixed.push(name);
      plog.warn(`${name} was mode ${octal(mode)}; made it ${octal(PAIR_RECORD_MODE)}`);
    } catch (err) {
      plog.warn(`${name} is mode ${octal(mode)} and cannot be made ${octal(PAIR_RECORD_MODE)}: ${(err as Error).message}`);
    } finally {
      await fh.close();
    }
  }

  /** The host's SystemBUID, created and saved when missing (usbmux.md §4.10). */
  readBUID(): Promise<string> {
    // One read-or-create at a time, so two first callers cannot save two different BUIDs.
    this.#buid ??= this.#loadOrCreateBUID().catch((err: unknown) => {
      this.#buid = undefined;
      throw err;
    });
    return this.#buid;
  }

  /** The stored record for `id` as a dictionary, or undefined when there is none. */
  async readPairRecord(id: string): Promise<PlistDict | undefined> {
    const bytes = await this.readPairRecordData(id);
    if (bytes === undefined) return undefined;
    let value;
    try {
      value = decodePlist(bytes);
    } catch (err) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_PAIR_RECORD', `pair record ${id} is not a valid plist`, { cause: err, detail: EINVAL });
    }
    if (!isPlistDict(value)) throw new MuxwireError('MUXWIRE_ERR_BAD_PAIR_RECORD', `pair record ${id} is not a dictionary`, { detail: EINVAL });
    return value;
  }

  /** The stored bytes of the record for `id`, unchanged (ReadPairRecord returns them as they are). */
  async readPairRecordData(id: string): Promise<Buffer | undefined> {
    const path = this.#recordPath(id);
    try {
      return await this.#readEntry(path);
    } catch (err) {
      throw fsError(err, `cannot read pair record ${id}`);
    }
  }

  /** Saves `record` for `id` as XML, atomically, mode 0600; emits 'saved'. */
  async savePairRecord(id: string, record: PlistDict, deviceId?: number): Promise<void> {
    const path = this.#recordPath(id);
    await this.#ensureDir();
    await writeAtomic(path, encodeXmlPlist(record));
    log.child({ pairstore: this.dir }).debug(`saved pair record ${id}`);
    const event: PairRecordSaved = deviceId !== undefined ? { udid: id, deviceId } : { udid: id };
    this.emit('saved', event);
  }

  /**
   * Saves record bytes as a client sent them (binary or XML); they must decode to a dictionary.
   * Stored as XML whatever the input format, as usbmuxd does.
   */
  async savePairRecordData(id: string, data: Buffer, deviceId?: number): Promise<void> {
    this.#recordPath(id);
    let value;
    try {
      value = decodePlist(data);
    } catch (err) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_PAIR_RECORD', 'PairRecordData is not a valid plist', { cause: err, detail: EINVAL });
    }
    if (!isPlistDict(value)) throw new MuxwireError('MUXWIRE_ERR_BAD_PAIR_RECORD', 'PairRecordData is not a dictionary', { detail: EINVAL });
    await this.savePairRecord(id, value, deviceId);
  }

  /** Deletes the record for `id`; MUXWIRE_ERR_NO_PAIR_RECORD (ENOENT) when there is none. */
  async deletePairRecord(id: string): Promise<void> {
    const path = this.#recordPath(id);
    try {
      await unlink(path);
    } catch (err) {
      throw fsError(err, `cannot delete pair record ${id}`);
    }
  }

  async #loadOrCreateBUID(): Promise<string> {
    const path = join(this.dir, SYSTEM_CONFIGURATION);
    let config: PlistDict = {};
    try {
      const bytes = await this.#readEntry(path);
      const value = bytes === undefined ? undefined : decodePlist(bytes);
      if (isPlistDict(value)) config = value;
      const buid = config.SystemBUID;
      if (typeof buid === 'string' && buid.length > 0) return buid;
    } catch (err) {
      log.warn(`${path} is unreadable (${(err as Error).message}); writing a new SystemBUID`);
    }
    const buid = randomUUID().toUpperCase();
    await this.#ensureDir();
    await writeAtomic(path, encodeXmlPlist({ ...config, SystemBUID: buid }));
    return buid;
  }

  /**
   * The bytes of a file of the directory, or undefined when there is no such record: none by that
   * name, or an entry that is not one (a symlink, a FIFO, a hard link to a file elsewhere), which
   * is warned about and never opened through, so a planted link cannot read its target.
   */
  async #readEntry(path: string): Promise<Buffer | undefined> {
    let entry: OpenedEntry;
    try {
      entry = await openEntry(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    if ('refused' in entry) {
      log.child({ pairstore: this.dir }).warn(`${basename(path)} ${entry.refused}; not read, answered as no such record`);
      return undefined;
    }
    const { fh, st } = entry;
    try {
      if (st.size > MAX_RECORD_BYTES) {
        throw new MuxwireError('MUXWIRE_ERR_BAD_PAIR_RECORD', `${path} is larger than ${MAX_RECORD_BYTES} bytes`, { detail: EINVAL });
      }
      return await fh.readFile();
    } finally {
      await fh.close();
    }
  }

  async #ensureDir(): Promise<void> {
    try {
      // Parents made on the way get the same mode: nothing under them is for other users either.
      await makeDirectory(this.dir, PAIR_DIR_MODE);
    } catch (err) {
      throw new MuxwireError('MUXWIRE_ERR_PAIR_DIR', `cannot create ${this.dir}: ${(err as Error).message}`, { cause: err, detail: 1 });
    }
  }

  #recordPath(id: string): string {
    validatePairRecordId(id);
    return join(this.dir, `${id}.plist`);
  }
}

/**
 * Throws MUXWIRE_ERR_BAD_PAIR_RECORD_ID (detail EINVAL) unless `id` is safe as one file name inside
 * the pair directory: not empty, at most 255 bytes, no `/`, `\`, NUL or control characters, and
 * not `.`/`..` or anything starting with a dot (which would also hide it).
 */
export function validatePairRecordId(id: unknown): asserts id is string {
  const bad = (why: string): never => {
    throw new MuxwireError('MUXWIRE_ERR_BAD_PAIR_RECORD_ID', `invalid PairRecordID: ${why}`, { detail: EINVAL });
  };
  if (typeof id !== 'string') bad('not a string');
  const s = id as string;
  if (s.length === 0) bad('empty');
  if (Buffer.byteLength(s) > 200) bad('too long');
  if (s.startsWith('.')) bad('starts with a dot');
  // eslint-disable-next-line no-control-regex
  if (/[/\\\u0000-\u001f\u007f]/.test(s)) bad('contains a path separator or control character');
  if (s === SYSTEM_CONFIGURATION.replace(/\.plist$/, '')) bad('reserved name');
}

/** The errno usbmuxd would answer for `err` (EIO when unknown). */
export function errnoOf(err: unknown): number {
  if (err instanceof MuxwireError && typeof err.detail === 'number') return err.detail;
  return EIO;
}

/** An entry opened as a record, or why it is not one. */
type OpenedEntry = { fh: FileHandle; st: Stats } | { refused: string };

/**
 * Opens a file of the pair directory as a record without following it. Refused (never opened
 * through): a symlink; anything but a regular file (a FIFO, a socket, a directory); a regular file
 * with other hard links, whose inode is also some file elsewhere (with fs.protected_hardlinks off,
 * anyone can link a root-only file in). Throws the file system's other errors (ENOENT...).
 */
async function openEntry(path: string): Promise<OpenedEntry> {
  let fh: FileHandle;
  try {
    fh = await open(path, ENTRY_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // ELOOP is O_NOFOLLOW's answer for a symlink (EMLINK on FreeBSD); ENXIO, a socket's.
    if (code === 'ELOOP' || code === 'EMLINK') return { refused: 'is a symbolic link' };
    if (code === 'ENXIO') return { refused: 'is a socket' };
    throw err;
  }
  let st: Stats;
  try {
    st = await fh.stat();
  } catch (err) {
    await fh.close();
    throw err;
  }
  let refused: string | undefined;
  if (!st.isFile()) refused = `is ${kindOf(st)}`;
  else if (st.nlink > 1) refused = `has ${st.nlink} hard links (the same file is elsewhere too)`;
  if (refused === undefined) return { fh, st };
  await fh.close();
  return { refused };
}

/** What a file that is not a regular file is, for a warning. */
function kindOf(st: Stats): string {
  if (st.isSymbolicLink()) return 'a symbolic link';
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isBlockDevice() || st.isCharacterDevice()) return 'a device';
  return 'not a regular file';
}

/** Records an entry prepare() leaves alone, with its one warning. */
function skip(name: string, why: string, done: PairStorePrepared, plog: Logger): void {
  done.skipped.push(name);
  plog.warn(`${name} ${why}; left alone (not followed, not changed)`);
}

/**
 * The directory must be the daemon user's: its owner can always chmod it back, rename records
 * away and plant links, so 0700 means nothing under another owner. As root the daemon takes it
 * (it is root's own state); otherwise only root can, and the warning says so.
 */
async function fixDirOwner(fh: FileHandle, st: Stats, done: PairStorePrepared, plog: Logger): Promise<void> {
  const uid = process.getuid?.();
  const gid = process.getgid?.();
  if (uid === undefined || gid === undefined || st.uid === uid) return;
  const problem = `pair directory is owned by uid ${st.uid}, not the daemon's uid ${uid}: that user can replace the records in it`;
  if (uid !== 0) {
    plog.warn(`${problem}; chown it to uid ${uid} (as root, the daemon does this itself)`);
    return;
  }
  try {
    await fh.chown(uid, gid);
    done.dirOwnerFixed = true;
    plog.warn(`${problem}; made it owned by uid ${uid}`);
  } catch (err) {
    plog.warn(`${problem}, and it cannot be made the daemon's: ${(err as Error).message}`);
  }
}

async function fixDirMode(fh: FileHandle, st: Stats, done: PairStorePrepared, plog: Logger): Promise<void> {
  if ((st.mode & 0o777) === PAIR_DIR_MODE) return;
  try {
    await fh.chmod(PAIR_DIR_MODE);
    done.dirModeFixed = true;
    plog.warn(`pair directory was mode ${octal(st.mode)}; made it ${octal(PAIR_DIR_MODE)}`);
  } catch (err) {
    plog.warn(`pair directory is mode ${octal(st.mode)} and cannot be made ${octal(PAIR_DIR_MODE)}: ${(err as Error).message}`);
  }
}

function octal(mode: number): string {
  return '0' + (mode & 0o777).toString(8);
}

/** Whether a process with this id exists (EPERM: it does, under another user). */
function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A record written whole (src/atomic-file.ts: temp file 0600, fsync, rename, directory fsync), so a
 * crash leaves the old record or the new one; a temp file a crash leaves behind is removed by the
 * next `prepare()`.
 */
async function writeAtomic(path: string, data: Buffer): Promise<void> {
  try {
    await writeFileAtomic(path, data, PAIR_RECORD_MODE);
  } catch (err) {
    throw fsError(err, `cannot write ${path}`);
  }
}

function fsError(err: unknown, message: string): MuxwireError {
  if (err instanceof MuxwireError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return new MuxwireError('MUXWIRE_ERR_NO_PAIR_RECORD', `${message}: no such record`, { cause: err, detail: ENOENT });
  if (code === 'EACCES' || code === 'EPERM') return new MuxwireError('MUXWIRE_ERR_PAIR_DIR', `${message}: permission denied`, { cause: err, detail: EACCES });
  return new MuxwireError('MUXWIRE_ERR_PAIR_DIR', `${message}: ${(err as Error).message}`, { cause: err, detail: EIO });
}
