/**
 * The contract between device discovery (transport/) and the host mux engine (mux/): a DeviceLink
 * is one attached device's pair of bulk pipes, a DeviceSource finds devices and announces them.
 * Every transport (native USB, WebUSB, vusb, the simulator's in-process link) implements these, so
 * the mux engine never branches on where its bytes come from.
 */
import type { EventEmitter } from 'node:events';

/** What the daemon publishes about a device (usbmux.md §1.6, §4.5). */
export interface DeviceLinkInfo {
  /** UDID, dashed 25 chars for 24-char serials (usbmux.md §1.6 fix-up already applied). */
  serialNumber: string;
  productId: number;
  /** `(bus << 16) | address` as usbmuxd computes it. */
  locationId: number;
  /** bit/s, usbmux.md §1.6. */
  speed: number;
  /** Set for a network (Wi-Fi) device: how the daemon lists it (usbmux.md §4.5). */
  network?: NetworkDeviceInfo;
}

/** What a network device's record carries instead of the USB fields. */
export interface NetworkDeviceInfo {
  /** `NetworkAddress`: the sockaddr in Apple's layout (protocol/network-address.ts). */
  networkAddress: Buffer;
  /** `EscapedFullServiceName`: the mDNS instance, `<wifi-mac>@<link-local>._apple-mobdev2._tcp.local`. */
  serviceName: string;
  /** `InterfaceIndex`: the interface whose subnet holds the address (0 when none does). */
  interfaceIndex: number;
}

/**
 * What a link's consumer gives `start`. `borrow`: onData is done with the chunk when it returns,
 * so the link may hand out memory it reuses for the next transfer (a consumer that keeps chunks
 * leaves it unset and gets its own).
 */
export interface DeviceLinkHandlers {
  onData(chunk: Buffer): void;
  onClose(err?: Error): void;
  borrow?: boolean;
}

/** One attached device's bulk pipes. */
export interface DeviceLink {
  readonly info: DeviceLinkInfo;
  /**
   * Send one mux packet as one OUT transfer (+ ZLP when length % maxPacketSize == 0). `done` runs
   * once the transfer is complete; from then on the link does not read `packet` again, and its
   * memory may be reused (the mux engine's packet pool relies on this).
   */
  sendPacket(packet: Buffer, done?: (err?: Error) => void): void;
  /**
   * Send one mux packet made of `head` followed by the buffers of `body`, as `sendPacket` would
   * send them joined, without joining them (a link that writes to a socket hands them to one
   * writev). The link does not keep the `body` array past the call; it reads the buffers until
   * `done`, which runs once per call, in the order of the calls. Links that cannot send a packet
   * in parts (a USB transfer is one buffer) have no `sendPacketParts`; the host copies instead.
   */
  sendPacketParts?(head: Buffer, body: readonly Buffer[], done: (err?: Error) => void): void;
  /**
   * Writes what `sendPacket` has batched for the end of the tick now (a latency-critical packet
   * such as a SYN). Links that send each packet at once have no batch and no `flush`.
   */
  flush?(): void;
  /** Begin IN transfers; each onData call is one completed IN transfer's bytes. onClose once. */
  start(handlers: DeviceLinkHandlers): void;
  close(): void;
}

/** Finds devices. Events: 'attach' (link: DeviceLink), 'detach' (link: DeviceLink). */
export interface DeviceSource extends EventEmitter {
  start(): Promise<void>;
  stop(): Promise<void>;
}
