/**
 * Mux packets for the accel tests, built with the protocol codecs (src/protocol/mux-header.ts,
 * tcp-header.ts), and a seeded random generator whose seed a failing run prints.
 */
import { encodeMuxHeader, encodeMuxPacket, muxHeaderSize } from '../../src/protocol/mux-header.js';
import { encodeTcpHeader, TCP_HEADER_SIZE, TcpFlag } from '../../src/protocol/tcp-header.js';
export { seededRandom } from '../../src/seeded-random.js';

/**
 * A mux packet of exactly `length` bytes (header included, at least the header size); a TCP
 * packet with `ports` gets a TCP-like header when there is room for one. The payload is a pattern
 * so a misplaced offset shows.
 */
export function muxPacket(version: 1 | 2, protocol: number, length: number, ports?: { sport: number; dport: number }): Buffer {
  const hs = muxHeaderSize(version);
  if (length < hs) throw new RangeError(`a v${version} packet has at least ${hs} bytes`);
  const payload = Buffer.alloc(length - hs);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + 3) & 0xff;
  if (ports !== undefined && payload.length >= TCP_HEADER_SIZE) {
    encodeTcpHeader({ ...ports, seq: 0, ack: 0, flags: TcpFlag.ACK, window: 131072 }, payload, 0);
  }
  return encodeMuxPacket(version, { protocol, txSeq: 1, rxSeq: 0xffff }, payload);
}

/** The first `actual` bytes (default: the whole header) of a TCP packet whose length field says
 * `declared`. */
export function muxHeaderClaiming(version: 1 | 2, declared: number, actual = muxHeaderSize(version)): Buffer {
  return encodeMuxHeader({ protocol: 6, length: declared }, version).subarray(0, actual);
}


/** The seed for randomized tests: MUXWIRE_TEST_SEED when set (to replay a failure), else fresh. */
export function testSeed(): number {
  const fromEnv = process.env.MUXWIRE_TEST_SEED;
  return fromEnv !== undefined && fromEnv !== '' ? Number(fromEnv) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
}
