/**
 * Pipelined file transfers between the AFC client and the simulated device's AFC server: a 64 MiB
 * round trip that must come back bit for bit, several requests demonstrably in flight, progress
 * reports, backpressure and the edge sizes.
 */
import { test, describe, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, writeFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { AfcStatus } from '../../src/protocol/afc.js';
import { AfcClient } from '../../src/services/afc/index.js';
import type { AfcProgress } from '../../src/services/afc/index.js';
import { startAfcServer } from './afc-harness.js';
import type { AfcServerFixture } from './afc-harness.js';

const MiB = 1024 * 1024;

let fx: AfcServerFixture;
let afc: AfcClient;

beforeEach(async () => {
  fx = await startAfcServer();
  afc = new AfcClient(fx.sockets.client);
});
afterEach(() => fx.close());

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path), hash);
  return hash.digest('hex');
}

/** A file of `size` random bytes, written a MiB at a time. */
async function makeFile(path: string, size: number): Promise<void> {
  await pipeline(
    Readable.from(
      (function* () {
        for (let done = 0; done < size; done += MiB) yield randomBytes(Math.min(MiB, size - done));
      })(),
    ),
    createWriteStream(path),
  );
}

describe('push and pull', () => {
  test('round-trips 64 MiB intact with several requests in flight', { timeout: 120_000 }, async () => {
    const size = 64 * MiB;
    const local = join(fx.sandbox.base, 'big.bin');
    const back = join(fx.sandbox.base, 'back.bin');
    await makeFile(local, size);
    const original = await sha256File(local);

    const pushProgress: AfcProgress[] = [];
    const pushed = await afc.pushFile(local, '/big.bin', { onProgress: (p) => pushProgress.push(p) });
    assert.equal(pushed.bytes, size);
    assert.ok(fx.session.stats.maxPending > 1, `push: server saw ${fx.session.stats.maxPending} outstanding`);
    assert.equal(await sha256File(join(fx.sandbox.root, 'big.bin')), original, 'the device copy is intact');

    fx.session.stats.maxPending = 0;
    const pullProgress: AfcProgress[] = [];
    const pulled = await afc.pullFile('/big.bin', back, { onProgress: (p) => pullProgress.push(p) });
    assert.equal(pulled.bytes, size);
    assert.ok(fx.session.stats.maxPending > 1, `pull: server saw ${fx.session.stats.maxPending} outstanding`);
    assert.equal(await sha256File(back), original, 'the pulled copy is intact');

    for (const list of [pushProgress, pullProgress]) {
      assert.ok(list.length >= 64);
      for (let i = 1; i < list.length; i++) assert.ok(list[i]!.bytes > list[i - 1]!.bytes);
      assert.deepEqual(list.at(-1), { bytes: size, total: size });
    }
  });

  test('pulls empty files, exact multiples of the chunk size and odd sizes', async () => {
    for (const size of [0, 1, 4096, 256 * 1024, 256 * 1024 + 1, 3 * 256 * 1024]) {
      const data = randomBytes(size);
      await writeFile(join(fx.sandbox.root, `f${size}`), data);
      const chunks: Buffer[] = [];
      await pipeline(afc.pull(`/f${size}`, { chunkSize: 256 * 1024, inFlight: 3 }), new Writable({
        write(chunk: Buffer, _enc, cb) {
          chunks.push(chunk);
          cb();
        },
      }));
      assert.deepEqual(Buffer.concat(chunks), data, `size ${size}`);
    }
  });

  test('pulls from an offset', async () => {
    await writeFile(join(fx.sandbox.root, 'f'), '0123456789');
    const chunks: Buffer[] = [];
    for await (const chunk of afc.pull('/f', { start: 6 })) chunks.push(chunk as Buffer);
    assert.equal(Buffer.concat(chunks).toString(), '6789');
  });

  test('gathers many small writes into large FILE_WRITEs', async () => {
    const piece = randomBytes(1000);
    const count = 3000;
    const sink = afc.push('/small-writes.bin', { chunkSize: 256 * 1024 });
    let acks = 0;
    sink.on('progress', () => acks++);
    await pipeline(
      Readable.from((function* () {
        for (let i = 0; i < count; i++) yield piece;
      })()),
      sink,
    );
    const onDevice = await readFile(join(fx.sandbox.root, 'small-writes.bin'));
    assert.equal(onDevice.length, count * piece.length);
    assert.deepEqual(onDevice.subarray(999_000, 1_000_000), piece);
    assert.equal(acks, Math.ceil((count * piece.length) / (256 * 1024)), 'one FILE_WRITE per chunk');
  });

  test('applies backpressure: a slow reader keeps the pipeline bounded', async () => {
    await writeFile(join(fx.sandbox.root, 'f'), randomBytes(8 * MiB));
    const source = afc.pull('/f', { chunkSize: 256 * 1024, inFlight: 4 });
    let maxInFlight = 0;
    let received = 0;
    await pipeline(source, new Writable({
      highWaterMark: 1,
      write(chunk: Buffer, _enc, cb) {
        received += chunk.length;
        maxInFlight = Math.max(maxInFlight, afc.inFlight);
        setImmediate(cb);
      },
    }));
    assert.equal(received, 8 * MiB);
    assert.ok(maxInFlight <= 4, `at most inFlight reads outstanding (saw ${maxInFlight})`);
  });

  test('fails a pull of a missing file with OBJECT_NOT_FOUND', async () => {
    await assert.rejects(afc.pullFile('/nope', join(fx.sandbox.base, 'nope')), { code: 'MUXWIRE_ERR_AFC', detail: AfcStatus.OBJECT_NOT_FOUND });
    await assert.rejects(pipeline(afc.pull('/nope'), new Writable({ write: (_c, _e, cb) => cb() })), {
      detail: AfcStatus.OBJECT_NOT_FOUND,
    });
  });

  test('fails a push into a missing directory and leaves no handle open', async () => {
    const local = join(fx.sandbox.base, 'l.bin');
    await writeFile(local, 'x');
    await assert.rejects(afc.pushFile(local, '/no/such/dir/l.bin'), { detail: AfcStatus.OBJECT_NOT_FOUND });
    // The connection still works afterwards.
    await afc.pushFile(local, '/l.bin');
    assert.equal((await stat(join(fx.sandbox.root, 'l.bin'))).size, 1);
  });

  test('closes the remote file when a push stream is destroyed midway', async () => {
    const sink = afc.push('/partial.bin', { chunkSize: 64 * 1024 });
    await new Promise<void>((resolve) => sink.write(randomBytes(200 * 1024), () => resolve()));
    sink.destroy();
    await new Promise((resolve) => sink.once('close', resolve));
    assert.equal(fx.session.openFiles, 0, 'the device closed the handle');
    assert.equal((await stat(join(fx.sandbox.root, 'partial.bin'))).size, 192 * 1024, 'three whole chunks were written');
  });
});
