/**
 * A "property list service" connection: length-prefixed plists over one Duplex, in plaintext or
 * inside TLS, switchable both ways on the same stream (lockdown-afc.md §1.2, §5). Used by the host's
 * LockdownClient (TLS client) and by the simulated lockdownd (TLS server).
 *
 * Frame (lockdown-afc.md §1.2):
 *
 * ```
 *  0                 4
 * +-----------------+--------------------------------------+
 * | length (u32 BE) | plist body: `<?xml` … or `bplist00` … |
 * +-----------------+--------------------------------------+
 * ```
 *
 * States, and what each waits for:
 * - `plain`: raw bytes are frames.
 * - `tls`: raw bytes are TLS records; whole records go to the TLS engine, its plaintext is frames.
 * - `unwrapping`: TLS was turned off; TLS records still arriving (the peer's close_notify) are
 *   dropped, and the first byte that cannot start a record (a frame length starts with 0x00)
 *   returns the stream to `plain`.
 * - `closed`: the stream ended or failed; nothing more is read or written.
 */
import type { Duplex } from 'node:stream';
import { TLSSocket, connect as tlsConnect, createSecureContext } from 'node:tls';
import type { ConnectionOptions, SecureContextOptions } from 'node:tls';
import { PlistFrameDecoder, encodePlistFrame } from '../protocol/plist-frame.js';
import type { PlistValue } from '../protocol/plist.js';
import { MuxwireError, toMuxwireError } from '../errors.js';
import { TlsCarrier, wholeRecordsLength, ERR_TLS, TLS_RECORD_HEADER } from './tls-carrier.js';

/** One decoded message and the encoding it came in. */
export interface ChannelMessage {
  value: PlistValue;
  format: 'xml' | 'binary';
}

type ChannelState = 'plain' | 'tls' | 'unwrapping' | 'closed';

/** Options for a {@link PlistChannel}. */
export interface PlistChannelOptions {
  /** Largest accepted frame body in bytes (default 4 MiB; lockdown messages are a few KiB). */
  maxFrame?: number;
  /** Called for each message received, in order. */
  onMessage: (msg: ChannelMessage) => void;
  /** Called once when the stream ends (no error) or fails. */
  onClose: (err?: MuxwireError) => void;
}

/** A plist-framed connection whose transport can be switched into TLS and back. */
export class PlistChannel {
  readonly #raw: Duplex;
  readonly #decoder: PlistFrameDecoder;
  readonly #onMessage: (msg: ChannelMessage) => void;
  readonly #onClose: (err?: MuxwireError) => void;
  #state: ChannelState = 'plain';
  #tls: TLSSocket | undefined;
  #carrier: TlsCarrier | undefined;
  /** Raw bytes not yet handed on (a partial TLS record). */
  #pending: Buffer = Buffer.alloc(0);
  /**
   * Plaintext frames written while our close_notify is still on its way out through the TLS
   * engine: they must not overtake it, or the peer reads a frame while it expects TLS.
   */
  #held: Buffer[] | undefined;
  /** Fails the TLS handshake in progress, if any (the stream closed under it). */
  #abortHandshake: ((err: MuxwireError) => void) | undefined;
  readonly #onRawData = (chunk: Buffer): void => this.#receiveRaw(chunk);
  readonly #onRawEnd = (): void => this.#close();
  readonly #onRawError = (err: Error): void => this.#close(toMuxwireError(err, 'MUXWIRE_ERR_IO'));

  constructor(raw: Duplex, opts: PlistChannelOptions) {
    this.#raw = raw;
    this.#decoder = new PlistFrameDecoder({ maxLength: opts.maxFrame ?? 4 * 1024 * 1024 });
    this.#onMessage = opts.onMessage;
    this.#onClose = opts.onClose;
    raw.on('data', this.#onRawData);
    raw.on('end', this.#onRawEnd);
    raw.on('close', this.#onRawEnd);
    raw.on('error', this.#onRawError);
  }

  /** True while TLS is on. */
  get secure(): boolean {
    return this.#state === 'tls';
  }

  /** True once the stream has ended or failed. */
  get closed(): boolean {
    return this.#state === 'closed';
  }

  /** The TLS socket while TLS is on (for peer-certificate checks and protocol details). */
  get tlsSocket(): TLSSocket | undefined {
    return this.#state === 'tls' ? this.#tls : undefined;
  }

  /** Sends one message, in plaintext or inside TLS as the state says. */
  send(value: PlistValue, format: 'xml' | 'binary' = 'xml'): void {
    if (this.#state === 'closed') return;
    const frame = encodePlistFrame(value, format);
    if (this.#state === 'tls') this.#tls!.write(frame);
    else if (this.#held) this.#held.push(frame);
    else this.#raw.write(frame);
  }

  /**
   * Turns TLS on as the server (the device side, §5.1): the next raw bytes are the peer's
   * ClientHello. Resolves once the handshake is done; `verifyPeer` then decides whether the
   * client's certificate (if any) is acceptable, returning a reason to refuse it.
   */
  startTlsServer(
    context: SecureContextOptions,
    verifyPeer: (tls: TLSSocket) => string | undefined,
    timeoutMs = 10_000,
  ): Promise<void> {
    const carrier = this.#newCarrier();
    const tls = new TLSSocket(carrier, {
      isServer: true,
      secureContext: createSecureContext(context),
      requestCert: true,
      rejectUnauthorized: false,
    });
    return this.#whenSecure(tls, 'secure', timeoutMs, () => verifyPeer(tls));
  }

  /** Turns TLS on as the client (the host side, §5.1), right after a StartSession reply. */
  startTlsClient(options: ConnectionOptions, timeoutMs = 10_000): Promise<void> {
    const carrier = this.#newCarrier();
    const tls = tlsConnect({ ...options, socket: carrier });
    return this.#whenSecure(tls, 'secureConnect', timeoutMs, () => undefined);
  }

  /**
   * Turns TLS off (§5.4): sends `lastMessage` (the StopSession reply, on the device side) as the
   * last TLS data, then close_notify, and from now on reads plaintext frames, dropping any TLS
   * records the peer still sends (its close_notify).
   */
  stopTls(lastMessage?: PlistValue, format: 'xml' | 'binary' = 'xml'): void {
    if (this.#state !== 'tls') return;
    const tls = this.#tls!;
    const carrier = this.#carrier!;
    this.#state = 'unwrapping';
    this.#tls = undefined;
    this.#carrier = undefined;
    tls.removeAllListeners('data');
    tls.removeAllListeners('error');
    tls.on('error', ignore);
    tls.on('data', ignore);
    const held: Buffer[] = [];
    this.#held = held;
    let released = false;
    // Runs once the close_notify has been handed to the raw stream (the carrier's final comes
    // after every earlier write), or when the TLS engine dies without sending it.
    const release = (): void => {
      if (released) return;
      released = true;
      carrier.detach();
      tls.destroy();
      if (this.#held === held) this.#held = undefined;
      if (this.#state === 'closed') return;
      for (const frame of held) this.#raw.write(frame);
    };
    carrier.onFinal(release);
    tls.once('close', release);
    if (lastMessage !== undefined) tls.write(encodePlistFrame(lastMessage, format));
    tls.end();
    // Bytes already buffered behind the last record belong to the unwrapping stage.
    if (this.#pending.length > 0) this.#unwrap();
  }

  /**
   * Closes the stream. `graceful` lets what was sent go out first (inside TLS: then close_notify)
   * and ends the stream; otherwise the stream is destroyed at once.
   */
  close(graceful = false): void {
    if (this.#state === 'closed') return;
    const raw = this.#raw;
    if (graceful && this.#state === 'tls') {
      const tls = this.#tls!;
      const carrier = this.#carrier!;
      this.#tls = undefined;
      this.#carrier = undefined;
      this.#close(undefined, true);
      tls.removeAllListeners('data');
      tls.on('error', ignore);
      const finish = (): void => {
        carrier.detach();
        tls.destroy();
        raw.end();
      };
      carrier.onFinal(finish);
      tls.once('close', finish);
      tls.end();
      return;
    }
    const held = this.#held;
    this.#close(undefined, graceful);
    if (graceful) {
      if (held) for (const frame of held) raw.write(frame);
      raw.end();
    }
  }

  #newCarrier(): TlsCarrier {
    if (this.#state !== 'plain') throw new MuxwireError(ERR_TLS, `cannot start TLS in state ${this.#state}`);
    const raw = this.#raw;
    const carrier = new TlsCarrier((chunk, done) => {
      if (raw.destroyed || raw.writableEnded) done();
      else raw.write(chunk, (err) => done(err ?? null));
    });
    this.#carrier = carrier;
    this.#state = 'tls';
    return carrier;
  }

  #whenSecure(tls: TLSSocket, event: 'secure' | 'secureConnect', timeoutMs: number, verify: () => string | undefined): Promise<void> {
    this.#tls = tls;
    tls.on('data', (chunk: Buffer) => this.#receivePlain(chunk));
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const settle = (err?: MuxwireError): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.#abortHandshake = undefined;
        if (err) {
          reject(err);
          this.#close(err);
        } else {
          resolve();
        }
      };
      const timer = setTimeout(() => {
        settle(new MuxwireError('MUXWIRE_ERR_TIMEOUT', `TLS handshake did not finish within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#abortHandshake = settle;
      tls.once(event, () => {
        const refusal = verify();
        settle(refusal === undefined ? undefined : new MuxwireError(ERR_TLS, refusal));
      });
      tls.on('error', (e: Error) => {
        const err = toMuxwireError(e, ERR_TLS, `TLS failed: ${e.message}`);
        if (!settled) settle(err);
        else this.#close(err);
      });
    });
  }

  #receiveRaw(chunk: Buffer): void {
    switch (this.#state) {
      case 'plain':
        this.#receivePlain(chunk);
        return;
      case 'tls': {
        this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
        let whole: number;
        try {
          whole = wholeRecordsLength(this.#pending);
        } catch (err) {
          this.#close(toMuxwireError(err, ERR_TLS));
          return;
        }
        if (whole > 0) {
          const records = this.#pending.subarray(0, whole);
          this.#pending = this.#pending.subarray(whole);
          this.#carrier!.feed(records);
        }
        return;
      }
      case 'unwrapping':
        this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
        this.#unwrap();
        return;
      case 'closed':
        return;
    }
  }

  /** Drops whole TLS records at the front of #pending; plaintext ends the unwrapping stage. */
  #unwrap(): void {
    for (;;) {
      const buf = this.#pending;
      if (buf.length === 0) return;
      const type = buf[0]!;
      if (type < 20 || type > 24) break; // a frame length starts with 0x00: plaintext again
      if (buf.length < TLS_RECORD_HEADER) return;
      const length = buf.readUInt16BE(3);
      if (buf.length < TLS_RECORD_HEADER + length) return;
      this.#pending = buf.subarray(TLS_RECORD_HEADER + length);
    }
    const rest = this.#pending;
    this.#pending = Buffer.alloc(0);
    this.#state = 'plain';
    this.#receivePlain(rest);
  }

  #receivePlain(chunk: Buffer): void {
    if (this.#state === 'closed') return;
    try {
      this.#decoder.push(chunk);
      for (let msg = this.#decoder.next(); msg !== undefined; msg = this.#decoder.next()) {
        this.#onMessage(msg);
        // onMessage may close the channel; TypeScript cannot see that through the call.
        if ((this.#state as ChannelState) === 'closed') return;
      }
    } catch (err) {
      this.#close(toMuxwireError(err, 'MUXWIRE_ERR_BAD_PLIST'));
    }
  }

  /**
   * The one fatal path: stops parsing, lets go of TLS and (unless `keepRaw`, for a graceful end
   * that is still flushing) destroys the raw stream, so the peer sees the close, then reports once.
   */
  #close(err?: MuxwireError, keepRaw = false): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#held = undefined;
    const abort = this.#abortHandshake;
    this.#abortHandshake = undefined;
    abort?.(err ?? new MuxwireError('MUXWIRE_ERR_CLOSED', 'the stream closed during the TLS handshake'));
    this.#raw.off('data', this.#onRawData);
    this.#raw.off('end', this.#onRawEnd);
    this.#raw.off('close', this.#onRawEnd);
    this.#raw.off('error', this.#onRawError);
    this.#raw.on('error', ignore);
    if (this.#tls) {
      this.#tls.removeAllListeners('data');
      this.#tls.on('error', ignore);
      this.#tls.destroy();
      this.#carrier?.detach();
      this.#tls = undefined;
      this.#carrier = undefined;
    }
    if (!keepRaw) this.#raw.destroy();
    this.#onClose(err);
  }
}

function ignore(): void {
  // late events from a stream we have already let go of
}
