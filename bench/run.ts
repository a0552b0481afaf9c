/**
 * `npm run bench` / `npm run bench:gate`: the micro-benchmarks and the end-to-end race against
 * usbmuxd and the two ceilings, one table, one JSON report, and with --gate the thresholds of
 * bench/gate.json (exit 1 when one falls short).
 *
 *   node dist/bench/run.js [--quick] [--gate] [--json FILE] [--only a,b] [--figures g,h] [--no-micro] [--no-e2e]
 *                          [--gate-file FILE] [--check FILE]
 */
import { existsSync } from 'node:fs';
import { rm, writeFile, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CONTENDERS, makeWorkDir, repoRoot, type ContenderId } from './contenders.js';
import { FIGURE_GROUPS, FULL_E2E, QUICK_E2E, runE2e, type FigureGroup } from './e2e.js';
import { checkGate, loadGate } from './gate.js';
import { formatDemuxPushRows, formatDemuxScanRows, runDemuxPushBench, runDemuxScanBench } from './demux-scan.js';
import { runCodecBench, runDemuxBench } from './micro.js';
import { formatReport, machineInfo, type BenchReport } from './report.js';

const HELP = `usage: node dist/bench/run.js [options]

Runs the micro-benchmarks (codecs, demuxer native vs TypeScript vs memcpy) and the end-to-end
race: muxwire daemon (TypeScript vusb transport; native backend), libimobiledevice's usbmuxd,
and the ceilings socat (two UNIX hops) and a direct socket, each against a fresh simulated device.
Prints one table and writes a JSON report.

options:
  --quick            small sizes and few samples (what CI's gate runs; a few minutes on 2 cores)
  --gate             check bench/gate.json; exit 1 when a threshold falls short
  --json FILE        where to write the JSON report (default bench-report.json)
  --only LIST        contenders to run, comma-separated: ${CONTENDERS.map((c) => c.id).join(',')}
  --figures LIST     figure groups to measure, comma-separated: ${FIGURE_GROUPS.join(',')}
                     (default all; with --gate, a threshold on a figure not measured fails)
  --no-micro         skip the micro-benchmarks
  --no-e2e           skip the end-to-end race
  --gate-file FILE   thresholds (default bench/gate.json)
  --check FILE       measure nothing: check the gate against an earlier JSON report
  -h, --help         this text
`;

/** bench/gate.json in the source tree (the compiled runner lives in dist*\/bench). */
function defaultGateFile(): string {
  const beside = fileURLToPath(new URL('./gate.json', import.meta.url));
  if (existsSync(beside)) return beside;
  return join(repoRoot(), 'bench', 'gate.json');
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' },
      gate: { type: 'boolean' },
      json: { type: 'string' },
      only: { type: 'string' },
      figures: { type: 'string' },
      'no-micro': { type: 'boolean' },
      'no-e2e': { type: 'boolean' },
      'gate-file': { type: 'string' },
      check: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const gateFile = values['gate-file'] ?? defaultGateFile();
  if (values.check) {
    const report = JSON.parse(await readFile(values.check, 'utf8')) as BenchReport;
    report.gate = checkGate(loadGate(gateFile), report);
    process.stdout.write(formatReport(report) + '\n');
    return report.gate.some((g) => g.status === 'fail') ? 1 : 0;
  }
  const only = values.only?.split(',').map((s) => s.trim()) as ContenderId[] | undefined;
  for (const id of only ?? []) {
    if (!CONTENDERS.some((c) => c.id === id)) throw new Error(`--only: unknown contender '${id}'`);
  }
  const figures = values.figures?.split(',').map((s) => s.trim()) as FigureGroup[] | undefined;
  for (const g of figures ?? []) {
    if (!FIGURE_GROUPS.includes(g)) throw new Error(`--figures: unknown figure group '${g}'`);
  }
  const quick = values.quick === true;
  const log = (line: string): void => void process.stderr.write(`${line}\n`);
  const started = Date.now();
  const report: BenchReport = {
    version: 1,
    startedAt: new Date(started).toISOString(),
    seconds: 0,
    mode: quick ? 'quick' : 'full',
    machine: machineInfo(),
  };
  const gate = values.gate ? loadGate(gateFile) : undefined;

  if (!values['no-micro']) {
    const micro = { timeMs: quick ? 200 : 500, demuxStreamBytes: 1024 * 1024, quick };
    log('micro: codecs');
    report.codecs = await runCodecBench(micro);
    log('micro: demux');
    try {
      report.demux = await runDemuxBench(micro);
    } catch (err) {
      report.microError = `demux not measured: ${(err as Error).message}`;
    }
    if (!quick && report.demux) {
      // The accel engineer's finer tables (bench/demux-scan.ts): the scan alone and the demuxer core.
      log('micro: demux scan (bench/demux-scan.ts)');
      const scan = await runDemuxScanBench({ timeMs: 300 });
      const push = await runDemuxPushBench({ timeMs: 300 });
      report.demuxScan = { scan, push, text: `${formatDemuxScanRows(scan)}\n\n${formatDemuxPushRows(push)}` };
    }
  }
  if (!values['no-e2e']) {
    const cfg = { ...(quick ? QUICK_E2E : FULL_E2E), ...(only ? { only } : {}), ...(figures ? { figures } : {}) };
    report.e2eConfig = cfg;
    const workDir = await makeWorkDir();
    try {
      report.e2e = await runE2e(cfg, workDir, log);
    } finally {
      await rm(workDir, { recursive: true, force: true });
    }
  }
  report.seconds = (Date.now() - started) / 1000;
  if (gate) report.gate = checkGate(gate, report);
  const jsonPath = resolve(values.json ?? 'bench-report.json');
  await writeFile(jsonPath, JSON.stringify(report, null, 2) + '\n');
  process.stdout.write(formatReport(report) + `\nJSON report: ${jsonPath}\n`);
  if (report.gate?.some((g) => g.status === 'fail')) {
    process.stdout.write(`bench gate: ${report.gate.filter((g) => g.status === 'fail').length} threshold(s) fell short\n`);
    return 1;
  }
  return 0;
}

const isMain = process.argv[1] !== undefined && fileURLToPath(import.meta.url) === resolve(process.argv[1]);
if (isMain) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(2);
    },
  );
}
