import { MuxwireError } from '../../errors.js';
import { startService } from '../../client/device-services.js';
import { AfcClient } from '../../services/afc/afc-client.js';
import type { AfcTransferResult } from '../../services/afc/afc-transfer.js';
import { ProgressLine, formatBytes, formatRate, withLockdown, NETWORK_HELP, NETWORK_OPTION } from '../device-command.js';
import { COMMON_HELP, makeClient, parseCommand, printJson, runCommand } from '../common.js';

const HELP = `usage: muxwire afc [options] <operation> ARGS

Moves files over AFC (com.apple.afc, the device's media folder), in a session with the stored
pair record.

operations:
  ls PATH              list a directory
  stat PATH            file information
  pull REMOTE LOCAL    copy a device file here (pipelined 1 MiB reads, progress on stderr);
                       LOCAL may be a directory; an existing file is replaced only by a
                       complete copy
  push LOCAL REMOTE    copy a file to the device (pipelined 1 MiB writes, progress on stderr);
                       REMOTE may be a directory; same all-or-nothing replacement
  rm [-r] PATH         remove a file or an empty directory; -r removes a tree
  mkdir PATH           make a directory (and its parents)
  mv FROM TO           rename
  devinfo              the device's file system figures

options:
  -r, --recursive      with rm: remove a whole tree
  --no-progress        no progress line on pull and push
${NETWORK_HELP}
${COMMON_HELP}`;

const ARITY: Record<string, number> = { ls: 1, stat: 1, pull: 2, push: 2, rm: 1, mkdir: 1, mv: 2, devinfo: 0 };

export function run(argv: string[]): Promise<number> {
  return runCommand('afc', HELP, argv, async () => {
    const { values, positionals } = parseCommand(argv, {
      ...NETWORK_OPTION,
      recursive: { type: 'boolean', short: 'r' },
      'no-progress': { type: 'boolean' },
    });
    const [op, ...args] = positionals;
    if (op === undefined || ARITY[op] === undefined) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', op ? `unknown afc operation '${op}' (see --help)` : 'give an afc operation (see --help)');
    }
    if (args.length !== ARITY[op]) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `afc ${op} takes ${ARITY[op]} argument${ARITY[op] === 1 ? '' : 's'}, got ${args.length}`);
    }
    const client = makeClient(values);
    await withLockdown(client, { udid: values.udid, network: values.network === true }, { label: 'muxwire' }, async (handle) => {
      const afc = new AfcClient(await startService(client, handle, 'com.apple.afc'));
      try {
        await operate(afc, op, args as string[], { json: values.json === true, progress: values['no-progress'] !== true, recursive: values.recursive === true });
      } finally {
        afc.disconnect();
      }
    });
  });
}

async function operate(afc: AfcClient, op: string, args: string[], o: { json: boolean; progress: boolean; recursive: boolean }): Promise<void> {
  const [a = '', b = ''] = args;
  switch (op) {
    case 'ls': {
      const names = await afc.list(a);
      if (o.json) printJson(names);
      else for (const n of names) process.stdout.write(n + '\n');
      return;
    }
    case 'stat': {
      const info = await afc.stat(a);
      if (o.json) printJson(info);
      else process.stdout.write(`${a}: ${info.type} ${info.size} bytes, mtime ${new Date(Number(info.mtimeNs / 1_000_000n)).toISOString()}\n`);
      return;
    }
    case 'devinfo': {
      const info = await afc.deviceInfo();
      if (o.json) printJson(info);
      else process.stdout.write(`${info.model}: ${formatBytes(info.freeBytes)} free of ${formatBytes(info.totalBytes)}, block ${info.blockSize}\n`);
      return;
    }
    case 'pull':
    case 'push': {
      const line = new ProgressLine(op === 'pull' ? `pull ${a}` : `push ${b}`);
      let drawn = false;
      const onProgress = o.progress
        ? (p: { bytes: number; total?: number }) => {
            drawn = true;
            line.update(p.bytes, p.total);
          }
        : undefined;
      let result: AfcTransferResult;
      try {
        result = await cancelledBySignals((signal) => (op === 'pull' ? afc.pullFile(a, b, { onProgress, signal }) : afc.pushFile(a, b, { onProgress, signal })));
      } finally {
        // Also on failure: the error line must not land on the end of a half-drawn progress line.
        if (drawn) line.done();
      }
      const seconds = line.elapsedSeconds();
      if (o.json) printJson({ operation: op, bytes: result.bytes, path: result.path, seconds, megabytesPerSecond: result.bytes / seconds / 1e6 });
      else process.stdout.write(`${op === 'pull' ? 'pulled' : 'pushed'} ${formatBytes(result.bytes)} in ${seconds.toFixed(2)} s (${formatRate(result.bytes, seconds)})\n`);
      return;
    }
    case 'rm':
      await afc.rm(a, { recursive: o.recursive });
      break;
    case 'mkdir':
      await afc.mkdir(a);
      break;
    case 'mv':
      await afc.rename(a, b);
      break;
  }
  if (o.json) printJson({ operation: op, ok: true });
}

/**
 * Runs a transfer with SIGINT and SIGTERM as its cancellation, so the copy removes its part file
 * and fails with MUXWIRE_ERR_ABORTED instead of the process dying with the part file left behind.
 * Each handler fires once: a second Ctrl-C kills at once, for a device that no longer answers.
 */
async function cancelledBySignals<T>(transfer: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const cancel = (): void => controller.abort();
  process.once('SIGINT', cancel);
  process.once('SIGTERM', cancel);
  try {
    return await transfer(controller.signal);
  } finally {
    process.off('SIGINT', cancel);
    process.off('SIGTERM', cancel);
  }
}
