import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import * as npmPlist from 'plist';
import bplistCreator from 'bplist-creator';
import {
  PlistReal,
  PlistUID,
  decodeBinaryPlist,
  decodePlist,
  decodeXmlPlist,
  encodeBinaryPlist,
  encodeXmlPlist,
  isPlistDict,
} from '../../src/protocol/plist.js';
import type { PlistDict, PlistValue } from '../../src/protocol/plist.js';
import { isMuxwireError } from '../../src/errors.js';
import { QUERY_TYPE_XML, QUERY_TYPE_XML_COMPACT, QUERY_TYPE_REPLY_XML } from './fixtures.js';

const BAD = (err: unknown) => isMuxwireError(err, 'MUXWIRE_ERR_BAD_PLIST');

/** One of every value type, including the awkward ones. */
function everyType(): PlistDict {
  return {
    string: 'hello',
    empty: '',
    escaped: 'a < b && c > d\r\n"quoted" \'single\'',
    unicode: 'Grüße, 東京, emoji 😀',
    int: 42,
    zero: 0,
    negative: -17,
    int32: 0xffffffff,
    int53: Number.MAX_SAFE_INTEGER,
    big: 2n ** 53n + 1n,
    int64max: 2n ** 63n - 1n,
    int64min: -(2n ** 63n),
    uint64max: 2n ** 64n - 1n,
    real: 3.25,
    negReal: -0.5,
    tiny: 1e-300,
    forcedReal: new PlistReal(7),
    yes: true,
    no: false,
    data: Buffer.from([0, 1, 2, 3, 254, 255]),
    emptyData: Buffer.alloc(0),
    longData: Buffer.from(Array.from({ length: 200 }, (_, i) => i)),
    date: new Date('2021-06-01T12:34:56Z'),
    uid: new PlistUID(5),
    bigUid: new PlistUID(70000),
    array: [1, 'two', [3, [4]], { five: 5 }],
    emptyArray: [],
    dict: { nested: { deeper: { deepest: 'yes' } } },
    emptyDict: {},
  };
}

/** What a decoded value looks like: PlistReal becomes a number. */
function normalized(v: PlistValue): PlistValue {
  if (v instanceof PlistReal) return v.value;
  if (Array.isArray(v)) return v.map(normalized);
  if (isPlistDict(v)) {
    const out: PlistDict = {};
    for (const [k, x] of Object.entries(v)) if (x !== undefined) out[k] = normalized(x);
    return out;
  }
  return v;
}

describe('XML plist', () => {
  test('writes the QueryType request byte for byte as libplist does', () => {
    const out = encodeXmlPlist({ Label: 'ideviceinfo', Request: 'QueryType' });
    assert.equal(out.toString('utf8'), QUERY_TYPE_XML);
    assert.ok(out.subarray(0, 5).equals(Buffer.from('<?xml')));
  });

  test('reads the QueryType request and reply, pretty and compact', () => {
    const request = { Label: 'ideviceinfo', Request: 'QueryType' };
    assert.deepEqual(decodeXmlPlist(Buffer.from(QUERY_TYPE_XML)), request);
    assert.deepEqual(decodeXmlPlist(QUERY_TYPE_XML_COMPACT), request);
    assert.deepEqual(decodeXmlPlist(Buffer.from(QUERY_TYPE_REPLY_XML)), {
      Request: 'QueryType',
      Type: 'com.apple.mobile.lockdown',
    });
  });

  test('round-trips every value type', () => {
    const v = everyType();
    const back = decodeXmlPlist(encodeXmlPlist(v));
    assert.deepEqual(back, normalized(v));
    const d = back as PlistDict;
    assert.equal(typeof d.big, 'bigint');
    assert.equal(typeof d.int53, 'number');
    assert.ok(d.uid instanceof PlistUID);
  });

  test('indents nested containers with one tab per level and self-closes empty ones', () => {
    const text = encodeXmlPlist({ a: [{ b: 1 }], e: {}, f: [] }).toString();
    assert.match(text, /\n<dict>\n\t<key>a<\/key>\n\t<array>\n\t\t<dict>\n\t\t\t<key>b<\/key>\n\t\t\t<integer>1<\/integer>\n\t\t<\/dict>\n\t<\/array>\n/);
    assert.match(text, /\t<dict\/>\n/);
    assert.match(text, /\t<array\/>\n<\/dict>\n<\/plist>\n$/);
  });

  test('writes a UID as a CF$UID dictionary and an integral PlistReal as <real>', () => {
    const text = encodeXmlPlist([new PlistUID(3), new PlistReal(2), 2]).toString();
    assert.match(text, /<dict>\n\t\t<key>CF\$UID<\/key>\n\t\t<integer>3<\/integer>\n\t<\/dict>/);
    assert.match(text, /<real>2<\/real>/);
    assert.match(text, /<integer>2<\/integer>/);
  });

  test('skips undefined dictionary members', () => {
    assert.deepEqual(decodeXmlPlist(encodeXmlPlist({ a: 1, b: undefined })), { a: 1 });
  });

  test('writes dates in whole seconds, as Apple and libplist do', () => {
    const out = decodeXmlPlist(encodeXmlPlist(new Date('2020-02-03T04:05:06.789Z')));
    assert.deepEqual(out, new Date('2020-02-03T04:05:06Z'));
  });

  test('is read by the plist npm package to the same values', () => {
    const v: PlistDict = {
      s: 'x & y <z>',
      u: 'Grüße 😀',
      i: -12,
      r: 2.5,
      t: true,
      f: false,
      d: Buffer.from('some data here'),
      date: new Date('2019-12-31T23:59:59Z'),
      a: [1, [2, { k: 'v' }], {}],
      e: [],
    };
    const parsed = npmPlist.parse(encodeXmlPlist(v).toString('utf8')) as Record<string, unknown>;
    assert.equal(parsed.s, v.s);
    assert.equal(parsed.u, v.u);
    assert.equal(parsed.i, -12);
    assert.equal(parsed.r, 2.5);
    assert.equal(parsed.t, true);
    assert.equal(parsed.f, false);
    assert.deepEqual(Buffer.from(parsed.d as Uint8Array), v.d);
    assert.equal((parsed.date as Date).getTime(), (v.date as Date).getTime());
    assert.deepEqual(parsed.a, [1, [2, { k: 'v' }], {}]);
    assert.deepEqual(parsed.e, []);
  });

  test('reads what the plist npm package writes', () => {
    const text = npmPlist.build({ name: 'dev', n: 7, list: ['a', 'b'], flag: true, blob: Buffer.from('xyz') } as never);
    assert.deepEqual(decodeXmlPlist(text), { name: 'dev', n: 7, list: ['a', 'b'], flag: true, blob: Buffer.from('xyz') });
  });

  test('tolerates raw control characters, as devices since iOS 4.3 send them', () => {
    const text =
      '<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0">\x01<dict>\x02\n' +
      '<key>Name</key><string>bad\x01name\x1f</string>\x0b</dict></plist>\n';
    assert.deepEqual(decodeXmlPlist(Buffer.from(text)), { Name: 'bad\x01name\x1f' });
    // and writes them back raw, which LIMD and pymobiledevice3 cope with
    assert.deepEqual(decodeXmlPlist(encodeXmlPlist({ Name: 'x\x01y' })), { Name: 'x\x01y' });
  });

  test('reads entities, character references, CDATA, comments and a BOM', () => {
    const text =
      '\ufeff<?xml version="1.0"?><!-- c --><!DOCTYPE plist [ <!ENTITY x "y"> ]><plist version="1.0"><array>' +
      '<string>&amp;&lt;&gt;&quot;&apos;&#65;&#x42;&#x1F600;</string><!-- inside -->' +
      '<string><![CDATA[<raw> & stuff]]></string><string/><integer>0x1F</integer><integer> -5 </integer>' +
      '<real>1e3</real><real>nan</real><real>-infinity</real><true></true><date>2001-01-01T00:00:00Z</date>' +
      '<data>  AAEC\n  Aw==  </data></array></plist>';
    const out = decodeXmlPlist(text) as PlistValue[];
    assert.deepEqual(out.slice(0, 6), ['&<>"\'AB😀', '<raw> & stuff', '', 31, -5, 1000]);
    assert.ok(Number.isNaN(out[6] as number));
    assert.deepEqual(out.slice(7), [-Infinity, true, new Date(978307200000), Buffer.from([0, 1, 2, 3])]);
  });

  test('never lets a __proto__ key change an object prototype', () => {
    const out = decodeXmlPlist('<plist><dict><key>__proto__</key><dict><key>polluted</key><true/></dict></dict></plist>') as PlistDict;
    assert.equal(Object.getPrototypeOf(out), Object.prototype);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.deepEqual(Object.keys(out), ['__proto__']);
  });

  const malformed: Array<[string, string]> = [
    ['empty input', ''],
    ['only the declaration', '<?xml version="1.0"?>'],
    ['text, not XML', 'hello'],
    ['an unknown element', '<plist><foo/></plist>'],
    ['an unclosed dict', '<plist><dict><key>a</key><string>b</string></plist>'],
    ['a key without a value', '<plist><dict><key>a</key></dict></plist>'],
    ['a value without a key', '<plist><dict><string>a</string></dict></plist>'],
    ['a mismatched end tag', '<plist><string>a</integer></plist>'],
    ['a bad integer', '<plist><integer>12a</integer></plist>'],
    ['an empty integer', '<plist><integer></integer></plist>'],
    ['an integer beyond 64 bits', '<plist><integer>18446744073709551616</integer></plist>'],
    ['an integer below -2^63', '<plist><integer>-9223372036854775809</integer></plist>'],
    ['a bad real', '<plist><real>1.2.3</real></plist>'],
    ['a bad date', '<plist><date>yesterday</date></plist>'],
    ['a date with month 13', '<plist><date>2020-13-01T00:00:00Z</date></plist>'],
    ['bad base64', '<plist><data>!!!!</data></plist>'],
    ['an unknown entity', '<plist><string>&foo;</string></plist>'],
    ['an unterminated entity', '<plist><string>a & b</string></plist>'],
    ['a NUL character reference', '<plist><string>&#0;</string></plist>'],
    ['an element inside a string', '<plist><string>a<b/>c</string></plist>'],
    ['two root values', '<plist><true/><false/></plist>'],
    ['content after the plist', '<plist><true/></plist>junk'],
    ['text inside <true>', '<plist><true>yes</true></plist>'],
    ['an unterminated comment', '<plist><!-- <true/></plist>'],
    ['an unterminated tag', '<plist><dict'],
    ['an empty <plist/>', '<plist/>'],
  ];
  for (const [what, text] of malformed) {
    test(`rejects ${what} with MUXWIRE_ERR_BAD_PLIST`, () => {
      assert.throws(() => decodeXmlPlist(text), BAD);
    });
  }

  test('rejects nesting deeper than 512 levels without exhausting the stack', () => {
    const deep = '<plist>' + '<array>'.repeat(600) + '</array>'.repeat(600) + '</plist>';
    assert.throws(() => decodeXmlPlist(deep), BAD);
    const ok = '<plist>' + '<array>'.repeat(100) + '</array>'.repeat(100) + '</plist>';
    assert.ok(Array.isArray(decodeXmlPlist(ok)));
  });

  test('refuses to encode what a plist cannot hold', () => {
    const cyclic: PlistDict = { a: 1 };
    cyclic.self = cyclic;
    for (const v of [null, [undefined], cyclic, { f: () => 1 }, 2n ** 64n, -(2n ** 63n) - 1n, new Date(NaN), Symbol('s'), new PlistUID(-1), new PlistUID(2 ** 32), new PlistUID(1.5)]) {
      assert.throws(() => encodeXmlPlist(v as unknown as PlistValue), BAD);
      assert.throws(() => encodeBinaryPlist(v as unknown as PlistValue), BAD);
    }
  });
});

/** Builds a binary plist from raw object bodies: lets tests write exactly the hostile bytes they mean. */
function bplist(objects: Buffer[], opts: { top?: number; refSize?: number; offsetSize?: number; numObjects?: bigint; tableOffset?: bigint } = {}): Buffer {
  const head = Buffer.from('bplist00', 'latin1');
  const offsets: number[] = [];
  let pos = head.length;
  for (const o of objects) {
    offsets.push(pos);
    pos += o.length;
  }
  const offsetSize = opts.offsetSize ?? 1;
  const table = Buffer.alloc(objects.length * offsetSize);
  offsets.forEach((o, i) => table.writeUIntBE(o, i * offsetSize, offsetSize));
  const trailer = Buffer.alloc(32);
  trailer[6] = offsetSize;
  trailer[7] = opts.refSize ?? 1;
  trailer.writeBigUInt64BE(opts.numObjects ?? BigInt(objects.length), 8);
  trailer.writeBigUInt64BE(BigInt(opts.top ?? 0), 16);
  trailer.writeBigUInt64BE(opts.tableOffset ?? BigInt(pos), 24);
  return Buffer.concat([head, ...objects, table, trailer]);
}
const b = (...bytes: number[]) => Buffer.from(bytes);

describe('binary plist', () => {
  test('round-trips every value type', () => {
    const v = everyType();
    const out = encodeBinaryPlist(v);
    assert.equal(out.subarray(0, 8).toString('latin1'), 'bplist00');
    assert.deepEqual(decodeBinaryPlist(out), normalized(v));
  });

  test('keeps sub-second dates', () => {
    const d = new Date('2024-02-29T23:59:59.125Z');
    assert.deepEqual(decodeBinaryPlist(encodeBinaryPlist(d)), d);
  });

  test('writes ASCII strings as 0x5n and others as UTF-16BE 0x6n', () => {
    const ascii = encodeBinaryPlist('abc');
    assert.deepEqual([...ascii.subarray(8, 12)], [0x53, 0x61, 0x62, 0x63]);
    const wide = encodeBinaryPlist('é😀');
    // 3 UTF-16 code units: é, then the surrogate pair, big-endian
    assert.deepEqual([...wide.subarray(8, 15)], [0x63, 0x00, 0xe9, 0xd8, 0x3d, 0xde, 0x00]);
    assert.equal(decodeBinaryPlist(wide), 'é😀');
  });

  test('writes integers in the smallest width, negatives as 8 bytes and u64 above 2^63-1 as 16 bytes', () => {
    assert.deepEqual([...encodeBinaryPlist(255).subarray(8, 10)], [0x10, 0xff]);
    assert.deepEqual([...encodeBinaryPlist(256).subarray(8, 11)], [0x11, 0x01, 0x00]);
    assert.deepEqual([...encodeBinaryPlist(-1).subarray(8, 17)], [0x13, 255, 255, 255, 255, 255, 255, 255, 255]);
    const huge = encodeBinaryPlist(2n ** 64n - 1n);
    assert.equal(huge[8], 0x14);
    assert.equal(decodeBinaryPlist(huge), 2n ** 64n - 1n);
  });

  test('uniques repeated strings, as CoreFoundation does', () => {
    const one = encodeBinaryPlist([{ Key: 'v' }]);
    const many = encodeBinaryPlist([{ Key: 'v' }, { Key: 'v' }, { Key: 'v' }]);
    assert.ok(many.length - one.length < 3 * 10);
  });

  test('reads what bplist-creator writes', () => {
    const buf = bplistCreator({ s: 'text', u: 'ünï', n: 12, neg: -3, big: 123456789012, r: 1.5, t: true, d: Buffer.from('xy'), a: [1, 'b'], o: { x: 1 } });
    assert.deepEqual(decodeBinaryPlist(buf), { s: 'text', u: 'ünï', n: 12, neg: -3, big: 123456789012, r: 1.5, t: true, d: Buffer.from('xy'), a: [1, 'b'], o: { x: 1 } });
  });

  test('reads what the plist npm package writes as binary, and it reads ours', () => {
    const v = { s: 'x', n: 300, list: [true, false, 'é'], d: Buffer.from([9, 8, 7]), date: new Date('2010-01-01T00:00:00Z') };
    const theirs = npmPlist.buildBinary(v as never);
    assert.deepEqual(decodeBinaryPlist(Buffer.from(theirs)), v);
    const back = npmPlist.parseBinary(encodeBinaryPlist(v)) as Record<string, unknown>;
    assert.equal(back.s, 'x');
    assert.equal(back.n, 300);
    assert.deepEqual(back.list, [true, false, 'é']);
    assert.equal((back.date as Date).getTime(), v.date.getTime());
  });

  test('reads 1-, 2-, 4- and 8-byte refs and offsets', () => {
    // [ "a", 7 ] with 2-byte refs and 4-byte offsets
    const buf = bplist([b(0xa2, 0, 1, 0, 2), b(0x51, 0x61), b(0x10, 7)], { refSize: 2, offsetSize: 4 });
    assert.deepEqual(decodeBinaryPlist(buf), ['a', 7]);
  });

  test('reads a length that follows the marker as an integer object', () => {
    const s = 'x'.repeat(20);
    const buf = bplist([Buffer.concat([b(0x5f, 0x10, 20), Buffer.from(s)])]);
    assert.equal(decodeBinaryPlist(buf), s);
  });

  const hostile: Array<[string, Buffer]> = [
    ['a truncated file', encodeBinaryPlist({ a: 1 }).subarray(0, 20)],
    ['a bad magic', Buffer.concat([Buffer.from('bplist01'), encodeBinaryPlist(1).subarray(8)])],
    ['an offset size of 0', (() => { const x = bplist([b(0x09)]); x[x.length - 26] = 0; return x; })()],
    ['a ref size of 9', bplist([b(0x09)], { refSize: 9 })],
    ['no objects', bplist([b(0x09)], { numObjects: 0n })],
    ['2^64-1 objects', bplist([b(0x09)], { numObjects: 2n ** 64n - 1n })],
    ['more objects than the table can hold', bplist([b(0x09)], { numObjects: 1000n })],
    ['a top object out of range', bplist([b(0x09)], { top: 1 })],
    ['an offset table past the end', bplist([b(0x09)], { tableOffset: 2n ** 40n })],
    ['an object offset inside the header', (() => { const x = bplist([b(0x09)]); x[x.length - 33] = 2; return x; })()],
    ['an object ref out of range', bplist([b(0xa1, 5)])],
    ['an array that contains itself', bplist([b(0xa1, 0)])],
    ['two arrays that contain each other', bplist([b(0xa1, 1), b(0xa1, 0)])],
    ['a dict key that is not a string', bplist([b(0xd1, 1, 1), b(0x10, 1)])],
    ['a string running past the objects', bplist([b(0x5f, 0x10, 200, 0x61)])],
    ['a UTF-16 string running past the objects', bplist([b(0x6f, 0x13, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)])],
    ['a data length of 2^63', bplist([b(0x4f, 0x13, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)])],
    ['an array count of 2^32', bplist([b(0xaf, 0x12, 0xff, 0xff, 0xff, 0xff)])],
    ['a length that is not an integer', bplist([b(0x5f, 0x51, 0x61)])],
    ['an integer wider than 128 bits', bplist([b(0x15, ...new Array(32).fill(0))])],
    ['a real of 2 bytes', bplist([b(0x21, 0, 0)])],
    ['a null object', bplist([b(0x00)])],
    ['an unknown marker', bplist([b(0xe0)])],
    ['a UID of 3 bytes wider than 32 bits', bplist([b(0x87, 1, 2, 3, 4, 5, 6, 7, 8)])],
    ['a truncated integer', bplist([b(0x13, 1, 2)])],
  ];
  for (const [what, buf] of hostile) {
    test(`rejects ${what} with MUXWIRE_ERR_BAD_PLIST`, () => {
      assert.throws(() => decodeBinaryPlist(buf), BAD);
    });
  }

  test('rejects nesting deeper than 512 levels', () => {
    const n = 600;
    const objects = Array.from({ length: n }, (_, i) => (i < n - 1 ? b(0xa1, 0, 0) : b(0xa0)));
    // refs of 2 bytes: object i holds i+1
    for (let i = 0; i < n - 1; i++) objects[i].writeUInt16BE(i + 1, 1);
    assert.throws(() => decodeBinaryPlist(bplist(objects, { refSize: 2, offsetSize: 2 })), BAD);
  });

  test('refuses a small file that shares references into a huge value (billion laughs)', () => {
    // object i is an array holding object i+1 twice: 2^40 leaves from ~200 bytes
    const n = 40;
    const objects = Array.from({ length: n }, (_, i) => (i < n - 1 ? b(0xa2, i + 1, i + 1) : b(0x51, 0x78)));
    assert.throws(() => decodeBinaryPlist(bplist(objects)), BAD);
  });

  test('accepts legitimately shared leaves, such as repeated keys', () => {
    const rows = Array.from({ length: 2000 }, (_, i) => ({ Name: 'file', Size: 4096, Flag: true, Index: i % 3 }));
    assert.deepEqual(decodeBinaryPlist(encodeBinaryPlist(rows)), rows);
  });
});

describe('decodePlist', () => {
  test('picks the format from the first bytes', () => {
    const v = { Request: 'QueryType' };
    assert.deepEqual(decodePlist(encodeXmlPlist(v)), v);
    assert.deepEqual(decodePlist(encodeBinaryPlist(v)), v);
    assert.throws(() => decodePlist(Buffer.from('bplist00')), BAD);
    assert.throws(() => decodePlist(Buffer.from([0xff, 0xfe, 0])), BAD);
  });

  test('isPlistDict tells dictionaries from every other value', () => {
    assert.equal(isPlistDict({}), true);
    for (const v of [[], Buffer.alloc(1), new Date(), new PlistUID(1), new PlistReal(1), 'x', 1, null, undefined]) {
      assert.equal(isPlistDict(v), false);
    }
  });
});
