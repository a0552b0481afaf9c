import { formatPlistValue } from '../format-value.js';
import { withLockdown, NETWORK_HELP, NETWORK_OPTION } from '../device-command.js';
import { COMMON_HELP, makeClient, parseCommand, printJson, runCommand } from '../common.js';

const HELP = `usage: muxwire info [options]

Reads lockdown values from a device, like ideviceinfo: all of them, one domain, or one key.
By default it starts a TLS session with the stored pair record (pair first with 'muxwire pair');
--simple reads the values a device gives without a session.

options:
  -k, --key KEY       read one key
  -q, --domain DOMAIN read a domain (e.g. com.apple.mobile.battery)
  -s, --simple        no session: only the values devices give to unpaired hosts
${NETWORK_HELP}
${COMMON_HELP}`;

export function run(argv: string[]): Promise<number> {
  return runCommand('info', HELP, argv, async () => {
    const { values } = parseCommand(
      argv,
      { ...NETWORK_OPTION, key: { type: 'string', short: 'k' }, domain: { type: 'string', short: 'q' }, simple: { type: 'boolean', short: 's' } },
      false,
    );
    const client = makeClient(values);
    const value = await withLockdown(client, { udid: values.udid, network: values.network === true }, { label: 'muxwire', session: !values.simple }, ({ lockdown }) =>
      lockdown.getValue({ key: values.key as string | undefined, domain: values.domain as string | undefined }),
    );
    if (values.json) printJson(value ?? null);
    else process.stdout.write(formatPlistValue(value, values.key as string | undefined));
  });
}
