/**
 * usbmuxd client-protocol messages (usbmux.md §4.2–§4.7): the binary (v0) payloads, the plist (v1)
 * message, and an incremental decoder for the byte stream of a client or daemon socket.
 *
 * ```
 * every message: 16-byte LE header (client-header.ts) then the payload below
 *
 * RESULT        (20 B)  16: u32 LE result
 * CONNECT       (24 B)  16: u32 LE device_id   20: u16 BE port (network order!)   22: u16 0
 * LISTEN        (16 B)  header only
 * DEVICE_ADD   (284 B)  16: u32 LE device_id   20: u16 LE product_id
 *                       22: char serial_number[256], NUL-terminated (≤ 255 bytes)
 *                      278: u16 padding 0     280: u32 LE location
 * DEVICE_REMOVE (20 B)  16: u32 LE device_id
 * DEVICE_PAIRED (20 B)  16: u32 LE device_id
 * PLIST   (16 + n B)    version 1, 16: XML plist, a dictionary with MessageType (§4.4)
 * ```
 */
import { MuxwireError } from '../errors.js';
import { ByteQueue } from './byte-queue.js';
import {
  CLIENT_HEADER_SIZE,
  CLIENT_VERSION_BINARY,
  CLIENT_VERSION_PLIST,
  ClientMessageType,
  decodeClientHeader,
  encodeClientHeader,
} from './client-header.js';
import { decodePlist, encodeXmlPlist, isPlistDict } from './plist.js';
import type { PlistDict } from './plist.js';
import { decodeFlatXmlDict } from './client-flat-plist.js';
import { requestIntegerProblem, resultMessage } from './client-plist.js';

export { ClientMessageType, ResultCode, CLIENT_HEADER_SIZE } from './client-header.js';

/** The packed `struct usbmuxd_device_record` of a binary DEVICE_ADD. */
export interface DeviceRecord {
  deviceId: number;
  productId: number;
  /** The UDID (usbmuxd sends the dashed 25-character form for 24-character serials). */
  serialNumber: string;
  locationId: number;
}

/** Size of `struct usbmuxd_device_record`. */
export const DEVICE_RECORD_SIZE = 268;
const SERIAL_FIELD_SIZE = 256;
/** usbmuxd forces the field's last byte to NUL, so a serial has at most 255 bytes. */
const SERIAL_MAX_BYTES = SERIAL_FIELD_SIZE - 1;

/**
 * A DEVICE_ADD serial: UTF-8, with every byte that is not part of a valid sequence read as `?`
 * (usbmuxd's own rule for serial descriptors). The string never encodes longer than the bytes it
 * came from, so encoding a decoded record gives back the same bytes.
 */
function readSerial(payload: Buffer, start: number, end: number): string {
  const s = payload.toString('utf8', start, end);
  return s.includes('\ufffd') ? s.replace(/\ufffd/g, '?') : s;
}

/** One decoded or to-be-encoded client-protocol message. */
export type ClientMessage =
  | { kind: 'result'; tag: number; result: number }
  | { kind: 'connect'; tag: number; deviceId: number; /** host-order port, e.g. 62078 */ port: number }
  | { kind: 'listen'; tag: number }
  | { kind: 'device-add'; tag: number; device: DeviceRecord }
  | { kind: 'device-remove'; tag: number; deviceId: number }
  | { kind: 'device-paired'; tag: number; deviceId: number }
  | { kind: 'plist'; tag: number; version: number; plist: PlistDict }
  /** A PLIST message whose body is not a plist dictionary: a daemon can still answer it. */
  | { kind: 'bad-plist'; tag: number; version: number; error: MuxwireError }
  /**
   * A request dictionary with an integer field out of range or of the wrong type (decoders with
   * `requests: true` only; `plist` is what was read, for the client information in it).
   */
  | { kind: 'bad-request'; tag: number; version: number; plist: PlistDict; error: MuxwireError }
  /**
   * Anything else: a header version other than 0/1 (answer BADVERSION), an unknown type, or a
   * binary message whose size does not match its type (answer BADCOMMAND).
   */
  | { kind: 'unknown'; tag: number; version: number; message: number; payload: Buffer };

/** Default largest message a decoder accepts: usbmuxd's command buffer (usbmux.md §4.2). */
export const CLIENT_MAX_LENGTH_DEFAULT = 65536;

function header(length: number, version: number, message: number, tag: number): Buffer {
  return encodeClientHeader({ length, version, message, tag }, Buffer.alloc(length));
}

/** Encodes one message with its header. Throws MUXWIRE_ERR_BAD_MESSAGE for a 'bad-plist' message. */
export function encodeClientMessage(msg: ClientMessage): Buffer {
  switch (msg.kind) {
    case 'result': {
      const b = header(20, CLIENT_VERSION_BINARY, ClientMessageType.RESULT, msg.tag);
      b.writeUInt32LE(msg.result >>> 0, 16);
      return b;
    }
    case 'connect': {
      const b = header(24, CLIENT_VERSION_BINARY, ClientMessageType.CONNECT, msg.tag);
      b.writeUInt32LE(msg.deviceId >>> 0, 16);
      b.writeUInt16BE(msg.port & 0xffff, 20);
      return b;
    }
    case 'listen':
      return header(16, CLIENT_VERSION_BINARY, ClientMessageType.LISTEN, msg.tag);
    case 'device-add': {
      const b = header(CLIENT_HEADER_SIZE + DEVICE_RECORD_SIZE, CLIENT_VERSION_BINARY, ClientMessageType.DEVICE_ADD, msg.tag);
      const d = msg.device;
      b.writeUInt32LE(d.deviceId >>> 0, 16);
      b.writeUInt16LE(d.productId & 0xffff, 20);
      // strncpy into 256 bytes, last byte forced to NUL: at most 255 bytes of serial (usbmuxd),
      // cut before a character rather than inside one.
      const serial = Buffer.from(d.serialNumber, 'utf8');
      let n = Math.min(serial.length, SERIAL_MAX_BYTES);
      if (n < serial.length) while (n > 0 && (serial[n]! & 0xc0) === 0x80) n--;
      serial.copy(b, 22, 0, n);
      b.writeUInt32LE(d.locationId >>> 0, 16 + 264);
      return b;
    }
    case 'device-remove':
    case 'device-paired': {
      const type = msg.kind === 'device-remove' ? ClientMessageType.DEVICE_REMOVE : ClientMessageType.DEVICE_PAIRED;
      const b = header(20, CLIENT_VERSION_BINARY, type, msg.tag);
      b.writeUInt32LE(msg.deviceId >>> 0, 16);
      return b;
    }
    case 'plist': {
      const body = encodeXmlPlist(msg.plist);
      const b = Buffer.allocUnsafe(CLIENT_HEADER_SIZE + body.length);
      encodeClientHeader({ length: b.length, version: msg.version, message: ClientMessageType.PLIST, tag: msg.tag }, b);
      body.copy(b, CLIENT_HEADER_SIZE);
      return b;
    }
    case 'unknown': {
      const b = Buffer.allocUnsafe(CLIENT_HEADER_SIZE + msg.payload.length);
      encodeClientHeader({ length: b.length, version: msg.version, message: msg.message, tag: msg.tag }, b);
      msg.payload.copy(b, CLIENT_HEADER_SIZE);
      return b;
    }
    case 'bad-plist':
    case 'bad-request':
      throw new MuxwireError('MUXWIRE_ERR_BAD_MESSAGE', `a ${msg.kind} message cannot be encoded`);
  }
}

/** XML bodies of `{MessageType: "Result", Number: n}` by n, encoded once each. */
const resultBodies = new Map<number, Buffer>();
/** Result numbers are a few codes and errno values; anything past this many is encoded each time. */
const MAX_CACHED_RESULTS = 64;

/**
 * A plist Result message, the same bytes as `encodeClientMessage({kind: 'plist', tag, version,
 * plist: resultMessage(result)})`; the XML body is encoded once per result number, since a daemon
 * answers every Connect with one (on the connect-latency path).
 */
export function encodePlistResult(tag: number, result: number, version: number = CLIENT_VERSION_PLIST): Buffer {
  let body = resultBodies.get(result);
  if (body === undefined) {
    body = encodeXmlPlist(resultMessage(result));
    if (resultBodies.size < MAX_CACHED_RESULTS) resultBodies.set(result, body);
  }
  const b = Buffer.allocUnsafe(CLIENT_HEADER_SIZE + body.length);
  encodeClientHeader({ length: b.length, version, message: ClientMessageType.PLIST, tag }, b);
  body.copy(b, CLIENT_HEADER_SIZE);
  return b;
}

/**
 * Decodes the body of a PLIST message; throws MUXWIRE_ERR_BAD_PLIST when it is not a plist
 * dictionary. Both XML (what usbmuxd speaks) and binary are read; the flat requests libusbmuxd
 * sends take a fast path (client-flat-plist.ts) that gives the same dictionary.
 */
export function decodeClientPlist(body: Buffer, opts: { keepReals?: boolean } = {}): PlistDict {
  const flat = decodeFlatXmlDict(body);
  if (flat !== undefined) return flat;
  const value = decodePlist(body, opts);
  if (!isPlistDict(value)) throw new MuxwireError('MUXWIRE_ERR_BAD_PLIST', 'client plist message is not a dictionary');
  return value;
}

/**
 * Decodes one whole message (header + payload, `frame.length` = header length). With `requests`
 * (a daemon reading its clients), a plist request's integer fields are range-checked here
 * (REQUEST_INTEGER_FIELDS, reals kept apart from integers): a bad one gives 'bad-request'.
 */
export function decodeClientFrame(frame: Buffer, requests = false): ClientMessage {
  const h = decodeClientHeader(frame);
  const { tag, version, message } = h;
  const payload = frame.subarray(CLIENT_HEADER_SIZE);
  const unknown = (): ClientMessage => ({ kind: 'unknown', tag, version, message, payload });
  if (version !== CLIENT_VERSION_BINARY && version !== CLIENT_VERSION_PLIST) return unknown();
  // As usbmuxd: the message type decides, whatever the version says (usbmux.md §4.6).
  switch (message) {
    case ClientMessageType.PLIST:
      try {
        const plist = decodeClientPlist(payload, { keepReals: requests });
        const problem = requests ? requestIntegerProblem(plist) : undefined;
        if (problem !== undefined) {
          return { kind: 'bad-request', tag, version, plist, error: new MuxwireError('MUXWIRE_ERR_BAD_REQUEST', `bad integer field ${problem}`) };
        }
        return { kind: 'plist', tag, version, plist };
      } catch (err) {
        const error = err instanceof MuxwireError ? err : new MuxwireError('MUXWIRE_ERR_BAD_PLIST', String(err), { cause: err });
        return { kind: 'bad-plist', tag, version, error };
      }
    case ClientMessageType.RESULT:
      return payload.length === 4 ? { kind: 'result', tag, result: payload.readUInt32LE(0) } : unknown();
    case ClientMessageType.CONNECT:
      return payload.length === 8
        ? { kind: 'connect', tag, deviceId: payload.readUInt32LE(0), port: payload.readUInt16BE(4) }
        : unknown();
    case ClientMessageType.LISTEN:
      return payload.length === 0 ? { kind: 'listen', tag } : unknown();
    case ClientMessageType.DEVICE_ADD: {
      if (payload.length !== DEVICE_RECORD_SIZE) return unknown();
      let end = payload.indexOf(0, 6);
      if (end < 0 || end > 6 + SERIAL_MAX_BYTES) end = 6 + SERIAL_MAX_BYTES;
      return {
        kind: 'device-add',
        tag,
        device: {
          deviceId: payload.readUInt32LE(0),
          productId: payload.readUInt16LE(4),
          serialNumber: readSerial(payload, 6, end),
          locationId: payload.readUInt32LE(264),
        },
      };
    }
    case ClientMessageType.DEVICE_REMOVE:
    case ClientMessageType.DEVICE_PAIRED:
      if (payload.length !== 4) return unknown();
      return {
        kind: message === ClientMessageType.DEVICE_REMOVE ? 'device-remove' : 'device-paired',
        tag,
        deviceId: payload.readUInt32LE(0),
      };
    default:
      return unknown();
  }
}

/**
 * Splits a client or daemon socket's byte stream into messages. Feed chunks with `push`, take
 * messages with `next` until it returns undefined. After a Connect's Result 0 the stream becomes a
 * raw tunnel: `remainder()` hands back the bytes that arrived behind the Result.
 *
 * `maxLength` bounds a message, header included. The default, 65536, is usbmuxd's own command
 * buffer and is right for a daemon reading requests; a client reading replies (a DeviceList of
 * many devices, a pair record) should pass a larger limit. A header length below 16 or above
 * `maxLength` is a MuxwireError MUXWIRE_ERR_BAD_LENGTH from `next()`, before the body is buffered;
 * the decoder then stays failed (every later `next()` throws the same error).
 */
export class ClientMessageDecoder {
  readonly #queue = new ByteQueue();
  readonly #maxLength: number;
  readonly #requests: boolean;
  #failed: MuxwireError | undefined;

  /** `requests`: the stream holds client requests, whose integer fields are checked (decodeClientFrame). */
  constructor(opts: { maxLength?: number; requests?: boolean } = {}) {
    this.#maxLength = opts.maxLength ?? CLIENT_MAX_LENGTH_DEFAULT;
    this.#requests = opts.requests === true;
  }

  /** Bytes received and not yet returned as messages. */
  get buffered(): number {
    return this.#queue.length;
  }

  /** True while the bytes held are the start of a message that has not wholly arrived. */
  get partial(): boolean {
    const q = this.#queue;
    if (q.length === 0) return false;
    if (q.length < CLIENT_HEADER_SIZE) return true;
    return q.length < q.peek(4).readUInt32LE(0);
  }

  push(chunk: Buffer): void {
    this.#queue.push(chunk);
  }

  next(): ClientMessage | undefined {
    if (this.#failed) throw this.#failed;
    const q = this.#queue;
    if (q.length < CLIENT_HEADER_SIZE) return undefined;
    const length = q.peek(4).readUInt32LE(0);
    if (length < CLIENT_HEADER_SIZE || length > this.#maxLength) {
      this.#failed = new MuxwireError(
        'MUXWIRE_ERR_BAD_LENGTH',
        `client message length ${length} outside ${CLIENT_HEADER_SIZE}..${this.#maxLength}`,
        { detail: { length, maxLength: this.#maxLength } },
      );
      throw this.#failed;
    }
    if (q.length < length) return undefined;
    return decodeClientFrame(q.take(length), this.#requests);
  }

  /** Consumes and returns every byte not yet decoded (tunnel data after Result 0). */
  remainder(): Buffer {
    return this.#queue.takeAll();
  }
}
