/**
 * The device→host demuxer (issue 6) behind one interface for both implementations: the addon's
 * `Demuxer` class (native/demuxer.cc) or its TypeScript twin (demux-core.ts). This wrapper checks
 * arguments, owns the memory both sides work in, and turns raw results into coded errors.
 *
 * Memory both sides see (docs/ARCHITECTURE.md, conventions §6): `events` (one record per packet,
 * see demux-core.ts), two staging buffers for packets that span transfers, and per connection a
 * ring buffer plus its read/write positions in `ringState`. A TCP payload is copied once, from the
 * transfer into its connection's ring; `readable(slot)` hands out views of ring memory, and
 * `consume(slot, n)` releases them. Backpressure: a ring never grows, so memory per connection is
 * its capacity, and a device that sends past it gets TCP_OVERFLOW events (the engine's window
 * should prevent that).
 *
 * Views returned by `packet(i)` are valid until the next `push`; views from `readable(slot)` until
 * the bytes are consumed or the connection closes.
 *
 * Rings are recycled: a connection closed with every byte consumed leaves its ring on a short free
 * list for the next `openConnection` of the same capacity, so a connect does not pay for a fresh
 * 256 KiB allocation (an mmap, page faults, and external memory that drives the GC). Only a fully
 * consumed ring qualifies: every view handed out of it was of consumed bytes, which the ring would
 * overwrite anyway. A ring closed with unread bytes is dropped, so views of them held elsewhere (a
 * socket still writing them) stay valid until they are let go.
 */
import { MuxwireError } from '../errors.js';
import {
  DEMUX_EVENT_FIELDS,
  DemuxEvent,
  DemuxField,
  OFFSET_EARLIER,
  SOURCE_TRANSFER,
  type RawDemuxer,
  type RawDemuxerConstructor,
} from './demux-core.js';
import { SCAN_BAD_LENGTH } from './accel.js';

/** The RST bit of the TCP-like header's flags: an RST's payload is read from its packet. */
const TCP_FLAG_RST = 0x04;

export interface DemuxerOptions {
  /** Mux header version of the packets to come (1 until VERSION negotiates 2). */
  readonly version: 1 | 2;
  /** Largest packet accepted (default 65536, usbmuxd's DEV_MRU; at least 16). */
  readonly maxPacket?: number;
  /** Connection slots (default 256). */
  readonly maxConnections?: number;
}

/** Default ring capacity: the 256 KiB a host window of 128 KiB fits in twice. */
export const DEFAULT_RING_CAPACITY = 256 * 1024;
const DEFAULT_MAX_PACKET = 65536;
const DEFAULT_MAX_CONNECTIONS = 256;
const MAX_RING_CAPACITY = 1 << 30;
/** Closed rings kept for reuse per demuxer: 8 × 256 KiB at most, enough for bursts of connects. */
const MAX_FREE_RINGS = 8;

export class Demuxer {
  readonly #core: RawDemuxer;
  readonly #staging: [Buffer, Buffer];
  readonly #rings: (Buffer | undefined)[];
  /** Ports key (sport · 65536 + dport) of each open slot, and the reverse. */
  readonly #keys: number[];
  readonly #slotsByPorts = new Map<number, number>();
  /** Rings of closed connections, fully consumed, waiting to be reused (see the file comment). */
  readonly #freeRings: Buffer[] = [];
  #version: 1 | 2;
  #events: Uint32Array;
  /** The transfer of the last push, which events with source 0 point into. */
  #transfer: Uint8Array = new Uint8Array(0);
  #count = 0;

  /** Read and write positions per slot, shared with the core: `[2s]` read, `[2s + 1]` write. */
  readonly ringState: Uint32Array;

  /** Use `Accel.createDemuxer()`; this takes the implementation's raw constructor. */
  constructor(Core: RawDemuxerConstructor, options: DemuxerOptions) {
    const { version, maxPacket = DEFAULT_MAX_PACKET, maxConnections = DEFAULT_MAX_CONNECTIONS } = options;
    checkVersion(version);
    if (!Number.isInteger(maxPacket) || maxPacket < 16 || maxPacket > DEFAULT_MAX_PACKET) {
      throw new RangeError(`maxPacket must be an integer in 16..${DEFAULT_MAX_PACKET}`);
    }
    if (!Number.isInteger(maxConnections) || maxConnections < 1 || maxConnections > 65536) {
      throw new RangeError('maxConnections must be an integer in 1..65536');
    }
    this.#version = version;
    this.#staging = [Buffer.allocUnsafeSlow(maxPacket), Buffer.allocUnsafeSlow(maxPacket)];
    this.ringState = new Uint32Array(2 * maxConnections);
    this.#rings = new Array<Buffer | undefined>(maxConnections).fill(undefined);
    this.#keys = new Array<number>(maxConnections).fill(-1);
    // Grown by push() to what the largest transfer needs.
    this.#events = new Uint32Array(DEMUX_EVENT_FIELDS * 256);
    this.#core = new Core(version, maxPacket, this.#staging[0], this.#staging[1], this.ringState);
  }

  /** Header version for the packets to come; set 2 once VERSION negotiated it. */
  get version(): 1 | 2 {
    return this.#version;
  }
  set version(version: 1 | 2) {
    checkVersion(version);
    this.#core.setVersion(version);
    this.#version = version;
  }

  /** Records of the last push: `count` × DEMUX_EVENT_FIELDS entries (demux-core.ts). */
  get events(): Uint32Array {
    return this.#events;
  }

  /** Bytes of a packet that began in a pushed transfer and is still incomplete. */
  get staged(): number {
    return this.#core.staged();
  }

  /**
   * Opens a connection slot for the ports the device's packets carry (sport = the device's port,
   * dport = the host's), with a ring of `capacity` bytes (a power of two). Returns the slot.
   * @throws MuxwireError `MUXWIRE_ERR_TOO_MANY_CONNECTIONS` when every slot is taken;
   *   `MUXWIRE_ERR_PORT_IN_USE` when these ports already have a connection.
   */
  openConnection(sport: number, dport: number, capacity = DEFAULT_RING_CAPACITY): number {
    checkPort(sport, 'sport');
    checkPort(dport, 'dport');
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > MAX_RING_CAPACITY || (capacity & (capacity - 1)) !== 0) {
      throw new RangeError('ring capacity must be a power of two up to 1 GiB');
    }
    const key = sport * 65536 + dport;
    if (this.#slotsByPorts.has(key)) {
      throw new MuxwireError('MUXWIRE_ERR_PORT_IN_USE', `a connection ${sport}→${dport} is already open`);
    }
    const slot = this.#rings.indexOf(undefined);
    if (slot < 0) {
      throw new MuxwireError('MUXWIRE_ERR_TOO_MANY_CONNECTIONS', `all ${this.#rings.length} connection slots are in use`);
    }
    const ring = this.#takeFreeRing(capacity) ?? Buffer.allocUnsafeSlow(capacity);
    this.#core.open(slot, sport, dport, ring);
    this.#rings[slot] = ring;
    this.#keys[slot] = key;
    this.#slotsByPorts.set(key, slot);
    return slot;
  }

  /**
   * Forgets a connection: its packets become TCP events without a slot; its ring is released (and
   * recycled when nothing in it was left unread).
   */
  closeConnection(slot: number): void {
    const ring = this.#ring(slot);
    const drained = this.unread(slot) === 0;
    this.#core.close(slot);
    this.#rings[slot] = undefined;
    this.#slotsByPorts.delete(this.#keys[slot]!);
    this.#keys[slot] = -1;
    if (drained && this.#freeRings.length < MAX_FREE_RINGS) this.#freeRings.push(ring);
  }

  /** A recycled ring of exactly `capacity` bytes, most recently closed first (its pages are warm). */
  #takeFreeRing(capacity: number): Buffer | undefined {
    const free = this.#freeRings;
    for (let i = free.length - 1; i >= 0; i--) {
      const ring = free[i]!;
      if (ring.length !== capacity) continue;
      free[i] = free[free.length - 1]!;
      free.pop();
      return ring;
    }
    return undefined;
  }

  /**
   * Consumes one IN transfer and returns how many event records it produced (read them from
   * `events`). Views from the previous push's `packet()` are invalid from here on.
   * @throws MuxwireError `MUXWIRE_ERR_BAD_LENGTH` (`detail: {offset, length}`, offset undefined
   *   when the packet began in an earlier transfer) — fatal: every later push throws it again.
   */
  push(transfer: Uint8Array): number {
    if (!(transfer instanceof Uint8Array)) throw new TypeError('push: transfer must be a Buffer or Uint8Array');
    const need = DEMUX_EVENT_FIELDS * (1 + Math.floor(transfer.length / (this.#version === 1 ? 8 : 16)));
    // Grow to the largest transfer seen: bounded by the transfer itself, already in memory.
    if (this.#events.length < need) this.#events = new Uint32Array(need);
    this.#count = 0;
    this.#transfer = transfer;
    const result = this.#core.push(transfer, this.#events);
    if (result === SCAN_BAD_LENGTH) {
      const offset = this.#events[0] === OFFSET_EARLIER ? undefined : this.#events[0]!;
      const length = this.#events[1]!;
      throw new MuxwireError(
        'MUXWIRE_ERR_BAD_LENGTH',
        `mux packet ${offset === undefined ? 'begun in an earlier transfer' : `at offset ${offset}`} declares length ${length}, outside ${this.#version === 1 ? 8 : 16}..${this.#staging[0].length}`,
        { detail: { offset, length } },
      );
    }
    this.#count = result;
    return result;
  }

  /**
   * A view of event `i`'s packet, valid until the next push: the whole packet for PACKET events
   * and RSTs (whose payload is their reason), the mux and TCP headers only for the other TCP
   * events, whose payload is read from the connection's ring. (The payload of a packet that spans
   * transfers goes straight to the ring, so staging holds its headers alone.)
   */
  packet(i: number): Buffer {
    if (!Number.isInteger(i) || i < 0 || i >= this.#count) throw new RangeError(`no event ${i}`);
    const r = i * DEMUX_EVENT_FIELDS;
    const ev = this.#events;
    const source = ev[r + DemuxField.SOURCE]!;
    const offset = ev[r + DemuxField.OFFSET]!;
    let length = ev[r + DemuxField.LENGTH]!;
    if (ev[r + DemuxField.KIND] !== DemuxEvent.PACKET && (ev[r + DemuxField.FLAGS]! & TCP_FLAG_RST) === 0) {
      length -= ev[r + DemuxField.PAYLOAD_LENGTH]!;
    }
    const from = source === SOURCE_TRANSFER ? this.#transfer : this.#staging[source - 1]!;
    return Buffer.from(from.buffer, from.byteOffset + offset, length);
  }

  /** Unread payload bytes of a connection. */
  unread(slot: number): number {
    this.#ring(slot);
    return (this.ringState[2 * slot + 1]! - this.ringState[2 * slot]!) >>> 0;
  }

  /** Views of a connection's unread bytes in order: none, one, or two when they wrap the ring. */
  readable(slot: number): Buffer[] {
    const ring = this.#ring(slot);
    const unread = this.unread(slot);
    if (unread === 0) return [];
    const at = this.ringState[2 * slot]! & (ring.length - 1);
    const first = Math.min(unread, ring.length - at);
    const views = [ring.subarray(at, at + first)];
    if (first < unread) views.push(ring.subarray(0, unread - first));
    return views;
  }

  /**
   * Gives a connection a sink socket (its file descriptor) that the native core sends payloads to
   * directly, with no copy into the ring, while direct sends are on (`setDirect`) and the ring
   * holds nothing unread (native/demuxer.h, "Sinks"); a payload the socket does not take at once
   * goes into the ring and turns direct sends off. Returns false, changing nothing, when the
   * implementation has no sinks (the TypeScript twin) or `fd` is not a stream socket.
   */
  attachSink(slot: number, fd: number): boolean {
    this.#ring(slot);
    if (this.#core.attachSink === undefined || !Number.isInteger(fd) || fd < 0) return false;
    return this.#core.attachSink(slot, fd);
  }

  /** Turns direct sends to the slot's sink on or off (no-op without a sink). */
  setDirect(slot: number, on: boolean): void {
    this.#ring(slot);
    this.#core.setDirect?.(slot, on);
  }

  /** Forgets the slot's sink and closes the core's duplicate of its descriptor. */
  detachSink(slot: number): void {
    if (this.#rings[slot] === undefined) return;
    this.#core.detachSink?.(slot);
  }

  /** Releases `n` bytes from the front of a connection's unread data. */
  consume(slot: number, n: number): void {
    if (!Number.isInteger(n) || n < 0 || n > this.unread(slot)) throw new RangeError(`cannot consume ${n} bytes`);
    this.ringState[2 * slot] = this.ringState[2 * slot]! + n;
  }

  #ring(slot: number): Buffer {
    const ring = Number.isInteger(slot) ? this.#rings[slot] : undefined;
    if (ring === undefined) throw new RangeError(`no open connection in slot ${slot}`);
    return ring;
  }
}

function checkVersion(version: unknown): asserts version is 1 | 2 {
  if (version !== 1 && version !== 2) throw new RangeError('version must be 1 or 2');
}

function checkPort(port: unknown, name: string): void {
  if (!Number.isInteger(port) || (port as number) < 0 || (port as number) > 65535) throw new RangeError(`${name} must be a port number`);
}
