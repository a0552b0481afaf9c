/**
 * The host's LockdownClient and the simulated lockdownd over the real mux stack: a SimulatedDevice
 * (DeviceMux, lockdownd, AFC) on an in-process link, driven by the host mux engine's DeviceSession.
 * TLS records, the StopSession unwrapping and the service port then travel as mux packets with
 * windows and ACKs, as they do to a phone.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect as tlsConnect } from 'node:tls';
import { SimulatedDevice } from '../../src/sim/simulator.js';
import { DeviceSession } from '../../src/mux/device-session.js';
import { LockdownClient } from '../../src/lockdown/lockdown-client.js';
import { hostTlsOptions } from '../../src/lockdown/tls-policy.js';
import { parsePairRecord } from '../../src/lockdown/pair-record.js';
import { encodeAfcPacket, AfcOp, AFC_HEADER_SIZE } from '../../src/protocol/afc.js';
import { MemoryStore, SYSTEM_BUID, keyPool } from './harness.js';

let sim: SimulatedDevice;
let session: DeviceSession;
const store = new MemoryStore();

before(async () => {
  sim = await SimulatedDevice.create({ enableServiceSSL: true, keyPool, benchPorts: false });
  session = new DeviceSession(sim.inProcessLink());
  await session.ready;
});

after(async () => {
  await session.close();
  await sim.close();
});

async function lockdown(): Promise<LockdownClient> {
  return LockdownClient.open(await session.connect(62078, { timeoutMs: 5000 }), { label: 'over-mux' });
}

test('pairs, runs a TLS session, stops it and carries on in plaintext over the mux', async () => {
  const c = await lockdown();
  try {
    assert.equal(await c.queryType(), 'com.apple.mobile.lockdown');
    const record = await c.pair(store);
    await c.startSession(record, SYSTEM_BUID);
    assert.equal(c.tls?.protocol, 'TLSv1.2');
    assert.equal(await c.getValue({ key: 'UniqueDeviceID' }), sim.identity.udid);
    await c.stopSession();
    assert.equal(await c.getValue({ key: 'ProductVersion' }), sim.identity.productVersion);
  } finally {
    c.close();
  }
});

test('starts AFC with EnableServiceSSL and reads a directory through TLS on the service port', async () => {
  const record = store.records.get(sim.identity.udid)!;
  const c = await lockdown();
  await c.startSession(record, SYSTEM_BUID);
  const svc = await c.startService('com.apple.afc', { escrowBag: record.EscrowBag as Buffer });
  assert.equal(svc.enableServiceSSL, true);
  await c.stopSession();
  c.close(); // the port must outlive the lockdown connection
  const raw = await session.connect(svc.port, { timeoutMs: 5000 });
  const tls = tlsConnect({ ...hostTlsOptions(parsePairRecord(record)), socket: raw });
  await new Promise<void>((resolve, reject) => {
    tls.once('secureConnect', resolve);
    tls.once('error', reject);
  });
  const reply = new Promise<Buffer>((resolve) => {
    let got = Buffer.alloc(0);
    tls.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length >= AFC_HEADER_SIZE && got.length >= Number(got.readBigUInt64LE(8))) resolve(got);
    });
  });
  tls.write(encodeAfcPacket({ packetNum: 0, operation: AfcOp.READ_DIR, headerPayload: Buffer.from('/\0'), payload: Buffer.alloc(0) }));
  const packet = await reply;
  assert.equal(packet.subarray(0, 8).toString(), 'CFA6LPAA');
  const names = packet.subarray(Number(packet.readBigUInt64LE(16))).toString().split('\0');
  assert.ok(names.includes('.') && names.includes('..'), names.join(','));
  tls.destroy();
});
