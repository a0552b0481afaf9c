import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import {
  MANIFEST_FLAG_DIRECTORY,
  MANIFEST_FLAG_FILE,
  backupFileId,
  backupFilePath,
  decodeMBFile,
  encodeMBFile,
  readManifestDb,
  writeManifestDb,
} from '../../../src/services/backup/manifest-db.js';
import type { ManifestEntry } from '../../../src/services/backup/manifest-db.js';
import { PlistUID, decodeBinaryPlist, isPlistDict } from '../../../src/protocol/plist.js';
import { isMuxwireError } from '../../../src/errors.js';

function entry(domain: string, relativePath: string, flags: number, size: number, digest?: Buffer): ManifestEntry {
  return {
    fileID: backupFileId(domain, relativePath), domain, relativePath, flags, size,
    mode: flags === MANIFEST_FLAG_FILE ? 0o100644 : 0o40755, lastModified: 1_700_000_000, lastStatusChange: 1_700_000_001, birth: 1_699_999_999,
    inode: 1234, userId: 501, groupId: 501, protectionClass: 3, ...(digest ? { digest } : {}),
  };
}

describe('Manifest.db', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'muxwire-manifest-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('names a file by SHA-1 of "<domain>-<relativePath>" under its first two hex digits', () => {
    const id = backupFileId('HomeDomain', 'Library/Notes/notes.sqlite');
    assert.equal(id, createHash('sha1').update('HomeDomain-Library/Notes/notes.sqlite').digest('hex'));
    assert.equal(backupFilePath(id), `${id.slice(0, 2)}/${id}`);
  });

  test('archives MBFile as NSKeyedArchiver does: $top.root → an object whose $class is MBFile', () => {
    const blob = encodeMBFile(entry('HomeDomain', 'a/b', MANIFEST_FLAG_FILE, 5, Buffer.alloc(20, 1)));
    const top = decodeBinaryPlist(blob);
    assert.ok(isPlistDict(top) && Array.isArray(top.$objects) && isPlistDict(top.$top));
    assert.equal(top.$archiver, 'NSKeyedArchiver');
    const objects = top.$objects;
    const root = objects[(top.$top.root as PlistUID).value];
    assert.ok(isPlistDict(root));
    assert.equal(objects[(root.RelativePath as PlistUID).value], 'a/b');
    const cls = objects[(root.$class as PlistUID).value];
    assert.ok(isPlistDict(cls));
    assert.equal(cls.$classname, 'MBFile');
    assert.deepEqual(decodeMBFile(blob).digest, Buffer.alloc(20, 1));
  });

  test('writes the Files table and reads every row back with its metadata', () => {
    const rows = [
      entry('HomeDomain', 'Library', MANIFEST_FLAG_DIRECTORY, 0),
      entry('HomeDomain', 'Library/x.plist', MANIFEST_FLAG_FILE, 42, Buffer.alloc(20, 7)),
      entry('MediaDomain', 'Media/empty', MANIFEST_FLAG_FILE, 0),
    ];
    const path = join(dir, 'Manifest.db');
    writeManifestDb(path, rows);
    const back = readManifestDb(path);
    assert.deepEqual(back, rows);
  });

  test('a file that is not a database is MUXWIRE_ERR_BAD_MANIFEST', async () => {
    const path = join(dir, 'not-a.db');
    await writeFile(path, 'this is not sqlite');
    assert.throws(() => readManifestDb(path), (e: unknown) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_MANIFEST'));
    assert.throws(() => readManifestDb(join(dir, 'missing.db')), (e: unknown) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_MANIFEST'));
  });
});
