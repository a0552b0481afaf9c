/**
 * Zero-copy delivery from a ring-mode connection to a socket (`MuxConnection.relayTo`), under both
 * accelerators: views of ring memory go to the socket and are released only by its write
 * callbacks, so the pattern arrives intact while the device keeps overwriting the ring, a client
 * that stops reading holds the device at one window, and the end comes after the last byte.
 * Each runs twice: through the socket object alone, and with the socket's descriptor given to the
 * demuxer, which (native accelerator) then sends payloads to it directly whenever nothing is queued
 * and falls back to the ring when the socket is full.
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeviceSession } from '../../src/mux/device-session.js';
import { HOST_WINDOW } from '../../src/mux/mux-connection.js';
import { DeviceMux } from '../../src/sim/device-mux.js';
import { serveBenchServices, encodeCount, findPatternMismatch } from '../../src/sim/bench-services.js';
import { selectAccel } from '../../src/accel/select.js';
import type { Accel } from '../../src/accel/accel.js';
import { TcpFlag } from '../../src/protocol/tcp-header.js';
import { LoopLink } from './helpers/loop-link.js';
import { ScriptedDevice } from './helpers/scripted-device.js';
import type { LoopPeer } from './helpers/loop-link.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function accelFor(mode: 'native' | 'js'): { accel: Accel | undefined; skip: string | false } {
  try {
    return { accel: selectAccel(mode), skip: false };
  } catch (err) {
    return { accel: undefined, skip: `native accelerator unavailable: ${(err as Error).message}` };
  }
}

/** A connected pair of UNIX sockets: `host` is the daemon's end, `client` the user's. */
async function socketPair(): Promise<{ host: Socket; client: Socket }> {
  const dir = mkdtempSync(join(tmpdir(), 'muxwire-relay-'));
  const path = join(dir, 's');
  const server: Server = createServer();
  server.listen(path);
  await once(server, 'listening');
  const accepted = once(server, 'connection');
  const client = connect(path);
  const [host] = (await accepted) as [Socket];
  await once(client, 'connect').catch(() => undefined);
  cleanups.push(() => {
    host.destroy();
    client.destroy();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { host, client };
}

/** The descriptor behind a net.Socket, as the daemon hands it to relayTo. */
function fdOf(socket: Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  assert.ok(typeof fd === 'number' && fd >= 0, 'a UNIX socket has a descriptor');
  return fd;
}

/** Reads `total` bytes of the source service's pattern; where the first wrong byte was, or -1. */
async function readPattern(client: Socket, total: number): Promise<{ got: number; mismatch: number }> {
  let got = 0;
  let mismatch = -1;
  for await (const chunk of client as AsyncIterable<Buffer>) {
    if (mismatch < 0) {
      const at = findPatternMismatch(chunk, got);
      if (at >= 0) mismatch = got + at;
    }
    got += chunk.length;
    if (got >= total) break;
  }
  return { got, mismatch };
}

function openDescriptors(): number {
  return readdirSync('/proc/self/fd').length;
}

for (const mode of ['native', 'js'] as const) {
  const { accel, skip } = accelFor(mode);
  const rtest = (name: string, fn: () => Promise<void>): void => {
    test(`${name} (${mode} accel)`, { skip }, fn);
  };

  async function session(peer: LoopPeer, demux: 'ring' | 'stream' = 'ring'): Promise<DeviceSession> {
    const link = new LoopLink(peer);
    const s = new DeviceSession(link, { demux, accel });
    cleanups.push(async () => {
      await s.close();
      link.close();
    });
    await s.ready;
    return s;
  }

  async function simulated(): Promise<DeviceSession> {
    const mux = new DeviceMux({ version: 2 });
    serveBenchServices(mux);
    return session(mux);
  }

  /**
   * A scripted device that accepts a connection to its port 5, relayed to a socket; `delivered()`
   * ends the daemon's side and resolves with everything the client got.
   */
  async function scriptedRelay(viaFd: boolean) {
    const device = new ScriptedDevice(2);
    device.onSegment = (seg) => {
      if (seg.flags === TcpFlag.SYN) device.send({ sport: seg.dport, dport: seg.sport, seq: 0, ack: 1, flags: TcpFlag.SYN | TcpFlag.ACK, window: 131072 });
    };
    const s = await session(device);
    const conn = await s.connect(5);
    const { host, client } = await socketPair();
    conn.relayTo(host, viaFd ? fdOf(host) : undefined);
    const ended = once(conn, 'end');
    const delivered = async (): Promise<string> => {
      host.end();
      const chunks: Buffer[] = [];
      for await (const c of client as AsyncIterable<Buffer>) chunks.push(c);
      return Buffer.concat(chunks).toString();
    };
    return { device, s, conn, ended, delivered };
  }

  for (const viaFd of [false, true]) {
  const how = viaFd ? ', descriptor given' : '';
  rtest(`relays 8 MB from the source service to a socket, intact${how}`, async () => {
    const s = await simulated();
    const conn = await s.connect(19);
    const { host, client } = await socketPair();
    assert.equal(conn.relayTo(host, viaFd ? fdOf(host) : undefined), true);
    const total = 8 * 1024 * 1024;
    conn.write(encodeCount(total));
    const { got, mismatch } = await readPattern(client, total);
    assert.equal(got, total);
    assert.equal(mismatch, -1, 'no view was overwritten before the socket took it');
    assert.equal(conn.stats().rxQueued, 0, 'every byte was released');
    const direct = conn.stats().bytesRelayedDirect;
    if (viaFd && mode === 'native') assert.ok(direct > total / 2, `most bytes went straight to the socket (${direct})`);
    else assert.equal(direct, 0, 'no direct sends without the native core and a descriptor');
    conn.destroy();
  });

  rtest(`holds a device at one window while the client reads nothing, then delivers the rest${how}`, async () => {
    const s = await simulated();
    const conn = await s.connect(19);
    const { host, client } = await socketPair();
    client.pause();
    conn.relayTo(host, viaFd ? fdOf(host) : undefined);
    const total = 16 * 1024 * 1024;
    conn.write(encodeCount(total));
    // Wait until the device is stuck: no more bytes arrive for a while.
    let last = -1;
    while (conn.stats().bytesReceived !== last) {
      last = conn.stats().bytesReceived;
      await new Promise((r) => setTimeout(r, 50));
    }
    const st = conn.stats();
    assert.ok(st.rxQueued <= HOST_WINDOW, `ring holds ${st.rxQueued}`);
    assert.ok(st.bytesReceived < total, 'the device was stopped by the window');
    client.resume();
    const { got, mismatch } = await readPattern(client, total);
    assert.equal(got, total);
    assert.equal(mismatch, -1);
    conn.destroy();
  });

  rtest(`ends the connection after the socket took the last byte the device sent before FIN${how}`, async () => {
    const { device, s, conn, ended, delivered } = await scriptedRelay(viaFd);
    const acks: number[] = [];
    device.onSegment = (seg) => {
      // Past the handshake's ACK (ack 1), which may reach the device only now.
      if (seg.flags === TcpFlag.ACK && seg.data.length === 0 && seg.ack > 1) acks.push(seg.ack);
    };
    device.send({ sport: 5, dport: conn.sourcePort, seq: 1, ack: 1, flags: TcpFlag.ACK, window: 131072 }, Buffer.from('taken '));
    while (acks.length === 0) await new Promise((r) => setImmediate(r));
    assert.deepEqual(acks, [7], 'one ACK, sent once the socket has the bytes');
    device.send({ sport: 5, dport: conn.sourcePort, seq: 7, ack: 1, flags: TcpFlag.FIN | TcpFlag.ACK, window: 131072 }, Buffer.from('then the end'));
    await ended;
    assert.equal(await delivered(), 'taken then the end');
    assert.equal(s.stats().rings, 0, 'the slot closed once everything was taken');
  });

  rtest(`gives the client exactly the bytes before the device's RST: not its reason, not a late packet${how}`, async () => {
    const { device, conn, ended, delivered } = await scriptedRelay(viaFd);
    device.send({ sport: 5, dport: conn.sourcePort, seq: 1, ack: 1, flags: TcpFlag.ACK, window: 131072 }, Buffer.from('the data'));
    device.send({ sport: 5, dport: conn.sourcePort, seq: 9, ack: 1, flags: TcpFlag.RST, window: 0 }, Buffer.from('connection closed by the device service'));
    // A device that sends on after its RST: the host answers with an anonymous RST, the client sees nothing.
    device.send({ sport: 5, dport: conn.sourcePort, seq: 9, ack: 1, flags: TcpFlag.ACK, window: 131072 }, Buffer.from('late'));
    await ended;
    assert.equal(await delivered(), 'the data');
  });
  }

  rtest('lets go of the descriptor with the socket: the client sees the end, no descriptor leaks', async () => {
    const s = await simulated();
    const conn = await s.connect(7);
    const { host, client } = await socketPair();
    const before = openDescriptors();
    assert.equal(conn.relayTo(host, fdOf(host)), true);
    // The native core holds a duplicate of the descriptor while relaying.
    assert.equal(openDescriptors(), before + (mode === 'native' ? 1 : 0));
    conn.write('ping');
    const [echo] = (await once(client, 'data')) as [Buffer];
    assert.equal(echo.toString(), 'ping');
    // The daemon closes its end while the device connection is still open: the duplicate must
    // not keep the client's socket alive.
    const clientEnded = once(client, 'end');
    const hostClosed = once(host, 'close');
    host.destroy();
    await clientEnded;
    await hostClosed;
    assert.equal(openDescriptors(), before - 1, 'the socket and the duplicate are both closed');
    assert.equal(conn.state, 'connected');
    conn.destroy();
  });

  rtest('with directAfter, requests and replies take no duplicate; bulk data past it does, and arrives intact', async () => {
    const s = await simulated();
    const echo = await s.connect(7);
    const small = await socketPair();
    const before = openDescriptors();
    assert.equal(echo.relayTo(small.host, fdOf(small.host), 32 * 1024), true);
    for (const word of ['ping', 'pong']) {
      echo.write(word);
      const [back] = (await once(small.client, 'data')) as [Buffer];
      assert.equal(back.toString(), word);
    }
    assert.equal(openDescriptors(), before, 'replies alone never attach the descriptor');
    assert.equal(echo.stats().bytesRelayedDirect, 0);
    echo.destroy();

    const source = await s.connect(19);
    const { host, client } = await socketPair();
    const withPair = openDescriptors();
    assert.equal(source.relayTo(host, fdOf(host), 32 * 1024), true);
    const total = 8 * 1024 * 1024;
    source.write(encodeCount(total));
    const { got, mismatch } = await readPattern(client, total);
    assert.equal(got, total);
    assert.equal(mismatch, -1, 'the bytes before and after the switch are in order');
    const direct = source.stats().bytesRelayedDirect;
    // Leaving the loop destroys the client: wait for its descriptor to go.
    client.destroy();
    if (!client.closed) await once(client, 'close');
    const duplicates = mode === 'native' ? 1 : 0;
    assert.equal(openDescriptors(), withPair - 1 + duplicates, 'the core holds a duplicate once bulk data came (native)');
    if (mode === 'native') assert.ok(direct > total / 2, `most bytes went straight to the socket (${direct})`);
    else assert.equal(direct, 0);
    const hostClosed = once(host, 'close');
    host.destroy();
    await hostClosed;
    assert.equal(openDescriptors(), withPair - 2, 'the socket and the duplicate are both closed');
    source.destroy();
  });

  rtest('declines to relay on the stream path', async () => {
    const mux = new DeviceMux({ version: 2 });
    serveBenchServices(mux);
    const s = await session(mux, 'stream');
    const conn = await s.connect(7);
    const { host } = await socketPair();
    assert.equal(conn.relayTo(host), false);
    conn.destroy();
  });
}
