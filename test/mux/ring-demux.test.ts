/**
 * The ring demultiplexer's own edges (DeviceSession `demux: 'ring'`), under both accelerators:
 * the lifetime of a connection's demuxer slot, bytes in the ring that are not the reader's (an
 * RST's reason, late packets of a closed connection), and the slot limit.
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { DeviceSession } from '../../src/mux/device-session.js';
import type { MuxConnection } from '../../src/mux/mux-connection.js';
import { HOST_WINDOW } from '../../src/mux/mux-connection.js';
import { TcpFlag } from '../../src/protocol/tcp-header.js';
import { selectAccel } from '../../src/accel/select.js';
import type { Accel } from '../../src/accel/accel.js';
import { LoopLink } from './helpers/loop-link.js';
import { ScriptedDevice } from './helpers/scripted-device.js';
import type { HostSegment } from './helpers/scripted-device.js';

const SYN = TcpFlag.SYN;
const ACK = TcpFlag.ACK;
const RST = TcpFlag.RST;
const FIN = TcpFlag.FIN;

const open: Array<{ session: DeviceSession; link: LoopLink }> = [];
afterEach(async () => {
  for (const { session, link } of open.splice(0)) {
    await session.close();
    link.close();
  }
});

function accelFor(mode: 'native' | 'js'): { accel: Accel | undefined; skip: string | false } {
  try {
    return { accel: selectAccel(mode), skip: false };
  } catch (err) {
    return { accel: undefined, skip: `native accelerator unavailable: ${(err as Error).message}` };
  }
}

function tick(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

for (const mode of ['native', 'js'] as const) {
  const { accel, skip } = accelFor(mode);
  const rtest = (name: string, fn: () => Promise<void>): void => {
    test(`${name} (${mode} accel)`, { skip }, fn);
  };

  function setup(opts: { maxConnections?: number; version?: 1 | 2 } = {}) {
    const device = new ScriptedDevice(opts.version ?? 2);
    const link = new LoopLink(device);
    const session = new DeviceSession(link, { demux: 'ring', accel, maxConnections: opts.maxConnections });
    open.push({ session, link });
    // Accept every SYN.
    device.onSegment = (s) => {
      if (s.flags === SYN) device.send({ sport: s.dport, dport: s.sport, seq: 0, ack: 1, flags: SYN | ACK, window: 131072 });
    };
    return { device, link, session };
  }

  function sendData(device: ScriptedDevice, conn: MuxConnection, seq: number, data: Buffer, flags = ACK): void {
    device.send({ sport: conn.devicePort, dport: conn.sourcePort, seq, ack: 1, flags, window: 131072 }, data);
  }

  /**
   * Fills a paused connection's readable side to its highWaterMark, so what the device sends next
   * stays in the ring. Returns the next sequence number.
   */
  async function fillReadable(device: ScriptedDevice, conn: MuxConnection): Promise<number> {
    conn.pause();
    let seq = 1;
    const packet = 32768;
    while (conn.readableLength < conn.readableHighWaterMark) {
      sendData(device, conn, seq, Buffer.alloc(packet, 'f'));
      seq += packet;
      await tick();
      await tick();
    }
    return seq;
  }

  async function readAll(conn: MuxConnection): Promise<string> {
    const chunks: Buffer[] = [];
    conn.on('data', (c: Buffer) => chunks.push(c));
    await once(conn, 'end');
    return Buffer.concat(chunks).toString();
  }

  rtest('uses the ring demuxer by default and opens one slot per connection', async () => {
    const device = new ScriptedDevice(2);
    const link = new LoopLink(device);
    const session = new DeviceSession(link);
    open.push({ session, link });
    assert.equal(session.demux, 'ring');
    device.onSegment = (s) => {
      if (s.flags === SYN) device.send({ sport: s.dport, dport: s.sport, seq: 0, ack: 1, flags: SYN | ACK, window: 131072 });
    };
    const a = await session.connect(7);
    const b = await session.connect(8);
    assert.equal(session.stats().rings, 2);
    a.destroy();
    b.destroy();
    assert.equal(session.stats().rings, 0, 'destroying a connection closes its slot');
  });

  rtest('keeps a closed connection\'s slot until the reader has its bytes, then closes it', async () => {
    const { device, session } = setup();
    await session.ready;
    const conn = await session.connect(7);
    const seq = await fillReadable(device, conn);
    sendData(device, conn, seq, Buffer.from('queued '));
    sendData(device, conn, seq + 7, Buffer.from('bytes'), FIN | ACK);
    await once(conn, 'closing');
    assert.equal(session.connectionCount, 0, 'the connection is released at FIN');
    assert.equal(session.stats().rings, 1, 'its ring still holds what the reader has not taken');
    assert.equal(conn.stats().rxQueued, 12);
    const text = readAll(conn);
    conn.resume();
    assert.ok((await text).endsWith('fqueued bytes'));
    assert.equal(session.stats().rings, 0);
  });

  rtest('never hands an RST\'s reason to the reader, even behind data waiting in the ring', async () => {
    const { device, session } = setup();
    await session.ready;
    const conn = await session.connect(7);
    const seq = await fillReadable(device, conn);
    sendData(device, conn, seq, Buffer.from('data'));
    device.send({ sport: conn.devicePort, dport: conn.sourcePort, seq: seq + 4, ack: 1, flags: RST, window: 0 }, Buffer.from('the reason\n'));
    await once(conn, 'closing');
    assert.equal(conn.stats().rxQueued, 4, 'the data waits in the ring, the reason is not counted');
    const text = readAll(conn);
    conn.resume();
    assert.ok((await text).endsWith('fdata'));
    assert.equal(conn.closeReason, 'reset');
  });

  rtest('answers late packets of a closing connection with an anonymous RST and delivers only its own bytes', async () => {
    const { device, session } = setup();
    await session.ready;
    const conn = await session.connect(7);
    const seq = await fillReadable(device, conn);
    const hostRst = device.waitFor((s) => (s.flags & RST) !== 0);
    sendData(device, conn, seq, Buffer.from('mine'), FIN | ACK);
    await hostRst;
    const anonymous = device.waitFor((s: HostSegment) => (s.flags & RST) !== 0 && s.seq === 0 && s.ack === seq + 4);
    sendData(device, conn, seq + 4, Buffer.from('late'));
    const r = await anonymous;
    assert.deepEqual([r.sport, r.dport, r.window], [conn.sourcePort, conn.devicePort, 0]);
    const text = readAll(conn);
    conn.resume();
    assert.ok((await text).endsWith('fmine'));
  });

  rtest('keeps a draining connection\'s source port out of use until its slot closes', async () => {
    const { device, session } = setup();
    await session.ready;
    const conn = await session.connect(7);
    const seq = await fillReadable(device, conn);
    sendData(device, conn, seq, Buffer.from('x'), FIN | ACK);
    await once(conn, 'closing');
    assert.equal(session.stats().rings, 1);
    // Open and close connections until the counter comes round; the draining port is skipped.
    const seen = new Set<number>();
    for (let i = 0; i < 3; i++) {
      const c = await session.connect(7);
      seen.add(c.sourcePort);
      c.destroy();
    }
    assert.equal(seen.has(conn.sourcePort), false);
    conn.resume();
    conn.destroy();
  });

  rtest('fails a connect with MUXWIRE_ERR_TOO_MANY_CONNECTIONS when every ring slot is taken', async () => {
    const { session } = setup({ maxConnections: 2 });
    await session.ready;
    const a = await session.connect(7);
    const b = await session.connect(8);
    await assert.rejects(session.connect(9), { code: 'MUXWIRE_ERR_TOO_MANY_CONNECTIONS' });
    a.destroy();
    const c = await session.connect(9);
    assert.equal(c.state, 'connected');
    b.destroy();
    c.destroy();
  });

  rtest('holds at most one window in the ring for a paused reader, and resets a device that sends more', async () => {
    const { device, session } = setup({ version: 1 });
    await session.ready;
    const conn = await session.connect(7);
    // Fill the readable side, then exactly one window in the ring: accepted.
    let seq = await fillReadable(device, conn);
    const packet = 32768;
    for (let n = 0; n < HOST_WINDOW; n += packet) {
      sendData(device, conn, seq, Buffer.alloc(packet, 2));
      seq += packet;
    }
    await tick();
    await tick();
    assert.equal(conn.state, 'connected');
    assert.equal(conn.stats().rxQueued, HOST_WINDOW);
    // One byte more than the window: the ring is full, the connection is reset.
    const rst = device.waitFor((s) => (s.flags & RST) !== 0);
    sendData(device, conn, seq, Buffer.alloc(1));
    await rst;
    assert.equal(conn.closeReason, 'overrun');
    conn.destroy();
    assert.equal(session.stats().rings, 0);
  });
}

test('refuses an unknown demux option with MUXWIRE_ERR_BAD_ARGUMENT before touching the link', () => {
  const link = new LoopLink(new ScriptedDevice(2));
  assert.throws(() => new DeviceSession(link, { demux: 'fast' as 'ring' }), { code: 'MUXWIRE_ERR_BAD_ARGUMENT' });
  link.close();
});
