import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PacketPool } from '../../src/mux/packet-pool.js';

/** True when two buffers share any byte of memory. */
function overlaps(a: Buffer, b: Buffer): boolean {
  if (a.buffer !== b.buffer) return false;
  return a.byteOffset < b.byteOffset + b.length && b.byteOffset < a.byteOffset + a.length;
}

test('hands out packets that never overlap one still in use, in any order of return', () => {
  const pool = new PacketPool(64 * 1024);
  let seed = 7;
  const random = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0) / 0x100000000);
  const out: { buf: Buffer; release: () => void; fill: number }[] = [];
  let fallbacks = 0;
  for (let i = 0; i < 20000; i++) {
    if (out.length > 0 && random() < 0.45) {
      const k = Math.floor(random() * out.length);
      const [p] = out.splice(k, 1);
      assert.ok(p!.buf.every((b) => b === p!.fill), 'nobody wrote over a packet in use');
      p!.release();
      continue;
    }
    const n = 1 + Math.floor(random() * 20000);
    const got = pool.take(n);
    if (got === undefined) {
      fallbacks++;
      continue;
    }
    assert.equal(got.buf.length, n);
    for (const p of out) assert.ok(!overlaps(p.buf, got.buf));
    const fill = i & 0xff;
    got.buf.fill(fill);
    out.push({ ...got, fill });
  }
  assert.ok(fallbacks > 0, 'a full slab says so instead of overlapping');
  for (const p of out) p.release();
  assert.equal(pool.inUse, 0);
});

test('returns the whole slab once everything is back, and a packet larger than the slab is refused', () => {
  const pool = new PacketPool(1000);
  const a = pool.take(600)!;
  assert.equal(pool.take(600), undefined);
  a.release();
  a.release(); // a second release changes nothing
  const b = pool.take(1000)!;
  assert.equal(b.buf.length, 1000);
  assert.equal(pool.take(1), undefined);
  b.release();
  assert.equal(pool.take(1001), undefined);
  assert.equal(pool.inUse, 0);
});
