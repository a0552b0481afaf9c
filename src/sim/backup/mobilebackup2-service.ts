/**
 * The simulated device's `com.apple.mobilebackup2`: DeviceLink version exchange, the `Hello`
 * protocol negotiation, and the device-driven backup and restore over the content tree
 * (content-tree.ts), in the modern layout (files named by SHA-1 of "<domain>-<path>" in two-hex
 * folders, Manifest.db, Manifest.plist, Status.plist). idevicebackup2 (libimobiledevice) is the
 * host this was checked against.
 *
 * ```
 * device                                   host
 *  [DLMessageVersionExchange, 300, 0]  →
 *                                       ←  [DLMessageVersionExchange, DLVersionsOk, 300]
 *  [DLMessageDeviceReady]              →
 *                                       ←  ProcessMessage {MessageName: Hello, SupportedProtocolVersions}
 *  ProcessMessage {Response, ErrorCode 0, ProtocolVersion}  →
 *                                       ←  ProcessMessage {MessageName: Backup|Restore|Info|List, TargetIdentifier, …}
 *  DL requests (uploads, downloads, moves, …) each answered by DLMessageStatusResponse
 *  ProcessMessage {ErrorCode, ErrorDescription}  →   (the result; the host then disconnects)
 * ```
 *
 * A backup keeps the host's previous snapshot whole until the new one is complete: changed files,
 * Manifest.db, Manifest.plist and Status.plist are uploaded into `<UDID>/Snapshot/` and only moved
 * into place once every upload succeeded, so a backup cut off midway (unplug, client killed) leaves
 * the last finished snapshot as it was, and the partial files only in `Snapshot/`, which the next
 * backup clears. A two-hex folder the host does not have yet is moved in as a whole. An incremental backup downloads the previous Manifest.db and Status.plist, lists
 * the host's two-hex folders, and uploads only files whose SHA-1 or size differ or whose data the
 * host no longer has; files gone from the device are removed from the snapshot.
 *
 * A restore downloads Manifest.db and every file it names into a staging folder inside the content
 * root, checks each against the manifest's size and digest, and only then puts them in place and
 * removes what the backup does not have, so a failed restore leaves the device's content as it was.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Duplex } from 'node:stream';
import { MuxwireError, toMuxwireError } from '../../errors.js';
import { log as rootLog, type Logger } from '../../log.js';
import { PlistReal, decodePlist, encodeBinaryPlist, encodeXmlPlist, isPlistDict } from '../../protocol/plist.js';
import type { PlistDict, PlistValue } from '../../protocol/plist.js';
import { DL_MOBILEBACKUP2_VERSION, dlProcessMessage, plistNumber, processMessageDict } from '../../protocol/device-link.js';
import { DeviceLinkChannel } from '../../services/backup/device-link-channel.js';
import {
  MANIFEST_FLAG_DIRECTORY,
  MANIFEST_FLAG_FILE,
  backupFileId,
  backupFilePath,
  readManifestDb,
  writeManifestDb,
} from '../../services/backup/manifest-db.js';
import type { ManifestEntry } from '../../services/backup/manifest-db.js';
import { DigestCache, STAGING_PREFIX, contentPath, walkContent } from './content-tree.js';
import type { ContentEntry } from './content-tree.js';
import { HostFiles } from './host-files.js';
import type { UploadItem } from './host-files.js';
import { manifestPlist, statusPlist } from './backup-plists.js';

/** The lockdown service name. */
export const MOBILEBACKUP2_SERVICE = 'com.apple.mobilebackup2';

/** mobilebackup2 protocol versions this device speaks, lowest first (idevicebackup2 offers 2.0, 2.1). */
export const MB2_PROTOCOL_VERSIONS = [2.0, 2.1];

/** ErrorCodes of the final ProcessMessage (MBErrorDomain-like numbers). */
export const MB2_ERROR_NO_COMMON_VERSION = 1;
export const MB2_ERROR_FAILED = 1;
export const MB2_ERROR_NO_SPACE = 105;
export const MB2_ERROR_UNSUPPORTED = 2;

/** Files per UploadFiles / DownloadFiles message. */
const BATCH = 512;

/** What the service needs from its device. */
export interface BackupServiceContext {
  /** The content tree, `<root>/<Domain>/<path>`. */
  root: string;
  udid: string;
  /** The default-domain lockdown values (for Manifest.plist). */
  lockdownValues: () => Promise<PlistDict>;
  /** Digests remembered across backups of this device. */
  digests: DigestCache;
  /** Called when a restore asks the device to reboot (the simulator only logs it). */
  onReboot?: () => void;
  log?: Logger;
}

/** Serves one mobilebackup2 connection until the host disconnects. */
export async function serveMobileBackup2(stream: Duplex, ctx: BackupServiceContext): Promise<void> {
  const log = ctx.log ?? rootLog.child({ svc: 'mobilebackup2' });
  const ch = new DeviceLinkChannel(stream);
  try {
    await ch.send(['DLMessageVersionExchange', DL_MOBILEBACKUP2_VERSION.major, DL_MOBILEBACKUP2_VERSION.minor]);
    const ok = await ch.receive();
    if (ok.name !== 'DLMessageVersionExchange' || ok.args[0] !== 'DLVersionsOk') {
      throw new MuxwireError('MUXWIRE_ERR_BAD_MESSAGE', `expected DLVersionsOk, got ${ok.name} ${String(ok.args[0])}`);
    }
    await ch.send(['DLMessageDeviceReady']);
    const session = new BackupSession(ch, ctx, log);
    for (;;) {
      const msg = await ch.receive();
      if (msg.name === 'DLMessageDisconnect') break;
      if (msg.name !== 'DLMessageProcessMessage') {
        log.debug(`ignoring ${msg.name} outside an operation`);
        continue;
      }
      await session.handle(processMessageDict(msg));
    }
  } catch (err) {
    const e = toMuxwireError(err, 'MUXWIRE_ERR_IO');
    if (connectionGone(e, ch)) log.info(`mobilebackup2: the host went away (${e.message})`);
    else log.warn(`mobilebackup2: ${e.message}`);
  } finally {
    ch.close();
  }
}

/** One connection's state: the negotiated version and the operation in progress. */
class BackupSession {
  readonly #ch: DeviceLinkChannel;
  readonly #host: HostFiles;
  readonly #ctx: BackupServiceContext;
  readonly #log: Logger;
  #version: number | undefined;

  constructor(ch: DeviceLinkChannel, ctx: BackupServiceContext, log: Logger) {
    this.#ch = ch;
    this.#host = new HostFiles(ch);
    this.#ctx = ctx;
    this.#log = log;
  }

  async handle(dict: PlistDict): Promise<void> {
    const name = dict.MessageName;
    if (name === 'Hello') return this.#hello(dict);
    if (this.#version === undefined) return this.#result(MB2_ERROR_FAILED, 'Hello must come first');
    const target = typeof dict.TargetIdentifier === 'string' ? dict.TargetIdentifier : this.#ctx.udid;
    const source = typeof dict.SourceIdentifier === 'string' ? dict.SourceIdentifier : target;
    const options = isPlistDict(dict.Options) ? dict.Options : {};
    if (!/^[0-9A-Fa-f-]{20,64}$/.test(target) || !/^[0-9A-Fa-f-]{20,64}$/.test(source)) {
      return this.#result(MB2_ERROR_FAILED, 'TargetIdentifier and SourceIdentifier must be device identifiers');
    }
    try {
      switch (name) {
        case 'Backup':
          await this.#backup(target, options.ForceFullBackup === true);
          return this.#result(0);
        case 'Restore':
          await this.#restore(source, options);
          return this.#result(0);
        case 'Info':
          return this.#result(0, undefined, await this.#info(source));
        case 'List':
          return this.#result(0, undefined, await this.#list(source));
        case 'Unback':
          await this.#unback(source);
          return this.#result(0);
        default:
          return this.#result(MB2_ERROR_UNSUPPORTED, `${String(name)} is not supported`);
      }
    } catch (err) {
      const e = toMuxwireError(err, 'MUXWIRE_ERR_IO');
      // A lost connection or broken framing ends the session; anything else is this operation's failure.
      if (connectionGone(e, this.#ch) || e.code === 'MUXWIRE_ERR_BAD_LENGTH') throw e;
      this.#log.warn(`${String(name)} failed: ${e.message}`);
      return this.#result(e.code === 'MUXWIRE_ERR_NO_SPACE' ? MB2_ERROR_NO_SPACE : MB2_ERROR_FAILED, e.message);
    }
  }

  /** Hello: the highest version both sides have; ErrorCode 1 when there is none. */
  async #hello(dict: PlistDict): Promise<void> {
    const offered = Array.isArray(dict.SupportedProtocolVersions)
      ? dict.SupportedProtocolVersions.map((v) => plistNumber(v)).filter((v): v is number => v !== undefined)
      : [];
    const common = MB2_PROTOCOL_VERSIONS.filter((v) => offered.includes(v));
    if (common.length === 0) {
      await this.#ch.send(dlProcessMessage({ MessageName: 'Response', ErrorCode: MB2_ERROR_NO_COMMON_VERSION }));
      return;
    }
    this.#version = Math.max(...common);
    await this.#ch.send(dlProcessMessage({ MessageName: 'Response', ErrorCode: 0, ProtocolVersion: new PlistReal(this.#version) }));
  }

  async #result(code: number, description?: string, content?: string): Promise<void> {
    const dict: PlistDict = { MessageName: 'Response', ErrorCode: code };
    if (description !== undefined) dict.ErrorDescription = description;
    if (content !== undefined) dict.Content = content;
    await this.#ch.send(dlProcessMessage(dict));
  }

  async #withWorkDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
    const dir = await mkdtemp(join(tmpdir(), 'muxwire-mb2-'));
    try {
      return await fn(dir);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** The previous snapshot's entries by fileID, when the host has a finished one. */
  async #previous(target: string, work: string): Promise<Map<string, ManifestEntry> | undefined> {
    const statusName = `${target}/Status.plist`;
    const dbName = `${target}/Manifest.db`;
    const local = (name: string): string => join(work, name === statusName ? 'prev-Status.plist' : 'prev-Manifest.db');
    const got = await this.#host.downloadFiles([statusName, dbName], local);
    if (!got.has(statusName) || !got.has(dbName)) return undefined;
    let status: PlistValue;
    try {
      status = decodePlist(await readFile(local(statusName)));
    } catch {
      return undefined;
    }
    if (!isPlistDict(status) || status.SnapshotState !== 'finished') return undefined;
    let rows: ManifestEntry[];
    try {
      rows = readManifestDb(local(dbName));
    } catch (err) {
      this.#log.info(`previous Manifest.db unreadable, backing up in full: ${(err as Error).message}`);
      return undefined;
    }
    // Only data the host still has, at the recorded size, counts as backed up.
    const sizes = new Map<string, number>();
    const prefixes = new Set(rows.filter((r) => r.flags === MANIFEST_FLAG_FILE).map((r) => r.fileID.slice(0, 2)));
    const top = await this.#host.contentsOfDirectory(target);
    for (const prefix of prefixes) {
      if (!isPlistDict(top[prefix])) continue;
      const listing = await this.#host.contentsOfDirectory(`${target}/${prefix}`);
      for (const [name, info] of Object.entries(listing)) {
        if (isPlistDict(info) && info.DLFileType === 'DLFileTypeRegular') sizes.set(name, plistNumber(info.DLFileSize) ?? -1);
      }
    }
    const out = new Map<string, ManifestEntry>();
    for (const r of rows) {
      if (r.flags === MANIFEST_FLAG_FILE && sizes.get(r.fileID) !== r.size) continue;
      out.set(r.fileID, r);
    }
    return out;
  }

  async #backup(target: string, forceFull: boolean): Promise<void> {
    const ctx = this.#ctx;
    const host = this.#host;
    await this.#withWorkDir(async (work) => {
      const content = await walkContent(ctx.root);
      // Read even for a forced full backup: what it lists and the device no longer has must go.
      const previous = await this.#previous(target, work);
      const full = forceFull || previous === undefined;
      const entries = new Map<string, ManifestEntry>();
      const toUpload: { entry: ContentEntry; fileID: string }[] = [];
      for (const c of content) {
        const fileID = backupFileId(c.domain, c.relativePath);
        const entry = manifestEntry(c, fileID);
        if (c.flags === MANIFEST_FLAG_FILE) {
          const prev = full ? undefined : previous?.get(fileID);
          if (prev?.digest && prev.size === Number(c.stat.size) && prev.digest.equals(await ctx.digests.digest(c.path, c.stat))) {
            entry.digest = prev.digest;
          } else {
            toUpload.push({ entry: c, fileID });
          }
        }
        entries.set(fileID, entry);
      }
      const uploadBytes = toUpload.reduce((n, u) => n + Number(u.entry.stat.size), 0);
      const free = await host.freeDiskSpace();
      if (free < uploadBytes) {
        throw new MuxwireError('MUXWIRE_ERR_NO_SPACE', `the host has ${free} bytes free, the backup needs ${uploadBytes}`);
      }
      this.#log.info(`${full ? 'full' : 'incremental'} backup to ${target}: ${toUpload.length} of ${content.length} entries to send, ${uploadBytes} bytes`);

      // Everything new goes into Snapshot/ first; the finished snapshot is not touched yet.
      const snap = `${target}/Snapshot`;
      await host.createDirectory(target);
      // The two-hex folders the host already has; the others are moved in whole at the end.
      const present = await host.contentsOfDirectory(target);
      await host.removeItems([snap]);
      await host.createDirectory(snap);
      const prefixes = [...new Set(toUpload.map((u) => u.fileID.slice(0, 2)))].sort();
      for (const p of prefixes) await host.createDirectory(`${snap}/${p}`);

      /** Folders of Snapshot/ holding a file that was left out (the host has an empty one there). */
      const leftOut = new Set<string>();
      let sent = 0;
      for (let i = 0; i < toUpload.length; i += BATCH) {
        const batch = toUpload.slice(i, i + BATCH);
        const items: UploadItem[] = batch.map((u) => ({
          deviceName: `${u.entry.domain}/${u.entry.relativePath}`,
          backupPath: `${snap}/${backupFilePath(u.fileID)}`,
          path: u.entry.path,
          size: Number(u.entry.stat.size),
        }));
        const results = await host.uploadFiles(items, uploadBytes, uploadBytes === 0 ? 100 : (sent / uploadBytes) * 90, (n) => (sent += n));
        results.forEach((r, k) => {
          const u = batch[k]!;
          const e = entries.get(u.fileID)!;
          if (!r.ok) {
            // Gone or unreadable since the walk: it is not in this snapshot.
            this.#log.info(`${u.entry.domain}/${u.entry.relativePath} left out: ${r.reason}`);
            entries.delete(u.fileID);
            leftOut.add(u.fileID.slice(0, 2));
            return;
          }
          e.size = r.size;
          e.digest = r.digest;
          ctx.digests.remember(u.entry.path, u.entry.stat, r.digest);
        });
      }

      const dbPath = join(work, 'Manifest.db');
      writeManifestDb(dbPath, entries.values());
      const lockdown = await ctx.lockdownValues();
      const manifestPath = join(work, 'Manifest.plist');
      const statusPath = join(work, 'Status.plist');
      await writeFile(manifestPath, encodeBinaryPlist(manifestPlist(lockdown, backupKeyBag(ctx.udid))));
      await writeFile(statusPath, encodeXmlPlist(statusPlist(full)));
      await host.uploadFiles(
        [
          { deviceName: 'Manifest.db', backupPath: `${snap}/Manifest.db`, path: dbPath },
          { deviceName: 'Manifest.plist', backupPath: `${snap}/Manifest.plist`, path: manifestPath },
          { deviceName: 'Status.plist', backupPath: `${snap}/Status.plist`, path: statusPath },
        ],
        0,
        92,
      );

      // Commit: data first, then the index, Status.plist last (it is what says "finished"). A folder
      // the host does not have yet moves as a whole (one rename instead of one per file, and no
      // CreateDirectory round trip); into one it has, file by file.
      const whole = prefixes.filter((p) => present[p] === undefined && !leftOut.has(p));
      const wholeSet = new Set(whole);
      for (let i = 0; i < whole.length; i += BATCH) {
        await host.moveItems(new Map(whole.slice(i, i + BATCH).map((p) => [`${snap}/${p}`, `${target}/${p}`])), 94);
      }
      for (const p of prefixes) if (!wholeSet.has(p)) await host.createDirectory(`${target}/${p}`);
      const uploaded = toUpload.filter((u) => entries.has(u.fileID) && !wholeSet.has(u.fileID.slice(0, 2)));
      for (let i = 0; i < uploaded.length; i += BATCH) {
        const moves = new Map(uploaded.slice(i, i + BATCH).map((u) => [`${snap}/${backupFilePath(u.fileID)}`, `${target}/${backupFilePath(u.fileID)}`]));
        await host.moveItems(moves, 94);
      }
      await host.moveItems(new Map([[`${snap}/Manifest.db`, `${target}/Manifest.db`], [`${snap}/Manifest.plist`, `${target}/Manifest.plist`]]), 96);
      await host.moveItems(new Map([[`${snap}/Status.plist`, `${target}/Status.plist`]]), 98);
      const gone = previous ? [...previous.values()].filter((p) => p.flags === MANIFEST_FLAG_FILE && !entries.has(p.fileID)) : [];
      for (let i = 0; i < gone.length; i += BATCH) {
        await host.removeItems(gone.slice(i, i + BATCH).map((p) => `${target}/${backupFilePath(p.fileID)}`), 99);
      }
      await host.removeItems([snap], 100);
    });
  }

  /** The rows of the Manifest.db of the host's backup `source`, downloaded into `work` first. */
  async #fetchManifest(source: string, work: string): Promise<ManifestEntry[]> {
    const dbName = `${source}/Manifest.db`;
    const got = await this.#host.downloadFiles([dbName], () => join(work, 'Manifest.db'));
    if (!got.has(dbName)) throw new MuxwireError('MUXWIRE_ERR_BAD_MANIFEST', `the host has no ${dbName}`);
    return readManifestDb(join(work, 'Manifest.db'));
  }

  async #restore(source: string, options: PlistDict): Promise<void> {
    const ctx = this.#ctx;
    const host = this.#host;
    await this.#withWorkDir(async (work) => {
      const rows = await this.#fetchManifest(source, work);
      // Every name is checked before anything is written.
      const planned = rows
        .filter((r) => r.flags === MANIFEST_FLAG_FILE || r.flags === MANIFEST_FLAG_DIRECTORY)
        .map((r) => {
          if (!/^[0-9a-f]{40}$/.test(r.fileID)) throw new MuxwireError('MUXWIRE_ERR_BAD_MANIFEST', `a fileID that is not 40 hex digits: ${r.fileID}`);
          return { row: r, path: contentPath(ctx.root, r.domain, r.relativePath) };
        });
      const files = planned.filter((p) => p.row.flags === MANIFEST_FLAG_FILE);
      const total = files.reduce((n, f) => n + f.row.size, 0);
      const staging = join(ctx.root, `${STAGING_PREFIX}restore-${randomBytes(6).toString('hex')}`);
      await mkdir(staging, { mode: 0o700 });
      try {
        let received = 0;
        for (let i = 0; i < files.length; i += BATCH) {
          const batch = files.slice(i, i + BATCH);
          const byName = new Map(batch.map((f) => [`${source}/${backupFilePath(f.row.fileID)}`, f]));
          const got2 = await host.downloadFiles([...byName.keys()], (name) => join(staging, byName.get(name)!.row.fileID), total === 0 ? 0 : (received / total) * 90, (n) => (received += n));
          for (const [name, f] of byName) {
            const r = got2.get(name);
            if (!r) throw new MuxwireError('MUXWIRE_ERR_BAD_MANIFEST', `the backup lacks ${f.row.domain}/${f.row.relativePath} (${name})`);
            if (r.size !== f.row.size || (f.row.digest && !f.row.digest.equals(r.digest))) {
              throw new MuxwireError('MUXWIRE_ERR_BAD_MANIFEST', `${name} does not match Manifest.db (${r.size} bytes, expected ${f.row.size})`);
            }
          }
        }
        // Everything arrived whole: put it in place, then drop what the backup does not have.
        const keep = new Set<string>();
        for (const p of planned) {
          if (p.row.flags === MANIFEST_FLAG_DIRECTORY) {
            await removeUnlessDirectory(p.path);
            await mkdir(p.path, { recursive: true });
          }
        }
        for (const f of files) {
          await mkdir(dirname(f.path), { recursive: true });
          await rm(f.path, { recursive: true, force: true });
          await rename(join(staging, f.row.fileID), f.path);
        }
        for (const p of planned) {
          for (let q = p.path; q.length > ctx.root.length; q = dirname(q)) keep.add(q);
        }
        for (const c of (await walkContent(ctx.root)).reverse()) {
          if (!keep.has(c.path)) await rm(c.path, { recursive: true, force: true });
        }
        for (const c of await listDomains(ctx.root)) if (!keep.has(c)) await rm(c, { recursive: true, force: true });
      } finally {
        await rm(staging, { recursive: true, force: true });
      }
      this.#log.info(`restored ${files.length} files (${total} bytes) from ${source}`);
      if (options.RestoreShouldReboot !== false) {
        this.#log.info('restore asks for a reboot (the simulator does not reboot)');
        ctx.onReboot?.();
      }
    });
  }

  /** Info: the host's Info.plist of `source`, as text. */
  async #info(source: string): Promise<string> {
    return this.#withWorkDir(async (work) => {
      const name = `${source}/Info.plist`;
      const got = await this.#host.downloadFiles([name], () => join(work, 'Info.plist'));
      if (!got.has(name)) throw new MuxwireError('MUXWIRE_ERR_BAD_MANIFEST', `the host has no ${name}`);
      const info = decodePlist(await readFile(join(work, 'Info.plist')));
      if (!isPlistDict(info)) throw new MuxwireError('MUXWIRE_ERR_BAD_MANIFEST', `${name} is not a dictionary`);
      const lines = ['Device Name', 'Product Type', 'Product Version', 'Build Version', 'Serial Number', 'Unique Identifier', 'Last Backup Date']
        .filter((k) => info[k] !== undefined)
        .map((k) => `${k}: ${info[k] instanceof Date ? (info[k] as Date).toISOString() : String(info[k])}`);
      return lines.join('\n') + '\n';
    });
  }

  /**
   * Unback: the snapshot unpacked on the host as `_unback_/<Domain>/<path>`. Each batch of files is
   * fetched into the device's work folder, checked against the manifest, and sent back under its
   * readable name (the device never holds more than one batch on disk, and no file in memory).
   */
  async #unback(source: string): Promise<void> {
    const host = this.#host;
    await this.#withWorkDir(async (work) => {
      const rows = await this.#fetchManifest(source, work);
      const entries = rows.filter((r) => r.flags === MANIFEST_FLAG_FILE || r.flags === MANIFEST_FLAG_DIRECTORY);
      for (const r of entries) {
        // The same checks as a restore: an unsafe name is refused before anything is written.
        contentPath(work, r.domain, r.relativePath);
        if (!/^[0-9a-f]{40}$/.test(r.fileID)) throw new MuxwireError('MUXWIRE_ERR_BAD_MANIFEST', `a fileID that is not 40 hex digits: ${r.fileID}`);
      }
      const out = (r: ManifestEntry): string => (r.relativePath === '' ? `_unback_/${r.domain}` : `_unback_/${r.domain}/${r.relativePath}`);
      const dirs = new Set<string>(['_unback_']);
      for (const r of entries) {
        const target = out(r);
        const parent = r.flags === MANIFEST_FLAG_DIRECTORY ? target : target.slice(0, target.lastIndexOf('/'));
        for (let p = parent; p.includes('/'); p = p.slice(0, p.lastIndexOf('/'))) dirs.add(p);
      }
      for (const d of [...dirs].sort()) await host.createDirectory(d);
      const files = entries.filter((r) => r.flags === MANIFEST_FLAG_FILE);
      for (let i = 0; i < files.length; i += BATCH) {
        const batch = files.slice(i, i + BATCH);
        const byName = new Map(batch.map((r) => [`${source}/${backupFilePath(r.fileID)}`, r]));
        const fetched = await host.downloadFiles([...byName.keys()], (name) => join(work, byName.get(name)!.fileID));
        for (const [name, r] of byName) {
          const f = fetched.get(name);
          if (!f || f.size !== r.size) throw new MuxwireError('MUXWIRE_ERR_BAD_MANIFEST', `${name} is missing or does not match Manifest.db`);
        }
        const results = await host.uploadFiles(
          batch.map((r) => ({ deviceName: `${r.domain}/${r.relativePath}`, backupPath: out(r), path: join(work, r.fileID) })),
          0,
          (i / files.length) * 100,
        );
        const failed = results.findIndex((r) => !r.ok);
        if (failed >= 0) throw new MuxwireError('MUXWIRE_ERR_IO', `could not send ${out(batch[failed]!)}`);
        for (const r of batch) await rm(join(work, r.fileID), { force: true });
      }
    });
  }

  /** List: the snapshot's files as CSV (domain, path, size), from the host's Manifest.db. */
  async #list(source: string): Promise<string> {
    return this.#withWorkDir(async (work) => {
      const name = `${source}/Manifest.db`;
      const got = await this.#host.downloadFiles([name], () => join(work, 'Manifest.db'));
      if (!got.has(name)) throw new MuxwireError('MUXWIRE_ERR_BAD_MANIFEST', `the host has no ${name}`);
      const csv = (s: string): string => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
      const rows = readManifestDb(join(work, 'Manifest.db')).filter((r) => r.flags === MANIFEST_FLAG_FILE);
      return ['domain,path,size,fileID', ...rows.map((r) => `${csv(r.domain)},${csv(r.relativePath)},${r.size},${r.fileID}`)].join('\n') + '\n';
    });
  }
}

/** True when `err` means the host is gone (closed, reset), so nothing more can be sent. */
function connectionGone(err: MuxwireError, ch: DeviceLinkChannel): boolean {
  return err.code === 'MUXWIRE_ERR_CLOSED' || err.code === 'MUXWIRE_ERR_CONN_RESET' || ch.stream.destroyed;
}

function manifestEntry(c: ContentEntry, fileID: string): ManifestEntry {
  const s = c.stat;
  const sec = (ns: bigint): number => Number(ns / 1_000_000_000n);
  return {
    fileID,
    domain: c.domain,
    relativePath: c.relativePath,
    flags: c.flags,
    size: c.flags === MANIFEST_FLAG_FILE ? Number(s.size) : 0,
    mode: Number(s.mode),
    lastModified: sec(s.mtimeNs),
    lastStatusChange: sec(s.ctimeNs),
    birth: sec(s.birthtimeNs),
    inode: Number(s.ino),
    userId: 501,
    groupId: 501,
    protectionClass: c.flags === MANIFEST_FLAG_FILE ? 3 : 0,
  };
}

/** The keybag a Manifest.plist carries: opaque bytes, stable per device (backups are unencrypted). */
function backupKeyBag(udid: string): Buffer {
  return Buffer.concat([Buffer.from('VERS\0\0\0\x04\0\0\0\x04TYPE\0\0\0\x04\0\0\0\x01UUID\0\0\0\x10', 'latin1'), Buffer.from(udid.replace(/-/g, '').slice(0, 32).padEnd(32, '0'), 'hex')]);
}

async function removeUnlessDirectory(path: string): Promise<void> {
  const st = await stat(path).catch(() => undefined);
  if (st && !st.isDirectory()) await rm(path, { force: true });
}

async function listDomains(root: string): Promise<string[]> {
  return (await readdir(root)).filter((n) => !n.startsWith(STAGING_PREFIX)).map((n) => join(root, n));
}
