#!/usr/bin/env node
/**
 * Interleaved A/B of connect latency and the daemon's CPU per connect, between builds
 * (bench/README.md, "The daemon's CPU per connect").
 *
 *   node scripts/connect-ab.mjs [--rounds N] [--per N] TREE[:CONTENDER] ...
 *
 * Each TREE is a built checkout (npm run build: dist/ and the addon); CONTENDER is a bench
 * contender id (muxwire-js by default; muxwire-native, usbmuxd). All contenders start at once,
 * each warms up with 1500 connects, then they take turns, a batch of N connects each per round,
 * the order rotating every round, so the machine's drift lands on all of them alike. Per batch:
 * the median latency (Connect written → Result 0 read) and the daemon's CPU (every thread's
 * scheduler time, /proc/<pid>/task/<tid>/schedstat) over the batch's connect cycles.
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { cpuSecondsPrecise } from '../dist/bench/proc-stats.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { rounds: { type: 'string', default: '8' }, per: { type: 'string', default: '500' }, help: { type: 'boolean', short: 'h' } },
});
const rounds = Number(values.rounds);
const per = Number(values.per);
if (values.help || positionals.length === 0 || !Number.isInteger(rounds) || rounds < 1 || !Number.isInteger(per) || per < 10) {
  process.stderr.write('usage: node scripts/connect-ab.mjs [--rounds N ≥ 1] [--per N ≥ 10] TREE[:CONTENDER] ...\n');
  process.exit(values.help ? 0 : 2);
}

const median = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];
const runs = [];
try {
  for (const spec of positionals) {
    const [tree, id = 'muxwire-js'] = spec.split(':');
    const dist = resolve(tree, 'dist', 'bench');
    const { startContender, makeWorkDir } = await import(`${dist}/contenders.js`);
    const { connectLatency } = await import(`${dist}/e2e-workloads.js`);
    const c = await startContender(id, { workDir: await makeWorkDir() });
    if (c.relayPid === undefined) throw new Error(`${spec}: not a daemon (no process to measure)`);
    runs.push({ spec, c, connectLatency, latency: [], cpu: [] });
  }
  for (const r of runs) await r.connectLatency(r.c, 1500);
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < runs.length; k++) {
      const r = runs[(k + round) % runs.length];
      const before = cpuSecondsPrecise(r.c.relayPid);
      const times = await r.connectLatency(r.c, per);
      const after = cpuSecondsPrecise(r.c.relayPid);
      r.latency.push(median(times) * 1000);
      r.cpu.push(((after - before) / per) * 1e6);
    }
  }
  for (const r of runs) {
    const batches = r.cpu.map((x) => x.toFixed(0)).join(' ');
    console.log(`${r.spec.padEnd(28)} latency median ${median(r.latency).toFixed(0)} µs   daemon CPU per connect ${median(r.cpu).toFixed(0)} µs (batches ${batches})`);
  }
} catch (err) {
  process.stderr.write(`connect-ab: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
} finally {
  for (const r of runs) await r.c.stop();
}
process.exit();
