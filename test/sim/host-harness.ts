/**
 * A hand-driven host for DeviceMux tests: it builds host packets with the protocol encoders (as
 * usbmuxd lays them out, usbmux.md §2–§3) and decodes every device packet the mux transmits, so a
 * test can check each field. It does nothing on its own: no ACKs, no window logic.
 */
import assert from 'node:assert/strict';
import { DeviceMux } from '../../src/sim/device-mux.js';
import type { DeviceMuxOptions } from '../../src/sim/device-mux.js';
import {
  MuxProtocol,
  decodeMuxHeader,
  decodeVersionPayload,
  encodeMuxPacket,
  encodeVersionPayload,
  muxHeaderSize,
} from '../../src/protocol/mux-header.js';
import type { MuxHeader } from '../../src/protocol/mux-header.js';
import { TCP_HEADER_SIZE, TcpFlag, decodeTcpHeader, encodeTcpHeader } from '../../src/protocol/tcp-header.js';
import type { TcpHeader } from '../../src/protocol/tcp-header.js';

export { MuxProtocol, TcpFlag };

/** One device packet as the host decodes it. */
export interface DevicePacket {
  raw: Buffer;
  header: MuxHeader;
  payload: Buffer;
  tcp?: TcpHeader;
  data?: Buffer;
}

export class HostHarness {
  readonly mux: DeviceMux;
  /** Device packets not yet taken, raw, in order. */
  readonly sent: Buffer[] = [];
  version: 1 | 2 = 1;
  txSeq = 0;
  /** When set, packets are not given to the mux but collected (to split them by hand). */
  hold = false;
  readonly held: Buffer[] = [];

  constructor(opts?: DeviceMuxOptions) {
    this.mux = new DeviceMux(opts);
    this.mux.onTransmit = (packet) => this.sent.push(packet);
  }

  /** Sends one host packet with the current header version (one OUT transfer). */
  send(protocol: number, ...payload: Buffer[]): Buffer {
    const packet = encodeMuxPacket(this.version, { protocol, txSeq: this.txSeq, rxSeq: 0 }, ...payload);
    if (this.version === 2) this.txSeq = (this.txSeq + 1) & 0xffff;
    if (this.hold) this.held.push(packet);
    else this.mux.receive(packet);
    return packet;
  }

  /** VERSION offering `major` in a v1 header, as usbmuxd does (usbmux.md §2.3); returns the reply. */
  offerVersion(major = 2): number {
    const packet = encodeMuxPacket(1, { protocol: MuxProtocol.VERSION }, encodeVersionPayload({ major, minor: 0 }));
    assert.equal(packet.length, 20);
    this.mux.receive(packet);
    const [reply] = this.takeRaw();
    assert.ok(reply, 'no VERSION reply');
    // The host parses the reply with the 8-byte header, whatever it will use afterwards.
    const header = decodeMuxHeader(reply, 1);
    assert.equal(header.protocol, MuxProtocol.VERSION);
    assert.equal(header.length, reply.length);
    const { major: answered } = decodeVersionPayload(reply.subarray(8));
    return answered;
  }

  /** VERSION then (for major 2) SETUP with tx_seq 0 and rx_seq 0xFFFF. */
  negotiate(major = 2): number {
    const answered = this.offerVersion(major);
    if (answered === 2) {
      this.version = 2;
      this.txSeq = 0;
      const setup = encodeMuxPacket(2, { protocol: MuxProtocol.SETUP, txSeq: 0, rxSeq: 0xffff }, Buffer.of(7));
      assert.equal(setup.toString('hex'), '0000000200000011feedface0000ffff07');
      this.mux.receive(setup);
      this.txSeq = 1;
    } else {
      this.version = 1;
    }
    return answered;
  }

  /** One TCP packet from the host. */
  tcp(h: Partial<TcpHeader> & { sport: number; dport: number; flags: number }, data: Buffer = Buffer.alloc(0)): Buffer {
    const header = encodeTcpHeader({ seq: 0, ack: 0, window: 131072, ...h });
    return this.send(MuxProtocol.TCP, header, data);
  }

  takeRaw(): Buffer[] {
    return this.sent.splice(0, this.sent.length);
  }

  /** Decodes and removes every device packet sent so far. */
  take(): DevicePacket[] {
    return this.takeRaw().map((raw) => this.decode(raw));
  }

  decode(raw: Buffer): DevicePacket {
    const header = decodeMuxHeader(raw, this.version);
    assert.equal(header.length, raw.length, 'one device packet per transmit, length as declared');
    const payload = raw.subarray(muxHeaderSize(this.version));
    if (header.protocol !== MuxProtocol.TCP) return { raw, header, payload };
    assert.ok(payload.length >= TCP_HEADER_SIZE);
    return { raw, header, payload, tcp: decodeTcpHeader(payload), data: payload.subarray(TCP_HEADER_SIZE) };
  }

  /** Takes the device packets and requires exactly one, a TCP packet. */
  takeOneTcp(): { tcp: TcpHeader; data: Buffer; header: MuxHeader } {
    const packets = this.take();
    assert.equal(packets.length, 1, `expected one device packet, got ${packets.length}`);
    const [p] = packets;
    assert.ok(p?.tcp && p.data);
    return { tcp: p.tcp, data: p.data, header: p.header };
  }

  /** SYN from `sport` to `dport`; returns the device's answer. */
  connect(sport: number, dport: number, window = 131072): { tcp: TcpHeader; data: Buffer; header: MuxHeader } {
    this.tcp({ sport, dport, flags: TcpFlag.SYN, seq: 0, ack: 0, window });
    const answer = this.takeOneTcp();
    if (answer.tcp.flags === (TcpFlag.SYN | TcpFlag.ACK)) {
      this.tcp({ sport, dport, flags: TcpFlag.ACK, seq: 1, ack: 1, window });
    }
    return answer;
  }
}
