/**
 * The AFC client against the simulated device's AFC server over a UNIX socket pair: every operation,
 * the error shape, pipelining of concurrent calls, timeouts and a connection that goes away.
 */
import { test, describe, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { lstat, mkdir, readFile, readlink, stat, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Duplex, PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { MuxwireError } from '../../src/errors.js';
import { AfcOp, AfcStatus } from '../../src/protocol/afc.js';
import { AfcClient } from '../../src/services/afc/index.js';
import { serveAfc } from '../../src/sim/afc-server.js';
import { socketPair, startAfcServer } from './afc-harness.js';
import type { AfcServerFixture } from './afc-harness.js';

let fx: AfcServerFixture;
let afc: AfcClient;

async function start(opts: Parameters<typeof startAfcServer>[0] = {}): Promise<void> {
  fx = await startAfcServer({ deviceModel: 'iPhone12,8', ...opts });
  afc = new AfcClient(fx.sockets.client);
}

beforeEach(() => start());
afterEach(() => fx.close());

/** Asserts `promise` rejects with an AFC status error carrying `status`, named in the message. */
async function rejectsWithStatus(promise: Promise<unknown>, status: AfcStatus): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof MuxwireError, String(err));
    assert.equal(err.code, 'MUXWIRE_ERR_AFC');
    assert.equal(err.detail, status);
    assert.match(err.message, new RegExp(`${AfcStatus[status]} \\(${status}\\)`));
    return true;
  });
}

describe('directories', () => {
  test('lists a directory without . and ..', async () => {
    await mkdir(join(fx.sandbox.root, 'DCIM/100APPLE'), { recursive: true });
    await writeFile(join(fx.sandbox.root, 'DCIM/100APPLE/IMG_0001.JPG'), 'jpeg');
    assert.deepEqual(await afc.list('/DCIM'), ['100APPLE']);
    assert.deepEqual(await afc.list('/DCIM/100APPLE'), ['IMG_0001.JPG']);
  });

  test('stats files, directories and symlinks', async () => {
    await writeFile(join(fx.sandbox.root, 'f'), 'x'.repeat(1234));
    await afc.mkdir('/d');
    await afc.link('f', '/ln');
    const f = await afc.stat('/f');
    assert.equal(f.type, 'file');
    assert.equal(f.size, 1234);
    assert.equal(f.nlink, 1);
    const st = await stat(join(fx.sandbox.root, 'f'), { bigint: true });
    assert.equal(f.mtimeNs, st.mtimeNs);
    assert.equal(f.mtime.getTime(), Number(st.mtimeNs / 1_000_000n));
    assert.equal((await afc.stat('/d')).type, 'directory');
    const ln = await afc.stat('/ln');
    assert.equal(ln.type, 'symlink');
    assert.equal(ln.linkTarget, 'f');
  });

  test('reads the device information', async () => {
    const info = await afc.deviceInfo();
    assert.equal(info.model, 'iPhone12,8');
    assert.equal(info.blockSize, 4096);
    assert.ok(info.totalBytes > 0);
    assert.ok(info.freeBytes <= info.totalBytes);
  });

  test('makes nested directories, renames and removes', async () => {
    await afc.mkdir('/a/b/c');
    await afc.mkdir('/a/b/c');
    await writeFile(join(fx.sandbox.root, 'a/b/c/file'), 'data');
    await afc.rename('/a/b/c/file', '/a/moved');
    assert.equal(await readFile(join(fx.sandbox.root, 'a/moved'), 'utf8'), 'data');
    await afc.rm('/a/moved');
    await assert.rejects(lstat(join(fx.sandbox.root, 'a/moved')), { code: 'ENOENT' });
  });

  test('reports a non-empty directory as UNKNOWN_ERROR (1) and removes it recursively', async () => {
    await afc.mkdir('/tree/x/y');
    await writeFile(join(fx.sandbox.root, 'tree/x/y/f'), '1');
    await rejectsWithStatus(afc.rm('/tree'), AfcStatus.UNKNOWN_ERROR);
    await afc.rm('/tree', { recursive: true });
    assert.deepEqual(await afc.list('/'), []);
  });

  test('removes recursively by walking on a device without REMOVE_PATH_AND_CONTENTS', async () => {
    await fx.close();
    await start({ disabledOps: [AfcOp.REMOVE_PATH_AND_CONTENTS] });
    await afc.mkdir('/old/a/b');
    await afc.mkdir('/old/c');
    await writeFile(join(fx.sandbox.root, 'old/a/b/f'), '1');
    await writeFile(join(fx.sandbox.root, 'old/top'), '2');
    await afc.link('/etc', '/old/c/outside-link');
    await afc.rm('/old/', { recursive: true });
    assert.deepEqual(await afc.list('/'), []);
  });

  test('makes hard links, truncates by path and sets modification times', async () => {
    await writeFile(join(fx.sandbox.root, 'f'), '0123456789');
    await afc.link('/f', '/hard', { symbolic: false });
    assert.equal((await afc.stat('/f')).nlink, 2);
    await afc.truncate('/f', 3);
    assert.equal(await readFile(join(fx.sandbox.root, 'hard'), 'utf8'), '012');
    const when = new Date('2020-02-02T02:02:02.000Z');
    await afc.setModTime('/f', when);
    assert.equal((await afc.stat('/f')).mtime.getTime(), when.getTime());
    await afc.link('../../outside', '/sym');
    assert.equal(await readlink(join(fx.sandbox.root, 'sym')), '../../outside');
  });
});

describe('files', () => {
  test('opens, writes, seeks, tells, reads and closes', async () => {
    const h = await afc.open('/notes.txt', 'w+');
    assert.ok(h > 0);
    await afc.write(h, Buffer.from('hello, device'));
    assert.equal(await afc.tell(h), 13);
    await afc.seek(h, 7);
    assert.deepEqual(await afc.read(h, 100), Buffer.from('device'));
    assert.equal((await afc.read(h, 100)).length, 0, 'EOF is an empty buffer');
    await afc.seek(h, -6, 'end');
    await afc.seek(h, 2, 'cur');
    assert.deepEqual(await afc.read(h, 2), Buffer.from('vi'));
    await afc.setSize(h, 5);
    await afc.close(h);
    assert.equal(await readFile(join(fx.sandbox.root, 'notes.txt'), 'utf8'), 'hello');
  });

  test('appends in mode a and reads everything in mode r', async () => {
    await writeFile(join(fx.sandbox.root, 'log'), 'one\n');
    const a = await afc.open('/log', 'a');
    await afc.write(a, Buffer.from('two\n'));
    await afc.close(a);
    const r = await afc.open('/log', 'r');
    assert.equal((await afc.read(r, 1024)).toString(), 'one\ntwo\n');
    await rejectsWithStatus(afc.write(r, Buffer.from('no')), AfcStatus.INVALID_ARG);
    await afc.close(r);
  });

  test('locks and reports contention as OP_WOULD_BLOCK', async () => {
    await writeFile(join(fx.sandbox.root, 'l'), '');
    const a = await afc.open('/l', 'r');
    const b = await afc.open('/l', 'r');
    await afc.lock(a, 'exclusive');
    await rejectsWithStatus(afc.lock(b, 'shared'), AfcStatus.OP_WOULD_BLOCK);
    await afc.lock(a, 'unlock');
    await afc.lock(b, 'shared');
  });

  test('fails with the status name and code in the error', async () => {
    await rejectsWithStatus(afc.open('/missing', 'r'), AfcStatus.OBJECT_NOT_FOUND);
    await rejectsWithStatus(afc.stat('/missing'), AfcStatus.OBJECT_NOT_FOUND);
    await rejectsWithStatus(afc.list('/missing'), AfcStatus.OBJECT_NOT_FOUND);
    await rejectsWithStatus(afc.close(99), AfcStatus.INVALID_ARG);
    await assert.rejects(afc.open('/x', 'q' as 'r'), { code: 'MUXWIRE_ERR_AFC' });
  });
});

describe('connection', () => {
  test('pipelines concurrent calls on one connection', async () => {
    for (let i = 0; i < 50; i++) await writeFile(join(fx.sandbox.root, `f${i}`), String(i));
    const infos = await Promise.all(Array.from({ length: 50 }, (_, i) => afc.stat(`/f${i}`)));
    assert.deepEqual(infos.map((s) => s.size), Array.from({ length: 50 }, (_, i) => String(i).length));
    assert.ok(fx.session.stats.maxPending > 1, `server saw ${fx.session.stats.maxPending} outstanding`);
  });

  test('fails a request with MUXWIRE_ERR_TIMEOUT when no reply comes', async () => {
    const pair = await socketPair();
    try {
      pair.server.resume(); // a peer that reads and never answers
      const silent = new AfcClient(pair.client, { timeoutMs: 100 });
      await assert.rejects(silent.deviceInfo(), { code: 'MUXWIRE_ERR_TIMEOUT' });
      assert.equal(silent.inFlight, 0);
    } finally {
      await pair.close();
    }
  });

  test('fails outstanding requests with MUXWIRE_ERR_CLOSED when the device goes away', async () => {
    const pair = await socketPair();
    try {
      const client = new AfcClient(pair.client);
      const pending = client.list('/');
      pair.server.destroy();
      await assert.rejects(pending, { code: 'MUXWIRE_ERR_CLOSED' });
      await assert.rejects(client.list('/'), { code: 'MUXWIRE_ERR_CLOSED' });
    } finally {
      await pair.close();
    }
  });

  test('fails with MUXWIRE_ERR_AFC when the device sends garbage', async () => {
    const pair = await socketPair();
    try {
      const client = new AfcClient(pair.client);
      const pending = client.list('/');
      pair.server.write(Buffer.alloc(64, 0x41));
      await assert.rejects(pending, { code: 'MUXWIRE_ERR_AFC', message: /framing/ });
    } finally {
      await pair.close();
    }
  });

  test('works over any Duplex, not only sockets (an in-memory pair of streams)', async () => {
    const aToB = new PassThrough();
    const bToA = new PassThrough();
    const hostSide = Duplex.from({ readable: bToA, writable: aToB });
    const deviceSide = Duplex.from({ readable: aToB, writable: bToA });
    const session = serveAfc(deviceSide, { root: fx.sandbox.root });
    const client = new AfcClient(hostSide);
    try {
      const data = randomBytes(3 * 1024 * 1024 + 5);
      await pipeline(Readable.from([data]), client.push('/mem.bin', { chunkSize: 256 * 1024 }));
      const chunks: Buffer[] = [];
      for await (const c of client.pull('/mem.bin', { chunkSize: 256 * 1024 })) chunks.push(c as Buffer);
      assert.deepEqual(Buffer.concat(chunks), data);
      assert.deepEqual(await client.list('/'), ['mem.bin']);
    } finally {
      hostSide.destroy();
      deviceSide.destroy();
      await session.finished;
    }
  });

  test('disconnect fails what is outstanding and closes the stream', async () => {
    const pending = afc.list('/');
    afc.disconnect();
    await assert.rejects(pending, { code: 'MUXWIRE_ERR_CLOSED' });
    await fx.session.finished;
  });
});
