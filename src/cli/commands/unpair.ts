import { MuxwireError } from '../../errors.js';
import { withLockdown, NETWORK_HELP, NETWORK_OPTION } from '../device-command.js';
import { COMMON_HELP, makeClient, parseCommand, printJson, runCommand } from '../common.js';

const HELP = `usage: muxwire unpair [options]

Removes the pairing with a device, like 'idevicepair unpair': tells the device to forget this
host (Unpair, without a session) and deletes the stored pair record.

${NETWORK_HELP}
${COMMON_HELP}`;

export function run(argv: string[]): Promise<number> {
  return runCommand('unpair', HELP, argv, async () => {
    const { values } = parseCommand(argv, { ...NETWORK_OPTION }, false);
    const client = makeClient(values);
    const udid = await withLockdown(client, { udid: values.udid, network: values.network === true }, { label: 'muxwire', session: false }, async ({ lockdown, device }) => {
      const record = await client.readPairRecord(device.udid);
      if (!record) throw new MuxwireError('MUXWIRE_ERR_NOT_PAIRED', `device ${device.udid} is not paired with this host`);
      await lockdown.unpair(record);
      await client.deletePairRecord(device.udid);
      return device.udid;
    });
    if (values.json) printJson({ unpaired: true, udid });
    else process.stdout.write(`unpaired ${udid}\n`);
  });
}
