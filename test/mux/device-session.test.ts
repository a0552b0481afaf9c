import { test, afterEach, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { DeviceSession } from '../../src/mux/device-session.js';
import type { MuxConnection } from '../../src/mux/mux-connection.js';
import { MAX_PAYLOAD } from '../../src/mux/mux-connection.js';
import { MuxProtocol } from '../../src/protocol/mux-header.js';
import { TcpFlag } from '../../src/protocol/tcp-header.js';
import { LoopLink } from './helpers/loop-link.js';
import { ScriptedDevice } from './helpers/scripted-device.js';
import { selectAccel } from '../../src/accel/select.js';
import type { HostSegment } from './helpers/scripted-device.js';

const SYN = TcpFlag.SYN;
const ACK = TcpFlag.ACK;
const RST = TcpFlag.RST;
const FIN = TcpFlag.FIN;
const PSH = TcpFlag.PSH;

const open: Array<{ session: DeviceSession; link: LoopLink }> = [];
afterEach(async () => {
  for (const { session, link } of open.splice(0)) {
    await session.close();
    link.close();
  }
});

type SessionOptions = NonNullable<ConstructorParameters<typeof DeviceSession>[1]>;

/**
 * Every edge case below runs under each demultiplexer: the ring path with the addon's C++ demuxer
 * and with its TypeScript twin, and the stream path (MuxPacketDecoder and views of transfers).
 */
interface Variant {
  label: string;
  opts: SessionOptions;
  skip: string | false;
}
const variants: Variant[] = [ringVariant('native'), ringVariant('js'), { label: 'stream demux', opts: { demux: 'stream' }, skip: false }];

function ringVariant(mode: 'native' | 'js'): Variant {
  try {
    return { label: `ring demux, ${mode} accel`, opts: { demux: 'ring', accel: selectAccel(mode) }, skip: false };
  } catch (err) {
    // Only the native selection can fail: no addon, or MUXWIRE_NO_NATIVE=1 (the runner's rerun).
    return { label: `ring demux, ${mode} accel`, opts: { demux: 'ring' }, skip: `native accelerator unavailable: ${(err as Error).message}` };
  }
}

function baseSetup(device: ScriptedDevice, opts: SessionOptions) {
  const link = new LoopLink(device);
  const session = new DeviceSession(link, opts);
  open.push({ session, link });
  return { device, link, session };
}

/** Accepts the next SYN with SYN|ACK and the given window; returns the SYN. */
async function acceptNext(device: ScriptedDevice, window = 131072): Promise<HostSegment> {
  const syn = await device.waitFor((s) => s.flags === SYN);
  device.send({ sport: syn.dport, dport: syn.sport, seq: 0, ack: 1, flags: SYN | ACK, window });
  return syn;
}

async function connectScripted(device: ScriptedDevice, session: DeviceSession, port = 1234, window = 131072) {
  const accepted = acceptNext(device, window);
  const conn = await session.connect(port);
  const syn = await accepted;
  return { conn, syn };
}

function collect(conn: MuxConnection): { data: () => Buffer; ended: Promise<void> } {
  const chunks: Buffer[] = [];
  conn.on('data', (c: Buffer) => chunks.push(c));
  const ended = once(conn, 'end').then(() => undefined);
  return { data: () => Buffer.concat(chunks), ended };
}

for (const v of variants) {
  const setup = (device = new ScriptedDevice(), opts: SessionOptions = {}) => baseSetup(device, { ...v.opts, ...opts });
  const vtest = (name: string, fn: (t: TestContext) => Promise<void>): void => {
    test(`${name} (${v.label})`, { skip: v.skip }, fn);
  };

  /** A connected connection whose reader takes everything, and the bare ACKs the host sends from here on. */
  const connectedWatchingAcks = async () => {
    const { device, session } = setup();
    await session.ready;
    const { conn, syn } = await connectScripted(device, session);
    collect(conn);
    await new Promise((r) => setImmediate(r)); // the handshake's ACK reaches the device first
    const acks: number[] = [];
    device.onSegment = (s) => {
      if (s.flags === ACK && s.data.length === 0) acks.push(s.ack);
    };
    return { device, conn, syn, acks };
  };

  vtest('offers VERSION 2.0 with a v1 header, then sends SETUP with tx_seq 0 and rx_seq 0xFFFF', async () => {
    const device = new ScriptedDevice(2);
    const sent: Buffer[] = [];
    const { session } = setup(device);
    // The first two packets on the wire, byte for byte (usbmux.md §2.3).
    const origReceive = device.receive.bind(device);
    device.receive = (chunk: Buffer) => {
      sent.push(Buffer.from(chunk));
      origReceive(chunk);
    };
    await session.ready;
    await new Promise((r) => setImmediate(r));
    assert.equal(session.version, 2);
    assert.equal(sent[0]!.toString('hex'), '00000000000000140000000200000000' + '00000000');
    assert.equal(sent[1]!.toString('hex'), '00000002' + '00000011' + 'feedface' + '0000' + 'ffff' + '07');
  });

  vtest('asks the link to send a connect\'s SYN at once, before anything else of the connect', async () => {
    const device = new ScriptedDevice();
    const { session, link } = setup(device);
    await session.ready;
    const sentBefore = link.sentPackets;
    const accepted = acceptNext(device);
    const connecting = session.connect(62078);
    // openConnection runs synchronously once the session is ready: the SYN was the one packet
    // sent, and the link was told to write it out right after.
    assert.equal(link.sentPackets, sentBefore + 1);
    assert.deepEqual(link.flushedAt, [sentBefore + 1]);
    const syn = await accepted;
    assert.equal(syn.flags, SYN);
    assert.equal(syn.seq, 0);
    assert.equal(syn.ack, 0);
    (await connecting).destroy();
  });

  vtest('uses 8-byte headers and sends no SETUP to a v1 device', async () => {
    const device = new ScriptedDevice(1);
    const { session } = setup(device);
    await session.ready;
    assert.equal(session.version, 1);
    const accepted = acceptNext(device);
    const conn = await session.connect(62078);
    await accepted;
    assert.equal(device.headers.some((h) => h.protocol === MuxProtocol.SETUP), false);
    assert.equal(device.headers.at(-1)!.magic, undefined);
    conn.destroy();
  });

  vtest('rejects ready with MUXWIRE_ERR_MUX_VERSION for a device that answers major 3', async () => {
    const { session, link } = setup(new ScriptedDevice(3));
    await assert.rejects(session.ready, { code: 'MUXWIRE_ERR_MUX_VERSION' });
    assert.equal(session.state, 'closed');
    assert.equal(link.closed, true);
  });

  vtest('rejects ready with MUXWIRE_ERR_TIMEOUT when the device never answers VERSION', async () => {
    const { session } = setup(new ScriptedDevice(null), { versionTimeoutMs: 50 });
    await assert.rejects(session.ready, { code: 'MUXWIRE_ERR_TIMEOUT' });
  });

  vtest('drops TCP packets that arrive before VERSION is answered', async () => {
    const device = new ScriptedDevice(null);
    const { session } = setup(device, { versionTimeoutMs: 2000 });
    device.send({ sport: 7, dport: 1, seq: 0, ack: 0, flags: ACK, window: 131072 }, Buffer.from('early'));
    await new Promise((r) => setTimeout(r, 20));
    // Not even an anonymous RST: the packet was dropped before demultiplexing.
    assert.equal(device.segments.length, 0);
    assert.equal(session.state, 'negotiating');
  });

  vtest('counts tx_seq on every v2 packet and echoes the device rx_seq', async () => {
    const device = new ScriptedDevice(2);
    const { session } = setup(device);
    await session.ready;
    const syn = device.waitFor((s) => s.flags === SYN);
    const connecting = session.connect(1000);
    const s = await syn;
    assert.equal(s.mux.txSeq, 1, 'SETUP carried 0, the SYN carries 1');
    assert.equal(s.mux.rxSeq, 0xffff);
    const acked = device.waitFor((x) => x.flags === ACK);
    device.send({ sport: s.dport, dport: s.sport, seq: 0, ack: 1, flags: SYN | ACK, window: 131072 }, undefined, 0x1234);
    const conn = await connecting;
    const ack = await acked;
    assert.equal(ack.flags, ACK);
    assert.equal(ack.mux.txSeq, 2);
    assert.equal(ack.mux.rxSeq, 0x1234);
    assert.equal(ack.seq, 1);
    assert.equal(ack.ack, 1);
    conn.destroy();
  });

  vtest('connects with SYN seq 0 ack 0 window 512, then ACK seq 1 ack 1', async () => {
    const { device, session } = setup();
    await session.ready;
    const { conn, syn } = await connectScripted(device, session, 62078);
    assert.equal(syn.dport, 62078);
    assert.equal(syn.sport, 1, 'the first source port is 1');
    assert.equal(syn.seq, 0);
    assert.equal(syn.ack, 0);
    assert.equal(syn.window, 131072);
    assert.equal(conn.state, 'connected');
    conn.destroy();
  });

  vtest('fails a connect the device refuses with RST as MUXWIRE_ERR_CONN_REFUSED, sending no RST back', async () => {
    const { device, session } = setup();
    await session.ready;
    device.onSegment = (s) => {
      if (s.flags === SYN) device.send({ sport: s.dport, dport: s.sport, seq: 0, ack: 1, flags: RST | ACK, window: 0 });
    };
    await assert.rejects(session.connect(5), { code: 'MUXWIRE_ERR_CONN_REFUSED' });
    await new Promise((r) => setImmediate(r));
    assert.equal(device.segments.filter((s) => s.flags & RST).length, 0);
    assert.equal(session.connectionCount, 0);
  });

  vtest('times out an unanswered SYN with MUXWIRE_ERR_TIMEOUT and resets it', async () => {
    const { device, session } = setup();
    await session.ready;
    const rst = device.waitFor((s) => (s.flags & RST) !== 0);
    await assert.rejects(session.connect(5, { timeoutMs: 30 }), { code: 'MUXWIRE_ERR_TIMEOUT' });
    const r = await rst;
    assert.equal(r.dport, 5);
    assert.equal(session.connectionCount, 0);
  });

  vtest('fails a connect answered with odd flags as refused and resets it', async () => {
    const { device, session } = setup();
    await session.ready;
    device.onSegment = (s) => {
      if (s.flags === SYN) device.send({ sport: s.dport, dport: s.sport, seq: 0, ack: 1, flags: ACK, window: 131072 });
    };
    const rst = device.waitFor((s) => (s.flags & RST) !== 0);
    await assert.rejects(session.connect(5), { code: 'MUXWIRE_ERR_CONN_REFUSED' });
    await rst;
  });

  vtest('fails connects in progress with MUXWIRE_ERR_NO_DEVICE when the device is unplugged', async () => {
    const { link, session } = setup();
    await session.ready;
    const connecting = session.connect(5);
    await new Promise((r) => setImmediate(r));
    link.unplug();
    await assert.rejects(connecting, { code: 'MUXWIRE_ERR_NO_DEVICE' });
    await assert.rejects(session.connect(6), { code: 'MUXWIRE_ERR_NO_DEVICE' });
  });

  vtest('delivers data received before a device RST, then ends the stream', async () => {
    const { device, session } = setup();
    await session.ready;
    const { conn, syn } = await connectScripted(device, session);
    const out = collect(conn);
    device.send({ sport: syn.dport, dport: syn.sport, seq: 1, ack: 1, flags: ACK, window: 131072 }, Buffer.from('hello '));
    device.send({ sport: syn.dport, dport: syn.sport, seq: 7, ack: 1, flags: ACK, window: 131072 }, Buffer.from('world'));
    device.send({ sport: syn.dport, dport: syn.sport, seq: 12, ack: 1, flags: RST, window: 0 }, Buffer.from('bye\n'));
    await out.ended;
    assert.equal(out.data().toString(), 'hello world');
    assert.equal(conn.closeReason, 'reset');
    await new Promise((r) => setImmediate(r));
    assert.equal(device.segments.filter((s) => s.flags & RST).length, 0, 'no RST answers an RST');
  });

  vtest('keeps PSH|ACK data, and takes FIN as the end after delivering its data, answering RST', async () => {
    const { device, session } = setup();
    await session.ready;
    const { conn, syn } = await connectScripted(device, session);
    const out = collect(conn);
    const rst = device.waitFor((s) => (s.flags & RST) !== 0);
    device.send({ sport: syn.dport, dport: syn.sport, seq: 1, ack: 1, flags: PSH | ACK, window: 131072 }, Buffer.from('pushed '));
    device.send({ sport: syn.dport, dport: syn.sport, seq: 8, ack: 1, flags: FIN | ACK, window: 131072 }, Buffer.from('last'));
    await out.ended;
    assert.equal(out.data().toString(), 'pushed last');
    assert.equal(conn.closeReason, 'fin');
    await rst;
  });

  vtest('ACKs small device data after a short delay, in one ACK for what came meanwhile', async () => {
    const { device, conn, syn, acks } = await connectedWatchingAcks();
    for (let i = 0; i < 5; i++) {
      device.send({ sport: syn.dport, dport: syn.sport, seq: 1 + i * 100, ack: 1, flags: ACK, window: 131072 }, Buffer.alloc(100, i));
    }
    while (acks.at(-1) !== 501) await new Promise((r) => setTimeout(r, 1));
    // However the packets were spread over turns of the loop, every ACK moved forward and the last
    // one covers everything (on an idle machine it is one ACK: [501]).
    assert.ok(acks.every((a, i) => a > (acks[i - 1] ?? 1) && a <= 501), `acks ${acks}`);
    conn.destroy();
  });

  vtest('ACKs at once, with no timer, once the device has used half the window', async (t) => {
    const { device, conn, syn, acks } = await connectedWatchingAcks();
    // Frozen timers: only the at-once rule can send an ACK.
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const settle = async (): Promise<void> => {
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    };
    device.send({ sport: syn.dport, dport: syn.sport, seq: 1, ack: 1, flags: ACK, window: 131072 }, Buffer.alloc(40000, 1));
    await settle();
    assert.deepEqual(acks, [], '40000 bytes: under half the window, the ACK waits');
    device.send({ sport: syn.dport, dport: syn.sport, seq: 40001, ack: 1, flags: ACK, window: 131072 }, Buffer.alloc(40000, 2));
    await settle();
    assert.deepEqual(acks, [80001], '80000 bytes: over half the window, ACKed at once');
    device.send({ sport: syn.dport, dport: syn.sport, seq: 80001, ack: 1, flags: ACK, window: 131072 }, Buffer.alloc(10, 3));
    await settle();
    assert.deepEqual(acks, [80001]);
    t.mock.timers.tick(2);
    await settle();
    assert.deepEqual(acks, [80001, 80011], 'the rest goes out when the delay is up');
    conn.destroy();
  });

  vtest('does not stall a device that only sends when its previous packet is ACKed', async () => {
    const { device, session } = setup();
    await session.ready;
    const { conn, syn } = await connectScripted(device, session);
    // Whole-window packets: the next one may only go once the host ACKs the last byte of this one,
    // which it can do only after the reader consumed it.
    const size = 131072;
    const packets = 24;
    let sent = 0;
    const sendNext = (): void => {
      if (sent === packets) return;
      // A whole window in 3 device packets of at most 49152 − 36 bytes.
      let left = size;
      while (left > 0) {
        const n = Math.min(left, 49116);
        device.send({ sport: syn.dport, dport: syn.sport, seq: 1 + sent * size + (size - left), ack: 1, flags: ACK, window: 131072 }, Buffer.alloc(n, sent));
        left -= n;
      }
      sent++;
    };
    device.onSegment = (s) => {
      if ((s.flags & ACK) !== 0 && s.ack === 1 + sent * size) sendNext();
    };
    sendNext();
    let received = 0;
    // A slow reader: pauses now and then, so the window-update ACK must come from the drain.
    conn.on('data', (c: Buffer) => {
      received += c.length;
      conn.pause();
      setTimeout(() => conn.resume(), 1);
    });
    while (received < size * packets) await new Promise((r) => setTimeout(r, 5));
    assert.equal(received, size * packets);
    conn.destroy();
  });

  vtest('never has more in flight than the device window and sends at most 49116 bytes per packet', async () => {
    const { device, session } = setup();
    await session.ready;
    const { conn, syn } = await connectScripted(device, session, 7, 60000);
    let acked = 1;
    let maxInFlight = 0;
    let maxData = 0;
    let total = 0;
    const want = 600_000;
    let deviceWindow = 60000;
    const done = new Promise<void>((resolve) => {
      device.onSegment = (s) => {
        if (s.data.length === 0) return;
        maxData = Math.max(maxData, s.data.length);
        const inFlight = s.seq + s.data.length - acked;
        maxInFlight = Math.max(maxInFlight, inFlight);
        total += s.data.length;
        // ACK lazily, with a window that changes, as a busy device would.
        setTimeout(() => {
          acked = Math.max(acked, s.seq + s.data.length);
          deviceWindow = deviceWindow === 60000 ? 150000 : 60000;
          device.send({ sport: syn.dport, dport: syn.sport, seq: 1, ack: acked, flags: ACK, window: deviceWindow });
          if (total >= want) resolve();
        }, 1);
      };
    });
    conn.write(Buffer.alloc(want, 7));
    await done;
    assert.equal(total, want);
    assert.ok(maxInFlight <= 150000, `in flight ${maxInFlight}`);
    assert.ok(maxData <= MAX_PAYLOAD, `packet of ${maxData}`);
    conn.destroy();
  });

  vtest('sends 64 KiB socket reads as full 49116-byte packets, not split at each read, and a short write at once', async () => {
    const { device, session } = setup();
    await session.ready;
    const { conn, syn } = await connectScripted(device, session, 7, 131072);
    // The device ACKs each packet at once with a full window, as the simulated device does.
    let received = 0;
    device.onSegment = (s) => {
      if (s.data.length === 0) return;
      received += s.data.length;
      device.send({ sport: syn.dport, dport: syn.sport, seq: 1, ack: 1 + received, flags: ACK, window: 131072 });
    };
    // Eight full socket reads in one turn, as a relay hands them over: 524288 bytes.
    const reads = 8;
    const pattern = Buffer.alloc(reads * 65536);
    for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 7 + (i >> 11)) & 0xff;
    for (let i = 0; i < reads; i++) conn.write(pattern.subarray(i * 65536, (i + 1) * 65536));
    await device.waitFor(() => received === pattern.length);
    const data = device.segments.filter((s) => s.data.length > 0);
    assert.deepEqual(Buffer.concat(data.map((s) => s.data)), pattern, 'every byte, in order');
    // Each packet is full or ends where the device's window ended (2 × 49116 + 32840 = 131072);
    // split at each read, every second packet would be the read's last 65536 − 49116 = 16420 bytes.
    const sizes = data.map((s) => s.data.length);
    assert.ok(sizes.slice(0, -1).every((n) => n === MAX_PAYLOAD || n === 131072 - 2 * MAX_PAYLOAD), `packet sizes ${sizes.join(' ')}`);
    assert.ok(sizes.length <= 12, `${sizes.length} packets for 8 reads`);
    // A short write (a request) is not held for more that might come: it goes out in this turn.
    const before = device.segments.length;
    conn.write(Buffer.from('GetValue'));
    await device.waitFor((s) => s.data.toString() === 'GetValue');
    assert.ok(device.segments.length > before);
    conn.destroy();
  });

  vtest('holds writes while the device window is closed, so the writer sees backpressure', async () => {
    const { device, session } = setup();
    await session.ready;
    const { conn, syn } = await connectScripted(device, session, 7, 4096);
    let writes = 0;
    while (conn.write(Buffer.alloc(16384))) writes++;
    await new Promise((r) => setTimeout(r, 10));
    const sent = device.segments.filter((s) => s.data.length > 0).reduce((n, s) => n + s.data.length, 0);
    assert.equal(sent, 4096, 'only one window went out');
    assert.ok(conn.stats().txPending <= 65536 + 16384, `pending ${conn.stats().txPending}`);
    assert.ok(writes < 10);
    // The device opens the window: everything goes out.
    const drained = once(conn, 'drain');
    device.send({ sport: syn.dport, dport: syn.sport, seq: 1, ack: 1 + 4096, flags: ACK, window: 1 << 20 });
    await drained;
    conn.destroy();
  });

  vtest('resets a connection whose device overruns the host window', async () => {
    const { device, session } = setup();
    await session.ready;
    const { conn, syn } = await connectScripted(device, session);
    conn.pause();
    const rst = device.waitFor((s) => (s.flags & RST) !== 0);
    for (let i = 0; i < 8; i++) {
      device.send({ sport: syn.dport, dport: syn.sport, seq: 1 + i * 49000, ack: 1, flags: ACK, window: 131072 }, Buffer.alloc(49000));
    }
    await rst;
    assert.equal(conn.closeReason, 'overrun');
    assert.equal(conn.closeError?.code, 'MUXWIRE_ERR_PROTOCOL');
    conn.destroy();
  });

  vtest('answers a packet for an unknown connection with an anonymous RST, and ignores an unknown RST', async () => {
    const { device, session } = setup();
    await session.ready;
    const rst = device.waitFor((s) => (s.flags & RST) !== 0);
    device.send({ sport: 7, dport: 4321, seq: 77, ack: 5, flags: ACK, window: 131072 }, Buffer.from('x'));
    const r = await rst;
    assert.deepEqual([r.sport, r.dport, r.seq, r.ack, r.window], [4321, 7, 0, 77, 0]);
    device.send({ sport: 7, dport: 4322, seq: 1, ack: 1, flags: RST, window: 0 });
    await new Promise((r2) => setTimeout(r2, 10));
    assert.equal(device.segments.filter((s) => s.flags & RST).length, 1);
  });

  vtest('resets the device side when the reader destroys the stream mid-transfer', async () => {
    const { device, session } = setup();
    await session.ready;
    const { conn, syn } = await connectScripted(device, session);
    device.send({ sport: syn.dport, dport: syn.sport, seq: 1, ack: 1, flags: ACK, window: 131072 }, Buffer.alloc(1000));
    await once(conn, 'data');
    const rst = device.waitFor((s) => (s.flags & RST) !== 0);
    conn.destroy();
    const r = await rst;
    assert.equal(r.sport, syn.sport);
    assert.equal(session.connectionCount, 0);
    assert.equal(conn.state, 'closed');
  });

  vtest('a writer that ends in the middle of a window-limited stream loses none of it: the RST follows the last byte', async () => {
    const { device, session } = setup();
    await session.ready;
    const { conn, syn } = await connectScripted(device, session, 9, 131072);
    // The device ACKs each packet a little later, as a busy device would, so the stream waits on
    // the window, and the last reads' tail (less than a packet) is still unsent when end() comes.
    let received = 0;
    device.onSegment = (s) => {
      if (s.data.length === 0) return;
      received += s.data.length;
      const ack = 1 + received;
      setTimeout(() => device.send({ sport: syn.dport, dport: syn.sport, seq: 1, ack, flags: ACK, window: 131072 }), 1);
    };
    const reads = 7;
    const pattern = Buffer.alloc(reads * 65536 + 1000);
    for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 13 + (i >> 9)) & 0xff;
    const rst = device.waitFor((s) => (s.flags & RST) !== 0);
    for (let i = 0; i < reads; i++) conn.write(pattern.subarray(i * 65536, (i + 1) * 65536));
    conn.end(pattern.subarray(reads * 65536));
    const r = await rst;
    const data = Buffer.concat(device.segments.filter((s) => s.data.length > 0).map((s) => s.data));
    assert.equal(data.length, pattern.length, 'every written byte before the RST');
    assert.deepEqual(data, pattern);
    assert.equal(r.seq, 1 + pattern.length, 'the RST follows the last byte');
  });

  vtest('a writer that ends right after a full socket read loses none of it', async () => {
    const { device, session } = setup();
    await session.ready;
    const { conn } = await connectScripted(device, session, 9, 1 << 20);
    // 65536 bytes: one packet of 49116 goes at once, and the tail waits for the end of the loop
    // turn in case more comes; the end comes first.
    const chunk = Buffer.alloc(65536, 0x5a);
    const rst = device.waitFor((s) => (s.flags & RST) !== 0);
    conn.end(chunk);
    const r = await rst;
    const data = Buffer.concat(device.segments.filter((s) => s.data.length > 0).map((s) => s.data));
    assert.deepEqual(data, chunk);
    assert.equal(r.seq, 1 + chunk.length);
  });

  vtest('resets after the written data when the writer ends (no half-close)', async () => {
    const { device, session } = setup();
    await session.ready;
    const { conn, syn } = await connectScripted(device, session);
    const out = collect(conn);
    const rst = device.waitFor((s) => (s.flags & RST) !== 0);
    device.send({ sport: syn.dport, dport: syn.sport, seq: 1, ack: 1, flags: ACK, window: 131072 }, Buffer.from('before'));
    await once(conn, 'data');
    conn.end(Buffer.from('request'));
    const r = await rst;
    const data = device.segments.filter((s) => s.data.length > 0).map((s) => s.data.toString()).join('');
    assert.equal(data, 'request');
    assert.equal(r.seq, 1 + 'request'.length);
    await out.ended;
    assert.equal(out.data().toString(), 'before');
  });

  vtest('delivers received data and ends every stream when the device is unplugged mid-transfer', async () => {
    const { device, session, link } = setup();
    await session.ready;
    const a = await connectScripted(device, session, 100);
    const b = await connectScripted(device, session, 101);
    const outA = collect(a.conn);
    const outB = collect(b.conn);
    device.send({ sport: a.syn.dport, dport: a.syn.sport, seq: 1, ack: 1, flags: ACK, window: 131072 }, Buffer.from('for a'));
    device.send({ sport: b.syn.dport, dport: b.syn.sport, seq: 1, ack: 1, flags: ACK, window: 131072 }, Buffer.from('for b'));
    a.conn.write(Buffer.alloc(300_000)); // still sending when the cable goes
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    link.unplug();
    await Promise.all([outA.ended, outB.ended]);
    assert.equal(outA.data().toString(), 'for a');
    assert.equal(outB.data().toString(), 'for b');
    assert.equal(a.conn.closeError?.code, 'MUXWIRE_ERR_NO_DEVICE');
    assert.equal(session.state, 'closed');
  });

  vtest('hands out source ports past the wrap without failing and skips ports in use', async () => {
    const { device, session } = setup(new ScriptedDevice(), { firstSourcePort: 65534 });
    await session.ready;
    device.onSegment = (s) => {
      if (s.flags === SYN) device.send({ sport: s.dport, dport: s.sport, seq: 0, ack: 1, flags: SYN | ACK, window: 131072 });
    };
    const c1 = await session.connect(1);
    const c2 = await session.connect(1);
    const c3 = await session.connect(1);
    assert.deepEqual([c1.sourcePort, c2.sourcePort, c3.sourcePort], [65534, 65535, 1]);
    c1.destroy();
    const c4 = await session.connect(1);
    assert.equal(c4.sourcePort, 2, 'the counter moves on; freed ports are not reused at once');
    for (const c of [c2, c3, c4]) c.destroy();
  });

  vtest('logs CONTROL messages and keeps going', async () => {
    const { device, session } = setup();
    await session.ready;
    device.sendRaw(MuxProtocol.CONTROL, Buffer.concat([Buffer.of(7), Buffer.from('hello from the device')]));
    device.sendRaw(MuxProtocol.CONTROL, Buffer.alloc(0));
    const { conn } = await connectScripted(device, session);
    assert.equal(conn.state, 'connected');
    conn.destroy();
  });

  vtest('closes a device whose packet length is impossible', async () => {
    const { device, session } = setup();
    await session.ready;
    const closed = once(session, 'closed');
    const bad = Buffer.alloc(16);
    bad.writeUInt32BE(6, 0);
    bad.writeUInt32BE(0x7fffffff, 4);
    device.onTransmit(bad);
    const [err] = await closed;
    assert.equal((err as { code: string }).code, 'MUXWIRE_ERR_BAD_LENGTH');
  });
}
