/**
 * A plaintext lockdown peer at the byte level, for tests that must see exactly what goes over the
 * wire: send a framed request (XML or binary), read back one frame's raw body and its decoded value.
 */
import type { Duplex } from 'node:stream';
import { encodePlistFrame, PlistFrameDecoder } from '../../src/protocol/plist-frame.js';
import { decodePlist, isPlistDict, type PlistDict, type PlistValue } from '../../src/protocol/plist.js';

export interface RawReply {
  body: Buffer;
  value: PlistDict;
}

export class RawPeer {
  readonly #stream: Duplex;
  readonly #decoder = new PlistFrameDecoder();
  readonly #bodies: Buffer[] = [];
  #wake: (() => void) | undefined;
  #ended = false;

  constructor(stream: Duplex) {
    this.#stream = stream;
    stream.on('data', (chunk: Buffer) => {
      this.#decoder.push(chunk);
      for (let b = this.#decoder.nextBody(); b !== undefined; b = this.#decoder.nextBody()) this.#bodies.push(b);
      this.#wake?.();
    });
    const end = (): void => {
      this.#ended = true;
      this.#wake?.();
    };
    stream.on('end', end);
    stream.on('close', end);
    stream.on('error', end);
  }

  /** True once the device closed the stream. */
  get ended(): boolean {
    return this.#ended;
  }

  send(value: PlistValue, format: 'xml' | 'binary' = 'xml'): void {
    this.#stream.write(encodePlistFrame(value, format));
  }

  /** Writes raw bytes (e.g. a request split in two writes, as libimobiledevice sends). */
  write(bytes: Buffer): void {
    this.#stream.write(bytes);
  }

  async reply(timeoutMs = 10_000): Promise<RawReply> {
    const deadline = Date.now() + timeoutMs;
    while (this.#bodies.length === 0) {
      if (this.#ended) throw new Error('stream ended before a reply');
      if (Date.now() > deadline) throw new Error('no reply in time');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 50);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#wake = undefined;
    }
    const body = this.#bodies.shift()!;
    const value = decodePlist(body);
    if (!isPlistDict(value)) throw new Error('reply is not a dict');
    return { body, value };
  }

  async request(value: PlistDict, format: 'xml' | 'binary' = 'xml'): Promise<RawReply> {
    this.send(value, format);
    return this.reply();
  }

  close(): void {
    this.#stream.destroy();
  }
}
