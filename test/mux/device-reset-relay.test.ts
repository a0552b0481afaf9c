/**
 * A connection the device resets mid-stream, through our daemon: the client gets exactly the bytes
 * the device sent before its RST, then the end — never the RST's payload (the device's reason text,
 * usbmux.md §3.7) nor anything sent behind it, as usbmuxd. The simulated device's reset service
 * (port 13) sends N pattern bytes and then an RST with a reason. Run on both device backends — the
 * TypeScript vusb transport and the native USB backend over the vusb libusb library — and, through
 * run-tests.mjs, on both accelerator paths (the native demuxer with its direct relay to the client
 * socket, and the TypeScript one).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { UsbmuxClient } from '../../src/client/usbmux-client.js';
import type { DeviceInfo } from '../../src/client/device-info.js';
import { MuxDaemon } from '../../src/daemon/mux-daemon.js';
import { encodeCount, findPatternMismatch } from '../../src/sim/bench-services.js';
import { SimulatedDevice } from '../../src/sim/simulator.js';
import type { DeviceSource } from '../../src/transport/device-link.js';
import { VusbSource } from '../../src/transport/vusb-source.js';
import { waitForDevice } from '../helpers/client-suite.js';
import { makeSource, requireBackend } from '../transport/usb-backends.js';

const BACKENDS = ['vusb', 'native USB'] as const;
type Backend = (typeof BACKENDS)[number];

interface Received {
  bytes: Buffer;
  /** How the stream ended: 'end' (EOF) or the error code of a reset. */
  ending: string;
}

/** Reads everything until the socket ends or fails; `holdMs` > 0 reads nothing until then. */
function readToEnd(socket: Socket, holdMs = 0): Promise<Received> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let ending = '';
    if (holdMs > 0) {
      socket.pause();
      setTimeout(() => socket.resume(), holdMs).unref();
    }
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.once('end', () => (ending ||= 'end'));
    socket.once('error', (err: NodeJS.ErrnoException) => (ending ||= err.code ?? err.message));
    socket.once('close', () => resolve({ bytes: Buffer.concat(chunks), ending: ending || 'close' }));
  });
}

for (const backend of BACKENDS) {
  describe(`a device reset through our daemon (${backend})`, () => {
    let dir = '';
    let daemon: MuxDaemon | undefined;
    let sim: SimulatedDevice | undefined;
    let dispose: (() => Promise<void>) | undefined;
    let client: UsbmuxClient;
    let device: DeviceInfo;

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'mw-reset-relay-'));
    });

    after(async () => {
      await daemon?.close();
      await dispose?.();
      await sim?.close();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    async function ready(t: TestContext): Promise<boolean> {
      if (backend === 'native USB' && !requireBackend(t, 'native')) return false;
      if (daemon) return true;
      const busDir = join(dir, 'bus');
      let source: DeviceSource;
      if (backend === 'vusb') {
        source = new VusbSource({ dir: busDir });
      } else {
        const made = await makeSource('native', busDir);
        source = made.source;
        dispose = made.dispose;
      }
      const socketPath = join(dir, 'usbmuxd.sock');
      daemon = new MuxDaemon({ socketPath, pairDir: join(dir, 'lockdown') });
      await daemon.start();
      await daemon.addSource(source);
      sim = await SimulatedDevice.create();
      await sim.plug(busDir);
      client = new UsbmuxClient({ address: `UNIX:${socketPath}` });
      device = await waitForDevice(client, sim.udid);
      return true;
    }

    async function resetAfter(n: number, holdMs = 0): Promise<Received> {
      const socket = await client.connect(device, sim!.benchPorts.reset!);
      const received = readToEnd(socket, holdMs);
      socket.write(encodeCount(n));
      return received;
    }

    function assertExactly(got: Received, n: number): void {
      assert.equal(got.bytes.length, n, `received ${got.bytes.length} of ${n} bytes (ended by ${got.ending})`);
      assert.equal(findPatternMismatch(got.bytes, 0), -1, 'the bytes are the device\'s, in order');
      assert.ok(['end', 'ECONNRESET', 'close'].includes(got.ending), `ended by ${got.ending}`);
    }

    test('the client reading as the data arrives gets exactly the 6 MiB sent before the reset, then the end', { timeout: 120_000 }, async (t) => {
      if (!(await ready(t))) return;
      assertExactly(await resetAfter(6 * 1024 * 1024 + 123), 6 * 1024 * 1024 + 123);
    });

    test('a client that reads only after the reset gets the bytes the daemon held, and nothing more', { timeout: 120_000 }, async (t) => {
      if (!(await ready(t))) return;
      // Less than one device window, so all of it is sent (and held by the daemon and the socket)
      // while the client does not read.
      assertExactly(await resetAfter(100_000, 300), 100_000);
    });

    test('a reset right after the connect, with no data, ends the client with nothing', { timeout: 60_000 }, async (t) => {
      if (!(await ready(t))) return;
      assertExactly(await resetAfter(0), 0);
    });

    test('twenty resets in a row each end with exactly their bytes', { timeout: 120_000 }, async (t) => {
      if (!(await ready(t))) return;
      for (let i = 0; i < 20; i++) {
        const n = 1 + ((i * 48_271) % 300_000);
        assertExactly(await resetAfter(n), n);
      }
    });
  });
}
