/**
 * Who may do what with the daemon, decided here and nowhere else (docs/ARCHITECTURE.md, src/daemon/):
 * the request handlers ask `decide(action, peer)` and act on the answer.
 *
 * ```
 * request                              --pair-access any   owner                 group:NAME
 * ListDevices Listen Connect ReadBUID   everyone            everyone              everyone
 * ListListeners
 * Read/Save/DeletePairRecord            everyone            root, daemon's uid    + members of NAME
 *                                                           (TCP: a token client) (TCP: a token client)
 * ```
 *
 * The threat: the socket is 0666 (as usbmuxd's), so with `any` every local user can read the host
 * private key of every pairing (ReadPairRecord) and delete or replace pairings. A restrictive
 * policy needs the connecting process's uid and gid, which only the kernel knows (SO_PEERCRED,
 * through the addon, src/accel/peer-credentials.ts); where it cannot be read the daemon refuses to
 * start with such a policy rather than guess. A refusal is Result 13 (EACCES, as a pair-record
 * command answers an errno) and the client stays connected.
 *
 * TCP (`--listen`) has no peer credentials. Without a token a listener must be on loopback; with
 * `--tcp-token FILE` every TCP client must first send
 * `{MessageType: "Authenticate", Token: "<the file's text>"}` and gets Result 0 (then it is served
 * as the daemon's owner would be) or Result 13 and a closed socket; any other first request on
 * such a listener gets Result 13 and a closed socket. UNIX-socket clients never send it (there an
 * Authenticate is an unknown MessageType, Result 1, as before).
 */
import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { timingSafeEqual, createHash } from 'node:crypto';
import { MuxwireError } from '../errors.js';
import { peerCredentialReader } from '../accel/peer-credentials.js';
import type { PeerCredentialReader, PeerCredentials } from '../accel/peer-credentials.js';
import type { TcpAddress } from './server.js';

/** `--pair-access`: who may read, save and delete pair records. */
export type PairAccess = { readonly kind: 'any' } | { readonly kind: 'owner' } | { readonly kind: 'group'; readonly name: string };

/** What a client asks for, as the policy sees it. */
export type ClientAction = 'list' | 'listen' | 'connect' | 'read-buid' | 'list-listeners' | 'read-pair-record' | 'save-pair-record' | 'delete-pair-record';

/** The client as the policy sees it. */
export interface ClientPeer {
  readonly transport: 'unix' | 'tcp';
  /** The connecting process's ids (read on first use; undefined when the kernel does not say). */
  credentials(): PeerCredentials | undefined;
  /** A TCP client that sent the right token. */
  readonly authenticated: boolean;
}

/** errno for a refused pair-record command (Result.Number), as a failed open() would give. */
export const EACCES = 13;

/** `undefined` = allowed; otherwise the Result to answer and whether to close the client too. */
export interface AccessRefusal {
  readonly result: number;
  readonly close: boolean;
  readonly error: MuxwireError;
}

/** Shortest and longest token file contents accepted (trimmed). */
const TOKEN_MIN = 16;
const TOKEN_MAX = 4096;

/** Parses `any`, `owner` or `group:NAME`; throws MUXWIRE_ERR_BAD_ARGUMENT. */
export function parsePairAccess(text: string): PairAccess {
  if (text === 'any' || text === 'owner') return { kind: text };
  const m = /^group:([A-Za-z0-9_.][A-Za-z0-9_.-]{0,63})$/.exec(text);
  if (m) return { kind: 'group', name: m[1]! };
  throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `--pair-access must be any, owner or group:NAME, not '${text}'`);
}

/** True for a loopback listen host: 127.0.0.0/8, ::1, ::ffff:127.x, `localhost`. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  const family = isIP(host);
  if (family === 4) return host.startsWith('127.');
  if (family === 6) return host === '::1' || /^::ffff:127\./i.test(host);
  return false;
}

/**
 * Reads a `--tcp-token` file: its text, trimmed, 16..4096 bytes. The file must not be readable by
 * group or others (it is a password). Throws MUXWIRE_ERR_BAD_ARGUMENT.
 */
export function readTcpToken(path: string): Buffer {
  let st;
  let text;
  try {
    st = statSync(path);
    text = readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `cannot read --tcp-token ${path}: ${(err as Error).message}`, { cause: err });
  }
  if ((st.mode & 0o077) !== 0) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `--tcp-token ${path} is mode 0${(st.mode & 0o777).toString(8)}: make it 0600, a token others can read is no secret`);
  }
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length < TOKEN_MIN || bytes.length > TOKEN_MAX) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `--tcp-token ${path} must hold ${TOKEN_MIN} to ${TOKEN_MAX} bytes of text, not ${bytes.length}`);
  }
  return bytes;
}

export interface AccessPolicyOptions {
  pairAccess?: PairAccess;
  /** The `--tcp-token` file's contents: TCP clients must authenticate with it. */
  tcpToken?: Buffer;
  /** TCP addresses the daemon will listen on (checked: loopback unless there is a token). */
  listen?: readonly TcpAddress[];
  /** Default: the addon's reader (peer-credentials.ts). Tests pass a reader of their own. */
  peerReader?: PeerCredentialReader;
  /** Default: this process's uid. */
  daemonUid?: number;
  /** Default: /etc/group and /etc/passwd. */
  groupFile?: string;
  passwdFile?: string;
}

/** A group as the policy checks it: its gid and the user names listed as its members. */
interface GroupInfo {
  gid: number;
  members: Set<string>;
}

export class AccessPolicy {
  readonly pairAccess: PairAccess;
  /** The credential reader, or undefined under `any` (nothing needs it). */
  readonly peerReader: PeerCredentialReader | undefined;
  readonly #tcpToken: Buffer | undefined;
  readonly #daemonUid: number;
  readonly #group: GroupInfo | undefined;
  /** uid → user names (for group membership by name); only loaded for group:NAME. */
  readonly #userNames: Map<number, string[]>;

  /**
   * Throws MuxwireError MUXWIRE_ERR_NATIVE_UNAVAILABLE when the policy needs peer credentials and
   * none can be read, MUXWIRE_ERR_BAD_ARGUMENT for an unknown group or a TCP address off loopback
   * without a token.
   */
  constructor(opts: AccessPolicyOptions = {}) {
    this.pairAccess = opts.pairAccess ?? { kind: 'any' };
    this.#tcpToken = opts.tcpToken;
    this.#daemonUid = opts.daemonUid ?? process.getuid?.() ?? -1;
    for (const addr of opts.listen ?? []) {
      if (this.#tcpToken === undefined && !isLoopbackHost(addr.host)) {
        throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `--listen ${addr.host}:${addr.port} is not loopback: TCP off loopback needs --tcp-token FILE`);
      }
    }
    if (this.pairAccess.kind === 'any') {
      this.peerReader = undefined;
      this.#userNames = new Map();
      return;
    }
    if (opts.peerReader !== undefined) {
      this.peerReader = opts.peerReader;
    } else {
      const support = peerCredentialReader();
      if (!support.ok) {
        throw new MuxwireError('MUXWIRE_ERR_NATIVE_UNAVAILABLE', `--pair-access ${describe(this.pairAccess)} needs peer credentials: ${support.reason}`);
      }
      this.peerReader = support.reader;
    }
    if (this.pairAccess.kind === 'group') {
      this.#group = readGroup(opts.groupFile ?? '/etc/group', this.pairAccess.name);
      this.#userNames = readUserNames(opts.passwdFile ?? '/etc/passwd');
    } else {
      this.#userNames = new Map();
    }
  }

  /** True when TCP clients must authenticate before anything else. */
  get tcpTokenRequired(): boolean {
    return this.#tcpToken !== undefined;
  }

  /** Whether `token` (an Authenticate request's Token) is the right one; constant time. */
  checkToken(token: unknown): boolean {
    const want = this.#tcpToken;
    if (want === undefined || typeof token !== 'string') return false;
    // Hashes of equal length, so neither the comparison nor its length leaks the token.
    return timingSafeEqual(createHash('sha256').update(token, 'utf8').digest(), createHash('sha256').update(want).digest());
  }

  /** undefined when `peer` may do `action`; otherwise how to refuse it. */
  decide(action: ClientAction, peer: ClientPeer): AccessRefusal | undefined {
    if (peer.transport === 'tcp' && this.#tcpToken !== undefined && !peer.authenticated) {
      return refuse(true, `${action} refused: this TCP listener needs an Authenticate request with the token first`);
    }
    if (action !== 'read-pair-record' && action !== 'save-pair-record' && action !== 'delete-pair-record') return undefined;
    const access = this.pairAccess;
    if (access.kind === 'any') return undefined;
    if (peer.transport === 'tcp') {
      return peer.authenticated ? undefined : refuse(false, `${action} refused: a TCP client without a token has no credentials to check (--pair-access ${describe(access)})`);
    }
    const cred = peer.credentials();
    if (cred === undefined) return refuse(false, `${action} refused: the client's credentials cannot be read`);
    if (cred.uid === 0 || cred.uid === this.#daemonUid) return undefined;
    if (access.kind === 'group' && this.#inGroup(cred)) return undefined;
    return refuse(false, `${action} refused for uid ${cred.uid} (--pair-access ${describe(access)})`);
  }

  /**
   * The start-up warning, or undefined: with `any`, a socket others can connect to (mode with
   * o+w), or a TCP listener without a token, lets every local user read every host private key.
   */
  startupWarning(socketMode: number | undefined, hasTcp: boolean): string | undefined {
    if (this.pairAccess.kind !== 'any') return undefined;
    const worldSocket = socketMode !== undefined && (socketMode & 0o002) !== 0;
    const openTcp = hasTcp && this.#tcpToken === undefined;
    if (!worldSocket && !openTcp) return undefined;
    const where = worldSocket ? `the socket is mode 0${socketMode!.toString(8)}` : 'a TCP listener takes every local user';
    return `every local user can read and delete pair records (host private keys): ${where} and --pair-access is any (usbmuxd's behaviour); --pair-access owner limits them to root and this user`;
  }

  #inGroup(cred: PeerCredentials): boolean {
    const group = this.#group!;
    if (cred.gid === group.gid) return true;
    for (const name of this.#userNames.get(cred.uid) ?? []) if (group.members.has(name)) return true;
    return false;
  }
}

function describe(access: PairAccess): string {
  return access.kind === 'group' ? `group:${access.name}` : access.kind;
}

function refuse(close: boolean, message: string): AccessRefusal {
  return { result: EACCES, close, error: new MuxwireError('MUXWIRE_ERR_ACCESS_DENIED', message, { detail: EACCES }) };
}

/** The group `name` from a group(5) file; throws MUXWIRE_ERR_BAD_ARGUMENT when it is not there. */
function readGroup(file: string, name: string): GroupInfo {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `--pair-access group:${name}: cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 4 || f[0] !== name || !/^\d+$/.test(f[2]!)) continue;
    return { gid: Number(f[2]), members: new Set(f[3]!.split(',').map((m) => m.trim()).filter((m) => m !== '')) };
  }
  throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `--pair-access group:${name}: no such group in ${file}`);
}

/** uid → user names from a passwd(5) file (an unreadable file gives none: primary gids still count). */
function readUserNames(file: string): Map<number, string[]> {
  const out = new Map<number, string[]>();
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 4 || !/^\d+$/.test(f[2]!)) continue;
    const uid = Number(f[2]);
    const names = out.get(uid) ?? [];
    names.push(f[0]!);
    out.set(uid, names);
  }
  return out;
}
