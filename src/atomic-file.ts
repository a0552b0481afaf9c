/**
 * Whole-file writes for everything the project keeps on disk (pair records, the simulator's
 * identity and pairings, service units): a reader, or a crash, sees the old content or the new,
 * never part of either.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * Temporary file beside `path` (`<path>.<pid>.<hex>.tmp`, created exclusively with `mode`) →
 * write → fsync → rename → best-effort fsync of the directory. A failed write removes its
 * temporary file; one a crash leaves behind keeps that name, so its owner can find it. Throws the
 * file system's error, for the caller to turn into a coded one.
 */
export async function writeFileAtomic(path: string, data: string | Buffer, mode: number): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  let fh;
  try {
    fh = await open(tmp, 'wx', mode);
    await fh.writeFile(data);
    await fh.sync();
    await fh.close();
    fh = undefined;
    await rename(tmp, path);
  } catch (err) {
    await fh?.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  try {
    const dir = await open(dirname(path), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  } catch {
    // Directory fsync is best effort (not every file system supports it).
  }
}
