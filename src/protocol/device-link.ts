/**
 * DeviceLink, the message layer of `com.apple.mobilebackup2` (and of the older mobilebackup and
 * mobilesync): every message is a plist **array** whose first item names it, sent in the usual
 * plist-service framing (plist-frame.ts: u32 BIG-endian length, then the plist; libimobiledevice
 * sends binary plists, and reads either). Facts from libimobiledevice's device_link_service.c,
 * mobilebackup2.c and idevicebackup2.c.
 *
 * ```
 * device → host  ["DLMessageVersionExchange", 300, 0]            major, minor (mobilebackup2: 300.0)
 * host → device  ["DLMessageVersionExchange", "DLVersionsOk", 300]
 * device → host  ["DLMessageDeviceReady"]
 * either         ["DLMessageProcessMessage", {MessageName: "Hello", …}]   the service's own messages
 * device → host  ["DLMessageUploadFiles", {}, progress, totalBytes]      then a file stream (below)
 * device → host  ["DLMessageDownloadFiles", [paths], {}, progress]       host answers with a file stream
 * device → host  ["DLMessageCreateDirectory", path] · ["DLContentsOfDirectory", path]
 *                ["DLMessageMoveItems", {from: to}, {}, progress] · ["DLMessageRemoveItems", [paths], {}, progress]
 *                ["DLMessageCopyItem", from, to] · ["DLMessageGetFreeDiskSpace"]
 * host → device  ["DLMessageStatusResponse", code, "text" | EMPTY, value | EMPTY]   answers each of those
 * either         ["DLMessageDisconnect", "reason" | EMPTY]
 * ```
 *
 * Paths are relative to the host's backup directory (`<UDID>/Manifest.db`, `<UDID>/ab/ab12…`).
 *
 * **File streams** travel raw on the same connection, between two plist messages, every integer a
 * u32 BIG-endian:
 *
 * ```
 * per file:  u32 n, n bytes name           (an upload has two names: the device's, then the backup path)
 *            then chunks: u32 n, u8 code, n−1 bytes
 *                code 0x0C  file data (any number of these, each at most 4 GiB − 2)
 *                code 0x00  end of this file, success (n = 1)
 *                code 0x06  end of this file, the sender's error text (a host-side error)
 *                code 0x0B  end of this file, the device's error text (after data: just the end, as
 *                           real devices send it; idevicebackup2 treats it so)
 * end:       u32 0 where a name length would be
 *
 * e.g. a 3-byte file "a/b" with one name:
 *   00 00 00 03 61 2F 62  00 00 00 04 0C 78 79 7A  00 00 00 01 00  00 00 00 00
 * ```
 *
 * Status codes are unsigned in the plist (libplist's `plist_new_uint(-13)` is 2^64 − 13); decoding
 * gives them back as the signed numbers the sender meant.
 */
import { MuxwireError } from '../errors.js';
import { ByteQueue } from './byte-queue.js';
import { PlistReal, isPlistDict } from './plist.js';
import type { PlistDict, PlistValue } from './plist.js';

/** What DeviceLink sends where an optional string or value is absent. */
export const DL_EMPTY_PARAMETER = '___EmptyParameterString___';

/** mobilebackup2's DeviceLink version (libimobiledevice MBACKUP2_VERSION_INT1/INT2). */
export const DL_MOBILEBACKUP2_VERSION = { major: 300, minor: 0 } as const;

/** File stream chunk codes (idevicebackup2 CODE_*). */
export const DL_CODE_SUCCESS = 0x00;
export const DL_CODE_ERROR_LOCAL = 0x06;
export const DL_CODE_ERROR_REMOTE = 0x0b;
export const DL_CODE_FILE_DATA = 0x0c;

/** The status code of a DLMessageStatusResponse that carries per-file errors ("Multi status"). */
export const DL_STATUS_MULTI = -13;

/** Longest file name in a file stream (idevicebackup2 refuses longer ones too). */
export const DL_MAX_NAME_LENGTH = 4096;
/** Longest error text of a file stream chunk. */
export const DL_MAX_ERROR_TEXT = 64 * 1024;

/** A decoded DeviceLink message: its name and the items after it. */
export interface DeviceLinkMessage {
  name: string;
  args: PlistValue[];
}

function bad(what: string): MuxwireError {
  return new MuxwireError('MUXWIRE_ERR_BAD_MESSAGE', `DeviceLink: ${what}`);
}

/**
 * Reads a plist as a DeviceLink message: an array whose first item is a string starting with "DL"
 * (device_link_service.c accepts nothing else). MUXWIRE_ERR_BAD_MESSAGE otherwise.
 */
export function decodeDeviceLinkMessage(value: PlistValue): DeviceLinkMessage {
  if (!Array.isArray(value) || value.length < 1) throw bad('a message must be a non-empty array');
  const name = value[0];
  if (typeof name !== 'string' || !name.startsWith('DL') || name.length < 9) throw bad('a message must start with a DL* name');
  return { name, args: value.slice(1) };
}

/** Builds the array of a DeviceLink message. */
export function encodeDeviceLinkMessage(name: string, ...args: PlistValue[]): PlistValue[] {
  return [name, ...args];
}

/** `["DLMessageProcessMessage", dict]`: the carrier of the service's own messages. */
export function dlProcessMessage(dict: PlistDict): PlistValue[] {
  return ['DLMessageProcessMessage', dict];
}

/** `["DLMessageStatusResponse", code, text, value]`, negative codes as libplist writes them. */
export function dlStatusResponse(code: number, text?: string, value?: PlistValue): PlistValue[] {
  const wire = code < 0 ? 2n ** 64n + BigInt(code) : code;
  return ['DLMessageStatusResponse', wire, text ?? DL_EMPTY_PARAMETER, value ?? DL_EMPTY_PARAMETER];
}

/** A decoded DLMessageStatusResponse. */
export interface DeviceLinkStatus {
  code: number;
  text: string | undefined;
  value: PlistValue | undefined;
}

/** Reads the items of a DLMessageStatusResponse (after its name). */
export function decodeStatusResponse(msg: DeviceLinkMessage): DeviceLinkStatus {
  if (msg.name !== 'DLMessageStatusResponse') throw bad(`expected DLMessageStatusResponse, got ${msg.name}`);
  const [rawCode, text, value] = msg.args;
  let code: number;
  if (typeof rawCode === 'number' && Number.isInteger(rawCode)) code = rawCode;
  else if (typeof rawCode === 'bigint') code = Number(BigInt.asIntN(64, rawCode));
  else throw bad('a status response without an integer code');
  return {
    code,
    text: typeof text === 'string' && text !== DL_EMPTY_PARAMETER ? text : undefined,
    value: value === DL_EMPTY_PARAMETER ? undefined : value,
  };
}

/** The dict of a DLMessageProcessMessage, or MUXWIRE_ERR_BAD_MESSAGE. */
export function processMessageDict(msg: DeviceLinkMessage): PlistDict {
  const dict = msg.args[0];
  if (msg.name !== 'DLMessageProcessMessage' || !isPlistDict(dict)) throw bad(`expected DLMessageProcessMessage with a dict, got ${msg.name}`);
  return dict;
}

/** A progress figure (0–100) as the real number DeviceLink carries. */
export function dlProgress(percent: number): PlistReal {
  return new PlistReal(Math.max(0, Math.min(100, percent)));
}

/** A numeric plist value (integer or real) as a number, or undefined. */
export function plistNumber(v: PlistValue | undefined): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  if (v instanceof PlistReal) return v.value;
  return undefined;
}

/** `u32 n, name` of a file stream. */
export function encodeFileName(name: string): Buffer {
  const bytes = Buffer.from(name, 'utf8');
  if (bytes.length === 0 || bytes.length > DL_MAX_NAME_LENGTH) throw new MuxwireError('MUXWIRE_ERR_BAD_LENGTH', `DeviceLink: a file name of ${bytes.length} bytes`);
  const out = Buffer.allocUnsafe(4 + bytes.length);
  out.writeUInt32BE(bytes.length, 0);
  bytes.copy(out, 4);
  return out;
}

/** The 5-byte head of a data chunk of `length` bytes (the bytes follow it). */
export function encodeDataChunkHead(length: number): Buffer {
  if (!Number.isInteger(length) || length < 0 || length > 0xffff_fffe) throw new MuxwireError('MUXWIRE_ERR_BAD_LENGTH', `DeviceLink: a data chunk of ${length} bytes`);
  const out = Buffer.allocUnsafe(5);
  out.writeUInt32BE(length + 1, 0);
  out[4] = DL_CODE_FILE_DATA;
  return out;
}

/** The chunk that ends one file: success, or an error code with its text. */
export function encodeFileEnd(code: number = DL_CODE_SUCCESS, text = ''): Buffer {
  const bytes = Buffer.from(text, 'utf8').subarray(0, DL_MAX_ERROR_TEXT);
  const out = Buffer.allocUnsafe(5 + bytes.length);
  out.writeUInt32BE(bytes.length + 1, 0);
  out[4] = code;
  bytes.copy(out, 5);
  return out;
}

/** The u32 0 that ends a file stream. */
export function encodeFileStreamEnd(): Buffer {
  return Buffer.alloc(4);
}

/** What a {@link FileStreamDecoder} hands out, in stream order. */
export type FileStreamEvent =
  /** A new file: its names (one for a download, two for an upload). */
  | { kind: 'file'; names: string[] }
  /** Bytes of the current file (a view; copy it to keep it past the next push). */
  | { kind: 'data'; data: Buffer }
  /** The current file ended: `ok` unless the sender reported an error (`text`). */
  | { kind: 'end'; ok: boolean; code: number; text: string }
  /** The stream ended (the u32 0); `remainder()` has what follows. */
  | { kind: 'done' };

const enum FsState {
  /** Waiting for a u32 name length (0 ends the stream). */
  NameLength,
  /** Waiting for `#need` bytes of name. */
  Name,
  /** Waiting for the 5-byte head of a chunk. */
  ChunkHead,
  /** Handing out `#need` bytes of file data as they arrive. */
  Data,
  /** Waiting for `#need` bytes of error text. */
  ErrorText,
  /** The stream ended, or failed. */
  Done,
}

/**
 * The incremental decoder of a file stream: push chunks as they arrive, take events with next().
 * Data is handed out as it arrives (views, never a whole file), so a file of any size passes
 * through in bounded memory. A name longer than {@link DL_MAX_NAME_LENGTH}, an empty chunk or an
 * error text above {@link DL_MAX_ERROR_TEXT} is MUXWIRE_ERR_BAD_LENGTH and fails the decoder.
 */
export class FileStreamDecoder {
  readonly #queue = new ByteQueue();
  readonly #namesPerFile: number;
  #state = FsState.NameLength;
  #need = 0;
  #names: string[] = [];
  #code = 0;
  #sawData = false;
  #failed: MuxwireError | undefined;

  /** `namesPerFile`: 1 for what a host sends (DownloadFiles), 2 for what a device sends (UploadFiles). */
  constructor(namesPerFile: 1 | 2) {
    this.#namesPerFile = namesPerFile;
  }

  /** True once the stream's end marker was read. */
  get done(): boolean {
    return this.#state === FsState.Done && this.#failed === undefined;
  }

  push(chunk: Buffer): void {
    if (chunk.length > 0) this.#queue.push(chunk);
  }

  /** The next event, or undefined until more bytes arrive. */
  next(): FileStreamEvent | undefined {
    if (this.#failed) throw this.#failed;
    const q = this.#queue;
    for (;;) {
      switch (this.#state) {
        case FsState.NameLength: {
          if (q.length < 4) return undefined;
          const n = q.take(4).readUInt32BE(0);
          if (n === 0) {
            this.#state = FsState.Done;
            return { kind: 'done' };
          }
          if (n > DL_MAX_NAME_LENGTH) return this.#fail(`a file name of ${n} bytes`);
          this.#need = n;
          this.#state = FsState.Name;
          continue;
        }
        case FsState.Name: {
          if (q.length < this.#need) return undefined;
          this.#names.push(q.take(this.#need).toString('utf8'));
          if (this.#names.length < this.#namesPerFile) {
            this.#state = FsState.NameLength;
            continue;
          }
          const names = this.#names;
          this.#names = [];
          this.#sawData = false;
          this.#state = FsState.ChunkHead;
          return { kind: 'file', names };
        }
        case FsState.ChunkHead: {
          if (q.length < 5) return undefined;
          const head = q.take(5);
          const n = head.readUInt32BE(0);
          const code = head[4]!;
          if (n === 0) return this.#fail('a chunk of length 0');
          if (code === DL_CODE_FILE_DATA) {
            this.#need = n - 1;
            this.#state = FsState.Data;
            this.#sawData = true;
            continue;
          }
          if (n - 1 > DL_MAX_ERROR_TEXT) return this.#fail(`an end-of-file text of ${n - 1} bytes`);
          this.#code = code;
          this.#need = n - 1;
          this.#state = FsState.ErrorText;
          continue;
        }
        case FsState.Data: {
          if (this.#need === 0) {
            this.#state = FsState.ChunkHead;
            continue;
          }
          if (q.length === 0) return undefined;
          // Only what the first chunk holds: a view, never a copy of file data.
          const first = q.firstChunk!;
          const data = q.take(Math.min(this.#need, first.length - q.firstOffset));
          this.#need -= data.length;
          return { kind: 'data', data };
        }
        case FsState.ErrorText: {
          if (q.length < this.#need) return undefined;
          const text = q.take(this.#need).toString('utf8');
          const code = this.#code;
          this.#state = FsState.NameLength;
          // Real devices end a file sent as data with 0x0B; idevicebackup2 takes that as success.
          const ok = code === DL_CODE_SUCCESS || (code === DL_CODE_ERROR_REMOTE && this.#sawData);
          return { kind: 'end', ok, code, text };
        }
        case FsState.Done:
          return undefined;
      }
    }
  }

  /** Consumes and returns the bytes after the stream's end (the next plist message, usually). */
  remainder(): Buffer {
    return this.#queue.takeAll();
  }

  #fail(what: string): never {
    this.#state = FsState.Done;
    this.#failed = new MuxwireError('MUXWIRE_ERR_BAD_LENGTH', `DeviceLink file stream: ${what}`);
    throw this.#failed;
  }
}
