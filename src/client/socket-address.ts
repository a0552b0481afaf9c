/**
 * Where the usbmuxd socket is: `USBMUXD_SOCKET_ADDRESS` in every spelling the ecosystem uses
 * (reference usbmux.md §4.1, ecosystem.md §3): `UNIX:/path` (libusbmuxd), `unix:///path` (go-ios),
 * a bare `/path` (pymobiledevice3, appium), `host:port`, `[v6]:port` and `tcp://host:port`.
 * Unlike libusbmuxd we do not silently ignore what we cannot parse: that is a coded error.
 */
import { MuxwireError } from '../errors.js';

export type SocketAddress = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

/** The daemon's default socket on Linux and macOS. */
export const DEFAULT_SOCKET_PATH = '/var/run/usbmuxd';

/** Parses one address spelling; throws MUXWIRE_ERR_BAD_ADDRESS for anything else. */
export function parseSocketAddress(text: string): SocketAddress {
  const value = text.trim();
  if (value === '') throw badAddress(text);
  const lower = value.toLowerCase();
  if (lower.startsWith('unix://')) return unix(value.slice('unix://'.length), text);
  if (lower.startsWith('unix:')) return unix(value.slice('unix:'.length), text);
  if (lower.startsWith('tcp://')) return tcp(value.slice('tcp://'.length), text);
  if (value.startsWith('/') || value.startsWith('.')) return unix(value, text);
  return tcp(value, text);
}

/** The address a client should use: an explicit one, else USBMUXD_SOCKET_ADDRESS, else the default. */
export function resolveSocketAddress(explicit?: string, env: NodeJS.ProcessEnv = process.env): SocketAddress {
  if (explicit) return parseSocketAddress(explicit);
  const fromEnv = env.USBMUXD_SOCKET_ADDRESS;
  if (fromEnv && fromEnv.trim() !== '') return parseSocketAddress(fromEnv);
  return { kind: 'unix', path: DEFAULT_SOCKET_PATH };
}

/** `UNIX:/path` or `host:port`, as libusbmuxd reads it back. */
export function formatSocketAddress(address: SocketAddress): string {
  if (address.kind === 'unix') return `UNIX:${address.path}`;
  return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

function unix(path: string, original: string): SocketAddress {
  if (path === '' || path.includes('\0')) throw badAddress(original);
  return { kind: 'unix', path };
}

function tcp(rest: string, original: string): SocketAddress {
  // Split at the last colon, as libusbmuxd does, so IPv6 literals in brackets work.
  const colon = rest.lastIndexOf(':');
  if (colon <= 0) throw badAddress(original);
  let host = rest.slice(0, colon);
  const portText = rest.slice(colon + 1);
  if (!/^\d{1,5}$/.test(portText)) throw badAddress(original);
  const port = Number(portText);
  if (port < 1 || port > 65535) throw badAddress(original);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  if (host === '') throw badAddress(original);
  return { kind: 'tcp', host, port };
}

function badAddress(text: string): MuxwireError {
  return new MuxwireError(
    'MUXWIRE_ERR_BAD_ADDRESS',
    `cannot read usbmuxd socket address '${text}' (use UNIX:/path, /path, host:port or [v6]:port)`,
  );
}
