/**
 * The AFC client through the whole stack, as a tool reaches a device: the host mux engine over an
 * in-process link to a simulated device, lockdownd (pair, TLS session, StartService com.apple.afc)
 * and the device's AFC server; once in the clear and once with EnableServiceSSL (the AFC stream is
 * then a TLS socket: the client only sees a Duplex).
 */
import { test, describe, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';

import { openLockdown, startService } from '../../src/client/device-services.js';
import type { DeviceMuxer } from '../../src/client/device-services.js';
import type { DeviceInfo } from '../../src/client/device-info.js';
import { PairStore } from '../../src/daemon/pair-store.js';
import { DeviceSession } from '../../src/mux/device-session.js';
import { AfcClient } from '../../src/services/afc/index.js';
import { SimulatedDevice } from '../../src/sim/simulator.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A simulated device reached in-process, and an AFC client on its com.apple.afc service. */
async function afcOnSimulatedDevice(enableServiceSSL: boolean): Promise<{ afc: AfcClient; device: SimulatedDevice; stream: Duplex }> {
  const dir = await mkdtemp(join(tmpdir(), 'muxwire-afc-e2e-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const device = await SimulatedDevice.create({ enableServiceSSL, benchPorts: false, productType: 'iPhone12,8' });
  cleanups.push(() => device.close());
  const session = new DeviceSession(device.inProcessLink(), { connectTimeoutMs: 10_000 });
  cleanups.push(() => session.close());
  await session.ready;
  const store = new PairStore(join(dir, 'pairs'));
  const info: DeviceInfo = {
    deviceId: 1,
    udid: device.udid,
    productId: 0x12a8,
    locationId: 0,
    connectionType: 'USB',
    properties: {},
  };
  const muxer: DeviceMuxer = {
    findDevice: async () => info,
    connect: async (_device, port) => session.connect(port),
    readBUID: () => store.readBUID(),
    readPairRecord: (udid) => store.readPairRecord(udid),
    savePairRecord: (udid, record, id) => store.savePairRecord(udid, record, id),
  };
  const lockdown = await openLockdown(muxer, info, { pairIfNeeded: true });
  cleanups.push(() => lockdown.lockdown.close());
  const stream = await startService(muxer, lockdown, 'com.apple.afc');
  const afc = new AfcClient(stream);
  cleanups.push(() => afc.disconnect());
  return { afc, device, stream };
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('AFC through the simulated device', () => {
  for (const ssl of [false, true]) {
    test(`moves 16 MiB both ways intact ${ssl ? 'inside service TLS' : 'in the clear'}`, { timeout: 120_000 }, async () => {
      const { afc, device } = await afcOnSimulatedDevice(ssl);
      const info = await afc.deviceInfo();
      assert.equal(info.model, 'iPhone12,8');
      await afc.mkdir('/Downloads/e2e');
      const data = randomBytes(16 * 1024 * 1024 + 7);
      const dir = await mkdtemp(join(tmpdir(), 'muxwire-afc-e2e-local-'));
      cleanups.push(() => rm(dir, { recursive: true, force: true }));
      await writeFile(join(dir, 'up.bin'), data);
      await afc.pushFile(join(dir, 'up.bin'), '/Downloads/e2e/data.bin');
      assert.equal(sha256(await readFile(join(device.afcRoot, 'Downloads/e2e/data.bin'))), sha256(data));
      await afc.pullFile('/Downloads/e2e/data.bin', join(dir, 'down.bin'));
      assert.equal(sha256(await readFile(join(dir, 'down.bin'))), sha256(data));
      assert.deepEqual(await afc.list('/Downloads/e2e'), ['data.bin']);
      await afc.rm('/Downloads', { recursive: true });
      assert.deepEqual(await afc.list('/'), []);
    });
  }
});
