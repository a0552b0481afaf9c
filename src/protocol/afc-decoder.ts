/**
 * Splits an AFC byte stream into packets (layout in afc-packet.ts).
 *
 * ```
 * │ 40-byte header │ header payload (this − 40) │ payload (entire − this) │ next header …
 * ```
 *
 * Checks before buffering a body: magic "CFA6LPAA" (else MUXWIRE_ERR_BAD_MAGIC), 40 ≤ this_length
 * ≤ entire_length ≤ maxLength (else MUXWIRE_ERR_BAD_LENGTH). Either failure leaves the decoder
 * failed: there is no way to find the next packet. LIMD sends header+arguments and the bulk
 * payload in two writes, so nothing assumes one read is one packet.
 */
import { MuxwireError } from '../errors.js';
import { ByteQueue } from './byte-queue.js';
import { AFC_HEADER_SIZE, AFC_MAGIC_BYTES } from './afc-packet.js';
import type { AfcPacket } from './afc-packet.js';

/** Default largest packet: 16 MiB, four times pymobiledevice3's 4 MiB read/write chunks. */
export const AFC_MAX_PACKET_DEFAULT = 16 * 1024 * 1024;

function u64(buf: Buffer, off: number): number {
  const lo = buf.readUInt32LE(off);
  const hi = buf.readUInt32LE(off + 4);
  // Values above 2^53 only matter as "too large"; MAX_SAFE_INTEGER stands in for them.
  return hi >= 0x200000 ? Number.MAX_SAFE_INTEGER : hi * 0x100000000 + lo;
}

/** The fields of a packet header, as {@link AfcPacketDecoder.peekHeader} reports them. */
export interface AfcHeader {
  entireLength: number;
  thisLength: number;
  packetNum: bigint | number;
  operation: number;
}

/** Incremental AFC packet decoder: `push` chunks, `next` until undefined; see the file comment for its checks. */
export class AfcPacketDecoder {
  readonly #queue = new ByteQueue();
  readonly #maxLength: number;
  #failed: MuxwireError | undefined;

  /** `maxLength` bounds entire_length, header included. */
  constructor(opts: { maxLength?: number } = {}) {
    this.#maxLength = opts.maxLength ?? AFC_MAX_PACKET_DEFAULT;
  }

  /** Bytes received and not yet returned as packets. */
  get buffered(): number {
    return this.#queue.length;
  }

  push(chunk: Buffer): void {
    this.#queue.push(chunk);
  }

  next(): AfcPacket | undefined {
    const h = this.peekHeader();
    if (h === undefined || this.#queue.length < h.entireLength) return undefined;
    const frame = this.#queue.take(h.entireLength);
    return {
      packetNum: h.packetNum,
      operation: h.operation,
      headerPayload: frame.subarray(AFC_HEADER_SIZE, h.thisLength),
      payload: frame.subarray(h.thisLength),
    };
  }

  /**
   * The next packet's header once its 40 bytes are in (nothing is consumed), with the checks of the
   * file comment; `maxLength` bounds entire_length instead of the decoder's limit, for a caller
   * that streams a large body with {@link discard} and {@link takeUpTo} instead of taking the
   * packet whole (the simulator's FILE_WRITE). Undefined while fewer than 40 bytes are buffered.
   */
  peekHeader(maxLength = this.#maxLength): AfcHeader | undefined {
    if (this.#failed) throw this.#failed;
    const q = this.#queue;
    if (q.length < AFC_HEADER_SIZE) return undefined;
    const h = q.peek(AFC_HEADER_SIZE);
    if (h.compare(AFC_MAGIC_BYTES, 0, 8, 0, 8) !== 0) {
      return this.#fail('MUXWIRE_ERR_BAD_MAGIC', `AFC packet magic ${h.toString('hex', 0, 8)} is not CFA6LPAA`);
    }
    const entire = u64(h, 8);
    const thisLength = u64(h, 16);
    if (entire < AFC_HEADER_SIZE || entire > maxLength) {
      return this.#fail('MUXWIRE_ERR_BAD_LENGTH', `AFC entire_length ${entire} outside ${AFC_HEADER_SIZE}..${maxLength}`);
    }
    if (thisLength < AFC_HEADER_SIZE || thisLength > entire) {
      return this.#fail('MUXWIRE_ERR_BAD_LENGTH', `AFC this_length ${thisLength} outside ${AFC_HEADER_SIZE}..${entire}`);
    }
    const raw = h.readBigUInt64LE(24);
    const packetNum = raw <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(raw) : raw;
    return { entireLength: entire, thisLength, packetNum, operation: u64(h, 32) };
  }

  /** Consumes `n` buffered bytes (n ≤ buffered), e.g. a header read with {@link peekHeader}. */
  discard(n: number): void {
    this.#queue.skip(n);
  }

  /**
   * Consumes and returns up to `n` buffered bytes as a view of one received chunk (no copy): the
   * next piece of a body that is streamed rather than held whole. Empty when nothing is buffered.
   */
  takeUpTo(n: number): Buffer {
    const q = this.#queue;
    const first = q.firstChunk;
    if (first === undefined || n <= 0) return Buffer.alloc(0);
    return q.take(Math.min(n, first.length - q.firstOffset));
  }

  #fail(code: string, message: string): never {
    this.#failed = new MuxwireError(code, message);
    throw this.#failed;
  }
}
