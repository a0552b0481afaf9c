import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { VusbDecoder, VusbMessageType } from '../../src/protocol/vusb-wire.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const READY = /^muxwire sim: ready (\S+) (\S+)$/;

const children: ChildProcess[] = [];
const dirs: string[] = [];

afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});
after(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'muxwire-clisim-'));
  dirs.push(dir);
  return dir;
}

interface Run {
  child: ChildProcess;
  lines: string[];
  stderr: () => string;
  exited: Promise<number | null>;
  /** Resolves once `n` ready lines were printed (rejects if the process exits first). */
  ready(n: number): Promise<Array<{ udid: string; path: string }>>;
}

function sim(args: string[], env: NodeJS.ProcessEnv = {}): Run {
  const base = { ...process.env };
  delete base.MUXWIRE_VUSB_DIR;
  const child = spawn(process.execPath, [MAIN, 'sim', ...args], {
    env: { ...base, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const lines: string[] = [];
  let stdout = '';
  let stderr = '';
  const waiters: Array<() => void> = [];
  child.stdout!.on('data', (c: Buffer) => {
    stdout += c.toString();
    const parts = stdout.split('\n');
    stdout = parts.pop() ?? '';
    lines.push(...parts);
    for (const w of waiters.splice(0)) w();
  });
  child.stderr!.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    lines,
    stderr: () => stderr,
    exited,
    ready(n) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const ready = lines.map((l) => READY.exec(l)).filter((m) => m !== null);
          if (ready.length >= n) resolve(ready.map((m) => ({ udid: m[1]!, path: m[2]! })));
          else waiters.push(check);
        };
        void exited.then((code) => reject(new Error(`sim exited with ${code} before ${n} ready lines: ${stderr}`)));
        check();
      });
    },
  };
}

/** Opens a device socket and reads the HELLO the device sends first. */
function hello(path: string): Promise<{ wireVersion: number; speed: number }> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    const decoder = new VusbDecoder();
    socket.on('data', (c: Buffer) => {
      decoder.push(c);
      const msg = decoder.next();
      if (msg?.type === VusbMessageType.HELLO) {
        socket.destroy();
        resolve({ wireVersion: msg.wireVersion, speed: msg.speed });
      }
    });
    socket.on('error', reject);
  });
}

describe('muxwire sim', () => {
  test('--help lists every option and exits 0', async () => {
    const run = sim(['--help']);
    assert.equal(await run.exited, 0);
    const text = run.lines.join('\n');
    for (const option of ['--vusb-dir', '--udid', '--name', '--product-type', '--ios', '--afc-root', '--trust', '--state-dir', '--mux-version', '--speed', '--count']) {
      assert.ok(text.includes(option), `help mentions ${option}`);
    }
    assert.match(text, /muxwire sim: ready <udid> <path>/);
  });

  test('prints a ready line per device, serves on the socket, and unplugs on SIGTERM', async () => {
    const bus = await tempDir();
    const run = sim(['--vusb-dir', bus, '--count', '2', '--speed', 'super']);
    const ready = await run.ready(2);
    assert.equal(new Set(ready.map((r) => r.udid)).size, 2);
    for (const { udid, path } of ready) {
      assert.equal(path, join(bus, `${udid}.vusb`));
      assert.ok(existsSync(path));
    }
    assert.deepEqual(await hello(ready[0]!.path), { wireVersion: 1, speed: 4 });
    run.child.kill('SIGTERM');
    assert.equal(await run.exited, 0);
    for (const { path } of ready) assert.equal(existsSync(path), false, `${path} removed`);
  });

  test('without --network, SIGUSR1 and SIGUSR2 are ignored with one line each: the device stays plugged in', async () => {
    const bus = await tempDir();
    const run = sim(['--vusb-dir', bus]);
    const [ready] = await run.ready(1);
    for (const signal of ['SIGUSR2', 'SIGUSR1'] as const) {
      run.child.kill(signal);
      const line = `muxwire sim: ${signal} ignored: no network side (start with --network ADDR)`;
      for (let i = 0; i < 500 && !run.stderr().includes(line); i++) await new Promise((r) => setTimeout(r, 20));
      assert.ok(run.stderr().includes(line), run.stderr());
    }
    assert.equal(run.child.exitCode, null);
    assert.deepEqual(await hello(ready!.path), { wireVersion: 1, speed: 3 });
    run.child.kill('SIGTERM');
    assert.equal(await run.exited, 0);
    assert.equal(existsSync(ready!.path), false);
  });

  test('uses the UDID given and $MUXWIRE_VUSB_DIR, and unplugs on SIGINT', async () => {
    const bus = await tempDir();
    const udid = '00008030-001A2B3C4D5E6F70';
    const run = sim(['--udid', udid, '--mux-version', '1'], { MUXWIRE_VUSB_DIR: bus });
    const [ready] = await run.ready(1);
    assert.deepEqual(ready, { udid, path: join(bus, `${udid}.vusb`) });
    run.child.kill('SIGINT');
    assert.equal(await run.exited, 0);
    assert.equal(existsSync(ready!.path), false);
  });

  test('an --afc-root that is a file fails before the ready line, with MUXWIRE_ERR_AFC_ROOT; a missing one is made', async () => {
    const dir = await tempDir();
    const file = join(dir, 'a-file');
    await writeFile(file, 'x');
    const run = sim(['--vusb-dir', join(dir, 'bus'), '--afc-root', file]);
    assert.equal(await run.exited, 1);
    assert.deepEqual(run.lines, [], 'no ready line');
    assert.match(run.stderr(), /^muxwire sim: AFC root .+ is not a usable directory: .+ \(MUXWIRE_ERR_AFC_ROOT\)\n$/);
    const missing = join(dir, 'made', 'Media');
    const made = sim(['--vusb-dir', join(dir, 'bus'), '--afc-root', missing]);
    await made.ready(1);
    assert.ok(existsSync(missing));
    made.child.kill('SIGTERM');
    assert.equal(await made.exited, 0);
  });

  test('refuses bad options with one line and a code', async () => {
    for (const args of [['--mux-version', '3'], ['--speed', 'low'], ['--count', '0'], ['--trust', 'maybe'], ['--count', '2', '--udid', '00008030-001A2B3C4D5E6F70'], ['--bogus']]) {
      const run = sim(['--vusb-dir', await tempDir(), ...args]);
      assert.equal(await run.exited, 2, `exit 2 (a usage error) for ${args.join(' ')}`);
      assert.match(run.stderr(), /^muxwire sim: .+ \(MUXWIRE_ERR_BAD_ARGUMENT\)\n$/);
      assert.equal(run.lines.length, 0);
    }
  });
});
