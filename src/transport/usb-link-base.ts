/**
 * The lifecycle both USB links share (usb-native-link.ts over the addon, usb-webusb-link.ts over
 * WebUSB): `start` once, `end` once — from the IN pipe failing, the source reporting the device
 * gone, or close() — with `onClose` at that moment and `onEnd` after it, and sends refused with the
 * reason once the link is over. Subclasses supply how IN transfers begin and how the device is let go.
 */
import { MuxwireError } from '../errors.js';
import type { Logger } from '../log.js';
import type { DeviceLink, DeviceLinkHandlers, DeviceLinkInfo } from './device-link.js';

export abstract class UsbLinkBase<Self extends UsbLinkBase<Self>> implements DeviceLink {
  readonly info: DeviceLinkInfo;
  protected readonly log: Logger;
  readonly #onEnd: ((link: Self, err?: Error) => void) | undefined;
  #handlers: DeviceLinkHandlers | undefined;
  #ended = false;
  #endError: Error | undefined;

  protected constructor(info: DeviceLinkInfo, log: Logger, onEnd: ((link: Self, err?: Error) => void) | undefined) {
    this.info = info;
    this.log = log;
    this.#onEnd = onEnd;
  }

  get closed(): boolean {
    return this.#ended;
  }

  abstract sendPacket(packet: Buffer, done?: (err?: Error) => void): void;

  start(handlers: DeviceLinkHandlers): void {
    if (this.#handlers) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', 'the USB link was already started');
    this.#handlers = handlers;
    if (this.#ended) {
      process.nextTick(() => handlers.onClose(this.#endError));
      return;
    }
    this.beginIn(handlers);
  }

  close(): void {
    this.end();
  }

  /** Ends the link (the source calls this with NO_DEVICE when the device leaves). */
  end(err?: Error): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#endError = err;
    if (err) this.log.debug(`USB link ended: ${err.message}`);
    this.releaseDevice();
    const handlers = this.#handlers;
    if (handlers) {
      try {
        handlers.onClose(err);
      } catch (e) {
        this.log.error(`onClose threw: ${(e as Error).message}`);
      }
    }
    this.#onEnd?.(this as unknown as Self, err);
  }

  /** For a send after the end: its `done` hears why (on the next tick); true when refused. */
  protected refusedAfterEnd(done: ((err?: Error) => void) | undefined): boolean {
    if (!this.#ended) return false;
    if (done) process.nextTick(done, this.#endError ?? new MuxwireError('MUXWIRE_ERR_NO_DEVICE', 'the device is gone'));
    return true;
  }

  /** Starts the IN transfers (the link has not ended). */
  protected abstract beginIn(handlers: DeviceLinkHandlers): void;

  /** Lets go of the device; called once, from `end`. */
  protected abstract releaseDevice(): void;
}
