/**
 * A request's arguments as the simulated device reads them.
 *
 * Clients disagree on where `this_length` falls (lockdown-afc.md §9.2): LIMD, GOIOS and APPIUM put
 * the arguments inside it and bulk data after it, PMD3 sets `this_length = entire_length` for all but
 * WRITE. The server rule is to treat the `entire_length - 40` bytes as one blob for every opcode. This
 * class presents the two regions of a packet as that blob without joining them, so a 16 MiB
 * FILE_WRITE is written to disk from the decoder's buffers with no copy.
 *
 * ```
 *  40-byte header | headerPayload (…this_length) | payload (…entire_length)
 *                 |<-------------- one argument blob ---------------->|
 * ```
 */
import { AfcStatus } from '../protocol/afc.js';
import { AfcStatusError } from './afc-fs.js';

export class AfcArgs {
  readonly #head: Buffer;
  readonly #tail: Buffer;

  constructor(headerPayload: Buffer, payload: Buffer) {
    this.#head = headerPayload;
    this.#tail = payload;
  }

  /** Bytes in the blob. */
  get length(): number {
    return this.#head.length + this.#tail.length;
  }

  /** The u64 LE at `offset`; INVALID_ARG when the blob is too short. */
  u64(offset: number): bigint {
    return this.#fixed(offset).readBigUInt64LE(0);
  }

  /** The s64 LE at `offset` (FILE_SEEK's offset). */
  s64(offset: number): bigint {
    return this.#fixed(offset).readBigInt64LE(0);
  }

  /** The u64 at `offset` as a safe integer; INVALID_ARG when larger. */
  safeU64(offset: number, what: string): number {
    const v = this.u64(offset);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new AfcStatusError(AfcStatus.INVALID_ARG, `${what} ${v} is too large`);
    return Number(v);
  }

  /**
   * The path from `offset` to the end: UTF-8, at most one trailing NUL stripped (§9.2: GOIOS and
   * APPIUM send none, LIMD and PMD3 one). An empty path is INVALID_ARG.
   */
  path(offset: number): string {
    let bytes = this.bytes(offset);
    if (bytes.length > 0 && bytes[bytes.length - 1] === 0) bytes = bytes.subarray(0, -1);
    if (bytes.length === 0) throw new AfcStatusError(AfcStatus.INVALID_ARG, 'empty path');
    return bytes.toString('utf8');
  }

  /**
   * Two NUL-separated paths from `offset` (RENAME_PATH, MAKE_LINK: `a\0b\0`; §9.2 says both always
   * carry NULs, but the last one is tolerated without).
   */
  twoPaths(offset: number): [string, string] {
    const bytes = this.bytes(offset);
    const nul = bytes.indexOf(0);
    if (nul <= 0) throw new AfcStatusError(AfcStatus.INVALID_ARG, 'expected two NUL-separated paths');
    let second = bytes.subarray(nul + 1);
    if (second.length > 0 && second[second.length - 1] === 0) second = second.subarray(0, -1);
    if (second.length === 0) throw new AfcStatusError(AfcStatus.INVALID_ARG, 'second path is empty');
    return [bytes.toString('utf8', 0, nul), second.toString('utf8')];
  }

  /**
   * The blob from `offset` on as views (no copy): zero, one or two buffers. FILE_WRITE hands these to
   * writev.
   */
  views(offset: number): Buffer[] {
    const out: Buffer[] = [];
    const head = this.#head;
    if (offset < head.length) out.push(head.subarray(offset));
    const tailStart = Math.max(0, offset - head.length);
    if (tailStart < this.#tail.length) out.push(this.#tail.subarray(tailStart));
    return out;
  }

  /** The blob from `offset` on as one buffer; copies only when it spans both regions (small args). */
  bytes(offset: number): Buffer {
    const parts = this.views(offset);
    if (parts.length === 0) return Buffer.alloc(0);
    if (parts.length === 1) return parts[0]!;
    return Buffer.concat(parts);
  }

  #fixed(offset: number): Buffer {
    if (offset + 8 > this.length) {
      throw new AfcStatusError(AfcStatus.INVALID_ARG, `arguments end before the u64 at ${offset}`);
    }
    if (offset + 8 <= this.#head.length) return this.#head.subarray(offset, offset + 8);
    if (offset >= this.#head.length) return this.#tail.subarray(offset - this.#head.length, offset - this.#head.length + 8);
    return Buffer.concat([this.#head.subarray(offset), this.#tail.subarray(0, 8)]).subarray(0, 8);
  }
}
