/**
 * The daemon's reader of tunnelling clients (src/accel/client-reader.ts): a second socket over a
 * duplicate of the client's descriptor, reading into a ring that is reused once the bytes are
 * released. Real UNIX sockets; the sink plays the device connection (it holds views until it
 * releases them, in order).
 */
import { test, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RING_IDLE_MS, RING_READER_CAPACITY, RingReader, stopReading, sweepIdleRings } from '../../src/accel/client-reader.js';
import { sourcePattern } from '../../src/sim/bench-services.js';
import { nativeBinding } from './native-under-test.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** A connected pair: the accepted (daemon) side and the client side. */
async function pair(): Promise<{ server: Server; accepted: Socket; client: Socket }> {
  const dir = await mkdtemp(join(tmpdir(), 'muxwire-reader-'));
  dirs.push(dir);
  const path = join(dir, 's');
  const server = createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => server.listen(path, r));
  const acceptedP = once(server, 'connection') as Promise<[Socket]>;
  const client = createConnection(path);
  await once(client, 'connect');
  const [accepted] = await acceptedP;
  return { server, accepted, client };
}

/** A sink that keeps every view it gets (to check later that none was overwritten). */
class Keeper {
  readonly views: Buffer[] = [];
  bytes = 0;
  ended = false;
  errors: Error[] = [];
  data = (chunk: Buffer): void => {
    this.views.push(chunk);
    this.bytes += chunk.length;
  };
  end = (): void => {
    this.ended = true;
  };
  error = (err: Error): void => {
    this.errors.push(err);
  };
  async until(bytes: number): Promise<void> {
    const deadline = Date.now() + 20_000;
    while (this.bytes < bytes) {
      if (Date.now() > deadline) assert.fail(`the sink has ${this.bytes} of ${bytes} bytes`);
      await new Promise((r) => setTimeout(r, 2));
    }
  }
}

async function readerOn(t: TestContext, sink: Keeper): Promise<{ reader: RingReader; client: Socket; accepted: Socket; server: Server } | undefined> {
  if (nativeBinding(t) === undefined) return undefined;
  const p = await pair();
  t.after(() => {
    p.client.destroy();
    p.accepted.destroy();
    p.server.close();
  });
  const reader = RingReader.create(p.accepted, sink);
  assert.ok(reader !== undefined, 'the addon is loaded, so a reader is made');
  t.after(() => reader.destroy());
  assert.equal(stopReading(p.accepted), true);
  reader.start();
  return { reader, ...p };
}

test('reads a client into the ring and reuses it as bytes are released: 16 MiB intact, almost every read in the ring', async (t) => {
  const sink = new Keeper();
  const got: Buffer[] = [];
  // Released as soon as copied out, as the device connection does once the bytes are in packets.
  sink.data = (chunk: Buffer): void => {
    got.push(Buffer.from(chunk));
    sink.bytes += chunk.length;
    r?.reader.release(chunk.length);
  };
  const r = await readerOn(t, sink);
  if (r === undefined) return;
  const total = 16 * 1024 * 1024;
  r.client.write(sourcePattern(0, total));
  await sink.until(total);
  assert.equal(Buffer.concat(got).compare(sourcePattern(0, total)), 0);
  const s = r.reader.stats;
  assert.equal(s.held, 0);
  assert.ok(s.ringReads > 0 && s.freshReads === 0, `ring reads ${s.ringReads}, fresh ${s.freshReads}`);
});

test('a sink that holds everything: once the ring is full reads go to fresh buffers, and no held byte is overwritten', async (t) => {
  const sink = new Keeper();
  const r = await readerOn(t, sink);
  if (r === undefined) return;
  const total = 4 * RING_READER_CAPACITY;
  r.client.write(sourcePattern(0, total));
  await sink.until(total);
  // Every view still holds what was read into it, although nothing was released.
  assert.equal(Buffer.concat(sink.views).compare(sourcePattern(0, total)), 0);
  const s = r.reader.stats;
  assert.equal(s.held, total);
  assert.ok(s.freshReads > 0, 'reads went to fresh buffers once the ring was full');
  // Released, the ring is used again (from the read after next: the next one's buffer was
  // handed to the socket while the ring was full).
  r.reader.release(total);
  assert.equal(r.reader.stats.held, 0);
  const before = r.reader.stats.ringReads;
  const released = sink.views.length;
  const more = RING_READER_CAPACITY / 2;
  r.client.write(sourcePattern(total, more));
  await sink.until(total + more);
  assert.ok(r.reader.stats.ringReads > before);
  // (The released views now show the ring's new contents: released means no longer needed.)
  assert.equal(Buffer.concat(sink.views.slice(released)).compare(sourcePattern(total, more)), 0);
});

test('bytes released out of a partly released stretch free only what was taken, in order', async (t) => {
  const sink = new Keeper();
  const r = await readerOn(t, sink);
  if (r === undefined) return;
  r.reader.foreign(1000);
  const total = 3 * RING_READER_CAPACITY;
  r.client.write(sourcePattern(0, total));
  // Release in odd sizes as the data comes, keeping about half the ring held.
  let released = 0;
  while (released < total + 1000) {
    await sink.until(Math.min(total, released + RING_READER_CAPACITY / 2 - 1000));
    const n = Math.min(49116, sink.bytes + 1000 - released);
    if (n <= 0) continue;
    r.reader.release(n);
    released += n;
  }
  assert.equal(r.reader.stats.held, 0);
  assert.equal(Buffer.concat(sink.views).compare(sourcePattern(0, total)), 0);
});

test("the client's EOF reaches the sink, and the client's own socket still writes afterwards", async (t) => {
  const sink = new Keeper();
  const r = await readerOn(t, sink);
  if (r === undefined) return;
  const reply: Buffer[] = [];
  r.client.on('data', (c: Buffer) => reply.push(c));
  r.client.end(Buffer.from('bye'));
  const deadline = Date.now() + 10_000;
  while (!sink.ended) {
    if (Date.now() > deadline) assert.fail('no EOF at the sink');
    await new Promise((res) => setTimeout(res, 2));
  }
  assert.equal(Buffer.concat(sink.views).toString(), 'bye');
  // The reader's socket over the duplicate ends and closes; the shared socket is not shut down.
  await new Promise((res) => setTimeout(res, 20));
  r.accepted.end(Buffer.from('still here'));
  await once(r.client, 'end');
  assert.equal(Buffer.concat(reply).toString(), 'still here');
});

test('small reads go through the shared buffer, copied out, and get no ring until a bulk read', async (t) => {
  const sink = new Keeper();
  const r = await readerOn(t, sink);
  if (r === undefined) return;
  const requests: Buffer[] = [];
  for (let i = 0; i < 20; i++) {
    const req = sourcePattern(i * 100, 100);
    requests.push(req);
    r.client.write(req);
    await sink.until((i + 1) * 100);
  }
  assert.deepEqual(r.reader.stats, { ringReads: 0, freshReads: 0, copiedReads: 20, held: 2000, ringBytes: 0 });
  r.reader.release(2000);
  r.client.write(sourcePattern(2000, 1024 * 1024));
  await sink.until(2000 + 1024 * 1024);
  const s = r.reader.stats;
  assert.equal(s.ringBytes, RING_READER_CAPACITY);
  assert.ok(s.ringReads > 0);
  assert.equal(Buffer.concat(sink.views).compare(Buffer.concat([...requests, sourcePattern(2000, 1024 * 1024)])), 0);
});

test('a ring that has held nothing for RING_IDLE_MS is given back, one still holding bytes is not, and the next bulk read makes a new one', async (t) => {
  const sink = new Keeper();
  const r = await readerOn(t, sink);
  if (r === undefined) return;
  const first = sourcePattern(0, 512 * 1024);
  r.client.write(first);
  await sink.until(first.length);
  assert.equal(r.reader.stats.ringBytes, RING_READER_CAPACITY);
  const later = performance.now() + RING_IDLE_MS + 1;
  // Views still held (the device has not taken them): the ring stays, whatever the time.
  sweepIdleRings(later);
  assert.equal(r.reader.stats.ringBytes, RING_READER_CAPACITY, 'a ring with held bytes is kept');
  r.reader.release(first.length);
  // Empty, but only just: kept until it has been empty for RING_IDLE_MS.
  sweepIdleRings(performance.now());
  assert.equal(r.reader.stats.ringBytes, RING_READER_CAPACITY, 'a ring empty for less than RING_IDLE_MS is kept');
  assert.ok(sweepIdleRings(performance.now() + RING_IDLE_MS + 1) >= 1);
  assert.equal(r.reader.stats.ringBytes, 0, 'an idle ring is given back');
  // The tunnel goes on: a new ring at the next bulk read, every byte intact and in order.
  const second = sourcePattern(first.length, 1024 * 1024);
  r.client.write(second);
  await sink.until(first.length + second.length);
  assert.equal(r.reader.stats.ringBytes, RING_READER_CAPACITY);
  assert.equal(Buffer.concat(sink.views).compare(Buffer.concat([first, second])), 0);
});

test('pause stops reading and resume goes on, with every byte in order', async (t) => {
  const sink = new Keeper();
  const r = await readerOn(t, sink);
  if (r === undefined) return;
  r.reader.pause();
  assert.equal(r.reader.paused, true);
  r.client.write(sourcePattern(0, 65536));
  await new Promise((res) => setTimeout(res, 50));
  assert.equal(sink.bytes, 0, 'nothing read while paused');
  r.reader.resume();
  await sink.until(65536);
  assert.equal(Buffer.concat(sink.views).compare(sourcePattern(0, 65536)), 0);
});

test('no reader without the addon or with MUXWIRE_RING_READER=0: the client is read as before', async (t) => {
  const p = await pair();
  t.after(() => {
    p.client.destroy();
    p.accepted.destroy();
    p.server.close();
  });
  const sink = new Keeper();
  assert.equal(RingReader.create(p.accepted, sink, { MUXWIRE_NO_NATIVE: '1' }), undefined);
  assert.equal(RingReader.create(p.accepted, sink, { MUXWIRE_RING_READER: '0' }), undefined);
});

test("the addon's dupDescriptor: a close-on-exec copy, -EBADF for a closed descriptor, TypeError and RangeError for wrong arguments", async (t) => {
  const binding = nativeBinding(t) as unknown as { dupDescriptor?: (fd: unknown) => number } | undefined;
  if (binding === undefined) return;
  const dup = binding.dupDescriptor!;
  const p = await pair();
  t.after(() => {
    p.client.destroy();
    p.accepted.destroy();
    p.server.close();
  });
  const fd = (p.accepted as unknown as { _handle: { fd: number } })._handle.fd;
  const copy = dup(fd);
  assert.ok(copy >= 0 && copy !== fd);
  const { readFileSync, closeSync } = await import('node:fs');
  const flags = readFileSync(`/proc/self/fdinfo/${copy}`, 'utf8');
  // O_CLOEXEC is 02000000 (octal) in the flags line.
  assert.ok((Number.parseInt(/flags:\s*(\d+)/.exec(flags)![1]!, 8) & 0o2000000) !== 0, 'close-on-exec');
  closeSync(copy);
  assert.equal(dup(copy), -9);
  assert.throws(() => dup('3'), TypeError);
  assert.throws(() => dup(-1), RangeError);
  assert.throws(() => dup(1.5), RangeError);
});
