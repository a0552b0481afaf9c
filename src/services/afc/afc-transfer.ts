/**
 * Whole-file copies between the host and the device, on top of the pipelined AFC streams, with
 * progress reports. A copy either completes or changes nothing under the destination's name: both
 * directions write a `.<name>.muxwire-<hex>.part` file beside the destination and rename it into
 * place only once every byte arrived (on the host after an fsync), and remove it when they fail.
 * Like `cp`, an existing directory as the destination receives `<dir>/<source basename>`.
 *
 * Failures are coded: a device answer is MUXWIRE_ERR_AFC, a host file-system error MUXWIRE_ERR_IO
 * (naming the user's path and the errno), a cancellation through `signal` MUXWIRE_ERR_ABORTED.
 */
import { createWriteStream } from 'node:fs';
import type { Stats } from 'node:fs';
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { basename, posix } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { MuxwireError } from '../../errors.js';
import { AfcStatus } from '../../protocol/afc.js';
import type { AfcClient } from './afc-client.js';
import { AFC_ERROR, isAfcStatus } from './afc-error.js';
import type { AfcFileInfo } from './afc-info.js';
import { PartFile, directoryError, handleSource, localIoError, newFileMode, partName, resolvePullTarget } from './afc-host-file.js';
import type { AfcProgress } from './afc-read-stream.js';

const MiB = 1024 * 1024;

/** Options of pullFile / pushFile. */
export interface AfcTransferOptions {
  /** Bytes per FILE_READ / FILE_WRITE. Default 1 MiB. */
  chunkSize?: number;
  /** Requests in flight. Default 4. */
  inFlight?: number;
  /** Called after each chunk with the bytes done and the total. */
  onProgress?: (progress: AfcProgress) => void;
  /** Cancels the copy: it rejects with MUXWIRE_ERR_ABORTED and removes its part file. */
  signal?: AbortSignal;
}

/** What a copy moved. */
export interface AfcTransferResult {
  bytes: number;
  /** The file written: the destination, or `<destination>/<name>` when that was a directory. */
  path: string;
}

/**
 * Copies device file `remote` to `localPath` (created or replaced; an existing directory receives
 * `<localPath>/<remote basename>`). The device is asked first, so a missing file or a directory
 * there fails before anything on the host is touched; an existing file is replaced only by a
 * complete copy. A device, FIFO or socket as the destination (`/dev/null`) is written in place.
 */
export async function pullFile(client: AfcClient, remote: string, localPath: string, opts: AfcTransferOptions = {}): Promise<AfcTransferResult> {
  throwIfAborted(opts.signal, `pull of ${remote}`);
  const info = await client.stat(remote);
  if (info.type === 'directory') throw remoteDirectoryError('pull', remote);
  const target = await resolvePullTarget(localPath, remote);
  if (target.kind === 'special') {
    const bytes = await pullInto(client, remote, info, createWriteStream(target.path), target.path, opts);
    return { bytes, path: target.path };
  }
  const part = await PartFile.create(target.path);
  try {
    const bytes = await pullInto(client, remote, info, part.stream(), target.path, opts);
    await part.commit(target.kind === 'replace' ? target.mode : await newFileMode());
    return { bytes, path: target.path };
  } catch (err) {
    await part.discard();
    throw err;
  }
}

/** Streams `remote` into `sink` (whose host path is `localPath`); resolves with the bytes read. */
async function pullInto(client: AfcClient, remote: string, info: AfcFileInfo, sink: Writable, localPath: string, opts: AfcTransferOptions): Promise<number> {
  // A symlink's st_size is its target's length, not the file's: no total then.
  const total = info.type === 'file' ? info.size : undefined;
  const source = client.pull(remote, { chunkSize: opts.chunkSize, inFlight: opts.inFlight });
  reportProgress(source, total, opts.onProgress);
  await copy(source, sink, opts.signal, `pull of ${remote}`, (err) => localIoError('cannot write', localPath, err));
  return source.bytesRead;
}

/**
 * Copies `localPath` to device file `remote` (created or replaced; an existing device directory
 * receives `<remote>/<local basename>`). The host file is opened first, so a missing file or a
 * directory fails before anything on the device is created. The data goes into a part file beside
 * `remote`, renamed over it once complete (RENAME_PATH replaces, as rename(2)): a failed push leaves
 * an existing device file as it was and no partial file under the destination's name. The part
 * file is removed on failure; only a connection that is gone can leave it behind, under its
 * `.part` name. A device symlink as the destination is written through, in place, as before.
 */
export async function pushFile(client: AfcClient, localPath: string, remote: string, opts: AfcTransferOptions = {}): Promise<AfcTransferResult> {
  const what = `push to ${remote}`;
  throwIfAborted(opts.signal, what);
  const source = await openLocalSource(localPath);
  try {
    const target = await resolvePushTarget(client, remote, basename(localPath));
    const push = (into: string): Promise<number> => pushFrom(client, source, into, what, opts);
    if (target.existing?.type === 'symlink') return { bytes: await push(target.path), path: target.path };
    const bytes = await viaRemotePart(client, target.path, push);
    return { bytes, path: target.path };
  } finally {
    await source.handle.close().catch(() => undefined);
  }
}

/** The host file a push reads, opened before anything is created on the device. */
interface LocalSource {
  readonly path: string;
  readonly handle: FileHandle;
  readonly stats: Stats;
}

/** Opens the host file to push; a missing file or a directory is a coded error. */
async function openLocalSource(path: string): Promise<LocalSource> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    throw localIoError('cannot read', path, err);
  }
  // open(2) accepts a directory for reading; only the first read would fail, after the device file
  // was created.
  const stats = await handle.stat();
  if (stats.isDirectory()) {
    await handle.close();
    throw directoryError('cannot read', path);
  }
  return { path, handle, stats };
}

/** The device path a push writes, and what is there now (undefined: nothing). */
async function resolvePushTarget(client: AfcClient, remote: string, localBase: string): Promise<{ path: string; existing?: AfcFileInfo }> {
  let path = remote;
  let existing = await statIfExists(client, path);
  if (existing?.type === 'directory') {
    path = posix.join(path, localBase);
    existing = await statIfExists(client, path);
  }
  if (existing?.type === 'directory') throw remoteDirectoryError('push', path);
  return existing ? { path, existing } : { path };
}

async function statIfExists(client: AfcClient, remote: string): Promise<AfcFileInfo | undefined> {
  try {
    return await client.stat(remote);
  } catch (err) {
    if (isAfcStatus(err, AfcStatus.OBJECT_NOT_FOUND)) return undefined;
    throw err;
  }
}

/** Runs `write` into a part file beside `remote`, then renames it over `remote`; removes it on failure. */
async function viaRemotePart(client: AfcClient, remote: string, write: (into: string) => Promise<number>): Promise<number> {
  const part = posix.join(posix.dirname(remote), partName(posix.basename(remote)));
  try {
    let bytes: number;
    try {
      bytes = await write(part);
    } catch (err) {
      throw namingDestination(err, part, remote);
    }
    await client.rename(part, remote);
    return bytes;
  } catch (err) {
    // Best effort: over a connection that is gone the part file stays, under a name that says so.
    await client.rm(part).catch(() => undefined);
    throw err;
  }
}

/** Streams the open host file into device file `remote`; resolves with the bytes acknowledged. */
async function pushFrom(client: AfcClient, source: LocalSource, remote: string, what: string, opts: AfcTransferOptions): Promise<number> {
  const chunkSize = opts.chunkSize ?? MiB;
  // A FIFO or a device (/dev/stdin) has no size to promise.
  const total = source.stats.isFile() ? source.stats.size : undefined;
  const sink = client.push(remote, { chunkSize, inFlight: opts.inFlight });
  reportProgress(sink, total, opts.onProgress);
  await copy(handleSource(source.handle, chunkSize), sink, opts.signal, what, (err) => localIoError('cannot read', source.path, err));
  return sink.bytesWritten;
}

/** Forwards a stream's `progress` events with the total added. */
function reportProgress(stream: Readable | Writable, total: number | undefined, onProgress: AfcTransferOptions['onProgress']): void {
  if (onProgress) stream.on('progress', (p: AfcProgress) => onProgress({ bytes: p.bytes, total }));
}

/**
 * pipeline() with the failure coded: a cancellation becomes MUXWIRE_ERR_ABORTED, a host system-call
 * error goes through `hostError`, device errors stay as they are.
 */
async function copy(source: Readable, sink: Writable, signal: AbortSignal | undefined, what: string, hostError: (err: unknown) => unknown): Promise<void> {
  try {
    await pipeline(source, sink, signal ? { signal } : {});
  } catch (err) {
    if (signal?.aborted) throw abortedError(what, err);
    throw hostError(err);
  }
}

function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw abortedError(what, signal.reason);
}

function abortedError(what: string, cause: unknown): MuxwireError {
  return new MuxwireError('MUXWIRE_ERR_ABORTED', `${what} was aborted`, { cause });
}

/** A device directory where a file is needed: the status FILE_OPEN would have answered, said up front. */
function remoteDirectoryError(op: 'pull' | 'push', remote: string): MuxwireError {
  return new MuxwireError(AFC_ERROR, `AFC ${op} ${remote}: is a directory on the device (OBJECT_IS_DIR)`, { detail: AfcStatus.OBJECT_IS_DIR });
}

/** A device error about the part file, reworded to name the destination the user gave. */
function namingDestination(err: unknown, part: string, remote: string): unknown {
  if (!(err instanceof MuxwireError) || !err.message.includes(part)) return err;
  return new MuxwireError(err.code, err.message.split(part).join(remote), { cause: err, detail: err.detail });
}
