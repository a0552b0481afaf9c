/**
 * The TypeScript USB path: a DeviceLink over a WebUSB `USBDevice` (the W3C API, as the `usb`
 * package implements it for Node, or webusb-vusb.ts over the vusb wire), for machines where the
 * native addon or libusb cannot serve.
 *
 * It does what the native pipeline does, with WebUSB's promises in place of libusb transfers:
 * `inTransfers` `transferIn` calls of `inTransferSize` bytes stay pending (each one that resolves
 * is one `onData` call and is issued again at once, so the count in flight stays constant), and
 * each mux packet is one `transferOut`, followed by an empty one when its length is a multiple of
 * wMaxPacketSize (usbmux.md §1.4). The device setup (usb-mux-setup.ts) runs over
 * {@link webUsbSetupHandle}.
 */
import { MuxwireError } from '../errors.js';
import type { Logger } from '../log.js';
import type { UsbSetupPacket } from '../protocol/vusb-wire.js';
import type { DeviceLinkHandlers, DeviceLinkInfo } from './device-link.js';
import { UsbLinkBase } from './usb-link-base.js';
import type { UsbSetupHandle } from './usb-mux-setup.js';

// ---- the part of the W3C WebUSB API used here (lib.dom has it; this project's tsconfig does not) ----

export type WebUsbDirection = 'in' | 'out';
export interface WebUsbEndpoint {
  readonly endpointNumber: number;
  readonly direction: WebUsbDirection;
  readonly type: 'bulk' | 'interrupt' | 'isochronous';
  readonly packetSize: number;
}
export interface WebUsbAlternateInterface {
  readonly alternateSetting: number;
  readonly interfaceClass: number;
  readonly interfaceSubclass: number;
  readonly interfaceProtocol: number;
  readonly endpoints: readonly WebUsbEndpoint[];
}
export interface WebUsbInterface {
  readonly interfaceNumber: number;
  readonly alternate: WebUsbAlternateInterface;
  readonly alternates: readonly WebUsbAlternateInterface[];
  readonly claimed: boolean;
}
export interface WebUsbConfiguration {
  readonly configurationValue: number;
  readonly interfaces: readonly WebUsbInterface[];
}
export interface WebUsbControlSetup {
  readonly requestType: 'standard' | 'class' | 'vendor';
  readonly recipient: 'device' | 'interface' | 'endpoint' | 'other';
  readonly request: number;
  readonly value: number;
  readonly index: number;
}
export interface WebUsbInResult {
  readonly data?: DataView | null;
  readonly status: 'ok' | 'stall' | 'babble';
}
export interface WebUsbOutResult {
  readonly bytesWritten: number;
  readonly status: 'ok' | 'stall';
}
/** A WebUSB USBDevice, plus the `usb` package's extras (bus, address, speed, kernel drivers). */
export interface WebUsbDevice {
  readonly vendorId: number;
  readonly productId: number;
  readonly serialNumber?: string | null;
  readonly opened: boolean;
  readonly configuration?: WebUsbConfiguration | null;
  readonly configurations: readonly WebUsbConfiguration[];
  open(): Promise<void>;
  close(): Promise<void>;
  selectConfiguration(configurationValue: number): Promise<void>;
  claimInterface(interfaceNumber: number): Promise<void>;
  controlTransferIn(setup: WebUsbControlSetup, length: number): Promise<WebUsbInResult>;
  controlTransferOut(setup: WebUsbControlSetup, data?: Uint8Array): Promise<WebUsbOutResult>;
  transferIn(endpointNumber: number, length: number): Promise<WebUsbInResult>;
  transferOut(endpointNumber: number, data: Uint8Array): Promise<WebUsbOutResult>;
  readonly bus?: string | number;
  readonly address?: number;
  readonly speed?: string;
  detachKernelDriver?(interfaceNumber: number): Promise<void>;
}
/** A WebUSB `USB` object (navigator.usb, the `usb` package's WebUSB, or VusbWebUsb). */
export interface WebUsbLike {
  getDevices(): Promise<WebUsbDevice[]>;
  addEventListener(type: 'connect' | 'disconnect', listener: (event: { device: WebUsbDevice }) => void): void;
  removeEventListener(type: 'connect' | 'disconnect', listener: (event: { device: WebUsbDevice }) => void): void;
}

const REQUEST_TYPES = ['standard', 'class', 'vendor'] as const;
const RECIPIENTS = ['device', 'interface', 'endpoint', 'other'] as const;

/** bmRequestType → WebUSB's requestType/recipient. */
export function webUsbSetup(setup: UsbSetupPacket): WebUsbControlSetup {
  const type = REQUEST_TYPES[(setup.bmRequestType >> 5) & 3];
  const recipient = RECIPIENTS[setup.bmRequestType & 0x1f];
  if (!type || !recipient) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `bmRequestType 0x${setup.bmRequestType.toString(16)} has no WebUSB form`);
  return { requestType: type, recipient, request: setup.bRequest, value: setup.wValue, index: setup.wIndex };
}

/** A coded error for a rejected WebUSB call (a DOMException, the `usb` package's error, or ours). */
export function webUsbError(err: unknown, what: string): MuxwireError {
  if (err instanceof MuxwireError) return err;
  const e = err as { name?: string; message?: string };
  const text = `${what}: ${e.message ?? String(err)}`;
  // WebUSB rejects with NotFoundError/NetworkError once the device is gone.
  if (e.name === 'NotFoundError' || e.name === 'NetworkError' || /disconnect|no device|not found|gone/i.test(e.message ?? '')) {
    return new MuxwireError('MUXWIRE_ERR_NO_DEVICE', text, { cause: err });
  }
  return new MuxwireError('MUXWIRE_ERR_USB_TRANSFER', text, { cause: err });
}

function view(result: WebUsbInResult): Buffer {
  const d = result.data;
  return d ? Buffer.from(d.buffer, d.byteOffset, d.byteLength) : Buffer.alloc(0);
}

/** The setup operations of usb-mux-setup.ts over a WebUSB device (opened by the caller). */
export function webUsbSetupHandle(device: WebUsbDevice): UsbSetupHandle {
  return {
    async control(setup, data) {
      const s = webUsbSetup(setup);
      let result: WebUsbInResult | WebUsbOutResult;
      try {
        result = (setup.bmRequestType & 0x80) !== 0
          ? await device.controlTransferIn(s, setup.wLength)
          : await device.controlTransferOut(s, data);
      } catch (err) {
        throw webUsbError(err, `control 0x${setup.bRequest.toString(16)}`);
      }
      if (result.status === 'stall') throw new MuxwireError('MUXWIRE_ERR_USB_STALL', `control 0x${setup.bRequest.toString(16)}: the device stalled`);
      if (result.status !== 'ok') throw new MuxwireError('MUXWIRE_ERR_USB_TRANSFER', `control 0x${setup.bRequest.toString(16)}: ${result.status}`);
      return 'data' in result ? view(result) : Buffer.alloc(0);
    },
    getConfiguration() {
      return Promise.resolve(device.configuration?.configurationValue ?? 0);
    },
    async setConfiguration(value, interfaces) {
      // As usbmuxd: kernel drivers off the configuration's interfaces first (Linux, `usb` package).
      if (device.detachKernelDriver) {
        for (const n of interfaces) await device.detachKernelDriver(n).catch(() => undefined);
      }
      try {
        await device.selectConfiguration(value);
      } catch (err) {
        throw webUsbError(err, `selectConfiguration(${value})`);
      }
    },
    async claimInterface(n) {
      try {
        await device.claimInterface(n);
      } catch (err) {
        throw webUsbError(err, `claimInterface(${n})`);
      }
    },
  };
}

/** Options of UsbWebUsbLink. */
export interface UsbWebUsbLinkOptions {
  readonly inEndpoint: number;
  readonly outEndpoint: number;
  readonly maxPacketSize: number;
  readonly inTransfers: number;
  readonly inTransferSize: number;
  readonly log: Logger;
  /** Runs once when the link has ended (after onClose). */
  readonly onEnd?: (link: UsbWebUsbLink, err?: Error) => void;
}

const EMPTY = new Uint8Array(0);

export class UsbWebUsbLink extends UsbLinkBase<UsbWebUsbLink> {
  readonly device: WebUsbDevice;
  readonly #opts: UsbWebUsbLinkOptions;
  readonly #inNumber: number;
  readonly #outNumber: number;
  #handlers: DeviceLinkHandlers | undefined;
  readonly #issue = (): void => {
    if (this.closed) return;
    this.device.transferIn(this.#inNumber, this.#opts.inTransferSize).then(this.#onIn, this.#onInFailed);
  };
  readonly #onIn = (result: WebUsbInResult): void => {
    if (this.closed) return;
    if (result.status !== 'ok') {
      this.end(new MuxwireError(result.status === 'stall' ? 'MUXWIRE_ERR_USB_STALL' : 'MUXWIRE_ERR_USB_TRANSFER', `bulk IN: ${result.status}`));
      return;
    }
    const chunk = view(result);
    // Issue the next one first, so the count in flight holds while the consumer works.
    this.#issue();
    // A zero-length completion carries nothing (usbmuxd's device_data_input ignores length 0).
    if (chunk.length === 0) return;
    try {
      this.#handlers!.onData(chunk);
    } catch (err) {
      // Nothing may escape into the promise chain: the consumer failing ends the link.
      this.end(err as Error);
    }
  };
  readonly #onInFailed = (err: unknown): void => {
    if (!this.closed) this.end(webUsbError(err, 'bulk IN'));
  };

  constructor(device: WebUsbDevice, info: DeviceLinkInfo, opts: UsbWebUsbLinkOptions) {
    super(info, opts.log, opts.onEnd);
    this.device = device;
    this.#opts = opts;
    this.#inNumber = opts.inEndpoint & 0x0f;
    this.#outNumber = opts.outEndpoint & 0x0f;
  }

  sendPacket(packet: Buffer, done?: (err?: Error) => void): void {
    if (this.refusedAfterEnd(done)) return;
    if (packet.length > 49152) {
      if (done) process.nextTick(done, new MuxwireError('MUXWIRE_ERR_BAD_LENGTH', `OUT transfer of ${packet.length} bytes exceeds 49152`));
      return;
    }
    const sent = this.device.transferOut(this.#outNumber, packet);
    // usbmuxd's ZLP rule (usbmux.md §1.4), queued behind the packet on the same endpoint.
    if (packet.length > 0 && packet.length % this.#opts.maxPacketSize === 0) {
      this.device.transferOut(this.#outNumber, EMPTY).catch(() => undefined);
    }
    sent.then(
      (r) => done?.(r.status === 'ok' ? undefined : new MuxwireError('MUXWIRE_ERR_USB_STALL', 'bulk OUT: the device stalled')),
      (err) => done?.(webUsbError(err, 'bulk OUT')),
    );
  }

  protected beginIn(handlers: DeviceLinkHandlers): void {
    this.#handlers = handlers;
    for (let i = 0; i < this.#opts.inTransfers; i++) this.#issue();
  }

  protected releaseDevice(): void {
    this.device.close().catch(() => undefined);
  }
}
