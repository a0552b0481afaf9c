/**
 * The simulated lockdownd at the wire level: what each request gets back, byte for byte where it
 * matters (XML replies starting `<?xml`, the Request echo in every reply, error spellings of
 * lockdown-afc.md §2.3, binary-plist requests as appium sends them).
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { encodePlistFrame } from '../../src/protocol/plist-frame.js';
import { PlistReal, encodeXmlPlist } from '../../src/protocol/plist.js';
import { LOCKDOWN_ERRORS } from '../../src/lockdown/lockdown-errors.js';
import { pairRecordForRequest } from '../../src/lockdown/pair-record.js';
import { KNOWN_DOMAINS, PRE_SESSION_KEYS } from '../../src/sim/device-values.js';
import { startDevice, type Harness } from '../lockdown/harness.js';
import { RawPeer } from '../lockdown/raw-peer.js';
import { seededRandom } from '../../src/seeded-random.js';

let h: Harness;
const peers: RawPeer[] = [];

function peer(): RawPeer {
  const p = new RawPeer(h.connect());
  peers.push(p);
  return p;
}

before(async () => {
  h = await startDevice({ services: new Map([['com.example.echo', (s) => s.pipe(s)]]) });
});

after(() => {
  for (const p of peers) p.close();
  h.close();
});

test('answers QueryType with the lockdown type, echoing Request, in XML that starts with <?xml', async () => {
  const r = await peer().request({ Label: 'test', Request: 'QueryType' });
  assert.equal(r.body.subarray(0, 5).toString(), '<?xml');
  assert.deepEqual(r.value, { Request: 'QueryType', Result: 'Success', Type: 'com.apple.mobile.lockdown' });
});

test('accepts a binary-plist request (as appium sends) and still answers in XML', async () => {
  const r = await peer().request({ Request: 'GetValue', Key: 'ProductVersion', ProtocolVersion: 2 }, 'binary');
  assert.equal(r.body.subarray(0, 5).toString(), '<?xml');
  assert.equal(r.value.Request, 'GetValue');
  assert.equal(r.value.Value, h.identity.productVersion);
});

test('reads a request whose length and body arrive in separate writes (as libimobiledevice sends)', async () => {
  const p = peer();
  const frame = encodePlistFrame({ Request: 'GetValue', Key: 'DeviceClass' });
  p.write(frame.subarray(0, 4));
  await new Promise((r) => setImmediate(r));
  p.write(frame.subarray(4));
  const r = await p.reply();
  assert.equal(r.value.Value, 'iPhone');
});

test('echoes Key and Domain in GetValue replies', async () => {
  const p = peer();
  const r = await p.request({ Request: 'GetValue', Key: 'FamilyID', Domain: 'com.apple.mobile.iTunes' });
  assert.equal(r.value.Key, 'FamilyID');
  assert.equal(r.value.Domain, 'com.apple.mobile.iTunes');
  assert.equal(typeof r.value.Value, 'number');
});

test('answers an unknown key with MissingValue, echoing Request and Key', async () => {
  const r = await peer().request({ Request: 'GetValue', Key: 'NoSuchKey' });
  assert.deepEqual(r.value, { Request: 'GetValue', Key: 'NoSuchKey', Error: 'MissingValue' });
});

test('shows only the pre-session subset without a session, with DevicePublicKey as PKCS#1 PEM data', async () => {
  const r = await peer().request({ Request: 'GetValue' });
  const all = r.value.Value as Record<string, unknown>;
  for (const key of Object.keys(all)) assert.ok(PRE_SESSION_KEYS.has(key), `${key} is not a pre-session key`);
  for (const key of ['ProductVersion', 'DeviceClass', 'DeviceName', 'WiFiAddress', 'UniqueDeviceID', 'DevicePublicKey']) {
    assert.ok(key in all, `${key} missing before a session`);
  }
  assert.ok(Buffer.isBuffer(all.DevicePublicKey));
  assert.match((all.DevicePublicKey as Buffer).toString(), /^-----BEGIN RSA PUBLIC KEY-----\n/);
  assert.equal(all.UniqueDeviceID, h.identity.udid);
  assert.equal(typeof all.UniqueChipID, 'number');
  // A session-only key stays hidden.
  const hidden = await peer().request({ Request: 'GetValue', Key: 'TimeZoneOffsetFromUTC' });
  assert.equal(hidden.value.Error, 'MissingValue');
});

test('answers session-only verbs with SessionInactive before a session', async () => {
  const p = peer();
  for (const [req, extra] of [
    ['StopSession', { SessionID: 'X' }],
    ['StartService', { Service: 'com.example.echo' }],
    ['RemoveValue', { Key: 'DeviceName' }],
    ['SetValue', { Key: 'DeviceName', Value: 'x' }],
    ['EnterRecovery', {}],
  ] as const) {
    const r = await p.request({ Request: req, ...extra });
    assert.equal(r.value.Request, req);
    assert.equal(r.value.Error, 'SessionInactive', req);
  }
});

test('lets usbmuxd’s preflight set UntrustedHostBUID without a session', async () => {
  const r = await peer().request({ Request: 'SetValue', Key: 'UntrustedHostBUID', Value: 'A-B-C' });
  assert.deepEqual(r.value, { Request: 'SetValue', Result: 'Success', Key: 'UntrustedHostBUID' });
});

test('answers Pair without a PairRecord with MissingPairRecord and without a HostID with MissingHostID', async () => {
  const p = peer();
  assert.equal((await p.request({ Request: 'Pair', ProtocolVersion: '2' })).value.Error, 'MissingPairRecord');
  const r = await p.request({ Request: 'Pair', PairRecord: { SystemBUID: 'x' }, ProtocolVersion: '2' });
  assert.deepEqual(r.value, { Request: 'Pair', Error: 'MissingHostID' });
});

test('answers StartSession for an unknown HostID with InvalidHostID, and ValidatePair likewise', async () => {
  const p = peer();
  const r = await p.request({ Request: 'StartSession', HostID: 'D3F5B5E8-0000-4000-8000-000000000000', SystemBUID: 'x' });
  assert.deepEqual(r.value, { Request: 'StartSession', Error: 'InvalidHostID' });
  const v = await p.request({ Request: 'ValidatePair', PairRecord: { HostID: 'nobody' }, ProtocolVersion: '2' });
  assert.deepEqual(v.value, { Request: 'ValidatePair', Error: 'InvalidHostID' });
  assert.equal((await p.request({ Request: 'StartSession' })).value.Error, 'MissingHostID');
});

test('answers an unknown verb with an error that still echoes Request, and keeps serving', async () => {
  const p = peer();
  const r = await p.request({ Request: 'Frobnicate' });
  assert.equal(r.value.Request, 'Frobnicate');
  assert.equal(typeof r.value.Error, 'string');
  assert.equal((await p.request({ Request: 'QueryType' })).value.Type, 'com.apple.mobile.lockdown');
});

test('answers Goodbye and then closes the connection', async () => {
  const p = peer();
  const r = await p.request({ Request: 'Goodbye' });
  assert.deepEqual(r.value, { Request: 'Goodbye', Result: 'Success' });
  await assert.rejects(p.reply(5000), /ended/);
});

test('uses only error strings of the libimobiledevice map for the errors it can name', async () => {
  // Everything above that is not our own InvalidRequest must be spelled as lockdown-afc.md §2.3.
  const p = peer();
  const replies = [
    await p.request({ Request: 'GetValue', Key: 'Nope' }),
    await p.request({ Request: 'StartService', Service: 'x' }),
    await p.request({ Request: 'Pair' }),
    await p.request({ Request: 'StartSession', HostID: 'nope' }),
  ];
  for (const r of replies) assert.ok((LOCKDOWN_ERRORS as readonly string[]).includes(r.value.Error as string), String(r.value.Error));
});

test('gives the full value set inside a session, with reals for time values and every ideviceinfo domain', async () => {
  const record = await h.pair();
  const c = await h.open();
  await c.startSession(record, 'BUID');
  const all = (await c.getValue()) as Record<string, unknown>;
  assert.ok(all.TimeZoneOffsetFromUTC instanceof PlistReal || typeof all.TimeZoneOffsetFromUTC === 'number');
  for (const key of ['SerialNumber', 'TimeZone', 'CPUArchitecture', 'HardwareModel', 'BluetoothAddress', 'UniqueChipID', 'ChipID']) {
    assert.ok(key in all, `${key} missing in a session`);
  }
  for (const domain of KNOWN_DOMAINS) {
    const v = await c.getValue({ domain });
    assert.equal(typeof v, 'object', domain);
  }
  const battery = (await c.getValue({ domain: 'com.apple.mobile.battery' })) as Record<string, unknown>;
  assert.equal(typeof battery.BatteryCurrentCapacity, 'number');
  assert.equal(typeof battery.BatteryIsCharging, 'boolean');
  await c.stopSession();
  c.close();
});

test('encodes TimeZoneOffsetFromUTC and TimeIntervalSince1970 as <real>, not <integer>', async () => {
  for (const key of ['TimeZoneOffsetFromUTC', 'TimeIntervalSince1970']) {
    const r = await h.lockdownd.values.get(undefined, key, true);
    assert.ok('value' in r);
    const xml = encodeXmlPlist({ Request: 'GetValue', Key: key, Value: r.value }).toString();
    assert.match(xml, /<key>Value<\/key>\s*<real>/, key);
  }
});

test('answers Unpair with any record shape that carries a HostID, after which the host is unknown', async () => {
  const record = await h.pair();
  const p = peer();
  const r = await p.request({ Request: 'Unpair', PairRecord: { HostID: record.HostID }, ProtocolVersion: '2' });
  assert.deepEqual(r.value, { Request: 'Unpair', Result: 'Success' });
  const s = await p.request({ Request: 'StartSession', HostID: record.HostID, SystemBUID: 'x' });
  assert.equal(s.value.Error, 'InvalidHostID');
  const v = await p.request({ Request: 'ValidatePair', PairRecord: pairRecordForRequest(record), ProtocolVersion: '2' });
  assert.equal(v.value.Error, 'InvalidHostID');
});

test('closes a connection whose frame is not a plist, and keeps serving others', async () => {
  const p = peer();
  const body = Buffer.from('this is not a plist');
  const frame = Buffer.alloc(4 + body.length);
  frame.writeUInt32BE(body.length, 0);
  body.copy(frame, 4);
  p.write(frame);
  await assert.rejects(p.reply(5000), /ended/);
  assert.equal((await peer().request({ Request: 'QueryType' })).value.Type, 'com.apple.mobile.lockdown');
});

test('closes a connection that declares a frame larger than its limit, before buffering it', async () => {
  const p = peer();
  const header = Buffer.alloc(4);
  header.writeUInt32BE(0x7fffffff, 0);
  p.write(header);
  await assert.rejects(p.reply(5000), /ended/);
});

test('closes a session whose next bytes are not TLS records', async () => {
  const record = await h.pair();
  const p = peer();
  const r = await p.request({ Request: 'StartSession', HostID: record.HostID, SystemBUID: 'x' });
  assert.equal(r.value.EnableSessionSSL, true);
  // A plaintext request where the ClientHello belongs.
  p.send({ Request: 'GetValue' });
  await assert.rejects(p.reply(5000), /ended/);
});

test('survives seeded random corruption of requests: each one is answered or its connection closed', async () => {
  // Seeded (src/seeded-random.ts), so a failure reproduces.
  const random = seededRandom(0x9e3779b9);
  const rand = (n: number): number => Math.floor(random() * n);
  const templates = [
    encodePlistFrame({ Request: 'GetValue', Key: 'ProductVersion' }),
    encodePlistFrame({ Request: 'Pair', PairRecord: { HostID: 'X', RootCertificate: Buffer.from('-----BEGIN CERTIFICATE-----') } }, 'binary'),
    encodePlistFrame({ Request: 'StartService', Service: 'com.example.echo', EscrowBag: Buffer.alloc(8) }),
  ];
  for (let i = 0; i < 60; i++) {
    const frame = Buffer.from(templates[i % templates.length]!);
    for (let flips = 1 + rand(4); flips > 0; flips--) frame[4 + rand(frame.length - 4)] = rand(256);
    const p = peer();
    p.write(frame);
    try {
      const r = await p.reply(5000);
      assert.equal(typeof r.value, 'object');
    } catch (err) {
      assert.match((err as Error).message, /ended/, `case ${i}`);
    }
    p.close();
  }
  assert.equal((await peer().request({ Request: 'QueryType' })).value.Type, 'com.apple.mobile.lockdown');
});
