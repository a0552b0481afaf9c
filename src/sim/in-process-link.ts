/**
 * A DeviceLink straight from the host mux engine to a simulated device's DeviceMux, in memory, for
 * `muxwire daemon --simulate N` and tests: no socket, no USB, the same semantics as the cable.
 *
 * ```
 *  host  sendPacket(packet) ──(one OUT transfer)──────────> mux.receive(packet)      then done()
 *  host  onData(≤16384 B)   <──(IN transfers of 16384 B)── mux.onTransmit(packet)
 * ```
 *
 * - Each host packet is one OUT transfer; zero-length packets do not exist in memory (the rule only
 *   matters where a device read ends at a short USB packet).
 * - Each device packet is one device write, cut into IN transfers of 16384 bytes as usbmuxd reads
 *   them (usbmux.md §1.5): a 49152-byte packet arrives as three onData calls, so the host's
 *   reassembly runs as it would on a real bus.
 * - Delivery is asynchronous (setImmediate), as USB completions are: a sender never re-enters its
 *   peer. Each turn moves what was queued when it started and then yields, so a busy stream cannot
 *   starve the rest of the process.
 */
import { MuxwireError } from '../errors.js';
import type { DeviceLink, DeviceLinkHandlers, DeviceLinkInfo } from '../transport/device-link.js';
import type { DeviceMux } from './device-mux.js';

/** usbmuxd's IN transfer size, USB_MRU (usbmux.md §1.5). */
export const IN_TRANSFER_SIZE = 16384;

type LinkState = 'idle' | 'started' | 'closed';
type OutTransfer = { packet: Buffer; done: ((err?: Error) => void) | undefined };

function noTransmit(): void {
  // The host let go of the device: a device packet now has nowhere to go, like an unplugged cable.
}

/** A DeviceLink to a DeviceMux in the same process. Made by SimulatedDevice.inProcessLink(). */
export class InProcessLink implements DeviceLink {
  readonly info: DeviceLinkInfo;
  readonly #mux: DeviceMux;
  readonly #onRelease: (link: InProcessLink) => void;
  #state: LinkState = 'idle';
  #handlers: DeviceLinkHandlers | undefined;
  #toDevice: OutTransfer[] = [];
  #toHost: Buffer[] = [];
  #scheduled = false;

  /**
   * @param mux the device's mux; the link takes its `onTransmit` while it is started.
   * @param onRelease called once when the link closes from either side, so the device is free again.
   */
  constructor(mux: DeviceMux, info: DeviceLinkInfo, onRelease: (link: InProcessLink) => void) {
    this.#mux = mux;
    this.info = info;
    this.#onRelease = onRelease;
  }

  /** True until either side closed the link. */
  get isOpen(): boolean {
    return this.#state !== 'closed';
  }

  start(handlers: DeviceLinkHandlers): void {
    if (this.#state !== 'idle') {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `in-process link to ${this.info.serialNumber} was already started`);
    }
    this.#state = 'started';
    this.#handlers = handlers;
    this.#mux.onTransmit = (packet) => {
      this.#toHost.push(packet);
      this.#schedule();
    };
    this.#schedule();
  }

  sendPacket(packet: Buffer, done?: (err?: Error) => void): void {
    if (this.#state === 'closed') {
      if (done) setImmediate(done, new MuxwireError('MUXWIRE_ERR_NO_DEVICE', `${this.info.serialNumber} is gone`));
      return;
    }
    // The device gets bytes of its own, as over a cable: the host may reuse its buffer once `done`
    // has run (src/mux/packet-pool.ts), while the device's streams may keep what they received.
    this.#toDevice.push({ packet: Buffer.from(packet), done });
    this.#schedule();
  }

  /** The host lets go of the device: the device's sessions end, as when a host stack closes it. */
  close(): void {
    this.#end(undefined);
  }

  /** The device is unplugged from its side: the host hears onClose with MUXWIRE_ERR_NO_DEVICE. */
  unplug(): void {
    this.#end(new MuxwireError('MUXWIRE_ERR_NO_DEVICE', `${this.info.serialNumber} was unplugged`));
  }

  #end(err: Error | undefined): void {
    if (this.#state === 'closed') return;
    const wasStarted = this.#state === 'started';
    this.#state = 'closed';
    if (wasStarted) this.#mux.onTransmit = noTransmit;
    this.#mux.detach();
    const pending = this.#toDevice;
    this.#toDevice = [];
    this.#toHost = [];
    const gone = err ?? new MuxwireError('MUXWIRE_ERR_CLOSED', 'the link was closed');
    for (const t of pending) if (t.done) setImmediate(t.done, gone);
    const handlers = this.#handlers;
    this.#handlers = undefined;
    if (handlers) setImmediate(() => handlers.onClose(err));
    this.#onRelease(this);
  }

  #schedule(): void {
    if (this.#scheduled || this.#state === 'closed') return;
    if (this.#toDevice.length === 0 && (this.#toHost.length === 0 || this.#state !== 'started')) return;
    this.#scheduled = true;
    setImmediate(deliverTurn, this);
  }

  /**
   * @internal One delivery turn: what was queued when it began, host→device first. (Not the
   * DeviceLink's optional `flush`: this link always delivers on a later turn, never inside a send.)
   */
  deliverTurn(): void {
    this.#scheduled = false;
    let outCount = this.#toDevice.length;
    while (outCount-- > 0 && this.#state !== 'closed') {
      const t = this.#toDevice.shift()!;
      this.#mux.receive(t.packet);
      t.done?.();
    }
    let inCount = this.#toHost.length;
    while (inCount-- > 0 && this.#state === 'started') {
      const packet = this.#toHost.shift()!;
      const handlers = this.#handlers!;
      for (let offset = 0; offset < packet.length && this.#state === 'started'; offset += IN_TRANSFER_SIZE) {
        handlers.onData(offset === 0 && packet.length <= IN_TRANSFER_SIZE ? packet : packet.subarray(offset, offset + IN_TRANSFER_SIZE));
      }
    }
    this.#schedule();
  }
}

function deliverTurn(link: InProcessLink): void {
  link.deliverTurn();
}
