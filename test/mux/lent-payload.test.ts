/**
 * Payloads lent to a link that sends packets in parts (DeviceLink.sendPacketParts): the writer's
 * bytes go out as views, with no copy, and `onPayloadTaken` (which lets the daemon's ring reader
 * reuse their memory) hears of them only once the link has written them, always in write order,
 * even when copied packets are sent behind lent ones still out.
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { DeviceSession } from '../../src/mux/device-session.js';
import { MAX_PAYLOAD } from '../../src/mux/mux-connection.js';
import { TcpFlag } from '../../src/protocol/tcp-header.js';
import { decodeMuxHeader } from '../../src/protocol/mux-header.js';
import { LoopLink, type LoopPeer } from './helpers/loop-link.js';
import { ScriptedDevice } from './helpers/scripted-device.js';

const SYN = TcpFlag.SYN;
const ACK = TcpFlag.ACK;

/** A LoopLink that sends packets in parts, and holds each `done` until the test lets it go. */
class PartsLink extends LoopLink {
  /** Each call's parts as given (the views themselves), and its `done`, oldest first. */
  readonly calls: Array<{ head: Buffer; body: Buffer[]; done: (err?: Error) => void }> = [];

  constructor(peer: LoopPeer) {
    super(peer);
  }

  sendPacketParts(head: Buffer, body: readonly Buffer[], done: (err?: Error) => void): void {
    this.calls.push({ head, body: [...body], done });
    this.sendPacket(Buffer.concat([head, ...body]));
  }

  /** Lets the oldest `n` unfinished sends complete. */
  complete(n: number): void {
    for (const c of this.calls.splice(0, n)) c.done();
  }
}

const open: Array<{ session: DeviceSession; link: LoopLink }> = [];
afterEach(async () => {
  for (const { session, link } of open.splice(0)) {
    await session.close();
    link.close();
  }
});

async function setup() {
  const device = new ScriptedDevice();
  const link = new PartsLink(device);
  const session = new DeviceSession(link, { demux: 'stream' });
  open.push({ session, link });
  await session.ready;
  const accepted = device.waitFor((s) => s.flags === SYN).then((syn) => {
    device.send({ sport: syn.dport, dport: syn.sport, seq: 0, ack: 1, flags: SYN | ACK, window: 131072 });
    return syn;
  });
  const conn = await session.connect(7);
  const syn = await accepted;
  // The device ACKs every data packet at once with its full window.
  let received = 0;
  device.onSegment = (s) => {
    if (s.data.length === 0) return;
    received += s.data.length;
    device.send({ sport: syn.dport, dport: syn.sport, seq: 1, ack: 1 + received, flags: ACK, window: 131072 });
  };
  return { device, link, conn, received: () => received };
}

test('a bulk write goes out as views of the writer\'s own buffer, with a mux header that counts the whole packet', async () => {
  const { device, link, conn, received } = await setup();
  const payload = Buffer.alloc(3 * 65536);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 13 + (i >> 9)) & 0xff;
  conn.write(payload);
  await device.waitFor(() => received() === payload.length);
  assert.deepEqual(Buffer.concat(device.segments.filter((s) => s.data.length > 0).map((s) => s.data)), payload);
  assert.ok(link.calls.length >= 4, `${link.calls.length} packets lent`);
  for (const c of link.calls) {
    const length = c.head.length + c.body.reduce((n, b) => n + b.length, 0);
    assert.equal(decodeMuxHeader(c.head, 2).length, length, 'the mux header counts head and body');
    assert.ok(length - c.head.length <= MAX_PAYLOAD);
    // No copy: every part is memory of the buffer the writer gave.
    for (const b of c.body) assert.equal(b.buffer, payload.buffer);
  }
  link.complete(link.calls.length);
  conn.destroy();
});

test('onPayloadTaken hears of lent bytes only once the link has written them, and of copied bytes behind them in order', async () => {
  const { device, link, conn, received } = await setup();
  const told: number[] = [];
  conn.onPayloadTaken = (n) => told.push(n);
  const bulk = Buffer.alloc(MAX_PAYLOAD + 5000, 1);
  conn.write(bulk);
  await device.waitFor(() => received() === bulk.length);
  // One full packet lent, and its 5000-byte tail lent too (the end of a write goes at once):
  // nothing is told while the link still holds them.
  assert.equal(link.calls.length, 2);
  assert.deepEqual(told, []);
  // A short packet (copied, not lent) behind them waits for them.
  conn.write(Buffer.from('GetValue'));
  await device.waitFor(() => received() === bulk.length + 8);
  assert.deepEqual(told, [], 'a copied packet is not told ahead of the lent ones before it');
  link.complete(1);
  assert.deepEqual(told, [MAX_PAYLOAD]);
  link.complete(1);
  assert.deepEqual(told, [MAX_PAYLOAD, 5000, 8]);
  assert.equal(conn.bytesReleased, bulk.length + 8);
  // With nothing lent out, a copied packet is told at once.
  conn.write(Buffer.from('again'));
  await device.waitFor(() => received() === bulk.length + 13);
  assert.deepEqual(told, [MAX_PAYLOAD, 5000, 8, 5]);
  conn.destroy();
});
