/**
 * The access policy (src/daemon/access-policy.ts): who may read, save and delete pair records,
 * decided from the connecting process's credentials (SO_PEERCRED through the addon). The suite
 * runs as root; the other user is `nobody`, a real second process spawned with uid/gid options.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect } from 'node:net';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import { AccessPolicy, isLoopbackHost, parsePairAccess, readTcpToken } from '../../src/daemon/access-policy.js';
import { peerCredentialReader } from '../../src/accel/peer-credentials.js';
import { DeviceMux } from '../../src/sim/device-mux.js';
import { InProcessLink } from '../../src/sim/in-process-link.js';
import { serveBenchServices } from '../../src/sim/bench-services.js';
import { encodeXmlPlist, decodePlist } from '../../src/protocol/plist.js';
import { isMuxwireError } from '../../src/errors.js';
import { RawClient } from './helpers/raw-client.js';
import { UsbmuxClient } from '../../src/client/usbmux-client.js';

const CLIENT = fileURLToPath(new URL('./helpers/pair-access-client.js', import.meta.url));
const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const NOBODY = 65534;
const UDID = '00008030-00000000000A11CE';
let dir: string;
const cleanups: Array<() => Promise<void> | void> = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-access-'));
  // nobody must reach the socket: the temporary directory is made traversable.
  await chmod(dir, 0o755);
});
after(async () => {
  for (const c of cleanups.reverse()) await c();
  await rm(dir, { recursive: true, force: true });
});

/** A daemon on its own socket with one in-process device serving echo on 7, and a stored record. */
async function startDaemon(name: string, opts: ConstructorParameters<typeof MuxDaemon>[0]): Promise<{ daemon: MuxDaemon; socketPath: string; deviceId: number }> {
  const socketPath = join(dir, `${name}.sock`);
  const daemon = new MuxDaemon({ socketPath, pairDir: join(dir, `${name}-lockdown`), preflight: false, ...opts });
  await daemon.start();
  await daemon.pairStore.savePairRecord(UDID, { HostID: 'ROOT', HostPrivateKey: Buffer.from('secret key') });
  const mux = new DeviceMux();
  serveBenchServices(mux);
  const link = new InProcessLink(mux, { serialNumber: UDID, productId: 0x12a8, locationId: 1, speed: 480_000_000 }, () => undefined);
  const entry = daemon.addLink(link)!;
  await entry.session.ready;
  cleanups.push(async () => {
    link.unplug();
    await daemon.close();
  });
  return { daemon, socketPath, deviceId: entry.id };
}

/** Runs the pair-access client as `nobody` and returns what it printed. */
async function asNobody(socketPath: string, deviceId: number): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, [CLIENT, socketPath, UDID, String(deviceId)], { uid: NOBODY, gid: NOBODY, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  assert.equal(code, 0, `the client as nobody failed: ${err}`);
  return JSON.parse(out) as Record<string, unknown>;
}

const support = peerCredentialReader();
const isRoot = process.getuid?.() === 0;

test('with --pair-access owner, nobody is refused Read/Save/DeletePairRecord (Result 13) but lists and connects; root is served', { skip: !isRoot && 'needs root to run a client as nobody' }, async (t) => {
  if (!support.ok) {
    // The TypeScript path cannot read SO_PEERCRED: the daemon must refuse the policy, not guess.
    assert.throws(() => new MuxDaemon({ socketPath: join(dir, 'x.sock'), pairAccess: { kind: 'owner' } }), (e) => isMuxwireError(e, 'MUXWIRE_ERR_NATIVE_UNAVAILABLE') && /SO_PEERCRED/.test(e.message));
    t.diagnostic(`peer credentials unavailable (${support.reason}): checked the refusal to start instead`);
    return;
  }
  const { socketPath, deviceId, daemon } = await startDaemon('owner', { pairAccess: { kind: 'owner' } });
  const nobody = await asNobody(socketPath, deviceId);
  assert.deepEqual(nobody, { uid: NOBODY, read: 13, save: 13, delete: 13, list: 1, buid: 'BUID', connect: 0, echo: 'ping' });
  // The record is untouched, and root reads it.
  const stored = decodePlist(await readFile(join(daemon.pairStore.dir, `${UDID}.plist`))) as Record<string, unknown>;
  assert.equal(stored.HostID, 'ROOT');
  const root = await RawClient.open(socketPath);
  try {
    const reply = await root.request('ReadPairRecord', { PairRecordID: UDID });
    assert.ok(Buffer.isBuffer(reply.PairRecordData));
    assert.equal((await root.request('SavePairRecord', { PairRecordID: 'ROOTS', PairRecordData: encodeXmlPlist({ HostID: 'R' }) })).Number, 0);
    assert.equal((await root.request('DeletePairRecord', { PairRecordID: 'ROOTS' })).Number, 0);
  } finally {
    root.close();
  }
});

test('with --pair-access group:nogroup, nobody (primary group nogroup) is served', { skip: (!isRoot && 'needs root to run a client as nobody') || (!support.ok && 'no peer credentials: the refusal to start is checked above') }, async () => {
  const groups = await readFile('/etc/group', 'utf8');
  const name = /^(nogroup|nobody):[^:]*:65534:/m.exec(groups)?.[1];
  assert.ok(name !== undefined, 'no group 65534 in /etc/group');
  const { socketPath, deviceId } = await startDaemon('group', { pairAccess: { kind: 'group', name } });
  const nobody = await asNobody(socketPath, deviceId);
  // Served: the record was read, then replaced by the client's own, then deleted.
  assert.deepEqual(nobody, { uid: NOBODY, read: 'PairRecordData', save: 0, delete: 0, list: 1, buid: 'BUID', connect: 0, echo: 'ping' });
});

test('with the default (any), nobody is served as by usbmuxd, and the start-up warning says why that is a risk', { skip: !isRoot && 'needs root to run a client as nobody' }, async () => {
  const { socketPath, deviceId, daemon } = await startDaemon('any', {});
  assert.match(daemon.policy.startupWarning(0o666, false)!, /every local user can read and delete pair records .*mode 0666.*--pair-access owner/);
  assert.equal(daemon.policy.startupWarning(0o660, false), undefined, 'a socket others cannot reach needs no warning');
  assert.match(daemon.policy.startupWarning(0o660, true)!, /TCP listener/);
  const nobody = await asNobody(socketPath, deviceId);
  assert.deepEqual(nobody, { uid: NOBODY, read: 'PairRecordData', save: 0, delete: 0, list: 1, buid: 'BUID', connect: 0, echo: 'ping' });
});

test('decisions for credentials: root and the daemon\'s uid pass owner; a group passes by gid or by member name', async () => {
  const groupFile = join(dir, 'group');
  const passwdFile = join(dir, 'passwd');
  await writeFile(groupFile, 'root:x:0:\nphone:x:700:alice,bob\n');
  await writeFile(passwdFile, 'root:x:0:0::/root:/bin/sh\nalice:x:1001:1001::/home/alice:/bin/sh\ncarol:x:1003:700::/:/bin/sh\ndave:x:1004:1004::/:/bin/sh\n');
  const reader = { read: () => undefined };
  const peer = (uid: number, gid: number) => ({ transport: 'unix' as const, authenticated: false, credentials: () => ({ pid: 1, uid, gid }) });
  const owner = new AccessPolicy({ pairAccess: { kind: 'owner' }, peerReader: reader, daemonUid: 1500 });
  assert.equal(owner.decide('read-pair-record', peer(0, 0)), undefined);
  assert.equal(owner.decide('read-pair-record', peer(1500, 1500)), undefined);
  const refused = owner.decide('delete-pair-record', peer(1001, 1001));
  assert.equal(refused?.result, 13);
  assert.equal(refused?.close, false);
  assert.ok(isMuxwireError(refused?.error, 'MUXWIRE_ERR_ACCESS_DENIED'));
  assert.equal(owner.decide('connect', peer(1001, 1001)), undefined, 'connecting stays open');
  assert.equal(owner.decide('list', peer(1001, 1001)), undefined, 'listing stays open');
  assert.equal(owner.decide('read-pair-record', { transport: 'unix', authenticated: false, credentials: () => undefined })?.result, 13, 'unknown credentials are refused');
  const group = new AccessPolicy({ pairAccess: { kind: 'group', name: 'phone' }, peerReader: reader, daemonUid: 1500, groupFile, passwdFile });
  assert.equal(group.decide('save-pair-record', peer(1001, 1001)), undefined, 'alice is a listed member');
  assert.equal(group.decide('save-pair-record', peer(1003, 700)), undefined, 'carol has it as her primary group');
  assert.equal(group.decide('save-pair-record', peer(1004, 1004))?.result, 13, 'dave is neither');
  assert.throws(() => new AccessPolicy({ pairAccess: { kind: 'group', name: 'nosuch' }, peerReader: reader, groupFile }), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_ARGUMENT') && /no such group/.test(e.message));
});

test('a restrictive policy without a credential reader refuses to start with one coded line; any needs none', () => {
  const p = new AccessPolicy({ pairAccess: { kind: 'any' } });
  assert.equal(p.peerReader, undefined);
  const noNative = peerCredentialReader({ MUXWIRE_NO_NATIVE: '1' });
  assert.equal(noNative.ok, false);
  assert.match((noNative as { reason: string }).reason, /MUXWIRE_NO_NATIVE=1/);
  if (!support.ok || process.env.MUXWIRE_NO_NATIVE === '1') {
    assert.throws(() => new AccessPolicy({ pairAccess: { kind: 'owner' } }), (e) => isMuxwireError(e, 'MUXWIRE_ERR_NATIVE_UNAVAILABLE') && !e.message.includes('\n'));
  } else {
    assert.ok(new AccessPolicy({ pairAccess: { kind: 'owner' } }).peerReader !== undefined);
  }
});

test('parses --pair-access and checks listen hosts and token files', async () => {
  assert.deepEqual(parsePairAccess('any'), { kind: 'any' });
  assert.deepEqual(parsePairAccess('owner'), { kind: 'owner' });
  assert.deepEqual(parsePairAccess('group:plugdev'), { kind: 'group', name: 'plugdev' });
  for (const bad of ['', 'all', 'group:', 'group:a:b', 'group:-x', 'OWNER']) assert.throws(() => parsePairAccess(bad), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_ARGUMENT'), bad);
  for (const h of ['127.0.0.1', '127.1.2.3', '::1', 'localhost', '::ffff:127.0.0.1']) assert.equal(isLoopbackHost(h), true, h);
  for (const h of ['0.0.0.0', '::', '10.0.0.1', 'example.com', '128.0.0.1']) assert.equal(isLoopbackHost(h), false, h);
  assert.throws(() => new AccessPolicy({ listen: [{ host: '0.0.0.0', port: 27015 }] }), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_ARGUMENT') && /--tcp-token/.test(e.message));
  assert.ok(new AccessPolicy({ listen: [{ host: '0.0.0.0', port: 27015 }], tcpToken: Buffer.from('0123456789abcdef') }).tcpTokenRequired);
  const token = join(dir, 'token');
  await writeFile(token, '0123456789abcdef0123\n', { mode: 0o600 });
  assert.equal(readTcpToken(token).toString(), '0123456789abcdef0123');
  await chmod(token, 0o644);
  assert.throws(() => readTcpToken(token), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_ARGUMENT') && /0644/.test(e.message));
  await writeFile(join(dir, 'short'), 'abc', { mode: 0o600 });
  assert.throws(() => readTcpToken(join(dir, 'short')), (e) => isMuxwireError(e, 'MUXWIRE_ERR_BAD_ARGUMENT'));
});

/** A RawClient over TCP (the helper opens UNIX paths). */
async function tcpClient(port: number): Promise<RawClient> {
  const socket = connect({ host: '127.0.0.1', port });
  await once(socket, 'connect');
  return RawClient.wrap(socket);
}

test('a TCP listener with a token: Authenticate first, then served; a wrong token or no Authenticate gets Result 13 and a closed socket; UNIX clients are unaffected', async () => {
  const token = 'a-token-of-enough-length-0001';
  const { daemon, socketPath } = await startDaemon('tcp', { listen: [{ host: '127.0.0.1', port: 0 }], tcpToken: Buffer.from(token) });
  const port = Number(/:(\d+)$/.exec(daemon.addresses.find((a) => a.startsWith('127.0.0.1'))!)![1]);
  const good = await tcpClient(port);
  try {
    assert.equal((await good.request('Authenticate', { Token: token })).Number, 0);
    assert.equal(((await good.request('ListDevices')).DeviceList as unknown[]).length, 1);
    assert.ok(Buffer.isBuffer((await good.request('ReadPairRecord', { PairRecordID: UDID })).PairRecordData));
  } finally {
    good.close();
  }
  const wrong = await tcpClient(port);
  assert.equal((await wrong.request('Authenticate', { Token: token + 'x' })).Number, 13);
  await wrong.waitClosed();
  const none = await tcpClient(port);
  assert.equal((await none.request('ListDevices')).Number, 13);
  await none.waitClosed();
  // Binary (v0) clients get a binary Result 13.
  const binary = await tcpClient(port);
  binary.write(Buffer.from('10000000000000000300000005000000', 'hex')); // Listen, tag 5
  const reply = await binary.next();
  assert.deepEqual(reply, { kind: 'result', tag: 5, result: 13 });
  await binary.waitClosed();
  const unix = await RawClient.open(socketPath);
  try {
    assert.equal(((await unix.request('ListDevices')).DeviceList as unknown[]).length, 1);
    assert.equal((await unix.request('Authenticate', { Token: token })).Number, 1, 'no handshake on the UNIX socket');
  } finally {
    unix.close();
  }
});

test("our client and CLI authenticate to a token TCP listener (--tcp-token FILE, MUXWIRE_TCP_TOKEN_FILE); without it, or with a wrong one, MUXWIRE_ERR_ACCESS_DENIED", async () => {
  const token = 'a-token-of-enough-length-0002';
  const { daemon, socketPath, deviceId } = await startDaemon('tcp-client', { listen: [{ host: '127.0.0.1', port: 0 }], tcpToken: Buffer.from(token) });
  const address = daemon.addresses.find((a) => a.startsWith('127.0.0.1'))!;
  const withToken = new UsbmuxClient({ address, token });
  assert.deepEqual((await withToken.listDevices()).map((d) => d.deviceId), [deviceId]);
  const tunnel = await withToken.connect(deviceId, 7); // the echo service, behind Authenticate
  tunnel.end('ping');
  assert.equal((await new Promise<Buffer>((resolve) => tunnel.once('data', resolve))).toString(), 'ping');
  tunnel.destroy();
  for (const client of [new UsbmuxClient({ address }), new UsbmuxClient({ address, token: token + 'x' })]) {
    await assert.rejects(client.listDevices(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_ACCESS_DENIED'));
  }
  // A token on a UNIX socket is not sent: the UNIX listener has no handshake.
  assert.equal((await new UsbmuxClient({ address: `UNIX:${socketPath}`, token }).listDevices()).length, 1);

  const file = join(dir, 'client-token');
  await writeFile(file, token + '\n', { mode: 0o600 });
  const run = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      child.on('exit', (code) => resolve({ code, stdout, stderr }));
    });
  const byOption = await run(['list', '--socket', address, '--tcp-token', file]);
  assert.equal(byOption.code, 0, byOption.stderr);
  assert.match(byOption.stdout, new RegExp(`^${UDID}\\tUSB`));
  const byEnv = await run(['list', '--socket', address], { MUXWIRE_TCP_TOKEN_FILE: file });
  assert.equal(byEnv.code, 0, byEnv.stderr);
  const without = await run(['list', '--socket', address]);
  assert.equal(without.code, 1);
  assert.match(without.stderr, /^muxwire list: usbmuxd refused ListDevices: access denied .*--tcp-token FILE\) \(MUXWIRE_ERR_ACCESS_DENIED\)\n$/);
});

test("our client reports a pair-record refusal as MUXWIRE_ERR_ACCESS_DENIED, never as \"no record\"", async () => {
  // Under owner, a loopback TCP client without a token may list and connect, not touch records.
  const reader = { read: () => ({ pid: 1, uid: 1500, gid: 1500 }) };
  const listen = [{ host: '127.0.0.1', port: 0 }];
  const policy = new AccessPolicy({ pairAccess: { kind: 'owner' }, peerReader: reader, daemonUid: 1500, listen });
  const { daemon } = await startDaemon('owner-tcp', { policy, listen });
  const client = new UsbmuxClient({ address: daemon.addresses.find((a) => a.startsWith('127.0.0.1'))! });
  assert.equal((await client.listDevices()).length, 1);
  for (const call of [() => client.readPairRecord(UDID), () => client.savePairRecord(UDID, { HostID: 'X' }), () => client.deletePairRecord(UDID)]) {
    await assert.rejects(call(), (e) => isMuxwireError(e, 'MUXWIRE_ERR_ACCESS_DENIED') && /access denied \(result 13/.test(e.message));
  }
});
