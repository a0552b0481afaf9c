/**
 * The 16-byte header of every usbmuxd client-protocol message (usbmux.md §4.2), in host order,
 * which is little-endian on every platform usbmuxd runs on.
 *
 * ```
 * offset  size  field     (all u32 LE)
 *  0      4     length    whole message, header included (usbmuxd accepts 16..65536)
 *  4      4     version   0 = binary, 1 = plist; anything else → Result 6 BADVERSION
 *  8      4     message   ClientMessageType
 * 12      4     tag       echoed in the reply; events carry 0
 * ```
 */

/** Header size in bytes. */
export const CLIENT_HEADER_SIZE = 16;

/** Message types (usbmux.md §4.2); 7 is unused. */
export enum ClientMessageType {
  RESULT = 1,
  CONNECT = 2,
  LISTEN = 3,
  DEVICE_ADD = 4,
  DEVICE_REMOVE = 5,
  DEVICE_PAIRED = 6,
  PLIST = 8,
}

/** Result numbers (usbmux.md §4.4); pair-record commands put errno values (2, 22…) here as well. */
export enum ResultCode {
  OK = 0,
  BADCOMMAND = 1,
  BADDEV = 2,
  CONNREFUSED = 3,
  BADVERSION = 6,
}

/** Header `version` values. */
export const CLIENT_VERSION_BINARY = 0;
/** Header `version` of a plist message. */
export const CLIENT_VERSION_PLIST = 1;

/** The four header fields. */
export interface ClientHeader {
  length: number;
  version: number;
  message: number;
  tag: number;
}

/** Writes the header into `target` at `offset` (a fresh 16-byte buffer by default) and returns the buffer. */
export function encodeClientHeader(h: ClientHeader, target: Buffer = Buffer.allocUnsafe(CLIENT_HEADER_SIZE), offset = 0): Buffer {
  target.writeUInt32LE(h.length >>> 0, offset);
  target.writeUInt32LE(h.version >>> 0, offset + 4);
  target.writeUInt32LE(h.message >>> 0, offset + 8);
  target.writeUInt32LE(h.tag >>> 0, offset + 12);
  return target;
}

/** Reads a header from `buf` at `offset`; the caller guarantees 16 bytes are there. */
export function decodeClientHeader(buf: Buffer, offset = 0): ClientHeader {
  return {
    length: buf.readUInt32LE(offset),
    version: buf.readUInt32LE(offset + 4),
    message: buf.readUInt32LE(offset + 8),
    tag: buf.readUInt32LE(offset + 12),
  };
}
