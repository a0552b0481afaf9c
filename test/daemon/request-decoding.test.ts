/**
 * The daemon's fast paths for plist requests and replies (src/protocol/client-flat-plist.ts,
 * encodePlistResult in client-message.ts): they must give exactly what the general codecs give.
 * The flat reader either returns the general reader's dictionary or declines (undefined); it must
 * never accept what the general reader rejects, nor read anything differently.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeFlatXmlDict } from '../../src/protocol/client-flat-plist.js';
import { decodeClientPlist, encodeClientMessage, encodePlistResult } from '../../src/protocol/client-message.js';
import { connectRequest, listenRequest, plistRequest, resultMessage } from '../../src/protocol/client-plist.js';
import { decodePlist, encodeBinaryPlist, encodeXmlPlist } from '../../src/protocol/plist.js';
import type { PlistDict, PlistValue } from '../../src/protocol/plist.js';
import { Prng, fuzzSeed } from '../helpers/fuzz.js';

/** What the general reader makes of `body`, or the error it throws. */
function general(body: Buffer): { value: PlistValue } | { error: unknown } {
  try {
    return { value: decodePlist(body) };
  } catch (error) {
    return { error };
  }
}

/** The flat reader's answer for `body` is undefined or exactly the general reader's. */
function assertAgrees(body: Buffer, why: string): PlistDict | undefined {
  const flat = decodeFlatXmlDict(body);
  if (flat === undefined) return undefined;
  const g = general(body);
  assert.ok('value' in g, `${why}: the flat reader accepted what the general one rejects: ${body.toString('latin1')}`);
  assert.deepEqual(flat, g.value, `${why}: ${body.toString('latin1')}`);
  assert.deepEqual(Object.keys(flat), Object.keys(g.value as PlistDict), `${why}: key order`);
  return flat;
}

const TEXT_PIECES = ['a', 'Z', '0', ' ', '\t', '\n', '\r', '\x01', '>', '&', '<', '"', "'", 'é', '日本', '😀', ']]>', 'CF$UID', '__proto__', 'constructor', '1', '007'];

/** Pieces the XML encoder writes as they are (no escape). */
const PLAIN_PIECES = TEXT_PIECES.filter((p) => !/[&<>\r]/.test(p));

function randomText(rng: Prng, plain: boolean): string {
  let s = '';
  const n = rng.int(6);
  for (let i = 0; i < n; i++) s += rng.pick(plain ? PLAIN_PIECES : TEXT_PIECES);
  return s;
}

/**
 * A random dictionary: strings and integers of every size, sometimes other values. A `plain` one
 * has only text that needs no escape and non-negative integers, the shape the fast path reads.
 */
function randomDict(rng: Prng, plain: boolean): PlistDict {
  const dict: PlistDict = {};
  const n = rng.int(8);
  for (let i = 0; i < n; i++) {
    const key = rng.chance(0.5) ? rng.pick(['MessageType', 'DeviceID', 'PortNumber', 'ProgName', 'kLibUSBMuxVersion']) : randomText(rng, plain);
    const kind = plain ? rng.int(8) : rng.int(10);
    let value: PlistValue;
    if (kind < 5) value = randomText(rng, plain);
    else if (kind < 8) value = plain ? rng.pick([0, 1, 3, 32498, 0xffffffff, 999999999999999]) : rng.pick([1000000000000000, Number.MAX_SAFE_INTEGER, -1, 7]);
    else if (kind === 8) value = rng.pick([true, 1.5, Buffer.from('ab'), 2n ** 63n - 1n]);
    else value = { Inner: randomText(rng, false) };
    Object.defineProperty(dict, key, { value, enumerable: true, writable: true, configurable: true });
  }
  return dict;
}

test('reads the requests libusbmuxd sends as the general reader does', () => {
  for (const req of [connectRequest(3, 62078, 'idevicesyslog'), listenRequest('usbmuxd-test'), plistRequest('ReadPairRecord', { PairRecordID: '00008030-001229C01146402E' })]) {
    const body = encodeXmlPlist(req);
    const flat = assertAgrees(body, 'request');
    assert.deepEqual(flat, req, 'the fast path took it');
  }
});

test('declines shapes it does not read, leaving them to the general reader', () => {
  const connect = encodeXmlPlist(connectRequest(1, 7)).toString('latin1');
  const declined = [
    encodeXmlPlist({ MessageType: 'Connect', Nested: { A: 1 } }),
    encodeXmlPlist({ MessageType: 'Save', Data: Buffer.from('x') }),
    encodeXmlPlist({ CF$UID: 1 }),
    encodeXmlPlist(JSON.parse('{"MessageType":"Connect","__proto__":"x"}') as PlistDict),
    encodeXmlPlist({ MessageType: 'A&B' }),
    encodeXmlPlist({ Big: 2n ** 62n }),
    encodeXmlPlist({ Negative: -1 }),
    encodeBinaryPlist(connectRequest(1, 7)),
    Buffer.from(connect.replace('<dict>', '<dict><!-- note -->'), 'latin1'),
    Buffer.from(connect.replace('<key>DeviceID</key>', '<key >DeviceID</key>'), 'latin1'),
    Buffer.from(connect.replace('<?xml version="1.0" encoding="UTF-8"?>', '<?xml version="1.0"?>'), 'latin1'),
    Buffer.from(connect.replace('</plist>', '</plist><x/>'), 'latin1'),
  ];
  for (const body of declined) assert.equal(decodeFlatXmlDict(body), undefined, body.toString('latin1'));
  // The general reader still answers them (decodeClientPlist falls back to it).
  assert.deepEqual(decodeClientPlist(declined[0]!), { MessageType: 'Connect', Nested: { A: 1 } });
});

test('agrees with the general reader on random flat dictionaries', (t) => {
  const rng = new Prng(fuzzSeed(t, 'flat plist'));
  let taken = 0;
  for (let i = 0; i < 3000; i++) {
    let body: Buffer;
    try {
      body = encodeXmlPlist(randomDict(rng, i % 2 === 0));
    } catch {
      continue; // a value XML cannot hold
    }
    if (assertAgrees(body, `dictionary ${i}`) !== undefined) taken++;
  }
  // Most plain dictionaries take the fast path (those with a `__proto__` or `CF$UID` key do not).
  assert.ok(taken > 1000, `the fast path took ${taken} of the dictionaries`);
});

test('never reads mutated requests differently from the general reader', (t) => {
  const rng = new Prng(fuzzSeed(t, 'flat plist mutations'));
  const seeds = [encodeXmlPlist(connectRequest(3, 62078, 'x')), encodeXmlPlist({ A: 'b', N: 12 })];
  const alphabet = Buffer.from('<>/&;!?-[] \t\n\r"\'=0123456789abcdefkeystringintegrdplistDICT\x00\xc3\xa9\xff', 'latin1');
  for (let i = 0; i < 20000; i++) {
    const body = Buffer.from(rng.pick(seeds));
    const edits = 1 + rng.int(3);
    let out = body;
    for (let e = 0; e < edits; e++) {
      const at = rng.int(out.length);
      const op = rng.int(3);
      if (op === 0) out[at] = alphabet[rng.int(alphabet.length)]!;
      else if (op === 1) out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1)]);
      else out = Buffer.concat([out.subarray(0, at), Buffer.of(alphabet[rng.int(alphabet.length)]!), out.subarray(at)]);
    }
    assertAgrees(out, `mutation ${i}`);
  }
});

test('encodes a plist Result as the general encoder does, for any tag and number', () => {
  for (const n of [0, 1, 2, 3, 6, 22, 0xffffffff]) {
    for (const tag of [0, 1, 77, 0xffffffff]) {
      const expected = encodeClientMessage({ kind: 'plist', tag, version: 1, plist: resultMessage(n) });
      assert.deepEqual(encodePlistResult(tag, n), expected, `Result ${n}, tag ${tag}`);
      // The cached body is never handed out itself: a caller writing into its message changes nothing.
      encodePlistResult(tag, n).fill(0);
      assert.deepEqual(encodePlistResult(tag, n), expected);
    }
  }
});
