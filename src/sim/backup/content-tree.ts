/**
 * The simulated device's backed-up content: a host directory laid out as `<root>/<Domain>/<relative
 * path>` (e.g. `HomeDomain/Library/Notes/notes.sqlite`). Backups read it, restores write it.
 *
 * Names from a backup are untrusted (a restore takes them from a Manifest.db the host sent), so
 * every domain and relative path goes through {@link contentPath}, which refuses anything that
 * could leave the root. Names beginning with `.muxwire-` are the service's own staging folders and
 * never content.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, mkdir, opendir, writeFile } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import { join } from 'node:path';
import { MuxwireError } from '../../errors.js';
import { MANIFEST_FLAG_DIRECTORY, MANIFEST_FLAG_FILE } from '../../services/backup/manifest-db.js';

/** Prefix of the service's own folders inside the root (staging of a restore). */
export const STAGING_PREFIX = '.muxwire-';

/** Entries of one folder whose lstat runs at once while walking. */
const LSTAT_BATCH = 64;

/** One file or directory of the content tree. */
export interface ContentEntry {
  domain: string;
  /** '/'-separated, relative to the domain folder ('' never: domain folders themselves are not entries). */
  relativePath: string;
  flags: typeof MANIFEST_FLAG_FILE | typeof MANIFEST_FLAG_DIRECTORY;
  path: string;
  stat: BigIntStats;
}

function badName(what: string): MuxwireError {
  return new MuxwireError('MUXWIRE_ERR_BAD_MANIFEST', `unsafe name in backup: ${what}`);
}

/** True for a single path segment that names something inside its folder. */
function safeSegment(s: string): boolean {
  return s.length > 0 && s.length <= 255 && s !== '.' && s !== '..' && !s.includes('/') && !s.includes('\\') && !s.includes('\0');
}

/**
 * The host path of `<domain>/<relativePath>` under `root`; MUXWIRE_ERR_BAD_MANIFEST for a domain or
 * path that is empty where it must not be, absolute, or has `.`, `..`, NUL or backslashes in it.
 */
export function contentPath(root: string, domain: string, relativePath: string): string {
  if (!safeSegment(domain) || domain.startsWith(STAGING_PREFIX)) throw badName(`domain ${JSON.stringify(domain)}`);
  if (relativePath === '') return join(root, domain);
  const parts = relativePath.split('/');
  if (!parts.every(safeSegment)) throw badName(`path ${JSON.stringify(relativePath)}`);
  return join(root, domain, ...parts);
}

/**
 * Every regular file and directory under `root`, domain by domain, in a stable order. Symbolic links
 * and other kinds are left out (a link is never followed out of the root).
 */
export async function walkContent(root: string): Promise<ContentEntry[]> {
  const out: ContentEntry[] = [];
  const walk = async (domain: string, dir: string, rel: string): Promise<void> => {
    const names: string[] = [];
    for await (const d of await opendir(dir)) names.push(d.name);
    names.sort();
    const wanted = rel === '' ? names.filter((n) => !n.startsWith(STAGING_PREFIX)) : names;
    // A folder's entries are looked at LSTAT_BATCH at a time: one trip to the thread pool each,
    // overlapped rather than one after the other.
    const stats: BigIntStats[] = [];
    for (let i = 0; i < wanted.length; i += LSTAT_BATCH) {
      stats.push(...(await Promise.all(wanted.slice(i, i + LSTAT_BATCH).map((n) => lstat(join(dir, n), { bigint: true })))));
    }
    for (const [k, name] of wanted.entries()) {
      const path = join(dir, name);
      const stat = stats[k]!;
      const relativePath = rel === '' ? name : `${rel}/${name}`;
      if (stat.isDirectory()) {
        out.push({ domain, relativePath, flags: MANIFEST_FLAG_DIRECTORY, path, stat });
        await walk(domain, path, relativePath);
      } else if (stat.isFile()) {
        out.push({ domain, relativePath, flags: MANIFEST_FLAG_FILE, path, stat });
      }
    }
  };
  const domains: string[] = [];
  for await (const d of await opendir(root)) {
    if (d.isDirectory() && safeSegment(d.name) && !d.name.startsWith(STAGING_PREFIX)) domains.push(d.name);
  }
  domains.sort();
  for (const domain of domains) await walk(domain, join(root, domain), '');
  return out;
}

/**
 * SHA-1 digests of content files, remembered per path while the file's size, modification and
 * change times (nanoseconds) and inode stay the same, so an incremental backup reads only what
 * changed since the digest was taken.
 */
export class DigestCache {
  readonly #byPath = new Map<string, { key: string; digest: Buffer }>();

  static keyOf(stat: BigIntStats): string {
    return `${stat.ino}:${stat.size}:${stat.mtimeNs}:${stat.ctimeNs}`;
  }

  /** The digest of `path` as of `stat`, reading the file only when it is not known. */
  async digest(path: string, stat: BigIntStats): Promise<Buffer> {
    const key = DigestCache.keyOf(stat);
    const known = this.#byPath.get(path);
    if (known?.key === key) return known.digest;
    const hash = createHash('sha1');
    for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer);
    const digest = hash.digest();
    this.remember(path, stat, digest);
    return digest;
  }

  /** Records a digest taken while the file was read for another purpose (an upload). */
  remember(path: string, stat: BigIntStats, digest: Buffer): void {
    this.#byPath.set(path, { key: DigestCache.keyOf(stat), digest });
  }
}

/**
 * The simulator's built-in content, written into `root` when no `--backup-root` is given, so a
 * backup always has something in it: preferences, a notes database, a photo, an empty file.
 */
export async function writeBuiltinContent(root: string): Promise<void> {
  const files: [string, string | Buffer][] = [
    ['HomeDomain/Library/Preferences/com.apple.springboard.plist', '<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0"><dict><key>SBShowBatteryPercentage</key><true/></dict></plist>\n'],
    ['HomeDomain/Library/Notes/notes.sqlite', Buffer.concat([Buffer.from('SQLite format 3\0'), Buffer.alloc(4080, 0x20)])],
    ['HomeDomain/Library/SMS/sms.db-wal', Buffer.alloc(0)],
    ['MediaDomain/Media/DCIM/100APPLE/IMG_0001.JPG', Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), createHash('sha512').update('IMG_0001').digest(), Buffer.from([0xff, 0xd9])])],
    ['AppDomain-com.example.notes/Documents/todo.txt', 'buy milk\ncall the simulator\n'],
  ];
  for (const [rel, data] of files) {
    const path = join(root, ...rel.split('/'));
    await mkdir(join(path, '..'), { recursive: true });
    await writeFile(path, data);
  }
}
