/**
 * The libusb-compatible library (native/vusb) seen from a C program: enumeration and descriptors,
 * bulk transfers with libusb's completion rules (one device write spanning several IN transfers,
 * zero-length packets), cancellation and timeouts, synchronous wrappers, the pollfd event loop
 * usbmuxd uses, hotplug from the bus directory, and unplug in its three forms (connection closed,
 * socket file removed, broken message).
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ensureVusbLibrary, repoRoot } from '../helpers/vusb-lib.js';
import { requireCondition } from '../helpers/peers.js';
import { WireTestDevice, TEST_PID } from './wire-test-device.js';

let workDir = '';
let probe = '';
let libDir = '';
let unavailable = '';

before(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'muxwire-vusb-lib-'));
  const lib = ensureVusbLibrary();
  if ('reason' in lib) {
    unavailable = lib.reason;
    return;
  }
  libDir = lib.dir;
  probe = join(workDir, 'vusb-probe');
  const src = join(repoRoot(), 'test', 'vusb', 'vusb-probe.c');
  const cc = spawnSync(process.env.CC || 'cc', ['-std=gnu11', '-Wall', '-o', probe, src, `-L${libDir}`, '-lusb-1.0', `-Wl,-rpath,${libDir}`], {
    encoding: 'utf8',
  });
  if (cc.status !== 0) unavailable = `cannot compile vusb-probe.c: ${(cc.stderr || cc.error?.message || '').trim()}`;
});

after(async () => {
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

function ready(t: TestContext): boolean {
  return requireCondition(t, unavailable === '', `vusb library unavailable: ${unavailable}`);
}

interface ProbeRun {
  child: ChildProcess;
  lines: string[];
  /** Resolves with the `count`-th line (default first) that matches. */
  waitFor(pattern: RegExp, count?: number): Promise<string>;
  /** Resolves with the exit code once the process ends. */
  exited: Promise<number | null>;
}

function runProbe(busDir: string, args: string[]): ProbeRun {
  const child = spawn(probe, args, {
    env: { ...process.env, MUXWIRE_VUSB_DIR: busDir, LD_LIBRARY_PATH: libDir, MUXWIRE_VUSB_SETTLE_MS: '3000' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const waiters: Array<{ pattern: RegExp; count: number; resolve: (l: string) => void }> = [];
  const matching = (pattern: RegExp): string[] => lines.filter((l) => pattern.test(l));
  createInterface({ input: child.stdout! }).on('line', (line) => {
    lines.push(line);
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i]!;
      if (w.pattern.test(line) && matching(w.pattern).length >= w.count) waiters.splice(i, 1)[0]!.resolve(line);
    }
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) =>
    child.on('close', (code) => {
      if (code !== 0) process.stderr.write(`vusb-probe ${args.join(' ')} exited ${code}: ${stderr}\n${lines.join('\n')}\n`);
      resolve(code);
    }),
  );
  const hangGuard = setTimeout(() => child.kill('SIGKILL'), 60_000);
  void exited.then(() => clearTimeout(hangGuard));
  return {
    child,
    lines,
    exited,
    waitFor(pattern, count = 1) {
      const hits = matching(pattern);
      if (hits.length >= count) return Promise.resolve(hits[count - 1]!);
      return new Promise((resolve, reject) => {
        waiters.push({ pattern, count, resolve });
        void exited.then(() => reject(new Error(`probe exited before printing ${pattern}: ${lines.join(' | ')}`)));
      });
    },
  };
}

async function withDevice(name: string, fn: (dev: WireTestDevice, busDir: string) => Promise<void>): Promise<void> {
  const busDir = await mkdtemp(join(workDir, 'bus-'));
  const dev = new WireTestDevice({ busDir, name });
  await dev.plug();
  try {
    await fn(dev, busDir);
  } finally {
    await dev.unplug();
  }
}

/** Dynamic symbols a binary imports (`U`) or a library defines, via binutils' nm. */
function dynamicSymbols(file: string, defined: boolean, all = false): string[] | undefined {
  const r = spawnSync('nm', ['-D', ...(defined ? ['--defined-only'] : ['--undefined-only']), file], { encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  const names = r.stdout.split('\n').map((l) => l.trim().split(/\s+/).pop() ?? '').filter((n) => n !== '');
  return all ? names : names.filter((n) => n.startsWith('libusb_'));
}

describe('the vusb libusb library', () => {
  test('is a drop-in libusb-1.0.so.0 exporting everything usbmuxd and libusb export', (t) => {
    if (!ready(t)) return;
    const lib = join(libDir, 'libusb-1.0.so.0');
    const soname = spawnSync('readelf', ['-d', lib], { encoding: 'utf8' });
    if (!requireCondition(t, soname.status === 0, 'readelf (binutils) not installed')) return;
    assert.match(soname.stdout, /SONAME.*\[libusb-1\.0\.so\.0\]/);
    const ours = new Set(dynamicSymbols(lib, true));
    // Every function Debian's usbmuxd imports.
    const usbmuxd = dynamicSymbols('/usr/sbin/usbmuxd', false);
    if (usbmuxd) assert.deepEqual(usbmuxd.filter((n) => !ours.has(n)), []);
    // And everything the system's libusb 1.0 exports, when one is installed to compare with.
    for (const real of ['/usr/lib/x86_64-linux-gnu/libusb-1.0.so.0', '/usr/lib/aarch64-linux-gnu/libusb-1.0.so.0', '/usr/lib64/libusb-1.0.so.0']) {
      const theirs = existsSync(real) ? dynamicSymbols(real, true) : undefined;
      if (theirs) assert.deepEqual(theirs.filter((n) => !ours.has(n) && n !== 'libusb_init_context'), []);
    }
    // Nothing internal leaks out (everything else is hidden).
    assert.deepEqual((dynamicSymbols(lib, true, true) ?? []).filter((n) => !n.startsWith('libusb_')), []);
  });

  test('lists a plugged device with the descriptors it sent over the wire', async (t) => {
    if (!ready(t)) return;
    await withDevice('phone', async (_dev, busDir) => {
      const run = runProbe(busDir, ['list']);
      assert.equal(await run.exited, 0);
      const out = run.lines;
      assert.ok(out.includes('count 1'), out.join('\n'));
      assert.match(out.find((l) => l.startsWith('device '))!, /^device bus 1 address \d+ ports 1 speed 3 vid 05ac pid 12a8 configs 4$/);
      // Unconfigured at plug-in, as a real iPhone: no active configuration.
      assert.ok(out.includes('active LIBUSB_ERROR_NOT_FOUND'));
      const mux = out.indexOf('iface 1 alt 0 class ff fe 02 eps 2 extra 0');
      assert.ok(mux > out.indexOf('config 4 interfaces 3 extra 0'));
      assert.equal(out[mux + 1], 'ep 04 attr 02 mps 512');
      assert.equal(out[mux + 2], 'ep 85 attr 02 mps 512');
      // Two alternate settings of interface 2 group into one interface; the class-specific
      // descriptor after alt 0 is its "extra".
      assert.ok(out.includes('iface 2 alt 0 class ff fd 01 eps 0 extra 5'));
      assert.ok(out.includes('iface 2 alt 1 class ff fd 01 eps 2 extra 0'));
      assert.equal(out.filter((l) => l.startsWith('config ')).length, 4);
    });
  });

  test('lists no devices when the bus directory is empty', async (t) => {
    if (!ready(t)) return;
    const busDir = await mkdtemp(join(workDir, 'empty-'));
    const run = runProbe(busDir, ['list']);
    assert.equal(await run.exited, 0);
    assert.ok(run.lines.includes('count 0'));
  });

  for (const mode of ['events', 'pollfds', 'sync', 'threads'] as const) {
    test(`echoes bulk data with device writes spanning IN transfers (${mode})`, async (t) => {
      if (!ready(t)) return;
      await withDevice(`echo-${mode}`, async (dev, busDir) => {
        const run = runProbe(busDir, ['echo', mode, '100', '40000', '0', '16384', '1048576']);
        assert.equal(await run.exited, 0);
        const out = run.lines;
        assert.ok(out.includes('configuration 0'));
        assert.deepEqual(dev.stats.setConfiguration, [4]);
        assert.ok(out.includes('mux interface 1 out 04 in 85 mps 512'));
        assert.ok(out.includes(`serial ${dev.serial}`));
        const section = (size: number): string[] => {
          const end = out.indexOf(`ok ${size}`);
          assert.ok(end >= 0, `no "ok ${size}" in ${out.join(' | ')}`);
          let start = end - 1;
          while (start >= 0 && !out[start]!.startsWith('ok ') && !out[start]!.startsWith('serial ')) start--;
          return out.slice(start + 1, end).filter((l) => l.startsWith('in '));
        };
        assert.deepEqual(section(100), ['in 100']);
        // One 40000-byte device write fills 16384 + 16384 + 7232.
        assert.deepEqual(section(40000), ['in 16384', 'in 16384', 'in 7232']);
        // An empty write completes one transfer with 0 bytes.
        assert.deepEqual(section(0), ['in 0']);
        assert.deepEqual(section(16384), ['in 16384']);
        assert.equal(section(1048576).length, 64);
        assert.deepEqual(
          dev.stats.bulkOut.map((b) => b.length),
          [100, 40000, 0, 16384, 1048576],
        );
        // A synchronous call from one thread while another handles events.
        if (mode === 'threads') assert.ok(out.includes('threaded-sync LIBUSB_SUCCESS / LIBUSB_TRANSFER_COMPLETED 4'));
      });
    });
  }

  test('cancels, times out, stalls and sends zero-length packets as libusb does', async (t) => {
    if (!ready(t)) return;
    await withDevice('misc', async (_dev, busDir) => {
      const run = runProbe(busDir, ['misc']);
      assert.equal(await run.exited, 0);
      const out = run.lines;
      assert.ok(out.includes('version 1.0.26'));
      assert.ok(out.includes('hotplug-capable 1'));
      assert.ok(out.includes('name LIBUSB_ERROR_NO_DEVICE'));
      assert.ok(out.includes('option LIBUSB_SUCCESS / LIBUSB_TRANSFER_COMPLETED'));
      assert.ok(out.includes('next-timeout-pending 1'));
      assert.ok(out.includes('next-timeout 0'));
      assert.ok(out.includes('pollfds 3'));
      assert.ok(out.includes('pollfds-handle-timeouts 0'));
      assert.ok(out.includes('resubmit LIBUSB_ERROR_BUSY'));
      assert.ok(out.includes('cancel-call LIBUSB_SUCCESS / LIBUSB_TRANSFER_COMPLETED'));
      assert.ok(out.includes('cancel LIBUSB_TRANSFER_CANCELLED 0'));
      assert.ok(out.includes('cancel-again LIBUSB_ERROR_NOT_FOUND'));
      assert.ok(out.includes('timeout LIBUSB_TRANSFER_TIMED_OUT 0'));
      assert.ok(out.includes('out-zlp LIBUSB_SUCCESS / LIBUSB_TRANSFER_COMPLETED 512'));
      assert.ok(out.includes('in-after-zlp LIBUSB_SUCCESS / LIBUSB_TRANSFER_COMPLETED 512'));
      assert.ok(out.includes('in-zlp LIBUSB_SUCCESS / LIBUSB_TRANSFER_COMPLETED 0'));
      assert.ok(out.includes('in-short-not-ok LIBUSB_TRANSFER_ERROR 3'));
      assert.ok(out.includes('stall LIBUSB_ERROR_PIPE'));
      assert.ok(out.includes('control-langid LIBUSB_SUCCESS / LIBUSB_TRANSFER_COMPLETED 4'));
      assert.ok(out.includes('langid 0409'));
    });
  });

  const unplugs: Array<[string, (dev: WireTestDevice) => Promise<void> | void]> = [
    ['the device closes its connection', (dev) => dev.dropConnection()],
    ['the socket file is removed', (dev) => dev.unplug()],
    ['the device sends a message with a bad length', (dev) => dev.writeRaw(Buffer.from([0xff, 0xff, 0xff, 0x7f, 5]))],
    ['the device sends a host-to-device message', (dev) => dev.writeRaw(Buffer.from([2, 0, 0, 0, 4, 0x04]))],
    [
      'the device hangs up right after a burst of data',
      (dev) => {
        for (let i = 0; i < 6; i++) dev.write(Buffer.alloc(1000, i));
        dev.dropConnection();
      },
    ],
  ];
  for (const [why, unplug] of unplugs) {
    test(`completes pending transfers with NO_DEVICE when ${why}`, async (t) => {
      if (!ready(t)) return;
      await withDevice('unplug', async (dev, busDir) => {
        const run = runProbe(busDir, ['unplug']);
        await run.waitFor(/^ready$/);
        await unplug(dev);
        assert.equal(await run.exited, 0);
        const out = run.lines;
        // Each of the three transfers ends with NO_DEVICE: in its callback, or (once resubmitted
        // from a data callback) as the resubmission's error; none is lost.
        const ended = out.filter((l) => l === 'in status LIBUSB_TRANSFER_NO_DEVICE' || l === 'resubmit LIBUSB_ERROR_NO_DEVICE');
        assert.equal(ended.length, 3, out.join('\n'));
        assert.ok(out.some((l) => /^hotplug left 1-\d+$/.test(l)));
        assert.ok(out.includes('submit LIBUSB_ERROR_NO_DEVICE'));
        assert.ok(out.includes('control LIBUSB_ERROR_NO_DEVICE'));
        assert.ok(out.includes('release LIBUSB_ERROR_NO_DEVICE'));
        assert.ok(out.includes('count 0'));
        assert.ok(out.includes('pollfds-after 2 removed yes'));
      });
    });
  }

  test('reports SuperSpeed and 1024-byte packets from a super-speed device', async (t) => {
    if (!ready(t)) return;
    const busDir = await mkdtemp(join(workDir, 'super-'));
    const dev = new WireTestDevice({ busDir, name: 'super', speed: 4 });
    await dev.plug();
    t.after(() => dev.unplug());
    const run = runProbe(busDir, ['list']);
    assert.equal(await run.exited, 0);
    assert.match(run.lines.find((l) => l.startsWith('device '))!, / speed 4 /);
    const mux = run.lines.indexOf('iface 1 alt 0 class ff fe 02 eps 2 extra 0');
    assert.equal(run.lines[mux + 1], 'ep 04 attr 02 mps 1024');
  });

  /** A small seeded generator, so a failing case can be replayed. */
  function prng(seed: number): () => number {
    let x = seed >>> 0 || 1;
    return () => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return (x >>> 0) / 0x100000000;
    };
  }

  test('survives devices that answer discovery with malformed descriptors', async (t) => {
    if (!ready(t)) return;
    for (let seed = 1; seed <= 40; seed++) {
      const rand = prng(seed);
      await withDevice(`hostile-${seed}`, async (dev, busDir) => {
        dev.mutateReply = (setup, data) => {
          if (!data || setup.bRequest !== 0x06 || rand() < 0.5) return data;
          const out = Buffer.from(data);
          switch (Math.floor(rand() * 4)) {
            case 0: // flip some bytes (lengths, types, counts)
              for (let i = 0; i < 3; i++) out[Math.floor(rand() * out.length)] = Math.floor(rand() * 256);
              return out;
            case 1: // truncate
              return out.subarray(0, Math.floor(rand() * out.length));
            case 2: // claim a longer total length than sent
              if (out.length >= 4 && out[1] === 0x02) out.writeUInt16LE(out.length + 1 + Math.floor(rand() * 4000), 2);
              return out;
            default: // a descriptor whose bLength runs past the end
              if (out.length > 9) out[9] = 0xff;
              return out;
          }
        };
        const run = runProbe(busDir, ['list']);
        assert.equal(await run.exited, 0, `seed ${seed}: ${run.lines.join(' | ')}`);
        assert.match(run.lines.find((l) => l.startsWith('count ')) ?? '', /^count [01]$/, `seed ${seed}`);
      });
    }
  });

  test('survives random bytes from a device whose transfers are pending', async (t) => {
    if (!ready(t)) return;
    for (let seed = 1; seed <= 10; seed++) {
      const rand = prng(seed * 7919);
      await withDevice(`noise-${seed}`, async (dev, busDir) => {
        const run = runProbe(busDir, ['unplug']);
        await run.waitFor(/^ready$/);
        const noise = Buffer.alloc(256 + Math.floor(rand() * 4096));
        for (let i = 0; i < noise.length; i++) noise[i] = Math.floor(rand() * 256);
        // Half the seeds start with a well-formed BULK_IN so the noise lands mid-stream.
        if (seed % 2 === 0) dev.write(Buffer.from('hello'));
        dev.writeRaw(noise);
        dev.dropConnection(); // a message the noise declared but never finished ends at EOF
        assert.equal(await run.exited, 0, `seed ${seed}: ${run.lines.join(' | ')}`);
        assert.ok(run.lines.some((l) => /^hotplug left/.test(l)), `seed ${seed}`);
        assert.ok(run.lines.includes('submit LIBUSB_ERROR_NO_DEVICE'), `seed ${seed}`);
      });
    }
  });

  test('reports devices plugged before and after registration, and their removal', async (t) => {
    if (!ready(t)) return;
    const busDir = await mkdtemp(join(workDir, 'hotplug-'));
    const first = new WireTestDevice({ busDir, name: 'first' });
    const second = new WireTestDevice({ busDir, name: 'second', serial: '1111111111111111111111111111111111111111' });
    await first.plug();
    const run = runProbe(busDir, ['hotplug', '4']);
    t.after(async () => {
      run.child.kill();
      await first.unplug();
      await second.unplug();
    });
    const pid = TEST_PID.toString(16);
    await run.waitFor(new RegExp(`^hotplug arrived 1-\\d+ 05ac:${pid}$`));
    await run.waitFor(/^registered$/);
    await second.plug();
    await second.connected();
    await run.waitFor(/^hotplug arrived/, 2);
    await first.unplug();
    await run.waitFor(/^hotplug left/);
    second.dropConnection();
    assert.equal(await run.exited, 0);
    const events = run.lines.filter((l) => l.startsWith('hotplug '));
    assert.equal(events.length, 4, events.join('\n'));
    const addresses = events.map((l) => l.split(' ')[2]);
    // Two devices, two addresses; each leaves under the address it arrived with.
    assert.notEqual(addresses[0], addresses[1]);
    assert.deepEqual(new Set(addresses.slice(2)), new Set(addresses.slice(0, 2)));
  });
});
