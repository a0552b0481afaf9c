import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import type { Accel } from '../../src/accel/accel.js';
import { SCAN_RECORD_FIELDS, selectAccel } from '../../src/accel/index.js';
import { JsAccel } from '../../src/accel/js-accel.js';
import { NativeAccel } from '../../src/accel/native-accel.js';
import { isMuxwireError } from '../../src/errors.js';
import { muxHeaderClaiming, muxPacket } from './mux-bytes.js';
import { nativeBinding } from './native-under-test.js';

type Record5 = [offset: number, length: number, protocol: number, sport: number, dport: number];

/** The suite below, run against each implementation that can serve in this run. */
// Native entries skip each test (so the count shows) with nativeSkipReason where the addon is not
// under test in this run.
const implementations: { name: string; make: (t: TestContext) => Accel | undefined }[] = [
  { name: 'TypeScript', make: () => new JsAccel() },
  {
    // Everything through the addon, however small (the default keeps tiny inputs in TypeScript).
    name: 'native, forced for every size',
    make: (t) => {
      const binding = nativeBinding(t);
      return binding && new NativeAccel(binding, { nativeMinPackets: 0 });
    },
  },
  {
    // Whatever this run selected, with its default routing of small scans (throws, failing each
    // test, when MUXWIRE_REQUIRE_NATIVE=1 and the addon is missing).
    name: 'as selected for this run',
    make: (t) => {
      const accel = selectAccel();
      t.diagnostic(`selected: ${accel.kind}`);
      return accel;
    },
  },
];

function scan(accel: Accel, buf: Uint8Array, version: 1 | 2, records = 64): Record5[] {
  const out = new Uint32Array(records * SCAN_RECORD_FIELDS).fill(0xdeadbeef);
  const n = accel.scanMuxPackets(buf, version, out);
  const found: Record5[] = [];
  for (let i = 0; i < n; i++) found.push([...out.subarray(i * 5, i * 5 + 5)] as Record5);
  // Nothing is written past the records it reports.
  assert.ok(out.subarray(n * 5).every((v) => v === 0xdeadbeef), 'scan wrote past its records');
  return found;
}

function badLength(offset: number, length: number) {
  return (err: unknown) => {
    assert.ok(isMuxwireError(err, 'MUXWIRE_ERR_BAD_LENGTH'), String(err));
    assert.deepEqual(err.detail, { offset, length });
    return true;
  };
}

for (const impl of implementations) {
  describe(`scanMuxPackets, ${impl.name}`, () => {
    test('finds one v1 TCP packet with its ports', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const p = muxPacket(1, 6, 8 + 20 + 5, { sport: 3, dport: 62078 });
      assert.deepEqual(scan(accel, p, 1), [[0, 33, 6, 3, 62078]]);
    });

    test('finds one v2 TCP packet with its ports after the 16-byte header', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const p = muxPacket(2, 6, 16 + 20 + 100, { sport: 0xfffe, dport: 1 });
      assert.deepEqual(scan(accel, p, 2), [[0, 136, 6, 0xfffe, 1]]);
    });

    test('reports zero ports for non-TCP packets and for TCP packets without a whole TCP header', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const version = muxPacket(2, 0, 16 + 12);
      const control = muxPacket(2, 1, 16 + 9);
      const shortTcp = muxPacket(2, 6, 16 + 19);
      const bareTcp = muxPacket(2, 6, 16 + 20, { sport: 9, dport: 10 });
      const buf = Buffer.concat([version, control, shortTcp, bareTcp]);
      assert.deepEqual(scan(accel, buf, 2), [
        [0, 28, 0, 0, 0],
        [28, 25, 1, 0, 0],
        [53, 35, 6, 0, 0],
        [88, 36, 6, 9, 10],
      ]);
    });

    test('accepts a packet that is only a header, and the full 65536 bytes', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      assert.deepEqual(scan(accel, muxPacket(1, 2, 8), 1), [[0, 8, 2, 0, 0]]);
      assert.deepEqual(scan(accel, muxPacket(2, 6, 65536, { sport: 1, dport: 2 }), 2), [[0, 65536, 6, 1, 2]]);
    });

    test('stops at a packet that has not fully arrived', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      for (const version of [1, 2] as const) {
        const hs = version === 1 ? 8 : 16;
        const whole = muxPacket(version, 6, hs + 20 + 7, { sport: 5, dport: 6 });
        // 1 byte, less than the length field, the header − 1, the header, the header + 1, all but one.
        for (const cut of [0, 1, 7, hs - 1, hs, hs + 1, whole.length - 1]) {
          assert.deepEqual(scan(accel, whole.subarray(0, cut), version), [], `v${version} cut at ${cut}`);
        }
        const next = Buffer.concat([whole, whole.subarray(0, 1)]);
        assert.deepEqual(scan(accel, next, version), [[0, whole.length, 6, 5, 6]]);
      }
    });

    test('handles packets around the 16 KiB transfer size and the 48 KiB USB MTU', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      for (const size of [16383, 16384, 16385, 49152]) {
        const p = muxPacket(2, 6, size, { sport: 7, dport: 8 });
        const tail = muxPacket(2, 0, 16 + 12);
        assert.deepEqual(scan(accel, p.subarray(0, size - 1), 2), [], `${size} less one byte`);
        assert.deepEqual(scan(accel, p, 2), [[0, size, 6, 7, 8]], `${size}`);
        assert.deepEqual(scan(accel, Buffer.concat([p, tail, p.subarray(0, 16)]), 2), [
          [0, size, 6, 7, 8],
          [size, 28, 0, 0, 0],
        ]);
      }
    });

    test('stops when out is full and carries on from the next offset', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const packets = [10, 20, 30].map((n, i) => muxPacket(1, 6, 8 + 20 + n, { sport: i + 1, dport: 100 }));
      const buf = Buffer.concat(packets);
      const first = scan(accel, buf, 1, 2);
      assert.deepEqual(first, [
        [0, 38, 6, 1, 100],
        [38, 48, 6, 2, 100],
      ]);
      const rest = scan(accel, buf.subarray(86), 1, 2);
      assert.deepEqual(rest, [[0, 58, 6, 3, 100]]);
      // A Uint32Array of 9 entries holds one whole record: the fraction is not written to.
      const out = new Uint32Array(9).fill(7);
      assert.equal(accel.scanMuxPackets(buf, 1, out), 1);
      assert.deepEqual([...out.subarray(5)], [7, 7, 7, 7]);
    });

    test('reads a Uint8Array view at a non-zero byte offset in place', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const p = muxPacket(2, 6, 16 + 20 + 3, { sport: 11, dport: 12 });
      const backing = new Uint8Array(p.length + 13);
      backing.set(p, 5);
      const view = new Uint8Array(backing.buffer, 5, p.length);
      assert.deepEqual(scan(accel, view, 2), [[0, p.length, 6, 11, 12]]);
    });

    test('rejects a declared length below the header size or above 65536 with MUXWIRE_ERR_BAD_LENGTH', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const out = new Uint32Array(SCAN_RECORD_FIELDS * 4);
      for (const [version, length] of [
        [1, 0],
        [1, 7],
        [2, 8],
        [2, 15],
        [1, 65537],
        [2, 65537],
        [2, 0xffffffff],
      ] as const) {
        assert.throws(() => accel.scanMuxPackets(muxHeaderClaiming(version, length), version, out), badLength(0, length));
      }
    });

    test('judges a length as soon as its field arrives, before the rest of a v2 header', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const out = new Uint32Array(SCAN_RECORD_FIELDS);
      assert.throws(() => accel.scanMuxPackets(muxHeaderClaiming(2, 70000, 8), 2, out), badLength(0, 70000));
      assert.equal(accel.scanMuxPackets(muxHeaderClaiming(2, 70000, 7), 2, out), 0);
    });

    test('reports the offset of a bad length that follows good packets', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const good = muxPacket(2, 6, 16 + 20 + 1, { sport: 1, dport: 2 });
      const buf = Buffer.concat([good, good, muxHeaderClaiming(2, 3)]);
      assert.throws(() => accel.scanMuxPackets(buf, 2, new Uint32Array(SCAN_RECORD_FIELDS * 8)), badLength(74, 3));
      // With room for only the good packets, the bad one is left for the next call.
      assert.equal(accel.scanMuxPackets(buf, 2, new Uint32Array(SCAN_RECORD_FIELDS * 2)), 2);
    });

    test('rejects arguments of the wrong type without touching them', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const out = new Uint32Array(SCAN_RECORD_FIELDS);
      const buf = muxPacket(1, 0, 20);
      assert.throws(() => accel.scanMuxPackets('bytes' as never, 1, out), TypeError);
      assert.throws(() => accel.scanMuxPackets(buf, 3 as never, out), RangeError);
      assert.throws(() => accel.scanMuxPackets(buf, '1' as never, out), RangeError);
      assert.throws(() => accel.scanMuxPackets(buf, 1, new Int32Array(5) as never), TypeError);
      assert.throws(() => accel.scanMuxPackets(buf, 1, new Uint32Array(4)), RangeError);
    });
  });
}

describe('routing on the native path', () => {
  test('keeps a one-packet transfer in TypeScript and sends a batch of small packets to the addon', (t) => {
    const binding = nativeBinding(t);
    if (!binding) return;
    let nativeCalls = 0;
    // The real addon, counted: which path served is the behaviour under test.
    const counted = { abiVersion: binding.abiVersion, Demuxer: binding.Demuxer, scanMuxPackets: (b: Uint8Array, v: 1 | 2, o: Uint32Array) => (nativeCalls++, binding.scanMuxPackets(b, v, o)) };
    const accel = new NativeAccel(counted);
    const bulk = muxPacket(2, 6, 16384, { sport: 1, dport: 2 });
    assert.deepEqual(scan(accel, bulk, 2), [[0, 16384, 6, 1, 2]]);
    assert.equal(nativeCalls, 0);
    const acks = Buffer.concat(Array.from({ length: 40 }, (_, i) => muxPacket(2, 6, 36, { sport: i, dport: 7 })));
    const found = scan(accel, acks, 2);
    assert.equal(found.length, 40);
    assert.deepEqual(found[39], [39 * 36, 36, 6, 39, 7]);
    assert.equal(nativeCalls, 1);
    // A batch whose tail is bad is still reported with the bad packet's offset.
    const bad = Buffer.concat([acks, muxHeaderClaiming(2, 99999)]);
    assert.throws(() => accel.scanMuxPackets(bad, 2, new Uint32Array(SCAN_RECORD_FIELDS * 64)), badLength(1440, 99999));
    assert.equal(nativeCalls, 2);
  });
});

describe('the raw addon entry point', () => {
  test('throws TypeError or RangeError for wrong arguments instead of crashing', (t) => {
    const binding = nativeBinding(t);
    if (!binding) return;
    const scanRaw = binding.scanMuxPackets as (...args: unknown[]) => number;
    const out = new Uint32Array(5);
    const buf = Buffer.alloc(20);
    assert.throws(() => scanRaw(), TypeError);
    assert.throws(() => scanRaw(buf, 1), TypeError);
    assert.throws(() => scanRaw({ length: 20 }, 1, out), TypeError);
    assert.throws(() => scanRaw(new Uint16Array(10), 1, out), TypeError);
    assert.throws(() => scanRaw(buf, 1.5, out), RangeError);
    assert.throws(() => scanRaw(buf, 1n, out), TypeError);
    assert.throws(() => scanRaw(buf, 1, [0, 0, 0, 0, 0]), TypeError);
    assert.throws(() => scanRaw(buf, 1, new Float64Array(5)), TypeError);
    assert.throws(() => scanRaw(buf, 1, new Uint32Array(4)), RangeError);
    assert.throws(() => scanRaw(buf, 1, out, 'extra'), TypeError);
  });

  test('returns -1 with the bad offset and length in out, as the TypeScript twin does', (t) => {
    const binding = nativeBinding(t);
    if (!binding) return;
    const out = new Uint32Array(5);
    assert.equal(binding.scanMuxPackets(muxHeaderClaiming(1, 4), 1, out), -1);
    assert.deepEqual([...out.subarray(0, 2)], [0, 4]);
  });
});
