/**
 * The AFC packet header (lockdown-afc.md §9.2): 40 bytes, every integer a little-endian u64.
 *
 * ```
 * off size field
 *  0   8   magic          ASCII "CFA6LPAA" (u64 LE 0x4141504C36414643)
 *  8   8   entire_length  header + header payload + data payload
 * 16   8   this_length    header + header payload (the "arguments")
 * 24   8   packet_num     echoed by the reply
 * 32   8   operation      AfcOp
 * 40       header payload (this_length − 40 bytes), then payload (entire_length − this_length)
 *
 * GET_DEVINFO request, packet 1:
 *   43 46 41 36 4C 50 41 41  28 00…00  28 00…00  01 00…00  0B 00…00
 * ```
 */

/** The magic as text. */
export const AFC_MAGIC = 'CFA6LPAA';
/** The magic as bytes. */
export const AFC_MAGIC_BYTES = Buffer.from(AFC_MAGIC, 'latin1');
/** Header size in bytes. */
export const AFC_HEADER_SIZE = 40;

/** One AFC request or reply. */
export interface AfcPacket {
  /** A number when it fits in 2^53, else a bigint (clients start at 0 or 1 and count up). */
  packetNum: bigint | number;
  operation: number;
  /** The arguments (inside this_length); a view into the received chunk when decoded. */
  headerPayload: Buffer;
  /** The bulk data (after this_length); a view into the received chunk when decoded. */
  payload: Buffer;
}

/** Header plus header payload in one buffer, and the payload as a second (no copy of bulk data). */
export function encodeAfcPacketParts(p: AfcPacket): Buffer[] {
  const thisLength = AFC_HEADER_SIZE + p.headerPayload.length;
  const head = Buffer.allocUnsafe(thisLength);
  AFC_MAGIC_BYTES.copy(head, 0);
  head.writeBigUInt64LE(BigInt(thisLength + p.payload.length), 8);
  head.writeBigUInt64LE(BigInt(thisLength), 16);
  head.writeBigUInt64LE(BigInt.asUintN(64, BigInt(p.packetNum)), 24);
  head.writeBigUInt64LE(BigInt.asUintN(64, BigInt(p.operation)), 32);
  p.headerPayload.copy(head, AFC_HEADER_SIZE);
  return p.payload.length > 0 ? [head, p.payload] : [head];
}

/** The whole packet in one buffer. */
export function encodeAfcPacket(p: AfcPacket): Buffer {
  const parts = encodeAfcPacketParts(p);
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}
