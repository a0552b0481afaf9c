/**
 * mulberry32: a small seeded generator, the same sequence for the same seed on every machine, so
 * a randomized run (the soak's malformed input, the fuzz tests) can be replayed from its seed.
 * Not for anything secret: keys and nonces come from node:crypto.
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
