/**
 * An in-memory stand-in for the mux *transport* in lockdown tests: device ports with listeners,
 * and connections made of two linked Duplex ends. Bytes cross on a later turn of the event loop,
 * as on a socket, and closing one end closes the other (the mux protocol has no half-close). It
 * carries bytes only; every protocol above it (lockdown framing, TLS, services) is the real code.
 */
import { Duplex } from 'node:stream';
import { MuxwireError } from '../../src/errors.js';
import type { LockdownMux } from '../../src/sim/lockdownd.js';

class LinkedEnd extends Duplex {
  peer!: LinkedEnd;

  override _read(): void {
    // data arrives through push() from the peer
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    setImmediate(() => {
      if (!this.peer.destroyed) this.peer.push(chunk);
      done();
    });
  }

  override _final(done: (err?: Error | null) => void): void {
    setImmediate(() => {
      if (!this.peer.destroyed) this.peer.push(null);
      done();
    });
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    setImmediate(() => {
      if (!this.peer.destroyed) {
        this.peer.push(null);
        this.peer.destroy();
      }
    });
    done(err);
  }
}

/** Two connected Duplex ends. */
export function duplexPair(): [Duplex, Duplex] {
  const a = new LinkedEnd();
  const b = new LinkedEnd();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

/** Device ports with listeners; `connect` is the host opening a connection to one. */
export class MemoryMux implements LockdownMux {
  readonly #listeners = new Map<number, (stream: Duplex) => void>();
  readonly #open = new Set<Duplex>();
  #nextEphemeral = 49152;

  listen(port: number, onConnection: (stream: Duplex) => void): void {
    if (this.#listeners.has(port)) throw new MuxwireError('MUXWIRE_ERR_PORT_IN_USE', `port ${port} in use`);
    this.#listeners.set(port, onConnection);
  }

  listenEphemeral(onConnection: (stream: Duplex) => void): number {
    while (this.#listeners.has(this.#nextEphemeral)) this.#nextEphemeral++;
    const port = this.#nextEphemeral++;
    this.#listeners.set(port, onConnection);
    return port;
  }

  unlisten(port: number): void {
    this.#listeners.delete(port);
  }

  /** True while `port` has a listener. */
  listening(port: number): boolean {
    return this.#listeners.has(port);
  }

  /** Opens a connection to a device port (MUXWIRE_ERR_CONN_REFUSED when nobody listens). */
  connect(port: number): Duplex {
    const listener = this.#listeners.get(port);
    if (!listener) throw new MuxwireError('MUXWIRE_ERR_CONN_REFUSED', `device port ${port} refused the connection`);
    const [host, device] = duplexPair();
    this.#open.add(host);
    host.once('close', () => this.#open.delete(host));
    listener(device);
    return host;
  }

  /** Destroys every connection still open (test teardown). */
  closeAll(): void {
    for (const s of this.#open) s.destroy();
    this.#open.clear();
  }
}
