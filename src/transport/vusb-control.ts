/**
 * The host's half of the vusb wire's control traffic (docs/ARCHITECTURE.md "The vusb wire"), shared
 * by the two host stacks that speak the wire in TypeScript: VusbLink (the daemon's vusb transport)
 * and the WebUSB-shaped devices of webusb-vusb.ts (the TypeScript USB path under test). It waits
 * for the device's HELLO, numbers CONTROL requests, matches CONTROL_DONE replies, maps their libusb
 * status to coded errors as libusb maps it for a real host, and fails everything outstanding once.
 *
 *   CONTROL       host→device  u32 id, 8-byte setup packet, OUT data stage
 *   CONTROL_DONE  device→host  u32 id, i32 status, IN data stage (≤ wLength)
 */
import { MuxwireError } from '../errors.js';
import {
  encodeControl,
  UsbTransferStatus,
  VUSB_WIRE_VERSION,
  type UsbSetupPacket,
  type VusbControlDone,
  type VusbHello,
} from '../protocol/vusb-wire.js';

interface PendingControl {
  wLength: number;
  resolve(data: Buffer): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

export interface VusbControlOptions {
  /** Writes one encoded CONTROL message to the device. */
  write(frame: Buffer): void;
  /** How long a control request may stay unanswered. */
  timeoutMs: number;
  /** Called with the timeout error after its request is rejected (VusbLink closes the link). */
  onTimeout?(err: MuxwireError): void;
}

export class VusbControlChannel {
  readonly #opts: VusbControlOptions;
  readonly #controls = new Map<number, PendingControl>();
  /** Requests that timed out: a late reply to one of them is not a protocol error. */
  readonly #timedOut = new Set<number>();
  #nextId = 1;
  #speed: number | undefined;
  #helloWaiter: { resolve(speed: number): void; reject(err: Error): void } | undefined;
  #failure: Error | undefined;

  constructor(opts: VusbControlOptions) {
    this.#opts = opts;
  }

  /** Waits for the device's HELLO; resolves with its libusb speed. */
  hello(timeoutMs: number): Promise<number> {
    if (this.#speed !== undefined) return Promise.resolve(this.#speed);
    if (this.#failure) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#helloWaiter = undefined;
        reject(new MuxwireError('MUXWIRE_ERR_TIMEOUT', `no HELLO within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#helloWaiter = {
        resolve: (speed) => {
          clearTimeout(timer);
          resolve(speed);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
    });
  }

  /**
   * One control transfer. Resolves with the IN data stage (empty for OUT requests); rejects with
   * MUXWIRE_ERR_USB_STALL when the device stalls, MUXWIRE_ERR_USB_TRANSFER for another libusb
   * status or a reply longer than wLength, MUXWIRE_ERR_TIMEOUT when no answer comes in time.
   */
  control(setup: UsbSetupPacket, data?: Buffer): Promise<Buffer> {
    if (this.#failure) return Promise.reject(this.#failure);
    const id = this.#nextId;
    this.#nextId = (this.#nextId % 0xffffffff) + 1;
    const frame = encodeControl(id, setup, data);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#controls.delete(id);
        this.#timedOut.add(id);
        const err = new MuxwireError(
          'MUXWIRE_ERR_TIMEOUT',
          `control request 0x${setup.bRequest.toString(16)} unanswered after ${this.#opts.timeoutMs} ms`,
        );
        reject(err);
        this.#opts.onTimeout?.(err);
      }, this.#opts.timeoutMs);
      this.#controls.set(id, { wLength: setup.wLength, resolve, reject, timer });
      this.#opts.write(frame);
    });
  }

  /** A HELLO from the device; throws for a second one or an unknown wire version. */
  onHello(msg: VusbHello): void {
    if (this.#speed !== undefined) throw new MuxwireError('MUXWIRE_ERR_VUSB_BAD_MESSAGE', 'second HELLO');
    if (msg.wireVersion !== VUSB_WIRE_VERSION) {
      throw new MuxwireError('MUXWIRE_ERR_VUSB_VERSION', `device speaks vusb wire version ${msg.wireVersion}, expected ${VUSB_WIRE_VERSION}`);
    }
    this.#speed = msg.speed;
    const waiter = this.#helloWaiter;
    this.#helloWaiter = undefined;
    waiter?.resolve(msg.speed);
  }

  /** A CONTROL_DONE from the device; throws for a reply to a request never made. */
  onControlDone(msg: VusbControlDone): void {
    const pending = this.#controls.get(msg.id);
    if (!pending) {
      if (this.#timedOut.delete(msg.id)) return;
      throw new MuxwireError('MUXWIRE_ERR_VUSB_BAD_MESSAGE', `CONTROL_DONE for unknown request ${msg.id}`);
    }
    this.#controls.delete(msg.id);
    clearTimeout(pending.timer);
    if (msg.status === UsbTransferStatus.PIPE) {
      pending.reject(new MuxwireError('MUXWIRE_ERR_USB_STALL', 'the device stalled the control request', { detail: msg.status }));
    } else if (msg.status !== UsbTransferStatus.OK) {
      pending.reject(new MuxwireError('MUXWIRE_ERR_USB_TRANSFER', `control transfer failed with libusb status ${msg.status}`, { detail: msg.status }));
    } else if (msg.data.length > pending.wLength) {
      // libusb would report LIBUSB_ERROR_OVERFLOW: the device sent more than was asked.
      pending.reject(
        new MuxwireError('MUXWIRE_ERR_USB_TRANSFER', `control reply of ${msg.data.length} bytes for wLength ${pending.wLength}`, {
          detail: UsbTransferStatus.OVERFLOW,
        }),
      );
    } else {
      // Copy: enumeration keeps descriptors, and a view would pin the whole socket chunk.
      pending.resolve(Buffer.from(msg.data));
    }
  }

  /** The connection is over: the HELLO wait and every request reject with `err`, once. */
  fail(err: Error): void {
    if (this.#failure) return;
    this.#failure = err;
    this.#helloWaiter?.reject(err);
    this.#helloWaiter = undefined;
    for (const pending of this.#controls.values()) {
      clearTimeout(pending.timer);
      pending.reject(err);
    }
    this.#controls.clear();
    this.#timedOut.clear();
  }
}
