/** `muxwire restore [-u UDID] DIR [--source UDID] [--no-reboot]`: restores a backup onto the device. */
import { resolve } from 'node:path';
import { MuxwireError } from '../../errors.js';
import { COMMON_HELP, parseCommand, runCommand } from '../common.js';
import { runBackupOperation } from './backup.js';

const HELP = `usage: muxwire restore [options] DIR

Restores DIR/<UDID>/ (a backup by muxwire backup or idevicebackup2) onto the device over
com.apple.mobilebackup2, system files included. The device asks to reboot when done unless
--no-reboot is given (a simulated device only logs it).

options:
  --source UDID   restore the backup of another device (DIR/<UDID>/)
  --no-reboot     do not reboot the device when done
  --no-progress   no progress line on stderr
${COMMON_HELP}`;

export function run(argv: string[]): Promise<number> {
  return runCommand('restore', HELP, argv, async () => {
    const { values, positionals } = parseCommand(argv, {
      source: { type: 'string' },
      'no-reboot': { type: 'boolean' },
      'no-progress': { type: 'boolean' },
    });
    if (positionals.length !== 1) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', 'give one backup directory (see --help)');
    const dir = resolve(positionals[0]!);
    const source = typeof values.source === 'string' ? values.source : undefined;
    await runBackupOperation('restore', values, dir, (client, signal) =>
      client.restore(dir, { reboot: values['no-reboot'] !== true, signal, ...(source !== undefined ? { sourceUdid: source } : {}) }),
    );
  });
}
