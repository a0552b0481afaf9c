/**
 * Reads the files of a DeviceLink file stream ahead of the one being sent, each small file into one
 * ready frame: its names, one data chunk and its end marker, in a single buffer that goes out in a
 * single write.
 *
 * ```
 *  frame:  u32 len │ name … │ (u32 len │ name …) │ u32 size+1 │ 0x0C │ data … │ u32 1 │ 0x00
 *          ╰─ the names, as given ─────────────╯ ╰─ one chunk (none for 0 bytes) ╯ ╰─ end ─╯
 * ```
 *
 * A sender that opens, reads and closes each file only when its turn comes waits for four trips to
 * libuv's thread pool per file, and sends nothing meanwhile; with thousands of small files that
 * wait is most of a backup. Here up to `maxFiles` files (`maxBytes` of them) are being read while
 * earlier ones are sent, and each small file costs one write instead of four. Files larger than
 * `wholeBytes` (or of unknown size) are left to the caller to stream in pieces, so memory stays
 * bounded by the read-ahead, never by a file's size.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { DL_CODE_FILE_DATA, DL_CODE_SUCCESS } from '../../protocol/device-link.js';

/** One file to send: where it is, its encoded names, and its size as last seen (a hint). */
export interface FrameSource {
  path: string;
  names: Buffer;
  size?: number;
}

/** What {@link FileFrameReader.next} gives for a file, in the order given. */
export type FileFrame =
  /** Read whole: `frame` is ready to write; `size` and `digest` (SHA-1) are of its data. */
  | { kind: 'whole'; frame: Buffer; size: number; digest: Buffer }
  /** Too large to hold (or size unknown): the caller streams it itself. */
  | { kind: 'stream' }
  /** Could not be opened or read; nothing of it was sent. */
  | { kind: 'failed'; reason: string };

/** Bounds of a {@link FileFrameReader}. */
export interface FileFrameOptions {
  /** Largest file read whole (default 1 MiB). */
  wholeBytes?: number;
  /** Files read ahead at most (default 32). */
  maxFiles?: number;
  /** Bytes read ahead at most, by the sizes given (default 8 MiB). */
  maxBytes?: number;
}

const CHUNK_HEAD = 5;
const FILE_END = 5;

/** Reads `sources` ahead, in order; `next()` once per source. */
export class FileFrameReader {
  readonly #sources: readonly FrameSource[];
  readonly #whole: number;
  readonly #maxFiles: number;
  readonly #maxBytes: number;
  readonly #ahead: { promise: Promise<FileFrame>; bytes: number }[] = [];
  #started = 0;
  #bytes = 0;

  constructor(sources: readonly FrameSource[], opts: FileFrameOptions = {}) {
    this.#sources = sources;
    this.#whole = opts.wholeBytes ?? 1024 * 1024;
    this.#maxFiles = opts.maxFiles ?? 32;
    this.#maxBytes = opts.maxBytes ?? 8 * 1024 * 1024;
    this.#fill();
  }

  /** The next source's frame (rejects only past the end). */
  async next(): Promise<FileFrame> {
    const slot = this.#ahead.shift();
    if (!slot) throw new Error('FileFrameReader: read past the last file');
    const frame = await slot.promise;
    this.#bytes -= slot.bytes;
    this.#fill();
    return frame;
  }

  /** Starts reading sources while the bounds allow (always at least the next one). */
  #fill(): void {
    while (this.#started < this.#sources.length && this.#ahead.length < this.#maxFiles) {
      const s = this.#sources[this.#started]!;
      const small = s.size !== undefined && s.size <= this.#whole;
      const bytes = small ? s.size! : 0;
      if (this.#ahead.length > 0 && this.#bytes + bytes > this.#maxBytes) break;
      this.#started++;
      this.#bytes += bytes;
      this.#ahead.push({ promise: small ? readFrame(s, this.#whole) : Promise.resolve({ kind: 'stream' }), bytes });
    }
  }
}

/** One file as a frame, or 'stream' when it turns out larger than `whole`. Never rejects. */
async function readFrame(s: FrameSource, whole: number): Promise<FileFrame> {
  let fh;
  try {
    fh = await open(s.path, 'r');
  } catch (err) {
    return { kind: 'failed', reason: (err as Error).message };
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size > whole) return { kind: 'stream' };
    const at = s.names.length + (st.size > 0 ? CHUNK_HEAD : 0);
    const frame = Buffer.allocUnsafe(at + st.size + FILE_END);
    s.names.copy(frame, 0);
    let got = 0;
    while (got < st.size) {
      const { bytesRead } = await fh.read(frame, at + got, st.size - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    // A file that shrank since its stat is sent as it now is.
    const data = frame.subarray(at, at + got);
    return { kind: 'whole', frame: got === st.size ? finishFrame(frame, s.names.length, got) : buildFrame(s.names, data), size: got, digest: createHash('sha1').update(data).digest() };
  } catch (err) {
    return { kind: 'failed', reason: (err as Error).message };
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** Writes the chunk head (at `namesLength`, when there is data) and the end marker around the data. */
function finishFrame(frame: Buffer, namesLength: number, size: number): Buffer {
  if (size > 0) {
    frame.writeUInt32BE(size + 1, namesLength);
    frame[namesLength + 4] = DL_CODE_FILE_DATA;
  }
  const end = frame.length - FILE_END;
  frame.writeUInt32BE(1, end);
  frame[end + 4] = DL_CODE_SUCCESS;
  return frame;
}

function buildFrame(names: Buffer, data: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(names.length + (data.length > 0 ? CHUNK_HEAD : 0) + data.length + FILE_END);
  names.copy(frame, 0);
  data.copy(frame, names.length + (data.length > 0 ? CHUNK_HEAD : 0));
  return finishFrame(frame, names.length, data.length);
}
