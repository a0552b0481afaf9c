/**
 * Interop: libimobiledevice's tools (Debian libimobiledevice-utils, libusbmuxd-tools) against our
 * daemon, with simulated devices on a vusb bus (SimulatedDevice.plug → VusbSource), reached through
 * USBMUXD_SOCKET_ADDRESS=UNIX:<socket>. The daemon runs in this process, so every tool is spawned
 * asynchronously (a spawnSync would stop the daemon it talks to).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { requirePeer, runProgram, type ProgramResult } from '../helpers/peers.js';
import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import { VusbSource } from '../../src/transport/vusb-source.js';
import { SimulatedDevice } from '../../src/sim/simulator.js';
import { setLogLevel, setLogSink } from '../../src/log.js';

let dir: string;
let daemon: MuxDaemon;
let env: NodeJS.ProcessEnv;
const sims: Record<'main' | 'deny' | 'passcode', SimulatedDevice | undefined> = { main: undefined, deny: undefined, passcode: undefined };
const children: ChildProcess[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-interop-daemon-'));
  const bus = join(dir, 'bus');
  const socketPath = join(dir, 'usbmuxd');
  daemon = new MuxDaemon({ socketPath, pairDir: join(dir, 'lockdown'), preflight: true, listen: [{ host: '127.0.0.1', port: 0 }] });
  await daemon.start();
  await daemon.addSource(new VusbSource({ dir: bus }));
  sims.main = await SimulatedDevice.create({ trust: 'accept', name: 'Interop Phone', iosVersion: '17.5' });
  sims.deny = await SimulatedDevice.create({ trust: 'deny' });
  sims.passcode = await SimulatedDevice.create({ trust: 'passcode' });
  for (const s of Object.values(sims)) await s!.plug(bus);
  // Wait until all three are listed (preflight done or capped).
  for (let i = 0; i < 400 && daemon.registry.visible().length < 3; i++) await new Promise((r) => setTimeout(r, 25));
  env = { ...process.env, USBMUXD_SOCKET_ADDRESS: `UNIX:${socketPath}` };
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await daemon?.close();
  for (const s of Object.values(sims)) await s?.close();
  await rm(dir, { recursive: true, force: true });
});

/** Runs a peer tool to completion (with a hang guard), feeding `input` on stdin. */
function run(cmd: string, args: string[], opts: { input?: Buffer; timeoutMs?: number } = {}): Promise<ProgramResult> {
  return runProgram(cmd, args, { env, children, timeoutMs: opts.timeoutMs ?? 30_000, ...(opts.input !== undefined ? { input: opts.input } : {}) });
}

function udid(which: keyof typeof sims): string {
  return sims[which]!.udid;
}

test('idevice_id -l lists every simulated device', async (t) => {
  if (!requirePeer(t, 'idevice_id')) return;
  const r = await run('idevice_id', ['-l']);
  assert.equal(r.code, 0, r.stderr);
  const listed = r.stdout.trim().split('\n').sort();
  assert.deepEqual(listed, [udid('main'), udid('deny'), udid('passcode')].sort());
});

test('idevice_id -l lists the devices over the TCP listener too (USBMUXD_SOCKET_ADDRESS=HOST:PORT)', async (t) => {
  if (!requirePeer(t, 'idevice_id')) return;
  const tcp = daemon.addresses.find((a) => a.startsWith('127.0.0.1:'))!;
  const saved = env;
  env = { ...saved, USBMUXD_SOCKET_ADDRESS: tcp };
  try {
    const r = await run('idevice_id', ['-l']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim().split('\n').length, 3);
  } finally {
    env = saved;
  }
});

test('ideviceinfo reads all values in a TLS session, -s without pairing, and -k one key', async (t) => {
  if (!requirePeer(t, 'ideviceinfo')) return;
  const all = await run('ideviceinfo', ['-u', udid('main')]);
  assert.equal(all.code, 0, all.stderr);
  assert.match(all.stdout, new RegExp(`^UniqueDeviceID: ${udid('main')}$`, 'm'));
  assert.match(all.stdout, /^ProductVersion: 17\.5$/m);
  const simple = await run('ideviceinfo', ['-s', '-u', udid('deny')]);
  assert.equal(simple.code, 0, simple.stderr);
  assert.match(simple.stdout, new RegExp(`^UniqueDeviceID: ${udid('deny')}$`, 'm'));
  const key = await run('ideviceinfo', ['-u', udid('main'), '-k', 'ProductVersion']);
  assert.equal(key.code, 0, key.stderr);
  assert.equal(key.stdout.trim(), '17.5');
});

test("idevicesyslog streams the device's log: lockdownd's requests appear as they happen, and the relay ends with the tool", async (t) => {
  if (!requirePeer(t, 'idevicesyslog', 'ideviceinfo')) return;
  const child = spawn('idevicesyslog', ['-u', udid('main')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const until = async (what: string, ok: () => boolean): Promise<void> => {
    for (let i = 0; i < 1500 && !ok(); i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(ok(), `${what}; stdout: ${out} stderr: ${err}`);
  };
  await until('idevicesyslog connected', () => out.includes('[connected]'));
  const info = await run('ideviceinfo', ['-u', udid('main'), '-k', 'ProductType']);
  assert.equal(info.code, 0, info.stderr);
  // idevicesyslog parsed each entry as a device's (it prints them without the host name).
  await until('the GetValue was logged', () => /^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d lockdownd\[63\] <Notice>: GetValue Key=ProductType from a host in a session$/m.test(out));
  assert.equal(sims.main!.lockdownd.syslog.relays, 1);
  child.kill('SIGINT');
  await once(child, 'exit');
  await until('the relay is gone', () => sims.main!.lockdownd.syslog.relays === 0);
});

test('idevicediagnostics reads the battery and MobileGestalt, and restart makes the device detach and attach again, still paired', async (t) => {
  if (!requirePeer(t, 'idevicediagnostics', 'idevicepair', 'idevice_id')) return;
  // A device of its own: a restart must not cut the other tests' device away.
  const phone = await SimulatedDevice.create({ trust: 'accept', iosVersion: '16.4', benchPorts: false });
  try {
    await phone.plug(join(dir, 'bus'));
    const id = phone.udid;
    for (let i = 0; i < 400 && !daemon.registry.visible().some((d) => d.properties.serialNumber === id); i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal((await run('idevicepair', ['-u', id, 'pair'])).code, 0);
    const gas = await run('idevicediagnostics', ['-u', id, 'diagnostics', 'GasGauge']);
    assert.equal(gas.code, 0, gas.stderr);
    assert.match(gas.stdout, /<key>CycleCount<\/key>\s*<integer>127<\/integer>/);
    const gestalt = await run('idevicediagnostics', ['-u', id, 'mobilegestalt', 'ProductType']);
    assert.equal(gestalt.code, 0, gestalt.stderr);
    assert.match(gestalt.stdout, new RegExp(`<key>ProductType</key>\\s*<string>${phone.identity.productType}</string>`));
    const battery = await run('idevicediagnostics', ['-u', id, 'ioregentry', 'AppleSmartBattery']);
    assert.equal(battery.code, 0, battery.stderr);
    const before = daemon.registry.visible().find((d) => d.properties.serialNumber === id)!.id;
    const restart = await run('idevicediagnostics', ['-u', id, 'restart']);
    assert.equal(restart.code, 0, restart.stderr);
    assert.match(restart.stdout, /Restarting device/);
    // Gone, then back under a new device id, and still paired (the record and the device's trust stay).
    let after: number | undefined;
    for (let i = 0; i < 600; i++) {
      after = daemon.registry.visible().find((d) => d.properties.serialNumber === id)?.id;
      if (after !== undefined && after !== before) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.ok(after !== undefined && after !== before, `the device came back under a new id (before ${before}, after ${after})`);
    assert.equal((await run('idevicepair', ['-u', id, 'validate'])).code, 0);
  } finally {
    await phone.close();
  }
});

test('idevicename reads and sets the device name', async (t) => {
  if (!requirePeer(t, 'idevicename')) return;
  const before = await run('idevicename', ['-u', udid('main')]);
  assert.equal(before.code, 0, before.stderr);
  assert.equal(before.stdout.trim(), 'Interop Phone');
  const set = await run('idevicename', ['-u', udid('main'), 'Renamed Phone']);
  assert.equal(set.code, 0, set.stderr);
  const afterSet = await run('idevicename', ['-u', udid('main')]);
  assert.equal(afterSet.stdout.trim(), 'Renamed Phone');
});

test('idevicepair validates the preflight pairing, unpairs, pairs again and validates', async (t) => {
  if (!requirePeer(t, 'idevicepair')) return;
  const u = udid('main');
  const v1 = await run('idevicepair', ['-u', u, 'validate']);
  assert.equal(v1.code, 0, v1.stdout + v1.stderr);
  assert.match(v1.stdout, /SUCCESS: Validated pairing/);
  const un = await run('idevicepair', ['-u', u, 'unpair']);
  assert.equal(un.code, 0, un.stdout + un.stderr);
  assert.equal(await daemon.pairStore.readPairRecord(u), undefined, 'unpair deletes the record through DeletePairRecord');
  // (What `validate` says with no record is the device's business: libimobiledevice then makes up
  // a fresh record and sends ValidatePair with it.)
  const p = await run('idevicepair', ['-u', u, 'pair']);
  assert.equal(p.code, 0, p.stdout + p.stderr);
  assert.match(p.stdout, /SUCCESS: Paired with device/);
  const v3 = await run('idevicepair', ['-u', u, 'validate']);
  assert.equal(v3.code, 0, v3.stdout + v3.stderr);
  const sys = await run('idevicepair', ['systembuid']);
  assert.equal(sys.stdout.trim(), await daemon.pairStore.readBUID());
});

test('idevicepair pair fails with the device error when the user denies trust or a passcode is set', async (t) => {
  if (!requirePeer(t, 'idevicepair')) return;
  const deny = await run('idevicepair', ['-u', udid('deny'), 'pair']);
  assert.notEqual(deny.code, 0);
  assert.match(deny.stdout + deny.stderr, /denied/i);
  const locked = await run('idevicepair', ['-u', udid('passcode'), 'pair']);
  assert.notEqual(locked.code, 0);
  assert.match(locked.stdout + locked.stderr, /passcode/i);
});

let iproxyLog = '';
// MUXWIRE_DEBUG_STALL=1 keeps the daemon's debug lines in memory and prints them with a stall.
const ring: string[] = [];
if (process.env.MUXWIRE_DEBUG_STALL) {
  setLogLevel('debug');
  setLogSink((line) => {
    ring.push(`${performance.now().toFixed(1)} ${line}`);
    if (ring.length > 400) ring.shift();
  });
}

/** Starts iproxy LOCAL:7 and resolves with its port once it accepts. */
async function startIproxy(): Promise<{ port: number; child: ChildProcess }> {
  // A free port picked by the kernel, released for iproxy to bind.
  const probe = createServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const port = (probe.address() as AddressInfo).port;
  await new Promise((r) => probe.close(r));
  const child = spawn('iproxy', [...(process.env.MUXWIRE_DEBUG_IPROXY ? ['-d'] : []), '-u', udid('main'), `${port}:7`], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  iproxyLog = '';
  child.stdout!.on('data', (c: Buffer) => (iproxyLog = (iproxyLog + c.toString()).slice(-4000)));
  child.stderr!.on('data', (c: Buffer) => (iproxyLog = (iproxyLog + c.toString()).slice(-4000)));
  // Wait for the listening socket in /proc/net/tcp rather than by connecting: a probe connection
  // makes iproxy open a tunnel of its own, and iproxy 2.0.2's select() only watches descriptors up
  // to the daemon socket's (select(sfd + 1)); when the probe's descriptors are freed while the real
  // client is accepted, the client's descriptor can be the higher one and iproxy never reads it.
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  for (let i = 0; i < 400; i++) {
    const table = await readFile('/proc/net/tcp', 'utf8').catch(() => '');
    if (table.split('\n').some((l) => l.includes(`:${hexPort} `) && l.trim().split(/\s+/)[3] === '0A')) return { port, child };
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error('iproxy did not start listening');
}

/**
 * Sends `data` through a TCP connection to an echo service and returns the sha256 of the echo.
 * At most `window` bytes are in flight: iproxy relays with blocking sends in one select loop, so a
 * writer that runs ahead of the echo deadlocks any proxy chain (ours or usbmuxd's) once every
 * buffer on the loop is full; a windowed writer is what an echo client must be.
 */
async function echoThrough(port: number, data: Buffer, window = 256 * 1024): Promise<string> {
  const s = createConnection({ port, host: '127.0.0.1' });
  await once(s, 'connect');
  const hash = createHash('sha256');
  let got = 0;
  let wake: (() => void) | undefined;
  let stall: NodeJS.Timeout | undefined;
  const done = new Promise<void>((resolve, reject) => {
    s.on('data', (c: Buffer) => {
      hash.update(c);
      got += c.length;
      wake?.();
      if (got >= data.length) resolve();
    });
    s.on('error', reject);
    s.on('close', () => (got >= data.length ? resolve() : reject(new Error(`closed after ${got} bytes`))));
    // Hang guard: no progress for 20 s fails with what every buffer on the daemon side holds.
    let mark = -1;
    let still = 0;
    stall = setInterval(() => {
      still = got === mark ? still + 1 : 0;
      mark = got;
      if (still >= 20) {
        const state = { sent, got, testSocketWritable: s.writableLength, daemon: daemon.clientStats() };
        const err = new Error(`echo stalled: ${JSON.stringify(state)}; iproxy said: ${iproxyLog}${ring.length ? `; daemon log:\n${ring.join('\n')}` : ''}`);
        wake?.();
        reject(err);
      }
    }, 1000);
  });
  done.catch(() => undefined);
  let sent = 0;
  let failed = false;
  done.catch(() => (failed = true));
  while (sent < data.length && !failed) {
    if (sent - got >= window) {
      await new Promise<void>((r) => (wake = r));
      wake = undefined;
      continue;
    }
    const n = Math.min(64 * 1024, data.length - sent, window - (sent - got));
    if (!s.write(data.subarray(sent, sent + n))) await once(s, 'drain');
    sent += n;
  }
  try {
    await done;
  } finally {
    clearInterval(stall);
    s.destroy();
  }
  return hash.digest('hex');
}

test('iproxy forwards a local port to the echo service', async (t) => {
  if (!requirePeer(t, 'iproxy')) return;
  const { port, child } = await startIproxy();
  const data = Buffer.from('hello through iproxy');
  assert.equal(await echoThrough(port, data), createHash('sha256').update(data).digest('hex'));
  child.kill('SIGTERM');
});

test('inetcat connects stdin and stdout to the echo service', async (t) => {
  if (!requirePeer(t, 'inetcat')) return;
  const child = spawn('inetcat', ['-u', udid('main'), '7'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  const data = randomBytes(200_000);
  let out = Buffer.alloc(0);
  const got = new Promise<void>((resolve) => {
    child.stdout.on('data', (c: Buffer) => {
      out = Buffer.concat([out, c]);
      if (out.length >= data.length) resolve();
    });
  });
  child.stdin.write(data);
  await got;
  assert.ok(out.subarray(0, data.length).equals(data));
  child.kill('SIGTERM');
});

test('carries 100 MB through iproxy to the echo service intact', { timeout: 600_000 }, async (t) => {
  if (!requirePeer(t, 'iproxy')) return;
  const { port, child } = await startIproxy();
  // Deterministic data: a seeded block repeated with a counter, so no 100 MB random generation.
  const block = randomBytes(1 << 20);
  const data = Buffer.allocUnsafe(100 * (1 << 20));
  for (let i = 0; i < 100; i++) {
    block.copy(data, i << 20);
    data.writeUInt32BE(i, i << 20);
  }
  const expected = createHash('sha256').update(data).digest('hex');
  assert.equal(await echoThrough(port, data), expected);
  child.kill('SIGTERM');
});
