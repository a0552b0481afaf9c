/**
 * VusbLink and enumeration against misbehaving devices: a raw device end written with the codec
 * in each test, so it can break the rules a SimUsbDevice keeps.
 */
import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  encodeBulkHeader,
  encodeControlDone,
  encodeHello,
  VusbDecoder,
  VusbMessageType,
  type VusbControl,
} from '../../src/protocol/vusb-wire.js';
import { VusbLink } from '../../src/transport/vusb-link.js';
import { VusbSource } from '../../src/transport/vusb-source.js';
import { enumerateMuxDevice } from '../../src/transport/vusb-enumerate.js';
import { iphoneDescriptors } from '../../src/sim/usb-descriptors.js';
import { log } from '../../src/log.js';
import { isMuxwireError } from '../../src/errors.js';

let dir: string;
let n = 0;
const servers: Server[] = [];
const sockets: Socket[] = [];
const links: VusbLink[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mw-vlink-'));
});
afterEach(async () => {
  for (const l of links.splice(0)) l.close();
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((s) => new Promise<void>((r) => s.close(() => r()))));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

type OnControl = (socket: Socket, msg: VusbControl) => void;

/** A raw device: sends `hello` on connect, hands each CONTROL to `onControl`. */
async function rawDevice(hello: Buffer, onControl: OnControl): Promise<string> {
  const path = join(dir, `raw${++n}.vusb`);
  const server = createServer((socket) => {
    sockets.push(socket);
    const decoder = new VusbDecoder();
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      decoder.push(chunk);
      for (let m = decoder.next(); m; m = decoder.next()) if (m.type === VusbMessageType.CONTROL) onControl(socket, m);
    });
    socket.write(hello);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(path, r));
  return path;
}

/** Answers like an iPhone from the simulator's descriptor set (the parts enumeration uses). */
function iphoneAnswer(socket: Socket, msg: VusbControl): void {
  const set = iphoneDescriptors({ productId: 0x12a8, serialNumber: '00008120000A2D910EDB401E', speed: 'high' });
  const { bRequest, wValue, wLength } = msg.setup;
  let data: Buffer | undefined;
  if (bRequest === 6) {
    const type = wValue >> 8;
    const index = wValue & 0xff;
    if (type === 1) data = set.device;
    else if (type === 2) data = set.configurations[index]?.descriptor;
    else if (type === 3) data = index === 0 ? Buffer.from([4, 3, 9, 4]) : Buffer.concat([Buffer.from([50, 3]), Buffer.from(set.strings.get(index) ?? '', 'utf16le')]);
  } else if (bRequest === 8) data = Buffer.from([0]);
  else if (bRequest === 9 || bRequest === 11) data = Buffer.alloc(0);
  if (data === undefined) socket.write(encodeControlDone(msg.id, -9));
  else socket.write(encodeControlDone(msg.id, 0, data.subarray(0, wLength)));
}

async function link(path: string, controlTimeoutMs = 5000): Promise<{ link: VusbLink; ended: Promise<Error | undefined>; socket: Socket }> {
  const socket = createConnection(path);
  await new Promise<void>((r, j) => socket.once('connect', r).once('error', j));
  let resolveEnded!: (e: Error | undefined) => void;
  const ended = new Promise<Error | undefined>((r) => (resolveEnded = r));
  const l = new VusbLink(socket, { inTransferSize: 16384, inTransfersInFlight: 3, controlTimeoutMs, log }, resolveEnded);
  links.push(l);
  return { link: l, ended, socket };
}

test('a device speaking another wire version is dropped with MUXWIRE_ERR_VUSB_VERSION', async () => {
  const path = await rawDevice(encodeHello(3, 2), iphoneAnswer);
  const { link: l, ended } = await link(path);
  await assert.rejects(l.hello(5000), (e) => isMuxwireError(e, 'MUXWIRE_ERR_VUSB_VERSION'));
  assert.ok(isMuxwireError(await ended, 'MUXWIRE_ERR_VUSB_VERSION'));
});

test('enumeration reads the same identity from a raw iPhone as from a SimUsbDevice', async () => {
  const path = await rawDevice(encodeHello(3), iphoneAnswer);
  const { link: l } = await link(path);
  assert.equal(await l.hello(5000), 3);
  const found = await enumerateMuxDevice(l, log);
  assert.ok(found);
  assert.equal(found.udid, '00008120-000A2D910EDB401E');
  assert.equal(found.configurationValue, 4);
  assert.deepEqual(found.mux, { interfaceNumber: 1, outEndpoint: 0x04, inEndpoint: 0x85, maxPacketSize: 512 });
});

test('a reply longer than wLength fails the transfer as an overflow', async () => {
  const path = await rawDevice(encodeHello(3), (socket, msg) => socket.write(encodeControlDone(msg.id, 0, Buffer.alloc(msg.setup.wLength + 1))));
  const { link: l } = await link(path);
  await l.hello(5000);
  await assert.rejects(l.control({ bmRequestType: 0x80, bRequest: 6, wValue: 0x0100, wIndex: 0, wLength: 18 }),
    (e) => isMuxwireError(e, 'MUXWIRE_ERR_USB_TRANSFER') && (e as { detail?: unknown }).detail === -8);
});

test('a stall and another libusb status are told apart', async () => {
  let status = -9;
  const path = await rawDevice(encodeHello(3), (socket, msg) => socket.write(encodeControlDone(msg.id, status)));
  const { link: l } = await link(path);
  await l.hello(5000);
  const setup = { bmRequestType: 0x80, bRequest: 6, wValue: 0x0100, wIndex: 0, wLength: 18 };
  await assert.rejects(l.control(setup), (e) => isMuxwireError(e, 'MUXWIRE_ERR_USB_STALL'));
  status = -1;
  await assert.rejects(l.control(setup), (e) => isMuxwireError(e, 'MUXWIRE_ERR_USB_TRANSFER'));
});

test('an unanswered control transfer times out and closes the link', async () => {
  const path = await rawDevice(encodeHello(3), () => undefined);
  const { link: l, ended } = await link(path, 100);
  await l.hello(5000);
  await assert.rejects(l.control({ bmRequestType: 0x80, bRequest: 6, wValue: 0x0100, wIndex: 0, wLength: 18 }),
    (e) => isMuxwireError(e, 'MUXWIRE_ERR_TIMEOUT'));
  assert.ok(isMuxwireError(await ended, 'MUXWIRE_ERR_TIMEOUT'));
  assert.equal(l.closed, true);
});

test('a CONTROL_DONE nobody asked for is a protocol error', async () => {
  const path = await rawDevice(Buffer.concat([encodeHello(3), encodeControlDone(77, 0)]), iphoneAnswer);
  const { ended } = await link(path);
  assert.ok(isMuxwireError(await ended, 'MUXWIRE_ERR_VUSB_BAD_MESSAGE'));
});

test('an oversized message length from the device closes the link with MUXWIRE_ERR_BAD_LENGTH', async () => {
  const header = Buffer.alloc(5);
  header.writeUInt32LE(0x7fffffff, 0);
  header[4] = VusbMessageType.BULK_IN;
  const path = await rawDevice(Buffer.concat([encodeHello(3), header]), iphoneAnswer);
  const { ended } = await link(path);
  assert.ok(isMuxwireError(await ended, 'MUXWIRE_ERR_BAD_LENGTH'));
});

test('IN data on an endpoint with no transfer queued is not delivered', async () => {
  const path = await rawDevice(encodeHello(3), iphoneAnswer);
  const { link: l } = await link(path);
  await l.hello(5000);
  l.bindMux({ serialNumber: 'x', productId: 0x12a8, locationId: 0x10001, speed: 480_000_000 }, { outEndpoint: 0x04, inEndpoint: 0x85, maxPacketSize: 512 });
  const got: string[] = [];
  l.start({ onData: (c) => got.push(String(c)), onClose: () => undefined });
  const device = sockets[0]!;
  device.write(encodeBulkHeader(VusbMessageType.BULK_IN, 0x81, 3));
  device.write('ptp');
  device.write(encodeBulkHeader(VusbMessageType.BULK_IN, 0x85, 3));
  device.write('mux');
  while (got.length === 0) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(got, ['mux']);
});

test('a consumer whose onData throws ends the link instead of crashing the process', async () => {
  const path = await rawDevice(encodeHello(3), iphoneAnswer);
  const { link: l, ended } = await link(path);
  await l.hello(5000);
  l.bindMux({ serialNumber: 'x', productId: 0x12a8, locationId: 0x10001, speed: 480_000_000 }, { outEndpoint: 0x04, inEndpoint: 0x85, maxPacketSize: 512 });
  let closeErr: Error | undefined;
  l.start({ onData: () => { throw new Error('consumer bug'); }, onClose: (e) => (closeErr = e) });
  sockets[0]!.write(Buffer.concat([encodeBulkHeader(VusbMessageType.BULK_IN, 0x85, 1), Buffer.from('x')]));
  assert.match(String((await ended)?.message), /consumer bug/);
  assert.match(String(closeErr?.message), /consumer bug/);
});

test('a source leaves a device that fails enumeration alone and attaches nothing', async () => {
  const bus = join(dir, 'badbus');
  const source = new VusbSource({ dir: bus, controlTimeoutMs: 100 });
  let attaches = 0;
  source.on('attach', () => attaches++);
  await source.start();
  try {
    const server = createServer((socket) => {
      sockets.push(socket);
      socket.on('error', () => undefined);
      socket.write(encodeHello(3)); // and then never answers a control request
    });
    servers.push(server);
    let connections = 0;
    server.on('connection', () => connections++);
    await new Promise<void>((r) => server.listen(join(bus, 'mute.vusb'), r));
    while (connections === 0) await new Promise((r) => setTimeout(r, 5));
    // Give the source time to time out, then check it did not reconnect in a loop.
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(attaches, 0);
    assert.equal(connections, 1, 'a failed device is not retried until its file is replaced');
  } finally {
    await source.stop();
  }
});

/**
 * A link bound as a mux link (OUT 0x04, wMaxPacketSize 512) and started, and every BULK_OUT its
 * raw device end receives, as they come.
 */
async function boundLink(): Promise<Awaited<ReturnType<typeof link>> & { got: Buffer[] }> {
  const path = await rawDevice(encodeHello(3), iphoneAnswer);
  const bound = await link(path);
  await bound.link.hello(5000);
  bound.link.bindMux({ serialNumber: 'x', productId: 0x12a8, locationId: 0x10001, speed: 480_000_000 }, { outEndpoint: 0x04, inEndpoint: 0x85, maxPacketSize: 512 });
  bound.link.start({ onData: () => undefined, onClose: () => undefined });
  const decoder = new VusbDecoder();
  const got: Buffer[] = [];
  sockets[0]!.on('data', (chunk: Buffer) => {
    decoder.push(chunk);
    for (let m = decoder.next(); m; m = decoder.next()) if (m.type === VusbMessageType.BULK_OUT) got.push(Buffer.from(m.data));
  });
  return { ...bound, got };
}

test('flush() writes the packets batched so far at once; later packets of the tick follow them in order', async () => {
  const { link: l, socket, got } = await boundLink();
  const before = socket.bytesWritten;
  l.sendPacket(Buffer.from('syn'));
  l.sendPacket(Buffer.from('two'));
  // Batched for the end of the tick: nothing was given to the socket yet.
  assert.equal(socket.bytesWritten, before);
  l.flush();
  // Both messages (6-byte header + 3 bytes each) handed to the kernel now, before the tick ends.
  assert.equal(socket.bytesWritten, before + 18);
  assert.equal(socket.writableLength, 0);
  l.sendPacket(Buffer.from('after'));
  while (got.length < 3) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(got.map(String), ['syn', 'two', 'after']);
});

test('a packet sent in parts is one BULK_OUT of head and body, in order with small packets, with a ZLP when its length is a multiple of wMaxPacketSize', async () => {
  const { link: l, ended, got } = await boundLink();
  const head = Buffer.alloc(36, 0xaa);
  const a = Buffer.alloc(10000, 1);
  const b = Buffer.alloc(1024 * 20 - 36 - 10000, 2);
  const done: Array<Error | undefined> = [];
  l.sendPacket(Buffer.from('ack'));
  l.sendPacketParts(head, [a, b], (err) => done.push(err));
  l.sendPacketParts(head, [a], (err) => done.push(err));
  l.sendPacket(Buffer.from('last'));
  while (got.length < 5) await new Promise((r) => setTimeout(r, 5));
  // 36 + 10000 + 10444 = 20480 = 40 × 512: a ZLP follows; 10036 bytes need none.
  assert.deepEqual(got.map((m) => m.length), [3, 20480, 0, 10036, 4]);
  assert.deepEqual(got[1], Buffer.concat([head, a, b]));
  assert.deepEqual(got[3], Buffer.concat([head, a]));
  assert.equal(String(got[4]), 'last');
  // Both written (net passes null for success).
  assert.deepEqual(done.map((e) => e ?? 'ok'), ['ok', 'ok']);
  // After the link has closed, a send in parts fails its `done` instead of writing.
  l.close();
  await ended;
  const err = await new Promise<Error | undefined>((r) => l.sendPacketParts(head, [a], r));
  assert.ok(isMuxwireError(err, 'MUXWIRE_ERR_NO_DEVICE'));
});
