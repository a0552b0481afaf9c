/**
 * The backup figure: seconds for one full backup of a fixed content set, with `muxwire backup` (our
 * BackupClient, run as the CLI runs it) and with libimobiledevice's `idevicebackup2 backup --full`,
 * on the same simulated device (`muxwire sim --backup-root R`) through the same muxwire daemon
 * (TypeScript vusb transport), in fresh processes of their own (bench/contenders.ts).
 *
 * Each client backs up into an empty directory of its own, kept until the figure is done: removing
 * the last backup's thousands of files just before the next client creates as many makes ext4's
 * inode allocator skip the recently deleted ones one by one (perf: 28 % of a client's CPU in
 * ext4_create → recently_deleted), a cost no real backup pays and that would blur both clients.
 * A backup is checked against R before its time counts: Status.plist finished, one Manifest.db row
 * per file of R with its domain, path and size, and every file under its hashed name with R's SHA-1. One warm-up backup per client
 * (excluded), then rounds of one backup each, the order alternating from round to round. For every
 * run the CPU seconds of the client, the daemon and the simulated device are taken from /proc, so
 * the report shows which process bounds the time.
 *
 *   node dist/bench/backup-workload.js [--quick] [--files N] [--mib M] [--rounds K]   (this figure alone)
 */
import { spawn } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { formatSocketAddress } from '../src/client/socket-address.js';
import { decodePlist, isPlistDict } from '../src/protocol/plist.js';
import { MANIFEST_FLAG_FILE, backupFileId, backupFilePath, readManifestDb } from '../src/services/backup/manifest-db.js';
import { findPeer } from '../test/helpers/peers.js';
import { ContenderUnavailable, makeWorkDir, muxwireMain, profileArgs, startContender, type RunningContender } from './contenders.js';
import type { ContenderResult, FigureId } from './e2e.js';
import { cpuSeconds, reapedChildrenCpuSeconds } from './proc-stats.js';
import { summarize, type Summary } from './stats.js';

const MiB = 1024 * 1024;

/** The content set and how many measured rounds. */
export interface BackupConfig {
  /** Files in R (one of them empty). */
  files: number;
  /** Bytes in R, all files together. */
  bytes: number;
  /** Measured rounds (each one backup per client), after one warm-up backup per client. */
  rounds: number;
}

export const FULL_BACKUP: BackupConfig = { files: 2000, bytes: 512 * MiB, rounds: 3 };
export const QUICK_BACKUP: BackupConfig = { files: 500, bytes: 64 * MiB, rounds: 3 };

/** The two clients. */
export const BACKUP_CLIENTS = ['muxwire', 'idevicebackup2'] as const;
export type BackupClientName = (typeof BACKUP_CLIENTS)[number];

/** One file of the content set, as the backup must hold it. */
interface ExpectedFile {
  domain: string;
  relativePath: string;
  size: number;
  sha1: string;
}

/** CPU seconds each process spent during one backup. */
export interface BackupCpu {
  client: number;
  daemon: number;
  sim: number;
}

/** One client's measured backups. */
export interface BackupClientResult {
  /** Seconds per measured backup, in round order. */
  seconds?: Summary;
  warmup?: number;
  /** CPU seconds per measured backup, by process, in round order. */
  cpu: BackupCpu[];
  /** Why there is no figure: not available, or the error that stopped it. */
  missing?: string;
}

export interface BackupFigure {
  config: BackupConfig;
  /** What R held: files and bytes as generated. */
  content: { files: number; bytes: number };
  clients: Record<BackupClientName, BackupClientResult>;
  notes: string[];
}

/**
 * Writes the content set into `root` and returns what a backup of it must hold, by fileID. The set
 * is shaped like a phone's: about 1 % of the files (at least 2) are videos that carry most of the
 * bytes, the rest are small documents and preferences of 1 B–16 KiB, and one file is empty.
 */
export async function writeBackupContent(root: string, cfg: Pick<BackupConfig, 'files' | 'bytes'>): Promise<Map<string, ExpectedFile>> {
  if (cfg.files < 4) throw new Error('a backup content set needs at least 4 files');
  const big = Math.max(2, Math.round(cfg.files / 100));
  const small = cfg.files - big - 1;
  const smallSizes = Array.from({ length: small }, (_, i) => 1 + ((i * 7919) % (16 * 1024)));
  const smallBytes = smallSizes.reduce((a, b) => a + b, 0);
  if (smallBytes >= cfg.bytes) throw new Error(`${cfg.bytes} bytes are too few for ${cfg.files} files`);
  const bigSize = Math.floor((cfg.bytes - smallBytes) / big);
  const files: { domain: string; relativePath: string; size: number }[] = [
    { domain: 'HomeDomain', relativePath: 'Library/SMS/sms.db-wal', size: 0 },
  ];
  for (let i = 0; i < big; i++) {
    const size = i === big - 1 ? cfg.bytes - smallBytes - bigSize * (big - 1) : bigSize;
    files.push({ domain: 'MediaDomain', relativePath: `Media/DCIM/${100 + (i % 3)}APPLE/IMG_${String(i).padStart(4, '0')}.MOV`, size });
  }
  smallSizes.forEach((size, i) => {
    const domain = i % 3 === 0 ? 'HomeDomain' : `AppDomain-com.example.app${i % 7}`;
    const relativePath = i % 3 === 0 ? `Library/Preferences/p${i % 11}/pref ${i}.plist` : `Documents/d${i % 13}/note ${i}.txt`;
    files.push({ domain, relativePath, size });
  });
  const expected = new Map<string, ExpectedFile>();
  const block = Buffer.allocUnsafe(4 * MiB);
  for (const f of files) {
    const path = join(root, f.domain, ...f.relativePath.split('/'));
    await mkdir(join(path, '..'), { recursive: true });
    const hash = createHash('sha1');
    const fh = await open(path, 'wx', 0o644);
    try {
      for (let left = f.size; left > 0; ) {
        const piece = block.subarray(0, Math.min(block.length, left));
        randomFillSync(piece);
        hash.update(piece);
        await fh.write(piece);
        left -= piece.length;
      }
    } finally {
      await fh.close();
    }
    expected.set(backupFileId(f.domain, f.relativePath), { ...f, sha1: hash.digest('hex') });
  }
  return expected;
}

async function sha1File(path: string): Promise<string> {
  const h = createHash('sha1');
  for await (const c of createReadStream(path, { highWaterMark: MiB })) h.update(c as Buffer);
  return h.digest('hex');
}

/**
 * Checks the backup in `udidDir` against the content set: a finished Status.plist, exactly one Files
 * row per file with its domain, path and size, and each file's data under its hashed name with
 * the content's SHA-1. Throws with the first difference.
 */
export async function checkBackup(udidDir: string, expected: ReadonlyMap<string, ExpectedFile>): Promise<void> {
  const status = decodePlist(await readFile(join(udidDir, 'Status.plist')));
  if (!isPlistDict(status) || status.SnapshotState !== 'finished') throw new Error(`${udidDir}: Status.plist does not say finished`);
  const rows = readManifestDb(join(udidDir, 'Manifest.db')).filter((r) => r.flags === MANIFEST_FLAG_FILE);
  if (rows.length !== expected.size) throw new Error(`${udidDir}: Manifest.db has ${rows.length} file rows, the device ${expected.size} files`);
  for (const r of rows) {
    const want = expected.get(r.fileID);
    if (!want) throw new Error(`${udidDir}: Manifest.db names ${r.domain}/${r.relativePath}, which the device does not have`);
    if (r.domain !== want.domain || r.relativePath !== want.relativePath || r.size !== want.size) {
      throw new Error(`${udidDir}: the row of ${want.domain}/${want.relativePath} says ${r.domain}/${r.relativePath}, ${r.size} bytes (want ${want.size})`);
    }
    const got = await sha1File(join(udidDir, backupFilePath(r.fileID))).catch((err: Error) => `unreadable (${err.message})`);
    if (got !== want.sha1) throw new Error(`${udidDir}: ${want.domain}/${want.relativePath} is ${got}, not ${want.sha1}`);
  }
}

/** The command line of one client's full backup of `udid` into `out`. */
function clientCommand(who: BackupClientName, udid: string, out: string): [string, string[]] {
  if (who === 'idevicebackup2') return ['idevicebackup2', ['-u', udid, 'backup', '--full', out]];
  return [process.execPath, [...profileArgs(), muxwireMain(), 'backup', '-u', udid, out, '--full', '--no-progress', '--json']];
}

/** Runs `command` to its end; rejects with its exit status and the last of its output. */
function runClient(command: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const keep = (d: Buffer): void => {
      output = (output + d.toString()).slice(-8192);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`${command} ${args.join(' ')} exited ${code ?? signal}: ${output.trim().split('\n').slice(-3).join(' | ')}`));
    });
  });
}

/** One checked full backup by `who` into a new folder of `scratch`: wall seconds and each process's CPU seconds. */
async function oneBackup(who: BackupClientName, c: RunningContender, expected: ReadonlyMap<string, ExpectedFile>, scratch: string, timeoutMs: number): Promise<{ seconds: number; cpu: BackupCpu }> {
  const { client, device } = c.mux!;
  const out = await mkdtemp(join(scratch, `${who}-`));
  const env = { ...process.env, USBMUXD_SOCKET_ADDRESS: formatSocketAddress(client.address) };
  const [command, args] = clientCommand(who, device.udid, out);
  const daemon0 = cpuSeconds(c.relayPid!);
  const sim0 = cpuSeconds(c.simPid!);
  // The client is this process's only child that ends during the run: its CPU is what the
  // kernel adds to this process's reaped-children times when it is waited for.
  const client0 = reapedChildrenCpuSeconds();
  const t0 = performance.now();
  await runClient(command, args, env, timeoutMs);
  const seconds = (performance.now() - t0) / 1000;
  const cpu = {
    client: reapedChildrenCpuSeconds() - client0,
    daemon: (cpuSeconds(c.relayPid!) ?? NaN) - (daemon0 ?? NaN),
    sim: (cpuSeconds(c.simPid!) ?? NaN) - (sim0 ?? NaN),
  };
  await checkBackup(join(out, device.udid), expected);
  return { seconds, cpu };
}

/** What one backup may take before it is called hung: 2 minutes plus 1 MB/s. */
function backupTimeoutMs(bytes: number): number {
  return 120_000 + bytes / 1000;
}

/**
 * Measures the backup figure in `workDir`: generates the content, starts the sim and the daemon,
 * then warm-ups and interleaved rounds. Never throws for a client's failure (it is reported).
 */
export async function measureBackup(cfg: BackupConfig, workDir: string, log: (line: string) => void): Promise<BackupFigure> {
  const clients = { muxwire: { cpu: [] }, idevicebackup2: { cpu: [] } } as Record<BackupClientName, BackupClientResult>;
  const dir = await mkdtemp(join(workDir, 'backup-'));
  const root = join(dir, 'R');
  const figure: BackupFigure = { config: cfg, content: { files: 0, bytes: 0 }, clients, notes: [] };
  let c: RunningContender | undefined;
  try {
    log(`backup: writing ${cfg.files} files, ${Math.round(cfg.bytes / MiB)} MiB`);
    const expected = await writeBackupContent(root, cfg);
    figure.content = { files: expected.size, bytes: [...expected.values()].reduce((n, f) => n + f.size, 0) };
    const live = new Set<BackupClientName>(BACKUP_CLIENTS);
    if (!findPeer('idevicebackup2')) {
      clients.idevicebackup2.missing = 'not available: idevicebackup2 is not installed (Debian package libimobiledevice-utils)';
      live.delete('idevicebackup2');
    }
    try {
      c = await startContender('muxwire-js', { workDir: dir, backupRoot: root });
    } catch (err) {
      const why = `${err instanceof ContenderUnavailable ? 'not available' : 'failed'}: ${(err as Error).message.split('\n')[0]}`;
      for (const who of live) clients[who].missing = why;
      return figure;
    }
    if (!c.mux?.paired) {
      for (const who of live) clients[who].missing = 'not measured: the daemon left no pair record';
      return figure;
    }
    figure.notes.push(`backup: ${figure.content.files} files, ${(figure.content.bytes / MiB).toFixed(0)} MiB, through ${c.id}'s daemon`);
    const scratch = join(dir, 'out');
    await mkdir(scratch);
    const timeoutMs = backupTimeoutMs(figure.content.bytes);
    const seconds: Record<BackupClientName, number[]> = { muxwire: [], idevicebackup2: [] };
    const attempt = async (who: BackupClientName, measured: boolean): Promise<void> => {
      try {
        const r = await oneBackup(who, c!, expected, scratch, timeoutMs);
        if (measured) {
          seconds[who].push(r.seconds);
          clients[who].cpu.push(r.cpu);
        } else clients[who].warmup = r.seconds;
        log(`backup: ${who}${measured ? '' : ' (warm-up)'} ${r.seconds.toFixed(2)} s; CPU s client ${r.cpu.client.toFixed(2)}, daemon ${r.cpu.daemon.toFixed(2)}, sim ${r.cpu.sim.toFixed(2)}`);
      } catch (err) {
        clients[who].missing = `failed: ${(err as Error).message.split('\n')[0]}`;
        live.delete(who);
        log(`backup: ${who} ${clients[who].missing}\n${c!.diagnostics()}`);
      }
    };
    for (const who of BACKUP_CLIENTS) if (live.has(who)) await attempt(who, false);
    for (let round = 0; round < cfg.rounds; round++) {
      const order = round % 2 === 0 ? BACKUP_CLIENTS : [...BACKUP_CLIENTS].reverse();
      for (const who of order) if (live.has(who)) await attempt(who, true);
    }
    for (const who of live) clients[who].seconds = summarize(seconds[who]);
    const a = clients.muxwire.seconds;
    const b = clients.idevicebackup2.seconds;
    if (a && b) {
      const rounds = summarize(a.runs.map((v, i) => b.runs[i]! / v));
      figure.notes.push(`backup: idevicebackup2's seconds ÷ ours ${(b.median / a.median).toFixed(2)}× (rounds ${rounds.min.toFixed(2)}..${rounds.max.toFixed(2)})`);
    }
    for (const who of BACKUP_CLIENTS) {
      const cpu = clients[who].cpu;
      if (cpu.length === 0) continue;
      const med = (k: keyof BackupCpu): string => summarize(cpu.map((x) => x[k])).median.toFixed(2);
      figure.notes.push(`backup CPU s per run (median), ${who}: client ${med('client')}, daemon ${med('daemon')}, sim ${med('sim')}`);
    }
    return figure;
  } finally {
    await c?.stop().catch((err: Error) => log(`backup: stopping the daemon and sim: ${err.message}`));
    await rm(dir, { recursive: true, force: true });
  }
}

/** The table's figure of each client. */
const FIGURE_OF: Record<BackupClientName, FigureId> = { muxwire: 'backupMuxwire', idevicebackup2: 'backupLimd' };

/**
 * The bench's hook (bench/e2e.ts): measures the backup figure through a daemon of (a)'s kind and
 * files it under (a)'s results; the other contenders get the reason they have none.
 */
export async function addBackupFigures(results: ContenderResult[], cfg: BackupConfig, workDir: string, log: (line: string) => void): Promise<void> {
  const ours = results.find((r) => r.id === 'muxwire-js' && r.unavailable === undefined);
  for (const r of results) {
    if (r === ours) continue;
    for (const id of Object.values(FIGURE_OF)) r.figures[id] = { missing: 'not measured: backups run through (a) only' };
  }
  if (!ours) return;
  const fig = await measureBackup(cfg, workDir, log);
  for (const who of BACKUP_CLIENTS) {
    const c = fig.clients[who];
    ours.figures[FIGURE_OF[who]] = c.seconds ? { summary: c.seconds, ...(c.warmup !== undefined ? { warmup: c.warmup } : {}) } : { missing: c.missing ?? 'not measured' };
    const s = c.seconds;
    if (s) log(`e2e: ${ours.label}: backup, ${who} ${s.median.toFixed(2)} s`);
  }
  ours.notes.push(...fig.notes);
  ours.backup = fig;
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { quick: { type: 'boolean' }, files: { type: 'string' }, mib: { type: 'string' }, rounds: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write('usage: node dist/bench/backup-workload.js [--quick] [--files N] [--mib M] [--rounds K]\n\nThe backup figure alone (bench/README.md, "Backup").\n');
    return 0;
  }
  const base = values.quick ? QUICK_BACKUP : FULL_BACKUP;
  const num = (v: string | undefined, d: number, what: string): number => {
    if (v === undefined) return d;
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) throw new Error(`--${what} must be a positive whole number, not '${v}'`);
    return n;
  };
  const cfg: BackupConfig = { files: num(values.files, base.files, 'files'), bytes: num(values.mib, base.bytes / MiB, 'mib') * MiB, rounds: num(values.rounds, base.rounds, 'rounds') };
  const workDir = await makeWorkDir();
  try {
    const fig = await measureBackup(cfg, workDir, (line) => void process.stderr.write(`${line}\n`));
    process.stdout.write(`${JSON.stringify(fig, null, 2)}\n`);
    return BACKUP_CLIENTS.some((w) => fig.clients[w].missing) ? 1 : 0;
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

const isMain = process.argv[1] !== undefined && fileURLToPath(import.meta.url) === resolve(process.argv[1]);
if (isMain) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`backup-workload: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(2);
    },
  );
}
