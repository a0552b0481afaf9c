/**
 * A DeviceLink over the native USB pipeline (src/accel/usb-host.ts): the mux engine's view of one
 * device driven by libusb, whose events the addon handles on this thread's libuv loop.
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
import type { Logger } from '../log.js';
import type { BulkPipes, NativeUsbHandle } from '../accel/usb-host.js';
import type { DeviceLinkHandlers, DeviceLinkInfo } from './device-link.js';
import { UsbLinkBase } from './usb-link-base.js';

/** Options of UsbNativeLink. */
export interface UsbNativeLinkOptions {
  readonly inTransfers: number;
  readonly inTransferSize: number;
  readonly log: Logger;
  /** Runs once when the link has ended (after onClose). */
  readonly onEnd?: (link: UsbNativeLink, err?: Error) => void;
}

export class UsbNativeLink extends UsbLinkBase<UsbNativeLink> {
  readonly pipes: BulkPipes;
  readonly #handle: NativeUsbHandle;
  readonly #opts: UsbNativeLinkOptions;

  constructor(handle: NativeUsbHandle, info: DeviceLinkInfo, pipes: BulkPipes, opts: UsbNativeLinkOptions) {
    super(info, opts.log, opts.onEnd);
    this.#handle = handle;
    this.pipes = pipes;
    this.#opts = opts;
  }

  /** The addon's device id (for the source's bookkeeping). */
  get device(): number {
    return this.#handle.device;
  }

  sendPacket(packet: Buffer, done?: (err?: Error) => void): void {
    if (this.refusedAfterEnd(done)) return;
    this.#handle.send(packet, done);
  }

  protected beginIn(handlers: DeviceLinkHandlers): void {
    this.#handle.startIn(this.pipes, this.#opts.inTransfers, this.#opts.inTransferSize, {
      onData: (chunk) => {
        if (!this.closed) handlers.onData(chunk);
      },
      // A consumer that borrows gets views of the transfers' own buffers; others get copies.
      borrow: handlers.borrow === true,
      onEnd: (err) => this.end(err.code === 'MUXWIRE_ERR_CLOSED' ? undefined : err),
    });
  }

  protected releaseDevice(): void {
    void this.#handle.close();
  }
}
