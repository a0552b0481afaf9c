/**
 * What the simulated device does for each AFC request (lockdown-afc.md §9.7), one handler per
 * opcode. Each handler reads its arguments from an {@link AfcArgs} blob and returns the reply; a
 * failure is thrown as AfcStatusError (or a host error that `statusForError` maps) and becomes a
 * STATUS reply in the session.
 *
 * Every handler that takes a path looks it up and acts on it inside `ctx.root.exclusive`, so no
 * other AFC session of the root can change the tree between the check and the use (afc-fs.ts).
 * Handlers on an open handle take no lock: they name no path, and bulk reads and writes of several
 * sessions must not wait for each other.
 *
 * Reply layout (§9.6): STATUS, FILE_OPEN_RES and FILE_TELL_RES carry their u64 inside `this_length`
 * (header payload); DATA carries its bytes after it (payload). GOIOS and APPIUM depend on this.
 */
import { constants as fsc } from 'node:fs';
import type { BigIntStats, Stats } from 'node:fs';
import { link, lstat, mkdir, open, readdir, readlink, rename, rm, rmdir, stat, statfs, symlink, truncate, unlink, utimes } from 'node:fs/promises';

import { AfcFileMode, AfcOp, AfcStatus } from '../protocol/afc.js';
import type { AfcArgs } from './afc-args.js';
import { AfcStatusError, afcPathComponents } from './afc-fs.js';
import type { AfcPaths, AfcRoot } from './afc-fs.js';
import type { AfcHandleTable, AfcOpenFile } from './afc-handles.js';
import { applyLock } from './afc-locks.js';
import { viewsAfter } from '../buffer-views.js';

/** What the handlers of one connection share. */
export interface AfcDeviceContext {
  readonly root: AfcRoot;
  readonly files: AfcHandleTable;
  /** GET_DEVINFO `Model` (the ProductType, e.g. `iPhone12,8`). */
  readonly deviceModel: string;
  /** GET_DEVINFO `FSTotalBytes`; the host file system's size when undefined. */
  readonly fsTotalBytes: number | undefined;
  /** GET_DEVINFO `FSBlockSize` (4096 on current devices, §9.7; ifuse divides by it). */
  readonly fsBlockSize: number;
  /** Largest FILE_READ served; more is TOO_MUCH_DATA (13). */
  readonly maxRead: number;
}

/** One reply; the session adds the header and the request's packet number. */
export interface AfcReply {
  readonly operation: AfcOp;
  readonly headerPayload: Buffer;
  readonly payload: Buffer;
}

/** One opcode's behaviour: arguments in, reply out (failures thrown, see the file comment). */
export type AfcHandler = (ctx: AfcDeviceContext, args: AfcArgs) => Promise<AfcReply>;

const EMPTY = Buffer.alloc(0);

function u64(value: number | bigint): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeBigUInt64LE(BigInt(value));
  return b;
}

/** STATUS with its u64 code in the header payload (`this_length = entire_length = 48`). */
export function statusReply(status: AfcStatus): AfcReply {
  return { operation: AfcOp.STATUS, headerPayload: u64(status), payload: EMPTY };
}

/** DATA with the bytes after `this_length` (`this_length = 40`). */
export function dataReply(payload: Buffer): AfcReply {
  return { operation: AfcOp.DATA, headerPayload: EMPTY, payload };
}

const SUCCESS = statusReply(AfcStatus.SUCCESS);

/** `key\0value\0…` (GET_FILE_INFO, GET_DEVINFO) or `name\0…` (READ_DIR). */
function nulList(items: string[]): Buffer {
  return Buffer.from(items.map((s) => s + '\0').join(''), 'utf8');
}

function ifmt(st: Stats | BigIntStats): string {
  if (st.isFile()) return 'S_IFREG';
  if (st.isDirectory()) return 'S_IFDIR';
  if (st.isSymbolicLink()) return 'S_IFLNK';
  if (st.isBlockDevice()) return 'S_IFBLK';
  if (st.isCharacterDevice()) return 'S_IFCHR';
  if (st.isFIFO()) return 'S_IFIFO';
  return 'S_IFSOCK';
}

/** The six FILE_OPEN modes (§9.7) as open(2) flags. */
const OPEN_FLAGS: ReadonlyMap<number, number> = new Map([
  [AfcFileMode.RDONLY, fsc.O_RDONLY],
  [AfcFileMode.RW, fsc.O_RDWR | fsc.O_CREAT],
  [AfcFileMode.WRONLY, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC],
  [AfcFileMode.WR, fsc.O_RDWR | fsc.O_CREAT | fsc.O_TRUNC],
  [AfcFileMode.APPEND, fsc.O_WRONLY | fsc.O_APPEND | fsc.O_CREAT],
  [AfcFileMode.RDAPPEND, fsc.O_RDWR | fsc.O_APPEND | fsc.O_CREAT],
]);

function refuseRoot(isRoot: boolean, what: string): void {
  if (isRoot) throw new AfcStatusError(AfcStatus.PERM_DENIED, `cannot ${what} the AFC root`);
}

// READ_DIR: path → DATA `.\0..\0name\0…` (`.` and `..` first: PMD3 drops the first two blindly).
async function readDir(ctx: AfcDeviceContext, args: AfcArgs): Promise<AfcReply> {
  const path = args.path(0);
  const names = await ctx.root.exclusive(async (paths) => readdir((await paths.locate(path, true)).host));
  return dataReply(nulList(['.', '..', ...names]));
}

// GET_FILE_INFO: path → DATA st_size, st_blocks, st_nlink, st_ifmt, st_mtime, st_birthtime (ns),
// and LinkTarget for a symlink, in the order a real device sends them (LIMD issue #1665). The link
// itself is described, not what it points to (lstat), as on the device.
async function getFileInfo(ctx: AfcDeviceContext, args: AfcArgs): Promise<AfcReply> {
  const path = args.path(0);
  const { st, linkTarget } = await ctx.root.exclusive(async (paths) => {
    const where = await paths.locate(path, false);
    const st = await lstat(where.host, { bigint: true });
    return { st, linkTarget: st.isSymbolicLink() ? await readlink(where.host) : undefined };
  });
  // Linux file systems without a birth time report 0; the change time is the closest stand-in.
  const birth = st.birthtimeNs > 0n ? st.birthtimeNs : st.ctimeNs;
  const pairs = [
    'st_size', String(st.size),
    'st_blocks', String(st.blocks),
    'st_nlink', String(st.nlink),
    'st_ifmt', ifmt(st),
    'st_mtime', String(st.mtimeNs),
    'st_birthtime', String(birth),
  ];
  if (linkTarget !== undefined) pairs.push('LinkTarget', linkTarget);
  return dataReply(nulList(pairs));
}

// GET_DEVINFO: no arguments → DATA Model, FSTotalBytes, FSFreeBytes, FSBlockSize.
async function getDevInfo(ctx: AfcDeviceContext): Promise<AfcReply> {
  const fs = await statfs(ctx.root.path);
  const hostTotal = fs.blocks * fs.bsize;
  const total = ctx.fsTotalBytes ?? hostTotal;
  const free = Math.max(0, Math.min(fs.bavail * fs.bsize, total));
  return dataReply(
    nulList([
      'Model', ctx.deviceModel,
      'FSTotalBytes', String(total),
      'FSFreeBytes', String(free),
      'FSBlockSize', String(ctx.fsBlockSize),
    ]),
  );
}

// FILE_OPEN: u64 mode, path → FILE_OPEN_RES u64 handle (non-zero, 32-bit).
async function fileOpen(ctx: AfcDeviceContext, args: AfcArgs): Promise<AfcReply> {
  const mode = args.u64(0);
  const flags = mode <= 6n ? OPEN_FLAGS.get(Number(mode)) : undefined;
  if (flags === undefined) throw new AfcStatusError(AfcStatus.INVALID_ARG, `unknown file mode ${mode}`);
  const path = args.path(8);
  const fh = await ctx.root.exclusive(async (paths) => {
    const where = await paths.locate(path, true);
    if (where.isRoot) throw new AfcStatusError(AfcStatus.OBJECT_IS_DIR, 'the AFC root is a directory');
    // O_NOFOLLOW: the last component was resolved above; a symlink put there by another host
    // process since is refused. O_NONBLOCK: a FIFO in the root must not hang the open (and the
    // lock); it is refused below.
    return open(where.host, flags | fsc.O_NOFOLLOW | fsc.O_NONBLOCK, 0o644);
  });
  // Once open, the file is reached through its descriptor: nothing below needs the lock.
  try {
    const st = await fh.stat();
    if (st.isDirectory()) throw new AfcStatusError(AfcStatus.OBJECT_IS_DIR, 'is a directory');
    if (!st.isFile()) throw new AfcStatusError(AfcStatus.PERM_DENIED, 'not a regular file');
    const access = {
      readable: (flags & (fsc.O_WRONLY | fsc.O_RDWR)) !== fsc.O_WRONLY,
      writable: (flags & (fsc.O_WRONLY | fsc.O_RDWR)) !== fsc.O_RDONLY,
      append: (flags & fsc.O_APPEND) !== 0,
    };
    const file = ctx.files.add(fh, access, `${st.dev}:${st.ino}`);
    return { operation: AfcOp.FILE_OPEN_RES, headerPayload: u64(file.handle), payload: EMPTY };
  } catch (err) {
    await fh.close().catch(() => undefined);
    throw err;
  }
}

// FILE_READ: u64 handle, u64 length → DATA with min(length, remaining) bytes; at EOF DATA with zero
// bytes, never STATUS 0 (LIMD would hand the 8 code bytes to its caller as file data).
async function fileRead(ctx: AfcDeviceContext, args: AfcArgs): Promise<AfcReply> {
  const file = ctx.files.get(args.u64(0));
  // A write-only handle: read(2) would fail with EBADF, answered INVALID_ARG like any bad handle.
  if (!file.readable) throw new AfcStatusError(AfcStatus.INVALID_ARG, 'handle is not open for reading');
  const wanted = args.u64(8);
  if (wanted > BigInt(ctx.maxRead)) {
    throw new AfcStatusError(AfcStatus.TOO_MUCH_DATA, `read of ${wanted} bytes exceeds ${ctx.maxRead}`);
  }
  // Size the buffer by what is left, so a 16 MiB request near the end of a file costs what it returns.
  const size = (await file.fh.stat()).size;
  const n = Math.min(Number(wanted), Math.max(0, size - file.position));
  if (n === 0) return dataReply(EMPTY);
  const buf = Buffer.allocUnsafe(n);
  let got = 0;
  while (got < n) {
    const { bytesRead } = await file.fh.read(buf, got, n - got, file.position + got);
    if (bytesRead === 0) break; // shrank under us: return what there is
    got += bytesRead;
  }
  file.position += got;
  return dataReply(got === n ? buf : buf.subarray(0, got));
}

// FILE_WRITE: u64 handle, then the data, wherever this_length falls (§9.2 server rule) → STATUS.
// A FILE_WRITE larger than the session holds whole is streamed instead (afc-server.ts), with the
// same two steps: writableFile, then writeParts for each piece as it arrives.
async function fileWrite(ctx: AfcDeviceContext, args: AfcArgs): Promise<AfcReply> {
  const file = writableFile(ctx, args.u64(0));
  await writeParts(file, args.views(8));
  return SUCCESS;
}

/** The open file a FILE_WRITE names; INVALID_ARG when there is none or it is read-only. */
export function writableFile(ctx: AfcDeviceContext, handle: bigint): AfcOpenFile {
  const file = ctx.files.get(handle);
  if (!file.writable) throw new AfcStatusError(AfcStatus.INVALID_ARG, 'handle is not open for writing');
  return file;
}

/** Writes `parts` at the file's position (at its end with O_APPEND) and advances the position. */
export async function writeParts(file: AfcOpenFile, parts: Buffer[]): Promise<void> {
  let total = 0;
  for (const p of parts) total += p.length;
  if (total === 0) return;
  // With O_APPEND, Linux pwrite ignores the offset and appends; the position then is the new end.
  let written = 0;
  let pending = parts;
  while (pending.length > 0) {
    const { bytesWritten } = await file.fh.writev(pending, file.append ? undefined : file.position + written);
    written += bytesWritten;
    if (written >= total) break;
    pending = viewsAfter(parts, written);
  }
  if (file.append) file.position = (await file.fh.stat()).size;
  else file.position += written;
}

// FILE_SEEK: u64 handle, u64 whence (0 SET, 1 CUR, 2 END), s64 offset → STATUS.
async function fileSeek(ctx: AfcDeviceContext, args: AfcArgs): Promise<AfcReply> {
  const file = ctx.files.get(args.u64(0));
  const whence = args.u64(8);
  const offset = args.s64(16);
  let base: bigint;
  if (whence === 0n) base = 0n;
  else if (whence === 1n) base = BigInt(file.position);
  else if (whence === 2n) base = BigInt((await file.fh.stat()).size);
  else throw new AfcStatusError(AfcStatus.INVALID_ARG, `unknown whence ${whence}`);
  const target = base + offset;
  if (target < 0n || target > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new AfcStatusError(AfcStatus.INVALID_ARG, `seek to ${target}`);
  }
  file.position = Number(target);
  return SUCCESS;
}

// FILE_TELL: u64 handle → FILE_TELL_RES u64 position.
async function fileTell(ctx: AfcDeviceContext, args: AfcArgs): Promise<AfcReply> {
  const file = ctx.files.get(args.u64(0));
  return { operation: AfcOp.FILE_TELL_RES, headerPayload: u64(file.position), payload: EMPTY };
}

// FILE_CLOSE: u64 handle → STATUS.
async function fileClose(ctx: AfcDeviceContext, args: AfcArgs): Promise<AfcReply> {
  await ctx.files.close(ctx.files.get(args.u64(0)));
  return SUCCESS;
}

// FILE_SET_SIZE: u64 handle, u64 size → STATUS (ftruncate; the position stays where it was).
async function fileSetSize(ctx: AfcDeviceContext, args: AfcArgs): Promise<AfcReply> {
  const file = ctx.files.get(args.u64(0));
  await file.fh.truncate(args.safeU64(8, 'size'));
  return SUCCESS;
}

// FILE_LOCK: u64 handle, u64 flock operation → STATUS; OP_WOULD_BLOCK when contended.
async function fileLock(ctx: AfcDeviceContext, args: AfcArgs): Promise<AfcReply> {
  const file = ctx.files.get(args.u64(0));
  const op = args.u64(8);
  const result = op <= 15n ? applyLock(file.lockKey, file, Number(op)) : 'invalid';
  if (result === 'would-block') throw new AfcStatusError(AfcStatus.OP_WOULD_BLOCK, 'file is locked');
  if (result === 'invalid') throw new AfcStatusError(AfcStatus.INVALID_ARG, `unknown lock operation ${op}`);
  return SUCCESS;
}

// TRUNCATE: u64 size, path → STATUS.
async function truncatePath(ctx: AfcDeviceContext, args: AfcArgs): Promise<AfcReply> {
  const size = args.safeU64(0, 'size');
  const path = args.path(8);
  await ctx.root.exclusive(async (paths) => truncate((await paths.locate(path, true)).host, size));
  return SUCCESS;
}

// REMOVE_PATH: path → STATUS; a non-empty directory gives UNKNOWN_ERROR (1), as the device sends
// (LIMD turns it into DIR_NOT_EMPTY). A symlink is removed, not what it points to.
async function removePath(ctx: AfcDeviceContext, args: AfcArgs): Promise<AfcReply> {
  const path = args.path(0);
  await ctx.root.exclusive(async (paths) => {
    const where = await paths.locate(path, false);
    refuseRoot(where.isRoot, 'remove');
    const st = await lstat(where.host);
    if (st.isDirectory()) await rmdir(where.host);
    else await unlink(where.host);
  });
  return SUCCESS;
}

// REMOVE_PATH_AND_CONTENTS: path → STATUS (rm -r; symlinks inside are removed, never followed).
// The whole walk runs under the lock, so no session can slip a symlink into the tree it descends.
async function removePathAndContents(ctx: AfcDeviceContext, args: AfcArgs): Promise<AfcReply> {
  const path = args.path(0);
  await ctx.root.exclusive(async (paths) => {
    const where = await paths.locate(path, false);
    refuseRoot(where.isRoot, 'remove');
    await lstat(where.host); // OBJECT_NOT_FOUND for a missing path, as REMOVE_PATH
    await rm(where.host, { recursive: true, force: false });
  });
  return SUCCESS;
}

// MAKE_DIR: path → STATUS. Creates missing parents (PMD3 documents makedirs) and succeeds when the
// directory exists; every level is located (and so confined) on its own, all under one lock hold.
async function makeDir(ctx: AfcDeviceContext, args: AfcArgs): Promise<AfcReply> {
  const path = args.path(0);
  if (path.includes('\0')) throw new AfcStatusError(AfcStatus.INVALID_ARG, 'path holds a NUL byte');
  const parts = afcPathComponents(path);
  await ctx.root.exclusive(async (paths) => {
    for (let i = 1; i <= parts.length; i++) await makeOneDir(paths, parts.slice(0, i).join('/'));
  });
  return SUCCESS;
}

/** Makes one level of a MAKE_DIR, or accepts the directory that is there. */
async function makeOneDir(paths: AfcPaths, afcPath: string): Promise<void> {
  const where = await paths.locate(afcPath, true);
  try {
    await mkdir(where.host);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    if (!(await stat(where.host)).isDirectory()) {
      throw new AfcStatusError(AfcStatus.OBJECT_EXISTS, 'a file of that name exists');
    }
  }
}

// RENAME_PATH: `from\0to\0` → STATUS. Neither name is followed (rename(2) renames a link itself).
async function renamePath(ctx: AfcDeviceContext, args: AfcArgs): Promise<AfcReply> {
  const [from, to] = args.twoPaths(0);
  await ctx.root.exclusive(async (paths) => {
    const src = await paths.locate(from, false);
    const dst = await paths.locate(to, false);
    refuseRoot(src.isRoot || dst.isRoot, 'rename');
    await rename(src.host, dst.host);
  });
  return SUCCESS;
}

// MAKE_LINK: u64 type (1 hard, 2 symbolic), `target\0linkname\0` → STATUS.
// A symlink's target is stored verbatim (it may point anywhere; following it stays confined). A hard
// link's target must be inside the root; like link(2), a symlink target is linked itself.
async function makeLink(ctx: AfcDeviceContext, args: AfcArgs): Promise<AfcReply> {
  const type = args.u64(0);
  const [target, name] = args.twoPaths(8);
  await ctx.root.exclusive(async (paths) => {
    const at = await paths.locate(name, false);
    refuseRoot(at.isRoot, 'replace');
    if (type === 1n) {
      const src = await paths.locate(target, false);
      await link(src.host, at.host);
    } else if (type === 2n) {
      await symlink(target, at.host);
    } else {
      throw new AfcStatusError(AfcStatus.INVALID_ARG, `unknown link type ${type}`);
    }
  });
  return SUCCESS;
}

// SET_FILE_MOD_TIME: u64 mtime (ns since the epoch), path → STATUS. The access time is kept.
async function setFileModTime(ctx: AfcDeviceContext, args: AfcArgs): Promise<AfcReply> {
  const ns = args.u64(0);
  const path = args.path(8);
  await ctx.root.exclusive(async (paths) => {
    const where = await paths.locate(path, true);
    const st = await stat(where.host);
    await utimes(where.host, st.atime, Number(ns) / 1e9);
  });
  return SUCCESS;
}

/**
 * The implemented opcodes. Anything else (the legacy whole-file calls, connection options, hashes,
 * directory enumerators, offset reads and writes, and reply opcodes sent as requests) is answered
 * UNKNOWN_PACKET_TYPE (6), as devices before 3.1 did for SET_FILE_MOD_TIME and ifuse expects (§9.4).
 */
export const AFC_HANDLERS: ReadonlyMap<number, AfcHandler> = new Map<number, AfcHandler>([
  [AfcOp.READ_DIR, readDir],
  [AfcOp.GET_FILE_INFO, getFileInfo],
  [AfcOp.GET_DEVINFO, getDevInfo],
  [AfcOp.FILE_OPEN, fileOpen],
  [AfcOp.FILE_READ, fileRead],
  [AfcOp.FILE_WRITE, fileWrite],
  [AfcOp.FILE_SEEK, fileSeek],
  [AfcOp.FILE_TELL, fileTell],
  [AfcOp.FILE_CLOSE, fileClose],
  [AfcOp.FILE_SET_SIZE, fileSetSize],
  [AfcOp.FILE_LOCK, fileLock],
  [AfcOp.TRUNCATE, truncatePath],
  [AfcOp.REMOVE_PATH, removePath],
  [AfcOp.REMOVE_PATH_AND_CONTENTS, removePathAndContents],
  [AfcOp.MAKE_DIR, makeDir],
  [AfcOp.RENAME_PATH, renamePath],
  [AfcOp.MAKE_LINK, makeLink],
  [AfcOp.SET_FILE_MOD_TIME, setFileModTime],
]);
