/**
 * VusbStreamDecoder: the decoder behind a reader that reuses its read buffer. Every test writes over
 * the chunk after feeding it, so a message or carried byte that still pointed into it would show.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  encodeHello,
  encodeVusbMessage,
  UsbSpeed,
  VUSB_MAX_LENGTH,
  VusbMessageType,
  VusbStreamDecoder,
  type VusbMessage,
} from '../../src/protocol/vusb-wire.js';
import { isMuxwireError, MuxwireError } from '../../src/errors.js';
import { Prng } from '../helpers/fuzz.js';

function pattern(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

const SAMPLE: VusbMessage[] = [
  { type: VusbMessageType.HELLO, wireVersion: 1, speed: UsbSpeed.HIGH },
  { type: VusbMessageType.CONTROL, id: 3, setup: { bmRequestType: 0x00, bRequest: 9, wValue: 4, wIndex: 0x0409, wLength: 3 }, data: Buffer.from([1, 2, 3]) },
  { type: VusbMessageType.CONTROL_DONE, id: 1, status: 0, data: pattern(18) },
  { type: VusbMessageType.BULK_OUT, endpoint: 0x04, data: Buffer.alloc(0) },
  { type: VusbMessageType.BULK_IN, endpoint: 0x85, data: pattern(70000, 5) },
  { type: VusbMessageType.BULK_IN, endpoint: 0x85, data: pattern(300, 9) },
];
const WIRE = Buffer.concat(SAMPLE.map(encodeVusbMessage));

/** A copy of a message whose buffers are views valid only during the callback. */
function keep(msg: VusbMessage): VusbMessage {
  return 'data' in msg ? ({ ...msg, data: Buffer.from(msg.data) } as VusbMessage) : { ...msg };
}

/** Feeds `wire` cut at the given sizes through one reused buffer, scribbled over after each feed. */
function feedReused(decoder: VusbStreamDecoder, wire: Buffer, sizes: () => number): VusbMessage[] {
  const reused = Buffer.alloc(256 * 1024);
  const got: VusbMessage[] = [];
  for (let at = 0; at < wire.length; ) {
    const n = Math.min(sizes(), wire.length - at, reused.length);
    wire.copy(reused, 0, at, at + n);
    at += n;
    decoder.feed(reused.subarray(0, n), (m) => (got.push(keep(m)), true));
    reused.fill(0xee);
  }
  return got;
}

test('the same messages byte by byte, and nothing of a fed chunk is kept', () => {
  assert.deepEqual(feedReused(new VusbStreamDecoder(), WIRE, () => 1), SAMPLE);
});

test('the same messages at random split points through a reused buffer', () => {
  for (let seed = 1; seed <= 40; seed++) {
    const r = new Prng(seed);
    assert.deepEqual(feedReused(new VusbStreamDecoder(), WIRE, () => r.range(1, 90000)), SAMPLE, `seed ${seed}`);
  }
});

test('whole messages in one chunk are views of it, handed out during feed', () => {
  const decoder = new VusbStreamDecoder();
  const chunk = encodeVusbMessage({ type: VusbMessageType.BULK_IN, endpoint: 0x85, data: pattern(1000) });
  let view: Buffer | undefined;
  decoder.feed(chunk, (m) => ((view = (m as { data: Buffer }).data), true));
  assert.equal(view!.buffer, chunk.buffer);
  assert.equal(decoder.buffered, 0);
});

test('onMessage returning false stops the feed', () => {
  const decoder = new VusbStreamDecoder();
  let count = 0;
  decoder.feed(WIRE, () => ++count < 2);
  assert.equal(count, 2);
});

test('a declared length above the limit is refused before the body arrives, and the decoder stays failed', () => {
  const decoder = new VusbStreamDecoder();
  const header = Buffer.alloc(3);
  header.writeUInt16LE(0xffff, 0);
  decoder.feed(header.subarray(0, 2), () => true);
  assert.equal(decoder.buffered, 2);
  const rest = Buffer.from([0x10, 0x00, VusbMessageType.BULK_IN]);
  assert.ok(0x10ffff > VUSB_MAX_LENGTH);
  assert.throws(() => decoder.feed(rest, () => true), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_LENGTH'));
  assert.equal(decoder.buffered, 0, 'nothing kept after the error');
  assert.throws(() => decoder.feed(encodeHello(3), () => true), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_LENGTH'));
});

test('100,000 seeded mutations: messages or a coded error, never anything else, memory bounded', () => {
  const seed = Number(process.env.MUXWIRE_FUZZ_SEED ?? 0x5eed) >>> 0;
  const r = new Prng(seed);
  const small = Buffer.concat(SAMPLE.filter((m) => !('data' in m) || m.data.length < 1000).map(encodeVusbMessage));
  for (let i = 0; i < 100_000; i++) {
    const wire = Buffer.from(small);
    for (let k = r.range(1, 4); k > 0; k--) wire[r.int(wire.length)] = r.int(256);
    const decoder = new VusbStreamDecoder({ maxLength: 4096 });
    try {
      feedReused(decoder, wire, () => r.range(1, 64));
    } catch (err) {
      assert.ok(err instanceof MuxwireError, `seed ${seed} case ${i}: ${String(err)}`);
    }
    assert.ok(decoder.buffered <= 4096 + 4, `seed ${seed} case ${i}: carried ${decoder.buffered}`);
  }
});
