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
async function startDaemon(args: string[], readyLines = 1): Promise<{ child: ChildProcess; lines: string[] }> {
  const child = spawn(process.execPath, [CLI, 'daemon', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
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
  return { child, lines: out.trim().split('\n') };
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
  assert.equal(r.status, 1);
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
