/**
 * Device events from a Listen subscription (usbmux.md §4.5), as an EventEmitter ('attached',
 * 'detached', 'paired', 'error', 'end') and as an async iterator of DeviceEvent. An AbortSignal, or
 * close(), ends it. Detached and Paired events carry the device seen attached when there was one.
 */
import { EventEmitter } from 'node:events';
import { MuxwireError } from '../errors.js';
import type { ClientMessage } from '../protocol/client-message.js';
import { deviceFromPlist, deviceFromRecord, type DeviceEvent, type DeviceInfo } from './device-info.js';
import type { MuxdConnection } from './muxd-connection.js';

/** Starts a feed of events; returns the function that stops it. */
export type DeviceEventFeed = (emit: (event: DeviceEvent) => void, fail: (err: Error) => void) => Promise<() => void>;

export class DeviceWatcher extends EventEmitter implements AsyncIterable<DeviceEvent> {
  readonly #known = new Map<number, DeviceInfo>();
  readonly #pending: DeviceEvent[] = [];
  #wake: (() => void) | undefined;
  #stop: (() => void) | undefined;
  #closed = false;
  #error: Error | undefined;
  /** Resolves once the subscription is in place (for a daemon: Result 0 received). */
  readonly ready: Promise<void>;

  constructor(feed: DeviceEventFeed, signal?: AbortSignal) {
    super();
    if (signal?.aborted) this.#closed = true;
    signal?.addEventListener('abort', () => this.close(), { once: true });
    this.ready = this.#start(feed);
    // A rejection is reported through 'error' / the iterator; do not leave it unhandled.
    this.ready.catch(() => undefined);
  }

  /** A watcher over a daemon's Listen subscription. */
  static overDaemon(open: () => Promise<MuxdConnection>, signal?: AbortSignal): DeviceWatcher {
    return new DeviceWatcher(async (emit, fail) => {
      const conn = await open();
      let stopped = false;
      void (async () => {
        for (;;) {
          let msg: ClientMessage;
          try {
            msg = await conn.next(0, 'event');
          } catch (err) {
            if (!stopped) fail(err as Error);
            return;
          }
          const event = DeviceWatcher.toEvent(msg);
          if (event) emit(event);
        }
      })();
      return () => {
        stopped = true;
        conn.close();
      };
    }, signal);
  }

  /** Devices currently known to be attached. */
  get devices(): DeviceInfo[] {
    return [...this.#known.values()];
  }

  /** Reads an event message; undefined for anything else. */
  static toEvent(msg: ClientMessage): DeviceEvent | undefined {
    switch (msg.kind) {
      case 'device-add':
        return { type: 'attached', device: deviceFromRecord(msg.device) };
      case 'device-remove':
        return { type: 'detached', deviceId: msg.deviceId };
      case 'device-paired':
        return { type: 'paired', deviceId: msg.deviceId };
      case 'plist': {
        const p = msg.plist;
        const id = typeof p.DeviceID === 'number' ? p.DeviceID : Number(p.DeviceID ?? 0);
        if (p.MessageType === 'Attached') return { type: 'attached', device: deviceFromPlist(p) };
        if (p.MessageType === 'Detached') return { type: 'detached', deviceId: id };
        if (p.MessageType === 'Paired') return { type: 'paired', deviceId: id };
        return undefined;
      }
      default:
        return undefined;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#stop?.();
    this.#wake?.();
    this.emit('end');
  }

  async *[Symbol.asyncIterator](): AsyncIterator<DeviceEvent> {
    try {
      for (;;) {
        const event = this.#pending.shift();
        if (event) {
          yield event;
          continue;
        }
        if (this.#error) throw this.#error;
        if (this.#closed) return;
        await new Promise<void>((resolve) => {
          this.#wake = () => {
            this.#wake = undefined;
            resolve();
          };
        });
      }
    } finally {
      this.close();
    }
  }

  async #start(feed: DeviceEventFeed): Promise<void> {
    if (this.#closed) return;
    try {
      this.#stop = await feed(this.#deliver, (err) => this.#fail(err));
    } catch (err) {
      this.#fail(err as Error);
      throw err;
    }
    if (this.#closed) this.#stop();
  }

  #deliver = (event: DeviceEvent): void => {
    if (this.#closed) return;
    if (event.type === 'attached') this.#known.set(event.device.deviceId, event.device);
    else {
      const device = this.#known.get(event.deviceId);
      if (device) event.device = device;
      if (event.type === 'detached') this.#known.delete(event.deviceId);
    }
    this.#pending.push(event);
    this.#wake?.();
    this.emit(event.type, event);
  };

  #fail(err: Error): void {
    if (this.#closed) return;
    this.#error =
      err instanceof MuxwireError ? err : new MuxwireError('MUXWIRE_ERR_DAEMON_CLOSED', err.message, { cause: err });
    this.#closed = true;
    this.#wake?.();
    if (this.listenerCount('error') > 0) this.emit('error', this.#error);
    this.emit('end');
  }
}
