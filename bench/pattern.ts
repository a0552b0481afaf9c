/**
 * The byte pattern every end-to-end transfer carries, and its cheap check. The simulated device's
 * source sends `byte[k] = k mod 251` from the start of each answer (src/sim/bench-services.ts); the
 * bench sends and stores the same pattern, so every byte received can be checked against it with
 * memcmp (Buffer.compare against a precomputed block) instead of a JavaScript loop per byte, which
 * would cost the client more than the transfer it measures.
 */
import { SOURCE_PATTERN_PERIOD, sourcePattern } from '../src/sim/bench-services.js';

/** Largest slice checked or produced in one step. */
const SLICE = 1024 * 1024;

/** The pattern from offset 0, long enough that any slice of SLICE bytes starts at any phase. */
const BLOCK = sourcePattern(0, SLICE + SOURCE_PATTERN_PERIOD);

/**
 * A view of `length` (≤ 1 MiB) pattern bytes starting at stream offset `offset`; shared memory,
 * never written to.
 */
export function patternSlice(offset: number, length: number): Buffer {
  if (length > SLICE) throw new RangeError(`pattern slices are at most ${SLICE} bytes`);
  const phase = offset % SOURCE_PATTERN_PERIOD;
  return BLOCK.subarray(phase, phase + length);
}

/**
 * Index of the first byte of `chunk` that breaks the pattern when `chunk[0]` sits at stream offset
 * `offset`; -1 when all of it matches.
 */
export function patternMismatch(chunk: Buffer, offset: number): number {
  for (let at = 0; at < chunk.length; at += SLICE) {
    const part = chunk.subarray(at, Math.min(chunk.length, at + SLICE));
    if (part.equals(patternSlice(offset + at, part.length))) continue;
    for (let i = 0; i < part.length; i++) {
      if (part[i] !== (offset + at + i) % SOURCE_PATTERN_PERIOD) return at + i;
    }
  }
  return -1;
}

/** Counts bytes of a pattern stream and fails on the first one out of place. */
export class PatternChecker {
  #offset = 0;
  readonly #label: string;

  constructor(label: string) {
    this.#label = label;
  }

  /** Bytes checked so far. */
  get bytes(): number {
    return this.#offset;
  }

  /** Checks the next chunk of the stream; throws naming the offset of a wrong byte. */
  push(chunk: Buffer): void {
    const bad = patternMismatch(chunk, this.#offset);
    if (bad >= 0) {
      const at = this.#offset + bad;
      throw new Error(`${this.#label}: byte ${at} is ${chunk[bad]}, the pattern has ${at % SOURCE_PATTERN_PERIOD}`);
    }
    this.#offset += chunk.length;
  }
}
