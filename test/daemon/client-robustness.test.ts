/**
 * Clients that send nonsense: seeded random messages and bytes. The daemon answers or closes that
 * one client, never crashes or hangs, and keeps serving everybody else.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import { DeviceMux } from '../../src/sim/device-mux.js';
import { InProcessLink } from '../../src/sim/in-process-link.js';
import { serveBenchServices } from '../../src/sim/bench-services.js';
import { encodeClientMessage } from '../../src/protocol/client-message.js';
import { encodeXmlPlist } from '../../src/protocol/plist.js';
import { RawClient } from './helpers/raw-client.js';
import { seededRandom } from '../../src/seeded-random.js';

let dir: string;
let daemon: MuxDaemon;
let socketPath: string;
let link: InProcessLink;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-client-fuzz-'));
  socketPath = join(dir, 'usbmuxd');
  daemon = new MuxDaemon({ socketPath, pairDir: join(dir, 'lockdown'), preflight: false });
  await daemon.start();
  const mux = new DeviceMux();
  serveBenchServices(mux);
  link = new InProcessLink(mux, { serialNumber: '00008030-0000000000000FFF', productId: 0x12a8, locationId: 1, speed: 480_000_000 }, () => undefined);
  const entry = daemon.addLink(link)!;
  await entry.session.ready;
});

after(async () => {
  link.unplug();
  await daemon.close();
  await rm(dir, { recursive: true, force: true });
});

/** One random message: valid length, random version/type/tag, a payload of one of several kinds. */
function randomMessage(rand: () => number): Buffer {
  const kind = Math.floor(rand() * 6);
  let payload: Buffer;
  if (kind === 0) payload = Buffer.alloc(Math.floor(rand() * 64), Math.floor(rand() * 256));
  else if (kind === 1) payload = encodeXmlPlist({ MessageType: ['Listen', 'Connect', 'ListDevices', 'ReadPairRecord', 'SavePairRecord', 'DeletePairRecord', 'ReadBUID', 'ListListeners', 'X'][Math.floor(rand() * 9)]!, DeviceID: Math.floor(rand() * 4), PortNumber: Math.floor(rand() * 65536), PairRecordID: ['', '..', 'a/b', 'OK-ID', 'x'][Math.floor(rand() * 5)]!, PairRecordData: Buffer.alloc(Math.floor(rand() * 10)) });
  else if (kind === 2) payload = encodeXmlPlist([1, 2, 3]);
  else if (kind === 3) payload = Buffer.from('<?xml version="1.0"?><plist><dict><key>MessageType</key><string>Conn');
  else if (kind === 4) payload = Buffer.alloc(8);
  else payload = Buffer.alloc(0);
  const header = Buffer.alloc(16);
  header.writeUInt32LE(16 + payload.length, 0);
  header.writeUInt32LE([0, 1, 1, 2, 0xffffffff][Math.floor(rand() * 5)]!, 4);
  header.writeUInt32LE([1, 2, 3, 4, 5, 6, 7, 8, 8, 8, 99][Math.floor(rand() * 11)]!, 8);
  header.writeUInt32LE(Math.floor(rand() * 2 ** 32), 12);
  return Buffer.concat([header, payload]);
}

test('answers or drops clients that send random messages, and keeps serving the others', async () => {
  const rand = seededRandom(99);
  const clients: RawClient[] = [];
  for (let c = 0; c < 40; c++) {
    const client = await RawClient.open(socketPath);
    clients.push(client);
    const parts: Buffer[] = [];
    for (let m = 0; m < 1 + Math.floor(rand() * 6); m++) parts.push(randomMessage(rand));
    // Some clients also send raw garbage after the messages (tunnel bytes or nonsense headers).
    if (rand() < 0.3) parts.push(Buffer.alloc(Math.floor(rand() * 100), 0xaa));
    const all = Buffer.concat(parts);
    // Sent in random pieces, as a real socket may deliver them.
    for (let off = 0; off < all.length; ) {
      const n = 1 + Math.floor(rand() * 40);
      client.write(all.subarray(off, off + n));
      off += n;
    }
  }
  await new Promise((r) => setTimeout(r, 300));
  for (const c of clients) c.close();
  // Somebody new is served normally.
  const probe = await RawClient.open(socketPath);
  const list = await probe.request('ListDevices');
  assert.equal((list.DeviceList as unknown[]).length, 1);
  const r = await probe.request('Connect', { DeviceID: daemon.registry.all()[0]!.id, PortNumber: 0x0700 });
  assert.equal(r.Number, 0);
  probe.startTunnel();
  probe.write(Buffer.from('still alive'));
  assert.equal((await probe.readTunnel(11)).toString(), 'still alive');
  probe.close();
  // Every fuzzed client is gone from the daemon once closed.
  for (let i = 0; i < 100 && daemon.stats().clients > 0; i++) await new Promise((r2) => setTimeout(r2, 10));
  assert.equal(daemon.stats().clients, 0);
});

test('answers each of many small requests in one write, in order', async () => {
  const c = await RawClient.open(socketPath);
  const msgs: Buffer[] = [];
  for (let tag = 1; tag <= 50; tag++) {
    msgs.push(encodeClientMessage({ kind: 'plist', tag, version: 1, plist: { MessageType: tag % 2 ? 'ReadBUID' : 'ListDevices' } }));
  }
  c.write(Buffer.concat(msgs));
  // ReadBUID waits for the disk and ListDevices does not, yet replies keep the request order.
  for (let tag = 1; tag <= 50; tag++) {
    const m = await c.next();
    assert.equal(m.kind, 'plist');
    assert.equal(m.tag, tag);
    if (m.kind === 'plist') assert.ok(tag % 2 ? typeof m.plist.BUID === 'string' : Array.isArray(m.plist.DeviceList));
  }
  c.close();
});
