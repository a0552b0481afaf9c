/**
 * Fuzz: the client-protocol decoder as the daemon runs it on every client socket (requests: true,
 * so integer fields are range-checked), up to the daemon's real limit of 64 KiB per message.
 * Outcomes other than messages or a coded MuxwireError fail; so does buffering more than one
 * message's limit.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CLIENT_MAX_LENGTH_DEFAULT, ClientMessageDecoder, encodeClientMessage } from '../../src/protocol/client-message.js';
import type { ClientMessage } from '../../src/protocol/client-message.js';
import { connectRequest, attachedEvent, savePairRecordRequest } from '../../src/protocol/client-plist.js';
import { encodeBinaryPlist, encodeXmlPlist } from '../../src/protocol/plist.js';
import { encodeClientHeader } from '../../src/protocol/client-header.js';
import { runFuzz, splitRandomly } from '../helpers/fuzz.js';
import { CONNECT_22, CONNECT_REFUSED, LISTEN, LISTEN_RESULT, hex } from '../protocol/fixtures.js';

/** The daemon's own limit: usbmuxd's 64 KiB command buffer. */
const LIMIT = CLIENT_MAX_LENGTH_DEFAULT;
/** Inputs above this size are split into larger chunks (a 64 KiB input fed byte by byte costs 65,536 pushes). */
const LARGE = 4096;

function plistMessage(body: Buffer): Buffer {
  return Buffer.concat([encodeClientHeader({ length: 16 + body.length, version: 1, message: 8, tag: 1 }), body]);
}

const seeds = [
  hex(LISTEN),
  hex(LISTEN_RESULT),
  hex(CONNECT_22),
  Buffer.concat([hex(CONNECT_22), hex(CONNECT_REFUSED)]),
  encodeClientMessage({ kind: 'device-add', tag: 0, device: { deviceId: 1, productId: 0x12a8, serialNumber: '00008030-001229C01146402E', locationId: 0x10009 } }),
  encodeClientMessage({ kind: 'device-remove', tag: 0, deviceId: 1 }),
  encodeClientMessage({ kind: 'plist', tag: 2, version: 1, plist: connectRequest(1, 62078, 'fuzz') }),
  plistMessage(encodeBinaryPlist(attachedEvent({ deviceId: 1, productId: 2, serialNumber: 'x', locationId: 3, connectionSpeed: 480e6, connectionType: 'USB' }))),
  plistMessage(encodeXmlPlist({ MessageType: 'Listen', n: -1, d: Buffer.from('ab') })),
  // Near the limit: a SavePairRecord of about 46 KiB of data (≈ 64 KiB as XML base64), the same
  // in binary, and a message of exactly 65,536 bytes.
  plistMessage(encodeXmlPlist(savePairRecordRequest('00008030-001229C01146402E', Buffer.alloc(46 * 1024, 0x5a), 3, 'fuzz'))),
  plistMessage(encodeBinaryPlist(savePairRecordRequest('00008030-001229C01146402E', Buffer.alloc(64 * 1024 - 600, 0xa5), 2 ** 33, 'fuzz'))),
  Buffer.concat([encodeClientHeader({ length: LIMIT, version: 0, message: 99, tag: 1 }), Buffer.alloc(LIMIT - 16, 0x11)]),
];
for (const seed of seeds) assert.ok(seed.length <= LIMIT, `a seed of ${seed.length} bytes is past the limit`);

function check(m: ClientMessage): void {
  switch (m.kind) {
    case 'bad-plist':
      assert.equal(m.error.code, 'MUXWIRE_ERR_BAD_PLIST');
      return;
    case 'bad-request':
      assert.equal(m.error.code, 'MUXWIRE_ERR_BAD_REQUEST');
      return;
    case 'plist':
      // Whatever decoded must be encodable again.
      encodeClientMessage(m);
      return;
    default: {
      const again = new ClientMessageDecoder({ maxLength: LIMIT, requests: true });
      again.push(encodeClientMessage(m));
      assert.deepEqual(again.next(), m);
    }
  }
}

test('the client message decoder survives 100,000 mutated streams of up to 64 KiB', (t) => {
  let largest = 0;
  let large = 0;
  runFuzz(t, {
    name: 'client-message',
    seeds,
    iterations: 100_000,
    run(input, rng) {
      largest = Math.max(largest, input.length);
      if (input.length > LARGE) large++;
      const d = new ClientMessageDecoder({ maxLength: LIMIT, requests: true });
      const maxChunk = input.length > LARGE ? rng.pick([512, 4096, 65536]) : rng.pick([1, 16, 64, 4096]);
      for (const chunk of splitRandomly(rng, input, maxChunk)) {
        d.push(chunk);
        for (let m = d.next(); m !== undefined; m = d.next()) check(m);
        assert.ok(d.buffered < LIMIT + maxChunk, `decoder holds ${d.buffered} bytes, more than one message and one chunk`);
      }
    },
  });
  t.diagnostic(`client-message: ${large} inputs above ${LARGE} bytes, the largest ${largest} bytes`);
  assert.ok(largest >= LIMIT - 64, `the largest input was ${largest} bytes, not near the ${LIMIT}-byte limit`);
});
