/**
 * Debian's usbmuxd, unmodified, drives simulated iPhones through native/vusb's libusb-compatible
 * library (loaded with LD_LIBRARY_PATH in a private mount namespace, see
 * test/helpers/usbmuxd-ns.ts), and libimobiledevice's tools talk to them through it. This is the
 * proof that the simulated device's USB side (descriptors, configuration, bulk transfers, zero-
 * length packets, unplug) and mux side are what the real host stack expects.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connectWithRetry, freePort, requireCondition, requirePeer } from '../helpers/peers.js';
import { SimulatedDevice } from '../../src/sim/simulator.js';
import { SimBus } from '../helpers/sim-bus.js';
import { startUsbmuxd, usbmuxdUnavailable, type RunningUsbmuxd } from '../helpers/usbmuxd-ns.js';

const run = promisify(execFile);
const TOOLS = ['idevice_id', 'idevicepair', 'ideviceinfo', 'iproxy'];

let busDir = '';
let muxd: RunningUsbmuxd | undefined;
let unavailable: string | undefined;
let bus: SimBus | undefined;

before(async () => {
  unavailable = usbmuxdUnavailable();
  if (unavailable) return;
  busDir = await mkdtemp(join(tmpdir(), 'muxwire-interop-bus-'));
  // usbmuxd starts on an empty bus, so every device below arrives through hotplug.
  muxd = await startUsbmuxd({ busDir });
  bus = new SimBus(busDir, listed, () => muxd!.log());
});

after(async () => {
  await bus?.close();
  await muxd?.stop();
  if (busDir) await rm(busDir, { recursive: true, force: true });
});

function ready(t: TestContext, ...tools: string[]): boolean {
  return requireCondition(t, unavailable === undefined, unavailable ?? '') && requirePeer(t, ...tools);
}

async function tool(cmd: string, args: string[], timeout = 60_000): Promise<string> {
  const { stdout } = await run(cmd, args, { env: muxd!.clientEnv, encoding: 'utf8', timeout });
  return stdout;
}

async function listed(): Promise<string[]> {
  let out: string;
  try {
    out = await tool('idevice_id', ['-l']);
  } catch (err) {
    throw new Error(`idevice_id -l failed: ${String(err)}\nusbmuxd log (tail):\n${muxd!.log().slice(-6000)}`);
  }
  return out.split('\n').map((l) => l.trim()).filter((l) => l !== '');
}

describe('Debian usbmuxd with the vusb libusb library', () => {
  test('sees a simulated device plugged in after it started', async (t) => {
    if (!ready(t, 'idevice_id')) return;
    assert.deepEqual(await listed(), []);
    const sim = await bus!.firstDevice();
    await muxd!.waitForLog(new RegExp(`Connected to v2\\.0 device \\d+ on location 0x[0-9a-f]+ with serial number ${sim.udid}`));
    // usbmuxd picked the highest configuration and the mux interface from our descriptors.
    assert.match(muxd!.log(), /Setting configuration for device 1-\d+, from 0 to 4/);
    assert.match(muxd!.log(), /Found interface \d+ with endpoints 04\/85/);
    assert.match(muxd!.log(), /Using wMaxPacketSize=512/);
  });

  test('idevice_id -l lists the simulated device', async (t) => {
    if (!ready(t, 'idevice_id')) return;
    const sim = await bus!.firstDevice();
    assert.deepEqual(await listed(), [sim.udid]);
  });

  test('idevicepair pair and ideviceinfo work through it', async (t) => {
    if (!ready(t, 'idevice_id', 'idevicepair', 'ideviceinfo')) return;
    const sim = await bus!.firstDevice();
    const paired = await tool('idevicepair', ['-u', sim.udid, 'pair']);
    assert.match(paired, new RegExp(`SUCCESS: Paired with device ${sim.udid}`));
    // usbmuxd stored the pair record in its (private) /var/lib/lockdown.
    assert.ok(existsSync(join(muxd!.pairDir, `${sim.udid}.plist`)), 'pair record saved by usbmuxd');
    assert.match(await tool('idevicepair', ['-u', sim.udid, 'validate']), /SUCCESS/);
    assert.equal((await tool('ideviceinfo', ['-u', sim.udid, '-k', 'UniqueDeviceID'])).trim(), sim.udid);
    assert.equal((await tool('ideviceinfo', ['-u', sim.udid, '-k', 'ProductType'])).trim(), sim.identity.productType);
    const all = await tool('ideviceinfo', ['-u', sim.udid]);
    assert.match(all, /^ProductVersion: \S+$/m);
    assert.match(all, /^DeviceName: .+$/m);
  });

  test('100 MB through iproxy to the echo port come back intact', { timeout: 300_000 }, async (t) => {
    if (!ready(t, 'idevice_id', 'iproxy')) return;
    const sim = await bus!.firstDevice();
    const port = await freePort();
    const proxy = spawn('iproxy', ['-u', sim.udid, `${port}:${sim.benchPorts.echo ?? 7}`], {
      env: muxd!.clientEnv,
      stdio: 'ignore',
    });
    t.after(() => {
      proxy.kill();
    });
    const socket = await connectWithRetry(port, proxy);
    t.after(() => socket.destroy());

    const total = 100 * 1024 * 1024;
    const block = randomBytes(64 * 1024);
    const sent = createHash('sha256');
    const received = createHash('sha256');
    let got = 0;
    let progressed: (() => void) | undefined;
    const echoed = new Promise<void>((resolve, reject) => {
      socket.on('data', (chunk: Buffer) => {
        received.update(chunk);
        got += chunk.length;
        progressed?.();
        if (got >= total) resolve();
      });
      socket.once('error', reject);
      socket.once('close', () => reject(new Error(`connection closed after ${got} of ${total} bytes\n${muxd!.log().slice(-4000)}`)));
    });
    // At most IN_FLIGHT bytes unechoed. iproxy (libusbmuxd 2.0.2) relays each connection in one
    // thread that blocks in send() towards usbmuxd while it is not reading usbmuxd's side: with
    // more in flight than usbmuxd and the device window can hold, an echo deadlocks in iproxy
    // itself, whatever the device. 128 KiB stays under the device's 128 KiB receive window.
    const IN_FLIGHT = 128 * 1024;
    let offset = 0;
    for (let i = 0; offset < total; i++) {
      while (offset - got > IN_FLIGHT - block.length) await new Promise<void>((r) => (progressed = r));
      // Each block differs (its index in front), so a lost or repeated block changes the hash.
      const chunk = Buffer.from(block);
      chunk.writeUInt32BE(i, 0);
      sent.update(chunk);
      offset += chunk.length;
      socket.write(chunk);
    }
    await echoed;
    assert.equal(got, total);
    assert.equal(received.digest('hex'), sent.digest('hex'));
  });

  test('two plugged devices are listed as two', async (t) => {
    if (!ready(t, 'idevice_id')) return;
    const a = await bus!.firstDevice();
    const b = await bus!.plugNew();
    const udids = await bus!.listUntil((u) => u.includes(b.udid), b.udid);
    assert.deepEqual([...udids].sort(), [a.udid, b.udid].sort());
  });

  test('a device plugged before usbmuxd starts is found at startup', async (t) => {
    if (!ready(t, 'idevice_id')) return;
    // A bus of its own: one host stack at a time holds a device, like a cable.
    const ownBus = await mkdtemp(join(tmpdir(), 'muxwire-interop-bus2-'));
    const sim = await SimulatedDevice.create();
    t.after(async () => {
      await sim.close();
      await rm(ownBus, { recursive: true, force: true });
    });
    await sim.plug(ownBus);
    const other = await startUsbmuxd({ busDir: ownBus });
    t.after(() => other.stop());
    // Found by libusb_init + LIBUSB_HOTPLUG_ENUMERATE, before usbmuxd's main loop runs.
    await other.waitForLog(/\d+ devices? detected/);
    assert.match(other.log(), /1 device detected/);
    await other.waitForLog(new RegExp(`Finished preflight on device ${sim.udid}`));
    const { stdout } = await run('idevice_id', ['-l'], { env: other.clientEnv, encoding: 'utf8' });
    assert.deepEqual(stdout.trim().split('\n'), [sim.udid]);
  });

  test('closing a simulated device makes usbmuxd report it gone', async (t) => {
    if (!ready(t, 'idevice_id')) return;
    const a = await bus!.firstDevice();
    const others = bus!.sims.filter((s) => s !== a).map((s) => s.udid);
    await a.close();
    const udids = await bus!.listUntil((u) => !u.includes(a.udid), `${a.udid} gone`);
    assert.deepEqual(udids.sort(), others.sort());
    await muxd!.waitForLog(/Removed device \d+ on location/);
  });

  test('unplugging in the middle of a transfer ends the client connection and usbmuxd carries on', { timeout: 120_000 }, async (t) => {
    if (!ready(t, 'idevice_id', 'iproxy')) return;
    const sim = await bus!.plugNew();
    await bus!.listUntil((u) => u.includes(sim.udid), sim.udid);
    const port = await freePort();
    const proxy = spawn('iproxy', ['-u', sim.udid, `${port}:${sim.benchPorts.source ?? 19}`], { env: muxd!.clientEnv, stdio: 'ignore' });
    t.after(() => {
      proxy.kill();
    });
    const socket = await connectWithRetry(port, proxy);
    t.after(() => socket.destroy());
    // Ask the source service for far more than will ever arrive, then pull the cable mid-stream.
    const count = Buffer.alloc(8);
    count.writeBigUInt64BE(1n << 40n);
    let got = 0;
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    const flowing = new Promise<void>((resolve) =>
      socket.on('data', (chunk: Buffer) => {
        got += chunk.length;
        if (got >= 4 * 1024 * 1024) resolve();
      }),
    );
    socket.on('error', () => {});
    socket.write(count);
    await flowing;
    await sim.unplug();
    await closed; // iproxy drops its client when usbmuxd drops the device connection
    await bus!.listUntil((u) => !u.includes(sim.udid), `${sim.udid} gone`);
    // usbmuxd is still serving: a new device arrives and is listed.
    const next = await bus!.plugNew();
    await bus!.listUntil((u) => u.includes(next.udid), next.udid);
  });
});
