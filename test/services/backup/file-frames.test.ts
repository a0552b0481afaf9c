/**
 * The read-ahead of a DeviceLink file stream (src/services/backup/file-frames.ts): each small file
 * as one frame that the stream decoder reads back as the same names and bytes, large or unknown
 * ones left to the caller, unreadable ones reported with nothing sent.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileFrameReader } from '../../../src/services/backup/file-frames.js';
import type { FileFrame } from '../../../src/services/backup/file-frames.js';
import { FileStreamDecoder, encodeFileName, encodeFileStreamEnd } from '../../../src/protocol/device-link.js';
import type { FileStreamEvent } from '../../../src/protocol/device-link.js';

describe('FileFrameReader', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'muxwire-file-frames-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('frames small files as names, one chunk and an end the decoder reads back; leaves large, unknown and missing ones', async () => {
    const files = [randomBytes(3000), Buffer.alloc(0), randomBytes(70_000), randomBytes(1)];
    const paths = await Promise.all(files.map(async (data, i) => {
      const p = join(dir, `f${i}`);
      await writeFile(p, data);
      return p;
    }));
    const sources = [
      ...paths.map((path, i) => ({ path, names: Buffer.concat([encodeFileName(`dev/${i}`), encodeFileName(`ab/${i}`)]), size: files[i]!.length })),
      { path: paths[0]!, names: encodeFileName('x'), size: 1 << 30 },
      { path: paths[0]!, names: encodeFileName('y') },
      { path: join(dir, 'missing'), names: encodeFileName('z'), size: 10 },
    ];
    // wholeBytes below the 70 000-byte file: it was sized small but is read as too large.
    const reader = new FileFrameReader(sources, { wholeBytes: 65536, maxFiles: 2, maxBytes: 4096 });
    const got: FileFrame[] = [];
    for (let i = 0; i < sources.length; i++) got.push(await reader.next());
    assert.deepEqual(got.map((f) => f.kind), ['whole', 'whole', 'stream', 'whole', 'stream', 'stream', 'failed']);
    assert.match((got[6] as { reason: string }).reason, /ENOENT/);
    await assert.rejects(reader.next(), /past the last file/);

    const wholes = [0, 1, 3];
    const decoder = new FileStreamDecoder(2);
    decoder.push(Buffer.concat([...wholes.map((i) => (got[i] as { frame: Buffer }).frame), encodeFileStreamEnd()]));
    const events: FileStreamEvent[] = [];
    for (let e = decoder.next(); e; e = decoder.next()) events.push(e);
    const decoded: { names: string[]; data: Buffer }[] = [];
    for (const e of events) {
      if (e.kind === 'file') decoded.push({ names: e.names, data: Buffer.alloc(0) });
      else if (e.kind === 'data') decoded.at(-1)!.data = Buffer.concat([decoded.at(-1)!.data, e.data]);
      else if (e.kind === 'end') assert.equal(e.ok, true);
    }
    assert.equal(events.at(-1)!.kind, 'done');
    assert.deepEqual(decoded.map((d) => d.names), wholes.map((i) => [`dev/${i}`, `ab/${i}`]));
    for (const [k, i] of wholes.entries()) {
      assert.ok(decoded[k]!.data.equals(files[i]!), `file ${i} byte for byte`);
      const f = got[i] as { size: number; digest: Buffer };
      assert.equal(f.size, files[i]!.length);
      assert.ok(f.digest.equals(createHash('sha1').update(files[i]!).digest()));
    }
  });
});
