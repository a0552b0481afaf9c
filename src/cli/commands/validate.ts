import { withLockdown, NETWORK_HELP, NETWORK_OPTION } from '../device-command.js';
import { COMMON_HELP, makeClient, parseCommand, printJson, runCommand } from '../common.js';

const HELP = `usage: muxwire validate [options]

Checks that this computer is paired with a device, like 'idevicepair validate': reads the stored
pair record and starts a TLS session with it. Fails with the device's error when the device does
not know this host (InvalidHostID).

${NETWORK_HELP}
${COMMON_HELP}`;

export function run(argv: string[]): Promise<number> {
  return runCommand('validate', HELP, argv, async () => {
    const { values } = parseCommand(argv, { ...NETWORK_OPTION }, false);
    const client = makeClient(values);
    const result = await withLockdown(client, { udid: values.udid, network: values.network === true }, { label: 'muxwire' }, async ({ lockdown, device }) => {
      const session = lockdown.session;
      await lockdown.stopSession();
      return { udid: device.udid, sessionId: session?.sessionId };
    });
    if (values.json) printJson({ valid: true, ...result });
    else process.stdout.write(`validated pairing with ${result.udid}\n`);
  });
}
