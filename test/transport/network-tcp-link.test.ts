/**
 * NetworkLink under the host mux engine: a DeviceSession over the link, and plain TCP servers on a
 * loopback address of the test's own standing in for the device's ports. Every mux connection is
 * one TCP connection; refusals, resets, the device's end, and both directions' backpressure.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { randomBytes, randomInt } from 'node:crypto';
import { DeviceSession } from '../../src/mux/device-session.js';
import { HOST_WINDOW } from '../../src/mux/mux-connection.js';
import type { MuxConnection } from '../../src/mux/mux-connection.js';
import { NetworkLink, RECEIVE_WINDOW } from '../../src/transport/network-link.js';
import { encodeNetworkAddress } from '../../src/protocol/network-address.js';
import { isMuxwireError } from '../../src/errors.js';

const host = `127.${randomInt(1, 255)}.${randomInt(1, 255)}.${randomInt(2, 255)}`;
const servers: Server[] = [];
const sessions: DeviceSession[] = [];

function link(): NetworkLink {
  return new NetworkLink({
    host,
    info: {
      serialNumber: '00008120-0000000000000001',
      productId: 0,
      locationId: 0,
      speed: 0,
      network: { networkAddress: encodeNetworkAddress({ address: host, family: 4, scopeId: 0 }), serviceName: 'test', interfaceIndex: 0 },
    },
  });
}

async function session(l = link()): Promise<DeviceSession> {
  const s = new DeviceSession(l, { deviceId: 1 });
  sessions.push(s);
  await s.ready;
  return s;
}

/** A TCP server at `host` on a free port; each accepted socket goes to `onSocket`. */
async function serve(onSocket: (socket: Socket) => void): Promise<number> {
  const server = createServer(onSocket);
  servers.push(server);
  server.listen(0, host);
  await once(server, 'listening');
  return (server.address() as { port: number }).port;
}

function until(check: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const poll = (): void => {
      if (check()) resolve();
      else setTimeout(poll, 5);
    };
    poll();
  });
}


after(async () => {
  for (const s of sessions) await s.close();
  for (const s of servers) s.close();
});

test('answers mux VERSION so the host session becomes ready (version 1)', async () => {
  const s = await session();
  assert.equal(s.version, 1);
});

test('a connection to a port nothing listens on is refused (the TCP refusal becomes an RST)', async () => {
  const s = await session();
  const port = await serve(() => undefined);
  servers.pop()!.close();
  await assert.rejects(s.connect(port), (err: unknown) => isMuxwireError(err, 'MUXWIRE_ERR_CONN_REFUSED'));
});

test('carries bytes both ways, one TCP connection per mux connection', async () => {
  const l = link();
  const s = await session(l);
  const port = await serve((socket) => socket.pipe(socket));
  const a = await s.connect(port);
  const b = await s.connect(port);
  assert.equal(l.stats().connections, 2);
  const data = randomBytes(3 * 1024 * 1024 + 7);
  const back = (conn: MuxConnection, n: number): Promise<Buffer> =>
    new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let got = 0;
      conn.on('data', (c: Buffer) => {
        chunks.push(c);
        got += c.length;
        if (got >= n) resolve(Buffer.concat(chunks));
      });
    });
  const echoedA = back(a, data.length);
  const echoedB = back(b, 5);
  a.write(data);
  b.write('hello');
  assert.ok((await echoedA).equals(data));
  assert.equal((await echoedB).toString(), 'hello');
  a.destroy();
  b.destroy();
  await until(() => l.stats().connections === 0);
});

test('the device ending its side delivers what it sent, then the host connection ends', async () => {
  const s = await session();
  const payload = randomBytes(500_000);
  const port = await serve((socket) => socket.end(payload));
  const conn = await s.connect(port);
  const chunks: Buffer[] = [];
  conn.on('data', (c: Buffer) => chunks.push(c));
  await once(conn, 'end');
  assert.ok(Buffer.concat(chunks).equals(payload));
});

test('the host resetting a connection closes the TCP connection to the device', async () => {
  const s = await session();
  let accepted: Socket | undefined;
  const port = await serve((socket) => {
    accepted = socket;
    socket.on('error', () => undefined);
  });
  const conn = await s.connect(port);
  await until(() => accepted !== undefined);
  const closed = once(accepted!, 'close');
  conn.destroy();
  await closed;
});

test('a host that does not read stops the device socket: bytes held stay within the window and one read', async () => {
  const l = link();
  const s = await session(l);
  let sent = 0;
  let device: Socket | undefined;
  const chunk = Buffer.alloc(65536, 0x5a);
  const port = await serve((socket) => {
    device = socket;
    const pump = (): void => {
      while (sent < 64 * 1024 * 1024 && socket.write(chunk)) sent += chunk.length;
    };
    socket.on('drain', () => {
      sent += chunk.length;
      pump();
    });
    socket.on('error', () => undefined);
    pump();
  });
  const conn = await s.connect(port);
  conn.pause();
  // Wait until the device's writes stop making progress: the kernel's buffers and ours are full.
  let last = -1;
  while (sent !== last) {
    last = sent;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(sent < 64 * 1024 * 1024, 'the device was stopped before it sent everything');
  const held = l.stats().queuedToHost + s.stats().rxQueued + s.stats().readableBuffered;
  assert.ok(l.stats().queuedToHost <= 65536, `link holds ${l.stats().queuedToHost} bytes`);
  assert.ok(held <= HOST_WINDOW + 2 * 65536 + 65536, `host side holds ${held} bytes`);
  // Reading again lets everything through.
  let got = 0;
  conn.on('data', (c: Buffer) => (got += c.length));
  conn.resume();
  await until(() => got > 0);
  device!.destroy();
});

test('a device that does not read shrinks the window the host is told, and the host stops writing', async () => {
  const l = link();
  const s = await session(l);
  let device: Socket | undefined;
  const port = await serve((socket) => {
    device = socket;
    socket.pause();
    socket.on('error', () => undefined);
  });
  const conn = await s.connect(port);
  const chunk = Buffer.alloc(65536, 0xa5);
  let written = 0;
  const pump = (): void => {
    while (written < 64 * 1024 * 1024 && conn.write(chunk)) written += chunk.length;
  };
  conn.on('drain', () => {
    written += chunk.length;
    pump();
  });
  pump();
  // Wait until the host's writes stop making progress: the device's window is closed.
  let last = -1;
  while (written !== last) {
    last = written;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(written < 64 * 1024 * 1024, 'the host was stopped before it wrote everything');
  // What the link's socket has not written is what it took beyond the kernel's buffers: bounded
  // by the window it advertised, not by how much the host wanted to send.
  assert.ok(l.stats().unwrittenToDevice <= RECEIVE_WINDOW + 49152, `unwritten ${l.stats().unwrittenToDevice}`);
  // The device reads again: the writes complete.
  device!.resume();
  let received = 0;
  device!.on('data', (c: Buffer) => (received += c.length));
  await until(() => received >= written);
  conn.destroy();
});

test('closing the link ends every TCP connection, and the host session closes', async () => {
  const l = link();
  const s = await session(l);
  const accepted: Socket[] = [];
  const port = await serve((socket) => {
    accepted.push(socket);
    socket.on('error', () => undefined);
  });
  await s.connect(port);
  await s.connect(port);
  await until(() => accepted.length === 2);
  const sessionClosed = once(s, 'closed');
  l.close();
  await Promise.all(accepted.map((a) => once(a, 'close')));
  await sessionClosed;
  assert.equal(l.stats().connections, 0);
});
