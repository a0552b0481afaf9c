/**
 * The TypeScript twin of native/demuxer.cc: the device→host demuxer core. It reads the bulk IN
 * pipe as a byte stream of mux packets (packets may span transfers, a transfer may hold several),
 * and appends each TCP payload of a known connection to that connection's ring buffer. The parity
 * test holds the two to identical events, ring bytes and positions.
 *
 * ```
 * IN transfers:   │ pkt │ pkt │ pk│ │t│ │t │ pkt │ p│ ...      (boundaries anywhere)
 *                              └─staged─┘ reassembled in staging A/B, else events point into
 *                                         the transfer itself; the payload of a reassembled TCP
 *                                         packet for an open connection is copied straight into
 *                                         its ring, and only its headers are staged
 * event record (DEMUX_EVENT_FIELDS u32 per packet):
 *  0 kind        1 PACKET · 2 TCP (payload not stored: unknown connection, empty, or an RST,
 *                whose payload is its reason) · 3 TCP_DATA (payload in the ring)
 *                · 4 TCP_OVERFLOW (payload larger than the ring's free space: not stored)
 *  1 protocol (PACKET) | connection slot (TCP kinds; 0xFFFFFFFF = no such connection)
 *  2 source      0 transfer · 1 staging A · 2 staging B
 *  3 offset      4 length (whole packet)
 *  5 v2: tx_seq << 16 | rx_seq (v1: 0)
 *  6 TCP kinds: ring write position before this payload    7 payload length
 *  8 TCP kinds: seq   9 ack   10 flags   11 window in bytes (field << 8); PACKET: 0
 *  12 TCP_DATA: payload bytes sent straight to the connection's sink (native only: the rest
 *     went into the ring); else 0
 * ring positions (shared Uint32Array, 2 per slot): [2s] read, [2s+1] write; byte totals mod 2^32
 * ```
 */
import { SCAN_BAD_LENGTH } from './accel.js';

/** u32 entries per event: everything the engine needs per packet, without a view of it. */
export const DEMUX_EVENT_FIELDS = 13;
/** Event kinds (field 0). */
export const DemuxEvent = { PACKET: 1, TCP: 2, TCP_DATA: 3, TCP_OVERFLOW: 4 } as const;
/** Field indices inside one event record. */
export const DemuxField = {
  KIND: 0,
  /** The protocol for PACKET events, the connection slot for TCP kinds. */
  SLOT_OR_PROTOCOL: 1,
  SOURCE: 2,
  OFFSET: 3,
  LENGTH: 4,
  SEQS: 5,
  RING_START: 6,
  PAYLOAD_LENGTH: 7,
  SEQ: 8,
  ACK: 9,
  FLAGS: 10,
  /** In bytes: the wire's window field << 8. */
  WINDOW: 11,
  /** TCP_DATA: bytes of the payload the native core sent straight to the connection's sink. */
  SENT: 12,
} as const;
/** Source (field 2) of a packet that lies in the pushed transfer; 1 and 2 are staging A and B. */
export const SOURCE_TRANSFER = 0;
/** Slot (field 1) of a TCP packet for no open connection. */
export const NO_SLOT = 0xffffffff;
/** Offset reported by a failed push when the bad packet began in an earlier transfer. */
export const OFFSET_EARLIER = 0xffffffff;

const LENGTH_FIELD_END = 8;
const TCP_HEADER_SIZE = 20;
const PROTOCOL_TCP = 6;
const TCP_FLAG_RST = 0x04;

/** The raw demuxer both the addon's `Demuxer` class and {@link DemuxCoreJs} implement. Arguments
 * are assumed valid (src/accel/demuxer.ts checks them). */
export interface RawDemuxer {
  setVersion(version: 1 | 2): void;
  /** Registers a connection under the ports its device packets carry (sport = device port). */
  open(slot: number, sport: number, dport: number, ring: Uint8Array): void;
  close(slot: number): void;
  /** Event count, or -1 with events[0] = offset (OFFSET_EARLIER) and events[1] = length. */
  push(transfer: Uint8Array, events: Uint32Array): number;
  /** Bytes of a packet still being reassembled. */
  staged(): number;
  /**
   * Native only (native/demuxer.h, "Sinks"): gives a connection a socket its payloads are sent to
   * directly while `setDirect(slot, true)` holds and its ring is empty. The core keeps its own
   * duplicate of `fd`. False when `fd` is not a stream socket.
   */
  attachSink?(slot: number, fd: number): boolean;
  setDirect?(slot: number, on: boolean): void;
  detachSink?(slot: number): void;
}

export type RawDemuxerConstructor = new (
  version: 1 | 2,
  maxPacket: number,
  stagingA: Uint8Array,
  stagingB: Uint8Array,
  ringState: Uint32Array,
) => RawDemuxer;

interface Ring {
  data: Uint8Array;
  key: number;
}

export class DemuxCoreJs implements RawDemuxer {
  #version: 1 | 2;
  readonly #maxPacket: number;
  readonly #staging: [Uint8Array, Uint8Array];
  readonly #ringState: Uint32Array;
  readonly #rings: (Ring | undefined)[];
  readonly #slotsByPorts = new Map<number, number>();
  /** Which staging buffer receives the packet being reassembled, and how much of it is there. */
  #current = 0;
  #staged = 0;
  /** The payload of the packet being reassembled goes to this ring from `write` on; `orphaned`
   * once that connection closed, after which the rest of the payload is dropped. */
  #stream: { slot: number; write: number; orphaned: boolean } | undefined;
  #failed: { offset: number; length: number } | undefined;

  constructor(version: 1 | 2, maxPacket: number, stagingA: Uint8Array, stagingB: Uint8Array, ringState: Uint32Array) {
    this.#version = version;
    this.#maxPacket = maxPacket;
    this.#staging = [stagingA, stagingB];
    this.#ringState = ringState;
    this.#rings = new Array<Ring | undefined>(ringState.length / 2).fill(undefined);
  }

  setVersion(version: 1 | 2): void {
    this.#version = version;
  }

  open(slot: number, sport: number, dport: number, ring: Uint8Array): void {
    const key = portsKey(sport, dport);
    this.#rings[slot] = { data: ring, key };
    this.#ringState[2 * slot] = 0;
    this.#ringState[2 * slot + 1] = 0;
    this.#slotsByPorts.set(key, slot);
  }

  close(slot: number): void {
    const ring = this.#rings[slot];
    if (ring === undefined) return;
    // A payload streaming into this ring stops there: the ring may be handed to another connection.
    if (this.#stream?.slot === slot) this.#stream.orphaned = true;
    this.#slotsByPorts.delete(ring.key);
    this.#rings[slot] = undefined;
  }

  staged(): number {
    return this.#staged;
  }

  push(data: Uint8Array, events: Uint32Array): number {
    if (this.#failed !== undefined) {
      events[0] = this.#failed.offset;
      events[1] = this.#failed.length;
      return SCAN_BAD_LENGTH;
    }
    const size = data.length;
    // A zero-length transfer (a ZLP) changes nothing.
    if (size === 0) return 0;
    let count = 0;
    let pos = 0;

    // 1. Finish the packet that began in an earlier transfer, copying only what it still lacks.
    if (this.#staged > 0) {
      const stage = this.#staging[this.#current]!;
      if (this.#staged < LENGTH_FIELD_END) {
        const take = Math.min(LENGTH_FIELD_END - this.#staged, size);
        this.#append(data, 0, take);
        pos = take;
        if (this.#staged < LENGTH_FIELD_END) return 0;
      }
      // Checked on every push, not only when the length arrived: the version (and so the header
      // size) may have changed since.
      const length = readU32BE(stage, 4);
      if (!this.#lengthOk(length)) return this.#fail(OFFSET_EARLIER, length, events);
      const take = Math.min(length - this.#staged, size - pos);
      this.#append(data, pos, take);
      pos += take;
      if (this.#staged < length) return 0;
      this.#emit(1 + this.#current, 0, stage, 0, length, events, 0);
      count++;
      // The finished packet stays readable in this staging buffer until the next push (its
      // headers only, when its payload went straight to a ring); a new partial packet goes to the
      // other one.
      this.#current ^= 1;
      this.#staged = 0;
    }

    // 2. Whole packets inside the transfer: events point into it, nothing is copied.
    while (size - pos >= LENGTH_FIELD_END) {
      const length = readU32BE(data, pos + 4);
      if (!this.#lengthOk(length)) return this.#fail(pos, length, events);
      if (size - pos < length) break;
      this.#emit(SOURCE_TRANSFER, pos, data, pos, length, events, count * DEMUX_EVENT_FIELDS);
      count++;
      pos += length;
    }

    // 3. Keep the start of the next packet; its length, when visible, passed the check above.
    if (pos < size) this.#append(data, pos, size - pos);
    return count;
  }

  /**
   * Appends `data[at, at + n)`, bytes of the packet being reassembled (never past its end): the
   * headers to staging, the payload to staging or, once #startStream said so, straight to its
   * connection's ring, unpublished until the packet is complete. A payload is then copied once,
   * as for a packet inside one transfer, instead of into staging and then again into the ring.
   */
  #append(data: Uint8Array, at: number, n: number): void {
    const stage = this.#staging[this.#current]!;
    const headers = this.#headerSize() + TCP_HEADER_SIZE;
    if (this.#stream === undefined) {
      // #staged === headers only until the first payload byte: the choice is made once a packet.
      const head = this.#staged < headers ? Math.min(headers - this.#staged, n) : 0;
      copyBytes(data, at, at + head, stage, this.#staged);
      this.#staged += head;
      at += head;
      n -= head;
      if (n === 0) return;
      if (this.#staged !== headers || !this.#startStream()) {
        copyBytes(data, at, at + n, stage, this.#staged);
        this.#staged += n;
        return;
      }
    }
    const stream = this.#stream!;
    if (!stream.orphaned) {
      const ring = this.#rings[stream.slot]!.data;
      const ringAt = (stream.write + (this.#staged - headers)) & (ring.length - 1);
      const first = Math.min(n, ring.length - ringAt);
      copyBytes(data, at, at + first, ring, ringAt);
      copyBytes(data, at + first, at + n, ring, 0);
    }
    this.#staged += n;
  }

  /**
   * With the headers staged: whether the payload may go straight to its connection's ring. Only a
   * TCP packet that is not an RST (whose payload, its reason, the engine reads from the packet),
   * for an open connection, that fits its ring's free space (else the complete packet is
   * reported as an overflow, as any packet is). native/demuxer.cc also keeps the sink's fast path.
   */
  #startStream(): boolean {
    const stage = this.#staging[this.#current]!;
    const headerSize = this.#headerSize();
    const length = readU32BE(stage, 4);
    if (readU32BE(stage, 0) !== PROTOCOL_TCP || length <= headerSize + TCP_HEADER_SIZE) return false;
    const tcp = headerSize;
    if ((stage[tcp + 13]! & TCP_FLAG_RST) !== 0) return false;
    const slot = this.#slotsByPorts.get(portsKey((stage[tcp]! << 8) | stage[tcp + 1]!, (stage[tcp + 2]! << 8) | stage[tcp + 3]!));
    if (slot === undefined) return false;
    const capacity = this.#rings[slot]!.data.length;
    const write = this.#ringState[2 * slot + 1]!;
    const unread = (write - this.#ringState[2 * slot]!) >>> 0;
    const free = unread > capacity ? 0 : capacity - unread;
    if (length - headerSize - TCP_HEADER_SIZE > free) return false;
    this.#stream = { slot, write, orphaned: false };
    return true;
  }

  #headerSize(): number {
    return this.#version === 1 ? 8 : 16;
  }

  #lengthOk(length: number): boolean {
    return length >= this.#headerSize() && length <= this.#maxPacket;
  }

  #fail(offset: number, length: number, events: Uint32Array): number {
    // A length that cannot be trusted leaves no way to find the next packet: the stream is over
    // (netmuxd: fatal for the device), and every later push says so again.
    this.#failed = { offset, length };
    this.#stream = undefined;
    events[0] = offset;
    events[1] = length;
    return SCAN_BAD_LENGTH;
  }

  /** Writes the record for the packet at `buf[at, at + length)` (reported as source/offset). */
  #emit(source: number, offset: number, buf: Uint8Array, at: number, length: number, record: Uint32Array, r: number): void {
    const headerSize = this.#headerSize();
    const protocol = readU32BE(buf, at);
    record[r + 2] = source;
    record[r + 3] = offset;
    record[r + 4] = length;
    record[r + 5] = this.#version === 2 ? readU32BE(buf, at + 12) : 0;
    // usbmuxd drops TCP packets shorter than header + 20 (usbmux.md §2.7): reported as packets.
    if (protocol !== PROTOCOL_TCP || length < headerSize + TCP_HEADER_SIZE) {
      record[r] = DemuxEvent.PACKET;
      record[r + 1] = protocol;
      record[r + 6] = 0;
      record[r + 7] = length - headerSize;
      record[r + 8] = record[r + 9] = record[r + 10] = record[r + 11] = record[r + 12] = 0;
      return;
    }
    const tcp = at + headerSize;
    const payloadLength = length - headerSize - TCP_HEADER_SIZE;
    record[r + 7] = payloadLength;
    record[r + 8] = readU32BE(buf, tcp + 4);
    record[r + 9] = readU32BE(buf, tcp + 8);
    record[r + 10] = buf[tcp + 13]!;
    record[r + 11] = ((buf[tcp + 14]! << 8) | buf[tcp + 15]!) * 256;
    record[r + 12] = 0;
    const stream = this.#stream;
    this.#stream = undefined;
    if (stream !== undefined && !stream.orphaned) {
      // The payload is already in the ring, after the write position: publish it.
      record[r] = DemuxEvent.TCP_DATA;
      record[r + 1] = stream.slot;
      record[r + 6] = stream.write;
      this.#ringState[2 * stream.slot + 1] = stream.write + payloadLength;
      return;
    }
    const slot = this.#slotsByPorts.get(portsKey((buf[tcp]! << 8) | buf[tcp + 1]!, (buf[tcp + 2]! << 8) | buf[tcp + 3]!));
    if (slot === undefined) {
      record[r] = DemuxEvent.TCP;
      record[r + 1] = NO_SLOT;
      record[r + 6] = 0;
      return;
    }
    const ring = this.#rings[slot]!.data;
    const read = this.#ringState[2 * slot]!;
    const write = this.#ringState[2 * slot + 1]!;
    record[r + 1] = slot;
    record[r + 6] = write;
    if (stream !== undefined) {
      // Its connection closed while the payload streamed in, and another opened on the same
      // ports: the bytes are gone, which the engine hears of as an overflow of the new connection.
      record[r] = DemuxEvent.TCP_OVERFLOW;
      return;
    }
    // An RST's payload is the device's reason for the reset, not stream data (usbmux.md §3.7):
    // neither stored nor (natively) sent, so a client never receives it as connection bytes.
    if (payloadLength === 0 || (buf[tcp + 13]! & TCP_FLAG_RST) !== 0) {
      record[r] = DemuxEvent.TCP;
      return;
    }
    // JS owns the read position; one that claims more unread bytes than the ring holds is treated
    // as a full ring rather than trusted.
    const capacity = ring.length;
    const unread = (write - read) >>> 0;
    const free = unread > capacity ? 0 : capacity - unread;
    if (payloadLength > free) {
      record[r] = DemuxEvent.TCP_OVERFLOW;
      return;
    }
    const ringAt = write & (capacity - 1);
    const first = Math.min(payloadLength, capacity - ringAt);
    const payload = tcp + TCP_HEADER_SIZE;
    copyBytes(buf, payload, payload + first, ring, ringAt);
    copyBytes(buf, payload + first, payload + payloadLength, ring, 0);
    this.#ringState[2 * slot + 1] = write + payloadLength;
    record[r] = DemuxEvent.TCP_DATA;
  }
}

function portsKey(sport: number, dport: number): number {
  return sport * 65536 + dport;
}

function readU32BE(buf: Uint8Array, at: number): number {
  return ((buf[at]! << 24) | (buf[at + 1]! << 16) | (buf[at + 2]! << 8) | buf[at + 3]!) >>> 0;
}

/** Copies without allocating a view when the source is a Buffer (the usual case). */
function copyBytes(src: Uint8Array, start: number, end: number, dst: Uint8Array, at: number): void {
  if (end <= start) return;
  if (Buffer.isBuffer(src)) src.copy(dst, at, start, end);
  else dst.set(src.subarray(start, end), at);
}
