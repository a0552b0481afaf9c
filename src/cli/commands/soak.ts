/**
 * `muxwire soak [--quick]`: a bounded, self-stopping reliability run of the daemon
 * (soak-scenarios.ts) on private UNIX sockets and a private vusb bus, printing one table. Exits 1
 * when a figure is outside its bound.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MuxwireError } from '../../errors.js';
import { UsbmuxClient } from '../../client/usbmux-client.js';
import { parseCommand, printJson, runCommand } from '../common.js';
import { DaemonProcess, FULL, QUICK, killDuringPairing, malformedInput, requestFlood, slowReader, unplugMidTransfer } from './soak-scenarios.js';
import type { SoakContext, SoakRow, SoakSize } from './soak-scenarios.js';

const HELP = `usage: muxwire soak [--quick] [--only NAME,...] [--json]

Runs a muxwire daemon process against simulated devices on a private vusb bus and UNIX sockets
(nothing leaves the machine), through these scenarios, and prints one table of figures with the
bound each must stay within; exits 1 when one does not:

  unplug     unplug a device while 4 connections stream from it (clients closed within 1 s, the
             daemon's fds and RSS before and after)
  kill       kill -9 a daemon while a client saves pair records through it (records corrupted,
             temp files left, modes), then one more start
  slow       one device streams to a fast client while a client reads another at 1 MB/s (RSS)
  flood      a client writes 20 MB of requests and never reads (RSS, another client's latency)
  malformed  random malformed messages, then 200 clients holding half-sent 64 KiB messages

options:
  --quick      the CI size, under two minutes: 10 unplug cycles, 20 kills, a 512 MiB stream, a
               3 s flood, 2,000 messages (the full run: 50, 100, 10 GB, 10 s, 20,000)
  --only LIST  run only these scenarios (comma-separated names above)
  --json       print one JSON document
  -h, --help   this help`;

const SCENARIOS = ['unplug', 'kill', 'slow', 'flood', 'malformed'] as const;
type Scenario = (typeof SCENARIOS)[number];

export function run(argv: string[]): Promise<number> {
  return runCommand('soak', HELP, argv, async () => {
    const { values } = parseCommand(argv, { quick: { type: 'boolean' }, only: { type: 'string' } }, false);
    const size: SoakSize = values.quick === true ? QUICK : FULL;
    const only = typeof values.only === 'string' ? values.only.split(',') : [...SCENARIOS];
    for (const s of only) {
      if (!(SCENARIOS as readonly string[]).includes(s)) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `--only takes ${SCENARIOS.join(', ')}, not '${s}'`);
    }
    const json = values.json === true;
    const started = Date.now();
    const dir = await mkdtemp(join(tmpdir(), 'muxwire-soak-'));
    let ctx: SoakContext | undefined;
    const rows: SoakRow[] = [];
    try {
      const busDir = join(dir, 'bus');
      await mkdir(busDir);
      const daemon = await DaemonProcess.start(join(dir, 'usbmuxd.sock'), join(dir, 'lockdown'), busDir);
      ctx = { dir, busDir, daemon, client: new UsbmuxClient({ address: `UNIX:${daemon.socketPath}`, progName: 'muxwire-soak', timeoutMs: 20_000 }) };
      const steps: Record<Scenario, (c: SoakContext) => Promise<SoakRow[]>> = {
        unplug: (c) => unplugMidTransfer(c, size.unplugCycles),
        kill: (c) => killDuringPairing(c, size.killCycles),
        slow: (c) => slowReader(c, size.streamBytes),
        flood: (c) => requestFlood(c, size.floodBytes, size.floodHoldMs),
        malformed: (c) => malformedInput(c, size.malformedMessages, size.halfMessageClients),
      };
      for (const s of SCENARIOS) {
        if (!only.includes(s)) continue;
        if (!json) process.stderr.write(`soak: ${s}…\n`);
        rows.push(...(await steps[s](ctx)));
      }
    } finally {
      await ctx?.daemon.kill('SIGTERM');
      await rm(dir, { recursive: true, force: true });
    }
    const seconds = (Date.now() - started) / 1000;
    const failed = rows.filter((r) => r.ok === false);
    if (json) printJson({ quick: values.quick === true, seconds, rows, failed: failed.length });
    else process.stdout.write(formatTable(rows) + `\n${values.quick === true ? 'quick' : 'full'} run, ${seconds.toFixed(0)} s: ${failed.length === 0 ? 'every figure within its bound' : `${failed.length} outside the bound`}\n`);
    return failed.length === 0 ? 0 : 1;
  });
}

/** The rows as one aligned table (also the README's form, with pipes). */
export function formatTable(rows: readonly SoakRow[]): string {
  const head = ['scenario', 'figure', 'value', 'bound', ''];
  const cells = rows.map((r, i) => [i > 0 && rows[i - 1]!.scenario === r.scenario ? '' : r.scenario, r.figure, r.value, r.bound ?? '', r.ok === undefined ? '' : r.ok ? 'ok' : 'FAIL']);
  const widths = head.map((h, c) => Math.max(h.length, ...cells.map((row) => row[c]!.length)));
  const line = (row: string[]): string => row.map((v, c) => v.padEnd(widths[c]!)).join('  ').trimEnd();
  return [line(head), ...cells.map(line)].join('\n');
}
