/**
 * Real USB discovery and device links, run through both backends against simulated devices on a
 * vusb bus: the native libusb pipeline (with the vusb libusb library in place of libusb) and the
 * TypeScript WebUSB path (over VusbWebUsb). The same tests, the same expectations.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { DeviceMux } from '../../src/sim/device-mux.js';
import { SimUsbDevice } from '../../src/sim/usb-device.js';
import { encodeCount, serveEcho, serveSource, sourcePattern } from '../../src/sim/bench-services.js';
import { DeviceSession } from '../../src/mux/device-session.js';
import type { UsbSourceOptions } from '../../src/transport/usb-source.js';
import type { DeviceLink } from '../../src/transport/device-link.js';
import { BACKENDS, nextAttach, nextDetach, requireBackend, startSource, type Backend } from './usb-backends.js';

let root: string;
const cleanups: Array<() => Promise<void> | void> = [];

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'mw-usb-source-'));
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

let serial = 0x100;
function udid(): string {
  serial++;
  return `00008120-${serial.toString(16).toUpperCase().padStart(16, '0')}`;
}

async function plug(bus: string, speed: 'high' | 'super' = 'high', id = udid()): Promise<{ device: SimUsbDevice; mux: DeviceMux; udid: string }> {
  const mux = new DeviceMux();
  mux.listen(7, serveEcho);
  mux.listen(19, serveSource);
  const device = new SimUsbDevice({ busDir: bus, udid: id, speed, mux });
  await device.plug();
  cleanups.push(() => device.unplug());
  return { device, mux, udid: id };
}

/**
 * A device plugged into a fresh bus (serving echo on 7 and source on 19) and a started `backend`
 * source that has attached it; both undone after the test.
 */
async function attachedDevice(
  backend: Backend,
  opts: { speed?: 'high' | 'super'; udid?: string; source?: UsbSourceOptions } = {},
): Promise<{ bus: string; sim: Awaited<ReturnType<typeof plug>>; source: Awaited<ReturnType<typeof startSource>>['source']; link: DeviceLink }> {
  const bus = await mkdtemp(join(root, 'bus-'));
  const sim = await plug(bus, opts.speed, opts.udid);
  const { source, stop } = await startSource(backend, bus, opts.source);
  cleanups.push(stop);
  return { bus, sim, source, link: await nextAttach(source) };
}

/** A DeviceSession on `link`, negotiated, closed after the test. */
async function readySession(link: DeviceLink): Promise<DeviceSession> {
  const session = new DeviceSession(link);
  cleanups.push(() => session.close());
  await session.ready;
  return session;
}

function readExactly(stream: Duplex, bytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let got = 0;
    const onData = (c: Buffer): void => {
      parts.push(c);
      got += c.length;
      if (got >= bytes) {
        stream.off('data', onData);
        resolve(Buffer.concat(parts));
      }
    };
    stream.on('data', onData);
    stream.once('error', reject);
  });
}

test('the native backend finds devices by polling, as usbmuxd without hotplug, arrivals and removals alike', async (t) => {
  if (!requireBackend(t, 'native')) return;
  const bus = await mkdtemp(join(root, 'bus-'));
  const a = await plug(bus);
  const { source, stop } = await startSource('native', bus, { poll: true });
  cleanups.push(stop);
  assert.match(source.backendReason, /polled every 1000 ms/);
  const first = await nextAttach(source);
  assert.equal(first.info.serialNumber, a.udid);
  const second = nextAttach(source);
  const b = await plug(bus);
  assert.equal((await second).info.serialNumber, b.udid);
  const gone = nextDetach(source);
  await a.device.unplug();
  assert.equal((await gone).info.serialNumber, a.udid);
  assert.equal(source.attachedCount, 1);
});

for (const backend of BACKENDS) {
  describe(`the ${backend} USB backend`, () => {
    test('announces a plugged simulated device with its UDID, product ID, location and speed', async (t) => {
      if (!requireBackend(t, backend)) return;
      const bus = await mkdtemp(join(root, 'bus-'));
      const sim = await plug(bus, 'super');
      const { source, stop } = await startSource(backend, bus);
      cleanups.push(stop);
      const link = source.attachedCount > 0 ? undefined : await nextAttach(source);
      assert.equal(source.backend, backend);
      assert.ok(link, 'the device was announced');
      assert.equal(link.info.serialNumber, sim.udid);
      assert.equal(link.info.productId, 0x12a8);
      assert.equal(link.info.speed, 5_000_000_000, 'SuperSpeed reports 5 Gbit/s (usbmux.md §1.6)');
      assert.ok((link.info.locationId & 0xff) > 0, 'LocationID carries the device address');
      assert.equal(link.info.locationId >>> 16, 1, 'LocationID carries the bus number');
    });

    test('fixes up a 24-character serial number into the dashed UDID', async (t) => {
      if (!requireBackend(t, backend)) return;
      const { link } = await attachedDevice(backend, { speed: 'high', udid: '00008030001C2D3E4F506172' });
      assert.equal(link.info.serialNumber, '00008030-001C2D3E4F506172');
      assert.equal(link.info.speed, 480_000_000);
    });

    test('carries 8 MiB through an echo connection and sends a ZLP after every packet of whole USB packets', async (t) => {
      if (!requireBackend(t, backend)) return;
      const { link, sim } = await attachedDevice(backend);
      const session = await readySession(link);
      const conn = await session.connect(7, { timeoutMs: 10_000 });
      cleanups.push(() => { conn.destroy(); });
      const payload = randomBytes(8 * 1024 * 1024);
      const echoed = readExactly(conn, payload.length);
      conn.write(payload);
      const back = await echoed;
      assert.equal(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(payload).digest('hex'));
      // 49152-byte packets (3 × 16384, a multiple of 512) each need a ZLP (usbmux.md §1.4).
      const stats = sim.device.stats;
      assert.ok(stats.zeroLengthPackets > 0, `zero-length packets sent: ${stats.zeroLengthPackets}`);
      assert.ok(stats.zeroLengthPackets < stats.bulkOutTransfers / 2);
    });

    test('reads a device stream whose packets span IN transfers, byte for byte', async (t) => {
      if (!requireBackend(t, backend)) return;
      // 4 KiB transfers: every full 49152-byte device packet spans 12 of them.
      const { link } = await attachedDevice(backend, { source: { inTransferSize: 4096, inTransfers: 5 } });
      const session = await readySession(link);
      const conn = await session.connect(19, { timeoutMs: 10_000 });
      cleanups.push(() => { conn.destroy(); });
      const total = 3 * 1024 * 1024 + 77;
      const received = readExactly(conn, total);
      conn.write(encodeCount(total));
      const got = await received;
      assert.equal(got.length, total);
      assert.ok(got.equals(sourcePattern(0, total)), 'the source pattern arrived intact');
    });

    test('a consumer that keeps IN chunks (stream demux) gets its own copies: a long stream arrives intact', async (t) => {
      if (!requireBackend(t, backend)) return;
      const { source, link } = await attachedDevice(backend);
      // The stream demuxer holds on to the chunks it is given (views of them reach the reader), so
      // memory the link reuses for later transfers must not be what it was given.
      const session = new DeviceSession(link, { demux: 'stream' });
      cleanups.push(() => session.close());
      await session.ready;
      const conn = await session.connect(19, { timeoutMs: 10_000 });
      cleanups.push(() => { conn.destroy(); });
      const total = 8 * 1024 * 1024 + 5;
      conn.pause();
      conn.write(encodeCount(total));
      // Let many transfers arrive while the first chunks wait in the readable buffer.
      await new Promise((r) => setTimeout(r, 200));
      const reading = readExactly(conn, total);
      conn.resume();
      const got = await reading;
      assert.equal(got.length, total);
      assert.ok(got.equals(sourcePattern(0, total)), 'the source pattern arrived intact');
    });

    test('announces a second device while the first stays attached', async (t) => {
      if (!requireBackend(t, backend)) return;
      const { bus, sim: a, source, link: first } = await attachedDevice(backend);
      assert.equal(first.info.serialNumber, a.udid);
      const second = nextAttach(source);
      const b = await plug(bus);
      const link = await second;
      assert.equal(link.info.serialNumber, b.udid);
      assert.notEqual(link.info.locationId, first.info.locationId);
      assert.equal(source.attachedCount, 2);
    });

    test('leaves alone an Apple device whose product ID usbmuxd does not take', async (t) => {
      if (!requireBackend(t, backend)) return;
      const bus = await mkdtemp(join(root, 'bus-'));
      const other = new SimUsbDevice({ busDir: bus, udid: udid(), productId: 0x1300, mux: new DeviceMux() });
      await other.plug();
      cleanups.push(() => other.unplug());
      const { source, stop } = await startSource(backend, bus);
      cleanups.push(stop);
      // A usable device plugged after it: once that one is announced, the other has been seen.
      const attached = nextAttach(source);
      const sim = await plug(bus);
      assert.equal((await attached).info.serialNumber, sim.udid);
      assert.equal(source.attachedCount, 1);
    });

    test('a device unplugged and plugged again is announced again', async (t) => {
      if (!requireBackend(t, backend)) return;
      const { bus, sim: first, source } = await attachedDevice(backend);
      const detached = nextDetach(source);
      await first.device.unplug();
      await detached;
      const again = nextAttach(source);
      const second = await plug(bus, 'high', first.udid);
      const link = await again;
      assert.equal(link.info.serialNumber, second.udid);
      const session = await readySession(link);
      const conn = await session.connect(7, { timeoutMs: 10_000 });
      cleanups.push(() => {
        conn.destroy();
      });
      const echoed = readExactly(conn, 5);
      conn.write('again');
      assert.equal((await echoed).toString(), 'again');
    });

    test('unplugging mid-transfer ends the link and its connections within a second', async (t) => {
      if (!requireBackend(t, backend)) return;
      const { source, link, sim } = await attachedDevice(backend);
      const session = await readySession(link);
      const conn = await session.connect(19, { timeoutMs: 10_000 });
      cleanups.push(() => { conn.destroy(); });
      // An endless stream: the unplug lands while IN transfers are busy.
      let got = 0;
      const flowing = new Promise<void>((resolve) => conn.on('data', (c: Buffer) => {
        got += c.length;
        if (got > 1024 * 1024) resolve();
      }));
      conn.write(encodeCount(1n << 40n));
      await flowing;
      const detached = nextDetach(source);
      const closed = new Promise<void>((resolve) => conn.once('close', () => resolve()));
      conn.on('error', () => undefined);
      const unplugged = Date.now();
      await sim.device.unplug();
      const guard = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the connection outlived the unplug by 1 s')), 1000).unref());
      await Promise.race([Promise.all([detached, closed]), guard]);
      assert.ok(Date.now() - unplugged <= 1000);
      assert.equal(source.attachedCount, 0);
    });
  });
}
