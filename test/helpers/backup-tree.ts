/**
 * What the backup tests compare: a content tree as "<Domain>/<path>" → SHA-1 (directories with a
 * trailing '/'), a backup directory against a content tree, and the pairing of simulated devices
 * through whatever daemon `env` names.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { promisify } from 'node:util';
import { openLockdown } from '../../src/client/device-services.js';
import type { DeviceMuxer } from '../../src/client/device-services.js';
import type { DeviceInfo } from '../../src/client/device-info.js';
import { PairStore } from '../../src/daemon/pair-store.js';
import { DeviceSession } from '../../src/mux/device-session.js';
import { SimulatedDevice } from '../../src/sim/simulator.js';
import { decodePlist, isPlistDict } from '../../src/protocol/plist.js';
import { MANIFEST_FLAG_FILE, backupFileId, backupFilePath, readManifestDb } from '../../src/services/backup/manifest-db.js';

export const run = promisify(execFile);

export async function sha1(path: string): Promise<string> {
  const h = createHash('sha1');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest('hex');
}

/** Every file under `root` as "<Domain>/<path>" → SHA-1, and every directory as "<…>/" → 'dir', sorted. */
export async function tree(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const d of await readdir(dir, { withFileTypes: true })) {
      const r = rel === '' ? d.name : `${rel}/${d.name}`;
      if (d.isDirectory()) {
        out.set(`${r}/`, 'dir');
        await walk(join(dir, d.name), r);
      } else out.set(r, await sha1(join(dir, d.name)));
    }
  };
  await walk(root, '');
  return new Map([...out].sort(([a], [b]) => (a < b ? -1 : 1)));
}

/** Checks that the backup in `udidDir` holds exactly the files of `want` (a {@link tree}), byte for byte. */
export async function assertBackupMatches(udidDir: string, want: Map<string, string>): Promise<void> {
  const rows = readManifestDb(join(udidDir, 'Manifest.db'));
  const files = rows.filter((r) => r.flags === MANIFEST_FLAG_FILE);
  const wantFiles = [...want].filter(([k]) => !k.endsWith('/'));
  assert.equal(files.length, wantFiles.length, 'one Files row per file');
  for (const [rel, digest] of wantFiles) {
    const slash = rel.indexOf('/');
    const domain = rel.slice(0, slash);
    const relativePath = rel.slice(slash + 1);
    const id = backupFileId(domain, relativePath);
    const row = files.find((r) => r.fileID === id);
    assert.ok(row, `a Files row for ${rel}`);
    assert.equal(row.domain, domain);
    assert.equal(row.relativePath, relativePath);
    assert.equal(await sha1(join(udidDir, backupFilePath(id))), digest, `${rel} byte for byte`);
  }
  for (const d of [...want.keys()].filter((k) => k.endsWith('/') && k.indexOf('/') < k.length - 1)) {
    const slash = d.indexOf('/');
    assert.ok(rows.some((r) => r.domain === d.slice(0, slash) && r.relativePath === d.slice(slash + 1, -1)), `a row for directory ${d}`);
  }
}

/** Status.plist of a backup. */
export async function backupStatus(udidDir: string): Promise<Record<string, unknown>> {
  const v = decodePlist(await readFile(join(udidDir, 'Status.plist')));
  assert.ok(isPlistDict(v));
  return v;
}

/** Waits until `idevice_id -l` lists each UDID, then pairs it with idevicepair. */
export async function pairListed(env: NodeJS.ProcessEnv, udids: string[]): Promise<void> {
  for (const udid of udids) {
    for (let i = 0; ; i++) {
      const { stdout } = await run('idevice_id', ['-l'], { env });
      if (stdout.includes(udid)) break;
      if (i > 600) assert.fail(`${udid} never listed`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await run('idevicepair', ['-u', udid, 'pair'], { env, timeout: 60_000 });
  }
}

/** A simulated device with `backupRoot`, reached in-process, paired; its muxer and DeviceInfo. */
export async function reachInProcess(cleanups: Array<() => Promise<void> | void>, backupRoot: string): Promise<{ device: SimulatedDevice; muxer: DeviceMuxer; info: DeviceInfo; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'muxwire-sim-backup-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const device = await SimulatedDevice.create({ backupRoot, benchPorts: false });
  cleanups.push(() => device.close());
  const session = new DeviceSession(device.inProcessLink(), { connectTimeoutMs: 10_000 });
  cleanups.push(() => session.close());
  await session.ready;
  const store = new PairStore(join(dir, 'pairs'));
  const info: DeviceInfo = { deviceId: 1, udid: device.udid, productId: 0x12a8, locationId: 0, connectionType: 'USB', properties: {} };
  const muxer: DeviceMuxer = {
    findDevice: async () => info,
    connect: async (_device, port) => session.connect(port),
    readBUID: () => store.readBUID(),
    readPairRecord: (udid) => store.readPairRecord(udid),
    savePairRecord: (udid, record, id) => store.savePairRecord(udid, record, id),
  };
  (await openLockdown(muxer, info, { pairIfNeeded: true })).lockdown.close();
  return { device, muxer, info, dir };
}
