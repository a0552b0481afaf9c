/**
 * The TypeScript twin of native/mux-scan.cc: finds complete mux packets in a buffer of
 * concatenated packets without copying, and the checked wrapper both implementations share.
 *
 * Mux header, every field BE (usbmux.md §2.1, §3.1):
 * ```
 *   v1 (8 bytes)                 v2 (16 bytes)
 *   0  u32 protocol              0  u32 protocol
 *   4  u32 length (incl. header) 4  u32 length (incl. header)
 *                                8  u32 magic   12 u16 tx_seq   14 u16 rx_seq
 *   then, when protocol == 6, the TCP-like header:
 *   0  u16 sport   2  u16 dport   4  u32 seq   8  u32 ack   12 u8 off<<4   13 u8 flags
 *   14 u16 window>>8   16 u16 checksum   18 u16 urgent
 * ```
 * One record per packet into `out`: `[offset, length, protocol, sport, dport]`.
 */
import { MuxwireError } from '../errors.js';
import { SCAN_BAD_LENGTH, SCAN_RECORD_FIELDS, type RawScan } from './accel.js';

/** usbmuxd's DEV_MRU: the largest device→host mux packet it reassembles (usbmux.md §2.5). */
export const MAX_MUX_PACKET = 65536;
/** The length field lies in the first 8 bytes of both header versions. */
const LENGTH_FIELD_END = 8;
const TCP_HEADER_SIZE = 20;
const PROTOCOL_TCP = 6;

/**
 * The raw scan in TypeScript, bit for bit what the addon's `scanMuxPackets` does (the parity test
 * holds them to it). Returns the record count, or {@link SCAN_BAD_LENGTH} with `out[0]` = offset
 * and `out[1]` = the declared length. Arguments must already be valid.
 */
export const scanMuxPacketsJs: RawScan = (buf, version, out) => {
  const headerSize = version === 1 ? 8 : 16;
  const capacity = Math.floor(out.length / SCAN_RECORD_FIELDS);
  const size = buf.length;
  let offset = 0;
  let count = 0;
  while (count < capacity) {
    const left = size - offset;
    // Limits first: the length is judged as soon as its field is visible, before the packet has
    // fully arrived (netmuxd treats such a length as fatal for the device as well).
    if (left < LENGTH_FIELD_END) break;
    const length = readU32BE(buf, offset + 4);
    if (length < headerSize || length > MAX_MUX_PACKET) {
      out[0] = offset;
      out[1] = length;
      return SCAN_BAD_LENGTH;
    }
    if (left < length) break;
    const protocol = readU32BE(buf, offset);
    let sport = 0;
    let dport = 0;
    // usbmuxd drops TCP packets shorter than header + 20 (usbmux.md §2.7): ports only when the
    // whole TCP-like header is there.
    if (protocol === PROTOCOL_TCP && length >= headerSize + TCP_HEADER_SIZE) {
      const tcp = offset + headerSize;
      sport = (buf[tcp]! << 8) | buf[tcp + 1]!;
      dport = (buf[tcp + 2]! << 8) | buf[tcp + 3]!;
    }
    const r = count * SCAN_RECORD_FIELDS;
    out[r] = offset;
    out[r + 1] = length;
    out[r + 2] = protocol;
    out[r + 3] = sport;
    out[r + 4] = dport;
    offset += length;
    count++;
  }
  return count;
};

/** A BE u32 from a plain Uint8Array (Buffer's readUInt32BE is not there on every Uint8Array). */
function readU32BE(buf: Uint8Array, at: number): number {
  return ((buf[at]! << 24) | (buf[at + 1]! << 16) | (buf[at + 2]! << 8) | buf[at + 3]!) >>> 0;
}

/**
 * Checks the arguments of a scan the way both implementations need them (wrong types are
 * programming errors: TypeError / RangeError, as node:buffer does).
 */
export function validateScanArgs(buf: unknown, version: unknown, out: unknown): void {
  if (!(buf instanceof Uint8Array)) throw new TypeError('scanMuxPackets: buf must be a Buffer or Uint8Array');
  if (version !== 1 && version !== 2) throw new RangeError('scanMuxPackets: version must be 1 or 2');
  if (!(out instanceof Uint32Array)) throw new TypeError('scanMuxPackets: out must be a Uint32Array');
  if (out.length < SCAN_RECORD_FIELDS) {
    throw new RangeError(`scanMuxPackets: out must hold at least one record (${SCAN_RECORD_FIELDS} entries)`);
  }
}

/** Turns a raw scan result into the public one: the count, or a coded error for a bad length. */
export function checkScanResult(result: number, version: 1 | 2, out: Uint32Array): number {
  if (result !== SCAN_BAD_LENGTH) return result;
  const offset = out[0]!;
  const length = out[1]!;
  throw new MuxwireError(
    'MUXWIRE_ERR_BAD_LENGTH',
    `mux packet at offset ${offset} declares length ${length}, outside ${version === 1 ? 8 : 16}..${MAX_MUX_PACKET}`,
    { detail: { offset, length } },
  );
}
