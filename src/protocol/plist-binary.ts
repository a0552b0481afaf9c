/**
 * Binary property lists (`bplist00`), as CoreFoundation and libplist write them.
 *
 * ```
 * offset 0          8                           T                      N−32          N
 *        ┌──────────┬───────────────────────────┬──────────────────────┬─────────────┐
 *        │ bplist00 │ objects (marker + body)…  │ offset table:        │ trailer     │
 *        │          │                           │ numObjects × intSize │ (32 bytes)  │
 *        └──────────┴───────────────────────────┴──────────────────────┴─────────────┘
 * trailer: 0..4 unused · 5 sortVersion · 6 offsetIntSize (1–8) · 7 objectRefSize (1–8) ·
 *          8 numObjects u64 BE · 16 topObject u64 BE · 24 offsetTableOffset (T) u64 BE
 *
 * object markers (high nibble = type, low nibble = size; low nibble 0xF = a length follows as an
 * integer object), every multi-byte number big-endian:
 *   0x08 false  0x09 true
 *   0x1n integer, 2^n bytes: n=0..2 unsigned, n=3 signed 64-bit, n=4 128-bit (libplist's u64 > 2^63−1)
 *   0x2n real, 2^n bytes (n=2 float32, n=3 float64)
 *   0x33 date: float64 seconds since 2001-01-01T00:00:00Z
 *   0x4n data, n bytes          0x5n ASCII string, n bytes     0x6n UTF-16BE string, n code units
 *   0x7n UTF-8 string, n bytes  0x8n UID, n+1 bytes
 *   0xAn array: n object refs   0xCn set (read as an array)    0xDn dict: n key refs, n value refs
 * ```
 *
 * Decoding trusts nothing (libplist's fuzz bugs are the anti-examples): the trailer's sizes and
 * counts are checked against the buffer before anything is read or allocated, every offset and ref
 * is bounds-checked, recursion is bounded, a container that refers to one of its ancestors is a
 * cycle, and the total decoded size is budgeted so that shared references cannot expand a small
 * input into a huge value ("billion laughs"). Every failure is MUXWIRE_ERR_BAD_PLIST.
 */
import {
  APPLE_EPOCH_OFFSET_S,
  PlistReal,
  PlistUID,
  PLIST_INT_MAX,
  PLIST_INT_MIN,
  PLIST_MAX_DEPTH,
  badPlist,
  integerValue,
  isPlistDict,
  setDictMember,
  uidValue,
} from './plist-types.js';
import type { PlistDecodeOptions, PlistDict, PlistValue } from './plist-types.js';

/** The 8-byte magic at the start of every binary plist. */
export const BPLIST_MAGIC = Buffer.from('bplist00', 'latin1');
const HEADER_SIZE = 8;
const TRAILER_SIZE = 32;

// ─── Decoder ──────────────────────────────────────────────────────────────────────────────────

/** Reads an unsigned big-endian integer of 1–8 bytes (safe up to 2^53; larger sizes are rejected by callers). */
function readUIntBE(buf: Buffer, off: number, size: number): number {
  // Refs and offsets are read for every object: the common widths get a path of their own.
  if (size === 1) return buf[off];
  if (size === 2) return (buf[off] << 8) | buf[off + 1];
  if (size <= 6) return buf.readUIntBE(off, size);
  const big = size === 8 ? buf.readBigUInt64BE(off) : (BigInt(buf.readUInt8(off)) << 48n) | BigInt(buf.readUIntBE(off + 1, 6));
  if (big > BigInt(Number.MAX_SAFE_INTEGER)) return Number.MAX_SAFE_INTEGER;
  return Number(big);
}

class BinaryReader {
  readonly #buf: Buffer;
  readonly #refSize: number;
  readonly #offsets: number[];
  readonly #objectsEnd: number;
  /** 1 while the object is on the current decoding path: seeing it again is a cycle. */
  readonly #onPath: Uint8Array;
  /** Decoded immutable leaves (strings, numbers), shared so repeated refs cost nothing. */
  readonly #leaves = new Map<number, PlistValue>();
  /** Remaining decode budget: one unit per value plus one per 16 bytes of data copied. */
  #budget: number;
  readonly #keepReals: boolean;

  constructor(buf: Buffer, opts: PlistDecodeOptions = {}) {
    this.#keepReals = opts.keepReals === true;
    if (buf.length < HEADER_SIZE + 1 + TRAILER_SIZE) badPlist(`binary plist of ${buf.length} bytes is too short`);
    if (!buf.subarray(0, 8).equals(BPLIST_MAGIC)) badPlist('binary plist does not start with bplist00');
    this.#buf = buf;
    const t = buf.length - TRAILER_SIZE;
    const offsetIntSize = buf[t + 6];
    const refSize = buf[t + 7];
    const numObjects = readUIntBE(buf, t + 8, 8);
    const topObject = readUIntBE(buf, t + 16, 8);
    const tableOffset = readUIntBE(buf, t + 24, 8);
    if (offsetIntSize < 1 || offsetIntSize > 8) badPlist(`bad offset size ${offsetIntSize}`);
    if (refSize < 1 || refSize > 8) badPlist(`bad object ref size ${refSize}`);
    if (numObjects < 1) badPlist('binary plist has no objects');
    if (topObject >= numObjects) badPlist('top object out of range');
    // Offset table and objects must lie between the header and the trailer; this bounds
    // numObjects by the buffer size before anything is allocated.
    if (tableOffset < HEADER_SIZE || tableOffset > t || (t - tableOffset) / offsetIntSize < numObjects) {
      badPlist('offset table out of range');
    }
    this.#refSize = refSize;
    this.#objectsEnd = tableOffset;
    this.#offsets = new Array<number>(numObjects);
    for (let i = 0; i < numObjects; i++) {
      const off = readUIntBE(buf, tableOffset + i * offsetIntSize, offsetIntSize);
      if (off < HEADER_SIZE || off >= tableOffset) badPlist(`object ${i} offset ${off} out of range`);
      this.#offsets[i] = off;
    }
    this.#onPath = new Uint8Array(numObjects);
    this.#budget = buf.length * 8 + 1024;
    this.top = topObject;
  }

  readonly top: number;

  #spend(units: number): void {
    this.#budget -= units;
    if (this.#budget < 0) badPlist('binary plist expands beyond its size budget (shared references)');
  }

  /** Reads the length that follows a marker: the low nibble, or an integer object after it. */
  #length(marker: number, pos: number): [length: number, bodyStart: number] {
    const low = marker & 0x0f;
    if (low !== 0x0f) return [low, pos + 1];
    const buf = this.#buf;
    if (pos + 2 > this.#objectsEnd) badPlist('length marker out of range');
    const intMarker = buf[pos + 1];
    if ((intMarker & 0xf0) !== 0x10) badPlist('length is not an integer');
    const size = 1 << (intMarker & 0x0f);
    if (size > 8 || pos + 2 + size > this.#objectsEnd) badPlist('bad length integer');
    const n = readUIntBE(buf, pos + 2, size);
    return [n, pos + 2 + size];
  }

  #checkSpan(start: number, bytes: number): void {
    if (bytes > this.#objectsEnd - start) badPlist('object runs past the end of the object area');
  }

  #ref(pos: number): number {
    const r = readUIntBE(this.#buf, pos, this.#refSize);
    if (r >= this.#offsets.length) badPlist(`object ref ${r} out of range`);
    return r;
  }

  object(index: number, depth: number): PlistValue {
    const cached = this.#leaves.get(index);
    if (cached !== undefined) {
      this.#spend(1);
      return cached;
    }
    const buf = this.#buf;
    const pos = this.#offsets[index];
    const marker = buf[pos];
    this.#spend(1);
    switch (marker >> 4) {
      case 0x0:
        if (marker === 0x08) return false;
        if (marker === 0x09) return true;
        return badPlist(`unsupported marker 0x${marker.toString(16)} (null/fill)`);
      case 0x1: {
        const size = 1 << (marker & 0x0f);
        if (size > 16) badPlist('integer wider than 128 bits');
        this.#checkSpan(pos + 1, size);
        let n: bigint;
        if (size <= 4) n = BigInt(buf.readUIntBE(pos + 1, size));
        else if (size === 8) n = buf.readBigInt64BE(pos + 1);
        else n = (buf.readBigInt64BE(pos + 1) << 64n) | buf.readBigUInt64BE(pos + 9);
        if (n < PLIST_INT_MIN || n > PLIST_INT_MAX) badPlist('integer does not fit in 64 bits');
        return this.#leaf(index, integerValue(n));
      }
      case 0x2: {
        const size = 1 << (marker & 0x0f);
        if (size !== 4 && size !== 8) badPlist(`real of ${size} bytes`);
        this.#checkSpan(pos + 1, size);
        const real = size === 4 ? buf.readFloatBE(pos + 1) : buf.readDoubleBE(pos + 1);
        return this.#leaf(index, this.#keepReals ? new PlistReal(real) : real);
      }
      case 0x3: {
        if (marker !== 0x33) badPlist(`bad date marker 0x${marker.toString(16)}`);
        this.#checkSpan(pos + 1, 8);
        // Rounded to whole milliseconds, so that encoding a Date and decoding it gives it back.
        const date = new Date(Math.round((buf.readDoubleBE(pos + 1) + APPLE_EPOCH_OFFSET_S) * 1000));
        if (!Number.isFinite(date.getTime())) badPlist('date out of range');
        return date;
      }
      case 0x4: {
        const [n, start] = this.#length(marker, pos);
        this.#checkSpan(start, n);
        this.#spend(n >> 4);
        return Buffer.from(buf.subarray(start, start + n));
      }
      case 0x5: {
        const [n, start] = this.#length(marker, pos);
        this.#checkSpan(start, n);
        return this.#leaf(index, buf.toString('latin1', start, start + n));
      }
      case 0x6: {
        const [n, start] = this.#length(marker, pos);
        if (n > (this.#objectsEnd - start) / 2) badPlist('string runs past the end of the object area');
        // UTF-16BE: swap into a fresh buffer and decode as UTF-16LE.
        const swapped = Buffer.from(buf.subarray(start, start + n * 2));
        swapped.swap16();
        return this.#leaf(index, swapped.toString('utf16le'));
      }
      case 0x7: {
        const [n, start] = this.#length(marker, pos);
        this.#checkSpan(start, n);
        return this.#leaf(index, buf.toString('utf8', start, start + n));
      }
      case 0x8: {
        const size = (marker & 0x0f) + 1;
        if (size > 4 && size !== 8) badPlist(`UID of ${size} bytes`);
        this.#checkSpan(pos + 1, size);
        const v = readUIntBE(buf, pos + 1, size);
        if (v > 0xffffffff) badPlist('UID does not fit in 32 bits');
        return new PlistUID(v);
      }
      case 0xa:
      case 0xc:
        return this.#container(index, marker, pos, depth, false);
      case 0xd:
        return this.#container(index, marker, pos, depth, true);
      default:
        return badPlist(`unknown marker 0x${marker.toString(16)}`);
    }
  }

  #leaf(index: number, v: PlistValue): PlistValue {
    this.#leaves.set(index, v);
    return v;
  }

  #container(index: number, marker: number, pos: number, depth: number, isDict: boolean): PlistValue {
    if (depth >= PLIST_MAX_DEPTH) badPlist(`nesting deeper than ${PLIST_MAX_DEPTH}`);
    if (this.#onPath[index] === 1) badPlist(`object ${index} contains itself`);
    const [n, start] = this.#length(marker, pos);
    const refs = isDict ? 2 * n : n;
    if (refs > (this.#objectsEnd - start) / this.#refSize) badPlist('container runs past the end of the object area');
    this.#onPath[index] = 1;
    const rs = this.#refSize;
    let out: PlistValue;
    if (isDict) {
      const dict: PlistDict = {};
      for (let i = 0; i < n; i++) {
        const key = this.object(this.#ref(start + i * rs), depth + 1);
        if (typeof key !== 'string') badPlist('dictionary key is not a string');
        setDictMember(dict, key, this.object(this.#ref(start + (n + i) * rs), depth + 1));
      }
      out = dict;
    } else {
      const arr = new Array<PlistValue>(n);
      for (let i = 0; i < n; i++) arr[i] = this.object(this.#ref(start + i * rs), depth + 1);
      out = arr;
    }
    this.#onPath[index] = 0;
    return out;
  }
}

/** Decodes a `bplist00` binary plist. Throws MUXWIRE_ERR_BAD_PLIST for anything malformed. */
export function decodeBinaryPlist(input: Buffer | Uint8Array, opts?: PlistDecodeOptions): PlistValue {
  const buf = Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  const r = new BinaryReader(buf, opts);
  return r.object(r.top, 0);
}

// ─── Encoder ──────────────────────────────────────────────────────────────────────────────────

/** Bytes needed to hold `n` as an unsigned offset/ref: 1, 2, 4 or 8. */
function widthFor(n: number): number {
  return n < 0x100 ? 1 : n < 0x10000 ? 2 : n < 0x100000000 ? 4 : 8;
}

/**
 * Only safe integers are written as integer objects: a larger integral number is a float in JS
 * (use a bigint for a 64-bit integer), and -0 must stay a real to keep its sign.
 */
function isIntegerNumber(v: number): boolean {
  return Number.isSafeInteger(v) && !Object.is(v, -0);
}

function checkInteger(n: bigint): void {
  if (n < PLIST_INT_MIN || n > PLIST_INT_MAX) badPlist(`integer ${n} does not fit in 64 bits`);
}

/**
 * Two passes: `flatten` numbers every object (strings and integers are uniqued, as CoreFoundation
 * does) and sizes them, then the objects are written into one buffer.
 */
class BinaryWriter {
  /** Objects in index order; containers hold child indexes. */
  readonly #objects: Array<PlistValue | { refs: number[]; dict: boolean }> = [];
  readonly #unique = new Map<string | number | bigint | boolean, number>();
  readonly #path = new Set<object>();

  flatten(v: PlistValue, depth: number): number {
    let key: string | number | bigint | boolean | undefined;
    switch (typeof v) {
      case 'string':
        key = 's' + v;
        break;
      case 'number':
        // Integral numbers share a slot with equal bigints; -0 and NaN are reals of their own.
        key = isIntegerNumber(v) ? BigInt(v) : 'r' + (Object.is(v, -0) ? '-0' : String(v));
        break;
      case 'bigint':
        key = v;
        break;
      case 'boolean':
        key = v;
        break;
      case 'object':
        if (v === null) badPlist('cannot encode null in a plist');
        break;
      default:
        badPlist(`cannot encode a ${typeof v} in a plist`);
    }
    if (key !== undefined) {
      const seen = this.#unique.get(key);
      if (seen !== undefined) return seen;
      const idx = this.#objects.push(v) - 1;
      this.#unique.set(key, idx);
      return idx;
    }
    if (Array.isArray(v) || (isPlistDict(v) && !(v instanceof PlistUID))) {
      if (depth >= PLIST_MAX_DEPTH) badPlist(`plist nesting deeper than ${PLIST_MAX_DEPTH}`);
      if (this.#path.has(v)) badPlist('cannot encode a plist that contains itself');
      this.#path.add(v);
      const node = { refs: [] as number[], dict: !Array.isArray(v) };
      const idx = this.#objects.push(node) - 1;
      if (Array.isArray(v)) {
        for (const item of v) {
          if (item === undefined) badPlist('cannot encode undefined in a plist array');
          node.refs.push(this.flatten(item, depth + 1));
        }
      } else {
        const dict = v as PlistDict;
        const keys: number[] = [];
        const values: number[] = [];
        for (const k of Object.keys(dict)) {
          const item = dict[k];
          if (item === undefined) continue;
          keys.push(this.flatten(k, depth + 1));
          values.push(this.flatten(item, depth + 1));
        }
        node.refs = keys.concat(values);
      }
      this.#path.delete(v);
      return idx;
    }
    if (!(v instanceof Date) && !(v instanceof PlistUID) && !(v instanceof PlistReal) && !ArrayBuffer.isView(v)) {
      badPlist('cannot encode this object in a plist');
    }
    return this.#objects.push(v) - 1;
  }

  finish(): Buffer {
    const objects = this.#objects;
    const refSize = widthFor(objects.length - 1);
    // Pass 1: sizes and offsets.
    const sizes = new Array<number>(objects.length);
    let total = HEADER_SIZE;
    const offsets = new Array<number>(objects.length);
    for (let i = 0; i < objects.length; i++) {
      offsets[i] = total;
      sizes[i] = objectSize(objects[i], refSize);
      total += sizes[i];
    }
    const tableOffset = total;
    const offsetSize = widthFor(tableOffset);
    const out = Buffer.allocUnsafe(tableOffset + offsetSize * objects.length + TRAILER_SIZE);
    BPLIST_MAGIC.copy(out, 0);
    // Pass 2: bodies.
    for (let i = 0; i < objects.length; i++) writeObject(out, offsets[i], objects[i], refSize);
    let p = tableOffset;
    for (let i = 0; i < objects.length; i++, p += offsetSize) writeUIntBE(out, p, offsetSize, offsets[i]);
    out.fill(0, p, p + 6);
    out[p + 6] = offsetSize;
    out[p + 7] = refSize;
    out.writeBigUInt64BE(BigInt(objects.length), p + 8);
    out.writeBigUInt64BE(0n, p + 16);
    out.writeBigUInt64BE(BigInt(tableOffset), p + 24);
    return out;
  }
}

function writeUIntBE(out: Buffer, off: number, size: number, v: number): void {
  if (size <= 4) out.writeUIntBE(v, off, size);
  else out.writeBigUInt64BE(BigInt(v), off);
}

/** Bytes of a length-prefixed marker: 1, or 1 + an integer object when n ≥ 15. */
function headSize(n: number): number {
  return n < 15 ? 1 : 2 + widthFor(n);
}

function writeHead(out: Buffer, off: number, type: number, n: number): number {
  if (n < 15) {
    out[off] = (type << 4) | n;
    return off + 1;
  }
  out[off] = (type << 4) | 0x0f;
  const w = widthFor(n);
  out[off + 1] = 0x10 | Math.log2(w);
  writeUIntBE(out, off + 2, w, n);
  return off + 2 + w;
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}

function intBytes(n: bigint): number {
  if (n < 0n) return 8;
  if (n <= 0xffn) return 1;
  if (n <= 0xffffn) return 2;
  if (n <= 0xffffffffn) return 4;
  if (n <= 0x7fffffffffffffffn) return 8;
  return 16; // libplist's encoding of unsigned 64-bit values above INT64_MAX
}

function uidBytes(v: number): number {
  return v <= 0xff ? 1 : v <= 0xffff ? 2 : 4;
}

function objectSize(o: PlistValue | { refs: number[]; dict: boolean }, refSize: number): number {
  switch (typeof o) {
    case 'boolean':
      return 1;
    case 'string':
      return isAscii(o) ? headSize(o.length) + o.length : headSize(o.length) + o.length * 2;
    case 'number':
      return isIntegerNumber(o) ? 1 + intBytes(BigInt(o)) : 9;
    case 'bigint':
      checkInteger(o);
      return 1 + intBytes(o);
  }
  if (o instanceof PlistReal || o instanceof Date) return 9;
  if (o instanceof PlistUID) return 1 + uidBytes(uidValue(o));
  if (ArrayBuffer.isView(o)) return headSize(o.byteLength) + o.byteLength;
  const node = o as { refs: number[]; dict: boolean };
  const n = node.dict ? node.refs.length / 2 : node.refs.length;
  return headSize(n) + node.refs.length * refSize;
}

function writeInt(out: Buffer, off: number, n: bigint): void {
  const w = intBytes(n);
  out[off] = 0x10 | Math.log2(w);
  if (w <= 4) out.writeUIntBE(Number(n), off + 1, w);
  else if (w === 8) out.writeBigInt64BE(n, off + 1);
  else {
    out.writeBigUInt64BE(0n, off + 1);
    out.writeBigUInt64BE(n, off + 9);
  }
}

function writeReal(out: Buffer, off: number, v: number): void {
  out[off] = 0x23;
  out.writeDoubleBE(v, off + 1);
}

function writeObject(out: Buffer, off: number, o: PlistValue | { refs: number[]; dict: boolean }, refSize: number): void {
  switch (typeof o) {
    case 'boolean':
      out[off] = o ? 0x09 : 0x08;
      return;
    case 'string': {
      if (isAscii(o)) {
        const p = writeHead(out, off, 0x5, o.length);
        out.write(o, p, o.length, 'latin1');
      } else {
        const p = writeHead(out, off, 0x6, o.length);
        out.write(o, p, o.length * 2, 'utf16le');
        out.subarray(p, p + o.length * 2).swap16();
      }
      return;
    }
    case 'number':
      if (isIntegerNumber(o)) writeInt(out, off, BigInt(o));
      else writeReal(out, off, o);
      return;
    case 'bigint':
      writeInt(out, off, o);
      return;
  }
  if (o instanceof PlistReal) {
    writeReal(out, off, o.value);
  } else if (o instanceof Date) {
    const ms = o.getTime();
    if (!Number.isFinite(ms)) badPlist('cannot encode an invalid Date');
    out[off] = 0x33;
    out.writeDoubleBE(ms / 1000 - APPLE_EPOCH_OFFSET_S, off + 1);
  } else if (o instanceof PlistUID) {
    const v = uidValue(o);
    const w = uidBytes(v);
    out[off] = 0x80 | (w - 1);
    out.writeUIntBE(v, off + 1, w);
  } else if (ArrayBuffer.isView(o)) {
    const p = writeHead(out, off, 0x4, o.byteLength);
    out.set(new Uint8Array(o.buffer, o.byteOffset, o.byteLength), p);
  } else {
    const node = o as { refs: number[]; dict: boolean };
    const n = node.dict ? node.refs.length / 2 : node.refs.length;
    let p = writeHead(out, off, node.dict ? 0xd : 0xa, n);
    for (const r of node.refs) {
      writeUIntBE(out, p, refSize, r);
      p += refSize;
    }
  }
}

/**
 * Encodes a value as a `bplist00` binary plist (what appium-ios-device sends and Apple's daemon
 * stores pair records as). Strings without non-ASCII characters are ASCII objects, others UTF-16BE.
 */
export function encodeBinaryPlist(v: PlistValue): Buffer {
  const w = new BinaryWriter();
  w.flatten(v, 0);
  return w.finish();
}
