/**
 * The daemon's side of network devices: who a device found on the network is, and whether the
 * daemon may list it. As usbmuxd2 and netmuxd, only a device the host is paired with is listed:
 *
 * - found over mDNS: the instance name starts with the device's Wi-Fi MAC, and the pair record
 *   whose `WiFiMACAddress` is that MAC names the UDID (the record's file name);
 * - given by address (`--network-device`): lockdownd is asked for `UniqueDeviceID` and
 *   `WiFiAddress` without a session, and a pair record must exist for that UDID.
 *
 * The NetworkSource (transport/network-source.ts) feeds the links to the same device registry as
 * USB, so everything after attach is shared.
 */
import { readdir } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { log as rootLog } from '../log.js';
import { LockdownClient } from '../lockdown/lockdown-client.js';
import { NETWORK_LOCKDOWN_PORT, NetworkSource } from '../transport/network-source.js';
import type { NetworkCandidate } from '../transport/network-source.js';
import type { PairStore } from './pair-store.js';

const log = rootLog.child({ src: 'network' });

/** How long identifying a device by address may take (ms). */
const IDENTIFY_TIMEOUT_MS = 5000;

export interface NetworkDevicesOptions {
  /** Browse mDNS (`muxwire daemon --network`). */
  mdns: boolean;
  /** Devices by address (`--network-device HOST`). */
  hosts: string[];
}

/**
 * A NetworkSource whose devices are identified through `pairStore`, and tried again whenever a
 * record is saved (a device paired over USB is then listed on the network at once).
 */
export class PairedNetworkSource extends NetworkSource {
  readonly #pairStore: PairStore;
  readonly #onSaved = (): void => this.retry();

  constructor(pairStore: PairStore, opts: NetworkDevicesOptions) {
    super({ mdns: opts.mdns, hosts: opts.hosts, identify: (c) => identify(pairStore, c) });
    this.#pairStore = pairStore;
  }

  override async start(): Promise<void> {
    this.#pairStore.on('saved', this.#onSaved);
    await super.start();
  }

  override async stop(): Promise<void> {
    this.#pairStore.off('saved', this.#onSaved);
    await super.stop();
  }
}

/** The daemon's network source (`--network`, `--network-device`). */
export function createNetworkSource(pairStore: PairStore, opts: NetworkDevicesOptions): NetworkSource {
  return new PairedNetworkSource(pairStore, opts);
}

async function identify(pairStore: PairStore, c: NetworkCandidate): Promise<{ udid: string; mac?: string } | undefined> {
  if (c.mac !== undefined) {
    const udid = await udidForWifiMac(pairStore, c.mac);
    if (udid === undefined) log.info(`${c.serviceName}: no pair record has WiFiMACAddress ${c.mac}; not listed (pair over USB first)`);
    return udid === undefined ? undefined : { udid, mac: c.mac };
  }
  const who = await askLockdownd(c);
  if ((await pairStore.readPairRecordData(who.udid)) === undefined) {
    log.info(`${c.host}: no pair record for ${who.udid}; not listed (pair over USB first)`);
    return undefined;
  }
  return who;
}

/** The UDID of the pair record whose WiFiMACAddress is `mac` (case-insensitive), if any. */
export async function udidForWifiMac(pairStore: PairStore, mac: string): Promise<string | undefined> {
  let names: string[];
  try {
    names = await readdir(pairStore.dir);
  } catch {
    return undefined;
  }
  for (const name of names) {
    if (!name.endsWith('.plist') || name === 'SystemConfiguration.plist' || name.startsWith('.')) continue;
    const udid = name.slice(0, -'.plist'.length);
    try {
      const record = await pairStore.readPairRecord(udid);
      const recorded = record?.WiFiMACAddress;
      if (typeof recorded === 'string' && recorded.toLowerCase() === mac.toLowerCase()) return udid;
    } catch (err) {
      log.debug(`skipping pair record ${name}: ${(err as Error).message}`);
    }
  }
  return undefined;
}

/** UniqueDeviceID and WiFiAddress from lockdownd at the candidate's address, without a session. */
async function askLockdownd(c: NetworkCandidate): Promise<{ udid: string; mac?: string }> {
  const socket = netConnect({ host: c.host, port: NETWORK_LOCKDOWN_PORT });
  socket.setTimeout(IDENTIFY_TIMEOUT_MS, () => socket.destroy(new Error(`no answer from ${c.host} within ${IDENTIFY_TIMEOUT_MS} ms`)));
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const lockdown = await LockdownClient.open(socket, { label: 'muxwire', timeoutMs: IDENTIFY_TIMEOUT_MS });
    const udid = await lockdown.getValue({ key: 'UniqueDeviceID' });
    if (typeof udid !== 'string') throw new Error(`${c.host} did not tell its UniqueDeviceID`);
    const mac = await lockdown.getValue({ key: 'WiFiAddress' });
    return typeof mac === 'string' ? { udid, mac } : { udid };
  } finally {
    socket.destroy();
  }
}
