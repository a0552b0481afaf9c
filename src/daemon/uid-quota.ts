/**
 * How many connections each local user holds, and the cap on them (client-limits.ts,
 * `perUidMax`). usbmuxd has none: one user opening connections until the daemon runs out of
 * descriptors locks every other user out (`muxwire list` of root then fails with EPIPE, and device
 * discovery with EMFILE). The uid comes from SO_PEERCRED (the addon's reader); root and the
 * daemon's own uid are not counted (they can stop the daemon anyway), nor are TCP clients, which
 * have no uid (a token or loopback guards them, access-policy.ts).
 */
import type { Logger } from '../log.js';

/** A refusal is logged at most this often per uid, so a flood does not flood the log. */
const WARN_EVERY_MS = 60_000;

export class UidQuota {
  readonly limit: number;
  readonly #exempt: ReadonlySet<number>;
  readonly #held = new Map<number, number>();
  readonly #warnedAt = new Map<number, number>();

  constructor(limit: number, exempt: Iterable<number>) {
    this.limit = limit;
    this.#exempt = new Set(exempt);
  }

  /** Counts a new connection of `uid`; false (and nothing counted) when it is over the cap. */
  admit(uid: number, log: Logger, now = Date.now()): boolean {
    if (this.#exempt.has(uid)) return true;
    const held = this.#held.get(uid) ?? 0;
    if (held >= this.limit) {
      const last = this.#warnedAt.get(uid);
      if (last === undefined || now - last >= WARN_EVERY_MS) {
        this.#warnedAt.set(uid, now);
        log.warn(`uid ${uid} holds ${held} connections, the most one user may (MUXWIRE_CLIENT_MAX_PER_UID); closing its new ones`);
      }
      return false;
    }
    this.#held.set(uid, held + 1);
    return true;
  }

  /** A connection `admit` counted is gone. */
  release(uid: number): void {
    if (this.#exempt.has(uid)) return;
    const held = (this.#held.get(uid) ?? 0) - 1;
    if (held > 0) this.#held.set(uid, held);
    else this.#held.delete(uid);
  }

  /** Connections `uid` holds (0 for an exempt one). */
  held(uid: number): number {
    return this.#held.get(uid) ?? 0;
  }
}
