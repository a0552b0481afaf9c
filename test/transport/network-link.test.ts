/**
 * Network devices end to end in this process, without multicast: a simulated device on USB (an
 * in-process link) and on the network at a loopback address of its own (127.x.y.z, TCP only, no
 * mDNS), a daemon whose network source is given that address (`--network-device`), and our client
 * through the daemon's socket. The mDNS half runs in a network namespace of its own
 * (test/interop/network-libimobiledevice.test.ts).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import type { DeviceEntry } from '../../src/daemon/device-registry.js';
import { createNetworkSource } from '../../src/daemon/network-devices.js';
import { SimulatedDevice } from '../../src/sim/simulator.js';
import { UsbmuxClient } from '../../src/client/usbmux-client.js';
import { openLockdown, startService } from '../../src/client/device-services.js';
import { AfcClient } from '../../src/services/afc/index.js';
import { decodeNetworkAddress } from '../../src/protocol/network-address.js';
import { isMuxwireError } from '../../src/errors.js';
import type { NetworkSource } from '../../src/transport/network-source.js';

let dir: string;
let daemon: MuxDaemon;
let sim: SimulatedDevice;
let client: UsbmuxClient;
let source: NetworkSource;
/** A loopback address no other test uses, so the device's TCP ports (62078, 49152…) are its own. */
const address = `127.${randomInt(1, 255)}.${randomInt(1, 255)}.${randomInt(2, 255)}`;

function waitFor(event: 'attached' | 'detached', type: 'USB' | 'Network'): Promise<DeviceEntry> {
  return new Promise((resolve) => {
    const on = (entry: DeviceEntry): void => {
      if (entry.properties.connectionType !== type) return;
      daemon.registry.off(event, on);
      resolve(entry);
    };
    daemon.registry.on(event, on);
  });
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-network-link-'));
  const socketPath = join(dir, 'usbmuxd');
  daemon = new MuxDaemon({ socketPath, pairDir: join(dir, 'lockdown'), preflight: false });
  await daemon.start();
  sim = await SimulatedDevice.create({ iosVersion: '16.4.1', name: 'Network Phone' });
  await sim.startNetwork(address, { advertise: false });
  source = createNetworkSource(daemon.pairStore, { mdns: false, hosts: [address] });
  await daemon.addSource(source);
  const usb = waitFor('attached', 'USB');
  daemon.addLink(sim.inProcessLink());
  await usb;
  client = new UsbmuxClient({ address: `UNIX:${socketPath}`, timeoutMs: 20_000 });
});

after(async () => {
  await daemon?.close();
  await sim?.close();
  await rm(dir, { recursive: true, force: true });
});

test('a device on the network is not listed until it has a pair record, then it is, beside its USB entry', async () => {
  // The source has probed and asked lockdownd by now (it starts at once); no record, no entry.
  assert.deepEqual(
    (await client.listDevices()).map((d) => d.connectionType),
    ['USB'],
  );
  const network = waitFor('attached', 'Network');
  const usb = await client.findDevice(sim.udid, { connection: 'USB' });
  const handle = await openLockdown(client, usb, { pairIfNeeded: true });
  handle.lockdown.close();
  await network;
  const devices = await client.listDevices();
  assert.deepEqual(devices.map((d) => [d.udid, d.connectionType]), [
    [sim.udid, 'USB'],
    [sim.udid, 'Network'],
  ]);
  const entry = devices.find((d) => d.connectionType === 'Network')!;
  assert.equal(entry.networkAddress, address);
  // Apple's record shape: NetworkAddress a BSD sockaddr_in padded to 128 bytes, the mDNS name.
  const raw = entry.properties.NetworkAddress as Buffer;
  assert.equal(raw.length, 128);
  assert.deepEqual([raw[0], raw[1]], [0x10, 0x02]);
  assert.deepEqual(decodeNetworkAddress(raw), { address, family: 4, scopeId: 0 });
  assert.equal(entry.properties.EscapedFullServiceName, sim.network!.serviceName);
  assert.equal(typeof entry.properties.InterfaceIndex, 'number');
  assert.equal(entry.properties.ProductID, undefined);
});

test('lockdown in a TLS session and AFC push and pull run over the network entry', async () => {
  const device = await client.findDevice(sim.udid, { connection: 'Network' });
  const handle = await openLockdown(client, device);
  try {
    assert.ok(handle.lockdown.secure, 'the session runs in TLS');
    assert.equal(await handle.lockdown.getValue({ key: 'ProductVersion' }), '16.4.1');
    const afc = new AfcClient(await startService(client, handle, 'com.apple.afc'));
    const data = randomBytes(8 * 1024 * 1024 + 12345);
    const local = join(dir, 'up.bin');
    await writeFile(local, data);
    await afc.pushFile(local, '/network.bin');
    await afc.pullFile('/network.bin', join(dir, 'down.bin'));
    const back = await readFile(join(dir, 'down.bin'));
    assert.equal(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(data).digest('hex'));
    // The bytes went through TCP to the device's address, not through its USB side.
    assert.deepEqual(await readFile(join(sim.afcRoot, 'network.bin')), data);
    afc.disconnect();
  } finally {
    handle.lockdown.close();
  }
});

test('Connect to a port nothing listens on at the address is refused, and the socket stays usable', async () => {
  const device = await client.findDevice(sim.udid, { connection: 'Network' });
  await assert.rejects(client.connect(device, 7), (err: unknown) => isMuxwireError(err, 'MUXWIRE_ERR_CONN_REFUSED'));
  const lockdown = await client.connect(device, 62078);
  lockdown.destroy();
});

test('a device that stops answering on the network is detached by the probe; its USB entry stays', async () => {
  const gone = waitFor('detached', 'Network');
  // No goodbye (it was never advertised): only the probe can notice.
  await sim.stopNetwork();
  const entry = await gone;
  assert.equal(entry.properties.serialNumber, sim.udid);
  assert.deepEqual((await client.listDevices()).map((d) => d.connectionType), ['USB']);
  assert.equal(source.links().length, 0);
  // Back on the network: the probe of a device given by address attaches it again.
  const back = waitFor('attached', 'Network');
  await sim.startNetwork(address, { advertise: false });
  await back;
  assert.deepEqual((await client.listDevices()).map((d) => d.connectionType).sort(), ['Network', 'USB']);
});

test('unplugging the USB side leaves the network entry', async () => {
  const gone = waitFor('detached', 'USB');
  await sim.unplug();
  await gone;
  const devices = await client.listDevices();
  assert.deepEqual(devices.map((d) => d.connectionType), ['Network']);
  // With only a network entry, a device named by UDID is found without -n.
  assert.equal((await client.findDevice(sim.udid)).connectionType, 'Network');
  await assert.rejects(client.findDevice(sim.udid, { connection: 'USB' }), (err: unknown) => isMuxwireError(err, 'MUXWIRE_ERR_NO_DEVICE'));
});
