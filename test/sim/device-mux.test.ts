import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { Duplex } from 'node:stream';
import { describe, test } from 'node:test';
import { isMuxwireError } from '../../src/errors.js';
import { DeviceMux } from '../../src/sim/device-mux.js';
import { encodeMuxPacket, encodeVersionPayload } from '../../src/protocol/mux-header.js';
import { HostHarness, MuxProtocol, TcpFlag } from './host-harness.js';

/** A listener that hands out the accepted streams in order. */
function accepting(host: HostHarness, port: number): Duplex[] {
  const streams: Duplex[] = [];
  host.mux.listen(port, (s) => {
    s.on('error', () => undefined);
    streams.push(s);
  });
  return streams;
}

function collect(stream: Duplex): Buffer[] {
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return chunks;
}

/** Resolves when the stream closes, whether or not it failed (events.once rejects on 'error'). */
function closed(stream: Duplex): Promise<void> {
  return new Promise((resolve) => stream.once('close', () => resolve()));
}

/** Lets streams and microtasks run (write callbacks, pipe, queued ACKs). */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

describe('DeviceMux negotiation', () => {
  test('answers a VERSION offering 2 with major 2 in an 8-byte header, then reads 16-byte headers', () => {
    const host = new HostHarness();
    assert.equal(host.mux.version, undefined);
    assert.equal(host.negotiate(2), 2);
    assert.equal(host.mux.version, 2);
    assert.equal(host.mux.setupReceived, true);
    // A TCP packet in the v2 layout is understood: a SYN to a closed port is refused.
    const { tcp, header } = host.connect(1, 1234);
    assert.equal(tcp.flags & TcpFlag.RST, TcpFlag.RST);
    assert.equal(header.magic, 0xfeedface);
  });

  test('the VERSION reply is 20 bytes: 00000000 00000014 00000002 00000000 00000000', () => {
    const host = new HostHarness();
    host.mux.receive(encodeMuxPacket(1, { protocol: MuxProtocol.VERSION }, encodeVersionPayload({ major: 2, minor: 0 })));
    const [reply] = host.takeRaw();
    assert.equal(reply?.toString('hex'), '00000000' + '00000014' + '00000002' + '00000000' + '00000000');
  });

  test('answers major 1 when configured for version 1 and keeps 8-byte headers', () => {
    const host = new HostHarness({ version: 1 });
    assert.equal(host.negotiate(2), 1);
    assert.equal(host.mux.version, 1);
    accepting(host, 62078);
    const { tcp, header } = host.connect(1, 62078);
    assert.equal(tcp.flags, TcpFlag.SYN | TcpFlag.ACK);
    assert.equal(header.magic, undefined);
    assert.equal(header.length, 8 + 20);
  });

  test('answers major 1 to a host that offers only 1', () => {
    const host = new HostHarness();
    assert.equal(host.negotiate(1), 1);
    assert.equal(host.mux.version, 1);
  });

  test('ignores a SETUP with a payload other than 07 and says so in a CONTROL warning', () => {
    const host = new HostHarness();
    host.offerVersion(2);
    host.version = 2;
    host.send(MuxProtocol.SETUP, Buffer.of(9));
    assert.equal(host.mux.setupReceived, false);
    const [p] = host.take();
    assert.equal(p?.header.protocol, MuxProtocol.CONTROL);
    assert.equal(p?.payload[0], 5);
  });

  test('drops TCP before VERSION without answering (the header size is not known yet)', () => {
    const host = new HostHarness();
    host.mux.listen(7, () => undefined);
    host.tcp({ sport: 1, dport: 7, flags: TcpFlag.SYN });
    assert.equal(host.take().length, 0);
    assert.equal(host.mux.connectionCount, 0);
  });

  test('numbers its v2 packets from 0 after SETUP and echoes the host tx_seq in rx_seq', () => {
    const host = new HostHarness();
    host.negotiate(2);
    accepting(host, 7);
    host.tcp({ sport: 1, dport: 7, flags: TcpFlag.SYN }); // host tx_seq 1
    const first = host.takeOneTcp();
    assert.equal(first.header.txSeq, 0);
    assert.equal(first.header.rxSeq, 1);
    host.tcp({ sport: 2, dport: 7, flags: TcpFlag.SYN }); // host tx_seq 2
    const second = host.takeOneTcp();
    assert.equal(second.header.txSeq, 1);
    assert.equal(second.header.rxSeq, 2);
  });

  test('a new VERSION while active (the host stack restarted) ends every connection and answers again', async () => {
    const host = new HostHarness();
    host.negotiate(2);
    const streams = accepting(host, 7);
    host.connect(1, 7);
    assert.equal(host.mux.connectionCount, 1);
    const streamClosed = closed(streams[0]!);
    // The new host speaks v1 headers until it hears the reply, although the device was in v2.
    host.version = 1;
    assert.equal(host.negotiate(2), 2);
    await streamClosed;
    assert.equal(host.mux.connectionCount, 0);
    assert.ok(isMuxwireError(streams[0]!.errored, 'MUXWIRE_ERR_CONN_RESET'));
    const again = host.connect(5, 7);
    assert.equal(again.tcp.flags, TcpFlag.SYN | TcpFlag.ACK);
    assert.equal(again.header.txSeq, 0);
  });
});

describe('DeviceMux connections', () => {
  test('answers SYN with SYN|ACK: ports swapped, seq 0, ack 1, window 131072 (field 512)', () => {
    const host = new HostHarness();
    host.negotiate(2);
    const streams = accepting(host, 62078);
    host.tcp({ sport: 1, dport: 62078, flags: TcpFlag.SYN, seq: 0, ack: 0 });
    const { tcp, data, header } = host.takeOneTcp();
    assert.deepEqual(tcp, { sport: 62078, dport: 1, seq: 0, ack: 1, flags: 0x12, window: 131072 });
    assert.equal(data.length, 0);
    assert.equal(header.length, 36);
    assert.equal(streams.length, 1);
    assert.equal(host.mux.connectionCount, 1);
  });

  test('acknowledges a host SYN with a random initial sequence number (usbmuxd2) as seq + 1', async () => {
    const host = new HostHarness();
    host.negotiate(2);
    accepting(host, 7);
    host.tcp({ sport: 9, dport: 7, flags: TcpFlag.SYN, seq: 0xfffffffe });
    assert.equal(host.takeOneTcp().tcp.ack, 0xffffffff);
    host.tcp({ sport: 9, dport: 7, flags: TcpFlag.ACK, seq: 0xffffffff, ack: 1 }, Buffer.from('ab'));
    await settle();
    const ack = host.takeOneTcp();
    assert.equal(ack.tcp.ack, 1, 'wraps at 32 bits');
  });

  test('refuses connections beyond maxConnections with an RST that says why', () => {
    const host = new HostHarness({ maxConnections: 2 });
    host.negotiate(2);
    accepting(host, 7);
    host.connect(1, 7);
    host.connect(2, 7);
    const { tcp, data } = host.connect(3, 7);
    assert.equal(tcp.flags, TcpFlag.RST);
    assert.match(data.toString(), /too many connections/);
    assert.equal(host.mux.connectionCount, 2);
  });

  test('refuses a SYN to a port with no listener with RST', () => {
    const host = new HostHarness();
    host.negotiate(2);
    host.tcp({ sport: 3, dport: 4444, flags: TcpFlag.SYN, seq: 0 });
    const { tcp } = host.takeOneTcp();
    assert.equal(tcp.flags, TcpFlag.RST);
    assert.equal(tcp.sport, 4444);
    assert.equal(tcp.dport, 3);
    assert.equal(host.mux.connectionCount, 0);
  });

  test('carries data both ways with sequence and acknowledgement numbers moving by bytes', async () => {
    const host = new HostHarness();
    host.negotiate(2);
    const streams = accepting(host, 7);
    host.connect(1, 7);
    const stream = streams[0]!;
    const got = collect(stream);
    await settle(); // the stream starts flowing
    host.tcp({ sport: 1, dport: 7, flags: TcpFlag.ACK, seq: 1, ack: 1 }, Buffer.from('hello'));
    assert.equal(host.take().length, 0, 'the ACK waits a turn for a reply to carry it');
    await settle();
    // One pure ACK, covering the 5 bytes, window still full (the service read them).
    const ack = host.takeOneTcp();
    assert.deepEqual(ack.tcp, { sport: 7, dport: 1, seq: 1, ack: 6, flags: TcpFlag.ACK, window: 131072 });
    assert.equal(Buffer.concat(got).toString(), 'hello');

    let written = false;
    stream.write(Buffer.from('world!'), () => {
      written = true;
    });
    await settle();
    assert.equal(written, true);
    const data = host.takeOneTcp();
    assert.deepEqual(data.tcp, { sport: 7, dport: 1, seq: 1, ack: 6, flags: TcpFlag.ACK, window: 131072 });
    assert.equal(data.data.toString(), 'world!');
    stream.write(Buffer.from('again'));
    await settle();
    assert.equal(host.takeOneTcp().tcp.seq, 7);

    host.tcp({ sport: 1, dport: 7, flags: TcpFlag.ACK, seq: 6, ack: 12 }, Buffer.from(' there'));
    await settle();
    assert.equal(host.takeOneTcp().tcp.ack, 12);
    assert.equal(Buffer.concat(got).toString(), 'hello there');
  });

  test('carries the ACK on a prompt reply instead of sending a pure ACK first (as real devices do)', async () => {
    const host = new HostHarness();
    host.negotiate(2);
    host.mux.listen(7, (s) => s.pipe(s));
    host.connect(1, 7);
    await settle();
    host.tcp({ sport: 1, dport: 7, flags: TcpFlag.ACK, seq: 1, ack: 1 }, Buffer.from('ping'));
    host.tcp({ sport: 1, dport: 7, flags: TcpFlag.ACK, seq: 5, ack: 1 }, Buffer.from('pong'));
    await settle();
    await settle();
    const packets = host.take();
    assert.ok(packets.every((p) => p.data!.length > 0), 'no pure ACK');
    assert.equal(Buffer.concat(packets.map((p) => p.data!)).toString(), 'pingpong');
    assert.equal(packets[packets.length - 1]!.tcp!.ack, 9);
  });

  test('never sends beyond the host window, and resumes when the host acknowledges', async () => {
    const host = new HostHarness();
    host.negotiate(2);
    const streams = accepting(host, 19);
    host.connect(1, 19, 1024);
    const stream = streams[0]!;
    const payload = Buffer.alloc(3000, 0x61);
    let done = false;
    stream.write(payload, () => {
      done = true;
    });
    await settle();
    let packets = host.take();
    assert.deepEqual(packets.map((p) => [p.tcp?.seq, p.data?.length]), [[1, 1024]]);
    assert.equal(done, false, 'the write completes only when every byte went out');

    // Acknowledging half opens half a window.
    host.tcp({ sport: 1, dport: 19, flags: TcpFlag.ACK, seq: 1, ack: 513, window: 1024 });
    packets = host.take();
    assert.deepEqual(packets.map((p) => [p.tcp?.seq, p.data?.length]), [[1025, 512]]);

    // A window that grows lets more go without a new ACK number.
    host.tcp({ sport: 1, dport: 19, flags: TcpFlag.ACK, seq: 1, ack: 513, window: 2048 });
    packets = host.take();
    assert.deepEqual(packets.map((p) => [p.tcp?.seq, p.data?.length]), [[1537, 1024]]);

    host.tcp({ sport: 1, dport: 19, flags: TcpFlag.ACK, seq: 1, ack: 2561, window: 2048 });
    packets = host.take();
    assert.deepEqual(packets.map((p) => [p.tcp?.seq, p.data?.length]), [[2561, 440]]);
    await settle();
    assert.equal(done, true);
  });

  test('cuts data into packets of at most 49152 bytes with headers (49116 of data in v2)', async () => {
    const host = new HostHarness();
    host.negotiate(2);
    const streams = accepting(host, 19);
    host.connect(1, 19, 0x80000);
    streams[0]!.write(Buffer.alloc(120000, 1));
    await settle();
    const packets = host.take();
    assert.deepEqual(packets.map((p) => p.raw.length), [49152, 49152, 120000 - 2 * 49116 + 36]);
    assert.deepEqual(packets.map((p) => p.tcp?.seq), [1, 49117, 98233]);
  });

  test('honours a smaller configured packet size', async () => {
    const host = new HostHarness({ maxPacketSize: 16384 });
    host.negotiate(2);
    const streams = accepting(host, 19);
    host.connect(1, 19);
    streams[0]!.write(Buffer.alloc(40000, 1));
    await settle();
    assert.ok(host.take().every((p) => p.raw.length <= 16384));
  });

  test('accepts host packets split across transfers at every byte and at random points', async () => {
    // The same host conversation: VERSION, SETUP, SYN, ACK, two data packets.
    const reference = new HostHarness();
    reference.hold = true;
    const version = encodeMuxPacket(1, { protocol: MuxProtocol.VERSION }, encodeVersionPayload({ major: 2, minor: 0 }));
    reference.version = 2;
    reference.send(MuxProtocol.SETUP, Buffer.of(7));
    reference.tcp({ sport: 1, dport: 7, flags: TcpFlag.SYN });
    reference.tcp({ sport: 1, dport: 7, flags: TcpFlag.ACK, seq: 1, ack: 1 });
    reference.tcp({ sport: 1, dport: 7, flags: TcpFlag.ACK, seq: 1, ack: 1 }, Buffer.from('split '));
    reference.tcp({ sport: 1, dport: 7, flags: TcpFlag.ACK, seq: 7, ack: 1 }, Buffer.alloc(3000, 0x7a));
    const wire = Buffer.concat([version, ...reference.held]);

    const splits: number[][] = [Array.from({ length: wire.length - 1 }, (_, i) => i + 1)];
    let seed = 7;
    for (let round = 0; round < 20; round++) {
      const cuts = new Set<number>();
      for (let i = 0; i < 6; i++) {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff;
        cuts.add(1 + (seed % (wire.length - 1)));
      }
      splits.push([...cuts].sort((a, b) => a - b));
    }
    for (const cuts of splits) {
      const host = new HostHarness();
      const got: Buffer[] = [];
      host.mux.listen(7, (s) => s.on('data', (c: Buffer) => got.push(c)));
      let at = 0;
      for (const cut of [...cuts, wire.length]) {
        host.mux.receive(wire.subarray(at, cut));
        at = cut;
      }
      await settle();
      const body = Buffer.concat(got);
      assert.equal(body.length, 3006);
      assert.equal(body.subarray(0, 6).toString(), 'split ');
      assert.equal(host.mux.setupReceived, true);
      const packets = host.sent.map((raw) => raw.readUInt32BE(0));
      assert.equal(packets[0], MuxProtocol.VERSION);
      assert.ok(packets.slice(1).every((p) => p === MuxProtocol.TCP));
    }
  });

  test('a host RST delivers the data sent before it, fails pending writes and closes the stream', async () => {
    const host = new HostHarness();
    host.negotiate(2);
    const streams = accepting(host, 7);
    host.connect(1, 7, 256);
    const stream = streams[0]!;
    const got = collect(stream);
    let writeError: Error | null | undefined;
    stream.write(Buffer.alloc(1000), (err) => {
      writeError = err;
    });
    await settle();
    host.take();
    const streamClosed = closed(stream);
    host.tcp({ sport: 1, dport: 7, flags: TcpFlag.ACK, seq: 1, ack: 1, window: 256 }, Buffer.from('last words'));
    host.tcp({ sport: 1, dport: 7, flags: TcpFlag.RST, seq: 11, ack: 1, window: 256 });
    await streamClosed;
    assert.equal(Buffer.concat(got).toString(), 'last words');
    assert.equal(host.mux.connectionCount, 0);
    await settle();
    assert.ok(isMuxwireError(writeError, 'MUXWIRE_ERR_CONN_RESET'));
    assert.ok(isMuxwireError(stream.errored, 'MUXWIRE_ERR_CONN_RESET'));
    // No RST goes back for a host RST (usbmux.md §3.7); only the ACK of the data.
    assert.ok(host.take().every((p) => (p.tcp!.flags & TcpFlag.RST) === 0));
  });

  test('the service ending its stream sends RST with a reason, after the data it wrote', async () => {
    const host = new HostHarness();
    host.negotiate(2);
    const streams = accepting(host, 7);
    host.connect(1, 7);
    const stream = streams[0]!;
    stream.end(Buffer.from('bye'));
    await once(stream, 'finish');
    const packets = host.take();
    assert.equal(packets.length, 2);
    assert.equal(packets[0]!.tcp!.flags, TcpFlag.ACK);
    assert.equal(packets[0]!.data!.toString(), 'bye');
    assert.equal(packets[1]!.tcp!.flags, TcpFlag.RST);
    assert.equal(packets[1]!.tcp!.seq, 4);
    assert.match(packets[1]!.data!.toString(), /closed/);
    assert.equal(host.mux.connectionCount, 0);
    // Later host packets for the pair get an anonymous RST.
    host.tcp({ sport: 1, dport: 7, flags: TcpFlag.ACK, seq: 1, ack: 4 }, Buffer.from('x'));
    assert.equal(host.takeOneTcp().tcp.flags, TcpFlag.RST);
  });

  test('a service destroying its stream with an error sends RST whose reason is the message', () => {
    const host = new HostHarness();
    host.negotiate(2);
    const streams = accepting(host, 7);
    host.connect(1, 7);
    streams[0]!.destroy(new Error('service fell over'));
    const { tcp, data } = host.takeOneTcp();
    assert.equal(tcp.flags, TcpFlag.RST);
    assert.equal(data.toString(), 'service fell over');
  });

  test('answers a packet for an unknown port pair with an anonymous RST, and an RST with nothing', () => {
    const host = new HostHarness();
    host.negotiate(2);
    host.tcp({ sport: 77, dport: 88, flags: TcpFlag.ACK, seq: 1234, ack: 9 }, Buffer.from('?'));
    const { tcp, data } = host.takeOneTcp();
    assert.deepEqual(tcp, { sport: 88, dport: 77, seq: 0, ack: 1234, flags: TcpFlag.RST, window: 0 });
    assert.equal(data.length, 0);
    host.tcp({ sport: 77, dport: 88, flags: TcpFlag.RST, seq: 1234 });
    assert.equal(host.take().length, 0);
  });

  test('tears down with RST on flags other than exactly ACK on a live connection', async () => {
    const host = new HostHarness();
    host.negotiate(2);
    const streams = accepting(host, 7);
    host.connect(1, 7);
    const streamClosed = closed(streams[0]!);
    host.tcp({ sport: 1, dport: 7, flags: TcpFlag.ACK | TcpFlag.PSH, seq: 1, ack: 1 }, Buffer.from('x'));
    const { tcp, data } = host.takeOneTcp();
    assert.equal(tcp.flags, TcpFlag.RST);
    assert.match(data.toString(), /flags 0x18/);
    await streamClosed;
    assert.ok(isMuxwireError(streams[0]!.errored, 'MUXWIRE_ERR_PROTOCOL'));
  });

  test('tears down with RST when data arrives out of sequence (bytes were lost)', () => {
    const host = new HostHarness();
    host.negotiate(2);
    accepting(host, 7);
    host.connect(1, 7);
    host.tcp({ sport: 1, dport: 7, flags: TcpFlag.ACK, seq: 50, ack: 1 }, Buffer.from('late'));
    const { tcp, data } = host.takeOneTcp();
    assert.equal(tcp.flags, TcpFlag.RST);
    assert.match(data.toString(), /sequence 50 received, 1 expected/);
  });

  test('shrinks its window while the service does not read, and reopens it as the service reads', async () => {
    const host = new HostHarness({ window: 64 * 1024 });
    host.negotiate(2);
    const streams = accepting(host, 9);
    host.connect(1, 9);
    const stream = streams[0]!;
    let seq = 1;
    const send = (n: number) => {
      host.tcp({ sport: 1, dport: 9, flags: TcpFlag.ACK, seq, ack: 1 }, Buffer.alloc(n, 0x55));
      seq += n;
    };
    // Nobody reads: what arrives waits in the receive queue and closes the window by as much.
    send(30000);
    await settle();
    // (The window field counts 256-byte units, so the host hears the free space rounded down.)
    const field = (n: number) => Math.floor(n / 256) * 256;
    assert.deepEqual(host.take().map((p) => [p.tcp!.ack, p.tcp!.window]), [[30001, field(65536 - 30000)]]);
    send(30000);
    await settle();
    assert.deepEqual(host.take().map((p) => [p.tcp!.ack, p.tcp!.window]), [[60001, field(65536 - 60000)]]);
    // Sending more than the advertised window is a protocol violation: RST, not unbounded buffering.
    const overflowHost = new HostHarness({ window: 1024 });
    overflowHost.negotiate(2);
    accepting(overflowHost, 9);
    overflowHost.connect(1, 9);
    overflowHost.tcp({ sport: 1, dport: 9, flags: TcpFlag.ACK, seq: 1, ack: 1 }, Buffer.alloc(700));
    overflowHost.tcp({ sport: 1, dport: 9, flags: TcpFlag.ACK, seq: 701, ack: 1 }, Buffer.alloc(700));
    const rst = overflowHost.take().find((p) => p.tcp!.flags === TcpFlag.RST);
    assert.match(rst?.data?.toString() ?? '', /receive window overflow/);

    // Reading drains the queue and a window update goes out on its own.
    let read = 0;
    stream.on('data', (c: Buffer) => {
      read += c.length;
    });
    await settle();
    await settle();
    assert.equal(read, 60000);
    const updates = host.take().map((p) => p.tcp!);
    assert.ok(updates.length >= 1);
    assert.equal(updates[updates.length - 1]!.ack, 60001);
    assert.equal(updates[updates.length - 1]!.window, 64 * 1024);
  });

  test('detach destroys every stream with MUXWIRE_ERR_NO_DEVICE and waits for a new VERSION', async () => {
    const host = new HostHarness();
    host.negotiate(2);
    const streams = accepting(host, 7);
    host.connect(1, 7);
    host.connect(2, 7);
    const allClosed = Promise.all(streams.map(closed));
    host.mux.detach();
    await allClosed;
    assert.ok(streams.every((s) => isMuxwireError(s.errored, 'MUXWIRE_ERR_NO_DEVICE')));
    assert.equal(host.take().length, 0, 'nothing is sent to a host that is gone');
    assert.equal(host.mux.version, undefined);
    host.version = 1;
    assert.equal(host.negotiate(2), 2);
    assert.equal(host.connect(1, 7).tcp.flags, TcpFlag.SYN | TcpFlag.ACK, 'listeners survive a replug');
  });

  test('reports a host packet with an impossible length in a CONTROL error and frames again', () => {
    const host = new HostHarness();
    host.negotiate(2);
    accepting(host, 7);
    const bad = Buffer.alloc(16);
    bad.writeUInt32BE(6, 0);
    bad.writeUInt32BE(70000, 4);
    host.mux.receive(bad);
    const [control] = host.take();
    assert.equal(control?.header.protocol, MuxProtocol.CONTROL);
    assert.equal(control?.payload[0], 3);
    assert.match(control!.payload.subarray(1).toString(), /70000/);
    // The next transfer starts a packet again.
    assert.equal(host.connect(1, 7).tcp.flags, TcpFlag.SYN | TcpFlag.ACK);
  });
});

describe('DeviceMux under hostile input', () => {
  test('survives seeded random host packets and raw garbage without throwing', async () => {
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let round = 0; round < 40; round++) {
      const host = new HostHarness({ maxConnections: 64 });
      host.mux.listen(7, (s) => {
        s.on('error', () => undefined);
        s.pipe(s);
      });
      host.mux.listen(9, (s) => {
        s.on('error', () => undefined);
        s.resume();
      });
      if (rand(4) !== 0) host.negotiate(rand(3));
      for (let i = 0; i < 200; i++) {
        const kind = rand(10);
        if (kind < 6) {
          const data = Buffer.alloc(rand(3) === 0 ? rand(3000) : 0, rand(256));
          host.tcp({ sport: 1 + rand(5), dport: [7, 9, 11][rand(3)]!, flags: rand(32), seq: rand(3) === 0 ? rand(5000) : 1, ack: rand(5000), window: rand(0x10000) * 256 }, data);
        } else if (kind < 8) {
          host.send(rand(8), Buffer.alloc(rand(40), rand(256)));
        } else {
          const garbage = Buffer.alloc(1 + rand(64));
          for (let j = 0; j < garbage.length; j++) garbage[j] = rand(256);
          host.mux.receive(garbage);
        }
        if (i % 50 === 0) await settle();
      }
      await settle();
      assert.ok(host.mux.connectionCount <= 64);
      host.mux.detach();
      assert.equal(host.mux.connectionCount, 0);
    }
  });
});

describe('DeviceMux listeners and CONTROL', () => {
  test('sends CONTROL messages as type byte then text, and none before VERSION', () => {
    const host = new HostHarness();
    assert.equal(host.mux.sendControl(7, 'too early'), false);
    assert.equal(host.take().length, 0);
    host.negotiate(2);
    assert.equal(host.mux.sendControl(7, 'hello host'), true);
    assert.equal(host.mux.sendControl(3, 'bad thing'), true);
    const [info, error] = host.take();
    assert.equal(info?.header.protocol, MuxProtocol.CONTROL);
    assert.equal(info?.payload[0], 7);
    assert.equal(info?.payload.subarray(1).toString(), 'hello host');
    assert.equal(error?.payload[0], 3);
    assert.throws(() => host.mux.sendControl(4 as 3, 'x'), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_ARGUMENT'));
  });

  test('listenEphemeral hands out free ports from 49152 up, and listen refuses a taken port', () => {
    const mux = new DeviceMux();
    mux.listen(49153, () => undefined);
    const a = mux.listenEphemeral(() => undefined);
    const b = mux.listenEphemeral(() => undefined);
    assert.deepEqual([a, b], [49152, 49154]);
    assert.throws(() => mux.listen(49152, () => undefined), (e) => isMuxwireError(e, 'MUXWIRE_ERR_PORT_IN_USE'));
    assert.throws(() => mux.listen(0, () => undefined), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_ARGUMENT'));
    mux.unlisten(a);
    assert.deepEqual(mux.listeningPorts, [49153, 49154]);
  });

  test('refuses options out of range with MUXWIRE_ERR_BAD_ARGUMENT', () => {
    assert.throws(() => new DeviceMux({ window: 100 }), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_ARGUMENT'));
    assert.throws(() => new DeviceMux({ maxPacketSize: 70000 }), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_ARGUMENT'));
    assert.throws(() => new DeviceMux({ version: 3 as 2 }), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_ARGUMENT'));
  });

  test('a service whose data handler throws gets its connection reset, and the device goes on', async () => {
    const host = new HostHarness();
    host.negotiate(2);
    host.mux.listen(7, (s) => {
      s.on('error', () => undefined);
      s.on('data', () => {
        throw new Error('handler bug');
      });
    });
    host.connect(1, 7);
    await settle();
    assert.doesNotThrow(() => host.tcp({ sport: 1, dport: 7, flags: TcpFlag.ACK, seq: 1, ack: 1 }, Buffer.from('boom')));
    const rst = host.take().find((p) => p.tcp!.flags === TcpFlag.RST);
    assert.match(rst?.data?.toString() ?? '', /handler bug/);
    assert.equal(host.connect(2, 7).tcp.flags, TcpFlag.SYN | TcpFlag.ACK);
  });

  test('a listener that throws gets its connection reset instead of crashing the device', () => {
    const host = new HostHarness();
    host.negotiate(2);
    host.mux.listen(7, (s) => {
      s.on('error', () => undefined);
      throw new Error('cannot serve');
    });
    const packets = host.tcp({ sport: 1, dport: 7, flags: TcpFlag.SYN }) && host.take();
    assert.deepEqual(packets.map((p) => p.tcp!.flags), [TcpFlag.SYN | TcpFlag.ACK, TcpFlag.RST]);
    assert.match(packets[1]!.data!.toString(), /cannot serve/);
  });
});
