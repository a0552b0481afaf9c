/**
 * The host mux engine against the simulator's real device side (DeviceMux with its bench
 * services): data integrity, flow control and isolation under load.
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { DeviceSession } from '../../src/mux/device-session.js';
import type { MuxConnection } from '../../src/mux/mux-connection.js';
import { HOST_WINDOW } from '../../src/mux/mux-connection.js';
import { DeviceMux } from '../../src/sim/device-mux.js';
import { serveBenchServices, encodeCount, findPatternMismatch } from '../../src/sim/bench-services.js';
import { LoopLink } from './helpers/loop-link.js';

const open: Array<{ session: DeviceSession; link: LoopLink }> = [];
afterEach(async () => {
  for (const { session, link } of open.splice(0)) {
    await session.close();
    link.close();
  }
});

async function simulated(version: 1 | 2 = 2): Promise<{ session: DeviceSession; link: LoopLink; mux: DeviceMux }> {
  const mux = new DeviceMux({ version });
  serveBenchServices(mux);
  const link = new LoopLink(mux);
  const session = new DeviceSession(link);
  open.push({ session, link });
  await session.ready;
  return { session, link, mux };
}

/** Writes `data` through echo and reads it back, both with backpressure. */
async function echo(conn: MuxConnection, data: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let got = 0;
  const done = new Promise<void>((resolve, reject) => {
    conn.on('data', (c: Buffer) => {
      chunks.push(c);
      got += c.length;
      if (got >= data.length) resolve();
    });
    conn.once('error', reject);
  });
  let off = 0;
  while (off < data.length) {
    const n = Math.min(65536, data.length - off);
    if (!conn.write(data.subarray(off, off + n))) await once(conn, 'drain');
    off += n;
  }
  await done;
  return Buffer.concat(chunks);
}

test('relays 4 MB through the echo service intact on a v2 device', async () => {
  const { session } = await simulated(2);
  const conn = await session.connect(7);
  const data = randomBytes(4 * 1024 * 1024);
  const back = await echo(conn, data);
  assert.ok(back.equals(data));
  conn.destroy();
});

test('relays through the echo service on a v1 device', async () => {
  const { session } = await simulated(1);
  assert.equal(session.version, 1);
  const conn = await session.connect(7);
  const data = randomBytes(300_000);
  assert.ok((await echo(conn, data)).equals(data));
  conn.destroy();
});

test('gets CONNREFUSED from the simulated device for a port nobody listens on', async () => {
  const { session } = await simulated();
  await assert.rejects(session.connect(4444), { code: 'MUXWIRE_ERR_CONN_REFUSED' });
});

test('keeps memory bounded while the device streams to a reader that reads slowly', async () => {
  const { session } = await simulated();
  const conn = await session.connect(19);
  const total = 3 * 1024 * 1024;
  conn.write(encodeCount(total));
  let got = 0;
  let maxQueued = 0;
  let maxReadable = 0;
  let mismatch = -1;
  conn.pause();
  // Read a little every few ms: the device is far faster than this reader.
  while (got < total) {
    await new Promise((r) => setTimeout(r, 2));
    const s = conn.stats();
    maxQueued = Math.max(maxQueued, s.rxQueued);
    maxReadable = Math.max(maxReadable, s.readableBuffered);
    for (let i = 0; i < 8; i++) {
      const chunk = conn.read() as Buffer | null;
      if (chunk === null) break;
      if (mismatch < 0) {
        const at = findPatternMismatch(chunk, got);
        if (at >= 0) mismatch = got + at;
      }
      got += chunk.length;
    }
  }
  assert.equal(got, total);
  assert.equal(mismatch, -1, 'the pattern arrived intact');
  assert.ok(maxQueued <= HOST_WINDOW, `queued ${maxQueued}`);
  assert.ok(maxReadable <= conn.readableHighWaterMark + 65536, `readable buffer ${maxReadable}`);
  conn.destroy();
});

test('one paused reader does not slow the other connections of its device', async () => {
  const { session } = await simulated();
  const stalled = await session.connect(19);
  stalled.pause();
  stalled.write(encodeCount(50 * 1024 * 1024));
  const conn = await session.connect(7);
  const data = randomBytes(2 * 1024 * 1024);
  assert.ok((await echo(conn, data)).equals(data));
  // The stalled connection holds at most a window plus the stream buffer.
  const s = stalled.stats();
  assert.ok(s.rxQueued + s.readableBuffered <= HOST_WINDOW + stalled.readableHighWaterMark + 65536);
  stalled.destroy();
  conn.destroy();
});

test('relays 32 devices with 16 echo connections each at once', async () => {
  const devices = await Promise.all(Array.from({ length: 32 }, () => simulated()));
  const jobs: Array<Promise<void>> = [];
  for (const { session } of devices) {
    for (let i = 0; i < 16; i++) {
      jobs.push(
        (async () => {
          const conn = await session.connect(7);
          const data = randomBytes(16 * 1024 + i * 512);
          const back = await echo(conn, data);
          assert.ok(back.equals(data));
          conn.destroy();
        })(),
      );
    }
  }
  await Promise.all(jobs);
  for (const { session } of devices) assert.equal(session.connectionCount, 0);
});

test('ends every stream with the received data when the simulated device is unplugged mid-transfer', async () => {
  const { session, link } = await simulated();
  const conn = await session.connect(19);
  conn.write(encodeCount(100 * 1024 * 1024));
  let got = 0;
  conn.on('data', (c: Buffer) => {
    got += c.length;
  });
  while (got < 200_000) await new Promise((r) => setTimeout(r, 1));
  const ended = once(conn, 'end');
  link.unplug();
  await ended;
  assert.equal(conn.closeError?.code, 'MUXWIRE_ERR_NO_DEVICE');
  await assert.rejects(session.connect(7), { code: 'MUXWIRE_ERR_NO_DEVICE' });
});
