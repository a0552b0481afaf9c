/**
 * The host side of mobilebackup2: runs a backup or a restore of one device through any
 * usbmuxd-compatible daemon (or embedded mode), writing the directory layout idevicebackup2 writes
 * (`<dir>/<UDID>/Info.plist`, Manifest.db, Manifest.plist, Status.plist, `ab/ab12…`), so either tool
 * reads the other's backups.
 *
 * The device drives the operation: after `Backup` or `Restore` it sends DLMessage* requests
 * (upload these files, send me those, make a directory, move, remove, list, free space) and this
 * side carries them out in the backup directory, until a DLMessageProcessMessage gives the result.
 * Uploaded files are written to a temporary name and renamed only when the device ends them
 * whole, so no partial file is ever taken for a whole one. Every path the device names is checked
 * to stay inside the backup directory.
 *
 * Around it, as idevicebackup2 does: a lockdown session, notification_proxy posts
 * (`syncWillStart`, `syncLockRequest`, `syncDidStart`, `syncDidFinish`) and the exclusive AFC lock
 * on `/com.apple.itunes.lock_sync`, so other sync tools see the device busy.
 */
import { EventEmitter } from 'node:events';
import { createReadStream } from 'node:fs';
import { cp, mkdir, readFile, readdir, rename, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { makeDirectory } from '../../make-directory.js';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import type { Duplex } from 'node:stream';
import { MuxwireError, toMuxwireError } from '../../errors.js';
import { PlistReal, decodePlist, encodeXmlPlist, isPlistDict } from '../../protocol/plist.js';
import type { PlistDict, PlistValue } from '../../protocol/plist.js';
import {
  DL_CODE_ERROR_LOCAL,
  DL_MOBILEBACKUP2_VERSION,
  DL_STATUS_MULTI,
  dlProcessMessage,
  dlStatusResponse,
  encodeDataChunkHead,
  encodeFileEnd,
  encodeFileName,
  encodeFileStreamEnd,
  plistNumber,
  processMessageDict,
} from '../../protocol/device-link.js';
import type { DeviceLinkMessage } from '../../protocol/device-link.js';
import { PlistChannel } from '../../lockdown/plist-channel.js';
import { openLockdown, startService } from '../../client/device-services.js';
import type { DeviceMuxer, LockdownHandle } from '../../client/device-services.js';
import type { DeviceInfo } from '../../client/device-info.js';
import { AfcClient } from '../afc/afc-client.js';
import { DeviceLinkChannel } from './device-link-channel.js';
import { listBackupApps } from './app-list.js';
import { UploadWriter } from './upload-writer.js';
import type { BackupApps } from './app-list.js';

/** Progress of a running operation. */
export interface BackupProgress {
  /** What the device is doing now (the DLMessage name without its prefix, e.g. `UploadFiles`). */
  step: string;
  /** Files received (backup) or sent (restore) so far. */
  files: number;
  /** Bytes received or sent so far. */
  bytes: number;
  /** The device's overall percentage, 0–100. */
  percent: number;
}

/** The outcome of a finished operation. */
export interface BackupResult {
  udid: string;
  directory: string;
  files: number;
  bytes: number;
}

/** Options of {@link BackupClient.backup}. */
export interface BackupOptions {
  /** Ask for a full backup even when a previous snapshot exists. */
  full?: boolean;
  signal?: AbortSignal;
}

/** Options of {@link BackupClient.restore}. */
export interface RestoreOptions {
  /** Ask the device to reboot when done (default true, as idevicebackup2). */
  reboot?: boolean;
  /** Restore the backup of another device (`<dir>/<sourceUdid>`); default the device's own. */
  sourceUdid?: string;
  signal?: AbortSignal;
}

const NP_SERVICE = 'com.apple.mobile.notification_proxy';
const MB2_SERVICE = 'com.apple.mobilebackup2';
const LOCK_FILE = '/com.apple.itunes.lock_sync';
const LOCK_ATTEMPTS = 50;
const LOCK_WAIT_MS = 200;
const CHUNK = 256 * 1024;
/** A progress event at least every this many bytes moved. */
const PROGRESS_BYTES = 1024 * 1024;

/**
 * Backs up and restores one device. Emits `progress` ({@link BackupProgress}) while an operation
 * runs; `progress()` gives the same as an async iterator that ends with the operation.
 */
export class BackupClient extends EventEmitter {
  readonly #mux: DeviceMuxer;
  readonly #device: DeviceInfo;

  constructor(mux: DeviceMuxer, device: DeviceInfo) {
    super();
    this.#mux = mux;
    this.#device = device;
  }

  /**
   * Progress events as an async iterator that ends when the operation does (or when `signal`
   * aborts). Every event emitted after the call is delivered, in order, even if the consumer is
   * slower than the operation; they are small, and one operation emits at most one per MiB moved
   * and one per file.
   */
  async *progress(signal?: AbortSignal): AsyncGenerator<BackupProgress> {
    const queue: BackupProgress[] = [];
    let ended = false;
    let wake: (() => void) | undefined;
    const onProgress = (p: BackupProgress): void => {
      queue.push(p);
      wake?.();
    };
    const onEnd = (): void => {
      ended = true;
      wake?.();
    };
    this.on('progress', onProgress);
    this.once('done', onEnd);
    signal?.addEventListener('abort', onEnd, { once: true });
    try {
      for (;;) {
        while (queue.length > 0) yield queue.shift()!;
        if (ended) return;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
      }
    } finally {
      this.off('progress', onProgress);
      this.off('done', onEnd);
      signal?.removeEventListener('abort', onEnd);
    }
  }

  /** Backs the device up into `<dir>/<UDID>/` (created if missing). */
  async backup(dir: string, opts: BackupOptions = {}): Promise<BackupResult> {
    const udid = this.#device.udid;
    await makeDirectory(join(dir, udid));
    return this.#run(dir, opts.signal, async (lockdown, mb2, afc) => {
      await writeInfoPlist(join(dir, udid, 'Info.plist'), udid, lockdown, await listBackupApps(this.#mux, lockdown), afc!);
      await mb2.send(
        dlProcessMessage({
          MessageName: 'Backup',
          TargetIdentifier: udid,
          ...(opts.full ? { Options: { ForceFullBackup: true } } : {}),
        }),
      );
    });
  }

  /** Restores `<dir>/<sourceUdid or UDID>/` onto the device. */
  async restore(dir: string, opts: RestoreOptions = {}): Promise<BackupResult> {
    const udid = this.#device.udid;
    const source = opts.sourceUdid ?? udid;
    // As idevicebackup2: only a snapshot whose Status.plist says "finished" is restored.
    const status = await readFile(join(dir, source, 'Status.plist')).then(decodePlist, () => undefined);
    if (!isPlistDict(status) || status.SnapshotState !== 'finished') {
      throw new MuxwireError('MUXWIRE_ERR_BAD_MANIFEST', `${join(dir, source)} holds no finished backup (Status.plist missing or not finished)`);
    }
    return this.#run(dir, opts.signal, async (_lockdown, mb2) => {
      await mb2.send(
        dlProcessMessage({
          MessageName: 'Restore',
          TargetIdentifier: udid,
          SourceIdentifier: source,
          Options: {
            RestoreSystemFiles: true,
            RestoreShouldReboot: opts.reboot !== false,
            RestoreDontCopyBackup: true,
            RestorePreserveSettings: true,
          },
        }),
      );
    });
  }

  async #run(
    dir: string,
    signal: AbortSignal | undefined,
    request: (lockdown: LockdownHandle, mb2: DeviceLinkChannel, afc: AfcClient) => Promise<void>,
  ): Promise<BackupResult> {
    signal?.throwIfAborted();
    const mux = this.#mux;
    const udid = this.#device.udid;
    const lockdown = await openLockdown(mux, this.#device, { label: 'muxwire-backup' });
    const opened: Duplex[] = [];
    let afc: AfcClient | undefined;
    let lock: number | undefined;
    const onAbort = (): void => {
      for (const s of opened) s.destroy(new MuxwireError('MUXWIRE_ERR_ABORTED', 'the operation was aborted'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const post = async (name: string): Promise<void> => {
      const stream = await startService(mux, lockdown, NP_SERVICE);
      const np = new PlistChannel(stream, { onMessage: () => undefined, onClose: () => undefined });
      np.send({ Command: 'PostNotification', Name: name });
      np.close(true);
    };
    try {
      const encrypted = await lockdown.lockdown.getValue({ domain: 'com.apple.mobile.backup', key: 'WillEncrypt' }).catch(() => false);
      if (encrypted === true) throw new MuxwireError('MUXWIRE_ERR_BACKUP', 'the device encrypts its backups, which muxwire does not support yet');
      const afcStream = await startService(mux, lockdown, 'com.apple.afc');
      opened.push(afcStream);
      afc = new AfcClient(afcStream);
      const mb2Stream = await startService(mux, lockdown, MB2_SERVICE);
      opened.push(mb2Stream);
      const mb2 = new DeviceLinkChannel(mb2Stream);
      await versionExchange(mb2);
      await post('com.apple.itunes-mobdev.syncWillStart');
      lock = await afc.open(LOCK_FILE, 'r+');
      await post('com.apple.itunes-mobdev.syncLockRequest');
      for (let i = 0; ; i++) {
        try {
          await afc.lock(lock, 'exclusive');
          break;
        } catch (err) {
          if (i >= LOCK_ATTEMPTS) throw new MuxwireError('MUXWIRE_ERR_BUSY', 'another host holds the device\'s sync lock', { cause: err });
          await new Promise((r) => setTimeout(r, LOCK_WAIT_MS));
          signal?.throwIfAborted();
        }
      }
      await post('com.apple.itunes-mobdev.syncDidStart');
      await request(lockdown, mb2, afc);
      const tally = await new DeviceRequests(mb2, dir, (p) => this.emit('progress', p)).serve();
      mb2.close();
      return { udid, directory: join(dir, udid), ...tally };
    } catch (err) {
      if (signal?.aborted) throw new MuxwireError('MUXWIRE_ERR_ABORTED', 'the operation was aborted', { cause: err });
      const e = toMuxwireError(err, 'MUXWIRE_ERR_BACKUP');
      if (['MUXWIRE_ERR_IO', 'MUXWIRE_ERR_CLOSED', 'MUXWIRE_ERR_CONN_RESET', 'MUXWIRE_ERR_NO_DEVICE'].includes(e.code)) {
        // The device went away (unplugged, reset): say so plainly; its finished snapshot is untouched.
        throw new MuxwireError('MUXWIRE_ERR_CLOSED', `the connection to ${udid} ended midway (${e.message}); the last finished snapshot is unchanged`, { cause: e });
      }
      throw e;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.emit('done');
      if (afc && lock !== undefined && !signal?.aborted) {
        await afc.lock(lock, 'unlock').catch(() => undefined);
        await afc.close(lock).catch(() => undefined);
        await post('com.apple.itunes-mobdev.syncDidFinish').catch(() => undefined);
      }
      for (const s of opened) s.destroy();
      lockdown.lockdown.close();
    }
  }
}

/** The host's half of the DeviceLink version exchange, then Hello with 2.0 and 2.1. */
async function versionExchange(ch: DeviceLinkChannel): Promise<void> {
  const first = await ch.receive();
  const major = plistNumber(first.args[0]);
  if (first.name !== 'DLMessageVersionExchange' || major === undefined || major > DL_MOBILEBACKUP2_VERSION.major) {
    throw new MuxwireError('MUXWIRE_ERR_BACKUP', `the device offers DeviceLink ${String(first.args[0])}, this host speaks ${DL_MOBILEBACKUP2_VERSION.major}`);
  }
  await ch.send(['DLMessageVersionExchange', 'DLVersionsOk', DL_MOBILEBACKUP2_VERSION.major]);
  const ready = await ch.receive();
  if (ready.name !== 'DLMessageDeviceReady') throw new MuxwireError('MUXWIRE_ERR_BACKUP', `expected DLMessageDeviceReady, got ${ready.name}`);
  await ch.send(dlProcessMessage({ MessageName: 'Hello', SupportedProtocolVersions: [new PlistReal(2.0), new PlistReal(2.1)] }));
  const hello = processMessageDict(await ch.receive());
  if (plistNumber(hello.ErrorCode) !== 0) throw new MuxwireError('MUXWIRE_ERR_BACKUP', `the device shares no mobilebackup2 protocol version (ErrorCode ${String(hello.ErrorCode)})`);
}

/** Writes Info.plist as idevicebackup2 does, from the device's lockdown values (atomically). */
/** Files of the media partition Info.plist carries, as idevicebackup2 reads them. */
const ITUNES_FILES = [
  'ApertureAlbumPrefs', 'IC-Info.sidb', 'IC-Info.sidv', 'PhotosFolderAlbums', 'PhotosFolderName', 'PhotosFolderPrefs',
  'VoiceMemos.plist', 'iPhotoAlbumPrefs', 'iTunesApplicationIDs', 'iTunesPrefs', 'iTunesPrefs.plist',
];
/** Largest such file taken into Info.plist (they are small; a bound on what a device can make us hold). */
const MAX_INFO_FILE = 16 * 1024 * 1024;

/** A small AFC file's content, or undefined when it is absent, not a file, or too large. */
async function afcSmallFile(afc: AfcClient, path: string): Promise<Buffer | undefined> {
  const st = await afc.stat(path).catch(() => undefined);
  if (!st || st.type !== 'file' || st.size > MAX_INFO_FILE) return undefined;
  const h = await afc.open(path, 'r');
  try {
    const parts: Buffer[] = [];
    for (let got = 0; got < st.size; ) {
      const b = await afc.read(h, Math.min(1024 * 1024, st.size - got));
      if (b.length === 0) break;
      parts.push(b);
      got += b.length;
    }
    return Buffer.concat(parts);
  } finally {
    await afc.close(h).catch(() => undefined);
  }
}

async function writeInfoPlist(path: string, udid: string, lockdown: LockdownHandle, apps: BackupApps, afc: AfcClient): Promise<void> {
  const all = await lockdown.lockdown.getValue({});
  const v: PlistDict = isPlistDict(all) ? all : {};
  const itunes = await lockdown.lockdown.getValue({ domain: 'com.apple.iTunes' }).catch(() => ({}));
  const minItunes = await lockdown.lockdown.getValue({ domain: 'com.apple.mobile.iTunes', key: 'MinITunesVersion' }).catch(() => '10.0.1');
  const itunesFiles: PlistDict = {};
  for (const name of ITUNES_FILES) {
    const data = await afcSmallFile(afc, `/iTunes_Control/iTunes/${name}`);
    if (data) itunesFiles[name] = data;
  }
  const info: PlistDict = {
    Applications: apps.applications,
    'Build Version': v.BuildVersion,
    'Device Name': v.DeviceName,
    'Display Name': v.DeviceName,
    GUID: randomBytes(16).toString('hex').toUpperCase(),
    ICCID: v.IntegratedCircuitCardIdentity,
    IMEI: v.InternationalMobileEquipmentIdentity,
    'Installed Applications': apps.installed,
    'Last Backup Date': new Date(),
    MEID: v.MobileEquipmentIdentifier,
    'Phone Number': typeof v.PhoneNumber === 'string' ? v.PhoneNumber : undefined,
    'Product Type': v.ProductType,
    'Product Version': v.ProductVersion,
    'Serial Number': v.SerialNumber,
    'Target Identifier': udid,
    'Target Type': 'Device',
    'Unique Identifier': udid.toUpperCase(),
    'iBooks Data 2': await afcSmallFile(afc, '/Books/iBooksData2.plist'),
    'iTunes Files': itunesFiles,
    'iTunes Settings': isPlistDict(itunes) ? itunes : {},
    'iTunes Version': typeof minItunes === 'string' ? minItunes : '10.0.1',
  };
  const tmp = `${path}.muxwire-part-${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, encodeXmlPlist(info));
  await rename(tmp, path);
}

/** A path the device names, inside `dir`; MUXWIRE_ERR_BAD_MESSAGE for anything that could leave it. */
export function backupDirPath(dir: string, rel: string): string {
  const parts = rel.split('/').filter((p) => p !== '');
  if (rel.startsWith('/') || parts.length === 0 || parts.some((p) => p === '.' || p === '..' || p.includes('\0') || p.includes('\\'))) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_MESSAGE', `the device named an unsafe path: ${JSON.stringify(rel)}`);
  }
  return join(dir, ...parts);
}

/** Moves of one DLMessageMoveItems done at once when they are independent. */
const MOVE_PARALLEL = 16;

/**
 * Renames `from` to `to`, replacing what is there as idevicebackup2 does: a file is replaced by
 * the rename itself (atomically: the old one stays whole until the new one takes its name); a
 * directory, or a file where a directory is, is removed first.
 */
async function moveReplacing(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'EISDIR' && code !== 'ENOTDIR') throw err;
    await rm(to, { recursive: true, force: true });
    await rename(from, to);
  }
}

/** True when no path is another's, or inside another's. */
function independentPaths(paths: string[]): boolean {
  const all = new Set(paths);
  if (all.size !== paths.length) return false;
  for (const p of paths) {
    for (let up = dirname(p); up !== dirname(up); up = dirname(up)) if (all.has(up)) return false;
  }
  return true;
}

function errnoCode(err: unknown): number {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' ? -6 : code === 'EEXIST' ? -7 : -1;
}

/** Carries out the device's DLMessage* requests in the backup directory until the result comes. */
class DeviceRequests {
  readonly #ch: DeviceLinkChannel;
  readonly #dir: string;
  readonly #emit: (p: BackupProgress) => void;
  #files = 0;
  #bytes = 0;
  #percent = 0;

  constructor(ch: DeviceLinkChannel, dir: string, emit: (p: BackupProgress) => void) {
    this.#ch = ch;
    this.#dir = dir;
    this.#emit = emit;
  }

  #progress(step: string): void {
    this.#emit({ step, files: this.#files, bytes: this.#bytes, percent: this.#percent });
  }

  /** Counts bytes, with a progress event at every MiB boundary crossed. */
  #addBytes(n: number, step: string): void {
    const before = Math.floor(this.#bytes / PROGRESS_BYTES);
    this.#bytes += n;
    if (Math.floor(this.#bytes / PROGRESS_BYTES) !== before) this.#progress(step);
  }

  async serve(): Promise<{ files: number; bytes: number }> {
    for (;;) {
      const msg = await this.#ch.receive();
      const step = msg.name.replace(/^DL(Message)?/, '');
      const pct = plistNumber(msg.args[msg.name === 'DLMessageUploadFiles' ? 1 : 2]);
      if (pct !== undefined && pct > 0) this.#percent = Math.min(100, pct);
      switch (msg.name) {
        case 'DLMessageProcessMessage': {
          const dict = processMessageDict(msg);
          const code = plistNumber(dict.ErrorCode) ?? -1;
          if (code !== 0) {
            const text = typeof dict.ErrorDescription === 'string' ? dict.ErrorDescription : `ErrorCode ${code}`;
            throw new MuxwireError('MUXWIRE_ERR_BACKUP', `the device reports: ${text}`, { detail: code });
          }
          this.#percent = 100;
          this.#progress('Finished');
          return { files: this.#files, bytes: this.#bytes };
        }
        case 'DLMessageDisconnect':
          throw new MuxwireError('MUXWIRE_ERR_BACKUP', 'the device disconnected before reporting a result');
        case 'DLMessageUploadFiles':
          await this.#receiveFiles();
          break;
        case 'DLMessageDownloadFiles':
          await this.#sendFiles(msg);
          break;
        default:
          await this.#simple(msg);
      }
      this.#progress(step);
    }
  }

  /** The requests answered with one status and no file stream. */
  async #simple(msg: DeviceLinkMessage): Promise<void> {
    const ch = this.#ch;
    const dir = this.#dir;
    try {
      switch (msg.name) {
        case 'DLMessageGetFreeDiskSpace': {
          const fs = await statfs(dir);
          return ch.send(dlStatusResponse(0, undefined, fs.bavail * fs.bsize));
        }
        case 'DLMessageCreateDirectory':
          await mkdir(backupDirPath(dir, String(msg.args[0])), { recursive: true });
          return ch.send(dlStatusResponse(0));
        case 'DLContentsOfDirectory': {
          const path = backupDirPath(dir, String(msg.args[0]));
          const listing: PlistDict = {};
          for (const name of await readdir(path).catch(() => [] as string[])) {
            const st = await stat(join(path, name)).catch(() => undefined);
            if (!st) continue;
            listing[name] = {
              DLFileType: st.isDirectory() ? 'DLFileTypeDirectory' : st.isFile() ? 'DLFileTypeRegular' : 'DLFileTypeUnknown',
              DLFileSize: st.size,
              DLFileModificationDate: st.mtime,
            };
          }
          return ch.send(dlStatusResponse(0, undefined, listing));
        }
        case 'DLMessageMoveItems':
        case 'DLMessageMoveFiles': {
          const moves = msg.args[0];
          if (isPlistDict(moves)) {
            const pairs = Object.entries(moves).flatMap(([from, to]) => (typeof to === 'string' ? [[backupDirPath(dir, from), backupDirPath(dir, to)] as const] : []));
            // Moves that touch no common path (a snapshot's files, always) run MOVE_PARALLEL at a
            // time; any others one after the other, in the device's order.
            const width = independentPaths(pairs.flat()) ? MOVE_PARALLEL : 1;
            for (let i = 0; i < pairs.length; i += width) await Promise.all(pairs.slice(i, i + width).map(([from, to]) => moveReplacing(from, to)));
          }
          return ch.send(dlStatusResponse(0, undefined, {}));
        }
        case 'DLMessageRemoveItems':
        case 'DLMessageRemoveFiles': {
          const paths = Array.isArray(msg.args[0]) ? msg.args[0] : [];
          for (const p of paths) if (typeof p === 'string') await rm(backupDirPath(dir, p), { recursive: true, force: true });
          return ch.send(dlStatusResponse(0, undefined, {}));
        }
        case 'DLMessageCopyItem':
          await cp(backupDirPath(dir, String(msg.args[0])), backupDirPath(dir, String(msg.args[1])), { recursive: true });
          return ch.send(dlStatusResponse(0, undefined, {}));
        default:
          return ch.send(dlStatusResponse(-1, `${msg.name} is not supported`));
      }
    } catch (err) {
      if (err instanceof MuxwireError && err.code !== 'MUXWIRE_ERR_BAD_MESSAGE') throw err;
      return ch.send(dlStatusResponse(errnoCode(err), (err as Error).message));
    }
  }

  /**
   * DLMessageUploadFiles: each file to a temporary name, renamed when it ends whole, several files
   * on their way to disk at once while the stream is read on (upload-writer.ts).
   */
  async #receiveFiles(): Promise<void> {
    const writer = new UploadWriter();
    try {
      await this.#ch.receiveFiles(2, async (e) => {
        if (e.kind === 'file') {
          await writer.begin(backupDirPath(this.#dir, e.names[1]!));
        } else if (e.kind === 'data') {
          await writer.data(e.data);
          this.#addBytes(e.data.length, 'UploadFiles');
        } else if (e.kind === 'end') {
          writer.end(e.ok);
          if (e.ok) {
            this.#files++;
            this.#progress('UploadFiles');
          }
        }
      });
      await writer.finish();
    } catch (err) {
      await writer.abort();
      throw err;
    }
    await this.#ch.send(dlStatusResponse(0, undefined, {}));
  }

  /** DLMessageDownloadFiles: each file in chunks; missing ones reported in a Multi status. */
  async #sendFiles(msg: DeviceLinkMessage): Promise<void> {
    const ch = this.#ch;
    const paths = Array.isArray(msg.args[0]) ? msg.args[0] : [];
    const errors: PlistDict = {};
    for (const p of paths) {
      if (typeof p !== 'string') continue;
      await ch.write(encodeFileName(p));
      let sent = 0;
      try {
        for await (const chunk of createReadStream(backupDirPath(this.#dir, p), { highWaterMark: CHUNK })) {
          const data = chunk as Buffer;
          await ch.write(encodeDataChunkHead(data.length));
          await ch.write(data);
          sent += data.length;
          this.#addBytes(data.length, 'DownloadFiles');
        }
        await ch.write(encodeFileEnd());
        this.#files++;
        this.#progress('DownloadFiles');
      } catch (err) {
        if (err instanceof MuxwireError && err.code !== 'MUXWIRE_ERR_BAD_MESSAGE') throw err;
        if (sent > 0) throw toMuxwireError(err, 'MUXWIRE_ERR_IO', `${p} could not be read to the end`);
        const text = (err as Error).message;
        errors[p] = { DLFileErrorString: text, DLFileErrorCode: errnoCode(err) };
        await ch.write(encodeFileEnd(DL_CODE_ERROR_LOCAL, text));
      }
    }
    await ch.write(encodeFileStreamEnd());
    const failed = Object.keys(errors).length > 0;
    await ch.send(failed ? dlStatusResponse(DL_STATUS_MULTI, 'Multi status', errors as PlistValue) : dlStatusResponse(0, undefined, {}));
  }
}
