import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { duplexPair } from 'node:stream';
import type { Duplex } from 'node:stream';
import { afterEach, describe, test } from 'node:test';
import {
  DEFAULT_BENCH_PORTS,
  SOURCE_PATTERN_PERIOD,
  encodeCount,
  findPatternMismatch,
  serveBenchServices,
  serveEcho,
  serveSink,
  serveSource,
  sourcePattern,
  resetReason,
} from '../../src/sim/bench-services.js';
import { DeviceMux } from '../../src/sim/device-mux.js';
import { HostHarness, TcpFlag } from './host-harness.js';

/** Reads exactly `n` bytes from `stream` (rejects if it ends first). */
function readBytes(stream: Duplex, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let have = 0;
    const onData = (c: Buffer): void => {
      chunks.push(c);
      have += c.length;
      if (have >= n) {
        cleanup();
        const all = Buffer.concat(chunks);
        if (all.length > n) stream.unshift(all.subarray(n));
        resolve(all.subarray(0, n));
      }
    };
    const onEnd = (): void => {
      cleanup();
      reject(new Error(`stream ended after ${have} of ${n} bytes`));
    };
    const cleanup = (): void => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.pause();
    };
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.resume(); // a 'data' listener alone does not restart a stream paused by pause()
  });
}

const opened: Duplex[] = [];
function pair(serve: (s: Duplex) => void): Duplex {
  const [device, host] = duplexPair();
  serve(device);
  opened.push(device, host);
  return host;
}

afterEach(() => {
  for (const s of opened.splice(0)) s.destroy();
});

describe('source pattern', () => {
  test('repeats 0..250 and continues across chunk boundaries', () => {
    const whole = sourcePattern(0, 1000);
    assert.equal(whole[0], 0);
    assert.equal(whole[250], 250);
    assert.equal(whole[251], 0);
    assert.deepEqual(sourcePattern(300, 10), whole.subarray(300, 310));
    assert.equal(findPatternMismatch(whole.subarray(600), 600), -1);
    const broken = Buffer.from(whole);
    broken[777] ^= 1;
    assert.equal(findPatternMismatch(broken, 0), 777);
    assert.equal(SOURCE_PATTERN_PERIOD, 251);
  });
});

describe('echo service', () => {
  test('sends every byte back', async () => {
    const host = pair(serveEcho);
    const data = randomBytes(200_000);
    host.write(data);
    assert.deepEqual(await readBytes(host, data.length), data);
  });
});

describe('sink service', () => {
  test('answers the u64 count after receiving N bytes, with the count split across writes', async () => {
    const host = pair(serveSink);
    const count = encodeCount(100_000);
    host.write(count.subarray(0, 3));
    host.write(Buffer.concat([count.subarray(3), Buffer.alloc(40_000)]));
    host.write(Buffer.alloc(60_000));
    const reply = await readBytes(host, 8);
    assert.equal(reply.readBigUInt64BE(0), 100_000n);
  });

  test('serves one request after another on the same connection, a count of 0 included', async () => {
    const host = pair(serveSink);
    host.write(Buffer.concat([encodeCount(5), Buffer.from('hello'), encodeCount(0), encodeCount(2), Buffer.from('ok')]));
    const replies = await readBytes(host, 24);
    assert.deepEqual([0, 8, 16].map((o) => replies.readBigUInt64BE(o)), [5n, 0n, 2n]);
  });

  test('ends its side without an answer when the host ends in the middle of the count', async () => {
    const host = pair(serveSink);
    const got: Buffer[] = [];
    host.on('data', (c: Buffer) => got.push(c));
    host.end(encodeCount(10).subarray(0, 3));
    await once(host, 'end');
    assert.equal(Buffer.concat(got).length, 0);
  });
});

describe('source service', () => {
  test('sends N bytes of the pattern and keeps the connection open', async () => {
    const host = pair(serveSource);
    host.write(encodeCount(300_000));
    const body = await readBytes(host, 300_000);
    assert.equal(findPatternMismatch(body, 0), -1);
    // Still open: the next request is served, from the start of the pattern again.
    host.write(encodeCount(1000));
    const again = await readBytes(host, 1000);
    assert.equal(findPatternMismatch(again, 0), -1);
    assert.equal(host.readableEnded, false);
  });

  test('serves counts sent back to back in order', async () => {
    const host = pair(serveSource);
    host.write(Buffer.concat([encodeCount(70_000), encodeCount(3)]));
    const body = await readBytes(host, 70_003);
    assert.equal(findPatternMismatch(body.subarray(0, 70_000), 0), -1);
    assert.deepEqual([...body.subarray(70_000)], [0, 1, 2]);
  });
});

describe('bench services on a DeviceMux', () => {
  test('listen on 7, 9, 19 and 13 by default, on other ports when told, and stop listening on close', () => {
    const mux = new DeviceMux();
    const services = serveBenchServices(mux);
    assert.deepEqual(services.ports, DEFAULT_BENCH_PORTS);
    assert.deepEqual([...mux.listeningPorts].sort((a, b) => a - b), [7, 9, 13, 19]);
    services.close();
    assert.deepEqual(mux.listeningPorts, []);
    const custom = serveBenchServices(mux, { echo: 1007, sink: false, source: 1019, reset: false });
    assert.deepEqual(custom.ports, { echo: 1007, source: 1019 });
    assert.deepEqual(mux.listeningPorts, [1007, 1019]);
  });

  test('a sink count above 2^53 - 1 closes the connection with an RST that says why', async () => {
    const host = new HostHarness();
    host.negotiate(2);
    serveBenchServices(host.mux);
    host.connect(1, 9);
    await new Promise((r) => setImmediate(r));
    host.tcp({ sport: 1, dport: 9, flags: TcpFlag.ACK, seq: 1, ack: 1 }, encodeCount(2n ** 60n));
    await new Promise((r) => setImmediate(r));
    const rst = host.take().find((p) => p.tcp!.flags === TcpFlag.RST);
    assert.ok(rst, 'an RST was sent');
    assert.match(rst.data!.toString(), /count 1152921504606846976 exceeds/);
    assert.equal(host.mux.connectionCount, 0);
  });

  test('the source sends only what the host window allows and resumes on each ACK', async () => {
    const host = new HostHarness();
    host.negotiate(2);
    serveBenchServices(host.mux);
    host.connect(1, 19, 4096);
    host.tcp({ sport: 1, dport: 19, flags: TcpFlag.ACK, seq: 1, ack: 1, window: 4096 }, encodeCount(10_000));
    const received: Buffer[] = [];
    let acked = 1;
    for (let round = 0; round < 10 && acked < 10_001; round++) {
      await new Promise((r) => setImmediate(r));
      const data = host.take().filter((p) => p.data!.length > 0);
      const bytes = data.reduce((n, p) => n + p.data!.length, 0);
      assert.ok(bytes <= 4096, `round ${round}: ${bytes} bytes beyond a 4096-byte window`);
      for (const p of data) received.push(p.data!);
      acked += bytes;
      host.tcp({ sport: 1, dport: 19, flags: TcpFlag.ACK, seq: 9, ack: acked, window: 4096 });
    }
    const body = Buffer.concat(received);
    assert.equal(body.length, 10_000);
    assert.equal(findPatternMismatch(body, 0), -1);
  });

  test('the reset service sends exactly N pattern bytes, then an RST with its reason', async () => {
    const host = new HostHarness();
    host.negotiate(2);
    serveBenchServices(host.mux);
    host.connect(1, 13);
    host.tcp({ sport: 1, dport: 13, flags: TcpFlag.ACK, seq: 1, ack: 1 }, encodeCount(100_000));
    const received: Buffer[] = [];
    let acked = 1;
    let rst: ReturnType<HostHarness['take']>[number] | undefined;
    for (let round = 0; round < 50 && rst === undefined; round++) {
      await new Promise((r) => setImmediate(r));
      for (const p of host.take()) {
        if (p.tcp!.flags & TcpFlag.RST) rst = p;
        else if (p.data!.length > 0) {
          received.push(p.data!);
          acked += p.data!.length;
        }
      }
      host.tcp({ sport: 1, dport: 13, flags: TcpFlag.ACK, seq: 9, ack: acked });
    }
    const body = Buffer.concat(received);
    assert.equal(body.length, 100_000);
    assert.equal(findPatternMismatch(body, 0), -1);
    assert.ok(rst, 'an RST followed the data');
    assert.equal(rst.tcp!.seq, 100_001, 'right behind the last byte');
    assert.equal(rst.data!.toString(), resetReason(100_000));
    assert.equal(host.mux.connectionCount, 0);
  });
});
