/**
 * `muxwire backup [-u UDID] DIR [--full]`: backs a device up into DIR/<UDID>/ over mobilebackup2,
 * in the layout idevicebackup2 writes, with a progress line (files, bytes, rate) on stderr and a
 * summary on stdout (`--json`: one document). SIGINT or SIGTERM cancels cleanly: the previous
 * snapshot stays as it was. `runBackupOperation` is shared with `muxwire restore`.
 */
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { MuxwireError } from '../../errors.js';
import { BackupClient } from '../../services/backup/backup-client.js';
import type { BackupProgress, BackupResult } from '../../services/backup/backup-client.js';
import { formatBytes, formatRate } from '../device-command.js';
import { COMMON_HELP, makeClient, parseCommand, printJson, runCommand } from '../common.js';
import type { CommonValues } from '../common.js';

const HELP = `usage: muxwire backup [options] DIR

Backs the device up into DIR/<UDID>/ over com.apple.mobilebackup2, in the layout idevicebackup2
writes (Info.plist, Manifest.plist, Status.plist, Manifest.db, files under ab/ab12…), so either
tool can restore the other's backups. A backup after a finished one is incremental (only what
changed travels). Needs a pairing (muxwire pair). SIGINT/SIGTERM cancels; the previous snapshot
stays whole.

options:
  --full          ask for a full backup even when DIR holds a previous one
  --no-progress   no progress line on stderr
${COMMON_HELP}`;

/** Runs `op` with a progress line, SIGINT/SIGTERM as cancellation, and prints the summary. */
export async function runBackupOperation(
  verb: 'backup' | 'restore',
  values: CommonValues & Record<string, string | boolean | undefined>,
  dir: string,
  op: (client: BackupClient, signal: AbortSignal) => Promise<BackupResult>,
): Promise<void> {
  const st = await stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `${dir} is not a directory`);
  const mux = makeClient(values);
  const device = await mux.findDevice(values.udid);
  const client = new BackupClient(mux, device);
  const ac = new AbortController();
  const cancel = (): void => ac.abort();
  process.once('SIGINT', cancel);
  process.once('SIGTERM', cancel);
  const started = process.hrtime.bigint();
  const seconds = (): number => Number(process.hrtime.bigint() - started) / 1e9;
  const tty = process.stderr.isTTY === true;
  let last = 0;
  if (values['no-progress'] !== true) {
    client.on('progress', (p: BackupProgress) => {
      const now = Date.now();
      if (now - last < 200 && p.percent < 100) return;
      last = now;
      const line = `${verb} ${p.percent.toFixed(0).padStart(3)}% ${p.files} files ${formatBytes(p.bytes)} ${formatRate(p.bytes, seconds())}`;
      process.stderr.write(tty ? `\r${line}\x1b[K` : `${line}\n`);
    });
  }
  try {
    const r = await op(client, ac.signal);
    if (tty && values['no-progress'] !== true) process.stderr.write('\n');
    const summary = { ...r, seconds: Number(seconds().toFixed(3)) };
    if (values.json === true) printJson(summary);
    else process.stdout.write(`${verb} of ${r.udid} done: ${r.files} files, ${formatBytes(r.bytes)} in ${summary.seconds} s (${r.directory})\n`);
  } finally {
    process.off('SIGINT', cancel);
    process.off('SIGTERM', cancel);
  }
}

export function run(argv: string[]): Promise<number> {
  return runCommand('backup', HELP, argv, async () => {
    const { values, positionals } = parseCommand(argv, { full: { type: 'boolean' }, 'no-progress': { type: 'boolean' } });
    if (positionals.length !== 1) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', 'give one backup directory (see --help)');
    const dir = resolve(positionals[0]!);
    await runBackupOperation('backup', values, dir, (client, signal) => client.backup(dir, { full: values.full === true, signal }));
  });
}
