/**
 * Preflight against the simulated device's real lockdownd: pairing on attach, the Trust dialog,
 * a refused trust, and a record that is already good.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import type { DeviceEntry } from '../../src/daemon/device-registry.js';
import { SimulatedDevice } from '../../src/sim/simulator.js';

let dir: string;
const daemons: MuxDaemon[] = [];
const sims: SimulatedDevice[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'muxwire-preflight-'));
});
after(async () => {
  for (const d of daemons) await d.close();
  for (const s of sims) await s.close();
  await rm(dir, { recursive: true, force: true });
});

async function setup(trust: string, pairDir = join(dir, `pairs-${daemons.length}`), hideMs = 3000) {
  const daemon = new MuxDaemon({ socketPath: null, pairDir, preflight: true, hideMs });
  daemons.push(daemon);
  await daemon.start();
  const sim = await SimulatedDevice.create({ trust });
  sims.push(sim);
  return { daemon, sim, pairDir };
}

function waitFor<T>(emitter: MuxDaemon['registry'], event: string, match: (e: DeviceEntry) => boolean): Promise<DeviceEntry> {
  return new Promise((resolve) => {
    const on = (e: DeviceEntry): void => {
      if (!match(e)) return;
      emitter.off(event, on);
      resolve(e);
    };
    emitter.on(event, on);
  });
}

test('pairs a new device on attach, saves its record and announces Paired', async () => {
  const { daemon, sim, pairDir } = await setup('accept');
  const paired = waitFor(daemon.registry, 'paired', (e) => e.properties.serialNumber === sim.udid);
  const attached = waitFor(daemon.registry, 'attached', (e) => e.properties.serialNumber === sim.udid);
  daemon.addLink(sim.inProcessLink());
  await Promise.all([paired, attached]);
  assert.ok((await readdir(pairDir)).includes(`${sim.udid}.plist`));
  const record = await daemon.pairStore.readPairRecord(sim.udid);
  assert.equal(typeof record?.HostID, 'string');
  assert.equal(record?.SystemBUID, await daemon.pairStore.readBUID());
});

test('announces the device while the Trust dialog is pending, then pairs when the user trusts', async () => {
  const { daemon, sim } = await setup('delay:1500', undefined, 60_000);
  const attached = waitFor(daemon.registry, 'attached', (e) => e.properties.serialNumber === sim.udid);
  const paired = waitFor(daemon.registry, 'paired', (e) => e.properties.serialNumber === sim.udid);
  const entry = daemon.addLink(sim.inProcessLink())!;
  await attached;
  // Visible before the pairing finished: the hide cap here is a minute, so the dialog did it.
  assert.equal(entry.state, 'visible');
  assert.equal(await daemon.pairStore.readPairRecord(sim.udid), undefined);
  await paired;
  assert.notEqual(await daemon.pairStore.readPairRecord(sim.udid), undefined);
});

test('lists a device whose user denies trust, and saves no record', async () => {
  const { daemon, sim, pairDir } = await setup('deny');
  const attached = waitFor(daemon.registry, 'attached', (e) => e.properties.serialNumber === sim.udid);
  daemon.addLink(sim.inProcessLink());
  const entry = await attached;
  assert.equal(entry.state, 'visible');
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual((await readdir(pairDir).catch(() => [])).filter((n) => n !== 'SystemConfiguration.plist'), []);
});

test('keeps a record that still opens a session, without pairing again', async () => {
  const first = await setup('accept');
  const paired = waitFor(first.daemon.registry, 'paired', (e) => e.properties.serialNumber === first.sim.udid);
  const link = first.sim.inProcessLink();
  first.daemon.addLink(link);
  await paired;
  const before = await first.daemon.pairStore.readPairRecord(first.sim.udid);
  link.close();
  while (first.daemon.registry.size > 0) await new Promise((r) => setTimeout(r, 5));
  // A second daemon on the same pair directory sees the device again: StartSession works.
  const daemon2 = new MuxDaemon({ socketPath: null, pairDir: first.pairDir, preflight: true });
  daemons.push(daemon2);
  await daemon2.start();
  let pairedAgain = false;
  daemon2.registry.on('paired', () => {
    pairedAgain = true;
  });
  const attached = waitFor(daemon2.registry, 'attached', (e) => e.properties.serialNumber === first.sim.udid);
  daemon2.addLink(first.sim.inProcessLink());
  await attached;
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(pairedAgain, false);
  assert.deepEqual(await daemon2.pairStore.readPairRecord(first.sim.udid), before);
});
