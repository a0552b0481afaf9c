/**
 * A device side that answers the mux protocol only as a test tells it to: it decodes what the host
 * sends (with the protocol codecs) and lets the test send any packet back. Used for the edges a
 * well-behaved device never shows: a SYN never answered, odd flags, data beyond the window, a
 * device that sends only when ACKed.
 */
import { MuxPacketDecoder } from '../../../src/protocol/mux-decoder.js';
import { MuxProtocol, decodeVersionPayload, encodeMuxPacket, encodeVersionPayload } from '../../../src/protocol/mux-header.js';
import type { MuxHeader } from '../../../src/protocol/mux-header.js';
import { TCP_HEADER_SIZE, decodeTcpHeader, encodeTcpHeader } from '../../../src/protocol/tcp-header.js';
import type { TcpHeader } from '../../../src/protocol/tcp-header.js';
import type { LoopPeer } from './loop-link.js';

export interface HostSegment extends TcpHeader {
  data: Buffer;
  mux: MuxHeader;
}

export class ScriptedDevice implements LoopPeer {
  onTransmit: (packet: Buffer) => void = () => {};
  readonly #decoder = new MuxPacketDecoder({ version: 1 });
  version: 1 | 2 = 1;
  /** Major to answer VERSION with (null: never answer). */
  answerMajor: number | null;
  #txSeq = 0;
  /** Every TCP segment the host sent, in order. */
  readonly segments: HostSegment[] = [];
  /** Every mux header the host sent, in order (VERSION, SETUP, TCP). */
  readonly headers: MuxHeader[] = [];
  #waiters: Array<{ match: (s: HostSegment) => boolean; resolve: (s: HostSegment) => void }> = [];
  onSegment: ((s: HostSegment) => void) | undefined;

  constructor(answerMajor: number | null = 2) {
    this.answerMajor = answerMajor;
  }

  receive(chunk: Buffer): void {
    this.#decoder.push(chunk);
    for (let p = this.#decoder.next(); p; p = this.#decoder.next()) {
      this.headers.push(p.header);
      if (p.header.protocol === MuxProtocol.VERSION) {
        decodeVersionPayload(p.payload);
        if (this.answerMajor !== null) {
          this.onTransmit(encodeMuxPacket(1, { protocol: MuxProtocol.VERSION }, encodeVersionPayload({ major: this.answerMajor, minor: 0 })));
          if (this.answerMajor === 2) {
            this.version = 2;
            this.#decoder.version = 2;
          }
        }
      } else if (p.header.protocol === MuxProtocol.TCP) {
        const h = decodeTcpHeader(p.payload);
        const seg: HostSegment = { ...h, data: Buffer.from(p.payload.subarray(TCP_HEADER_SIZE)), mux: p.header };
        this.segments.push(seg);
        this.onSegment?.(seg);
        this.#waiters = this.#waiters.filter((w) => {
          if (!w.match(seg)) return true;
          w.resolve(seg);
          return false;
        });
      }
    }
  }

  /** Resolves with the next host segment (from now on) that `match` accepts. */
  waitFor(match: (s: HostSegment) => boolean): Promise<HostSegment> {
    return new Promise((resolve) => this.#waiters.push({ match, resolve }));
  }

  /** Sends one TCP segment to the host. */
  send(h: TcpHeader, data: Buffer = Buffer.alloc(0), rxSeq = 0): void {
    const tcp = encodeTcpHeader(h);
    this.onTransmit(encodeMuxPacket(this.version, { protocol: MuxProtocol.TCP, txSeq: this.#txSeq++ & 0xffff, rxSeq }, tcp, data));
  }

  /** Sends any raw mux packet. */
  sendRaw(protocol: number, payload: Buffer): void {
    this.onTransmit(encodeMuxPacket(this.version, { protocol, txSeq: this.#txSeq++ & 0xffff, rxSeq: 0 }, payload));
  }
}
