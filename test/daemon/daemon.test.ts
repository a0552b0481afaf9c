/**
 * The daemon over a real UNIX socket, with in-process simulated devices (the simulator's DeviceMux
 * and bench services on an InProcessLink, as `daemon --simulate` uses).
 */
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import { DeviceMux } from '../../src/sim/device-mux.js';
import { InProcessLink } from '../../src/sim/in-process-link.js';
import { serveBenchServices, encodeCount } from '../../src/sim/bench-services.js';
import { encodeClientMessage } from '../../src/protocol/client-message.js';
import { encodeBinaryPlist, decodeXmlPlist, isPlistDict } from '../../src/protocol/plist.js';
import { RawClient } from './helpers/raw-client.js';

let dir: string;
let daemon: MuxDaemon;
let socketPath: string;
const clients: RawClient[] = [];
const links: InProcessLink[] = [];
let serial = 0x100;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-daemon-test-'));
  socketPath = join(dir, 'usbmuxd');
  daemon = new MuxDaemon({ socketPath, pairDir: join(dir, 'lockdown'), preflight: false });
  await daemon.start();
});

after(async () => {
  await daemon.close();
  await rm(dir, { recursive: true, force: true });
});

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  for (const l of links.splice(0)) l.unplug();
});

async function client(): Promise<RawClient> {
  const c = await RawClient.open(socketPath);
  clients.push(c);
  return c;
}

/** Plugs a simulated device (echo 7, sink 9, source 19) and waits until it is listed. */
async function plugDevice(): Promise<{ id: number; udid: string; link: InProcessLink; mux: DeviceMux }> {
  const mux = new DeviceMux();
  serveBenchServices(mux);
  const udid = `00008030-${(serial++).toString(16).toUpperCase().padStart(16, '0')}`;
  const link = new InProcessLink(mux, { serialNumber: udid, productId: 0x12a8, locationId: 0x10000 + serial, speed: 480_000_000 }, () => undefined);
  links.push(link);
  const entry = daemon.addLink(link)!;
  await entry.session.ready;
  while (entry.state !== 'visible') await new Promise((r) => setImmediate(r));
  return { id: entry.id, udid, link, mux };
}

function hex(s: string): Buffer {
  return Buffer.from(s.replace(/\s+/g, ''), 'hex');
}

function u32le(n: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b.toString('hex');
}

test('serves the socket with mode 0666 as usbmuxd does', async () => {
  const st = await stat(socketPath);
  assert.ok(st.isSocket());
  assert.equal(st.mode & 0o777, 0o666);
});

test('answers a binary-only LISTEN with a binary Result and DEVICE_ADD, and a binary CONNECT reaches the echo port', async () => {
  const dev = await plugDevice();
  const listener = await client();
  listener.write(hex('10000000 00000000 03000000 02000000'));
  const result = await listener.next();
  assert.deepEqual(result, { kind: 'result', tag: 2, result: 0 });
  let add = await listener.next();
  while (add.kind === 'device-add' && add.device.deviceId !== dev.id) add = await listener.next();
  assert.equal(add.kind, 'device-add');
  if (add.kind === 'device-add') {
    assert.equal(add.device.serialNumber, dev.udid);
    assert.equal(add.device.productId, 0x12a8);
  }
  const tunnel = await client();
  tunnel.write(hex(`18000000 00000000 02000000 03000000 ${u32le(dev.id)} 0007 0000`));
  assert.deepEqual(await tunnel.next(), { kind: 'result', tag: 3, result: 0 });
  tunnel.startTunnel();
  tunnel.write(Buffer.from('binary echo'));
  assert.equal((await tunnel.readTunnel(11)).toString(), 'binary echo');
  // Unplugging sends a binary DEVICE_REMOVE to the binary listener.
  dev.link.unplug();
  let rem = await listener.next();
  while (rem.kind !== 'device-remove') rem = await listener.next();
  assert.equal(rem.deviceId, dev.id);
});

test('lists devices over plist with usbmuxd Properties', async () => {
  const dev = await plugDevice();
  const c = await client();
  const reply = await c.request('ListDevices');
  const list = reply.DeviceList as Array<Record<string, unknown>>;
  const mine = list.find((d) => d.DeviceID === dev.id)!;
  assert.equal(mine.MessageType, 'Attached');
  const props = mine.Properties as Record<string, unknown>;
  assert.equal(props.SerialNumber, dev.udid);
  assert.equal(props.ConnectionType, 'USB');
  assert.equal(props.ConnectionSpeed, 480_000_000);
  assert.equal(props.ProductID, 0x12a8);
  assert.equal(props.DeviceID, dev.id);
});

test('sends Attached, Detached and Paired events to a plist listener', async () => {
  const listener = await client();
  const r = await listener.request('Listen');
  assert.deepEqual(r, { MessageType: 'Result', Number: 0 });
  const dev = await plugDevice();
  let ev = await listener.nextPlist();
  while (!(ev.MessageType === 'Attached' && ev.DeviceID === dev.id)) ev = await listener.nextPlist();
  // SavePairRecord with the device's ID announces Paired to listeners.
  const saver = await client();
  const record = encodeBinaryPlist({ HostID: 'ABC', SystemBUID: 'X' });
  const saved = await saver.request('SavePairRecord', { PairRecordID: dev.udid, PairRecordData: record, DeviceID: dev.id });
  assert.deepEqual(saved, { MessageType: 'Result', Number: 0 });
  ev = await listener.nextPlist();
  assert.deepEqual(ev, { MessageType: 'Paired', DeviceID: dev.id });
  dev.link.unplug();
  ev = await listener.nextPlist();
  assert.deepEqual(ev, { MessageType: 'Detached', DeviceID: dev.id });
});

test('connects over plist with a byte-swapped PortNumber and forwards bytes sent right behind the Connect', async () => {
  const dev = await plugDevice();
  const c = await client();
  // Connect and the first tunnel bytes in one write: usbmuxd would parse them as a command (§6.7).
  const connect = encodeClientMessage({
    kind: 'plist',
    tag: 9,
    version: 1,
    plist: { MessageType: 'Connect', DeviceID: dev.id, PortNumber: 0x0700, ProgName: 'early' },
  });
  c.write(Buffer.concat([connect, Buffer.from('early bytes')]));
  const m = await c.next();
  assert.equal(m.kind, 'plist');
  if (m.kind === 'plist') {
    assert.equal(m.tag, 9);
    assert.deepEqual(m.plist, { MessageType: 'Result', Number: 0 });
  }
  c.startTunnel();
  assert.equal((await c.readTunnel(11)).toString(), 'early bytes');
  const data = randomBytes(1_000_000);
  c.write(data);
  assert.ok((await c.readTunnel(data.length)).equals(data));
});

test('answers a refused Connect with 3 and keeps taking requests on the same socket', async () => {
  const dev = await plugDevice();
  const c = await client();
  assert.deepEqual(await c.request('Connect', { DeviceID: dev.id, PortNumber: 0x1111 }), { MessageType: 'Result', Number: 3 });
  assert.deepEqual(await c.request('Connect', { DeviceID: 999999, PortNumber: 0x0700 }), { MessageType: 'Result', Number: 2 });
  assert.deepEqual(await c.request('Connect', { PortNumber: 0x0700 }), { MessageType: 'Result', Number: 2 });
  assert.deepEqual(await c.request('Connect', { DeviceID: dev.id }), { MessageType: 'Result', Number: 1 });
  const list = await c.request('ListDevices');
  assert.ok(Array.isArray(list.DeviceList));
});

test('lists each listener with its own ID String', async () => {
  const a = await client();
  await a.request('Listen');
  const b = await client();
  b.sendPlist('Listen');
  await b.nextPlist();
  const asker = await client();
  const reply = await asker.request('ListListeners');
  const ids = (reply.ListenerList as Array<Record<string, unknown>>).map((l) => l['ID String'] as string);
  assert.ok(ids.length >= 2);
  assert.equal(new Set(ids).size, ids.length, 'every listener has its own number');
  for (const id of ids) assert.match(id, /^\d+-muxwire-test$/);
  const entry = (reply.ListenerList as Array<Record<string, unknown>>)[0]!;
  assert.equal(entry.Blacklisted, false);
  assert.equal(entry.ConnType, 0);
  assert.equal(entry.kLibUSBMuxVersion, 3);
});

test('reads a stable 36-character upper-case SystemBUID', async () => {
  const c = await client();
  const a = await c.request('ReadBUID');
  const b = await c.request('ReadBUID');
  assert.match(a.BUID as string, /^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$/);
  assert.equal(a.BUID, b.BUID);
});

test('saves, reads and deletes pair records, answering errno numbers as usbmuxd', async () => {
  const c = await client();
  const id = 'AAAAAAAA-BBBBBBBBBBBBBBBB';
  assert.deepEqual(await c.request('ReadPairRecord', { PairRecordID: id }), { MessageType: 'Result', Number: 2 });
  const record = encodeBinaryPlist({ HostID: 'H', DeviceCertificate: Buffer.from('cert') });
  assert.deepEqual(await c.request('SavePairRecord', { PairRecordID: id, PairRecordData: record }), { MessageType: 'Result', Number: 0 });
  const read = await c.request('ReadPairRecord', { PairRecordID: id });
  const data = read.PairRecordData as Buffer;
  assert.ok(data.subarray(0, 5).toString() === '<?xml', 'stored as XML like usbmuxd');
  const parsed = decodeXmlPlist(data);
  assert.ok(isPlistDict(parsed));
  assert.equal(parsed.HostID, 'H');
  assert.deepEqual(await c.request('DeletePairRecord', { PairRecordID: id }), { MessageType: 'Result', Number: 0 });
  assert.deepEqual(await c.request('DeletePairRecord', { PairRecordID: id }), { MessageType: 'Result', Number: 2 });
  // Ids that would leave the directory, or no id at all: EINVAL.
  for (const bad of ['../escape', 'a/b', '', '..', 'x\u0000y']) {
    assert.deepEqual(await c.request('SavePairRecord', { PairRecordID: bad, PairRecordData: record }), { MessageType: 'Result', Number: 22 }, bad);
    assert.deepEqual(await c.request('ReadPairRecord', { PairRecordID: bad }), { MessageType: 'Result', Number: 22 }, bad);
  }
  assert.deepEqual(await c.request('ReadPairRecord', {}), { MessageType: 'Result', Number: 22 });
  assert.deepEqual(await c.request('SavePairRecord', { PairRecordID: id, PairRecordData: Buffer.from('not a plist') }), { MessageType: 'Result', Number: 22 });
});

test('answers BADVERSION to a header version of 2', async () => {
  const c = await client();
  c.write(hex('10000000 02000000 03000000 05000000'));
  assert.deepEqual(await c.next(), { kind: 'result', tag: 5, result: 6 });
});

test('answers a malformed plist, a missing MessageType and an unknown one with a non-zero Result', async () => {
  const c = await client();
  const body = Buffer.from('<?xml version="1.0"?><plist><dict><key>MessageType</key>');
  const header = Buffer.alloc(16);
  header.writeUInt32LE(16 + body.length, 0);
  header.writeUInt32LE(1, 4);
  header.writeUInt32LE(8, 8);
  header.writeUInt32LE(7, 12);
  c.write(Buffer.concat([header, body]));
  assert.deepEqual(await c.nextPlist(), { MessageType: 'Result', Number: 1 });
  c.write(encodeClientMessage({ kind: 'plist', tag: 8, version: 1, plist: { ProgName: 'x' } }));
  assert.deepEqual(await c.nextPlist(), { MessageType: 'Result', Number: 1 });
  assert.deepEqual(await c.request('Frobnicate'), { MessageType: 'Result', Number: 1 });
  // A binary message type the daemon does not take (7 is unused): BADCOMMAND, in plist now.
  c.write(hex('10000000 00000000 07000000 0a000000'));
  assert.deepEqual(await c.nextPlist(), { MessageType: 'Result', Number: 1 });
});

test('closes only the client that sends an impossible length', async () => {
  const bad = await client();
  const good = await client();
  bad.write(hex('01000100 01000000 08000000 01000000')); // 65537 bytes: over the 65536 limit
  await bad.waitClosed();
  const reply = await good.request('ReadBUID');
  assert.equal(typeof reply.BUID, 'string');
});

test('keeps daemon memory bounded while a device streams to a client that does not read', async () => {
  const dev = await plugDevice();
  const c = await client();
  assert.deepEqual(await c.request('Connect', { DeviceID: dev.id, PortNumber: 0x1300 }), { MessageType: 'Result', Number: 0 });
  c.startTunnel();
  c.socket.pause();
  c.write(encodeCount(64 * 1024 * 1024));
  let max = 0;
  // Watch for a while after the device has started sending (the loop is a hang guard too).
  for (let i = 0, deadline = Date.now() + 20_000; (i < 40 || max === 0) && Date.now() < deadline; i++) {
    await new Promise((r) => setTimeout(r, 10));
    const s = daemon.stats();
    max = Math.max(max, s.rxQueued + s.readableBuffered);
  }
  // The connection's queue is bounded by the 128 KiB window, its stream buffer by highWaterMark.
  assert.ok(max <= 131072 + 131072 + 65536, `buffered ${max}`);
  assert.ok(max > 0, 'the device did send');
});

test('closes the clients of a device unplugged mid-transfer within the flush guard, and serves the next request', async () => {
  const dev = await plugDevice();
  const c = await client();
  assert.deepEqual(await c.request('Connect', { DeviceID: dev.id, PortNumber: 0x1300 }), { MessageType: 'Result', Number: 0 });
  c.startTunnel();
  c.write(encodeCount(512 * 1024 * 1024));
  await c.readTunnel(100_000);
  const slow = await client();
  assert.deepEqual(await slow.request('Connect', { DeviceID: dev.id, PortNumber: 0x1300 }), { MessageType: 'Result', Number: 0 });
  slow.startTunnel();
  slow.write(encodeCount(512 * 1024 * 1024));
  await slow.readTunnel(10);
  slow.socket.pause(); // this one stops reading: the 1 s guard must still close it
  const before = daemon.stats().clients;
  dev.link.unplug();
  await c.waitClosed(5000);
  // The paused client cannot see the close until it reads; the daemon's side must be gone.
  const deadline = Date.now() + 5000;
  while (daemon.stats().clients > before - 2) {
    assert.ok(Date.now() < deadline, 'the stalled client was not closed');
    await new Promise((r) => setTimeout(r, 20));
  }
  slow.socket.resume();
  await slow.waitClosed(5000);
  const next = await client();
  const list = await next.request('ListDevices');
  assert.ok(!(list.DeviceList as Array<Record<string, unknown>>).some((d) => d.DeviceID === dev.id));
});

test('relays 32 devices with 16 client connections each at once', async () => {
  const devs = await Promise.all(Array.from({ length: 32 }, () => plugDevice()));
  const jobs: Array<Promise<void>> = [];
  // The connections are all open at once; only their accept is paced, as a UNIX listen backlog
  // that overflows refuses at once (EAGAIN) rather than queueing.
  let connecting = 0;
  const gate = async (): Promise<RawClient> => {
    while (connecting >= 64) await new Promise((r) => setTimeout(r, 1));
    connecting++;
    try {
      return await client();
    } finally {
      connecting--;
    }
  };
  for (const dev of devs) {
    for (let i = 0; i < 16; i++) {
      jobs.push(
        (async () => {
          const c = await gate();
          const r = await c.request('Connect', { DeviceID: dev.id, PortNumber: 0x0700 });
          assert.equal(r.Number, 0);
          c.startTunnel();
          const data = randomBytes(8192 + i * 256);
          c.write(data);
          assert.ok((await c.readTunnel(data.length, 60_000)).equals(data));
        })(),
      );
    }
  }
  await Promise.all(jobs);
  assert.equal(daemon.stats().connections, 32 * 16, 'all 512 tunnels were open at the end');
});

test('writes pair records with mode 0600', async () => {
  const c = await client();
  const id = 'MODECHECK-0000000000000001';
  await c.request('SavePairRecord', { PairRecordID: id, PairRecordData: encodeBinaryPlist({ A: 1 }) });
  const st = await stat(join(dir, 'lockdown', `${id}.plist`));
  assert.equal(st.mode & 0o777, 0o600);
  const text = await readFile(join(dir, 'lockdown', `${id}.plist`), 'utf8');
  assert.match(text, /<key>A<\/key>/);
});

test('answers requests a client sent before shutting down its side, then closes', async () => {
  const c = await client();
  c.sendPlist('ReadBUID');
  c.sendPlist('ListDevices');
  c.socket.end();
  const buid = await c.nextPlist();
  assert.equal(typeof buid.BUID, 'string');
  const list = await c.nextPlist();
  assert.ok(Array.isArray(list.DeviceList));
  await c.waitClosed();
});
