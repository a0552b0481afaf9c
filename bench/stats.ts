/**
 * Summaries of repeated measurements: every figure of the bench is reported as the median of its
 * runs with their spread (min..max), never as a single run (docs/ARCHITECTURE.md, conventions §10).
 */

/** The summary of one figure over its repeated runs. */
export interface Summary {
  /** Median of the runs. */
  readonly median: number;
  readonly min: number;
  readonly max: number;
  /** Every run, in the order measured (the warm-up is not among them). */
  readonly runs: readonly number[];
}

/** The `q` quantile (0..1) of `values` by nearest rank; NaN for none. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank]!;
}

/** Median of `values` (mean of the two middle values for an even count). */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Median and spread of `runs`. */
export function summarize(runs: readonly number[]): Summary {
  return {
    median: median(runs),
    min: runs.length ? Math.min(...runs) : Number.NaN,
    max: runs.length ? Math.max(...runs) : Number.NaN,
    runs: [...runs],
  };
}

/** Spread of a summary as a fraction of its median: (max − min) / median. */
export function spread(s: Summary): number {
  return s.median === 0 ? 0 : (s.max - s.min) / s.median;
}
