/**
 * `muxwire sim`: simulated iPhones on a vusb bus directory, until SIGINT or SIGTERM unplugs them.
 * Prints `muxwire sim: ready <udid> <path>` for each device once a host can open it.
 */
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { MuxwireError } from '../../errors.js';
import { setLogLevel } from '../../log.js';
import { SimulatedDevice } from '../../sim/simulator.js';
import type { SimulatedDeviceOptions } from '../../sim/simulator.js';
import { parseTrustMode } from '../../sim/sim-pairing.js';
import { reportFailure } from '../main.js';

const HELP = `usage: muxwire sim [options]

Runs simulated iPhones on a vusb bus directory: each one listens on <dir>/<udid>.vusb, where
'muxwire daemon --vusb-dir DIR' (or usbmuxd through the vusb libusb library) finds it. A device
serves lockdownd on port 62078 (pairing, TLS sessions, StartService com.apple.afc) and the bench
services echo (7), sink (9), source (19) and reset (13: N bytes, then an RST). One line per device is printed when it can serve:
  muxwire sim: ready <udid> <path>
With --network ADDR the device is also on the network, as an iPhone on Wi-Fi: lockdownd on TCP
ADDR:62078, each started service on its own TCP port at ADDR, and an mDNS advertisement of
_apple-mobdev2._tcp (instance <Wi-Fi MAC>@<link-local address>) on the interface of ADDR, where
'muxwire daemon --network' finds it. It prints, once reachable:
  muxwire sim: network <udid> <addr> <service name>
SIGUSR1 takes the network side down (mDNS goodbye, listeners closed; USB stays) and prints
'muxwire sim: network down <udid>'; SIGUSR2 brings it back. Without --network both are ignored
(one line on stderr).
SIGINT or SIGTERM unplugs every device and exits.

options:
  --vusb-dir DIR      bus directory (default: $MUXWIRE_VUSB_DIR, else ./vusb)
  --udid U            UDID, 00008120-0123456789ABCDEF or 40 hex digits (default: random)
  --name N            DeviceName (default: Muxwire's iPhone)
  --product-type T    ProductType, e.g. iPhone15,2 (default)
  --ios VERSION       ProductVersion, e.g. 17.5 (default)
  --afc-root DIR      directory served over AFC, made if missing (default: <state-dir>/Media,
                      else a temporary directory removed on exit)
  --backup-root DIR   the content mobilebackup2 backs up and restores, DIR/<Domain>/<path>
                      (default: <state-dir>/Backup, else a temporary directory with a small
                      built-in set, removed on exit; with --count N, each device uses DIR/sim-<i>)
  --trust MODE        answer to Pair: accept (default), deny, passcode (the device is locked
                      with a passcode) or delay:MS (accept after MS milliseconds)
  --state-dir DIR     keep identity and trusted hosts here across runs (with --count N, each
                      device uses DIR/sim-<i>); without it the device forgets them on exit
  --mux-version 1|2   highest mux protocol version the device answers (default 2)
  --speed high|super  USB speed: high (480 Mbit/s, 512-byte packets, default) or super
                      (5 Gbit/s, 1024-byte packets)
  --count N           run N devices (default 1; --udid names only one device)
  --network ADDR      also serve the device on the network at IP address ADDR (one device)
  --no-mdns           with --network: do not advertise over mDNS (reach it by address)
  --no-usb            with --network: no vusb side, the device is on the network only
  -v, --verbose       debug logging on stderr
  -h, --help          this help`;

const OPTIONS = {
  'vusb-dir': { type: 'string' },
  udid: { type: 'string' },
  name: { type: 'string' },
  'product-type': { type: 'string' },
  ios: { type: 'string' },
  'afc-root': { type: 'string' },
  'backup-root': { type: 'string' },
  trust: { type: 'string' },
  'state-dir': { type: 'string' },
  'mux-version': { type: 'string' },
  speed: { type: 'string' },
  count: { type: 'string' },
  network: { type: 'string' },
  'no-mdns': { type: 'boolean' },
  'no-usb': { type: 'boolean' },
  verbose: { type: 'boolean', short: 'v' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Most devices one command starts (each holds a socket and a few file descriptors). */
const MAX_COUNT = 1000;

function badArgument(message: string): MuxwireError {
  return new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', message);
}

type Values = { [K in keyof typeof OPTIONS]?: (typeof OPTIONS)[K]['type'] extends 'string' ? string : boolean };

function parse(argv: string[]): Values {
  try {
    return parseArgs({ args: argv, options: OPTIONS, allowPositionals: false, strict: true }).values as Values;
  } catch (err) {
    throw badArgument((err as Error).message.split('\n')[0] ?? 'bad arguments');
  }
}

/** The options of device `index` of `count` from the command line (validated). */
function deviceOptions(values: Values, index: number, count: number): SimulatedDeviceOptions {
  const opts: SimulatedDeviceOptions = {};
  if (values.udid !== undefined) opts.udid = values.udid;
  if (values.name !== undefined) opts.name = count > 1 ? `${values.name} ${index + 1}` : values.name;
  if (values['product-type'] !== undefined) opts.productType = values['product-type'];
  if (values.ios !== undefined) opts.iosVersion = values.ios;
  if (values['afc-root'] !== undefined) opts.afcRoot = resolve(values['afc-root']);
  if (values['backup-root'] !== undefined) {
    const dir = resolve(values['backup-root']);
    opts.backupRoot = count > 1 ? join(dir, `sim-${index}`) : dir;
  }
  if (values.trust !== undefined) opts.trust = parseTrustMode(values.trust);
  if (values['state-dir'] !== undefined) {
    const dir = resolve(values['state-dir']);
    opts.stateDir = count > 1 ? join(dir, `sim-${index}`) : dir;
  }
  if (values['mux-version'] !== undefined) {
    if (values['mux-version'] !== '1' && values['mux-version'] !== '2') throw badArgument(`--mux-version must be 1 or 2, not '${values['mux-version']}'`);
    opts.muxVersion = values['mux-version'] === '1' ? 1 : 2;
  }
  if (values.speed !== undefined) {
    if (values.speed !== 'high' && values.speed !== 'super') throw badArgument(`--speed must be high or super, not '${values.speed}'`);
    opts.speed = values.speed;
  }
  return opts;
}

function parseCount(text: string | undefined): number {
  if (text === undefined) return 1;
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isInteger(n) || n < 1 || n > MAX_COUNT) {
    throw badArgument(`--count must be a whole number from 1 to ${MAX_COUNT}, not '${text}'`);
  }
  return n;
}

/** The first SIGINT or SIGTERM; `release()` removes the handlers (they are removed once one fires). */
function watchSignals(): { signalled: Promise<NodeJS.Signals>; received: () => boolean; release: () => void } {
  let got: NodeJS.Signals | undefined;
  let onSignal: (signal: NodeJS.Signals) => void = () => undefined;
  const release = (): void => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
  const signalled = new Promise<NodeJS.Signals>((resolveSignal) => {
    onSignal = (signal) => {
      got = signal;
      release();
      resolveSignal(signal);
    };
  });
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return { signalled, received: () => got !== undefined, release };
}

export async function run(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  const devices: SimulatedDevice[] = [];
  // Listen for signals before the first device exists, so an early SIGTERM still unplugs cleanly.
  const signals = watchSignals();
  // From the start too: a SIGUSR1/SIGUSR2 right after the ready line must not find no handler.
  const ignoring = ignoreNetworkSignals(argv.includes('--network') ? 'the network side is not up yet' : 'no network side (start with --network ADDR)');
  try {
    const values = parse(argv);
    if (values.verbose) setLogLevel('debug');
    const count = parseCount(values.count);
    if (count > 1 && values.udid !== undefined) throw badArgument('--udid names one device; leave it out with --count');
    // An empty MUXWIRE_VUSB_DIR counts as unset, not as the current directory.
    const busDir = resolve(values['vusb-dir'] ?? (process.env.MUXWIRE_VUSB_DIR || 'vusb'));
    const network = values.network;
    if (network === undefined && (values['no-mdns'] || values['no-usb'])) throw badArgument('--no-mdns and --no-usb go with --network ADDR');
    if (network !== undefined && count > 1) throw badArgument('--network serves one device (lockdownd has one port 62078 per address)');
    // Checked before any ready line: a supervisor waiting for one must not see it for a sim that fails.
    if (network !== undefined && isIP(network) === 0) throw new MuxwireError('MUXWIRE_ERR_BAD_ADDRESS', `--network wants an IP address, not '${network}'`);
    const plans = Array.from({ length: count }, (_, i) => deviceOptions(values, i, count));
    for (const opts of plans) {
      if (signals.received()) break;
      const device = await SimulatedDevice.create(opts);
      devices.push(device);
      if (!values['no-usb']) {
        const path = await device.plug(busDir);
        process.stdout.write(`muxwire sim: ready ${device.udid} ${path}\n`);
      }
    }
    let onNetwork = ignoring;
    if (network !== undefined && devices[0] !== undefined) {
      ignoring.release();
      onNetwork = networkControl(devices[0], network, !values['no-mdns']);
    }
    await onNetwork.up();
    await signals.signalled;
    onNetwork.release();
    await closeAll(devices);
    return 0;
  } catch (err) {
    signals.release();
    ignoring.release();
    await closeAll(devices);
    return reportFailure('sim', err);
  }
}

/**
 * The network side of `device` at `address`, and SIGUSR1 / SIGUSR2 to take it down and up while
 * the USB side stays (one change at a time, in the order the signals came).
 */
function networkControl(device: SimulatedDevice, address: string, advertise: boolean): { up: () => Promise<void>; release: () => void } {
  let chain = Promise.resolve();
  const up = async (): Promise<void> => {
    if (device.network !== undefined) return;
    const side = await device.startNetwork(address, { advertise });
    process.stdout.write(`muxwire sim: network ${device.udid} ${side.address} ${side.serviceName}\n`);
  };
  const down = async (): Promise<void> => {
    if (device.network === undefined) return;
    await device.stopNetwork();
    process.stdout.write(`muxwire sim: network down ${device.udid}\n`);
  };
  const report = (err: unknown): void => {
    process.stderr.write(`muxwire sim: ${err instanceof Error ? err.message : String(err)}\n`);
  };
  const onDown = (): void => {
    chain = chain.then(down).catch(report);
  };
  const onUp = (): void => {
    chain = chain.then(up).catch(report);
  };
  process.on('SIGUSR1', onDown);
  process.on('SIGUSR2', onUp);
  return {
    up,
    release: () => {
      process.off('SIGUSR1', onDown);
      process.off('SIGUSR2', onUp);
    },
  };
}

/**
 * Until a network side is up (and always without --network), SIGUSR1 and SIGUSR2 have nothing
 * to do: they are answered with one line instead of their default actions (SIGUSR2 would end the
 * sim without unplugging, and Node starts its inspector on SIGUSR1).
 */
function ignoreNetworkSignals(why: string): { up: () => Promise<void>; release: () => void } {
  const onSignal = (signal: NodeJS.Signals): void => {
    process.stderr.write(`muxwire sim: ${signal} ignored: ${why}\n`);
  };
  process.on('SIGUSR1', onSignal);
  process.on('SIGUSR2', onSignal);
  return {
    up: async () => undefined,
    release: () => {
      process.off('SIGUSR1', onSignal);
      process.off('SIGUSR2', onSignal);
    },
  };
}

async function closeAll(devices: SimulatedDevice[]): Promise<void> {
  await Promise.all(devices.map((d) => d.close().catch(() => undefined)));
}
