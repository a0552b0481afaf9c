/**
 * `muxwire service install|uninstall|status`: muxwire as the system's usbmuxd, the way Debian's
 * usbmuxd package installs itself (a systemd service and a udev rule), plus socket activation:
 *
 * - `muxwire.socket` listens on /run/usbmuxd (= /var/run/usbmuxd) and starts `muxwire.service`
 *   on the first client; the daemon serves the inherited socket (LISTEN_FDS, server.ts).
 * - `39-muxwire.rules` starts `muxwire.service` when an Apple device appears and gives the
 *   daemon's user its device node, as usbmuxd's 39-usbmuxd.rules does for user usbmux.
 *
 * Only one daemon can own the socket: `install` refuses while libimobiledevice's usbmuxd does
 * (its listener on the socket, or its process in this mount namespace) and says how to stop it.
 * Files are written whole or not at all (temporary file, fsync, rename), so a kill -9 leaves
 * either the old file or the new one.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync, realpathSync } from 'node:fs';
import { mkdir, readFile, unlink } from 'node:fs/promises';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '../../atomic-file.js';
import { MuxwireError } from '../../errors.js';
import { parseArgs } from 'node:util';
import { packageVersion } from '../main.js';
import { printJson, runCommand } from '../common.js';

const HELP = `usage: muxwire service install|uninstall|status [options]

Runs muxwire as the system's usbmuxd under systemd, in place of libimobiledevice's usbmuxd:

  install     writes /etc/systemd/system/muxwire.socket (listens on /run/usbmuxd, which is
              /var/run/usbmuxd, and starts the daemon on the first client), muxwire.service (the
              daemon, pair records in /var/lib/lockdown) and /etc/udev/rules.d/39-muxwire.rules
              (starts the service when an Apple device appears, gives the daemon's user the
              device); then, when systemd runs, reloads it and enables muxwire.socket. Refuses
              while libimobiledevice's usbmuxd owns the socket.
  uninstall   stops and disables the units (when systemd runs) and removes the three files.
  status      which files are installed and current, who listens on the socket, whether
              usbmuxd runs, and the units' state when systemd runs.

options:
  --print             print the files instead of writing them (install only; nothing is checked)
  --prefix DIR        write under DIR instead of / (packaging, tests): nothing is reloaded
  --user USER         run the daemon as USER and give USER the device nodes (default root)
  --socket-mode MODE  mode of /run/usbmuxd (default 0666, as usbmuxd)
  --json              status as one JSON document
  -h, --help          this help

The unit runs this installation: ${'`'}node <this muxwire>/dist/src/cli/main.js daemon${'`'}. Install
muxwire where it stays (npm install -g muxwire), not from a temporary npx cache.`;

/** The socket systemd listens on for us: usbmuxd's /var/run/usbmuxd (/var/run is /run). */
export const SERVICE_SOCKET_PATH = '/run/usbmuxd';
/** The first line of every file install writes; uninstall removes only files that start with it. */
export const SERVICE_FILE_MARK = '# Written by muxwire service install';

/** One file of the installation, its path relative to the prefix. */
export interface ServiceFile {
  readonly path: string;
  readonly content: string;
}

export interface ServiceFileOptions {
  /** The node executable the unit runs (default: this process's). */
  node?: string;
  /** muxwire's main.js (default: this installation's). */
  main?: string;
  /** The daemon's user (default root). */
  user?: string;
  /** The socket's mode (default 0o666). */
  socketMode?: number;
}

/** A word for ExecStart=: quoted when it has to be, with systemd's specifiers and variables escaped. */
function unitWord(word: string): string {
  const escaped = word.replace(/%/g, '%%').replace(/\$/g, '$$$$');
  return /^[A-Za-z0-9_./:+@=%-]+$/.test(escaped) ? escaped : `"${escaped.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** The three files `install` writes, as text (pure: `--print` and the tests read the same). */
export function serviceFiles(opts: ServiceFileOptions = {}): ServiceFile[] {
  const node = opts.node ?? process.execPath;
  const main = opts.main ?? realpathSync(fileURLToPath(new URL('../main.js', import.meta.url)));
  const user = opts.user ?? 'root';
  const mode = (opts.socketMode ?? 0o666).toString(8).padStart(4, '0');
  const mark = `${SERVICE_FILE_MARK} (muxwire ${packageVersion()}); 'muxwire service uninstall' removes it.`;
  const socket = `${mark}
[Unit]
Description=muxwire: the usbmuxd socket (/var/run/usbmuxd)

[Socket]
# /var/run is /run: the path every usbmuxd client looks for.
ListenStream=${SERVICE_SOCKET_PATH}
SocketMode=${mode}
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
`;
  const service = `${mark}
[Unit]
Description=muxwire: usbmuxd-compatible iOS device multiplexer
Requires=muxwire.socket
After=muxwire.socket
# One daemon owns the socket and the devices: starting this one stops libimobiledevice's.
Conflicts=usbmuxd.service

[Service]
Type=exec
ExecStart=${[node, main, 'daemon', '--pair-dir', '/var/lib/lockdown'].map(unitWord).join(' ')}
${user === 'root' ? '' : `User=${user}\n`}# Pair records, in usbmuxd's place and layout; made the daemon's user's.
StateDirectory=lockdown
Restart=on-failure
NoNewPrivileges=yes
ProtectSystem=full
ProtectHome=read-only
PrivateTmp=yes

[Install]
Also=muxwire.socket
`;
  const match = 'SUBSYSTEM=="usb", ACTION=="add|bind"';
  const rules = `${mark}
# An Apple device (vendor 05ac) in usbmuxd's product range: the daemon's user gets its node, and
# systemd starts muxwire.service (the same match as usbmuxd's 39-usbmuxd.rules).
${match}, ENV{DEVTYPE}=="usb_device", ATTR{idVendor}=="05ac", ATTR{idProduct}=="12[9a][0-9a-f]|8600", OWNER="${user}", MODE="0660", TAG+="systemd", ENV{SYSTEMD_WANTS}+="muxwire.service"
# Any Apple device that shows the usbmux interface (class ff, subclass fe, protocol 02) starts it too.
${match}, ENV{DEVTYPE}=="usb_interface", ATTR{bInterfaceClass}=="ff", ATTR{bInterfaceSubClass}=="fe", ATTR{bInterfaceProtocol}=="02", ATTRS{idVendor}=="05ac", TAG+="systemd", ENV{SYSTEMD_WANTS}+="muxwire.service"
`;
  return [
    { path: 'etc/systemd/system/muxwire.socket', content: socket },
    { path: 'etc/systemd/system/muxwire.service', content: service },
    { path: 'etc/udev/rules.d/39-muxwire.rules', content: rules },
  ];
}

/** A process, as /proc shows it. */
export interface ProcessInfo {
  readonly pid: number;
  readonly comm: string;
}

/** Who holds the usbmuxd socket, as far as /proc tells. */
export interface SocketOwnership {
  /** Processes with a listening UNIX socket bound to the path, in this mount namespace. */
  readonly listeners: ProcessInfo[];
  /** usbmuxd processes in this mount namespace (listening or not). */
  readonly usbmuxd: ProcessInfo[];
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

function sameMountNamespace(pid: number): boolean | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/mnt`) === readlinkSync('/proc/self/ns/mnt');
  } catch {
    return undefined; // another user's process, or gone
  }
}

/**
 * Reads /proc for the socket's owners: the listening UNIX sockets bound to `socketPath` (or its
 * /var/run ↔ /run twin) from /proc/net/unix, the processes holding them from /proc/PID/fd, and
 * usbmuxd processes. /proc/net/unix shows the path as bound in the binder's own mount namespace,
 * so only processes in ours count (another namespace's /var/run/usbmuxd is another socket). A
 * process whose namespace cannot be read (not ours to read) counts: refusing wrongly is cheaper
 * than taking over a live usbmuxd.
 */
export function socketOwnership(socketPath: string = SERVICE_SOCKET_PATH): SocketOwnership {
  const paths = new Set([socketPath]);
  if (socketPath.startsWith('/run/')) paths.add('/var' + socketPath);
  if (socketPath.startsWith('/var/run/')) paths.add(socketPath.slice(4));
  // /proc/net/unix: Num RefCount Protocol Flags Type St Inode Path; St 01 = listening.
  const inodes = new Set<string>();
  for (const line of (readText('/proc/net/unix') ?? '').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 8 && f[5] === '01' && paths.has(f.slice(7).join(' '))) inodes.add(f[6]!);
  }
  const listeners: ProcessInfo[] = [];
  const usbmuxd: ProcessInfo[] = [];
  let pids: number[] = [];
  try {
    pids = readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map(Number);
  } catch {
    // no /proc: nothing to tell
  }
  for (const pid of pids) {
    const comm = readText(`/proc/${pid}/comm`)?.trim();
    if (comm === undefined || sameMountNamespace(pid) === false) continue;
    if (comm === 'usbmuxd') usbmuxd.push({ pid, comm });
    if (inodes.size === 0) continue;
    let fds: string[] = [];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (m && inodes.has(m[1]!)) {
        listeners.push({ pid, comm });
        break;
      }
    }
  }
  return { listeners, usbmuxd };
}

/** Throws MUXWIRE_ERR_USBMUXD_RUNNING when libimobiledevice's usbmuxd owns the socket or runs. */
export function refuseWhileUsbmuxdRuns(owners: SocketOwnership): void {
  const holder = owners.listeners.find((p) => p.comm === 'usbmuxd') ?? owners.usbmuxd[0];
  if (holder === undefined) return;
  const what = owners.listeners.some((p) => p.pid === holder.pid) ? `owns ${SERVICE_SOCKET_PATH}` : 'is running';
  throw new MuxwireError(
    'MUXWIRE_ERR_USBMUXD_RUNNING',
    `libimobiledevice's usbmuxd (pid ${holder.pid}) ${what}; stop it first: ` +
      `systemctl stop usbmuxd.service && systemctl mask usbmuxd.service (its udev rule starts it again on the next plug otherwise), or usbmuxd -x, or kill ${holder.pid}`,
    { detail: holder.pid },
  );
}

/** Writes `content` to `path` whole (src/atomic-file.ts), mode 0644. */
async function writeWhole(path: string, content: string): Promise<void> {
  try {
    await mkdir(dirname(path), { recursive: true });
    await writeFileAtomic(path, content, 0o644);
  } catch (err) {
    throw new MuxwireError('MUXWIRE_ERR_IO', `cannot write ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** True when this machine's service manager is systemd (sd_booted(3): /run/systemd/system exists). */
function systemdRuns(): boolean {
  return existsSync('/run/systemd/system');
}

/** Runs systemctl or udevadm; a failure is MUXWIRE_ERR_SERVICE_MANAGER unless `tolerate`. */
function manager(cmd: string, args: string[], tolerate = false): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  const failed = r.error !== undefined || r.status !== 0;
  if (failed && !tolerate) {
    const why = r.error?.message ?? (r.stderr.trim().split('\n')[0] || `exit status ${r.status}`);
    throw new MuxwireError('MUXWIRE_ERR_SERVICE_MANAGER', `${cmd} ${args.join(' ')} failed: ${why}`);
  }
  return (r.stdout ?? '').trim();
}

interface Options {
  prefix: string;
  live: boolean;
  files: ServiceFile[];
}

async function install(o: Options): Promise<void> {
  refuseWhileUsbmuxdRuns(socketOwnership());
  if (o.files.some((f) => f.content.includes('/_npx/'))) process.stderr.write(`muxwire service: warning: the unit runs muxwire from npx's cache, which npm may remove; install it with npm install -g\n`);
  for (const f of o.files) {
    const path = join(o.prefix, f.path);
    await writeWhole(path, f.content);
    process.stdout.write(`wrote ${path}\n`);
  }
  if (o.live && systemdRuns()) {
    manager('systemctl', ['daemon-reload']);
    manager('systemctl', ['enable', '--now', 'muxwire.socket']);
    if (existsSync('/run/udev/control')) manager('udevadm', ['control', '--reload-rules']);
    process.stdout.write(`enabled muxwire.socket: clients of ${SERVICE_SOCKET_PATH} start the daemon\n`);
  } else {
    process.stdout.write(`next: systemctl daemon-reload && systemctl enable --now muxwire.socket && udevadm control --reload-rules\n`);
  }
}

async function uninstall(o: Options): Promise<void> {
  if (o.live && systemdRuns()) manager('systemctl', ['disable', '--now', 'muxwire.socket', 'muxwire.service'], true);
  for (const f of o.files) {
    const path = join(o.prefix, f.path);
    const text = await readFile(path, 'utf8').catch(() => undefined);
    if (text === undefined) continue;
    if (!text.startsWith(SERVICE_FILE_MARK)) {
      process.stderr.write(`muxwire service: kept ${path}: not written by muxwire service install\n`);
      continue;
    }
    await unlink(path).catch((err: Error) => {
      throw new MuxwireError('MUXWIRE_ERR_IO', `cannot remove ${path}: ${err.message}`, { cause: err });
    });
    process.stdout.write(`removed ${path}\n`);
  }
  if (o.live && systemdRuns()) {
    manager('systemctl', ['daemon-reload']);
    if (existsSync('/run/udev/control')) manager('udevadm', ['control', '--reload-rules'], true);
  }
}

async function status(o: Options, json: boolean): Promise<void> {
  const files = await Promise.all(
    o.files.map(async (f) => {
      const path = join(o.prefix, f.path);
      const text = await readFile(path, 'utf8').catch(() => undefined);
      const state = text === undefined ? 'missing' : text === f.content ? 'current' : text.startsWith(SERVICE_FILE_MARK) ? 'outdated' : 'foreign';
      return { path, state };
    }),
  );
  const owners = socketOwnership();
  const units =
    o.live && systemdRuns()
      ? Object.fromEntries(
          ['muxwire.socket', 'muxwire.service'].map((u) => [u, { active: manager('systemctl', ['is-active', u], true), enabled: manager('systemctl', ['is-enabled', u], true) }]),
        )
      : undefined;
  if (json) {
    printJson({ files, socket: SERVICE_SOCKET_PATH, listeners: owners.listeners, usbmuxd: owners.usbmuxd, systemd: units ?? null });
    return;
  }
  for (const f of files) process.stdout.write(`${f.state.padEnd(8)} ${f.path}\n`);
  const who = owners.listeners.map((p) => `${p.comm} (pid ${p.pid})`).join(', ');
  process.stdout.write(`socket   ${SERVICE_SOCKET_PATH}: ${who === '' ? 'nobody listens' : `${who} listens`}\n`);
  if (owners.usbmuxd.length > 0) process.stdout.write(`usbmuxd  running: pid ${owners.usbmuxd.map((p) => p.pid).join(', ')}\n`);
  if (units !== undefined) for (const [u, s] of Object.entries(units)) process.stdout.write(`systemd  ${u}: ${s.active}, ${s.enabled}\n`);
}

export function run(argv: string[]): Promise<number> {
  return runCommand('service', HELP, argv, async () => {
    let parsed;
    try {
      parsed = parseArgs({
        args: argv,
        allowPositionals: true,
        options: { print: { type: 'boolean' }, prefix: { type: 'string' }, user: { type: 'string' }, 'socket-mode': { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      });
    } catch (err) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', (err as Error).message.split('\n')[0] ?? 'bad arguments');
    }
    const { values, positionals } = parsed;
    const action = positionals[0];
    if (positionals.length !== 1 || !['install', 'uninstall', 'status'].includes(action!)) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `expected one of install, uninstall, status${positionals.length > 0 ? `, not '${positionals.join(' ')}'` : ''}`);
    }
    if (values.print && action !== 'install') throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', '--print goes with install');
    const user = values.user;
    if (user !== undefined && !/^[a-z_][a-z0-9_-]{0,31}$/.test(user)) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `--user must be a user name, not '${user}'`);
    const modeText = values['socket-mode'];
    if (modeText !== undefined && !/^0?[0-7]{3}$/.test(modeText)) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `--socket-mode must be octal like 0666, not '${modeText}'`);
    const files = serviceFiles({ ...(user !== undefined ? { user } : {}), ...(modeText !== undefined ? { socketMode: parseInt(modeText, 8) } : {}) });
    if (values.print) {
      for (const f of files) process.stdout.write(`### /${f.path}\n${f.content}\n`);
      return;
    }
    const prefixText = values.prefix;
    const opts: Options = { prefix: prefixText === undefined ? '/' : resolvePath(prefixText), live: prefixText === undefined, files };
    if (action === 'install') await install(opts);
    else if (action === 'uninstall') await uninstall(opts);
    else await status(opts, values.json === true);
  });
}
