/**
 * `mkdir -p` that always settles. Node 20's recursive mkdir never settles (nor returns, in the
 * sync form) when mkdir(2) of a missing child says ENOENT although its parent exists, as it does
 * under /proc and /sys: `muxwire daemon --pair-dir /proc/x` hung at start, printing nothing. Every
 * directory the project creates from a path a user gives goes through this one.
 */
import { mkdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';

/** Creates `dir` and any missing parents (each with `mode`); an existing directory is fine. */
export async function makeDirectory(dir: string, mode?: number): Promise<void> {
  const made = await makeOne(dir, mode);
  if (made !== 'parent missing') return;
  const parent = dirname(dir);
  if (parent === dir) throw Object.assign(new Error(`ENOENT: no such file or directory, mkdir '${dir}'`), { code: 'ENOENT', syscall: 'mkdir', path: dir });
  await makeDirectory(parent, mode);
  // The parent exists now: a second ENOENT is the file system's answer, not a missing parent.
  if ((await makeOne(dir, mode)) === 'parent missing') {
    throw Object.assign(new Error(`ENOENT: no such file or directory, mkdir '${dir}'`), { code: 'ENOENT', syscall: 'mkdir', path: dir });
  }
}

/** One mkdir(2): done (made, or a directory was there), or its parent is missing. */
async function makeOne(dir: string, mode: number | undefined): Promise<'done' | 'parent missing'> {
  try {
    await mkdir(dir, mode === undefined ? {} : { mode });
    return 'done';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'parent missing';
    if (code === 'EEXIST' && (await stat(dir).catch(() => undefined))?.isDirectory()) return 'done';
    throw err;
  }
}
