/**
 * The host side of the device mux protocol for one device link (usbmux.md §2, §3): version
 * negotiation, the v2 sequence fields, source ports, and the demultiplexing of device packets to
 * connections.
 *
 * ```
 *  negotiating ──VERSION reply, major 2──> SETUP sent ──> active
 *  negotiating ──VERSION reply, major 1──────────────────> active      (8-byte headers from now on)
 *  negotiating ──other major / no reply / bad packet─────> closed      (ready rejects)
 *  active      ──link closes (unplug)────────────────────> closed      (clients get their data, then end)
 *  active      ──close()─────────────────────────────────> closed      (RST every connection)
 * ```
 *
 * Two demultiplexers read the IN pipe (option `demux`):
 *  - 'ring' (default): the accel demuxer (src/accel/demuxer.ts; the addon's C++ when it loads,
 *    its TypeScript twin otherwise) frames the packets and copies each TCP payload once, from the
 *    transfer into its connection's ring buffer; the session reads 12-field event records
 *    (seq/ack/flags/window) and never decodes a header in JavaScript. A slot opens at SYN and
 *    closes once the connection has handed its bytes to the reader.
 *  - 'stream': MuxPacketDecoder hands views of each packet; payloads travel as views of the
 *    transfer.
 *
 * The demultiplexer never waits for a connection: a connection whose reader is slow only stops
 * moving its own ACK number, so its device side stops at its window while every other connection
 * and device keeps going (no head-of-line blocking, unlike usbmuxd's single loop and usbmuxd2's
 * blocking sends, §5.4).
 */
import { EventEmitter } from 'node:events';
import { MuxwireError } from '../errors.js';
import { log as rootLog, diagnostics } from '../log.js';
import type { Logger } from '../log.js';
import type { DeviceLink } from '../transport/device-link.js';
import { MuxProtocol, MUX_MAGIC, muxHeaderSize, encodeMuxHeader, encodeVersionPayload, decodeVersionPayload } from '../protocol/mux-header.js';
import type { MuxHeader } from '../protocol/mux-header.js';
import { TCP_HEADER_SIZE, TcpFlag, encodeTcpHeader, decodeTcpHeader } from '../protocol/tcp-header.js';
import type { TcpHeader } from '../protocol/tcp-header.js';
import { MuxPacketDecoder } from '../protocol/mux-decoder.js';
import { selectAccel } from '../accel/select.js';
import type { Accel } from '../accel/accel.js';
import type { Demuxer } from '../accel/demuxer.js';
import { DEMUX_EVENT_FIELDS, DemuxEvent, DemuxField, NO_SLOT } from '../accel/demux-core.js';
import { MuxConnection, HOST_WINDOW } from './mux-connection.js';
import type { MuxConnectionHost } from './mux-connection.js';
import { PacketPool } from './packet-pool.js';
import { PortAllocator } from './port-allocator.js';

/** Which demultiplexer reads the device's IN pipe. */
export type DeviceSessionDemux = 'ring' | 'stream';

/** Session states (see the drawing above). */
export type DeviceSessionState = 'negotiating' | 'active' | 'closed';

export interface DeviceSessionOptions {
  /** The daemon's device ID, for log context. */
  deviceId?: number;
  /** Default connect timeout in ms; 0 waits forever like usbmuxd (default 5000, libusbmuxd's). */
  connectTimeoutMs?: number;
  /** How long to wait for the device's VERSION reply (default 10000 ms). */
  versionTimeoutMs?: number;
  /** Largest device packet accepted (default 65536, usbmuxd's DEV_MRU). */
  maxPacket?: number;
  /** Where the source port counter starts (tests use it to begin near the wrap). */
  firstSourcePort?: number;
  /**
   * How device data is demultiplexed (see the file comment): 'ring' (default) through the accel
   * demuxer's per-connection rings, 'stream' through MuxPacketDecoder and views of transfers.
   */
  demux?: DeviceSessionDemux;
  /** Ring mode: the accelerator whose demuxer serves (default `selectAccel()`). */
  accel?: Accel;
  /** Ring mode: connections open at once, each with a ring of HOST_WINDOW bytes (default 4096). */
  maxConnections?: number;
  logger?: Logger;
}

export interface ConnectOptions {
  /** Connect timeout in ms for this connect; 0 waits forever. */
  timeoutMs?: number;
}

/** Totals over the session's connections, for tests and diagnostics. */
export interface DeviceSessionStats {
  connections: number;
  rxQueued: number;
  readableBuffered: number;
  txPending: number;
  /** Ring mode: demuxer slots open (connections, and closed ones whose rings still drain). */
  rings: number;
}

/** The major/minor the host offers (usbmux.md §2.3). */
const OFFER = { major: 2, minor: 0 };
/** SETUP payload (§2.3 step 3). */
const SETUP_PAYLOAD = Buffer.from([0x07]);
const RST = 0x04;
/** Data packets of at least this many payload bytes are cut from the session's PacketPool. */
const POOL_FROM = 4096;

// Scratch header objects: encoders copy the fields out, so one of each serves every packet.
const muxScratch: MuxHeader = { protocol: MuxProtocol.TCP, length: 0, magic: MUX_MAGIC, txSeq: 0, rxSeq: 0 };
const tcpScratch: TcpHeader = { sport: 0, dport: 0, seq: 0, ack: 0, flags: 0, window: 0 };

/**
 * The host end of one device's mux. Construct it over a started-or-not DeviceLink; it starts the
 * link, offers VERSION 2.0 and resolves `ready` when the device is usable.
 */
export class DeviceSession extends EventEmitter implements MuxConnectionHost {
  readonly link: DeviceLink;
  /** Resolves when VERSION (and SETUP for v2) is done; rejects if the device cannot be used. */
  readonly ready: Promise<void>;
  readonly log: Logger;

  #state: DeviceSessionState = 'negotiating';
  #version: 1 | 2 = 1;
  #txSeq = 0;
  #rxSeq = 0xffff;
  readonly #demux: DeviceSessionDemux;
  /** Stream mode's decoder; ring mode's demuxer, with its slots' connections (released ones
   * removed while their rings drain) and the source ports whose slots are still open. */
  #decoder: MuxPacketDecoder | undefined;
  #demuxer: Demuxer | undefined;
  #slotConnections: (MuxConnection | undefined)[] = [];
  #ringPorts = new Set<number>();
  /** Memory for outgoing data packets (src/mux/packet-pool.ts), when the link needs them whole. */
  readonly #packets: PacketPool | undefined;
  /** The link sends packets in parts: payloads are lent to it, not copied (MuxConnection.lendPayload). */
  readonly #sendsParts: boolean;
  /** The views of the payload being lent (the link does not keep the array). */
  readonly #lent: Buffer[] = [];
  #connections = new Map<number, MuxConnection>();
  #ports: PortAllocator;
  #connectTimeoutMs: number;
  #deviceId: number;
  #readyResolve!: () => void;
  #readyReject!: (err: Error) => void;
  #versionTimer: NodeJS.Timeout | undefined;
  #closeError: Error | undefined;
  // A port whose ring still drains stays taken: its demuxer slot is keyed by it.
  #portInUse = (port: number): boolean => this.#connections.has(port) || this.#ringPorts.has(port);

  constructor(link: DeviceLink, opts: DeviceSessionOptions = {}) {
    super();
    this.link = link;
    this.#sendsParts = typeof link.sendPacketParts === 'function';
    this.#packets = this.#sendsParts ? undefined : new PacketPool();
    this.#deviceId = opts.deviceId ?? 0;
    this.log = opts.logger ?? rootLog.child({ dev: this.#deviceId });
    this.#connectTimeoutMs = opts.connectTimeoutMs ?? 5000;
    this.#ports = new PortAllocator(opts.firstSourcePort);
    this.#demux = opts.demux ?? 'ring';
    if (this.#demux === 'ring') {
      const maxConnections = opts.maxConnections ?? 4096;
      this.#demuxer = (opts.accel ?? selectAccel()).createDemuxer({ version: 1, maxPacket: opts.maxPacket ?? 65536, maxConnections });
    } else if (this.#demux === 'stream') {
      this.#decoder = new MuxPacketDecoder({ version: 1, maxPacket: opts.maxPacket ?? 65536 });
    } else {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `demux must be 'ring' or 'stream', not ${String(opts.demux)}`);
    }
    this.ready = new Promise<void>((resolve, reject) => {
      this.#readyResolve = resolve;
      this.#readyReject = reject;
    });
    // Callers that never await `ready` must not turn a dead device into an unhandled rejection.
    this.ready.catch(ignore);
    this.#versionTimer = setTimeout(onVersionTimeout, opts.versionTimeoutMs ?? 10000, this);
    link.start({
      onData: this.#demuxer !== undefined ? (chunk) => this.#onRingData(chunk) : (chunk) => this.#onData(chunk),
      // The ring demuxer copies (or sends) what it keeps before push returns.
      borrow: this.#demuxer !== undefined,
      onClose: (err) => this.#onLinkClose(err),
    });
    // VERSION goes out with the v1 header, offering 2.0 (§2.3 step 1).
    if (this.#state === 'negotiating') {
      this.#sendPacket(MuxProtocol.VERSION, encodeVersionPayload(OFFER));
    }
  }

  /** The daemon's ID for this device (log context). */
  get deviceId(): number {
    return this.#deviceId;
  }

  get state(): DeviceSessionState {
    return this.#state;
  }

  /** The mux protocol version agreed with the device (1 or 2). */
  get version(): 1 | 2 {
    return this.#version;
  }

  /** Open connections (connecting, connected); closing ones have already given their port back. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Which demultiplexer reads the IN pipe. */
  get demux(): DeviceSessionDemux {
    return this.#demux;
  }

  /** The source port the next connect starts its search from. */
  get nextSourcePort(): number {
    return this.#ports.next;
  }

  /** Sums of the buffered bytes of the open connections. */
  stats(): DeviceSessionStats {
    const s: DeviceSessionStats = { connections: this.#connections.size, rxQueued: 0, readableBuffered: 0, txPending: 0, rings: this.#ringPorts.size };
    for (const conn of this.#connections.values()) {
      const c = conn.stats();
      s.rxQueued += c.rxQueued;
      s.readableBuffered += c.readableBuffered;
      s.txPending += c.txPending;
    }
    return s;
  }

  /**
   * Opens a connection to `port` on the device. Resolves once the device accepts (SYN|ACK);
   * rejects with MUXWIRE_ERR_CONN_REFUSED (RST), MUXWIRE_ERR_TIMEOUT (no answer; an RST is sent),
   * MUXWIRE_ERR_NO_DEVICE (unplugged), MUXWIRE_ERR_NO_PORT (65535 connections open) or
   * MUXWIRE_ERR_CLOSED (session closed).
   */
  async connect(port: number, opts: ConnectOptions = {}): Promise<MuxConnection> {
    if (this.#state === 'negotiating') await this.ready;
    return new Promise<MuxConnection>((resolve, reject) => {
      this.openConnection(port, opts, (err, conn) => (err ? reject(err) : resolve(conn!)));
    });
  }

  /**
   * `connect` with a callback, called synchronously when the device answers (the daemon uses it to
   * write Result 0 without a promise hop). `done` is called exactly once, possibly before this
   * returns (bad port, no device).
   */
  openConnection(port: number, opts: ConnectOptions, done: (err: MuxwireError | undefined, conn?: MuxConnection) => void): void {
    if (!Number.isInteger(port) || port < 1 || port > 0xffff) {
      done(new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `not a device port: ${port}`));
      return;
    }
    if (this.#state === 'negotiating') {
      this.ready.then(
        () => this.openConnection(port, opts, done),
        (err: unknown) => done(err instanceof MuxwireError ? err : new MuxwireError('MUXWIRE_ERR_NO_DEVICE', 'the device is not usable', { cause: err })),
      );
      return;
    }
    if (this.#state !== 'active' || this.#closeError !== undefined) {
      done(
        this.#closeError instanceof MuxwireError && this.#closeError.code === 'MUXWIRE_ERR_CLOSED'
          ? new MuxwireError('MUXWIRE_ERR_CLOSED', 'the device session is closed')
          : new MuxwireError('MUXWIRE_ERR_NO_DEVICE', 'the device is not connected'),
      );
      return;
    }
    const sport = this.#ports.allocate(this.#portInUse);
    if (sport === 0) {
      done(new MuxwireError('MUXWIRE_ERR_NO_PORT', 'all 65535 source ports of this device are in use'));
      return;
    }
    let ring;
    if (this.#demuxer !== undefined) {
      // The slot is keyed by the ports the device's packets carry: its port, then ours.
      let slot: number;
      try {
        slot = this.#demuxer.openConnection(port, sport, HOST_WINDOW);
      } catch (err) {
        done(err instanceof MuxwireError ? err : new MuxwireError('MUXWIRE_ERR_TOO_MANY_CONNECTIONS', (err as Error).message, { cause: err }));
        return;
      }
      ring = { demuxer: this.#demuxer, slot };
      this.#ringPorts.add(sport);
    }
    // SYN: seq 0, ack 0 (usbmux.md §3.3 step 2), written out now rather than at the end of the
    // tick, so the device answers it while the connection object below is being built.
    if (rootLog.enabled('trace')) this.log.trace(`[OUT] conn=${sport}→${port} flags=0x2 seq=0 ack=0 len=0`);
    this.#sendTcp(sport, port, 0, 0, TcpFlag.SYN, undefined, 0);
    this.link.flush?.();
    const conn = new MuxConnection({
      host: this,
      sourcePort: sport,
      devicePort: port,
      logger: this.log.child({ conn: `${sport}→${port}` }),
      ring,
    });
    if (ring !== undefined) this.#slotConnections[ring.slot] = conn;
    this.#connections.set(sport, conn);
    conn.open(
      opts.timeoutMs ?? this.#connectTimeoutMs,
      (c) => {
        if (diagnostics.connect.hasSubscribers) diagnostics.connect.publish({ deviceId: this.#deviceId, sourcePort: sport, devicePort: port });
        if (c.log.enabled('debug')) c.log.debug('connected');
        done(undefined, c);
      },
      (err) => done(err instanceof MuxwireError ? err : new MuxwireError('MUXWIRE_ERR_CLOSED', err.message, { cause: err })),
    );
  }

  /**
   * Shuts the session down: every connection is reset (connecting ones reject with
   * MUXWIRE_ERR_CLOSED), then the link is closed once the RSTs have been handed to it.
   */
  async close(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#closeError = new MuxwireError('MUXWIRE_ERR_CLOSED', 'the device session was closed');
    for (const conn of [...this.#connections.values()]) conn.shutdown();
    // The RSTs are queued on the link; let its writes start before closing it (a link flushes
    // what it was given before it closes, as usbmuxd flushes its final RSTs for 100 ms).
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.#finish(this.#closeError);
    this.link.close();
  }

  /**
   * The device was unplugged (its source says so): no RST can reach it. Each connection delivers
   * what it received, then ends; connecting ones reject with MUXWIRE_ERR_NO_DEVICE.
   */
  detach(): void {
    if (this.#state === 'closed') return;
    this.#onLinkClose(new MuxwireError('MUXWIRE_ERR_NO_DEVICE', 'the device was unplugged'));
    this.link.close();
  }

  // ---- MuxConnectionHost ---------------------------------------------------------------------

  /** @internal */
  sendSegment(conn: MuxConnection, flags: number, length = 0): void {
    if (rootLog.enabled('trace')) conn.log.trace(`[OUT] flags=0x${flags.toString(16)} seq=${conn.txSeq} ack=${conn.rxAck} len=${length}`);
    this.#sendTcp(conn.sourcePort, conn.devicePort, conn.txSeq, conn.rxAck, flags, length > 0 ? conn : undefined, length);
  }

  /** One TCP packet to the device: header, and `length` payload bytes taken from `from`. */
  #sendTcp(sport: number, dport: number, seq: number, ack: number, flags: number, from: MuxConnection | undefined, length: number): void {
    if (this.#state !== 'active') return;
    tcpScratch.sport = sport;
    tcpScratch.dport = dport;
    tcpScratch.seq = seq;
    tcpScratch.ack = ack;
    tcpScratch.flags = flags;
    tcpScratch.window = HOST_WINDOW;
    const dataLength = from === undefined ? 0 : length;
    const hsize = muxHeaderSize(this.#version);
    const size = hsize + TCP_HEADER_SIZE + dataLength;
    if (from !== undefined && dataLength >= POOL_FROM && this.#sendsParts) {
      // The payload stays where the writer put it (the link writes the views after the headers).
      const head = Buffer.allocUnsafe(hsize + TCP_HEADER_SIZE);
      this.#writeMuxHeader(head, MuxProtocol.TCP, size);
      encodeTcpHeader(tcpScratch, head, hsize);
      const body = this.#lent;
      from.lendPayload(dataLength, body);
      this.link.sendPacketParts!(head, body, from.lentWritten);
      body.length = 0;
      return;
    }
    // Data packets come from the pool (returned when the link has written them); headers-only
    // packets are small enough for Node's own buffer pool.
    const pooled = dataLength >= POOL_FROM ? this.#packets?.take(size) : undefined;
    const packet = pooled?.buf ?? Buffer.allocUnsafe(size);
    this.#writeMuxHeader(packet, MuxProtocol.TCP);
    encodeTcpHeader(tcpScratch, packet, hsize);
    if (from !== undefined && dataLength > 0) from.takePayload(packet, hsize + TCP_HEADER_SIZE, dataLength);
    this.link.sendPacket(packet, pooled?.release);
  }

  /** @internal */
  releaseConnection(conn: MuxConnection): void {
    if (this.#connections.get(conn.sourcePort) === conn) this.#connections.delete(conn.sourcePort);
    // Its packets now match no connection (anonymous RST), though its ring may still drain.
    const slot = conn.ringSlot;
    if (slot !== undefined && this.#slotConnections[slot] === conn) this.#slotConnections[slot] = undefined;
    if (diagnostics.close.hasSubscribers) diagnostics.close.publish({ deviceId: this.#deviceId, sourcePort: conn.sourcePort, devicePort: conn.devicePort });
  }

  /** @internal */
  closeRing(conn: MuxConnection, slot: number): void {
    if (this.#demuxer === undefined) return;
    if (this.#slotConnections[slot] === conn) this.#slotConnections[slot] = undefined;
    this.#demuxer.closeConnection(slot);
    this.#ringPorts.delete(conn.sourcePort);
  }

  /** @internal The VERSION reply did not come in time. */
  versionTimedOut(): void {
    this.#versionTimer = undefined;
    if (this.#state !== 'negotiating') return;
    this.#fail(new MuxwireError('MUXWIRE_ERR_TIMEOUT', 'the device did not answer the mux VERSION offer'));
  }

  // ---- receive path ------------------------------------------------------------------------------

  /**
   * Ring mode (hot path): the demuxer frames the transfer and fills the rings; each event record
   * carries what the engine needs, so only packets that are not connection data are looked at.
   */
  #onRingData(chunk: Buffer): void {
    if (this.#state === 'closed') return;
    const demuxer = this.#demuxer!;
    let count: number;
    try {
      count = demuxer.push(chunk);
    } catch (err) {
      // The IN pipe is framed by the header length; after a bad length there is no way back in.
      this.#fail(err as Error);
      return;
    }
    // The header size the records of this push were framed with: VERSION may switch it midway,
    // but a device sends nothing between its VERSION reply and our SETUP (§2.3).
    const hsize = muxHeaderSize(demuxer.version);
    const trace = rootLog.enabled('trace');
    for (let i = 0; i < count; i++) {
      // Fetched per record, not once: the array is the demuxer's, replaced when a push grows it.
      const ev = demuxer.events;
      const r = i * DEMUX_EVENT_FIELDS;
      const kind = ev[r + DemuxField.KIND]!;
      // usbmuxd echoes the rx_seq field of every device v2 packet (§2.4); it never checks tx_seq.
      if (this.#version === 2 && hsize === 16) this.#rxSeq = ev[r + DemuxField.SEQS]! & 0xffff;
      if (kind === DemuxEvent.PACKET) {
        const protocol = ev[r + DemuxField.SLOT_OR_PROTOCOL]!;
        const header: MuxHeader = { protocol, length: ev[r + DemuxField.LENGTH]! };
        this.#dispatchPacket(header, demuxer.packet(i).subarray(hsize));
      } else {
        this.#onRingTcp(demuxer, i, ev, r, kind, hsize, trace);
      }
      if ((this.#state as DeviceSessionState) === 'closed') return;
    }
  }

  #onRingTcp(demuxer: Demuxer, i: number, ev: Uint32Array, r: number, kind: number, hsize: number, trace: boolean): void {
    if (this.#state !== 'active') {
      this.log.debug('dropping a TCP packet that came before VERSION');
      return;
    }
    const slot = ev[r + DemuxField.SLOT_OR_PROTOCOL]!;
    const flags = ev[r + DemuxField.FLAGS]!;
    const length = ev[r + DemuxField.PAYLOAD_LENGTH]!;
    const conn = slot === NO_SLOT ? undefined : this.#slotConnections[slot];
    if (trace) {
      const p = demuxer.packet(i);
      this.log.trace(`[IN] ${p.readUInt16BE(hsize)}→${p.readUInt16BE(hsize + 2)} flags=0x${flags.toString(16)} seq=${ev[r + DemuxField.SEQ]} ack=${ev[r + DemuxField.ACK]} win=${ev[r + DemuxField.WINDOW]} len=${length}`);
    }
    if (conn === undefined) {
      // No connection (or one already released): its ports are in the packet itself.
      if ((flags & RST) === 0) {
        const p = demuxer.packet(i);
        this.#sendAnonymousReset(p.readUInt16BE(hsize), p.readUInt16BE(hsize + 2), ev[r + DemuxField.SEQ]!);
      }
      return;
    }
    // An RST's payload is its reason, read from the packet; any other payload is in the ring.
    const payload = (flags & RST) !== 0 && length > 0 ? demuxer.packet(i).subarray(hsize + TCP_HEADER_SIZE) : undefined;
    conn.handleRingSegment(flags, ev[r + DemuxField.ACK]!, ev[r + DemuxField.WINDOW]!, length, kind === DemuxEvent.TCP_OVERFLOW, payload, ev[r + DemuxField.SENT]!);
  }

  #onData(chunk: Buffer): void {
    if (this.#state === 'closed') return;
    const decoder = this.#decoder!;
    try {
      decoder.push(chunk);
    } catch (err) {
      this.#fail(err as Error);
      return;
    }
    for (;;) {
      let packet;
      try {
        packet = decoder.next();
      } catch (err) {
        // The IN pipe is framed by the header length; after a bad length there is no way back in.
        this.#fail(err as Error);
        return;
      }
      if (packet === undefined) return;
      this.#dispatch(packet.header, packet.payload);
      if ((this.#state as DeviceSessionState) === 'closed') return;
    }
  }

  #dispatch(header: MuxHeader, payload: Buffer): void {
    // usbmuxd echoes the rx_seq field of every device v2 packet (§2.4); it never checks tx_seq.
    if (this.#version === 2 && header.rxSeq !== undefined) this.#rxSeq = header.rxSeq;
    this.#dispatchPacket(header, payload);
  }

  #dispatchPacket(header: MuxHeader, payload: Buffer): void {
    switch (header.protocol) {
      case MuxProtocol.TCP:
        this.#onTcp(payload);
        return;
      case MuxProtocol.VERSION:
        this.#onVersion(payload);
        return;
      case MuxProtocol.CONTROL:
        this.#onControl(payload);
        return;
      default:
        this.log.debug(`ignoring a mux packet of unknown protocol ${header.protocol}`);
    }
  }

  #onVersion(payload: Buffer): void {
    if (this.#state !== 'negotiating') {
      this.log.warn('ignoring a second VERSION packet');
      return;
    }
    if (payload.length < 12) {
      this.log.debug(`dropping a short VERSION packet (${payload.length} bytes)`);
      return;
    }
    const { major, minor } = decodeVersionPayload(payload);
    if (major === 2) {
      this.#version = 2;
      // Set before SETUP goes out: the device sends nothing between its VERSION reply and SETUP.
      if (this.#decoder !== undefined) this.#decoder.version = 2;
      if (this.#demuxer !== undefined) this.#demuxer.version = 2;
      // SETUP resets the counters first: it carries tx_seq 0, rx_seq 0xFFFF (§2.3 step 3).
      this.#txSeq = 0;
      this.#rxSeq = 0xffff;
      this.#activate(major, minor);
      this.#sendPacket(MuxProtocol.SETUP, SETUP_PAYLOAD);
    } else if (major === 1) {
      this.#version = 1;
      this.#activate(major, minor);
    } else {
      // usbmuxd frees the device but leaves its USB handle claimed (§6.12); we close the link.
      this.#fail(new MuxwireError('MUXWIRE_ERR_MUX_VERSION', `the device speaks mux version ${major}.${minor}, not 1 or 2`));
    }
  }

  #activate(major: number, minor: number): void {
    if (this.#versionTimer !== undefined) clearTimeout(this.#versionTimer);
    this.#versionTimer = undefined;
    this.#state = 'active';
    this.log.debug(`connected to a v${major}.${minor} device`);
    this.#readyResolve();
  }

  #onControl(payload: Buffer): void {
    if (payload.length === 0) {
      this.log.warn('empty CONTROL packet');
      return;
    }
    // The payload starts right after the header for v1 devices too (usbmuxd's offset bug, §2.6).
    const type = payload[0]!;
    const text = payload.subarray(1).toString('latin1').replace(/\0+$/, '');
    if (type === 3) this.log.error(`device error: ${text}`);
    else if (type === 5 || type === 4) this.log.warn(`device warning: ${text}`);
    else if (type === 7) this.log.info(`device info: ${text}`);
    else this.log.debug(`device control message of type ${type}: ${text}`);
  }

  #onTcp(payload: Buffer): void {
    if (this.#state !== 'active') {
      this.log.debug('dropping a TCP packet that came before VERSION');
      return;
    }
    if (payload.length < TCP_HEADER_SIZE) {
      this.log.debug(`dropping a TCP packet of ${payload.length} bytes`);
      return;
    }
    const th = decodeTcpHeader(payload, 0);
    const data = payload.subarray(TCP_HEADER_SIZE);
    // The device's source port is the service port; its destination is our source port.
    const conn = this.#connections.get(th.dport);
    if (rootLog.enabled('trace')) {
      this.log.trace(`[IN] ${th.sport}→${th.dport} flags=0x${th.flags.toString(16)} seq=${th.seq} ack=${th.ack} win=${th.window} len=${data.length}`);
    }
    if (conn === undefined || conn.devicePort !== th.sport) {
      if ((th.flags & RST) === 0) this.#sendAnonymousReset(th.sport, th.dport, th.seq);
      return;
    }
    conn.handleSegment(th.flags, th.ack, th.window, data);
  }

  /** An RST for a packet that matches no connection: seq 0, ack = its seq, window 0 (§2.7). */
  #sendAnonymousReset(deviceSport: number, deviceDport: number, seq: number): void {
    this.log.debug(`resetting a packet for unknown connection ${deviceDport}→${deviceSport}`);
    tcpScratch.sport = deviceDport;
    tcpScratch.dport = deviceSport;
    tcpScratch.seq = 0;
    tcpScratch.ack = seq;
    tcpScratch.flags = RST;
    tcpScratch.window = 0;
    const hsize = muxHeaderSize(this.#version);
    const packet = Buffer.allocUnsafe(hsize + TCP_HEADER_SIZE);
    this.#writeMuxHeader(packet, MuxProtocol.TCP);
    encodeTcpHeader(tcpScratch, packet, hsize);
    this.link.sendPacket(packet);
  }

  // ---- send path ---------------------------------------------------------------------------------

  /** Writes the mux header for a packet of `length` bytes in all, advancing tx_seq. */
  #writeMuxHeader(packet: Buffer, protocol: MuxProtocol, length = packet.length): void {
    muxScratch.protocol = protocol;
    muxScratch.length = length;
    muxScratch.magic = MUX_MAGIC;
    muxScratch.txSeq = this.#txSeq;
    muxScratch.rxSeq = this.#rxSeq;
    encodeMuxHeader(muxScratch, this.#version, packet, 0);
    // tx_seq counts every v2 packet (SETUP, data, ACK, RST) and wraps at 16 bits (§2.4).
    if (this.#version === 2) this.#txSeq = (this.#txSeq + 1) & 0xffff;
  }

  #sendPacket(protocol: MuxProtocol, payload: Buffer): void {
    const hsize = muxHeaderSize(this.#version);
    const packet = Buffer.allocUnsafe(hsize + payload.length);
    payload.copy(packet, hsize);
    this.#writeMuxHeader(packet, protocol);
    this.link.sendPacket(packet);
  }

  // ---- endings -----------------------------------------------------------------------------------

  #onLinkClose(err?: Error): void {
    if (this.#state === 'closed') return;
    if (err) this.log.debug(`device link closed: ${err.message}`);
    const cause = new MuxwireError('MUXWIRE_ERR_NO_DEVICE', 'the device was disconnected', err ? { cause: err } : undefined);
    if (this.#state === 'negotiating') {
      this.#finish(cause);
      return;
    }
    // Unplug: no RST can reach the device; each client gets what was received, then its end.
    this.#finish(cause);
  }

  /** Fatal device error: reset what can be reset, close the link. */
  #fail(err: Error): void {
    if (this.#state === 'closed') return;
    this.log.warn(`device session failed: ${err.message}`);
    for (const conn of [...this.#connections.values()]) conn.shutdown();
    this.#finish(err);
    this.link.close();
  }

  #finish(err: Error): void {
    if (this.#state === 'closed') return;
    const wasNegotiating = this.#state === 'negotiating';
    this.#state = 'closed';
    this.#closeError ??= err;
    if (this.#versionTimer !== undefined) clearTimeout(this.#versionTimer);
    this.#versionTimer = undefined;
    if (wasNegotiating) this.#readyReject(err);
    // Connections still connecting learn of it through deviceGone(); the map empties as they go.
    const conns = [...this.#connections.values()];
    for (const conn of conns) conn.deviceGone();
    this.#connections.clear();
    this.emit('closed', err);
  }
}

function ignore(): void {
  // intentionally empty: see the call sites
}

function onVersionTimeout(session: DeviceSession): void {
  session.versionTimedOut();
}
