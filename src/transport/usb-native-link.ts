/**
 * A DeviceLink over the native USB pipeline (src/accel/usb-host.ts): the mux engine's view of one
 * device driven by libusb from the addon's event thread.
 *
 * IN side: `inTransfers` bulk IN transfers of `inTransferSize` bytes stay in flight (usbmuxd:
 * 3 × 16384, usbmux.md §1.5; UsbSource's default 4 × 49152). libusb reads into buffers JS owns
 * (twice as many as are in flight): each completed transfer is one `onData` call with a view of
 * its buffer, which goes back in flight once the batch's callbacks have returned, while a spare
 * buffer takes its place at once (as usbmuxd resubmits in its callback). No copy is made for a
 * consumer that borrows. A mux packet may span transfers; the session's decoder reads the pipe as
 * a byte stream.
 *
 * OUT side: each mux packet is one bulk OUT transfer read in place from the caller's Buffer, plus
 * a zero-length transfer when its length is a multiple of wMaxPacketSize (usbmux.md §1.4).
 *
 * The link ends once: the IN pipe failing (NO_DEVICE on unplug), the source reporting the device
 * gone, or close(). `onClose` runs at that moment, and no `onData` follows it.
 */
import { MuxwireError } from '../errors.js';
import type { Logger } from '../log.js';
import type { BulkPipes, NativeUsbHandle } from '../accel/usb-host.js';
import type { DeviceLink, DeviceLinkInfo } from './device-link.js';

/** Options of UsbNativeLink. */
export interface UsbNativeLinkOptions {
  readonly inTransfers: number;
  readonly inTransferSize: number;
  readonly log: Logger;
  /** Runs once when the link has ended (after onClose). */
  readonly onEnd?: (link: UsbNativeLink, err?: Error) => void;
}

type LinkHandlers = { onData(chunk: Buffer): void; onClose(err?: Error): void; borrow?: boolean };

export class UsbNativeLink implements DeviceLink {
  readonly info: DeviceLinkInfo;
  readonly pipes: BulkPipes;
  readonly #handle: NativeUsbHandle;
  readonly #opts: UsbNativeLinkOptions;
  #handlers: LinkHandlers | undefined;
  #ended = false;
  #endError: Error | undefined;

  constructor(handle: NativeUsbHandle, info: DeviceLinkInfo, pipes: BulkPipes, opts: UsbNativeLinkOptions) {
    this.#handle = handle;
    this.info = info;
    this.pipes = pipes;
    this.#opts = opts;
  }

  /** The addon's device id (for the source's bookkeeping). */
  get device(): number {
    return this.#handle.device;
  }

  get closed(): boolean {
    return this.#ended;
  }

  sendPacket(packet: Buffer, done?: (err?: Error) => void): void {
    if (this.#ended) {
      if (done) process.nextTick(done, this.#endError ?? new MuxwireError('MUXWIRE_ERR_NO_DEVICE', 'the device is gone'));
      return;
    }
    this.#handle.send(packet, done);
  }

  start(handlers: LinkHandlers): void {
    if (this.#handlers) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', 'the USB link was already started');
    this.#handlers = handlers;
    if (this.#ended) {
      process.nextTick(() => handlers.onClose(this.#endError));
      return;
    }
    this.#handle.startIn(this.pipes, this.#opts.inTransfers, this.#opts.inTransferSize, {
      onData: (chunk) => {
        if (!this.#ended) handlers.onData(chunk);
      },
      // A consumer that borrows gets views of the transfers' own buffers; others get copies.
      borrow: handlers.borrow === true,
      onEnd: (err) => this.end(err.code === 'MUXWIRE_ERR_CLOSED' ? undefined : err),
    });
  }

  close(): void {
    this.end();
  }

  /** Ends the link (the source calls this with NO_DEVICE when the device leaves). */
  end(err?: Error): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#endError = err;
    if (err) this.#opts.log.debug(`USB link ended: ${err.message}`);
    void this.#handle.close();
    const handlers = this.#handlers;
    if (handlers) {
      try {
        handlers.onClose(err);
      } catch (e) {
        this.#opts.log.error(`onClose threw: ${(e as Error).message}`);
      }
    }
    this.#opts.onEnd?.(this, err);
  }
}
