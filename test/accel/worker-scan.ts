/** Runs in a worker thread for worker.test.ts: loads the addon in the worker's own environment,
 * scans and demuxes what the parent sends, and posts the results back. */
import { parentPort, workerData } from 'node:worker_threads';
import { resolveAccel } from '../../src/accel/select.js';

const { packets } = workerData as { packets: Uint8Array };
const { accel } = resolveAccel({ mode: 'native', env: {}, nativeMinPackets: 0 });
const out = new Uint32Array(5 * 64);
const count = accel.scanMuxPackets(packets, 2, out);
const demuxer = accel.createDemuxer({ version: 2 });
const slot = demuxer.openConnection(7, 1, 1024);
const events = demuxer.push(packets);
parentPort!.postMessage({ kind: accel.kind, count, records: [...out.subarray(0, count * 5)], events, text: Buffer.concat(demuxer.readable(slot)).toString() });
