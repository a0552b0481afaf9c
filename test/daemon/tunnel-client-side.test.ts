/**
 * The client side of a tunnel in the daemon (client-session.ts): client bytes go to the device
 * with backpressure, and a client's EOF resets the device connection — at once when nothing is in
 * flight, after delivering what the device had sent when something is.
 */
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import { DeviceMux } from '../../src/sim/device-mux.js';
import { InProcessLink } from '../../src/sim/in-process-link.js';
import { encodeCount, serveBenchServices, sourcePattern } from '../../src/sim/bench-services.js';
import { encodePortNumber } from '../../src/protocol/client-plist.js';
import { RawClient } from './helpers/raw-client.js';

/** A device port whose service the tests drive by hand. */
const MANUAL_PORT = 4242;

let dir: string;
let daemon: MuxDaemon;
let socketPath: string;
let deviceId: number;
let link: InProcessLink;
/** Streams the device accepted on MANUAL_PORT, in order. */
const accepted: Duplex[] = [];
const clients: RawClient[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-tunnel-test-'));
  socketPath = join(dir, 'usbmuxd');
  daemon = new MuxDaemon({ socketPath, pairDir: join(dir, 'lockdown'), preflight: false });
  await daemon.start();
  const mux = new DeviceMux();
  serveBenchServices(mux);
  mux.listen(MANUAL_PORT, (stream) => {
    stream.on('error', () => undefined);
    accepted.push(stream);
  });
  link = new InProcessLink(mux, { serialNumber: '00008030-0000000000000ABC', productId: 0x12a8, locationId: 2, speed: 480_000_000 }, () => undefined);
  const entry = daemon.addLink(link)!;
  await entry.session.ready;
  while (entry.state !== 'visible') await new Promise((r) => setImmediate(r));
  deviceId = entry.id;
});

after(async () => {
  link.unplug();
  await daemon.close();
  await rm(dir, { recursive: true, force: true });
});

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  for (const s of accepted.splice(0)) s.destroy();
});

/** A client tunnelling to `port` on the device. */
async function tunnel(port: number): Promise<RawClient> {
  const c = await RawClient.open(socketPath);
  clients.push(c);
  assert.deepEqual(await c.request('Connect', { DeviceID: deviceId, PortNumber: encodePortNumber(port) }), { MessageType: 'Result', Number: 0 });
  c.startTunnel();
  return c;
}

/** Waits (polling, bounded) until `ready` holds. */
async function until(ready: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Collects what `stream` carries as it comes. */
function gather(stream: Duplex): { bytes: () => number; data: () => Buffer } {
  const chunks: Buffer[] = [];
  let bytes = 0;
  stream.on('data', (chunk: Buffer) => {
    chunks.push(chunk);
    bytes += chunk.length;
  });
  return { bytes: () => bytes, data: () => Buffer.concat(chunks) };
}

/** Reads `stream` until it ends; resolves with everything it carried. */
async function readToEnd(stream: Duplex): Promise<Buffer> {
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  await once(stream, 'end');
  return Buffer.concat(chunks);
}

test('resets the device connection and closes the client at once when a tunnelling client ends with nothing in flight', async () => {
  const c = await tunnel(MANUAL_PORT);
  await until(() => accepted.length === 1, 'the device to accept');
  const device = accepted[0]!;
  const received = readToEnd(device);
  c.write(Buffer.from('last words'));
  c.socket.end();
  // The device gets the bytes, then the RST ends its stream (the mux has no half-close).
  assert.equal((await received).toString(), 'last words');
  await c.waitClosed();
  await until(() => daemon.stats().connections === 0 && daemon.stats().clients === 0, 'the daemon to let go of the client and its connection');
});

test('delivers what the device had sent to a client that ends before reading it, then closes', async () => {
  const c = await tunnel(19);
  c.socket.pause();
  c.write(encodeCount(64 * 1024 * 1024));
  // The client reads nothing: the device stops at its window, with bytes held in the daemon.
  let last = -1;
  let steady = 0;
  await until(() => {
    const conn = daemon.clientStats().find((s) => s.state === 'connected')?.connection;
    if (conn === undefined) return false;
    steady = conn.bytesReceived === last && conn.bytesReceived > 0 ? steady + 1 : 0;
    last = conn.bytesReceived;
    return steady >= 20;
  }, 'the device to stop at its window');
  const held = daemon.clientStats().find((s) => s.state === 'connected')!;
  assert.ok(held.connection!.rxQueued > 0 || held.socketWritable > 0, 'the daemon holds bytes the client has not taken');
  c.socket.end();
  c.socket.resume();
  await c.waitClosed(20_000);
  const got = await c.readTunnel(last);
  assert.equal(got.compare(sourcePattern(0, last)), 0, 'every byte the daemon received, in order');
  await until(() => daemon.stats().connections === 0, 'the connection to be released');
});

test('stops reading a client that writes faster than the device takes, and delivers every byte', async () => {
  const c = await tunnel(MANUAL_PORT);
  await until(() => accepted.length === 1, 'the device to accept');
  const device = accepted[0]!;
  device.pause();
  const total = 8 * 1024 * 1024;
  const payload = sourcePattern(0, total);
  c.write(payload);
  // The device reads nothing: the daemon must stop reading the client, holding a bounded amount.
  await until(() => daemon.clientStats().some((s) => s.socketReadPaused), 'the daemon to pause the client');
  for (let i = 0; i < 20; i++) {
    await new Promise((r) => setTimeout(r, 5));
    const s = daemon.stats();
    assert.ok(s.txPending <= 256 * 1024, `the daemon holds ${s.txPending} bytes for the device`);
  }
  const got = gather(device);
  device.resume();
  await until(() => got.bytes() >= total, `${total} bytes at the device`, 30_000);
  assert.equal(got.data().compare(payload), 0);
});

test('bytes sent right behind the Connect and 32 MiB after it reach the device in order; with the addon the client is read into reused memory', async () => {
  const c = await RawClient.open(socketPath);
  clients.push(c);
  const early = Buffer.from('sent before the Result');
  c.sendPlist('Connect', { DeviceID: deviceId, PortNumber: encodePortNumber(MANUAL_PORT) });
  c.write(early);
  assert.deepEqual(await c.nextPlist(), { MessageType: 'Result', Number: 0 });
  c.startTunnel();
  await until(() => accepted.length === 1, 'the device to accept');
  const device = accepted[0]!;
  const got = gather(device);
  const total = 32 * 1024 * 1024;
  c.write(sourcePattern(0, total));
  await until(() => got.bytes() >= early.length + total, `${total} bytes at the device`, 60_000);
  assert.equal(got.data().compare(Buffer.concat([early, sourcePattern(0, total)])), 0);
  const reader = daemon.clientStats().find((s) => s.state === 'connected')?.reader;
  if (process.env.MUXWIRE_NO_NATIVE === '1') {
    assert.equal(reader, undefined, 'no reader on the TypeScript path');
  } else if (reader !== undefined) {
    assert.ok(reader.ringReads > reader.freshReads, `ring reads ${reader.ringReads}, fresh ${reader.freshReads}`);
  } else {
    assert.ok(process.env.MUXWIRE_REQUIRE_NATIVE !== '1', 'the addon is required, so the tunnel has a reader');
  }
});

test('a tunnel gets its reader at the first bulk read, with the bytes its connection still held counted first; every byte arrives in order', async () => {
  const c = await tunnel(MANUAL_PORT);
  await until(() => accepted.length === 1, 'the device to accept');
  const device = accepted[0]!;
  const got = gather(device);
  // Requests and replies only: no reader, no second descriptor.
  const small = Buffer.from('a request of a few bytes');
  for (let i = 0; i < 5; i++) {
    c.write(small);
    await until(() => got.bytes() >= small.length * (i + 1), 'the small write at the device');
  }
  const tunnelStats = (): ReturnType<MuxDaemon['clientStats']>[number] | undefined => daemon.clientStats().find((s) => s.state === 'connected');
  assert.equal(tunnelStats()?.reader, undefined, 'no reader before bulk data');
  // Bulk data while the device reads nothing: the reader takes over while the connection holds
  // bytes it has not sent yet (its window is full), and they must not be released as ring memory.
  device.pause();
  const total = 8 * 1024 * 1024;
  const payload = sourcePattern(7, total);
  c.write(payload);
  await until(() => tunnelStats()?.socketReadPaused === true, 'the daemon to pause the client');
  const native = process.env.MUXWIRE_NO_NATIVE !== '1' && process.env.MUXWIRE_RING_READER !== '0';
  if (native && process.env.MUXWIRE_REQUIRE_NATIVE === '1') assert.notEqual(tunnelStats()?.reader, undefined, 'a reader after the first bulk read');
  if (!native) assert.equal(tunnelStats()?.reader, undefined, 'no reader on the TypeScript path');
  device.resume();
  const expected = Buffer.concat([...Array.from({ length: 5 }, () => small), payload]);
  await until(() => got.bytes() >= expected.length, `${expected.length} bytes at the device`, 30_000);
  assert.equal(got.data().compare(expected), 0);
  // Every byte the connection took released what the reader counted, no more, no less.
  await until(() => tunnelStats()?.reader === undefined || tunnelStats()!.reader!.held === 0, 'the reader to hold nothing');
  const reader = tunnelStats()?.reader;
  if (reader !== undefined) assert.ok(reader.ringReads > 0, `ring reads ${reader.ringReads}`);
});

test('tunnels that carried data and closed leave no descriptor behind (the ring reader closes its duplicate)', async () => {
  const { readdirSync } = await import('node:fs');
  const open = (): number => readdirSync('/proc/self/fd').length;
  const before = open();
  for (let i = 0; i < 30; i++) {
    const c = await tunnel(MANUAL_PORT);
    await until(() => accepted.length === 1, 'the device to accept');
    const device = accepted.shift()!;
    let got = 0;
    device.on('data', (chunk: Buffer) => {
      got += chunk.length;
    });
    // A bulk read, so that the reader takes its ring.
    c.write(sourcePattern(0, 256 * 1024));
    await until(() => got >= 256 * 1024, 'the bytes at the device');
    if (i % 2 === 0) {
      // The client ends first.
      c.socket.end();
      device.destroy();
    } else {
      // The device ends first: the daemon closes the client, which must see it (a duplicate
      // descriptor left open would keep its socket alive).
      device.destroy();
      await c.waitClosed();
    }
    await until(() => daemon.stats().clients === 0 && daemon.stats().connections === 0, 'the daemon to let go');
    clients.splice(clients.indexOf(c), 1);
    c.close();
  }
  await until(() => open() <= before, `descriptors back to ${before} (now ${open()})`);
});

test('a tunnel cut by an unplug closes its client at once (no duplicate descriptor keeps the socket open)', async () => {
  const mux = new DeviceMux();
  const streams: Duplex[] = [];
  mux.listen(MANUAL_PORT, (stream) => {
    stream.on('error', () => undefined);
    streams.push(stream);
  });
  const link2 = new InProcessLink(mux, { serialNumber: '00008030-0000000000000DEF', productId: 0x12a8, locationId: 3, speed: 480_000_000 }, () => undefined);
  const entry = daemon.addLink(link2)!;
  await entry.session.ready;
  while (entry.state !== 'visible') await new Promise((r) => setImmediate(r));
  const c = await RawClient.open(socketPath);
  clients.push(c);
  assert.deepEqual(await c.request('Connect', { DeviceID: entry.id, PortNumber: encodePortNumber(MANUAL_PORT) }), { MessageType: 'Result', Number: 0 });
  c.startTunnel();
  await until(() => streams.length === 1, 'the device to accept');
  let got = 0;
  streams[0]!.on('data', (chunk: Buffer) => {
    got += chunk.length;
  });
  c.write(sourcePattern(0, 256 * 1024));
  await until(() => got >= 256 * 1024, 'the bytes at the device');
  link2.unplug();
  await c.waitClosed(5_000);
});
