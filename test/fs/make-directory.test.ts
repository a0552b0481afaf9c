/**
 * makeDirectory (src/make-directory.ts): creates missing parents, accepts an existing directory,
 * and settles with an error where Node's recursive mkdir never settles (a path under /proc).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeDirectory } from '../../src/make-directory.js';

let dir: string;
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('creates a directory and its missing parents with the mode asked; an existing one is fine', async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-mkdir-'));
  const deep = join(dir, 'a', 'b', 'c');
  await makeDirectory(deep, 0o700);
  assert.ok((await stat(deep)).isDirectory());
  assert.equal((await stat(join(dir, 'a'))).mode & 0o777, 0o700 & ~process.umask());
  await makeDirectory(deep, 0o700);
});

test('a file in the way is an error, as mkdir -p says', async () => {
  const file = join(dir, 'file');
  await writeFile(file, 'x');
  await assert.rejects(makeDirectory(file), (err: NodeJS.ErrnoException) => err.code === 'EEXIST');
  await assert.rejects(makeDirectory(join(file, 'below')), (err: NodeJS.ErrnoException) => err.code === 'ENOTDIR');
});

test('a path under /proc fails with ENOENT instead of never settling', { timeout: 10_000 }, async () => {
  await assert.rejects(makeDirectory('/proc/muxwire-no-such-dir/x'), (err: NodeJS.ErrnoException) => err.code === 'ENOENT' && err.syscall === 'mkdir');
});
