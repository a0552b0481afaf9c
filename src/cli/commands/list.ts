import { MuxwireError } from '../../errors.js';
import { COMMON_HELP, makeClient, parseCommand, printJson, runCommand } from '../common.js';

const HELP = `usage: muxwire list [options]

Lists the devices the usbmuxd daemon has attached: UDID, connection (USB or Network), device id,
and the product id (USB) or the address the daemon reaches it at (Network). A device on USB and on
the network at once has one line for each.

options:
  -n, --network   list only network (Wi-Fi) entries
  -u, --udid UDID list only that device's entries (none: MUXWIRE_ERR_NO_DEVICE)

${COMMON_HELP}`;

export function run(argv: string[]): Promise<number> {
  return runCommand('list', HELP, argv, async () => {
    const { values } = parseCommand(argv, { network: { type: 'boolean', short: 'n' } }, false);
    const devices = (await makeClient(values).listDevices()).filter((d) => (!values.network || d.connectionType === 'Network') && (values.udid === undefined || d.udid === values.udid));
    if (values.udid !== undefined && devices.length === 0) throw new MuxwireError('MUXWIRE_ERR_NO_DEVICE', `no device with UDID ${values.udid}${values.network ? ' on the network' : ''}`);
    if (values.json) {
      printJson(devices.map(({ properties: _p, ...d }) => d));
      return;
    }
    for (const d of devices) {
      const where = d.connectionType === 'Network' ? `address=${d.networkAddress ?? '?'}` : `product=0x${d.productId.toString(16).padStart(4, '0')}`;
      process.stdout.write(`${d.udid}\t${d.connectionType}\tid=${d.deviceId}\t${where}\n`);
    }
  });
}
