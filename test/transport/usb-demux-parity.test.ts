/**
 * The USB IN pipe cut at every awkward boundary, fed to both demuxers (the addon's and its
 * TypeScript twin, src/accel/): each must give the same events after every transfer and exactly
 * the bytes each connection was sent. The cuts are those a bulk pipeline produces or must survive:
 * 1 byte, the mux and TCP header sizes ± 1, usbmuxd's 16384-byte transfers ± 1, 49152-byte
 * transfers (usbmuxd2's), every packet boundary ± 1, and seeded random sizes.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DEMUX_EVENT_FIELDS } from '../../src/accel/demux-core.js';
import type { Demuxer } from '../../src/accel/demuxer.js';
import { JsAccel } from '../../src/accel/js-accel.js';
import { NativeAccel } from '../../src/accel/native-accel.js';
import { encodeMuxPacket, MuxProtocol } from '../../src/protocol/mux-header.js';
import { encodeTcpHeader, TcpFlag } from '../../src/protocol/tcp-header.js';
import { seededRandom, testSeed } from '../accel/mux-bytes.js';
import { nativeSkipReason, nativeBinding } from '../accel/native-under-test.js';

/** Device port → host port of the connections the stream carries. */
const CONNECTIONS = [[7, 0x1001], [19, 0x1002], [62078, 0x1003]] as const;
const V2_HEADER = 16;
const TCP = 20;
/** Whole-packet sizes that land on the boundaries a 16 KiB / 48 KiB pipeline has. */
const AWKWARD_PACKETS = [V2_HEADER + TCP, V2_HEADER + TCP + 1, 16383, 16384, 16385, 32768, 49151, 49152];

interface Stream {
  bytes: Buffer;
  /** Offset of every packet's start. */
  starts: number[];
  /** Per connection index, the payload bytes in order. */
  expected: Buffer[];
}

function makeStream(seed: number): Stream {
  const rand = seededRandom(seed);
  const parts: Buffer[] = [];
  const starts: number[] = [];
  const expected: Buffer[][] = CONNECTIONS.map(() => []);
  const seq = CONNECTIONS.map(() => 0);
  let at = 0;
  const add = (packet: Buffer): void => {
    starts.push(at);
    parts.push(packet);
    at += packet.length;
  };
  const sizes = [...AWKWARD_PACKETS, ...AWKWARD_PACKETS.map((n) => n), ...Array.from({ length: 40 }, () => V2_HEADER + TCP + Math.floor(rand() * (rand() < 0.7 ? 600 : 49116)))];
  // Shuffle, so every size follows every other at some point.
  for (let i = sizes.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [sizes[i], sizes[j]] = [sizes[j]!, sizes[i]!];
  }
  for (const [k, size] of sizes.entries()) {
    if (k % 9 === 4) add(encodeMuxPacket(2, { protocol: MuxProtocol.CONTROL, txSeq: k }, Buffer.from('\x07device says hello')));
    const c = Math.floor(rand() * CONNECTIONS.length);
    const [sport, dport] = CONNECTIONS[c]!;
    const payload = Buffer.alloc(size - V2_HEADER - TCP);
    for (let i = 0; i < payload.length; i++) payload[i] = (seq[c]! + i * 7 + c) & 0xff;
    const header = encodeTcpHeader({ sport, dport, seq: seq[c]!, ack: 0, flags: TcpFlag.ACK, window: 131072 });
    add(encodeMuxPacket(2, { protocol: MuxProtocol.TCP, txSeq: k, rxSeq: k }, header, payload));
    seq[c] = (seq[c]! + payload.length) >>> 0;
    expected[c]!.push(payload);
  }
  return { bytes: Buffer.concat(parts), starts, expected: expected.map((e) => Buffer.concat(e)) };
}

/** Transfer sizes: a fixed size, or cuts at given offsets. */
function cutFixed(total: number, size: number): number[] {
  const cuts: number[] = [];
  for (let at = size; at < total; at += size) cuts.push(at);
  return cuts;
}

function cutsAround(stream: Stream, delta: number, within = 0): number[] {
  return stream.starts.map((s) => s + within + delta).filter((c) => c > 0 && c < stream.bytes.length);
}

function chunks(bytes: Buffer, cuts: number[]): Buffer[] {
  const sorted = [...new Set(cuts)].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const c of sorted) {
    out.push(bytes.subarray(from, c));
    from = c;
  }
  out.push(bytes.subarray(from));
  return out;
}

/** Runs one demuxer over the transfers; returns every push's events and each connection's bytes. */
function run(d: Demuxer, transfers: Buffer[], after?: (i: number, events: number[]) => void): Buffer[] {
  const slots = CONNECTIONS.map(([sport, dport]) => d.openConnection(sport, dport, 1 << 17));
  const got: Buffer[][] = CONNECTIONS.map(() => []);
  transfers.forEach((t, i) => {
    // Each transfer in memory of its own, as a completed USB transfer is.
    const count = d.push(Buffer.from(t));
    after?.(i, [...d.events.subarray(0, count * DEMUX_EVENT_FIELDS)]);
    slots.forEach((slot, c) => {
      for (const view of d.readable(slot)) got[c]!.push(Buffer.from(view));
      d.consume(slot, d.unread(slot));
    });
  });
  return got.map((g) => Buffer.concat(g));
}

describe('both demuxers read USB transfers cut at every awkward boundary', () => {
  const seed = testSeed();
  const stream = makeStream(seed);
  const policies: Array<[string, number[]]> = [
    ['1-byte transfers', cutFixed(stream.bytes.length, 1)],
    ['16383-byte transfers', cutFixed(stream.bytes.length, 16383)],
    ['16384-byte transfers (usbmuxd)', cutFixed(stream.bytes.length, 16384)],
    ['16385-byte transfers', cutFixed(stream.bytes.length, 16385)],
    ['49152-byte transfers (usbmuxd2)', cutFixed(stream.bytes.length, 49152)],
    ['cuts 1 byte into every packet', cutsAround(stream, 1)],
    ['cuts 1 byte before every packet ends', cutsAround(stream, -1)],
    ['cuts at the mux header size - 1', cutsAround(stream, -1, V2_HEADER)],
    ['cuts right after the mux header', cutsAround(stream, 0, V2_HEADER)],
    ['cuts at the mux header size + 1', cutsAround(stream, 1, V2_HEADER)],
    ['cuts inside the TCP header', cutsAround(stream, 7, V2_HEADER)],
    ['cuts right after the TCP header', cutsAround(stream, 0, V2_HEADER + TCP)],
    ['seeded random transfer sizes', (() => {
      const rand = seededRandom(seed ^ 0x5a5a);
      const cuts: number[] = [];
      for (let at = 0; ;) {
        at += 1 + Math.floor(rand() * (rand() < 0.5 ? 64 : 20000));
        if (at >= stream.bytes.length) return cuts;
        cuts.push(at);
      }
    })()],
  ];

  for (const [name, cuts] of policies) {
    test(`${name}: every connection gets exactly its bytes, and the two agree event for event`, (t) => {
      t.diagnostic(`seed ${seed} (replay with MUXWIRE_TEST_SEED=${seed})`);
      const transfers = chunks(stream.bytes, cuts);
      const jsEvents: number[][] = [];
      const js = run(new JsAccel().createDemuxer({ version: 2 }), transfers, (i, e) => (jsEvents[i] = e));
      js.forEach((bytes, c) => assert.ok(bytes.equals(stream.expected[c]!), `TypeScript demuxer, connection ${c}: ${bytes.length} of ${stream.expected[c]!.length} bytes, or wrong ones`));
      if (nativeSkipReason !== undefined && process.env.MUXWIRE_NO_NATIVE === '1') return;
      const binding = nativeBinding(t);
      if (!binding) return;
      const native = run(new NativeAccel(binding, { nativeMinPackets: 0 }).createDemuxer({ version: 2 }), transfers, (i, e) => {
        assert.deepEqual(e, jsEvents[i], `events of transfer ${i}`);
      });
      native.forEach((bytes, c) => assert.ok(bytes.equals(js[c]!), `native demuxer, connection ${c}`));
    });
  }
});
