/**
 * Memory for outgoing data packets, reused instead of allocated per packet.
 *
 * A bulk upload sends one 49152-byte packet per device window step. `Buffer.allocUnsafe` of that
 * size is a new ArrayBuffer each time, and V8 answers that much "external memory" with a garbage
 * collection every few megabytes. The pool cuts packets from one slab, in order, and takes them back
 * when the link says the packet was written (its `done` callback):
 *
 * ```
 *  slab: |  free  | pkt 3 (written) | pkt 4 (in the link) | pkt 5 | ....free.... |
 *                 ^ tail                                          ^ head
 * ```
 *
 * Packets are handed out at `head` and returned in any order; `tail` moves past every returned
 * packet at the front. A packet that does not fit before the slab's end starts again at offset 0
 * (the end is skipped), and when the slab is full the caller falls back to a plain allocation: the
 * pool bounds its own memory and never holds up a send.
 */

interface Span {
  start: number;
  end: number;
  returned: boolean;
}

export class PacketPool {
  readonly #slab: Buffer;
  /** Handed-out spans, oldest first. */
  readonly #spans: Span[] = [];
  #first = 0;
  #head = 0;

  constructor(bytes = 1024 * 1024) {
    this.#slab = Buffer.allocUnsafeSlow(bytes);
  }

  /** Bytes handed out and not yet returned (for tests and stats). */
  get inUse(): number {
    let n = 0;
    for (let i = this.#first; i < this.#spans.length; i++) {
      const s = this.#spans[i]!;
      if (!s.returned) n += s.end - s.start;
    }
    return n;
  }

  /**
   * A buffer of `n` bytes and the function that returns it to the pool, or undefined when the slab
   * has no room (allocate normally then). Call `release` exactly once, when nothing reads the
   * buffer any more.
   */
  take(n: number): { buf: Buffer; release: () => void } | undefined {
    const start = this.#place(n);
    if (start < 0) return undefined;
    const span: Span = { start, end: start + n, returned: false };
    this.#spans.push(span);
    this.#head = span.end;
    return {
      buf: this.#slab.subarray(start, span.end),
      release: () => this.#release(span),
    };
  }

  /** Where `n` bytes fit without reaching an unreturned span, or -1. */
  #place(n: number): number {
    const size = this.#slab.length;
    if (n > size) return -1;
    if (this.#first === this.#spans.length) {
      // Nothing out: start over at the front.
      this.#spans.length = 0;
      this.#first = 0;
      return 0;
    }
    const tail = this.#spans[this.#first]!.start;
    const head = this.#head;
    if (head > tail) {
      // In use: [tail, head). Room after head, else at the front up to tail.
      if (head + n <= size) return head;
      return n <= tail ? 0 : -1;
    }
    // Wrapped, in use: [tail, end) and [0, head). Room: [head, tail).
    return head + n <= tail ? head : -1;
  }

  #release(span: Span): void {
    if (span.returned) return;
    span.returned = true;
    const spans = this.#spans;
    while (this.#first < spans.length && spans[this.#first]!.returned) this.#first++;
    if (this.#first === spans.length) {
      spans.length = 0;
      this.#first = 0;
      this.#head = 0;
    } else if (this.#first > 64 && this.#first * 2 > spans.length) {
      spans.splice(0, this.#first);
      this.#first = 0;
    }
  }
}
