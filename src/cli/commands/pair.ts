import { LockdownClient } from '../../lockdown/lockdown-client.js';
import { LOCKDOWN_PORT } from '../../client/device-services.js';
import { COMMON_HELP, makeClient, parseCommand, printJson, runCommand } from '../common.js';

const HELP = `usage: muxwire pair [options]

Pairs this computer with a device, like 'idevicepair pair': generates the root, host and device
certificates, asks the device (which shows its Trust dialog), waits while the dialog is showing,
and stores the pair record through the daemon (SavePairRecord), where libimobiledevice's tools
find it too.

options:
  --trust-timeout MS  how long to wait for the user to answer the Trust dialog (default 60000)
${COMMON_HELP}`;

export function run(argv: string[]): Promise<number> {
  return runCommand('pair', HELP, argv, async () => {
    const { values } = parseCommand(argv, { 'trust-timeout': { type: 'string' } }, false);
    const trustTimeout = values['trust-timeout'] !== undefined ? Number(values['trust-timeout']) : 60_000;
    const client = makeClient(values);
    const device = await client.findDevice(values.udid);
    const lockdown = await LockdownClient.open(await client.connect(device, LOCKDOWN_PORT), { label: 'muxwire' });
    try {
      await lockdown.queryType();
      let said = false;
      const record = await lockdown.pair(client, {
        udid: device.udid,
        deviceId: device.deviceId,
        timeoutMs: trustTimeout,
        onWaiting: () => {
          if (!said) process.stderr.write(`muxwire pair: waiting for the user to trust this computer on ${device.udid}…\n`);
          said = true;
        },
      });
      if (values.json) printJson({ paired: true, udid: device.udid, hostId: record.HostID });
      else process.stdout.write(`paired with ${device.udid} (HostID ${String(record.HostID)})\n`);
    } finally {
      lockdown.close();
    }
  });
}
