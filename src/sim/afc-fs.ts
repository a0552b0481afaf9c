/**
 * The simulated device's view of its AFC directory: turns AFC paths into host paths that can never
 * leave the root, and host errors into AFC status codes.
 *
 * How a path is confined (lockdown-afc.md §9.1: the device's AFC root is `/var/mobile/Media`, and
 * afcd behaves as if chrooted there):
 * - The path is split on `/`; empty parts and `.` are dropped; `..` removes the previous part and
 *   stays at the root when there is none (chroot semantics, so `/../../etc/passwd` is `etc/passwd`
 *   under the root). A leading `/` means the root, as it does on the device.
 * - Every component but the last is resolved with `realpath` (the host follows any symlinks in it);
 *   the result must be the root or lie under it. A symlink in the middle that points elsewhere on
 *   the host therefore gives PERM_DENIED (10), never a path outside.
 * - The last component is followed or not as the operation requires (stat, remove, rename and link
 *   look at the link itself; open, list, truncate and set-mod-time follow it). Following is done one
 *   hop at a time with the same check on each hop's parent, so a dangling link cannot make an open
 *   with O_CREAT create a file outside the root either.
 *
 * Decision: a path that would escape through a symlink is answered with PERM_DENIED (10) rather than
 * OBJECT_NOT_FOUND (8): the object exists, the device will not show it, and a user reading the error
 * learns why. Creating a symlink whose target points outside is allowed (it is just a link, and
 * GET_FILE_INFO reports its LinkTarget); following it is refused as above.
 *
 * Races between AFC clients: a check holds only while the tree it looked at stays the same. A client
 * with two sessions could otherwise change it in between, e.g. swap a checked directory for a
 * symlink pointing out while the slow lookup of a link's other path runs, so that link(2) lands
 * outside (a security audit did exactly that). So every operation that takes a path does its
 * lookups and its file operation inside {@link AfcRoot.exclusive}, under one lock shared by all
 * sessions of the root: AfcRoot.open gives every session of one real directory the same object,
 * and the lock also covers any live root nested in it or holding it (two simulated devices whose
 * roots nest). No AFC-initiated change can fall between a path's check and its use, as on a device,
 * where afcd is chrooted and the kernel resolves each path within the call. Operations on open
 * handles (read, write, seek, tell, set-size, lock, close) name no path and take no lock, so bulk
 * transfers stay concurrent.
 *
 * Remaining limit: another process on the host (or code in this one that is not AFC) writing
 * inside the root directory can still swap a directory for a symlink between a check and its use
 * (TOCTOU); opens use O_NOFOLLOW on the final component to narrow that. The simulator's root
 * belongs to the simulator, so nothing else is expected to write there.
 */
import { lstat, readlink, realpath, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve as resolvePath, sep } from 'node:path';

import { MuxwireError } from '../errors.js';
import { AfcStatus } from '../protocol/afc.js';

/** Symlink hops followed before giving up, as Linux's MAXSYMLINKS (40). */
const MAX_SYMLINK_HOPS = 40;

/**
 * An AFC status to answer with, thrown by the device-side handlers. It is a MuxwireError so that
 * anything that escapes a handler still carries a stable code.
 */
export class AfcStatusError extends MuxwireError {
  /** The status code the device sends in its STATUS reply. */
  readonly status: AfcStatus;
  constructor(status: AfcStatus, message: string, cause?: unknown) {
    super('MUXWIRE_ERR_AFC', message, { detail: status, cause });
    this.status = status;
  }
}

/** Where an AFC path lands on the host. */
export interface AfcLocation {
  /** Absolute host path (its parent is real and inside the root). */
  readonly host: string;
  /** True for the root directory itself, which may not be removed or renamed. */
  readonly isRoot: boolean;
}

/**
 * Splits an AFC path into components with chroot semantics: `.` and empty parts vanish, `..` pops
 * and never climbs above the root.
 */
export function afcPathComponents(path: string): string[] {
  const out: string[] = [];
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      out.pop();
      continue;
    }
    out.push(part);
  }
  return out;
}

/**
 * The device's status for a host error. The choices follow lockdown-afc.md §9.5: 8 for a missing
 * leaf, 4 when a component is not a directory (ifuse maps them to ENOENT and ENOTDIR), 1 for a
 * non-empty directory (what LIMD's comment says the device sends, turned into DIR_NOT_EMPTY there).
 */
export function statusForError(err: unknown): AfcStatus {
  if (err instanceof AfcStatusError) return err.status;
  switch ((err as NodeJS.ErrnoException | undefined)?.code) {
    case 'ENOENT':
      return AfcStatus.OBJECT_NOT_FOUND;
    case 'ENOTDIR':
      return AfcStatus.READ_ERROR;
    case 'EEXIST':
      return AfcStatus.OBJECT_EXISTS;
    case 'ENOTEMPTY':
      return AfcStatus.UNKNOWN_ERROR;
    case 'EISDIR':
      return AfcStatus.OBJECT_IS_DIR;
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
    case 'EXDEV':
      return AfcStatus.PERM_DENIED;
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return AfcStatus.NO_SPACE_LEFT;
    case 'EBUSY':
    case 'ETXTBSY':
      return AfcStatus.OBJECT_BUSY;
    case 'EAGAIN':
      return AfcStatus.OP_WOULD_BLOCK;
    case 'EINTR':
      return AfcStatus.OP_INTERRUPTED;
    case 'EMFILE':
    case 'ENFILE':
    case 'ENOMEM':
      return AfcStatus.NO_RESOURCES;
    case 'EINVAL':
    case 'EBADF':
    case 'ENAMETOOLONG':
    case 'ELOOP':
    case 'ERR_INVALID_ARG_VALUE':
    case 'ERR_OUT_OF_RANGE':
      return AfcStatus.INVALID_ARG;
    case 'EIO':
      return AfcStatus.IO_ERROR;
    default:
      return AfcStatus.UNKNOWN_ERROR;
  }
}

/** Gives the lock back. */
type Release = () => void;

/**
 * A mutual exclusion for async work: holders run one at a time, in the order they asked (a FIFO,
 * so a session that keeps asking cannot starve another).
 */
class AsyncLock {
  #tail: Promise<void> = Promise.resolve();

  /** Resolves, once every earlier holder has released, to the function that releases this one. */
  acquire(): Promise<Release> {
    const previous = this.#tail;
    let release!: Release;
    this.#tail = new Promise<void>((resolve) => (release = resolve));
    return previous.then(() => release);
  }
}

/**
 * Path lookups valid while their root's lock is held: what {@link AfcRoot.exclusive} hands its
 * callback. Using it after the callback has finished throws, so a location cannot be taken out of
 * the lock by mistake.
 */
export interface AfcPaths {
  /**
   * Where `afcPath` lands. With `follow`, a symlink in the last component is followed (hop by hop,
   * each hop confined); without, the location names the link itself.
   * Throws AfcStatusError: INVALID_ARG for a NUL in the path, PERM_DENIED for an escape,
   * OBJECT_NOT_FOUND / READ_ERROR for a missing or non-directory parent.
   */
  locate(afcPath: string, follow: boolean): Promise<AfcLocation>;
}

/**
 * The live AfcRoot of each real directory, so that every session over one directory (two
 * connections of one device, or several simulated devices given the same root) shares one object
 * and so one lock. Weak: a root that no session holds is dropped and later made afresh. Nothing can
 * be holding or waiting for the dropped one's lock, since doing so keeps the root reachable.
 */
const liveRoots = new Map<string, WeakRef<AfcRoot>>();
const forgetRoot = new FinalizationRegistry<string>((real) => {
  if (liveRoots.get(real)?.deref() === undefined) liveRoots.delete(real);
});

/** One AFC root directory on the host. Get it with {@link AfcRoot.open}. */
export class AfcRoot {
  readonly #real: string;
  readonly #lock = new AsyncLock();

  private constructor(real: string) {
    this.#real = real;
  }

  /**
   * The root for `dir` (which must exist and be a directory): the live one for its real path if
   * there is one, so sessions of one directory share its lock.
   */
  static async open(dir: string): Promise<AfcRoot> {
    let real: string;
    try {
      real = await realpath(dir);
      if (!(await stat(real)).isDirectory()) throw new Error('not a directory');
    } catch (err) {
      throw new MuxwireError('MUXWIRE_ERR_AFC_ROOT', `AFC root ${dir} is not a usable directory: ${(err as Error).message}`, {
        cause: err,
      });
    }
    return AfcRoot.#shared(real);
  }

  static #shared(real: string): AfcRoot {
    const live = liveRoots.get(real)?.deref();
    if (live) return live;
    const root = new AfcRoot(real);
    liveRoots.set(real, new WeakRef(root));
    forgetRoot.register(root, real);
    return root;
  }

  /** The root's real host path. */
  get path(): string {
    return this.#real;
  }

  /** True when the real host path `p` is the root or lies under it. */
  contains(p: string): boolean {
    if (this.#real === sep) return true;
    return p === this.#real || p.startsWith(this.#real + sep);
  }

  /**
   * Runs `work` (lookups through `paths`, then the file operations on what they found) while no
   * other AFC path operation on this root, or on a root nested in it or holding it, can run: what
   * `work` checked is still true when it acts (see the file comment). Operations on open file
   * handles need no lock and do not take it.
   */
  async exclusive<T>(work: (paths: AfcPaths) => Promise<T>): Promise<T> {
    const release = await this.#lockOverlapping();
    let held = true;
    const paths: AfcPaths = {
      locate: (afcPath, follow) => {
        if (!held) throw new Error('AFC path looked up after its root lock was released');
        return this.#locate(afcPath, follow);
      },
    };
    try {
      return await work(paths);
    } finally {
      held = false;
      release();
    }
  }

  /** Takes the lock of every root in {@link #overlapping}; resolves to what releases them all. */
  async #lockOverlapping(): Promise<Release> {
    const releases: Release[] = [];
    // Always in path order, so two operations that need some of the same locks cannot deadlock.
    for (const root of this.#overlapping()) releases.push(await root.#lock.acquire());
    return () => {
      for (const release of releases.reverse()) release();
    };
  }

  /**
   * This root and every live root nested in it or holding it, in path order: their sessions can
   * rename and link inside one another's trees, so their path operations exclude each other too.
   */
  #overlapping(): AfcRoot[] {
    const roots: AfcRoot[] = [this];
    for (const ref of liveRoots.values()) {
      const other = ref.deref();
      if (other && other !== this && (this.contains(other.#real) || other.contains(this.#real))) roots.push(other);
    }
    return roots.length === 1 ? roots : roots.sort((a, b) => (a.#real < b.#real ? -1 : 1));
  }

  async #locate(afcPath: string, follow: boolean): Promise<AfcLocation> {
    if (afcPath.includes('\0')) throw new AfcStatusError(AfcStatus.INVALID_ARG, 'path holds a NUL byte');
    const parts = afcPathComponents(afcPath);
    if (parts.length === 0) return { host: this.#real, isRoot: true };
    const parent = await this.#realDirectory(join(this.#real, ...parts.slice(0, -1)));
    let host = join(parent, parts[parts.length - 1]!);
    if (follow) host = await this.#follow(host);
    return { host, isRoot: host === this.#real };
  }

  /** realpath of a directory that must stay inside the root. */
  async #realDirectory(p: string): Promise<string> {
    let real: string;
    try {
      real = await realpath(p);
    } catch (err) {
      throw new AfcStatusError(statusForError(err), `cannot resolve ${p}: ${(err as Error).message}`, err);
    }
    if (!this.contains(real)) throw new AfcStatusError(AfcStatus.PERM_DENIED, 'path leads outside the AFC root');
    return real;
  }

  /** Follows symlinks in the last component, one hop at a time, confining each hop's parent. */
  async #follow(host: string): Promise<string> {
    for (let hop = 0; hop < MAX_SYMLINK_HOPS; hop++) {
      let link: string;
      try {
        if (!(await lstat(host)).isSymbolicLink()) return host;
        link = await readlink(host);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return host; // to be created
        throw new AfcStatusError(statusForError(err), (err as Error).message, err);
      }
      const target = resolvePath(dirname(host), link);
      const parent = await this.#realDirectory(dirname(target));
      host = target === dirname(target) ? parent : join(parent, basename(target));
    }
    throw new AfcStatusError(AfcStatus.INVALID_ARG, 'too many levels of symbolic links');
  }
}
