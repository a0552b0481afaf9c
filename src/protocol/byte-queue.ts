/**
 * The pending bytes of an incremental decoder: a list of received chunks and a running total.
 *
 * ```
 * chunks:  [ c0 ........ ][ c1 ....... ][ c2 ... ]
 *               ^ #offset (bytes of c0 already consumed)
 * length = bytes not yet consumed, across all chunks
 * ```
 *
 * `take(n)` hands out a view (subarray) into the first chunk when the n bytes lie inside it, and
 * copies exactly once, into one buffer of n bytes, only when they span chunks — so a frame that
 * arrives whole costs no copy, and a frame in a thousand pieces costs one (no O(n²) concatenation).
 */
export class ByteQueue {
  #chunks: Buffer[] = [];
  #head = 0;
  #offset = 0;
  #length = 0;

  /** Bytes held and not yet consumed. */
  get length(): number {
    return this.#length;
  }

  /**
   * The first chunk and the offset of the first unconsumed byte in it, so that a decoder can read
   * a header in place without allocating a view (undefined when empty).
   */
  get firstChunk(): Buffer | undefined {
    return this.#chunks[this.#head];
  }
  get firstOffset(): number {
    return this.#offset;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /**
   * The first `n` bytes without consuming them (n ≤ length): a view when they lie in one chunk,
   * else a copy. Used for fixed-size headers.
   */
  peek(n: number): Buffer {
    const first = this.#chunks[this.#head];
    if (first.length - this.#offset >= n) return first.subarray(this.#offset, this.#offset + n);
    return this.#copy(n, false);
  }

  /** Consumes and returns the first `n` bytes (n ≤ length): a view if possible, else one copy. */
  take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.#chunks[this.#head];
    const avail = first.length - this.#offset;
    if (avail >= n) {
      const out = first.subarray(this.#offset, this.#offset + n);
      this.#offset += n;
      this.#length -= n;
      if (this.#offset === first.length) this.#dropHead();
      return out;
    }
    return this.#copy(n, true);
  }

  /** Consumes `n` bytes (n ≤ length) without returning them. */
  skip(n: number): void {
    this.#length -= n;
    while (n > 0) {
      const first = this.#chunks[this.#head];
      const avail = first.length - this.#offset;
      if (avail > n) {
        this.#offset += n;
        return;
      }
      n -= avail;
      this.#dropHead();
    }
  }

  /** Consumes and returns everything held. */
  takeAll(): Buffer {
    return this.take(this.#length);
  }

  /** Forgets everything held. */
  clear(): void {
    this.#chunks = [];
    this.#head = 0;
    this.#offset = 0;
    this.#length = 0;
  }

  #dropHead(): void {
    this.#offset = 0;
    this.#head++;
    if (this.#head === this.#chunks.length) {
      this.#chunks.length = 0;
      this.#head = 0;
    } else if (this.#head >= 64 && this.#head * 2 >= this.#chunks.length) {
      // Compact now and then so a long byte-at-a-time stream does not keep dead chunk slots.
      this.#chunks = this.#chunks.slice(this.#head);
      this.#head = 0;
    }
  }

  #copy(n: number, consume: boolean): Buffer {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    let idx = this.#head;
    let off = this.#offset;
    while (filled < n) {
      const c = this.#chunks[idx];
      const k = Math.min(c.length - off, n - filled);
      c.copy(out, filled, off, off + k);
      filled += k;
      off += k;
      if (off === c.length) {
        idx++;
        off = 0;
      }
    }
    if (consume) this.skip(n);
    return out;
  }
}
