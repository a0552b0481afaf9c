/**
 * Bounded memory per client and overall (src/daemon/client-limits.ts): a client that writes
 * requests and never reads stops being read, and is closed past the hard cap; a request that never
 * finishes arriving is cut; all clients together stay inside the budget; what a client held is
 * given back when it goes. No timing thresholds: each test waits (generously) for a state.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import type { MuxDaemonOptions } from '../../src/daemon/mux-daemon.js';
import { CLIENT_MEMORY_BUDGET, CLIENT_PER_UID_MIN, CLIENT_REPLY_HIGH_WATER, CLIENT_REPLY_MAX, CLIENT_REQUEST_TIMEOUT_MS, CLIENT_STRING_MAX, clientString, defaultPerUidMax, resolveClientLimits } from '../../src/daemon/client-limits.js';
import { DeviceMux } from '../../src/sim/device-mux.js';
import { InProcessLink } from '../../src/sim/in-process-link.js';
import { encodeClientMessage } from '../../src/protocol/client-message.js';
import { listDevicesRequest, listenersReply, listenersReplyBytesAtMost } from '../../src/protocol/client-plist.js';
import { isMuxwireError } from '../../src/errors.js';
import { setLogSink } from '../../src/log.js';
import { RawClient } from './helpers/raw-client.js';

let dir: string;
const cleanups: Array<() => Promise<void> | void> = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-limits-'));
});
after(async () => {
  for (const c of cleanups.reverse()) await c();
  await rm(dir, { recursive: true, force: true });
});

let n = 0;
async function startDaemon(opts: MuxDaemonOptions = {}): Promise<{ daemon: MuxDaemon; socketPath: string }> {
  const socketPath = join(dir, `d${n++}.sock`);
  const daemon = new MuxDaemon({ socketPath, pairDir: join(dir, 'lockdown'), preflight: false, ...opts });
  await daemon.start();
  const link = new InProcessLink(new DeviceMux(), { serialNumber: '00008030-0000000000001111', productId: 0x12a8, locationId: 1, speed: 480_000_000 }, () => undefined);
  await daemon.addLink(link)!.session.ready;
  cleanups.push(async () => {
    link.unplug();
    await daemon.close();
  });
  return { daemon, socketPath };
}

async function rawSocket(path: string): Promise<Socket> {
  const s = connect({ path });
  await once(s, 'connect');
  s.on('error', () => undefined);
  cleanups.push(() => void s.destroy());
  return s;
}

async function until(what: string, ready: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const REQUEST = encodeClientMessage({ kind: 'plist', tag: 1, version: 1, plist: listDevicesRequest('flood') });

/** Writes `bytes` worth of ListDevices requests to `s` and never reads. */
function flood(s: Socket, bytes: number): void {
  const batch = Buffer.concat(Array.from({ length: 256 }, () => REQUEST));
  for (let sent = 0; sent < bytes; sent += batch.length) s.write(batch);
}

test('a client that writes requests without reading is no longer read once its replies pass the soft cap; others keep answering; all is given back when it goes', async () => {
  const { daemon, socketPath } = await startDaemon();
  const flooder = await rawSocket(socketPath);
  flooder.pause();
  flood(flooder, 8 * 1024 * 1024);
  await until('the daemon stops reading the flooder', () => daemon.clientStats().some((c) => c.pausedForReplies));
  const stats = daemon.clientStats().find((c) => c.pausedForReplies)!;
  assert.equal(stats.socketReadPaused, true);
  // At most one reply past the soft cap, and far from the 8 MiB of requests' worth of replies.
  assert.ok(stats.socketWritable < daemon.limits.replyHighWater + 64 * 1024, `${stats.socketWritable} bytes queued`);
  assert.ok(daemon.budget.used <= daemon.limits.replyHighWater + 2 * 64 * 1024 + 64 * 1024, `budget ${daemon.budget.used}`);
  const other = await RawClient.open(socketPath);
  try {
    assert.equal(((await other.request('ListDevices')).DeviceList as unknown[]).length, 1);
  } finally {
    other.close();
  }
  flooder.destroy();
  await until('the flooder is gone', () => daemon.stats().clients === 0);
  assert.equal(daemon.budget.used, 0, 'every byte it held is given back');
});

test('a flooding client that reaches the hard cap is closed', async () => {
  const { daemon, socketPath } = await startDaemon({ limits: { replyHighWater: 4096, replyMax: 4096 } });
  const flooder = await rawSocket(socketPath);
  flooder.pause();
  const lines: string[] = [];
  setLogSink((line) => lines.push(line));
  try {
    const closed = new Promise((resolve) => flooder.once('close', resolve));
    flood(flooder, 4 * 1024 * 1024);
    await closed;
    await until('the daemon dropped it', () => daemon.stats().clients === 0);
  } finally {
    setLogSink((line) => process.stderr.write(line + '\n'));
  }
  assert.ok(lines.some((l) => /client does not read its replies \(\d+ bytes queued\); closing it/.test(l)), lines.join('\n'));
  assert.equal(daemon.budget.used, 0);
});

test('reading resumes when the client reads its replies: every request is answered', async () => {
  const { socketPath } = await startDaemon({ limits: { replyHighWater: 8192 } });
  const c = await RawClient.open(socketPath);
  try {
    c.socket.pause();
    const count = 2000;
    c.write(Buffer.concat(Array.from({ length: count }, () => REQUEST)));
    await new Promise((r) => setTimeout(r, 200));
    c.socket.resume();
    for (let i = 0; i < count; i++) assert.ok(Array.isArray((await c.nextPlist()).DeviceList), `reply ${i}`);
  } finally {
    c.close();
  }
});

test('a request that never finishes arriving is cut after the time limit; a whole one in pieces is served', async () => {
  const { daemon, socketPath } = await startDaemon({ limits: { requestTimeoutMs: 300 } });
  const slow = await rawSocket(socketPath);
  const closed = new Promise((resolve) => slow.once('close', resolve));
  slow.write(REQUEST.subarray(0, 100));
  await closed;
  await until('the daemon dropped it', () => daemon.stats().clients === 0);
  const ok = await RawClient.open(socketPath);
  try {
    ok.write(REQUEST.subarray(0, 50));
    await new Promise((r) => setImmediate(r));
    ok.write(REQUEST.subarray(50));
    assert.ok(Array.isArray((await ok.nextPlist()).DeviceList));
  } finally {
    ok.close();
  }
});

test('all clients together stay inside the budget: the biggest holders are closed, others are served', async () => {
  const budget = 256 * 1024;
  const { daemon, socketPath } = await startDaemon({ limits: { memoryBudget: budget } });
  // Ten clients each send 60 KiB of one 64 KiB request and stop: 600 KiB held, the budget 256.
  const header = Buffer.alloc(16);
  header.writeUInt32LE(65536, 0);
  header.writeUInt32LE(1, 4);
  header.writeUInt32LE(8, 8);
  const partial = Buffer.concat([header, Buffer.alloc(60 * 1024 - 16, 0x20)]);
  const sockets: Socket[] = [];
  let closedCount = 0;
  for (let i = 0; i < 10; i++) {
    const s = await rawSocket(socketPath);
    s.on('close', () => closedCount++);
    s.write(partial);
    sockets.push(s);
  }
  await until('the daemon closed the clients over budget', () => closedCount >= 6);
  assert.ok(daemon.budget.used <= budget, `${daemon.budget.used} bytes held`);
  const ok = await RawClient.open(socketPath);
  try {
    assert.ok(Array.isArray((await ok.request('ListDevices')).DeviceList));
  } finally {
    ok.close();
  }
  for (const s of sockets) s.destroy();
  await until('every client is gone', () => daemon.stats().clients === 0);
  assert.equal(daemon.budget.used, 0);
});

test('limits: documented defaults, environment overrides, bad values refused', () => {
  assert.deepEqual(resolveClientLimits({}, {}), { replyHighWater: CLIENT_REPLY_HIGH_WATER, replyMax: CLIENT_REPLY_MAX, requestTimeoutMs: CLIENT_REQUEST_TIMEOUT_MS, memoryBudget: CLIENT_MEMORY_BUDGET, perUidMax: defaultPerUidMax() });
  assert.deepEqual(CLIENT_REPLY_HIGH_WATER, 256 * 1024);
  const env = { MUXWIRE_CLIENT_REPLY_HIGH_WATER: '1000', MUXWIRE_CLIENT_REPLY_MAX: '2000', MUXWIRE_CLIENT_REQUEST_TIMEOUT_MS: '3000', MUXWIRE_CLIENT_MEMORY_BUDGET: '4000', MUXWIRE_CLIENT_MAX_PER_UID: '50' };
  assert.deepEqual(resolveClientLimits({}, env), { replyHighWater: 1000, replyMax: 2000, requestTimeoutMs: 3000, memoryBudget: 4000, perUidMax: 50 });
  assert.equal(resolveClientLimits({ memoryBudget: 5 }, env).memoryBudget, 5, 'options win over the environment');
  for (const bad of ['0', '-1', '1.5', 'lots', '99999999999999999999']) {
    assert.throws(() => resolveClientLimits({}, { MUXWIRE_CLIENT_MEMORY_BUDGET: bad }), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_ARGUMENT'), bad);
  }
  assert.throws(() => resolveClientLimits({ replyHighWater: 10, replyMax: 5 }, {}), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_ARGUMENT'));
});

test('client names are kept cut to CLIENT_STRING_MAX: ListListeners shows them cut, never whole', async () => {
  const { socketPath } = await startDaemon();
  // '&' is 5 bytes in XML: three such names stay inside one 64 KiB request.
  const long = '&'.repeat(3000);
  const listener = await RawClient.open(socketPath);
  const asker = await RawClient.open(socketPath);
  try {
    listener.sendPlist('Listen', { ProgName: long, BundleID: `com.example.${long}`, ClientVersionString: long });
    assert.equal((await listener.nextPlist()).Number, 0);
    const reply = await asker.request('ListListeners');
    const entries = (reply.ListenerList as Array<Record<string, unknown>>).filter((l) => String(l.ProgName).startsWith('&'));
    assert.equal(entries.length, 1);
    assert.equal(entries[0]!.ProgName, '&'.repeat(CLIENT_STRING_MAX));
    assert.equal((entries[0]!.BundleID as string).length, CLIENT_STRING_MAX);
    assert.match(entries[0]!['ID String'] as string, new RegExp(`^\\d+-&{${CLIENT_STRING_MAX}}$`));
  } finally {
    listener.close();
    asker.close();
  }
});

test('a ListListeners reply that could pass the hard cap closes the asker before it is built; listeners and others are unharmed', async () => {
  const { daemon, socketPath } = await startDaemon({ limits: { replyHighWater: 16 * 1024, replyMax: 16 * 1024 } });
  const listeners: RawClient[] = [];
  const lines: string[] = [];
  try {
    // 10 listeners with 256-character names of '&' (5 bytes each in XML): about 39 KiB of reply.
    for (let i = 0; i < 10; i++) {
      const l = await RawClient.open(socketPath);
      listeners.push(l);
      l.sendPlist('Listen', { ProgName: '&'.repeat(1000), BundleID: '<'.repeat(1000) });
      assert.equal((await l.nextPlist()).Number, 0);
    }
    setLogSink((line) => lines.push(line));
    const asker = await RawClient.open(socketPath);
    asker.sendPlist('ListListeners');
    await until('the asker is closed', () => asker.closed);
    assert.ok(lines.some((l) => /ListListeners reply of up to \d+ bytes \(10 listeners\) is over the reply cap of 16384; closing the client/.test(l)), lines.join('\n'));
    // Everyone else is served as before.
    const other = await RawClient.open(socketPath);
    assert.ok(Array.isArray((await other.request('ListDevices')).DeviceList));
    other.close();
    assert.ok(listeners.every((l) => !l.closed));
    await until('only the listeners are left', () => daemon.stats().clients === 10);
  } finally {
    setLogSink((line) => process.stderr.write(line + '\n'));
    for (const l of listeners) l.close();
  }
});

test('listenersReplyBytesAtMost is never below what the reply encodes to', () => {
  const names = ['idevice_id', '&'.repeat(CLIENT_STRING_MAX), '<>\r&é\u{1F600}', '', 'a'.repeat(CLIENT_STRING_MAX)];
  for (let k = 1; k <= names.length; k++) {
    const list = names.slice(0, k).map((name, i) => ({ idString: `${i + 1}-${name}`, progName: name, bundleId: `${name}.bundle`, libUSBMuxVersion: 3 }));
    const encoded = encodeClientMessage({ kind: 'plist', tag: 1, version: 1, plist: listenersReply(list) });
    assert.ok(listenersReplyBytesAtMost(list) >= encoded.length, `${k} listeners: bound ${listenersReplyBytesAtMost(list)} < ${encoded.length}`);
  }
});

test('clientString cuts at CLIENT_STRING_MAX code units and never inside a surrogate pair', () => {
  assert.equal(clientString('idevice_id'), 'idevice_id');
  assert.equal(clientString('x'.repeat(1000)).length, CLIENT_STRING_MAX);
  const pairAtEdge = 'x'.repeat(CLIENT_STRING_MAX - 1) + '\u{1F600}tail';
  assert.equal(clientString(pairAtEdge), 'x'.repeat(CLIENT_STRING_MAX - 1));
});
