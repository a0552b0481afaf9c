/**
 * `muxwire daemon`: the usbmuxd-compatible daemon (README "Commands").
 */
import { isIP } from 'node:net';
import { resolve as resolvePath } from 'node:path';
import { parseArgs } from 'node:util';
import { MuxwireError } from '../../errors.js';
import { log, setLogLevel } from '../../log.js';
import { reportFailure } from '../main.js';
import { MuxDaemon } from '../../daemon/mux-daemon.js';
import { DEFAULT_PAIR_DIR } from '../../daemon/pair-store.js';
import { parsePairAccess, readTcpToken } from '../../daemon/access-policy.js';
import { tuneV8ForDaemon } from '../../daemon/v8-tuning.js';
import { DEFAULT_SOCKET_PATH, parseListenAddress, takeListenFds } from '../../daemon/server.js';
import type { TcpAddress } from '../../daemon/server.js';
import type { DeviceSource } from '../../transport/device-link.js';

const HELP = `usage: muxwire daemon [options]

Serves the usbmuxd client protocol (binary and plist) so libimobiledevice's tools, go-ios and
appium-ios-device work unchanged, and runs the device mux protocol to each attached device.

options:
  --socket PATH         UNIX socket to serve (default ${DEFAULT_SOCKET_PATH}; UNIX:PATH works too);
                        clients find it with USBMUXD_SOCKET_ADDRESS=UNIX:PATH
  --socket-mode MODE    octal mode of the socket file (default 0666, as usbmuxd, so every local
                        user reaches devices; e.g. 0660 to limit it to the socket's group)
  --no-socket           serve no UNIX socket (use with --listen)
  --listen HOST:PORT    also serve TCP (repeatable); PORT alone means 127.0.0.1:PORT. Loopback
                        only, unless --tcp-token is given
  --tcp-token FILE      every TCP client must first send {MessageType: "Authenticate", Token:
                        <the file's text>} (file mode 0600, 16+ bytes); UNIX clients never do
  --pair-access WHO     who may read, save and delete pair records: any (default, as usbmuxd:
                        every user who reaches the socket), owner (root and the daemon's user),
                        group:NAME (and members of group NAME). Others get Result 13; listing
                        and connecting stay open. owner and group need the addon (SO_PEERCRED)
  --pair-dir DIR        pair records and SystemBUID, usbmuxd's layout (default ${DEFAULT_PAIR_DIR})
  --vusb-dir DIR        take simulated devices from a vusb bus directory (see 'muxwire sim')
  --simulate N          start N simulated devices inside the daemon (echo 7, sink 9, source 19,
                        reset 13, lockdownd, AFC)
  --no-usb              do not look for real USB devices
  --backend B           auto | native | js: which USB implementation finds and drives devices:
                        native (libusb through the addon; MUXWIRE_LIBUSB_PATH picks the library),
                        js (WebUSB through the usb package), auto (native when the addon and
                        libusb load, else js). MUXWIRE_NO_NATIVE=1 forces js
  --no-preflight        do not check pairing when a device appears
  --network             also list network (Wi-Fi) devices found over mDNS (_apple-mobdev2._tcp)
                        that have a pair record (its WiFiMACAddress names the device), as
                        ConnectionType Network; Connect to one is relayed over TCP
  --network-device HOST also list the device at IP address HOST (repeatable, no mDNS needed;
                        it needs a pair record too)
  -v, --verbose         debug logging (-v -v: trace, every packet)
  -h, --help            this text

Under socket activation (LISTEN_FDS and LISTEN_PID, as systemd passes them; see 'muxwire service')
the inherited sockets are served instead of the default socket; --socket and --listen still add
their own.

Prints 'muxwire daemon: listening on <address>' when ready. SIGINT/SIGTERM reset every device
connection, close every client and remove the socket file.
`;

export async function run(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: argv,
      allowPositionals: false,
      options: {
        socket: { type: 'string' },
        'socket-mode': { type: 'string' },
        'no-socket': { type: 'boolean' },
        listen: { type: 'string', multiple: true },
        'tcp-token': { type: 'string' },
        'pair-access': { type: 'string' },
        'pair-dir': { type: 'string' },
        'vusb-dir': { type: 'string' },
        simulate: { type: 'string' },
        'no-usb': { type: 'boolean' },
        backend: { type: 'string' },
        'no-preflight': { type: 'boolean' },
        network: { type: 'boolean' },
        'network-device': { type: 'string', multiple: true },
        verbose: { type: 'boolean', short: 'v', multiple: true },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    return reportFailure('daemon', new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `${(err as Error).message.split('\n')[0]}; see muxwire daemon --help`));
  }
  const o = args.values;
  if (o.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const verbosity = o.verbose?.length ?? 0;
  if (verbosity >= 2) setLogLevel('trace');
  else if (verbosity === 1) setLogLevel('debug');
  // Before any client is served: V8 reads the budget when a function's feedback is allocated.
  const v8Flags = tuneV8ForDaemon();
  if (v8Flags.length > 0) log.debug(`V8 flags: ${v8Flags.join(' ')}`);

  let daemon: MuxDaemon | undefined;
  const sims: Array<{ close(): Promise<void> }> = [];
  try {
    const backend = o.backend ?? 'auto';
    if (!['auto', 'native', 'js'].includes(backend)) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `--backend must be auto, native or js, not '${backend}'`);
    }
    let socketMode: number | undefined;
    if (o['socket-mode'] !== undefined) {
      if (!/^0?[0-7]{3}$/.test(o['socket-mode'])) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `--socket-mode must be octal like 0666, not '${o['socket-mode']}'`);
      socketMode = parseInt(o['socket-mode'], 8);
    }
    const listen: TcpAddress[] = (o.listen ?? []).map(parseListenAddress);
    let simulate = 0;
    if (o.simulate !== undefined) {
      simulate = Number(o.simulate);
      if (!/^\d+$/.test(o.simulate) || simulate > 1024) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `--simulate takes a count from 0 to 1024, not '${o.simulate}'`);
    }
    const networkHosts = o['network-device'] ?? [];
    for (const host of networkHosts) {
      if (isIP(host) === 0) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `--network-device takes an IP address, not '${host}'`);
    }
    const listenFds = takeListenFds();
    if (o['no-socket'] && listen.length === 0 && listenFds.length === 0) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', '--no-socket needs at least one --listen');

    const pairAccess = parsePairAccess(o['pair-access'] ?? 'any');
    const tcpToken = o['tcp-token'] !== undefined ? readTcpToken(o['tcp-token']) : undefined;
    if (tcpToken !== undefined && listen.length === 0) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', '--tcp-token needs a --listen');

    const pairDir = o['pair-dir'] ?? DEFAULT_PAIR_DIR;
    daemon = new MuxDaemon({
      pairAccess,
      ...(tcpToken !== undefined ? { tcpToken } : {}),
      socketPath: o['no-socket'] ? null : o.socket !== undefined ? socketPathOption(o.socket) : listenFds.length > 0 ? null : DEFAULT_SOCKET_PATH,
      ...(socketMode !== undefined ? { socketMode } : {}),
      listen,
      listenFds,
      pairDir,
      preflight: !o['no-preflight'],
    });
    await daemon.start();

    // The WebUSB path reads simulated devices from MUXWIRE_VUSB_DIR; the same bus given as
    // --vusb-dir is served by the vusb transport alone (one host stack per device, like a cable).
    const envBus = process.env.MUXWIRE_VUSB_DIR;
    const sameBus = envBus !== undefined && o['vusb-dir'] !== undefined && resolvePath(envBus) === resolvePath(o['vusb-dir']);
    if (!o['no-usb'] && !sameBus) {
      const { UsbSource } = await import('../../transport/usb-source.js');
      const usb = new UsbSource({ backend: backend as 'auto' | 'native' | 'js' });
      try {
        await daemon.addSource(usb);
        log.debug(`USB backend ${usb.backend}: ${usb.backendReason}`);
      } catch (err) {
        // A backend asked for by name must serve; with auto, a machine without USB still serves
        // --vusb-dir and --simulate devices.
        if (o.backend !== undefined && backend !== 'auto') throw err;
        log.warn(`no USB devices will be found: ${(err as Error).message}`);
      }
    }

    if (o['vusb-dir'] !== undefined) {
      const { VusbSource } = await import('../../transport/vusb-source.js');
      const source: DeviceSource = new VusbSource({ dir: o['vusb-dir'] });
      await daemon.addSource(source);
    }
    if (o.network || networkHosts.length > 0) {
      const { createNetworkSource } = await import('../../daemon/network-devices.js');
      await daemon.addSource(createNetworkSource(daemon.pairStore, { mdns: o.network === true, hosts: networkHosts }));
    }
    if (simulate > 0) {
      const { SimulatedDevice } = await import('../../sim/simulator.js');
      for (let i = 0; i < simulate; i++) {
        const sim = await SimulatedDevice.create({});
        sims.push(sim);
        daemon.addLink(sim.inProcessLink());
      }
    }

    const running = daemon;
    const stopped = new Promise<void>((resolve) => {
      const stop = (signal: string): void => {
        log.info(`${signal}: shutting down`);
        process.off('SIGINT', onInt);
        process.off('SIGTERM', onTerm);
        resolve();
      };
      const onInt = (): void => stop('SIGINT');
      const onTerm = (): void => stop('SIGTERM');
      process.on('SIGINT', onInt);
      process.on('SIGTERM', onTerm);
    });
    // Ready only once the signals are handled: a supervisor may stop us as soon as it reads this.
    for (const addr of daemon.addresses) process.stdout.write(`muxwire daemon: listening on ${addr}\n`);
    await stopped;
    await running.close();
    await Promise.all(sims.map((s) => s.close().catch(() => undefined)));
    return 0;
  } catch (err) {
    await daemon?.close().catch(() => undefined);
    await Promise.all(sims.map((s) => s.close().catch(() => undefined)));
    return reportFailure('daemon', err);
  }
}

/**
 * `--socket`: a path, also in the spellings clients are given (`UNIX:/path`, `unix:///path`). A
 * TCP spelling (`host:port`, `tcp://…`) is refused with a pointer to --listen: as a path it would
 * make a socket file named like an address.
 */
function socketPathOption(text: string): string {
  const lower = text.toLowerCase();
  const path = lower.startsWith('unix://') ? text.slice('unix://'.length) : lower.startsWith('unix:') ? text.slice('unix:'.length) : text;
  if (path === '' || path.includes('\0')) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `--socket takes a path, not '${text}'`);
  if (lower.startsWith('tcp://') || (path === text && /^[^/]*:\d{1,5}$/.test(text))) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `--socket takes a UNIX socket path; '${text}' is a TCP address: use --listen ${text.replace(/^tcp:\/\//i, '')}`);
  }
  return path;
}
