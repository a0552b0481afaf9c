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

export class DeviceWatcher extends EventEmitter implements AsyncIterable<DeviceEvent> {
  readonly #known = new Map<number, DeviceInfo>();
  readonly #pending: DeviceEvent[] = [];
  #wake: (() => void) | undefined;
  #conn: MuxdConnection | undefined;
  #closed = false;
  #error: Error | undefined;
  /** Resolves once the subscription is in place (Result 0 received). */
  readonly ready: Promise<void>;

  constructor(open: () => Promise<MuxdConnection>, signal?: AbortSignal) {
    super();
    if (signal?.aborted) this.#closed = true;
    signal?.addEventListener('abort', () => this.close(), { once: true });
    this.ready = this.#run(open);
    // A rejection is reported through 'error' / the iterator; do not leave it unhandled.
    this.ready.catch(() => undefined);
  }

  /** Devices currently known to be attached. */
  get devices(): DeviceInfo[] {
    return [...this.#known.values()];
  }

  /** Reads an event message; undefined for anything else. */
  static toEvent(msg: ClientMessage, known?: Map<number, DeviceInfo>): DeviceEvent | undefined {
    switch (msg.kind) {
      case 'device-add':
        return { type: 'attached', device: deviceFromRecord(msg.device) };
      case 'device-remove':
        return withDevice({ type: 'detached' as const, deviceId: msg.deviceId }, known);
      case 'device-paired':
        return withDevice({ type: 'paired' as const, deviceId: msg.deviceId }, known);
      case 'plist': {
        const p = msg.plist;
        const id = typeof p.DeviceID === 'number' ? p.DeviceID : Number(p.DeviceID ?? 0);
        if (p.MessageType === 'Attached') return { type: 'attached', device: deviceFromPlist(p) };
        if (p.MessageType === 'Detached') return withDevice({ type: 'detached' as const, deviceId: id }, known);
        if (p.MessageType === 'Paired') return withDevice({ type: 'paired' as const, deviceId: id }, known);
        return undefined;
      }
      default:
        return undefined;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#conn?.close();
    this.#wake?.();
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

  async #run(open: () => Promise<MuxdConnection>): Promise<void> {
    if (this.#closed) return;
    try {
      this.#conn = await open();
    } catch (err) {
      this.#fail(err as Error);
      throw err;
    }
    if (this.#closed) {
      this.#conn.close();
      return;
    }
    void this.#loop(this.#conn);
  }

  async #loop(conn: MuxdConnection): Promise<void> {
    for (;;) {
      let msg: ClientMessage;
      try {
        msg = await conn.next(0, 'event');
      } catch (err) {
        if (this.#closed) break;
        this.#fail(err as Error);
        return;
      }
      const event = DeviceWatcher.toEvent(msg, this.#known);
      if (!event) continue;
      if (event.type === 'attached') this.#known.set(event.device.deviceId, event.device);
      else if (event.type === 'detached') this.#known.delete(event.deviceId);
      this.#pending.push(event);
      this.#wake?.();
      this.emit(event.type, event);
    }
    this.emit('end');
  }

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

function withDevice<T extends { deviceId: number; device?: DeviceInfo }>(event: T, known?: Map<number, DeviceInfo>): T {
  const device = known?.get(event.deviceId);
  if (device) event.device = device;
  return event;
}
