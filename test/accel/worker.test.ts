import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { SCAN_RECORD_FIELDS } from '../../src/accel/accel.js';
import { NativeAccel } from '../../src/accel/native-accel.js';
import { encodeMuxPacket, MuxProtocol } from '../../src/protocol/mux-header.js';
import { encodeTcpHeader, TcpFlag } from '../../src/protocol/tcp-header.js';
import { nativeBinding } from './native-under-test.js';

describe('the addon in worker threads', () => {
  test('serves a worker and the main thread at once, each with its own instance', async (t) => {
    const binding = nativeBinding(t);
    if (!binding) return;
    const packets = Buffer.concat(
      ['one', 'two', 'three'].map((text) =>
        encodeMuxPacket(2, { protocol: MuxProtocol.TCP }, encodeTcpHeader({ sport: 7, dport: 1, seq: 0, ack: 0, flags: TcpFlag.ACK, window: 131072 }), Buffer.from(text)),
      ),
    );
    const workers = [0, 1].map(() => new Worker(new URL('./worker-scan.js', import.meta.url), { workerData: { packets } }));
    t.after(() => Promise.all(workers.map((w) => w.terminate())));
    // Listen before anything can arrive: a message emitted with no listener is lost.
    const messages = workers.map((w) => once(w, 'message'));
    // The main thread uses the addon meanwhile.
    const accel = new NativeAccel(binding, { nativeMinPackets: 0 });
    const out = new Uint32Array(SCAN_RECORD_FIELDS * 8);
    assert.equal(accel.scanMuxPackets(packets, 2, out), 3);
    const expected = { kind: 'native', count: 3, records: [...out.subarray(0, 15)], events: 3, text: 'onetwothree' };
    for (const [message] of (await Promise.all(messages)) as [unknown][]) assert.deepEqual(message, expected);
  });
});
