/**
 * A DeviceLink connection on a Duplex, for either side: plist messages in the usual framing and
 * the raw file streams between them (the codec is src/protocol/device-link.ts). Reading pulls from
 * the stream's async iterator, so nothing is read ahead of what the caller asks for: a caller busy
 * writing a file to disk backpressures the peer through the mux window instead of growing memory.
 *
 * The simulator's mobilebackup2 service and the host's BackupClient both use it (the host never
 * imports the simulator; both import this and the codec).
 */
import type { Duplex } from 'node:stream';
import { MuxwireError, toMuxwireError } from '../../errors.js';
import { ByteQueue } from '../../protocol/byte-queue.js';
import { decodePlist } from '../../protocol/plist.js';
import type { PlistValue } from '../../protocol/plist.js';
import { PLIST_FRAME_HEADER_SIZE, encodePlistFrame } from '../../protocol/plist-frame.js';
import { FileStreamDecoder, decodeDeviceLinkMessage } from '../../protocol/device-link.js';
import type { DeviceLinkMessage, FileStreamEvent } from '../../protocol/device-link.js';

/** Largest DeviceLink plist accepted (a Manifest's directory listing can be large). */
export const DL_MAX_MESSAGE = 32 * 1024 * 1024;

/** A DeviceLink connection. */
export class DeviceLinkChannel {
  readonly #stream: Duplex;
  readonly #chunks: AsyncIterator<Buffer>;
  readonly #queue = new ByteQueue();
  readonly #maxMessage: number;
  #ended = false;
  #error: MuxwireError | undefined;

  constructor(stream: Duplex, opts: { maxMessage?: number } = {}) {
    this.#stream = stream;
    this.#maxMessage = opts.maxMessage ?? DL_MAX_MESSAGE;
    this.#chunks = (stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>);
    stream.on('error', (err: Error) => {
      this.#error ??= toMuxwireError(err, 'MUXWIRE_ERR_IO');
    });
  }

  /** The underlying stream. */
  get stream(): Duplex {
    return this.#stream;
  }

  /** Sends one message as a binary plist (as libimobiledevice does). */
  async send(message: PlistValue[]): Promise<void> {
    await this.write(encodePlistFrame(message, 'binary'));
  }

  /**
   * Writes raw bytes, waiting for the stream to drain when it asks to. `released`, when given, is
   * called once the stream is done with `bytes` (its write callback, also on failure): the caller
   * may then use the buffer again.
   */
  async write(bytes: Buffer, released?: () => void): Promise<void> {
    if (this.#error) {
      released?.();
      throw this.#error;
    }
    const s = this.#stream;
    if (s.destroyed || s.writableEnded) {
      released?.();
      throw new MuxwireError('MUXWIRE_ERR_CLOSED', 'the DeviceLink connection is closed');
    }
    if (!s.write(bytes, released && (() => released()))) {
      await new Promise<void>((resolve, reject) => {
        const settle = (err?: MuxwireError): void => {
          s.off('drain', onDrain);
          s.off('close', onClose);
          if (err) reject(err);
          else resolve();
        };
        const onDrain = (): void => settle();
        const onClose = (): void => settle(this.#error ?? new MuxwireError('MUXWIRE_ERR_CLOSED', 'the DeviceLink connection closed while writing'));
        s.on('drain', onDrain);
        s.on('close', onClose);
      });
    }
  }

  /** Reads the next plist message and checks that it is a DeviceLink message. */
  async receive(): Promise<DeviceLinkMessage> {
    return decodeDeviceLinkMessage(await this.receivePlist());
  }

  /** Reads the next framed plist. */
  async receivePlist(): Promise<PlistValue> {
    const head = await this.#read(PLIST_FRAME_HEADER_SIZE);
    const length = head.readUInt32BE(0);
    if (length > this.#maxMessage) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_LENGTH', `DeviceLink message of ${length} bytes exceeds ${this.#maxMessage}`);
    }
    return decodePlist(await this.#read(length));
  }

  /**
   * Reads one file stream (names per file: 1 for what a host sends, 2 for what a device sends),
   * calling `onEvent` for each event and awaiting it, so the consumer's disk writes pace the
   * reading. Resolves at the stream's end marker.
   */
  async receiveFiles(namesPerFile: 1 | 2, onEvent: (e: FileStreamEvent) => Promise<void> | void): Promise<void> {
    const decoder = new FileStreamDecoder(namesPerFile);
    decoder.push(this.#queue.takeAll());
    for (;;) {
      for (let e = decoder.next(); e !== undefined; e = decoder.next()) {
        if (e.kind === 'done') {
          this.#queue.push(decoder.remainder());
          return;
        }
        await onEvent(e);
      }
      decoder.push(await this.#pull());
    }
  }

  /** Ends the connection (what was written goes out first). */
  close(): void {
    if (!this.#stream.destroyed) this.#stream.end();
  }

  /** Destroys the connection at once. */
  destroy(): void {
    this.#stream.destroy();
  }

  async #read(n: number): Promise<Buffer> {
    while (this.#queue.length < n) this.#queue.push(await this.#pull());
    return this.#queue.take(n);
  }

  async #pull(): Promise<Buffer> {
    if (this.#error) throw this.#error;
    if (this.#ended) throw new MuxwireError('MUXWIRE_ERR_CLOSED', 'the DeviceLink connection closed');
    let r: IteratorResult<Buffer>;
    try {
      r = await this.#chunks.next();
    } catch (err) {
      throw (this.#error ??= toMuxwireError(err, 'MUXWIRE_ERR_IO'));
    }
    if (r.done) {
      this.#ended = true;
      throw new MuxwireError('MUXWIRE_ERR_CLOSED', 'the DeviceLink connection closed');
    }
    return r.value;
  }
}
