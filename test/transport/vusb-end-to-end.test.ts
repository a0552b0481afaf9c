/**
 * The vusb transport between the real device-side mux (src/sim/device-mux.ts) and the real host
 * mux engine (src/mux/device-session.ts): what the daemon runs with `--vusb-dir`.
 */
import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { DeviceMux } from '../../src/sim/device-mux.js';
import { SimUsbDevice } from '../../src/sim/usb-device.js';
import { serveEcho, serveSource, encodeCount, sourcePattern } from '../../src/sim/bench-services.js';
import { DeviceSession } from '../../src/mux/device-session.js';
import { VusbSource } from '../../src/transport/vusb-source.js';
import type { DeviceLink } from '../../src/transport/device-link.js';

let dir: string;
const cleanups: Array<() => Promise<void> | void> = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mw-vusb-e2e-'));
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function attachedSession(speed: 'high' | 'super'): Promise<{ session: DeviceSession; device: SimUsbDevice; mux: DeviceMux }> {
  const bus = await mkdtemp(join(dir, 'bus-'));
  const mux = new DeviceMux();
  mux.listen(7, serveEcho);
  mux.listen(19, serveSource);
  const device = new SimUsbDevice({ busDir: bus, udid: '00008110-001A2B3C4D5E6F70', speed, mux });
  await device.plug();
  cleanups.push(() => device.unplug());
  const source = new VusbSource({ dir: bus });
  cleanups.push(() => source.stop());
  const link = await new Promise<DeviceLink>((resolve) => {
    source.once('attach', resolve);
    void source.start();
  });
  const session = new DeviceSession(link);
  cleanups.push(() => session.close());
  await session.ready;
  return { session, device, mux };
}

function readAll(stream: Duplex, bytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let got = 0;
    const onData = (c: Buffer): void => {
      parts.push(c);
      got += c.length;
      if (got >= bytes) {
        stream.off('data', onData);
        resolve(Buffer.concat(parts));
      }
    };
    stream.on('data', onData);
    stream.once('error', reject);
  });
}

for (const speed of ['high', 'super'] as const) {
  test(`a connection to the echo port carries 1 MiB both ways at ${speed} speed`, async () => {
    const { session } = await attachedSession(speed);
    const conn = await session.connect(7, { timeoutMs: 10000 });
    const payload = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 13 + 5) & 0xff;
    const echoed = readAll(conn, payload.length);
    conn.write(payload);
    assert.deepEqual(await echoed, payload);
    conn.destroy();
  });
}

test('the source service streams 4 MiB through IN transfers of 16384 bytes intact', async () => {
  const { session } = await attachedSession('high');
  const conn = await session.connect(19, { timeoutMs: 10000 });
  const n = 4 * 1024 * 1024;
  const got = readAll(conn, n);
  conn.write(encodeCount(n));
  const data = await got;
  assert.equal(data.length, n);
  assert.deepEqual(data, sourcePattern(0, n));
  conn.destroy();
});

test('unplugging the device ends the session and its connections', async () => {
  const { session, device } = await attachedSession('high');
  const conn = await session.connect(7, { timeoutMs: 10000 });
  const closed = new Promise<void>((resolve) => session.once('closed', () => resolve()));
  const connEnded = new Promise<void>((resolve) => conn.once('close', () => resolve()));
  conn.on('error', () => undefined);
  conn.resume();
  await device.unplug();
  await closed;
  await connEnded;
});
