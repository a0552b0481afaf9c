/**
 * Manifest.db, the index of a modern (iOS 10+) backup: an SQLite database whose `Files` table has
 * one row per file, directory and link, and whose `file` column is the entry's metadata as a
 * binary plist archived by NSKeyedArchiver (class MBFile). Both the simulated device (which writes
 * it and uploads it) and the host (which reads it for `backup-info` and checks) use this module.
 *
 * ```
 * CREATE TABLE Files (fileID TEXT PRIMARY KEY, domain TEXT, relativePath TEXT, flags INTEGER, file BLOB)
 * CREATE TABLE Properties (key TEXT PRIMARY KEY, value BLOB)
 *   fileID  hex SHA-1 of "<domain>-<relativePath>"; the file's data is <UDID>/<fileID[0..2]>/<fileID>
 *   flags   1 file, 2 directory, 4 symbolic link
 *   file    bplist00 {$archiver: NSKeyedArchiver, $top: {root: UID 1}, $objects: ["$null",
 *             {$class: UID, RelativePath: UID, Size, Mode, LastModified, LastStatusChange, Birth,
 *              InodeNumber, UserID, GroupID, ProtectionClass, Flags, [Digest: UID]}, "<path>", …,
 *             {$classname: "MBFile", $classes: ["MBFile", "NSObject"]}]}
 * ```
 *
 * SQLite comes from better-sqlite3 (README "Dependencies"): a synchronous API over the real
 * SQLite library, built from source by node-gyp when no prebuilt binary can be fetched. It is an
 * optional dependency (installing muxwire never fails for want of a compiler), loaded here on first
 * use; without it, reading or writing a Manifest.db is MUXWIRE_ERR_SQLITE_UNAVAILABLE.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import type Database from 'better-sqlite3';
import { MuxwireError } from '../../errors.js';
import { PlistUID, decodeBinaryPlist, encodeBinaryPlist, isPlistDict } from '../../protocol/plist.js';
import type { PlistDict, PlistValue } from '../../protocol/plist.js';

let sqlite: typeof Database | undefined;

/** Opens a database with better-sqlite3, loaded on first use. */
function openDatabase(path: string, options?: Database.Options): Database.Database {
  if (!sqlite) {
    try {
      sqlite = createRequire(import.meta.url)('better-sqlite3') as typeof Database;
    } catch (err) {
      throw new MuxwireError(
        'MUXWIRE_ERR_SQLITE_UNAVAILABLE',
        `backups need SQLite, and better-sqlite3 is not installed (it builds from source where no prebuilt binary can be fetched: install a C++ compiler and run npm install again): ${(err as Error).message.split('\n')[0]}`,
        { cause: err },
      );
    }
  }
  return new sqlite(path, options);
}

/** Entry kinds as the `flags` column writes them. */
export const MANIFEST_FLAG_FILE = 1;
export const MANIFEST_FLAG_DIRECTORY = 2;
export const MANIFEST_FLAG_SYMLINK = 4;

/** One row of the Files table, with its MBFile decoded. */
export interface ManifestEntry {
  fileID: string;
  domain: string;
  relativePath: string;
  flags: number;
  /** Bytes (0 for directories). */
  size: number;
  /** st_mode, type bits included. */
  mode: number;
  /** Seconds since 1970. */
  lastModified: number;
  lastStatusChange: number;
  birth: number;
  inode: number;
  userId: number;
  groupId: number;
  protectionClass: number;
  /** SHA-1 of the content, when the writer recorded it. */
  digest?: Buffer;
}

/** The name a backup gives an entry's data: hex SHA-1 of `<domain>-<relativePath>`. */
export function backupFileId(domain: string, relativePath: string): string {
  return createHash('sha1').update(`${domain}-${relativePath}`, 'utf8').digest('hex');
}

/** `<fileID[0..2]>/<fileID>`, the data's path inside `<dir>/<UDID>/`. */
export function backupFilePath(fileID: string): string {
  return `${fileID.slice(0, 2)}/${fileID}`;
}

const MBFILE_CLASS: PlistDict = { $classname: 'MBFile', $classes: ['MBFile', 'NSObject'] };

/** The MBFile archive of an entry (the `file` column). */
export function encodeMBFile(e: ManifestEntry): Buffer {
  const objects: PlistValue[] = ['$null'];
  const root: PlistDict = {};
  objects.push(root);
  objects.push(e.relativePath);
  const fields: PlistDict = {
    RelativePath: new PlistUID(2),
    Size: e.size,
    Mode: e.mode,
    LastModified: e.lastModified,
    LastStatusChange: e.lastStatusChange,
    Birth: e.birth,
    InodeNumber: e.inode,
    UserID: e.userId,
    GroupID: e.groupId,
    ProtectionClass: e.protectionClass,
    Flags: 0,
  };
  if (e.digest) {
    fields.Digest = new PlistUID(objects.length);
    objects.push(e.digest);
  }
  Object.assign(root, { $class: new PlistUID(objects.length) }, fields);
  objects.push(MBFILE_CLASS);
  return encodeBinaryPlist({ $version: 100000, $archiver: 'NSKeyedArchiver', $top: { root: new PlistUID(1) }, $objects: objects });
}

function num(v: PlistValue | undefined): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  return 0;
}

/** Reads an MBFile archive back into the metadata fields of an entry. */
export function decodeMBFile(blob: Buffer): Omit<ManifestEntry, 'fileID' | 'domain' | 'flags'> {
  const top = decodeBinaryPlist(blob);
  const bad = (): MuxwireError => new MuxwireError('MUXWIRE_ERR_BAD_PLIST', 'Manifest.db: a file column that is not an MBFile archive');
  if (!isPlistDict(top) || !Array.isArray(top.$objects) || !isPlistDict(top.$top)) throw bad();
  const objects = top.$objects;
  const deref = (v: PlistValue | undefined): PlistValue | undefined => (v instanceof PlistUID ? objects[v.value] : v);
  const root = deref(top.$top.root);
  if (!isPlistDict(root)) throw bad();
  const path = deref(root.RelativePath);
  const digest = deref(root.Digest);
  return {
    relativePath: typeof path === 'string' ? path : '',
    size: num(root.Size),
    mode: num(root.Mode),
    lastModified: num(root.LastModified),
    lastStatusChange: num(root.LastStatusChange),
    birth: num(root.Birth),
    inode: num(root.InodeNumber),
    userId: num(root.UserID),
    groupId: num(root.GroupID),
    protectionClass: num(root.ProtectionClass),
    ...(Buffer.isBuffer(digest) ? { digest } : {}),
  };
}

/** Writes a new Manifest.db at `path` (which must not exist) with `entries`, in one transaction. */
export function writeManifestDb(path: string, entries: Iterable<ManifestEntry>): void {
  const db = openDatabase(path);
  try {
    db.pragma('journal_mode = DELETE');
    db.exec(`
      CREATE TABLE Files (fileID TEXT PRIMARY KEY, domain TEXT, relativePath TEXT, flags INTEGER, file BLOB);
      CREATE INDEX FilesDomainIdx ON Files(domain);
      CREATE INDEX FilesRelativePathIdx ON Files(relativePath);
      CREATE INDEX FilesFlagsIdx ON Files(flags);
      CREATE TABLE Properties (key TEXT PRIMARY KEY, value BLOB);
    `);
    const insert = db.prepare('INSERT INTO Files (fileID, domain, relativePath, flags, file) VALUES (?, ?, ?, ?, ?)');
    db.transaction(() => {
      for (const e of entries) insert.run(e.fileID, e.domain, e.relativePath, e.flags, encodeMBFile(e));
    })();
  } finally {
    db.close();
  }
}

/**
 * Reads every row of a Manifest.db. A file that is not an SQLite database with a Files table is
 * MUXWIRE_ERR_BAD_MANIFEST.
 */
export function readManifestDb(path: string): ManifestEntry[] {
  let db: Database.Database;
  try {
    db = openDatabase(path, { readonly: true, fileMustExist: true });
  } catch (err) {
    if (err instanceof MuxwireError) throw err;
    throw new MuxwireError('MUXWIRE_ERR_BAD_MANIFEST', `cannot open ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const rows = db.prepare('SELECT fileID, domain, relativePath, flags, file FROM Files ORDER BY domain, relativePath').all() as {
      fileID: unknown;
      domain: unknown;
      relativePath: unknown;
      flags: unknown;
      file: unknown;
    }[];
    return rows.map((r) => {
      if (typeof r.fileID !== 'string' || typeof r.domain !== 'string' || typeof r.relativePath !== 'string' || typeof r.flags !== 'number') {
        throw new MuxwireError('MUXWIRE_ERR_BAD_MANIFEST', `${path}: a Files row of the wrong types`);
      }
      const meta = Buffer.isBuffer(r.file) ? decodeMBFile(r.file) : undefined;
      return {
        size: 0, mode: 0, lastModified: 0, lastStatusChange: 0, birth: 0, inode: 0, userId: 0, groupId: 0, protectionClass: 0,
        ...meta,
        fileID: r.fileID,
        domain: r.domain,
        relativePath: r.relativePath,
        flags: r.flags,
      };
    });
  } catch (err) {
    if (err instanceof MuxwireError) throw err;
    throw new MuxwireError('MUXWIRE_ERR_BAD_MANIFEST', `${path}: ${(err as Error).message}`, { cause: err });
  } finally {
    db.close();
  }
}
