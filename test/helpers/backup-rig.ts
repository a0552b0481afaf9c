/**
 * The set-up the backup interop tests share: a temporary directory, simulated iPhones (each with its
 * own backup root, or the built-in content) attached in-process to our daemon on a socket in that
 * directory, the environment that points libimobiledevice's tools at it, and one pairing of every
 * device through idevicepair (so the pair record sits in the daemon, where every tool finds it).
 * `close()` stops all of it and removes the directory.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import { SimulatedDevice, type SimulatedDeviceOptions } from '../../src/sim/simulator.js';
import { UsbmuxClient } from '../../src/client/usbmux-client.js';
import { pairListed } from './backup-tree.js';

export class BackupRig {
  /** The temporary directory: content roots and backups go inside it. */
  readonly dir: string;
  readonly socket: string;
  /** process.env with USBMUXD_SOCKET_ADDRESS naming our daemon. */
  readonly env: NodeJS.ProcessEnv;
  readonly devices: SimulatedDevice[] = [];
  #daemon: MuxDaemon | undefined;
  #paired: Promise<void> | undefined;

  private constructor(dir: string) {
    this.dir = dir;
    this.socket = join(dir, 'usbmuxd.sock');
    this.env = { ...process.env, USBMUXD_SOCKET_ADDRESS: `UNIX:${this.socket}` };
  }

  /** A rig with its directory made (`prefix` names it); {@link start} brings up the rest. */
  static async create(prefix: string): Promise<BackupRig> {
    return new BackupRig(await mkdtemp(join(tmpdir(), prefix)));
  }

  /** Starts one simulated device per options (bench services off) and the daemon they attach to. */
  async start(devices: SimulatedDeviceOptions[]): Promise<SimulatedDevice[]> {
    for (const opts of devices) this.devices.push(await SimulatedDevice.create({ benchPorts: false, ...opts }));
    this.#daemon = new MuxDaemon({ socketPath: this.socket, pairDir: join(this.dir, 'lockdown'), preflight: true });
    await this.#daemon.start();
    for (const d of this.devices) this.#daemon.addLink(d.inProcessLink());
    return this.devices;
  }

  /** A usbmuxd client of the daemon. */
  client(): UsbmuxClient {
    return new UsbmuxClient({ address: `UNIX:${this.socket}`, timeoutMs: 10_000 });
  }

  /** Pairs every device with idevicepair, once for the rig (later calls wait for the first). */
  pairAll(): Promise<void> {
    this.#paired ??= pairListed(this.env, this.devices.map((d) => d.udid));
    return this.#paired;
  }

  async close(): Promise<void> {
    await this.#daemon?.close();
    for (const d of this.devices) await d.close();
    await rm(this.dir, { recursive: true, force: true });
  }
}
