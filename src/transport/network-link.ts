/**
 * A network (Wi-Fi) device as a DeviceLink. A device on the network has no mux: each service is a
 * TCP port at the device's address (lockdownd 62078, services on the ports StartService names).
 * This link is the device end of a mux of its own: every connection the host mux engine opens on it
 * becomes one TCP connection to the device, so the daemon's registry, Connect, windows, backpressure
 * and stats are the same code for USB and network devices (docs/ARCHITECTURE.md).
 *
 * ```
 *  DeviceSession ──mux packets──> NetworkLink ──SYN to port P──> net.connect(address, P)
 *                                   │  SYN|ACK once connected, RST if refused / unreachable
 *                                   │  host data ──write──> socket   (ACK + window = room left)
 *                                   └─ socket data ──segments within the host's window──> host
 * ```
 *
 * - Mux version 1 is answered (8-byte headers, no SETUP): the mux never leaves this process.
 * - Sequence numbers as a device keeps them (usbmux.md §3.3): our SYN|ACK has seq 0, our first data
 *   byte is seq 1; the host's first byte is its SYN's seq + 1.
 * - Toward the host: never more than the host's window beyond its ACK; while bytes wait for the
 *   window the socket is paused, so memory per connection is the window plus one socket read.
 * - Toward the device: the window we advertise is RECEIVE_WINDOW minus what the socket has not yet
 *   written, so a slow device network stops the host instead of growing memory.
 * - No half-close (usbmux.md §3.7): the device's FIN becomes an RST after the data before it; the
 *   host's RST destroys the socket.
 */
import { connect as netConnect } from 'node:net';
import type { Socket } from 'node:net';
import { MuxwireError } from '../errors.js';
import { log as rootLog } from '../log.js';
import type { Logger } from '../log.js';
import { MuxProtocol, MUX_HEADER_V1_SIZE, decodeMuxHeader, decodeVersionPayload, encodeMuxPacket, encodeVersionPayload } from '../protocol/mux-header.js';
import { TCP_HEADER_SIZE, TcpFlag, decodeTcpHeader, encodeTcpHeader } from '../protocol/tcp-header.js';
import type { DeviceLink, DeviceLinkHandlers, DeviceLinkInfo } from './device-link.js';

/** The window this link advertises per connection (a device's usual 128 KiB). */
export const RECEIVE_WINDOW = 131072;
/** Largest payload of one packet toward the host (a device's 49152-byte packets, headers off). */
const MAX_SEGMENT = 49152 - MUX_HEADER_V1_SIZE - TCP_HEADER_SIZE;
/** How long a TCP connect to the device may take before the host's SYN is refused (ms). */
export const NETWORK_CONNECT_TIMEOUT_MS = 5000;

/** Where a network device is and how the daemon lists it. */
export interface NetworkLinkOptions {
  info: DeviceLinkInfo;
  /** The device's IP address (text), as TCP connects to it. */
  host: string;
  log?: Logger;
}

/** See NetworkLink.stats(). */
export interface NetworkLinkStats {
  connections: number;
  queuedToHost: number;
  unwrittenToDevice: number;
}

/** One mux connection ↔ one TCP socket. */
interface Bridge {
  key: number;
  hostPort: number;
  devicePort: number;
  socket: Socket;
  state: 'connecting' | 'open' | 'closed';
  /** Next byte we send (seq) and the host's ACK of what we sent. */
  sndNxt: number;
  sndUna: number;
  hostWindow: number;
  /** Next host byte expected. */
  rcvNxt: number;
  /** Device bytes waiting for the host's window. */
  queue: Buffer[];
  queued: number;
  /** The device ended its side: an RST goes out once the queue is empty. */
  ending: boolean;
  ackDue: boolean;
}

export class NetworkLink implements DeviceLink {
  readonly info: DeviceLinkInfo;
  readonly host: string;
  readonly #log: Logger;
  readonly #bridges = new Map<number, Bridge>();
  #handlers: DeviceLinkHandlers | undefined;
  #closed = false;
  #ackScheduled = false;
  #toHost: Buffer[] = [];
  #deliverScheduled = false;

  constructor(opts: NetworkLinkOptions) {
    this.info = opts.info;
    this.host = opts.host;
    this.#log = opts.log ?? rootLog.child({ net: opts.info.serialNumber });
  }

  /**
   * Buffered bytes over every connection (tests, diagnostics): device bytes waiting for the host's
   * window (at most one socket read each once the socket is paused) and host bytes the TCP sockets
   * have not written yet (bounded by RECEIVE_WINDOW each, the window the host is told).
   */
  stats(): NetworkLinkStats {
    let toHost = 0;
    let toDevice = 0;
    for (const b of this.#bridges.values()) {
      toHost += b.queued;
      toDevice += b.socket.writableLength;
    }
    return { connections: this.#bridges.size, queuedToHost: toHost, unwrittenToDevice: toDevice };
  }

  start(handlers: DeviceLinkHandlers): void {
    if (this.#handlers !== undefined) throw new MuxwireError('MUXWIRE_ERR_BUSY', 'the network link is already started');
    this.#handlers = handlers;
  }

  sendPacket(packet: Buffer, done?: (err?: Error) => void): void {
    if (this.#closed) {
      done?.(new MuxwireError('MUXWIRE_ERR_NO_DEVICE', 'the network device is gone'));
      return;
    }
    try {
      this.#receive(packet);
    } catch (err) {
      if (done) setImmediate(done, err as Error);
      this.#fail(err as Error);
      return;
    }
    // Completed on a later turn, as a USB transfer completes: the sender never re-enters itself.
    if (done) setImmediate(done);
  }

  /** Closes every TCP connection; the consumer's onClose runs once. */
  close(): void {
    this.#fail(undefined);
  }

  // ---- host → device -------------------------------------------------------------------------

  #receive(packet: Buffer): void {
    const h = decodeMuxHeader(packet, 1);
    if (h.length !== packet.length) throw new MuxwireError('MUXWIRE_ERR_PROTOCOL', `mux packet of ${packet.length} bytes declares ${h.length}`);
    const payload = packet.subarray(MUX_HEADER_V1_SIZE);
    if (h.protocol === MuxProtocol.VERSION) {
      decodeVersionPayload(payload);
      this.#emit(encodeMuxPacket(1, { protocol: MuxProtocol.VERSION }, encodeVersionPayload({ major: 1, minor: 0 })));
      return;
    }
    if (h.protocol !== MuxProtocol.TCP) return;
    const t = decodeTcpHeader(payload);
    const data = payload.subarray(TCP_HEADER_SIZE);
    const key = (t.sport << 16) | t.dport;
    const bridge = this.#bridges.get(key);
    if ((t.flags & TcpFlag.SYN) !== 0) {
      if (bridge !== undefined) this.#destroy(bridge);
      this.#open(t.sport, t.dport, t.seq, t.window);
      return;
    }
    if (bridge === undefined) return;
    if ((t.flags & TcpFlag.RST) !== 0) {
      this.#destroy(bridge);
      return;
    }
    // The host's ACK: what it took, and how much more it takes.
    if (((t.ack - bridge.sndUna) >>> 0) <= ((bridge.sndNxt - bridge.sndUna) >>> 0)) bridge.sndUna = t.ack >>> 0;
    bridge.hostWindow = t.window;
    if (data.length > 0 && bridge.state === 'open') {
      if (t.seq >>> 0 !== bridge.rcvNxt) {
        this.#reset(bridge, `sequence ${t.seq >>> 0} received, ${bridge.rcvNxt} expected`);
        return;
      }
      bridge.rcvNxt = (bridge.rcvNxt + data.length) >>> 0;
      // A copy: the host may reuse the packet once sendPacket's done has run.
      if (!bridge.socket.write(Buffer.from(data))) bridge.socket.once('drain', () => this.#ackSoon(bridge));
      this.#ackSoon(bridge);
    }
    this.#pump(bridge);
  }

  #open(hostPort: number, devicePort: number, hostSeq: number, hostWindow: number): void {
    const tcpPort = devicePort;
    const socket = netConnect({ host: this.host, port: tcpPort, noDelay: true });
    const bridge: Bridge = {
      key: (hostPort << 16) | devicePort,
      hostPort,
      devicePort,
      socket,
      state: 'connecting',
      sndNxt: 1,
      sndUna: 1,
      hostWindow,
      rcvNxt: (hostSeq + 1) >>> 0,
      queue: [],
      queued: 0,
      ending: false,
      ackDue: false,
    };
    this.#bridges.set(bridge.key, bridge);
    socket.setTimeout(NETWORK_CONNECT_TIMEOUT_MS, () => {
      if (bridge.state === 'connecting') socket.destroy(new MuxwireError('MUXWIRE_ERR_TIMEOUT', `no TCP answer from ${this.host}:${tcpPort}`));
    });
    socket.once('connect', () => {
      socket.setTimeout(0);
      if (bridge.state !== 'connecting') return;
      bridge.state = 'open';
      this.#log.debug(`port ${devicePort}: connected to ${this.host}:${tcpPort}`);
      this.#send(bridge, TcpFlag.SYN | TcpFlag.ACK, 0);
    });
    socket.on('data', (chunk: Buffer) => {
      bridge.queue.push(chunk);
      bridge.queued += chunk.length;
      this.#pump(bridge);
    });
    socket.once('end', () => {
      bridge.ending = true;
      this.#pump(bridge);
    });
    socket.on('error', (err: Error) => this.#log.debug(`port ${devicePort}: ${err.message}`));
    socket.once('close', () => {
      // Refused, unreachable, reset by the device, or ended: the host hears an RST.
      if (bridge.state !== 'closed') this.#reset(bridge, bridge.ending ? 'the device closed the connection' : 'the device connection failed');
    });
  }

  // ---- device → host -------------------------------------------------------------------------

  /** Sends queued device bytes as far as the host's window allows; pauses the socket otherwise. */
  #pump(bridge: Bridge): void {
    if (bridge.state !== 'open') return;
    while (bridge.queued > 0) {
      const room = bridge.sndUna + bridge.hostWindow - bridge.sndNxt;
      if (room <= 0) break;
      const n = Math.min(room, MAX_SEGMENT, bridge.queued);
      this.#send(bridge, TcpFlag.ACK, n);
    }
    if (bridge.queued > 0) {
      bridge.socket.pause();
      return;
    }
    if (bridge.ending) {
      this.#reset(bridge, 'the device closed the connection');
      return;
    }
    if (bridge.socket.isPaused()) bridge.socket.resume();
  }

  /** One packet with `n` queued bytes (0: a bare SYN|ACK or ACK). */
  #send(bridge: Bridge, flags: number, n: number): void {
    const parts: Buffer[] = [];
    let left = n;
    while (left > 0) {
      const head = bridge.queue[0]!;
      if (head.length <= left) {
        parts.push(head);
        bridge.queue.shift();
        left -= head.length;
      } else {
        parts.push(head.subarray(0, left));
        bridge.queue[0] = head.subarray(left);
        left = 0;
      }
    }
    bridge.queued -= n;
    const seq = (flags & TcpFlag.SYN) !== 0 ? 0 : bridge.sndNxt;
    const header = encodeTcpHeader({ sport: bridge.devicePort, dport: bridge.hostPort, seq, ack: bridge.rcvNxt, flags, window: this.#window(bridge) });
    bridge.sndNxt = (bridge.sndNxt + n) >>> 0;
    bridge.ackDue = false;
    this.#emit(encodeMuxPacket(1, { protocol: MuxProtocol.TCP }, header, ...parts));
  }

  #window(bridge: Bridge): number {
    return Math.max(0, RECEIVE_WINDOW - bridge.socket.writableLength);
  }

  /** A window update after host data, coalesced to one per connection per tick. */
  #ackSoon(bridge: Bridge): void {
    bridge.ackDue = true;
    if (this.#ackScheduled) return;
    this.#ackScheduled = true;
    setImmediate(() => {
      this.#ackScheduled = false;
      for (const b of this.#bridges.values()) if (b.ackDue && b.state === 'open') this.#send(b, TcpFlag.ACK, 0);
    });
  }

  #reset(bridge: Bridge, reason: string): void {
    if (bridge.state === 'closed') return;
    const wasOpen = bridge.state === 'open';
    this.#destroy(bridge);
    const header = encodeTcpHeader({ sport: bridge.devicePort, dport: bridge.hostPort, seq: wasOpen ? bridge.sndNxt : 0, ack: bridge.rcvNxt, flags: TcpFlag.RST, window: 0 });
    this.#log.debug(`port ${bridge.devicePort}: RST (${reason})`);
    this.#emit(encodeMuxPacket(1, { protocol: MuxProtocol.TCP }, header, Buffer.from(reason)));
  }

  #destroy(bridge: Bridge): void {
    if (bridge.state === 'closed') return;
    bridge.state = 'closed';
    bridge.queue = [];
    bridge.queued = 0;
    if (this.#bridges.get(bridge.key) === bridge) this.#bridges.delete(bridge.key);
    bridge.socket.destroy();
  }

  /** Queues a packet for the host; delivery is on a later turn, so the host never re-enters. */
  #emit(packet: Buffer): void {
    if (this.#closed) return;
    this.#toHost.push(packet);
    if (this.#deliverScheduled) return;
    this.#deliverScheduled = true;
    setImmediate(() => {
      this.#deliverScheduled = false;
      const packets = this.#toHost;
      this.#toHost = [];
      for (const p of packets) {
        if (this.#closed) return;
        this.#handlers?.onData(p);
      }
    });
  }

  #fail(err: Error | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const b of [...this.#bridges.values()]) this.#destroy(b);
    this.#toHost = [];
    const handlers = this.#handlers;
    if (handlers) setImmediate(() => handlers.onClose(err));
  }
}
