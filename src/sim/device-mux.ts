/**
 * The device side of the mux protocol (usbmux.md §2–§3), as a real iPhone answers a host:
 *
 * ```
 *  host OUT transfers ──receive()──> MuxPacketDecoder (byte stream, packets may span transfers)
 *        │ VERSION  → reply (v1 header, major 2 or 1), switch header size
 *        │ SETUP    → reset the device's v2 packet counter
 *        │ TCP      → SYN: SYN|ACK to a listener, else RST; known ports: DeviceConnection;
 *        │            unknown ports: anonymous RST (seq 0, ack = their seq, window 0)
 *  onTransmit(packet) <── one whole device packet per call = one USB write (usbmuxd frames its IN
 *                         side by transfer, usbmux.md §2.5: never two packets in one write)
 * ```
 *
 * Device states: `init` (waiting for the host's VERSION) → `active` (VERSION answered). `detach()`
 * (unplug) or a fresh VERSION (the host's stack restarted) ends every connection and starts over;
 * listeners stay, as services stay on a phone that is unplugged and plugged in again.
 *
 * v2 counters (usbmux.md §2.4): the device numbers its own packets from 0 after SETUP (usbmuxd2
 * expects the first one to carry 0) and echoes the host's last tx_seq in rx_seq (usbmuxd and netmuxd
 * only echo the field; usbmuxd2 reads it as "last host packet seen").
 */
import type { Duplex } from 'node:stream';
import { MuxwireError } from '../errors.js';
import { log as rootLog } from '../log.js';
import type { Logger } from '../log.js';
import { MuxPacketDecoder } from '../protocol/mux-decoder.js';
import {
  MuxProtocol,
  decodeVersionPayload,
  encodeMuxHeader,
  encodeMuxPacket,
  encodeVersionPayload,
  muxHeaderSize,
} from '../protocol/mux-header.js';
import type { MuxHeader } from '../protocol/mux-header.js';
import { TCP_HEADER_SIZE, TcpFlag, decodeTcpHeader, encodeTcpHeader } from '../protocol/tcp-header.js';
import type { TcpHeader } from '../protocol/tcp-header.js';
import { DeviceConnection } from './device-connection.js';
import type { ConnectionCarrier } from './device-connection.js';

/** Options of a DeviceMux. */
export interface DeviceMuxOptions {
  /** Highest mux version the device speaks: 2 (every current iPhone) or 1. Default 2. */
  version?: 1 | 2;
  /** Receive buffer per connection, i.e. the largest window advertised. Default 131072 (field 512). */
  window?: number;
  /**
   * Largest device packet, headers included. Default 49152 (usbmuxd's USB_MTU; netmuxd rejects
   * larger packets, usbmuxd reassembles up to 65536, usbmuxd2 up to 65535).
   */
  maxPacketSize?: number;
  /** Largest host packet accepted. Default 65535: the limit a real device reports (usbmux.md §2.6). */
  maxReceivePacket?: number;
  /**
   * Open connections allowed at once; a SYN beyond it is refused with an RST that says so. Default
   * 4096 (a host that leaks connections cannot grow the device without bound).
   */
  maxConnections?: number;
  /** Logger, e.g. `log.child({ sim: udid })`. */
  log?: Logger;
}

/** What a listener gets for every connection the host opens. */
export type ConnectionHandler = (stream: Duplex) => void;

/** CONTROL message types a device sends (usbmux.md §2.6): 3 error, 5 warning, 7 info. */
export type ControlType = 3 | 5 | 7;

/** First port `listenEphemeral` hands out, as iOS's ephemeral range (and lockdownd's services). */
export const EPHEMERAL_PORT_FIRST = 49152;
const PORT_LAST = 65535;

const DEFAULT_WINDOW = 128 * 1024;
const DEFAULT_MAX_PACKET = 49152;
const DEFAULT_MAX_RECEIVE = 65535;
const DEFAULT_MAX_CONNECTIONS = 4096;
/** Largest window the 16-bit field can carry (field = bytes >> 8). */
const MAX_WINDOW = 0xffff << 8;
const SETUP_BYTE = 0x07;

type DeviceState = 'init' | 'active';

function connectionKey(hostPort: number, devicePort: number): number {
  return hostPort * 0x10000 + devicePort;
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > PORT_LAST) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `port ${port} is not in 1–65535`);
  }
}

/**
 * The device side of the mux protocol over one USB link. Feed it the host's OUT transfers with
 * `receive`; it answers through `onTransmit`, one device packet per call.
 */
export class DeviceMux implements ConnectionCarrier {
  /**
   * Called with every device packet, whole (one USB write). The USB layer (SimUsbDevice, or an
   * in-process link) sets it; packets produced while it is unset are dropped with a debug line.
   */
  onTransmit: (packet: Buffer) => void = (packet) => {
    if (this.log.enabled('debug')) this.log.debug(`no link: ${packet.length}-byte device packet not sent`);
  };

  /** @internal The device's logger (connections log through it). */
  readonly log: Logger;

  readonly #maxVersion: 1 | 2;
  readonly #window: number;
  readonly #maxPacketSize: number;
  readonly #maxReceive: number;
  readonly #maxConnections: number;

  #state: DeviceState = 'init';
  #version: 1 | 2 = 1;
  #decoder: MuxPacketDecoder;
  #txSeq = 0;
  #rxSeq = 0xffff;
  #setupDone = false;

  readonly #listeners = new Map<number, ConnectionHandler>();
  readonly #connections = new Map<number, DeviceConnection>();
  #nextEphemeral = EPHEMERAL_PORT_FIRST;

  // Pure ACKs wait one turn of the event loop (setImmediate), like a TCP stack's delayed ACK but
  // without a timer: a service that answers at once (lockdownd) carries the ACK on its reply, as real
  // devices do (usbmuxd#96 log: the reply is the device's first packet after a request, ACK
  // included), and several host packets in a row get one ACK.
  readonly #ackDue = new Set<DeviceConnection>();
  #flushQueued = false;

  constructor(opts: DeviceMuxOptions = {}) {
    const version = opts.version ?? 2;
    if (version !== 1 && version !== 2) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `mux version ${String(version)} is not 1 or 2`);
    }
    const window = opts.window ?? DEFAULT_WINDOW;
    if (!Number.isInteger(window) || window < 256 || window > MAX_WINDOW) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `window ${window} is not in 256–${MAX_WINDOW}`);
    }
    const maxPacketSize = opts.maxPacketSize ?? DEFAULT_MAX_PACKET;
    const smallest = muxHeaderSize(2) + TCP_HEADER_SIZE + 1;
    if (!Number.isInteger(maxPacketSize) || maxPacketSize < smallest || maxPacketSize > 65535) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `maxPacketSize ${maxPacketSize} is not in ${smallest}–65535`);
    }
    const maxReceive = opts.maxReceivePacket ?? DEFAULT_MAX_RECEIVE;
    if (!Number.isInteger(maxReceive) || maxReceive < smallest || maxReceive > 0x100000) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `maxReceivePacket ${maxReceive} is not in ${smallest}–1048576`);
    }
    const maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    if (!Number.isInteger(maxConnections) || maxConnections < 1) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `maxConnections ${maxConnections} is not a positive integer`);
    }
    this.#maxConnections = maxConnections;
    this.#maxVersion = version;
    this.#window = window;
    this.#maxPacketSize = maxPacketSize;
    this.#maxReceive = maxReceive;
    this.log = opts.log ?? rootLog.child({ sim: 'mux' });
    this.#decoder = new MuxPacketDecoder({ version: 1, maxPacket: maxReceive });
  }

  /** The negotiated mux version, or undefined before the host's VERSION. */
  get version(): 1 | 2 | undefined {
    return this.#state === 'active' ? this.#version : undefined;
  }

  /** Whether the host sent SETUP in this v2 session (diagnostics and tests). */
  get setupReceived(): boolean {
    return this.#setupDone;
  }

  /** Open connections. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Largest data payload of one device TCP packet with the current header size. */
  get maxSegment(): number {
    return this.#maxPacketSize - muxHeaderSize(this.#version) - TCP_HEADER_SIZE;
  }

  /** The window each connection advertises when its receive buffer is empty. */
  get window(): number {
    return this.#window;
  }

  /** Ports with a listener. */
  get listeningPorts(): number[] {
    return [...this.#listeners.keys()].sort((a, b) => a - b);
  }

  /**
   * Serves `port`: each SYN from the host to it is answered with SYN|ACK and `onConnection` gets the
   * connection's stream. Throws MUXWIRE_ERR_PORT_IN_USE when the port already has a listener.
   */
  listen(port: number, onConnection: ConnectionHandler): void {
    checkPort(port);
    if (this.#listeners.has(port)) {
      throw new MuxwireError('MUXWIRE_ERR_PORT_IN_USE', `device port ${port} already has a listener`);
    }
    this.#listeners.set(port, onConnection);
  }

  /**
   * Serves a free port from 49152 up (as lockdownd's StartService does) and returns it. Ports rotate
   * rather than restart at 49152, so a port just given up is not handed out again at once.
   */
  listenEphemeral(onConnection: ConnectionHandler): number {
    const span = PORT_LAST - EPHEMERAL_PORT_FIRST + 1;
    for (let i = 0; i < span; i++) {
      const port = this.#nextEphemeral;
      this.#nextEphemeral = port === PORT_LAST ? EPHEMERAL_PORT_FIRST : port + 1;
      if (!this.#listeners.has(port)) {
        this.#listeners.set(port, onConnection);
        return port;
      }
    }
    throw new MuxwireError('MUXWIRE_ERR_NO_PORT', 'every device port from 49152 to 65535 has a listener');
  }

  /** Stops accepting connections on `port`; connections already open stay open. */
  unlisten(port: number): void {
    this.#listeners.delete(port);
  }

  /**
   * Sends a CONTROL message (usbmux.md §2.6), which usbmuxd logs at the matching level. Returns false
   * when no host has negotiated yet (the header size is unknown, so nothing can be sent).
   */
  sendControl(type: ControlType, text: string): boolean {
    if (type !== 3 && type !== 5 && type !== 7) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `CONTROL type ${String(type)} is not 3, 5 or 7`);
    }
    const body = Buffer.from(text, 'utf8');
    const limit = this.#maxPacketSize - muxHeaderSize(this.#version) - 1;
    if (body.length > limit) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_LENGTH', `CONTROL text of ${body.length} bytes exceeds ${limit}`);
    }
    if (this.#state !== 'active') {
      this.log.debug(`CONTROL ${type} not sent before VERSION: ${text}`);
      return false;
    }
    this.#transmit(this.#packet(MuxProtocol.CONTROL, Buffer.of(type), body));
    return true;
  }

  /**
   * Unplug: every connection's stream is destroyed with MUXWIRE_ERR_NO_DEVICE (no RST can reach a
   * host that is gone) and the device waits for a new VERSION. Listeners stay.
   */
  detach(): void {
    this.#resetSession(new MuxwireError('MUXWIRE_ERR_NO_DEVICE', 'the device was unplugged'));
  }

  /**
   * Takes the bytes of one host OUT transfer (empty for a zero-length packet). Packets may span
   * transfers. Payload views of `chunk` may be handed to services, so the caller must not reuse it.
   */
  receive(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#decoder.push(chunk);
    for (;;) {
      let packet: { header: MuxHeader; payload: Buffer } | undefined;
      try {
        packet = this.#decoder.next();
      } catch (err) {
        this.#framingLost(err);
        return;
      }
      if (packet === undefined) return;
      this.#dispatch(packet.header, packet.payload);
    }
  }

  // ---- ConnectionCarrier (used by DeviceConnection) ----

  /** @internal */
  sendTcp(header: TcpHeader, payload: readonly Buffer[], length: number): void {
    const muxSize = muxHeaderSize(this.#version);
    const packet = Buffer.allocUnsafe(muxSize + TCP_HEADER_SIZE + length);
    encodeMuxHeader(this.#nextHeader(MuxProtocol.TCP, packet.length), this.#version, packet, 0);
    encodeTcpHeader(header, packet, muxSize);
    let offset = muxSize + TCP_HEADER_SIZE;
    for (const part of payload) offset += part.copy(packet, offset);
    // Every TCP packet carries the current ack and window, so a pending pure ACK is now redundant.
    const conn = this.#connections.get(connectionKey(header.dport, header.sport));
    if (conn !== undefined) this.#ackDue.delete(conn);
    if (this.log.enabled('trace')) {
      this.log.trace(`[OUT] ${header.sport}→${header.dport} seq=${header.seq} ack=${header.ack} flags=0x${header.flags.toString(16)} win=${header.window} len=${length}`);
    }
    this.#transmit(packet);
  }

  /** @internal */
  scheduleAck(conn: DeviceConnection): void {
    this.#ackDue.add(conn);
    if (!this.#flushQueued) {
      this.#flushQueued = true;
      setImmediate(this.#flushQueuedAcks);
    }
  }

  readonly #flushQueuedAcks = (): void => {
    this.#flushQueued = false;
    this.#flushAcks();
  };

  /** @internal */
  forget(conn: DeviceConnection): void {
    const key = connectionKey(conn.hostPort, conn.devicePort);
    if (this.#connections.get(key) === conn) this.#connections.delete(key);
    this.#ackDue.delete(conn);
  }

  // ---- input ----

  #dispatch(header: MuxHeader, payload: Buffer): void {
    if (this.#version === 2 && header.txSeq !== undefined) this.#rxSeq = header.txSeq;
    switch (header.protocol) {
      case MuxProtocol.VERSION:
        this.#onVersion(header, payload);
        return;
      case MuxProtocol.SETUP:
        this.#onSetup(payload);
        return;
      case MuxProtocol.TCP:
        this.#onTcp(payload);
        return;
      default:
        this.#complain(5, `unknown mux protocol ${header.protocol} (${header.length} bytes) ignored`);
    }
  }

  /**
   * VERSION (usbmux.md §2.3): the host offers major 2 in a v1 header; the reply goes back in a v1
   * header too, because the host parses it with 8 bytes. A VERSION while active means a new host
   * stack took the device (usbmuxd restarted): like a replug, every connection ends.
   *
   * ```
   *  0 major u32 BE | 4 minor u32 BE | 8 padding u32
   * ```
   */
  #onVersion(header: MuxHeader, payload: Buffer): void {
    let offered: number;
    if (this.#version === 2 && payload.length === 4 && header.length === muxHeaderSize(1) + 12) {
      // A v1-header VERSION read with the v2 header size: the "magic" word is its major.
      offered = (header.magic ?? 0) >>> 0;
    } else if (payload.length >= 12) {
      offered = decodeVersionPayload(payload).major;
    } else {
      this.#complain(5, `VERSION packet of ${header.length} bytes is too short`);
      return;
    }
    if (this.#state === 'active') {
      // Keep the decoder: it is in the middle of handing out this transfer's packets.
      this.#endConnections(new MuxwireError('MUXWIRE_ERR_CONN_RESET', 'the host restarted the mux protocol'));
    }
    const major: 1 | 2 = offered >= 2 ? this.#maxVersion : 1;
    const reply = encodeMuxPacket(1, { protocol: MuxProtocol.VERSION }, encodeVersionPayload({ major, minor: 0 }));
    this.#state = 'active';
    this.#version = major;
    this.#decoder.version = major;
    this.#txSeq = 0;
    this.#rxSeq = 0xffff;
    this.#setupDone = false;
    this.log.debug(`host offered mux version ${offered}, answering ${major}`);
    this.#transmit(reply);
  }

  /** SETUP (v2 only): payload 0x07; the host reset its counters, the device resets its own. */
  #onSetup(payload: Buffer): void {
    if (this.#state !== 'active' || this.#version !== 2) {
      this.#complain(5, 'SETUP outside a v2 session ignored');
      return;
    }
    if (payload.length !== 1 || payload[0] !== SETUP_BYTE) {
      this.#complain(5, `SETUP payload ${payload.toString('hex')} is not 07`);
      return;
    }
    this.#txSeq = 0;
    this.#setupDone = true;
  }

  #onTcp(payload: Buffer): void {
    if (this.#state !== 'active') {
      this.#complain(5, 'TCP packet before VERSION ignored');
      return;
    }
    if (payload.length < TCP_HEADER_SIZE) {
      this.#complain(5, `TCP packet with ${payload.length} bytes after the mux header is too short`);
      return;
    }
    const h = decodeTcpHeader(payload, 0);
    const data = payload.subarray(TCP_HEADER_SIZE);
    if (this.log.enabled('trace')) {
      this.log.trace(`[IN] ${h.sport}→${h.dport} seq=${h.seq} ack=${h.ack} flags=0x${h.flags.toString(16)} win=${h.window} len=${data.length}`);
    }
    const key = connectionKey(h.sport, h.dport);
    const isSyn = (h.flags & (TcpFlag.SYN | TcpFlag.RST | TcpFlag.ACK)) === TcpFlag.SYN;
    if (isSyn) {
      this.#onSyn(h);
      return;
    }
    const conn = this.#connections.get(key);
    if (conn !== undefined) {
      try {
        conn.handleSegment(h, data);
      } catch (err) {
        // A service's own handler threw while taking data or a write callback: that connection
        // cannot go on, but the device and its other connections must (nothing throws into USB).
        this.log.error(`service on port ${h.dport} failed: ${(err as Error).message}`);
        conn.reset(`service failed: ${(err as Error).message}`, 'MUXWIRE_ERR_SERVICE');
      }
      return;
    }
    // Unknown port pair: an anonymous RST, unless it is an RST itself (usbmux.md §2.7).
    if ((h.flags & TcpFlag.RST) === 0) {
      this.sendTcp({ sport: h.dport, dport: h.sport, seq: 0, ack: h.seq >>> 0, flags: TcpFlag.RST, window: 0 }, [], 0);
    }
  }

  /** SYN: SYN|ACK and a new connection when the port has a listener, RST otherwise (refused). */
  #onSyn(h: TcpHeader): void {
    const key = connectionKey(h.sport, h.dport);
    const stale = this.#connections.get(key);
    if (stale !== undefined) {
      // The host reuses a source port only after it has closed the old connection; if the device still
      // holds one, the host's close was lost, and the old stream cannot continue.
      stale.terminate(new MuxwireError('MUXWIRE_ERR_CONN_RESET', 'the host reused the port of this connection'));
    }
    const handler = this.#listeners.get(h.dport);
    const refuse = (reason?: string): void => {
      const text = reason === undefined ? [] : [Buffer.from(reason)];
      this.sendTcp({ sport: h.dport, dport: h.sport, seq: 0, ack: (h.seq + 1) >>> 0, flags: TcpFlag.RST, window: 0 }, text, reason === undefined ? 0 : text[0]!.length);
    };
    if (handler === undefined) {
      refuse();
      return;
    }
    if (this.#connections.size >= this.#maxConnections) {
      this.log.warn(`refused a connection to port ${h.dport}: ${this.#connections.size} connections are open`);
      refuse(`too many connections (${this.#maxConnections})`);
      return;
    }
    const conn = new DeviceConnection({
      carrier: this,
      devicePort: h.dport,
      hostPort: h.sport,
      hostSynSeq: h.seq,
      hostWindow: h.window,
      window: this.#window,
    });
    this.#connections.set(key, conn);
    this.sendTcp(conn.synAckHeader(), [], 0);
    this.log.debug(`connection ${h.sport}→${h.dport} accepted`);
    try {
      handler(conn);
    } catch (err) {
      // A service that throws while accepting cannot serve this connection; the host hears an RST.
      this.log.error(`service on port ${h.dport} failed to accept: ${(err as Error).message}`);
      conn.reset(`service failed: ${(err as Error).message}`, 'MUXWIRE_ERR_SERVICE');
    }
  }

  /**
   * The byte stream lost its framing (a declared length out of range). A real device reports
   * "message was too large" as a CONTROL error (usbmux.md §2.6); this one does the same, drops what it
   * buffered and frames again from the next transfer, where a host's next packet starts (each host
   * packet is one OUT transfer). A connection that lost bytes then fails its sequence check.
   */
  #framingLost(err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    this.log.warn(`mux framing lost: ${message}`);
    this.#decoder = new MuxPacketDecoder({ version: this.#version, maxPacket: this.#maxReceive });
    if (this.#state === 'active') this.sendControl(3, `asyncReadComplete: ${message}`);
  }

  /** Tells the host about input the device ignores, as a CONTROL warning (usbmuxd logs it). */
  #complain(type: ControlType, text: string): void {
    this.log.debug(text);
    if (this.#state === 'active') this.sendControl(type, text);
  }

  // ---- output ----

  #flushAcks(): void {
    if (this.#ackDue.size === 0) return;
    const due = [...this.#ackDue];
    this.#ackDue.clear();
    for (const conn of due) conn.sendAck();
  }

  #nextHeader(protocol: MuxProtocol, length: number): MuxHeader {
    if (this.#version === 1) return { protocol, length };
    const header: MuxHeader = { protocol, length, magic: 0xfeedface, txSeq: this.#txSeq, rxSeq: this.#rxSeq };
    this.#txSeq = (this.#txSeq + 1) & 0xffff;
    return header;
  }

  #packet(protocol: MuxProtocol, ...parts: Buffer[]): Buffer {
    const header = this.#nextHeader(protocol, 0);
    return encodeMuxPacket(this.#version, { protocol, txSeq: header.txSeq ?? 0, rxSeq: header.rxSeq ?? 0 }, ...parts);
  }

  #transmit(packet: Buffer): void {
    this.onTransmit(packet);
  }

  #endConnections(err: Error): void {
    const open = [...this.#connections.values()];
    this.#connections.clear();
    this.#ackDue.clear();
    for (const conn of open) conn.terminate(err);
  }

  #resetSession(err: Error): void {
    this.#endConnections(err);
    this.#state = 'init';
    this.#version = 1;
    this.#decoder = new MuxPacketDecoder({ version: 1, maxPacket: this.#maxReceive });
    this.#txSeq = 0;
    this.#rxSeq = 0xffff;
    this.#setupDone = false;
  }
}
