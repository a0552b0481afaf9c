/**
 * Issue 7's interop: our client library and command against libimobiledevice's usbmuxd (Debian's,
 * unmodified) running on the vusb library with a simulated device, and pair records crossing
 * between our client and libimobiledevice's tools in both directions.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { UsbmuxClient } from '../../src/client/usbmux-client.js';
import { openLockdown } from '../../src/client/device-services.js';
import { clientSuite } from '../helpers/client-suite.js';
import { startUsbmuxd, usbmuxdUnavailable, type RunningUsbmuxd } from '../helpers/usbmuxd-ns.js';
import { requirePeer } from '../helpers/peers.js';

let usbmuxd: RunningUsbmuxd | undefined;

const context = clientSuite(
  "through libimobiledevice's usbmuxd",
  async () => {
    const why = usbmuxdUnavailable();
    if (why) {
      if (process.env.MUXWIRE_REQUIRE_PEERS === '1') throw new Error(`usbmuxd peer required: ${why}`);
      return undefined;
    }
    const dir = await mkdtemp(join(tmpdir(), 'muxwire-cu-'));
    const busDir = join(dir, 'bus');
    await mkdir(busDir);
    usbmuxd = await startUsbmuxd({ busDir });
    const running = usbmuxd;
    return {
      busDir,
      muxer: new UsbmuxClient({ address: `UNIX:${running.socketPath}`, timeoutMs: 10_000 }),
      stop: async () => {
        await running.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  },
  { afcMiB: 256 },
);

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(cmd, args, { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

test("ideviceinfo accepts the pair record our client made", async (t) => {
  const { harness, device } = context();
  if (!harness || !usbmuxd) return t.skip('usbmuxd not available');
  if (!requirePeer(t, 'ideviceinfo')) return;
  const r = await run('ideviceinfo', ['-u', device.udid, '-k', 'DeviceName'], usbmuxd.clientEnv);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'Suite iPhone\n');
});

test('our client opens a session with the pair record idevicepair made', async (t) => {
  const { harness, device, sim } = context();
  if (!harness || !usbmuxd) return t.skip('usbmuxd not available');
  if (!requirePeer(t, 'idevicepair')) return;
  const paired = await run('idevicepair', ['-u', device.udid, 'pair'], usbmuxd.clientEnv);
  assert.equal(paired.code, 0, paired.stderr + paired.stdout);
  const client = harness.muxer as UsbmuxClient;
  const record = await client.readPairRecord(device.udid);
  assert.ok(record);
  const handle = await openLockdown(client, device, { label: 'interop' });
  try {
    assert.equal(handle.record?.HostID, record.HostID);
    assert.equal(await handle.lockdown.getValue({ key: 'UniqueDeviceID' }), sim.udid);
  } finally {
    handle.lockdown.close();
  }
});

test('the muxwire command lists and reads info through usbmuxd', async (t) => {
  const { harness, sim } = context();
  if (!harness || !usbmuxd) return t.skip('usbmuxd not available');
  const cli = new URL('../../src/cli/main.js', import.meta.url).pathname;
  const list = await run(process.execPath, [cli, 'list', '--json'], usbmuxd.clientEnv);
  assert.equal(list.code, 0, list.stderr);
  assert.ok((JSON.parse(list.stdout) as { udid: string }[]).some((d) => d.udid === sim.udid));
  const info = await run(process.execPath, [cli, 'info', '-k', 'ProductType'], usbmuxd.clientEnv);
  assert.equal(info.code, 0, info.stderr);
  assert.equal(info.stdout, `${sim.identity.productType}\n`);
});
