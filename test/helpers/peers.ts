/**
 * Real peers for interop tests (docs/ARCHITECTURE.md "Tests"): programs this project did not write,
 * such as libimobiledevice's `idevice_id` or Debian's `/usr/sbin/usbmuxd`. A test whose peer is
 * missing is skipped with the reason; with `MUXWIRE_REQUIRE_PEERS=1` (set by `.ci/run`, which
 * installs the peers) a missing peer fails the test instead, so CI cannot go green by skipping.
 *
 * ```ts
 * test('lists a simulated device', async (t) => {
 *   if (!requirePeer(t, 'idevice_id')) return;
 *   ...
 * });
 * ```
 */
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, createServer, type Socket } from 'node:net';

const found = new Map<string, string | undefined>();

/**
 * Where the peer `name` lives: an absolute path is checked as it is, a bare name is looked up on
 * PATH (and in /usr/sbin and /sbin, where Debian installs usbmuxd, which PATH of a non-root user
 * often lacks). Returns the executable's path, or undefined.
 */
export function findPeer(name: string): string | undefined {
  if (found.has(name)) return found.get(name);
  const candidates = isAbsolute(name)
    ? [name]
    : [...(process.env.PATH ?? '').split(delimiter).filter((d) => d !== ''), '/usr/sbin', '/sbin']
        .map((dir) => join(dir, name));
  let hit: string | undefined;
  for (const file of candidates) {
    try {
      if (!statSync(file).isFile()) continue;
      accessSync(file, constants.X_OK);
      hit = file;
      break;
    } catch {
      // not here; try the next directory
    }
  }
  found.set(name, hit);
  return hit;
}

/** True when the peer `name` (a program name or an absolute path) can be run. */
export function hasPeer(name: string): boolean {
  return findPeer(name) !== undefined;
}

/** True when missing peers must fail tests rather than skip them. */
export function peersRequired(): boolean {
  return process.env.MUXWIRE_REQUIRE_PEERS === '1';
}

/**
 * Returns true when every named peer is available. Otherwise skips the test with the reason and
 * returns false, or, when MUXWIRE_REQUIRE_PEERS=1, fails it (throws an AssertionError).
 */
export function requirePeer(t: TestContext, ...names: string[]): boolean {
  const missing = names.filter((n) => !hasPeer(n));
  if (missing.length === 0) return true;
  const reason = `peer not installed: ${missing.join(', ')}`;
  if (peersRequired()) assert.fail(`${reason} (MUXWIRE_REQUIRE_PEERS=1)`);
  t.skip(reason);
  return false;
}

/**
 * Like requirePeer for a condition that is not a program (e.g. "unshare -m works here"): skips with
 * `reason` when `ok` is false, or fails under MUXWIRE_REQUIRE_PEERS=1.
 */
export function requireCondition(t: TestContext, ok: boolean, reason: string): boolean {
  if (ok) return true;
  if (peersRequired()) assert.fail(`${reason} (MUXWIRE_REQUIRE_PEERS=1)`);
  t.skip(reason);
  return false;
}

/** A TCP port on 127.0.0.1 that was free a moment ago (for a peer such as iproxy to listen on). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Connects to a port a peer process (iproxy) listens on, retrying while it starts; fails once it exits. */
export async function connectWithRetry(port: number, proxy: ChildProcess): Promise<Socket> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const s = connect(port, '127.0.0.1', () => resolve(s));
        s.once('error', reject);
      });
    } catch (err) {
      if (proxy.exitCode !== null || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** What a program run to completion printed, and how it ended. */
export interface ProgramResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a program to completion without blocking the event loop (a daemon or simulator in this
 * process keeps serving it), feeding `input` on stdin. A program still running after `timeoutMs`
 * (default 60 s) is killed and the promise rejects with what it printed. `children` collects the
 * process so a test's after() can kill it if the test ends first.
 */
export function runProgram(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; input?: Buffer; timeoutMs?: number; children?: ChildProcess[]; uid?: number; gid?: number } = {},
): Promise<ProgramResult> {
  return new Promise((resolve, reject) => {
    const ids = opts.uid !== undefined ? { uid: opts.uid, gid: opts.gid ?? opts.uid } : {};
    const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'], ...ids });
    opts.children?.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} did not finish; stdout: ${stdout} stderr: ${stderr}`));
    }, opts.timeoutMs ?? 60_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.on('error', () => undefined); // a program that never reads its stdin
    child.stdin.end(opts.input ?? Buffer.alloc(0));
  });
}
