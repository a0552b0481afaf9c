import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DEMUX_EVENT_FIELDS, DemuxEvent, NO_SLOT, SOURCE_TRANSFER } from '../../src/accel/demux-core.js';
import type { Demuxer } from '../../src/accel/demuxer.js';
import { selectAccel } from '../../src/accel/index.js';
import { isMuxwireError } from '../../src/errors.js';
import { encodeMuxPacket, encodeVersionPayload, MuxProtocol } from '../../src/protocol/mux-header.js';
import { encodeTcpHeader, TcpFlag } from '../../src/protocol/tcp-header.js';
import { muxHeaderClaiming, seededRandom, testSeed } from './mux-bytes.js';
import { accelImplementations, nativeBinding } from './native-under-test.js';

/** Mux v2 and TCP headers: what a TCP event's packet view holds. */
const HEADERS = 16 + 20;

/** A demuxer whose connection (7→2) closed while a 30000-byte payload for it was a third in. */
function closedMidPayload(accel: NonNullable<ReturnType<(typeof implementations)[number]['make']>>): { d: Demuxer; p: Buffer } {
  const d = accel.createDemuxer({ version: 2 });
  const slot = d.openConnection(7, 2, 65536);
  const p = tcp(2, 7, 2, Buffer.alloc(30000, 'x'));
  assert.equal(d.push(p.subarray(0, 10000)), 0);
  d.closeConnection(slot);
  return { d, p };
}

const implementations = [...accelImplementations(), { name: 'as selected for this run', make: () => selectAccel() }];

/** A TCP packet from the device's port `sport` to the host's port `dport`. */
function tcp(version: 1 | 2, sport: number, dport: number, data: Buffer | string, opts: { flags?: number; seq?: number; ack?: number; txSeq?: number; rxSeq?: number } = {}): Buffer {
  const header = encodeTcpHeader({ sport, dport, seq: opts.seq ?? 0, ack: opts.ack ?? 0, flags: opts.flags ?? TcpFlag.ACK, window: 131072 });
  return encodeMuxPacket(version, { protocol: MuxProtocol.TCP, txSeq: opts.txSeq, rxSeq: opts.rxSeq }, header, Buffer.from(data));
}

function record(d: Demuxer, i: number): number[] {
  return [...d.events.subarray(i * DEMUX_EVENT_FIELDS, (i + 1) * DEMUX_EVENT_FIELDS)];
}

function unreadText(d: Demuxer, slot: number): string {
  return Buffer.concat(d.readable(slot)).toString('latin1');
}

/** What a stream means, independent of where transfers split it: each packet's record without
 * its location, with the packet's bytes, and each ring's unread bytes. */
function summarize(d: Demuxer, chunks: Buffer[], slots: number[]): unknown {
  const packets: unknown[] = [];
  for (const chunk of chunks) {
    const n = d.push(chunk);
    for (let i = 0; i < n; i++) {
      const [kind, slotOrProtocol, , , ...rest] = record(d, i);
      packets.push({ kind, slotOrProtocol, rest, bytes: d.packet(i).toString('hex') });
    }
  }
  return { packets, rings: slots.map((s) => unreadText(d, s)), staged: d.staged };
}

function badLength(offset: number | undefined, length: number) {
  return (err: unknown) => {
    assert.ok(isMuxwireError(err, 'MUXWIRE_ERR_BAD_LENGTH'), String(err));
    assert.deepEqual(err.detail, { offset, length });
    return true;
  };
}

for (const impl of implementations) {
  describe(`Demuxer, ${impl.name}`, () => {
    test('appends the payload of an open connection to its ring and describes the packet', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const d = accel.createDemuxer({ version: 2 });
      const slot = d.openConnection(62078, 1, 1024);
      const p = tcp(2, 62078, 1, 'hello', { txSeq: 3, rxSeq: 9, seq: 0xfffffff0, ack: 77, flags: TcpFlag.ACK | TcpFlag.PSH });
      assert.equal(d.push(p), 1);
      assert.deepEqual(record(d, 0), [DemuxEvent.TCP_DATA, slot, SOURCE_TRANSFER, 0, p.length, (3 << 16) | 9, 0, 5, 0xfffffff0, 77, TcpFlag.ACK | TcpFlag.PSH, 131072, 0]);
      assert.deepEqual(d.packet(0), p.subarray(0, HEADERS), 'a TCP event\'s packet view is its headers: the payload is in the ring');
      assert.equal(d.unread(slot), 5);
      assert.equal(unreadText(d, slot), 'hello');
      d.consume(slot, 2);
      assert.equal(unreadText(d, slot), 'llo');
      assert.equal(d.push(tcp(2, 62078, 1, ' world')), 1);
      assert.equal(record(d, 0)[6], 5, 'ring start is the write position before the payload');
      assert.equal(unreadText(d, slot), 'llo world');
    });

    test('reassembles a packet spread over three transfers and points its event at staging memory', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const d = accel.createDemuxer({ version: 2 });
      const slot = d.openConnection(7, 2, 65536);
      const data = Buffer.alloc(40000, 'x');
      const p = tcp(2, 7, 2, data);
      const next = tcp(2, 7, 2, 'after');
      assert.equal(d.push(p.subarray(0, 5)), 0);
      assert.equal(d.staged, 5);
      assert.equal(d.push(p.subarray(5, 16384)), 0);
      assert.equal(d.staged, 16384);
      assert.equal(d.push(Buffer.concat([p.subarray(16384), next, next.subarray(0, 3)])), 2);
      assert.equal(record(d, 0)[2], 1, 'the first staging buffer');
      assert.deepEqual(d.packet(0), p.subarray(0, HEADERS));
      assert.deepEqual(record(d, 1).slice(2, 5), [SOURCE_TRANSFER, p.length - 16384, next.length]);
      assert.equal(d.staged, 3);
      assert.equal(d.unread(slot), 40005);
      // The next packet completes in the other staging buffer.
      assert.equal(d.push(next.subarray(3)), 1);
      assert.equal(record(d, 0)[2], 2, 'the second staging buffer');
      assert.deepEqual(d.packet(0), next.subarray(0, HEADERS));
      assert.equal(unreadText(d, slot), `${'x'.repeat(40000)}afterafter`);
    });

    test('keeps the whole packet of an RST, and of a packet that is not TCP, for the engine to read', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const d = accel.createDemuxer({ version: 2 });
      d.openConnection(7, 2, 65536);
      const rst = tcp(2, 7, 2, Buffer.alloc(3000, 'r'), { flags: TcpFlag.RST });
      const control = encodeMuxPacket(2, { protocol: MuxProtocol.CONTROL }, Buffer.alloc(3000, 'c'));
      assert.equal(d.push(rst.subarray(0, 1000)), 0);
      assert.equal(d.push(Buffer.concat([rst.subarray(1000), control.subarray(0, 100)])), 1);
      assert.deepEqual(d.packet(0), rst);
      assert.equal(d.push(control.subarray(100)), 1);
      assert.deepEqual(d.packet(0), control);
    });

    test('drops the rest of a payload whose connection closes while it arrives, and reports the packet as for no connection', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const { d, p } = closedMidPayload(accel);
      // The closed connection's ring may be recycled or freed (native: unpinned): nothing more of
      // the payload may be written to it (scripts/asan-check.sh runs this suite).
      const other = d.openConnection(19, 3, 65536);
      assert.equal(d.push(p.subarray(10000)), 1);
      assert.deepEqual(record(d, 0).slice(0, 2), [DemuxEvent.TCP, NO_SLOT]);
      assert.deepEqual(d.packet(0), p.subarray(0, HEADERS), 'its ports, for the anonymous RST');
      assert.equal(d.unread(other), 0);
      assert.equal(d.push(tcp(2, 19, 3, 'fresh')), 1);
      assert.equal(unreadText(d, other), 'fresh');
    });

    test('reports an overflow of the new connection when one opens on the same ports while a payload arrives', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const { d, p } = closedMidPayload(accel);
      const again = d.openConnection(7, 2, 65536);
      assert.equal(d.push(p.subarray(10000)), 1);
      assert.deepEqual(record(d, 0).slice(0, 2), [DemuxEvent.TCP_OVERFLOW, again]);
      assert.equal(d.unread(again), 0);
    });

    test('streams a payload into a ring that wraps, split at every byte', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const d = accel.createDemuxer({ version: 2 });
      const slot = d.openConnection(7, 2, 1024);
      const first = tcp(2, 7, 2, Buffer.alloc(700, 'a'));
      assert.equal(d.push(first), 1);
      d.consume(slot, 700);
      const payload = Buffer.from(Array.from({ length: 900 }, (_, i) => i & 0xff));
      const p = tcp(2, 7, 2, payload);
      let events = 0;
      for (let i = 0; i < p.length; i++) events += d.push(p.subarray(i, i + 1));
      assert.equal(events, 1);
      assert.deepEqual(record(d, 0).slice(0, 2), [DemuxEvent.TCP_DATA, slot]);
      assert.equal(record(d, 0)[6], 700);
      assert.deepEqual(Buffer.concat(d.readable(slot)), payload);
      assert.equal(d.readable(slot).length, 2, 'the payload wraps the ring');
    });

    test('gives the same packets and ring bytes whether the stream comes whole, byte by byte or split at random', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const stream = Buffer.concat([
        encodeMuxPacket(2, { protocol: MuxProtocol.CONTROL }, Buffer.from('\x07hello')),
        tcp(2, 62078, 1, 'lockdown'),
        tcp(2, 7, 2, Buffer.alloc(3000, 'e')),
        tcp(2, 99, 3, 'nobody'),
        tcp(2, 62078, 1, '', { flags: TcpFlag.ACK }),
        tcp(2, 7, 2, 'echo'),
      ]);
      const run = (chunks: Buffer[]) => {
        const d = accel.createDemuxer({ version: 2 });
        const slots = [d.openConnection(62078, 1), d.openConnection(7, 2)];
        return summarize(d, chunks, slots);
      };
      const whole = run([stream]);
      assert.deepEqual(run([...stream].map((b) => Buffer.from([b]))), whole);
      const seed = testSeed();
      t.diagnostic(`seed ${seed}`);
      const rand = seededRandom(seed);
      for (let round = 0; round < 20; round++) {
        const chunks: Buffer[] = [];
        for (let at = 0; at < stream.length; ) {
          const n = Math.min(stream.length - at, Math.floor(rand() * 600));
          chunks.push(stream.subarray(at, at + n));
          at += n;
        }
        assert.deepEqual(run(chunks), whole, `seed ${seed} round ${round}`);
      }
    });

    test('reports VERSION, CONTROL and a too-short TCP packet as plain packets with their protocol', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const d = accel.createDemuxer({ version: 1 });
      const version = encodeMuxPacket(1, { protocol: MuxProtocol.VERSION }, encodeVersionPayload({ major: 2, minor: 0 }));
      const short = encodeMuxPacket(1, { protocol: MuxProtocol.TCP }, Buffer.alloc(19));
      assert.equal(d.push(Buffer.concat([version, short])), 2);
      assert.deepEqual(record(d, 0), [DemuxEvent.PACKET, MuxProtocol.VERSION, SOURCE_TRANSFER, 0, 20, 0, 0, 12, 0, 0, 0, 0, 0]);
      assert.deepEqual(record(d, 1), [DemuxEvent.PACKET, MuxProtocol.TCP, SOURCE_TRANSFER, 20, 27, 0, 0, 19, 0, 0, 0, 0, 0]);
      // After VERSION negotiated 2, headers are 16 bytes.
      d.version = 2;
      const control = encodeMuxPacket(2, { protocol: MuxProtocol.CONTROL, txSeq: 1, rxSeq: 2 }, Buffer.from('\x05warn'));
      assert.equal(d.push(control), 1);
      assert.deepEqual(record(d, 0), [DemuxEvent.PACKET, MuxProtocol.CONTROL, SOURCE_TRANSFER, 0, 21, (1 << 16) | 2, 0, 5, 0, 0, 0, 0, 0]);
    });

    test('reports TCP for unknown ports without a slot, and an empty ACK with its slot and no data', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const d = accel.createDemuxer({ version: 2 });
      const slot = d.openConnection(62078, 4);
      assert.equal(d.push(Buffer.concat([tcp(2, 62078, 5, 'lost'), tcp(2, 62078, 4, '', { flags: TcpFlag.SYN | TcpFlag.ACK })])), 2);
      assert.deepEqual(record(d, 0).slice(0, 2), [DemuxEvent.TCP, NO_SLOT]);
      assert.equal(record(d, 0)[7], 4);
      assert.deepEqual(record(d, 1).slice(0, 2), [DemuxEvent.TCP, slot]);
      assert.equal(record(d, 1)[7], 0);
      assert.equal(d.unread(slot), 0);
    });

    test('wraps the ring and hands out two views across its end', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const d = accel.createDemuxer({ version: 2 });
      const slot = d.openConnection(1, 2, 16);
      d.push(tcp(2, 1, 2, 'abcdefghijkl'));
      d.consume(slot, 10);
      d.push(tcp(2, 1, 2, 'mnopqrst'));
      const views = d.readable(slot);
      assert.deepEqual(views.map((v) => v.toString()), ['klmnop', 'qrst']);
      assert.equal(record(d, 0)[6], 12);
    });

    test('reports TCP_OVERFLOW and stores nothing when a payload exceeds the free space', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const d = accel.createDemuxer({ version: 2 });
      const slot = d.openConnection(1, 2, 8);
      assert.equal(d.push(Buffer.concat([tcp(2, 1, 2, 'abcdef'), tcp(2, 1, 2, 'ghi'), tcp(2, 1, 2, 'gh')])), 3);
      assert.deepEqual([record(d, 0)[0], record(d, 1)[0], record(d, 2)[0]], [DemuxEvent.TCP_DATA, DemuxEvent.TCP_OVERFLOW, DemuxEvent.TCP_DATA]);
      assert.equal(unreadText(d, slot), 'abcdefgh');
      // A read position past the write position is not trusted: the ring counts as full.
      d.ringState[2 * slot] = d.ringState[2 * slot + 1]! + 1;
      d.push(tcp(2, 1, 2, 'x'));
      assert.equal(record(d, 0)[0], DemuxEvent.TCP_OVERFLOW);
    });

    test('fails for good on a bad length, also when the packet began in an earlier transfer', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const good = tcp(2, 1, 2, 'ok');
      const d = accel.createDemuxer({ version: 2 });
      assert.throws(() => d.push(Buffer.concat([good, muxHeaderClaiming(2, 65537)])), badLength(good.length, 65537));
      assert.throws(() => d.push(good), badLength(good.length, 65537));
      const e = accel.createDemuxer({ version: 2, maxPacket: 1000 });
      assert.equal(e.push(muxHeaderClaiming(2, 1001, 6)), 0);
      assert.throws(() => e.push(muxHeaderClaiming(2, 1001).subarray(6)), badLength(undefined, 1001));
      const v1 = accel.createDemuxer({ version: 1 });
      assert.throws(() => v1.push(muxHeaderClaiming(1, 7)), badLength(0, 7));
    });

    test('produces nothing for a zero-length transfer', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const d = accel.createDemuxer({ version: 2 });
      assert.equal(d.push(Buffer.alloc(0)), 0);
      const p = tcp(2, 1, 2, 'z');
      d.push(p.subarray(0, 3));
      assert.equal(d.push(Buffer.alloc(0)), 0);
      assert.equal(d.staged, 3);
      assert.equal(d.push(p.subarray(3)), 1);
    });

    test('records every packet of a transfer full of minimum-size packets', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const d = accel.createDemuxer({ version: 2 });
      const empty = encodeMuxPacket(2, { protocol: MuxProtocol.SETUP });
      assert.equal(d.push(Buffer.concat(Array.from({ length: 4096 }, () => empty))), 4096);
      assert.deepEqual(record(d, 4095).slice(0, 5), [DemuxEvent.PACKET, MuxProtocol.SETUP, SOURCE_TRANSFER, 4095 * 16, 16]);
    });

    test('stops delivering to a closed connection and starts a reopened one at position 0', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const d = accel.createDemuxer({ version: 2 });
      const slot = d.openConnection(1, 2, 16);
      d.push(tcp(2, 1, 2, 'first'));
      d.closeConnection(slot);
      assert.throws(() => d.unread(slot), RangeError);
      d.push(tcp(2, 1, 2, 'gone'));
      assert.deepEqual(record(d, 0).slice(0, 2), [DemuxEvent.TCP, NO_SLOT]);
      const again = d.openConnection(1, 2, 16);
      assert.equal(again, slot);
      d.push(tcp(2, 1, 2, 'second'));
      assert.equal(record(d, 0)[6], 0);
      assert.equal(unreadText(d, again), 'second');
    });

    test('refuses ports already open and runs out of slots with coded errors', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const d = accel.createDemuxer({ version: 2, maxConnections: 2 });
      d.openConnection(1, 1, 16);
      assert.throws(() => d.openConnection(1, 1, 16), (err: unknown) => isMuxwireError(err, 'MUXWIRE_ERR_PORT_IN_USE'));
      d.openConnection(1, 2, 16);
      assert.throws(() => d.openConnection(1, 3, 16), (err: unknown) => isMuxwireError(err, 'MUXWIRE_ERR_TOO_MANY_CONNECTIONS'));
      assert.throws(() => d.openConnection(1, 4, 12 as number), RangeError);
      assert.throws(() => d.openConnection(70000, 4), RangeError);
      assert.throws(() => d.consume(0, 1), RangeError);
      assert.throws(() => d.push('bytes' as never), TypeError);
      assert.throws(() => accel.createDemuxer({ version: 3 as never }), RangeError);
      assert.throws(() => accel.createDemuxer({ version: 2, maxPacket: 70000 }), RangeError);
    });
  });
}

describe('the raw addon Demuxer', () => {
  test('throws TypeError or RangeError for wrong arguments instead of crashing', (t) => {
    const binding = nativeBinding(t);
    if (!binding) return;
    const Raw = binding.Demuxer as unknown as new (...args: unknown[]) => Record<string, (...args: unknown[]) => unknown>;
    const a = Buffer.alloc(100);
    const b = Buffer.alloc(100);
    const state = new Uint32Array(4);
    assert.throws(() => new Raw(2, 100, a, b), TypeError);
    assert.throws(() => new Raw(2, 100, a, b, new Int32Array(4)), TypeError);
    assert.throws(() => new Raw(2, 200, a, b, state), RangeError);
    assert.throws(() => new Raw(2, 100, a, a, state), RangeError);
    assert.throws(() => new Raw(2, 100, a, b, new Uint32Array(3)), RangeError);
    const raw = new Raw(2, 100, a, b, state);
    assert.throws(() => raw.open!(2, 1, 1, Buffer.alloc(16)), RangeError);
    assert.throws(() => raw.open!(0, 1, 1, Buffer.alloc(12)), RangeError);
    assert.throws(() => raw.open!(0, 1, 1, 'ring'), TypeError);
    raw.open!(0, 1, 1, Buffer.alloc(16));
    assert.throws(() => raw.open!(0, 1, 2, Buffer.alloc(16)), /already open/);
    assert.throws(() => raw.open!(1, 1, 1, Buffer.alloc(16)), /already open/);
    assert.throws(() => raw.push!(Buffer.alloc(64), new Uint32Array(DEMUX_EVENT_FIELDS * 4)), RangeError);
    assert.throws(() => raw.push!([1, 2], new Uint32Array(DEMUX_EVENT_FIELDS)), TypeError);
    assert.throws(() => raw.setVersion!(3), RangeError);
    assert.throws(() => raw.close!(-1), RangeError);
    raw.close!(0);
    assert.equal(raw.push!(Buffer.alloc(0), new Uint32Array(DEMUX_EVENT_FIELDS)), 0);
  });
});
