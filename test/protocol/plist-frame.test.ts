import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { PlistFrameDecoder, encodePlistFrame } from '../../src/protocol/plist-frame.js';
import { PlistReal, PlistUID, encodeBinaryPlist, encodeXmlPlist } from '../../src/protocol/plist.js';
import type { PlistValue } from '../../src/protocol/plist.js';
import { isMuxwireError } from '../../src/errors.js';
import { Prng, feed, fuzzSeed, splitBytes, splitRandomly } from '../helpers/fuzz.js';
import { LOCKDOWN_FRAME_300_PREFIX, QUERY_TYPE_REPLY_XML, QUERY_TYPE_XML, QUERY_TYPE_XML_COMPACT, frame, hex } from './fixtures.js';

const VALUES: PlistValue[] = [
  { Label: 'ideviceinfo', Request: 'QueryType' },
  { Request: 'GetValue', Key: 'ProductVersion', Value: '17.4' },
  { big: 2n ** 64n - 1n, neg: -(2n ** 63n), n: 1, r: 0.5, f: new PlistReal(3), u: new PlistUID(2), d: Buffer.alloc(300, 7), t: new Date('2022-02-02T02:02:02Z'), s: 'é😀', a: [[], {}], yes: true, no: false },
  ['just', 'an', 'array'],
  'a bare string',
];

function stream(): Buffer {
  return Buffer.concat(VALUES.flatMap((v) => [encodePlistFrame(v, 'xml'), encodePlistFrame(v, 'binary')]));
}

describe('plist frames: lockdown fixtures', () => {
  test('the QueryType request and reply, as libimobiledevice sends them, decode to their dictionaries', () => {
    const d = new PlistFrameDecoder();
    const out = feed(d, [frame(QUERY_TYPE_XML), frame(QUERY_TYPE_XML_COMPACT), frame(QUERY_TYPE_REPLY_XML)]);
    assert.deepEqual(out, [
      { value: { Label: 'ideviceinfo', Request: 'QueryType' }, format: 'xml' },
      { value: { Label: 'ideviceinfo', Request: 'QueryType' }, format: 'xml' },
      { value: { Request: 'QueryType', Type: 'com.apple.mobile.lockdown' }, format: 'xml' },
    ]);
  });

  test('encodes the QueryType request as length + the libplist bytes', () => {
    assert.ok(encodePlistFrame({ Label: 'ideviceinfo', Request: 'QueryType' }).equals(frame(QUERY_TYPE_XML)));
  });

  test('a 300-byte body has the length prefix 00 00 01 2C (lockdown-afc.md §9.7.1)', () => {
    const base = encodeXmlPlist({ Request: 'QueryType', Pad: '' }).length;
    const framed = encodePlistFrame({ Request: 'QueryType', Pad: 'x'.repeat(300 - base) });
    assert.equal(framed.length, 304);
    assert.ok(framed.subarray(0, 4).equals(hex(LOCKDOWN_FRAME_300_PREFIX)));
    assert.equal(framed.subarray(4, 42).toString(), '<?xml version="1.0" encoding="UTF-8"?>');
  });

  test('the length is big-endian and counts the body only', () => {
    const f = encodePlistFrame({ a: 1 }, 'binary');
    assert.equal(f.readUInt32BE(0), f.length - 4);
    assert.equal(f.subarray(4, 12).toString(), 'bplist00');
  });
});

describe('plist frames: chunking (this is how the plist parsers are fed incrementally)', () => {
  const bytes = stream();
  const whole = feed(new PlistFrameDecoder(), [bytes]);

  test('one chunk gives every value, in both formats', () => {
    assert.equal(whole.length, VALUES.length * 2);
    assert.deepEqual(whole.map((w) => w.format), VALUES.flatMap(() => ['xml', 'binary']));
  });

  test('byte at a time gives the same values', () => {
    assert.deepEqual(feed(new PlistFrameDecoder(), splitBytes(bytes)), whole);
  });

  test('random splits give the same values', (t) => {
    const rng = new Prng(fuzzSeed(t, 'plist frame split'));
    for (let i = 0; i < 200; i++) assert.deepEqual(feed(new PlistFrameDecoder(), splitRandomly(rng, bytes, rng.range(1, 300))), whole);
  });

  test('LIMD-style delivery, length and body in separate writes, works', () => {
    const body = Buffer.from(QUERY_TYPE_XML);
    const f = frame(body);
    assert.deepEqual(feed(new PlistFrameDecoder(), [f.subarray(0, 4), f.subarray(4)]).map((x) => x.value), [{ Label: 'ideviceinfo', Request: 'QueryType' }]);
  });
});

describe('plist frames: bad input', () => {
  test('a length above maxLength is MUXWIRE_ERR_BAD_LENGTH before the body arrives, and sticks', () => {
    const d = new PlistFrameDecoder({ maxLength: 1000 });
    d.push(Buffer.from([0, 0, 3, 0xe9]));
    assert.throws(() => d.next(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_LENGTH'));
    assert.throws(() => d.next(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_LENGTH'));
  });

  test('the default limit is 16 MiB', () => {
    const d = new PlistFrameDecoder();
    d.push(Buffer.from([0x01, 0x00, 0x00, 0x01]));
    assert.throws(() => d.next(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_LENGTH'));
  });

  test('a body that is not a plist is MUXWIRE_ERR_BAD_PLIST and the next frame still decodes', () => {
    const d = new PlistFrameDecoder();
    d.push(Buffer.concat([frame('not a plist'), frame(QUERY_TYPE_REPLY_XML), frame(encodeBinaryPlist({ ok: true }).subarray(0, 20))]));
    assert.throws(() => d.next(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_PLIST'));
    assert.deepEqual(d.next()?.value, { Request: 'QueryType', Type: 'com.apple.mobile.lockdown' });
    assert.throws(() => d.next(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_PLIST'));
    assert.equal(d.next(), undefined);
  });

  test('remainder() returns undecoded bytes, for a switch to TLS', () => {
    const d = new PlistFrameDecoder();
    d.push(Buffer.concat([frame(QUERY_TYPE_REPLY_XML), Buffer.from([0x16, 0x03, 0x01])]));
    assert.ok(d.next());
    assert.deepEqual([...d.remainder()], [0x16, 0x03, 0x01]);
  });
});
