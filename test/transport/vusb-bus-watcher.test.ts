import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sameSocket, VusbBusWatcher, type BusSocket } from '../../src/transport/vusb-bus-watcher.js';
import { log } from '../../src/log.js';

function listen(path: string): Promise<Server> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(path, () => resolve(server));
  });
}

test('reports the sockets of the bus, ignores other files, and sees a socket replaced at the same path', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'muxwire-bus-'));
  const scans: Map<string, BusSocket>[] = [];
  let wake: (() => void) | undefined;
  const watcher = new VusbBusWatcher({
    dir, pollIntervalMs: 0, log,
    onScan: (present) => {
      scans.push(present);
      wake?.();
    },
  });
  const nextScan = (): Promise<Map<string, BusSocket>> =>
    new Promise((resolve) => {
      wake = () => resolve(scans[scans.length - 1]!);
      watcher.rescan();
    });
  try {
    await writeFile(join(dir, 'notes.vusb'), 'not a socket');
    await writeFile(join(dir, 'other.sock'), '');
    const a = await listen(join(dir, 'a.vusb'));
    await watcher.start();
    const first = scans[scans.length - 1]!;
    assert.deepEqual([...first.keys()], ['a.vusb']);
    assert.equal(first.get('a.vusb')!.path, join(dir, 'a.vusb'));

    await new Promise<void>((r) => a.close(() => r()));
    const a2 = await listen(join(dir, 'a.vusb'));
    const second = await nextScan();
    assert.ok(second.has('a.vusb'));
    // A new socket file at the same path is a different device, even if the inode came back.
    assert.equal(sameSocket(first.get('a.vusb')!, second.get('a.vusb')!), false);

    await new Promise<void>((r) => a2.close(() => r()));
    assert.equal((await nextScan()).size, 0);
  } finally {
    await watcher.stop();
    await rm(dir, { recursive: true, force: true });
  }
  assert.equal(watcher.running, false);
});
