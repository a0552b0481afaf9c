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
    if (this.#failed) throw this.#failed;
    const q = this.#queue;
    if (q.length < AFC_HEADER_SIZE) return undefined;
    const h = q.peek(AFC_HEADER_SIZE);
    if (h.compare(AFC_MAGIC_BYTES, 0, 8, 0, 8) !== 0) {
      return this.#fail('MUXWIRE_ERR_BAD_MAGIC', `AFC packet magic ${h.toString('hex', 0, 8)} is not CFA6LPAA`);
    }
    const entire = u64(h, 8);
    const thisLength = u64(h, 16);
    if (entire < AFC_HEADER_SIZE || entire > this.#maxLength) {
      return this.#fail('MUXWIRE_ERR_BAD_LENGTH', `AFC entire_length ${entire} outside ${AFC_HEADER_SIZE}..${this.#maxLength}`);
    }
    if (thisLength < AFC_HEADER_SIZE || thisLength > entire) {
      return this.#fail('MUXWIRE_ERR_BAD_LENGTH', `AFC this_length ${thisLength} outside ${AFC_HEADER_SIZE}..${entire}`);
    }
    if (q.length < entire) return undefined;
    const raw = h.readBigUInt64LE(24);
    const packetNum = raw <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(raw) : raw;
    const operation = u64(h, 32);
    const frame = q.take(entire);
    return {
      packetNum,
      operation,
      headerPayload: frame.subarray(AFC_HEADER_SIZE, thisLength),
      payload: frame.subarray(thisLength),
    };
  }

  #fail(code: string, message: string): never {
    this.#failed = new MuxwireError(code, message);
    throw this.#failed;
  }
}
