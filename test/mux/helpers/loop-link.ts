/**
 * A DeviceLink that carries mux packets between a host DeviceSession and a device-side peer in
 * this process, asynchronously (one setImmediate hop per direction, as a USB transfer completes
 * later than it is submitted). The peer is either the simulator's real DeviceMux or a test's
 * scripted device (ScriptedDevice) that answers by hand.
 */
import type { DeviceLink, DeviceLinkInfo } from '../../../src/transport/device-link.js';

/** The device side of a LoopLink. */
export interface LoopPeer {
  /** Bytes of one host OUT transfer. */
  receive(chunk: Buffer): void;
  /** Set by the link: call with each device packet (one IN transfer). */
  onTransmit: (packet: Buffer) => void;
}

let nextLocation = 0x10001;

export class LoopLink implements DeviceLink {
  readonly info: DeviceLinkInfo;
  readonly peer: LoopPeer;
  #handlers: { onData(chunk: Buffer): void; onClose(err?: Error): void } | undefined;
  #closed = false;
  #toHost: Buffer[] = [];
  #toDevice: Buffer[] = [];
  #hostScheduled = false;
  #deviceScheduled = false;
  /** Packets the host sent, for tests that look at the wire. */
  sentPackets = 0;
  /** `sentPackets` at each `flush()` call: when the host asked for its packets to go out now. */
  flushedAt: number[] = [];

  constructor(peer: LoopPeer, info: Partial<DeviceLinkInfo> = {}) {
    this.peer = peer;
    this.info = {
      serialNumber: info.serialNumber ?? '00008030-001A2B3C4D5E6F70',
      productId: info.productId ?? 0x12a8,
      locationId: info.locationId ?? nextLocation++,
      speed: info.speed ?? 480_000_000,
    };
    peer.onTransmit = (packet) => {
      if (this.#closed) return;
      this.#toHost.push(packet);
      if (!this.#hostScheduled) {
        this.#hostScheduled = true;
        setImmediate(() => this.#flushToHost());
      }
    };
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** This link sends every packet on its own (one setImmediate hop): a flush only records when. */
  flush(): void {
    this.flushedAt.push(this.sentPackets);
  }

  sendPacket(packet: Buffer, done?: (err?: Error) => void): void {
    if (this.#closed) {
      done?.(new Error('link closed'));
      return;
    }
    this.sentPackets++;
    // Taken whole, as a USB transfer is: the host may reuse its buffer once `done` has run
    // (DeviceLink contract), and a scripted device may keep the bytes it received.
    this.#toDevice.push(Buffer.from(packet));
    if (!this.#deviceScheduled) {
      this.#deviceScheduled = true;
      setImmediate(() => this.#flushToDevice());
    }
    done?.();
  }

  start(handlers: { onData(chunk: Buffer): void; onClose(err?: Error): void }): void {
    this.#handlers = handlers;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#handlers?.onClose();
  }

  /** The cable is pulled: the device forgets the host and the host's link closes. */
  unplug(): void {
    const peer = this.peer as LoopPeer & { detach?: () => void };
    peer.detach?.();
    this.close();
  }

  #flushToHost(): void {
    this.#hostScheduled = false;
    const packets = this.#toHost;
    this.#toHost = [];
    for (const p of packets) {
      if (this.#closed) return;
      this.#handlers?.onData(p);
    }
  }

  #flushToDevice(): void {
    this.#deviceScheduled = false;
    const packets = this.#toDevice;
    this.#toDevice = [];
    for (const p of packets) {
      if (this.#closed) return;
      this.peer.receive(p);
    }
  }
}
