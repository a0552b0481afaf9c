/**
 * Bounded memory: a 1 GiB file through a backup and a restore (BackupClient and the simulated
 * device in this one process, over an in-process link), with RSS sampled throughout. Runs once (not
 * on both accelerator paths): it moves 2 GiB.
 */
import { test, describe, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BackupClient } from '../../../src/services/backup/backup-client.js';
import { reachInProcess, tree } from '../../helpers/backup-tree.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('backup memory', () => {
  test('a 1 GiB file goes through a backup and a restore with memory bounded far below its size', { timeout: 600_000 }, async (t) => {
    const root = await mkdtemp(join(tmpdir(), 'muxwire-backup-memory-'));
    cleanups.push(() => rm(root, { recursive: true, force: true }));
    await mkdir(join(root, 'MediaDomain/Media'), { recursive: true });
    const big = join(root, 'MediaDomain/Media/huge.bin');
    // Sparse but for a stamp every 64 MiB, so the copy has to carry the right bytes in the right place.
    const fh = await open(big, 'w');
    for (let i = 0; i < 16; i++) await fh.write(Buffer.from(`block ${i}`), 0, undefined, i * 64 * 1024 * 1024);
    await fh.truncate(1024 * 1024 * 1024);
    await fh.close();
    const { muxer, info, dir } = await reachInProcess(cleanups, root);
    const baseline = process.memoryUsage().rss;
    let peak = baseline;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
    cleanups.push(() => clearInterval(sampler));
    const out = join(dir, 'OUT');
    await mkdir(out);
    await new BackupClient(muxer, info).backup(out, { full: true });
    const want = await tree(root);
    await rm(join(root, 'MediaDomain'), { recursive: true });
    await new BackupClient(muxer, info).restore(out, { reboot: false });
    clearInterval(sampler);
    assert.deepEqual(await tree(root), want);
    const grew = (peak - baseline) / (1024 * 1024);
    t.diagnostic(`RSS growth moving 1 GiB each way: ${grew.toFixed(0)} MiB`);
    assert.ok(grew < 256, `RSS grew by ${grew.toFixed(0)} MiB moving 1 GiB each way (bound 256 MiB)`);
  });
});
