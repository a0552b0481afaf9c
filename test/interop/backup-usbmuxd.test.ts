/**
 * Backups through libimobiledevice's usbmuxd (Debian's, unmodified) over the vusb libusb library,
 * not only through our daemon: idevicebackup2 and muxwire's BackupClient against a simulated
 * iPhone plugged into a vusb bus, and the device unplugged in the middle of a backup.
 */
import { test, describe, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { SimulatedDevice } from '../../src/sim/simulator.js';
import { UsbmuxClient } from '../../src/client/usbmux-client.js';
import { BackupClient } from '../../src/services/backup/backup-client.js';
import type { BackupProgress } from '../../src/services/backup/backup-client.js';
import { isMuxwireError } from '../../src/errors.js';
import { requireCondition, requirePeer } from '../helpers/peers.js';
import { startUsbmuxd, usbmuxdUnavailable, type RunningUsbmuxd } from '../helpers/usbmuxd-ns.js';
import { assertBackupMatches, backupStatus, pairListed, run, tree } from '../helpers/backup-tree.js';

describe('backups through Debian usbmuxd on the vusb library', () => {
  let dir: string;
  let R: string;
  let busDir: string;
  let muxd: RunningUsbmuxd | undefined;
  let device: SimulatedDevice | undefined;
  let unavailable: string | undefined;
  let paired = false;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'muxwire-backup-usbmuxd-'));
    R = join(dir, 'R');
    busDir = join(dir, 'bus');
    await mkdir(busDir);
    await mkdir(join(R, 'MediaDomain/Media'), { recursive: true });
    await writeFile(join(R, 'MediaDomain/Media/clip.mov'), randomBytes(16 * 1024 * 1024));
    await mkdir(join(R, 'HomeDomain/Library/Preferences'), { recursive: true });
    for (let i = 0; i < 40; i++) await writeFile(join(R, `HomeDomain/Library/Preferences/p${i}.plist`), randomBytes(100 + i * 11));
    await writeFile(join(R, 'HomeDomain/Library/empty'), '');
    unavailable = usbmuxdUnavailable();
    if (unavailable) return;
    muxd = await startUsbmuxd({ busDir });
    device = await SimulatedDevice.create({ backupRoot: R, benchPorts: false });
    await device.plug(busDir);
  });

  after(async () => {
    await device?.close();
    await muxd?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  async function ready(t: TestContext): Promise<boolean> {
    if (!requireCondition(t, unavailable === undefined, unavailable ?? '')) return false;
    if (!requirePeer(t, 'idevicebackup2', 'idevicepair', 'idevice_id')) return false;
    if (!paired) await pairListed(muxd!.clientEnv, [device!.udid]);
    paired = true;
    return true;
  }

  test('idevicebackup2 backs the device up through usbmuxd', { timeout: 300_000 }, async (t) => {
    if (!(await ready(t))) return;
    const out = join(dir, 'LIMD');
    await mkdir(out);
    const { stdout } = await run('idevicebackup2', ['-u', device!.udid, 'backup', '--full', out], { env: muxd!.clientEnv, timeout: 240_000, maxBuffer: 64 << 20 });
    assert.match(stdout, /Backup Successful/);
    await assertBackupMatches(join(out, device!.udid), await tree(R));
  });

  test('BackupClient backs the device up through usbmuxd, and an unplug midway leaves that snapshot whole', { timeout: 300_000 }, async (t) => {
    if (!(await ready(t))) return;
    const out = join(dir, 'OURS');
    await mkdir(out);
    const udid = device!.udid;
    const client = new UsbmuxClient({ address: `UNIX:${muxd!.socketPath}`, timeoutMs: 10_000 });
    await new BackupClient(client, await client.findDevice(udid)).backup(out, { full: true });
    const before = await tree(R);
    await assertBackupMatches(join(out, udid), before);

    await writeFile(join(R, 'MediaDomain/Media/clip.mov'), randomBytes(16 * 1024 * 1024));
    const backup = new BackupClient(client, await client.findDevice(udid));
    let unplugged: Promise<void> | undefined;
    backup.on('progress', (p: BackupProgress) => {
      if (p.bytes > 0) unplugged ??= device!.unplug();
    });
    const failure = await backup.backup(out).then(() => undefined, (e: unknown) => e);
    assert.ok(isMuxwireError(failure, 'MUXWIRE_ERR_CLOSED'), `MUXWIRE_ERR_CLOSED, got ${String(failure)}`);
    assert.match(failure.message, /ended midway/);
    t.diagnostic(`unplug midway: ${failure.code}: ${failure.message}`);
    await unplugged;
    assert.equal((await backupStatus(join(out, udid))).SnapshotState, 'finished');
    // Everything the finished snapshot names is there as it was before the cut.
    await assertBackupMatches(join(out, udid), before);

    // Plugged back in, the next backup completes and matches the changed content.
    await device!.plug(busDir);
    for (let i = 0; ; i++) {
      const { stdout } = await run('idevice_id', ['-l'], { env: muxd!.clientEnv });
      if (stdout.includes(udid)) break;
      if (i > 600) assert.fail('never listed again');
      await new Promise((r) => setTimeout(r, 50));
    }
    await new BackupClient(client, await client.findDevice(udid)).backup(out);
    await assertBackupMatches(join(out, udid), await tree(R));
  });
});
