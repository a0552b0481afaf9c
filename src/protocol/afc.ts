/**
 * AFC (Apple File Conduit, lockdown-afc.md §9): opcodes, status codes, open modes, and the codecs
 * of the argument blobs. The packet header and its encoder are in afc-packet.ts, the stream
 * decoder in afc-decoder.ts; both are re-exported here.
 *
 * ```
 * header (40 B, u64 LE each): magic "CFA6LPAA" · entire_length · this_length · packet_num · operation
 *
 * argument blobs (header payload and payload, all integers u64 LE):
 *   path          UTF-8, optionally NUL-terminated (GOIOS and APPIUM often omit the NUL)
 *   name list     name\0name\0…            READ_DIR reply: ".", "..", then the entries
 *   key/values    key\0value\0key\0value\0  GET_FILE_INFO, GET_DEVINFO replies
 *   FILE_OPEN     u64 mode, path           FILE_READ  u64 handle, u64 length
 *   FILE_SEEK     u64 handle, u64 whence, s64 offset
 *   RENAME_PATH   from\0to\0               MAKE_LINK  u64 type, target\0, linkname\0
 *   STATUS reply  u64 status (inside this_length: this = entire = 48)
 *
 * STATUS "object not found" reply to packet 5 (§9.7.1):
 *   43 46 41 36 4C 50 41 41 | 30 00…00 | 30 00…00 | 05 00…00 | 01 00…00 | 08 00 00 00 00 00 00 00
 * ```
 */
import { MuxwireError } from '../errors.js';

export { AFC_MAGIC, AFC_MAGIC_BYTES, AFC_HEADER_SIZE, encodeAfcPacket, encodeAfcPacketParts } from './afc-packet.js';
export type { AfcPacket } from './afc-packet.js';
export { AfcPacketDecoder, AFC_MAX_PACKET_DEFAULT } from './afc-decoder.js';
export type { AfcHeader } from './afc-decoder.js';

/** Opcodes (lockdown-afc.md §9.4). */
export enum AfcOp {
  STATUS = 0x01,
  DATA = 0x02,
  READ_DIR = 0x03,
  READ_FILE = 0x04,
  WRITE_FILE = 0x05,
  WRITE_PART = 0x06,
  TRUNCATE = 0x07,
  REMOVE_PATH = 0x08,
  MAKE_DIR = 0x09,
  GET_FILE_INFO = 0x0a,
  GET_DEVINFO = 0x0b,
  WRITE_FILE_ATOM = 0x0c,
  FILE_OPEN = 0x0d,
  FILE_OPEN_RES = 0x0e,
  FILE_READ = 0x0f,
  FILE_WRITE = 0x10,
  FILE_SEEK = 0x11,
  FILE_TELL = 0x12,
  FILE_TELL_RES = 0x13,
  FILE_CLOSE = 0x14,
  FILE_SET_SIZE = 0x15,
  GET_CON_INFO = 0x16,
  SET_CON_OPTIONS = 0x17,
  RENAME_PATH = 0x18,
  SET_FS_BS = 0x19,
  SET_SOCKET_BS = 0x1a,
  FILE_LOCK = 0x1b,
  MAKE_LINK = 0x1c,
  GET_FILE_HASH = 0x1d,
  SET_FILE_MOD_TIME = 0x1e,
  GET_FILE_HASH_RANGE = 0x1f,
  FILE_SET_IMMUTABLE_HINT = 0x20,
  GET_SIZE_OF_PATH_CONTENTS = 0x21,
  REMOVE_PATH_AND_CONTENTS = 0x22,
  DIR_OPEN = 0x23,
  DIR_OPEN_RESULT = 0x24,
  DIR_READ = 0x25,
  DIR_CLOSE = 0x26,
  FILE_READ_OFFSET = 0x27,
  FILE_WRITE_OFFSET = 0x28,
}

/** Status codes of a STATUS reply (§9.5). 30–34 are LIMD-local and never come from a device. */
export enum AfcStatus {
  SUCCESS = 0,
  UNKNOWN_ERROR = 1,
  OP_HEADER_INVALID = 2,
  NO_RESOURCES = 3,
  READ_ERROR = 4,
  WRITE_ERROR = 5,
  UNKNOWN_PACKET_TYPE = 6,
  INVALID_ARG = 7,
  OBJECT_NOT_FOUND = 8,
  OBJECT_IS_DIR = 9,
  PERM_DENIED = 10,
  SERVICE_NOT_CONNECTED = 11,
  OP_TIMEOUT = 12,
  TOO_MUCH_DATA = 13,
  END_OF_DATA = 14,
  OP_NOT_SUPPORTED = 15,
  OBJECT_EXISTS = 16,
  OBJECT_BUSY = 17,
  NO_SPACE_LEFT = 18,
  OP_WOULD_BLOCK = 19,
  IO_ERROR = 20,
  OP_INTERRUPTED = 21,
  OP_IN_PROGRESS = 22,
  INTERNAL_ERROR = 23,
  MUX_ERROR = 30,
  NO_MEM = 31,
  NOT_ENOUGH_DATA = 32,
  DIR_NOT_EMPTY = 33,
  SSL_ERROR = 34,
}

/** FILE_OPEN modes (§9.7): r, r+, w, w+, a, a+. */
export enum AfcFileMode {
  RDONLY = 1,
  RW = 2,
  WRONLY = 3,
  WR = 4,
  APPEND = 5,
  RDAPPEND = 6,
}

/** FILE_SEEK whence. */
export enum AfcSeekWhence {
  SET = 0,
  CUR = 1,
  END = 2,
}

/** MAKE_LINK types. */
export enum AfcLinkType {
  HARDLINK = 1,
  SYMLINK = 2,
}

/** FILE_LOCK operations: flock values OR'd with LOCK_NB (4). */
export enum AfcLockOp {
  SHARED = 5,
  EXCLUSIVE = 6,
  UNLOCK = 12,
}

/** u64 LE values back to back, e.g. the `handle, length` of FILE_READ. */
export function encodeAfcU64(...values: Array<number | bigint>): Buffer {
  const out = Buffer.allocUnsafe(values.length * 8);
  values.forEach((v, i) => out.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)), i * 8));
  return out;
}

/** The u64 LE at `offset`, as a number when safe, else a bigint; MUXWIRE_ERR_BAD_LENGTH if short. */
export function decodeAfcU64(buf: Buffer, offset = 0): number | bigint {
  if (buf.length - offset < 8) throw new MuxwireError('MUXWIRE_ERR_BAD_LENGTH', `AFC argument needs 8 bytes at ${offset}, has ${Math.max(0, buf.length - offset)}`);
  const v = buf.readBigUInt64LE(offset);
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** A path as LIMD and PMD3 send it: UTF-8 with one trailing NUL. */
export function encodeAfcPath(path: string): Buffer {
  const len = Buffer.byteLength(path, 'utf8');
  const out = Buffer.allocUnsafe(len + 1);
  out.write(path, 0, 'utf8');
  out[len] = 0;
  return out;
}

/** A path argument: UTF-8, at most one trailing NUL stripped (GOIOS and APPIUM send none, §9.2). */
export function decodeAfcPath(buf: Buffer): string {
  const end = buf.length > 0 && buf[buf.length - 1] === 0 ? buf.length - 1 : buf.length;
  return buf.toString('utf8', 0, end);
}

/** `name\0name\0…`. */
export function encodeNameList(names: readonly string[]): Buffer {
  return Buffer.from(names.map((n) => n + '\0').join(''), 'utf8');
}

/** Splits `name\0name\0…`; a missing final NUL is tolerated, empty names are kept except the trailing one. */
export function decodeNameList(buf: Buffer): string[] {
  if (buf.length === 0) return [];
  const parts = buf.toString('utf8').split('\0');
  if (parts[parts.length - 1] === '') parts.pop();
  return parts;
}

/** `key\0value\0…` from an object or a list of pairs (numbers and bigints as decimal text). */
export function encodeKeyValueList(
  pairs: Record<string, string | number | bigint> | ReadonlyArray<readonly [string, string | number | bigint]>,
): Buffer {
  const list = Array.isArray(pairs) ? pairs : Object.entries(pairs);
  return encodeNameList(list.flatMap(([k, v]) => [k, String(v)]));
}

/**
 * Reads `key\0value\0…` into an object (values stay text). An odd number of strings is
 * MUXWIRE_ERR_BAD_MESSAGE.
 */
export function decodeKeyValueList(buf: Buffer): Record<string, string> {
  const parts = decodeNameList(buf);
  if (parts.length % 2 !== 0) throw new MuxwireError('MUXWIRE_ERR_BAD_MESSAGE', `AFC key/value list has an odd number (${parts.length}) of strings`);
  const out: Record<string, string> = {};
  for (let i = 0; i < parts.length; i += 2) {
    Object.defineProperty(out, parts[i], { value: parts[i + 1], enumerable: true, writable: true, configurable: true });
  }
  return out;
}
