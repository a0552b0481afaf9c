/**
 * TLS that can be switched on and off on one stream, as lockdownd does: StartSession's reply is
 * plaintext and the next bytes are a ClientHello; StopSession's reply is the last TLS record, then
 * each side sends a close_notify alert and the same stream carries plaintext frames again
 * (lockdown-afc.md §5.1, §5.4).
 *
 * Node's TLSSocket owns whatever stream it wraps, so it never wraps the raw stream: it wraps a
 * {@link TlsCarrier}, a private Duplex into which we push only *whole* TLS records cut from the raw
 * bytes. When TLS is turned off we stop pushing at a record boundary, so nothing the peer sends
 * afterwards (its close_notify, then plaintext) can be swallowed by the TLS engine.
 *
 * TLS record layer (RFC 5246 §6.2.1), big-endian:
 *
 * ```
 *  0        1        2        3        4        5 ...
 * +--------+--------+--------+--------+--------+------------------+
 * | type   | version (major, minor)   | length (u16 BE) | fragment |
 * +--------+--------+--------+--------+--------+------------------+
 *   20 change_cipher_spec, 21 alert, 22 handshake, 23 application_data, 24 heartbeat
 * ```
 */
import { Duplex } from 'node:stream';
import { MuxwireError } from '../errors.js';

/** Code for bytes that should be TLS records but are not. */
export const ERR_TLS = 'MUXWIRE_ERR_TLS';

/** TLS record header size. */
export const TLS_RECORD_HEADER = 5;
/** Largest record fragment TLS 1.2 allows (2^14 + 2048, RFC 5246 §6.2.3). */
export const TLS_MAX_FRAGMENT = 16384 + 2048;
/** Content type of an alert record (close_notify travels in one). */
export const TLS_ALERT = 21;

/**
 * Cuts whole TLS records off the front of `buf`. Returns how many bytes they span (possibly 0).
 * Throws MUXWIRE_ERR_TLS when a header is not a TLS record header or declares an oversized length.
 */
export function wholeRecordsLength(buf: Buffer): number {
  let at = 0;
  while (buf.length - at >= TLS_RECORD_HEADER) {
    const type = buf[at]!;
    const major = buf[at + 1]!;
    const length = buf.readUInt16BE(at + 3);
    if (type < 20 || type > 24 || major !== 3) {
      throw new MuxwireError(ERR_TLS, `not a TLS record (type ${type}, version ${major}.${buf[at + 2]})`);
    }
    if (length > TLS_MAX_FRAGMENT) throw new MuxwireError(ERR_TLS, `TLS record length ${length} exceeds ${TLS_MAX_FRAGMENT}`);
    if (buf.length - at < TLS_RECORD_HEADER + length) break;
    at += TLS_RECORD_HEADER + length;
  }
  return at;
}

/**
 * The Duplex a TLSSocket wraps. Its readable side is fed by {@link feed}; what the TLS engine
 * writes goes to `out` until {@link detach} is called, after which writes are dropped.
 */
export class TlsCarrier extends Duplex {
  #out: ((chunk: Buffer, done: (err?: Error | null) => void) => void) | undefined;
  #onFinal: (() => void) | undefined;

  constructor(out: (chunk: Buffer, done: (err?: Error | null) => void) => void) {
    super({ allowHalfOpen: true });
    this.#out = out;
  }

  /** Hands received TLS records to the TLS engine. */
  feed(records: Buffer): void {
    this.push(records);
  }

  /** Called once the TLS engine has ended its writing side, i.e. its close_notify is written. */
  onFinal(cb: () => void): void {
    this.#onFinal = cb;
  }

  /** Stops forwarding the engine's output; later writes are dropped. */
  detach(): void {
    this.#out = undefined;
  }

  override _read(): void {
    // Fed by push(); lockdown traffic is a request and a reply at a time, so no flow control here.
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    if (this.#out === undefined) done();
    else this.#out(chunk, done);
  }

  override _final(done: (err?: Error | null) => void): void {
    // The raw stream stays open: only the TLS layer is ending.
    done();
    const cb = this.#onFinal;
    this.#onFinal = undefined;
    cb?.();
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    this.#out = undefined;
    done(err);
  }
}
