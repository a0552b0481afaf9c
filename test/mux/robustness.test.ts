/**
 * A device that sends nonsense: seeded random packets against a session with open connections.
 * Nothing may throw, hang or grow without bound; the session either goes on or closes cleanly.
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { DeviceSession } from '../../src/mux/device-session.js';
import type { MuxConnection } from '../../src/mux/mux-connection.js';
import { HOST_WINDOW } from '../../src/mux/mux-connection.js';
import { MuxProtocol } from '../../src/protocol/mux-header.js';
import { TcpFlag } from '../../src/protocol/tcp-header.js';
import { LoopLink } from './helpers/loop-link.js';
import { ScriptedDevice } from './helpers/scripted-device.js';
import { seededRandom } from '../../src/seeded-random.js';

const open: Array<{ session: DeviceSession; link: LoopLink }> = [];
afterEach(async () => {
  for (const { session, link } of open.splice(0)) {
    await session.close();
    link.close();
  }
});


for (const seed of [1, 2, 3, 42, 1234]) {
  test(`survives random TCP packets from the device (seed ${seed})`, async () => {
    const rand = seededRandom(seed);
    const device = new ScriptedDevice();
    device.onSegment = (s) => {
      if (s.flags === TcpFlag.SYN) device.send({ sport: s.dport, dport: s.sport, seq: 0, ack: 1, flags: TcpFlag.SYN | TcpFlag.ACK, window: 131072 });
    };
    const link = new LoopLink(device);
    const session = new DeviceSession(link);
    open.push({ session, link });
    await session.ready;
    const conns: MuxConnection[] = [];
    for (const port of [7, 8, 9]) conns.push(await session.connect(port));
    // One reader keeps up, one is paused, one reads now and then.
    conns[0]!.resume();
    conns[1]!.pause();
    conns[2]!.on('data', () => undefined);
    for (const c of conns) c.on('error', () => undefined);
    const flagsChoices = [TcpFlag.ACK, TcpFlag.ACK | TcpFlag.PSH, TcpFlag.RST, TcpFlag.FIN | TcpFlag.ACK, TcpFlag.SYN | TcpFlag.ACK, 0, 0xff, TcpFlag.ACK];
    for (let i = 0; i < 1500; i++) {
      const pick = rand();
      if (pick < 0.05) {
        // A non-TCP packet: VERSION again, CONTROL, SETUP, an unknown protocol, a short TCP.
        const protocol = [MuxProtocol.VERSION, MuxProtocol.CONTROL, MuxProtocol.SETUP, 99, MuxProtocol.TCP][Math.floor(rand() * 5)]!;
        device.sendRaw(protocol, Buffer.alloc(Math.floor(rand() * 30), Math.floor(rand() * 256)));
        continue;
      }
      const known = conns[Math.floor(rand() * conns.length)]!;
      const useKnown = rand() < 0.8;
      device.send(
        {
          sport: useKnown ? known.devicePort : Math.floor(rand() * 65536),
          dport: useKnown ? known.sourcePort : Math.floor(rand() * 65536),
          seq: Math.floor(rand() * 2 ** 32),
          ack: rand() < 0.5 ? Math.floor(rand() * 2 ** 32) : 1,
          flags: flagsChoices[Math.floor(rand() * flagsChoices.length)]!,
          window: Math.floor(rand() * 65536) * 256,
        },
        Buffer.alloc(Math.floor(rand() * 3000), i & 0xff),
      );
      if (i % 50 === 0) {
        await new Promise((r) => setImmediate(r));
        if (rand() < 0.3) conns[0]!.write(Buffer.alloc(Math.floor(rand() * 70000)));
      }
    }
    await new Promise((r) => setTimeout(r, 20));
    assert.ok(session.state === 'active' || session.state === 'closed');
    for (const c of conns) {
      assert.ok(['connected', 'closing', 'closed'].includes(c.state));
      const s = c.stats();
      assert.ok(s.rxQueued <= HOST_WINDOW, `queued ${s.rxQueued}`);
    }
    // The session still takes new connections (unless the nonsense closed it).
    if (session.state === 'active') {
      const c = await session.connect(10);
      assert.equal(c.state, 'connected');
      c.destroy();
    }
    for (const c of conns) c.destroy();
  });
}

test('survives random bytes on the IN pipe: closes the device or carries on, without throwing', async () => {
  for (const seed of [7, 8, 9, 10]) {
    const rand = seededRandom(seed);
    const device = new ScriptedDevice();
    const link = new LoopLink(device);
    const session = new DeviceSession(link);
    open.push({ session, link });
    await session.ready;
    for (let i = 0; i < 50 && session.state === 'active'; i++) {
      const junk = Buffer.alloc(1 + Math.floor(rand() * 200));
      for (let j = 0; j < junk.length; j++) junk[j] = Math.floor(rand() * 256);
      device.onTransmit(junk);
      await new Promise((r) => setImmediate(r));
    }
    assert.ok(session.state === 'active' || session.state === 'closed');
  }
});
