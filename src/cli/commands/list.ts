import { COMMON_HELP, makeClient, parseCommand, printJson, runCommand } from '../common.js';

const HELP = `usage: muxwire list [options]

Lists the devices the usbmuxd daemon has attached: UDID, connection, device id, product id.

${COMMON_HELP}`;

export function run(argv: string[]): Promise<number> {
  return runCommand('list', HELP, argv, async () => {
    const { values } = parseCommand(argv, {}, false);
    const devices = await makeClient(values).listDevices();
    if (values.json) {
      printJson(devices.map(({ properties: _p, ...d }) => d));
      return;
    }
    for (const d of devices) {
      process.stdout.write(`${d.udid}\t${d.connectionType}\tid=${d.deviceId}\tproduct=0x${d.productId.toString(16).padStart(4, '0')}\n`);
    }
  });
}
