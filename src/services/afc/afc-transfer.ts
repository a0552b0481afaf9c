/**
 * Whole-file copies between the host and the device, on top of the pipelined AFC streams, with
 * progress reports. A failed copy rejects; a partial local file from a failed pull is left for the
 * caller to inspect or remove (like `cp`).
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';

import type { AfcClient } from './afc-client.js';
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
}

/** What a copy moved. */
export interface AfcTransferResult {
  bytes: number;
}

/** Copies device file `remote` to `localPath` (created or truncated). */
export async function pullFile(client: AfcClient, remote: string, localPath: string, opts: AfcTransferOptions = {}): Promise<AfcTransferResult> {
  const info = await client.stat(remote);
  // A symlink's st_size is its target's length, not the file's: no total then.
  const total = info.type === 'file' ? info.size : undefined;
  const source = client.pull(remote, { chunkSize: opts.chunkSize, inFlight: opts.inFlight });
  const onProgress = opts.onProgress;
  if (onProgress) source.on('progress', (p: AfcProgress) => onProgress({ bytes: p.bytes, total }));
  await pipeline(source, createWriteStream(localPath));
  return { bytes: source.bytesRead };
}

/** Copies `localPath` to device file `remote` (created or truncated). */
export async function pushFile(client: AfcClient, localPath: string, remote: string, opts: AfcTransferOptions = {}): Promise<AfcTransferResult> {
  const chunkSize = opts.chunkSize ?? MiB;
  const total = (await stat(localPath)).size;
  const sink = client.push(remote, { chunkSize, inFlight: opts.inFlight });
  const onProgress = opts.onProgress;
  if (onProgress) sink.on('progress', (p: AfcProgress) => onProgress({ bytes: p.bytes, total }));
  await pipeline(createReadStream(localPath, { highWaterMark: chunkSize }), sink);
  return { bytes: sink.bytesWritten };
}
