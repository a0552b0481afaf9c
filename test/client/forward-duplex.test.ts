/**
 * `muxwire forward` as the safe replacement of iproxy: it takes iproxy's argument forms, and it
 * carries a 100 MiB full-duplex echo intact (a client that writes as fast as the relay takes bytes
 * while it reads the echo, SHA-256 both ways) to the simulated device's echo port, through our
 * daemon and through libimobiledevice's usbmuxd (on the vusb library). iproxy 2.0.2 cannot: one
 * thread relays both directions, and a send that cannot go out within 1 s is abandoned with the
 * rest of its 32 KiB buffer (libusbmuxd 2.0.2 tools/iproxy.c, common/socket.c socket_send).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test, type TestContext } from 'node:test';
import { parseForwardArgs } from '../../src/client/port-forwarder.js';
import { UsbmuxClient } from '../../src/client/usbmux-client.js';
import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import { isMuxwireError } from '../../src/errors.js';
import { SimulatedDevice } from '../../src/sim/simulator.js';
import { VusbSource } from '../../src/transport/vusb-source.js';
import { waitForDevice } from '../helpers/client-suite.js';
import { requireCondition } from '../helpers/peers.js';
import { startUsbmuxd, usbmuxdUnavailable } from '../helpers/usbmuxd-ns.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const MiB = 1024 * 1024;

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe("forward's arguments in iproxy's forms", () => {
  test('LOCAL:DEVICE pairs', () => {
    assert.deepEqual(parseForwardArgs(['2222:22', '8100:8100']), {
      pairs: [
        { localPort: 2222, devicePort: 22 },
        { localPort: 8100, devicePort: 8100 },
      ],
    });
  });

  test("iproxy's old form LOCAL DEVICE [UDID]", () => {
    assert.deepEqual(parseForwardArgs(['2222', '22']), { pairs: [{ localPort: 2222, devicePort: 22 }] });
    assert.deepEqual(parseForwardArgs(['2222', '22', '00008120-000F0EE75C688D38']), {
      pairs: [{ localPort: 2222, devicePort: 22 }],
      udid: '00008120-000F0EE75C688D38',
    });
  });

  test('refuses nothing, a mixture and bad ports with MUXWIRE_ERR_BAD_ARGUMENT', () => {
    for (const args of [[], ['2222', '22:1'], ['2222:0'], ['70000:22'], ['2222', '22', 'udid', 'more']]) {
      assert.throws(() => parseForwardArgs(args), (err: unknown) => isMuxwireError(err) && err.code === 'MUXWIRE_ERR_BAD_ARGUMENT', args.join(' '));
    }
  });
});

/** Starts `muxwire forward` and resolves with the port of its ready line. */
async function startForward(args: string[], env: NodeJS.ProcessEnv): Promise<{ child: ChildProcess; port: number; host: string; stderr: () => string }> {
  const child = spawn(process.execPath, [CLI, 'forward', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  cleanups.push(() => {
    child.kill('SIGTERM');
  });
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('\n')) resolve(out);
    });
    child.once('exit', (code) => reject(new Error(`forward exited ${code}: ${err}`)));
  });
  const m = /ready (\S+):(\d+) -> device:7/.exec(line);
  assert.ok(m, line);
  return { child, host: m[1]!, port: Number(m[2]), stderr: () => err };
}

/**
 * Writes `total` bytes to the echo through host:port as fast as the socket takes them, reading the
 * echo all the while; resolves with the SHA-256 of what was sent and of what came back.
 */
function duplexEcho(host: string, port: number, total: number): Promise<{ sent: string; received: string; got: number }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, host);
    const sent = createHash('sha256');
    const received = createHash('sha256');
    const block = randomBytes(256 * 1024);
    let got = 0;
    let offset = 0;
    let index = 0;
    socket.on('error', reject);
    socket.on('close', () => reject(new Error(`closed after ${got} of ${total} bytes echoed`)));
    socket.on('data', (chunk: Buffer) => {
      received.update(chunk);
      got += chunk.length;
      if (got >= total) {
        socket.removeAllListeners('close');
        socket.destroy();
        resolve({ sent: sent.digest('hex'), received: received.digest('hex'), got });
      }
    });
    const write = (): void => {
      while (offset < total) {
        // Each block differs (its index in front), so a lost or repeated block changes the hash.
        const chunk = Buffer.from(block.subarray(0, Math.min(block.length, total - offset)));
        chunk.writeUInt32BE(index++, 0);
        sent.update(chunk);
        offset += chunk.length;
        if (!socket.write(chunk)) {
          socket.once('drain', write);
          return;
        }
      }
    };
    socket.once('connect', write);
  });
}

for (const which of ['our daemon', 'usbmuxd'] as const) {
  test(`muxwire forward (iproxy's arguments) carries a 100 MiB full-duplex echo intact through ${which}`, { timeout: 300_000 }, async (t: TestContext) => {
    if (which === 'usbmuxd') {
      const missing = usbmuxdUnavailable();
      if (!requireCondition(t, missing === undefined, missing ?? '')) return;
    }
    const dir = await mkdtemp(join(tmpdir(), 'mw-forward-duplex-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const busDir = join(dir, 'bus');
    await mkdir(busDir);
    let socketPath: string;
    if (which === 'our daemon') {
      socketPath = join(dir, 'usbmuxd.sock');
      const daemon = new MuxDaemon({ socketPath, pairDir: join(dir, 'lockdown') });
      await daemon.start();
      cleanups.push(() => daemon.close());
      await daemon.addSource(new VusbSource({ dir: busDir }));
    } else {
      const muxd = await startUsbmuxd({ busDir });
      cleanups.push(() => muxd.stop());
      socketPath = muxd.socketPath;
    }
    const sim = await SimulatedDevice.create();
    cleanups.push(() => sim.close());
    await sim.plug(busDir);
    await waitForDevice(new UsbmuxClient({ address: `UNIX:${socketPath}` }), sim.udid, 60_000);
    const env = { ...process.env, USBMUXD_SOCKET_ADDRESS: `UNIX:${socketPath}` };
    const { host, port } = await startForward(['-u', sim.udid, '-s', '127.0.0.1', `0:${sim.benchPorts.echo}`], env);
    assert.equal(host, '127.0.0.1');
    const total = 100 * MiB;
    const r = await duplexEcho(host, port, total);
    assert.equal(r.got, total);
    assert.equal(r.received, r.sent, 'the echo came back byte for byte');
  });
}

test("iproxy's -l picks the USB entry and -d logs each connection with its byte counts; -l with -n is a usage error", async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mw-forward-debug-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const busDir = join(dir, 'bus');
  await mkdir(busDir);
  const socketPath = join(dir, 'usbmuxd.sock');
  const daemon = new MuxDaemon({ socketPath, pairDir: join(dir, 'lockdown') });
  await daemon.start();
  cleanups.push(() => daemon.close());
  await daemon.addSource(new VusbSource({ dir: busDir }));
  const sim = await SimulatedDevice.create();
  cleanups.push(() => sim.close());
  await sim.plug(busDir);
  await waitForDevice(new UsbmuxClient({ address: `UNIX:${socketPath}` }), sim.udid, 60_000);
  const env = { ...process.env, USBMUXD_SOCKET_ADDRESS: `UNIX:${socketPath}` };

  const conflict = spawnSync(process.execPath, [CLI, 'forward', '-l', '-n', `0:${sim.benchPorts.echo}`], { env, encoding: 'utf8' });
  assert.equal(conflict.status, 2);
  assert.match(conflict.stderr, /^muxwire forward: -l \(USB\) and -n \(network\) pick different entries: give one \(MUXWIRE_ERR_BAD_ARGUMENT\)\n$/);

  const fwd = await startForward(['-l', '-d', '-u', sim.udid, `0:${sim.benchPorts.echo}`], env);
  const payload = randomBytes(1000);
  const echoed = await new Promise<Buffer>((resolve, reject) => {
    const socket = connect(fwd.port, fwd.host);
    const parts: Buffer[] = [];
    let got = 0;
    socket.on('error', reject);
    socket.on('data', (c: Buffer) => {
      parts.push(c);
      got += c.length;
      if (got >= payload.length) {
        socket.end();
        resolve(Buffer.concat(parts));
      }
    });
    socket.once('connect', () => socket.write(payload));
  });
  assert.deepEqual(echoed, payload);
  const closed = /closed: 1000 bytes to the device, 1000 from it/;
  for (let i = 0; i < 500 && !closed.test(fwd.stderr()); i++) await new Promise((r) => setTimeout(r, 20));
  assert.match(fwd.stderr(), new RegExp(`connected to ${sim.udid} port ${sim.benchPorts.echo}`));
  assert.match(fwd.stderr(), closed);
});
