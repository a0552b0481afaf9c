/**
 * One socket to a usbmuxd-compatible daemon, speaking the client protocol (usbmux.md §4): send a
 * request, read replies with a deadline, and — after a successful Connect — hand the very same
 * socket over as the tunnel, with any bytes that arrived behind the Result put back in front.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { MuxwireError } from '../errors.js';
import { ClientMessageDecoder, encodeClientMessage, type ClientMessage } from '../protocol/client-message.js';
import type { SocketAddress } from './socket-address.js';
import { formatSocketAddress } from './socket-address.js';

/** Replies may be large (a DeviceList of many devices, a pair record); no real message comes near this. */
const CLIENT_MAX_MESSAGE = 64 * 1024 * 1024;

export class MuxdConnection {
  readonly socket: Socket;
  readonly #decoder = new ClientMessageDecoder({ maxLength: CLIENT_MAX_MESSAGE });
  #wake: (() => void) | undefined;
  #failure: Error | undefined;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', this.#onData);
    socket.on('error', this.#onEnd);
    socket.on('close', this.#onClose);
  }

  /** Opens a socket to the daemon within `timeoutMs`. */
  static open(address: SocketAddress, timeoutMs: number): Promise<MuxdConnection> {
    return new Promise((resolve, reject) => {
      const socket =
        address.kind === 'unix' ? netConnect({ path: address.path }) : netConnect({ host: address.host, port: address.port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new MuxwireError('MUXWIRE_ERR_TIMEOUT', `no answer from usbmuxd at ${formatSocketAddress(address)} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        if (address.kind === 'tcp') socket.setNoDelay(true);
        socket.removeAllListeners('error');
        resolve(new MuxdConnection(socket));
      });
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(
          new MuxwireError(
            'MUXWIRE_ERR_NO_DAEMON',
            `cannot reach usbmuxd at ${formatSocketAddress(address)}: ${err.code ?? err.message} (is a daemon running? set USBMUXD_SOCKET_ADDRESS or --socket)`,
            { cause: err },
          ),
        );
      });
    });
  }

  send(message: ClientMessage): void {
    this.socket.write(encodeClientMessage(message));
  }

  /** The next message from the daemon, or a coded error after `timeoutMs` (0 = wait for ever). */
  async next(timeoutMs: number, what = 'a reply'): Promise<ClientMessage> {
    const deadline = timeoutMs > 0 ? Date.now() + timeoutMs : Infinity;
    for (;;) {
      const msg = this.#decoder.next();
      if (msg) return msg;
      if (this.#failure) throw this.#failure;
      const left = deadline - Date.now();
      if (left <= 0) throw new MuxwireError('MUXWIRE_ERR_TIMEOUT', `usbmuxd sent no ${what} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = Number.isFinite(left) ? setTimeout(resolve, left) : undefined;
        this.#wake = () => {
          if (timer) clearTimeout(timer);
          this.#wake = undefined;
          resolve();
        };
      });
    }
  }

  /**
   * Stops reading messages and returns the socket as a raw tunnel (after Result 0 of a Connect).
   * Bytes that came in behind the Result are put back in front of the stream.
   */
  detach(): Socket {
    this.socket.off('data', this.#onData);
    this.socket.off('error', this.#onEnd);
    this.socket.off('close', this.#onClose);
    const rest = this.#decoder.remainder();
    if (rest.length > 0) this.socket.unshift(rest);
    return this.socket;
  }

  close(): void {
    this.socket.destroy();
  }

  #onData = (chunk: Buffer): void => {
    this.#decoder.push(chunk);
    this.#wake?.();
  };

  #onClose = (): void => {
    this.#onEnd(new MuxwireError('MUXWIRE_ERR_DAEMON_CLOSED', 'usbmuxd closed the connection'));
  };

  #onEnd = (err: Error): void => {
    if (this.#failure) return;
    this.#failure =
      err instanceof MuxwireError
        ? err
        : new MuxwireError('MUXWIRE_ERR_DAEMON_CLOSED', `usbmuxd connection failed: ${err.message}`, { cause: err });
    this.#wake?.();
  };
}
