/**
 * The device's listening ports, one table for every link of the simulated device: lockdownd and the
 * services it starts listen here, and each link serves them its own way — the device mux on USB
 * (vusb, in-process), TCP ports at the device's address on the network (network-side.ts). A service
 * port StartService opens is therefore reachable over whichever link the host used, as on a phone
 * that is on a cable and on Wi-Fi at once.
 */
import type { Duplex } from 'node:stream';
import type { ConnectionHandler } from './device-mux.js';
import type { LockdownMux } from './lockdownd.js';

/**
 * A link that serves the table's ports (told of each port opened and closed). A link whose listener
 * comes up later (a TCP bind) returns a promise that settles once the port is served, or once it
 * has failed to be (the link logs why).
 */
export interface PortObserver {
  portOpened(port: number, handler: ConnectionHandler): Promise<void> | void;
  portClosed(port: number): void;
}

export class DevicePorts implements LockdownMux {
  readonly #mux: LockdownMux;
  readonly #handlers = new Map<number, ConnectionHandler>();
  readonly #observers = new Set<PortObserver>();
  /** Ports some link is still bringing up, and when every link will serve them. */
  readonly #pending = new Map<number, Promise<void>>();

  /** `mux`: the USB side (a DeviceMux), which serves a port the moment it is listed. */
  constructor(mux: LockdownMux) {
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
    this.#pending.delete(port);
    if (!this.#handlers.delete(port)) return;
    for (const o of this.#observers) o.portClosed(port);
  }

  /** Adds a link: it is told of every port open now and of each change from now on. */
  observe(observer: PortObserver): void {
    this.#observers.add(observer);
    for (const [port, handler] of this.#handlers) observer.portOpened(port, handler);
  }

  /**
   * Settles once every link serves `port`. lockdownd names a service port only after this, so a
   * host that connects the moment it reads StartService's answer finds the port listening on the
   * network too, as on a phone, whose listener is up before it answers.
   */
  served(port: number): Promise<void> {
    return this.#pending.get(port) ?? Promise.resolve();
  }

  unobserve(observer: PortObserver): void {
    this.#observers.delete(observer);
  }

  #opened(port: number, handler: ConnectionHandler): void {
    this.#handlers.set(port, handler);
    const waits: Promise<void>[] = [];
    for (const o of this.#observers) {
      const up = o.portOpened(port, handler);
      if (up !== undefined) waits.push(up);
    }
    if (waits.length === 0) return;
    const all = Promise.all(waits).then(() => {
      if (this.#pending.get(port) === all) this.#pending.delete(port);
    });
    this.#pending.set(port, all);
  }
}
