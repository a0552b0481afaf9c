/**
 * The value model shared by the XML and binary plist codecs.
 *
 * | plist type | JS value                                                         |
 * |------------|------------------------------------------------------------------|
 * | dict       | plain object (`PlistDict`), key order kept, `undefined` skipped  |
 * | array      | `PlistValue[]`                                                   |
 * | string     | `string`                                                         |
 * | integer    | `number` when safe, else `bigint` (range −2^63 … 2^64−1)         |
 * | real       | any other `number` (-0, fractions, beyond 2^53, NaN, ±Infinity), |
 * |            | or `PlistReal` to force `<real>` for an integral value           |
 * | true/false | `boolean`                                                        |
 * | data       | `Buffer`                                                         |
 * | date       | `Date` (whole seconds in XML, as Apple and libplist write them)  |
 * | UID        | `PlistUID` (binary `0x8n`, XML `{CF$UID: n}`)                    |
 */
import { MuxwireError } from '../errors.js';

/** Any value a plist can hold. */
export type PlistValue =
  | string
  | number
  | bigint
  | boolean
  | Date
  | Buffer
  | PlistUID
  | PlistReal
  | PlistValue[]
  | PlistDict;

/** A plist dictionary; `undefined` members are skipped when encoding. */
export interface PlistDict {
  [key: string]: PlistValue | undefined;
}

/** A keyed-archiver UID (binary marker 0x8n; `<dict><key>CF$UID</key>…` in XML). */
export class PlistUID {
  constructor(readonly value: number) {}
}

/** A real number, written as `<real>` even when integral (a bare integral number is `<integer>`). */
export class PlistReal {
  constructor(readonly value: number) {}
}

/** Options of the decoders (`decodePlist`, `decodeXmlPlist`, `decodeBinaryPlist`). */
export interface PlistDecodeOptions {
  /**
   * Every real comes back as a `PlistReal`, so an integral real (`<real>1</real>`) can be told
   * from an integer; by default a real is a plain `number`. The daemon reads requests this way to
   * refuse a real where an integer belongs.
   */
  keepReals?: boolean;
}

/** Error code for any plist that cannot be decoded, or any value that cannot be encoded. */
export const BAD_PLIST = 'MUXWIRE_ERR_BAD_PLIST';

/** Deepest nesting of containers either codec accepts (libplist's fuzz crashes were unbounded recursion). */
export const PLIST_MAX_DEPTH = 512;

/** Smallest and largest integer a plist integer can carry (signed 64-bit, plus libplist's unsigned 64-bit). */
export const PLIST_INT_MIN = -(2n ** 63n);
/** Largest plist integer (libplist writes values above 2^63−1 as 16-byte integers). */
export const PLIST_INT_MAX = 2n ** 64n - 1n;

/** True for a dictionary (a plain object that is none of the other value kinds). */
export function isPlistDict(v: unknown): v is PlistDict {
  return (
    typeof v === 'object' &&
    v !== null &&
    !Array.isArray(v) &&
    !ArrayBuffer.isView(v) &&
    !(v instanceof Date) &&
    !(v instanceof PlistUID) &&
    !(v instanceof PlistReal)
  );
}

/** Throws the one plist error. */
export function badPlist(message: string, cause?: unknown): never {
  throw new MuxwireError(BAD_PLIST, message, cause !== undefined ? { cause } : undefined);
}

/** The value of a UID, checked: an integer in 0 … 2^32−1 (CoreFoundation's range). */
export function uidValue(uid: PlistUID): number {
  const v = uid.value;
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) badPlist(`UID ${v} is not an integer in 0..2^32-1`);
  return v;
}

/** Turns an integer that the JS value model holds as number|bigint into the decoded form. */
export function integerValue(n: bigint): number | bigint {
  return n >= -9007199254740991n && n <= 9007199254740991n ? Number(n) : n;
}

/**
 * Sets `dict[key] = value` as an own data property even for `__proto__`, so that decoding a
 * hostile plist can never change an object's prototype.
 */
export function setDictMember(dict: PlistDict, key: string, value: PlistValue): void {
  if (key === '__proto__') {
    Object.defineProperty(dict, key, { value, enumerable: true, writable: true, configurable: true });
  } else {
    dict[key] = value;
  }
}

/** Seconds between the Unix epoch and Apple's reference date 2001-01-01T00:00:00Z. */
export const APPLE_EPOCH_OFFSET_S = 978307200;
