/**
 * The host's writer of uploaded files (src/services/backup/upload-writer.ts): files written while
 * the stream goes on arrive whole under their names, nothing partial ever takes a real name, the
 * bytes waiting for the disk stay bounded, and the first disk error stops it with every temporary
 * file removed.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { UploadWriter } from '../../../src/services/backup/upload-writer.js';

async function listAll(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const d of await readdir(root, { withFileTypes: true, recursive: true })) {
    if (d.isFile()) out.push(relative(root, join(d.parentPath, d.name)));
  }
  return out.sort();
}

/** Feeds `data` to `w` as file `path` in chunks of `chunk` bytes. */
async function feed(w: UploadWriter, path: string, data: Buffer, chunk: number, ok = true): Promise<void> {
  await w.begin(path);
  for (let at = 0; at < data.length; at += chunk) await w.data(data.subarray(at, at + chunk));
  w.end(ok);
}

describe('UploadWriter', () => {
  let dir: string;
  let n = 0;
  const fresh = async (): Promise<string> => {
    const d = join(dir, `case-${n++}`);
    await mkdir(d);
    return d;
  };
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'muxwire-upload-writer-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('writes small, empty and large files (written in pieces while they arrive) whole under their names', async () => {
    const d = await fresh();
    const w = new UploadWriter({ flushBytes: 64 * 1024, maxPendingBytes: 256 * 1024 });
    const want = new Map<string, Buffer>();
    for (let i = 0; i < 40; i++) want.set(`ab/small-${i}`, randomBytes((i * 997) % 5000));
    want.set('cd/empty', Buffer.alloc(0));
    want.set('ef/large', randomBytes(3 * 1024 * 1024 + 17));
    for (const [name, data] of want) await feed(w, join(d, name), data, 7919);
    await w.finish();
    assert.deepEqual(await listAll(d), [...want.keys()].sort());
    for (const [name, data] of want) assert.ok((await readFile(join(d, name))).equals(data), name);
    assert.equal(w.pendingBytes, 0);
  });

  test('keeps the bytes waiting for the disk within maxPendingBytes', async () => {
    const d = await fresh();
    const max = 128 * 1024;
    const w = new UploadWriter({ flushBytes: 32 * 1024, maxPendingBytes: max });
    let peak = 0;
    for (let f = 0; f < 4; f++) {
      await w.begin(join(d, `big-${f}`));
      for (let i = 0; i < 64; i++) {
        await w.data(randomBytes(16 * 1024));
        peak = Math.max(peak, w.pendingBytes);
      }
      w.end(true);
    }
    await w.finish();
    assert.ok(peak <= max, `at most ${max} bytes waited (peak ${peak})`);
    assert.equal((await listAll(d)).length, 4);
  });

  test('a file the device ends as failed, or a stream cut inside a file, leaves nothing behind', async () => {
    const d = await fresh();
    const w = new UploadWriter({ flushBytes: 1024 });
    await feed(w, join(d, 'ab/failed-large'), randomBytes(10_000), 1000, false);
    await feed(w, join(d, 'ab/failed-small'), randomBytes(100), 1000, false);
    await feed(w, join(d, 'ab/whole'), Buffer.from('whole'), 1000);
    await w.begin(join(d, 'ab/cut'));
    await w.data(randomBytes(5000));
    await w.finish();
    assert.deepEqual(await listAll(d), ['ab/whole']);
  });

  test('a disk error rejects finish, stops the writer, and removes the temporary files', async () => {
    for (const flushBytes of [1024 * 1024, 1024]) {
      const d = await fresh();
      // A non-empty directory where a file must go: its rename fails.
      await mkdir(join(d, 'ab/taken'), { recursive: true });
      await writeFile(join(d, 'ab/taken/inside'), 'x');
      const w = new UploadWriter({ flushBytes });
      await feed(w, join(d, 'ab/first'), randomBytes(4000), 1000);
      await feed(w, join(d, 'ab/taken'), randomBytes(4000), 1000);
      const after = feed(w, join(d, 'ab/later'), randomBytes(4000), 1000).then(() => w.finish());
      await assert.rejects(after, /EISDIR|ENOTEMPTY|EEXIST/);
      await assert.rejects(w.finish(), /EISDIR|ENOTEMPTY|EEXIST/);
      assert.ok(!(await listAll(d)).some((f) => f.includes('.muxwire-part')), `no temporary file left (flushBytes ${flushBytes})`);
      await assert.rejects(w.begin(join(d, 'ab/next')), /EISDIR|ENOTEMPTY|EEXIST/, 'no file begins after the error');
    }
  });

  test('a folder that cannot be made fails the file at once', async () => {
    const d = await fresh();
    await writeFile(join(d, 'ab'), 'a file where a folder must be');
    const w = new UploadWriter();
    await assert.rejects(w.begin(join(d, 'ab/x')), /ENOTDIR|EEXIST/);
    await w.abort();
  });
});
