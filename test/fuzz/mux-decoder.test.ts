/** Fuzz: the mux packet decoder (the device's IN byte stream, and the simulator's OUT stream). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MuxPacketDecoder } from '../../src/protocol/mux-decoder.js';
import { MuxProtocol, encodeMuxPacket, encodeVersionPayload, muxHeaderSize } from '../../src/protocol/mux-header.js';
import { TcpFlag, decodeTcpHeader, encodeTcpHeader } from '../../src/protocol/tcp-header.js';
import { runFuzz, splitRandomly } from '../helpers/fuzz.js';
import { MUX_SETUP, MUX_SYN_62078, MUX_VERSION_OFFER, hex } from '../protocol/fixtures.js';

const LIMIT = 4096;
const tcp = encodeTcpHeader({ sport: 1, dport: 62078, seq: 1, ack: 1, flags: TcpFlag.ACK, window: 131072 });
const seeds = [
  hex(MUX_SETUP),
  hex(MUX_SYN_62078),
  Buffer.concat([hex(MUX_SYN_62078), encodeMuxPacket(2, { protocol: MuxProtocol.TCP, txSeq: 2, rxSeq: 3 }, tcp, Buffer.from('hello device'))]),
  encodeMuxPacket(2, { protocol: MuxProtocol.CONTROL, txSeq: 0, rxSeq: 0 }, Buffer.from([3]), Buffer.from('error text')),
  encodeMuxPacket(2, { protocol: MuxProtocol.VERSION }, encodeVersionPayload({ major: 2, minor: 0 })),
  encodeMuxPacket(2, { protocol: MuxProtocol.TCP, txSeq: 9, rxSeq: 9 }, tcp, Buffer.alloc(300, 0x5a)),
];
const v1Seeds = [hex(MUX_VERSION_OFFER), encodeMuxPacket(1, { protocol: MuxProtocol.TCP }, tcp, Buffer.from('v1 data'))];

for (const version of [2, 1] as const) {
  test(`the v${version} mux packet decoder survives 100,000 mutated streams`, (t) => {
    runFuzz(t, {
      name: `mux-decoder-v${version}`,
      seeds: version === 2 ? seeds : v1Seeds,
      iterations: 100_000,
      run(input, rng) {
        const d = new MuxPacketDecoder({ version, maxPacket: LIMIT });
        const size = muxHeaderSize(version);
        for (const chunk of splitRandomly(rng, input, rng.pick([1, 8, 64, 16384]))) {
          d.push(chunk);
          for (let p = d.next(); p !== undefined; p = d.next()) {
            assert.equal(p.payload.length, p.header.length - size);
            assert.ok(p.header.length <= LIMIT);
            if (p.header.protocol === MuxProtocol.TCP && p.payload.length >= 20) decodeTcpHeader(p.payload);
          }
          assert.ok(d.buffered < LIMIT, `decoder holds ${d.buffered} bytes, more than one packet`);
        }
      },
    });
  });
}
