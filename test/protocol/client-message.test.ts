import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  ClientMessageDecoder,
  ClientMessageType,
  ResultCode,
  decodeClientFrame,
  decodeClientPlist,
  encodeClientMessage,
} from '../../src/protocol/client-message.js';
import type { ClientMessage } from '../../src/protocol/client-message.js';
import { decodeClientHeader, encodeClientHeader } from '../../src/protocol/client-header.js';
import { connectRequest, integerFieldProblem, requestIntegerProblem, resultMessage } from '../../src/protocol/client-plist.js';
import { PlistReal, decodePlist, encodeBinaryPlist, encodeXmlPlist } from '../../src/protocol/plist.js';
import { isMuxwireError } from '../../src/errors.js';
import { Prng, feed, fuzzSeed, splitBytes, splitRandomly } from '../helpers/fuzz.js';
import { CONNECT_22, CONNECT_ACCEPTED, CONNECT_REFUSED, LISTEN, LISTEN_RESULT, hex } from './fixtures.js';

function decodeOne(bytes: Buffer): ClientMessage {
  const d = new ClientMessageDecoder();
  d.push(bytes);
  const msg = d.next();
  assert.ok(msg, 'a whole message decodes');
  assert.equal(d.next(), undefined);
  assert.equal(d.buffered, 0);
  return msg;
}

/** Every message kind the encoder can write, with awkward values. */
function allMessages(): ClientMessage[] {
  return [
    { kind: 'result', tag: 1, result: ResultCode.OK },
    { kind: 'result', tag: 0xffffffff, result: 22 },
    { kind: 'connect', tag: 7, deviceId: 0x19, port: 62078 },
    { kind: 'listen', tag: 0 },
    { kind: 'device-add', tag: 0, device: { deviceId: 3, productId: 0x12a8, serialNumber: '00008030-001229C01146402E', locationId: 0x10009 } },
    { kind: 'device-add', tag: 0, device: { deviceId: 4, productId: 0xffff, serialNumber: '', locationId: 0xffffffff } },
    { kind: 'device-remove', tag: 0, deviceId: 3 },
    { kind: 'device-paired', tag: 0, deviceId: 4 },
    { kind: 'plist', tag: 5, version: 1, plist: connectRequest(3, 62078, 'test') },
    { kind: 'plist', tag: 0, version: 1, plist: { MessageType: 'Attached', DeviceID: 1, Properties: { SerialNumber: 'é😀', ConnectionSpeed: 5_000_000_000 } } },
    { kind: 'unknown', tag: 9, version: 0, message: 7, payload: Buffer.from([1, 2, 3]) },
    { kind: 'unknown', tag: 9, version: 2, message: 8, payload: Buffer.alloc(0) },
  ];
}

describe('client header', () => {
  test('is 16 little-endian bytes', () => {
    const h = { length: 0x11223344, version: 1, message: 8, tag: 0xdeadbeef };
    const bytes = encodeClientHeader(h);
    assert.equal(bytes.toString('hex'), '44332211' + '01000000' + '08000000' + 'efbeadde');
    assert.deepEqual(decodeClientHeader(bytes), h);
  });
});

describe('client messages: the byte dumps of issue 2', () => {
  const cases: Array<[string, string, ClientMessage]> = [
    ['binary LISTEN', LISTEN, { kind: 'listen', tag: 2 }],
    ['its RESULT', LISTEN_RESULT, { kind: 'result', tag: 2, result: ResultCode.OK }],
    ['CONNECT to device 0x19 port 22 (big-endian)', CONNECT_22, { kind: 'connect', tag: 3, deviceId: 0x19, port: 22 }],
    ['the refused result', CONNECT_REFUSED, { kind: 'result', tag: 3, result: ResultCode.CONNREFUSED }],
    ['the accepted result', CONNECT_ACCEPTED, { kind: 'result', tag: 3, result: ResultCode.OK }],
  ];
  for (const [what, dump, msg] of cases) {
    test(`${what} decodes and re-encodes byte for byte`, () => {
      const bytes = hex(dump);
      assert.deepEqual(decodeOne(bytes), msg);
      assert.ok(encodeClientMessage(msg).equals(bytes), `${encodeClientMessage(msg).toString('hex')} != ${bytes.toString('hex')}`);
    });
  }

  test('CONNECT to lockdownd carries F27E, as in the reference example', () => {
    const bytes = encodeClientMessage({ kind: 'connect', tag: 1, deviceId: 2, port: 62078 });
    assert.equal(bytes.subarray(20, 24).toString('hex'), 'f27e0000');
  });
});

describe('client messages: round trips', () => {
  for (const msg of allMessages()) {
    test(`round-trips ${msg.kind} (tag ${msg.tag})`, () => {
      const bytes = encodeClientMessage(msg);
      assert.equal(bytes.readUInt32LE(0), bytes.length, 'the header length is the whole message');
      assert.deepEqual(decodeOne(bytes), msg);
    });
  }

  test('DEVICE_ADD is 284 bytes with the serial NUL-terminated and cut at 255 bytes', () => {
    const long = 'A'.repeat(300);
    const bytes = encodeClientMessage({ kind: 'device-add', tag: 0, device: { deviceId: 1, productId: 2, serialNumber: long, locationId: 3 } });
    assert.equal(bytes.length, 284);
    assert.equal(bytes.readUInt32LE(8), ClientMessageType.DEVICE_ADD);
    assert.equal(bytes[22 + 255], 0);
    const msg = decodeOne(bytes);
    assert.equal(msg.kind === 'device-add' && msg.device.serialNumber, 'A'.repeat(255));
    assert.equal(msg.kind === 'device-add' && msg.device.locationId, 3);
  });

  test('DEVICE_ADD serial bytes that are not UTF-8 read as ?, a field with no NUL as its first 255 bytes, and both encode back to the same bytes', () => {
    const record = (serial: Buffer): Buffer => {
      const b = encodeClientMessage({ kind: 'device-add', tag: 0, device: { deviceId: 1, productId: 2, serialNumber: '', locationId: 3 } });
      serial.copy(b, 22, 0, Math.min(serial.length, 256));
      return b;
    };
    // 0xa5 alone, and a three-byte sequence cut after two bytes: neither is UTF-8; é is.
    const mixed = decodeOne(record(Buffer.from([0x41, 0x42, 0xa5, 0x43, 0xc3, 0xa9, 0xe2, 0x82, 0x00])));
    assert.equal(mixed.kind === 'device-add' && mixed.device.serialNumber, 'AB?Cé?');
    // 256 bytes, none NUL: the 256th is the NUL usbmuxd forces, so 255 are read.
    const full = decodeOne(record(Buffer.alloc(256, 0xa5)));
    assert.equal(full.kind === 'device-add' && full.device.serialNumber, '?'.repeat(255));
    for (const msg of [mixed, full]) assert.deepEqual(decodeOne(encodeClientMessage(msg)), msg);
  });

  test('DEVICE_ADD cuts a long serial before a character, never inside one', () => {
    const bytes = encodeClientMessage({ kind: 'device-add', tag: 0, device: { deviceId: 1, productId: 2, serialNumber: 'é'.repeat(200), locationId: 3 } });
    assert.equal(bytes.indexOf(0, 22), 22 + 254, '127 two-byte characters, then NUL');
    const msg = decodeOne(bytes);
    assert.equal(msg.kind === 'device-add' && msg.device.serialNumber, 'é'.repeat(127));
  });

  test('a plist message is version 1, type 8, with an XML body', () => {
    const bytes = encodeClientMessage({ kind: 'plist', tag: 4, version: 1, plist: resultMessage(0) });
    assert.deepEqual(decodeClientHeader(bytes), { length: bytes.length, version: 1, message: 8, tag: 4 });
    assert.equal(bytes.subarray(16, 21).toString(), '<?xml');
  });

  test('a binary plist body is read too', () => {
    const body = encodeBinaryPlist({ MessageType: 'ReadBUID' });
    const bytes = Buffer.concat([encodeClientHeader({ length: 16 + body.length, version: 1, message: 8, tag: 1 }), body]);
    assert.deepEqual(decodeOne(bytes), { kind: 'plist', tag: 1, version: 1, plist: { MessageType: 'ReadBUID' } });
  });
});

describe('client messages: what a daemon must be able to answer', () => {
  test('a body that is not a plist gives bad-plist, not a dropped client', () => {
    const body = Buffer.from('<?xml version="1.0"?><plist><dict><key>x</key></plist>');
    const bytes = Buffer.concat([encodeClientHeader({ length: 16 + body.length, version: 1, message: 8, tag: 6 }), body]);
    const msg = decodeOne(bytes);
    assert.equal(msg.kind, 'bad-plist');
    assert.equal(msg.tag, 6);
    assert.ok(msg.kind === 'bad-plist' && isMuxwireError(msg.error, 'MUXWIRE_ERR_BAD_PLIST'));
  });

  test('a request decoder refuses integer fields out of range or of another type as bad-request', () => {
    for (const body of [encodeXmlPlist, encodeBinaryPlist]) {
      const bad = body({ ...connectRequest(1, 22), DeviceID: 2 ** 40 + 1 });
      const bytes = Buffer.concat([encodeClientHeader({ length: 16 + bad.length, version: 1, message: 8, tag: 3 }), bad]);
      const msg = decodeClientFrame(bytes, true);
      assert.equal(msg.kind, 'bad-request');
      assert.ok(msg.kind === 'bad-request' && isMuxwireError(msg.error, 'MUXWIRE_ERR_BAD_REQUEST'));
      assert.match((msg as { error: Error }).error.message, /DeviceID: 1099511627777 is outside 0\.\.4294967295/);
      // A client reading replies is not a request decoder: the same bytes stay a plist there.
      assert.equal(decodeClientFrame(bytes).kind, 'plist');
      const good = body(connectRequest(0xffffffff, 65535));
      const goodBytes = Buffer.concat([encodeClientHeader({ length: 16 + good.length, version: 0, message: 8, tag: 3 }), good]);
      assert.equal(decodeClientFrame(goodBytes, true).kind, 'plist');
    }
  });

  test('integer fields: ranges, reals kept apart from integers, wrong types named', () => {
    assert.equal(integerFieldProblem(65535, 0xffff), undefined);
    assert.equal(integerFieldProblem(0, 0xffff), undefined);
    assert.match(integerFieldProblem(65536, 0xffff)!, /outside 0\.\.65535/);
    assert.match(integerFieldProblem(-1, 0xffff)!, /outside/);
    assert.match(integerFieldProblem(2n ** 64n - 1n, 0xffffffff)!, /outside/);
    assert.match(integerFieldProblem(0.5, 0xffff)!, /not an integer/);
    assert.match(integerFieldProblem(new PlistReal(3), 0xffff)!, /a real \(3\)/);
    assert.match(integerFieldProblem('3', 0xffff)!, /a string/);
    assert.match(integerFieldProblem(Buffer.alloc(1), 0xffff)!, /a data/);
    assert.equal(requestIntegerProblem({ MessageType: 'Connect', DeviceID: 1, PortNumber: 2, kLibUSBMuxVersion: 3 }), undefined);
    assert.match(requestIntegerProblem({ MessageType: 'Listen', kLibUSBMuxVersion: -3 })!, /^kLibUSBMuxVersion: /);
    // keepReals: an integral real is a PlistReal, in XML and binary; by default a plain number.
    for (const body of [encodeXmlPlist({ a: new PlistReal(5) }), encodeBinaryPlist({ a: new PlistReal(5) })]) {
      assert.deepEqual(decodePlist(body), { a: 5 });
      assert.deepEqual(decodePlist(body, { keepReals: true }), { a: new PlistReal(5) });
    }
  });

  test('a plist that is not a dictionary gives bad-plist', () => {
    const body = Buffer.from('<plist><array/></plist>');
    const bytes = Buffer.concat([encodeClientHeader({ length: 16 + body.length, version: 1, message: 8, tag: 1 }), body]);
    assert.equal(decodeOne(bytes).kind, 'bad-plist');
    assert.throws(() => decodeClientPlist(body), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_PLIST'));
  });

  test('a header version of 2 decodes as unknown with its version, for a BADVERSION answer', () => {
    const bytes = encodeClientHeader({ length: 16, version: 2, message: 3, tag: 8 });
    assert.deepEqual(decodeOne(bytes), { kind: 'unknown', tag: 8, version: 2, message: 3, payload: Buffer.alloc(0) });
  });

  test('a binary message of the wrong size decodes as unknown, for a BADCOMMAND answer', () => {
    const bytes = Buffer.concat([encodeClientHeader({ length: 20, version: 0, message: 2, tag: 1 }), Buffer.alloc(4)]);
    assert.equal(decodeOne(bytes).kind, 'unknown');
  });

  test('a header length below 16 is MUXWIRE_ERR_BAD_LENGTH, and the decoder stays failed', () => {
    const d = new ClientMessageDecoder();
    d.push(encodeClientHeader({ length: 15, version: 0, message: 3, tag: 1 }));
    assert.throws(() => d.next(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_LENGTH'));
    d.push(hex(LISTEN));
    assert.throws(() => d.next(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_LENGTH'));
  });

  test('a header length above 65536 is refused by default before the body arrives', () => {
    const d = new ClientMessageDecoder();
    d.push(encodeClientHeader({ length: 65537, version: 1, message: 8, tag: 1 }));
    assert.throws(() => d.next(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_LENGTH'));
  });

  test('a client may raise maxLength for large replies', () => {
    const big = { kind: 'plist', tag: 1, version: 1, plist: { PairRecordData: Buffer.alloc(70000, 1) } } as const;
    const d = new ClientMessageDecoder({ maxLength: 1 << 20 });
    d.push(encodeClientMessage(big));
    assert.deepEqual(d.next(), big);
  });

  test('remainder() hands back the tunnel bytes that followed Result 0', () => {
    const d = new ClientMessageDecoder();
    d.push(Buffer.concat([hex(CONNECT_ACCEPTED), Buffer.from('SSH-2.0-')]));
    d.push(Buffer.from('OpenSSH'));
    assert.deepEqual(d.next(), { kind: 'result', tag: 3, result: 0 });
    assert.equal(d.remainder().toString(), 'SSH-2.0-OpenSSH');
    assert.equal(d.buffered, 0);
  });

  test('decodeClientFrame reads one whole message', () => {
    assert.deepEqual(decodeClientFrame(hex(LISTEN)), { kind: 'listen', tag: 2 });
  });
});

describe('client message decoder: chunking', () => {
  const stream = Buffer.concat(allMessages().map(encodeClientMessage));
  const whole = feed(new ClientMessageDecoder(), [stream]);

  test('one chunk gives every message in order', () => {
    assert.deepEqual(whole, allMessages());
  });

  test('byte at a time gives the same messages', () => {
    assert.deepEqual(feed(new ClientMessageDecoder(), splitBytes(stream)), whole);
  });

  test('random splits give the same messages', (t) => {
    const rng = new Prng(fuzzSeed(t, 'client split'));
    for (let i = 0; i < 200; i++) {
      assert.deepEqual(feed(new ClientMessageDecoder(), splitRandomly(rng, stream, rng.range(1, 400))), whole);
    }
  });

  test('a message that arrives whole is a view into its chunk, not a copy', () => {
    const chunk = encodeClientMessage({ kind: 'unknown', tag: 1, version: 0, message: 9, payload: Buffer.from('abcdef') });
    const d = new ClientMessageDecoder();
    d.push(chunk);
    const msg = d.next();
    assert.ok(msg?.kind === 'unknown');
    assert.equal(msg.payload.buffer, chunk.buffer);
  });
});
