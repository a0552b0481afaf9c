/**
 * Fuzz: the client-protocol decoder (what a daemon reads from every client socket). Outcomes other
 * than messages or a coded MuxwireError fail; so does buffering more than one message's limit.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClientMessageDecoder, encodeClientMessage } from '../../src/protocol/client-message.js';
import type { ClientMessage } from '../../src/protocol/client-message.js';
import { connectRequest, attachedEvent } from '../../src/protocol/client-plist.js';
import { encodeBinaryPlist, encodeXmlPlist } from '../../src/protocol/plist.js';
import { encodeClientHeader } from '../../src/protocol/client-header.js';
import { runFuzz, splitRandomly } from '../helpers/fuzz.js';
import { CONNECT_22, CONNECT_REFUSED, LISTEN, LISTEN_RESULT, hex } from '../protocol/fixtures.js';

const LIMIT = 4096;

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
];

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
      const again = new ClientMessageDecoder({ maxLength: LIMIT });
      again.push(encodeClientMessage(m));
      assert.deepEqual(again.next(), m);
    }
  }
}

test('the client message decoder survives 100,000 mutated streams', (t) => {
  runFuzz(t, {
    name: 'client-message',
    seeds,
    iterations: 100_000,
    run(input, rng) {
      const d = new ClientMessageDecoder({ maxLength: LIMIT });
      for (const chunk of splitRandomly(rng, input, rng.pick([1, 16, 64, 4096]))) {
        d.push(chunk);
        for (let m = d.next(); m !== undefined; m = d.next()) check(m);
        assert.ok(d.buffered < LIMIT, `decoder holds ${d.buffered} bytes, more than one message`);
      }
    },
  });
});
