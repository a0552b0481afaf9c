/**
 * Ring recycling in the demuxer (src/accel/demuxer.ts): a connection closed with every byte
 * consumed leaves its ring for the next connection of the same capacity, a ring with unread bytes
 * is never reused (views of those bytes may still be on their way to a socket), and the free list
 * is bounded. Run against both implementations, which share the wrapper but not the core.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Demuxer } from '../../src/accel/demuxer.js';
import { encodeMuxPacket, MuxProtocol } from '../../src/protocol/mux-header.js';
import { encodeTcpHeader, TcpFlag } from '../../src/protocol/tcp-header.js';
import { accelImplementations } from './native-under-test.js';

const implementations = accelImplementations();

/** A v2 TCP data packet from the device's port `sport` to the host's port `dport`. */
function tcp(sport: number, dport: number, data: string): Buffer {
  const header = encodeTcpHeader({ sport, dport, seq: 0, ack: 0, flags: TcpFlag.ACK, window: 131072 });
  return encodeMuxPacket(2, { protocol: MuxProtocol.TCP, txSeq: 0, rxSeq: 0 }, header, Buffer.from(data));
}

/** The memory behind a slot's ring, seen through a view of bytes pushed into it. */
function ringMemory(d: Demuxer, slot: number, sport: number, dport: number): ArrayBufferLike {
  d.push(tcp(sport, dport, 'x'));
  const [view] = d.readable(slot);
  assert.ok(view, 'the pushed byte is readable');
  return view.buffer;
}

/** Opens a connection, receives and consumes one byte, and returns its ring's memory. */
function drainedConnection(d: Demuxer, sport: number, dport: number, capacity = 4096): { slot: number; memory: ArrayBufferLike } {
  const slot = d.openConnection(sport, dport, capacity);
  const memory = ringMemory(d, slot, sport, dport);
  d.consume(slot, d.unread(slot));
  return { slot, memory };
}

for (const impl of implementations) {
  describe(`ring reuse (${impl.name})`, () => {
    test('gives the ring of a drained, closed connection to the next one, empty', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const d = accel.createDemuxer({ version: 2 });
      const first = drainedConnection(d, 7, 100);
      d.closeConnection(first.slot);
      const slot = d.openConnection(7, 101, 4096);
      assert.deepEqual(d.readable(slot), [], 'a reused ring starts with nothing unread');
      d.push(tcp(7, 101, 'second'));
      const views = d.readable(slot);
      assert.equal(Buffer.concat(views).toString(), 'second');
      assert.equal(views[0]!.buffer, first.memory, 'the same memory serves again');
    });

    test('never reuses a ring closed with unread bytes, whose views keep their bytes', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const d = accel.createDemuxer({ version: 2 });
      const slot = d.openConnection(7, 100, 4096);
      d.push(tcp(7, 100, 'still on its way'));
      const [held] = d.readable(slot);
      d.closeConnection(slot);
      // Another connection receives the same number of bytes where the old ring would be written.
      const next = d.openConnection(7, 101, 4096);
      d.push(tcp(7, 101, 'SOMETHING ELSE!!'));
      assert.notEqual(d.readable(next)[0]!.buffer, held!.buffer);
      assert.equal(held!.toString(), 'still on its way');
    });

    test('reuses a ring only for a connection of the same capacity', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const d = accel.createDemuxer({ version: 2 });
      const small = drainedConnection(d, 7, 100, 4096);
      d.closeConnection(small.slot);
      const big = d.openConnection(7, 101, 8192);
      assert.notEqual(ringMemory(d, big, 7, 101), small.memory);
      const again = d.openConnection(7, 102, 4096);
      assert.equal(ringMemory(d, again, 7, 102), small.memory);
    });

    test('keeps at most 8 closed rings for reuse', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const d = accel.createDemuxer({ version: 2 });
      const closed = Array.from({ length: 12 }, (_, i) => drainedConnection(d, 7, 100 + i));
      for (const c of closed) d.closeConnection(c.slot);
      const old = new Set(closed.map((c) => c.memory));
      let reused = 0;
      for (let i = 0; i < 12; i++) {
        const slot = d.openConnection(7, 200 + i, 4096);
        if (old.has(ringMemory(d, slot, 7, 200 + i))) reused++;
      }
      assert.equal(reused, 8);
    });

    test('delivers to a reused ring from position 0, across its wrap, like a fresh one', (t) => {
      const accel = impl.make(t);
      if (!accel) return;
      const d = accel.createDemuxer({ version: 2 });
      // Leave the first ring's positions near its end before closing it.
      const slot = d.openConnection(7, 100, 16);
      for (const piece of ['0123456789', 'abcdef']) {
        d.push(tcp(7, 100, piece));
        d.consume(slot, d.unread(slot));
      }
      d.closeConnection(slot);
      const next = d.openConnection(7, 101, 16);
      d.push(tcp(7, 101, 'fresh start!'));
      assert.equal(d.readable(next).length, 1, 'no wrap: the positions started again at 0');
      assert.equal(Buffer.concat(d.readable(next)).toString(), 'fresh start!');
      d.consume(next, 8);
      d.push(tcp(7, 101, 'WRAPPED'));
      assert.equal(Buffer.concat(d.readable(next)).toString(), 'art!WRAPPED');
    });
  });
}
