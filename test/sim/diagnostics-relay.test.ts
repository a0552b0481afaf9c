/**
 * The simulated diagnostics relay (src/sim/diagnostics-relay.ts), spoken to as
 * libimobiledevice's diagnostics_relay.c does: plist requests, a Status in every reply, Restart
 * and Shutdown acting after the host hangs up when it asks for WaitForDisconnect. The real
 * idevicediagnostics is checked in test/interop/daemon-libimobiledevice.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Duplex } from 'node:stream';
import { PlistChannel } from '../../src/lockdown/plist-channel.js';
import type { PlistDict, PlistValue } from '../../src/protocol/plist.js';
import { serveDiagnosticsRelay, type DiagnosticsDevice } from '../../src/sim/diagnostics-relay.js';
import { duplexPair } from '../lockdown/memory-mux.js';

interface Host {
  request(req: PlistDict): Promise<PlistDict>;
  hangUp(): void;
  actions: string[];
}

function relay(productVersion = '16.4'): Host {
  const [device, host] = duplexPair();
  const actions: string[] = [];
  const dev: DiagnosticsDevice = {
    productVersion: () => productVersion,
    gestalt: async () => ({ ProductType: 'iPhone15,2', UniqueDeviceID: '00008120-0000000000000001' }),
    restart: async () => void actions.push('restart'),
    shutdown: async () => void actions.push('shutdown'),
  };
  serveDiagnosticsRelay(device, dev);
  const replies: PlistValue[] = [];
  const waiters: Array<() => void> = [];
  const channel = new PlistChannel(host as Duplex, {
    onMessage: ({ value }) => {
      replies.push(value);
      for (const w of waiters.splice(0)) w();
    },
    onClose: () => undefined,
  });
  return {
    actions,
    hangUp: () => channel.close(),
    request: async (req) => {
      channel.send(req);
      while (replies.length === 0) await new Promise<void>((r) => waiters.push(r));
      return replies.shift() as PlistDict;
    },
  };
}

const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 50));

test('diagnostics: All has GasGauge, WiFi and NAND; one type has only itself; each with Status', async () => {
  const h = relay();
  const all = await h.request({ Request: 'All' });
  assert.equal(all.Status, 'Success');
  assert.deepEqual(Object.keys(all.Diagnostics as PlistDict).sort(), ['GasGauge', 'NAND', 'WiFi']);
  const gas = await h.request({ Request: 'GasGauge' });
  assert.deepEqual(Object.keys(gas.Diagnostics as PlistDict), ['GasGauge']);
  assert.equal(((gas.Diagnostics as PlistDict).GasGauge as PlistDict).Status, 'Success');
  assert.equal((await h.request({ Request: 'Frobnicate' })).Status, 'UnknownRequest');
  assert.equal((await h.request({ NoRequest: true })).Status, 'UnknownRequest');
});

test('MobileGestalt answers the keys it knows before iOS 17.4, and MobileGestaltDeprecated from 17.4 on', async () => {
  const old = await relay('16.4').request({ Request: 'MobileGestalt', MobileGestaltKeys: ['ProductType', 'NoSuchKey'] });
  assert.deepEqual(old, { Status: 'Success', Diagnostics: { MobileGestalt: { Status: 'Success', ProductType: 'iPhone15,2' } } });
  for (const version of ['17.4', '17.5', '18.0']) {
    const now = await relay(version).request({ Request: 'MobileGestalt', MobileGestaltKeys: ['ProductType'] });
    assert.deepEqual(now, { Status: 'Success', Diagnostics: { MobileGestalt: { Status: 'MobileGestaltDeprecated' } } }, version);
  }
});

test("IORegistry: the battery by class or name (the other one empty, as idevicediagnostics sends it); anything else is Failure", async () => {
  const h = relay();
  for (const req of [{ EntryClass: 'IOPMPowerSource' }, { EntryName: 'AppleSmartBattery', EntryClass: '' }]) {
    const r = await h.request({ Request: 'IORegistry', ...req });
    assert.equal(r.Status, 'Success');
    assert.equal(((r.Diagnostics as PlistDict).IORegistry as PlistDict).CycleCount, 127);
  }
  assert.equal((await h.request({ Request: 'IORegistry', CurrentPlane: 'IODeviceTree' })).Status, 'Failure');
});

test('Restart with WaitForDisconnect acts only once the host hangs up; Shutdown without it right after the reply', async () => {
  const r = relay();
  assert.equal((await r.request({ Request: 'Restart', WaitForDisconnect: true, DisplayPass: true })).Status, 'Success');
  await settle();
  assert.deepEqual(r.actions, [], 'not before the host hung up');
  r.hangUp();
  await settle();
  assert.deepEqual(r.actions, ['restart']);
  const s = relay();
  assert.equal((await s.request({ Request: 'Shutdown' })).Status, 'Success');
  await settle();
  assert.deepEqual(s.actions, ['shutdown']);
  assert.equal((await s.request({ Request: 'Sleep' })).Status, 'Success');
  assert.equal((await s.request({ Request: 'Goodbye' })).Status, 'Success');
});
