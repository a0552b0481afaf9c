/**
 * Socket activation: the daemon serves a listening socket it inherits (LISTEN_FDS / LISTEN_PID,
 * descriptors from 3 on, as sd_listen_fds(3) reads them) instead of binding its own. The end-to-end
 * test starts it the way systemd starts muxwire.service: Debian's systemd-socket-activate creates
 * and listens on the socket, waits for the first client, then execs the daemon with the socket as
 * fd 3, LISTEN_FDS=1 and LISTEN_PID set to its own pid (which the exec keeps); libimobiledevice's
 * idevice_id is the client.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';
import { requirePeer, runProgram } from '../helpers/peers.js';
import { ClientServer, LISTEN_FDS_START, takeListenFds } from '../../src/daemon/server.js';
import { isMuxwireError } from '../../src/errors.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
let dir: string;
const children: ChildProcess[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-socket-activation-'));
});
after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

test('takeListenFds takes LISTEN_FDS descriptors from 3 on when LISTEN_PID is ours, and clears the variables', () => {
  const env: NodeJS.ProcessEnv = { LISTEN_PID: '4242', LISTEN_FDS: '2', LISTEN_FDNAMES: 'a:b', KEEP: 'x' };
  assert.deepEqual(takeListenFds(env, 4242), [LISTEN_FDS_START, LISTEN_FDS_START + 1]);
  assert.deepEqual(env, { KEEP: 'x' });
});

test("takeListenFds ignores sockets meant for another process (a parent's LISTEN_PID) and still clears the variables", () => {
  const env: NodeJS.ProcessEnv = { LISTEN_PID: '1', LISTEN_FDS: '1' };
  assert.deepEqual(takeListenFds(env, 4242), []);
  assert.deepEqual(env, {});
  assert.deepEqual(takeListenFds({}, 4242), []);
  assert.deepEqual(takeListenFds({ LISTEN_PID: 'x4242', LISTEN_FDS: '1' }, 4242), []);
});

test('takeListenFds refuses a LISTEN_FDS for us that is not a count from 1 to 64', () => {
  for (const count of ['0', '-1', 'three', '65']) {
    assert.throws(() => takeListenFds({ LISTEN_PID: '7', LISTEN_FDS: count }, 7), (err: unknown) => isMuxwireError(err, 'MUXWIRE_ERR_BAD_ARGUMENT'), count);
  }
});

test('an inherited descriptor that is not a socket is a coded listen error, not a crash', async () => {
  const fd = openSync(join(dir, 'not-a-socket'), 'w');
  try {
    const server = new ClientServer({ listenFds: [fd], onClient: (s) => s.destroy() });
    await assert.rejects(server.start(), (err: unknown) => isMuxwireError(err, 'MUXWIRE_ERR_LISTEN') && /not an open socket/.test((err as Error).message));
  } finally {
    closeSync(fd);
  }
});

/** Runs idevice_id -l against `socketPath`; resolves with its output lines. */
async function ideviceIdList(socketPath: string): Promise<string[]> {
  const r = await runProgram('idevice_id', ['-l'], { env: { ...process.env, USBMUXD_SOCKET_ADDRESS: `UNIX:${socketPath}` }, children });
  assert.equal(r.code, 0, `idevice_id -l failed: ${r.stderr}`);
  return r.stdout.split('\n').filter((l) => l !== '');
}

test('started by systemd-socket-activate as systemd starts muxwire.service, the daemon serves idevice_id -l on the inherited socket', async (t) => {
  if (!requirePeer(t, 'systemd-socket-activate', 'idevice_id')) return;
  const socketPath = join(dir, 'usbmuxd');
  // systemd-socket-activate passes on only the variables named with -E.
  const pass = ['MUXWIRE_NO_NATIVE', 'MUXWIRE_LOG'].filter((v) => process.env[v] !== undefined).flatMap((v) => ['-E', v]);
  const daemonArgs = ['daemon', '--no-usb', '--no-preflight', '--simulate', '1', '--pair-dir', join(dir, 'lockdown')];
  const child = spawn('systemd-socket-activate', ['-l', socketPath, ...pass, process.execPath, CLI, ...daemonArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));

  // The socket exists before any daemon runs: systemd-socket-activate made it and listens.
  for (let i = 0; !(await stat(socketPath).then((s) => s.isSocket(), () => false)); i++) {
    assert.ok(i < 600 && child.exitCode === null, `no socket from systemd-socket-activate: ${err}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.doesNotMatch(out, /listening on/, 'the daemon starts only on the first client');

  // The first client: the daemon is started on it and answers it on the inherited socket.
  let listed = await ideviceIdList(socketPath);
  for (let i = 0; !/listening on/.test(out); i++) {
    assert.ok(i < 1200 && child.exitCode === null, `no ready line: ${out}${err}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.match(out, new RegExp(`^muxwire daemon: listening on fd ${LISTEN_FDS_START} \\(inherited UNIX socket\\)$`, 'm'));
  assert.doesNotMatch(out, /listening on \//, 'no socket of its own');
  // The simulated device comes up right after the daemon; ask again until it is listed.
  for (let i = 0; listed.length === 0; i++) {
    assert.ok(i < 300, 'the simulated device was never listed');
    await new Promise((r) => setTimeout(r, 50));
    listed = await ideviceIdList(socketPath);
  }
  assert.equal(listed.length, 1);
  assert.match(listed[0]!, /^[0-9A-F]{8}-[0-9A-F]{16}$/);

  child.kill('SIGTERM');
  const [code] = (await once(child, 'exit')) as [number | null];
  assert.equal(code, 0, err);
  // The socket belongs to the service manager: the daemon leaves its file alone.
  assert.ok((await stat(socketPath)).isSocket());
});
