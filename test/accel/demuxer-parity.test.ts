/**
 * The addon's demuxer and its TypeScript twin, fed the same seeded random streams cut into random
 * transfers, with the same connections opened, closed and consumed, must agree after every push:
 * return value, event records, packet bytes, ring positions and ring bytes. A failure prints the
 * seed; MUXWIRE_TEST_SEED=<seed> replays it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DEMUX_EVENT_FIELDS } from '../../src/accel/demux-core.js';
import type { Demuxer } from '../../src/accel/demuxer.js';
import { JsAccel } from '../../src/accel/js-accel.js';
import { NativeAccel } from '../../src/accel/native-accel.js';
import { MuxwireError } from '../../src/errors.js';
import { encodeMuxPacket, MuxProtocol } from '../../src/protocol/mux-header.js';
import { encodeTcpHeader, TcpFlag } from '../../src/protocol/tcp-header.js';
import { seededRandom, testSeed } from './mux-bytes.js';
import { nativeBinding } from './native-under-test.js';

const STREAMS = 300;
const PORTS = [[62078, 1], [7, 2], [19, 3], [9, 4], [1000, 5]] as const;

function randomPacket(rand: () => number): Buffer {
  const pick = rand();
  if (pick < 0.1) return encodeMuxPacket(2, { protocol: [0, 1, 2, 5][Math.floor(rand() * 4)]!, txSeq: Math.floor(rand() * 65536) }, Buffer.alloc(Math.floor(rand() * 30), 0x41));
  if (pick < 0.13) return encodeMuxPacket(2, { protocol: MuxProtocol.TCP }, Buffer.alloc(Math.floor(rand() * 20))); // too short for TCP
  const [sport, dport] = rand() < 0.9 ? PORTS[Math.floor(rand() * PORTS.length)]! : [Math.floor(rand() * 65536), Math.floor(rand() * 65536)];
  const size = rand() < 0.2 ? 0 : rand() < 0.8 ? Math.floor(rand() * 300) : Math.floor(rand() * 40000);
  const data = Buffer.alloc(size);
  for (let i = 0; i < size; i += 97) data[i] = Math.floor(rand() * 256);
  const header = encodeTcpHeader({ sport, dport, seq: Math.floor(rand() * 2 ** 32), ack: Math.floor(rand() * 2 ** 32), flags: Math.floor(rand() * 256), window: Math.floor(rand() * 65536) * 256 });
  return encodeMuxPacket(2, { protocol: MuxProtocol.TCP, txSeq: Math.floor(rand() * 65536), rxSeq: Math.floor(rand() * 65536) }, header, data);
}

type Outcome = { count: number; events: number[]; packets: string[] } | { code: string; detail: unknown };

function push(d: Demuxer, chunk: Buffer): Outcome {
  try {
    const count = d.push(chunk);
    const packets = Array.from({ length: count }, (_, i) => d.packet(i).toString('hex'));
    return { count, events: [...d.events.subarray(0, count * DEMUX_EVENT_FIELDS)], packets };
  } catch (err) {
    assert.ok(err instanceof MuxwireError, String(err));
    return { code: err.code, detail: err.detail };
  }
}

describe('native and TypeScript demuxers agree', () => {
  test(`on ${STREAMS} seeded random streams at random transfer boundaries`, (t) => {
    const binding = nativeBinding(t);
    if (!binding) return;
    const seed = testSeed();
    t.diagnostic(`seed ${seed} (replay with MUXWIRE_TEST_SEED=${seed})`);
    const rand = seededRandom(seed);
    let delivered = 0;
    let overflows = 0;
    let failures = 0;
    for (let stream = 0; stream < STREAMS; stream++) {
      const native: Demuxer = new NativeAccel(binding).createDemuxer({ version: 2 });
      const js: Demuxer = new JsAccel().createDemuxer({ version: 2 });
      const pair: readonly [Demuxer, Demuxer] = [native, js];
      const open = new Map<number, number>();
      const parts = Array.from({ length: 1 + Math.floor(rand() * 30) }, () => randomPacket(rand));
      if (rand() < 0.1) {
        const bad = parts[Math.floor(rand() * parts.length)]!;
        bad.writeUInt32BE(rand() < 0.5 ? Math.floor(rand() * 16) : 65537 + Math.floor(rand() * 1000), 4);
      }
      const bytes = Buffer.concat(parts);
      let at = 0;
      while (at < bytes.length) {
        const where = `seed ${seed} stream ${stream} at ${at}`;
        // Open or close a connection now and then, identically on both.
        if (rand() < (at === 0 ? 0.9 : 0.3)) {
          const p = Math.floor(rand() * PORTS.length);
          const slot = open.get(p);
          if (slot === undefined) {
            const capacity = 2 ** (4 + Math.floor(rand() * 14));
            const slots: number[] = pair.map((d: Demuxer) => d.openConnection(PORTS[p]![0], PORTS[p]![1], capacity));
            assert.equal(slots[0], slots[1], where);
            open.set(p, slots[0]!);
          } else {
            for (const d of pair) d.closeConnection(slot);
            open.delete(p);
          }
        }
        const n = Math.min(bytes.length - at, rand() < 0.5 ? 16384 : Math.floor(rand() * (rand() < 0.8 ? 2000 : 70000)));
        const chunk = bytes.subarray(at, at + n);
        at += n;
        const [a, b]: Outcome[] = pair.map((d: Demuxer) => push(d, chunk));
        assert.deepEqual(a, b, where);
        if ('code' in a!) {
          failures++;
          break;
        }
        for (let i = 0; i < a!.count; i++) {
          const kind = a!.events[i * DEMUX_EVENT_FIELDS]!;
          if (kind === 3) delivered++;
          if (kind === 4) overflows++;
        }
        assert.equal(native.staged, js.staged, where);
        assert.deepEqual(native.ringState, js.ringState, where);
        for (const slot of open.values()) {
          assert.deepEqual(Buffer.concat(native.readable(slot)), Buffer.concat(js.readable(slot)), `${where} slot ${slot}`);
          // Consume some, identically, so rings wrap.
          const take = Math.floor(rand() * (native.unread(slot) + 1));
          native.consume(slot, take);
          js.consume(slot, take);
        }
      }
    }
    t.diagnostic(`${delivered} payloads delivered, ${overflows} overflows, ${failures} fatal bad lengths`);
    assert.ok(delivered > 100 && overflows > 5 && failures > 3, `seed ${seed}: the streams did not reach every outcome`);
  });
});
