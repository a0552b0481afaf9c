/**
 * The TCP-like header inside mux protocol 6 packets (usbmux.md §3.1): BSD `struct tcphdr`, every
 * field big-endian, always 20 bytes (no options; data offset is ignored on input, the checksum is
 * neither computed nor checked).
 *
 * ```
 * off size field
 *  0   2   sport      host: the port the host allocated; device: the service port
 *  2   2   dport
 *  4   4   seq
 *  8   4   ack
 * 12   1   data offset << 4 = 0x50
 * 13   1   flags      FIN 0x01 · SYN 0x02 · RST 0x04 · PSH 0x08 · ACK 0x10
 * 14   2   window     bytes >> 8 (an implied scale of 256): 131072 → 0x0200
 * 16   2   checksum = 0
 * 18   2   urgent   = 0
 *
 * first SYN after SETUP, port 1 → 62078:  0001 F27E 00000000 00000000 50 02 0200 0000 0000
 * ```
 */
import { MuxwireError } from '../errors.js';

/** Header size in bytes. */
export const TCP_HEADER_SIZE = 20;

/** Flag bits of byte 13. */
export enum TcpFlag {
  FIN = 0x01,
  SYN = 0x02,
  RST = 0x04,
  PSH = 0x08,
  ACK = 0x10,
}

/** A decoded TCP-like header. */
export interface TcpHeader {
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  flags: number;
  /** In bytes; the wire carries `window >> 8`. */
  window: number;
}

/** Writes a header into `target` at `offset` (a fresh 20-byte buffer by default) and returns the buffer. */
export function encodeTcpHeader(h: TcpHeader, target?: Buffer, offset = 0): Buffer {
  const out = target ?? Buffer.allocUnsafe(TCP_HEADER_SIZE);
  out.writeUInt16BE(h.sport & 0xffff, offset);
  out.writeUInt16BE(h.dport & 0xffff, offset + 2);
  out.writeUInt32BE(h.seq >>> 0, offset + 4);
  out.writeUInt32BE(h.ack >>> 0, offset + 8);
  out[offset + 12] = 0x50;
  out[offset + 13] = h.flags & 0xff;
  out.writeUInt16BE(Math.min(0xffff, Math.max(0, Math.floor(h.window / 256))), offset + 14);
  out.writeUInt32BE(0, offset + 16);
  return out;
}

/** Reads a header from `buf` at `offset`; fewer than 20 bytes there is MUXWIRE_ERR_BAD_LENGTH. */
export function decodeTcpHeader(buf: Buffer, offset = 0): TcpHeader {
  if (buf.length - offset < TCP_HEADER_SIZE) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_LENGTH', `TCP header needs ${TCP_HEADER_SIZE} bytes, got ${Math.max(0, buf.length - offset)}`);
  }
  return {
    sport: buf.readUInt16BE(offset),
    dport: buf.readUInt16BE(offset + 2),
    seq: buf.readUInt32BE(offset + 4),
    ack: buf.readUInt32BE(offset + 8),
    flags: buf[offset + 13],
    window: buf.readUInt16BE(offset + 14) * 256,
  };
}
