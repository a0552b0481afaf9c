import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PairStore, validatePairRecordId, errnoOf, EINVAL, ENOENT } from '../../src/daemon/pair-store.js';
import { encodeBinaryPlist, encodeXmlPlist } from '../../src/protocol/plist.js';

let dir: string;
let store: PairStore;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-pairs-'));
  store = new PairStore(join(dir, 'lockdown'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('creates one SystemBUID, upper-case UUID shaped, saved in SystemConfiguration.plist', async () => {
  const [a, b] = await Promise.all([store.readBUID(), store.readBUID()]);
  assert.equal(a, b, 'two first callers get the same BUID');
  assert.match(a, /^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$/);
  const text = await readFile(join(dir, 'lockdown', 'SystemConfiguration.plist'), 'utf8');
  assert.match(text, new RegExp(`<key>SystemBUID</key>\\s*<string>${a}</string>`));
  assert.equal(await new PairStore(join(dir, 'lockdown')).readBUID(), a, 'a second daemon reads the same one');
});

test('keeps the SystemBUID of an existing usbmuxd configuration', async () => {
  const lockdown = join(dir, 'lockdown');
  await store.savePairRecord('seed', { A: 1 });
  await writeFile(join(lockdown, 'SystemConfiguration.plist'), encodeXmlPlist({ SystemBUID: '11111111-2222-3333-4444-555555555555' }));
  assert.equal(await new PairStore(lockdown).readBUID(), '11111111-2222-3333-4444-555555555555');
});

test('saves records as XML with mode 0600 and leaves no temporary files', async () => {
  const id = '00008030-001A2B3C4D5E6F70';
  await store.savePairRecordData(id, encodeBinaryPlist({ HostID: 'H', RootCertificate: Buffer.from('root') }));
  const path = join(dir, 'lockdown', `${id}.plist`);
  const st = await stat(path);
  assert.equal(st.mode & 0o777, 0o600);
  const bytes = await readFile(path);
  assert.equal(bytes.subarray(0, 5).toString(), '<?xml');
  assert.deepEqual(await readdir(join(dir, 'lockdown')), [`${id}.plist`]);
  const back = await store.readPairRecord(id);
  assert.equal(back?.HostID, 'H');
  assert.deepEqual(back?.RootCertificate, Buffer.from('root'));
});

test('replaces a record atomically: the old one stays whole until the new one is in place', async () => {
  const id = 'ATOMIC';
  await store.savePairRecord(id, { Version: 1 });
  const path = join(dir, 'lockdown', `${id}.plist`);
  // Readers racing a stream of rewrites always see a whole, parseable record.
  const writes = Array.from({ length: 20 }, (_, i) => store.savePairRecord(id, { Version: i + 2, Pad: 'x'.repeat(20000) }));
  let reads = 0;
  const readers = (async () => {
    for (let i = 0; i < 50; i++) {
      const rec = await store.readPairRecord(id);
      assert.equal(typeof rec?.Version, 'number');
      reads++;
    }
  })();
  await Promise.all([...writes, readers]);
  assert.equal(reads, 50);
  assert.deepEqual((await readdir(join(dir, 'lockdown'))).filter((n) => n.endsWith('.tmp')), []);
  assert.ok((await stat(path)).isFile());
});

test('emits saved with the DeviceID so the daemon can announce Paired', async () => {
  const events: unknown[] = [];
  store.on('saved', (e) => events.push(e));
  await store.savePairRecord('U1', { A: 1 }, 7);
  await store.savePairRecord('U2', { A: 1 });
  assert.deepEqual(events, [{ udid: 'U1', deviceId: 7 }, { udid: 'U2' }]);
});

test('refuses PairRecordIDs that could leave the directory, with EINVAL', async () => {
  for (const bad of ['', '..', '.', '../x', 'a/b', 'a\\b', 'nul\u0000byte', '.hidden', 'line\nbreak', 'SystemConfiguration', 'x'.repeat(300)]) {
    assert.throws(() => validatePairRecordId(bad), (err: unknown) => errnoOf(err) === EINVAL, JSON.stringify(bad));
    await assert.rejects(store.savePairRecord(bad, { A: 1 }), (err: unknown) => errnoOf(err) === EINVAL);
    await assert.rejects(store.readPairRecordData(bad), (err: unknown) => errnoOf(err) === EINVAL);
    await assert.rejects(store.deletePairRecord(bad), (err: unknown) => errnoOf(err) === EINVAL);
  }
  assert.deepEqual(await readdir(dir), [], 'nothing was written anywhere');
  validatePairRecordId('00008030-001A2B3C4D5E6F70');
  validatePairRecordId('ffffffffffffffffffffffffffffffffffffffff');
});

test('answers ENOENT for a missing record, and refuses record data that is not a dictionary', async () => {
  assert.equal(await store.readPairRecord('missing'), undefined);
  await assert.rejects(store.deletePairRecord('missing'), (err: unknown) => errnoOf(err) === ENOENT);
  await assert.rejects(store.savePairRecordData('x', Buffer.from('garbage')), (err: unknown) => errnoOf(err) === EINVAL);
  await assert.rejects(store.savePairRecordData('x', encodeXmlPlist(['an', 'array'])), (err: unknown) => errnoOf(err) === EINVAL);
});
