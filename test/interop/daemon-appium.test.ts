/**
 * Interop: appium-ios-device's usbmux client (a peer this project did not write) against our
 * daemon, with an in-process simulated device: listing, a tunnel to the echo port, reading the
 * BUID and the pair record, and lockdown values inside a TLS session with that record.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { requireCondition } from '../helpers/peers.js';
import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import { SimulatedDevice } from '../../src/sim/simulator.js';

interface AppiumLockdown {
  startSession(hostID: string, systemBUID: string): Promise<{ sessionID: string; enableSessionSSL: boolean }>;
  enableSessionSSL(key: Buffer, cert: Buffer): void;
  getValue(query?: { Key?: string; Domain?: string }): Promise<unknown>;
  close(): void;
}
interface AppiumUsbmux {
  listDevices(): Promise<Array<{ DeviceID: number; Properties: { SerialNumber: string; DeviceID: number } }>>;
  readBUID(): Promise<string>;
  readPairRecord(udid: string): Promise<Record<string, unknown> | null>;
  connect(deviceId: number, port: number): Promise<Socket>;
  connectLockdown(udid: string): Promise<AppiumLockdown>;
  close(): void;
}
interface AppiumUsbmuxModule {
  Usbmux: new (socket: Socket) => AppiumUsbmux;
  getDefaultSocket(opts: { socketPath: string }): Promise<Socket>;
}

// The usbmux module itself: the package's main entry also loads its instruments code, which fails
// to load with the bplist-parser this tree resolves (0.5.0: its CommonJS build says __esModule but
// has no default export, so `bplist_parser_1.default.UID` is "reading 'UID'" of undefined),
// unrelated to usbmux.
let appium: AppiumUsbmuxModule | undefined;
let loadError = '';
try {
  appium = (await import('appium-ios-device/build/lib/usbmux/index.js' as string)) as AppiumUsbmuxModule;
} catch (err) {
  loadError = (err as Error).message;
}

let dir: string;
let daemon: MuxDaemon;
let sim: SimulatedDevice;
let socketPath: string;
const open: AppiumUsbmux[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-interop-appium-'));
  socketPath = join(dir, 'usbmuxd');
  daemon = new MuxDaemon({ socketPath, pairDir: join(dir, 'lockdown'), preflight: true });
  await daemon.start();
  sim = await SimulatedDevice.create({ trust: 'accept', iosVersion: '17.5' });
  const paired = new Promise<void>((resolve) => daemon.registry.once('paired', () => resolve()));
  daemon.addLink(sim.inProcessLink());
  await paired;
});

after(async () => {
  for (const u of open) u.close();
  await daemon?.close();
  await sim?.close();
  await rm(dir, { recursive: true, force: true });
});

async function usbmux(): Promise<AppiumUsbmux> {
  const u = new appium!.Usbmux(await appium!.getDefaultSocket({ socketPath }));
  open.push(u);
  return u;
}

function available(t: Parameters<typeof requireCondition>[0]): boolean {
  return requireCondition(t, appium !== undefined, `appium-ios-device not loadable: ${loadError}`);
}

test('lists the simulated device through appium-ios-device', async (t) => {
  if (!available(t)) return;
  const devices = await (await usbmux()).listDevices();
  assert.equal(devices.length, 1);
  assert.equal(devices[0]!.Properties.SerialNumber, sim.udid);
});

test('connects through appium-ios-device to the echo port', async (t) => {
  if (!available(t)) return;
  const u = await usbmux();
  const [dev] = await u.listDevices();
  const socket = await u.connect(dev!.DeviceID, 7);
  const data = Buffer.from('appium says hello');
  const chunks: Buffer[] = [];
  let got = 0;
  const echoed = new Promise<void>((resolve) => {
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      got += c.length;
      if (got >= data.length) resolve();
    });
  });
  // appium hands back the socket with its splitter unpiped, i.e. paused; its own services pipe it.
  socket.resume();
  socket.write(data);
  await echoed;
  assert.ok(Buffer.concat(chunks).equals(data));
  socket.destroy();
});

test('reads BUID and pair record, and lockdown values inside a TLS session', async (t) => {
  if (!available(t)) return;
  const buid = await (await usbmux()).readBUID();
  assert.equal(buid, await daemon.pairStore.readBUID());
  const record = await (await usbmux()).readPairRecord(sim.udid);
  assert.ok(record, 'the preflight pairing is readable');
  const lockdown = await (await usbmux()).connectLockdown(sim.udid);
  const session = await lockdown.startSession(record.HostID as string, buid);
  assert.equal(session.enableSessionSSL, true);
  lockdown.enableSessionSSL(record.HostPrivateKey as Buffer, record.HostCertificate as Buffer);
  // One GetValue of the whole default domain: this appium version hands every reply read through
  // its TLS upgrade to its queue twice (seen here against the simulator; libimobiledevice and our
  // LockdownClient read the same session correctly), so a second request would read a stale reply.
  const values = (await lockdown.getValue()) as Record<string, unknown>;
  assert.equal(values.ProductVersion, '17.5');
  assert.equal(values.UniqueDeviceID, sim.udid);
  lockdown.close();
});
