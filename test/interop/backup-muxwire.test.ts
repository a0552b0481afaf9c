/**
 * Interop: muxwire's BackupClient and libimobiledevice's idevicebackup2 on the same simulated
 * iPhone through our daemon. Each restores the other's backup, their backups agree row for row
 * and byte for byte, and an aborted backup leaves the previous snapshot whole.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { SimulatedDevice } from '../../src/sim/simulator.js';
import type { UsbmuxClient } from '../../src/client/usbmux-client.js';
import { BackupClient } from '../../src/services/backup/backup-client.js';
import type { BackupProgress } from '../../src/services/backup/backup-client.js';
import { MANIFEST_FLAG_FILE, backupFilePath, readManifestDb } from '../../src/services/backup/manifest-db.js';
import { isMuxwireError } from '../../src/errors.js';
import { decodePlist, isPlistDict } from '../../src/protocol/plist.js';
import { requirePeer } from '../helpers/peers.js';
import { run, sha1, tree } from '../helpers/backup-tree.js';
import { BackupRig } from '../helpers/backup-rig.js';

/** Manifest.db rows without timestamps and inode, plus each file's data digest. */
async function snapshot(udidDir: string): Promise<unknown[]> {
  const rows = readManifestDb(join(udidDir, 'Manifest.db'));
  return Promise.all(
    rows.map(async (r) => ({
      fileID: r.fileID,
      domain: r.domain,
      relativePath: r.relativePath,
      flags: r.flags,
      size: r.size,
      digest: r.digest?.toString('hex'),
      data: r.flags === MANIFEST_FLAG_FILE ? await sha1(join(udidDir, backupFilePath(r.fileID))) : undefined,
    })),
  );
}

describe('BackupClient and idevicebackup2 on one simulated device', () => {
  let rig: BackupRig | undefined;
  let dir: string;
  let R: string;
  let R2: string;
  let device: SimulatedDevice | undefined;
  let device2: SimulatedDevice | undefined;
  let client: UsbmuxClient;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    rig = await BackupRig.create('muxwire-backup-client-');
    dir = rig.dir;
    R = join(dir, 'R');
    R2 = join(dir, 'R2');
    await mkdir(R2);
    await mkdir(join(R, 'MediaDomain/Media/DCIM'), { recursive: true });
    await writeFile(join(R, 'MediaDomain/Media/DCIM/IMG_0002.MOV'), randomBytes(24 * 1024 * 1024));
    await writeFile(join(R, 'MediaDomain/Media/empty'), '');
    await mkdir(join(R, 'AppDomain-com.example.reader/Documents'), { recursive: true });
    await writeFile(join(R, 'AppDomain-com.example.reader/Documents/book.txt'), 'chapter one');
    for (let i = 0; i < 120; i++) {
      const sub = join(R, `HomeDomain/Library/f${i % 6}`);
      await mkdir(sub, { recursive: true });
      await writeFile(join(sub, `${i}.plist`), randomBytes(1 + (i * 53) % 3000));
    }
    [device, device2] = await rig.start([{ backupRoot: R }, { backupRoot: R2 }]);
    // A media-partition file both tools copy into Info.plist's "iTunes Files".
    await mkdir(join(device.afcRoot, 'iTunes_Control/iTunes'), { recursive: true });
    await writeFile(join(device.afcRoot, 'iTunes_Control/iTunes/iTunesPrefs'), randomBytes(300));
    env = rig.env;
    client = rig.client();
  });

  after(() => rig?.close());

  const pairBoth = (): Promise<void> => rig!.pairAll();

  const limd = (...args: string[]): Promise<{ stdout: string }> => run('idevicebackup2', args, { env, timeout: 240_000, maxBuffer: 64 * 1024 * 1024 });

  test('muxwire backup --full and idevicebackup2 backup --full agree row for row and byte for byte', { timeout: 300_000 }, async (t) => {
    if (!requirePeer(t, 'idevicebackup2', 'idevicepair', 'idevice_id')) return;
    await pairBoth();
    const udid = device!.udid;
    const ours = join(dir, 'OURS');
    const theirs = join(dir, 'THEIRS');
    await mkdir(theirs);
    const backup = new BackupClient(client, await client.findDevice(udid));
    const seen: BackupProgress[] = [];
    const iterated: BackupProgress[] = [];
    backup.on('progress', (p: BackupProgress) => seen.push(p));
    const collecting = (async () => {
      for await (const p of backup.progress()) iterated.push(p);
    })();
    const result = await backup.backup(ours, { full: true });
    await collecting;
    await limd('-u', udid, 'backup', '--full', theirs);
    assert.equal(result.udid, udid);
    assert.ok(result.bytes >= 24 * 1024 * 1024);
    assert.equal(seen.at(-1)!.percent, 100);
    assert.deepEqual(iterated, seen);
    assert.deepEqual(await snapshot(join(ours, udid)), await snapshot(join(theirs, udid)));
    // Info.plist: the same device fields and the same apps (with icons), GUID and date aside.
    const info = async (d: string): Promise<Record<string, unknown>> => {
      const v = decodePlist(await readFile(join(d, udid, 'Info.plist')));
      assert.ok(isPlistDict(v));
      const { GUID: _g, 'Last Backup Date': _d, ...rest } = v;
      return rest;
    };
    const mine = await info(ours);
    assert.deepEqual(mine['Installed Applications'], ['com.example.reader']);
    assert.deepEqual(Object.keys(mine['iTunes Files'] as object), ['iTunesPrefs']);
    assert.deepEqual(mine, await info(theirs));
  });

  test('idevicebackup2 restores a muxwire backup, and muxwire restores an idevicebackup2 backup', { timeout: 300_000 }, async (t) => {
    if (!requirePeer(t, 'idevicebackup2', 'idevicepair', 'idevice_id')) return;
    await pairBoth();
    const udid = device!.udid;
    await limd('-u', device2!.udid, '-s', udid, 'restore', '--system', '--no-reboot', join(dir, 'OURS'));
    assert.deepEqual(await tree(R2), await tree(R));
    await rm(R2, { recursive: true });
    await mkdir(join(R2, 'Stray/x'), { recursive: true });
    await writeFile(join(R2, 'Stray/x/y'), 'not in the backup');
    const restore = new BackupClient(client, await client.findDevice(device2!.udid));
    await restore.restore(join(dir, 'THEIRS'), { sourceUdid: udid, reboot: false });
    assert.deepEqual(await tree(R2), await tree(R));
  });

  test('an aborted backup fails with MUXWIRE_ERR_ABORTED and leaves the previous snapshot restorable', { timeout: 300_000 }, async (t) => {
    if (!requirePeer(t, 'idevicebackup2', 'idevicepair', 'idevice_id')) return;
    await pairBoth();
    const udid = device!.udid;
    const ours = join(dir, 'OURS');
    const before = await tree(R);
    await writeFile(join(R, 'MediaDomain/Media/DCIM/IMG_0002.MOV'), randomBytes(24 * 1024 * 1024));
    const ac = new AbortController();
    const backup = new BackupClient(client, await client.findDevice(udid));
    backup.on('progress', (p: BackupProgress) => {
      if (p.bytes > 0) ac.abort();
    });
    await assert.rejects(backup.backup(ours, { signal: ac.signal }), (e: unknown) => isMuxwireError(e, 'MUXWIRE_ERR_ABORTED'));
    const leftovers = [...(await tree(join(ours, udid))).keys()].filter((k) => k.includes('.muxwire-part') && !k.startsWith('Snapshot/'));
    assert.deepEqual(leftovers, [], 'no partial file outside Snapshot/');
    await rm(R2, { recursive: true });
    await mkdir(R2);
    const restore = new BackupClient(client, await client.findDevice(device2!.udid));
    await restore.restore(ours, { sourceUdid: udid, reboot: false });
    assert.deepEqual(await tree(R2), before);
  });
});
