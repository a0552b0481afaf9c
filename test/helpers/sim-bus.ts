/**
 * Simulated iPhones plugged into one vusb bus for the interop tests that watch them through
 * libimobiledevice's `idevice_id -l` (our daemon's USB backends, Debian's usbmuxd): plug, poll the
 * listing until it shows what a test waits for, close them all.
 *
 * ```ts
 * const bus = new SimBus(busDir, listed, () => muxd.log());
 * const sim = await bus.firstDevice();            // plugged once, listed, shared by the tests
 * await bus.listUntil((u) => !u.includes(sim.udid), `${sim.udid} gone`);
 * ```
 */
import assert from 'node:assert/strict';
import { SimulatedDevice } from '../../src/sim/simulator.js';

/** How long a listing may take to show a change (hang guard). */
const LIST_DEADLINE_MS = 30_000;

export class SimBus {
  readonly sims: SimulatedDevice[] = [];
  #first: Promise<SimulatedDevice> | undefined;

  /**
   * `listed` runs `idevice_id -l` and returns the UDIDs; `context` adds to a failure what explains
   * it (a daemon's log).
   */
  constructor(
    readonly busDir: string,
    readonly listed: () => Promise<string[]>,
    readonly context: () => string = () => '',
  ) {}

  /** Polls the listing until `ok` holds; fails after 30 s with the last listing. */
  async listUntil(ok: (udids: string[]) => boolean, what: string): Promise<string[]> {
    const deadline = Date.now() + LIST_DEADLINE_MS;
    for (;;) {
      const udids = await this.listed();
      if (ok(udids)) return udids;
      if (Date.now() > deadline) {
        const context = this.context();
        assert.fail(`idevice_id -l never showed ${what}; last: [${udids.join(', ')}]${context === '' ? '' : `\n${context}`}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** A new simulated device, plugged into the bus (not waited for). */
  async plugNew(): Promise<SimulatedDevice> {
    const sim = await SimulatedDevice.create();
    this.sims.push(sim);
    await sim.plug(this.busDir);
    return sim;
  }

  /** The first device, plugged once and listed; every later call gets the same one. */
  firstDevice(): Promise<SimulatedDevice> {
    this.#first ??= (async () => {
      const sim = await this.plugNew();
      await this.listUntil((u) => u.includes(sim.udid), sim.udid);
      return sim;
    })();
    return this.#first;
  }

  async close(): Promise<void> {
    for (const sim of this.sims) await sim.close();
  }
}
