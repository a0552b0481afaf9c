/**
 * What the device commands (info, pair, validate, unpair, afc) share: pick the device, open
 * lockdownd (in a session unless told otherwise), say so while the Trust dialog is showing, and
 * close everything afterwards whatever happened.
 */
import { openLockdown, type LockdownHandle, type OpenLockdownOptions } from '../client/device-services.js';
import type { UsbmuxClient } from '../client/usbmux-client.js';
import type { DeviceInfo } from '../client/device-info.js';

/** `-n/--network`, which every device command takes. */
export const NETWORK_OPTION = { network: { type: 'boolean', short: 'n' } } as const;

/** Its help line. */
export const NETWORK_HELP = `  -n, --network   use the device's network (Wi-Fi) entry, not its USB one (as libimobiledevice's -n)`;

/** Which device the options name: `-u` and `-n`. */
export interface DeviceChoice {
  udid?: string;
  network?: boolean;
}

/** Finds the device `choice` names (the network entry with -n; USB first otherwise). */
export function findChosenDevice(client: UsbmuxClient, choice: DeviceChoice): Promise<DeviceInfo> {
  return client.findDevice(choice.udid, choice.network === true ? { connection: 'Network' } : {});
}

export async function withLockdown<T>(
  client: UsbmuxClient,
  choice: DeviceChoice,
  options: OpenLockdownOptions,
  body: (handle: LockdownHandle, device: DeviceInfo) => Promise<T>,
): Promise<T> {
  const device = await findChosenDevice(client, choice);
  const notice = trustNotice(device.udid);
  const handle = await openLockdown(client, device, {
    ...options,
    onWaiting: (elapsed) => {
      notice();
      options.onWaiting?.(elapsed);
    },
  });
  try {
    return await body(handle, device);
  } finally {
    handle.lockdown.close();
  }
}

/** Says once, on stderr, that the device's Trust dialog is waiting for the user. */
export function trustNotice(udid: string): () => void {
  let said = false;
  return () => {
    if (!said) process.stderr.write(`muxwire: waiting for the user to trust this computer on ${udid}…\n`);
    said = true;
  };
}

/** A progress line on stderr for long transfers, redrawn in place on a terminal. */
export class ProgressLine {
  readonly #label: string;
  readonly #started = process.hrtime.bigint();
  readonly #tty = process.stderr.isTTY === true;
  #last = 0;

  constructor(label: string) {
    this.#label = label;
  }

  update(bytes: number, total?: number): void {
    const now = Date.now();
    if (now - this.#last < 200 && bytes !== total) return;
    this.#last = now;
    const pct = total ? ` ${((bytes / total) * 100).toFixed(0).padStart(3)}%` : '';
    const line = `${this.#label}${pct} ${formatBytes(bytes)}${total ? ' / ' + formatBytes(total) : ''} ${formatRate(bytes, this.elapsedSeconds())}`;
    process.stderr.write(this.#tty ? `\r${line}\x1b[K` : `${line}\n`);
  }

  done(): void {
    if (this.#tty) process.stderr.write('\n');
  }

  elapsedSeconds(): number {
    return Number(process.hrtime.bigint() - this.#started) / 1e9;
  }
}

export function formatBytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(2)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
}

export function formatRate(bytes: number, seconds: number): string {
  return seconds > 0 ? `${(bytes / seconds / 1e6).toFixed(1)} MB/s` : '';
}
