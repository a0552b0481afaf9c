import { MuxwireError } from '../../errors.js';
import { trustNotice, withLockdown, NETWORK_HELP, NETWORK_OPTION } from '../device-command.js';
import { COMMON_HELP, makeClient, parseCommand, printJson, runCommand } from '../common.js';

const HELP = `usage: muxwire pair [options]

Pairs this computer with a device, like 'idevicepair pair': generates the root, host and device
certificates, asks the device (which shows its Trust dialog), waits while the dialog is showing,
and stores the pair record through the daemon (SavePairRecord), where libimobiledevice's tools
find it too.

options:
  --trust-timeout MS  how long to wait for the user to answer the Trust dialog (default 60000)
${NETWORK_HELP}
${COMMON_HELP}`;

export function run(argv: string[]): Promise<number> {
  return runCommand('pair', HELP, argv, async () => {
    const { values } = parseCommand(argv, { ...NETWORK_OPTION, 'trust-timeout': { type: 'string' } }, false);
    const trustTimeout = values['trust-timeout'] !== undefined ? Number(values['trust-timeout']) : 60_000;
    if (!(trustTimeout > 0)) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', '--trust-timeout must be a positive number of ms');
    const client = makeClient(values);
    const { udid, record } = await withLockdown(client, { udid: values.udid, network: values.network === true }, { label: 'muxwire', session: false }, async ({ lockdown }, device) => ({
      udid: device.udid,
      record: await lockdown.pair(client, {
        udid: device.udid,
        deviceId: device.deviceId,
        timeoutMs: trustTimeout,
        onWaiting: trustNotice(device.udid),
      }),
    }));
    if (values.json) printJson({ paired: true, udid, hostId: record.HostID });
    else process.stdout.write(`paired with ${udid} (HostID ${String(record.HostID)})\n`);
  });
}
