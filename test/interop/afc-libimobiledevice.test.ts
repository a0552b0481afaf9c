/**
 * Interop: libimobiledevice's AFC client (the Debian library behind afcclient and ifuse, driven
 * through Python ctypes) against the simulated device's AFC server, reached the way a real tool
 * reaches a phone: usbmuxd protocol (our daemon, in this process) → lockdownd handshake →
 * StartService com.apple.afc. LIMD checks that each reply echoes the packet number, that a STATUS
 * carries its code and that EOF is a zero-byte DATA (lockdown-afc.md §9.3, §9.6, §9.7).
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import { SimulatedDevice } from '../../src/sim/simulator.js';
import { requireCondition, requirePeer } from '../helpers/peers.js';
import { LIMD_AFC_PEER } from './afc-limd-peer.js';

const run = promisify(execFile);

const LIBRARY = ['/usr/lib/x86_64-linux-gnu/libimobiledevice-1.0.so.6', '/usr/lib/aarch64-linux-gnu/libimobiledevice-1.0.so.6', '/usr/lib/libimobiledevice-1.0.so.6'];

describe('libimobiledevice afc_* calls against the simulated AFC server', () => {
  let dir: string;
  let daemon: MuxDaemon | undefined;
  let device: SimulatedDevice | undefined;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'muxwire-afc-limd-'));
    await mkdir(join(dir, 'Media'));
    device = await SimulatedDevice.create({ afcRoot: join(dir, 'Media'), benchPorts: false, productType: 'iPhone12,8' });
    daemon = new MuxDaemon({ socketPath: join(dir, 'usbmuxd.sock'), pairDir: join(dir, 'lockdown'), preflight: true });
    await daemon.start();
    daemon.addLink(device.inProcessLink());
    env = { ...process.env, USBMUXD_SOCKET_ADDRESS: `UNIX:${join(dir, 'usbmuxd.sock')}` };
  });

  after(async () => {
    await daemon?.close();
    await device?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('runs every afc_* call with the results a device gives', { timeout: 120_000 }, async (t) => {
    if (!requirePeer(t, 'python3', 'idevicepair', 'idevice_id')) return;
    if (!requireCondition(t, LIBRARY.some((p) => existsSync(p)), 'libimobiledevice-1.0.so.6 not installed')) return;
    const udid = device!.udid;
    // The device appears once the daemon's preflight has run; idevice_id lists it then.
    for (let i = 0; ; i++) {
      const { stdout } = await run('idevice_id', ['-l'], { env });
      if (stdout.includes(udid)) break;
      if (i > 100) assert.fail('device never listed');
      await new Promise((r) => setTimeout(r, 50));
    }
    await run('idevicepair', ['-u', udid, 'pair'], { env, timeout: 60_000 });
    const { stdout } = await run('python3', ['-c', LIMD_AFC_PEER, udid], { env, timeout: 90_000, maxBuffer: 16 * 1024 * 1024 });
    const r = JSON.parse(stdout) as Record<string, unknown>;
    const root = device!.afcRoot;

    assert.equal(r.start, 0, 'afc_client_start_service');
    const [devRc, info] = r.devinfo as [number, Record<string, string>];
    assert.equal(devRc, 0);
    assert.equal(info.Model, 'iPhone12,8');
    assert.equal(info.FSBlockSize, '4096');
    assert.equal(r.mkdir, 0);
    assert.ok((await stat(join(root, 'interop/sub'))).isDirectory());
    assert.deepEqual((r.open_w as number[])[0], 0);
    assert.ok((r.open_w as number[])[1]! > 0, 'non-zero handle');
    assert.deepEqual(r.write, [0, 27]);
    assert.equal(r.close_w, 0);
    const [statRc, keys, fileInfo] = r.stat as [number, string[], Record<string, string>];
    assert.equal(statRc, 0);
    assert.deepEqual(keys, ['st_size', 'st_blocks', 'st_nlink', 'st_ifmt', 'st_mtime', 'st_birthtime']);
    assert.equal(fileInfo.st_size, '27');
    assert.equal(fileInfo.st_ifmt, 'S_IFREG');
    const [listRc, names] = r.list as [number, string[]];
    assert.equal(listRc, 0);
    assert.deepEqual(names.slice(0, 2), ['.', '..']);
    assert.deepEqual(names.slice(2).sort(), ['hello.txt', 'sub']);
    assert.deepEqual(r.read5, [0, 'hello']);
    assert.deepEqual(r.tell, [0, 5]);
    assert.equal(r.seek_end, 0);
    assert.deepEqual(r.read_eof, [0, 0], 'EOF: success with zero bytes');
    assert.equal(r.seek_set, 0);
    assert.deepEqual(r.read_rest, [0, 'from libimobiledevice']);
    assert.equal(r.lock_ex, 0);
    assert.equal(r.lock_sh_contended, 19, 'OP_WOULD_BLOCK');
    assert.equal(r.unlock, 0);
    assert.equal(r.lock_sh, 0);
    assert.deepEqual(r.close_r, [0, 0]);
    assert.deepEqual(r.big_write, [0, 3 * 1024 * 1024 + 11]);
    assert.deepEqual(r.big_read, [0, 3 * 1024 * 1024 + 11, true]);
    assert.equal(r.rename, 0);
    assert.equal(r.symlink, 0);
    assert.equal(await readlink(join(root, 'interop/link')), 'renamed.txt');
    const [linkRc, linkInfo] = r.stat_link as [number, Record<string, string>];
    assert.equal(linkRc, 0);
    assert.equal(linkInfo.st_ifmt, 'S_IFLNK');
    assert.equal(linkInfo.LinkTarget, 'renamed.txt');
    assert.equal(r.set_time, 0);
    assert.equal(r.truncate, 0);
    const [, after] = r.stat_after as [number, Record<string, string>];
    assert.equal(after.st_size, '5');
    assert.equal(after.st_mtime, '1523978415000000000');
    assert.equal(r.file_truncate, 0);
    assert.equal(await readFile(join(root, 'interop/renamed.txt'), 'utf8'), 'he');
    assert.equal(r.remove_nonempty, 33, 'LIMD turns the device status 1 into DIR_NOT_EMPTY');
    assert.equal(r.remove_missing, 8);
    assert.equal(r.stat_missing, 8);
    assert.equal(r.stat_escape, 8, '../../etc/passwd stays inside the root');
    assert.equal(r.remove_all, 0);
    assert.deepEqual(r.list_root, [0, ['.', '..', 'interop']]);
    await assert.rejects(stat(join(root, 'trash')), { code: 'ENOENT' });
  });
});
