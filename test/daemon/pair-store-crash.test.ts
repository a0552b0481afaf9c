/**
 * The pair store under kill -9 and after other hands: a writer killed at random points of
 * SavePairRecord leaves every record whole (the old one or the new one), and the next start
 * (PairStore.prepare, which the daemon runs before serving) removes its temp files; modes left
 * wrong by anyone else are put right at start-up.
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PairStore } from '../../src/daemon/pair-store.js';
import { encodeXmlPlist, isPlistDict } from '../../src/protocol/plist.js';
import { Prng, fuzzSeed } from '../helpers/fuzz.js';

const SAVE_LOOP = fileURLToPath(new URL('./helpers/save-loop.js', import.meta.url));
let dir: string | undefined;

afterEach(async () => {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

/** Starts the save loop on `pairDir`, kills it with SIGKILL `delayMs` after its first save began. */
async function killDuringSave(pairDir: string, delayMs: number): Promise<void> {
  const child = spawn(process.execPath, [SAVE_LOOP, pairDir], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = once(child, 'exit');
  await once(child.stdout, 'data');
  await new Promise((resolve) => setTimeout(resolve, delayMs));
  child.kill('SIGKILL');
  const [code, signal] = (await exited) as [number | null, string | null];
  assert.equal(signal, 'SIGKILL', `the save loop ended by itself (code ${code})`);
}

test('100 kill -9 cycles during SavePairRecord: every record parses, modes 0600/0700, no temp file survives the next start', async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-pair-kill-'));
  const pairDir = join(dir, 'lockdown');
  const rng = new Prng(fuzzSeed(undefined, 'pair-store kill -9'));
  let cyclesWithTemp = 0;
  for (let cycle = 0; cycle < 100; cycle++) {
    await killDuringSave(pairDir, rng.int(12));
    const before = await readdir(pairDir);
    if (before.some((n) => n.endsWith('.tmp'))) cyclesWithTemp++;
    const prepared = await new PairStore(pairDir).prepare();
    const after = await readdir(pairDir);
    assert.deepEqual(after.filter((n) => n.endsWith('.tmp')), [], `cycle ${cycle}: a temp file survived the start`);
    assert.equal(prepared.tempFilesRemoved.length, before.filter((n) => n.endsWith('.tmp')).length);
    assert.equal((await stat(pairDir)).mode & 0o777, 0o700);
    const store = new PairStore(pairDir);
    for (const name of after) {
      assert.equal((await stat(join(pairDir, name))).mode & 0o777, 0o600, `cycle ${cycle}: ${name}`);
      const record = await store.readPairRecord(name.replace(/\.plist$/, ''));
      assert.ok(isPlistDict(record) && Buffer.isBuffer(record.HostPrivateKey), `cycle ${cycle}: ${name} is not a whole record`);
    }
  }
  // The kills landed inside saves (a temp file was there), not only between them.
  assert.ok(cyclesWithTemp > 0, 'no kill ever landed while a temp file existed');
});

test('start-up makes the directory 0700 and records 0600, and keeps a live writer\'s temp file', async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-pair-modes-'));
  const pairDir = join(dir, 'lockdown');
  await mkdir(pairDir, { mode: 0o755 });
  await chmod(pairDir, 0o755);
  await writeFile(join(pairDir, 'A.plist'), encodeXmlPlist({ HostID: 'A' }), { mode: 0o644 });
  await writeFile(join(pairDir, 'SystemConfiguration.plist'), encodeXmlPlist({ SystemBUID: 'B' }), { mode: 0o664 });
  await writeFile(join(pairDir, 'B.plist'), encodeXmlPlist({ HostID: 'B' }), { mode: 0o600 });
  // Ours (this pid, alive): a save in progress. A dead pid's: left by a crash.
  await writeFile(join(pairDir, `B.plist.${process.pid}.0a0b0c0d.tmp`), 'partial', { mode: 0o600 });
  await writeFile(join(pairDir, 'C.plist.2147483646.deadbeef.tmp'), 'partial', { mode: 0o600 });
  await writeFile(join(pairDir, 'notes.txt'), 'not ours', { mode: 0o644 });
  const prepared = await new PairStore(pairDir).prepare();
  assert.equal(prepared.dirModeFixed, true);
  assert.deepEqual(prepared.modesFixed.sort(), ['A.plist', 'SystemConfiguration.plist']);
  assert.deepEqual(prepared.tempFilesRemoved, ['C.plist.2147483646.deadbeef.tmp']);
  assert.equal((await stat(pairDir)).mode & 0o777, 0o700);
  for (const name of ['A.plist', 'B.plist', 'SystemConfiguration.plist']) assert.equal((await stat(join(pairDir, name))).mode & 0o777, 0o600, name);
  assert.equal((await stat(join(pairDir, 'notes.txt'))).mode & 0o777, 0o644, 'other files are left alone');
  assert.deepEqual((await readdir(pairDir)).sort(), ['A.plist', `B.plist.${process.pid}.0a0b0c0d.tmp`, 'B.plist', 'SystemConfiguration.plist', 'notes.txt'].sort());
  // A second start has nothing left to fix.
  assert.deepEqual(await new PairStore(pairDir).prepare(), { dirOwnerFixed: false, dirModeFixed: false, modesFixed: [], tempFilesRemoved: [], skipped: [] });
});

test('a new pair directory is created 0700, parents included', async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-pair-new-'));
  const pairDir = join(dir, 'var', 'lib', 'lockdown');
  await new PairStore(pairDir).savePairRecord('X', { HostID: 'X' });
  assert.equal((await stat(pairDir)).mode & 0o777, 0o700);
  assert.equal((await stat(join(dir, 'var'))).mode & 0o777, 0o700);
  assert.equal((await stat(join(pairDir, 'X.plist'))).mode & 0o777, 0o600);
});
