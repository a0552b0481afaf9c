/**
 * A bare usbmuxd client for daemon tests: writes exact bytes and reads replies with the protocol
 * decoder, so tests can speak binary or plist, send malformed input, and switch to tunnel bytes.
 */
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { once } from 'node:events';
import { ClientMessageDecoder, encodeClientMessage } from '../../../src/protocol/client-message.js';
import type { ClientMessage } from '../../../src/protocol/client-message.js';
import { plistRequest } from '../../../src/protocol/client-plist.js';
import type { PlistDict } from '../../../src/protocol/plist.js';

export class RawClient {
  readonly socket: Socket;
  readonly #decoder = new ClientMessageDecoder({ maxLength: 16 * 1024 * 1024 });
  #messages: ClientMessage[] = [];
  #waiters: Array<() => void> = [];
  #tunnel = false;
  #tunnelChunks: Buffer[] = [];
  #tunnelBytes = 0;
  #closed = false;
  #tag = 1;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      if (this.#tunnel) {
        this.#tunnelChunks.push(chunk);
        this.#tunnelBytes += chunk.length;
      } else {
        this.#decoder.push(chunk);
        for (let m = this.#decoder.next(); m; m = this.#decoder.next()) this.#messages.push(m);
      }
      this.#wake();
    });
    socket.on('close', () => {
      this.#closed = true;
      this.#wake();
    });
    socket.on('error', () => undefined);
  }

  static async open(path: string): Promise<RawClient> {
    const socket = connect({ path });
    await once(socket, 'connect');
    return new RawClient(socket);
  }

  /** A client on a socket that is already connected (TCP, for instance). */
  static wrap(socket: Socket): RawClient {
    return new RawClient(socket);
  }

  get closed(): boolean {
    return this.#closed;
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  async #until(ready: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!ready()) {
      if (this.#closed) throw new Error(`connection closed while waiting for ${what}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 50);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Writes raw bytes. */
  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Sends a plist request with a fresh tag and returns the tag. */
  sendPlist(messageType: string, fields: PlistDict = {}): number {
    const tag = this.#tag++;
    this.write(encodeClientMessage({ kind: 'plist', tag, version: 1, plist: plistRequest(messageType, fields, 'muxwire-test') }));
    return tag;
  }

  /** The next message from the daemon. */
  async next(): Promise<ClientMessage> {
    await this.#until(() => this.#messages.length > 0, 'a message');
    return this.#messages.shift()!;
  }

  /** The next message, which must be a plist; returns its dictionary. */
  async nextPlist(): Promise<PlistDict> {
    const m = await this.next();
    if (m.kind !== 'plist') throw new Error(`expected a plist message, got ${m.kind}`);
    return m.plist;
  }

  /** Sends a plist request and returns the reply dictionary. */
  async request(messageType: string, fields: PlistDict = {}): Promise<PlistDict> {
    this.sendPlist(messageType, fields);
    return this.nextPlist();
  }

  /** From now on, bytes from the daemon are tunnel data. Bytes already decoded stay messages. */
  startTunnel(): void {
    this.#tunnel = true;
    const rest = this.#decoder.remainder();
    if (rest.length > 0) {
      this.#tunnelChunks.push(rest);
      this.#tunnelBytes += rest.length;
    }
  }

  /** Reads exactly `n` tunnel bytes. */
  async readTunnel(n: number, timeoutMs = 20_000): Promise<Buffer> {
    await this.#until(() => this.#tunnelBytes >= n, `${n} tunnel bytes`, timeoutMs);
    const all = Buffer.concat(this.#tunnelChunks);
    this.#tunnelChunks = [all.subarray(n)];
    this.#tunnelBytes -= n;
    return all.subarray(0, n);
  }

  /** Resolves when the daemon closes the connection. */
  async waitClosed(timeoutMs = 10_000): Promise<void> {
    await this.#until(() => this.#closed, 'the daemon to close the connection', timeoutMs);
  }

  close(): void {
    this.socket.destroy();
  }
}
