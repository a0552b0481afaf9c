import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  MUX_MAGIC,
  MuxProtocol,
  decodeMuxHeader,
  decodeVersionPayload,
  encodeMuxHeader,
  encodeMuxPacket,
  encodeVersionPayload,
  muxHeaderSize,
  MuxControlType,
  encodeControlPayload,
  decodeControlPayload,
} from '../../src/protocol/mux-header.js';
import { TCP_HEADER_SIZE, TcpFlag, decodeTcpHeader, encodeTcpHeader } from '../../src/protocol/tcp-header.js';
import { MuxPacketDecoder } from '../../src/protocol/mux-decoder.js';
import type { MuxPacket } from '../../src/protocol/mux-decoder.js';
import { isMuxwireError } from '../../src/errors.js';
import { Prng, feed, fuzzSeed, splitBytes, splitRandomly } from '../helpers/fuzz.js';
import { MUX_SETUP, MUX_SYN_62078, MUX_VERSION_OFFER, hex } from './fixtures.js';

const BAD_LENGTH = (e: unknown) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_LENGTH');

describe('mux header', () => {
  test('is 8 bytes in v1 and 16 in v2', () => {
    assert.equal(muxHeaderSize(1), 8);
    assert.equal(muxHeaderSize(2), 16);
  });

  test('the VERSION offer of usbmux.md §2.3 decodes and re-encodes byte for byte', () => {
    const bytes = hex(MUX_VERSION_OFFER);
    assert.deepEqual(decodeMuxHeader(bytes, 1), { protocol: MuxProtocol.VERSION, length: 20 });
    assert.deepEqual(decodeVersionPayload(bytes.subarray(8)), { major: 2, minor: 0 });
    assert.ok(encodeMuxPacket(1, { protocol: MuxProtocol.VERSION }, encodeVersionPayload({ major: 2, minor: 0 })).equals(bytes));
  });

  test('the SETUP packet of usbmux.md §2.3 decodes and re-encodes byte for byte', () => {
    const bytes = hex(MUX_SETUP);
    assert.deepEqual(decodeMuxHeader(bytes, 2), { protocol: MuxProtocol.SETUP, length: 17, magic: MUX_MAGIC, txSeq: 0, rxSeq: 0xffff });
    assert.equal(bytes[16], 0x07);
    assert.ok(encodeMuxPacket(2, { protocol: MuxProtocol.SETUP, txSeq: 0, rxSeq: 0xffff }, Buffer.from([7])).equals(bytes));
  });

  test('the first SYN of usbmux.md §3.1 decodes and re-encodes byte for byte', () => {
    const bytes = hex(MUX_SYN_62078);
    const h = decodeMuxHeader(bytes, 2);
    assert.deepEqual(h, { protocol: MuxProtocol.TCP, length: 36, magic: MUX_MAGIC, txSeq: 1, rxSeq: 0xffff });
    const tcp = decodeTcpHeader(bytes, 16);
    assert.deepEqual(tcp, { sport: 1, dport: 62078, seq: 0, ack: 0, flags: TcpFlag.SYN, window: 131072 });
    const out = Buffer.alloc(36);
    encodeMuxHeader(h, 2, out, 0);
    encodeTcpHeader(tcp, out, 16);
    assert.ok(out.equals(bytes));
    assert.ok(encodeMuxPacket(2, { protocol: MuxProtocol.TCP, txSeq: 1, rxSeq: 0xffff }, encodeTcpHeader(tcp)).equals(bytes));
  });

  test('reports a foreign magic instead of rejecting it (devices have sent 0xFACEFACE)', () => {
    const bytes = encodeMuxHeader({ protocol: 6, length: 36, magic: 0xfaceface, txSeq: 5, rxSeq: 6 }, 2);
    assert.equal(decodeMuxHeader(bytes, 2).magic, 0xfaceface);
  });

  test('refuses to read a header from too few bytes', () => {
    assert.throws(() => decodeMuxHeader(Buffer.alloc(15), 2), BAD_LENGTH);
    assert.throws(() => decodeMuxHeader(Buffer.alloc(16), 1, 9), BAD_LENGTH);
    assert.throws(() => decodeVersionPayload(Buffer.alloc(11)), BAD_LENGTH);
  });

  test('wraps the v2 counters at 16 bits', () => {
    const h = decodeMuxHeader(encodeMuxHeader({ protocol: 6, length: 16, txSeq: 0x1ffff, rxSeq: -1 }, 2), 2);
    assert.equal(h.txSeq, 0xffff);
    assert.equal(h.rxSeq, 0xffff);
  });
});

describe('CONTROL payload', () => {
  test('round-trips a type byte and its text, without a NUL', () => {
    const packet = encodeMuxPacket(2, { protocol: MuxProtocol.CONTROL, txSeq: 0, rxSeq: 0 }, encodeControlPayload(MuxControlType.ERROR, 'message was too large'));
    assert.equal(packet.length, 16 + 1 + 21);
    assert.equal(packet[16], 3);
    assert.deepEqual(decodeControlPayload(packet.subarray(16)), { type: 3, text: 'message was too large' });
  });

  test('an empty payload is MUXWIRE_ERR_BAD_LENGTH', () => {
    assert.throws(() => decodeControlPayload(Buffer.alloc(0)), BAD_LENGTH);
  });
});

describe('TCP-like header', () => {
  test('round-trips every field, with the window scaled by 256', () => {
    const h = { sport: 0xabcd, dport: 7, seq: 0xfffffff0, ack: 12345, flags: TcpFlag.ACK | TcpFlag.PSH, window: 0x20000 };
    const bytes = encodeTcpHeader(h);
    assert.equal(bytes.length, TCP_HEADER_SIZE);
    assert.equal(bytes[12], 0x50);
    assert.equal(bytes.readUInt16BE(14), 0x0200);
    assert.equal(bytes.readUInt32BE(16), 0);
    assert.deepEqual(decodeTcpHeader(bytes), h);
  });

  test('rounds a window down to its 256-byte unit and caps it at the field', () => {
    assert.equal(decodeTcpHeader(encodeTcpHeader({ sport: 1, dport: 2, seq: 0, ack: 0, flags: 0, window: 1000 })).window, 768);
    assert.equal(encodeTcpHeader({ sport: 1, dport: 2, seq: 0, ack: 0, flags: 0, window: 2 ** 30 }).readUInt16BE(14), 0xffff);
  });

  test('refuses to read from fewer than 20 bytes', () => {
    assert.throws(() => decodeTcpHeader(Buffer.alloc(19)), BAD_LENGTH);
  });
});

/** A stream of v2 packets of every protocol, including empty and large payloads. */
function v2Stream(rng?: Prng): { bytes: Buffer; count: number } {
  const packets: Buffer[] = [];
  const tcp = encodeTcpHeader({ sport: 1, dport: 62078, seq: 1, ack: 1, flags: TcpFlag.ACK, window: 131072 });
  for (let i = 0; i < 40; i++) {
    const size = rng ? rng.range(0, 3000) : (i * 997) % 3000;
    const data = Buffer.alloc(size, i);
    packets.push(encodeMuxPacket(2, { protocol: i % 5 === 0 ? MuxProtocol.CONTROL : MuxProtocol.TCP, txSeq: i, rxSeq: 0xffff }, ...(i % 5 === 0 ? [Buffer.from([7]), Buffer.from('hello')] : [tcp, data])));
  }
  packets.push(encodeMuxPacket(2, { protocol: MuxProtocol.TCP, txSeq: 99, rxSeq: 1 }, tcp, Buffer.alloc(49116, 0xee)));
  return { bytes: Buffer.concat(packets), count: packets.length };
}

function plain(packets: MuxPacket[]): Array<{ header: object; payload: string }> {
  return packets.map((p) => ({ header: p.header, payload: p.payload.toString('hex') }));
}

describe('mux packet decoder', () => {
  const { bytes, count } = v2Stream();
  const whole = feed(new MuxPacketDecoder({ version: 2 }), [bytes]);

  test('one chunk gives every packet', () => {
    assert.equal(whole.length, count);
    assert.equal(whole[count - 1].payload.length, TCP_HEADER_SIZE + 49116);
    for (const p of whole) assert.equal(p.payload.length, p.header.length - 16);
  });

  test('byte at a time gives the same packets', () => {
    assert.deepEqual(plain(feed(new MuxPacketDecoder({ version: 2 }), splitBytes(bytes))), plain(whole));
  });

  test('random splits, as IN transfers of any size, give the same packets', (t) => {
    const rng = new Prng(fuzzSeed(t, 'mux split'));
    for (let i = 0; i < 100; i++) {
      const chunks = splitRandomly(rng, bytes, rng.pick([17, 512, 4096, 16384, 49152]));
      assert.deepEqual(plain(feed(new MuxPacketDecoder({ version: 2 }), chunks)), plain(whole));
    }
  });

  test('hands out views into the chunk when a packet arrives whole', () => {
    const d = new MuxPacketDecoder({ version: 2 });
    d.push(bytes);
    const p = d.next();
    assert.equal(p?.payload.buffer, bytes.buffer);
  });

  test('switches header size when version is set after VERSION', () => {
    const d = new MuxPacketDecoder({ version: 1 });
    const reply = encodeMuxPacket(1, { protocol: MuxProtocol.VERSION }, encodeVersionPayload({ major: 2, minor: 0 }));
    d.push(Buffer.concat([reply, hex(MUX_SYN_62078)]));
    const v = d.next();
    assert.equal(v?.header.protocol, MuxProtocol.VERSION);
    assert.deepEqual(decodeVersionPayload(v.payload), { major: 2, minor: 0 });
    d.version = 2;
    const syn = d.next();
    assert.equal(syn?.header.txSeq, 1);
    assert.equal(decodeTcpHeader(syn.payload).dport, 62078);
    assert.throws(() => { d.version = 3 as 2; }, (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_MESSAGE'));
  });

  test('a length below the header size is MUXWIRE_ERR_BAD_LENGTH, and the decoder stays failed', () => {
    const d = new MuxPacketDecoder({ version: 2 });
    d.push(encodeMuxHeader({ protocol: 6, length: 15 }, 2));
    assert.throws(() => d.next(), BAD_LENGTH);
    assert.throws(() => d.next(), BAD_LENGTH);
  });

  test('a length above maxPacket is refused before its body is buffered', () => {
    const d = new MuxPacketDecoder({ version: 2 });
    d.push(encodeMuxHeader({ protocol: 6, length: 65537 }, 2));
    assert.throws(() => d.next(), BAD_LENGTH);
    const small = new MuxPacketDecoder({ version: 1, maxPacket: 100 });
    small.push(encodeMuxHeader({ protocol: 6, length: 101 }, 1));
    assert.throws(() => small.next(), BAD_LENGTH);
  });
});
