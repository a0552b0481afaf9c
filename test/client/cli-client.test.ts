/**
 * The client commands as a user types them: a daemon and a simulated device in this process, the
 * `muxwire` command as a child process pointed at the daemon with --socket or
 * USBMUXD_SOCKET_ADDRESS.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect } from 'node:net';
import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import { VusbSource } from '../../src/transport/vusb-source.js';
import { UsbmuxClient } from '../../src/client/usbmux-client.js';
import { SimulatedDevice } from '../../src/sim/simulator.js';
import { echoRoundTrip, waitForDevice } from '../helpers/client-suite.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
let dir: string;
let daemon: MuxDaemon;
let sim: SimulatedDevice;
let socket: string;

function muxwire(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-cli-'));
  await mkdir(join(dir, 'bus'));
  await mkdir(join(dir, 'Media'));
  socket = join(dir, 'usbmuxd');
  daemon = new MuxDaemon({ socketPath: socket, pairDir: join(dir, 'lockdown') });
  await daemon.start();
  await daemon.addSource(new VusbSource({ dir: join(dir, 'bus') }));
  sim = await SimulatedDevice.create({ afcRoot: join(dir, 'Media'), name: 'CLI iPhone' });
  await sim.plug(join(dir, 'bus'));
  await waitForDevice(new UsbmuxClient({ address: `UNIX:${socket}` }), sim.udid);
});

after(async () => {
  await sim?.close();
  await daemon?.close();
  await rm(dir, { recursive: true, force: true });
});

test('list prints the device, and --json gives one JSON document', async () => {
  const text = await muxwire(['list', '--socket', `UNIX:${socket}`]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, new RegExp(`^${sim.udid}\\tUSB\\tid=\\d+`, 'm'));
  const json = await muxwire(['list', '--json'], { USBMUXD_SOCKET_ADDRESS: socket });
  const devices = JSON.parse(json.stdout) as { udid: string; connectionType: string }[];
  assert.deepEqual(devices.map((d) => [d.udid, d.connectionType]), [[sim.udid, 'USB']]);
});

test('list -u shows only that device, and a UDID with no entry is MUXWIRE_ERR_NO_DEVICE', async () => {
  const one = await muxwire(['list', '--socket', socket, '-u', sim.udid]);
  assert.equal(one.code, 0, one.stderr);
  assert.equal(one.stdout.trim().split('\n').length, 1);
  assert.ok(one.stdout.startsWith(`${sim.udid}\tUSB`), one.stdout);
  const none = await muxwire(['list', '--socket', socket, '-u', '00008030-00000000DEADBEEF']);
  assert.equal(none.code, 1);
  assert.equal(none.stdout, '');
  assert.match(none.stderr, /^muxwire list: no device with UDID 00008030-00000000DEADBEEF \(MUXWIRE_ERR_NO_DEVICE\)\n$/);
});

test('info without a pairing fails with one line and a non-zero exit, then works after pair', async () => {
  const before = await muxwire(['info', '-k', 'ProductVersion', '--socket', socket]);
  assert.equal(before.code, 1);
  assert.match(before.stderr, /^muxwire info: .*not paired.*\(MUXWIRE_ERR_NOT_PAIRED\)\n$/);
  const simple = await muxwire(['info', '-s', '-k', 'DeviceName', '--socket', socket]);
  assert.equal(simple.stdout, 'CLI iPhone\n');
  const paired = await muxwire(['pair', '--socket', socket]);
  assert.equal(paired.code, 0, paired.stderr);
  assert.match(paired.stdout, new RegExp(`paired with ${sim.udid}`));
  const version = await muxwire(['info', '-k', 'ProductVersion', '--socket', socket]);
  assert.equal(version.stdout, `${sim.identity.productVersion}\n`);
  const all = await muxwire(['info', '--json', '--socket', socket]);
  const values = JSON.parse(all.stdout) as Record<string, unknown>;
  assert.equal(values.UniqueDeviceID, sim.udid);
  const battery = await muxwire(['info', '-q', 'com.apple.mobile.battery', '--json', '--socket', socket]);
  assert.equal(typeof (JSON.parse(battery.stdout) as Record<string, unknown>).BatteryCurrentCapacity, 'number');
  const valid = await muxwire(['validate', '--socket', socket]);
  assert.equal(valid.code, 0, valid.stderr);
});

test('afc push, ls, stat, pull, mv, mkdir and rm work and report what they moved', async () => {
  const data = randomBytes(3 * 1024 * 1024 + 17);
  await writeFile(join(dir, 'up.bin'), data);
  const s = ['--socket', socket];
  const push = await muxwire(['afc', 'push', join(dir, 'up.bin'), '/a.bin', '--json', '--no-progress', ...s]);
  assert.equal(push.code, 0, push.stderr);
  assert.equal((JSON.parse(push.stdout) as { bytes: number }).bytes, data.length);
  assert.equal((await muxwire(['afc', 'mkdir', '/d/e', ...s])).code, 0);
  assert.equal((await muxwire(['afc', 'mv', '/a.bin', '/d/e/b.bin', ...s])).code, 0);
  const ls = await muxwire(['afc', 'ls', '/d/e', ...s]);
  assert.equal(ls.stdout, 'b.bin\n');
  const stat = await muxwire(['afc', 'stat', '/d/e/b.bin', '--json', ...s]);
  assert.equal((JSON.parse(stat.stdout) as { size: number }).size, data.length);
  const pull = await muxwire(['afc', 'pull', '/d/e/b.bin', join(dir, 'down.bin'), ...s]);
  assert.equal(pull.code, 0, pull.stderr);
  assert.match(pull.stdout, /^pulled 3\.0 MiB in [\d.]+ s \([\d.]+ MB\/s\)\n$/);
  assert.ok((await readFile(join(dir, 'down.bin'))).equals(data));
  const rmTree = await muxwire(['afc', 'rm', '-r', '/d', ...s]);
  assert.equal(rmTree.code, 0, rmTree.stderr);
  const gone = await muxwire(['afc', 'stat', '/d', ...s]);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /OBJECT_NOT_FOUND.*\(MUXWIRE_ERR_AFC\)\n$/);
});

test('forward relays a local port to the device and prints a ready line', async () => {
  const child = spawn(process.execPath, [CLI, 'forward', '--socket', socket, '0:7'], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        if (out.includes('\n')) resolve(out);
      });
      child.once('exit', (code) => reject(new Error(`forward exited ${code}`)));
    });
    const m = /ready 127\.0\.0\.1:(\d+) -> device:7/.exec(line);
    assert.ok(m, line);
    const s = connect(Number(m[1]), '127.0.0.1');
    const data = randomBytes(100_000);
    assert.ok((await echoRoundTrip(s, data)).equals(data));
    s.destroy();
  } finally {
    child.kill('SIGTERM');
  }
});

test('bad input gets one readable line and a non-zero exit', async () => {
  const cases: [string[], RegExp][] = [
    [['forward', '--socket', socket, 'nonsense'], /is not LOCAL:DEVICE/],
    [['afc', 'frobnicate', '--socket', socket], /unknown afc operation/],
    [['list', '--socket', 'host:99999'], /MUXWIRE_ERR_BAD_ADDRESS/],
    [['list', '--socket', join(dir, 'nothing-here')], /cannot reach usbmuxd.*MUXWIRE_ERR_NO_DAEMON/],
    [['info', '--socket', socket, '-u', 'ffffffffffffffffffffffffffffffffffffffff'], /no device with UDID/],
    [['list', '--bogus'], /MUXWIRE_ERR_BAD_ARGUMENT/],
    [['pair', '--socket', socket, '--trust-timeout', 'soon'], /--trust-timeout must be a positive number/],
    [['demo', '--size', '0'], /--size must be 1\.\.4096 MiB/],
    [['demo', '--size', '0.001'], /--size must be 1\.\.4096 MiB, not '0\.001'/],
    [['demo', '--socket', '/x'], /Unknown option '--socket' \(MUXWIRE_ERR_BAD_ARGUMENT\)/],
  ];
  for (const [args, pattern] of cases) {
    const r = await muxwire(args);
    assert.notEqual(r.code, 0, args.join(' '));
    assert.match(r.stderr, pattern);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
});

test('usage errors exit 2, other failures 1; a local file-system error carries MUXWIRE_ERR_IO', async () => {
  const notADir = join(dir, 'a-file');
  await writeFile(notADir, 'x');
  const cases: [string[], number, RegExp][] = [
    [['list', '--bogus'], 2, /^muxwire list: Unknown option '--bogus' \(MUXWIRE_ERR_BAD_ARGUMENT\)$/],
    [['list', '--socket', socket, '--timeout', '1e10'], 2, /^muxwire list: --timeout takes whole milliseconds from 1 to 2147483647, not '1e10' \(MUXWIRE_ERR_BAD_ARGUMENT\)$/],
    [['list', '--socket', socket, '--timeout', '99999999999'], 2, /--timeout takes whole milliseconds/],
    [['list', '--socket', ''], 1, /^muxwire list: --socket is empty \(MUXWIRE_ERR_BAD_ADDRESS\)$/],
    [['daemon', '--bogus'], 2, /^muxwire daemon: Unknown option '--bogus'; see muxwire daemon --help \(MUXWIRE_ERR_BAD_ARGUMENT\)$/],
    [['daemon', '--socket', '127.0.0.1:28001', '--no-usb'], 2, /'127\.0\.0\.1:28001' is a TCP address: use --listen 127\.0\.0\.1:28001 \(MUXWIRE_ERR_BAD_ARGUMENT\)$/],
    [['sim', '--vusb-dir', notADir], 1, /^muxwire sim: .*EEXIST.* \(MUXWIRE_ERR_IO\)$/],
    [['sim', '--vusb-dir', join(dir, 'bus-never'), '--network', '999.1.1.1'], 1, /^muxwire sim: --network wants an IP address, not '999\.1\.1\.1' \(MUXWIRE_ERR_BAD_ADDRESS\)$/],
  ];
  for (const [args, code, pattern] of cases) {
    const r = await muxwire(args);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr.trimEnd(), pattern, args.join(' '));
    assert.equal(r.stdout, '', args.join(' '));
  }
});

test('unpair removes the pairing so that a session is refused again', async () => {
  const r = await muxwire(['unpair', '--socket', socket]);
  assert.equal(r.code, 0, r.stderr);
  const after = await muxwire(['validate', '--socket', socket]);
  assert.equal(after.code, 1);
});

test('every command answers --help with its usage', async () => {
  for (const cmd of ['list', 'watch', 'info', 'pair', 'validate', 'unpair', 'forward', 'afc', 'demo', 'daemon', 'sim']) {
    const r = await muxwire([cmd, '--help']);
    assert.equal(r.code, 0, cmd);
    assert.match(r.stdout, new RegExp(`usage: muxwire ${cmd}`), cmd);
  }
});

test('runs through a symlinked bin, as npx and npm install -g start it', async () => {
  const { symlink } = await import('node:fs/promises');
  const link = join(dir, 'muxwire-bin');
  await symlink(CLI, link);
  const out = await new Promise<string>((resolve, reject) =>
    execFile(process.execPath, [link, '--version'], (err, stdout) => (err ? reject(err) : resolve(stdout))),
  );
  assert.equal(out, 'muxwire 0.1.0\n');
});

test('demo runs daemon, simulated device, pairing and an AFC transfer end to end and cleans up', async () => {
  const r = await muxwire(['demo', '--size', '4', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '', 'no warning about the demo\'s own private socket');
  const report = JSON.parse(r.stdout) as { ok: boolean; steps: { step: string; detail: string }[] };
  assert.equal(report.ok, true);
  assert.deepEqual(
    report.steps.map((s) => s.step),
    ['daemon', 'device', 'attached', 'paired', 'info', 'push', 'pull', 'verified'],
  );
  const socketDir = /UNIX:(\/\S+)\/usbmuxd\.sock/.exec(report.steps[0]!.detail)?.[1];
  assert.ok(socketDir);
  const { existsSync } = await import('node:fs');
  assert.equal(existsSync(socketDir), false, 'the demo removed its temporary directory');
});

test('pair says so while the Trust dialog is showing, then pairs when the user accepts', async () => {
  const slow = await SimulatedDevice.create({ trust: 'delay:1500', benchPorts: false });
  try {
    await slow.plug(join(dir, 'bus'));
    await waitForDevice(new UsbmuxClient({ address: `UNIX:${socket}` }), slow.udid);
    const r = await muxwire(['pair', '-u', slow.udid, '--socket', socket]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, `muxwire: waiting for the user to trust this computer on ${slow.udid}…\n`);
    assert.match(r.stdout, new RegExp(`paired with ${slow.udid}`));
  } finally {
    await slow.close();
  }
});

test('pair gives up with a coded error when the Trust dialog is not answered in time', async () => {
  const slow = await SimulatedDevice.create({ trust: 'delay:60000', benchPorts: false });
  try {
    await slow.plug(join(dir, 'bus'));
    await waitForDevice(new UsbmuxClient({ address: `UNIX:${socket}` }), slow.udid);
    const r = await muxwire(['pair', '-u', slow.udid, '--trust-timeout', '1500', '--socket', socket]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /waiting for the user to trust/);
    assert.match(r.stderr, /Trust dialog was not answered within 1500 ms \(MUXWIRE_ERR_TIMEOUT\)\n$/);
  } finally {
    await slow.close();
  }
});
