/**
 * Interop: appium-ios-device's AFC client (a real peer this project did not write) against the
 * simulated device's AFC server over a UNIX socket. APPIUM reads STATUS codes and FILE_OPEN_RES
 * handles from inside `this_length` and DATA from after it, and sends paths without a NUL, so this
 * proves the reply layout of lockdown-afc.md §9.6 and the argument rules of §9.2 against real code.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Readable as ReadableStream } from 'node:stream';

import { requireCondition } from '../helpers/peers.js';
import { startAfcServer } from '../services/afc-harness.js';
import type { AfcServerFixture } from '../services/afc-harness.js';

/** The part of appium-ios-device's AfcService this test uses. */
interface AppiumAfcService {
  listDirectory(path: string): Promise<string[]>;
  createDirectory(path: string): Promise<void>;
  deleteDirectory(path: string): Promise<void>;
  getFileInfo(path: string): Promise<{ size: number; isDirectory(): boolean; isFile(): boolean; mtimeMs: number }>;
  openFile(path: string, mode: number): Promise<number>;
  readFile(handle: number, length: number): Promise<Buffer>;
  writeFile(handle: number, data: Buffer): Promise<void>;
  closeFileHandle(handle: number): Promise<void>;
  createReadStream(path: string, opts: object): Promise<Readable>;
  createWriteStream(path: string, opts: object): Promise<Writable>;
  walkDir(dir: string, recursive: boolean, onPath: (path: string, isDir: boolean) => void | Promise<void>): Promise<void>;
  close(): void;
}

type AfcServiceClass = new (socket: unknown) => AppiumAfcService;

let AfcService: AfcServiceClass | undefined;
let loadError = '';
try {
  const mod = (await import('appium-ios-device/build/lib/afc/index.js')) as { AfcService: AfcServiceClass };
  AfcService = mod.AfcService;
} catch (err) {
  loadError = (err as Error).message;
}

describe('appium-ios-device AfcService against the simulated AFC server', () => {
  let fx: AfcServerFixture;
  let appium: AppiumAfcService;

  before(async () => {
    fx = await startAfcServer();
    if (AfcService) appium = new AfcService(fx.sockets.client);
  });
  after(async () => {
    appium?.close();
    await fx.close();
  });

  test('lists a directory', async (t) => {
    if (!requireCondition(t, AfcService !== undefined, `appium-ios-device not loadable: ${loadError}`)) return;
    await mkdir(join(fx.sandbox.root, 'DCIM'));
    await writeFile(join(fx.sandbox.root, 'DCIM', 'IMG_0001.JPG'), 'jpeg');
    const names = await appium.listDirectory('/DCIM');
    assert.deepEqual(names, ['.', '..', 'IMG_0001.JPG']);
  });

  test('creates a directory and reads file information', async (t) => {
    if (!requireCondition(t, AfcService !== undefined, `appium-ios-device not loadable: ${loadError}`)) return;
    await appium.createDirectory('/Downloads/deep');
    assert.ok((await stat(join(fx.sandbox.root, 'Downloads/deep'))).isDirectory());
    const info = await appium.getFileInfo('/Downloads');
    assert.ok(info.isDirectory());
    await writeFile(join(fx.sandbox.root, 'Downloads/a.txt'), 'abc');
    const file = await appium.getFileInfo('/Downloads/a.txt');
    assert.ok(file.isFile());
    assert.equal(file.size, 3);
    assert.ok(Math.abs(file.mtimeMs - Date.now()) < 3_600_000, 'mtime arrived in nanoseconds');
  });

  test('writes and reads a file with handles', async (t) => {
    if (!requireCondition(t, AfcService !== undefined, `appium-ios-device not loadable: ${loadError}`)) return;
    const w = await appium.openFile('/hello.txt', 3);
    assert.ok(w > 0);
    await appium.writeFile(w, Buffer.from('hello from appium'));
    await appium.closeFileHandle(w);
    assert.equal(await readFile(join(fx.sandbox.root, 'hello.txt'), 'utf8'), 'hello from appium');
    const r = await appium.openFile('/hello.txt', 1);
    assert.equal((await appium.readFile(r, 5)).toString(), 'hello');
    assert.equal((await appium.readFile(r, 1000)).toString(), ' from appium');
    assert.equal((await appium.readFile(r, 1000)).length, 0, 'EOF as zero-byte DATA');
    await appium.closeFileHandle(r);
  });

  test('streams a 3 MiB file up and back down', async (t) => {
    if (!requireCondition(t, AfcService !== undefined, `appium-ios-device not loadable: ${loadError}`)) return;
    const data = randomBytes(3 * 1024 * 1024 + 123);
    const up = await appium.createWriteStream('/stream.bin', { autoDestroy: true });
    const finished = new Promise<void>((resolve, reject) => {
      up.once('close', resolve);
      up.once('error', reject);
    });
    await pipeline(ReadableStream.from([data.subarray(0, 1_000_000), data.subarray(1_000_000)]), up);
    await finished;
    assert.deepEqual(await readFile(join(fx.sandbox.root, 'stream.bin')), data);
    const down = await appium.createReadStream('/stream.bin', { autoDestroy: true });
    const chunks: Buffer[] = [];
    for await (const chunk of down) chunks.push(chunk as Buffer);
    assert.deepEqual(Buffer.concat(chunks), data);
  });

  test('walks a tree and deletes it recursively', async (t) => {
    if (!requireCondition(t, AfcService !== undefined, `appium-ios-device not loadable: ${loadError}`)) return;
    await mkdir(join(fx.sandbox.root, 'tree/a/b'), { recursive: true });
    await writeFile(join(fx.sandbox.root, 'tree/a/b/f'), '1');
    const seen: string[] = [];
    await appium.walkDir('/tree', true, (p, isDir) => {
      seen.push(`${p}${isDir ? '/' : ''}`);
    });
    assert.deepEqual(seen, ['/tree/a/', '/tree/a/b/', '/tree/a/b/f']);
    await appium.deleteDirectory('/tree');
    await assert.rejects(stat(join(fx.sandbox.root, 'tree')), { code: 'ENOENT' });
  });

  test('sees device errors as failed promises', async (t) => {
    if (!requireCondition(t, AfcService !== undefined, `appium-ios-device not loadable: ${loadError}`)) return;
    await assert.rejects(appium.openFile('/missing', 1), /OBJECT_NOT_FOUND/);
    await assert.rejects(appium.listDirectory('/missing'), /OBJECT_NOT_FOUND/);
  });
});
