/**
 * Who is at the other end of a UNIX socket: the kernel's record of the connecting process
 * (SO_PEERCRED), read through the addon. Node has no API for it, so the TypeScript twin can only
 * say that it cannot tell; the daemon then refuses to start with an access policy that needs it
 * (src/daemon/access-policy.ts) rather than enforce it on guesses.
 */
import type { Socket } from 'node:net';
import { loadAddon } from './addon-loader.js';

/** The connecting process's ids, as the kernel recorded them at connect() (pid -1: not known). */
export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

/** The addon's raw entry point: the credentials, or the errno of the failed getsockopt. */
type RawPeerCredentials = (fd: number) => PeerCredentials | number;

/** Reads peer credentials from sockets, or says why it cannot. */
export interface PeerCredentialReader {
  /** Undefined when the socket has no descriptor or the kernel refuses (not a UNIX socket…). */
  read(socket: Socket): PeerCredentials | undefined;
}

/** What `peerCredentialReader()` found: a reader, or the reason there is none. */
export type PeerCredentialSupport = { readonly ok: true; readonly reader: PeerCredentialReader } | { readonly ok: false; readonly reason: string };

/**
 * The addon's reader, unless MUXWIRE_NO_NATIVE=1 or the addon is missing or lacks the entry
 * point (built from older sources).
 */
export function peerCredentialReader(env: Readonly<Record<string, string | undefined>> = process.env): PeerCredentialSupport {
  if (env.MUXWIRE_NO_NATIVE === '1') return { ok: false, reason: 'MUXWIRE_NO_NATIVE=1 keeps the addon, the only reader of SO_PEERCRED, off' };
  const load = loadAddon();
  if (!load.ok) return { ok: false, reason: `the addon, the only reader of SO_PEERCRED, did not load: ${load.error.message.split('\n')[0]}` };
  const raw = (load.binding as unknown as { peerCredentials?: unknown }).peerCredentials;
  if (typeof raw !== 'function') return { ok: false, reason: 'the addon has no peerCredentials (built from older sources: rebuild it)' };
  const call = raw as RawPeerCredentials;
  return {
    ok: true,
    reader: {
      read(socket: Socket): PeerCredentials | undefined {
        const fd = socketFd(socket);
        if (fd === undefined) return undefined;
        const r = call(fd);
        return typeof r === 'number' ? undefined : r;
      },
    },
  };
}

/** The descriptor behind a connected net.Socket, or undefined (closed, or not a pipe/TCP handle). */
export function socketFd(socket: Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}
