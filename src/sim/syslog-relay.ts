/**
 * The device's system log and `com.apple.syslog_relay`, the service that streams it to a host
 * (idevicesyslog, pymobiledevice3's `syslog live`). There is no request: once the service is
 * started, the device writes each log entry as text ending in "\n\0", from the moment of the
 * connection on, until the host closes it (pymobiledevice3 splits on `b'\n\x00'`; idevicesyslog
 * 1.3 takes the NUL as the end of an entry and parses the line before it).
 *
 * An entry reads as a device's does, in the BSD syslog layout idevicesyslog parses (the month,
 * day and time at fixed columns, then the host name, the process and its pid, the level):
 *
 * ```
 * Dec  7 15:41:42 Muxwires-iPhone lockdownd[63] <Notice>: StartService com.apple.afc (port 49153)
 * ```
 *
 * What the simulated device logs is what happens on it: lockdownd's requests and the services it
 * starts (lockdownd-connection.ts). A host that does not read is not allowed to make the device
 * hold its log: past RELAY_BUFFER_MAX bytes queued on one connection, entries for it are dropped
 * and counted, and one line says how many once it reads again.
 */
import type { Duplex } from 'node:stream';
import { oneLine } from '../log.js';

/** Bytes of log queued on one relay connection before its entries are dropped. */
export const RELAY_BUFFER_MAX = 1024 * 1024;

/** The levels of Apple's syslog lines. */
export type SyslogLevel = 'Notice' | 'Warning' | 'Error' | 'Debug';

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** `Dec  7 15:41:42`: the month, the day padded to two columns, the local time. */
export function syslogTime(at: Date): string {
  const two = (n: number): string => String(n).padStart(2, '0');
  return `${MONTHS[at.getMonth()]} ${String(at.getDate()).padStart(2, ' ')} ${two(at.getHours())}:${two(at.getMinutes())}:${two(at.getSeconds())}`;
}

/** A device name as a host name: what a device's syslog lines carry (no spaces: the parser splits on them). */
export function syslogHostName(deviceName: string): string {
  const name = deviceName.normalize('NFKD').replace(/[^A-Za-z0-9-]+/g, '-').replace(/^-+|-+$/g, '');
  return name === '' ? 'iPhone' : name;
}

/** One connection of the relay: the stream, and what was dropped while it did not read. */
interface Relay {
  stream: Duplex;
  dropped: number;
}

export class DeviceSyslog {
  readonly #hostName: () => string;
  readonly #relays = new Set<Relay>();

  /** `deviceName` is read for every entry (the device may be renamed). */
  constructor(deviceName: () => string) {
    this.#hostName = () => syslogHostName(deviceName());
  }

  /** Relay connections open now. */
  get relays(): number {
    return this.#relays.size;
  }

  /**
   * Writes one entry to every relay connection. Control characters in `message` (it may carry what
   * a host sent: a Key, a service name) are escaped, so no host can forge an entry or end one early.
   */
  log(process: string, pid: number, level: SyslogLevel, message: string, at = new Date()): void {
    if (this.#relays.size === 0) return;
    const entry = Buffer.from(`${syslogTime(at)} ${this.#hostName()} ${process}[${pid}] <${level}>: ${oneLine(message)}\n\0`);
    for (const relay of this.#relays) this.#send(relay, entry, at);
  }

  /** The service handler: streams entries to `stream` until it closes; anything the host sends is ignored. */
  serve(stream: Duplex): void {
    const relay: Relay = { stream, dropped: 0 };
    this.#relays.add(relay);
    const forget = (): void => {
      this.#relays.delete(relay);
    };
    stream.on('data', () => undefined);
    stream.once('close', forget);
    stream.once('end', () => {
      forget();
      stream.end();
    });
    stream.on('error', forget);
  }

  #send(relay: Relay, entry: Buffer, at: Date): void {
    const { stream } = relay;
    if (stream.destroyed || !stream.writable) return;
    if (stream.writableLength + entry.length > RELAY_BUFFER_MAX) {
      relay.dropped++;
      return;
    }
    if (relay.dropped > 0) {
      const note = `${syslogTime(at)} ${this.#hostName()} syslogd[27] <Notice>: ${relay.dropped} messages dropped (the host did not read)\n\0`;
      relay.dropped = 0;
      stream.write(note);
    }
    stream.write(entry);
  }
}
