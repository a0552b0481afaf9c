/**
 * The simulator's mobilebackup2 reached in-process (host mux engine over an in-process link, no
 * daemon, no peers): protocol negotiation and a hostile Manifest.db in a restore.
 */
import { test, describe, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { openLockdown, startService } from '../../src/client/device-services.js';
import { BackupClient } from '../../src/services/backup/backup-client.js';
import { DeviceLinkChannel } from '../../src/services/backup/device-link-channel.js';
import { MANIFEST_FLAG_FILE, backupFileId, backupFilePath, writeManifestDb } from '../../src/services/backup/manifest-db.js';
import { PlistReal, encodeXmlPlist } from '../../src/protocol/plist.js';
import { dlProcessMessage, processMessageDict } from '../../src/protocol/device-link.js';
import { isMuxwireError } from '../../src/errors.js';
import { reachInProcess, tree } from '../helpers/backup-tree.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function tempRoot(): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'muxwire-sim-backup-root-'));
  cleanups.push(() => rm(root, { recursive: true, force: true }));
  return root;
}


describe('simulated mobilebackup2', () => {
  test('answers a Hello without a common protocol version with ErrorCode 1, and 2.1 when offered', { timeout: 60_000 }, async () => {
    const { muxer, info } = await reachInProcess(cleanups, await tempRoot());
    const handle = await openLockdown(muxer, info);
    cleanups.push(() => handle.lockdown.close());
    const ch = new DeviceLinkChannel(await startService(muxer, handle, 'com.apple.mobilebackup2'));
    cleanups.push(() => ch.destroy());
    const first = await ch.receive();
    assert.deepEqual(first, { name: 'DLMessageVersionExchange', args: [300, 0] });
    await ch.send(['DLMessageVersionExchange', 'DLVersionsOk', 300]);
    assert.equal((await ch.receive()).name, 'DLMessageDeviceReady');
    await ch.send(dlProcessMessage({ MessageName: 'Hello', SupportedProtocolVersions: [new PlistReal(1.0)] }));
    assert.deepEqual(processMessageDict(await ch.receive()), { MessageName: 'Response', ErrorCode: 1 });
    await ch.send(dlProcessMessage({ MessageName: 'Hello', SupportedProtocolVersions: [new PlistReal(2.0), new PlistReal(2.1), new PlistReal(3.0)] }));
    const ok = processMessageDict(await ch.receive());
    assert.equal(ok.ErrorCode, 0);
    assert.equal(ok.ProtocolVersion, 2.1);
  });

  test('StartService refuses an EscrowBag that is not the session host\'s with EscrowLocked', { timeout: 60_000 }, async () => {
    const { muxer, info } = await reachInProcess(cleanups, await tempRoot());
    const handle = await openLockdown(muxer, info);
    cleanups.push(() => handle.lockdown.close());
    await assert.rejects(
      handle.lockdown.startService('com.apple.mobilebackup2', { escrowBag: Buffer.alloc(32, 1) }),
      (e: unknown) => isMuxwireError(e, 'MUXWIRE_ERR_LOCKDOWN') && e.detail === 'EscrowLocked',
    );
    const ok = await handle.lockdown.startService('com.apple.mobilebackup2', { escrowBag: handle.record!.EscrowBag as Buffer });
    assert.ok(ok.port > 0);
  });

  test('a restore whose Manifest.db names a path outside the content root fails and changes nothing', { timeout: 60_000 }, async () => {
    const root = await tempRoot();
    await mkdir(join(root, 'HomeDomain'), { recursive: true });
    await writeFile(join(root, 'HomeDomain/kept.txt'), 'device content');
    const { muxer, info, dir } = await reachInProcess(cleanups, root);
    const backupDir = join(dir, 'evil');
    const udidDir = join(backupDir, info.udid);
    const id = backupFileId('HomeDomain', '../../escape');
    await mkdir(join(udidDir, id.slice(0, 2)), { recursive: true });
    await writeFile(join(udidDir, backupFilePath(id)), 'payload');
    writeManifestDb(join(udidDir, 'Manifest.db'), [
      { fileID: id, domain: 'HomeDomain', relativePath: '../../escape', flags: MANIFEST_FLAG_FILE, size: 7, mode: 0o100644, lastModified: 0, lastStatusChange: 0, birth: 0, inode: 1, userId: 0, groupId: 0, protectionClass: 0 },
    ]);
    await writeFile(join(udidDir, 'Status.plist'), encodeXmlPlist({ SnapshotState: 'finished' }));
    const before = await tree(root);
    await assert.rejects(new BackupClient(muxer, info).restore(backupDir, { reboot: false }), (e: unknown) => isMuxwireError(e, 'MUXWIRE_ERR_BACKUP') && /unsafe name/.test(e.message));
    assert.deepEqual(await tree(root), before);
    await assert.rejects(stat(join(root, '..', 'escape')));
  });

});
