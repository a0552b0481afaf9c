/**
 * The simulated device's identity: UDID forms, versions, names, lazy key generation, the key pool,
 * and persistence in a state directory (identity, key, DeviceName, trusted hosts).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeviceIdentity, DeviceKeyPool } from '../../src/sim/identity.js';
import { readPublicKey, samePublicKey } from '../../src/lockdown/certificates.js';
import { startDevice, keyPool, SYSTEM_BUID } from '../lockdown/harness.js';

const dirs: string[] = [];
async function stateDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'muxwire-identity-'));
  dirs.push(d);
  return d;
}
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

test('generates a 25-character UDID whose tail is the UniqueChipID and whose head is the ChipID', async () => {
  const id = await DeviceIdentity.create();
  assert.match(id.udid, /^0000[0-9A-F]{4}-[0-9A-F]{16}$/);
  assert.equal(BigInt('0x' + id.udid.slice(9)), id.uniqueChipId);
  assert.equal(parseInt(id.udid.slice(4, 8), 16), id.model.chipId);
  assert.ok(id.uniqueChipId <= BigInt(Number.MAX_SAFE_INTEGER));
});

test('defaults to an iPhone on iOS 17.5 named with a typographic apostrophe', async () => {
  const id = await DeviceIdentity.create();
  assert.equal(id.productVersion, '17.5');
  assert.equal(id.buildVersion, '21F79');
  assert.equal(id.deviceName, 'Muxwire\u2019s iPhone');
  assert.equal(id.model.deviceClass, 'iPhone');
  assert.match(id.wifiAddress, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
  assert.match(id.serialNumber, /^[0-9A-Z]{10}$/);
});

test('accepts a 40-hex UDID and configured names and versions', async () => {
  const udid = 'a'.repeat(8) + '0123456789abcdef0123456789abcdef';
  const id = await DeviceIdentity.create({ udid, productType: 'iPad13,4', productVersion: '16.7.8', deviceName: 'Lab iPad' });
  assert.equal(id.udid, udid);
  assert.equal(id.model.deviceClass, 'iPad');
  assert.equal(id.buildVersion, '20H343');
  assert.equal(id.deviceName, 'Lab iPad');
});

test('refuses a malformed UDID, version or MAC address with MUXWIRE_ERR_BAD_IDENTITY', async () => {
  await assert.rejects(DeviceIdentity.create({ udid: 'not-a-udid' }), { code: 'MUXWIRE_ERR_BAD_IDENTITY' });
  await assert.rejects(DeviceIdentity.create({ productVersion: '17' }), { code: 'MUXWIRE_ERR_BAD_IDENTITY' });
  await assert.rejects(DeviceIdentity.create({ wifiAddress: 'AA:BB' }), { code: 'MUXWIRE_ERR_BAD_IDENTITY' });
});

test('makes no key until one is needed, then serves the same PKCS#1 key every time', async () => {
  const id = await DeviceIdentity.create({ keyPool });
  assert.equal(id.hasKey, false);
  const [a, b] = await Promise.all([id.deviceKey(), id.deviceKey()]);
  assert.equal(id.hasKey, true);
  assert.equal(a, b);
  assert.match(a.publicKeyPem, /^-----BEGIN RSA PUBLIC KEY-----\n/);
  assert.ok(samePublicKey(readPublicKey(a.publicKeyPem), a.privateKey));
});

test('hands out a different pooled key to each device', async () => {
  const pool = new DeviceKeyPool(2);
  const keys = await Promise.all([pool.take(), pool.take(), pool.take()]);
  assert.equal(new Set(keys.map((k) => k.publicKeyPem)).size, 3);
});

test('comes back with the same identity, key and renamed DeviceName from its state directory', async () => {
  const dir = await stateDir();
  const first = await DeviceIdentity.create({ stateDir: dir, keyPool });
  const key = await first.deviceKey();
  await first.setDeviceName('Renamed');
  const again = await DeviceIdentity.create({ stateDir: dir });
  assert.equal(again.udid, first.udid);
  assert.equal(again.serialNumber, first.serialNumber);
  assert.equal(again.deviceName, 'Renamed');
  assert.equal(again.hasKey, true);
  assert.equal((await again.deviceKey()).publicKeyPem, key.publicKeyPem);
  const stored = JSON.parse(await readFile(join(dir, 'identity.json'), 'utf8')) as Record<string, string>;
  assert.equal(stored.udid, first.udid);
  assert.equal((await readdir(dir)).filter((n) => n.endsWith('.tmp')).length, 0, 'no temporary files left');
});

test('refuses an identity.json that is not JSON with MUXWIRE_ERR_BAD_IDENTITY', async () => {
  const dir = await stateDir();
  const { writeFile } = await import('node:fs/promises');
  await writeFile(join(dir, 'identity.json'), '{broken');
  await assert.rejects(DeviceIdentity.create({ stateDir: dir }), { code: 'MUXWIRE_ERR_BAD_IDENTITY' });
});

test('remembers trusted hosts across a restart of lockdownd with the same state directory', async () => {
  const dir = await stateDir();
  const first = await startDevice({ identity: { stateDir: dir } });
  const record = await first.pair();
  first.close();
  const second = await startDevice({ identity: { stateDir: dir } });
  try {
    const c = await second.open();
    const session = await c.startSession(record, SYSTEM_BUID);
    assert.equal(session.enableSessionSSL, true);
    await c.stopSession();
    assert.ok((await readdir(join(dir, 'pairings'))).some((n) => n === `${String(record.HostID)}.plist`));
  } finally {
    second.close();
  }
});
