/**
 * Interop: go-ios (the `ios` program of the npm package go-ios, a Go client stack this project did
 * not write) against our daemon, with simulated devices on a vusb bus. `.ci/run` installs the
 * package and puts its Linux binary on PATH as `ios`. go-ios reads USBMUXD_SOCKET_ADDRESS as
 * `unix:///path` (libimobiledevice's `UNIX:/path` spelling is not one it knows). The daemon runs in
 * this process, so every `ios` is spawned asynchronously.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { connectWithRetry, freePort, requirePeer, runProgram, type ProgramResult } from '../helpers/peers.js';
import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import { VusbSource } from '../../src/transport/vusb-source.js';
import { SimulatedDevice } from '../../src/sim/simulator.js';

let dir: string;
let bus: string;
let daemon: MuxDaemon;
let sim: SimulatedDevice;
const extra: SimulatedDevice[] = [];
let env: NodeJS.ProcessEnv;
const children: ChildProcess[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-interop-go-ios-'));
  bus = join(dir, 'bus');
  const socketPath = join(dir, 'usbmuxd');
  daemon = new MuxDaemon({ socketPath, pairDir: join(dir, 'lockdown'), preflight: true });
  await daemon.start();
  await daemon.addSource(new VusbSource({ dir: bus }));
  sim = await SimulatedDevice.create({ trust: 'accept', name: 'Go Phone', iosVersion: '17.5', afcRoot: join(dir, 'afc') });
  await mkdir(join(dir, 'afc'), { recursive: true });
  await sim.plug(bus);
  // Preflight pairs it (trust: accept) and stores the record go-ios reads back.
  for (let i = 0; i < 600 && (daemon.registry.visible().length < 1 || (await daemon.pairStore.readPairRecord(sim.udid)) === undefined); i++) await new Promise((r) => setTimeout(r, 25));
  env = { ...process.env, USBMUXD_SOCKET_ADDRESS: `unix://${socketPath}` };
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await daemon?.close();
  await sim?.close();
  for (const s of extra) await s.close();
  await rm(dir, { recursive: true, force: true });
});

/** Runs `ios ARGS` to completion (go-ios logs JSON lines on stderr). */
function ios(args: string[]): Promise<ProgramResult> {
  return runProgram('ios', args, { env, children });
}

/** The one JSON document `ios` printed on stdout. */
function json<T>(r: ProgramResult): T {
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout.trim()) as T;
}

test('ios version is go-ios', async (t) => {
  if (!requirePeer(t, 'ios')) return;
  assert.match((await ios(['version'])).stdout, /^\{"version":"\d+\.\d+\.\d+"\}$/m);
});

test('ios list and list --details show the simulated device as a USB device', async (t) => {
  if (!requirePeer(t, 'ios')) return;
  assert.deepEqual(json<{ deviceList: string[] }>(await ios(['list'])).deviceList, [sim.udid]);
  const details = json<{ deviceList: Array<{ Udid: string; ConnectionType: string }> }>(await ios(['list', '--details']));
  assert.deepEqual(details.deviceList.map((d) => [d.Udid, d.ConnectionType]), [[sim.udid, 'USB']]);
});

test('ios info and lockdown get read lockdown values in a TLS session with the pair record the daemon stored', async (t) => {
  if (!requirePeer(t, 'ios')) return;
  const info = json<Record<string, unknown>>(await ios(['info', `--udid=${sim.udid}`]));
  assert.equal(info.UniqueDeviceID, sim.udid);
  assert.equal(info.ProductVersion, '17.5');
  assert.equal(info.DeviceName, 'Go Phone');
  assert.equal(json<string>(await ios(['lockdown', 'get', 'ProductVersion', `--udid=${sim.udid}`])), '17.5');
  assert.deepEqual(json<{ devicename: string }>(await ios(['devicename', `--udid=${sim.udid}`])), { devicename: 'Go Phone' });
});

test('ios readpair returns the record the daemon stored (ReadPairRecord)', async (t) => {
  if (!requirePeer(t, 'ios')) return;
  const record = json<{ HostID: string; SystemBUID: string }>(await ios(['readpair', `--udid=${sim.udid}`]));
  const stored = await daemon.pairStore.readPairRecord(sim.udid);
  assert.ok(stored, 'preflight stored a record');
  assert.equal(record.HostID, stored.HostID);
  assert.equal(record.SystemBUID, stored.SystemBUID);
});

test('ios fsync push and pull move a file over AFC intact', async (t) => {
  if (!requirePeer(t, 'ios')) return;
  const data = randomBytes(3 * 1024 * 1024 + 17);
  const local = join(dir, 'up.bin');
  await writeFile(local, data);
  const push = await ios(['fsync', 'push', `--srcPath=${local}`, '--dstPath=/up.bin', `--udid=${sim.udid}`]);
  assert.equal(push.code, 0, push.stderr);
  assert.ok((await readFile(join(dir, 'afc', 'up.bin'))).equals(data), 'the device holds the bytes pushed');
  const down = join(dir, 'down');
  await mkdir(down);
  const pull = await ios(['fsync', 'pull', '--srcPath=/up.bin', `--dstPath=${down}`, `--udid=${sim.udid}`]);
  assert.equal(pull.code, 0, pull.stderr);
  assert.ok((await readFile(join(down, 'up.bin'))).equals(data), 'the bytes pulled are the bytes pushed');
});

test('ios forward carries bytes to the echo service and back', async (t) => {
  if (!requirePeer(t, 'ios')) return;
  const port = await freePort();
  const child = spawn('ios', ['forward', String(port), '7', `--udid=${sim.udid}`], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  const socket = await connectWithRetry(port, child);
  const data = randomBytes(256 * 1024);
  let got = Buffer.alloc(0);
  const done = new Promise<void>((resolve) =>
    socket.on('data', (c: Buffer) => {
      got = Buffer.concat([got, c]);
      if (got.length >= data.length) resolve();
    }),
  );
  socket.write(data);
  await done;
  socket.destroy();
  assert.ok(got.equals(data));
  child.kill('SIGTERM');
});

test('ios listen prints Attached for a device plugged in while it listens', async (t) => {
  if (!requirePeer(t, 'ios')) return;
  const child = spawn('ios', ['listen'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  const second = await SimulatedDevice.create({ trust: 'accept' });
  extra.push(second);
  const seen = new Promise<void>((resolve) =>
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes(`"SerialNumber":"${second.udid}"`)) resolve();
    }),
  );
  // Plug once go-ios has sent Listen: its first event (the device already attached) shows it listens.
  for (let i = 0; i < 1200 && !out.includes(sim.udid); i++) await new Promise((r) => setTimeout(r, 25));
  assert.ok(out.includes(sim.udid), `no Attached for the device already there: ${out}`);
  await second.plug(bus);
  await seen;
  const event = out.split('\n').map((l) => l.trim()).filter((l) => l.includes(second.udid)).map((l) => JSON.parse(l) as { MessageType: string; Properties: { ConnectionType: string } })[0]!;
  assert.equal(event.MessageType, 'Attached');
  assert.equal(event.Properties.ConnectionType, 'USB');
  child.kill('SIGTERM');
});
