/**
 * Runs Debian's unmodified /usr/sbin/usbmuxd against simulated devices, for interop tests and for
 * benchmarks that race muxwire against the C daemon on the same simulated hardware.
 *
 * usbmuxd has a fixed socket (/var/run/usbmuxd), lock file (/var/run/usbmuxd.pid) and pair record
 * directory (/var/lib/lockdown). It runs here in a private mount namespace (`unshare -m`) where
 * temporary directories are bound over those two places, so it touches nothing of the machine's
 * and several can run at once. Its libusb is native/vusb's library (LD_LIBRARY_PATH=build/vusb),
 * which presents the devices of `busDir` (MUXWIRE_VUSB_DIR).
 *
 * ```ts
 * const muxd = await startUsbmuxd({ busDir });
 * // clients: USBMUXD_SOCKET_ADDRESS=UNIX:<muxd.socketPath>
 * await muxd.stop();
 * ```
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureVusbLibrary } from './vusb-lib.js';
import { findPeer } from './peers.js';

export const USBMUXD_PATH = '/usr/sbin/usbmuxd';

export interface StartUsbmuxdOptions {
  /** The vusb bus directory whose devices usbmuxd sees. */
  busDir: string;
  /** Number of -v flags (default 1; 2 logs every packet header). */
  verbose?: number;
  /** Run usbmuxd's lockdownd preflight on attach (default true, as installed). */
  preflight?: boolean;
  /** Extra environment for usbmuxd (e.g. LIBUSB_DEBUG). */
  env?: Record<string, string>;
  /** How long to wait for the socket (default 15 s). */
  timeoutMs?: number;
  /** A command usbmuxd runs under, e.g. `['valgrind', '--leak-check=full']` or `['taskset', '-c', '1']`. */
  wrapper?: string[];
}

export interface RunningUsbmuxd {
  /** usbmuxd's socket; clients use USBMUXD_SOCKET_ADDRESS=UNIX:<socketPath>. */
  readonly socketPath: string;
  /** Where usbmuxd keeps pair records and SystemConfiguration.plist (its /var/lib/lockdown). */
  readonly pairDir: string;
  /** The usbmuxd process id. */
  readonly pid: number;
  /** Environment for client programs: USBMUXD_SOCKET_ADDRESS set. */
  readonly clientEnv: NodeJS.ProcessEnv;
  /** usbmuxd's output so far (bounded), for failure messages. */
  log(): string;
  /** Resolves once usbmuxd's log matches `pattern` (e.g. a device being added). */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Stops usbmuxd (SIGTERM, then SIGKILL after 5 s), waits for it and removes its directories. */
  stop(): Promise<void>;
}

const LOG_LIMIT = 512 * 1024;

/**
 * Why usbmuxd cannot be run here, or undefined when it can: the program, `unshare` and the right
 * to make a mount namespace (root or CAP_SYS_ADMIN), and the vusb library (built when missing).
 */
export function usbmuxdUnavailable(): string | undefined {
  if (process.platform !== 'linux') return `usbmuxd runs on Linux only, this is ${process.platform}`;
  if (!findPeer(USBMUXD_PATH)) return `${USBMUXD_PATH} not installed (Debian package usbmuxd)`;
  if (!findPeer('unshare')) return 'unshare not installed (util-linux)';
  const probe = spawnSync('unshare', ['-m', '--propagation', 'private', 'true'], { stdio: 'ignore' });
  if (probe.status !== 0) return 'cannot create a mount namespace (unshare -m needs root or CAP_SYS_ADMIN)';
  const lib = ensureVusbLibrary();
  if ('reason' in lib) return `vusb library not built: ${lib.reason}`;
  return undefined;
}

/** Starts usbmuxd on `busDir` and resolves when its socket exists. */
export async function startUsbmuxd(opts: StartUsbmuxdOptions): Promise<RunningUsbmuxd> {
  const lib = ensureVusbLibrary();
  if ('reason' in lib) throw new Error(`vusb library not built: ${lib.reason}`);
  const root = await mkdtemp(join(tmpdir(), 'muxwire-usbmuxd-'));
  const runDir = join(root, 'run');
  const pairDir = join(root, 'lockdown');
  await mkdir(runDir);
  await mkdir(pairDir);
  // Bind over /var/lib/lockdown when it exists; otherwise over /var/lib, with lockdown inside.
  let libTarget = '/var/lib/lockdown';
  let libSource = pairDir;
  if (!existsSync(libTarget)) {
    libTarget = '/var/lib';
    libSource = join(root, 'varlib');
    await mkdir(libSource);
    await rm(pairDir, { recursive: true });
    await mkdir(join(libSource, 'lockdown'));
  }
  const realPairDir = libTarget === '/var/lib' ? join(libSource, 'lockdown') : pairDir;
  const args = ['-f', ...Array(opts.verbose ?? 1).fill('-v')];
  if (opts.preflight === false) args.push('-p');
  // /var/run is usually a symlink to /run; binding over it binds over /run, in this namespace only.
  const script = 'mount --bind "$1" /var/run && mount --bind "$2" "$3" && shift 3 && exec "$@"';
  const child: ChildProcess = spawn(
    'unshare',
    ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', runDir, libSource, libTarget, ...(opts.wrapper ?? []), USBMUXD_PATH, ...args],
    {
      env: {
        ...process.env,
        ...opts.env,
        LD_LIBRARY_PATH: lib.dir + (process.env.LD_LIBRARY_PATH ? `:${process.env.LD_LIBRARY_PATH}` : ''),
        MUXWIRE_VUSB_DIR: opts.busDir,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let output = '';
  const logWaiters = new Set<() => void>();
  const onOutput = (d: Buffer): void => {
    output += d.toString();
    if (output.length > LOG_LIMIT) output = output.slice(output.length - LOG_LIMIT / 2);
    for (const w of logWaiters) w();
  };
  child.stdout!.on('data', onOutput);
  child.stderr!.on('data', onOutput);
  let exitCode: number | null | undefined;
  const exited = new Promise<void>((resolve) =>
    child.once('close', (code) => {
      exitCode = code;
      for (const w of logWaiters) w();
      resolve();
    }),
  );
  const socketPath = join(runDir, 'usbmuxd');

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (exitCode === undefined) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    await rm(root, { recursive: true, force: true });
  };

  const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
  for (;;) {
    if (exitCode !== undefined) {
      await stop();
      throw new Error(`usbmuxd exited (${exitCode}) before creating its socket:\n${output}`);
    }
    if (await stat(socketPath).then((s) => s.isSocket(), () => false)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`usbmuxd did not create ${socketPath} in time:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }

  return {
    socketPath,
    pairDir: realPairDir,
    pid: child.pid!,
    clientEnv: { ...process.env, USBMUXD_SOCKET_ADDRESS: `UNIX:${socketPath}` },
    log: () => output,
    waitForLog(pattern, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const m = pattern.exec(output);
          if (m) {
            done();
            resolve(m[0]);
          } else if (exitCode !== undefined) {
            done();
            reject(new Error(`usbmuxd exited before logging ${pattern}:\n${output}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`usbmuxd did not log ${pattern} within ${timeoutMs} ms:\n${output}`));
        }, timeoutMs);
        const done = (): void => {
          clearTimeout(timer);
          logWaiters.delete(check);
        };
        logWaiters.add(check);
        check();
      });
    },
    stop,
  };
}
