/**
 * Micro-benchmarks (tinybench), in the runner's process:
 *
 * - every codec of src/protocol, encode and decode, on messages shaped like real traffic;
 * - the device→host demuxer (src/accel): transfer streams of 16 KiB and 48 KiB transfers carrying
 *   packets with payloads from 64 B to 48 KiB for 1 and 64 connections, through the native and the
 *   TypeScript demuxer, with the ceiling measured in the same run: memcpy of every payload into its
 *   connection's ring, with the demuxer's ring sizes and positions (the copies a demuxer cannot
 *   avoid, into the same memory, so the same cache state: see `RingCopy`).
 *
 * Every case is run once and its answer checked before it is timed; figures are medians per
 * operation. The demux tasks are timed in interleaved rounds (`timeRounds`), and each ratio is the
 * median of the per-round ratios, with their spread: a burst of load from elsewhere then falls on
 * both sides of a ratio instead of on whichever task happened to be running.
 */
import { isDeepStrictEqual } from 'node:util';
import { Bench } from 'tinybench';
import { median } from './stats.js';
import { loadAddon } from '../src/accel/addon-loader.js';
import { DEMUX_EVENT_FIELDS, DemuxEvent, DemuxField } from '../src/accel/demux-core.js';
import { DEFAULT_RING_CAPACITY, type Demuxer } from '../src/accel/demuxer.js';
import { JsAccel } from '../src/accel/js-accel.js';
import { NativeAccel } from '../src/accel/native-accel.js';
import { encodeAfcPacket, type AfcPacket } from '../src/protocol/afc-packet.js';
import { AfcPacketDecoder } from '../src/protocol/afc-decoder.js';
import { ClientMessageDecoder, encodeClientMessage, type ClientMessage } from '../src/protocol/client-message.js';
import { plistRequest } from '../src/protocol/client-plist.js';
import { MuxPacketDecoder } from '../src/protocol/mux-decoder.js';
import { encodeMuxPacket, MuxProtocol } from '../src/protocol/mux-header.js';
import { decodeBinaryPlist, decodeXmlPlist, encodeBinaryPlist, encodeXmlPlist, type PlistDict } from '../src/protocol/plist.js';
import { encodePlistFrame, PlistFrameDecoder } from '../src/protocol/plist-frame.js';
import { decodeTcpHeader, encodeTcpHeader, TcpFlag, TCP_HEADER_SIZE } from '../src/protocol/tcp-header.js';
import { encodeVusbMessage, VusbDecoder, VusbMessageType } from '../src/protocol/vusb-wire.js';

/** Median time per operation and what it moved. */
export interface MicroRow {
  readonly name: string;
  /** Bytes one operation handles (its input or output), for MB/s. */
  readonly bytes: number;
  /** Median nanoseconds per operation, by task. */
  readonly ns: Record<string, number>;
}

export interface MicroOptions {
  /** tinybench time budget per task, ms. */
  timeMs: number;
  /** Bytes of transfer stream per demux case. */
  demuxStreamBytes: number;
}

/** Runs `reps` operations per timed call so that short operations stay above timer resolution. */
async function timeTasks(name: string, tasks: Record<string, () => void>, reps: number, timeMs: number): Promise<Record<string, number>> {
  const bench = new Bench({ name, time: timeMs, warmupTime: Math.min(100, timeMs / 2) });
  for (const [task, fn] of Object.entries(tasks)) {
    bench.add(task, () => {
      for (let i = 0; i < reps; i++) fn();
    });
  }
  await bench.run();
  const out: Record<string, number> = {};
  for (const task of Object.keys(tasks)) {
    const r = bench.getTask(task)?.result;
    if (r === undefined || !('latency' in r)) throw new Error(`${name}/${task}: no result`);
    out[task] = (r.latency.p50 * 1e6) / reps;
  }
  return out;
}

/** Repetitions per timed call for an operation of about `bytes`. */
function repsFor(bytes: number): number {
  return Math.max(1, Math.min(2000, Math.round(256 * 1024 / Math.max(64, bytes))));
}

function check(name: string, ok: boolean, detail: string): void {
  if (!ok) throw new Error(`${name}: ${detail}; refusing to time a wrong answer`);
}

// ─── Codecs ──────────────────────────────────────────────────────────────────────────────────

/** A device list entry and a lockdown answer: the plist shapes daemons and clients exchange. */
function samplePlist(): PlistDict {
  return {
    MessageType: 'Attached',
    DeviceID: 7,
    Properties: {
      ConnectionSpeed: 480000000,
      ConnectionType: 'USB',
      DeviceID: 7,
      LocationID: 0x10001,
      ProductID: 0x12a8,
      SerialNumber: '00008120-0123456789ABCDEF',
      USBSerialNumber: '000081200123456789ABCDEF',
    },
    Request: 'GetValue',
    Value: { ProductVersion: '17.5', BuildVersion: '21F79', Data: Buffer.alloc(64, 7), Nested: [1, 2, 3, 'four', true] },
  };
}

/** One codec: its input, what to time, and the check that the timed code gives the right answer. */
interface CodecCase {
  name: string;
  bytes: number;
  run: () => unknown;
  verify: (result: unknown) => boolean;
}

function codecCases(): CodecCase[] {
  const plist = samplePlist();
  const xml = encodeXmlPlist(plist);
  const bin = encodeBinaryPlist(plist);
  const connect: ClientMessage = { kind: 'plist', tag: 3, version: 1, plist: plistRequest('Connect', { DeviceID: 7, PortNumber: 0x7ef2 }, 'bench') };
  const connectBytes = encodeClientMessage(connect);
  const binaryConnect: ClientMessage = { kind: 'connect', tag: 4, deviceId: 7, port: 62078 };
  const binaryConnectBytes = encodeClientMessage(binaryConnect);
  const payload = Buffer.alloc(16384 - 36, 0x5a);
  const tcp = { sport: 49152, dport: 19, seq: 123456, ack: 654321, flags: TcpFlag.ACK, window: 131072 };
  const tcpBytes = encodeTcpHeader(tcp);
  const muxPacket = encodeMuxPacket(2, { protocol: MuxProtocol.TCP, txSeq: 5, rxSeq: 9 }, tcpBytes, payload);
  const frame = encodePlistFrame(plist, 'xml');
  const afc: AfcPacket = { packetNum: 42, operation: 0x0f, headerPayload: Buffer.alloc(16, 1), payload: Buffer.alloc(65536, 2) };
  const afcBytes = encodeAfcPacket(afc);
  const bulk = { type: VusbMessageType.BULK_IN, endpoint: 0x81, data: Buffer.alloc(16384, 3) } as const;
  const bulkBytes = encodeVusbMessage(bulk);
  const decodeOne = <T>(make: () => { push(b: Buffer): void; next(): T | undefined }, bytes: Buffer) => () => {
    const d = make();
    d.push(bytes);
    return d.next();
  };
  return [
    { name: 'client msg encode (plist Connect)', bytes: connectBytes.length, run: () => encodeClientMessage(connect), verify: (r) => connectBytes.equals(r as Buffer) },
    { name: 'client msg decode (plist Connect)', bytes: connectBytes.length, run: decodeOne(() => new ClientMessageDecoder(), connectBytes), verify: (r) => isDeepStrictEqual(r, connect) },
    { name: 'client msg decode (binary Connect)', bytes: binaryConnectBytes.length, run: decodeOne(() => new ClientMessageDecoder(), binaryConnectBytes), verify: (r) => isDeepStrictEqual(r, binaryConnect) },
    { name: 'tcp header encode', bytes: TCP_HEADER_SIZE, run: () => encodeTcpHeader(tcp), verify: (r) => tcpBytes.equals(r as Buffer) },
    { name: 'tcp header decode', bytes: TCP_HEADER_SIZE, run: () => decodeTcpHeader(tcpBytes), verify: (r) => isDeepStrictEqual(r, tcp) },
    { name: 'mux packet encode (16 KiB)', bytes: muxPacket.length, run: () => encodeMuxPacket(2, { protocol: MuxProtocol.TCP, txSeq: 5, rxSeq: 9 }, tcpBytes, payload), verify: (r) => muxPacket.equals(r as Buffer) },
    {
      name: 'mux packet decode (16 KiB)',
      bytes: muxPacket.length,
      run: decodeOne(() => new MuxPacketDecoder({ version: 2 }), muxPacket),
      verify: (r) => (r as { payload: Buffer } | undefined)?.payload.subarray(TCP_HEADER_SIZE).equals(payload) === true,
    },
    { name: 'xml plist encode', bytes: xml.length, run: () => encodeXmlPlist(plist), verify: (r) => xml.equals(r as Buffer) },
    { name: 'xml plist decode', bytes: xml.length, run: () => decodeXmlPlist(xml), verify: (r) => isDeepStrictEqual(r, plist) },
    { name: 'binary plist encode', bytes: bin.length, run: () => encodeBinaryPlist(plist), verify: (r) => bin.equals(r as Buffer) },
    { name: 'binary plist decode', bytes: bin.length, run: () => decodeBinaryPlist(bin), verify: (r) => isDeepStrictEqual(r, plist) },
    { name: 'plist frame decode (xml)', bytes: frame.length, run: decodeOne(() => new PlistFrameDecoder(), frame), verify: (r) => isDeepStrictEqual((r as { value: unknown }).value, plist) },
    { name: 'afc packet encode (64 KiB)', bytes: afcBytes.length, run: () => encodeAfcPacket(afc), verify: (r) => afcBytes.equals(r as Buffer) },
    {
      name: 'afc packet decode (64 KiB)',
      bytes: afcBytes.length,
      run: decodeOne(() => new AfcPacketDecoder(), afcBytes),
      verify: (r) => (r as AfcPacket | undefined)?.payload.equals(afc.payload) === true && Number((r as AfcPacket).packetNum) === 42,
    },
    { name: 'vusb bulk encode (16 KiB)', bytes: bulkBytes.length, run: () => encodeVusbMessage(bulk), verify: (r) => bulkBytes.equals(r as Buffer) },
    {
      name: 'vusb bulk decode (16 KiB)',
      bytes: bulkBytes.length,
      run: decodeOne(() => new VusbDecoder(), bulkBytes),
      verify: (r) => (r as { data?: Buffer } | undefined)?.data?.equals(bulk.data) === true,
    },
  ];
}

/** Times every codec (one task each: the codec itself, per operation). */
export async function runCodecBench(opts: MicroOptions): Promise<MicroRow[]> {
  const rows: MicroRow[] = [];
  for (const c of codecCases()) {
    check(c.name, c.verify(c.run()), 'the codec gave a different answer than the input it was built from');
    let sink: unknown;
    const ns = await timeTasks(c.name, { codec: () => { sink = c.run(); } }, repsFor(c.bytes), opts.timeMs);
    if (sink === undefined) throw new Error(`${c.name}: nothing ran`);
    rows.push({ name: c.name, bytes: c.bytes, ns });
  }
  return rows;
}

// ─── Demux ───────────────────────────────────────────────────────────────────────────────────

/** One demux case: a stream of packets of `payload` bytes over `connections`, cut in `transfer`s. */
export interface DemuxCase {
  readonly transfer: number;
  readonly payload: number;
  readonly connections: number;
}

/** The cases of the issue: 16 and 48 KiB transfers, 64 B..48 KiB payloads, 1 and 64 connections. */
export function demuxCases(quick: boolean): DemuxCase[] {
  const payloads = quick ? [64, 1024, 49116] : [64, 256, 1024, 4096, 16348, 49116];
  const out: DemuxCase[] = [];
  for (const transfer of [16384, 49152]) {
    for (const payload of payloads) for (const connections of [1, 64]) out.push({ transfer, payload, connections });
  }
  return out;
}

/** The device's ports of the bench connections (host port 62078 - i, device port 1000 + i). */
function ports(i: number): [sport: number, dport: number] {
  return [1000 + i, 40000 + i];
}

/**
 * A v2 TCP packet stream of about `total` bytes: packets of `payload` bytes to the connections in
 * turn, payload byte k of connection c being (k + c) & 0xff, cut into `transfer`-byte transfers
 * (a packet may span transfers, as a device's writes may). Returns the transfers and the payload
 * bytes each connection should receive.
 */
function buildStream(c: DemuxCase, total: number): { transfers: Buffer[]; perConnection: number[]; payloads: Placement[] } {
  const packets: Buffer[] = [];
  const payloads: Placement[] = [];
  const perConnection = new Array<number>(c.connections).fill(0);
  const seq = new Array<number>(c.connections).fill(0);
  let size = 0;
  for (let i = 0; size < total || i < c.connections; i++) {
    const conn = i % c.connections;
    const [sport, dport] = ports(conn);
    const data = Buffer.allocUnsafe(c.payload);
    for (let k = 0; k < data.length; k++) data[k] = (perConnection[conn]! + k + conn) & 0xff;
    const tcp = encodeTcpHeader({ sport, dport, seq: seq[conn]!, ack: 1, flags: TcpFlag.ACK, window: 131072 });
    const p = encodeMuxPacket(2, { protocol: MuxProtocol.TCP, txSeq: i & 0xffff, rxSeq: 0 }, tcp, data);
    payloads.push({ at: size + p.length - c.payload, length: c.payload, conn });
    packets.push(p);
    perConnection[conn]! += c.payload;
    seq[conn]! += c.payload;
    size += p.length;
  }
  const stream = Buffer.concat(packets);
  const transfers: Buffer[] = [];
  for (let at = 0; at < stream.length; at += c.transfer) transfers.push(Buffer.from(stream.subarray(at, at + c.transfer)));
  return { transfers, perConnection, payloads };
}

/** Where one packet's payload sits in the stream, and whose it is. */
interface Placement {
  /** Offset of the payload's first byte in the whole stream. */
  readonly at: number;
  readonly length: number;
  readonly conn: number;
}

/**
 * The ceiling of a demuxer: memcpy of every payload byte from the transfers into its connection's
 * ring, at the ring's write position, wrapping as the demuxer's rings do, and nothing else (no
 * header parsing, no events, no staging of a packet that spans transfers). Its rings are as large
 * as the demuxer's and written in the same order, so both sides of the ratio touch the same memory.
 * The baseline this replaced copied each transfer into one buffer of the stream's size: 1 MiB that
 * stays in cache, against the demuxer's 64 x 256 KiB rings, so the 64-connection ratio followed
 * the machine's cache pressure (0.23x-0.71x over runs) rather than the demuxer (issue 18).
 */
class RingCopy {
  readonly #rings: Buffer[] = [];
  readonly #write: number[] = [];
  /** (transfer, offset in it, length, connection) per segment: each payload cut at transfer ends. */
  readonly #segments: Int32Array;

  constructor(c: DemuxCase, payloads: readonly Placement[], capacity: number) {
    for (let i = 0; i < c.connections; i++) {
      this.#rings.push(Buffer.alloc(capacity));
      this.#write.push(0);
    }
    const seg: number[] = [];
    for (const p of payloads) {
      for (let at = p.at, left = p.length; left > 0; ) {
        const t = Math.floor(at / c.transfer);
        const off = at - t * c.transfer;
        const n = Math.min(left, c.transfer - off);
        seg.push(t, off, n, p.conn);
        at += n;
        left -= n;
      }
    }
    this.#segments = Int32Array.from(seg);
  }

  /** Copies every payload of the stream into its ring; returns the bytes copied. */
  run(transfers: readonly Buffer[]): number {
    let copied = 0;
    for (let i = 0; i < this.#segments.length; i += 4) copied += this.#copy(transfers, i);
    return copied;
  }

  /** One untimed pass from empty rings that checks every byte it copied against the stream's pattern. */
  verify(transfers: readonly Buffer[], perConnection: readonly number[], label: string): void {
    this.#write.fill(0);
    const got = new Array<number>(perConnection.length).fill(0);
    for (let i = 0; i < this.#segments.length; i += 4) {
      const conn = this.#segments[i + 3]!;
      const ring = this.#rings[conn]!;
      const start = this.#write[conn]!;
      const n = this.#copy(transfers, i);
      for (let k = 0; k < n; k++) {
        if (ring[(start + k) % ring.length] !== ((got[conn]! + k + conn) & 0xff)) check(label, false, `connection ${conn} byte ${got[conn]! + k} is wrong`);
      }
      got[conn]! += n;
    }
    check(label, isDeepStrictEqual(got, perConnection), `connections got ${got.join(',')} bytes, expected ${perConnection.join(',')}`);
  }

  #copy(transfers: readonly Buffer[], i: number): number {
    const seg = this.#segments;
    const src = transfers[seg[i]!]!;
    const off = seg[i + 1]!;
    const n = seg[i + 2]!;
    const conn = seg[i + 3]!;
    const ring = this.#rings[conn]!;
    const at = this.#write[conn]! % ring.length;
    const first = Math.min(n, ring.length - at);
    src.copy(ring, at, off, off + first);
    if (first < n) src.copy(ring, 0, off + first, off + n);
    this.#write[conn] = at + n;
    return n;
  }
}

/** A demuxer with every connection of the case open, and how to run the stream through it. */
class DemuxRig {
  readonly d: Demuxer;
  readonly slots: number[] = [];

  constructor(d: Demuxer, connections: number) {
    this.d = d;
    for (let i = 0; i < connections; i++) this.slots.push(d.openConnection(...ports(i), DEFAULT_RING_CAPACITY));
  }

  /** Pushes every transfer and consumes what each connection got, as the engine would relay it. */
  run(transfers: readonly Buffer[]): number {
    let delivered = 0;
    const d = this.d;
    for (let t = 0; t < transfers.length; t++) {
      const n = d.push(transfers[t]!);
      const ev = d.events;
      for (let i = 0; i < n; i++) {
        const r = i * DEMUX_EVENT_FIELDS;
        if (ev[r + DemuxField.KIND] === DemuxEvent.TCP_DATA) {
          const slot = ev[r + DemuxField.SLOT_OR_PROTOCOL]!;
          const len = ev[r + DemuxField.PAYLOAD_LENGTH]!;
          d.consume(slot, len);
          delivered += len;
        }
      }
    }
    return delivered;
  }

  /** One untimed pass that checks every byte each connection received. */
  verify(transfers: readonly Buffer[], perConnection: readonly number[], label: string): void {
    const got = new Array<number>(perConnection.length).fill(0);
    const d = this.d;
    for (const t of transfers) {
      const n = d.push(t);
      for (let i = 0; i < n; i++) {
        const r = i * DEMUX_EVENT_FIELDS;
        const kind = d.events[r + DemuxField.KIND];
        check(label, kind !== DemuxEvent.TCP_OVERFLOW, 'a connection overflowed its ring');
        if (kind !== DemuxEvent.TCP_DATA) continue;
        const slot = d.events[r + DemuxField.SLOT_OR_PROTOCOL]!;
        const conn = this.slots.indexOf(slot);
        for (const view of d.readable(slot)) {
          for (let k = 0; k < view.length; k++) {
            if (view[k] !== ((got[conn]! + k + conn) & 0xff)) check(label, false, `connection ${conn} byte ${got[conn]! + k} is wrong`);
          }
          got[conn]! += view.length;
          d.consume(slot, view.length);
        }
      }
    }
    check(label, isDeepStrictEqual(got, perConnection), `connections got ${got.join(',')} bytes, expected ${perConnection.join(',')}`);
  }
}

/** One demux row: per stream, native, TypeScript and memcpy, with the stream's size. */
export interface DemuxRow extends MicroRow {
  readonly demuxCase: DemuxCase;
  /**
   * Per task, the median nanoseconds per pass of each interleaved round (`ns` holds their medians).
   * A ratio is taken round by round, then its median (`roundRatios`). Absent from older reports.
   */
  readonly rounds?: Record<string, number[]>;
}

/** `a÷b` of each round of a row (b's time over a's: how many times faster a is). */
export function roundRatios(row: DemuxRow, a: string, b: string): number[] {
  const ra = row.rounds?.[a];
  const rb = row.rounds?.[b];
  if (!ra || !rb || ra.length !== rb.length || ra.length === 0) return [row.ns[b]! / row.ns[a]!];
  return ra.map((ns, i) => rb[i]! / ns);
}

/**
 * Times `tasks` in `rounds` interleaved rounds of about `timeMs / rounds` each per task, the order
 * rotated every round, so that a burst of load from elsewhere on the machine lands on every task
 * of a round alike. Returns each task's median ns per call, per round.
 */
async function timeRounds(name: string, tasks: Record<string, () => void>, rounds: number, timeMs: number): Promise<Record<string, number[]>> {
  const names = Object.keys(tasks);
  const out: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
  for (let r = 0; r < rounds; r++) {
    const bench = new Bench({ name: `${name} round ${r + 1}`, time: timeMs / rounds, iterations: 8, warmup: r === 0, warmupTime: Math.min(100, timeMs / 2) });
    for (let k = 0; k < names.length; k++) {
      const task = names[(k + r) % names.length]!;
      bench.add(task, tasks[task]!);
    }
    await bench.run();
    for (const task of names) {
      const res = bench.getTask(task)?.result;
      if (res === undefined || !('latency' in res)) throw new Error(`${name}/${task}: no result`);
      out[task]!.push(res.latency.p50 * 1e6);
    }
  }
  return out;
}

/** Interleaved rounds per demux case. */
const DEMUX_ROUNDS = 9;

/** Runs the demux matrix; throws when the addon is missing (nothing to compare). */
export async function runDemuxBench(opts: MicroOptions & { quick: boolean }): Promise<DemuxRow[]> {
  const load = loadAddon();
  if (!load.ok) throw new Error(`the native addon did not load: ${load.error.message}`);
  const nativeAccel = new NativeAccel(load.binding);
  const jsAccel = new JsAccel();
  const rows: DemuxRow[] = [];
  for (const c of demuxCases(opts.quick)) {
    const { transfers, perConnection, payloads } = buildStream(c, opts.demuxStreamBytes);
    const bytes = transfers.reduce((n, t) => n + t.length, 0);
    const payloadTotal = perConnection.reduce((a, b) => a + b, 0);
    const label = `demux ${c.transfer >> 10} KiB transfers, ${c.payload} B payloads, ${c.connections} conn`;
    const native = new DemuxRig(nativeAccel.createDemuxer({ version: 2, maxConnections: 256 }), c.connections);
    const js = new DemuxRig(jsAccel.createDemuxer({ version: 2, maxConnections: 256 }), c.connections);
    const copy = new RingCopy(c, payloads, DEFAULT_RING_CAPACITY);
    native.verify(transfers, perConnection, `${label} (native)`);
    js.verify(transfers, perConnection, `${label} (ts)`);
    copy.verify(transfers, perConnection, `${label} (memcpy)`);
    check(label, native.run(transfers) === payloadTotal && js.run(transfers) === payloadTotal && copy.run(transfers) === payloadTotal, 'a timed pass delivered a different byte count');
    let sink = 0;
    const rounds = await timeRounds(
      label,
      {
        native: () => {
          sink += native.run(transfers);
        },
        ts: () => {
          sink += js.run(transfers);
        },
        memcpy: () => {
          sink += copy.run(transfers);
        },
      },
      DEMUX_ROUNDS,
      opts.timeMs,
    );
    if (sink === 0) throw new Error(`${label}: nothing ran`);
    const ns = Object.fromEntries(Object.entries(rounds).map(([task, v]) => [task, median(v)]));
    rows.push({ name: label, bytes, ns, demuxCase: c, rounds });
  }
  return rows;
}
