/**
 * Interop over the network path, mDNS included: in a network namespace this test makes (loopback
 * only, so no packet leaves it), `muxwire sim --network 127.0.0.2` advertises `_apple-mobdev2._tcp`
 * and is on a vusb bus too; `muxwire daemon --network` finds it over mDNS once it is paired over
 * USB (preflight is off, so the pairing is the test's own idevicepair). libimobiledevice's tools then read the network entry's NetworkAddress and connect to the
 * device themselves (idevice_connect), and our CLI goes through the daemon's relay.
 *
 * Debian's idevicepair (libimobiledevice 1.3.0) has no -n; what its `validate` runs,
 * lockdownd_client_new_with_handshake with the stored record, is what `idevicename -n` and
 * `ideviceinfo -n` run, so they check the pairing over the network here.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hasPeer, requireCondition, requirePeer } from '../helpers/peers.js';
import { NetworkNamespace, type NsProcess } from './network-ns.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const DEVICE_ADDRESS = '127.0.0.2';
const PEERS = ['ip', 'idevice_id', 'ideviceinfo', 'idevicename', 'idevicepair'];

let dir: string;
let ns: NetworkNamespace | undefined;
let nsError = '';
let sim: NsProcess;
let udid = '';
/** A second device, at ::1 and not advertised: the daemon has it by address (--network-device). */
let udid6 = '';

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-interop-network-'));
  if (!PEERS.every(hasPeer)) return;
  try {
    ns = await NetworkNamespace.create('muxwire-net');
  } catch (err) {
    nsError = (err as Error).message;
    return;
  }
  ns.env = { ...process.env, USBMUXD_SOCKET_ADDRESS: `UNIX:${join(dir, 'usbmuxd')}` };
  const bus = join(dir, 'bus');
  const daemon = ns.start(process.execPath, [CLI, 'daemon', '--socket', join(dir, 'usbmuxd'), '--pair-dir', join(dir, 'lockdown'), '--vusb-dir', bus, '--no-usb', '--no-preflight', '--network', '--network-device', '::1']);
  await daemon.line(/^muxwire daemon: listening on /);
  sim = ns.start(process.execPath, [CLI, 'sim', '--vusb-dir', bus, '--network', DEVICE_ADDRESS, '--ios', '16.4.1', '--name', 'Wi-Fi Phone']);
  udid = (await sim.line(/^muxwire sim: ready (\S+) /))[1]!;
  await sim.line(/^muxwire sim: network \S+ 127\.0\.0\.2 /);
  const sim6 = ns.start(process.execPath, [CLI, 'sim', '--vusb-dir', bus, '--network', '::1', '--no-mdns', '--ios', '17.2']);
  udid6 = (await sim6.line(/^muxwire sim: ready (\S+) /))[1]!;
  await sim6.line(/^muxwire sim: network \S+ ::1 /);
});

after(async () => {
  await ns?.destroy();
  await rm(dir, { recursive: true, force: true });
});

/** Peers and the namespace are there; else skip (or fail under MUXWIRE_REQUIRE_PEERS=1). */
function ready(t: Parameters<typeof requirePeer>[0]): boolean {
  if (!requirePeer(t, ...PEERS)) return false;
  return requireCondition(t, ns !== undefined, `cannot make a network namespace: ${nsError}`);
}

async function waitForListing(args: string[], want: (stdout: string) => boolean): Promise<string> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const r = await ns!.run(args[0]!, args.slice(1));
    if (r.code === 0 && want(r.stdout)) return r.stdout;
    if (Date.now() > deadline) assert.fail(`${args.join(' ')} never showed what was expected; last: ${r.stdout}${r.stderr}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

test('idevice_id -n lists the device once it is paired over USB', async (t) => {
  if (!ready(t)) return;
  await waitForListing(['idevice_id', '-l'], (out) => out.includes(udid));
  const none = await ns!.run('idevice_id', ['-n']);
  assert.equal(none.stdout.trim(), '', 'not listed on the network before a pair record exists');
  const pair = await ns!.run('idevicepair', ['-u', udid, 'pair']);
  assert.equal(pair.code, 0, pair.stdout + pair.stderr);
  const listed = await waitForListing(['idevice_id', '-n'], (out) => out.includes(udid));
  assert.deepEqual(listed.trim().split('\n'), [udid], 'only the paired device is on the network list');
  const both = await ns!.run('idevice_id', []);
  assert.deepEqual(both.stdout.trim().split('\n').filter((l) => l.startsWith(udid)).sort(), [`${udid} (Network)`, `${udid} (USB)`]);
});

test('ideviceinfo -n -u UDID -k ProductVersion prints the simulated version', async (t) => {
  if (!ready(t)) return;
  const r = await ns!.run('ideviceinfo', ['-n', '-u', udid, '-k', 'ProductVersion']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), '16.4.1');
});

test('the USB-made pairing validates over the network (idevicename -n), and idevicepair validate over USB', async (t) => {
  if (!ready(t)) return;
  const name = await ns!.run('idevicename', ['-n', '-u', udid]);
  assert.equal(name.code, 0, name.stderr);
  assert.equal(name.stdout.trim(), 'Wi-Fi Phone');
  const validate = await ns!.run('idevicepair', ['-u', udid, 'validate']);
  assert.equal(validate.code, 0, validate.stdout + validate.stderr);
  assert.match(validate.stdout, /SUCCESS: Validated pairing/);
});

test('muxwire list --json shows the USB and the network entry of the same device', async (t) => {
  if (!ready(t)) return;
  const r = await ns!.run(process.execPath, [CLI, 'list', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const all = JSON.parse(r.stdout) as Array<{ udid: string; connectionType: string; networkAddress?: string; serviceName?: string }>;
  const devices = all.filter((d) => d.udid === udid);
  assert.deepEqual(devices.map((d) => [d.udid, d.connectionType]).sort(), [
    [udid, 'Network'],
    [udid, 'USB'],
  ]);
  const network = devices.find((d) => d.connectionType === 'Network')!;
  assert.equal(network.networkAddress, DEVICE_ADDRESS);
  assert.match(network.serviceName!, /^[0-9a-f:]{17}@fe80::[0-9a-f:]+\._apple-mobdev2\._tcp\.local$/);
});

test('a device given by IPv6 address is listed once paired, and ideviceinfo -n reaches it through the sockaddr_in6', async (t) => {
  if (!ready(t)) return;
  await waitForListing(['idevice_id', '-l'], (out) => out.includes(udid6));
  const pair = await ns!.run('idevicepair', ['-u', udid6, 'pair']);
  assert.equal(pair.code, 0, pair.stdout + pair.stderr);
  await waitForListing(['idevice_id', '-n'], (out) => out.includes(udid6));
  const r = await ns!.run('ideviceinfo', ['-n', '-u', udid6, '-k', 'ProductVersion']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), '17.2');
  const list = await ns!.run(process.execPath, [CLI, 'list', '-n', '--json']);
  const entry = (JSON.parse(list.stdout) as Array<{ udid: string; networkAddress?: string }>).find((d) => d.udid === udid6);
  assert.equal(entry?.networkAddress, '::1');
});

test('muxwire info -n and afc -n push and pull 64 MiB over the network path', async (t) => {
  if (!ready(t)) return;
  const info = await ns!.run(process.execPath, [CLI, 'info', '-n', '-k', 'ProductVersion']);
  assert.equal(info.code, 0, info.stderr);
  assert.equal(info.stdout.trim(), '16.4.1');
  const data = randomBytes(64 * 1024 * 1024);
  await writeFile(join(dir, 'up.bin'), data);
  const push = await ns!.run(process.execPath, [CLI, 'afc', '-n', '--no-progress', 'push', join(dir, 'up.bin'), '/wifi.bin'], 180_000);
  assert.equal(push.code, 0, push.stderr);
  const pull = await ns!.run(process.execPath, [CLI, 'afc', '-n', '--no-progress', 'pull', '/wifi.bin', join(dir, 'down.bin')], 180_000);
  assert.equal(pull.code, 0, pull.stderr);
  const digest = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
  assert.equal(digest(await readFile(join(dir, 'down.bin'))), digest(data));
});

test('taking the network side down detaches the network entry; the USB entry stays', async (t) => {
  if (!ready(t)) return;
  sim.child.kill('SIGUSR1');
  await sim.line(/^muxwire sim: network down /);
  // Documented: at once on the mDNS goodbye, within 13 s by the probe without one.
  await waitForListing(['idevice_id', '-n'], (out) => !out.includes(udid));
  const usb = await ns!.run('idevice_id', ['-l']);
  assert.ok(usb.stdout.trim().split('\n').includes(udid), usb.stdout);
  // And back: announced again, listed again.
  sim.child.kill('SIGUSR2');
  await sim.line(/^muxwire sim: network \S+ 127\.0\.0\.2 /);
  await waitForListing(['idevice_id', '-n'], (out) => out.includes(udid));
});
