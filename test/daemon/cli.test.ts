/**
 * `muxwire daemon` as a process: ready line, serving simulated devices, clean shutdown on signals.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';
import { RawClient } from './helpers/raw-client.js';
import { DAEMON_INTERRUPT_BUDGET, daemonV8Flags } from '../../src/daemon/v8-tuning.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
let dir: string;
const children: ChildProcess[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-daemon-cli-'));
});
after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

/** Starts the daemon and resolves with it and its ready lines. */
async function startDaemon(args: string[], readyLines = 1, env: NodeJS.ProcessEnv = process.env): Promise<{ child: ChildProcess; lines: string[]; stderr: () => string }> {
  const child = spawn(process.execPath, [CLI, 'daemon', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  children.push(child);
  let out = '';
  let err = '';
  child.stderr!.on('data', (c: Buffer) => {
    err += c.toString();
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready line in 30 s; stderr: ${err}`)), 30_000);
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.split('listening on').length - 1 >= readyLines && out.endsWith('\n')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`daemon exited with ${code}: ${err}`));
    });
  });
  return { child, lines: out.trim().split('\n'), stderr: () => err };
}

test('prints help that names every option and exits 0', () => {
  const r = spawnSync(process.execPath, [CLI, 'daemon', '--help'], { encoding: 'utf8' });
  assert.equal(r.status, 0);
  for (const opt of ['--socket', '--listen', '--pair-dir', '--vusb-dir', '--simulate', '--no-usb', '--backend', '-v']) {
    assert.ok(r.stdout.includes(opt), opt);
  }
  assert.match(r.stdout, /auto \| native \| js/);
});

test('refuses a bad option value with one line and a non-zero exit', () => {
  const r = spawnSync(process.execPath, [CLI, 'daemon', '--backend', 'quantum', '--socket', join(dir, 'never')], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^muxwire daemon: .*\(MUXWIRE_ERR_BAD_ARGUMENT\)\n$/);
});

test('serves simulated devices on UNIX and TCP, and removes its socket on SIGTERM', async () => {
  const socket = join(dir, 'usbmuxd');
  const { child, lines } = await startDaemon(['--socket', socket, '--listen', '127.0.0.1:0', '--pair-dir', join(dir, 'pairs'), '--simulate', '2', '--no-preflight', '--no-usb'], 2);
  assert.equal(lines[0], `muxwire daemon: listening on ${socket}`);
  assert.match(lines[1]!, /^muxwire daemon: listening on 127\.0\.0\.1:\d+$/);
  const c = await RawClient.open(socket);
  let list = await c.request('ListDevices');
  for (let i = 0; i < 100 && (list.DeviceList as unknown[]).length < 2; i++) {
    await new Promise((r) => setTimeout(r, 50));
    list = await c.request('ListDevices');
  }
  assert.equal((list.DeviceList as unknown[]).length, 2);
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const [code] = await exited;
  assert.equal(code, 0);
  await c.waitClosed();
  await assert.rejects(stat(socket), { code: 'ENOENT' });
});

test('refuses to start on a socket another daemon is serving', async () => {
  const socket = join(dir, 'taken');
  const { child } = await startDaemon(['--socket', socket, '--pair-dir', join(dir, 'pairs2'), '--no-preflight']);
  const r = spawnSync(process.execPath, [CLI, 'daemon', '--socket', socket, '--no-preflight'], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /MUXWIRE_ERR_ADDR_IN_USE/);
  const exited = once(child, 'exit');
  child.kill('SIGINT');
  assert.equal((await exited)[0], 0);
});

test('sets its V8 interrupt budget (debug line with -v), and none with MUXWIRE_V8_TUNING=0', async () => {
  for (const [tuning, expected] of [[undefined, /V8 flags: --interrupt-budget=16384\n/], ['0', undefined]] as const) {
    const env = { ...process.env, MUXWIRE_V8_TUNING: tuning };
    if (tuning === undefined) delete env.MUXWIRE_V8_TUNING;
    const { child, stderr } = await startDaemon(['--socket', join(dir, `v8-${tuning ?? 'default'}`), '--pair-dir', join(dir, 'pairs3'), '--no-preflight', '--no-usb', '-v'], 1, env);
    // 'close', not 'exit': stderr may still hold the last lines when the process has exited.
    const closed = once(child, 'close');
    child.kill('SIGTERM');
    const [code, signal] = await closed;
    assert.equal(code, 0, `exit ${code} signal ${signal}; stderr: ${stderr()}`);
    if (expected) assert.match(stderr(), expected);
    else assert.doesNotMatch(stderr(), /V8 flags/);
  }
});

test('daemonV8Flags: the budget by default, nothing when MUXWIRE_V8_TUNING=0', () => {
  assert.deepEqual(daemonV8Flags({}), [`--interrupt-budget=${DAEMON_INTERRUPT_BUDGET}`]);
  assert.deepEqual(daemonV8Flags({ MUXWIRE_V8_TUNING: '1' }), [`--interrupt-budget=${DAEMON_INTERRUPT_BUDGET}`]);
  assert.deepEqual(daemonV8Flags({ MUXWIRE_V8_TUNING: '0' }), []);
});

test('--pair-access owner without the addon (MUXWIRE_NO_NATIVE=1) refuses to start with one coded line', () => {
  const env = { ...process.env, MUXWIRE_NO_NATIVE: '1' };
  const r = spawnSync(process.execPath, [CLI, 'daemon', '--pair-access', 'owner', '--socket', join(dir, 'never-owner'), '--no-usb', '--no-preflight'], { encoding: 'utf8', env, timeout: 20_000 });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^muxwire daemon: --pair-access owner needs peer credentials: MUXWIRE_NO_NATIVE=1 [^\n]*\(MUXWIRE_ERR_NATIVE_UNAVAILABLE\)\n$/);
  const tcp = spawnSync(process.execPath, [CLI, 'daemon', '--no-socket', '--listen', '0.0.0.0:0', '--no-usb'], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(tcp.status, 2);
  assert.match(tcp.stderr, /^muxwire daemon: --listen 0\.0\.0\.0:0 is not loopback: TCP off loopback needs --tcp-token FILE \(MUXWIRE_ERR_BAD_ARGUMENT\)\n$/);
  const noListen = spawnSync(process.execPath, [CLI, 'daemon', '--tcp-token', '/nonexistent', '--socket', join(dir, 'never-token')], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(noListen.status, 2);
  assert.match(noListen.stderr, /\(MUXWIRE_ERR_BAD_ARGUMENT\)\n$/);
});

test('warns once at start-up that pair records are open to everyone with the default, and not with --pair-access owner', async () => {
  const runs: Array<[string[], boolean]> = [[[], true], [['--socket-mode', '0600'], false]];
  if (process.env.MUXWIRE_NO_NATIVE !== '1') runs.push([['--pair-access', 'owner'], false]);
  for (const [extra, warned] of runs) {
    const { child, stderr } = await startDaemon(['--socket', join(dir, `warn-${runs.findIndex((r) => r[0] === extra)}`), '--pair-dir', join(dir, 'pairs4'), '--no-preflight', '--no-usb', ...extra]);
    const closed = once(child, 'close');
    child.kill('SIGTERM');
    assert.equal((await closed)[0], 0);
    const lines = stderr().split('\n').filter((l) => /every local user can read and delete pair records/.test(l));
    assert.equal(lines.length, warned ? 1 : 0, `${extra.join(' ')}: ${stderr()}`);
  }
});
