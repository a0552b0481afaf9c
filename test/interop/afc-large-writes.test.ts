/**
 * Interop: AFC writes of 32 and 128 MiB in one FILE_WRITE packet, as appium-ios-device's AfcService
 * sends a chunk it is given and pymobiledevice3 sends a whole file, by that peer and by our own AFC
 * client, through our daemon and through libimobiledevice's usbmuxd (Debian's, unmodified, on the
 * vusb library in a private mount namespace), to the simulated device, which streams such a packet
 * to disk. Each file is read back over AFC and compared by SHA-256.
 *
 * And the other half of issue 19: a connection the device resets mid-stream (the simulator's reset
 * service, N bytes and then RST with a reason) ends, through either daemon, with exactly the N
 * bytes and then EOF. Through our daemon the native demuxer used to relay the RST's reason text to
 * the client, which appium-ios-device's AFC decoder then read as a 1.55 GB packet header.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { after, describe, test, type TestContext } from 'node:test';
import { openLockdown, startService } from '../../src/client/device-services.js';
import type { DeviceInfo } from '../../src/client/device-info.js';
import { UsbmuxClient } from '../../src/client/usbmux-client.js';
import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import { AfcClient } from '../../src/services/afc/afc-client.js';
import { encodeCount, findPatternMismatch } from '../../src/sim/bench-services.js';
import { SimulatedDevice } from '../../src/sim/simulator.js';
import { VusbSource } from '../../src/transport/vusb-source.js';
import { waitForDevice } from '../helpers/client-suite.js';
import { requireCondition } from '../helpers/peers.js';
import { startUsbmuxd, usbmuxdUnavailable, type RunningUsbmuxd } from '../helpers/usbmuxd-ns.js';

/** The part of appium-ios-device's AfcService used here. */
interface AppiumAfcService {
  openFile(path: string, mode: number): Promise<number>;
  writeFile(handle: number, data: Buffer): Promise<void>;
  closeFileHandle(handle: number): Promise<void>;
  createReadStream(path: string, opts: object): Promise<Readable>;
  close(): void;
}
type AfcServiceClass = new (socket: unknown) => AppiumAfcService;

let AfcService: AfcServiceClass | undefined;
let loadError = '';
try {
  AfcService = ((await import('appium-ios-device/build/lib/afc/index.js' as string)) as { AfcService: AfcServiceClass }).AfcService;
} catch (err) {
  loadError = (err as Error).message;
}

const MiB = 1024 * 1024;
const SIZES = [32, 128];
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

interface Muxer {
  client: UsbmuxClient;
  sim: SimulatedDevice;
  device: DeviceInfo;
  busDir: string;
}

type Which = 'our daemon' | 'usbmuxd';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const started = new Map<Which, Promise<Muxer>>();

/** A daemon of each kind with one simulated device on a bus of its own, started once. */
function muxer(which: Which): Promise<Muxer> {
  let m = started.get(which);
  if (m === undefined) {
    m = startMuxer(which);
    started.set(which, m);
  }
  return m;
}

async function startMuxer(which: Which): Promise<Muxer> {
  const dir = await mkdtemp(join(tmpdir(), 'mw-afc-large-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const busDir = join(dir, 'bus');
  // The vusb library watches a bus directory that exists when usbmuxd's libusb_init runs.
  await mkdir(busDir);
  let address: string;
  if (which === 'our daemon') {
    const socketPath = join(dir, 'usbmuxd.sock');
    const daemon = new MuxDaemon({ socketPath, pairDir: join(dir, 'lockdown'), preflight: true });
    await daemon.start();
    cleanups.push(() => daemon.close());
    await daemon.addSource(new VusbSource({ dir: busDir }));
    address = `UNIX:${socketPath}`;
  } else {
    const muxd: RunningUsbmuxd = await startUsbmuxd({ busDir });
    cleanups.push(() => muxd.stop());
    address = `UNIX:${muxd.socketPath}`;
  }
  const sim = await SimulatedDevice.create({ trust: 'accept' });
  cleanups.push(() => sim.close());
  await sim.plug(busDir);
  const client = new UsbmuxClient({ address, timeoutMs: 30_000 });
  const device = await waitForDevice(client, sim.udid, 60_000);
  return { client, sim, device, busDir };
}

function available(t: TestContext, which: Which, needAppium: boolean): boolean {
  if (needAppium && !requireCondition(t, AfcService !== undefined, `appium-ios-device not loadable: ${loadError}`)) return false;
  if (which === 'usbmuxd') {
    const missing = usbmuxdUnavailable();
    if (!requireCondition(t, missing === undefined, missing ?? '')) return false;
  }
  return true;
}

async function afcStream(m: Muxer, device = m.device): Promise<Awaited<ReturnType<typeof startService>>> {
  const session = await openLockdown(m.client, device, { pairIfNeeded: true });
  try {
    return await startService(m.client, session, 'com.apple.afc');
  } finally {
    session.lockdown.close();
  }
}

/** The file read back over AFC by our client (4 × 1 MiB requests in flight). */
async function readBack(m: Muxer, remote: string): Promise<Buffer> {
  const afc = new AfcClient(await afcStream(m));
  try {
    const chunks: Buffer[] = [];
    for await (const chunk of afc.pull(remote)) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  } finally {
    afc.disconnect();
  }
}

for (const which of ['our daemon', 'usbmuxd'] as const) {
  describe(`single-packet AFC writes through ${which}`, () => {
    for (const mib of SIZES) {
      test(`appium-ios-device's AfcService writes ${mib} MiB in one FILE_WRITE and it reads back intact`, { timeout: 300_000 }, async (t) => {
        if (!available(t, which, true)) return;
        const m = await muxer(which);
        const data = randomBytes(mib * MiB);
        const appium = new AfcService!(await afcStream(m));
        t.after(() => appium.close());
        const remote = `/appium-${mib}.bin`;
        const handle = await appium.openFile(remote, 3);
        await appium.writeFile(handle, data);
        await appium.closeFileHandle(handle);
        assert.equal(sha256(await readFile(join(m.sim.afcRoot, remote))), sha256(data), 'on the device');
        // appium reads back through its own stream too (its frames stay under its 1 MiB limit).
        const chunks: Buffer[] = [];
        for await (const chunk of await appium.createReadStream(remote, { autoDestroy: true })) chunks.push(chunk as Buffer);
        assert.equal(sha256(Buffer.concat(chunks)), sha256(data), 'read back by appium');
        assert.equal(sha256(await readBack(m, remote)), sha256(data), 'read back by our client');
      });

      test(`our AfcClient writes ${mib} MiB in one FILE_WRITE and it reads back intact`, { timeout: 300_000 }, async (t) => {
        if (!available(t, which, false)) return;
        const m = await muxer(which);
        const data = randomBytes(mib * MiB);
        const afc = new AfcClient(await afcStream(m), { timeoutMs: 120_000 });
        t.after(() => afc.disconnect());
        const remote = `/ours-${mib}.bin`;
        const handle = await afc.open(remote, 'w');
        await afc.write(handle, data);
        await afc.close(handle);
        assert.equal(sha256(await readFile(join(m.sim.afcRoot, remote))), sha256(data), 'on the device');
        assert.equal(sha256(await readBack(m, remote)), sha256(data), 'read back');
      });
    }

    test("appium-ios-device's AfcService sees exactly the device's replies, then the end, when the device refuses a write by closing", { timeout: 120_000 }, async (t) => {
      if (!available(t, which, true)) return;
      const m = await muxer(which);
      // A device whose AFC service takes writes of at most 16 MiB: a 32 MiB one closes the
      // connection (RST with a reason), as the simulator did for every write over 16 MiB before.
      const strict = await SimulatedDevice.create({ trust: 'accept', afc: { maxWritePacket: 16 * MiB } });
      t.after(() => strict.close());
      await strict.plug(m.busDir);
      const device = await waitForDevice(m.client, strict.udid, 60_000);
      const stream = await afcStream(m, device);
      const bytes: Buffer[] = [];
      stream.on('data', (c: Buffer) => bytes.push(c));
      stream.on('error', () => undefined);
      const closed = new Promise<void>((resolve) => stream.once('close', () => resolve()));
      const appium = new AfcService!(stream);
      t.after(() => appium.close());
      const handle = await appium.openFile('/refused.bin', 3);
      // appium answers a closed connection only at its 10 s reply timeout: not awaited here.
      appium.writeFile(handle, randomBytes(32 * MiB)).catch(() => undefined);
      await closed;
      const got = Buffer.concat(bytes);
      // One FILE_OPEN_RES (48 bytes) and nothing else: not the RST's reason text, which appium
      // read as an AFC header ("The frame is bigger than expected. Length: 1.55 GB").
      assert.equal(got.length, 48, `received ${got.length} bytes: ${JSON.stringify(got.subarray(48).toString('latin1'))}`);
      assert.equal(got.toString('latin1', 0, 8), 'CFA6LPAA');
      assert.equal(got.readBigUInt64LE(32), 0x0en, 'FILE_OPEN_RES');
    });

    test('a connection the device resets after 3 MiB ends with exactly those bytes, then EOF', { timeout: 120_000 }, async (t) => {
      if (!available(t, which, false)) return;
      const m = await muxer(which);
      const n = 3 * MiB + 17;
      const socket = await m.client.connect(m.device, m.sim.benchPorts.reset!);
      const chunks: Buffer[] = [];
      let ending = '';
      const closed = new Promise<void>((resolve) => {
        socket.on('data', (c: Buffer) => chunks.push(c));
        socket.once('end', () => (ending ||= 'end'));
        socket.once('error', (err: NodeJS.ErrnoException) => (ending ||= err.code ?? err.message));
        socket.once('close', () => resolve());
      });
      socket.write(encodeCount(n));
      await closed;
      const got = Buffer.concat(chunks);
      assert.equal(got.length, n, `received ${got.length} of ${n} bytes (ended by ${ending})`);
      assert.equal(findPatternMismatch(got, 0), -1);
      assert.equal(ending, 'end');
    });
  });
}
