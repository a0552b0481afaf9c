/**
 * The end-to-end bench: every contender in fresh processes of its own against a fresh simulated
 * device with the same settings, measured with the same workloads (e2e-workloads.ts).
 *
 * All contenders are started first and stay up (idle) while the others run, and the measured runs
 * are interleaved: round 1 runs the figure once on every contender, round 2 again, and so on, with
 * the order rotated each round. A burst of load from elsewhere on the machine then falls on every
 * contender alike instead of on whichever one happened to be running, which matters on a shared
 * two-core machine (bench/README.md shows how far sequential runs wandered).
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
  duplexEcho,
  loadAppiumAfc,
  lockdownRoundTrips,
  mbps,
  openSession,
  removePullFiles,
  upload,
  type AfcClientName,
  type Transfer,
} from './e2e-workloads.js';
import { addBackupFigures, FULL_BACKUP, QUICK_BACKUP, type BackupConfig, type BackupFigure } from './backup-workload.js';
import { cpuSeconds, cpuSecondsPrecise, RssSampler } from './proc-stats.js';
import { quantile, summarize, type Summary } from './stats.js';

const MiB = 1024 * 1024;
/** Connections of the many-connection duplex figure. */
const DUPLEX_CONNECTIONS = 8;

export interface E2eConfig {
  /** Measured runs per figure (after one warm-up). */
  repeats: number;
  /** Seconds one measured throughput run should last. */
  targetSeconds: number;
  /** Bytes of one warm-up run of a throughput figure. */
  warmupBytes: number;
  /**
   * Warm-up runs repeat until they have lasted this long (at least one): a daemon whose relay is
   * JIT-compiled is measured warm, as a C one always is. The last one's rate sizes the runs.
   */
  warmupSeconds: number;
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
  /** The backup figure's content set and rounds (bench/backup-workload.ts); not measured without it. */
  backup?: BackupConfig;
  /** Which contenders to run (default all). */
  only?: readonly ContenderId[];
  /** Which groups of figures to measure (default all). */
  figures?: readonly FigureGroup[];
}

/** Groups of figures that `--figures` can select: each group is measured as a whole. */
export const FIGURE_GROUPS = ['download', 'upload', 'duplex', 'concurrent', 'connect', 'lockdown', 'afc', 'backup'] as const;
export type FigureGroup = (typeof FIGURE_GROUPS)[number];

export const FULL_E2E: E2eConfig = {
  repeats: 5,
  targetSeconds: 2,
  warmupBytes: 32 * MiB,
  warmupSeconds: 1,
  minBytes: 8 * MiB,
  maxBytes: 2048 * MiB,
  connections: 32,
  latencySamples: 200,
  afcBytes: 1024 * MiB,
  afcBudgetSeconds: 30,
  afcWarmupBytes: 32 * MiB,
  afcRepeats: 3,
  backup: FULL_BACKUP,
};

export const QUICK_E2E: E2eConfig = {
  repeats: 5,
  targetSeconds: 0.4,
  warmupBytes: 8 * MiB,
  warmupSeconds: 0.5,
  minBytes: 8 * MiB,
  maxBytes: 256 * MiB,
  connections: 32,
  latencySamples: 40,
  afcBytes: 32 * MiB,
  afcBudgetSeconds: 2,
  afcWarmupBytes: 4 * MiB,
  afcRepeats: 3,
  backup: QUICK_BACKUP,
};

/** The figures, in table order. `better` says which way is good. */
export const FIGURES = {
  download: { title: 'download, 1 connection', unit: 'MB/s', better: 'higher' },
  upload: { title: 'upload, 1 connection', unit: 'MB/s', better: 'higher' },
  duplex: { title: 'full-duplex echo, 1 connection (each way)', unit: 'MB/s', better: 'higher' },
  duplex8: { title: 'full-duplex echo, 8 connections (aggregate each way)', unit: 'MB/s', better: 'higher' },
  concurrent: { title: 'download, 32 connections (aggregate)', unit: 'MB/s', better: 'higher' },
  connectMedian: { title: 'connect latency, median', unit: 'ms', better: 'lower' },
  connectP99: { title: 'connect latency, p99', unit: 'ms', better: 'lower' },
  connectOpenMedian: { title: 'socket open + connect, median', unit: 'ms', better: 'lower' },
  connectDaemonCpu: { title: 'daemon CPU per connect (measured connect runs)', unit: 'µs', better: 'lower' },
  lockdownMedian: { title: 'lockdown GetValue in TLS, median', unit: 'ms', better: 'lower' },
  lockdownP99: { title: 'lockdown GetValue in TLS, p99', unit: 'ms', better: 'lower' },
  afcPullMuxwire: { title: 'AFC pull, muxwire client', unit: 'MB/s', better: 'higher' },
  afcPushMuxwire: { title: 'AFC push, muxwire client', unit: 'MB/s', better: 'higher' },
  afcPullAppium: { title: 'AFC pull, appium-ios-device client', unit: 'MB/s', better: 'higher' },
  afcPushAppium: { title: 'AFC push, appium-ios-device client', unit: 'MB/s', better: 'higher' },
  rssGrowth: { title: 'daemon RSS growth, 32-connection run', unit: 'MiB', better: 'lower' },
  cpuPerGB: { title: 'daemon CPU per GB moved', unit: 's/GB', better: 'lower' },
  farCpuPerGB: { title: 'device side CPU per GB moved (sim or ceiling server)', unit: 's/GB', better: 'lower' },
  concurrentDaemonCpuPerGB: { title: '32 connections: daemon CPU per GB', unit: 's/GB', better: 'lower' },
  concurrentCpuPerGB: { title: '32 connections: CPU per GB of daemon + device + clients', unit: 's/GB', better: 'lower' },
  backupMuxwire: { title: 'full backup, muxwire backup --full', unit: 's', better: 'lower' },
  backupLimd: { title: 'full backup, idevicebackup2 backup --full', unit: 's', better: 'lower' },
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
  /** The backup figure's every run, CPU by process included (muxwire-js only). */
  backup?: BackupFigure;
}

type Log = (line: string) => void;

/** Bytes for a run of `targetSeconds` at `rateMBps`, within the limits, in whole MiB. */
export function sizeFor(rateMBps: number, cfg: Pick<E2eConfig, 'targetSeconds' | 'minBytes' | 'maxBytes'>): number {
  const want = rateMBps * 1e6 * cfg.targetSeconds;
  const bytes = Math.min(cfg.maxBytes, Math.max(cfg.minBytes, want));
  return Math.max(MiB, Math.floor(bytes / MiB) * MiB);
}

/** A running contender with its results and the state its figures share. */
interface Entry {
  readonly c: RunningContender;
  readonly result: ContenderResult;
  readonly tally: CpuTally;
  readonly farTally: CpuTally;
  /** The 32-connection runs only: daemon, device side (sim) and the bench's clients (this process). */
  readonly concurrentTally: { daemon: CpuTally; far: CpuTally; clients: CpuTally };
  session?: LockdownHandle;
  /** AFC file size for this daemon, from our client's warm-up pull. */
  afcBytes?: number;
  /** Pull files written into this device's AFC root. */
  readonly pulled: Set<number>;
}

/** Runs every contender; never throws for one contender's failure (it is reported instead). */
export async function runE2e(cfg: E2eConfig, workDir: string, log: Log): Promise<ContenderResult[]> {
  const results: ContenderResult[] = [];
  const entries: Entry[] = [];
  try {
    for (const spec of CONTENDERS) {
      if (cfg.only && !cfg.only.includes(spec.id)) continue;
      const result: ContenderResult = { id: spec.id, label: spec.label, about: spec.about, notes: [], figures: {}, seconds: 0 };
      results.push(result);
      log(`e2e: starting ${spec.label}`);
      try {
        const c = await startContender(spec.id, { workDir });
        result.notes.push(...c.notes);
        const zero = (): CpuTally => ({ seconds: 0, bytes: 0 });
        entries.push({ c, result, tally: zero(), farTally: zero(), concurrentTally: { daemon: zero(), far: zero(), clients: zero() }, pulled: new Set() });
      } catch (err) {
        const message = (err as Error).message.split('\n')[0]!;
        result.unavailable = err instanceof ContenderUnavailable ? `not available: ${message}` : `failed: ${message}`;
        log(`e2e: ${spec.label} ${result.unavailable}`);
      }
    }
    const t0 = Date.now();
    await measureAll(entries, cfg, log);
    if (cfg.backup && (!cfg.figures || cfg.figures.includes('backup'))) await addBackupFigures(results, cfg.backup, workDir, log);
    for (const e of entries) e.result.seconds = (Date.now() - t0) / 1000;
  } finally {
    for (const e of entries) {
      e.session?.lockdown.close();
      if (e.c.mux) await removePullFiles(e.c.mux.afcRoot, e.pulled).catch(() => undefined);
      await e.c.stop().catch((err: Error) => log(`e2e: stopping ${e.result.label}: ${err.message}`));
    }
  }
  return results;
}

/** CPU seconds a process spent and bytes moved by the measured throughput runs. */
interface CpuTally {
  seconds: number;
  bytes: number;
}

/** Adds what `pid` spent since `before` (read with the same `clock`) to `tally`. */
function tallyCpu(tally: CpuTally, pid: number | undefined, before: number | undefined, bytes: number, clock = cpuSeconds): void {
  const after = pid !== undefined ? clock(pid) : undefined;
  if (before === undefined || after === undefined) return;
  tally.seconds += after - before;
  tally.bytes += bytes;
}

/** Adds to `into` what `tally` gained since `before` (a copy taken earlier). */
function addDelta(into: CpuTally, tally: CpuTally, before: CpuTally): void {
  into.seconds += tally.seconds - before.seconds;
  into.bytes += tally.bytes - before.bytes;
}

function perGB(tally: CpuTally): FigureResult {
  return tally.bytes > 0 ? { summary: summarize([tally.seconds / (tally.bytes / 1e9)]), bytesPerRun: tally.bytes } : { missing: 'no process to measure' };
}

/** Runs `run` and adds the daemon's and the device side's CPU to the entry's tallies. */
async function tracked(e: Entry, run: () => Promise<Transfer>): Promise<Transfer> {
  const before = e.c.relayPid !== undefined ? cpuSeconds(e.c.relayPid) : undefined;
  const farBefore = e.c.simPid !== undefined ? cpuSeconds(e.c.simPid) : undefined;
  const t = await run();
  tallyCpu(e.tally, e.c.relayPid, before, t.bytes);
  tallyCpu(e.farTally, e.c.simPid, farBefore, t.bytes);
  return t;
}

/** How one figure is measured on one contender: a warm-up, then one measured value per round. */
interface FigurePlan<W> {
  readonly id: FigureId;
  readonly rounds: number;
  /** The warm-up (excluded); its result sizes the measured runs. */
  warm(e: Entry): Promise<W>;
  /** One measured run. */
  run(e: Entry, warm: W): Promise<number>;
  /** Stores the figure from the warm-up and the measured values. */
  record(e: Entry, warm: W, values: number[]): void;
}

/**
 * Measures one figure on every entry that `applies`: warm-ups first, then `rounds` rounds of one
 * run per entry in rotating order. An entry whose run fails gets the error as its figure and drops
 * out of the later rounds.
 */
async function interleave<W>(entries: readonly Entry[], plan: FigurePlan<W>, log: Log, applies: (e: Entry) => boolean = () => true): Promise<void> {
  const live: { e: Entry; warm: W; values: number[] }[] = [];
  const fail = (e: Entry, err: unknown): void => {
    const fig = e.result.figures;
    fig[plan.id] = { missing: `failed: ${(err as Error).message.split('\n')[0]}` };
    const diagnostics = e.c.diagnostics();
    e.result.notes.push(`${plan.id} failed; last output: ${diagnostics.replace(/\n/g, ' || ')}`);
    log(`e2e: ${e.result.label}: ${FIGURES[plan.id].title} ${fig[plan.id]!.missing}\n${diagnostics}`);
  };
  for (const e of entries) {
    if (!applies(e)) continue;
    try {
      live.push({ e, warm: await plan.warm(e), values: [] });
    } catch (err) {
      fail(e, err);
    }
  }
  for (let round = 0; round < plan.rounds; round++) {
    for (let k = 0; k < live.length; k++) {
      const slot = live[(k + round) % live.length]!;
      if (slot.values.length !== round) continue; // failed earlier
      try {
        slot.values.push(await plan.run(slot.e, slot.warm));
      } catch (err) {
        fail(slot.e, err);
      }
    }
  }
  for (const { e, warm, values } of live) {
    if (values.length !== plan.rounds) continue;
    plan.record(e, warm, values);
    const s = e.result.figures[plan.id]?.summary;
    if (s) log(`e2e: ${e.result.label}: ${FIGURES[plan.id].title} ${s.median.toFixed(2)} ${FIGURES[plan.id].unit}`);
  }
}

/** Warm-up runs until `cfg.warmupSeconds` have passed (at most 50 runs); the last one's MB/s. */
export async function warmUp(cfg: Pick<E2eConfig, 'warmupSeconds'>, run: () => Promise<Transfer>): Promise<number> {
  let spent = 0;
  let rate = 0;
  for (let i = 0; i < 50 && (i === 0 || spent < cfg.warmupSeconds); i++) {
    const t = await run();
    spent += t.seconds;
    rate = mbps(t);
  }
  return rate;
}

/** A throughput figure: warm-up runs, then measured runs sized from the warm rate. */
function throughputPlan(id: FigureId, cfg: E2eConfig, move: (e: Entry, bytes: number) => Promise<Transfer>): FigurePlan<{ rate: number; bytes: number }> {
  return {
    id,
    rounds: cfg.repeats,
    async warm(e) {
      const rate = await warmUp(cfg, () => move(e, cfg.warmupBytes));
      return { rate, bytes: sizeFor(rate, cfg) };
    },
    run: async (e, w) => mbps(await tracked(e, () => move(e, w.bytes))),
    record(e, w, values) {
      e.result.figures[id] = { summary: summarize(values), warmup: w.rate, bytesPerRun: w.bytes };
    },
  };
}

/** A latency figure: median and p99 of `samples` operations per run. */
function latencyPlan(medianId: FigureId, p99Id: FigureId, cfg: E2eConfig, sample: (e: Entry, n: number) => Promise<number[]>): FigurePlan<number> {
  const p99s = new Map<Entry, number[]>();
  return {
    id: medianId,
    rounds: cfg.repeats,
    warm: async (e) => quantile(await sample(e, Math.min(20, cfg.latencySamples)), 0.5),
    async run(e) {
      const times = await sample(e, cfg.latencySamples);
      p99s.set(e, [...(p99s.get(e) ?? []), quantile(times, 0.99)]);
      return quantile(times, 0.5);
    },
    record(e, warm, values) {
      e.result.figures[medianId] = { summary: summarize(values), warmup: warm };
      e.result.figures[p99Id] = { summary: summarize(p99s.get(e) ?? []) };
    },
  };
}

async function measureAll(entries: readonly Entry[], cfg: E2eConfig, log: Log): Promise<void> {
  const wants = (g: FigureGroup): boolean => !cfg.figures || cfg.figures.includes(g);
  if (wants('download')) await interleave(entries, throughputPlan('download', cfg, (e, n) => download(e.c.open, n)), log);
  if (wants('upload')) await interleave(entries, throughputPlan('upload', cfg, (e, n) => upload(e.c.open, n)), log);
  if (wants('duplex')) {
    await interleave(entries, throughputPlan('duplex', cfg, (e, n) => duplexEcho(e.c.open, 1, n)), log);
    // Eight connections share the run's bytes, in whole 64 KiB blocks each.
    const each = (n: number): number => Math.max(64 * 1024, Math.floor(n / DUPLEX_CONNECTIONS / 65536) * 65536);
    await interleave(entries, throughputPlan('duplex8', cfg, (e, n) => duplexEcho(e.c.open, DUPLEX_CONNECTIONS, each(n))), log);
  }
  if (wants('concurrent')) await measureConcurrent(entries, cfg, log);
  if (wants('connect')) await measureConnect(entries, cfg, log);
  if (wants('lockdown') || wants('afc')) await measureLockdownAndAfc(entries, cfg, log, wants('lockdown'), wants('afc'));
}

/** Connect latency (Connect → Result 0), and the same with the socket to the daemon opened first. */
async function measureConnect(entries: readonly Entry[], cfg: E2eConfig, log: Log): Promise<void> {
  const totals = new Map<Entry, number[]>();
  const plan = latencyPlan('connectMedian', 'connectP99', cfg, (e, n) => {
    const t: number[] = [];
    return connectLatency(e.c, n, t).then((times) => {
      totals.set(e, [...(totals.get(e) ?? []), quantile(t, 0.5)]);
      return times;
    });
  });
  // The daemon's CPU over the measured runs, per connect (`bytes` counts connects here): what a
  // connect costs the daemon besides its latency, e.g. work done after the Result is written.
  const cpu = new Map<Entry, CpuTally>();
  await interleave(entries, {
    ...plan,
    async run(e, w) {
      const tally = cpu.get(e) ?? { seconds: 0, bytes: 0 };
      cpu.set(e, tally);
      const before = e.c.relayPid !== undefined ? cpuSecondsPrecise(e.c.relayPid) : undefined;
      const median = await plan.run(e, w);
      tallyCpu(tally, e.c.relayPid, before, cfg.latencySamples, cpuSecondsPrecise);
      return median;
    },
    record(e, warm, values) {
      plan.record(e, warm, values);
      // The warm-up's total came first: the measured runs' medians are the last `values.length`.
      const t = totals.get(e) ?? [];
      e.result.figures.connectOpenMedian = { summary: summarize(t.slice(-values.length)) };
      // Counted only where there is a daemon process to read.
      const tally = cpu.get(e);
      if (tally !== undefined && tally.bytes > 0) e.result.figures.connectDaemonCpu = { summary: summarize([(tally.seconds / tally.bytes) * 1e6]) };
    },
  }, log);
}

/** 32 connections, with the daemon's RSS sampled during each measured run; then the CPU tallies. */
async function measureConcurrent(entries: readonly Entry[], cfg: E2eConfig, log: Log): Promise<void> {
  // 32 connections, with the daemon's RSS sampled during each measured run.
  const per = (n: number): number => Math.max(64 * 1024, Math.floor(n / cfg.connections / 65536) * 65536);
  const growths = new Map<Entry, number[]>();
  const concurrent = throughputPlan('concurrent', cfg, (e, n) => concurrentDownload(e.c.open, cfg.connections, per(n)));
  await interleave(
    entries,
    {
      ...concurrent,
      async run(e, w) {
        const sampler = e.c.relayPid !== undefined ? new RssSampler(e.c.relayPid) : undefined;
        // The run's share of the daemon's and the device's tallies (which `tracked` adds to), and
        // this process's CPU over the same run.
        const t = e.concurrentTally;
        const daemon0 = { ...e.tally };
        const far0 = { ...e.farTally };
        const clients0 = process.cpuUsage();
        try {
          const rate = await concurrent.run(e, w);
          addDelta(t.daemon, e.tally, daemon0);
          addDelta(t.far, e.farTally, far0);
          const used = process.cpuUsage(clients0);
          t.clients.seconds += (used.user + used.system) / 1e6;
          t.clients.bytes += per(w.bytes) * cfg.connections;
          return rate;
        } finally {
          if (sampler) growths.set(e, [...(growths.get(e) ?? []), sampler.stop().growth / MiB]);
        }
      },
      record(e, w, values) {
        e.result.figures.concurrent = { summary: summarize(values), warmup: w.rate, bytesPerRun: per(w.bytes) * cfg.connections };
      },
    },
    log,
  );
  for (const e of entries) {
    const fig = e.result.figures;
    const g = growths.get(e);
    fig.rssGrowth = e.c.relayPid === undefined ? { missing: 'no daemon process to measure' } : g?.length ? { summary: summarize(g) } : { missing: 'not measured: the 32-connection run failed' };
    fig.cpuPerGB = e.c.relayPid !== undefined ? perGB(e.tally) : { missing: 'no daemon process to measure' };
    fig.farCpuPerGB = perGB(e.farTally);
    // While every process is CPU-bound on a shared machine, the aggregate is inversely
    // proportional to the CPU all of them spend per GB (bench/README.md, "32 connections").
    const t = e.concurrentTally;
    if (e.c.relayPid !== undefined) fig.concurrentDaemonCpuPerGB = perGB(t.daemon);
    if (t.daemon.bytes > 0 && t.far.bytes > 0) {
      fig.concurrentCpuPerGB = perGB({ seconds: t.daemon.seconds + t.far.seconds + t.clients.seconds, bytes: t.clients.bytes });
    }
  }
}

/** Lockdown and AFC: mux contenders whose daemon left a pair record. */
async function measureLockdownAndAfc(entries: readonly Entry[], cfg: E2eConfig, log: Log, lockdown: boolean, afc: boolean): Promise<void> {
  const lockdownIds = ['lockdownMedian', 'lockdownP99', 'afcPullMuxwire', 'afcPushMuxwire', 'afcPullAppium', 'afcPushAppium'] as const;
  for (const e of entries) {
    const why = !e.c.mux ? 'not measured: no lockdown or AFC without a device mux' : !e.c.mux.paired ? 'not measured: the daemon left no pair record' : undefined;
    if (why) for (const id of lockdownIds) e.result.figures[id] = { missing: why };
  }
  const paired = (e: Entry): boolean => e.c.mux?.paired === true;
  for (const e of entries.filter(paired)) {
    try {
      e.session = await openSession(e.c);
    } catch (err) {
      for (const id of lockdownIds) e.result.figures[id] = { missing: `failed: could not open a lockdown session: ${(err as Error).message.split('\n')[0]}` };
    }
  }
  const withSession = (e: Entry): boolean => e.session !== undefined;
  if (lockdown) await interleave(entries, latencyPlan('lockdownMedian', 'lockdownP99', cfg, (e, n) => lockdownRoundTrips(e.session!, n)), log, withSession);
  if (!afc) return;

  // AFC: one size per daemon for both clients, from our client's warm-up pull (same file, same work).
  const appium = await loadAppiumAfc();
  const afcPlan = (id: FigureId, who: AfcClientName, op: 'pull' | 'push', sizes: boolean): FigurePlan<number> => {
    const move = (e: Entry, n: number): Promise<Transfer> => {
      if (op === 'pull') e.pulled.add(n);
      return op === 'pull' ? afcPull(e.c, e.session!, who, n) : afcPush(e.c, e.session!, who, n);
    };
    return {
      id,
      rounds: cfg.afcRepeats,
      async warm(e) {
        const rate = await warmUp(cfg, () => move(e, cfg.afcWarmupBytes));
        if (sizes) e.afcBytes = Math.min(cfg.afcBytes, sizeFor(rate, { targetSeconds: cfg.afcBudgetSeconds, minBytes: cfg.afcWarmupBytes, maxBytes: cfg.afcBytes }));
        return rate;
      },
      run: async (e) => mbps(await move(e, e.afcBytes ?? cfg.afcBytes)),
      record(e, warm, values) {
        e.result.figures[id] = { summary: summarize(values), warmup: warm, bytesPerRun: e.afcBytes ?? cfg.afcBytes };
      },
    };
  };
  await interleave(entries, afcPlan('afcPullMuxwire', 'muxwire', 'pull', true), log, withSession);
  await interleave(entries, afcPlan('afcPushMuxwire', 'muxwire', 'push', false), log, withSession);
  if ('reason' in appium) {
    for (const e of entries.filter(withSession)) {
      e.result.figures.afcPullAppium = { missing: `not available: ${appium.reason}` };
      e.result.figures.afcPushAppium = { missing: `not available: ${appium.reason}` };
    }
  } else {
    await interleave(entries, afcPlan('afcPullAppium', 'appium', 'pull', false), log, withSession);
    await interleave(entries, afcPlan('afcPushAppium', 'appium', 'push', false), log, withSession);
  }
}
