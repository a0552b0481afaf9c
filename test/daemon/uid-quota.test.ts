/**
 * The per-user connection cap (src/daemon/uid-quota.ts): one local user cannot hold more than
 * `perUidMax` connections, so it cannot take every descriptor of the daemon; root, the daemon's
 * own uid and TCP clients are not counted. Checked with real users: clients run as `nobody`
 * through setpriv, and the daemon reads their uid with SO_PEERCRED (the addon).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import { UidQuota } from '../../src/daemon/uid-quota.js';
import { CLIENT_PER_UID_MIN, defaultPerUidMax } from '../../src/daemon/client-limits.js';
import { peerCredentialReader } from '../../src/accel/peer-credentials.js';
import { Logger, setLogSink } from '../../src/log.js';
import { requireCondition } from '../helpers/peers.js';
import { RawClient } from './helpers/raw-client.js';

const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

test('UidQuota: admits up to the cap, refuses beyond it with one warning a minute, counts releases; exempt uids are never counted', () => {
  const lines: string[] = [];
  setLogSink((line) => lines.push(line));
  try {
    const log = new Logger();
    const q = new UidQuota(2, [0, 1000]);
    assert.equal(q.admit(65534, log, 0), true);
    assert.equal(q.admit(65534, log, 0), true);
    assert.equal(q.admit(65534, log, 1), false);
    assert.equal(q.admit(65534, log, 2), false);
    assert.equal(q.admit(33, log, 2), true, 'another user has a cap of its own');
    assert.equal(lines.length, 1, 'one warning for the two refusals');
    assert.match(lines[0]!, /uid 65534 holds 2 connections, the most one user may \(MUXWIRE_CLIENT_MAX_PER_UID\)/);
    assert.equal(q.admit(65534, log, 60_001), false);
    assert.equal(lines.length, 2, 'and again after a minute');
    q.release(65534);
    assert.equal(q.held(65534), 1);
    assert.equal(q.admit(65534, log, 60_002), true);
    for (let i = 0; i < 10; i++) assert.equal(q.admit(0, log) && q.admit(1000, log), true);
    assert.equal(q.held(0), 0);
  } finally {
    setLogSink((line) => process.stderr.write(line + '\n'));
  }
});

test('the default cap is an eighth of the descriptor limit, never below CLIENT_PER_UID_MIN', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'muxwire-uidq-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const limits = (soft: string): string => `Limit                     Soft Limit           Hard Limit           Units\nMax open files            ${soft}                1048576              files\n`;
  await writeFile(join(dir, 'big'), limits('1048576'));
  await writeFile(join(dir, 'small'), limits('1024'));
  assert.equal(defaultPerUidMax(join(dir, 'big')), 131072);
  assert.equal(defaultPerUidMax(join(dir, 'small')), CLIENT_PER_UID_MIN);
  assert.equal(defaultPerUidMax(join(dir, 'missing')), CLIENT_PER_UID_MIN);
});

/** Runs `count` clients as `nobody` that each connect and ask ListDevices; resolves with how many got an answer. */
function clientsAsNobody(socketPath: string, count: number, holdMs: number): Promise<{ answered: number; output: string }> {
  const script = `
import socket, struct, sys, time
req = b'<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict><key>MessageType</key><string>ListDevices</string></dict></plist>'
socks, answered = [], 0
for i in range(${count}):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(10)
    s.connect(${JSON.stringify(socketPath)})
    socks.append(s)
for s in socks:
    try:
        s.sendall(struct.pack('<IIII', 16 + len(req), 1, 8, 1) + req)
        if len(s.recv(16)) == 16: answered += 1
    except OSError:
        pass
print(answered, flush=True)
time.sleep(${holdMs / 1000})
`;
  return new Promise((resolve, reject) => {
    const child = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '/usr/bin/python3', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    child.on('error', reject);
    child.on('exit', () => resolve({ answered: Number(out.trim().split('\n')[0]), output: out }));
  });
}

test('a user over the cap has its new connections closed at once, while root is served; its count is given back when they close', async (t) => {
  const why = process.getuid?.() !== 0 ? 'needs root (to run clients as nobody)' : !existsSync('/usr/bin/setpriv') || !existsSync('/usr/bin/python3') ? 'needs setpriv and /usr/bin/python3' : undefined;
  if (!requireCondition(t, why === undefined, why ?? '')) return;
  // The TypeScript path has no SO_PEERCRED reader: no cap there (README, Limits), checked below.
  const capped = process.env.MUXWIRE_NO_NATIVE !== '1';
  assert.equal(peerCredentialReader().ok, capped, capped ? 'the addon reads SO_PEERCRED' : 'no reader with MUXWIRE_NO_NATIVE=1');
  const dir = await mkdtemp(join(tmpdir(), 'muxwire-uidq-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  await chmod(dir, 0o755);
  const socketPath = join(dir, 'mux.sock');
  const daemon = new MuxDaemon({ socketPath, pairDir: join(dir, 'lockdown'), preflight: false, limits: { perUidMax: 5 } });
  await daemon.start();
  cleanups.push(() => daemon.close());
  const lines: string[] = [];
  setLogSink((line) => lines.push(line));
  if (!capped) {
    try {
      const all = await clientsAsNobody(socketPath, 8, 0);
      assert.equal(all.answered, 8, all.output);
    } finally {
      setLogSink((line) => process.stderr.write(line + '\n'));
    }
    return;
  }
  try {
    // Holding 5 for a while, and asking with 3 more at the same time: those 3 are closed.
    const holder = clientsAsNobody(socketPath, 5, 3000);
    for (let i = 0; i < 250 && daemon.stats().clients < 5; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(daemon.stats().clients, 5);
    const over = await clientsAsNobody(socketPath, 3, 0);
    assert.equal(over.answered, 0, over.output);
    const root = await RawClient.open(socketPath);
    assert.ok(Array.isArray((await root.request('ListDevices')).DeviceList), 'root is not counted');
    root.close();
    const held = await holder;
    assert.equal(held.answered, 5, held.output);
    for (let i = 0; i < 250 && daemon.stats().clients > 0; i++) await new Promise((r) => setTimeout(r, 20));
    const again = await clientsAsNobody(socketPath, 5, 0);
    assert.equal(again.answered, 5, `the count went back to 0: ${again.output}`);
  } finally {
    setLogSink((line) => process.stderr.write(line + '\n'));
  }
  assert.equal(lines.filter((l) => /uid 65534 holds 5 connections/.test(l)).length, 1, lines.join('\n'));
});
