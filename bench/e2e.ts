/**
 * The end-to-end bench: every contender, one after another, each in fresh processes against a fresh
 * simulated device with the same settings, measured with the same workloads (e2e-workloads.ts).
 *
 * For each throughput figure a warm-up run (excluded, reported) measures the rate, and the measured
 * runs then move what that rate moves in `targetSeconds`, between `minBytes` and `maxBytes`: a slow
 * contender is not made to run for minutes, a fast one not timed over a few milliseconds, and each
 * run lasts about as long for every contender, so fixed per-run costs weigh the same everywhere.
 * The bytes each run moved are in the JSON report.
 */
import type { LockdownHandle } from '../src/client/device-services.js';
import { CONTENDERS, ContenderUnavailable, startContender, type ContenderId, type RunningContender } from './contenders.js';
import {
  afcPull,
  afcPush,
  concurrentDownload,
  connectLatency,
  download,
  loadAppiumAfc,
  lockdownRoundTrips,
  mbps,
  openSession,
  removePullFiles,
  upload,
  type AfcClientName,
  type Transfer,
} from './e2e-workloads.js';
import { cpuSeconds, RssSampler } from './proc-stats.js';
import { quantile, summarize, type Summary } from './stats.js';

const MiB = 1024 * 1024;

export interface E2eConfig {
  /** Measured runs per figure (after one warm-up). */
  repeats: number;
  /** Seconds one measured throughput run should last. */
  targetSeconds: number;
  /** Bytes of the warm-up run of a throughput figure. */
  warmupBytes: number;
  minBytes: number;
  maxBytes: number;
  /** Concurrent connections of the aggregate figure. */
  connections: number;
  /** Connections per connect-latency run; GetValue calls per lockdown run. */
  latencySamples: number;
  /** AFC: the file size (1 GiB in a full run), reduced for a contender that would need more than `afcBudgetSeconds`. */
  afcBytes: number;
  afcBudgetSeconds: number;
  afcWarmupBytes: number;
  afcRepeats: number;
  /** Which contenders to run (default all). */
  only?: readonly ContenderId[];
}

export const FULL_E2E: E2eConfig = {
  repeats: 5,
  targetSeconds: 2,
  warmupBytes: 32 * MiB,
  minBytes: 8 * MiB,
  maxBytes: 2048 * MiB,
  connections: 32,
  latencySamples: 200,
  afcBytes: 1024 * MiB,
  afcBudgetSeconds: 30,
  afcWarmupBytes: 32 * MiB,
  afcRepeats: 3,
};

export const QUICK_E2E: E2eConfig = {
  repeats: 3,
  targetSeconds: 0.4,
  warmupBytes: 4 * MiB,
  minBytes: 2 * MiB,
  maxBytes: 256 * MiB,
  connections: 32,
  latencySamples: 40,
  afcBytes: 32 * MiB,
  afcBudgetSeconds: 2,
  afcWarmupBytes: 4 * MiB,
  afcRepeats: 3,
};

/** The figures, in table order. `better` says which way is good. */
export const FIGURES = {
  download: { title: 'download, 1 connection', unit: 'MB/s', better: 'higher' },
  upload: { title: 'upload, 1 connection', unit: 'MB/s', better: 'higher' },
  concurrent: { title: 'download, 32 connections (aggregate)', unit: 'MB/s', better: 'higher' },
  connectMedian: { title: 'connect latency, median', unit: 'ms', better: 'lower' },
  connectP99: { title: 'connect latency, p99', unit: 'ms', better: 'lower' },
  lockdownMedian: { title: 'lockdown GetValue in TLS, median', unit: 'ms', better: 'lower' },
  lockdownP99: { title: 'lockdown GetValue in TLS, p99', unit: 'ms', better: 'lower' },
  afcPullMuxwire: { title: 'AFC pull, muxwire client', unit: 'MB/s', better: 'higher' },
  afcPushMuxwire: { title: 'AFC push, muxwire client', unit: 'MB/s', better: 'higher' },
  afcPullAppium: { title: 'AFC pull, appium-ios-device client', unit: 'MB/s', better: 'higher' },
  afcPushAppium: { title: 'AFC push, appium-ios-device client', unit: 'MB/s', better: 'higher' },
  rssGrowth: { title: 'daemon RSS growth, 32-connection run', unit: 'MiB', better: 'lower' },
  cpuPerGB: { title: 'daemon CPU per GB moved', unit: 's/GB', better: 'lower' },
  farCpuPerGB: { title: 'device side CPU per GB moved (sim or ceiling server)', unit: 's/GB', better: 'lower' },
} as const;
export type FigureId = keyof typeof FIGURES;

/** One figure of one contender: a summary of its runs, or why there is none. */
export interface FigureResult {
  summary?: Summary;
  /** The warm-up run's value (excluded from the summary). */
  warmup?: number;
  /** Bytes each measured run moved (throughput figures). */
  bytesPerRun?: number;
  /** Why the figure is missing: not measured for this contender, or the error that stopped it. */
  missing?: string;
}

export interface ContenderResult {
  id: ContenderId;
  label: string;
  about: string;
  /** Set when the contender could not run at all: "not available: <reason>". */
  unavailable?: string;
  notes: string[];
  figures: Partial<Record<FigureId, FigureResult>>;
  seconds: number;
}

type Log = (line: string) => void;

/** Bytes for a run of `targetSeconds` at `rateMBps`, within the limits, in whole MiB. */
export function sizeFor(rateMBps: number, cfg: Pick<E2eConfig, 'targetSeconds' | 'minBytes' | 'maxBytes'>): number {
  const want = rateMBps * 1e6 * cfg.targetSeconds;
  const bytes = Math.min(cfg.maxBytes, Math.max(cfg.minBytes, want));
  return Math.max(MiB, Math.floor(bytes / MiB) * MiB);
}

/** Runs every contender; never throws for one contender's failure (it is reported instead). */
export async function runE2e(cfg: E2eConfig, workDir: string, log: Log): Promise<ContenderResult[]> {
  const results: ContenderResult[] = [];
  for (const spec of CONTENDERS) {
    if (cfg.only && !cfg.only.includes(spec.id)) continue;
    const t0 = Date.now();
    const result: ContenderResult = { id: spec.id, label: spec.label, about: spec.about, notes: [], figures: {}, seconds: 0 };
    results.push(result);
    log(`e2e: starting ${spec.label}`);
    let running: RunningContender | undefined;
    try {
      running = await startContender(spec.id, { workDir });
      result.notes.push(...running.notes);
      await measureContender(running, cfg, result, log);
    } catch (err) {
      const message = (err as Error).message.split('\n')[0]!;
      result.unavailable = err instanceof ContenderUnavailable ? `not available: ${message}` : `failed: ${message}`;
      log(`e2e: ${spec.label} ${result.unavailable}`);
    } finally {
      await running?.stop().catch((err: Error) => log(`e2e: stopping ${spec.label}: ${err.message}`));
      result.seconds = (Date.now() - t0) / 1000;
    }
  }
  return results;
}

/** CPU seconds a process spent and bytes moved by the measured throughput runs. */
interface CpuTally {
  seconds: number;
  bytes: number;
}

/** Adds what `pid` spent while `run` ran to `tally`. */
function tallyCpu(tally: CpuTally, pid: number | undefined, before: number | undefined, bytes: number): void {
  const after = pid !== undefined ? cpuSeconds(pid) : undefined;
  if (before === undefined || after === undefined) return;
  tally.seconds += after - before;
  tally.bytes += bytes;
}

function perGB(tally: CpuTally): FigureResult {
  return tally.bytes > 0 ? { summary: summarize([tally.seconds / (tally.bytes / 1e9)]), bytesPerRun: tally.bytes } : { missing: 'no process to measure' };
}

async function measureContender(c: RunningContender, cfg: E2eConfig, result: ContenderResult, log: Log): Promise<void> {
  const fig = result.figures;
  const tally: CpuTally = { seconds: 0, bytes: 0 };
  const farTally: CpuTally = { seconds: 0, bytes: 0 };
  const open = c.open;
  const tracked = async (run: () => Promise<Transfer>): Promise<Transfer> => {
    const before = c.relayPid !== undefined ? cpuSeconds(c.relayPid) : undefined;
    const farBefore = c.simPid !== undefined ? cpuSeconds(c.simPid) : undefined;
    const t = await run();
    tallyCpu(tally, c.relayPid, before, t.bytes);
    tallyCpu(farTally, c.simPid, farBefore, t.bytes);
    return t;
  };
  const attempt = async (id: FigureId, work: () => Promise<void>): Promise<void> => {
    try {
      await work();
      const s = fig[id]?.summary;
      if (s) log(`e2e: ${result.label}: ${FIGURES[id].title} ${s.median.toFixed(2)} ${FIGURES[id].unit}`);
    } catch (err) {
      fig[id] = { missing: `failed: ${(err as Error).message.split('\n')[0]}` };
      const diagnostics = c.diagnostics();
      result.notes.push(`${id} failed; last output: ${diagnostics.replace(/\n/g, ' || ')}`);
      log(`e2e: ${result.label}: ${FIGURES[id].title} ${fig[id]!.missing}\n${diagnostics}`);
    }
  };

  // Throughput: warm-up at a fixed size, then measured runs sized from its rate.
  const throughput = async (id: FigureId, run: (bytes: number) => Promise<Transfer>): Promise<void> => {
    const warm = await run(cfg.warmupBytes);
    const bytes = sizeFor(mbps(warm), cfg);
    const runs: number[] = [];
    for (let i = 0; i < cfg.repeats; i++) runs.push(mbps(await tracked(() => run(bytes))));
    fig[id] = { summary: summarize(runs), warmup: mbps(warm), bytesPerRun: bytes };
  };
  await attempt('download', () => throughput('download', (n) => download(open, n)));
  await attempt('upload', () => throughput('upload', (n) => upload(open, n)));
  await attempt('concurrent', async () => {
    const per = (n: number): number => Math.max(64 * 1024, Math.floor(n / cfg.connections / 65536) * 65536);
    const warm = await concurrentDownload(open, cfg.connections, per(cfg.warmupBytes));
    const bytes = sizeFor(mbps(warm), cfg);
    const runs: number[] = [];
    let growth = 0;
    const growths: number[] = [];
    for (let i = 0; i < cfg.repeats; i++) {
      const sampler = c.relayPid !== undefined ? new RssSampler(c.relayPid) : undefined;
      runs.push(mbps(await tracked(() => concurrentDownload(open, cfg.connections, per(bytes)))));
      if (sampler) {
        growth = sampler.stop().growth;
        growths.push(growth / MiB);
      }
    }
    fig.concurrent = { summary: summarize(runs), warmup: mbps(warm), bytesPerRun: per(bytes) * cfg.connections };
    fig.rssGrowth = growths.length ? { summary: summarize(growths) } : { missing: 'no daemon process to measure' };
  });
  fig.cpuPerGB = c.relayPid !== undefined ? perGB(tally) : { missing: 'no daemon process to measure' };
  fig.farCpuPerGB = perGB(farTally);
  if (c.relayPid === undefined && !fig.rssGrowth) fig.rssGrowth = { missing: 'no daemon process to measure' };

  await attempt('connectMedian', async () => {
    const warm = await connectLatency(open, Math.min(20, cfg.latencySamples));
    const medians: number[] = [];
    const p99s: number[] = [];
    for (let i = 0; i < cfg.repeats; i++) {
      const times = await connectLatency(open, cfg.latencySamples);
      medians.push(quantile(times, 0.5));
      p99s.push(quantile(times, 0.99));
    }
    fig.connectMedian = { summary: summarize(medians), warmup: quantile(warm, 0.5) };
    fig.connectP99 = { summary: summarize(p99s) };
  });

  const mux = c.mux;
  const notMux = 'not measured: no lockdown or AFC without a device mux';
  if (!mux || !mux.paired) {
    const why = mux ? 'not measured: the daemon left no pair record' : notMux;
    for (const id of ['lockdownMedian', 'lockdownP99', 'afcPullMuxwire', 'afcPushMuxwire', 'afcPullAppium', 'afcPushAppium'] as const) fig[id] = { missing: why };
    return;
  }
  let session: LockdownHandle | undefined;
  try {
    await attempt('lockdownMedian', async () => {
      session = await openSession(c);
      const warm = await lockdownRoundTrips(session, Math.min(20, cfg.latencySamples));
      const medians: number[] = [];
      const p99s: number[] = [];
      for (let i = 0; i < cfg.repeats; i++) {
        const times = await lockdownRoundTrips(session, cfg.latencySamples);
        medians.push(quantile(times, 0.5));
        p99s.push(quantile(times, 0.99));
      }
      fig.lockdownMedian = { summary: summarize(medians), warmup: quantile(warm, 0.5) };
      fig.lockdownP99 = { summary: summarize(p99s) };
    });
    if (!session) {
      for (const id of ['afcPullMuxwire', 'afcPushMuxwire', 'afcPullAppium', 'afcPushAppium'] as const) fig[id] = { missing: 'not measured: no lockdown session' };
      return;
    }
    const s = session;
    const appium = await loadAppiumAfc();
    // One size for both clients on this daemon, from our client's warm-up pull: same file, same work.
    let afcBytes = cfg.afcBytes;
    const pulled = new Set<number>([cfg.afcWarmupBytes]);
    try {
      await attempt('afcPullMuxwire', async () => {
        const warm = await afcPull(c, s, 'muxwire', cfg.afcWarmupBytes);
        afcBytes = Math.min(cfg.afcBytes, sizeFor(mbps(warm), { targetSeconds: cfg.afcBudgetSeconds, minBytes: cfg.afcWarmupBytes, maxBytes: cfg.afcBytes }));
        pulled.add(afcBytes);
        const runs: number[] = [];
        for (let i = 0; i < cfg.afcRepeats; i++) runs.push(mbps(await afcPull(c, s, 'muxwire', afcBytes)));
        fig.afcPullMuxwire = { summary: summarize(runs), warmup: mbps(warm), bytesPerRun: afcBytes };
      });
      const afcFigure = async (id: FigureId, who: AfcClientName, op: 'pull' | 'push'): Promise<void> => {
        if (who === 'appium' && 'reason' in appium) {
          fig[id] = { missing: `not available: ${appium.reason}` };
          return;
        }
        await attempt(id, async () => {
          const run = (n: number): Promise<Transfer> => (op === 'pull' ? afcPull(c, s, who, n) : afcPush(c, s, who, n));
          const warm = await run(cfg.afcWarmupBytes);
          const runs: number[] = [];
          for (let i = 0; i < cfg.afcRepeats; i++) runs.push(mbps(await run(afcBytes)));
          fig[id] = { summary: summarize(runs), warmup: mbps(warm), bytesPerRun: afcBytes };
        });
      };
      await afcFigure('afcPushMuxwire', 'muxwire', 'push');
      await afcFigure('afcPullAppium', 'appium', 'pull');
      await afcFigure('afcPushAppium', 'appium', 'push');
    } finally {
      await removePullFiles(mux.afcRoot, pulled);
    }
  } finally {
    (session as LockdownHandle | undefined)?.lockdown.close();
  }
}
