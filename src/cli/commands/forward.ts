import { MuxwireError } from '../../errors.js';
import { setLogLevel } from '../../log.js';
import { parseForwardArgs, PortForwarder } from '../../client/port-forwarder.js';
import { COMMON_HELP, makeClient, parseCommand, runCommand } from '../common.js';
import { NETWORK_HELP, NETWORK_OPTION } from '../device-command.js';

const HELP = `usage: muxwire forward [options] LOCAL:DEVICE...
       muxwire forward [options] LOCAL DEVICE [UDID]      (iproxy's old form)

Forwards each local TCP port to a device port (e.g. 2222:22) until interrupted. Every accepted
connection looks the device up again, so forwarding survives unplug and replug. A replacement for
iproxy that takes its arguments (LOCAL:DEVICE pairs, -u UDID, -n, -l, -s ADDR, -d) and never
drops data: each direction is relayed with backpressure, so a full-duplex stream arrives intact
both ways.

options:
  -s, --source ADDR  local address to listen on, as iproxy's -s (default 127.0.0.1)
  --bind ADDR        the same as --source
  -l, --local        the device's USB entry (the default; iproxy's -l)
  -d, --debug        log each connection (debug lines on stderr; iproxy's -d)
${NETWORK_HELP}
${COMMON_HELP}`;

export function run(argv: string[]): Promise<number> {
  return runCommand('forward', HELP, argv, async () => {
    const { values, positionals } = parseCommand(argv, {
      ...NETWORK_OPTION,
      bind: { type: 'string' },
      source: { type: 'string', short: 's' },
      local: { type: 'boolean', short: 'l' },
      debug: { type: 'boolean', short: 'd', multiple: true },
    });
    if (values.local === true && values.network === true) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', '-l (USB) and -n (network) pick different entries: give one');
    if ((values.debug as unknown as boolean[] | undefined)?.length) setLogLevel('debug');
    const { pairs, udid: positionalUdid } = parseForwardArgs(positionals);
    if (positionalUdid !== undefined && values.udid !== undefined && positionalUdid !== values.udid) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `two different UDIDs: -u ${values.udid} and ${positionalUdid}`);
    }
    const bind = values.bind as string | undefined;
    const source = values.source as string | undefined;
    if (bind !== undefined && source !== undefined && bind !== source) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `two different listen addresses: --bind ${bind} and --source ${source}`);
    }
    const host = source ?? bind;
    if (host === '') throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', 'the listen address is empty');
    const forwarder = new PortForwarder({ mux: makeClient(values), pairs, udid: values.udid ?? positionalUdid, ...(values.network === true ? { connection: 'Network' as const } : {}), host });
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
