/**
 * The client test suite, run against every muxer the library must work with: our daemon, embedded
 * mode (no daemon), and libimobiledevice's usbmuxd through the vusb library (interop). Each harness
 * supplies a muxer and a bus where simulated devices plug in; the tests are the same sentences for
 * all of them.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { isMuxwireError } from '../../src/errors.js';
import type { DeviceInfo } from '../../src/client/device-info.js';
import type { DeviceWatcher } from '../../src/client/device-watcher.js';
import { openLockdown, startService, LOCKDOWN_PORT, type DeviceMuxer } from '../../src/client/device-services.js';
import { LockdownClient } from '../../src/lockdown/lockdown-client.js';
import { AfcClient } from '../../src/services/afc/afc-client.js';
import { PortForwarder } from '../../src/client/port-forwarder.js';
import { SimulatedDevice } from '../../src/sim/simulator.js';
import { connect as netConnect } from 'node:net';

export interface SuiteMuxer extends DeviceMuxer {
  listDevices(): Promise<DeviceInfo[]>;
  watch(options?: { signal?: AbortSignal }): DeviceWatcher;
  deletePairRecord(udid: string): Promise<void>;
}

export interface Harness {
  /** The bus directory simulated devices plug into. */
  busDir: string;
  muxer: SuiteMuxer;
  stop(): Promise<void>;
}

/** Waits until `udid` is listed (usbmuxd runs preflight before announcing a device). */
export async function waitForDevice(muxer: SuiteMuxer, udid: string, timeoutMs = 20_000): Promise<DeviceInfo> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = (await muxer.listDevices()).find((d) => d.udid.replace(/-/g, '') === udid.replace(/-/g, ''));
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`device ${udid} was not listed within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Sends `data` to an echo stream and reads the same number of bytes back. */
export async function echoRoundTrip(stream: Duplex, data: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let received = 0;
  const done = new Promise<void>((resolve, reject) => {
    stream.on('data', (c: Buffer) => {
      chunks.push(c);
      received += c.length;
      if (received >= data.length) resolve();
    });
    stream.once('error', reject);
    stream.once('close', () => (received >= data.length ? resolve() : reject(new Error(`closed after ${received} bytes`))));
  });
  stream.write(data);
  await done;
  return Buffer.concat(chunks);
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** What later tests of the same file can use: the harness, the simulated device, its listing. */
export interface SuiteContext {
  harness: Harness | undefined;
  sim: SimulatedDevice;
  device: DeviceInfo;
  dir: string;
}

export function clientSuite(name: string, start: () => Promise<Harness | undefined>, opts: { afcMiB?: number } = {}): () => SuiteContext {
  let h: Harness | undefined;
  let sim: SimulatedDevice;
  let dir: string;
  let device: DeviceInfo;

  before(async () => {
    h = await start();
    if (!h) return;
    dir = await mkdtemp(join(tmpdir(), 'muxwire-client-'));
    await mkdir(join(dir, 'Media'));
    sim = await SimulatedDevice.create({ afcRoot: join(dir, 'Media'), name: 'Suite iPhone' });
    await sim.plug(h.busDir);
    device = await waitForDevice(h.muxer, sim.udid);
  });

  after(async () => {
    await sim?.close().catch(() => undefined);
    await h?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test(`${name}: lists the simulated device with its UDID, product id and USB connection`, (t) => {
    if (!h) return t.skip('muxer not available');
    assert.equal(device.udid.replace(/-/g, ''), sim.udid.replace(/-/g, ''));
    assert.equal(device.productId, sim.productId);
    assert.equal(device.connectionType, 'USB');
    assert.ok(device.deviceId > 0);
  });

  test(`${name}: relays 4 MiB through the device's echo port intact`, async (t) => {
    if (!h) return t.skip('muxer not available');
    const stream = await h.muxer.connect(device, 7);
    const data = randomBytes(4 * 1024 * 1024);
    const back = await echoRoundTrip(stream, data);
    stream.destroy();
    assert.equal(sha(back), sha(data));
  });

  test(`${name}: a connection to a port nothing listens on is refused with a coded error`, async (t) => {
    if (!h) return t.skip('muxer not available');
    await assert.rejects(h.muxer.connect(device, 4242), (err) => isMuxwireError(err, 'MUXWIRE_ERR_CONN_REFUSED'));
  });

  test(`${name}: pairs, stores the record through the muxer, and reads values in a TLS session`, async (t) => {
    if (!h) return t.skip('muxer not available');
    const muxer = h.muxer;
    const lockdown = await LockdownClient.open(await muxer.connect(device, LOCKDOWN_PORT), { label: 'suite' });
    try {
      await lockdown.queryType();
      await lockdown.pair(muxer, { udid: device.udid, deviceId: device.deviceId });
    } finally {
      lockdown.close();
    }
    const record = await muxer.readPairRecord(device.udid);
    assert.ok(record && typeof record.HostID === 'string' && Buffer.isBuffer(record.HostPrivateKey));
    const handle = await openLockdown(muxer, device, { label: 'suite' });
    try {
      assert.equal(handle.lockdown.secure, true);
      assert.equal(await handle.lockdown.getValue({ key: 'DeviceName' }), 'Suite iPhone');
      assert.equal(await handle.lockdown.getValue({ key: 'UniqueDeviceID' }), sim.udid);
    } finally {
      handle.lockdown.close();
    }
  });

  test(`${name}: pushes and pulls a file over AFC intact`, async (t) => {
    if (!h) return t.skip('muxer not available');
    const handle = await openLockdown(h.muxer, device, { label: 'suite' });
    try {
      const afc = new AfcClient(await startService(h.muxer, handle, 'com.apple.afc'));
      try {
        const size = (opts.afcMiB ?? 16) * 1024 * 1024;
        const data = randomBytes(size);
        await writeFile(join(dir, 'up.bin'), data);
        const pushed = await afc.pushFile(join(dir, 'up.bin'), '/suite.bin');
        assert.equal(pushed.bytes, size);
        const pulled = await afc.pullFile('/suite.bin', join(dir, 'down.bin'));
        assert.equal(pulled.bytes, size);
        assert.equal(sha(await readFile(join(dir, 'down.bin'))), sha(data));
        assert.equal(sha(await readFile(join(sim.afcRoot, 'suite.bin'))), sha(data));
        await afc.rm('/suite.bin');
      } finally {
        afc.disconnect();
      }
    } finally {
      handle.lockdown.close();
    }
  });

  test(`${name}: forwards a local port to the device's echo port`, async (t) => {
    if (!h) return t.skip('muxer not available');
    const forwarder = new PortForwarder({ mux: h.muxer, pairs: [{ localPort: 0, devicePort: 7 }], udid: device.udid });
    const [bound] = await forwarder.listen();
    try {
      assert.equal(bound!.address.address, '127.0.0.1');
      const socket = netConnect(bound!.address.port, '127.0.0.1');
      const data = randomBytes(256 * 1024);
      const back = await echoRoundTrip(socket, data);
      socket.destroy();
      assert.equal(sha(back), sha(data));
    } finally {
      await forwarder.close();
    }
  });

  test(`${name}: watch reports a second device attaching and detaching`, async (t) => {
    if (!h) return t.skip('muxer not available');
    const abort = new AbortController();
    const watcher = h.muxer.watch({ signal: abort.signal });
    await watcher.ready;
    const second = await SimulatedDevice.create({ benchPorts: false });
    const seen: string[] = [];
    try {
      await second.plug(h.busDir);
      for await (const event of watcher) {
        const udid = event.type === 'attached' ? event.device.udid : event.device?.udid;
        if (udid?.replace(/-/g, '') !== second.udid.replace(/-/g, '')) continue;
        seen.push(event.type);
        if (event.type === 'attached') await second.unplug();
        if (event.type === 'detached') break;
      }
    } finally {
      abort.abort();
      await second.close();
    }
    assert.deepEqual(seen.filter((s) => s !== 'paired'), ['attached', 'detached']);
  });

  return () => ({ harness: h, sim, device, dir });
}
