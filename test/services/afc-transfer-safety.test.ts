/**
 * pullFile / pushFile never damage what is already there: a failed or cancelled copy leaves an
 * existing file (host or device) byte for byte as it was and no partial file under the
 * destination's name; a directory as the destination receives `<dir>/<basename>`, as with `cp`;
 * host file-system failures are coded MUXWIRE_ERR_IO.
 */
import { test, describe, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { AfcStatus } from '../../src/protocol/afc.js';
import { AfcClient } from '../../src/services/afc/index.js';
import { startAfcServer } from './afc-harness.js';
import type { AfcServerFixture } from './afc-harness.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const PART = /^\..+\.muxwire-[0-9a-f]{8}\.part$/;
const linuxOnly = { skip: process.platform !== 'linux' ? 'needs Linux (/dev/full, /proc/self/mem)' : false };

let fx: AfcServerFixture;
let afc: AfcClient;
/** A host directory of its own per test, beside the AFC root. */
let host: string;

beforeEach(async () => {
  fx = await startAfcServer();
  afc = new AfcClient(fx.sockets.client);
  host = join(fx.sandbox.base, 'host');
  await mkdir(host);
});
afterEach(() => fx.close());

/** The error `promise` rejects with (it must reject), for checking after the files. */
async function failure(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => assert.fail('expected a failure'),
    (err: unknown) => err,
  );
}

/** assert.rejects' object matching, for an error already caught. */
function assertError(err: unknown, expected: { code: string; detail: unknown; message: string | RegExp }): void {
  const e = err as { code?: unknown; detail?: unknown; message?: string };
  assert.equal(e.code, expected.code, String(err));
  assert.equal(e.detail, expected.detail, String(err));
  if (typeof expected.message === 'string') assert.equal(e.message, expected.message);
  else assert.match(e.message ?? '', expected.message);
}

/** Cuts the device connection from the device's side, as an unplugged cable would. */
function cutConnection(): void {
  fx.sockets.server.destroy();
}

/** A progress callback that cuts the connection once `bytes` have moved; `done` says it did. */
function cutAfter(bytes: number): { onProgress: (p: { bytes: number }) => void; done: () => boolean } {
  let cut = false;
  return {
    onProgress: (p) => {
      if (!cut && p.bytes >= bytes) {
        cut = true;
        cutConnection();
      }
    },
    done: () => cut,
  };
}

describe('pullFile keeps what is on the host', () => {
  test('pulling a device directory fails before touching the host: an existing file stays byte-identical, no file is created', async () => {
    await mkdir(join(fx.sandbox.root, 'z'));
    const keep = join(host, 'keep.txt');
    await writeFile(keep, 'important\n');
    const overKeep = await failure(afc.pullFile('/z', keep));
    const overNew = await failure(afc.pullFile('/z', join(host, 'newfile')));
    // What the audit found first (keep.txt emptied, an empty newfile), then the error.
    assert.equal(await readFile(keep, 'utf8'), 'important\n');
    assert.deepEqual(await readdir(host), ['keep.txt']);
    for (const err of [overKeep, overNew]) assertError(err, { code: 'MUXWIRE_ERR_AFC', detail: AfcStatus.OBJECT_IS_DIR, message: /is a directory/ });
  });

  test('a pull cut off mid-transfer leaves the old local file intact and no part file', async () => {
    await writeFile(join(fx.sandbox.root, 'big.bin'), randomBytes(4 * MiB));
    const dest = join(host, 'dest.bin');
    const old = randomBytes(100 * KiB);
    await writeFile(dest, old);
    const cut = cutAfter(512 * KiB);
    const pulling = afc.pullFile('/big.bin', dest, { chunkSize: 64 * KiB, onProgress: cut.onProgress });
    await assert.rejects(pulling, { code: /^MUXWIRE_ERR_(CLOSED|CONN_RESET)$/ });
    assert.ok(cut.done(), 'the connection was cut during the transfer');
    assert.ok((await readFile(dest)).equals(old), 'the old file is byte-identical');
    assert.deepEqual(await readdir(host), ['dest.bin'], 'no part file is left');
  });

  test('while a pull runs the destination keeps its old content; the data goes to a 0600 part file beside it', async () => {
    const data = randomBytes(2 * MiB);
    await writeFile(join(fx.sandbox.root, 'f.bin'), data);
    const dest = join(host, 'dest.bin');
    await writeFile(dest, 'old');
    // onProgress runs synchronously after each chunk, so a synchronous look sees the pull mid-way.
    let seen: { dest: string; parts: string[]; mode: number } | undefined;
    const result = await afc.pullFile('/f.bin', dest, {
      chunkSize: 256 * KiB,
      onProgress: () => {
        if (seen) return;
        const parts = readdirSync(host).filter((n) => PART.test(n));
        seen = { dest: readFileSync(dest, 'utf8'), parts, mode: parts[0] !== undefined ? statSync(join(host, parts[0])).mode & 0o777 : -1 };
      },
    });
    assert.ok(seen);
    assert.equal(seen.dest, 'old', 'the destination is untouched during the pull');
    assert.equal(seen.parts.length, 1);
    assert.match(seen.parts[0]!, /^\.dest\.bin\.muxwire-[0-9a-f]{8}\.part$/);
    assert.equal(seen.mode, 0o600, 'the part file is private until complete');
    assert.deepEqual(result, { bytes: data.length, path: dest });
    assert.ok((await readFile(dest)).equals(data));
    assert.deepEqual(await readdir(host), ['dest.bin'], 'the part file became the destination');
  });

  test('a pull into an existing directory writes <dir>/<remote basename> with the mode a new file gets', async () => {
    await mkdir(join(fx.sandbox.root, 'photos'));
    await writeFile(join(fx.sandbox.root, 'photos', 'a.jpg'), 'jpeg');
    const result = await afc.pullFile('/photos/a.jpg', host);
    assert.deepEqual(result, { bytes: 4, path: join(host, 'a.jpg') });
    assert.equal(await readFile(join(host, 'a.jpg'), 'utf8'), 'jpeg');
    const umask = process.umask(); // read once here, in a test process that creates nothing meanwhile
    assert.equal((await stat(join(host, 'a.jpg'))).mode & 0o777, 0o666 & ~umask);
    // A directory of that name inside is not replaced.
    await mkdir(join(host, 'sub', 'a.jpg'), { recursive: true });
    await assert.rejects(afc.pullFile('/photos/a.jpg', join(host, 'sub')), { code: 'MUXWIRE_ERR_IO', detail: 'EISDIR' });
    assert.deepEqual(await readdir(join(host, 'sub', 'a.jpg')), []);
  });

  test('host file-system failures are MUXWIRE_ERR_IO naming the path, and leave nothing behind', linuxOnly, async () => {
    await writeFile(join(fx.sandbox.root, 'f'), randomBytes(64 * KiB));
    const missing = join(host, 'nodir', 'x');
    await assert.rejects(afc.pullFile('/f', missing), {
      code: 'MUXWIRE_ERR_IO',
      detail: 'ENOENT',
      message: `cannot write ${missing}: no such file or directory (ENOENT)`,
    });
    await assert.rejects(afc.pullFile('/f', '/dev/full'), { code: 'MUXWIRE_ERR_IO', detail: 'ENOSPC', message: /^cannot write \/dev\/full: no space left on device/ });
    assert.ok((await stat('/dev/full')).isCharacterDevice(), '/dev/full is written into, not replaced');
    assert.deepEqual(await readdir(host), []);
    // The connection is still usable afterwards (the device handles were closed).
    assert.equal((await afc.pullFile('/f', join(host, 'ok'))).bytes, 64 * KiB);
    assert.equal(fx.session.openFiles, 0);
  });

  test('an aborted pull rejects with MUXWIRE_ERR_ABORTED, removes its part file and keeps the old file', async () => {
    await writeFile(join(fx.sandbox.root, 'big.bin'), randomBytes(4 * MiB));
    const dest = join(host, 'dest.bin');
    await writeFile(dest, 'old');
    const ac = new AbortController();
    const pulling = afc.pullFile('/big.bin', dest, { chunkSize: 64 * KiB, signal: ac.signal, onProgress: () => ac.abort() });
    await assert.rejects(pulling, { code: 'MUXWIRE_ERR_ABORTED', message: 'pull of /big.bin was aborted' });
    assert.equal(await readFile(dest, 'utf8'), 'old');
    assert.deepEqual(await readdir(host), ['dest.bin']);
  });
});

describe('pushFile keeps what is on the device', () => {
  test('pushing a local directory or a missing file is a coded error and creates nothing on the device', async () => {
    const dir = join(host, 'adir');
    await mkdir(dir);
    const missing = join(host, 'nonexistent');
    const ofDir = await failure(afc.pushFile(dir, '/x'));
    const ofMissing = await failure(afc.pushFile(missing, '/y'));
    assert.deepEqual(await readdir(fx.sandbox.root), [], 'nothing was created on the device');
    assertError(ofDir, { code: 'MUXWIRE_ERR_IO', detail: 'EISDIR', message: `cannot read ${dir}: is a directory (EISDIR)` });
    assertError(ofMissing, { code: 'MUXWIRE_ERR_IO', detail: 'ENOENT', message: `cannot read ${missing}: no such file or directory (ENOENT)` });
  });

  test('a push whose local read fails leaves an existing device file as it was, and creates no new one', linuxOnly, async () => {
    // /proc/self/mem opens, then every read at offset 0 fails with EIO: a local read error after
    // the device file was opened, on a connection that stays up.
    await writeFile(join(fx.sandbox.root, 'keep'), 'remote-old');
    const overKeep = await failure(afc.pushFile('/proc/self/mem', '/keep'));
    const asNew = await failure(afc.pushFile('/proc/self/mem', '/new'));
    assert.equal(await readFile(join(fx.sandbox.root, 'keep'), 'utf8'), 'remote-old');
    assert.deepEqual(await readdir(fx.sandbox.root), ['keep'], 'the part files were removed; /new was never created');
    assert.equal(fx.session.openFiles, 0);
    for (const err of [overKeep, asNew]) assertError(err, { code: 'MUXWIRE_ERR_IO', detail: 'EIO', message: /^cannot read \/proc\/self\/mem: .* \(EIO\)$/ });
  });

  test('a push cut off mid-transfer leaves no file under the destination name, only a part file', async () => {
    const local = join(host, 'big.bin');
    await writeFile(local, randomBytes(4 * MiB));
    const cut = cutAfter(512 * KiB);
    const pushing = afc.pushFile(local, '/big.bin', { chunkSize: 64 * KiB, onProgress: cut.onProgress });
    await assert.rejects(pushing, { code: /^MUXWIRE_ERR_(CLOSED|CONN_RESET)$/ });
    await fx.session.finished;
    const left = await readdir(fx.sandbox.root);
    assert.equal(left.length, 1, `left: ${left.join(', ')}`);
    assert.match(left[0]!, /^\.big\.bin\.muxwire-[0-9a-f]{8}\.part$/, 'only a part file, named as one, is left');
  });

  test('a push into an existing device directory writes <dir>/<local basename>; a failed open names the destination', async () => {
    await mkdir(join(fx.sandbox.root, 'Downloads'));
    const local = join(host, 'up.txt');
    await writeFile(local, 'hello');
    assert.deepEqual(await afc.pushFile(local, '/Downloads'), { bytes: 5, path: '/Downloads/up.txt' });
    assert.equal(await readFile(join(fx.sandbox.root, 'Downloads', 'up.txt'), 'utf8'), 'hello');
    assert.deepEqual(await readdir(join(fx.sandbox.root, 'Downloads')), ['up.txt']);
    await assert.rejects(afc.pushFile(local, '/no/such/dir/l.bin'), {
      detail: AfcStatus.OBJECT_NOT_FOUND,
      message: 'AFC FILE_OPEN /no/such/dir/l.bin: OBJECT_NOT_FOUND (8)',
    });
  });
});

test('a destination name near NAME_MAX still goes through a part file, its name cut at a whole character', async () => {
  // 245 bytes of UTF-8: fine as a name, too long once decorated as a part name. The odd 'a' puts
  // the cut inside a two-byte 'é' unless it is made by characters.
  const name = 'a' + 'é'.repeat(120) + '.mov';
  const data = randomBytes(512 * KiB);
  await writeFile(join(fx.sandbox.root, 'clip.mov'), data);
  let part: string | undefined;
  await afc.pullFile('/clip.mov', join(host, name), { chunkSize: 64 * KiB, onProgress: () => (part ??= readdirSync(host).find((n) => PART.test(n))) });
  assert.ok(part, 'a part file was written');
  assert.ok(Buffer.byteLength(part) <= 255, `${Buffer.byteLength(part)} bytes`);
  assert.ok(part.startsWith('.a' + 'é'.repeat(99) + '.muxwire-'), part);
  assert.ok((await readFile(join(host, name))).equals(data));
  assert.deepEqual(await readdir(host), [name]);
});
