/**
 * Choosing the USB backend and the native host's edges: libusb or the addon missing, the fallback
 * to WebUSB and when it is refused, wrong arguments at the native boundary, OUT transfers over
 * the limit, an idle host not keeping Node alive, the IN buffers libusb reads into (copies
 * for consumers that keep chunks, views for those that borrow), and where libusb's events are
 * handled (the Node loop, or the event thread kept as a fallback).
 */
import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { isMuxwireError } from '../../src/errors.js';
import { loadAddon } from '../../src/accel/addon-loader.js';
import { NativeUsbHost } from '../../src/accel/usb-host.js';
import { UsbSource } from '../../src/transport/usb-source.js';
import { VusbWebUsb } from '../../src/transport/webusb-vusb.js';
import { DeviceMux } from '../../src/sim/device-mux.js';
import { SimUsbDevice } from '../../src/sim/usb-device.js';
import { BACKENDS, nextAttach, requireBackend, startSource } from './usb-backends.js';
import { MUX_IN, MUX_OUT, WireTestDevice } from '../vusb/wire-test-device.js';

const run = promisify(execFile);
const MISSING_LIBUSB = '/nonexistent/muxwire/libusb-1.0.so.0';
const ENV_SWITCHES = ['MUXWIRE_NO_NATIVE', 'MUXWIRE_REQUIRE_NATIVE'] as const;

let root: string;
const cleanups: Array<() => Promise<void> | void> = [];
const savedEnv = new Map<string, string | undefined>();

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'mw-usb-host-'));
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  for (const [k, v] of savedEnv) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  savedEnv.clear();
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Runs the test with the backend switches cleared (CI sets MUXWIRE_REQUIRE_NATIVE=1). */
function clearSwitches(): void {
  for (const k of ENV_SWITCHES) {
    savedEnv.set(k, process.env[k]);
    delete process.env[k];
  }
}

function addonHasUsbHost(): boolean {
  const load = loadAddon();
  return load.ok && typeof (load.binding as unknown as { UsbHost?: unknown }).UsbHost === 'function';
}

async function webusb(): Promise<VusbWebUsb> {
  const usb = new VusbWebUsb({ dir: await mkdtemp(join(root, 'bus-')) });
  await usb.start();
  cleanups.push(() => usb.close());
  return usb;
}

test('a libusb that does not load is refused with MUXWIRE_ERR_LIBUSB_UNAVAILABLE and the loader\'s reason', (t) => {
  if (!addonHasUsbHost()) return void t.skip('native addon without UsbHost');
  assert.throws(() => NativeUsbHost.create({ libusbPath: MISSING_LIBUSB }), (err) => {
    assert.ok(isMuxwireError(err, 'MUXWIRE_ERR_LIBUSB_UNAVAILABLE'));
    assert.match(err.message, /nonexistent\/muxwire\/libusb-1\.0\.so\.0/);
    return true;
  });
});

test('backend auto falls back to WebUSB when libusb does not load, and says why', async (t) => {
  if (!addonHasUsbHost()) return void t.skip('native addon without UsbHost');
  clearSwitches();
  const source = new UsbSource({ backend: 'auto', libusbPath: MISSING_LIBUSB, webusb: await webusb() });
  cleanups.push(() => source.stop());
  await source.start();
  assert.equal(source.backend, 'js');
  assert.match(source.backendReason, /native USB unavailable: .*nonexistent/);
});

test('backend native does not fall back when libusb does not load', async (t) => {
  if (!addonHasUsbHost()) return void t.skip('native addon without UsbHost');
  clearSwitches();
  const source = new UsbSource({ backend: 'native', libusbPath: MISSING_LIBUSB, webusb: await webusb() });
  await assert.rejects(source.start(), (err) => isMuxwireError(err, 'MUXWIRE_ERR_LIBUSB_UNAVAILABLE'));
  assert.equal(source.backend, undefined);
});

test('MUXWIRE_REQUIRE_NATIVE=1 makes a libusb that does not load an error even for auto', async (t) => {
  if (!addonHasUsbHost()) return void t.skip('native addon without UsbHost');
  clearSwitches();
  process.env.MUXWIRE_REQUIRE_NATIVE = '1';
  const source = new UsbSource({ backend: 'auto', libusbPath: MISSING_LIBUSB, webusb: await webusb() });
  await assert.rejects(source.start(), (err) => isMuxwireError(err, 'MUXWIRE_ERR_LIBUSB_UNAVAILABLE'));
});

test('a missing addon is MUXWIRE_ERR_NATIVE_UNAVAILABLE for native, and auto serves through WebUSB', async () => {
  clearSwitches();
  const addonPath = join(root, 'no-such-addon.node');
  const strict = new UsbSource({ backend: 'native', addonPath, webusb: await webusb() });
  await assert.rejects(strict.start(), (err) => isMuxwireError(err, 'MUXWIRE_ERR_NATIVE_UNAVAILABLE'));
  const lenient = new UsbSource({ backend: 'auto', addonPath, webusb: await webusb() });
  cleanups.push(() => lenient.stop());
  await lenient.start();
  assert.equal(lenient.backend, 'js');
  assert.match(lenient.backendReason, /native addon did not load/);
});

test('MUXWIRE_NO_NATIVE=1 turns an explicit auto into the TypeScript path', async () => {
  clearSwitches();
  process.env.MUXWIRE_NO_NATIVE = '1';
  const source = new UsbSource({ backend: 'auto', webusb: await webusb() });
  cleanups.push(() => source.stop());
  await source.start();
  assert.equal(source.backend, 'js');
  assert.equal(source.backendReason, 'MUXWIRE_NO_NATIVE=1');
});

test('an unknown backend name is MUXWIRE_ERR_BAD_ARGUMENT', async () => {
  const source = new UsbSource({ backend: 'fast' as 'auto' });
  await assert.rejects(source.start(), (err) => isMuxwireError(err, 'MUXWIRE_ERR_BAD_ARGUMENT'));
});

test('the native host turns wrong argument types into TypeErrors, never a crash', (t) => {
  if (!addonHasUsbHost()) return void t.skip('native addon without UsbHost');
  const Raw = (loadAddon() as unknown as { binding: { UsbHost: new (...a: unknown[]) => Record<string, (...a: unknown[]) => unknown> } }).binding.UsbHost;
  assert.throws(() => new Raw(1, 2), TypeError);
  assert.throws(() => new Raw('x'), TypeError);
  assert.throws(() => new Raw(MISSING_LIBUSB, 'not a function'), TypeError);
});

test('the native host validates handles, endpoints and sizes before touching libusb', async (t) => {
  if (!requireBackend(t, 'native')) return;
  const Raw = (loadAddon() as unknown as { binding: { UsbHost: new (...a: unknown[]) => Record<string, (...a: unknown[]) => unknown> } }).binding.UsbHost;
  const { vusbLibraryPath } = await import('./usb-backends.js');
  const raw = new Raw(vusbLibraryPath(), () => undefined);
  cleanups.push(() => void raw.stop!());
  assert.throws(() => raw.send!('1', 1, Buffer.alloc(1)), TypeError);
  assert.throws(() => raw.send!(1, 1, 'bytes'), TypeError);
  assert.throws(() => raw.send!(1, 1, Buffer.alloc(49153)), RangeError);
  assert.throws(() => raw.startIn!(1, 0x05, 0x04, 512, 3, 16384), RangeError, 'an IN endpoint has bit 7 set');
  assert.throws(() => raw.startIn!(1, 0x85, 0x04, 512, 0, 16384), RangeError);
  assert.throws(() => raw.control!(1, 1, 0x80, 6, 0x100, 0, 18, 'x', 1000), TypeError);
  // A handle that was never opened: a libusb error code, not a crash.
  assert.equal(raw.send!(7, 1, Buffer.alloc(16)), -5);
  await assert.rejects(raw.open!(12345) as Promise<number>, (err: Error & { libusbError?: number }) => err.libusbError === -4);
});

test('an idle native host does not keep Node running', { timeout: 60_000 }, async (t) => {
  if (!requireBackend(t, 'native')) return;
  const { vusbLibraryPath } = await import('./usb-backends.js');
  const bus = await mkdtemp(join(root, 'bus-'));
  const module = fileURLToPath(new URL('../../src/accel/usb-host.js', import.meta.url));
  // Started and never stopped: the process must still exit when its work is done.
  const script = `import(${JSON.stringify(module)}).then(async ({ NativeUsbHost }) => {
    const host = NativeUsbHost.create({ libusbPath: ${JSON.stringify(vusbLibraryPath())} });
    await host.start();
    console.log('started', host.hotplug);
  });`;
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env, MUXWIRE_VUSB_DIR: bus }, timeout: 30_000,
  });
  assert.match(stdout, /^started (true|false)$/m);
});

for (const backend of BACKENDS) {
  test(`the ${backend} link refuses an OUT transfer over 49152 bytes with MUXWIRE_ERR_BAD_LENGTH`, async (t) => {
    if (!requireBackend(t, backend)) return;
    const bus = await mkdtemp(join(root, 'bus-'));
    const device = new SimUsbDevice({ busDir: bus, udid: '00008120-00AA00BB00CC00DD', mux: new DeviceMux() });
    await device.plug();
    cleanups.push(() => device.unplug());
    const { source, stop } = await startSource(backend, bus);
    cleanups.push(stop);
    const link = await nextAttach(source);
    link.start({ onData: () => undefined, onClose: () => undefined });
    const err = await new Promise<Error | undefined>((resolve) => link.sendPacket(Buffer.alloc(49153), resolve));
    assert.ok(isMuxwireError(err, 'MUXWIRE_ERR_BAD_LENGTH'), String(err));
    const ok = await new Promise<Error | undefined>((resolve) => link.sendPacket(Buffer.alloc(20), resolve));
    assert.equal(ok, undefined, 'a packet within the limit goes out');
  });
}

/** Opens the echo device's mux interface with the native host and starts its IN pipe. */
async function openEcho(t: import('node:test').TestContext, borrow: boolean, onChunk: (chunk: Buffer) => void,
  options: { eventThread?: boolean; onEnd?: (err: Error) => void } = {}): Promise<{ host: NativeUsbHost; handle: import('../../src/accel/usb-host.js').NativeUsbHandle; device: WireTestDevice } | undefined> {
  if (!requireBackend(t, 'native')) return undefined;
  const { vusbLibraryPath } = await import('./usb-backends.js');
  const bus = await mkdtemp(join(root, 'bus-'));
  const device = new WireTestDevice({ busDir: bus, name: 'echo' });
  await device.plug();
  cleanups.push(() => device.unplug());
  process.env.MUXWIRE_VUSB_DIR = bus;
  const host = NativeUsbHost.create({ libusbPath: vusbLibraryPath(), eventThread: options.eventThread ?? false });
  cleanups.push(() => host.stop());
  const arrived = new Promise<number>((resolve) => host.once('arrived', (a: { device: number }) => resolve(a.device)));
  await host.start();
  const handle = await host.open(await arrived);
  await handle.setConfiguration(4, [0, 1, 2]);
  await handle.claimInterface(1);
  handle.startIn({ inEndpoint: MUX_IN, outEndpoint: MUX_OUT, maxPacketSize: 512 }, 2, 4096, {
    borrow,
    onData: onChunk,
    onEnd: options.onEnd ?? (() => undefined),
  });
  return { host, handle, device };
}

/** Packet `i` of the echo tests: small ones (sent untracked) and larger ones, each recognisable. */
function echoPacket(i: number): Buffer {
  const b = Buffer.alloc(i % 2 === 0 ? 100 : 3000);
  for (let k = 0; k < b.length; k++) b[k] = (i * 7 + k) & 0xff;
  return b;
}

test('the native host reads IN data into reused buffers: chunks kept without borrowing are copies that stay intact', async (t) => {
  const received: Buffer[] = [];
  let all!: () => void;
  const done = new Promise<void>((resolve) => (all = resolve));
  const N = 200;
  const opened = await openEcho(t, false, (chunk) => {
    received.push(chunk);
    if (received.length === N) all();
  });
  if (!opened) return;
  const completions: Array<Error | undefined> = [];
  for (let i = 0; i < N; i++) {
    const packet = echoPacket(i);
    if (i % 2 === 0) {
      // Small and without a callback: the addon copies it, so the caller may reuse it at once.
      opened.handle.send(packet);
      packet.fill(0xee);
    } else {
      opened.handle.send(packet, (err) => completions.push(err));
    }
  }
  await done;
  // 200 device writes through 8 buffers of 4096 bytes: each buffer was reused many times, and
  // every chunk kept here still holds what its own write carried.
  for (let i = 0; i < N; i++) assert.ok(received[i]!.equals(echoPacket(i)), `chunk ${i}`);
  assert.deepEqual(opened.device.stats.bulkOut.map((b) => b.length), Array.from({ length: N }, (_, i) => echoPacket(i).length));
  assert.equal(completions.length, N / 2, 'every packet sent with a callback was reported done');
  assert.ok(completions.every((e) => e === undefined));
});

test('the native host hands a borrowing consumer views of the transfers\' own buffers, no copies', async (t) => {
  const seen: Buffer[] = [];
  const buffers = new Set<ArrayBufferLike>();
  let all!: () => void;
  const done = new Promise<void>((resolve) => (all = resolve));
  const N = 60;
  const opened = await openEcho(t, true, (chunk) => {
    buffers.add(chunk.buffer);
    // Borrowed: done with the bytes when this returns, so keep a copy to compare.
    seen.push(Buffer.from(chunk));
    if (seen.length === N) all();
  });
  if (!opened) return;
  for (let i = 0; i < N; i++) opened.handle.send(echoPacket(i), () => undefined);
  await done;
  for (let i = 0; i < N; i++) assert.ok(seen[i]!.equals(echoPacket(i)), `chunk ${i}`);
  // One region holds every IN buffer: 2 transfers in flight × 4 buffers each × 4096 bytes.
  assert.equal(buffers.size, 1);
  assert.equal([...buffers][0]!.byteLength, 2 * 4 * 4096);
});

for (const eventThread of [false, true]) {
  const where = eventThread ? 'on its event thread when asked' : 'on the Node loop';
  test(`the native host handles libusb's events ${where}: echoes come back, an unplug ends the IN pipe, close completes`, async (t) => {
    const received: Buffer[] = [];
    let all!: () => void;
    const echoed = new Promise<void>((resolve) => (all = resolve));
    let ended!: (err: Error) => void;
    const end = new Promise<Error>((resolve) => (ended = resolve));
    const N = 40;
    const opened = await openEcho(t, false, (chunk) => {
      received.push(chunk);
      if (received.length === N) all();
    }, { eventThread, onEnd: (err) => ended(err) });
    if (!opened) return;
    // vusb has the pollfd API, so only an explicit request puts the events on a thread.
    assert.equal(opened.host.events, eventThread ? 'thread' : 'loop');
    const sent: Array<Error | undefined> = [];
    for (let i = 0; i < N; i++) opened.handle.send(echoPacket(i), (err) => sent.push(err));
    await echoed;
    for (let i = 0; i < N; i++) assert.ok(received[i]!.equals(echoPacket(i)), `chunk ${i}`);
    assert.equal(sent.length, N);
    // The device goes away: the pending IN transfers fail, which ends the pipe once, as NO_DEVICE.
    opened.device.dropConnection();
    const err = await end;
    assert.ok(isMuxwireError(err, 'MUXWIRE_ERR_NO_DEVICE'), String(err));
    await opened.handle.close();
    assert.equal(opened.handle.closed, true);
  });
}

for (const eventThread of [false, true]) {
  const where = eventThread ? 'on its event thread' : 'on the Node loop';
  test(`the native host times out a control transfer the device never answers, ${where}, and the next one still completes`, async (t) => {
    const opened = await openEcho(t, false, () => undefined, { eventThread });
    if (!opened) return;
    // Apple's get-mode request (0x45) goes unanswered: only libusb's timeout can end it.
    opened.device.ignoreControl = (setup) => setup.bRequest === 0x45;
    const getMode = { bmRequestType: 0xc0, bRequest: 0x45, wValue: 0, wIndex: 0, wLength: 4 };
    await assert.rejects(opened.handle.control(getMode, undefined, 200), (err) => isMuxwireError(err, 'MUXWIRE_ERR_TIMEOUT'));
    const config = await opened.handle.control({ bmRequestType: 0x80, bRequest: 0x08, wValue: 0, wIndex: 0, wLength: 1 }, undefined, 5000);
    assert.deepEqual([...config], [4]);
  });
}

test('MUXWIRE_USB_EVENT_THREAD=1 puts the native host\'s events on its event thread', async (t) => {
  if (!requireBackend(t, 'native')) return;
  const { vusbLibraryPath } = await import('./usb-backends.js');
  savedEnv.set('MUXWIRE_USB_EVENT_THREAD', process.env.MUXWIRE_USB_EVENT_THREAD);
  savedEnv.set('MUXWIRE_VUSB_DIR', process.env.MUXWIRE_VUSB_DIR);
  process.env.MUXWIRE_USB_EVENT_THREAD = '1';
  process.env.MUXWIRE_VUSB_DIR = await mkdtemp(join(root, 'bus-'));
  const host = NativeUsbHost.create({ libusbPath: vusbLibraryPath() });
  cleanups.push(() => host.stop());
  assert.equal(host.events, '', 'nothing is handled before start');
  await host.start();
  assert.equal(host.events, 'thread');
});
