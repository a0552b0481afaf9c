/**
 * Test plumbing for AFC: a connected pair of UNIX sockets (through a temporary net server, the
 * closest thing to a real device connection), a temporary AFC root, and the simulated device's AFC
 * server on one end. Shared by test/sim/afc-server.test.ts and test/services/afc-*.test.ts.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { AfcPacketDecoder, encodeAfcPacket } from '../../src/protocol/afc.js';
import type { AfcPacket } from '../../src/protocol/afc.js';
import { serveAfc } from '../../src/sim/afc-server.js';
import type { AfcServerOptions, AfcSession } from '../../src/sim/afc-server.js';

/** Two connected sockets; `close()` destroys both and removes the socket directory. */
export interface SocketPair {
  readonly client: Socket;
  readonly server: Socket;
  close(): Promise<void>;
}

export async function socketPair(): Promise<SocketPair> {
  const dir = await mkdtemp(join(tmpdir(), 'muxwire-afc-sock-'));
  const path = join(dir, 'afc.sock');
  // allowHalfOpen: the server side decides when to end, as a device connection (no half-close) does.
  const listener = createServer({ allowHalfOpen: true });
  const accepted = new Promise<Socket>((resolve) => listener.once('connection', resolve));
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(path, () => resolve());
  });
  const client = connect(path);
  await new Promise<void>((resolve, reject) => {
    client.once('connect', resolve);
    client.once('error', reject);
  });
  const server = await accepted;
  listener.close();
  return {
    client,
    server,
    async close() {
      client.destroy();
      server.destroy();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A temporary directory holding `root/` (the AFC root) and room beside it for "outside" files. */
export interface AfcSandbox {
  /** The temporary directory (parent of root). */
  readonly base: string;
  /** The AFC root. */
  readonly root: string;
  close(): Promise<void>;
}

export async function afcSandbox(): Promise<AfcSandbox> {
  const base = await mkdtemp(join(tmpdir(), 'muxwire-afc-'));
  const root = join(base, 'root');
  await mkdir(root);
  return { base, root, close: () => rm(base, { recursive: true, force: true }) };
}

/** An AFC server on one end of a socket pair, over a fresh sandbox. */
export interface AfcServerFixture {
  readonly sandbox: AfcSandbox;
  readonly sockets: SocketPair;
  readonly session: AfcSession;
  close(): Promise<void>;
}

export async function startAfcServer(opts: Partial<AfcServerOptions> = {}): Promise<AfcServerFixture> {
  const sandbox = await afcSandbox();
  const sockets = await socketPair();
  const session = serveAfc(sockets.server, { root: sandbox.root, ...opts });
  return {
    sandbox,
    sockets,
    session,
    async close() {
      await sockets.close();
      await session.finished;
      await sandbox.close();
    },
  };
}

/**
 * A raw AFC peer for byte-level tests: sends packets (or arbitrary bytes) and reads replies one by
 * one, with the project's decoder.
 */
export class RawAfcPeer {
  readonly #socket: Socket;
  readonly #decoder = new AfcPacketDecoder({ maxLength: 64 * 1024 * 1024 });
  readonly #replies: AfcPacket[] = [];
  readonly #raw: Buffer[] = [];
  #waiter: (() => void) | undefined;
  #closed = false;

  constructor(socket: Socket) {
    this.#socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#raw.push(chunk);
      this.#decoder.push(chunk);
      for (let p = this.#decoder.next(); p; p = this.#decoder.next()) this.#replies.push(p);
      this.#wake();
    });
    socket.on('close', () => {
      this.#closed = true;
      this.#wake();
    });
  }

  /** Every byte received so far, in one buffer. */
  rawBytes(): Buffer {
    return Buffer.concat(this.#raw);
  }

  /** True once the other side closed. */
  get closed(): boolean {
    return this.#closed;
  }

  send(p: { packetNum: number | bigint; operation: number; headerPayload?: Buffer; payload?: Buffer }): void {
    this.#socket.write(
      encodeAfcPacket({
        packetNum: p.packetNum,
        operation: p.operation,
        headerPayload: p.headerPayload ?? Buffer.alloc(0),
        payload: p.payload ?? Buffer.alloc(0),
      }),
    );
  }

  sendRaw(bytes: Buffer): void {
    this.#socket.write(bytes);
  }

  /** The next reply; rejects if the connection closes first. */
  async next(): Promise<AfcPacket> {
    for (;;) {
      const reply = this.#replies.shift();
      if (reply) return reply;
      if (this.#closed) throw new Error('connection closed before a reply');
      await new Promise<void>((resolve) => (this.#waiter = resolve));
    }
  }

  /** Resolves once the connection has closed. */
  async waitClosed(): Promise<void> {
    while (!this.#closed) await new Promise<void>((resolve) => (this.#waiter = resolve));
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }
}

/** u64 LE values back to back. */
export function u64(...values: Array<number | bigint>): Buffer {
  const b = Buffer.alloc(8 * values.length);
  values.forEach((v, i) => b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)), 8 * i));
  return b;
}

/** A path without the trailing NUL (GOIOS / APPIUM style) or with it (LIMD / PMD3). */
export function pathArg(path: string, nul = true): Buffer {
  return Buffer.from(nul ? path + '\0' : path, 'utf8');
}

/** The status code of a STATUS reply (read from inside this_length, §9.6). */
export function statusOf(reply: AfcPacket): number {
  if (reply.operation !== 1) throw new Error(`expected STATUS, got op ${reply.operation}`);
  return Number(reply.headerPayload.readBigUInt64LE(0));
}
