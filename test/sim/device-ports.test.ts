/**
 * DevicePorts: a service port StartService names is served on every link before the host hears
 * of it. On the network side a port's TCP bind lands a tick after the port is opened, and a host
 * that connected the moment it read the answer was refused when the simulator lost the CPU in
 * between (seen under load in the network interop test).
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import type { Server } from 'node:net';
import { randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { DevicePorts, type PortObserver } from '../../src/sim/device-ports.js';
import { SimNetworkSide } from '../../src/sim/network-side.js';
import { LOCKDOWN_PORT } from '../../src/sim/lockdownd.js';
import { EPHEMERAL_PORT_FIRST } from '../../src/sim/device-mux.js';
import { log, setLogSink } from '../../src/log.js';
import { startDevice, SYSTEM_BUID, type Harness } from '../lockdown/harness.js';
import { MemoryMux } from '../lockdown/memory-mux.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A link whose service-port listeners (all but lockdownd's) come up only when the test says so. */
class LateLink implements PortObserver {
  readonly pending = new Map<number, () => void>();
  portOpened(port: number): Promise<void> | void {
    if (port === LOCKDOWN_PORT) return;
    return new Promise((resolve) => this.pending.set(port, resolve));
  }
  portClosed(): void {}
}

const echo = (s: Duplex): void => {
  s.pipe(s);
};

test('StartService answers only once every link serves the port it names', async () => {
  const late = new LateLink();
  const h: Harness = await startDevice({
    services: new Map([['com.example.echo', echo]]),
    ports: (mux) => {
      const ports = new DevicePorts(mux);
      ports.observe(late);
      return ports;
    },
  });
  cleanups.push(() => h.close());
  const record = await h.pair();
  const c = await h.open();
  await c.startSession(record, SYSTEM_BUID);
  let answered = false;
  const started = c.startService('com.example.echo').then((svc) => {
    answered = true;
    return svc;
  });
  while (late.pending.size === 0) await new Promise((r) => setTimeout(r, 5));
  const [port, release] = [...late.pending][0]!;
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(answered, false, 'no answer while the late link is not listening');
  release();
  const svc = await started;
  assert.equal(svc.port, port);
  assert.equal(h.mux.listening(port), true, 'the USB side still takes the connection');
  await c.stopSession();
});

/** A loopback address of its own for each run (all of 127/8 is loopback on Linux). */
const address = `127.${randomInt(1, 255)}.${randomInt(1, 255)}.${randomInt(2, 255)}`;

/** True when /proc/net/tcp has a listener on address:port, read synchronously. */
function bound(port: number): boolean {
  const [a, b, c, d] = address.split('.').map(Number) as [number, number, number, number];
  const hex = `${[d, c, b, a].map((n) => n.toString(16).padStart(2, '0')).join('')}:${port.toString(16).padStart(4, '0')}`.toUpperCase();
  return readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .some((line) => {
      const f = line.trim().split(/\s+/);
      return f[1] === hex && f[3] === '0A';
    });
}

async function networkSide(): Promise<{ ports: DevicePorts; usb: MemoryMux }> {
  const usb = new MemoryMux();
  const ports = new DevicePorts(usb);
  ports.listen(LOCKDOWN_PORT, echo);
  const side = new SimNetworkSide(ports, { address, wifiMac: '00:11:22:33:44:55', hostName: 'muxwire-test', advertise: false, log: log.child({ test: 'ports' }) });
  await side.start();
  cleanups.push(() => side.stop());
  return { ports, usb };
}

test('on the network side, served(port) settles once the TCP listener is bound', async () => {
  const { ports } = await networkSide();
  const port = ports.listenEphemeral(echo);
  assert.equal(bound(port), false, 'the bind has not happened yet');
  await ports.served(port);
  assert.equal(bound(port), true, `${address}:${port} is listening`);
  ports.unlisten(port);
  await ports.served(port);
});

test('a port the network side cannot bind still settles (logged), and the USB side serves it', async () => {
  const { ports, usb } = await networkSide();
  const taken: Server = createServer();
  // The next ephemeral port the table hands out is the first one: hold it on the device's address.
  await new Promise<void>((resolve) => taken.listen({ host: address, port: EPHEMERAL_PORT_FIRST }, resolve));
  cleanups.push(() => new Promise<void>((resolve) => taken.close(() => resolve())));
  const warnings: string[] = [];
  setLogSink((line, level) => {
    if (level === 'warn') warnings.push(line);
    process.stderr.write(line + '\n');
  });
  cleanups.push(() => setLogSink((line) => process.stderr.write(line + '\n')));
  const port = ports.listenEphemeral(echo);
  assert.equal(port, EPHEMERAL_PORT_FIRST);
  await ports.served(port);
  assert.ok(warnings.some((w) => w.includes(`cannot serve port ${port} on ${address}: EADDRINUSE`)), warnings.join('\n'));
  assert.equal(bound(port), true, 'only the test holds it');
  assert.equal(usb.listening(port), true);
});
