#!/usr/bin/env node
/**
 * The `muxwire` command: one dispatcher, one file per subcommand in `commands/`, each exporting
 * `run(argv): Promise<number>` (the exit code). Subcommands load lazily so `muxwire list` does not
 * pay for the simulator's start-up.
 */
import { readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MuxwireError } from '../errors.js';
import { findPackageRoot } from '../accel/addon-loader.js';

type Command = { summary: string; load: () => Promise<{ run(argv: string[]): Promise<number> }> };

const COMMANDS: Record<string, Command> = {
  daemon: { summary: 'run the usbmuxd-compatible daemon', load: () => import('./commands/daemon.js') },
  sim: { summary: 'run a simulated iPhone on a vusb bus directory', load: () => import('./commands/sim.js') },
  list: { summary: 'list attached devices', load: () => import('./commands/list.js') },
  watch: { summary: 'print attach, detach and pair events', load: () => import('./commands/watch.js') },
  info: { summary: 'read lockdown values', load: () => import('./commands/info.js') },
  pair: { summary: 'pair with a device', load: () => import('./commands/pair.js') },
  validate: { summary: 'check the pairing with a device', load: () => import('./commands/validate.js') },
  unpair: { summary: 'remove the pairing with a device', load: () => import('./commands/unpair.js') },
  forward: { summary: 'forward local TCP ports to device ports', load: () => import('./commands/forward.js') },
  afc: { summary: 'move files over AFC', load: () => import('./commands/afc.js') },
  backup: { summary: 'back a device up over mobilebackup2', load: () => import('./commands/backup.js') },
  restore: { summary: 'restore a backup onto a device', load: () => import('./commands/restore.js') },
  'backup-info': { summary: 'show what a backup directory holds', load: () => import('./commands/backup-info.js') },
  demo: { summary: 'daemon, simulated device, pairing and an AFC transfer end to end', load: () => import('./commands/demo.js') },
  bench: { summary: 'run the benchmarks', load: () => import('./commands/bench.js') },
  service: { summary: 'install, remove or inspect muxwire as the systemd usbmuxd service', load: () => import('./commands/service.js') },
  soak: { summary: 'bounded reliability run of the daemon, one table of figures', load: () => import('./commands/soak.js') },
};

/** This installation's version, from its package.json (one source of truth for --version and the units). */
export function packageVersion(): string {
  const root = findPackageRoot(import.meta.url);
  if (root === undefined) return 'unknown';
  try {
    const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version?: unknown }).version;
    return typeof version === 'string' ? version : 'unknown';
  } catch {
    return 'unknown';
  }
}

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(11)} ${c.summary}`);
  return `usage: muxwire <command> [options]\n\ncommands:\n${lines.join('\n')}\n\nRun 'muxwire <command> --help' for a command's options.`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage() + '\n');
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-V') {
    process.stdout.write(`muxwire ${packageVersion()}\n`);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`muxwire: unknown command '${name}'\n${usage()}\n`);
    return 2;
  }
  let mod: { run(argv: string[]): Promise<number> };
  try {
    mod = await command.load();
  } catch (err) {
    process.stderr.write(`muxwire ${name}: not available in this build (${(err as Error).message})\n`);
    return 2;
  }
  return mod.run(rest);
}

/** Prints a failure as one readable line, with its code, and returns the exit status (2 for a usage error). */
export function reportFailure(command: string, err: unknown): number {
  const code = failureCode(err);
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`muxwire ${command}: ${message.split('\n')[0]}${code !== undefined ? ` (${code})` : ''}\n`);
  return code === 'MUXWIRE_ERR_BAD_ARGUMENT' ? 2 : 1;
}

/**
 * The code a failure is reported with: its own, or MUXWIRE_ERR_IO for a system call's error
 * (ENOENT, EISDIR, ENOSPC… from a local file the command was given).
 */
function failureCode(err: unknown): string | undefined {
  if (err instanceof MuxwireError) return err.code;
  const errno = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof errno === 'string' && /^E[A-Z0-9]+$/.test(errno) ? 'MUXWIRE_ERR_IO' : undefined;
}

/** True when this module is the program (run directly or through the npm bin symlink). */
function isEntry(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntry()) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      process.exitCode = reportFailure(process.argv[2] ?? '', err);
    },
  );
}
