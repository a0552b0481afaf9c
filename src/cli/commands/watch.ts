import { COMMON_HELP, makeClient, parseCommand, runCommand } from '../common.js';

const HELP = `usage: muxwire watch [options]

Prints one line per device event (attached, detached, paired) until interrupted; with --json,
one JSON object per line. Devices already attached are reported first, as attached.

${COMMON_HELP}`;

export function run(argv: string[]): Promise<number> {
  return runCommand('watch', HELP, argv, async () => {
    const { values } = parseCommand(argv, {}, false);
    const abort = new AbortController();
    const stop = (): void => abort.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    const watcher = makeClient(values).watch({ signal: abort.signal });
    await watcher.ready;
    for await (const event of watcher) {
      const device = event.type === 'attached' ? event.device : event.device;
      const id = event.type === 'attached' ? event.device.deviceId : event.deviceId;
      if (values.json) {
        process.stdout.write(JSON.stringify({ event: event.type, deviceId: id, udid: device?.udid, connectionType: device?.connectionType }) + '\n');
      } else {
        process.stdout.write(`${event.type}\t${device?.udid ?? '?'}\tid=${id}\n`);
      }
    }
  });
}
