/**
 * `muxwire afc pull|push` as a user runs them, against a daemon and a simulated device in this
 * process: a failed copy leaves existing files as they were and creates nothing, a directory as the
 * destination receives `<dir>/<basename>` as with `cp`, host failures are one line with a code, and
 * SIGINT during a pull removes the part file.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import { VusbSource } from '../../src/transport/vusb-source.js';
import { UsbmuxClient } from '../../src/client/usbmux-client.js';
import { SimulatedDevice } from '../../src/sim/simulator.js';
import { waitForDevice } from '../helpers/client-suite.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const PART = /^\..+\.muxwire-[0-9a-f]{8}\.part$/;
let dir: string;
let media: string;
let daemon: MuxDaemon;
let sim: SimulatedDevice;
let socket: string;
/** A fresh host directory per test. */
let count = 0;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function afc(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, 'afc', ...args, '--socket', socket], { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** A failure as a user sees it: exit 1 and exactly one line, ending with the code. */
function assertOneCodedLine(r: Run, pattern: RegExp): void {
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stderr.split('\n').length, 2, `one line: ${JSON.stringify(r.stderr)}`);
  assert.match(r.stderr, pattern);
}

async function hostDir(): Promise<string> {
  const d = join(dir, `host${++count}`);
  await mkdir(d);
  return d;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-afc-cli-'));
  media = join(dir, 'Media');
  await mkdir(join(dir, 'bus'));
  await mkdir(media);
  socket = join(dir, 'usbmuxd');
  daemon = new MuxDaemon({ socketPath: socket, pairDir: join(dir, 'lockdown') });
  await daemon.start();
  await daemon.addSource(new VusbSource({ dir: join(dir, 'bus') }));
  sim = await SimulatedDevice.create({ afcRoot: media, name: 'AFC CLI iPhone', benchPorts: false });
  await sim.plug(join(dir, 'bus'));
  await waitForDevice(new UsbmuxClient({ address: `UNIX:${socket}` }), sim.udid);
  await new Promise<void>((resolve, reject) =>
    execFile(process.execPath, [CLI, 'pair', '--socket', socket], (err, _out, stderr) => (err ? reject(new Error(stderr)) : resolve())),
  );
});

after(async () => {
  await sim?.close();
  await daemon?.close();
  await rm(dir, { recursive: true, force: true });
});

test('afc pull of a device directory: one coded line, the local file byte-identical, no new file', async () => {
  await mkdir(join(media, 'z'), { recursive: true });
  const host = await hostDir();
  await writeFile(join(host, 'keep.txt'), 'important\n');
  const overKeep = await afc(['pull', '/z', join(host, 'keep.txt')]);
  const overNew = await afc(['pull', '/z', join(host, 'newfile')]);
  assert.equal(await readFile(join(host, 'keep.txt'), 'utf8'), 'important\n');
  assert.deepEqual(await readdir(host), ['keep.txt']);
  assertOneCodedLine(overKeep, /^muxwire afc: .*\/z.*is a directory.*\(MUXWIRE_ERR_AFC\)\n$/);
  assertOneCodedLine(overNew, /is a directory.*\(MUXWIRE_ERR_AFC\)\n$/);
});

test('afc pull into an existing directory writes DIR/<basename>, and --json says where', async () => {
  await writeFile(join(media, 'song.m4a'), 'aac');
  const host = await hostDir();
  const r = await afc(['pull', '/song.m4a', host, '--json', '--no-progress']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '', '--no-progress prints nothing on stderr');
  assert.deepEqual((JSON.parse(r.stdout) as { bytes: number; path: string }).path, join(host, 'song.m4a'));
  assert.equal(await readFile(join(host, 'song.m4a'), 'utf8'), 'aac');
  assert.deepEqual(await readdir(host), ['song.m4a']);
});

test('afc push of a local directory or a missing file: one coded line and nothing on the device', async () => {
  const host = await hostDir();
  await mkdir(join(host, 'adir'));
  const before = await readdir(media);
  const ofDir = await afc(['push', join(host, 'adir'), '/x']);
  const ofMissing = await afc(['push', join(host, 'nonexistent'), '/y']);
  assert.deepEqual(await readdir(media), before, 'nothing was created on the device');
  assertOneCodedLine(ofDir, /^muxwire afc: cannot read .*adir: is a directory \(EISDIR\) \(MUXWIRE_ERR_IO\)\n$/);
  assertOneCodedLine(ofMissing, /^muxwire afc: cannot read .*nonexistent: no such file or directory \(ENOENT\) \(MUXWIRE_ERR_IO\)\n$/);
});

test('afc pull into a missing directory or onto a full disk: one line with MUXWIRE_ERR_IO', { skip: process.platform !== 'linux' ? 'needs /dev/full' : false }, async () => {
  await writeFile(join(media, 'data.bin'), randomBytes(100_000));
  const host = await hostDir();
  const missing = join(host, 'nodir', 'x');
  assertOneCodedLine(await afc(['pull', '/data.bin', missing]), new RegExp(`^muxwire afc: cannot write ${missing}: no such file or directory \\(ENOENT\\) \\(MUXWIRE_ERR_IO\\)\\n$`));
  const full = await afc(['pull', '/data.bin', '/dev/full', '--no-progress']);
  assertOneCodedLine(full, /^muxwire afc: cannot write \/dev\/full: no space left on device \(ENOSPC\) \(MUXWIRE_ERR_IO\)\n$/);
  assert.deepEqual(await readdir(host), []);
});

test('SIGINT during afc pull removes the part file, keeps the old file and fails with MUXWIRE_ERR_ABORTED', async () => {
  // A sparse 1 GiB file: no disk for the source, and far more than moves before the signal.
  const big = await open(join(media, 'huge.bin'), 'w');
  await big.truncate(1024 * 1024 * 1024);
  await big.close();
  const host = await hostDir();
  const dest = join(host, 'dest.bin');
  await writeFile(dest, 'precious');
  const child = spawn(process.execPath, [CLI, 'afc', 'pull', '/huge.bin', dest, '--socket', socket], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  // The first progress line means the part file exists and data is flowing: interrupt then.
  const progressing = new Promise<void>((resolve) =>
    child.stderr.on('data', (chunk: string) => {
      stderr += chunk;
      if (stderr.includes('pull /huge.bin')) resolve();
    }),
  );
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  await progressing;
  assert.equal((await readdir(host)).filter((n) => PART.test(n)).length, 1, 'the pull writes a part file');
  child.kill('SIGINT');
  const { code, signal } = await exited;
  assert.equal(signal, null, 'the command handled the signal instead of dying of it');
  assert.equal(code, 1);
  assert.match(stderr, /muxwire afc: pull of \/huge\.bin was aborted \(MUXWIRE_ERR_ABORTED\)\n$/);
  assert.equal(await readFile(dest, 'utf8'), 'precious');
  assert.deepEqual(await readdir(host), ['dest.bin']);
  await rm(join(media, 'huge.bin'));
});
