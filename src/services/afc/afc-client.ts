/**
 * The host side of AFC (`com.apple.afc`, lockdown-afc.md §9): files and directories on a device over
 * any Duplex — a lockdown StartService connection, TLS-wrapped or not, a mux connection, or a socket
 * to the simulator.
 *
 * ```ts
 * const afc = new AfcClient(stream);
 * await afc.mkdir('/Downloads/new');
 * await afc.pushFile('big.mov', '/Downloads/new/big.mov', { onProgress: (p) => console.log(p.bytes) });
 * console.log(await afc.list('/Downloads/new'));
 * ```
 *
 * Requests carry their arguments inside `this_length` and bulk data after it, paths NUL-terminated
 * (the LIMD layout every device accepts, §9.2). Replies are read leniently: like LIMD and PMD3 the
 * client joins both regions of a reply, so it accepts either reply layout (§9.6).
 */
import type { Duplex } from 'node:stream';

import { MuxwireError } from '../../errors.js';
import { AfcFileMode, AfcOp, AfcStatus, decodeKeyValueList, decodeNameList, encodeAfcPath } from '../../protocol/afc.js';
import type { AfcPacket } from '../../protocol/afc.js';
import { AfcChannel } from './afc-channel.js';
import type { AfcChannelOptions } from './afc-channel.js';
import { AFC_ERROR, afcOpName, afcStatusError, isAfcStatus } from './afc-error.js';
import { parseDeviceInfo, parseFileInfo } from './afc-info.js';
import type { AfcDeviceInfo, AfcFileInfo } from './afc-info.js';
import { AfcReadStream } from './afc-read-stream.js';
import type { AfcReadStreamOptions } from './afc-read-stream.js';
import { AfcWriteStream } from './afc-write-stream.js';
import type { AfcWriteStreamOptions } from './afc-write-stream.js';
import { pullFile, pushFile } from './afc-transfer.js';
import type { AfcTransferOptions, AfcTransferResult } from './afc-transfer.js';

/** fopen-style names of the six FILE_OPEN modes (§9.7). */
export type AfcOpenMode = 'r' | 'r+' | 'w' | 'w+' | 'a' | 'a+';

const MODES: Record<AfcOpenMode, AfcFileMode> = {
  r: AfcFileMode.RDONLY,
  'r+': AfcFileMode.RW,
  w: AfcFileMode.WRONLY,
  'w+': AfcFileMode.WR,
  a: AfcFileMode.APPEND,
  'a+': AfcFileMode.RDAPPEND,
};

const WHENCE = { set: 0n, cur: 1n, end: 2n } as const;
const LOCKS = { shared: 5n, exclusive: 6n, unlock: 12n } as const;

/** Options of an {@link AfcClient}. */
export type AfcClientOptions = AfcChannelOptions;

function u64(...values: (number | bigint)[]): Buffer {
  const b = Buffer.allocUnsafe(8 * values.length);
  values.forEach((v, i) => b.writeBigUInt64LE(BigInt(v), 8 * i));
  return b;
}

function i64(value: number | bigint): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeBigInt64LE(BigInt(value));
  return b;
}

/** Both regions of a reply as one blob (LIMD and PMD3 concatenate them too, §9.6). */
function replyBytes(reply: AfcPacket): Buffer {
  if (reply.headerPayload.length === 0) return reply.payload;
  if (reply.payload.length === 0) return reply.headerPayload;
  return Buffer.concat([reply.headerPayload, reply.payload]);
}

/** An AFC client over one connection. Operations may be issued concurrently; they are pipelined. */
export class AfcClient {
  readonly #channel: AfcChannel;

  constructor(stream: Duplex, opts: AfcClientOptions = {}) {
    this.#channel = new AfcChannel(stream, opts);
  }

  /** Requests sent and not yet answered. */
  get inFlight(): number {
    return this.#channel.inFlight;
  }

  /** Names in a directory, without `.` and `..`. */
  async list(path: string): Promise<string[]> {
    const names = decodeNameList(await this.#data(AfcOp.READ_DIR, encodeAfcPath(path), path));
    return names.filter((n) => n !== '.' && n !== '..');
  }

  /** GET_FILE_INFO. A symlink is described itself, with its `linkTarget`. */
  async stat(path: string): Promise<AfcFileInfo> {
    return parseFileInfo(decodeKeyValueList(await this.#data(AfcOp.GET_FILE_INFO, encodeAfcPath(path), path)));
  }

  /** GET_DEVINFO: model and file system sizes. */
  async deviceInfo(): Promise<AfcDeviceInfo> {
    return parseDeviceInfo(decodeKeyValueList(await this.#data(AfcOp.GET_DEVINFO, Buffer.alloc(0), '')));
  }

  /** MAKE_DIR: creates missing parents; an existing directory is fine. */
  async mkdir(path: string): Promise<void> {
    await this.#status(AfcOp.MAKE_DIR, encodeAfcPath(path), path);
  }

  /**
   * Removes a file, a symlink or an empty directory; with `recursive`, a directory and everything in
   * it (REMOVE_PATH_AND_CONTENTS, iOS 6+; on a device that answers it UNKNOWN_PACKET_TYPE or
   * OP_NOT_SUPPORTED, by walking the tree). A non-empty directory without `recursive` fails with
   * UNKNOWN_ERROR (1), which is what devices send (§9.5).
   */
  async rm(path: string, opts: { recursive?: boolean } = {}): Promise<void> {
    if (!opts.recursive) {
      await this.#status(AfcOp.REMOVE_PATH, encodeAfcPath(path), path);
      return;
    }
    try {
      await this.#status(AfcOp.REMOVE_PATH_AND_CONTENTS, encodeAfcPath(path), path);
    } catch (err) {
      if (!isAfcStatus(err, AfcStatus.UNKNOWN_PACKET_TYPE) && !isAfcStatus(err, AfcStatus.OP_NOT_SUPPORTED)) throw err;
      await this.#removeTree(path);
    }
  }

  async #removeTree(path: string): Promise<void> {
    const info = await this.stat(path);
    if (info.type === 'directory') {
      for (const name of await this.list(path)) await this.#removeTree(`${path.replace(/\/+$/, '')}/${name}`);
    }
    await this.#status(AfcOp.REMOVE_PATH, encodeAfcPath(path), path);
  }

  /** RENAME_PATH; replaces `to` when it exists, as rename(2). */
  async rename(from: string, to: string): Promise<void> {
    await this.#status(AfcOp.RENAME_PATH, Buffer.concat([encodeAfcPath(from), encodeAfcPath(to)]), `${from} -> ${to}`);
  }

  /** MAKE_LINK: `linkName` becomes a symbolic (default) or hard link to `target`. */
  async link(target: string, linkName: string, opts: { symbolic?: boolean } = {}): Promise<void> {
    const type = opts.symbolic === false ? 1 : 2;
    const args = Buffer.concat([u64(type), encodeAfcPath(target), encodeAfcPath(linkName)]);
    await this.#status(AfcOp.MAKE_LINK, args, `${linkName} -> ${target}`);
  }

  /** TRUNCATE by path. */
  async truncate(path: string, size: number | bigint): Promise<void> {
    await this.#status(AfcOp.TRUNCATE, Buffer.concat([u64(size), encodeAfcPath(path)]), path);
  }

  /** SET_FILE_MOD_TIME (a Date, or nanoseconds since the epoch). */
  async setModTime(path: string, mtime: Date | bigint): Promise<void> {
    const ns = typeof mtime === 'bigint' ? mtime : BigInt(mtime.getTime()) * 1_000_000n;
    await this.#status(AfcOp.SET_FILE_MOD_TIME, Buffer.concat([u64(ns), encodeAfcPath(path)]), path);
  }

  /** FILE_OPEN; resolves with the handle. */
  async open(path: string, mode: AfcOpenMode | AfcFileMode = 'r'): Promise<number> {
    const value = typeof mode === 'string' ? MODES[mode] : mode;
    if (value === undefined) throw new MuxwireError(AFC_ERROR, `unknown AFC open mode ${String(mode)}`);
    const reply = await this.#request(AfcOp.FILE_OPEN, Buffer.concat([u64(value), encodeAfcPath(path)]), path);
    return Number(this.#u64Result(reply, AfcOp.FILE_OPEN_RES, AfcOp.FILE_OPEN, path));
  }

  /** FILE_READ: up to `length` bytes; an empty buffer at the end of the file. */
  async read(handle: number, length: number): Promise<Buffer> {
    return this.#data(AfcOp.FILE_READ, u64(handle, length), `handle ${handle}`);
  }

  /** FILE_WRITE: the data goes after `this_length`, without a copy. */
  async write(handle: number, data: Buffer): Promise<void> {
    await this.#status(AfcOp.FILE_WRITE, u64(handle), `handle ${handle}`, data);
  }

  /** FILE_SEEK. */
  async seek(handle: number, offset: number | bigint, whence: 'set' | 'cur' | 'end' = 'set'): Promise<void> {
    const args = Buffer.concat([u64(handle, WHENCE[whence]), i64(offset)]);
    await this.#status(AfcOp.FILE_SEEK, args, `handle ${handle}`);
  }

  /** FILE_TELL: the position. */
  async tell(handle: number): Promise<number> {
    const reply = await this.#request(AfcOp.FILE_TELL, u64(handle), `handle ${handle}`);
    return Number(this.#u64Result(reply, AfcOp.FILE_TELL_RES, AfcOp.FILE_TELL, `handle ${handle}`));
  }

  /** FILE_SET_SIZE (ftruncate). */
  async setSize(handle: number, size: number | bigint): Promise<void> {
    await this.#status(AfcOp.FILE_SET_SIZE, u64(handle, size), `handle ${handle}`);
  }

  /** FILE_LOCK, never waiting: a contended lock fails with OP_WOULD_BLOCK (19). */
  async lock(handle: number, op: 'shared' | 'exclusive' | 'unlock'): Promise<void> {
    await this.#status(AfcOp.FILE_LOCK, u64(handle, LOCKS[op]), `handle ${handle}`);
  }

  /** FILE_CLOSE. */
  async close(handle: number): Promise<void> {
    await this.#status(AfcOp.FILE_CLOSE, u64(handle), `handle ${handle}`);
  }

  /** A Readable of a device file, read with several FILE_READs in flight. */
  pull(remote: string, opts: AfcReadStreamOptions = {}): AfcReadStream {
    return new AfcReadStream(this, remote, opts);
  }

  /** A Writable into a device file (created or truncated), written with several FILE_WRITEs in flight. */
  push(remote: string, opts: AfcWriteStreamOptions = {}): AfcWriteStream {
    return new AfcWriteStream(this, remote, opts);
  }

  /** Copies a device file to `localPath`. */
  pullFile(remote: string, localPath: string, opts: AfcTransferOptions = {}): Promise<AfcTransferResult> {
    return pullFile(this, remote, localPath, opts);
  }

  /** Copies `localPath` to a device file. */
  pushFile(localPath: string, remote: string, opts: AfcTransferOptions = {}): Promise<AfcTransferResult> {
    return pushFile(this, localPath, remote, opts);
  }

  /** Resolves when the connection can take more data without growing its buffer. */
  writable(): Promise<void> {
    return this.#channel.writable();
  }

  /** Closes the connection; outstanding requests fail with MUXWIRE_ERR_CLOSED. */
  disconnect(): void {
    this.#channel.close();
  }

  #request(op: AfcOp, args: Buffer, subject: string, payload?: Buffer): Promise<AfcPacket> {
    return this.#channel.request(op, args, payload).catch((err: unknown) => {
      if (err instanceof MuxwireError && err.code !== AFC_ERROR && subject !== '') {
        throw new MuxwireError(err.code, `${err.message} (${subject})`, { cause: err, detail: err.detail });
      }
      throw err;
    });
  }

  /** A request whose answer is STATUS; non-zero statuses throw. */
  async #status(op: AfcOp, args: Buffer, subject: string, payload?: Buffer): Promise<void> {
    const reply = await this.#request(op, args, subject, payload);
    this.#checkStatus(reply, op, subject);
  }

  /** A request whose answer is DATA; a STATUS instead throws its status. */
  async #data(op: AfcOp, args: Buffer, subject: string): Promise<Buffer> {
    const reply = await this.#request(op, args, subject);
    if (Number(reply.operation) === AfcOp.DATA) return replyBytes(reply);
    this.#checkStatus(reply, op, subject);
    throw new MuxwireError(AFC_ERROR, `AFC ${afcOpName(op)} ${subject}: STATUS SUCCESS where DATA was expected`);
  }

  #u64Result(reply: AfcPacket, expected: AfcOp, op: AfcOp, subject: string): bigint {
    if (Number(reply.operation) === expected) {
      const bytes = replyBytes(reply);
      if (bytes.length < 8) throw new MuxwireError(AFC_ERROR, `AFC ${afcOpName(expected)} is ${bytes.length} bytes, not 8`);
      return bytes.readBigUInt64LE(0);
    }
    this.#checkStatus(reply, op, subject);
    throw new MuxwireError(AFC_ERROR, `AFC ${afcOpName(op)} ${subject}: STATUS SUCCESS where ${afcOpName(expected)} was expected`);
  }

  #checkStatus(reply: AfcPacket, op: AfcOp, subject: string): void {
    const replyOp = Number(reply.operation);
    if (replyOp !== AfcOp.STATUS) {
      throw new MuxwireError(AFC_ERROR, `AFC ${afcOpName(op)} ${subject}: unexpected ${afcOpName(replyOp)} reply`);
    }
    const bytes = replyBytes(reply);
    // LIMD: an empty STATUS is an error, not success (§9.6).
    if (bytes.length < 8) throw new MuxwireError(AFC_ERROR, `AFC ${afcOpName(op)} ${subject}: STATUS without a code`);
    const status = Number(bytes.readBigUInt64LE(0));
    if (status !== AfcStatus.SUCCESS) throw afcStatusError(op, subject, status);
  }
}
