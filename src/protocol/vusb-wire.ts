/**
 * The vusb wire (docs/ARCHITECTURE.md "The vusb wire"): USB transfers between a host stack and a
 * simulated device over a UNIX stream socket. Every integer is little-endian, like USB itself.
 *
 * ```
 * every message                      length counts type + body
 *  0        4      5
 *  +--------+------+---------------------------------------------+
 *  | length | type | body (length - 1 bytes)                     |
 *  | u32 LE | u8   |                                             |
 *  +--------+------+---------------------------------------------+
 *
 * 1 HELLO, device→host, first message, body = 4 bytes
 *  +--------------+-------+-------------+
 *  | wire_version | speed | reserved    |   speed: libusb enum (1 low, 2 full, 3 high,
 *  | u8 (1)       | u8    | u16 LE (0)  |          4 super, 5 super-plus)
 *  +--------------+-------+-------------+
 *
 * 2 CONTROL, host→device, body = 12 + n
 *  +--------+---------------+----------+--------+--------+---------+------------------+
 *  | id     | bmRequestType | bRequest | wValue | wIndex | wLength | OUT data stage   |
 *  | u32 LE | u8            | u8       | u16 LE | u16 LE | u16 LE  | (n bytes)        |
 *  +--------+---------------+----------+--------+--------+---------+------------------+
 *             \__________________ 8-byte USB setup packet _______/
 *
 * 3 CONTROL_DONE, device→host, body = 8 + n
 *  +--------+--------+-----------------------------+
 *  | id     | status | IN data stage (n ≤ wLength) |   status: 0, or a negative libusb error
 *  | u32 LE | i32 LE |                             |           (-9 LIBUSB_ERROR_PIPE = stall)
 *  +--------+--------+-----------------------------+
 *
 * 4 BULK_OUT, host→device / 5 BULK_IN, device→host, body = 1 + n
 *  +----------+--------------------------------------+
 *  | endpoint | the bytes of one transfer / write    |   n = 0: a zero-length packet
 *  | u8       | (n bytes)                            |
 *  +----------+--------------------------------------+
 * ```
 *
 * The codec is pure: no I/O. Bulk messages are written as a 6-byte header plus the caller's buffer
 * (`encodeBulkHeader`), so the bulk path never copies payload bytes to frame them.
 */
import { MuxwireError } from '../errors.js';

/** Message types on the vusb wire. */
export enum VusbMessageType {
  HELLO = 1,
  CONTROL = 2,
  CONTROL_DONE = 3,
  BULK_OUT = 4,
  BULK_IN = 5,
}

/** libusb's `enum libusb_speed` values, as carried in HELLO. */
export enum UsbSpeed {
  UNKNOWN = 0,
  LOW = 1,
  FULL = 2,
  HIGH = 3,
  SUPER = 4,
  SUPER_PLUS = 5,
}

/** The only wire version there is. */
export const VUSB_WIRE_VERSION = 1;
/** Bytes before the type: the u32 length. */
export const VUSB_LENGTH_SIZE = 4;
/** Length + type + endpoint: what precedes the payload of a bulk message. */
export const VUSB_BULK_HEADER_SIZE = 6;
/** Fixed part of a CONTROL body: id + setup packet. */
export const VUSB_CONTROL_FIXED_SIZE = 12;
/** Fixed part of a CONTROL_DONE body: id + status. */
export const VUSB_CONTROL_DONE_FIXED_SIZE = 8;
/** Size of a HELLO body. */
export const VUSB_HELLO_BODY_SIZE = 4;
/** Largest payload one message carries: one device write may be this large. */
export const VUSB_MAX_PAYLOAD = 1024 * 1024;
/**
 * Default ceiling for the length field: type + the largest fixed part (CONTROL's 12 bytes) + the
 * largest payload. Anything above is refused before a byte of it is buffered.
 */
export const VUSB_MAX_LENGTH = 1 + VUSB_CONTROL_FIXED_SIZE + VUSB_MAX_PAYLOAD;

/** libusb error numbers that travel in CONTROL_DONE.status. */
export enum UsbTransferStatus {
  OK = 0,
  /** LIBUSB_ERROR_IO */
  IO = -1,
  /** LIBUSB_ERROR_NO_DEVICE */
  NO_DEVICE = -4,
  /** LIBUSB_ERROR_TIMEOUT */
  TIMEOUT = -7,
  /** LIBUSB_ERROR_OVERFLOW */
  OVERFLOW = -8,
  /** LIBUSB_ERROR_PIPE: the device stalled the request. */
  PIPE = -9,
}

/** The 8-byte USB setup packet of a control transfer. */
export interface UsbSetupPacket {
  bmRequestType: number;
  bRequest: number;
  wValue: number;
  wIndex: number;
  wLength: number;
}

export interface VusbHello {
  type: VusbMessageType.HELLO;
  wireVersion: number;
  speed: number;
}
export interface VusbControl {
  type: VusbMessageType.CONTROL;
  id: number;
  setup: UsbSetupPacket;
  /** The OUT data stage (empty for IN requests). A view into the decoder's input when possible. */
  data: Buffer;
}
export interface VusbControlDone {
  type: VusbMessageType.CONTROL_DONE;
  id: number;
  status: number;
  /** The IN data stage. A view into the decoder's input when possible. */
  data: Buffer;
}
export interface VusbBulk {
  type: VusbMessageType.BULK_OUT | VusbMessageType.BULK_IN;
  endpoint: number;
  /** The transfer's bytes; empty = a zero-length packet. A view when possible. */
  data: Buffer;
}
/** One decoded vusb message. */
export type VusbMessage = VusbHello | VusbControl | VusbControlDone | VusbBulk;

function checkPayload(length: number): void {
  if (length > VUSB_MAX_PAYLOAD) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_LENGTH', `vusb payload of ${length} bytes exceeds ${VUSB_MAX_PAYLOAD}`);
  }
}

function checkByte(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `${name} ${v} is not a u8`);
}

function checkU16(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `${name} ${v} is not a u16`);
}

function checkU32(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `${name} ${v} is not a u32`);
}

/** Encodes a HELLO message. */
export function encodeHello(speed: number, wireVersion = VUSB_WIRE_VERSION): Buffer {
  checkByte('speed', speed);
  checkByte('wire version', wireVersion);
  const out = Buffer.alloc(VUSB_LENGTH_SIZE + 1 + VUSB_HELLO_BODY_SIZE);
  out.writeUInt32LE(1 + VUSB_HELLO_BODY_SIZE, 0);
  out[4] = VusbMessageType.HELLO;
  out[5] = wireVersion;
  out[6] = speed;
  return out;
}

/** Encodes a CONTROL message; `data` is the OUT data stage (omit for IN requests). */
export function encodeControl(id: number, setup: UsbSetupPacket, data?: Buffer): Buffer {
  checkU32('control id', id);
  checkByte('bmRequestType', setup.bmRequestType);
  checkByte('bRequest', setup.bRequest);
  checkU16('wValue', setup.wValue);
  checkU16('wIndex', setup.wIndex);
  checkU16('wLength', setup.wLength);
  const n = data?.length ?? 0;
  checkPayload(n);
  const out = Buffer.allocUnsafe(VUSB_LENGTH_SIZE + 1 + VUSB_CONTROL_FIXED_SIZE + n);
  out.writeUInt32LE(1 + VUSB_CONTROL_FIXED_SIZE + n, 0);
  out[4] = VusbMessageType.CONTROL;
  out.writeUInt32LE(id, 5);
  out[9] = setup.bmRequestType;
  out[10] = setup.bRequest;
  out.writeUInt16LE(setup.wValue, 11);
  out.writeUInt16LE(setup.wIndex, 13);
  out.writeUInt16LE(setup.wLength, 15);
  if (data !== undefined) data.copy(out, 17);
  return out;
}

/** Encodes a CONTROL_DONE message; `data` is the IN data stage. */
export function encodeControlDone(id: number, status: number, data?: Buffer): Buffer {
  checkU32('control id', id);
  if (!Number.isInteger(status) || status < -0x80000000 || status > 0x7fffffff) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `status ${status} is not an i32`);
  }
  const n = data?.length ?? 0;
  checkPayload(n);
  const out = Buffer.allocUnsafe(VUSB_LENGTH_SIZE + 1 + VUSB_CONTROL_DONE_FIXED_SIZE + n);
  out.writeUInt32LE(1 + VUSB_CONTROL_DONE_FIXED_SIZE + n, 0);
  out[4] = VusbMessageType.CONTROL_DONE;
  out.writeUInt32LE(id, 5);
  out.writeInt32LE(status, 9);
  if (data !== undefined) data.copy(out, 13);
  return out;
}

/**
 * Encodes the 6 bytes that precede a bulk payload of `payloadLength` bytes. Write it and the payload
 * back to back (cork/writev) so the payload is never copied.
 */
export function encodeBulkHeader(
  type: VusbMessageType.BULK_OUT | VusbMessageType.BULK_IN,
  endpoint: number,
  payloadLength: number,
): Buffer {
  checkPayload(payloadLength);
  const out = Buffer.allocUnsafe(VUSB_BULK_HEADER_SIZE);
  out.writeUInt32LE(2 + payloadLength, 0);
  out[4] = type;
  out[5] = endpoint & 0xff;
  return out;
}

/** Encodes any message as one buffer (copies the payload; the bulk path uses encodeBulkHeader). */
export function encodeVusbMessage(msg: VusbMessage): Buffer {
  switch (msg.type) {
    case VusbMessageType.HELLO:
      return encodeHello(msg.speed, msg.wireVersion);
    case VusbMessageType.CONTROL:
      return encodeControl(msg.id, msg.setup, msg.data);
    case VusbMessageType.CONTROL_DONE:
      return encodeControlDone(msg.id, msg.status, msg.data);
    case VusbMessageType.BULK_OUT:
    case VusbMessageType.BULK_IN: {
      checkByte('endpoint', msg.endpoint);
      return Buffer.concat([encodeBulkHeader(msg.type, msg.endpoint, msg.data.length), msg.data]);
    }
  }
}

const EMPTY_CHUNK = Buffer.alloc(0);

function badMessage(text: string): MuxwireError {
  return new MuxwireError('MUXWIRE_ERR_VUSB_BAD_MESSAGE', text);
}

/**
 * Decodes one whole message from `frame` = type + body (the length field already stripped).
 * Buffers in the result are views into `frame`.
 */
export function decodeVusbBody(frame: Buffer): VusbMessage {
  if (frame.length < 1) throw new MuxwireError('MUXWIRE_ERR_BAD_LENGTH', 'vusb message without a type');
  const type = frame[0]!;
  const bodyLength = frame.length - 1;
  switch (type) {
    case VusbMessageType.HELLO:
      // Exactly 4 bytes: a longer HELLO would be a different wire version, which wire_version says.
      if (bodyLength !== VUSB_HELLO_BODY_SIZE) throw badMessage(`HELLO body of ${bodyLength} bytes, expected 4`);
      return { type, wireVersion: frame[1]!, speed: frame[2]! };
    case VusbMessageType.CONTROL:
      if (bodyLength < VUSB_CONTROL_FIXED_SIZE) throw badMessage(`CONTROL body of ${bodyLength} bytes, expected at least 12`);
      return {
        type,
        id: frame.readUInt32LE(1),
        setup: {
          bmRequestType: frame[5]!,
          bRequest: frame[6]!,
          wValue: frame.readUInt16LE(7),
          wIndex: frame.readUInt16LE(9),
          wLength: frame.readUInt16LE(11),
        },
        data: frame.subarray(13),
      };
    case VusbMessageType.CONTROL_DONE:
      if (bodyLength < VUSB_CONTROL_DONE_FIXED_SIZE) {
        throw badMessage(`CONTROL_DONE body of ${bodyLength} bytes, expected at least 8`);
      }
      return { type, id: frame.readUInt32LE(1), status: frame.readInt32LE(5), data: frame.subarray(9) };
    case VusbMessageType.BULK_OUT:
    case VusbMessageType.BULK_IN:
      if (bodyLength < 1) throw badMessage('bulk message without an endpoint');
      return { type, endpoint: frame[1]!, data: frame.subarray(2) };
    default:
      throw badMessage(`unknown vusb message type ${type}`);
  }
}

/** Options of VusbDecoder. */
export interface VusbDecoderOptions {
  /** Largest accepted length field (type + body). Default VUSB_MAX_LENGTH (1 MiB + 13). */
  maxLength?: number;
}

/**
 * Incremental decoder: `push` arbitrary chunks, then call `next` until it returns undefined.
 * A message that lies inside one pushed chunk is returned as views into that chunk; only a message
 * that spans chunks is copied, once, into a buffer of its exact size. The declared length is
 * checked against `maxLength` before anything of the body is kept, so memory is bounded by one
 * message plus the chunk being parsed. After an error the decoder stays failed and rethrows it.
 */
export class VusbDecoder {
  readonly #maxLength: number;
  /** Unparsed input: #chunks[#first..], the first of them starting at #offset. */
  #chunks: Buffer[] = [];
  #first = 0;
  #offset = 0;
  #buffered = 0;
  #failed: MuxwireError | undefined;

  constructor(opts: VusbDecoderOptions = {}) {
    const max = opts.maxLength ?? VUSB_MAX_LENGTH;
    if (!Number.isInteger(max) || max < 1 || max > 0xffffffff) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `maxLength ${max} out of range`);
    }
    this.#maxLength = max;
  }

  /** Bytes received and not yet returned as messages. */
  get buffered(): number {
    return this.#buffered;
  }

  /** Adds received bytes. The decoder keeps a reference: do not reuse the chunk's memory. */
  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
  }

  /** The next whole message, or undefined until more bytes arrive. Throws on malformed input. */
  next(): VusbMessage | undefined {
    if (this.#failed) throw this.#failed;
    if (this.#buffered < VUSB_LENGTH_SIZE) return undefined;
    const length = this.#peekLength();
    if (length < 1 || length > this.#maxLength) throw this.#fail(badLength(length, this.#maxLength));
    if (this.#buffered < VUSB_LENGTH_SIZE + length) return undefined;
    this.#skip(VUSB_LENGTH_SIZE);
    const frame = this.#take(length);
    try {
      return decodeVusbBody(frame);
    } catch (err) {
      throw this.#fail(err as MuxwireError);
    }
  }

  /** Enters the failed state: nothing more is kept or parsed. */
  #fail(err: MuxwireError): MuxwireError {
    this.#failed = err;
    this.#chunks = [];
    this.#first = 0;
    this.#offset = 0;
    this.#buffered = 0;
    return err;
  }

  /** Done with the first chunk. Indexing instead of shift() keeps many tiny chunks linear. */
  #dropHead(): void {
    this.#chunks[this.#first] = EMPTY_CHUNK;
    this.#first++;
    this.#offset = 0;
    if (this.#first === this.#chunks.length) {
      this.#chunks = [];
      this.#first = 0;
    } else if (this.#first >= 1024 && this.#first * 2 >= this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#first);
      this.#first = 0;
    }
  }

  #peekLength(): number {
    const head = this.#chunks[this.#first]!;
    if (head.length - this.#offset >= 4) return head.readUInt32LE(this.#offset);
    // The 4 length bytes straddle chunks: assemble them.
    let value = 0;
    let got = 0;
    let i = this.#first;
    let off = this.#offset;
    while (got < 4) {
      const c = this.#chunks[i]!;
      while (off < c.length && got < 4) value += c[off++]! * 2 ** (8 * got++);
      i++;
      off = 0;
    }
    return value;
  }

  #skip(n: number): void {
    this.#buffered -= n;
    while (n > 0) {
      const avail = this.#chunks[this.#first]!.length - this.#offset;
      if (avail > n) {
        this.#offset += n;
        return;
      }
      n -= avail;
      this.#dropHead();
    }
  }

  /** Removes n bytes (n ≤ buffered): a view when they lie in one chunk, else one copy. */
  #take(n: number): Buffer {
    this.#buffered -= n;
    const head = this.#chunks[this.#first]!;
    const avail = head.length - this.#offset;
    if (avail >= n) {
      const view = head.subarray(this.#offset, this.#offset + n);
      if (avail === n) this.#dropHead();
      else this.#offset += n;
      return view;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.#chunks[this.#first]!;
      const take = Math.min(c.length - this.#offset, n - filled);
      c.copy(out, filled, this.#offset, this.#offset + take);
      filled += take;
      if (this.#offset + take === c.length) this.#dropHead();
      else this.#offset += take;
    }
    return out;
  }
}

/**
 * Decoder for a reader that reuses its read buffer (net's `onread`): `feed` hands every whole
 * message in `chunk` to `onMessage` at once, as views valid only during that call, and keeps the
 * start of an incomplete message in a carry buffer of its own (grown to the longest message seen,
 * at most `maxLength` + 4 bytes), so nothing of `chunk` is referenced after `feed` returns. A
 * message completed in the carry buffer is a view of it, again valid only during the call. The
 * declared length is checked before anything is kept; after an error the decoder stays failed.
 */
export class VusbStreamDecoder {
  readonly #maxLength: number;
  #carry: Buffer = Buffer.alloc(0);
  #carried = 0;
  #failed: MuxwireError | undefined;

  constructor(opts: VusbDecoderOptions = {}) {
    this.#maxLength = opts.maxLength ?? VUSB_MAX_LENGTH;
  }

  /** Bytes of an incomplete message held in the carry buffer. */
  get buffered(): number {
    return this.#carried;
  }

  /**
   * Decodes what `chunk` completes. `onMessage` returns false to stop (the rest of the chunk is
   * dropped: the reader is closing). Throws on malformed input.
   */
  feed(chunk: Buffer, onMessage: (msg: VusbMessage) => boolean): void {
    if (this.#failed) throw this.#failed;
    let pos = 0;
    if (this.#carried > 0) {
      pos = this.#fillCarry(chunk);
      if (pos < 0) return;
      const frame = this.#carry.subarray(VUSB_LENGTH_SIZE, this.#carried);
      this.#carried = 0;
      if (!onMessage(this.#decode(frame))) return;
    }
    while (chunk.length - pos >= VUSB_LENGTH_SIZE) {
      const length = this.#checkLength(chunk.readUInt32LE(pos));
      const end = pos + VUSB_LENGTH_SIZE + length;
      if (end > chunk.length) break;
      const frame = chunk.subarray(pos + VUSB_LENGTH_SIZE, end);
      pos = end;
      if (!onMessage(this.#decode(frame))) return;
    }
    if (pos < chunk.length) this.#fillCarry(chunk.subarray(pos));
  }

  /** Appends to the carried message what it still lacks; returns the bytes of `chunk` used, or -1
   * when the message is still incomplete (all of `chunk` is carried). */
  #fillCarry(chunk: Buffer): number {
    let used = 0;
    if (this.#carried < VUSB_LENGTH_SIZE) {
      used = Math.min(VUSB_LENGTH_SIZE - this.#carried, chunk.length);
      this.#reserve(VUSB_LENGTH_SIZE);
      chunk.copy(this.#carry, this.#carried, 0, used);
      this.#carried += used;
      if (this.#carried < VUSB_LENGTH_SIZE) return -1;
    }
    const total = VUSB_LENGTH_SIZE + this.#checkLength(this.#carry.readUInt32LE(0));
    this.#reserve(total);
    const take = Math.min(total - this.#carried, chunk.length - used);
    chunk.copy(this.#carry, this.#carried, used, used + take);
    this.#carried += take;
    return this.#carried === total ? used + take : -1;
  }

  #reserve(n: number): void {
    if (this.#carry.length >= n) return;
    const grown = Buffer.allocUnsafeSlow(Math.max(n, Math.min(2 * this.#carry.length, this.#maxLength + VUSB_LENGTH_SIZE), 65536));
    this.#carry.copy(grown, 0, 0, this.#carried);
    this.#carry = grown;
  }

  #checkLength(length: number): number {
    if (length < 1 || length > this.#maxLength) {
      throw this.#fail(badLength(length, this.#maxLength));
    }
    return length;
  }

  #decode(frame: Buffer): VusbMessage {
    try {
      return decodeVusbBody(frame);
    } catch (err) {
      throw this.#fail(err as MuxwireError);
    }
  }

  #fail(err: MuxwireError): MuxwireError {
    this.#failed = err;
    this.#carried = 0;
    this.#carry = Buffer.alloc(0);
    return err;
  }
}

/** The error of both decoders for a declared message length outside 1..max. */
function badLength(length: number, max: number): MuxwireError {
  return new MuxwireError('MUXWIRE_ERR_BAD_LENGTH', `vusb message length ${length} outside 1..${max}`);
}
