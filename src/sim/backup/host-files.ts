/**
 * The device's view of the host's backup directory: the DeviceLink requests a device sends while
 * it runs a backup or restore (UploadFiles, DownloadFiles, CreateDirectory, ContentsOfDirectory,
 * MoveItems, RemoveItems, GetFreeDiskSpace), each answered by one DLMessageStatusResponse. Paths
 * are relative to the host's backup directory. A status other than 0 (or, for downloads, the
 * "Multi status" that lists missing files) is MUXWIRE_ERR_BACKUP with the host's text.
 */
import { createReadStream } from 'node:fs';
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
  encodeDataChunkHead,
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
        for await (const chunk of createReadStream(item.path, { highWaterMark: UPLOAD_CHUNK })) {
          const data = chunk as Buffer;
          hash.update(data);
          size += data.length;
          await ch.write(encodeDataChunkHead(data.length));
          await ch.write(data);
          onBytes?.(data.length);
        }
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
