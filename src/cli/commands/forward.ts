import { MuxwireError } from '../../errors.js';
import { parseForwardPair, PortForwarder } from '../../client/port-forwarder.js';
import { COMMON_HELP, makeClient, parseCommand, runCommand } from '../common.js';
import { NETWORK_HELP, NETWORK_OPTION } from '../device-command.js';

const HELP = `usage: muxwire forward [options] LOCAL:DEVICE...

Forwards each local TCP port to a device port (e.g. 2222:22) until interrupted. Every accepted
connection looks the device up again, so forwarding survives unplug and replug.

options:
  --bind ADDR     local address to bind (default 127.0.0.1)
${NETWORK_HELP}
${COMMON_HELP}`;

export function run(argv: string[]): Promise<number> {
  return runCommand('forward', HELP, argv, async () => {
    const { values, positionals } = parseCommand(argv, { ...NETWORK_OPTION, bind: { type: 'string' } });
    if (positionals.length === 0) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', 'give at least one LOCAL:DEVICE pair');
    const pairs = positionals.map(parseForwardPair);
    const forwarder = new PortForwarder({ mux: makeClient(values), pairs, udid: values.udid, ...(values.network === true ? { connection: 'Network' as const } : {}), host: values.bind as string | undefined });
    const bound = await forwarder.listen();
    for (const { pair, address } of bound) {
      process.stdout.write(`muxwire forward: ready ${address.address}:${address.port} -> device:${pair.devicePort}\n`);
    }
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    await forwarder.close();
  });
}
