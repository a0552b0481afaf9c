/**
 * Interop: libimobiledevice's idevicebackup2 (Debian libimobiledevice-utils) backs up and restores
 * simulated iPhones through our daemon: lockdown session, notification_proxy posts, the AFC sync
 * lock file, StartService with the EscrowBag, mobilebackup2's DeviceLink exchange. The content is
 * generated here: a 64 MiB file, an empty one and a few hundred small ones.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { SimulatedDevice } from '../../src/sim/simulator.js';
import { decodePlist, isPlistDict } from '../../src/protocol/plist.js';
import { backupFileId, backupFilePath } from '../../src/services/backup/manifest-db.js';
import { requirePeer } from '../helpers/peers.js';
import { assertBackupMatches, backupStatus as status, run, tree } from '../helpers/backup-tree.js';
import { BackupRig } from '../helpers/backup-rig.js';

describe('idevicebackup2 against the simulated mobilebackup2', () => {
  let rig: BackupRig | undefined;
  let R: string;
  let R2: string;
  let OUT: string;
  let device: SimulatedDevice | undefined;
  let device2: SimulatedDevice | undefined;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    rig = await BackupRig.create('muxwire-backup-limd-');
    const dir = rig.dir;
    R = join(dir, 'R');
    R2 = join(dir, 'R2');
    OUT = join(dir, 'OUT');
    await mkdir(OUT);
    await mkdir(R2);
    await mkdir(join(R, 'MediaDomain/Media/DCIM/100APPLE'), { recursive: true });
    await writeFile(join(R, 'MediaDomain/Media/DCIM/100APPLE/IMG_0001.MOV'), randomBytes(64 * 1024 * 1024));
    await mkdir(join(R, 'HomeDomain/Library/SMS'), { recursive: true });
    await writeFile(join(R, 'HomeDomain/Library/SMS/sms.db-wal'), Buffer.alloc(0));
    await mkdir(join(R, 'HomeDomain/Library/Empty Folder'), { recursive: true });
    for (let i = 0; i < 300; i++) {
      const sub = join(R, `AppDomain-com.example.app${i % 5}`, 'Documents', `d${i % 7}`);
      await mkdir(sub, { recursive: true });
      await writeFile(join(sub, `note ${i}.txt`), randomBytes(1 + (i * 37) % 5000));
    }
    [device, device2] = await rig.start([{ backupRoot: R }, { backupRoot: R2 }]);
    env = rig.env;
  });

  after(() => rig?.close());

  const pairBoth = (): Promise<void> => rig!.pairAll();

  function backup(...args: string[]): Promise<{ stdout: string; stderr: string }> {
    return run('idevicebackup2', args, { env, timeout: 240_000, maxBuffer: 64 * 1024 * 1024 });
  }

  test('a full backup holds Info, Manifest, Status, Manifest.db and every file under its hashed name', { timeout: 300_000 }, async (t) => {
    if (!requirePeer(t, 'idevicebackup2', 'idevicepair', 'idevice_id')) return;
    await pairBoth();
    const udid = device!.udid;
    const { stdout } = await backup('-u', udid, 'backup', '--full', OUT);
    assert.match(stdout, /Full backup mode/);
    assert.match(stdout, /Backup Successful/);
    const udidDir = join(OUT, udid);
    for (const f of ['Info.plist', 'Manifest.plist', 'Status.plist', 'Manifest.db']) assert.ok((await stat(join(udidDir, f))).isFile(), f);
    const st = await status(udidDir);
    assert.equal(st.SnapshotState, 'finished');
    assert.equal(st.IsFullBackup, true);
    const info = decodePlist(await readFile(join(udidDir, 'Info.plist')));
    assert.ok(isPlistDict(info));
    assert.equal(info['Target Identifier'], udid);
    // The apps come from installation_proxy and their icons from springboardservices.
    const apps = [0, 1, 2, 3, 4].map((i) => `com.example.app${i}`);
    assert.deepEqual(info['Installed Applications'], apps);
    const entry = (info.Applications as Record<string, Record<string, unknown>>)['com.example.app3']!;
    assert.ok(Buffer.isBuffer(entry.ApplicationSINF) && Buffer.isBuffer(entry.iTunesMetadata));
    assert.ok(Buffer.isBuffer(entry.PlaceholderIcon) && entry.PlaceholderIcon.subarray(0, 8).equals(Buffer.from('89504e470d0a1a0a', 'hex')), 'a PNG icon');
    await assertBackupMatches(udidDir, await tree(R));
    await assert.rejects(stat(join(udidDir, 'Snapshot')), 'the staging folder is gone');
  });

  test('a second backup after changes is incremental: only changed and new files travel, deleted ones leave', { timeout: 300_000 }, async (t) => {
    if (!requirePeer(t, 'idevicebackup2', 'idevicepair', 'idevice_id')) return;
    await pairBoth();
    const udid = device!.udid;
    const udidDir = join(OUT, udid);
    const base = 'AppDomain-com.example.app1/Documents';
    const changed = join(R, base, 'd1/note 1.txt');
    const deleted = join(R, base, 'd6/note 6.txt');
    // Same size, different bytes: only the digest can tell.
    const old = await readFile(changed);
    await writeFile(changed, Buffer.from(old.map((b) => b ^ 0xff)));
    await rm(deleted);
    await writeFile(join(R, base, 'added.txt'), 'added after the first backup');
    const { stdout } = await backup('-u', udid, 'backup', OUT);
    assert.match(stdout, /Incremental backup mode/);
    // 2 content files and Manifest.db, Manifest.plist, Status.plist.
    assert.match(stdout, /Received 5 files from device/);
    assert.equal((await status(udidDir)).IsFullBackup, false);
    await assertBackupMatches(udidDir, await tree(R));
    await assert.rejects(stat(join(udidDir, backupFilePath(backupFileId('AppDomain-com.example.app1', 'Documents/d6/note 6.txt')))));
  });

  test('info, list and unback read the snapshot through the device', { timeout: 300_000 }, async (t) => {
    if (!requirePeer(t, 'idevicebackup2', 'idevicepair', 'idevice_id')) return;
    await pairBoth();
    const udid = device!.udid;
    const info = await backup('-u', udid, 'info', OUT);
    assert.match(info.stdout, new RegExp(`Unique Identifier: ${udid.toUpperCase()}`));
    assert.match(info.stdout, new RegExp(`Product Type: ${device!.identity.productType.replace(/[,.]/g, '\\$&')}`));
    const list = await backup('-u', udid, 'list', OUT);
    assert.match(list.stdout, /^domain,path,size,fileID$/m);
    assert.match(list.stdout, /^HomeDomain,Library\/SMS\/sms\.db-wal,0,[0-9a-f]{40}$/m);
    assert.match(list.stdout, new RegExp(`^MediaDomain,Media/DCIM/100APPLE/IMG_0001\\.MOV,${64 * 1024 * 1024},`, 'm'));
    await backup('-u', udid, 'unback', OUT);
    assert.deepEqual(await tree(join(OUT, '_unback_')), await tree(R));
    await rm(join(OUT, '_unback_'), { recursive: true });
  });

  test('restore --system --no-reboot into a device with an empty backup root leaves exactly the backed-up content', { timeout: 300_000 }, async (t) => {
    if (!requirePeer(t, 'idevicebackup2', 'idevicepair', 'idevice_id')) return;
    await pairBoth();
    const { stdout } = await backup('-u', device2!.udid, '-s', device!.udid, 'restore', '--system', '--no-reboot', OUT);
    assert.match(stdout, /Restore Successful/);
    assert.deepEqual(await tree(R2), await tree(R));
  });

  test('restore into a device whose content differs replaces it with the backup', { timeout: 300_000 }, async (t) => {
    if (!requirePeer(t, 'idevicebackup2', 'idevicepair', 'idevice_id')) return;
    await pairBoth();
    await mkdir(join(R2, 'CameraRollDomain/Media'), { recursive: true });
    await writeFile(join(R2, 'CameraRollDomain/Media/extra.jpg'), 'not in the backup');
    await writeFile(join(R2, 'HomeDomain/Library/SMS/sms.db-wal'), 'changed on the device');
    await rm(join(R2, 'AppDomain-com.example.app0'), { recursive: true });
    await backup('-u', device2!.udid, '-s', device!.udid, 'restore', '--system', '--no-reboot', OUT);
    assert.deepEqual(await tree(R2), await tree(R));
  });

  test('a backup killed midway leaves the previous snapshot whole and restorable', { timeout: 300_000 }, async (t) => {
    if (!requirePeer(t, 'idevicebackup2', 'idevicepair', 'idevice_id')) return;
    await pairBoth();
    const udid = device!.udid;
    const udidDir = join(OUT, udid);
    const before = await tree(R);
    const bigRel = 'Media/DCIM/100APPLE/IMG_0001.MOV';
    const bigId = backupFileId('MediaDomain', bigRel);
    // New content for the big file, so the next backup must send it again.
    await writeFile(join(R, 'MediaDomain', bigRel), randomBytes(64 * 1024 * 1024));
    const child = spawn('idevicebackup2', ['-u', udid, 'backup', OUT], { env, stdio: 'ignore' });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    let running = true;
    void exited.then(() => (running = false));
    const staged = join(udidDir, 'Snapshot', backupFilePath(bigId));
    while (running) {
      const st = await stat(staged).catch(() => undefined);
      if (st && st.size > 0) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(running, 'the backup was still sending the big file when it was killed');
    child.kill('SIGKILL');
    await exited;
    // The finished snapshot still describes the content before the change, byte for byte.
    assert.equal((await status(udidDir)).SnapshotState, 'finished');
    await rm(R2, { recursive: true });
    await mkdir(R2);
    await backup('-u', device2!.udid, '-s', udid, 'restore', '--system', '--no-reboot', OUT);
    assert.deepEqual(await tree(R2), before);
    // And the next backup, uninterrupted, catches up.
    await backup('-u', udid, 'backup', OUT);
    await assertBackupMatches(udidDir, await tree(R));
  });
});
