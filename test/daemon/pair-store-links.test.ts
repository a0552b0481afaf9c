/**
 * The pair store in a directory someone else could write: symlinks (and FIFOs, hard links) planted
 * there are never followed, by a read, a save, a delete or the start-up tidy, and a directory
 * another user owns is taken over (as root) or warned about. What the audit reproduced: a record
 * linked to a root-only file was served to any client, and prepare() chmod'ed a file outside the
 * directory through a link.
 */
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { constants } from 'node:fs';
import { chmod, chown, link, lstat, mkdir, mkdtemp, open, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import { PairStore, errnoOf, ENOENT } from '../../src/daemon/pair-store.js';
import { setLogSink } from '../../src/log.js';
import { encodeXmlPlist } from '../../src/protocol/plist.js';
import { RawClient } from './helpers/raw-client.js';

const NOBODY = 65534;
const asRoot = { skip: process.getuid?.() !== 0 ? 'needs root (chown, a child as uid 65534)' : false };
/** A record-shaped file outside the pair directory, 0600: what an attacker would like read. */
const SECRET = encodeXmlPlist({ Secret: 'root-only content' });

let dir: string;
let pairDir: string;
let outside: string;
let lines: string[];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-pair-links-'));
  pairDir = join(dir, 'lockdown');
  outside = join(dir, 'outside');
  await mkdir(pairDir, { mode: 0o700 });
  await mkdir(outside, { mode: 0o700 });
  lines = [];
  setLogSink((line) => lines.push(line));
});
afterEach(async () => {
  setLogSink((line) => process.stderr.write(line + '\n'));
  await rm(dir, { recursive: true, force: true });
});

/** Writes `content` outside the pair directory with `mode`; returns its path. */
async function outsideFile(name: string, mode: number, content: Buffer | string = SECRET): Promise<string> {
  const path = join(outside, name);
  await writeFile(path, content, { mode });
  await chmod(path, mode);
  return path;
}

/** The log lines that name `file` (a warning must say which file it is about). */
function linesNaming(file: string): string[] {
  return lines.filter((l) => l.includes(file));
}

const modeOf = async (path: string): Promise<number> => (await stat(path)).mode & 0o777;

test('ReadPairRecord does not follow a symlinked record: no such record, the target never comes back', async () => {
  await symlink(await outsideFile('secret', 0o600), join(pairDir, 'LEAK.plist'));
  const store = new PairStore(pairDir);
  assert.equal(await store.readPairRecordData('LEAK'), undefined);
  assert.equal(await store.readPairRecord('LEAK'), undefined);
  assert.match(linesNaming('LEAK.plist')[0] ?? '', /LEAK\.plist is a symbolic link; not read, answered as no such record/, lines.join('\n'));
  assert.ok((await lstat(join(pairDir, 'LEAK.plist'))).isSymbolicLink(), 'a read removes nothing');
});

test('the daemon answers ReadPairRecord of a symlinked record with ENOENT (2), as for a missing one', async () => {
  await symlink(await outsideFile('secret', 0o600), join(pairDir, 'LEAK.plist'));
  const socketPath = join(dir, 'usbmuxd');
  const daemon = new MuxDaemon({ socketPath, pairDir, preflight: false });
  await daemon.start();
  const c = await RawClient.open(socketPath);
  try {
    const reply = await c.request('ReadPairRecord', { PairRecordID: 'LEAK' });
    assert.deepEqual(reply, { MessageType: 'Result', Number: ENOENT });
    assert.ok(!JSON.stringify(reply).includes('root-only'));
  } finally {
    c.close();
    await daemon.close();
  }
});

test('a FIFO or a hard link to a file elsewhere reads as no such record, without hanging on the FIFO', async () => {
  const fifo = join(pairDir, 'FIFO.plist');
  await new Promise<void>((resolve, reject) => {
    spawn('mkfifo', [fifo], { stdio: 'inherit' }).on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`mkfifo: ${code}`))));
  });
  await link(await outsideFile('hard', 0o600), join(pairDir, 'HARD.plist'));
  const store = new PairStore(pairDir);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timed out'>((resolve) => (timer = setTimeout(() => resolve('timed out'), 2000)));
  try {
    assert.equal(await Promise.race([store.readPairRecordData('FIFO'), timedOut]), undefined);
  } finally {
    clearTimeout(timer);
    // Frees a read stuck in open(2) (it waits for a writer), so the file can end either way.
    await open(fifo, constants.O_WRONLY | constants.O_NONBLOCK).then((fh) => fh.close(), () => undefined);
  }
  assert.equal(await store.readPairRecordData('HARD'), undefined);
  assert.match(linesNaming('FIFO.plist')[0] ?? '', /FIFO\.plist is a FIFO; not read/, lines.join('\n'));
  assert.match(linesNaming('HARD.plist')[0] ?? '', /HARD\.plist has 2 hard links/, lines.join('\n'));
});

test('the SystemBUID is not read through a symlinked SystemConfiguration.plist; the new one replaces the link, not its target', async () => {
  const target = await outsideFile('config', 0o600, encodeXmlPlist({ SystemBUID: 'AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE' }));
  await symlink(target, join(pairDir, 'SystemConfiguration.plist'));
  const buid = await new PairStore(pairDir).readBUID();
  assert.notEqual(buid, 'AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE');
  assert.match(linesNaming('SystemConfiguration.plist')[0] ?? '', /is a symbolic link; not read/, lines.join('\n'));
  const saved = await lstat(join(pairDir, 'SystemConfiguration.plist'));
  assert.ok(saved.isFile(), 'the link was replaced by the new file');
  assert.equal(saved.mode & 0o777, 0o600);
  assert.match(await readFile(target, 'utf8'), /AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE/, 'the target is unchanged');
});

test('SavePairRecord over a symlinked record replaces the link; DeletePairRecord removes a link, never its target', async () => {
  const target = await outsideFile('target', 0o644, 'outside content');
  await symlink(target, join(pairDir, 'SAVE.plist'));
  await symlink(target, join(pairDir, 'DEL.plist'));
  const store = new PairStore(pairDir);
  await store.savePairRecord('SAVE', { HostID: 'new' });
  assert.ok((await lstat(join(pairDir, 'SAVE.plist'))).isFile(), 'rename(2) replaced the link itself');
  assert.equal((await store.readPairRecord('SAVE'))?.HostID, 'new');
  await store.deletePairRecord('DEL');
  await assert.rejects(lstat(join(pairDir, 'DEL.plist')), { code: 'ENOENT' });
  await assert.rejects(store.deletePairRecord('DEL'), (err: unknown) => errnoOf(err) === ENOENT);
  assert.equal(await readFile(target, 'utf8'), 'outside content');
  assert.equal(await modeOf(target), 0o644);
});

test('prepare() neither chmods nor removes through links or odd files: each is skipped with one warning naming it', async () => {
  const chmodme = await outsideFile('chmodme', 0o644, 'x');
  const keepme = await outsideFile('keepme', 0o644, 'y');
  const hard = await outsideFile('hard', 0o644, 'z');
  const deadTemp = 'T.plist.2147483646.deadbeef.tmp'; // a dead writer's name: prepare() would remove it
  await symlink(chmodme, join(pairDir, 'CHMOD.plist'));
  await symlink(keepme, join(pairDir, deadTemp));
  await link(hard, join(pairDir, 'HARD.plist'));
  await mkdir(join(pairDir, 'DIR.plist'), { mode: 0o755 });
  await writeFile(join(pairDir, 'OK.plist'), encodeXmlPlist({ HostID: 'ok' }), { mode: 0o644 });
  await chmod(join(pairDir, 'OK.plist'), 0o644);
  const prepared = await new PairStore(pairDir).prepare();
  assert.equal(await modeOf(chmodme), 0o644, 'no chmod through CHMOD.plist');
  assert.equal(await modeOf(hard), 0o644, 'no chmod of a hard-linked file');
  assert.equal(await modeOf(join(pairDir, 'DIR.plist')), 0o755);
  assert.equal(await readFile(keepme, 'utf8'), 'y');
  assert.ok((await lstat(join(pairDir, deadTemp))).isSymbolicLink(), 'a link named like a temp file is left alone');
  assert.equal(await modeOf(join(pairDir, 'OK.plist')), 0o600, 'plain records are still fixed');
  assert.deepEqual(prepared.modesFixed, ['OK.plist']);
  assert.deepEqual(prepared.tempFilesRemoved, []);
  assert.deepEqual(prepared.skipped.sort(), ['CHMOD.plist', 'DIR.plist', 'HARD.plist', deadTemp].sort());
  for (const name of prepared.skipped) {
    const warned = linesNaming(name);
    assert.equal(warned.length, 1, `${name}: ${warned.join(' | ')}`);
    assert.match(warned[0]!, /left alone \(not followed, not changed\)/);
  }
  assert.match(linesNaming('CHMOD.plist')[0]!, /is a symbolic link/);
});

test('prepare() takes over a pair directory another uid owns (as root): chowned to the daemon, 0700, warned', asRoot, async () => {
  await chown(pairDir, NOBODY, NOBODY);
  await chmod(pairDir, 0o777);
  // usbmuxd (run with -U usbmux) leaves its records owned by its user: they stay so, for it to read.
  const record = join(pairDir, 'R.plist');
  await writeFile(record, encodeXmlPlist({ HostID: 'r' }), { mode: 0o644 });
  await chown(record, NOBODY, NOBODY);
  const prepared = await new PairStore(pairDir).prepare();
  const st = await stat(pairDir);
  assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [0, 0, 0o700]);
  assert.ok(lines.some((l) => /pair directory is owned by uid 65534, not the daemon's uid 0: that user can replace the records in it; made it owned by uid 0/.test(l)), lines.join('\n'));
  assert.equal(prepared.dirOwnerFixed, true);
  const rst = await stat(record);
  assert.deepEqual([rst.uid, rst.mode & 0o777], [NOBODY, 0o600]);
  // A second start finds it right.
  assert.equal((await new PairStore(pairDir).prepare()).dirOwnerFixed, false);
});

test('a daemon that is not root warns about a pair directory another uid owns, and cannot take it', asRoot, async () => {
  await chmod(dir, 0o755);
  await chmod(pairDir, 0o777); // root's, usable by uid 65534: the daemon below
  const storeModule = fileURLToPath(new URL('../../src/daemon/pair-store.js', import.meta.url));
  const script = `const { PairStore } = await import(${JSON.stringify(storeModule)});
    process.stdout.write(JSON.stringify(await new PairStore(${JSON.stringify(pairDir)}).prepare()));`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { uid: NOBODY, gid: NOBODY, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b));
  child.stderr.on('data', (b: Buffer) => (stderr += b));
  const [code] = (await once(child, 'exit')) as [number | null];
  assert.equal(code, 0, stderr);
  assert.match(stderr, /pair directory is owned by uid 0, not the daemon's uid 65534: that user can replace the records in it; chown it to uid 65534/);
  const st = await stat(pairDir);
  assert.deepEqual([st.uid, st.mode & 0o777], [0, 0o777]);
  assert.equal(JSON.parse(stdout).dirOwnerFixed, false);
});

test('prepare() changes nothing through a symlinked pair directory, warns, and records are still served through it', async () => {
  const real = join(outside, 'real-lockdown');
  await mkdir(real, { mode: 0o755 });
  await chmod(real, 0o755);
  await writeFile(join(real, 'R.plist'), encodeXmlPlist({ HostID: 'r' }), { mode: 0o644 });
  await chmod(join(real, 'R.plist'), 0o644);
  const deadTemp = 'R.plist.2147483646.deadbeef.tmp';
  await writeFile(join(real, deadTemp), 'partial');
  const linked = join(dir, 'linked-lockdown');
  await symlink(real, linked);
  const store = new PairStore(linked);
  const prepared = await store.prepare();
  assert.equal(await modeOf(real), 0o755);
  assert.equal(await modeOf(join(real, 'R.plist')), 0o644);
  assert.ok((await readdir(real)).includes(deadTemp));
  assert.ok(lines.some((l) => l.includes(`pair directory is a symbolic link (to ${real}): its owner, mode and files are not changed through it`)), lines.join('\n'));
  assert.deepEqual(prepared, { dirOwnerFixed: false, dirModeFixed: false, modesFixed: [], tempFilesRemoved: [], skipped: [] });
  assert.equal((await store.readPairRecord('R'))?.HostID, 'r');
});
