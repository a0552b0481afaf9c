#!/usr/bin/env node
/**
 * Where a connect's time goes, step by step (bench/README.md, "Targets that do not hold yet").
 *
 *   npm run build && node scripts/connect-timeline.mjs [contender ...] [--batches N] [--per N]
 *   (contenders: muxwire-js, usbmuxd, muxwire-native; default muxwire-js usbmuxd. The native
 *   backend's device reads are not stamped: its two rows around the sim are left blank.)
 *
 * It copies dist/ into a temporary directory and adds timestamps there (never in the tree): the
 * bench client stamps Connect written and Result read, the sim stamps each read from and write to
 * its host, our daemon stamps a client's bytes arriving, the SYN written, a read from the device
 * and the Result written. Every process stamps CLOCK_MONOTONIC (process.hrtime), the same clock
 * for all of them. Then it runs batches of connects (as the bench's connect figure does: Connect,
 * one echoed byte, close) from fresh processes and prints the median of each step per batch, in
 * µs. usbmuxd has no stamps of its own: its rows are Connect → SYN at the sim and SYN|ACK → Result
 * at the client. The stamps cost a few hundred nanoseconds each.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { batches: { type: 'string', default: '6' }, per: { type: 'string', default: '500' } },
});
const contenders = positionals.length > 0 ? positionals : ['muxwire-js', 'usbmuxd'];
const batches = Number(values.batches);
const per = Number(values.per);
if (!Number.isInteger(batches) || batches < 1 || !Number.isInteger(per) || per < 10) {
  process.stderr.write('connect-timeline: --batches takes a count ≥ 1 and --per a count ≥ 10\n');
  process.exit(2);
}

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const work = mkdtempSync(join(tmpdir(), 'muxwire-timeline-'));
const stamps = join(work, 'stamps');

/** The stamp preload each process loads (`--require`): stamps are kept in memory, written at exit. */
const PRELOAD = `
const fs = require('fs');
const buf = [];
const role = process.argv.includes('sim') ? 'sim' : process.argv.includes('daemon') ? 'daemon' : 'client';
globalThis.__timelineStamp = (tag) => { buf.push(tag, process.hrtime.bigint()); };
process.on('exit', () => {
  const out = [];
  for (let i = 0; i < buf.length; i += 2) out.push([buf[i], Number(buf[i + 1])]);
  fs.writeFileSync(${JSON.stringify(stamps)} + '/' + role + '-' + process.pid + '.json', JSON.stringify(out));
});
`;

/** [file under dist, text to find, text to put after it]: each must be found exactly once. */
const POINTS = [
  ['bench/contenders.js', '    const t1 = performance.now();\n', "    globalThis.__timelineStamp?.('C0');\n"],
  ['bench/contenders.js', '        const t2 = performance.now();\n', "        globalThis.__timelineStamp?.('C1');\n"],
  ['src/sim/usb-device.js', '    #onData(socket, decoder, chunk) {\n', "        globalThis.__timelineStamp?.('S0');\n"],
  ['src/sim/usb-device.js', '        socket?.uncork();\n', "        globalThis.__timelineStamp?.('S1');\n"],
  ['src/daemon/client-session.js', '    #receive(chunk) {\n', "        globalThis.__timelineStamp?.('D0');\n"],
  ['src/mux/device-session.js', '        this.link.flush?.();\n', "        globalThis.__timelineStamp?.('D1');\n"],
  ['src/transport/vusb-link.js', '            callback: (n, buf) => {\n', "                globalThis.__timelineStamp?.('D2');\n"],
  ['src/daemon/client-session.js', '        this.#send(bytes);\n    }\n    #reply', null],
];

function instrument() {
  cpSync(join(root, 'dist'), join(work, 'dist'), { recursive: true });
  for (const name of ['package.json', 'native', 'build', 'scripts', 'node_modules']) symlinkSync(join(root, name), join(work, name));
  for (const [file, find, add] of POINTS) {
    const path = join(work, 'dist', file);
    const text = readFileSync(path, 'utf8');
    const at = text.indexOf(find);
    if (at < 0 || text.indexOf(find, at + 1) >= 0) throw new Error(`${file}: the stamp point ${JSON.stringify(find)} is not there exactly once (has the code moved?)`);
    const patched =
      add === null
        ? text.replace(find, "        this.#send(bytes);\n        globalThis.__timelineStamp?.('D3');\n    }\n    #reply")
        : text.slice(0, at + find.length) + add + text.slice(at + find.length);
    writeFileSync(path, patched);
  }
  // The sim and daemon processes get the preload through the bench's node arguments.
  const contendersJs = join(work, 'dist/bench/contenders.js');
  const text = readFileSync(contendersJs, 'utf8');
  const marker = 'function profileArgs() {\n';
  if (!text.includes(marker)) throw new Error('bench/contenders.js: profileArgs() not found');
  writeFileSync(contendersJs, text.replace(marker, `${marker}    return ['--require', ${JSON.stringify(join(work, 'preload.cjs'))}];\n`));
  writeFileSync(join(work, 'preload.cjs'), PRELOAD);
}

function firstAfter(list, tag, from, to) {
  for (const [g, v] of list) if (g === tag && v >= from && v < to) return v;
  return undefined;
}

function median(xs) {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length > 0 ? s[s.length >> 1] : NaN;
}

/** One row of step durations (ns) per connect, from the stamps of the three processes. */
function steps(files) {
  const load = (role) => {
    const f = files.find((n) => n.startsWith(role));
    return f ? JSON.parse(readFileSync(join(stamps, f), 'utf8')) : [];
  };
  const client = load('client');
  const daemon = load('daemon');
  const sim = load('sim');
  const c0s = client.filter(([t]) => t === 'C0').map(([, v]) => v);
  const c1s = client.filter(([t]) => t === 'C1').map(([, v]) => v);
  return c0s.map((c0, i) => {
    const c1 = c1s[i];
    if (daemon.length === 0) {
      const s0 = firstAfter(sim, 'S0', c0, c1);
      const s1 = firstAfter(sim, 'S1', s0 ?? c0, c1);
      return { 'Connect → SYN at the sim': s0 - c0, 'sim answers': s1 - s0, 'SYN|ACK → Result at the client': c1 - s1, total: c1 - c0 };
    }
    const d0 = firstAfter(daemon, 'D0', c0, c1);
    const d1 = firstAfter(daemon, 'D1', d0 ?? c0, c1);
    const s0 = firstAfter(sim, 'S0', d1 ?? c0, c1);
    const s1 = firstAfter(sim, 'S1', s0 ?? c0, c1);
    const d2 = firstAfter(daemon, 'D2', s1 ?? c0, c1);
    const d3 = firstAfter(daemon, 'D3', d2 ?? c0, c1);
    return {
      'Connect → daemon has it': d0 - c0,
      'daemon: to SYN written': d1 - d0,
      'SYN → sim has it': s0 - d1,
      'sim answers': s1 - s0,
      'SYN|ACK → daemon has it': d2 - s1,
      'daemon: to Result written': d3 - d2,
      'Result → client has it': c1 - d3,
      total: c1 - c0,
    };
  });
}

try {
  instrument();
  const preload = join(work, 'preload.cjs');
  for (const id of contenders) {
    rmSync(stamps, { recursive: true, force: true });
    mkdirSync(stamps);
    // The client side runs in a child process with the preload, so its stamps are written at exit.
    const script = `
      const { startContender, makeWorkDir } = await import(${JSON.stringify(join(work, 'dist/bench/contenders.js'))});
      const { connectLatency } = await import(${JSON.stringify(join(work, 'dist/bench/e2e-workloads.js'))});
      const c = await startContender(${JSON.stringify(id)}, { workDir: await makeWorkDir() });
      try { for (let b = 0; b < ${batches}; b++) await connectLatency(c, ${per}); } finally { await c.stop(); }
      process.exit(0);`;
    const r = spawnSync(process.execPath, ['--require', preload, '--input-type=module', '-e', script], { stdio: ['ignore', 'inherit', 'inherit'] });
    if (r.status !== 0) throw new Error(`${id}: the run failed (exit ${r.status})`);
    const rows = steps(readdirSync(stamps));
    process.stdout.write(`\n${id}: median µs per batch of ${per} connects from fresh processes\n`);
    const keys = Object.keys(rows[0] ?? {});
    process.stdout.write(`${'step'.padEnd(32)}${Array.from({ length: batches }, (_, b) => `#${b + 1}`.padStart(7)).join('')}\n`);
    for (const k of keys) {
      const cells = Array.from({ length: batches }, (_, b) => (median(rows.slice(b * per, (b + 1) * per).map((r) => r[k])) / 1000).toFixed(0).padStart(7));
      process.stdout.write(`${k.padEnd(32)}${cells.join('')}\n`);
    }
  }
} catch (err) {
  process.stderr.write(`connect-timeline: ${err.message}\n`);
  process.exitCode = 1;
} finally {
  rmSync(work, { recursive: true, force: true });
}
