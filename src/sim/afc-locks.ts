/**
 * flock(2) emulation for the simulated device's FILE_LOCK (lockdown-afc.md §9.7: u64 handle, u64
 * operation = flock values, shared 1, exclusive 2, unlock 8, OR'd with LOCK_NB 4).
 *
 * Node has no flock, and a real flock would also fight with unrelated host processes. Locks are
 * held per open file (per AFC handle, like flock's per-open-file-description semantics) and keyed by
 * the file's device and inode, so two handles on one file contend even across AFC connections and
 * across two names of one file (hard links). The table is module-wide on purpose: flock is
 * system-wide, and two simulated devices sharing one directory must see each other's locks.
 *
 * A request never waits: AFC serves one connection's requests in order, so a blocking lock would
 * stall every later request on the connection. A contended request, with or without LOCK_NB, is
 * answered OP_WOULD_BLOCK (19), as §9.7 suggests.
 */
/** flock(2) operation bits, as FILE_LOCK carries them. */
export const LOCK_SH = 1;
/** Exclusive lock. */
export const LOCK_EX = 2;
/** Do not block (always implied here). */
export const LOCK_NB = 4;
/** Unlock. */
export const LOCK_UN = 8;

/** Who holds a lock: any object standing for one open file. */
export type LockOwner = object;

interface LockState {
  shared: Set<LockOwner>;
  exclusive: LockOwner | undefined;
}

const table = new Map<string, LockState>();

/** Outcome of a lock request. */
export type LockResult = 'ok' | 'would-block' | 'invalid';

/**
 * Applies flock operation `op` for `owner` on the file identified by `key` (`dev:ino`).
 * Converting between shared and exclusive replaces the owner's previous lock, as flock does.
 */
export function applyLock(key: string, owner: LockOwner, op: number): LockResult {
  const kind = op & ~LOCK_NB;
  if (kind === LOCK_UN) {
    releaseLock(key, owner);
    return 'ok';
  }
  if (kind !== LOCK_SH && kind !== LOCK_EX) return 'invalid';
  let state = table.get(key);
  if (!state) {
    state = { shared: new Set(), exclusive: undefined };
    table.set(key, state);
  }
  if (kind === LOCK_SH) {
    if (state.exclusive !== undefined && state.exclusive !== owner) return 'would-block';
    if (state.exclusive === owner) state.exclusive = undefined;
    state.shared.add(owner);
    return 'ok';
  }
  const othersShare = state.shared.size > (state.shared.has(owner) ? 1 : 0);
  if ((state.exclusive !== undefined && state.exclusive !== owner) || othersShare) return 'would-block';
  state.shared.delete(owner);
  state.exclusive = owner;
  return 'ok';
}

/** Drops whatever lock `owner` holds on `key` (unlock, or the file being closed). */
export function releaseLock(key: string, owner: LockOwner): void {
  const state = table.get(key);
  if (!state) return;
  state.shared.delete(owner);
  if (state.exclusive === owner) state.exclusive = undefined;
  if (state.shared.size === 0 && state.exclusive === undefined) table.delete(key);
}
