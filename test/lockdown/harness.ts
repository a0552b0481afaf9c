/**
 * A simulated device's lockdownd on a MemoryMux, and a host-side pair-record store, for lockdown
 * tests. `open()` gives a LockdownClient on a fresh connection to port 62078.
 */
import type { Duplex } from 'node:stream';
import { DeviceIdentity, DeviceKeyPool, type IdentityOptions } from '../../src/sim/identity.js';
import { Lockdownd, type LockdownMux, type LockdowndOptions } from '../../src/sim/lockdownd.js';
import { LockdownClient, type LockdownClientOptions } from '../../src/lockdown/lockdown-client.js';
import type { PairRecordStore } from '../../src/lockdown/pair-record.js';
import type { PlistDict } from '../../src/protocol/plist.js';
import { MemoryMux } from './memory-mux.js';

/** One key pool for every device of a test run: keygen happens ahead, in the background. */
export const keyPool = new DeviceKeyPool(2);

export const SYSTEM_BUID = '5B2E6F7A-0C1D-4E2F-8A9B-0C1D2E3F4A5B';

/** A pair-record store in memory, as usbmuxd's ReadBUID / ReadPairRecord / SavePairRecord. */
export class MemoryStore implements PairRecordStore {
  readonly records = new Map<string, PlistDict>();
  readonly saves: { udid: string; deviceId?: number }[] = [];
  async readBUID(): Promise<string> {
    return SYSTEM_BUID;
  }
  async readPairRecord(udid: string): Promise<PlistDict | undefined> {
    return this.records.get(udid);
  }
  async savePairRecord(udid: string, record: PlistDict, deviceId?: number): Promise<void> {
    this.records.set(udid, record);
    this.saves.push({ udid, deviceId });
  }
}

export interface Harness {
  mux: MemoryMux;
  identity: DeviceIdentity;
  lockdownd: Lockdownd;
  store: MemoryStore;
  /** A raw stream to port 62078. */
  connect(): Duplex;
  /** A LockdownClient on a new connection; closed by close(). */
  open(opts?: LockdownClientOptions): Promise<LockdownClient>;
  /** Pairs once through a fresh client and returns the saved record. */
  pair(): Promise<PlistDict>;
  close(): void;
}

export async function startDevice(
  opts: { identity?: IdentityOptions; ports?: (mux: MemoryMux) => LockdownMux } & Partial<Omit<LockdowndOptions, 'identity' | 'mux'>> = {},
): Promise<Harness> {
  const mux = new MemoryMux();
  // `ports`: what lockdownd listens through (a DevicePorts over the MemoryMux); the MemoryMux by default.
  const { identity: identityOpts, ports, ...lockdowndOpts } = opts;
  const identity = await DeviceIdentity.create({ keyPool, ...identityOpts });
  const lockdownd = new Lockdownd({ ...lockdowndOpts, identity, mux: ports?.(mux) ?? mux });
  await lockdownd.start();
  const store = new MemoryStore();
  const clients: LockdownClient[] = [];
  const h: Harness = {
    mux,
    identity,
    lockdownd,
    store,
    connect: () => mux.connect(62078),
    async open(o) {
      const c = await LockdownClient.open(mux.connect(62078), { label: 'muxwire-test', ...o });
      clients.push(c);
      return c;
    },
    async pair() {
      const c = await h.open();
      const record = await c.pair(store, { udid: identity.udid });
      c.close();
      return record;
    },
    close() {
      for (const c of clients) c.close();
      lockdownd.stop();
      mux.closeAll();
    },
  };
  return h;
}
