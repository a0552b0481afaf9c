import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  decodeVusbBody,
  encodeBulkHeader,
  encodeControl,
  encodeControlDone,
  encodeHello,
  encodeVusbMessage,
  UsbSpeed,
  VUSB_MAX_LENGTH,
  VUSB_MAX_PAYLOAD,
  VusbDecoder,
  VusbMessageType,
  type VusbMessage,
} from '../../src/protocol/vusb-wire.js';
import { isMuxwireError } from '../../src/errors.js';
import { seededRandom } from '../../src/seeded-random.js';


function pattern(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

const SAMPLE: VusbMessage[] = [
  { type: VusbMessageType.HELLO, wireVersion: 1, speed: UsbSpeed.HIGH },
  { type: VusbMessageType.CONTROL, id: 1, setup: { bmRequestType: 0x80, bRequest: 6, wValue: 0x0100, wIndex: 0, wLength: 18 }, data: Buffer.alloc(0) },
  { type: VusbMessageType.CONTROL, id: 0xfffffffe, setup: { bmRequestType: 0x00, bRequest: 9, wValue: 4, wIndex: 0x0409, wLength: 3 }, data: Buffer.from([1, 2, 3]) },
  { type: VusbMessageType.CONTROL_DONE, id: 1, status: 0, data: pattern(18) },
  { type: VusbMessageType.CONTROL_DONE, id: 7, status: -9, data: Buffer.alloc(0) },
  { type: VusbMessageType.BULK_OUT, endpoint: 0x04, data: pattern(512, 3) },
  { type: VusbMessageType.BULK_OUT, endpoint: 0x04, data: Buffer.alloc(0) },
  { type: VusbMessageType.BULK_IN, endpoint: 0x85, data: pattern(40000, 5) },
  { type: VusbMessageType.BULK_IN, endpoint: 0x85, data: Buffer.alloc(0) },
];

function drain(decoder: VusbDecoder): VusbMessage[] {
  const out: VusbMessage[] = [];
  for (let m = decoder.next(); m !== undefined; m = decoder.next()) out.push(m);
  return out;
}

test('every message type survives an encode/decode round trip', () => {
  for (const msg of SAMPLE) {
    const wire = encodeVusbMessage(msg);
    assert.equal(wire.readUInt32LE(0), wire.length - 4, 'length counts type + body');
    assert.equal(wire[4], msg.type);
    const decoder = new VusbDecoder();
    decoder.push(wire);
    assert.deepEqual(drain(decoder), [msg]);
    assert.equal(decoder.buffered, 0);
  }
});

test('HELLO is 9 bytes: length 5, type 1, version, speed, reserved 0', () => {
  assert.deepEqual([...encodeHello(UsbSpeed.SUPER)], [5, 0, 0, 0, 1, 1, 4, 0, 0]);
});

test('CONTROL lays out id, setup packet and data stage little-endian', () => {
  const wire = encodeControl(0x01020304, { bmRequestType: 0x80, bRequest: 0x06, wValue: 0x0302, wIndex: 0x0409, wLength: 0x0408 });
  assert.deepEqual([...wire], [13, 0, 0, 0, 2, 4, 3, 2, 1, 0x80, 0x06, 0x02, 0x03, 0x09, 0x04, 0x08, 0x04]);
});

test('CONTROL_DONE carries a negative status as i32', () => {
  const wire = encodeControlDone(5, -9, Buffer.from([0xaa]));
  assert.deepEqual([...wire], [10, 0, 0, 0, 3, 5, 0, 0, 0, 0xf7, 0xff, 0xff, 0xff, 0xaa]);
});

test('a bulk header precedes the payload without copying it', () => {
  const header = encodeBulkHeader(VusbMessageType.BULK_IN, 0x85, 1000);
  assert.deepEqual([...header], [0xea, 0x03, 0, 0, 5, 0x85]);
});

test('the decoder gives the same messages fed byte by byte', () => {
  const wire = Buffer.concat(SAMPLE.map(encodeVusbMessage));
  const decoder = new VusbDecoder();
  const got: VusbMessage[] = [];
  for (let i = 0; i < wire.length; i++) {
    decoder.push(wire.subarray(i, i + 1));
    got.push(...drain(decoder));
  }
  assert.deepEqual(got, SAMPLE);
});

test('the decoder gives the same messages at random split points', () => {
  const wire = Buffer.concat(SAMPLE.map(encodeVusbMessage));
  for (let seed = 1; seed <= 50; seed++) {
    const random = seededRandom(seed);
    const decoder = new VusbDecoder();
    const got: VusbMessage[] = [];
    let offset = 0;
    while (offset < wire.length) {
      const n = 1 + Math.floor(random() * 9000);
      decoder.push(wire.subarray(offset, offset + n));
      offset += n;
      got.push(...drain(decoder));
    }
    assert.deepEqual(got, SAMPLE, `seed ${seed}`);
  }
});

test('a message inside one chunk is returned as a view, not a copy', () => {
  const payload = pattern(3000);
  const wire = encodeVusbMessage({ type: VusbMessageType.BULK_IN, endpoint: 0x85, data: payload });
  const decoder = new VusbDecoder();
  decoder.push(wire);
  const msg = decoder.next();
  assert.ok(msg && msg.type === VusbMessageType.BULK_IN);
  assert.equal(msg.data.buffer, wire.buffer);
  assert.equal(msg.data.byteOffset, wire.byteOffset + 6);
});

test('a 1 MiB payload is accepted and one byte more is refused', () => {
  const decoder = new VusbDecoder();
  decoder.push(encodeVusbMessage({ type: VusbMessageType.BULK_IN, endpoint: 0x85, data: Buffer.alloc(VUSB_MAX_PAYLOAD) }));
  const msg = decoder.next();
  assert.ok(msg && msg.type === VusbMessageType.BULK_IN && msg.data.length === VUSB_MAX_PAYLOAD);
  assert.throws(() => encodeBulkHeader(VusbMessageType.BULK_IN, 0x85, VUSB_MAX_PAYLOAD + 1),
    (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_LENGTH'));
});

test('a declared length above the limit is refused before the body arrives', () => {
  const decoder = new VusbDecoder();
  const header = Buffer.alloc(5);
  header.writeUInt32LE(VUSB_MAX_LENGTH + 1, 0);
  header[4] = VusbMessageType.BULK_IN;
  decoder.push(header);
  assert.throws(() => decoder.next(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_LENGTH'));
  assert.equal(decoder.buffered, 0, 'nothing kept after the error');
  // The decoder stays failed: more input cannot resynchronise a broken stream.
  decoder.push(encodeHello(3));
  assert.throws(() => decoder.next(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_LENGTH'));
});

test('a zero length (no type byte) is refused', () => {
  const decoder = new VusbDecoder();
  decoder.push(Buffer.from([0, 0, 0, 0, 1]));
  assert.throws(() => decoder.next(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_LENGTH'));
});

test('a 0xFFFFFFFF length split across chunks is refused', () => {
  const decoder = new VusbDecoder();
  decoder.push(Buffer.from([0xff, 0xff]));
  assert.equal(decoder.next(), undefined);
  decoder.push(Buffer.from([0xff, 0xff]));
  assert.throws(() => decoder.next(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_LENGTH'));
});

test('a smaller maxLength option is honoured', () => {
  const decoder = new VusbDecoder({ maxLength: 100 });
  decoder.push(encodeVusbMessage({ type: VusbMessageType.BULK_OUT, endpoint: 4, data: Buffer.alloc(98) }));
  assert.equal(decoder.next()?.type, VusbMessageType.BULK_OUT);
  decoder.push(encodeVusbMessage({ type: VusbMessageType.BULK_OUT, endpoint: 4, data: Buffer.alloc(99) }));
  assert.throws(() => decoder.next(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_LENGTH'));
});

test('bodies too short for their type and unknown types are bad messages', () => {
  const cases: Array<[number[], string]> = [
    [[VusbMessageType.HELLO, 1, 3, 0], 'short HELLO'],
    [[VusbMessageType.HELLO, 1, 3, 0, 0, 0], 'long HELLO'],
    [[VusbMessageType.CONTROL, 1, 0, 0, 0, 0x80, 6, 0, 1, 0, 0, 18], 'CONTROL without wLength high byte'],
    [[VusbMessageType.CONTROL_DONE, 1, 0, 0, 0, 0, 0, 0], 'CONTROL_DONE without a whole status'],
    [[VusbMessageType.BULK_IN], 'bulk without endpoint'],
    [[9, 1, 2, 3], 'unknown type 9'],
    [[0], 'type 0'],
  ];
  for (const [frame, what] of cases) {
    assert.throws(() => decodeVusbBody(Buffer.from(frame)), (e) => isMuxwireError(e, 'MUXWIRE_ERR_VUSB_BAD_MESSAGE'), what);
    const decoder = new VusbDecoder();
    const len = Buffer.alloc(4);
    len.writeUInt32LE(frame.length, 0);
    decoder.push(Buffer.concat([len, Buffer.from(frame)]));
    assert.throws(() => decoder.next(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_VUSB_BAD_MESSAGE'), what);
  }
});

test('encoders refuse values that do not fit their fields', () => {
  const setup = { bmRequestType: 0x80, bRequest: 6, wValue: 0x10000, wIndex: 0, wLength: 0 };
  assert.throws(() => encodeControl(1, setup), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_ARGUMENT'));
  assert.throws(() => encodeControl(-1, { ...setup, wValue: 0 }), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_ARGUMENT'));
  assert.throws(() => encodeControlDone(1, 2 ** 31), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_ARGUMENT'));
  assert.throws(() => encodeHello(256), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_ARGUMENT'));
});

test('random garbage never crashes the decoder: it yields messages or a coded error', () => {
  const random = seededRandom(1234);
  for (let round = 0; round < 300; round++) {
    const garbage = Buffer.alloc(1 + Math.floor(random() * 64));
    for (let i = 0; i < garbage.length; i++) garbage[i] = Math.floor(random() * 256);
    // Small lengths make the decoder reach the body check often.
    garbage[1] = garbage[2] = garbage[3] = 0;
    const decoder = new VusbDecoder();
    decoder.push(garbage);
    try {
      drain(decoder);
    } catch (err) {
      assert.ok(isMuxwireError(err, 'MUXWIRE_ERR_BAD_LENGTH') || isMuxwireError(err, 'MUXWIRE_ERR_VUSB_BAD_MESSAGE'), String(err));
    }
  }
});

test('a message spread over 100000 one-byte chunks decodes (no quadratic buffering)', () => {
  const decoder = new VusbDecoder();
  const payload = Buffer.alloc(100000, 0x5a);
  const wire = Buffer.concat([encodeBulkHeader(VusbMessageType.BULK_IN, 0x85, payload.length), payload]);
  for (let i = 0; i < wire.length; i++) decoder.push(wire.subarray(i, i + 1));
  const msg = decoder.next();
  assert.ok(msg && msg.type === VusbMessageType.BULK_IN);
  assert.deepEqual(msg.data, payload);
});
