/**
 * The device's listening ports, one table for every link of the simulated device: lockdownd and the
 * services it starts listen here, and each link serves them its own way — the device mux on USB
 * (vusb, in-process), TCP ports at the device's address on the network (network-side.ts). A service
 * port StartService opens is therefore reachable over whichever link the host used, as on a phone
 * that is on a cable and on Wi-Fi at once.
 */
import type { Duplex } from 'node:stream';
import type { DeviceMux, ConnectionHandler } from './device-mux.js';
import type { LockdownMux } from './lockdownd.js';

/** A link that serves the table's ports (told of each port opened and closed). */
export interface PortObserver {
  portOpened(port: number, handler: ConnectionHandler): void;
  portClosed(port: number): void;
}

export class DevicePorts implements LockdownMux {
  readonly #mux: DeviceMux;
  readonly #handlers = new Map<number, ConnectionHandler>();
  readonly #observers = new Set<PortObserver>();

  constructor(mux: DeviceMux) {
    this.#mux = mux;
  }

  listen(port: number, onConnection: (stream: Duplex) => void): void {
    this.#mux.listen(port, onConnection);
    this.#opened(port, onConnection);
  }

  listenEphemeral(onConnection: (stream: Duplex) => void): number {
    const port = this.#mux.listenEphemeral(onConnection);
    this.#opened(port, onConnection);
    return port;
  }

  unlisten(port: number): void {
    this.#mux.unlisten(port);
    if (!this.#handlers.delete(port)) return;
    for (const o of this.#observers) o.portClosed(port);
  }

  /** Adds a link: it is told of every port open now and of each change from now on. */
  observe(observer: PortObserver): void {
    this.#observers.add(observer);
    for (const [port, handler] of this.#handlers) observer.portOpened(port, handler);
  }

  unobserve(observer: PortObserver): void {
    this.#observers.delete(observer);
  }

  #opened(port: number, handler: ConnectionHandler): void {
    this.#handlers.set(port, handler);
    for (const o of this.#observers) o.portOpened(port, handler);
  }
}
