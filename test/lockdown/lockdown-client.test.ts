/**
 * The host's LockdownClient against the simulated lockdownd, over an in-memory connection: pairing
 * in every trust mode, sessions with real TLS (root or host client certificate), StopSession back
 * to plaintext, StartService ports, and the failure replies the client must turn into errors.
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { connect as tlsConnect } from 'node:tls';
import { Duplex } from 'node:stream';
import { MuxwireError } from '../../src/errors.js';
import { setLogLevel, setLogSink } from '../../src/log.js';
import { LockdownClient } from '../../src/lockdown/lockdown-client.js';
import { buildCertificate, generateRsaKeyPair, readPrivateKey, readPublicKey } from '../../src/lockdown/certificates.js';
import { hostTlsOptions } from '../../src/lockdown/tls-policy.js';
import { parsePairRecord, pairRecordForRequest } from '../../src/lockdown/pair-record.js';
import { encodePlistFrame } from '../../src/protocol/plist-frame.js';
import { startDevice, SYSTEM_BUID, type Harness } from './harness.js';
import { duplexPair } from './memory-mux.js';
import { RawPeer } from './raw-peer.js';

const harnesses: Harness[] = [];
afterEach(() => {
  for (const h of harnesses.splice(0)) h.close();
});

async function device(opts: Parameters<typeof startDevice>[0] = {}): Promise<Harness> {
  const h = await startDevice(opts);
  harnesses.push(h);
  return h;
}

function lockdownDetail(err: unknown): unknown {
  assert.ok(err instanceof MuxwireError, `not a MuxwireError: ${String(err)}`);
  return err.detail;
}

test('pairs in accept mode and saves a full record with EscrowBag and WiFiMACAddress', async () => {
  const h = await device({ trust: 'accept' });
  const c = await h.open();
  const record = await c.pair(h.store, { deviceId: 7 });
  assert.deepEqual(h.store.saves, [{ udid: h.identity.udid, deviceId: 7 }]);
  assert.ok(Buffer.isBuffer(record.EscrowBag) && record.EscrowBag.length > 0);
  assert.equal(record.WiFiMACAddress, h.identity.wifiAddress);
  assert.equal(record.SystemBUID, SYSTEM_BUID);
  assert.match(String(record.HostID), /^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$/);
  for (const k of ['DeviceCertificate', 'HostCertificate', 'HostPrivateKey', 'RootCertificate', 'RootPrivateKey']) {
    assert.ok(Buffer.isBuffer(record[k]), `${k} is data`);
  }
  assert.ok(h.lockdownd.pairing.get(String(record.HostID)), 'the device knows the host');
});

test('reports UserDeniedPairing in deny mode', async () => {
  const h = await device({ trust: 'deny' });
  const c = await h.open();
  const err = await c.pair(h.store).catch((e: unknown) => e);
  assert.equal(lockdownDetail(err), 'UserDeniedPairing');
  assert.equal((err as MuxwireError).code, 'MUXWIRE_ERR_LOCKDOWN');
  assert.match((err as Error).message, /UserDeniedPairing/);
  assert.equal(h.store.records.size, 0);
});

test('reports PasswordProtected in passcode mode', async () => {
  const h = await device({ trust: 'passcode' });
  const c = await h.open();
  assert.equal(lockdownDetail(await c.pair(h.store).catch((e: unknown) => e)), 'PasswordProtected');
});

test('waits out PairingDialogResponsePending in delay mode, telling the caller it waits', async () => {
  const h = await device({ trust: 'delay:250' });
  const c = await h.open();
  const waits: number[] = [];
  const record = await c.pair(h.store, { retryMs: 100, timeoutMs: 10_000, onWaiting: (ms) => waits.push(ms) });
  assert.ok(waits.length >= 1, 'onWaiting was called');
  assert.ok(h.lockdownd.pairing.get(String(record.HostID)));
});

test('gives up with MUXWIRE_ERR_TIMEOUT when the Trust dialog outlasts timeoutMs', async () => {
  const h = await device({ trust: 'delay:60000' });
  const c = await h.open();
  const err = await c.pair(h.store, { retryMs: 50, timeoutMs: 200 }).catch((e: unknown) => e);
  assert.ok(err instanceof MuxwireError);
  assert.equal(err.code, 'MUXWIRE_ERR_TIMEOUT');
  assert.equal(err.detail, 'PairingDialogResponsePending');
});

test('refuses a forged record whose DeviceCertificate holds another key with InvalidPairRecord', async () => {
  const h = await device();
  const genuine = await h.pair();
  const other = await generateRsaKeyPair();
  const root = parsePairRecord(genuine);
  const forgedDeviceCert = buildCertificate({
    subjectKey: readPublicKey(other.publicKeyPem),
    signer: readPrivateKey(root.rootPrivateKey!),
    extensions: [{ name: 'basicConstraints', cA: false, critical: true }],
  });
  const c = await h.open();
  const forged = { ...pairRecordForRequest(genuine), HostID: 'F0F0F0F0-0000-4000-8000-000000000001', DeviceCertificate: Buffer.from(forgedDeviceCert) };
  const err = await c.request('Pair', { PairRecord: forged, ProtocolVersion: '2' }).catch((e: unknown) => e);
  assert.equal(lockdownDetail(err), 'InvalidPairRecord');
  assert.equal(h.lockdownd.pairing.get('F0F0F0F0-0000-4000-8000-000000000001'), undefined);
});

test('refuses a record whose HostCertificate is not signed by its RootCertificate with InvalidPairRecord', async () => {
  const h = await device();
  const a = await h.pair();
  const b = await h.pair();
  const c = await h.open();
  const mixed = { ...pairRecordForRequest(a), HostID: 'F0F0F0F0-0000-4000-8000-000000000002', HostCertificate: b.HostCertificate };
  assert.equal(lockdownDetail(await c.request('Pair', { PairRecord: mixed }).catch((e: unknown) => e)), 'InvalidPairRecord');
});

test('refuses StartSession for an unknown HostID with InvalidHostID', async () => {
  const h = await device();
  const record = await h.pair();
  const c = await h.open();
  const err = await c.startSession({ ...record, HostID: '00000000-0000-4000-8000-000000000000' }, SYSTEM_BUID).catch((e: unknown) => e);
  assert.equal(lockdownDetail(err), 'InvalidHostID');
  assert.equal(c.secure, false);
});

for (const certificate of ['host', 'root'] as const) {
  test(`runs a TLS session presenting the ${certificate} certificate, TLS 1.2 at most`, async () => {
    const h = await device();
    const record = await h.pair();
    const c = await h.open();
    const session = await c.startSession(record, SYSTEM_BUID, { certificate });
    assert.equal(session.enableSessionSSL, true);
    assert.match(session.sessionId, /^[0-9A-F-]{36}$/);
    assert.equal(c.secure, true);
    // The client offers up to TLS 1.3; the device caps at 1.2 as real lockdownd does (§5.3).
    assert.equal(c.tls?.protocol, 'TLSv1.2');
    // A session-only key proves the request went through the session.
    assert.equal(await c.getValue({ key: 'TimeZone' }), 'Europe/Berlin');
    await c.stopSession();
  });
}

test('completes a TLS 1.0 RSA-AES-CBC-SHA session, the only profile GnuTLS builds of libimobiledevice offer', async () => {
  const h = await device();
  const record = await h.pair();
  const stream = h.connect();
  stream.write(encodePlistFrame({ Request: 'StartSession', HostID: record.HostID, SystemBUID: SYSTEM_BUID }));
  const reply = await new Promise<Buffer>((resolve) => {
    let got = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      got = Buffer.concat([got, d]);
      if (got.length >= 4 && got.length >= 4 + got.readUInt32BE(0)) {
        stream.off('data', onData);
        stream.pause();
        resolve(got);
      }
    };
    stream.on('data', onData);
  });
  assert.match(reply.subarray(4).toString(), /<key>EnableSessionSSL<\/key>\s*<true\/>/);
  const opts = hostTlsOptions(parsePairRecord(record));
  const tls = tlsConnect({ ...opts, socket: stream, minVersion: 'TLSv1', maxVersion: 'TLSv1', ciphers: 'AES128-SHA:AES256-SHA:@SECLEVEL=0' });
  await new Promise<void>((resolve, reject) => {
    tls.once('secureConnect', resolve);
    tls.once('error', reject);
  });
  assert.equal(tls.getProtocol(), 'TLSv1');
  assert.match(tls.getCipher().name, /^AES(128|256)-SHA$/);
  tls.destroy();
});

test('refuses a TLS client certificate that belongs to no trusted host', async () => {
  const h = await device();
  const record = await h.pair();
  const stranger = await h.pair();
  const c = await h.open();
  // Start the session for `record`, but present the other host's certificate: signed by another root.
  const mixed = { ...record, HostCertificate: stranger.HostCertificate, HostPrivateKey: stranger.HostPrivateKey };
  await h.lockdownd.pairing.unpair({ HostID: stranger.HostID });
  await assert.rejects(c.startSession(mixed, SYSTEM_BUID), MuxwireError);
});

test('stops a session back to plaintext on the same stream and serves plaintext requests after it', async () => {
  const h = await device();
  const record = await h.pair();
  const c = await h.open();
  await c.startSession(record, SYSTEM_BUID);
  await c.stopSession();
  assert.equal(c.secure, false);
  assert.equal(await c.queryType(), 'com.apple.mobile.lockdown');
  // A session-only key is hidden again: the device left the session too.
  await assert.rejects(c.getValue({ key: 'TimeZone' }), (e: unknown) => lockdownDetail(e) === 'MissingValue');
  // And a second session on the same stream works (as some Apple tools do, §5.4).
  await c.startSession(record, SYSTEM_BUID);
  assert.equal(await c.getValue({ key: 'TimeZone' }), 'Europe/Berlin');
  await c.stopSession();
  assert.equal(await c.getValue({ key: 'ProductVersion' }), h.identity.productVersion);
});

test('survives TLS records and frames that arrive one byte at a time', async () => {
  const h = await device();
  const record = await h.pair();
  // A byte-at-a-time relay between the client and port 62078.
  const device62078 = h.connect();
  const [clientEnd, relayEnd] = duplexPair();
  relayEnd.on('data', (chunk: Buffer) => {
    for (let i = 0; i < chunk.length; i++) device62078.write(chunk.subarray(i, i + 1));
  });
  device62078.on('data', (chunk: Buffer) => {
    for (let i = 0; i < chunk.length; i++) relayEnd.write(chunk.subarray(i, i + 1));
  });
  const c = await LockdownClient.open(clientEnd);
  try {
    await c.startSession(record, SYSTEM_BUID);
    assert.equal(await c.getValue({ key: 'TimeZone' }), 'Europe/Berlin');
    await c.stopSession();
    assert.equal(await c.getValue({ key: 'DeviceClass' }), 'iPhone');
  } finally {
    c.close();
    device62078.destroy();
  }
});

test('keeps a StartService port open after the lockdown connection closes', async () => {
  const h = await device({ services: new Map([['com.example.echo', (s: Duplex) => s.pipe(s)]]) });
  const record = await h.pair();
  const c = await h.open();
  await c.startSession(record, SYSTEM_BUID);
  const svc = await c.startService('com.example.echo');
  assert.equal(svc.enableServiceSSL, false);
  assert.ok(svc.port >= 49152);
  c.close(); // as libimobiledevice's service factory frees lockdown first
  await new Promise((r) => setTimeout(r, 20));
  const s = h.mux.connect(svc.port);
  const echoed = new Promise<string>((resolve) => s.once('data', (d: Buffer) => resolve(d.toString())));
  s.write('ping');
  assert.equal(await echoed, 'ping');
  assert.equal(h.mux.listening(svc.port), false, 'the port takes one connection');
  s.destroy();
});

test('starts a service with EnableServiceSSL whose port begins with a TLS handshake', async () => {
  const h = await device({ enableServiceSSL: true, services: new Map([['com.example.echo', (s: Duplex) => s.pipe(s)]]) });
  const record = await h.pair();
  const c = await h.open();
  await c.startSession(record, SYSTEM_BUID);
  const svc = await c.startService('com.example.echo', { escrowBag: record.EscrowBag as Buffer });
  assert.equal(svc.enableServiceSSL, true);
  const raw = h.mux.connect(svc.port);
  const tls = tlsConnect({ ...hostTlsOptions(parsePairRecord(record)), socket: raw });
  await new Promise<void>((resolve, reject) => {
    tls.once('secureConnect', resolve);
    tls.once('error', reject);
  });
  assert.equal(tls.getProtocol(), 'TLSv1.2');
  const echoed = new Promise<string>((resolve) => tls.once('data', (d: Buffer) => resolve(d.toString())));
  tls.write('inside TLS');
  assert.equal(await echoed, 'inside TLS');
  tls.destroy();
  await c.stopSession();
});

test('answers StartService for an unknown service with InvalidService, echoing Service', async () => {
  const h = await device();
  const record = await h.pair();
  const c = await h.open();
  await c.startSession(record, SYSTEM_BUID);
  const lines: string[] = [];
  setLogSink((line) => lines.push(line));
  setLogLevel('debug');
  try {
    const err = await c.startService('com.apple.nonexistent').catch((e: unknown) => e);
    assert.equal(lockdownDetail(err), 'InvalidService');
  } finally {
    setLogLevel('warn');
    setLogSink((line) => process.stderr.write(line + '\n'));
  }
  // The device's log names the service it refused.
  assert.ok(lines.some((l) => l.endsWith('← StartService InvalidService Service=com.apple.nonexistent')), lines.join('\n'));
  await c.stopSession();
});

test('answers StartService without a session with SessionInactive', async () => {
  const h = await device({ services: new Map([['com.example.echo', (s: Duplex) => s.pipe(s)]]) });
  const c = await h.open();
  assert.equal(lockdownDetail(await c.startService('com.example.echo').catch((e: unknown) => e)), 'SessionInactive');
});

test('speaks to the device in binary plists, as appium does', async () => {
  const h = await device();
  const record = await h.pair();
  const c = await h.open({ format: 'binary' });
  assert.equal(await c.queryType(), 'com.apple.mobile.lockdown');
  await c.startSession(record, SYSTEM_BUID);
  assert.equal(await c.getValue({ key: 'DeviceName' }), 'Muxwire\u2019s iPhone');
  await c.stopSession();
});

test('validates and unpairs a stored record', async () => {
  const h = await device();
  const record = await h.pair();
  const c = await h.open();
  await c.validatePair(record);
  await c.unpair(record);
  assert.equal(lockdownDetail(await c.validatePair(record).catch((e: unknown) => e)), 'InvalidHostID');
});

test('renames the device with SetValue DeviceName inside a session and reads it back', async () => {
  const h = await device();
  const record = await h.pair();
  const c = await h.open();
  await c.startSession(record, SYSTEM_BUID);
  await c.setValue({ key: 'DeviceName', value: 'Test Bench' });
  assert.equal(await c.getValue({ key: 'DeviceName' }), 'Test Bench');
  assert.equal(lockdownDetail(await c.setValue({ key: 'UniqueDeviceID', value: 'x' }).catch((e: unknown) => e)), 'ImmutableValue');
  assert.equal(lockdownDetail(await c.setValue({ key: 'BatteryCurrentCapacity', value: 1, domain: 'com.apple.mobile.battery' }).catch((e: unknown) => e)), 'SetProhibited');
  await c.removeValue({ key: 'DeviceName' });
  assert.equal(await c.getValue({ key: 'DeviceName' }), 'Muxwire\u2019s iPhone');
  await c.stopSession();
});

test('times a request out with MUXWIRE_ERR_TIMEOUT when the device never answers', async () => {
  const [host, silent] = duplexPair();
  silent.resume(); // reads and says nothing
  const c = await LockdownClient.open(host, { timeoutMs: 100 });
  const err = await c.queryType().catch((e: unknown) => e);
  assert.ok(err instanceof MuxwireError);
  assert.equal(err.code, 'MUXWIRE_ERR_TIMEOUT');
  silent.destroy();
});

test('rejects a reply whose Request echo differs from the verb sent', async () => {
  const [host, dev] = duplexPair();
  dev.once('data', () => dev.write(encodePlistFrame({ Request: 'GetValue', Type: 'com.apple.mobile.lockdown' })));
  const c = await LockdownClient.open(host);
  const err = await c.queryType().catch((e: unknown) => e);
  assert.equal(lockdownDetail(err), 'InvalidResponse');
  c.close();
});

test('fails a request with MUXWIRE_ERR_CLOSED when the device closes the stream', async () => {
  const [host, dev] = duplexPair();
  dev.once('data', () => dev.destroy());
  const c = await LockdownClient.open(host);
  const err = await c.queryType().catch((e: unknown) => e);
  assert.ok(err instanceof MuxwireError);
  assert.equal(err.code, 'MUXWIRE_ERR_CLOSED');
});

test('echoes Request in every reply the device sends, errors included', async () => {
  const h = await device();
  const record = await h.pair();
  const p = new RawPeer(h.connect());
  const requests = [
    { Request: 'QueryType' },
    { Request: 'GetValue', Key: 'ProductType' },
    { Request: 'GetValue', Key: 'Missing' },
    { Request: 'SetValue', Key: 'DeviceName', Value: 'x' },
    { Request: 'RemoveValue', Key: 'DeviceName' },
    { Request: 'ValidatePair', PairRecord: pairRecordForRequest(record) },
    { Request: 'Pair' },
    { Request: 'StartService', Service: 'com.apple.afc' },
    { Request: 'StopSession', SessionID: 'X' },
    { Request: 'StartSession', HostID: 'unknown' },
    { Request: 'Unpair', PairRecord: { HostID: 'unknown' } },
  ];
  for (const req of requests) {
    const r = await p.request(req);
    assert.equal(r.value.Request, req.Request, JSON.stringify(req));
    assert.equal(r.body.subarray(0, 5).toString(), '<?xml');
    assert.ok(r.value.Error !== undefined || r.value.Result === 'Success', `${req.Request}: Result Success on success`);
  }
  p.close();
});

test('fails startSession at once when the device closes the stream during the TLS handshake', async () => {
  const h = await device();
  const record = await h.pair();
  const [host, dev] = duplexPair();
  dev.once('data', () => {
    dev.write(encodePlistFrame({ Request: 'StartSession', Result: 'Success', SessionID: 'A-B', EnableSessionSSL: true }));
    dev.once('data', () => dev.destroy()); // the ClientHello
  });
  const c = await LockdownClient.open(host, { timeoutMs: 30_000 });
  const started = Date.now();
  const err = await c.startSession(record, SYSTEM_BUID).catch((e: unknown) => e);
  assert.ok(err instanceof MuxwireError);
  assert.ok(['MUXWIRE_ERR_CLOSED', 'MUXWIRE_ERR_TLS'].includes(err.code), err.code);
  assert.ok(Date.now() - started < 15_000, 'did not wait for the handshake timeout');
});

test('relays request_pair through the insecure notification proxy when the user taps Trust (delay mode)', async () => {
  const h = await device({ trust: 'delay:300' });
  const c = await h.open();
  // As usbmuxd's preflight: first Pair shows the dialog, then watch the notification proxy.
  const first = await c.pair(h.store, { timeoutMs: 0, retryMs: 1 }).catch((e: unknown) => e);
  assert.equal((first as MuxwireError).detail, 'PairingDialogResponsePending');
  const svc = await c.startService('com.apple.mobile.insecure_notification_proxy');
  const np = new RawPeer(h.mux.connect(svc.port));
  np.send({ Command: 'ObserveNotification', Name: 'com.apple.mobile.lockdown.request_pair' });
  const relayed = await np.reply(10_000);
  assert.deepEqual(relayed.value, { Command: 'RelayNotification', Name: 'com.apple.mobile.lockdown.request_pair' });
  const record = await c.pair(h.store);
  assert.ok(h.lockdownd.pairing.get(String(record.HostID)));
  const death = await np.request({ Command: 'Shutdown' });
  assert.deepEqual(death.value, { Command: 'ProxyDeath' });
  np.close();
});
