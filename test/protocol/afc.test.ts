import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  AFC_HEADER_SIZE,
  AFC_MAGIC,
  AfcFileMode,
  AfcOp,
  AfcPacketDecoder,
  AfcStatus,
  decodeAfcPath,
  decodeAfcU64,
  decodeKeyValueList,
  decodeNameList,
  encodeAfcPacket,
  encodeAfcPacketParts,
  encodeAfcPath,
  encodeAfcU64,
  encodeKeyValueList,
  encodeNameList,
} from '../../src/protocol/afc.js';
import type { AfcPacket } from '../../src/protocol/afc.js';
import { isMuxwireError } from '../../src/errors.js';
import { Prng, feed, fuzzSeed, splitBytes, splitRandomly } from '../helpers/fuzz.js';
import { AFC_DATA_3, AFC_GET_DEVINFO, AFC_STATUS_NOT_FOUND, hex } from './fixtures.js';

function decodeOne(bytes: Buffer): AfcPacket {
  const d = new AfcPacketDecoder();
  d.push(bytes);
  const p = d.next();
  assert.ok(p);
  assert.equal(d.next(), undefined);
  return p;
}

function plain(p: AfcPacket) {
  return { packetNum: p.packetNum, operation: p.operation, headerPayload: p.headerPayload.toString('hex'), payload: p.payload.toString('hex') };
}

describe('AFC: the byte examples of lockdown-afc.md §9.7.1', () => {
  const cases: Array<[string, string, AfcPacket]> = [
    ['GET_DEVINFO request, packet 1', AFC_GET_DEVINFO, { packetNum: 1, operation: AfcOp.GET_DEVINFO, headerPayload: Buffer.alloc(0), payload: Buffer.alloc(0) }],
    ['STATUS "object not found" to packet 5', AFC_STATUS_NOT_FOUND, { packetNum: 5, operation: AfcOp.STATUS, headerPayload: encodeAfcU64(AfcStatus.OBJECT_NOT_FOUND), payload: Buffer.alloc(0) }],
    ['DATA with 3 bytes to packet 7', AFC_DATA_3, { packetNum: 7, operation: AfcOp.DATA, headerPayload: Buffer.alloc(0), payload: Buffer.from('abc') }],
  ];
  for (const [what, dump, packet] of cases) {
    test(`${what} decodes and re-encodes byte for byte`, () => {
      const bytes = hex(dump);
      assert.deepEqual(plain(decodeOne(bytes)), plain(packet));
      assert.ok(encodeAfcPacket(packet).equals(bytes));
    });
  }

  test('the magic is CFA6LPAA and the header 40 bytes', () => {
    assert.equal(AFC_MAGIC, 'CFA6LPAA');
    assert.equal(AFC_HEADER_SIZE, 40);
    assert.equal(hex(AFC_GET_DEVINFO).readBigUInt64LE(0), 0x4141504c36414643n);
  });
});

describe('AFC packets', () => {
  test('encodeAfcPacketParts keeps bulk data as its own buffer (no copy)', () => {
    const data = Buffer.alloc(1000, 1);
    const parts = encodeAfcPacketParts({ packetNum: 2, operation: AfcOp.FILE_WRITE, headerPayload: encodeAfcU64(3), payload: data });
    assert.equal(parts.length, 2);
    assert.equal(parts[1], data);
    assert.equal(parts[0].length, 48);
    assert.equal(parts[0].readBigUInt64LE(8), 1048n);
    assert.equal(parts[0].readBigUInt64LE(16), 48n);
    assert.equal(encodeAfcPacketParts({ packetNum: 2, operation: 1, headerPayload: encodeAfcU64(0), payload: Buffer.alloc(0) }).length, 1);
  });

  test('packet numbers above 2^53 stay exact as bigints', () => {
    const p = decodeOne(encodeAfcPacket({ packetNum: 2n ** 64n - 1n, operation: AfcOp.FILE_CLOSE, headerPayload: encodeAfcU64(1), payload: Buffer.alloc(0) }));
    assert.equal(p.packetNum, 2n ** 64n - 1n);
    assert.equal(decodeOne(encodeAfcPacket({ packetNum: 0, operation: 1, headerPayload: Buffer.alloc(0), payload: Buffer.alloc(0) })).packetNum, 0);
  });

  test('reads PMD3-style packets, with the whole body inside this_length', () => {
    const args = Buffer.concat([encodeAfcU64(AfcFileMode.RDONLY), encodeAfcPath('/DCIM')]);
    const p = decodeOne(encodeAfcPacket({ packetNum: 0, operation: AfcOp.FILE_OPEN, headerPayload: args, payload: Buffer.alloc(0) }));
    assert.equal(decodeAfcU64(p.headerPayload), 1);
    assert.equal(decodeAfcPath(p.headerPayload.subarray(8)), '/DCIM');
  });

  test('a wrong magic is MUXWIRE_ERR_BAD_MAGIC, and the decoder stays failed', () => {
    const bytes = hex(AFC_GET_DEVINFO);
    bytes[0] = 0x44;
    const d = new AfcPacketDecoder();
    d.push(bytes);
    assert.throws(() => d.next(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_MAGIC'));
    d.push(hex(AFC_GET_DEVINFO));
    assert.throws(() => d.next(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_MAGIC'));
  });

  const lengths: Array<[string, bigint, bigint]> = [
    ['entire_length below 40', 39n, 39n],
    ['this_length below 40', 48n, 8n],
    ['this_length above entire_length', 48n, 56n],
    ['entire_length above maxLength', 16n * 1024n * 1024n + 1n, 40n],
    ['entire_length of 2^64-1', 2n ** 64n - 1n, 40n],
  ];
  for (const [what, entire, thisLength] of lengths) {
    test(`${what} is MUXWIRE_ERR_BAD_LENGTH before the body is buffered`, () => {
      const bytes = hex(AFC_GET_DEVINFO);
      bytes.writeBigUInt64LE(entire, 8);
      bytes.writeBigUInt64LE(thisLength, 16);
      const d = new AfcPacketDecoder();
      d.push(bytes);
      assert.throws(() => d.next(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_LENGTH'));
    });
  }
});

describe('AFC decoder: chunking', () => {
  const packets: AfcPacket[] = [
    { packetNum: 1, operation: AfcOp.GET_DEVINFO, headerPayload: Buffer.alloc(0), payload: Buffer.alloc(0) },
    { packetNum: 2, operation: AfcOp.FILE_WRITE, headerPayload: encodeAfcU64(5), payload: Buffer.alloc(70000, 0xab) },
    { packetNum: 3, operation: AfcOp.READ_DIR, headerPayload: encodeAfcPath('/var/mobile/Media/日本'), payload: Buffer.alloc(0) },
    { packetNum: 4, operation: AfcOp.DATA, headerPayload: Buffer.alloc(0), payload: encodeNameList(['.', '..', 'a']) },
    { packetNum: 5, operation: AfcOp.STATUS, headerPayload: encodeAfcU64(0), payload: Buffer.alloc(0) },
  ];
  const bytes = Buffer.concat(packets.map(encodeAfcPacket));
  const whole = feed(new AfcPacketDecoder(), [bytes]).map(plain);

  test('one chunk gives every packet', () => {
    assert.deepEqual(whole, packets.map(plain));
  });

  test('byte at a time gives the same packets', () => {
    assert.deepEqual(feed(new AfcPacketDecoder(), splitBytes(bytes)).map(plain), whole);
  });

  test('random splits give the same packets', (t) => {
    const rng = new Prng(fuzzSeed(t, 'afc split'));
    for (let i = 0; i < 100; i++) {
      assert.deepEqual(feed(new AfcPacketDecoder(), splitRandomly(rng, bytes, rng.pick([3, 40, 1000, 16384]))).map(plain), whole);
    }
  });

  test('a streamed body (peekHeader, discard, takeUpTo) gives the same bytes at random splits', (t) => {
    const rng = new Prng(fuzzSeed(t, 'afc streamed body'));
    // The FILE_WRITE over a decoder limit of 1000 bytes, then a small packet read whole.
    const big = encodeAfcPacket(packets[1]);
    const after = encodeAfcPacket(packets[2]);
    for (let i = 0; i < 50; i++) {
      const d = new AfcPacketDecoder({ maxLength: 1000 });
      let header: ReturnType<AfcPacketDecoder['peekHeader']>;
      let remaining = -1;
      const body: Buffer[] = [];
      const whole: AfcPacket[] = [];
      for (const chunk of splitRandomly(rng, Buffer.concat([big, after]), rng.pick([3, 40, 1000, 16384]))) {
        d.push(chunk);
        for (;;) {
          if (remaining > 0) {
            const piece = d.takeUpTo(remaining);
            if (piece.length === 0) break;
            body.push(Buffer.from(piece));
            remaining -= piece.length;
            continue;
          }
          if (remaining === -1) {
            header = d.peekHeader(1 << 20);
            if (header === undefined) break;
            d.discard(AFC_HEADER_SIZE);
            remaining = header.entireLength - AFC_HEADER_SIZE;
            continue;
          }
          const p = d.next();
          if (p === undefined) break;
          whole.push(p);
        }
      }
      assert.equal(header!.operation, AfcOp.FILE_WRITE);
      assert.equal(header!.thisLength, 48);
      assert.deepEqual(Buffer.concat(body), big.subarray(AFC_HEADER_SIZE));
      assert.deepEqual(whole.map(plain), [plain(packets[2])]);
    }
  });

  test('peekHeader bounds entire_length by its argument, not by the decoder limit', () => {
    const d = new AfcPacketDecoder({ maxLength: 100 });
    d.push(encodeAfcPacket(packets[1]));
    assert.equal(d.peekHeader(1 << 20)?.entireLength, 40 + 8 + 70000);
    assert.throws(() => d.next(), (err: unknown) => isMuxwireError(err) && err.code === 'MUXWIRE_ERR_BAD_LENGTH');
  });

  test('LIMD-style delivery, header+args then payload, works', () => {
    const parts = encodeAfcPacketParts(packets[1]);
    assert.deepEqual(feed(new AfcPacketDecoder(), parts).map(plain), [plain(packets[1])]);
  });
});

describe('AFC argument codecs', () => {
  test('a path gets one NUL, and decoding strips at most one', () => {
    assert.deepEqual([...encodeAfcPath('/a')], [0x2f, 0x61, 0]);
    assert.equal(decodeAfcPath(Buffer.from('/a\0')), '/a');
    assert.equal(decodeAfcPath(Buffer.from('/a')), '/a');
    assert.equal(decodeAfcPath(Buffer.from('/a\0\0')), '/a\0');
    assert.equal(decodeAfcPath(encodeAfcPath('Grüße/😀')), 'Grüße/😀');
  });

  test('a name list round-trips, with or without the final NUL', () => {
    const names = ['.', '..', 'DCIM', 'Photos Library', 'é'];
    assert.deepEqual(decodeNameList(encodeNameList(names)), names);
    assert.deepEqual(decodeNameList(Buffer.from('a\0b')), ['a', 'b']);
    assert.deepEqual(decodeNameList(Buffer.alloc(0)), []);
  });

  test('a key/value list round-trips, in device order', () => {
    const info = { st_size: '64', st_blocks: '0', st_nlink: '2', st_ifmt: 'S_IFDIR', st_mtime: '1523978415000000000', st_birthtime: '1523978415000000000' };
    const bytes = encodeKeyValueList(info);
    assert.equal(bytes.toString('latin1').split('\0')[0], 'st_size');
    assert.deepEqual(decodeKeyValueList(bytes), info);
    assert.deepEqual(decodeKeyValueList(encodeKeyValueList([['Model', 'iPhone12,8'], ['FSBlockSize', 4096], ['FSTotalBytes', 2n ** 40n]])), {
      Model: 'iPhone12,8',
      FSBlockSize: '4096',
      FSTotalBytes: '1099511627776',
    });
  });

  test('an odd key/value list is MUXWIRE_ERR_BAD_MESSAGE', () => {
    assert.throws(() => decodeKeyValueList(Buffer.from('a\0b\0c\0')), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_MESSAGE'));
  });

  test('a __proto__ key is an ordinary member', () => {
    const kv = decodeKeyValueList(Buffer.from('__proto__\0x\0'));
    assert.equal(Object.getPrototypeOf(kv), Object.prototype);
    assert.equal(kv.__proto__, 'x');
  });

  test('u64 arguments read back as numbers, or bigints beyond 2^53', () => {
    const b = encodeAfcU64(1, 2n ** 60n, 7);
    assert.equal(decodeAfcU64(b, 0), 1);
    assert.equal(decodeAfcU64(b, 8), 2n ** 60n);
    assert.equal(decodeAfcU64(b, 16), 7);
    assert.throws(() => decodeAfcU64(b, 20), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_LENGTH'));
  });

  test('opcodes and status codes have the reference numbers', () => {
    assert.equal(AfcOp.REMOVE_PATH_AND_CONTENTS, 0x22);
    assert.equal(AfcOp.FILE_WRITE_OFFSET, 0x28);
    assert.equal(AfcStatus.INTERNAL_ERROR, 23);
    assert.equal(AfcStatus.OP_WOULD_BLOCK, 19);
    assert.equal(AfcFileMode.RDAPPEND, 6);
  });
});
