/**
 * What every client command shares: the common options (`--socket`, `-u/--udid`, `--json`,
 * `--help`), the usbmux client they build, and output: human text by default, one JSON document
 * with `--json`, one-line errors with a code and a non-zero exit.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { MuxwireError } from '../errors.js';
import { UsbmuxClient } from '../client/usbmux-client.js';
import { readTcpToken } from '../daemon/access-policy.js';
import { reportFailure } from './main.js';

export const COMMON_OPTIONS = {
  socket: { type: 'string' },
  udid: { type: 'string', short: 'u' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  timeout: { type: 'string' },
  'tcp-token': { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

/** The values of the common options, once parsed. */
export interface CommonValues {
  socket?: string;
  udid?: string;
  json?: boolean;
  help?: boolean;
  timeout?: string;
  'tcp-token'?: string;
}

export const COMMON_HELP = `common options:
  --socket ADDR   usbmuxd socket: UNIX:/path, unix:///path, /path, host:port,
                  [v6]:port or tcp://host:port
                  (default: $USBMUXD_SOCKET_ADDRESS, else /var/run/usbmuxd)
  -u, --udid UDID the device to use (default: the first USB device)
  --json          print one JSON document instead of text
  --timeout MS    deadline for each request to the daemon (default 5000)
  --tcp-token FILE  the token of a muxwire daemon's TCP listener (its --tcp-token file;
                  default: $MUXWIRE_TCP_TOKEN_FILE); sent first on TCP sockets only
  -h, --help      this help`;

/** Parses argv with the common options plus `extra`; unknown options are a coded error. */
export function parseCommand<T extends NonNullable<ParseArgsConfig['options']>>(
  argv: string[],
  extra: T,
  allowPositionals = true,
): { values: Record<string, string | boolean | undefined> & CommonValues; positionals: string[] } {
  return parseOptions(argv, { ...COMMON_OPTIONS, ...extra }, allowPositionals) as unknown as { values: Record<string, string | boolean | undefined> & CommonValues; positionals: string[] };
}

/** Parses argv with exactly `options` (strict); a parse error is one MUXWIRE_ERR_BAD_ARGUMENT line. */
export function parseOptions<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T, allowPositionals = true): ReturnType<typeof parseArgs<{ args: string[]; options: T; allowPositionals: boolean; strict: true }>> {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (err) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', (err as Error).message.split('\n')[0] ?? 'bad arguments');
  }
}

/** The longest timer Node keeps (2^31 - 1 ms, about 24.8 days); a longer one fires at once. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** `--timeout MS`: whole milliseconds from 1 to MAX_TIMEOUT_MS. */
export function parseTimeout(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const ms = Number(text);
  if (!/^\d+$/.test(text) || ms < 1 || ms > MAX_TIMEOUT_MS) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `--timeout takes whole milliseconds from 1 to ${MAX_TIMEOUT_MS}, not '${text}'`);
  }
  return ms;
}

export function makeClient(values: { socket?: string; timeout?: string; 'tcp-token'?: string }): UsbmuxClient {
  if (values.socket === '') throw new MuxwireError('MUXWIRE_ERR_BAD_ADDRESS', '--socket is empty');
  // The same file the daemon reads (0600, 16..4096 bytes of text), so one file serves both ends.
  const tokenFile = values['tcp-token'] ?? (process.env.MUXWIRE_TCP_TOKEN_FILE || undefined);
  const token = tokenFile !== undefined ? readTcpToken(tokenFile).toString('utf8') : undefined;
  return new UsbmuxClient({ address: values.socket, timeoutMs: parseTimeout(values.timeout), progName: 'muxwire', ...(token !== undefined ? { token } : {}) });
}

/** Runs a command body, turning any failure into one line on stderr and exit status 1 (2 for a usage error). */
export async function runCommand(name: string, help: string, argv: string[], body: () => Promise<number | void>): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(help.trimEnd() + '\n');
    return 0;
  }
  try {
    return (await body()) ?? 0;
  } catch (err) {
    return reportFailure(name, err);
  }
}

/** Prints a value as JSON (Buffers as base64, bigints as numbers or strings, Dates as ISO). */
export function printJson(value: unknown): void {
  process.stdout.write(
    JSON.stringify(
      value,
      (_k, v: unknown) => {
        if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
        if (v && typeof v === 'object' && (v as { type?: string }).type === 'Buffer' && Array.isArray((v as { data?: unknown }).data)) {
          return Buffer.from((v as { data: number[] }).data).toString('base64');
        }
        return v;
      },
      2,
    ) + '\n',
  );
}
