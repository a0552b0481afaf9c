/**
 * How much memory clients may make the daemon hold (docs/ARCHITECTURE.md, src/daemon/: limits live with
 * the client session, as named constants with documented overrides). usbmuxd has none of these:
 * a client that writes requests and never reads the replies grows it without end.
 *
 * | limit                         | default  | environment                       | when crossed                                   |
 * |-------------------------------|----------|-----------------------------------|------------------------------------------------|
 * | replies queued, soft          | 256 KiB  | MUXWIRE_CLIENT_REPLY_HIGH_WATER   | that client's requests are not read until the replies drain |
 * | replies queued, hard          | 4 MiB    | MUXWIRE_CLIENT_REPLY_MAX          | the client is closed                           |
 * | a half-received request       | 10 s     | MUXWIRE_CLIENT_REQUEST_TIMEOUT_MS | the client is closed                           |
 * | all clients together          | 32 MiB   | MUXWIRE_CLIENT_MEMORY_BUDGET      | the client holding the most is closed          |
 * | connections of one user       | nofile/8 | MUXWIRE_CLIENT_MAX_PER_UID        | the next one is closed at once (uid-quota.ts)  |
 *
 * What counts toward a client: request bytes received and not yet decoded (at most one message,
 * 64 KiB, plus one socket read) and replies or events written to its socket and not yet taken by
 * the kernel. A tunnel's device data is not counted here: the mux window and the relay's high
 * water bound it (client-session.ts).
 */
import { readFileSync } from 'node:fs';
import { MuxwireError } from '../errors.js';

/** Replies queued on one client before its requests stop being read. */
export const CLIENT_REPLY_HIGH_WATER = 256 * 1024;
/** Replies queued on one client before it is closed (a pair record reply may reach 1 MiB). */
export const CLIENT_REPLY_MAX = 4 * 1024 * 1024;
/** Longest a request may take to arrive once its first byte is in. */
export const CLIENT_REQUEST_TIMEOUT_MS = 10_000;
/** Bytes all clients together may make the daemon hold (requests being received, queued replies). */
export const CLIENT_MEMORY_BUDGET = 32 * 1024 * 1024;

/**
 * Longest ProgName, BundleID or ClientVersionString kept from a client (UTF-16 code units; longer
 * ones are cut). They are kept for the client's life and echoed twice per listener in every
 * ListListeners reply: uncut, one client's 64 KiB names made everyone's ListListeners too big to
 * send, and idle clients held memory no budget counted. Real ones are short ("idevice_id",
 * "libusbmuxd 2.0.2", a bundle id).
 */
export const CLIENT_STRING_MAX = 256;

/** `s` cut to CLIENT_STRING_MAX code units, never inside a surrogate pair. */
export function clientString(s: string): string {
  if (s.length <= CLIENT_STRING_MAX) return s;
  const end = CLIENT_STRING_MAX;
  const c = s.charCodeAt(end - 1);
  return s.slice(0, c >= 0xd800 && c <= 0xdbff ? end - 1 : end);
}

/** The per-user connection cap is never below this (a busy CI user opens many tunnels). */
export const CLIENT_PER_UID_MIN = 1024;

/**
 * Connections one user (other than root and the daemon's own) may hold at once: an eighth of the
 * daemon's descriptor limit, at least CLIENT_PER_UID_MIN. A tunnel takes up to three descriptors
 * (the client's and, with the addon, two duplicates), so one user cannot take them all.
 */
export function defaultPerUidMax(limitsFile = '/proc/self/limits'): number {
  let nofile = 0;
  try {
    const line = readFileSync(limitsFile, 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
    nofile = soft === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(soft ?? 0);
  } catch {
    // Not Linux: the floor below.
  }
  return Math.max(CLIENT_PER_UID_MIN, Math.floor((Number.isFinite(nofile) ? nofile : 0) / 8));
}

/** The limits one daemon applies (defaults above). */
export interface ClientLimits {
  replyHighWater: number;
  replyMax: number;
  requestTimeoutMs: number;
  memoryBudget: number;
  /** Connections one uid may hold (UNIX clients with readable credentials; root and the daemon's uid are exempt). */
  perUidMax: number;
}

const ENV: ReadonlyArray<[keyof ClientLimits, string, () => number]> = [
  ['replyHighWater', 'MUXWIRE_CLIENT_REPLY_HIGH_WATER', () => CLIENT_REPLY_HIGH_WATER],
  ['replyMax', 'MUXWIRE_CLIENT_REPLY_MAX', () => CLIENT_REPLY_MAX],
  ['requestTimeoutMs', 'MUXWIRE_CLIENT_REQUEST_TIMEOUT_MS', () => CLIENT_REQUEST_TIMEOUT_MS],
  ['memoryBudget', 'MUXWIRE_CLIENT_MEMORY_BUDGET', () => CLIENT_MEMORY_BUDGET],
  ['perUidMax', 'MUXWIRE_CLIENT_MAX_PER_UID', () => defaultPerUidMax()],
];

/**
 * The defaults, overridden by the environment and then by `given`. Throws
 * MUXWIRE_ERR_BAD_ARGUMENT for a value that is not a positive integer, or a hard reply cap below
 * the soft one.
 */
export function resolveClientLimits(given: Partial<ClientLimits> = {}, env: Readonly<Record<string, string | undefined>> = process.env): ClientLimits {
  const limits = {} as ClientLimits;
  for (const [key, name, fallback] of ENV) {
    const text = env[name];
    let value: number | undefined;
    if (text !== undefined && text !== '') {
      if (!/^\d+$/.test(text) || Number(text) < 1 || !Number.isSafeInteger(Number(text))) {
        throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `${name} must be a positive integer, not '${text}'`);
      }
      value = Number(text);
    }
    const over = given[key];
    if (over !== undefined) {
      if (!Number.isSafeInteger(over) || over < 1) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `client limit ${key} must be a positive integer, not ${over}`);
      value = over;
    }
    limits[key] = value ?? fallback();
  }
  if (limits.replyMax < limits.replyHighWater) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `the hard reply cap (${limits.replyMax}) is below the soft one (${limits.replyHighWater})`);
  }
  return limits;
}

/** One client's side of the budget. */
export interface BudgetHolder {
  /** Bytes it holds now, as last reported to the budget. */
  readonly held: number;
  /** Closes it to give its memory back (the budget's one remedy). */
  overBudget(): void;
}

/**
 * The memory budget of all clients together. Each client reports what it holds whenever that
 * changes (`update`); when the total goes over the limit, the client holding the most is closed,
 * and the next, until the total is under it again. Closing the biggest holder, not the one that
 * happened to ask last, keeps well-behaved clients (which hold a few hundred bytes) serving while
 * one that floods is dropped.
 */
export class ClientMemoryBudget {
  readonly limit: number;
  #used = 0;
  readonly #holders = new Set<BudgetHolder>();

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Bytes held by all clients together. */
  get used(): number {
    return this.#used;
  }

  /** Records that `holder` went from `before` to `after` bytes; enforces the limit. */
  update(holder: BudgetHolder, before: number, after: number): void {
    this.#used += after - before;
    if (after > 0) this.#holders.add(holder);
    else this.#holders.delete(holder);
    while (this.#used > this.limit && this.#holders.size > 0) {
      let biggest: BudgetHolder | undefined;
      for (const h of this.#holders) if (biggest === undefined || h.held > biggest.held) biggest = h;
      // overBudget() reports the release (update with after 0), which removes it from the set.
      const sizeBefore = this.#holders.size;
      biggest!.overBudget();
      if (this.#holders.size === sizeBefore) this.#holders.delete(biggest!);
    }
  }
}
