/**
 * Views over a list of buffers, without copying: what a short writev leaves to write again
 * (the simulator's AFC writes, the backup host's file writes).
 */

/** The bytes of `parts` after the first `skip`, as views of the same memory. */
export function viewsAfter(parts: readonly Buffer[], skip: number): Buffer[] {
  const out: Buffer[] = [];
  for (const p of parts) {
    if (skip >= p.length) {
      skip -= p.length;
      continue;
    }
    out.push(skip > 0 ? p.subarray(skip) : p);
    skip = 0;
  }
  return out;
}
