/**
 * Our daemon on real USB code paths, with libimobiledevice's tools as the clients: the native
 * backend drives simulated iPhones through libusb (the vusb libusb library loaded in its place,
 * MUXWIRE_LIBUSB_PATH), the TypeScript backend through WebUSB over the vusb wire. Both must do what
 * usbmuxd does for `idevice_id`, `idevicepair`, `ideviceinfo` and `iproxy`: list, pair, answer
 * lockdown queries, carry 100 MB intact, announce a second device, and let go of clients within a
 * second of an unplug.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import { UsbmuxClient } from '../../src/client/usbmux-client.js';
import { encodeCount } from '../../src/sim/bench-services.js';
import type { UsbSource } from '../../src/transport/usb-source.js';
import { SimBus } from '../helpers/sim-bus.js';
import { connectWithRetry, freePort, requirePeer } from '../helpers/peers.js';
import { BACKENDS, makeSource, requireBackend, type Backend } from '../transport/usb-backends.js';

const run = promisify(execFile);

for (const backend of BACKENDS) {
  describe(`our daemon with the ${backend} USB backend serves libimobiledevice's tools`, () => {
    let dir = '';
    let busDir = '';
    let socketPath = '';
    let daemon: MuxDaemon | undefined;
    let source: UsbSource | undefined;
    let dispose: (() => Promise<void>) | undefined;
    let bus: SimBus | undefined;
    let env: NodeJS.ProcessEnv = {};

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), `mw-usb-tools-${backend}-`));
      busDir = join(dir, 'bus');
      socketPath = join(dir, 'usbmuxd.sock');
      env = { ...process.env, USBMUXD_SOCKET_ADDRESS: `UNIX:${socketPath}` };
      bus = new SimBus(busDir, listed);
    });

    after(async () => {
      await daemon?.close();
      await dispose?.();
      await bus?.close();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    /** The daemon, started once the backend is known to be available. */
    async function ready(t: TestContext, ...tools: string[]): Promise<boolean> {
      if (!requireBackend(t, backend) || !requirePeer(t, ...tools)) return false;
      if (!daemon) {
        const made = await makeSource(backend as Backend, busDir);
        source = made.source;
        dispose = made.dispose;
        daemon = new MuxDaemon({ socketPath, pairDir: join(dir, 'lockdown'), preflight: true });
        await daemon.start();
        await daemon.addSource(source);
        assert.equal(source.backend, backend);
      }
      return true;
    }

    async function tool(cmd: string, args: string[], timeout = 60_000): Promise<string> {
      const { stdout } = await run(cmd, args, { env, encoding: 'utf8', timeout });
      return stdout;
    }

    async function listed(): Promise<string[]> {
      return (await tool('idevice_id', ['-l'])).split('\n').map((l) => l.trim()).filter((l) => l !== '');
    }

    test('idevice_id -l lists a device plugged in after the daemon started', async (t) => {
      if (!(await ready(t, 'idevice_id'))) return;
      assert.deepEqual(await listed(), []);
      const sim = await bus!.firstDevice();
      assert.deepEqual(await listed(), [sim.udid]);
    });

    test('idevicepair pair and ideviceinfo work through it', async (t) => {
      if (!(await ready(t, 'idevice_id', 'idevicepair', 'ideviceinfo'))) return;
      const sim = await bus!.firstDevice();
      assert.match(await tool('idevicepair', ['-u', sim.udid, 'pair']), new RegExp(`SUCCESS: Paired with device ${sim.udid}`));
      assert.ok(existsSync(join(dir, 'lockdown', `${sim.udid}.plist`)), 'the daemon saved the pair record');
      assert.match(await tool('idevicepair', ['-u', sim.udid, 'validate']), /SUCCESS/);
      assert.equal((await tool('ideviceinfo', ['-u', sim.udid, '-k', 'UniqueDeviceID'])).trim(), sim.udid);
      assert.equal((await tool('ideviceinfo', ['-u', sim.udid, '-k', 'ProductType'])).trim(), sim.identity.productType);
      assert.match(await tool('ideviceinfo', ['-u', sim.udid]), /^ProductVersion: \S+$/m);
    });

    test('100 MB through iproxy to the echo port come back intact', { timeout: 300_000 }, async (t) => {
      if (!(await ready(t, 'idevice_id', 'iproxy'))) return;
      const sim = await bus!.firstDevice();
      const port = await freePort();
      const proxy = spawn('iproxy', ['-u', sim.udid, `${port}:${sim.benchPorts.echo ?? 7}`], { env, stdio: 'ignore' });
      t.after(() => {
        proxy.kill();
      });
      const socket = await connectWithRetry(port, proxy);
      t.after(() => {
        socket.destroy();
      });
      // At most 128 KiB unechoed: iproxy relays each connection in one thread that blocks in
      // send() while not reading, so more in flight than the device window deadlocks iproxy itself.
      const mbps = await echo(socket, 100 * 1024 * 1024, 128 * 1024);
      t.diagnostic(`${backend}: iproxy echo ${mbps.toFixed(1)} MB/s each way`);
    });

    test('100 MB echo round trip through the daemon come back intact', { timeout: 300_000 }, async (t) => {
      if (!(await ready(t, 'idevice_id'))) return;
      const sim = await bus!.firstDevice();
      const client = new UsbmuxClient({ address: `UNIX:${socketPath}` });
      const device = (await client.listDevices()).find((d) => d.udid === sim.udid);
      assert.ok(device, 'listed by the daemon');
      const socket = await client.connect(device, sim.benchPorts.echo ?? 7);
      t.after(() => {
        socket.destroy();
      });
      const mbps = await echo(socket, 100 * 1024 * 1024, 1024 * 1024);
      t.diagnostic(`${backend}: daemon echo ${mbps.toFixed(1)} MB/s each way`);
    });

    test('a second device plugging in is listed next to the first', async (t) => {
      if (!(await ready(t, 'idevice_id'))) return;
      const a = await bus!.firstDevice();
      const b = await bus!.plugNew();
      const udids = await bus!.listUntil((u) => u.includes(b.udid), b.udid);
      assert.deepEqual([...udids].sort(), [a.udid, b.udid].sort());
    });

    test('unplugging a device mid-transfer closes its client within a second and unlists it', async (t) => {
      if (!(await ready(t, 'idevice_id'))) return;
      const sim = await bus!.plugNew();
      await bus!.listUntil((u) => u.includes(sim.udid), sim.udid);
      const client = new UsbmuxClient({ address: `UNIX:${socketPath}` });
      const device = (await client.listDevices()).find((d) => d.udid === sim.udid);
      assert.ok(device);
      const socket = await client.connect(device, sim.benchPorts.source ?? 19);
      t.after(() => {
        socket.destroy();
      });
      socket.on('error', () => undefined);
      let got = 0;
      const flowing = new Promise<void>((resolve) => socket.on('data', (c: Buffer) => {
        got += c.length;
        if (got > 4 * 1024 * 1024) resolve();
      }));
      socket.write(encodeCount(1n << 40n));
      await flowing;
      const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
      const unplugged = Date.now();
      await sim.unplug();
      // usbmuxd flushes what it already buffered for up to 1 s, then closes (usbmux.md §1.7).
      const guard = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the client outlived the unplug by 1 s')), 1000).unref());
      await Promise.race([closed, guard]);
      t.diagnostic(`${backend}: client closed ${Date.now() - unplugged} ms after the unplug`);
      await bus!.listUntil((u) => !u.includes(sim.udid), `${sim.udid} gone`);
    });
  });
}

/**
 * Sends `total` bytes to an echo peer with at most `inFlight` unechoed, checks the SHA-256 of what
 * comes back, and returns the rate in MB/s each way.
 */
async function echo(socket: Socket, total: number, inFlight: number): Promise<number> {
  const block = randomBytes(64 * 1024);
  const sent = createHash('sha256');
  const received = createHash('sha256');
  let got = 0;
  let progressed: (() => void) | undefined;
  const started = Date.now();
  const echoed = new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      received.update(chunk);
      got += chunk.length;
      progressed?.();
      if (got >= total) resolve();
    });
    socket.once('error', reject);
    socket.once('close', () => reject(new Error(`connection closed after ${got} of ${total} bytes`)));
  });
  let offset = 0;
  for (let i = 0; offset < total; i++) {
    while (offset - got > inFlight - block.length) await new Promise<void>((r) => (progressed = r));
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
  return total / ((Date.now() - started) / 1000) / 1e6;
}
