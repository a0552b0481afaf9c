/**
 * The backup commands end to end: `muxwire backup`, `muxwire backup-info` and `muxwire restore` as
 * processes against our daemon and simulated iPhones (paired with idevicepair, so the pair record
 * sits in the daemon where every tool finds it), and their one-line coded failures.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import type { SimulatedDevice } from '../../src/sim/simulator.js';
import { requirePeer } from '../helpers/peers.js';
import { backupFileId, backupFilePath } from '../../src/services/backup/manifest-db.js';
import { BackupRig } from '../helpers/backup-rig.js';

const run = promisify(execFile);
const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

async function files(root: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const d of await readdir(join(root, rel), { withFileTypes: true })) {
    const r = rel === '' ? d.name : `${rel}/${d.name}`;
    if (d.isDirectory()) out.push(...(await files(root, r)));
    else out.push(`${r}=${(await readFile(join(root, r))).toString('hex')}`);
  }
  return out.sort();
}

describe('muxwire backup, backup-info and restore', () => {
  let rig: BackupRig | undefined;
  let dir: string;
  let device: SimulatedDevice | undefined;
  let device2: SimulatedDevice | undefined;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    rig = await BackupRig.create('muxwire-backup-cli-');
    dir = rig.dir;
    await mkdir(join(dir, 'R2'));
    await mkdir(join(dir, 'OUT'));
    // The first device has the built-in content.
    [device, device2] = await rig.start([{ name: 'CLI iPhone' }, { backupRoot: join(dir, 'R2') }]);
    env = rig.env;
  });

  after(() => rig?.close());

  const muxwire = (...args: string[]): Promise<{ stdout: string; stderr: string }> => run(process.execPath, [MAIN, ...args], { env, timeout: 120_000 });

  test('backs up the built-in content, describes it, and restores it onto a second device', { timeout: 300_000 }, async (t) => {
    if (!requirePeer(t, 'idevicepair', 'idevice_id')) return;
    await rig!.pairAll();
    const out = join(dir, 'OUT');
    const b = await muxwire('backup', '-u', device!.udid, out, '--full', '--json', '--no-progress');
    const summary = JSON.parse(b.stdout) as { udid: string; files: number; bytes: number };
    assert.equal(summary.udid, device!.udid);
    assert.ok(summary.files >= 5, 'the built-in files and the manifests');

    const info = JSON.parse((await muxwire('backup-info', out, '--json')).stdout) as Record<string, unknown>[];
    assert.equal(info.length, 1);
    assert.equal(info[0]!.deviceName, 'CLI iPhone');
    assert.equal(info[0]!.snapshotState, 'finished');
    assert.equal(info[0]!.isFullBackup, true);
    assert.equal(info[0]!.files, (await files(device!.backupRoot)).length);
    const list = (await muxwire('backup-info', out, '--list')).stdout.trim().split('\n');
    assert.equal(list[0], 'domain,path,size,fileID');
    assert.ok(list.some((l) => l.startsWith('HomeDomain,Library/Notes/notes.sqlite,')));

    const r = await muxwire('restore', '-u', device2!.udid, '--source', device!.udid, '--no-reboot', out);
    assert.match(r.stdout, /restore of .* done/);
    assert.deepEqual(await files(join(dir, 'R2')), await files(device!.backupRoot));
  });

  test('a forced full backup over a previous one drops what the device no longer has', { timeout: 300_000 }, async (t) => {
    if (!requirePeer(t, 'idevicepair', 'idevice_id')) return;
    const out = join(dir, 'OUT');
    const udid = device!.udid;
    const gone = backupFilePath(backupFileId('AppDomain-com.example.notes', 'Documents/todo.txt'));
    assert.ok((await stat(join(out, udid, gone))).isFile(), 'backed up the first time');
    await rm(join(device!.backupRoot, 'AppDomain-com.example.notes/Documents/todo.txt'));
    await muxwire('backup', '-u', udid, out, '--full', '--no-progress');
    await assert.rejects(stat(join(out, udid, gone)));
    const info = JSON.parse((await muxwire('backup-info', out, '-u', udid, '--json')).stdout) as Record<string, unknown>[];
    assert.equal(info[0]!.files, (await files(device!.backupRoot)).length);
    assert.equal(info[0]!.isFullBackup, true);
  });

  test('a missing backup directory is one line with a code and exit status 2 (a usage error)', async () => {
    const err = await muxwire('backup', join(dir, 'nope')).catch((e: { code: number; stderr: string }) => e);
    assert.equal((err as { code: number }).code, 2);
    assert.match((err as { stderr: string }).stderr, /^muxwire backup: .*nope is not a directory \(MUXWIRE_ERR_BAD_ARGUMENT\)\n$/);
  });

  test('backup-info of a directory without a backup says so with MUXWIRE_ERR_BAD_MANIFEST', async () => {
    const empty = join(dir, 'empty');
    await mkdir(empty);
    await writeFile(join(empty, 'stray'), 'x');
    const err = (await muxwire('backup-info', empty).catch((e: unknown) => e)) as { code: number; stderr: string };
    assert.equal(err.code, 1);
    assert.match(err.stderr, /holds no backup \(MUXWIRE_ERR_BAD_MANIFEST\)/);
  });

  test('restore of a directory with no finished backup fails before touching the device', async () => {
    const err = (await muxwire('restore', '-u', device2!.udid, join(dir, 'empty')).catch((e: unknown) => e)) as { code: number; stderr: string };
    assert.equal(err.code, 1);
    assert.match(err.stderr, /^muxwire restore: .* holds no finished backup .*\(MUXWIRE_ERR_BAD_MANIFEST\)\n$/);
  });
});
