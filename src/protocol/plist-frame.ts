/**
 * Framing of lockdownd and every "property list service" (lockdown-afc.md §1.2).
 *
 * ```
 * off  size  field
 *  0   4     length   u32 BIG-endian, bytes of plist that follow (no other header)
 *  4   n     plist    XML (LIMD, pymobiledevice3, go-ios, real lockdownd) or bplist00 (appium)
 *
 * e.g. 00 00 01 2C then 300 bytes beginning "<?xml version="1.0" encoding="UTF-8"?>"
 * ```
 *
 * LIMD sends the length and the body in two writes, so the decoder never assumes one read is one
 * message.
 */
import { MuxwireError } from '../errors.js';
import { ByteQueue } from './byte-queue.js';
import { decodePlist, encodeBinaryPlist, encodeXmlPlist, isBinaryPlist } from './plist.js';
import type { PlistValue } from './plist.js';

/** Size of the length prefix. */
export const PLIST_FRAME_HEADER_SIZE = 4;

/** Default largest body: go-ios's `maxMessageSize` (1 << 24); appium allows 1 MiB. */
export const PLIST_FRAME_MAX_DEFAULT = 16 * 1024 * 1024;

/** The two plist encodings a frame may carry. */
export type PlistFormat = 'xml' | 'binary';

/** One framed message in one buffer: the length prefix and the encoded plist. */
export function encodePlistFrame(v: PlistValue, format: PlistFormat = 'xml'): Buffer {
  const body = format === 'binary' ? encodeBinaryPlist(v) : encodeXmlPlist(v);
  const out = Buffer.allocUnsafe(PLIST_FRAME_HEADER_SIZE + body.length);
  out.writeUInt32BE(body.length, 0);
  body.copy(out, PLIST_FRAME_HEADER_SIZE);
  return out;
}

/**
 * Splits a plist service's byte stream into decoded plists. A length above `maxLength` (default
 * 16 MiB) is MUXWIRE_ERR_BAD_LENGTH before the body is buffered, and leaves the decoder failed. A
 * body that is not a plist is MUXWIRE_ERR_BAD_PLIST; that frame is consumed and framing stays
 * intact, so the caller may decide to carry on.
 */
export class PlistFrameDecoder {
  readonly #queue = new ByteQueue();
  readonly #maxLength: number;
  #failed: MuxwireError | undefined;

  constructor(opts: { maxLength?: number } = {}) {
    this.#maxLength = opts.maxLength ?? PLIST_FRAME_MAX_DEFAULT;
  }

  /** Bytes received and not yet returned. */
  get buffered(): number {
    return this.#queue.length;
  }

  push(chunk: Buffer): void {
    this.#queue.push(chunk);
  }

  next(): { value: PlistValue; format: PlistFormat } | undefined {
    const body = this.nextBody();
    if (body === undefined) return undefined;
    return { value: decodePlist(body), format: isBinaryPlist(body) ? 'binary' : 'xml' };
  }

  /** The next frame's undecoded body (a view when it arrived in one chunk). */
  nextBody(): Buffer | undefined {
    if (this.#failed) throw this.#failed;
    const q = this.#queue;
    if (q.length < PLIST_FRAME_HEADER_SIZE) return undefined;
    const length = q.peek(PLIST_FRAME_HEADER_SIZE).readUInt32BE(0);
    if (length > this.#maxLength) {
      this.#failed = new MuxwireError('MUXWIRE_ERR_BAD_LENGTH', `plist frame of ${length} bytes exceeds ${this.#maxLength}`, {
        detail: { length, maxLength: this.#maxLength },
      });
      throw this.#failed;
    }
    if (q.length < PLIST_FRAME_HEADER_SIZE + length) return undefined;
    q.skip(PLIST_FRAME_HEADER_SIZE);
    return q.take(length);
  }

  /** Consumes and returns every byte not yet decoded (e.g. when the stream switches to TLS). */
  remainder(): Buffer {
    return this.#queue.takeAll();
  }
}
