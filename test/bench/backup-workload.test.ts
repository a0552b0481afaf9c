/**
 * The bench's backup figure (bench/backup-workload.ts) on a tiny content set: that it generates the
 * set it says, refuses a backup that differs from it in any byte, and runs both clients (muxwire
 * backup and idevicebackup2) through a real daemon and simulated device, each run checked. No
 * timing is asserted.
 */
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeWorkDir } from '../../bench/contenders.js';
import { BACKUP_CLIENTS, addBackupFigures, checkBackup, measureBackup, writeBackupContent } from '../../bench/backup-workload.js';
import type { ContenderResult } from '../../bench/e2e.js';
import { encodeXmlPlist } from '../../src/protocol/plist.js';
import { MANIFEST_FLAG_FILE, backupFilePath, writeManifestDb } from '../../src/services/backup/manifest-db.js';
import { statusPlist } from '../../src/sim/backup/backup-plists.js';
import { requirePeer } from '../helpers/peers.js';

const TINY = { files: 12, bytes: 2 * 1024 * 1024, rounds: 1 };

describe('bench backup workload', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  test('the content set has the files and bytes asked for, and the check refuses any difference', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'muxwire-bench-backup-'));
    dirs.push(dir);
    const root = join(dir, 'R');
    const expected = await writeBackupContent(root, TINY);
    assert.equal(expected.size, TINY.files);
    assert.equal([...expected.values()].reduce((n, f) => n + f.size, 0), TINY.bytes);
    assert.ok([...expected.values()].some((f) => f.size === 0), 'one empty file');
    // A backup made by hand from the content: it passes, and fails once one byte changes.
    const udidDir = join(dir, 'OUT');
    await mkdir(udidDir);
    for (const [fileID, f] of expected) {
      await mkdir(join(udidDir, fileID.slice(0, 2)), { recursive: true });
      await copyFile(join(root, f.domain, ...f.relativePath.split('/')), join(udidDir, backupFilePath(fileID)));
    }
    const rows = [...expected].map(([fileID, f]) => ({
      fileID, domain: f.domain, relativePath: f.relativePath, flags: MANIFEST_FLAG_FILE, size: f.size,
      mode: 0o100644, lastModified: 0, lastStatusChange: 0, birth: 0, inode: 0, userId: 501, groupId: 501, protectionClass: 3,
    }));
    writeManifestDb(join(udidDir, 'Manifest.db'), rows);
    await writeFile(join(udidDir, 'Status.plist'), encodeXmlPlist(statusPlist(true)));
    await checkBackup(udidDir, expected);
    const [victimId, victim] = [...expected].find(([, f]) => f.size > 0)!;
    const fh = await open(join(udidDir, backupFilePath(victimId)), 'r+');
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, 0);
    await fh.write(Buffer.from([b[0]! ^ 1]), 0, 1, 0);
    await fh.close();
    await assert.rejects(checkBackup(udidDir, expected), new RegExp(`${victim.relativePath} is [0-9a-f]{40}, not ${victim.sha1}`));
  });

  test('both clients back the same simulated device up through the daemon, each backup checked', { timeout: 300_000 }, async (t) => {
    if (!requirePeer(t, 'idevicebackup2')) return;
    const workDir = await makeWorkDir();
    dirs.push(workDir);
    const lines: string[] = [];
    const fig = await measureBackup(TINY, workDir, (l) => lines.push(l));
    for (const who of BACKUP_CLIENTS) {
      const c = fig.clients[who];
      assert.equal(c.missing, undefined, `${who}: ${c.missing}\n${lines.join('\n')}`);
      assert.equal(c.seconds?.runs.length, TINY.rounds);
      assert.ok(Number.isFinite(c.warmup), 'a warm-up ran');
      assert.equal(c.cpu.length, TINY.rounds);
      for (const k of ['client', 'daemon', 'sim'] as const) assert.ok(c.cpu[0]![k] >= 0, `${who} ${k} CPU measured`);
    }
    assert.ok(fig.notes.some((n) => /idevicebackup2's seconds ÷ ours/.test(n)), fig.notes.join('\n'));
  });

  test('the bench files the figure under (a) and tells the other contenders why they have none', { timeout: 300_000 }, async (t) => {
    if (!requirePeer(t, 'idevicebackup2')) return;
    const workDir = await makeWorkDir();
    dirs.push(workDir);
    const result = (id: ContenderResult['id']): ContenderResult => ({ id, label: id, about: '', notes: [], figures: {}, seconds: 0 });
    const results = [result('muxwire-js'), result('usbmuxd')];
    await addBackupFigures(results, TINY, workDir, () => undefined);
    assert.ok(results[0]!.figures.backupMuxwire?.summary, results[0]!.figures.backupMuxwire?.missing);
    assert.ok(results[0]!.figures.backupLimd?.summary, results[0]!.figures.backupLimd?.missing);
    assert.equal(results[0]!.backup?.content.files, TINY.files);
    assert.match(results[1]!.figures.backupMuxwire?.missing ?? '', /through \(a\) only/);
  });
});
