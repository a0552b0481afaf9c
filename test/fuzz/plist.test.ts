/**
 * Fuzz: the XML and binary plist parsers. Besides "a value or a coded error", every value decoded
 * must encode again and decode to itself, and a binary plist may not expand beyond its budget.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import bplistCreator from 'bplist-creator';
import { PlistReal, PlistUID, decodeBinaryPlist, decodeXmlPlist, encodeBinaryPlist, encodeXmlPlist, isPlistDict } from '../../src/protocol/plist.js';
import type { PlistValue } from '../../src/protocol/plist.js';
import { runFuzz } from '../helpers/fuzz.js';
import { QUERY_TYPE_REPLY_XML, QUERY_TYPE_XML, QUERY_TYPE_XML_COMPACT } from '../protocol/fixtures.js';

const sample = {
  s: 'str',
  u: 'ü😀',
  i: [0, -1, 255, 65536, 2 ** 40, 2n ** 63n, 2n ** 64n - 1n, -(2n ** 63n)],
  r: [0.5, new PlistReal(1), -0, 1e300],
  b: [true, false],
  d: Buffer.from([0, 1, 2, 255]),
  t: new Date('2020-01-01T00:00:00Z'),
  id: new PlistUID(9),
  nest: { a: [{ b: {} }, []] },
};

/** Number of values in a decoded plist (what the binary decoder's budget bounds). */
function size(v: PlistValue): number {
  if (Array.isArray(v)) return v.reduce<number>((n, x) => n + size(x), 1);
  if (isPlistDict(v)) return Object.values(v).reduce<number>((n, x) => n + (x === undefined ? 0 : size(x) + 1), 1);
  return 1;
}

/** XML writes dates in whole seconds; compare on that footing. */
function wholeSeconds(v: PlistValue): PlistValue {
  if (v instanceof Date) return new Date(Math.floor(v.getTime() / 1000) * 1000);
  if (Array.isArray(v)) return v.map(wholeSeconds);
  if (isPlistDict(v)) {
    const out: Record<string, PlistValue> = {};
    for (const [k, x] of Object.entries(v)) if (x !== undefined) Object.defineProperty(out, k, { value: wholeSeconds(x), enumerable: true, writable: true, configurable: true });
    return out;
  }
  return v;
}

test('the XML plist parser survives 100,000 mutated documents', (t) => {
  const seeds = [
    Buffer.from(QUERY_TYPE_XML),
    Buffer.from(QUERY_TYPE_XML_COMPACT),
    Buffer.from(QUERY_TYPE_REPLY_XML),
    encodeXmlPlist(sample),
    Buffer.from('<plist><array><string>&amp;&#x41;<![CDATA[x]]></string><real>nan</real><date>2001-01-01T00:00:00.5Z</date><data>AA==</data></array></plist>'),
  ];
  const tokens = [
    '<dict>', '</dict>', '<dict/>', '<array>', '</array>', '<key>', '</key>', '<string>', '</string>', '<integer>',
    '</integer>', '<real>', '</real>', '<true/>', '<false/>', '<data>', '</data>', '<date>', '</date>', '<plist>',
    '</plist>', '<!--', '-->', '<![CDATA[', ']]>', '&amp;', '&#', '&#x', ';', '&', '<', '>', '/>', '"', 'CF$UID',
    '0x', '-', '.', 'e+', 'nan', '\x01', '\r\n', '<!DOCTYPE plist [', ']>', '<?xml ?>', '=', '9223372036854775808',
  ].map((x) => Buffer.from(x));
  runFuzz(t, {
    name: 'plist-xml',
    seeds,
    tokens,
    iterations: 100_000,
    run(input) {
      const v = decodeXmlPlist(input);
      assert.deepEqual(decodeXmlPlist(encodeXmlPlist(v)), wholeSeconds(v));
    },
  });
});

test('the binary plist parser survives 100,000 mutated files', (t) => {
  const seeds = [
    encodeBinaryPlist(sample),
    encodeBinaryPlist({ Request: 'QueryType', Type: 'com.apple.mobile.lockdown' }),
    encodeBinaryPlist([[['deep']], 'shared', 'shared', { k: 'shared' }]),
    bplistCreator({ a: [1, 2, 3], s: 'text', u: 'ünï', r: 1.5, d: Buffer.from('xy'), o: { x: true } }),
  ];
  // Marker bytes of every object type and some lengths, to build odd objects.
  const tokens = [0x08, 0x09, 0x10, 0x13, 0x14, 0x23, 0x33, 0x40, 0x4f, 0x51, 0x5f, 0x61, 0x6f, 0x80, 0x83, 0xa1, 0xaf, 0xd1, 0xdf, 0x00, 0xff].map((b) => Buffer.from([b]));
  runFuzz(t, {
    name: 'plist-binary',
    seeds,
    tokens,
    iterations: 100_000,
    run(input) {
      const v = decodeBinaryPlist(input);
      assert.ok(size(v) <= input.length * 8 + 1024, `decoded ${size(v)} values from ${input.length} bytes`);
      assert.deepEqual(decodeBinaryPlist(encodeBinaryPlist(v)), v);
    },
  });
});
