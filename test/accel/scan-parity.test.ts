/**
 * The addon and its TypeScript twin fed the same seeded random streams must give identical results,
 * bit for bit: return value and every entry of `out` (docs/ARCHITECTURE.md "The accel contract",
 * the ws/bufferutil model). A failure prints the seed; MUXWIRE_TEST_SEED=<seed> replays it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SCAN_RECORD_FIELDS } from '../../src/accel/accel.js';
import { JsAccel } from '../../src/accel/js-accel.js';
import { scanMuxPacketsJs } from '../../src/accel/mux-scan.js';
import { NativeAccel } from '../../src/accel/native-accel.js';
import type { Accel } from '../../src/accel/accel.js';
import { MuxwireError } from '../../src/errors.js';
import { muxPacket, seededRandom, testSeed } from './mux-bytes.js';
import { nativeBinding } from './native-under-test.js';

const ROUNDS = 3000;

/** A stream of mostly valid packets with the odd truncation, bad length or junk, as a device bug or
 * a corrupted transfer would produce. */
function randomStream(rand: () => number, version: 1 | 2): Buffer {
  const hs = version === 1 ? 8 : 16;
  const parts: Buffer[] = [];
  const count = Math.floor(rand() * 12);
  for (let i = 0; i < count; i++) {
    const pick = rand();
    let length: number;
    if (pick < 0.5) length = hs + Math.floor(rand() * 200);
    else if (pick < 0.8) length = hs + 20 + Math.floor(rand() * 2000);
    else if (pick < 0.95) length = [16383, 16384, 16385, 49152, 65536, hs, hs + 19, hs + 20][Math.floor(rand() * 8)]!;
    else length = Math.floor(rand() * 0x20000); // may be out of bounds either way
    const protocol = [0, 1, 2, 6, 6, 6, Math.floor(rand() * 2 ** 32)][Math.floor(rand() * 7)]!;
    const bounded = Math.min(Math.max(length, hs), 65536 + 64);
    const p = muxPacket(version, protocol, bounded, { sport: Math.floor(rand() * 65536), dport: Math.floor(rand() * 65536) });
    if (length !== bounded || rand() < 0.03) p.writeUInt32BE(length >>> 0, 4);
    if (rand() < 0.02) p.writeUInt32BE(Math.floor(rand() * 2 ** 32), 4); // any length at all
    parts.push(p);
  }
  if (rand() < 0.1) parts.push(Buffer.from(Array.from({ length: Math.floor(rand() * 40) }, () => Math.floor(rand() * 256))));
  const whole = Buffer.concat(parts);
  // Cut anywhere, as an IN transfer boundary would.
  return rand() < 0.5 ? whole : whole.subarray(0, Math.floor(rand() * (whole.length + 1)));
}

describe('native and TypeScript scans agree', () => {
  test(`on ${ROUNDS} seeded random streams, v1 and v2, with random out capacities`, (t) => {
    const binding = nativeBinding(t);
    if (!binding) return;
    const seed = testSeed();
    t.diagnostic(`seed ${seed} (replay with MUXWIRE_TEST_SEED=${seed})`);
    const rand = seededRandom(seed);
    let packets = 0;
    let errors = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const version: 1 | 2 = rand() < 0.5 ? 1 : 2;
      const buf = randomStream(rand, version);
      const records = 1 + Math.floor(rand() * 14);
      const outJs = new Uint32Array(records * SCAN_RECORD_FIELDS + Math.floor(rand() * 5)).fill(0x5a5a5a5a);
      const outNative = outJs.slice();
      const rJs: number = scanMuxPacketsJs(buf, version, outJs);
      const rNative: number = binding.scanMuxPackets(buf, version, outNative);
      const where = `seed ${seed} round ${round} (v${version}, ${buf.length} bytes)`;
      assert.equal(rNative, rJs, where);
      assert.deepEqual(outNative, outJs, where);
      if (rJs < 0) errors++;
      else packets += rJs;
    }
    // The generator must reach both outcomes, or the comparison proves little.
    assert.ok(packets > ROUNDS, `only ${packets} packets found (seed ${seed})`);
    assert.ok(errors > 10, `only ${errors} bad lengths met (seed ${seed})`);
    t.diagnostic(`${packets} packets, ${errors} bad lengths`);
  });

  test('on pure random bytes', (t) => {
    const binding = nativeBinding(t);
    if (!binding) return;
    const seed = testSeed();
    t.diagnostic(`seed ${seed} (replay with MUXWIRE_TEST_SEED=${seed})`);
    const rand = seededRandom(seed);
    for (let round = 0; round < 2000; round++) {
      const buf = Buffer.from(Array.from({ length: Math.floor(rand() * 64) }, () => Math.floor(rand() * 256)));
      // Small lengths in the length field now and then, so some noise parses as packets.
      if (buf.length >= 8 && rand() < 0.5) buf.writeUInt32BE(8 + Math.floor(rand() * 24), 4);
      const version: 1 | 2 = rand() < 0.5 ? 1 : 2;
      const outJs = new Uint32Array(SCAN_RECORD_FIELDS * 4).fill(1);
      const outNative = outJs.slice();
      const where = `seed ${seed} round ${round}`;
      assert.equal(binding.scanMuxPackets(buf, version, outNative), scanMuxPacketsJs(buf, version, outJs), where);
      assert.deepEqual(outNative, outJs, where);
    }
  });

  test('through the public accelerators, coded errors included, with the default routing', (t) => {
    const binding = nativeBinding(t);
    if (!binding) return;
    const seed = testSeed();
    t.diagnostic(`seed ${seed} (replay with MUXWIRE_TEST_SEED=${seed})`);
    const rand = seededRandom(seed);
    const native = new NativeAccel(binding);
    const js = new JsAccel();
    const outcome = (accel: Accel, buf: Buffer, version: 1 | 2, out: Uint32Array): unknown => {
      try {
        return { count: accel.scanMuxPackets(buf, version, out), out: [...out] };
      } catch (err) {
        assert.ok(err instanceof MuxwireError, String(err));
        return { code: err.code, detail: err.detail };
      }
    };
    for (let round = 0; round < 1000; round++) {
      const version: 1 | 2 = rand() < 0.5 ? 1 : 2;
      const buf = randomStream(rand, version);
      const out = new Uint32Array(SCAN_RECORD_FIELDS * (1 + Math.floor(rand() * 40)));
      assert.deepEqual(outcome(native, buf, version, out.slice()), outcome(js, buf, version, out.slice()), `seed ${seed} round ${round}`);
    }
  });
});
