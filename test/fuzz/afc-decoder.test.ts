/** Fuzz: the AFC packet decoder (the simulator's AFC server and the AFC client both read with it). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AFC_HEADER_SIZE, AfcOp, AfcPacketDecoder, encodeAfcPacket, encodeAfcPath, encodeAfcU64 } from '../../src/protocol/afc.js';
import { runFuzz, splitRandomly } from '../helpers/fuzz.js';
import { AFC_DATA_3, AFC_GET_DEVINFO, AFC_STATUS_NOT_FOUND, hex } from '../protocol/fixtures.js';

const LIMIT = 4096;
const seeds = [
  hex(AFC_GET_DEVINFO),
  hex(AFC_STATUS_NOT_FOUND),
  hex(AFC_DATA_3),
  Buffer.concat([hex(AFC_GET_DEVINFO), hex(AFC_DATA_3)]),
  encodeAfcPacket({ packetNum: 3, operation: AfcOp.FILE_OPEN, headerPayload: Buffer.concat([encodeAfcU64(1), encodeAfcPath('/DCIM/100APPLE')]), payload: Buffer.alloc(0) }),
  encodeAfcPacket({ packetNum: 4, operation: AfcOp.FILE_WRITE, headerPayload: encodeAfcU64(1), payload: Buffer.alloc(200, 0x77) }),
];

test('the AFC packet decoder survives 100,000 mutated streams', (t) => {
  runFuzz(t, {
    name: 'afc-decoder',
    seeds,
    iterations: 100_000,
    run(input, rng) {
      const d = new AfcPacketDecoder({ maxLength: LIMIT });
      for (const chunk of splitRandomly(rng, input, rng.pick([1, 8, 64, 4096]))) {
        d.push(chunk);
        for (let p = d.next(); p !== undefined; p = d.next()) {
          assert.ok(AFC_HEADER_SIZE + p.headerPayload.length + p.payload.length <= LIMIT);
          assert.equal(typeof p.operation, 'number');
        }
        assert.ok(d.buffered < LIMIT, `decoder holds ${d.buffered} bytes, more than one packet`);
      }
    },
  });
});
