/**
 * The demuxer's sinks (native/demuxer.h, "Sinks"): a connection's payloads sent straight to a
 * socket while direct sends are on and its ring is empty; what the socket does not take goes to the
 * ring, in order, and turns direct sends off. The TypeScript twin has no sinks and says so.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test, type TestContext } from 'node:test';
import { DEMUX_EVENT_FIELDS, DemuxEvent, DemuxField } from '../../src/accel/demux-core.js';
import { JsAccel } from '../../src/accel/js-accel.js';
import { NativeAccel } from '../../src/accel/native-accel.js';
import { encodeMuxPacket, MuxProtocol } from '../../src/protocol/mux-header.js';
import { encodeTcpHeader, TcpFlag } from '../../src/protocol/tcp-header.js';
import { nativeBinding } from './native-under-test.js';

const dir = mkdtempSync(join(tmpdir(), 'muxwire-sink-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

async function socketPair(): Promise<{ host: Socket; client: Socket; close: () => void }> {
  const path = join(dir, `s${++n}`);
  const server = createServer().listen(path);
  await once(server, 'listening');
  const accepted = once(server, 'connection');
  const client = connect(path);
  const [host] = (await accepted) as [Socket];
  return { host, client, close: () => (host.destroy(), client.destroy(), server.close()) };
}

function fdOf(socket: Socket): number {
  return (socket as unknown as { _handle: { fd: number } })._handle.fd;
}

function data(payload: Buffer, flags: number = TcpFlag.ACK): Buffer {
  const header = encodeTcpHeader({ sport: 7, dport: 1, seq: 0, ack: 0, flags, window: 131072 });
  return encodeMuxPacket(2, { protocol: MuxProtocol.TCP, txSeq: 0, rxSeq: 0 }, header, payload);
}

/**
 * A native demuxer with one connection whose sink is a socket, direct sends on; `received()` lets
 * go of the sink, ends the socket and resolves with everything the client got.
 */
async function directSink(t: TestContext, binding: NonNullable<ReturnType<typeof nativeBinding>>) {
  const d = new NativeAccel(binding).createDemuxer({ version: 2 });
  const slot = d.openConnection(7, 1);
  const { host, client, close } = await socketPair();
  t.after(close);
  assert.equal(d.attachSink(slot, fdOf(host)), true);
  d.setDirect(slot, true);
  const received = async (): Promise<string> => {
    d.detachSink(slot);
    host.end();
    const chunks: Buffer[] = [];
    for await (const chunk of client) chunks.push(chunk as Buffer);
    d.closeConnection(slot);
    return Buffer.concat(chunks).toString();
  };
  return { d, slot, received };
}

async function readAll(client: Socket, bytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let got = 0;
  while (got < bytes) {
    const chunk = client.read() as Buffer | null;
    if (chunk === null) {
      await once(client, 'readable');
      continue;
    }
    chunks.push(chunk);
    got += chunk.length;
  }
  return Buffer.concat(chunks);
}

test('native: payloads go straight to the sink while the ring is empty, the rest to the ring in order', async (t) => {
  const binding = nativeBinding(t);
  if (!binding) return;
  const d = new NativeAccel(binding).createDemuxer({ version: 2 });
  const slot = d.openConnection(7, 1, 1 << 20);
  const { host, client, close } = await socketPair();
  t.after(close);
  client.pause();
  assert.equal(d.attachSink(slot, fdOf(host)), true);
  d.push(data(Buffer.from('not yet ')));
  assert.equal(d.events[DemuxField.SENT], 0, 'direct sends start off');
  assert.equal(d.unread(slot), 8);
  d.consume(slot, 8);
  d.setDirect(slot, true);
  d.push(data(Buffer.from('hello')));
  assert.equal(d.events[DemuxField.KIND], DemuxEvent.TCP_DATA);
  assert.equal(d.events[DemuxField.SENT], 5);
  assert.equal(d.unread(slot), 0, 'nothing copied into the ring');
  assert.equal((await readAll(client, 5)).toString(), 'hello');

  // Fill the socket: the first payload it cannot take whole is split, and from then on everything
  // goes to the ring, even when the socket would take it, until direct sends are turned back on.
  const block = Buffer.alloc(49116);
  let total = 0;
  let ringFrom = -1;
  for (let i = 0; i < 200 && ringFrom < 0; i++) {
    block.fill(i & 0xff);
    d.push(data(block));
    const sent = d.events[DemuxField.SENT]!;
    total += block.length;
    if (sent < block.length) ringFrom = total - block.length + sent;
  }
  assert.ok(ringFrom >= 0, 'the socket filled up');
  assert.equal(d.unread(slot), total - ringFrom);
  d.push(data(Buffer.from('after')));
  assert.equal(d.events[DemuxField.SENT], 0, 'direct sends are off while the ring holds bytes');
  const inSocket = await readAll(client, ringFrom);
  for (let k = 0; k < ringFrom; k += 49116) assert.equal(inSocket[k], (k / 49116) & 0xff);
  assert.equal(d.unread(slot), total - ringFrom + 5);
  d.closeConnection(slot);
});

test('native: an RST\'s payload (its reason text) is neither sent to the sink nor stored', async (t) => {
  const binding = nativeBinding(t);
  if (!binding) return;
  const { d, slot, received } = await directSink(t, binding);
  d.push(data(Buffer.from('the data')));
  assert.equal(d.events[DemuxField.SENT], 8);
  // A device ends a connection with RST and a reason, as the simulator's services do (§3.7).
  d.push(data(Buffer.from('connection closed by the device service'), TcpFlag.RST | TcpFlag.ACK));
  assert.equal(d.events[DemuxField.KIND], DemuxEvent.TCP, 'reported as a TCP packet without stored data');
  assert.equal(d.events[DemuxField.PAYLOAD_LENGTH], 39, 'its length is still reported');
  assert.equal(d.events[DemuxField.SENT], 0);
  assert.equal(d.unread(slot), 0);
  assert.equal(await received(), 'the data', 'the client got exactly the data, then EOF');
});

test('native: nothing behind an RST or a FIN goes to the sink, even in the same transfer', async (t) => {
  const binding = nativeBinding(t);
  if (!binding) return;
  for (const end of [TcpFlag.RST | TcpFlag.ACK, TcpFlag.FIN | TcpFlag.ACK]) {
    const { d, received } = await directSink(t, binding);
    // One transfer: data, the end (a FIN's payload is data, an RST's is its reason), a late packet.
    assert.equal(d.push(Buffer.concat([data(Buffer.from('before ')), data(Buffer.from('end'), end), data(Buffer.from('late'))])), 3);
    const sent = [0, 1, 2].map((i) => d.events[i * DEMUX_EVENT_FIELDS + DemuxField.SENT]);
    assert.deepEqual(sent, [7, end & TcpFlag.FIN ? 3 : 0, 0]);
    assert.equal(await received(), end & TcpFlag.FIN ? 'before end' : 'before ');
  }
});

test('native: only a stream socket can be a sink; closing the slot closes the duplicate', async (t) => {
  const binding = nativeBinding(t);
  if (!binding) return;
  const d = new NativeAccel(binding).createDemuxer({ version: 2 });
  const slot = d.openConnection(7, 1);
  const file = openSync('/dev/null', 'w');
  try {
    assert.equal(d.attachSink(slot, file), false);
  } finally {
    closeSync(file);
  }
  const { host, client, close } = await socketPair();
  t.after(close);
  assert.equal(d.attachSink(slot, fdOf(host)), true);
  const ended = once(client, 'end');
  client.resume();
  host.destroy();
  // The duplicate still holds the socket open until the slot lets go of it.
  d.closeConnection(slot);
  await ended;
});

test('TypeScript twin: no sinks; payloads always go to the ring', async (t) => {
  const d = new JsAccel().createDemuxer({ version: 2 });
  const slot = d.openConnection(7, 1);
  const { host, close } = await socketPair();
  t.after(close);
  assert.equal(d.attachSink(slot, fdOf(host)), false);
  d.setDirect(slot, true);
  d.push(data(Buffer.from('hello')));
  assert.equal(d.events[DemuxField.SENT], 0);
  assert.equal(d.unread(slot), 5);
});

test('TypeScript twin: an RST\'s payload is not stored in the ring', () => {
  const d = new JsAccel().createDemuxer({ version: 2 });
  const slot = d.openConnection(7, 1);
  d.push(data(Buffer.from('kept')));
  d.push(data(Buffer.from('reason'), TcpFlag.RST));
  assert.equal(d.events[DemuxField.KIND], DemuxEvent.TCP);
  assert.equal(d.events[DemuxField.PAYLOAD_LENGTH], 6);
  assert.equal(d.unread(slot), 4);
});
