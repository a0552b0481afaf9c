/**
 * The device mux protocol's packet header (usbmux.md §2.1–§2.3). Every field is big-endian.
 *
 * ```
 * v1 (8 bytes)                       v2 (16 bytes, after VERSION negotiated major 2)
 * off size field                     off size field
 *  0   4   protocol (MuxProtocol)     0   4   protocol
 *  4   4   length (whole packet,      4   4   length (whole packet, header included)
 *          header included)           8   4   magic = 0xFEEDFACE host→device (never checked on input;
 *                                             devices have sent 0xFACEFACE)
 *                                    12   2   tx_seq (sender's packet counter, wraps at 16 bits)
 *                                    14   2   rx_seq (usbmuxd echoes the device's rx_seq, §2.4)
 *
 * VERSION payload (12 bytes): 0 major u32 BE · 4 minor u32 BE · 8 padding u32 (0)
 * e.g. the host's offer, v1 header:  00000000 00000014 00000002 00000000 00000000
 * SETUP (v2 only), 17 bytes:         00000002 00000011 FEEDFACE 0000 FFFF 07
 * CONTROL payload (device → host):   0 type u8 (3 error, 5 warning, 7 info) · 1 text (no NUL)
 * ```
 */
import { MuxwireError } from '../errors.js';

/** Mux protocol numbers (usbmux.md §2.2). */
export enum MuxProtocol {
  VERSION = 0,
  CONTROL = 1,
  SETUP = 2,
  TCP = 6,
}

/** The v2 magic the host writes. */
export const MUX_MAGIC = 0xfeedface;

/** Sizes of the two header versions. */
export const MUX_HEADER_V1_SIZE = 8;
/** Size of the v2 header. */
export const MUX_HEADER_V2_SIZE = 16;

/** Size of a VERSION payload. */
export const MUX_VERSION_PAYLOAD_SIZE = 12;

/** The single byte of a SETUP payload. */
export const MUX_SETUP_BYTE = 0x07;

/** A decoded header; the v2 fields are absent for v1. */
export interface MuxHeader {
  protocol: number;
  length: number;
  /** v2 only. */
  magic?: number;
  txSeq?: number;
  rxSeq?: number;
}

/** 8 for v1, 16 for v2. */
export function muxHeaderSize(version: 1 | 2): number {
  return version === 2 ? MUX_HEADER_V2_SIZE : MUX_HEADER_V1_SIZE;
}

/**
 * Writes a header into `target` at `offset` (a fresh buffer of the header size by default) and
 * returns the buffer. For v2, a missing magic is MUX_MAGIC and missing counters are 0.
 */
export function encodeMuxHeader(h: MuxHeader, version: 1 | 2, target?: Buffer, offset = 0): Buffer {
  const out = target ?? Buffer.allocUnsafe(muxHeaderSize(version));
  out.writeUInt32BE(h.protocol >>> 0, offset);
  out.writeUInt32BE(h.length >>> 0, offset + 4);
  if (version === 2) {
    out.writeUInt32BE((h.magic ?? MUX_MAGIC) >>> 0, offset + 8);
    out.writeUInt16BE((h.txSeq ?? 0) & 0xffff, offset + 12);
    out.writeUInt16BE((h.rxSeq ?? 0) & 0xffff, offset + 14);
  }
  return out;
}

/**
 * Reads a header from `buf` at `offset`. Throws MUXWIRE_ERR_BAD_LENGTH when fewer than the header
 * size bytes are there. Magic is reported, not checked.
 */
export function decodeMuxHeader(buf: Buffer, version: 1 | 2, offset = 0): MuxHeader {
  const size = muxHeaderSize(version);
  if (buf.length - offset < size) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_LENGTH', `mux header needs ${size} bytes, got ${Math.max(0, buf.length - offset)}`);
  }
  const h: MuxHeader = { protocol: buf.readUInt32BE(offset), length: buf.readUInt32BE(offset + 4) };
  if (version === 2) {
    h.magic = buf.readUInt32BE(offset + 8);
    h.txSeq = buf.readUInt16BE(offset + 12);
    h.rxSeq = buf.readUInt16BE(offset + 14);
  }
  return h;
}

/** The 12-byte VERSION payload. */
export function encodeVersionPayload(v: { major: number; minor: number }): Buffer {
  const out = Buffer.alloc(MUX_VERSION_PAYLOAD_SIZE);
  out.writeUInt32BE(v.major >>> 0, 0);
  out.writeUInt32BE(v.minor >>> 0, 4);
  return out;
}

/**
 * Reads a VERSION payload. usbmuxd drops a VERSION shorter than header + 12 (usbmux.md §2.7); here
 * that is MUXWIRE_ERR_BAD_LENGTH. Extra bytes are ignored.
 */
export function decodeVersionPayload(buf: Buffer): { major: number; minor: number } {
  if (buf.length < MUX_VERSION_PAYLOAD_SIZE) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_LENGTH', `VERSION payload of ${buf.length} bytes, need ${MUX_VERSION_PAYLOAD_SIZE}`);
  }
  return { major: buf.readUInt32BE(0), minor: buf.readUInt32BE(4) };
}

/**
 * One whole mux packet in one allocation: header (length filled in) then each payload part in
 * order. For v2 the magic is MUX_MAGIC unless given, missing counters are 0.
 */
export function encodeMuxPacket(
  version: 1 | 2,
  h: { protocol: number; txSeq?: number; rxSeq?: number; magic?: number },
  ...payloadParts: Buffer[]
): Buffer {
  const size = muxHeaderSize(version);
  let length = size;
  for (const p of payloadParts) length += p.length;
  const out = Buffer.allocUnsafe(length);
  encodeMuxHeader({ protocol: h.protocol, length, magic: h.magic, txSeq: h.txSeq, rxSeq: h.rxSeq }, version, out, 0);
  let off = size;
  for (const p of payloadParts) {
    p.copy(out, off);
    off += p.length;
  }
  return out;
}

/** CONTROL message types (usbmux.md §2.6); usbmuxd2 also names 4. */
export enum MuxControlType {
  ERROR = 3,
  WARNING = 5,
  INFO = 7,
}

/** A CONTROL payload: the type byte, then the text without a NUL. */
export function encodeControlPayload(type: number, text: string): Buffer {
  const len = Buffer.byteLength(text, 'utf8');
  const out = Buffer.allocUnsafe(1 + len);
  out[0] = type & 0xff;
  out.write(text, 1, 'utf8');
  return out;
}

/** Reads a CONTROL payload; an empty one (usbmuxd warns about it) is MUXWIRE_ERR_BAD_LENGTH. */
export function decodeControlPayload(buf: Buffer): { type: number; text: string } {
  if (buf.length < 1) throw new MuxwireError('MUXWIRE_ERR_BAD_LENGTH', 'empty CONTROL payload');
  return { type: buf[0], text: buf.toString('utf8', 1) };
}
