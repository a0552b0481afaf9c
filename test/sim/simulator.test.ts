import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { after, afterEach, describe, test } from 'node:test';
import { isMuxwireError } from '../../src/errors.js';
import { DeviceSession } from '../../src/mux/device-session.js';
import { PlistFrameDecoder, encodePlistFrame } from '../../src/protocol/plist-frame.js';
import { encodeCount, findPatternMismatch } from '../../src/sim/bench-services.js';
import { SimulatedDevice } from '../../src/sim/simulator.js';
import { IN_TRANSFER_SIZE } from '../../src/sim/in-process-link.js';
import { VusbSource } from '../../src/transport/vusb-source.js';
import type { DeviceLink } from '../../src/transport/device-link.js';

const devices: SimulatedDevice[] = [];
const sessions: DeviceSession[] = [];
const dirs: string[] = [];

async function device(opts: Parameters<typeof SimulatedDevice.create>[0] = {}): Promise<SimulatedDevice> {
  const d = await SimulatedDevice.create(opts);
  devices.push(d);
  return d;
}

async function session(d: SimulatedDevice): Promise<DeviceSession> {
  const s = new DeviceSession(d.inProcessLink(), { connectTimeoutMs: 10_000 });
  sessions.push(s);
  await s.ready;
  return s;
}

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'muxwire-simtest-'));
  dirs.push(dir);
  return dir;
}

afterEach(async () => {
  for (const s of sessions.splice(0)) await s.close();
  for (const d of devices.splice(0)) await d.close();
});
after(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

/** Reads exactly `n` bytes. */
function readBytes(stream: Duplex, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let have = 0;
    const onData = (c: Buffer): void => {
      chunks.push(c);
      have += c.length;
      if (have >= n) {
        stream.off('data', onData);
        stream.off('end', onEnd);
        stream.pause();
        resolve(Buffer.concat(chunks).subarray(0, n));
      }
    };
    const onEnd = (): void => reject(new Error(`ended after ${have} of ${n} bytes`));
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.resume();
  });
}

describe('SimulatedDevice', () => {
  test('is cheap to create: 32 devices in one process, no device key made yet', async () => {
    const made = await Promise.all(Array.from({ length: 32 }, () => device({ benchPorts: false })));
    assert.equal(new Set(made.map((d) => d.udid)).size, 32);
    assert.ok(made.every((d) => !d.identity.hasKey), 'no RSA key generated on creation');
    assert.ok(made.every((d) => d.mux.listeningPorts.includes(62078)));
  });

  test('takes its identity from the options and listens on lockdownd and the bench ports', async () => {
    const d = await device({ udid: '00008120-001A2B3C4D5E6F70', name: 'Test Phone', productType: 'iPhone15,2', iosVersion: '17.5' });
    assert.equal(d.udid, '00008120-001A2B3C4D5E6F70');
    assert.equal(d.identity.deviceName, 'Test Phone');
    assert.equal(d.identity.productVersion, '17.5');
    assert.equal(d.productId, 0x12a8);
    assert.deepEqual(d.mux.listeningPorts, [7, 9, 13, 19, 62078]);
    assert.deepEqual(d.benchPorts, { echo: 7, sink: 9, source: 19, reset: 13 });
  });

  test('serves the host mux engine over an in-process link: echo, sink, source and refusal', async () => {
    const d = await device();
    const s = await session(d);
    assert.equal(s.link.info.serialNumber, d.udid);
    assert.equal(s.link.info.speed, 480_000_000);

    const echo = await s.connect(7);
    const message = Buffer.from('hello, simulated iPhone');
    echo.write(message);
    assert.deepEqual(await readBytes(echo, message.length), message);

    const sink = await s.connect(9);
    const n = 1_000_000;
    sink.write(encodeCount(n));
    for (let sent = 0; sent < n; sent += 65536) sink.write(Buffer.alloc(Math.min(65536, n - sent), 0x5a));
    assert.equal((await readBytes(sink, 8)).readBigUInt64BE(0), BigInt(n));

    const source = await s.connect(19);
    const m = 3_000_000;
    source.write(encodeCount(m));
    const body = await readBytes(source, m);
    assert.equal(findPatternMismatch(body, 0), -1);

    await assert.rejects(s.connect(4242), (e) => isMuxwireError(e, 'MUXWIRE_ERR_CONN_REFUSED'));
  });

  test('answers lockdownd QueryType through the assembled device', async () => {
    const d = await device();
    const s = await session(d);
    const conn = await s.connect(62078);
    conn.write(encodePlistFrame({ Request: 'QueryType', Label: 'simulator.test' }));
    const decoder = new PlistFrameDecoder();
    const reply = await new Promise<unknown>((resolve) => {
      conn.on('data', (c: Buffer) => {
        decoder.push(c);
        const frame = decoder.next();
        if (frame) resolve(frame.value);
      });
    });
    assert.equal((reply as { Type?: unknown }).Type, 'com.apple.mobile.lockdown');
  });

  test('cuts device packets into IN transfers of 16384 bytes on the in-process link', async () => {
    const d = await device();
    const link = d.inProcessLink();
    const transfers: number[] = [];
    link.start({ onData: (chunk) => transfers.push(chunk.length), onClose: () => undefined });
    d.mux.sendControl(7, 'not yet'); // no VERSION yet: nothing goes out
    const version = Buffer.from('000000000000001400000002000000000000000' + '0', 'hex');
    link.sendPacket(version);
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(transfers, [20]);
    d.mux.sendControl(7, 'x'.repeat(40_000));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(transfers.slice(1), [IN_TRANSFER_SIZE, IN_TRANSFER_SIZE, 40_000 + 16 + 1 - 2 * IN_TRANSFER_SIZE]);
    link.close();
  });

  test('holds one host at a time: a second link or a plug while linked is MUXWIRE_ERR_BUSY', async () => {
    const d = await device();
    const link = d.inProcessLink();
    assert.throws(() => d.inProcessLink(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BUSY'));
    await assert.rejects(d.plug(await tempDir()), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BUSY'));
    link.close();
    // A closed link refuses packets through their callback, never by throwing.
    const refused = await new Promise<Error | undefined>((resolve) => link.sendPacket(Buffer.alloc(20), resolve));
    assert.ok(isMuxwireError(refused, 'MUXWIRE_ERR_NO_DEVICE'));
    const again = d.inProcessLink();
    again.close();
  });

  test('unplugging ends the host connections with MUXWIRE_ERR_NO_DEVICE on the link', async () => {
    const d = await device();
    const link = d.inProcessLink();
    const s = new DeviceSession(link);
    sessions.push(s);
    await s.ready;
    const echo = await s.connect(7);
    echo.on('error', () => undefined);
    const closed = new Promise<void>((resolve) => s.once('closed', () => resolve()));
    await d.unplug();
    await closed;
    assert.equal(d.mux.connectionCount, 0);
    // The device is free for the next host.
    const next = await session(d);
    assert.ok((await next.connect(7)) !== undefined);
  });

  test('plugs into a vusb bus directory as <udid>.vusb and unplugs by removing it', async () => {
    const bus = await tempDir();
    const d = await device();
    const path = await d.plug(bus);
    assert.equal(path, join(bus, `${d.udid}.vusb`));
    assert.equal(d.socketPath, path);
    assert.ok(existsSync(path));
    assert.throws(() => d.inProcessLink(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BUSY'));
    await d.unplug();
    assert.equal(existsSync(path), false);
    assert.equal(d.socketPath, undefined);
  });

  test('serves the host mux engine over the vusb wire: descriptors, VERSION, echo and source', async () => {
    const bus = await tempDir();
    const d = await device({ speed: 'super' });
    await d.plug(bus);
    const source = new VusbSource({ dir: bus });
    try {
      const attached = new Promise<DeviceLink>((resolve) => source.once('attach', resolve));
      await source.start();
      const link = await attached;
      assert.equal(link.info.serialNumber, d.udid);
      assert.equal(link.info.productId, 0x12a8);
      const s = new DeviceSession(link, { connectTimeoutMs: 10_000 });
      sessions.push(s);
      await s.ready;
      const echo = await s.connect(7);
      echo.write('over the wire');
      assert.equal((await readBytes(echo, 13)).toString(), 'over the wire');
      const src = await s.connect(19);
      src.write(encodeCount(2_000_000));
      assert.equal(findPatternMismatch(await readBytes(src, 2_000_000), 0), -1);
      const gone = new Promise<void>((resolve) => s.once('closed', () => resolve()));
      await d.unplug();
      await gone;
    } finally {
      await source.stop();
    }
  });

  test('keeps its identity in a state directory and serves AFC from <stateDir>/Media', async () => {
    const state = await tempDir();
    const first = await device({ stateDir: state });
    assert.equal(first.afcRoot, join(state, 'Media'));
    await writeFile(join(first.afcRoot, 'hello.txt'), 'hi');
    const udid = first.udid;
    await first.close();
    const second = await device({ stateDir: state });
    assert.equal(second.udid, udid);
    assert.equal(await readFile(join(second.afcRoot, 'hello.txt'), 'utf8'), 'hi');
  });

  test('removes the temporary media directory it made when it closes', async () => {
    const d = await device();
    assert.ok(existsSync(d.afcRoot));
    await d.close();
    assert.equal(existsSync(d.afcRoot), false);
    assert.throws(() => d.inProcessLink(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_CLOSED'));
  });
});
