/**
 * Micro-benchmark of the first piece of the demuxer: the addon's scan, its TypeScript twin, and a
 * memcpy (Buffer.copy) of the same bytes, in one run, on IN transfers shaped like real traffic.
 * The results of both scans are checked against each other before anything is timed.
 *
 *   node dist/bench/demux-scan.js [--time MS]
 *
 * A second table times the demuxer core (issue 6): one IN transfer pushed through the addon's
 * Demuxer, its TypeScript twin, and the protocol layer's MuxPacketDecoder with decodeTcpHeader (the
 * path a pure-JS engine would take), payloads consumed after each push.
 *
 * Each timed call repeats the operation `reps` times so that sub-microsecond work stays well above
 * the timer's resolution; figures are per operation, medians, with ratios (docs/ARCHITECTURE.md,
 * conventions §10). The crossover where the addon starts paying for its call (native-accel.ts
 * NATIVE_SCAN_MIN_PACKETS) is read off the small inputs here.
 */
import { parseArgs } from 'node:util';
import { Bench } from 'tinybench';
import { SCAN_RECORD_FIELDS } from '../src/accel/accel.js';
import { loadAddon } from '../src/accel/addon-loader.js';
import { scanMuxPacketsJs } from '../src/accel/mux-scan.js';
import type { NativeBinding } from '../src/accel/native-binding.js';
import { DEMUX_EVENT_FIELDS, DemuxField } from '../src/accel/demux-core.js';
import type { Demuxer } from '../src/accel/demuxer.js';
import { JsAccel } from '../src/accel/js-accel.js';
import { NativeAccel } from '../src/accel/native-accel.js';
import { MuxPacketDecoder } from '../src/protocol/mux-decoder.js';
import { decodeTcpHeader } from '../src/protocol/tcp-header.js';

interface Input {
  readonly name: string;
  readonly buf: Buffer;
  readonly reps: number;
}

/** One row of the result table: per-operation medians in nanoseconds. */
export interface DemuxScanRow {
  readonly input: string;
  readonly bytes: number;
  readonly packets: number;
  readonly nativeNs: number;
  readonly jsNs: number;
  readonly memcpyNs: number;
}

/** A v2 TCP packet of `length` bytes in total. */
function tcpPacket(length: number, sport: number): Buffer {
  const p = Buffer.alloc(length, 0xa5);
  p.writeUInt32BE(6, 0);
  p.writeUInt32BE(length, 4);
  p.writeUInt32BE(0xfeedface, 8);
  p.writeUInt16BE(sport, 16);
  p.writeUInt16BE(62078, 18);
  return p;
}

function packetsFilling(total: number, packetLength: number): Buffer {
  const parts: Buffer[] = [];
  for (let used = 0; used + packetLength <= total; used += packetLength) parts.push(tcpPacket(packetLength, parts.length % 7));
  return Buffer.concat(parts);
}

function inputs(): Input[] {
  return [
    // A pure ACK from the device: one 36-byte packet per transfer.
    { name: '1 ack (36 B)', buf: tcpPacket(36, 1), reps: 2000 },
    { name: '4 acks (144 B)', buf: packetsFilling(144, 36), reps: 2000 },
    { name: '16 small (1 KiB)', buf: packetsFilling(1024, 64), reps: 1000 },
    // Bulk data: one full 16 KiB transfer holding one packet.
    { name: '1 bulk (16 KiB)', buf: tcpPacket(16384, 1), reps: 2000 },
    // Interactive traffic: a 16 KiB transfer packed with 100-byte packets (163 of them).
    { name: '163 small (16 KiB)', buf: packetsFilling(16384, 100), reps: 50 },
    // Worst case for the scan: minimum-size packets, 455 in 16 KiB.
    { name: '455 acks (16 KiB)', buf: packetsFilling(16384, 36), reps: 20 },
    // A 64 KiB batch of 1500-byte packets, as a reassembling reader may hand over.
    { name: '43 x 1500 B (64 KiB)', buf: packetsFilling(65536, 1500), reps: 100 },
  ];
}

function check(binding: NativeBinding, input: Input, out: Uint32Array): number {
  const outJs = new Uint32Array(out.length);
  const n = binding.scanMuxPackets(input.buf, 2, out);
  const nJs = scanMuxPacketsJs(input.buf, 2, outJs);
  if (n !== nJs || n <= 0 || out.some((v, i) => v !== outJs[i])) {
    throw new Error(`${input.name}: native found ${n}, TypeScript ${nJs}; refusing to time differing results`);
  }
  const end = out[(n - 1) * SCAN_RECORD_FIELDS]! + out[(n - 1) * SCAN_RECORD_FIELDS + 1]!;
  if (end !== input.buf.length) throw new Error(`${input.name}: scan ended at ${end} of ${input.buf.length}`);
  return n;
}

/** Runs the comparison; `timeMs` is tinybench's time budget per task. */
export async function runDemuxScanBench(options: { timeMs?: number } = {}): Promise<DemuxScanRow[]> {
  const load = loadAddon();
  if (!load.ok) throw new Error(`the native addon did not load, nothing to compare: ${load.error.message}`);
  const binding = load.binding;
  const rows: DemuxScanRow[] = [];
  for (const input of inputs()) {
    const out = new Uint32Array(1024 * SCAN_RECORD_FIELDS);
    const packets = check(binding, input, out);
    const target = Buffer.allocUnsafe(input.buf.length);
    const { buf, reps } = input;
    let sink = 0;
    const bench = new Bench({ name: input.name, time: options.timeMs ?? 300, warmupTime: 50 });
    bench
      .add('native', () => {
        for (let i = 0; i < reps; i++) sink += binding.scanMuxPackets(buf, 2, out);
      })
      .add('js', () => {
        for (let i = 0; i < reps; i++) sink += scanMuxPacketsJs(buf, 2, out);
      })
      .add('memcpy', () => {
        for (let i = 0; i < reps; i++) sink += buf.copy(target, 0);
      });
    await bench.run();
    if (sink === 0) throw new Error('nothing ran');
    const perOp = (name: string): number => {
      const r = bench.getTask(name)?.result;
      if (r === undefined || !('latency' in r)) throw new Error(`${input.name}/${name}: no result (${r?.state})`);
      return (r.latency.p50 * 1e6) / reps;
    };
    rows.push({ input: input.name, bytes: buf.length, packets, nativeNs: perOp('native'), jsNs: perOp('js'), memcpyNs: perOp('memcpy') });
  }
  return rows;
}

/** The table printed by the command line: per-op medians and ratios. */
export function formatDemuxScanRows(rows: readonly DemuxScanRow[]): string {
  const f = (n: number): string => (n < 100 ? n.toFixed(1) : n.toFixed(0));
  const lines = ['input                   packets  native ns   ts ns  memcpy ns  ts/native  native/memcpy'];
  for (const r of rows) {
    lines.push(
      `${r.input.padEnd(22)} ${String(r.packets).padStart(8)} ${f(r.nativeNs).padStart(10)} ${f(r.jsNs).padStart(7)} ${f(r.memcpyNs).padStart(10)} ${(r.jsNs / r.nativeNs).toFixed(2).padStart(10)} ${(r.nativeNs / r.memcpyNs).toFixed(2).padStart(14)}`,
    );
  }
  return lines.join('\n');
}

/** One row of the demuxer table: per-push medians in nanoseconds. */
export interface DemuxPushRow {
  readonly input: string;
  readonly transfers: number;
  readonly nativeNs: number;
  readonly jsNs: number;
  readonly decoderNs: number;
  readonly memcpyNs: number;
}

/** Pushes `transfers` through a demuxer and consumes every payload; returns bytes delivered. */
function pushAll(d: Demuxer, slot: number, transfers: readonly Buffer[]): number {
  let delivered = 0;
  for (const t of transfers) {
    const n = d.push(t);
    for (let i = 0; i < n; i++) delivered += d.events[i * DEMUX_EVENT_FIELDS + DemuxField.PAYLOAD_LENGTH]!;
  }
  d.consume(slot, d.unread(slot));
  return delivered;
}

function decodeAll(decoder: MuxPacketDecoder, transfers: readonly Buffer[]): number {
  let delivered = 0;
  for (const t of transfers) {
    decoder.push(t);
    for (let p = decoder.next(); p !== undefined; p = decoder.next()) {
      decodeTcpHeader(p.payload);
      delivered += p.payload.length - 20;
    }
  }
  return delivered;
}

/** Runs the demuxer comparison. */
export async function runDemuxPushBench(options: { timeMs?: number } = {}): Promise<DemuxPushRow[]> {
  const load = loadAddon();
  if (!load.ok) throw new Error(`the native addon did not load, nothing to compare: ${load.error.message}`);
  const split = (buf: Buffer, size: number): Buffer[] => {
    const parts: Buffer[] = [];
    for (let at = 0; at < buf.length; at += size) parts.push(buf.subarray(at, at + size));
    return parts;
  };
  const cases: { name: string; transfers: Buffer[]; reps: number }[] = [
    { name: '1 x 16 KiB packet', transfers: [tcpPacket(16384, 1)], reps: 200 },
    { name: '163 x 100 B packets', transfers: [packetsFilling(16384, 100)], reps: 20 },
    { name: '48 KiB over 3 transfers', transfers: split(tcpPacket(49152, 1), 16384), reps: 50 },
  ];
  const rows: DemuxPushRow[] = [];
  for (const c of cases) {
    // Every packet goes to one of the ports 0..6 → 62078 (packetsFilling), one connection each.
    const make = (accel: NativeAccel | JsAccel): { d: Demuxer; slot: number } => {
      const d = accel.createDemuxer({ version: 2 });
      let slot = 0;
      for (let sport = 0; sport < 7; sport++) slot = d.openConnection(sport, 62078, 1 << 20);
      return { d, slot };
    };
    const native = make(new NativeAccel(load.binding));
    const js = make(new JsAccel());
    const decoder = new MuxPacketDecoder({ version: 2 });
    const drain = (x: { d: Demuxer }): void => {
      for (let s = 0; s < 7; s++) x.d.consume(s, x.d.unread(s));
    };
    const expected = c.transfers.reduce((n, t) => n + t.length, 0);
    const delivered = [pushAll(native.d, native.slot, c.transfers), pushAll(js.d, js.slot, c.transfers), decodeAll(decoder, c.transfers)];
    drain(native);
    drain(js);
    const packets = c.name.startsWith('163') ? 163 : 1;
    if (delivered.some((n) => n !== expected - packets * 36)) throw new Error(`${c.name}: delivered ${delivered.join('/')} payload bytes`);
    const targets = c.transfers.map((t) => Buffer.allocUnsafe(t.length));
    let sink = 0;
    const { reps, transfers } = c;
    const bench = new Bench({ name: c.name, time: options.timeMs ?? 300, warmupTime: 50 });
    bench
      .add('native', () => {
        for (let i = 0; i < reps; i++) {
          sink += pushAll(native.d, native.slot, transfers);
          drain(native);
        }
      })
      .add('js', () => {
        for (let i = 0; i < reps; i++) {
          sink += pushAll(js.d, js.slot, transfers);
          drain(js);
        }
      })
      .add('decoder', () => {
        for (let i = 0; i < reps; i++) sink += decodeAll(decoder, transfers);
      })
      .add('memcpy', () => {
        for (let i = 0; i < reps; i++) for (let k = 0; k < transfers.length; k++) sink += transfers[k]!.copy(targets[k]!, 0);
      });
    await bench.run();
    if (sink === 0) throw new Error('nothing ran');
    const perOp = (name: string): number => {
      const r = bench.getTask(name)?.result;
      if (r === undefined || !('latency' in r)) throw new Error(`${c.name}/${name}: no result (${r?.state})`);
      return (r.latency.p50 * 1e6) / reps;
    };
    rows.push({ input: c.name, transfers: transfers.length, nativeNs: perOp('native'), jsNs: perOp('js'), decoderNs: perOp('decoder'), memcpyNs: perOp('memcpy') });
  }
  return rows;
}

/** The demuxer table: per-input medians and ratios. */
export function formatDemuxPushRows(rows: readonly DemuxPushRow[]): string {
  const f = (n: number): string => (n < 100 ? n.toFixed(1) : n.toFixed(0));
  const lines = ['input                    native ns   ts ns  decoder ns  memcpy ns  ts/native  decoder/native  native/memcpy'];
  for (const r of rows) {
    lines.push(
      `${r.input.padEnd(24)} ${f(r.nativeNs).padStart(9)} ${f(r.jsNs).padStart(7)} ${f(r.decoderNs).padStart(11)} ${f(r.memcpyNs).padStart(10)} ${(r.jsNs / r.nativeNs).toFixed(2).padStart(10)} ${(r.decoderNs / r.nativeNs).toFixed(2).padStart(15)} ${(r.nativeNs / r.memcpyNs).toFixed(2).padStart(14)}`,
    );
  }
  return lines.join('\n');
}

const isMain = process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].split('/').pop() ?? '');
if (isMain) {
  const { values } = parseArgs({ options: { time: { type: 'string', default: '300' } } });
  const rows = await runDemuxScanBench({ timeMs: Number(values.time) });
  process.stdout.write(`demux scan, per operation (median), node ${process.version}\n${formatDemuxScanRows(rows)}\n`);
  const push = await runDemuxPushBench({ timeMs: Number(values.time) });
  process.stdout.write(`\ndemuxer, per input (median), payloads consumed after each push\n${formatDemuxPushRows(push)}\n`);
}
