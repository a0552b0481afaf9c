/**
 * One measured operation each, as a client program would do it, with every byte checked before the
 * run counts (docs/ARCHITECTURE.md, conventions §10): downloads are compared with the source's
 * pattern as they arrive, uploads end with the sink's count of what it received, AFC pushes are
 * checked on the device's disk. A wrong or missing byte throws, and the run is not recorded.
 */
import { once } from 'node:events';
import { open as openFile, rm, stat } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Duplex, Readable, Writable } from 'node:stream';
import { openLockdown, startService, type LockdownHandle } from '../src/client/device-services.js';
import { AfcClient } from '../src/services/afc/afc-client.js';
import { encodeCount } from '../src/sim/bench-services.js';
import type { RunningContender, ServiceName } from './contenders.js';
import { PatternChecker, patternMismatch, patternSlice } from './pattern.js';

/** Bytes moved and the seconds they took. */
export interface Transfer {
  readonly bytes: number;
  readonly seconds: number;
}

/** MB/s (10^6 bytes per second), the unit link rates are quoted in. */
export function mbps(t: Transfer): number {
  return t.bytes / t.seconds / 1e6;
}

type Opener = (service: ServiceName) => Promise<Socket>;

/** Largest piece written at once; uploads respect backpressure between pieces. */
const WRITE_PIECE = 256 * 1024;

/** Rejects after `ms` with `what` in the message: a guard against hangs, never a measurement. */
function deadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${Math.round(ms / 1000)} s`)), ms);
  });
  return Promise.race([work, guard]).finally(() => clearTimeout(timer));
}

/** A generous time limit for moving `bytes`: 60 s plus 1 MB/s. */
export function guardMs(bytes: number): number {
  return 60_000 + bytes / 1000;
}

/** Reads exactly `bytes` pattern bytes from `sock`, checking each chunk; resolves when all are in. */
function receivePattern(sock: Socket, bytes: number, label: string): Promise<void> {
  const checker = new PatternChecker(label);
  return new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      try {
        if (checker.bytes + chunk.length > bytes) throw new Error(`${label}: more than the ${bytes} bytes asked for`);
        checker.push(chunk);
      } catch (err) {
        cleanup();
        reject(err as Error);
        return;
      }
      if (checker.bytes === bytes) {
        cleanup();
        resolve();
      }
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(new Error(`${label}: ${err.message} after ${checker.bytes} of ${bytes} bytes`));
    };
    const onClose = (): void => {
      cleanup();
      reject(new Error(`${label}: connection closed after ${checker.bytes} of ${bytes} bytes`));
    };
    const cleanup = (): void => {
      sock.off('data', onData);
      sock.off('error', onError);
      sock.off('close', onClose);
    };
    sock.on('data', onData);
    sock.once('error', onError);
    sock.once('close', onClose);
  });
}

/** Single-connection download: ask the source for `bytes`, time until the last one is in. */
export async function download(open: Opener, bytes: number): Promise<Transfer> {
  const sock = await open('source');
  try {
    const t0 = performance.now();
    const received = receivePattern(sock, bytes, 'download');
    sock.write(encodeCount(bytes));
    await deadline(received, guardMs(bytes), `download of ${bytes} bytes`);
    return { bytes, seconds: (performance.now() - t0) / 1000 };
  } finally {
    sock.destroy();
  }
}

/** Writes `bytes` pattern bytes to `w`, waiting for 'drain' whenever the stream asks. */
async function sendPattern(w: Writable, bytes: number): Promise<void> {
  for (let sent = 0; sent < bytes; ) {
    const n = Math.min(WRITE_PIECE, bytes - sent);
    const more = w.write(patternSlice(sent, n));
    sent += n;
    if (!more && sent < bytes) await once(w, 'drain');
  }
}

/** Single-connection upload: send `bytes` to the sink, time until it answers with its count. */
export async function upload(open: Opener, bytes: number): Promise<Transfer> {
  const sock = await open('sink');
  try {
    const reply = new Promise<number>((resolve, reject) => {
      let got = Buffer.alloc(0);
      sock.on('data', (chunk: Buffer) => {
        got = Buffer.concat([got, chunk]);
        if (got.length >= 8) resolve(Number(got.readBigUInt64BE(0)));
      });
      sock.once('error', reject);
      sock.once('close', () => reject(new Error('upload: connection closed before the sink answered')));
    });
    const t0 = performance.now();
    sock.write(encodeCount(bytes));
    await deadline(sendPattern(sock, bytes), guardMs(bytes), `upload of ${bytes} bytes`);
    const count = await deadline(reply, guardMs(bytes), 'the sink answer');
    const seconds = (performance.now() - t0) / 1000;
    if (count !== bytes) throw new Error(`upload: the sink received ${count} bytes, ${bytes} were sent`);
    return { bytes, seconds };
  } finally {
    sock.destroy();
  }
}

/**
 * `connections` downloads of `bytesEach` at once: every connection is opened first (not timed),
 * then all ask at the same moment; aggregate = all bytes over the time until the last is done.
 * `during` runs while the transfer is under way (e.g. memory sampling starts before, stops after).
 */
export async function concurrentDownload(open: Opener, connections: number, bytesEach: number): Promise<Transfer> {
  const socks: Socket[] = [];
  try {
    for (let i = 0; i < connections; i++) socks.push(await open('source'));
    const t0 = performance.now();
    const all = socks.map((s, i) => {
      const r = receivePattern(s, bytesEach, `connection ${i + 1} of ${connections}`);
      s.write(encodeCount(bytesEach));
      return r;
    });
    const total = connections * bytesEach;
    await deadline(Promise.all(all), guardMs(total), `${connections} concurrent downloads`);
    return { bytes: total, seconds: (performance.now() - t0) / 1000 };
  } finally {
    for (const s of socks) s.destroy();
  }
}

/**
 * Full-duplex echo: `connections` connections to the device's echo service at once, each writing
 * `bytesEach` pattern bytes while it reads them back, checked as they arrive. A relay must read
 * both directions while it writes either: libimobiledevice's iproxy 2.0.2 does not (its worker
 * drops a send buffer after a 1 s write timeout while it is not reading the other way), which is
 * why duplex is driven by this client and never through iproxy. Rate: bytes each way over the
 * time until the last echoed byte is in.
 */
export async function duplexEcho(open: Opener, connections: number, bytesEach: number): Promise<Transfer> {
  const socks: Socket[] = [];
  try {
    for (let i = 0; i < connections; i++) socks.push(await open('echo'));
    const t0 = performance.now();
    const all = socks.map((s, i) => Promise.all([receivePattern(s, bytesEach, `echo connection ${i + 1} of ${connections}`), sendPattern(s, bytesEach)]));
    const total = connections * bytesEach;
    await deadline(Promise.all(all), guardMs(2 * total), `${connections} full-duplex echoes of ${bytesEach} bytes`);
    return { bytes: total, seconds: (performance.now() - t0) / 1000 };
  } finally {
    for (const s of socks) s.destroy();
  }
}

/**
 * Connect latency: `samples` connections opened one after another; each time runs from the call
 * until the tunnel is usable (for a daemon: Connect sent → Result 0 read), in milliseconds. A
 * closing connection's teardown happens between samples, outside the timing.
 */
export async function connectLatency(c: Pick<RunningContender, 'open' | 'openTimed'>, samples: number, totals?: number[]): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < samples; i++) {
    let s: Socket;
    if (c.openTimed) {
      // Connect written → Result 0 read, on a socket already open to the daemon (issue 8's
      // definition); `totals` also counts opening that socket.
      const t = await c.openTimed('echo');
      s = t.socket;
      times.push(t.connect);
      totals?.push(t.total);
    } else {
      // A ceiling has no Connect: its connect is the UNIX connect.
      const t0 = performance.now();
      s = await c.open('echo');
      times.push(performance.now() - t0);
      totals?.push(times.at(-1)!);
    }
    // Prove the tunnel carries bytes before counting it: one byte through the echo service.
    s.write(Buffer.of(i & 0xff));
    const [b] = (await deadline(once(s, 'data'), 30_000, 'echo of one byte')) as [Buffer];
    if (b[0] !== (i & 0xff)) throw new Error(`connect: echo answered ${b[0]}, sent ${i & 0xff}`);
    s.destroy();
  }
  return times;
}

/** Opens lockdownd in a TLS session with the pair record the daemon keeps. */
export async function openSession(c: RunningContender): Promise<LockdownHandle> {
  const mux = c.mux!;
  return openLockdown(mux.client, mux.device, { label: 'muxwire-bench' });
}

/** Round trips of GetValue(ProductVersion) inside the TLS session, in milliseconds. */
export async function lockdownRoundTrips(handle: LockdownHandle, samples: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < samples; i++) {
    const t0 = performance.now();
    const v = await deadline(handle.lockdown.getValue({ key: 'ProductVersion' }), 30_000, 'GetValue');
    times.push(performance.now() - t0);
    if (typeof v !== 'string' || !/^\d+\.\d+/.test(v)) throw new Error(`GetValue(ProductVersion) answered ${String(v)}`);
  }
  return times;
}

/** Device path of the pull file of `bytes`, relative to the AFC root. */
function pullName(bytes: number): string {
  return `bench-pull-${bytes}.bin`;
}

/** Writes the pattern file a pull reads into the device's AFC root (once per size). */
export async function preparePullFile(afcRoot: string, bytes: number): Promise<void> {
  const path = join(afcRoot, pullName(bytes));
  if ((await stat(path).catch(() => undefined))?.size === bytes) return;
  const fh = await openFile(path, 'w');
  try {
    const piece = 1024 * 1024;
    for (let at = 0; at < bytes; at += piece) await fh.write(patternSlice(at, Math.min(piece, bytes - at)));
  } finally {
    await fh.close();
  }
}

/** Checks a pushed file on the device's disk: its size, and 64 windows of 4 KiB spread over it. */
async function checkPushedFile(path: string, bytes: number): Promise<void> {
  const size = (await stat(path)).size;
  if (size !== bytes) throw new Error(`push: the device has ${size} bytes, ${bytes} were sent`);
  const fh = await openFile(path, 'r');
  try {
    const window = Buffer.alloc(Math.min(4096, bytes));
    for (let k = 0; k < 64; k++) {
      const at = Math.floor(((bytes - window.length) * k) / 63);
      const { bytesRead } = await fh.read(window, 0, window.length, at);
      const bad = patternMismatch(window.subarray(0, bytesRead), at);
      if (bytesRead !== window.length || bad >= 0) throw new Error(`push: the device's file is wrong at byte ${at + Math.max(0, bad)}`);
    }
  } finally {
    await fh.close();
  }
}

/** The AFC clients compared: ours and appium-ios-device's, each given the same service stream. */
export type AfcClientName = 'muxwire' | 'appium';

interface AppiumAfcService {
  createReadStream(path: string, opts: object): Promise<Readable>;
  createWriteStream(path: string, opts: object): Promise<Writable>;
  close(): void;
}

let appiumAfc: (new (socket: unknown) => AppiumAfcService) | undefined | null;

/** appium-ios-device's AfcService class, or a reason it cannot be loaded. */
export async function loadAppiumAfc(): Promise<{ AfcService: new (socket: unknown) => AppiumAfcService } | { reason: string }> {
  if (appiumAfc === undefined) {
    try {
      const mod = (await import('appium-ios-device/build/lib/afc/index.js')) as { AfcService: new (socket: unknown) => AppiumAfcService };
      appiumAfc = mod.AfcService;
    } catch (err) {
      appiumAfc = null;
      return { reason: `appium-ios-device not loadable: ${(err as Error).message}` };
    }
  }
  if (appiumAfc === null) return { reason: 'appium-ios-device not loadable' };
  return { AfcService: appiumAfc };
}

/** Reads a pattern stream to its end, checking it; returns its length. */
async function drainPattern(stream: Readable, label: string): Promise<number> {
  const checker = new PatternChecker(label);
  for await (const chunk of stream) checker.push(chunk as Buffer);
  return checker.bytes;
}

/**
 * AFC pull of a `bytes` file with client `who`, over a fresh com.apple.afc connection started in
 * `session`. Time runs from the open of the file to its last byte.
 */
export async function afcPull(c: RunningContender, session: LockdownHandle, who: AfcClientName, bytes: number): Promise<Transfer> {
  const mux = c.mux!;
  await preparePullFile(mux.afcRoot, bytes);
  const stream = await startService(mux.client, session, 'com.apple.afc');
  const remote = `/${pullName(bytes)}`;
  const label = `AFC pull (${who})`;
  const work = async (): Promise<Transfer> => {
    if (who === 'muxwire') {
      const afc = new AfcClient(stream);
      try {
        const t0 = performance.now();
        const got = await drainPattern(afc.pull(remote), label);
        const seconds = (performance.now() - t0) / 1000;
        if (got !== bytes) throw new Error(`${label}: ${got} bytes, the file has ${bytes}`);
        return { bytes, seconds };
      } finally {
        afc.disconnect();
      }
    }
    const appium = await loadAppiumAfc();
    if ('reason' in appium) throw new Error(appium.reason);
    const afc = new appium.AfcService(stream);
    try {
      const t0 = performance.now();
      const got = await drainPattern(await afc.createReadStream(remote, { autoDestroy: true }), label);
      const seconds = (performance.now() - t0) / 1000;
      if (got !== bytes) throw new Error(`${label}: ${got} bytes, the file has ${bytes}`);
      return { bytes, seconds };
    } finally {
      afc.close();
    }
  };
  try {
    return await deadline(work(), guardMs(bytes), label);
  } finally {
    (stream as Duplex).destroy();
  }
}

/** AFC push of `bytes` pattern bytes with client `who`; time runs until the file is closed. */
export async function afcPush(c: RunningContender, session: LockdownHandle, who: AfcClientName, bytes: number): Promise<Transfer> {
  const mux = c.mux!;
  const name = `bench-push-${who}.bin`;
  const stream = await startService(mux.client, session, 'com.apple.afc');
  const label = `AFC push (${who})`;
  const work = async (): Promise<Transfer> => {
    if (who === 'muxwire') {
      const afc = new AfcClient(stream);
      try {
        const t0 = performance.now();
        const w = afc.push(`/${name}`);
        const finished = once(w, 'finish');
        await sendPattern(w, bytes);
        w.end();
        await finished;
        return { bytes, seconds: (performance.now() - t0) / 1000 };
      } finally {
        afc.disconnect();
      }
    }
    const appium = await loadAppiumAfc();
    if ('reason' in appium) throw new Error(appium.reason);
    const afc = new appium.AfcService(stream);
    try {
      const t0 = performance.now();
      const w = await afc.createWriteStream(`/${name}`, { autoDestroy: true });
      // appium closes the device file handle on 'close' (after finish), so wait for that.
      const closed = once(w, 'close');
      await sendPattern(w, bytes);
      w.end();
      await closed;
      return { bytes, seconds: (performance.now() - t0) / 1000 };
    } finally {
      afc.close();
    }
  };
  try {
    const result = await deadline(work(), guardMs(bytes), label);
    await checkPushedFile(join(mux.afcRoot, name), bytes);
    return result;
  } finally {
    (stream as Duplex).destroy();
    await rm(join(mux.afcRoot, name), { force: true });
  }
}

/** Removes the pull files of a run (they can be a GiB each). */
export async function removePullFiles(afcRoot: string, sizes: Iterable<number>): Promise<void> {
  for (const bytes of sizes) await rm(join(afcRoot, pullName(bytes)), { force: true });
}

