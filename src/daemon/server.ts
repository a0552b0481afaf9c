/**
 * The daemon's listening sockets: a UNIX socket (usbmuxd's /var/run/usbmuxd by default) and
 * optional TCP addresses (`--listen`, as Apple's daemon on Windows listens on 127.0.0.1:27015).
 *
 * The UNIX socket is made mode 0666 like usbmuxd's, so every local user's tools can reach devices
 * (drop-in behaviour); `socketMode` changes that (e.g. 0o660 with a group). A stale socket file
 * left by a crashed daemon is replaced; a live one (something answers on it) is an error.
 */
import { createServer, connect as netConnect } from 'node:net';
import type { Server, Socket } from 'node:net';
import { fstatSync } from 'node:fs';
import { chmod, lstat, unlink } from 'node:fs/promises';
import { MuxwireError } from '../errors.js';
import { log } from '../log.js';

/** usbmuxd's socket path on Linux and macOS. */
export const DEFAULT_SOCKET_PATH = '/var/run/usbmuxd';
/** usbmuxd's socket mode. */
export const DEFAULT_SOCKET_MODE = 0o666;

/** A TCP address to listen on. */
export interface TcpAddress {
  host: string;
  port: number;
}

export interface ClientServerOptions {
  /** UNIX socket path; undefined for none. */
  socketPath?: string;
  socketMode?: number;
  tcp?: TcpAddress[];
  /** Listening sockets inherited from a service manager (descriptor numbers, see takeListenFds). */
  listenFds?: readonly number[];
  /** Called for every accepted client socket. */
  onClient(socket: Socket, transport: 'unix' | 'tcp'): void;
}

/**
 * Parses `HOST:PORT`, `[v6]:PORT` or `PORT` (loopback); port 0 picks a free one. Throws
 * MUXWIRE_ERR_BAD_ARGUMENT.
 */
export function parseListenAddress(text: string): TcpAddress {
  let host = '127.0.0.1';
  let portText = text;
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(text);
  if (v6) {
    host = v6[1]!;
    portText = v6[2]!;
  } else {
    const colon = text.lastIndexOf(':');
    if (colon >= 0) {
      host = text.slice(0, colon);
      portText = text.slice(colon + 1);
      if (host === '') throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `no host in listen address '${text}'`);
    }
  }
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port > 65535) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `bad port in listen address '${text}'`);
  }
  return { host, port };
}

/** The first descriptor a service manager passes (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;
/** More inherited sockets than this is a malformed LISTEN_FDS, not a configuration. */
const MAX_LISTEN_FDS = 64;

/**
 * The listening sockets a service manager passed to this process, read as sd_listen_fds(3) reads
 * them: `LISTEN_FDS` descriptors from 3 on, meant for this process only when `LISTEN_PID` is its
 * pid (a child that inherited the variables must not take its parent's sockets). The variables
 * are removed from `env` either way, so programs this process starts never see them. Returns []
 * when nothing was passed; a LISTEN_FDS for us that is not a count from 1 to 64 is
 * MUXWIRE_ERR_BAD_ARGUMENT.
 */
export function takeListenFds(env: NodeJS.ProcessEnv = process.env, pid: number = process.pid): number[] {
  const pidText = env.LISTEN_PID;
  const countText = env.LISTEN_FDS;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  if (pidText === undefined || countText === undefined || !/^\d+$/.test(pidText) || Number(pidText) !== pid) return [];
  const count = Number(countText);
  if (!/^\d+$/.test(countText) || count < 1 || count > MAX_LISTEN_FDS) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `LISTEN_FDS must be a count from 1 to ${MAX_LISTEN_FDS}, not '${countText}'`);
  }
  return Array.from({ length: count }, (_, i) => LISTEN_FDS_START + i);
}

export class ClientServer {
  #opts: ClientServerOptions;
  #servers: Server[] = [];
  #addresses: string[] = [];
  #unixPath: string | undefined;

  constructor(opts: ClientServerOptions) {
    this.#opts = opts;
  }

  /** Human-readable addresses being served, e.g. `/var/run/usbmuxd`, `127.0.0.1:27015`. */
  get addresses(): readonly string[] {
    return this.#addresses;
  }

  /** Starts listening on every address; on failure, closes what was opened and throws. */
  async start(): Promise<void> {
    try {
      for (const fd of this.#opts.listenFds ?? []) await this.#listenInherited(fd);
      if (this.#opts.socketPath !== undefined) await this.#listenUnix(this.#opts.socketPath);
      for (const addr of this.#opts.tcp ?? []) await this.#listenTcp(addr);
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /**
   * Stops accepting and removes the socket file at once; resolves when every accepted client has
   * gone too (the caller closes them).
   */
  async close(): Promise<void> {
    const servers = this.#servers;
    this.#servers = [];
    const closed = Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    if (this.#unixPath !== undefined) {
      const path = this.#unixPath;
      this.#unixPath = undefined;
      await unlink(path).catch(() => undefined);
    }
    await closed;
  }

  async #listenUnix(path: string): Promise<void> {
    await removeStaleSocket(path);
    const server = this.#makeServer('unix');
    await listen(server, { path });
    this.#unixPath = path;
    const mode = this.#opts.socketMode ?? DEFAULT_SOCKET_MODE;
    try {
      await chmod(path, mode);
    } catch (err) {
      log.warn(`cannot chmod ${path} to ${mode.toString(8)}: ${(err as Error).message}`);
    }
    this.#addresses.push(path);
  }

  async #listenTcp(addr: TcpAddress): Promise<void> {
    const server = this.#makeServer('tcp');
    await listen(server, { host: addr.host, port: addr.port });
    const bound = server.address();
    const shown = typeof bound === 'object' && bound !== null ? `${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}` : `${addr.host}:${addr.port}`;
    this.#addresses.push(shown);
  }

  /** An inherited listening socket: a UNIX one (muxwire.socket's /run/usbmuxd) or a TCP one. */
  async #listenInherited(fd: number): Promise<void> {
    let isSocket = false;
    try {
      isSocket = fstatSync(fd).isSocket();
    } catch {
      // not open: reported below
    }
    if (!isSocket) throw new MuxwireError('MUXWIRE_ERR_LISTEN', `inherited descriptor ${fd} (LISTEN_FDS) is not an open socket`);
    let transport: 'unix' | 'tcp' = 'unix';
    const server = this.#makeServer(() => transport);
    await listen(server, { fd });
    // Node reports a TCP socket's address; for a UNIX socket taken over by descriptor it has none.
    const bound = server.address();
    if (typeof bound === 'object' && bound !== null) {
      transport = 'tcp';
      this.#addresses.push(`fd ${fd} (${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port})`);
    } else {
      this.#addresses.push(`fd ${fd} (inherited UNIX socket)`);
    }
  }

  #makeServer(transport: 'unix' | 'tcp' | (() => 'unix' | 'tcp')): Server {
    const transportOf = typeof transport === 'function' ? transport : () => transport;
    // allowHalfOpen: a client's EOF resets its device connection, but the device data received
    // until then is still delivered to it (usbmuxd flushes it too, §3.9).
    const server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.#opts.onClient(socket, transportOf()));
    server.on('error', (err) => log.error(`listening socket error: ${err.message}`));
    this.#servers.push(server);
    return server;
  }
}

function listen(server: Server, opts: { path: string } | { host: string; port: number } | { fd: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const where = 'path' in opts ? opts.path : 'fd' in opts ? `inherited descriptor ${opts.fd}` : `${opts.host}:${opts.port}`;
      const code = err.code === 'EADDRINUSE' ? 'MUXWIRE_ERR_ADDR_IN_USE' : 'MUXWIRE_ERR_LISTEN';
      reject(new MuxwireError(code, `cannot listen on ${where}: ${err.message}`, { cause: err }));
    };
    server.once('error', onError);
    server.listen({ ...opts, backlog: 1024 }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** Removes a socket file nobody answers on; refuses to touch a live socket or a non-socket. */
async function removeStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = await lstat(path);
  } catch {
    return;
  }
  if (!st.isSocket()) {
    throw new MuxwireError('MUXWIRE_ERR_ADDR_IN_USE', `${path} exists and is not a socket`);
  }
  const alive = await new Promise<boolean>((resolve) => {
    const probe = netConnect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw new MuxwireError('MUXWIRE_ERR_ADDR_IN_USE', `another daemon is listening on ${path}`);
  await unlink(path).catch(() => undefined);
}
