/**
 * The bench report: one JSON document (machine, configuration, every run of every figure) and the
 * table printed from it, where each figure of each contender stands next to its ratio to usbmuxd
 * and to the two ceilings measured in the same run.
 */
import { cpus, platform, release, totalmem } from 'node:os';
import { CONTENDERS, type ContenderId } from './contenders.js';
import { FIGURES, type ContenderResult, type E2eConfig, type FigureId } from './e2e.js';
import type { DemuxRow, MicroRow } from './micro.js';
import { spread, type Summary } from './stats.js';

export interface GateOutcome {
  id: string;
  description: string;
  /** The measured value (a ratio, or MiB for absolute limits); undefined when it could not be had. */
  value?: number;
  limit: string;
  status: 'pass' | 'fail' | 'skip' | 'miss';
  why: string;
  detail?: string;
}

export interface BenchReport {
  version: 1;
  startedAt: string;
  seconds: number;
  mode: 'quick' | 'full';
  machine: { node: string; platform: string; kernel: string; cpu: string; cores: number; memoryGiB: number };
  e2eConfig?: E2eConfig;
  codecs?: MicroRow[];
  demux?: DemuxRow[];
  microError?: string;
  /** bench/demux-scan.ts's tables (full runs): per-operation rows and their printed form. */
  demuxScan?: { scan: unknown[]; push: unknown[]; text: string };
  e2e?: ContenderResult[];
  gate?: GateOutcome[];
}

export function machineInfo(): BenchReport['machine'] {
  const c = cpus();
  return {
    node: process.version,
    platform: platform(),
    kernel: release(),
    cpu: c[0]?.model.trim() ?? 'unknown',
    cores: c.length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
  };
}

/** The median of figure `id` for contender `who`, when measured. */
export function figureValue(report: BenchReport, who: ContenderId, id: FigureId): number | undefined {
  const c = report.e2e?.find((r) => r.id === who);
  const v = c?.figures[id]?.summary?.median;
  return v !== undefined && Number.isFinite(v) ? v : undefined;
}

/** Every measured run of a contender's figure, in round order (the warm-up is not among them). */
export function figureRuns(report: BenchReport, who: ContenderId, id: FigureId): readonly number[] | undefined {
  return report.e2e?.find((r) => r.id === who)?.figures[id]?.summary?.runs;
}

function fmt(n: number | undefined, digits?: number): string {
  if (n === undefined || !Number.isFinite(n)) return '—';
  const d = digits ?? (Math.abs(n) >= 100 ? 0 : Math.abs(n) >= 10 ? 1 : 2);
  return n.toFixed(d);
}

function ratio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || b === 0) return '—';
  return `${(a / b).toFixed(2)}×`;
}

function spreadText(s: Summary | undefined): string {
  if (!s || s.runs.length < 2) return '';
  return `±${Math.round((spread(s) * 100) / 2)}% (${fmt(s.min)}–${fmt(s.max)})`;
}

function pad(text: string, width: number, right = false): string {
  return right ? text.padStart(width) : text.padEnd(width);
}

/** The end-to-end table: one block per figure, one line per contender. */
export function formatE2e(report: BenchReport): string {
  const rows = report.e2e ?? [];
  const lines: string[] = [];
  lines.push(
    `${pad('figure / contender', 34)}${pad('median', 10, true)}  ${pad('spread over runs', 24)}${pad('warm-up', 9, true)}${pad('÷ usbmuxd', 11, true)}${pad('÷ socat', 9, true)}${pad('÷ direct', 10, true)}`,
  );
  const told = new Set<ContenderId>();
  for (const [id, f] of Object.entries(FIGURES) as [FigureId, (typeof FIGURES)[FigureId]][]) {
    lines.push(`${f.title} (${f.unit}, ${f.better} is better)`);
    for (const spec of CONTENDERS) {
      const r = rows.find((x) => x.id === spec.id);
      if (!r) continue;
      if (r.unavailable) {
        // The whole reason once, under the first figure; a reminder under the others.
        lines.push(`  ${pad(spec.label, 32)}${told.has(spec.id) ? `${r.unavailable.split(':')[0]} (see above)` : r.unavailable}`);
        told.add(spec.id);
        continue;
      }
      const fr = r.figures[id];
      if (!fr?.summary) {
        if (spec.kind === 'ceiling' && fr?.missing?.startsWith('not measured')) continue;
        lines.push(`  ${pad(spec.label, 32)}${fr?.missing ?? 'not measured'}`);
        continue;
      }
      const v = fr.summary.median;
      lines.push(
        `  ${pad(spec.label, 32)}${pad(fmt(v), 10, true)}  ${pad(spreadText(fr.summary), 24)}${pad(fmt(fr.warmup), 9, true)}` +
          `${pad(ratio(v, figureValue(report, 'usbmuxd', id)), 11, true)}${pad(ratio(v, figureValue(report, 'socat', id)), 9, true)}${pad(ratio(v, figureValue(report, 'direct', id)), 10, true)}`,
      );
    }
  }
  return lines.join('\n');
}

/** MB/s of an operation of `bytes` taking `ns`. */
function rate(bytes: number, ns: number | undefined): string {
  return ns === undefined ? '—' : fmt((bytes / ns) * 1e3);
}

export function formatCodecs(rows: readonly MicroRow[]): string {
  const lines = [`${pad('codec', 38)}${pad('bytes', 8, true)}${pad('ns/op', 10, true)}${pad('MB/s', 9, true)}`];
  for (const r of rows) lines.push(`${pad(r.name, 38)}${pad(String(r.bytes), 8, true)}${pad(fmt(r.ns.codec), 10, true)}${pad(rate(r.bytes, r.ns.codec), 9, true)}`);
  return lines.join('\n');
}

export function formatDemux(rows: readonly DemuxRow[]): string {
  const lines = [
    `${pad('transfer  payload  conns', 26)}${pad('native MB/s', 12, true)}${pad('TS MB/s', 10, true)}${pad('memcpy MB/s', 13, true)}${pad('native÷TS', 11, true)}${pad('native÷memcpy', 15, true)}`,
  ];
  for (const r of rows) {
    const c = r.demuxCase;
    const head = `${pad(`${c.transfer >> 10} KiB`, 10)}${pad(`${c.payload} B`, 9)}${pad(String(c.connections), 7)}`;
    lines.push(
      `${head}${pad(rate(r.bytes, r.ns.native), 12, true)}${pad(rate(r.bytes, r.ns.ts), 10, true)}${pad(rate(r.bytes, r.ns.memcpy), 13, true)}` +
        `${pad(ratio(r.ns.ts, r.ns.native), 11, true)}${pad(ratio(r.ns.memcpy, r.ns.native), 15, true)}`,
    );
  }
  return lines.join('\n');
}

export function formatGate(outcomes: readonly GateOutcome[]): string {
  const lines = [`${pad('threshold', 44)}${pad('value', 9, true)}  ${pad('limit', 10)}result`];
  for (const o of outcomes) {
    lines.push(`${pad(o.id, 44)}${pad(fmt(o.value), 9, true)}  ${pad(o.limit, 10)}${o.status.toUpperCase()}${o.detail ? ` (${o.detail})` : ''}`);
  }
  return lines.join('\n');
}

/** The whole printed report. */
export function formatReport(report: BenchReport): string {
  const m = report.machine;
  const out: string[] = [
    `muxwire bench (${report.mode}) — ${report.startedAt}, ${Math.round(report.seconds)} s`,
    `node ${m.node}, ${m.platform} ${m.kernel}, ${m.cores} × ${m.cpu}, ${m.memoryGiB} GiB`,
    '',
  ];
  if (report.e2e) {
    out.push('END TO END (each contender in fresh processes, same simulated device; medians of the measured runs, warm-up excluded)');
    out.push(formatE2e(report));
    for (const r of report.e2e) {
      const sizes = (['download', 'upload', 'duplex', 'duplex8', 'concurrent', 'afcPullMuxwire'] as const)
        .map((id) => (r.figures[id]?.bytesPerRun ? `${id} ${Math.round(r.figures[id]!.bytesPerRun! / 2 ** 20)} MiB` : undefined))
        .filter((x) => x !== undefined);
      const notes = [...r.notes, ...(sizes.length ? [`per run: ${sizes.join(', ')}`] : [])];
      if (notes.length) out.push(`  ${r.label}: ${notes.join('; ')}`);
    }
    out.push('');
  }
  if (report.codecs) out.push('CODECS (median per operation)', formatCodecs(report.codecs), '');
  if (report.demux) out.push('DEMUX (transfer streams through the device→host demuxer; memcpy of the same bytes as the ceiling)', formatDemux(report.demux), '');
  if (report.demuxScan) out.push('DEMUX SCAN AND CORE (bench/demux-scan.ts, ns per operation)', report.demuxScan.text, '');
  if (report.microError) out.push(`micro-benchmarks: ${report.microError}`, '');
  if (report.gate) out.push('GATE (bench/gate.json)', formatGate(report.gate), '');
  return out.join('\n');
}
