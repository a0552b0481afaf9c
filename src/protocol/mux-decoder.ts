/**
 * Splits the device's bulk IN byte stream into mux packets.
 *
 * ```
 * ...│ header (8 or 16 B) │ payload (length − header) │ header │ payload │...
 *          length = whole packet, BE u32 at offset 4 (mux-header.ts)
 * ```
 *
 * Unlike usbmuxd, which assumes one packet per transfer (usbmux.md §2.5) and drops on mismatch,
 * this reads the IN pipe as a byte stream framed by the header length, as netmuxd does: packets
 * may span transfers and a transfer may hold several packets, which is what virtualised USB and
 * our own vusb wire produce. A length below the header size or above `maxPacket` cannot be
 * resynchronised and is MUXWIRE_ERR_BAD_LENGTH.
 */
import { MuxwireError } from '../errors.js';
import { ByteQueue } from './byte-queue.js';
import { decodeMuxHeader, muxHeaderSize } from './mux-header.js';
import type { MuxHeader } from './mux-header.js';

/** usbmuxd's DEV_MRU: the largest device→host packet it can reassemble (usbmux.md §2.5). */
export const MUX_MAX_PACKET_DEFAULT = 65536;

/** One packet as the decoder hands it out. */
export interface MuxPacket {
  header: MuxHeader;
  /**
   * A view into the pushed chunk when the packet arrived in one piece (a copy only when it spanned
   * chunks): valid for as long as the caller does not reuse that chunk's memory.
   */
  payload: Buffer;
}

/** Incremental mux packet decoder: `push` IN transfers, `next` until undefined. */
export class MuxPacketDecoder {
  readonly #queue = new ByteQueue();
  readonly #maxPacket: number;
  #version: 1 | 2;
  #failed: MuxwireError | undefined;

  constructor(opts: { version: 1 | 2; maxPacket?: number }) {
    this.#version = opts.version;
    this.#maxPacket = opts.maxPacket ?? MUX_MAX_PACKET_DEFAULT;
  }

  /** Header version used for the next packet; set it to 2 once VERSION negotiated 2. */
  get version(): 1 | 2 {
    return this.#version;
  }
  set version(v: 1 | 2) {
    if (v !== 1 && v !== 2) throw new MuxwireError('MUXWIRE_ERR_BAD_MESSAGE', `mux version ${String(v)} is not 1 or 2`);
    this.#version = v;
  }

  /** Bytes received and not yet returned as packets. */
  get buffered(): number {
    return this.#queue.length;
  }

  push(chunk: Buffer): void {
    this.#queue.push(chunk);
  }

  /** The next whole packet, or undefined until more bytes arrive. Throws MUXWIRE_ERR_BAD_LENGTH. */
  next(): MuxPacket | undefined {
    if (this.#failed) throw this.#failed;
    const q = this.#queue;
    const size = muxHeaderSize(this.#version);
    if (q.length < size) return undefined;
    // Fast path: read the header in place when it lies in the first chunk.
    const first = q.firstChunk as Buffer;
    const off = q.firstOffset;
    const inPlace = first.length - off >= size;
    const header = inPlace ? decodeMuxHeader(first, this.#version, off) : decodeMuxHeader(q.peek(size), this.#version);
    if (header.length < size || header.length > this.#maxPacket) {
      this.#failed = new MuxwireError(
        'MUXWIRE_ERR_BAD_LENGTH',
        `mux packet length ${header.length} outside ${size}..${this.#maxPacket}`,
        { detail: { length: header.length, protocol: header.protocol } },
      );
      throw this.#failed;
    }
    if (q.length < header.length) return undefined;
    if (inPlace && first.length - off >= header.length) {
      const payload = first.subarray(off + size, off + header.length);
      q.skip(header.length);
      return { header, payload };
    }
    const packet = q.take(header.length);
    return { header, payload: packet.subarray(size) };
  }
}
