/**
 * The contenders of the end-to-end bench, each started fresh in processes of its own, against a
 * simulated device started fresh with the same settings for each (`muxwire sim`):
 *
 * ```
 *  muxwire-js      client ─UNIX─> muxwire daemon --backend js ─vusb (TypeScript transport)─> sim
 *  muxwire-native  client ─UNIX─> muxwire daemon --backend native ─libusb API─> build/vusb lib ─> sim
 *  usbmuxd         client ─UNIX─> /usr/sbin/usbmuxd ─libusb API─> build/vusb lib ─> sim
 *  socat           client ─UNIX─> socat ─UNIX─> ceiling server (the same service code, no mux)
 *  direct          client ─UNIX─> ceiling server
 * ```
 *
 * The two ceilings move the same bytes with the same service code (src/sim/bench-services.ts) but
 * no mux protocol and no USB framing: the fastest a relay of two UNIX hops can be on this machine.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DeviceInfo } from '../src/client/device-info.js';
import { MuxdConnection } from '../src/client/muxd-connection.js';
import { parseSocketAddress } from '../src/client/socket-address.js';
import { UsbmuxClient } from '../src/client/usbmux-client.js';
import { encodePortNumber, plistRequest } from '../src/protocol/client-plist.js';
import { DEFAULT_BENCH_PORTS } from '../src/sim/bench-services.js';
import { CEILING_SERVICES, ceilingSocket, type CeilingService } from './ceiling-server.js';
import { findPeer } from '../test/helpers/peers.js';
import { ensureVusbLibrary } from '../test/helpers/vusb-lib.js';
import { mapsFile, processName } from './proc-stats.js';

export type ContenderId = 'muxwire-js' | 'muxwire-native' | 'usbmuxd' | 'socat' | 'direct';
export type ServiceName = CeilingService;

/** What the table calls each contender, and what it is. */
export const CONTENDERS: readonly { id: ContenderId; label: string; kind: 'mux' | 'ceiling'; about: string }[] = [
  { id: 'muxwire-js', label: '(a) muxwire, TS vusb', kind: 'mux', about: 'muxwire daemon --backend js, TypeScript vusb transport' },
  { id: 'muxwire-native', label: '(b) muxwire, native', kind: 'mux', about: 'muxwire daemon --backend native, libusb API of build/vusb' },
  { id: 'usbmuxd', label: '(c) usbmuxd', kind: 'mux', about: "libimobiledevice's /usr/sbin/usbmuxd, libusb API of build/vusb" },
  { id: 'socat', label: 'ceiling: socat 2 hops', kind: 'ceiling', about: 'socat -b 65536 UNIX-LISTEN,fork → UNIX-CONNECT, to the same service code' },
  { id: 'direct', label: 'ceiling: direct', kind: 'ceiling', about: 'one UNIX socket straight to the same service code' },
];

/** A contender with its processes up and its device attached. */
export interface RunningContender {
  readonly id: ContenderId;
  /** Opens a stream to a bench service (through the daemon's Connect for a mux contender). */
  open(service: ServiceName): Promise<Socket>;
  /**
   * Mux contenders: `open` with its two times, in ms: `connect` from the Connect request written
   * (on a socket already connected to the daemon) to Result 0 read, as issue 8 defines connect
   * latency; `total` from before the socket to the daemon was opened.
   */
  openTimed?(service: ServiceName): Promise<{ socket: Socket; connect: number; total: number }>;
  /** The relaying process whose CPU and memory are measured (the daemon), when there is one. */
  readonly relayPid?: number;
  /** The far end's process: the simulated device, or the ceiling server. */
  readonly simPid?: number;
  /** For mux contenders: the client, the device and the directory the device serves over AFC. */
  readonly mux?: { client: UsbmuxClient; device: DeviceInfo; afcRoot: string; paired: boolean };
  /** Facts worth printing next to the figures (what was verified about the setup). */
  readonly notes: string[];
  /** The last lines the contender's processes printed, for a failure's report. */
  diagnostics(): string;
  stop(): Promise<void>;
}

/** A plist Connect (as libusbmuxd sends it) on a fresh daemon socket, timed (see openTimed). */
async function timedConnect(socketPath: string, deviceId: number, port: number): Promise<{ socket: Socket; connect: number; total: number }> {
  const t0 = performance.now();
  const conn = await MuxdConnection.open(parseSocketAddress(`UNIX:${socketPath}`), 30_000);
  const t1 = performance.now();
  try {
    conn.send({ kind: 'plist', tag: 1, version: 1, plist: plistRequest('Connect', { DeviceID: deviceId, PortNumber: encodePortNumber(port) }, 'muxwire-bench') });
    const reply = await conn.next(30_000, 'Connect result');
    const t2 = performance.now();
    const result = reply.kind === 'plist' ? reply.plist.Number : reply.kind === 'result' ? reply.result : undefined;
    if (result !== 0) throw new Error(`Connect to port ${port} answered ${String(result)}`);
    return { socket: conn.detach(), connect: t2 - t1, total: t2 - t0 };
  } catch (err) {
    conn.close();
    throw err;
  }
}

/** Thrown when a contender cannot run here; the table shows "not available: <reason>". */
export class ContenderUnavailable extends Error {}

/** The `muxwire` command next to this file's compiled copy (dist*\/bench → dist*\/src/cli). */
export function muxwireMain(): string {
  return fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
}

/**
 * Node options for the sim and daemon processes: `MUXWIRE_BENCH_PROFILE=DIR` writes a V8 CPU profile
 * of each into DIR when it exits (`--cpu-prof`, which NODE_OPTIONS does not accept).
 */
export function profileArgs(): string[] {
  const dir = process.env.MUXWIRE_BENCH_PROFILE;
  return dir ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : process.env.MUXWIRE_BENCH_TRACE_GC ? ['--trace-gc'] : [];
}

/** The repository root (holds build/vusb), found upward from this file. */
export function repoRoot(): string {
  let dir = fileURLToPath(new URL('.', import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'native'))) return dir;
    dir = join(dir, '..');
  }
  throw new Error(`repository root not found above ${fileURLToPath(import.meta.url)}`);
}

/** A child process whose output is kept (bounded) for failure messages. */
class Child {
  readonly process: ChildProcess;
  readonly name: string;
  #output = '';
  #exit: number | string | null | undefined;
  readonly #exited: Promise<void>;
  readonly #waiters = new Set<() => void>();

  constructor(name: string, command: string, args: string[], env?: NodeJS.ProcessEnv) {
    this.name = name;
    this.process = spawn(command, args, { env: env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const onData = (d: Buffer): void => {
      this.#output += d.toString();
      if (this.#output.length > 256 * 1024) this.#output = this.#output.slice(-128 * 1024);
      for (const w of this.#waiters) w();
    };
    this.process.stdout!.on('data', onData);
    this.process.stderr!.on('data', onData);
    this.#exited = new Promise((resolve) => {
      this.process.once('error', (err) => {
        this.#exit = err.message;
        for (const w of this.#waiters) w();
        resolve();
      });
      this.process.once('close', (code, signal) => {
        this.#exit = code ?? signal;
        for (const w of this.#waiters) w();
        resolve();
      });
    });
  }

  get pid(): number {
    return this.process.pid!;
  }

  get output(): string {
    return this.#output;
  }

  /** Resolves when the output matches; rejects when the process exits first or time runs out. */
  waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const m = pattern.exec(this.#output);
        if (m) {
          done();
          resolve(m);
        } else if (this.#exit !== undefined) {
          done();
          reject(new Error(`${this.name} exited (${this.#exit}) before printing ${pattern}: ${tail(this.#output)}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.name} did not print ${pattern} within ${timeoutMs} ms: ${tail(this.#output)}`));
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      this.#waiters.add(check);
      check();
    });
  }

  /** SIGTERM, then SIGKILL after 5 s; resolves once the process is gone. */
  async stop(): Promise<void> {
    if (this.#exit === undefined) {
      this.process.kill('SIGTERM');
      const timer = setTimeout(() => this.process.kill('SIGKILL'), 5000);
      await this.#exited;
      clearTimeout(timer);
    }
  }
}

function tail(text: string, count = 6): string {
  const lines = text.trim().split('\n').filter((l) => !/\[5\]/.test(l));
  return lines.slice(-count).join(' | ') || '(no output)';
}

async function waitForSocket(path: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await stat(path).then((s) => s.isSocket(), () => false))) {
    if (Date.now() > deadline) throw new Error(`${path} did not appear within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function connectUnixOnce(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    s.once('connect', () => {
      s.removeListener('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/**
 * Connects to a UNIX socket; EAGAIN (the listener's backlog is full for a moment, as when 32
 * connections arrive at once) is retried for up to a second, as a client library would.
 */
async function connectUnix(path: string): Promise<Socket> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await connectUnixOnce(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN' || attempt >= 100) throw err;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

/** Options shared by every contender start. */
export interface StartOptions {
  /** Scratch directory for sockets, pair records and the device's AFC root. */
  workDir: string;
  /** How long a daemon may take to show the device and pair it. */
  attachTimeoutMs?: number;
  /** The simulated device's mobilebackup2 content (`muxwire sim --backup-root`); default its built-in set. */
  backupRoot?: string;
}

/** Starts contender `id`; throws ContenderUnavailable when it cannot run on this machine. */
export async function startContender(id: ContenderId, opts: StartOptions): Promise<RunningContender> {
  switch (id) {
    case 'muxwire-js':
    case 'muxwire-native':
    case 'usbmuxd':
      return startMux(id, opts);
    case 'socat':
    case 'direct':
      return startCeiling(id, opts);
  }
}

async function startCeiling(id: 'socat' | 'direct', opts: StartOptions): Promise<RunningContender> {
  const dir = await mkdtemp(join(opts.workDir, `${id}-`));
  const children: Child[] = [];
  const stop = async (): Promise<void> => {
    for (const c of children.reverse()) await c.stop();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const server = new Child('ceiling server', process.execPath, [fileURLToPath(new URL('./ceiling-server.js', import.meta.url)), dir]);
    children.push(server);
    await server.waitFor(/ceiling-server: ready/, 10_000);
    const notes: string[] = [];
    let paths: Record<ServiceName, string> = {
      source: ceilingSocket(dir, 'source'),
      sink: ceilingSocket(dir, 'sink'),
      echo: ceilingSocket(dir, 'echo'),
    };
    if (id === 'socat') {
      if (!findPeer('socat')) throw new ContenderUnavailable('socat is not installed (Debian package socat)');
      const front = {} as Record<ServiceName, string>;
      for (const service of CEILING_SERVICES) {
        front[service] = join(dir, `front-${service}.sock`);
        // -b: socat's default 8 KiB copy buffer would make a low ceiling; 64 KiB is what a daemon reads.
        const socat = new Child('socat', 'socat', ['-b', '65536', `UNIX-LISTEN:${front[service]},fork,backlog=256`, `UNIX-CONNECT:${paths[service]}`]);
        children.push(socat);
        await waitForSocket(front[service], 10_000).catch((err: Error) => {
          throw new Error(`socat did not start: ${err.message}: ${tail(socat.output)}`);
        });
      }
      paths = front;
      notes.push('socat forks a relay per connection: its CPU and memory are not measured');
    }
    return {
      id,
      open: (service) => connectUnix(paths[service]),
      simPid: server.pid,
      notes,
      diagnostics: () => children.map((c) => `${c.name}: ${tail(c.output)}`).join('\n'),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

async function startMux(id: 'muxwire-js' | 'muxwire-native' | 'usbmuxd', opts: StartOptions): Promise<RunningContender> {
  const dir = await mkdtemp(join(opts.workDir, `${id}-`));
  const busDir = join(dir, 'bus');
  const afcRoot = join(dir, 'afc');
  await mkdir(busDir);
  await mkdir(afcRoot);
  const children: Child[] = [];
  let usbmuxdStop: (() => Promise<void>) | undefined;
  let usbmuxdLog: (() => string) | undefined;
  const stop = async (): Promise<void> => {
    // The daemon first, so it lets go of the device before the device unplugs.
    if (usbmuxdStop) await usbmuxdStop();
    for (const c of children.reverse()) await c.stop();
    await rm(dir, { recursive: true, force: true });
  };
  const notes: string[] = [];
  try {
    const backupArgs = opts.backupRoot !== undefined ? ['--backup-root', opts.backupRoot] : [];
    const sim = new Child('muxwire sim', process.execPath, [...profileArgs(), muxwireMain(), 'sim', '--vusb-dir', busDir, '--afc-root', afcRoot, ...backupArgs]);
    children.push(sim);
    await sim.waitFor(/muxwire sim: ready (\S+)/, 30_000);

    let socketPath: string;
    let relayPid: number;
    if (id === 'usbmuxd') {
      const { startUsbmuxd, usbmuxdUnavailable } = await import('../test/helpers/usbmuxd-ns.js');
      const why = usbmuxdUnavailable();
      if (why) throw new ContenderUnavailable(why);
      const muxd = await startUsbmuxd({ busDir });
      usbmuxdStop = () => muxd.stop();
      usbmuxdLog = () => muxd.log();
      socketPath = muxd.socketPath;
      relayPid = muxd.pid;
      const name = processName(relayPid);
      if (name !== 'usbmuxd') throw new Error(`process ${relayPid} is '${name}', not usbmuxd: cannot measure its CPU and memory`);
      if (!mapsFile(relayPid, join('build', 'vusb', 'libusb-1.0.so'))) throw new Error('usbmuxd did not load build/vusb/libusb-1.0.so.0');
      notes.push('usbmuxd verified to have build/vusb/libusb-1.0.so.0 mapped');
    } else {
      socketPath = join(dir, 'muxwire.sock');
      const pairDir = join(dir, 'pair');
      await mkdir(pairDir);
      const args = [...profileArgs(), muxwireMain(), 'daemon', '--socket', socketPath, '--pair-dir', pairDir, '--no-usb'];
      const env: NodeJS.ProcessEnv = { ...process.env };
      if (id === 'muxwire-js') {
        args.push('--backend', 'js', '--vusb-dir', busDir);
      } else {
        // No --vusb-dir: the device must come through the native backend and the vusb libusb.
        // Built when missing or stale, as the usbmuxd contender's helper does.
        const built = ensureVusbLibrary();
        if ('reason' in built) throw new ContenderUnavailable(`build/vusb/libusb-1.0.so.0 cannot be built: ${built.reason}`);
        const lib = join(built.dir, 'libusb-1.0.so.0');
        args.splice(args.indexOf('--no-usb'), 1);
        args.push('--backend', 'native');
        env.MUXWIRE_LIBUSB_PATH = lib;
        env.MUXWIRE_VUSB_DIR = busDir;
      }
      const daemon = new Child('muxwire daemon', process.execPath, args, env);
      children.push(daemon);
      try {
        await daemon.waitFor(/muxwire daemon: listening on/, 20_000);
      } catch (err) {
        if (id === 'muxwire-native') {
          // The daemon's own one-line reason (`muxwire daemon: <reason> (<code>)`) says it best.
          const said = daemon.output.trim().split('\n').filter((l) => l.startsWith('muxwire daemon:')).pop();
          throw new ContenderUnavailable(`daemon --backend native did not start: ${said?.replace(/^muxwire daemon: /, '') ?? (err as Error).message}`);
        }
        throw err;
      }
      relayPid = daemon.pid;
    }

    const client = new UsbmuxClient({ address: `UNIX:${socketPath}`, progName: 'muxwire-bench', timeoutMs: 30_000 });
    const attachTimeout = opts.attachTimeoutMs ?? 20_000;
    let device: DeviceInfo;
    try {
      device = await waitForDevice(client, attachTimeout);
    } catch (err) {
      if (id === 'muxwire-native') {
        throw new ContenderUnavailable(`daemon --backend native listed no device through ${join('build', 'vusb')} within ${attachTimeout} ms`);
      }
      throw err;
    }
    if (id === 'muxwire-native') {
      if (!mapsFile(relayPid, join('build', 'vusb', 'libusb-1.0.so'))) {
        throw new ContenderUnavailable('the daemon listed the device without loading build/vusb/libusb-1.0.so.0, so it is not the native backend');
      }
      notes.push('daemon verified to have build/vusb/libusb-1.0.so.0 mapped');
    }
    // Both daemons pair on attach (preflight); lockdown and AFC need the record it leaves.
    const paired = await waitForPairRecord(client, device.udid, attachTimeout);
    if (!paired) notes.push('no pair record appeared: lockdown and AFC figures not measured');
    const diagnostics = (): string =>
      [...children.map((c) => `${c.name}: ${tail(c.output)}`), ...(usbmuxdLog ? [`usbmuxd: ${tail(usbmuxdLog())}`] : [])].join('\n');
    return {
      id,
      open: (service) => client.connect(device, DEFAULT_BENCH_PORTS[service]),
      openTimed: (service) => timedConnect(socketPath, device.deviceId, DEFAULT_BENCH_PORTS[service]),
      relayPid,
      simPid: sim.pid,
      mux: { client, device, afcRoot, paired },
      notes,
      diagnostics,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

async function waitForDevice(client: UsbmuxClient, timeoutMs: number): Promise<DeviceInfo> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    try {
      const devices = await client.listDevices();
      if (devices.length > 0) return devices[0]!;
      last = 'no device listed';
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`no device attached within ${timeoutMs} ms (${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function waitForPairRecord(client: UsbmuxClient, udid: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const record = await client.readPairRecord(udid).catch(() => undefined);
    if (record) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A scratch directory for one bench run, removed by the caller. */
export function makeWorkDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'muxwire-bench-'));
}
