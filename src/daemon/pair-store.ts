/**
 * Pair records and the SystemBUID on disk, in usbmuxd's layout (usbmux.md §4.10), so a pair made
 * through muxwire works with libimobiledevice's usbmuxd and the other way round:
 *
 * ```
 * <dir>/                          default /var/lib/lockdown (created 0755 when missing)
 *   SystemConfiguration.plist     XML dict { SystemBUID: "<36-char upper-case UUID>" }
 *   <UDID>.plist                  XML pair record, mode 0600 (it holds private keys)
 * ```
 *
 * Differences from usbmuxd, on purpose:
 * - Writes are atomic: a temporary file in the same directory, fsync, rename. usbmuxd removes the
 *   old file and rewrites it, so a crash in between loses the pairing.
 * - Files are created 0600, not with the umask's 0644.
 * - A PairRecordID is a file name, never a path: `/`, `\`, `..`, NUL, control characters and the
 *   empty string are refused with EINVAL (usbmuxd uses it unsanitised, §6.9).
 * - The BUID is a random UUID (crypto), not `rand()` seeded with the time.
 */
import { EventEmitter } from 'node:events';
import { randomUUID, randomBytes } from 'node:crypto';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { MuxwireError } from '../errors.js';
import { log } from '../log.js';
import { decodePlist, encodeXmlPlist, isPlistDict } from '../protocol/plist.js';
import type { PlistDict } from '../protocol/plist.js';
import type { PairRecordStore } from '../lockdown/pair-record.js';

/** Default pair-record directory on Linux (usbmuxd's). */
export const DEFAULT_PAIR_DIR = '/var/lib/lockdown';
/** Largest pair record or configuration file read (real ones are ~4 KiB). */
const MAX_RECORD_BYTES = 1024 * 1024;
const SYSTEM_CONFIGURATION = 'SystemConfiguration.plist';

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
      return await readLimited(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
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
      const value = decodePlist(await readLimited(path));
      if (isPlistDict(value)) config = value;
      const buid = config.SystemBUID;
      if (typeof buid === 'string' && buid.length > 0) return buid;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        log.warn(`${path} is unreadable (${(err as Error).message}); writing a new SystemBUID`);
      }
    }
    const buid = randomUUID().toUpperCase();
    await this.#ensureDir();
    await writeAtomic(path, encodeXmlPlist({ ...config, SystemBUID: buid }));
    return buid;
  }

  async #ensureDir(): Promise<void> {
    try {
      await mkdir(this.dir, { recursive: true, mode: 0o755 });
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

async function readLimited(path: string): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const st = await fh.stat();
    if (st.size > MAX_RECORD_BYTES) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_PAIR_RECORD', `${path} is larger than ${MAX_RECORD_BYTES} bytes`, { detail: EINVAL });
    }
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

/** temp file (0600) in the same directory → write → fsync → rename → fsync the directory. */
async function writeAtomic(path: string, data: Buffer): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  let fh;
  try {
    fh = await open(tmp, 'wx', 0o600);
    await fh.writeFile(data);
    await fh.sync();
    await fh.close();
    fh = undefined;
    await rename(tmp, path);
  } catch (err) {
    await fh?.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw fsError(err, `cannot write ${path}`);
  }
  try {
    const dir = await open(join(path, '..'), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  } catch {
    // Directory fsync is best effort (not every file system supports it).
  }
}

function fsError(err: unknown, message: string): MuxwireError {
  if (err instanceof MuxwireError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return new MuxwireError('MUXWIRE_ERR_NO_PAIR_RECORD', `${message}: no such record`, { cause: err, detail: ENOENT });
  if (code === 'EACCES' || code === 'EPERM') return new MuxwireError('MUXWIRE_ERR_PAIR_DIR', `${message}: permission denied`, { cause: err, detail: EACCES });
  return new MuxwireError('MUXWIRE_ERR_PAIR_DIR', `${message}: ${(err as Error).message}`, { cause: err, detail: EIO });
}
