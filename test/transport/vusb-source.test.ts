import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SimUsbDevice } from '../../src/sim/usb-device.js';
import { iphoneDescriptors } from '../../src/sim/usb-descriptors.js';
import { VusbSource } from '../../src/transport/vusb-source.js';
import type { DeviceLink } from '../../src/transport/device-link.js';
import { EchoMux } from './echo-mux.js';

const UDID_8_16 = '00008120-000A2D910EDB401E';
const UDID_40 = 'f1c15f36c3461bf9b24d568084d17cfb2d4243c4';

let root: string;
let dirCount = 0;
const sources: VusbSource[] = [];
const devices: SimUsbDevice[] = [];

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'mw-vusb-'));
});
afterEach(async () => {
  await Promise.all(sources.splice(0).map((s) => s.stop()));
  await Promise.all(devices.splice(0).map((d) => d.unplug()));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A fresh bus directory per test, so a test never sees another's devices. */
function busDir(): string {
  return join(root, `bus${++dirCount}`);
}

function source(dir: string, opts: { inTransferSize?: number } = {}): VusbSource {
  const s = new VusbSource({ dir, ...opts });
  sources.push(s);
  return s;
}

function device(dir: string, opts: Partial<ConstructorParameters<typeof SimUsbDevice>[0]> = {}): { dev: SimUsbDevice; mux: EchoMux } {
  const mux = (opts.mux as EchoMux | undefined) ?? new EchoMux();
  const dev = new SimUsbDevice({ busDir: dir, udid: UDID_8_16, ...opts, mux });
  devices.push(dev);
  return { dev, mux };
}

/** Resolves with the next `event` from the source, or fails after a generous hang guard. */
function next(src: VusbSource, event: 'attach' | 'detach', timeoutMs = 15000): Promise<DeviceLink> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      src.off(event, on);
      reject(new Error(`no '${event}' within ${timeoutMs} ms`));
    }, timeoutMs);
    const on = (link: DeviceLink): void => {
      clearTimeout(timer);
      resolve(link);
    };
    src.once(event, on);
  });
}

/**
 * A device plugged into a fresh bus directory (its mux echoes unless `echo: false`), and a
 * started source that has attached it.
 */
async function attachedDevice(
  opts: { echo?: boolean; device?: Partial<ConstructorParameters<typeof SimUsbDevice>[0]>; inTransferSize?: number } = {},
): Promise<{ dir: string; dev: SimUsbDevice; mux: EchoMux; src: VusbSource; link: DeviceLink }> {
  const dir = busDir();
  const { dev, mux } = device(dir, opts.device);
  if (opts.echo === false) mux.echo = false;
  await dev.plug();
  const src = source(dir, opts.inTransferSize !== undefined ? { inTransferSize: opts.inTransferSize } : {});
  const attached = next(src, 'attach');
  await src.start();
  return { dir, dev, mux, src, link: await attached };
}

async function until(cond: () => boolean, what: string, timeoutMs = 15000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface Started {
  chunks: Buffer[];
  closed: { err?: Error } | undefined;
}

function start(link: DeviceLink): Started {
  const state: Started = { chunks: [], closed: undefined };
  link.start({
    onData: (chunk) => state.chunks.push(Buffer.from(chunk)),
    onClose: (err) => {
      assert.equal(state.closed, undefined, 'onClose runs once');
      state.closed = err ? { err } : {};
    },
  });
  return state;
}

function sendAndWait(link: DeviceLink, packet: Buffer): Promise<void> {
  return new Promise((resolve, reject) => link.sendPacket(packet, (err) => (err ? reject(err) : resolve())));
}

describe('VusbSource', () => {
  test('attaches a device already plugged in and reads its identity as usbmuxd would', async () => {
    const { dev, link } = await attachedDevice();
    assert.equal(link.info.serialNumber, UDID_8_16, 'the 24-character serial gets its dash back');
    assert.equal(link.info.productId, 0x12a8);
    assert.equal(link.info.speed, 480_000_000);
    assert.equal(link.info.locationId >>> 16, 1, 'bus 1');
    assert.ok((link.info.locationId & 0xffff) >= 1 && (link.info.locationId & 0xffff) <= 127, 'a USB address');
    assert.equal(dev.configuration, 4, 'the highest configuration with the mux interface');
  });

  test('a 40-character UDID is published as it is, and SuperSpeed as 5 Gbit/s', async () => {
    const dir = busDir();
    const src = source(dir);
    await src.start();
    const attached = next(src, 'attach');
    const { dev } = device(dir, { udid: UDID_40, speed: 'super' });
    await dev.plug();
    const link = await attached;
    assert.equal(link.info.serialNumber, UDID_40);
    assert.equal(link.info.speed, 5_000_000_000);
  });

  test('a device plugged after start is seen through the directory watch', async () => {
    const dir = busDir();
    const src = source(dir);
    await src.start();
    const attached = next(src, 'attach');
    const { dev } = device(dir);
    await dev.plug();
    assert.equal((await attached).info.serialNumber, UDID_8_16);
  });

  test('the mux interface must match FF/FE/02 exactly: a look-alike in a higher configuration is passed over', async () => {
    const dir = busDir();
    const set = iphoneDescriptors({ productId: 0x12a8, serialNumber: '00008120000A2D910EDB401E', speed: 'high' });
    // Config 4 gets a Valeria-like interface (FF/2A/FF, two bulk endpoints) where the mux was:
    // usbmuxd's OR match would take it (usbmux.md §6.1); we must fall back to config 3.
    const c4 = Buffer.from(set.configurations[3]!.descriptor);
    const at = c4.indexOf(Buffer.from([9, 4, 1, 0, 2, 0xff, 0xfe, 0x02]));
    assert.ok(at > 0);
    c4[at + 6] = 0x2a;
    c4[at + 7] = 0xff;
    set.configurations[3]!.descriptor = c4;
    set.mux.configurationValue = 3;
    const { dev, mux } = device(dir, { descriptors: set });
    await dev.plug();
    const src = source(dir);
    const attached = next(src, 'attach');
    await src.start();
    const link = await attached;
    assert.equal(dev.configuration, 3);
    const state = start(link);
    await sendAndWait(link, Buffer.from('over config 3'));
    await until(() => state.chunks.length === 1, 'the echo');
    assert.deepEqual(mux.reads.map(String), ['over config 3']);
  });

  test('a device with an Apple VID but a PID usbmuxd does not take is left alone', async () => {
    const dir = busDir();
    const { dev } = device(dir, { productId: 0x1234 });
    await dev.plug();
    const src = source(dir);
    let attaches = 0;
    src.on('attach', () => attaches++);
    await src.start();
    await until(() => !dev.hostConnected && dev.stats.hosts === 1, 'the source to look and let go');
    assert.equal(attaches, 0);
    assert.equal(dev.configuration, 0, 'never configured');
  });

  test('packets go out as one OUT transfer each, with a ZLP after a multiple of 512 bytes', async () => {
    const { dev, mux, link } = await attachedDevice({ echo: false });
    start(link);
    await sendAndWait(link, Buffer.alloc(512, 1));
    await sendAndWait(link, Buffer.alloc(100, 2));
    await sendAndWait(link, Buffer.alloc(49152, 3));
    await sendAndWait(link, Buffer.alloc(1000, 4));
    await until(() => mux.reads.length === 4, 'four device reads');
    assert.deepEqual(mux.reads.map((r) => r.length), [512, 100, 49152, 1000], 'every packet ends its own read');
    const stats = dev.stats;
    assert.equal(stats.zeroLengthPackets, 2, 'after 512 and after 49152 bytes only');
    assert.equal(stats.bulkOutTransfers, 6);
  });

  test('at SuperSpeed the ZLP rule follows the 1024-byte packet size', async () => {
    const { dev, mux, link } = await attachedDevice({ echo: false, device: { speed: 'super' } });
    start(link);
    await sendAndWait(link, Buffer.alloc(512));
    await sendAndWait(link, Buffer.alloc(2048));
    await until(() => mux.reads.length === 2, 'two device reads');
    assert.deepEqual(mux.reads.map((r) => r.length), [512, 2048]);
    assert.equal(dev.stats.zeroLengthPackets, 1);
  });

  test('a 40000-byte device write completes IN transfers of 16384, 16384 and 7232 bytes (usbmuxd\'s size)', async () => {
    const { mux, link } = await attachedDevice({ echo: false, inTransferSize: 16384 });
    const state = start(link);
    const write = Buffer.alloc(40000);
    for (let i = 0; i < write.length; i++) write[i] = (i * 7) & 0xff;
    mux.onTransmit(write);
    mux.onTransmit(Buffer.alloc(0));
    mux.onTransmit(Buffer.from('next write'));
    await until(() => state.chunks.length === 4, 'four transfers');
    assert.deepEqual(state.chunks.map((c) => c.length), [16384, 16384, 7232, 10], 'a zero-length write delivers nothing');
    assert.deepEqual(Buffer.concat(state.chunks.slice(0, 3)), write);
  });

  test('the IN transfer size is an option', async () => {
    const { mux, link } = await attachedDevice({ echo: false, inTransferSize: 32768 });
    const state = start(link);
    mux.onTransmit(Buffer.alloc(100000));
    await until(() => state.chunks.length === 4, 'four transfers');
    assert.deepEqual(state.chunks.map((c) => c.length), [32768, 32768, 32768, 1696]);
  });

  test('by default a device\'s largest packet (49152 bytes) arrives in one IN transfer', async () => {
    const { mux, link } = await attachedDevice({ echo: false });
    const state = start(link);
    mux.onTransmit(Buffer.alloc(49152));
    mux.onTransmit(Buffer.alloc(100000));
    await until(() => state.chunks.length === 4, 'four transfers');
    assert.deepEqual(state.chunks.map((c) => c.length), [49152, 49152, 49152, 1696]);
  });

  test('bytes the device writes before start() wait for it', async () => {
    const { mux, link } = await attachedDevice({ echo: false });
    mux.onTransmit(Buffer.from('early'));
    await new Promise((r) => setTimeout(r, 20));
    const state = start(link);
    await until(() => state.chunks.length === 1, 'the early write');
    assert.equal(String(state.chunks[0]), 'early');
  });

  test('echoed packets come back intact through both directions', async () => {
    const { link } = await attachedDevice();
    const state = start(link);
    const sent: Buffer[] = [];
    for (let i = 0; i < 20; i++) {
      const p = Buffer.alloc(1 + i * 997, i);
      sent.push(p);
      link.sendPacket(p);
    }
    const total = sent.reduce((n, p) => n + p.length, 0);
    await until(() => state.chunks.reduce((n, c) => n + c.length, 0) === total, 'all echoes');
    assert.deepEqual(Buffer.concat(state.chunks), Buffer.concat(sent));
  });

  test('unplugging detaches: onClose runs once, then the source emits detach', async () => {
    const { dev, src, link } = await attachedDevice();
    const state = start(link);
    const detached = next(src, 'detach');
    await dev.unplug();
    assert.equal(await detached, link);
    assert.ok(state.closed, 'onClose ran');
    assert.equal(src.attachedCount, 0);
    const err = await new Promise<Error | undefined>((r) => link.sendPacket(Buffer.from('x'), r));
    assert.equal((err as { code?: string } | undefined)?.code, 'MUXWIRE_ERR_NO_DEVICE');
  });

  test('removing the socket file detaches the device even while its connection is open', async () => {
    const { dev, src, link } = await attachedDevice();
    const state = start(link);
    const detached = next(src, 'detach');
    await rm(dev.socketPath);
    assert.equal(await detached, link);
    assert.ok(state.closed);
    await until(() => !dev.hostConnected, 'the device to see the host go');
  });

  test('a device that is unplugged and plugged again attaches again with a new address', async () => {
    const dir = busDir();
    const { dev } = device(dir);
    await dev.plug();
    const src = source(dir);
    let attached = next(src, 'attach');
    await src.start();
    const first = await attached;
    const detached = next(src, 'detach');
    await dev.unplug();
    await detached;
    attached = next(src, 'attach');
    await dev.plug();
    const second = await attached;
    assert.equal(second.info.serialNumber, first.info.serialNumber);
    assert.notEqual(second.info.locationId, first.info.locationId);
  });

  test('a chmod of the socket file is not a replug', async () => {
    const dir = busDir();
    const { dev } = device(dir);
    await dev.plug();
    const src = source(dir);
    const attached = next(src, 'attach');
    await src.start();
    await attached;
    let detaches = 0;
    src.on('detach', () => detaches++);
    await chmod(dev.socketPath, 0o666);
    // A second device plugged after the chmod is seen by a scan that also saw the chmod.
    const second = next(src, 'attach');
    const { dev: other } = device(dir, { udid: UDID_40 });
    await other.plug();
    await second;
    assert.equal(detaches, 0);
    assert.equal(dev.stats.hosts, 1, 'the first device was never reconnected');
  });

  test('stop() detaches every attached device and releases it', async () => {
    const { dev, src, link } = await attachedDevice();
    const state = start(link);
    let detaches = 0;
    src.on('detach', () => detaches++);
    await src.stop();
    assert.equal(detaches, 1);
    assert.ok(state.closed);
    await until(() => !dev.hostConnected, 'the device to be free');
  });

  test('one host stack at a time: a second source gets the device once the first lets go', async () => {
    const dir = busDir();
    const { dev } = device(dir);
    await dev.plug();
    const first = source(dir);
    const a1 = next(first, 'attach');
    await first.start();
    await a1;
    const second = source(dir);
    let secondAttached = false;
    const a2 = next(second, 'attach').then((l) => {
      secondAttached = true;
      return l;
    });
    await second.start();
    await until(() => dev.stats.refusedHosts >= 1, 'the second source to try');
    assert.equal(secondAttached, false, 'the device is held by the first');
    await first.stop();
    const link = await a2;
    assert.equal(link.info.serialNumber, UDID_8_16);
  });

  test('a stale socket file with nothing behind it attaches nothing and does not hold up stop()', async () => {
    const dir = busDir();
    const src = source(dir);
    await src.start();
    const path = join(dir, `${UDID_40}.vusb`);
    const child = spawn(process.execPath, ['-e',
      `require('net').createServer().listen(${JSON.stringify(path)}, () => process.stdout.write('ok'))`]);
    await new Promise<void>((r) => child.stdout.once('data', () => r()));
    child.kill('SIGKILL');
    await new Promise<void>((r) => child.once('exit', () => r()));
    let attaches = 0;
    src.on('attach', () => attaches++);
    // A live device next to it still attaches.
    const attached = next(src, 'attach');
    const { dev } = device(dir);
    await dev.plug();
    await attached;
    assert.equal(attaches, 1);
    await src.stop();
  });

  test('32 devices plugged at once all attach with distinct serials and locations', async () => {
    const dir = busDir();
    const src = source(dir);
    const links: DeviceLink[] = [];
    src.on('attach', (l: DeviceLink) => links.push(l));
    await src.start();
    const many = Array.from({ length: 32 }, (_, i) =>
      device(dir, { udid: `00008030-${(0x1000 + i).toString(16).toUpperCase().padStart(16, '0')}` }));
    await Promise.all(many.map(({ dev }) => dev.plug()));
    await until(() => links.length === 32, '32 attaches', 30000);
    assert.equal(new Set(links.map((l) => l.info.serialNumber)).size, 32);
    assert.equal(new Set(links.map((l) => l.info.locationId)).size, 32);
    assert.deepEqual(new Set(links.map((l) => l.info.serialNumber)), new Set(many.map(({ dev }) => dev.udid)));
    // Each one carries traffic.
    const states = links.map((l) => start(l));
    links.forEach((l, i) => l.sendPacket(Buffer.from(`device ${i}`)));
    await until(() => states.every((s) => s.chunks.length === 1), 'an echo from each');
    states.forEach((s, i) => assert.equal(String(s.chunks[0]), `device ${i}`));
    let detaches = 0;
    src.on('detach', () => detaches++);
    await Promise.all(many.map(({ dev }) => dev.unplug()));
    await until(() => detaches === 32, '32 detaches');
  });
});
