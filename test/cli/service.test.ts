/**
 * `muxwire service`: the generated units pass systemd-analyze verify, their ExecStart runs this
 * installation's daemon, the udev rule matches Apple's usbmux devices, install/status/uninstall
 * round-trip under --prefix, and install refuses while libimobiledevice's usbmuxd (Debian's, run in
 * a private mount namespace where it owns /var/run/usbmuxd) holds the socket.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireCondition, requirePeer, runProgram, type ProgramResult } from '../helpers/peers.js';
import { startUsbmuxd, usbmuxdUnavailable } from '../helpers/usbmuxd-ns.js';
import { SERVICE_FILE_MARK, serviceFiles, socketOwnership } from '../../src/cli/commands/service.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-service-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, 'service', ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Splits `service install --print` output into { '/etc/…': content }. */
function printed(stdout: string): Map<string, string> {
  const files = new Map<string, string>();
  for (const part of stdout.split(/^### /m).slice(1)) {
    const nl = part.indexOf('\n');
    files.set(part.slice(0, nl), part.slice(nl + 1).replace(/\n$/, ''));
  }
  return files;
}

const PATHS = ['/etc/systemd/system/muxwire.socket', '/etc/systemd/system/muxwire.service', '/etc/udev/rules.d/39-muxwire.rules'];

test('install --print prints the socket unit, the service unit and the udev rule', () => {
  const r = cli(['install', '--print']);
  assert.equal(r.status, 0, r.stderr);
  const files = printed(r.stdout);
  assert.deepEqual([...files.keys()], PATHS);
  for (const text of files.values()) assert.ok(text.startsWith(SERVICE_FILE_MARK));
  const socket = files.get(PATHS[0]!)!;
  assert.match(socket, /^ListenStream=\/run\/usbmuxd$/m);
  assert.match(socket, /^SocketMode=0666$/m);
  assert.match(socket, /^WantedBy=sockets\.target$/m);
  const service = files.get(PATHS[1]!)!;
  assert.match(service, /^Requires=muxwire\.socket$/m);
  assert.match(service, /^Conflicts=usbmuxd\.service$/m);
  assert.match(service, /^StateDirectory=lockdown$/m);
  assert.doesNotMatch(service, /^User=/m, 'root by default');
});

test('the printed units pass systemd-analyze verify with nothing to report', async (t) => {
  if (!requirePeer(t, 'systemd-analyze')) return;
  for (const args of [[], ['--user', 'usbmux', '--socket-mode', '0660']]) {
    const r = cli(['install', '--print', ...args]);
    assert.equal(r.status, 0, r.stderr);
    const unitDir = join(dir, `verify-${args.length}`);
    await mkdir(unitDir, { recursive: true });
    const files = printed(r.stdout);
    for (const p of PATHS.slice(0, 2)) await writeFile(join(unitDir, p.split('/').pop()!), files.get(p)!);
    const v = spawnSync('systemd-analyze', ['verify', join(unitDir, 'muxwire.socket'), join(unitDir, 'muxwire.service')], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(v.status, 0, v.stderr);
    // verify exits 0 even on an unknown key; any line it prints about our files is a finding.
    assert.deepEqual(v.stderr.split('\n').filter((l) => l.includes(unitDir)), [], v.stderr);
  }
});

test("the service's ExecStart runs this installation's muxwire daemon", () => {
  const service = serviceFiles().find((f) => f.path.endsWith('muxwire.service'))!.content;
  const exec = /^ExecStart=(.*)$/m.exec(service)![1]!.split(' ');
  assert.equal(exec[0], process.execPath);
  assert.deepEqual(exec.slice(2), ['daemon', '--pair-dir', '/var/lib/lockdown']);
  const r = spawnSync(exec[0]!, [...exec.slice(1), '--help'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /LISTEN_FDS/);
});

test('ExecStart quotes a path with spaces and escapes systemd specifiers', () => {
  const service = serviceFiles({ node: '/opt/my node/bin/node', main: '/opt/100%/main.js' }).find((f) => f.path.endsWith('.service'))!.content;
  assert.match(service, /^ExecStart="\/opt\/my node\/bin\/node" \/opt\/100%%\/main\.js daemon /m);
});

test('the udev rule wants muxwire.service for Apple devices and for the usbmux interface ff/fe/02, and hands the node to the user', () => {
  const rules = serviceFiles({ user: 'usbmux' }).find((f) => f.path.endsWith('.rules'))!.content;
  const lines = rules.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
  assert.equal(lines.length, 2);
  for (const l of lines) {
    assert.match(l, /SUBSYSTEM=="usb"/);
    assert.match(l, /ATTRS?\{idVendor\}=="05ac"/);
    assert.match(l, /TAG\+="systemd"/);
    assert.match(l, /ENV\{SYSTEMD_WANTS\}\+="muxwire\.service"/);
  }
  assert.match(lines[0]!, /ENV\{DEVTYPE\}=="usb_device".*OWNER="usbmux", MODE="0660"/);
  assert.match(lines[1]!, /ENV\{DEVTYPE\}=="usb_interface", ATTR\{bInterfaceClass\}=="ff", ATTR\{bInterfaceSubClass\}=="fe", ATTR\{bInterfaceProtocol\}=="02"/);
  // Every key is one udev knows, written KEY=="v" (match) or KEY="v" / KEY+="v" (assign).
  for (const l of lines) {
    for (const pair of l.split(', ')) assert.match(pair, /^(SUBSYSTEM|ACTION|ENV\{\w+\}|ATTRS?\{\w+\}|OWNER|MODE|TAG)(==|\+?=)"[^"]*"$/, pair);
  }
});

/** udevadm test's output with `rulesDir` as /etc/udev/rules.d, in a private mount namespace. */
function udevadmTest(rulesDir: string): { status: number | null; output: string } {
  // Any device will do: the rules files are all parsed before the device is looked at.
  const script = 'mount --bind "$1" /etc/udev/rules.d && exec udevadm test --action=add /sys/class/net/lo';
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', rulesDir], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

test("udev's own parser (udevadm test) reads the rule without a complaint, and complains about a broken one", async (t) => {
  if (!requirePeer(t, 'udevadm', 'unshare')) return;
  const probe = spawnSync('unshare', ['-m', '--propagation', 'private', 'true']);
  if (!requireCondition(t, probe.status === 0 && existsSync('/sys/class/net/lo') && existsSync('/etc/udev/rules.d'), 'no mount namespace, /sys/class/net/lo or /etc/udev/rules.d here')) return;
  const rulesDir = join(dir, 'rules.d');
  await mkdir(rulesDir, { recursive: true });
  const rule = printed(cli(['install', '--print', '--user', 'usbmux']).stdout).get(PATHS[2]!)!;
  await writeFile(join(rulesDir, '39-muxwire.rules'), rule);
  // The control: the same check must see a broken rule, or it proves nothing.
  await writeFile(join(rulesDir, '40-broken.rules'), 'SUBSYSTEM=="usb", ATTR{idVendor}=="05ac", NOT_A_KEY="1"\n');
  const r = udevadmTest(rulesDir);
  assert.match(r.output, /Reading rules file: \/etc\/udev\/rules\.d\/39-muxwire\.rules/, r.output);
  assert.match(r.output, /40-broken\.rules:1 Invalid key/, 'udevadm reports a broken rule');
  const findings = r.output.split('\n').filter((l) => l.includes('39-muxwire.rules') && !l.startsWith('Reading rules file'));
  assert.deepEqual(findings, []);
});

test('install --prefix writes exactly what --print shows; status says current; uninstall removes only its own files', async () => {
  const prefix = join(dir, 'root');
  const inst = cli(['install', '--prefix', prefix]);
  assert.equal(inst.status, 0, inst.stderr);
  assert.match(inst.stdout, /^next: systemctl daemon-reload/m, 'nothing is reloaded under --prefix');
  const shown = printed(cli(['install', '--print']).stdout);
  for (const p of PATHS) assert.equal(await readFile(join(prefix, p), 'utf8'), shown.get(p)!, p);

  const st = cli(['status', '--prefix', prefix, '--json']);
  assert.equal(st.status, 0, st.stderr);
  const report = JSON.parse(st.stdout) as { files: Array<{ path: string; state: string }>; socket: string };
  assert.deepEqual(report.files.map((f) => f.state), ['current', 'current', 'current']);
  assert.equal(report.socket, '/run/usbmuxd');
  // Another user in the unit: status tells the files apart from what install would write now.
  assert.deepEqual((JSON.parse(cli(['status', '--prefix', prefix, '--json', '--user', 'nobody']).stdout) as typeof report).files.map((f) => f.state), ['current', 'outdated', 'outdated']);

  // A rule someone else wrote at our path is left alone.
  await writeFile(join(prefix, PATHS[2]!), 'SUBSYSTEM=="usb", MODE="0666"\n');
  const un = cli(['uninstall', '--prefix', prefix]);
  assert.equal(un.status, 0, un.stderr);
  assert.match(un.stderr, /kept .*39-muxwire\.rules: not written by muxwire service install/);
  assert.equal(existsSync(join(prefix, PATHS[0]!)), false);
  assert.equal(existsSync(join(prefix, PATHS[1]!)), false);
  assert.equal(await readFile(join(prefix, PATHS[2]!), 'utf8'), 'SUBSYSTEM=="usb", MODE="0666"\n');
  assert.match(cli(['status', '--prefix', prefix]).stdout, /^missing +.*muxwire\.socket$/m);
});

test('bad arguments are one coded line', () => {
  for (const args of [[], ['start'], ['status', '--print'], ['install', '--user', 'root;rm'], ['install', '--socket-mode', '999'], ['install', '--bogus']]) {
    const r = cli(args);
    assert.equal(r.status, 2, args.join(' '));
    assert.match(r.stderr, /^muxwire service: .* \(MUXWIRE_ERR_BAD_ARGUMENT\)\n$/, args.join(' '));
  }
  const help = cli(['--help']);
  assert.equal(help.status, 0);
  for (const word of ['install', 'uninstall', 'status', '--print', '--prefix', '--user', '--socket-mode']) assert.ok(help.stdout.includes(word), word);
});

test("install refuses while libimobiledevice's usbmuxd owns the socket, and says how to stop it", async (t) => {
  const why = usbmuxdUnavailable();
  if (!requireCondition(t, why === undefined, why ?? '')) return;
  if (!requirePeer(t, 'nsenter')) return;
  const busDir = join(dir, 'bus');
  await mkdir(busDir, { recursive: true });
  const muxd = await startUsbmuxd({ busDir, preflight: false });
  try {
    // In usbmuxd's mount namespace, /var/run/usbmuxd is its socket: as on a machine running it.
    const prefix = join(dir, 'refused');
    const run = (args: string[]): Promise<ProgramResult> => runProgram('nsenter', ['-t', String(muxd.pid), '-m', process.execPath, CLI, 'service', ...args]);
    const r = await run(['install', '--prefix', prefix]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, new RegExp(`^muxwire service: libimobiledevice's usbmuxd \\(pid ${muxd.pid}\\) owns /run/usbmuxd; stop it first: systemctl stop usbmuxd\\.service && systemctl mask usbmuxd\\.service .* \\(MUXWIRE_ERR_USBMUXD_RUNNING\\)\\n$`));
    assert.equal(existsSync(prefix), false, 'nothing written');
    const st = await run(['status', '--prefix', prefix, '--json']);
    assert.equal(st.code, 0, st.stderr);
    const report = JSON.parse(st.stdout) as { listeners: Array<{ pid: number; comm: string }>; usbmuxd: Array<{ pid: number }> };
    assert.deepEqual(report.listeners, [{ pid: muxd.pid, comm: 'usbmuxd' }]);
    assert.deepEqual(report.usbmuxd.map((p) => p.pid), [muxd.pid]);
    // Outside its namespace, its /var/run/usbmuxd is another socket: it is not ours to refuse on.
    const here = socketOwnership();
    assert.ok(!here.listeners.some((p) => p.pid === muxd.pid) && !here.usbmuxd.some((p) => p.pid === muxd.pid));
  } finally {
    await muxd.stop();
  }
});
