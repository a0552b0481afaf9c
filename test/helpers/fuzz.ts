/**
 * A seeded mutation engine for fuzzing decoders (docs/ARCHITECTURE.md "Tests": seeded, time-boxed,
 * reproducible). Every run prints its seed; `MUXWIRE_FUZZ_SEED=<n>` replays a run exactly.
 *
 * ```ts
 * const rng = new Prng(fuzzSeed(t));
 * runFuzz(t, { name: 'mux decoder', seeds: [a, b], iterations: 100_000, run: (input, rng) => {
 *   const d = new MuxPacketDecoder({ version: 2 });
 *   for (const c of splitRandomly(rng, input)) { d.push(c); while (d.next()); }
 * }});
 * ```
 *
 * The only acceptable outcomes of `run` are returning, or throwing a MuxwireError whose code is in
 * `codes` (default: any MUXWIRE_ERR_* code). Anything else fails the test with the seed, the
 * iteration and the input in hex.
 *
 * Honest counts: the test's title must say how many inputs it runs ("survives 100,000 mutated
 * streams"); the run states how many it ran and fails when that is fewer than the title says,
 * or than `iterations`. The time budget is a hang guard, not a quiet cut-off: reaching it fails.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';
import { MuxwireError } from '../../src/errors.js';

/** sfc32: a fast 32-bit PRNG with a 128-bit state, good enough for mutation and splitting. */
export class Prng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(seed: number) {
    this.#a = 0x9e3779b9;
    this.#b = 0x243f6a88;
    this.#c = 0xb7e15162;
    this.#d = seed >>> 0;
    for (let i = 0; i < 15; i++) this.u32();
  }

  /** A uniformly random u32. */
  u32(): number {
    const t = (((this.#a + this.#b) | 0) + this.#d) | 0;
    this.#d = (this.#d + 1) | 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) | 0;
    this.#c = (this.#c << 21) | (this.#c >>> 11);
    this.#c = (this.#c + t) | 0;
    return t >>> 0;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return n <= 1 ? 0 : Math.floor((this.u32() / 0x100000000) * n);
  }

  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() / 0x100000000 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }
}

/**
 * The seed for this run: MUXWIRE_FUZZ_SEED when set, else a fresh random one. It is printed (and
 * attached to the test as a diagnostic) so that a failure can be replayed.
 */
export function fuzzSeed(t?: TestContext, label = 'fuzz'): number {
  const env = process.env.MUXWIRE_FUZZ_SEED;
  const seed = env !== undefined && env !== '' ? Number(env) >>> 0 : randomBytes(4).readUInt32LE(0);
  const line = `${label}: seed ${seed} (replay with MUXWIRE_FUZZ_SEED=${seed})`;
  if (t) t.diagnostic(line);
  else console.log(line);
  return seed;
}

const INTERESTING_8 = [0x00, 0x01, 0x0f, 0x10, 0x7f, 0x80, 0xfe, 0xff];
const INTERESTING_32 = [
  0, 1, 2, 7, 8, 15, 16, 17, 20, 24, 36, 40, 48, 255, 256, 0x7fff, 0x8000, 0xffff, 0x10000, 0x10001,
  0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff,
];

/**
 * Applies 1–4 random mutations to a copy of `input`: bit flips, interesting bytes, interesting u32s
 * (both byte orders, so length fields get hit), random bytes, insertions, deletions, duplicated
 * ranges, truncation, splices from `donors`, and `tokens` of the format inserted or overwritten.
 */
export function mutate(rng: Prng, input: Buffer, donors: readonly Buffer[] = [], tokens: readonly Buffer[] = []): Buffer {
  let buf = Buffer.from(input);
  const rounds = rng.range(1, 4);
  for (let r = 0; r < rounds; r++) {
    const len = buf.length;
    switch (rng.int(tokens.length > 0 ? 12 : 10)) {
      case 10:
      case 11: {
        // Insert, or overwrite with, a token of the format ("<dict>", "&#x", a marker byte…).
        const tok = rng.pick(tokens);
        const at = rng.int(len + 1);
        buf = rng.chance(0.5)
          ? Buffer.concat([buf.subarray(0, at), tok, buf.subarray(at)])
          : Buffer.concat([buf.subarray(0, at), tok, buf.subarray(Math.min(len, at + tok.length))]);
        break;
      }
      case 0:
        if (len > 0) buf[rng.int(len)] ^= 1 << rng.int(8);
        break;
      case 1:
        if (len > 0) buf[rng.int(len)] = rng.pick(INTERESTING_8);
        break;
      case 2:
        if (len >= 4) {
          const off = rng.int(len - 3);
          const v = rng.pick(INTERESTING_32);
          if (rng.chance(0.5)) buf.writeUInt32LE(v, off);
          else buf.writeUInt32BE(v, off);
        }
        break;
      case 3:
        if (len > 0) buf[rng.int(len)] = rng.u32() & 0xff;
        break;
      case 4: {
        const at = rng.int(len + 1);
        buf = Buffer.concat([buf.subarray(0, at), rng.bytes(rng.range(1, 8)), buf.subarray(at)]);
        break;
      }
      case 5:
        if (len > 0) {
          const at = rng.int(len);
          const n = rng.range(1, Math.min(16, len - at));
          buf = Buffer.concat([buf.subarray(0, at), buf.subarray(at + n)]);
        }
        break;
      case 6:
        if (len > 0) {
          const at = rng.int(len);
          const n = rng.range(1, Math.min(32, len - at));
          const to = rng.int(len + 1);
          buf = Buffer.concat([buf.subarray(0, to), buf.subarray(at, at + n), buf.subarray(to)]);
        }
        break;
      case 7:
        if (len > 0) buf = buf.subarray(0, rng.int(len));
        break;
      case 8:
        if (donors.length > 0) {
          const d = rng.pick(donors);
          if (d.length > 0) {
            const from = rng.int(d.length);
            const piece = d.subarray(from, from + rng.range(1, 64));
            const at = rng.int(len + 1);
            buf = Buffer.concat([buf.subarray(0, at), piece, buf.subarray(at)]);
          }
        }
        break;
      default:
        if (len > 1) {
          // Swap two bytes: reorders fields without changing sizes.
          const i = rng.int(len);
          const j = rng.int(len);
          const x = buf[i];
          buf[i] = buf[j];
          buf[j] = x;
        }
    }
  }
  return buf;
}

/** Splits `buf` into chunks of 1..maxChunk bytes at random points (views, no copies). */
export function splitRandomly(rng: Prng, buf: Buffer, maxChunk = 64): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < buf.length; ) {
    const n = Math.min(buf.length - off, rng.range(1, maxChunk));
    out.push(buf.subarray(off, off + n));
    off += n;
  }
  return out;
}

/** Splits `buf` into one-byte chunks. */
export function splitBytes(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; i++) out.push(buf.subarray(i, i + 1));
  return out;
}

/** A decoder as every incremental decoder in src/protocol/ shapes it. */
export interface PushDecoder<T> {
  push(chunk: Buffer): void;
  next(): T | undefined;
}

/** Pushes every chunk and drains `next()` after each push; returns everything decoded in order. */
export function feed<T>(decoder: PushDecoder<T>, chunks: readonly Buffer[]): T[] {
  const out: T[] = [];
  for (const c of chunks) {
    decoder.push(c);
    for (let v = decoder.next(); v !== undefined; v = decoder.next()) out.push(v);
  }
  return out;
}

export interface FuzzOptions {
  name: string;
  /** Valid inputs to mutate (also used as splice donors). */
  seeds: readonly Buffer[];
  /** Mutated inputs to try (the issue asks for ≥ 100,000 per decoder). */
  iterations?: number;
  /** Hang guard: stop and fail after this long (default 240 s, under the runner's 300 s). */
  timeBudgetMs?: number;
  /** Pieces of the format to insert (XML tags, entity starts, bplist markers…). */
  tokens?: readonly Buffer[];
  /** Error codes that count as a correct rejection; default any MUXWIRE_ERR_* code. */
  codes?: readonly string[];
  /** Decodes one input; throw to reject it. `rng` is for random splits. */
  run(input: Buffer, rng: Prng): void;
}

export interface FuzzStats {
  seed: number;
  iterations: number;
  accepted: number;
  rejected: Map<string, number>;
  elapsedMs: number;
}

/** The input count a fuzz test's title states ("… 100,000 mutated streams" → 100000). */
export function claimedInputs(title: string): number | undefined {
  const m = /(\d{1,3}(?:,\d{3})+|\d+) (?:mutated|random|inputs)/.exec(title);
  return m === null ? undefined : Number(m[1]!.replace(/,/g, ''));
}

/**
 * Runs the mutation loop. Fails (with seed, iteration and input hex) on any outcome other than a
 * value or a coded MuxwireError.
 */
export function runFuzz(t: TestContext | undefined, opts: FuzzOptions): FuzzStats {
  const seed = fuzzSeed(t, opts.name);
  const rng = new Prng(seed);
  const iterations = opts.iterations ?? 100_000;
  const budget = opts.timeBudgetMs ?? 240_000;
  const claimed = t !== undefined ? claimedInputs(t.name) : iterations;
  assert.ok(claimed !== undefined, `fuzz test title "${t?.name}" does not say how many inputs it runs`);
  assert.ok(iterations >= claimed, `${opts.name}: ${iterations} iterations, fewer than the ${claimed} the title claims`);
  const start = Date.now();
  const stats: FuzzStats = { seed, iterations: 0, accepted: 0, rejected: new Map(), elapsedMs: 0 };
  for (let i = 0; i < iterations; i++) {
    if ((i & 1023) === 0 && Date.now() - start > budget) {
      assert.fail(`${opts.name}: time budget of ${budget} ms reached after ${i} of ${iterations} inputs (seed ${seed})`);
    }
    const base = rng.pick(opts.seeds);
    const input = rng.chance(0.05) ? base : mutate(rng, base, opts.seeds, opts.tokens);
    try {
      opts.run(input, rng);
      stats.accepted++;
    } catch (err) {
      const ok =
        err instanceof MuxwireError &&
        typeof err.code === 'string' &&
        (opts.codes ? opts.codes.includes(err.code) : err.code.startsWith('MUXWIRE_ERR_'));
      if (!ok) {
        assert.fail(
          `${opts.name}: input ${i} (seed ${seed}) gave ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}\n` +
            `input: ${input.toString('hex')}\n${err instanceof Error ? err.stack : ''}`,
        );
      }
      stats.rejected.set(err.code, (stats.rejected.get(err.code) ?? 0) + 1);
    }
    stats.iterations++;
  }
  stats.elapsedMs = Date.now() - start;
  const rejected = [...stats.rejected].map(([c, n]) => `${c}=${n}`).join(' ');
  t?.diagnostic(`${opts.name}: ${stats.iterations} inputs in ${stats.elapsedMs} ms, ${stats.accepted} accepted, rejected: ${rejected}`);
  assert.ok(stats.iterations >= claimed, `${opts.name}: ran ${stats.iterations} inputs, fewer than the ${claimed} claimed`);
  return stats;
}
