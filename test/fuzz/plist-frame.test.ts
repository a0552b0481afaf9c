/** Fuzz: the plist service frame decoder (lockdownd and every plist service), both body formats. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MuxwireError } from '../../src/errors.js';
import { PlistFrameDecoder, encodePlistFrame } from '../../src/protocol/plist-frame.js';
import { PlistUID } from '../../src/protocol/plist.js';
import { runFuzz, splitRandomly } from '../helpers/fuzz.js';
import { QUERY_TYPE_REPLY_XML, QUERY_TYPE_XML, frame } from '../protocol/fixtures.js';

const LIMIT = 4096;
const seeds = [
  frame(QUERY_TYPE_XML),
  Buffer.concat([frame(QUERY_TYPE_XML), frame(QUERY_TYPE_REPLY_XML)]),
  encodePlistFrame({ Request: 'StartService', Port: 51126, EnableServiceSSL: true }, 'binary'),
  encodePlistFrame({ Request: 'GetValue', Value: { a: [1, 2n ** 63n, -3, 0.5], d: Buffer.from('xyz'), u: new PlistUID(3), t: new Date(0) } }, 'binary'),
  encodePlistFrame({ Request: 'GetValue', Value: { a: [1, 2n ** 63n, -3, 0.5], d: Buffer.from('xyz') } }, 'xml'),
];

test('the plist frame decoder survives 100,000 mutated streams', (t) => {
  runFuzz(t, {
    name: 'plist-frame',
    seeds,
    iterations: 100_000,
    run(input, rng) {
      const d = new PlistFrameDecoder({ maxLength: LIMIT });
      for (const chunk of splitRandomly(rng, input, rng.pick([1, 4, 64, 4096]))) {
        d.push(chunk);
        for (;;) {
          try {
            if (d.next() === undefined) break;
          } catch (err) {
            // A bad body consumes its frame and leaves framing intact: keep reading.
            if (err instanceof MuxwireError && err.code === 'MUXWIRE_ERR_BAD_PLIST') continue;
            throw err;
          }
        }
        assert.ok(d.buffered < LIMIT + 4, `decoder holds ${d.buffered} bytes, more than one frame`);
      }
    },
  });
});
