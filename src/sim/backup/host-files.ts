/**
 * The device's view of the host's backup directory: the DeviceLink requests a device sends while
 * it runs a backup or restore (UploadFiles, DownloadFiles, CreateDirectory, ContentsOfDirectory,
 * MoveItems, RemoveItems, GetFreeDiskSpace), each answered by one DLMessageStatusResponse. Paths
 * are relative to the host's backup directory. A status other than 0 (or, for downloads, the
 * "Multi status" that lists missing files) is MUXWIRE_ERR_BACKUP with the host's text.
 */
import { open } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { MuxwireError } from '../../errors.js';
import { isPlistDict } from '../../protocol/plist.js';
import type { PlistDict } from '../../protocol/plist.js';
import {
  DL_CODE_ERROR_REMOTE,
  DL_STATUS_MULTI,
  decodeStatusResponse,
  dlProgress,
  DL_CODE_FILE_DATA,
  encodeFileEnd,
  encodeFileName,
  encodeFileStreamEnd,
  plistNumber,
} from '../../protocol/device-link.js';
import type { DeviceLinkStatus } from '../../protocol/device-link.js';
import type { DeviceLinkChannel } from '../../services/backup/device-link-channel.js';
import { FileFrameReader } from '../../services/backup/file-frames.js';

/** Size of the data chunks a device sends (idevicebackup2 reads any size in 32 KiB pieces). */
const UPLOAD_CHUNK = 256 * 1024;

/** A data chunk's head: u32 length + 1, then the code 0x0C. */
const CHUNK_HEAD = 5;

/** Chunk buffers of a streamed file: one being read, the others going out. */
const STREAM_BUFFERS = 3;

/** A fixed set of equal buffers, lent and given back; `take()` waits while all are lent. */
class ChunkPool {
  readonly #free: Buffer[] = [];
  readonly #waiting: ((b: Buffer) => void)[] = [];

  constructor(count: number, size: number) {
    for (let i = 0; i < count; i++) this.#free.push(Buffer.allocUnsafeSlow(size));
  }

  take(): Promise<Buffer> {
    const b = this.#free.pop();
    return b ? Promise.resolve(b) : new Promise((resolve) => this.#waiting.push(resolve));
  }

  give(b: Buffer): void {
    const w = this.#waiting.shift();
    if (w) w(b);
    else this.#free.push(b);
  }
}

/** One file to upload. */
export interface UploadItem {
  /** The device's own name for it (informational). */
  deviceName: string;
  /** Where the host stores it, relative to its backup directory. */
  backupPath: string;
  /** The local file to send. */
  path: string;
  /** Its size as last seen: a file this small is read ahead and sent in one write (file-frames.ts). */
  size?: number;
}

/** What an upload sent for one file: its size and SHA-1 as read, or the reason it could not be read. */
export type UploadResult = { ok: true; size: number; digest: Buffer } | { ok: false; reason: string };

/** A file the host sent: where it was written locally and how many bytes it had. */
export interface DownloadResult {
  size: number;
  digest: Buffer;
}

export class HostFiles {
  readonly #ch: DeviceLinkChannel;
  readonly #chunks = new ChunkPool(STREAM_BUFFERS, CHUNK_HEAD + UPLOAD_CHUNK);

  constructor(channel: DeviceLinkChannel) {
    this.#ch = channel;
  }

  async #status(what: string, allowMulti = false): Promise<DeviceLinkStatus> {
    const st = decodeStatusResponse(await this.#ch.receive());
    if (st.code !== 0 && !(allowMulti && st.code === DL_STATUS_MULTI)) {
      throw new MuxwireError('MUXWIRE_ERR_BACKUP', `host refused ${what}: ${st.text ?? `status ${st.code}`}`, { detail: st.code });
    }
    return st;
  }

  /** Free bytes in the host's backup directory. */
  async freeDiskSpace(): Promise<number> {
    await this.#ch.send(['DLMessageGetFreeDiskSpace']);
    return plistNumber((await this.#status('GetFreeDiskSpace')).value) ?? 0;
  }

  async createDirectory(path: string, progress = 0): Promise<void> {
    await this.#ch.send(['DLMessageCreateDirectory', path, dlProgress(progress)]);
    await this.#status(`CreateDirectory ${path}`);
  }

  /** The host's listing of `path`: name → {DLFileType, DLFileSize, DLFileModificationDate}. */
  async contentsOfDirectory(path: string): Promise<PlistDict> {
    await this.#ch.send(['DLContentsOfDirectory', path]);
    const st = await this.#status(`ContentsOfDirectory ${path}`);
    return isPlistDict(st.value) ? st.value : {};
  }

  /** Removes files or whole directories (missing ones are fine, as on the host). */
  async removeItems(paths: string[], progress = 0): Promise<void> {
    if (paths.length === 0) return;
    await this.#ch.send(['DLMessageRemoveItems', paths, {}, dlProgress(progress)]);
    await this.#status('RemoveItems');
  }

  /** Renames `from → to` for each pair, replacing what is at `to`. */
  async moveItems(moves: Map<string, string>, progress = 0): Promise<void> {
    if (moves.size === 0) return;
    await this.#ch.send(['DLMessageMoveItems', Object.fromEntries(moves), {}, dlProgress(progress)]);
    await this.#status('MoveItems');
  }

  /**
   * Uploads files: small ones read ahead and sent whole in one write each, larger ones streamed in
   * {@link UPLOAD_CHUNK} pieces (never a whole large file in memory), `onBytes` after each piece. A
   * file that cannot be read is ended with the device's error code; the host then holds an empty
   * file there, which the caller must not list in its manifest.
   */
  async uploadFiles(items: UploadItem[], totalBytes: number, progress: number, onBytes?: (n: number) => void): Promise<UploadResult[]> {
    const ch = this.#ch;
    await ch.send(['DLMessageUploadFiles', {}, dlProgress(progress), totalBytes]);
    const results: UploadResult[] = [];
    const names = items.map((item) => Buffer.concat([encodeFileName(item.deviceName), encodeFileName(item.backupPath)]));
    const frames = new FileFrameReader(items.map((item, i) => ({ path: item.path, names: names[i]!, ...(item.size !== undefined ? { size: item.size } : {}) })));
    for (const [i, item] of items.entries()) {
      const f = await frames.next();
      if (f.kind === 'whole') {
        await ch.write(f.frame);
        onBytes?.(f.size);
        results.push({ ok: true, size: f.size, digest: f.digest });
        continue;
      }
      if (f.kind === 'failed') {
        await ch.write(Buffer.concat([names[i]!, encodeFileEnd(DL_CODE_ERROR_REMOTE, f.reason)]));
        results.push({ ok: false, reason: f.reason });
        continue;
      }
      await ch.write(names[i]!);
      const hash = createHash('sha1');
      let size = 0;
      let failure: string | undefined;
      try {
        await this.#streamFile(item.path, (data) => {
          hash.update(data);
          size += data.length;
          onBytes?.(data.length);
        });
      } catch (err) {
        if (err instanceof MuxwireError) throw err;
        failure = (err as Error).message;
      }
      if (failure !== undefined && size > 0) {
        // The host has part of the file; ending it with "success" would pass it off as whole.
        throw new MuxwireError('MUXWIRE_ERR_IO', `${item.deviceName} could not be read to the end: ${failure}`);
      }
      await ch.write(failure === undefined ? encodeFileEnd() : encodeFileEnd(DL_CODE_ERROR_REMOTE, failure));
      results.push(failure === undefined ? { ok: true, size, digest: hash.digest() } : { ok: false, reason: failure });
    }
    await ch.write(encodeFileStreamEnd());
    await this.#status('UploadFiles');
    return results;
  }

  /**
   * Sends the file at `path` as data chunks, {@link UPLOAD_CHUNK} bytes each, read into buffers of
   * {@link #chunks} that are used again once the connection let go of them (its write callback:
   * the mux copied them into packets), the next chunk being read while one goes out. A large file
   * then costs no new memory per chunk, and the collector no full collection every few MiB.
   * `onData` sees each chunk's data before it is sent. Errors are the file system's, or the
   * connection's (MuxwireError).
   */
  async #streamFile(path: string, onData: (data: Buffer) => void): Promise<void> {
    const ch = this.#ch;
    const fh = await open(path, 'r');
    let position = 0;
    /** The next chunk in a pool buffer (`buf`), head included (`chunk`); undefined at the end. */
    const readChunk = async (): Promise<{ buf: Buffer; chunk: Buffer } | undefined> => {
      const buf = await this.#chunks.take();
      try {
        const { bytesRead } = await fh.read(buf, CHUNK_HEAD, UPLOAD_CHUNK, position);
        if (bytesRead === 0) {
          this.#chunks.give(buf);
          return undefined;
        }
        position += bytesRead;
        buf.writeUInt32BE(bytesRead + 1, 0);
        buf[4] = DL_CODE_FILE_DATA;
        return { buf, chunk: buf.subarray(0, CHUNK_HEAD + bytesRead) };
      } catch (err) {
        this.#chunks.give(buf);
        throw err;
      }
    };
    let next = readChunk();
    try {
      for (let got = await next; got !== undefined; got = await next) {
        next = readChunk();
        const { buf, chunk } = got;
        onData(chunk.subarray(CHUNK_HEAD));
        await ch.write(chunk, () => this.#chunks.give(buf));
      }
    } finally {
      // After a failed write a read may still be under way (or waiting for a buffer the dead
      // connection keeps): not waited for; its buffer comes back when it ends, its error is moot.
      next.catch(() => undefined);
      await fh.close();
    }
  }

  /**
   * Asks the host for files and writes each to `localPath(name)`. Resolves with name → result for
   * the files the host had; missing ones are absent (the host reports them in a Multi status).
   */
  async downloadFiles(paths: string[], localPath: (name: string) => string, progress = 0, onBytes?: (n: number) => void): Promise<Map<string, DownloadResult>> {
    const done = new Map<string, DownloadResult>();
    if (paths.length === 0) return done;
    await this.#ch.send(['DLMessageDownloadFiles', paths, {}, dlProgress(progress)]);
    let current: { name: string; fh: Awaited<ReturnType<typeof open>>; size: number; hash: ReturnType<typeof createHash> } | undefined;
    try {
      await this.#ch.receiveFiles(1, async (e) => {
        switch (e.kind) {
          case 'file': {
            const name = e.names[0]!;
            if (!paths.includes(name)) throw new MuxwireError('MUXWIRE_ERR_BAD_MESSAGE', `host sent ${name}, which was not asked for`);
            current = { name, fh: await open(localPath(name), 'w', 0o600), size: 0, hash: createHash('sha1') };
            return;
          }
          case 'data':
            if (!current) throw new MuxwireError('MUXWIRE_ERR_BAD_MESSAGE', 'file data before a file name');
            current.hash.update(e.data);
            current.size += e.data.length;
            await current.fh.write(e.data);
            onBytes?.(e.data.length);
            return;
          case 'end': {
            const c = current;
            current = undefined;
            if (!c) throw new MuxwireError('MUXWIRE_ERR_BAD_MESSAGE', 'end of file before a file name');
            await c.fh.close();
            if (e.ok) done.set(c.name, { size: c.size, digest: c.hash.digest() });
            return;
          }
        }
      });
    } finally {
      await current?.fh.close();
    }
    await this.#status('DownloadFiles', true);
    return done;
  }
}
