import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  DL_CODE_ERROR_LOCAL,
  DL_CODE_ERROR_REMOTE,
  DL_EMPTY_PARAMETER,
  DL_MAX_NAME_LENGTH,
  FileStreamDecoder,
  decodeDeviceLinkMessage,
  decodeStatusResponse,
  dlStatusResponse,
  encodeDataChunkHead,
  encodeFileEnd,
  encodeFileName,
  encodeFileStreamEnd,
} from '../../src/protocol/device-link.js';
import type { FileStreamEvent } from '../../src/protocol/device-link.js';
import { decodePlist, encodeBinaryPlist } from '../../src/protocol/plist.js';
import { isMuxwireError } from '../../src/errors.js';
import { Prng, fuzzSeed, splitBytes, splitRandomly } from '../helpers/fuzz.js';

/** Files as a device uploads them (two names) or a host sends them (one). */
function fileStream(files: { names: string[]; data: Buffer[]; end?: Buffer }[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of files) {
    for (const n of f.names) parts.push(encodeFileName(n));
    for (const d of f.data) parts.push(encodeDataChunkHead(d.length), d);
    parts.push(f.end ?? encodeFileEnd());
  }
  parts.push(encodeFileStreamEnd());
  return Buffer.concat(parts);
}

/** Runs the decoder over `chunks`; data events are joined per file so splits do not show. */
function decodeAll(namesPerFile: 1 | 2, chunks: Buffer[]): { events: unknown[]; rest: Buffer } {
  const d = new FileStreamDecoder(namesPerFile);
  const events: unknown[] = [];
  let data: Buffer[] = [];
  let rest: Buffer = Buffer.alloc(0);
  for (const c of chunks) {
    if (d.done) {
      rest = Buffer.concat([rest, c]);
      continue;
    }
    d.push(c);
    for (let e: FileStreamEvent | undefined = d.next(); e !== undefined; e = d.next()) {
      if (e.kind === 'data') {
        data.push(Buffer.from(e.data));
        continue;
      }
      if (e.kind === 'end') {
        events.push({ data: Buffer.concat(data).toString('hex') });
        data = [];
      }
      events.push(e);
      if (e.kind === 'done') rest = d.remainder();
    }
  }
  return { events, rest };
}

describe('DeviceLink messages', () => {
  test('reads a DL* array into its name and arguments', () => {
    const msg = decodeDeviceLinkMessage(decodePlist(encodeBinaryPlist(['DLMessageVersionExchange', 300, 0])));
    assert.deepEqual(msg, { name: 'DLMessageVersionExchange', args: [300, 0] });
  });

  test('refuses a dictionary, an empty array and a first item that is not a DL name', () => {
    for (const v of [{ a: 1 }, [], [300], ['Hello'], ['DLx']]) {
      assert.throws(() => decodeDeviceLinkMessage(v), (e: unknown) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_MESSAGE'));
    }
  });

  test('a status code of -13 travels as libplist writes it (2^64 − 13) and reads back as -13', () => {
    const msg = dlStatusResponse(-13, 'Multi status', { a: 1 });
    assert.equal(msg[1], 2n ** 64n - 13n);
    const round = decodeDeviceLinkMessage(decodePlist(encodeBinaryPlist(msg)));
    assert.deepEqual(decodeStatusResponse(round), { code: -13, text: 'Multi status', value: { a: 1 } });
  });

  test('the empty-parameter string reads as absent', () => {
    const st = decodeStatusResponse(decodeDeviceLinkMessage(dlStatusResponse(0)));
    assert.deepEqual(st, { code: 0, text: undefined, value: undefined });
    assert.equal(dlStatusResponse(0)[2], DL_EMPTY_PARAMETER);
  });
});

describe('DeviceLink file streams', () => {
  test('encodes a 3-byte file with one name as the documented bytes', () => {
    const bytes = fileStream([{ names: ['a/b'], data: [Buffer.from('xyz')] }]);
    assert.equal(bytes.toString('hex'), '00000003612f62' + '000000040c78797a' + '0000000100' + '00000000');
  });

  const FILES = [
    { names: ['HomeDomain/a', 'U/Snapshot/ab/abcd'], data: [Buffer.from('hello '), Buffer.from('world')] },
    { names: ['HomeDomain/empty', 'U/Snapshot/cd/cdef'], data: [] },
    { names: ['MediaDomain/big', 'U/Snapshot/ef/ef01'], data: [Buffer.alloc(70_000, 1), Buffer.alloc(3, 2)] },
    { names: ['x', 'U/gone'], data: [], end: encodeFileEnd(DL_CODE_ERROR_REMOTE, 'No such file') },
  ];
  const whole = Buffer.concat([fileStream(FILES), Buffer.from('next message')]);
  const expected = decodeAll(2, [whole]);

  test('decodes files, their data and their ends, then stops at the end marker with the rest kept', () => {
    const ev = expected.events as { kind?: string; names?: string[]; ok?: boolean; text?: string; data?: string }[];
    assert.deepEqual(ev[0], { kind: 'file', names: FILES[0]!.names });
    assert.equal(Buffer.from(ev[1]!.data!, 'hex').toString(), 'hello world');
    assert.deepEqual(ev[2], { kind: 'end', ok: true, code: 0, text: '' });
    assert.equal(ev[4]!.data, '');
    assert.equal(Buffer.from(ev[7]!.data!, 'hex').length, 70_003);
    assert.deepEqual(ev[11], { kind: 'end', ok: false, code: DL_CODE_ERROR_REMOTE, text: 'No such file' });
    assert.deepEqual(ev.at(-1), { kind: 'done' });
    assert.equal(expected.rest.toString(), 'next message');
  });

  test('gives the same events fed byte by byte', () => {
    assert.deepEqual(decodeAll(2, splitBytes(whole)), expected);
  });

  test('gives the same events at random split points', (t) => {
    const rng = new Prng(fuzzSeed(t, 'device-link split'));
    for (let i = 0; i < 50; i++) assert.deepEqual(decodeAll(2, splitRandomly(rng, whole, 9000)), expected);
  });

  test('an error end after data is the end of a whole file, as real devices send it', () => {
    const s = fileStream([{ names: ['a'], data: [Buffer.from('z')], end: encodeFileEnd(DL_CODE_ERROR_REMOTE) }]);
    const ev = decodeAll(1, [s]).events as { kind?: string; ok?: boolean }[];
    assert.equal(ev.find((e) => e.kind === 'end')!.ok, true);
  });

  test('a host-side error ends a file as not ok', () => {
    const s = fileStream([{ names: ['a'], data: [], end: encodeFileEnd(DL_CODE_ERROR_LOCAL, 'No such file or directory') }]);
    const ev = decodeAll(1, [s]).events as { kind?: string; ok?: boolean; text?: string }[];
    assert.deepEqual(ev.find((e) => e.kind === 'end'), { kind: 'end', ok: false, code: DL_CODE_ERROR_LOCAL, text: 'No such file or directory' });
  });

  test('a name longer than the limit is MUXWIRE_ERR_BAD_LENGTH before it is buffered', () => {
    const d = new FileStreamDecoder(1);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(DL_MAX_NAME_LENGTH + 1);
    d.push(head);
    assert.throws(() => d.next(), (e: unknown) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_LENGTH'));
    assert.throws(() => d.next(), (e: unknown) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_LENGTH'), 'stays failed');
  });

  test('a chunk of length 0 is MUXWIRE_ERR_BAD_LENGTH', () => {
    const d = new FileStreamDecoder(1);
    d.push(Buffer.concat([encodeFileName('a'), Buffer.from([0, 0, 0, 0, 0x0c])]));
    assert.equal(d.next()!.kind, 'file');
    assert.throws(() => d.next(), (e: unknown) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_LENGTH'));
  });

  test('data is handed out without waiting for the whole chunk', () => {
    const d = new FileStreamDecoder(1);
    d.push(Buffer.concat([encodeFileName('a'), encodeDataChunkHead(1_000_000), Buffer.alloc(10, 9)]));
    assert.equal(d.next()!.kind, 'file');
    const e = d.next();
    assert.equal(e?.kind, 'data');
    assert.equal((e as { data: Buffer }).data.length, 10);
    assert.equal(d.next(), undefined);
  });
});
