/**
 * `muxwire demo` — the README's main job: every layer end to end on this machine, no hardware.
 * A daemon on a private socket takes devices from a private vusb bus; a simulated iPhone plugs in
 * (USB descriptors, the mux protocol, lockdownd); our client pairs, reads device info in a TLS
 * session, starts AFC, pushes a file of random bytes, pulls it back, checks the SHA-256 and prints
 * the throughput; then everything is torn down, whatever happened.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MuxwireError } from '../../errors.js';
import { UsbmuxClient } from '../../client/usbmux-client.js';
import { openLockdown, startService } from '../../client/device-services.js';
import { AfcClient } from '../../services/afc/afc-client.js';
import { MuxDaemon } from '../../daemon/mux-daemon.js';
import { VusbSource } from '../../transport/vusb-source.js';
import { SimulatedDevice } from '../../sim/simulator.js';
import { formatBytes, formatRate } from '../device-command.js';
import { parseOptions, printJson, runCommand } from '../common.js';

const HELP = `usage: muxwire demo [--size MIB] [--json]

Runs the whole stack on this machine with no hardware and cleans up afterwards:
  1. a muxwire daemon on a private socket, taking devices from a private vusb bus directory;
  2. a simulated iPhone plugged into that bus;
  3. pairing (certificates, the Trust dialog answered by the simulator), stored by the daemon;
  4. device info read in a TLS lockdown session;
  5. an AFC push and pull of a file of random bytes (default 64 MiB), checked by SHA-256,
     with the throughput of each.

options:
  --size MIB   size of the file moved over AFC (default 64)
  --json       print one JSON document
  -h, --help   this help`;

/**
 * The demo's own options only: it runs its own daemon and device, so the client commands' common
 * options (--socket, -u, --timeout) would be accepted and ignored.
 */
function parseDemoArgs(argv: string[]): { size?: string; json?: boolean } {
  return parseOptions(argv, { size: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, false).values;
}

interface Step {
  step: string;
  detail: string;
}

export function run(argv: string[]): Promise<number> {
  return runCommand('demo', HELP, argv, async () => {
    const values = parseDemoArgs(argv);
    const sizeMiB = values.size !== undefined ? Number(values.size) : 64;
    if (values.size !== undefined && (!/^\d+$/.test(values.size) || sizeMiB < 1 || sizeMiB > 4096)) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `--size must be 1..4096 MiB, not '${values.size}'`);
    }
    const json = values.json === true;
    const steps: Step[] = [];
    const say = (step: string, detail: string): void => {
      steps.push({ step, detail });
      if (!json) process.stdout.write(`${step.padEnd(9)} ${detail}\n`);
    };

    const dir = await mkdtemp(join(tmpdir(), 'muxwire-demo-'));
    const socketPath = join(dir, 'usbmuxd.sock');
    const busDir = join(dir, 'bus');
    let daemon: MuxDaemon | undefined;
    let device: SimulatedDevice | undefined;
    try {
      await mkdir(busDir);
      await mkdir(join(dir, 'Media'));
      // 0600: only this process uses the socket (and the daemon has nothing to warn about).
      daemon = new MuxDaemon({ socketPath, socketMode: 0o600, pairDir: join(dir, 'lockdown') });
      await daemon.start();
      await daemon.addSource(new VusbSource({ dir: busDir }));
      say('daemon', `listening on UNIX:${socketPath}, devices from vusb bus ${busDir}`);

      device = await SimulatedDevice.create({ afcRoot: join(dir, 'Media'), name: 'Demo iPhone' });
      await device.plug(busDir);
      say('device', `simulated ${device.identity.productType} (iOS ${device.identity.productVersion}) ${device.udid} plugged in`);

      const client = new UsbmuxClient({ address: `UNIX:${socketPath}`, progName: 'muxwire-demo' });
      const attached = await waitForDevice(client, device.udid);
      say('attached', `usbmuxd lists device id ${attached.deviceId}, ${attached.connectionType}, product 0x${attached.productId.toString(16)}`);

      const pairing = await openLockdown(client, attached, { label: 'muxwire-demo', session: false });
      try {
        const record = await pairing.lockdown.pair(client, { udid: attached.udid, deviceId: attached.deviceId });
        say('paired', `HostID ${String(record.HostID)}, record stored by the daemon`);
      } finally {
        pairing.lockdown.close();
      }

      const handle = await openLockdown(client, attached, { label: 'muxwire-demo' });
      try {
        const name = await handle.lockdown.getValue({ key: 'DeviceName' });
        const version = await handle.lockdown.getValue({ key: 'ProductVersion' });
        const type = await handle.lockdown.getValue({ key: 'ProductType' });
        say('info', `TLS session: DeviceName "${String(name)}", ProductType ${String(type)}, ProductVersion ${String(version)}`);

        const afc = new AfcClient(await startService(client, handle, 'com.apple.afc'));
        try {
          const local = join(dir, 'payload.bin');
          const back = join(dir, 'payload.back');
          const payload = randomBytes(sizeMiB * 1024 * 1024);
          await writeFile(local, payload);
          const digest = createHash('sha256').update(payload).digest('hex');

          let t = process.hrtime.bigint();
          const pushed = await afc.pushFile(local, '/muxwire-demo.bin');
          const pushSeconds = Number(process.hrtime.bigint() - t) / 1e9;
          say('push', `${formatBytes(pushed.bytes)} in ${pushSeconds.toFixed(2)} s (${formatRate(pushed.bytes, pushSeconds)})`);

          t = process.hrtime.bigint();
          const pulled = await afc.pullFile('/muxwire-demo.bin', back);
          const pullSeconds = Number(process.hrtime.bigint() - t) / 1e9;
          say('pull', `${formatBytes(pulled.bytes)} in ${pullSeconds.toFixed(2)} s (${formatRate(pulled.bytes, pullSeconds)})`);

          const backDigest = createHash('sha256').update(await readFile(back)).digest('hex');
          if (backDigest !== digest || (await stat(back)).size !== payload.length) {
            throw new MuxwireError('MUXWIRE_ERR_DEMO', 'the file pulled back differs from the one pushed');
          }
          say('verified', `sha256 ${digest.slice(0, 16)}… identical both ways`);
          await afc.rm('/muxwire-demo.bin');
        } finally {
          afc.disconnect();
        }
        await handle.lockdown.stopSession();
      } finally {
        handle.lockdown.close();
      }
    } finally {
      await device?.close().catch(() => undefined);
      await daemon?.close().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    }
    if (json) printJson({ ok: true, steps });
    else process.stdout.write('done     everything torn down\n');
  });
}

/** Waits for the device to be listed (the daemon's preflight may hide it for a moment). */
async function waitForDevice(client: UsbmuxClient, udid: string) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      return await client.findDevice(udid);
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
