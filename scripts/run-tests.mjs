#!/usr/bin/env node
// Runs the whole suite with node's test runner, twice for the parts whose behaviour depends on the
// native/TypeScript selection (docs/ARCHITECTURE.md "The accel contract"): once as selected (auto),
// once with MUXWIRE_NO_NATIVE=1. Prints one closing line that CI reads:
//   tests: N passed, N failed, N skipped
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const testRoot = join(root, 'dist', 'test');

function find(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...find(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const filter = process.argv.slice(2);
const all = find(testRoot).filter((f) => filter.length === 0 || filter.some((s) => f.includes(s)));
// Suites that exercise the selected accelerator path run a second time on the TypeScript path.
const PATH_DEPENDENT = ['/accel/', '/mux/', '/daemon/', '/transport/', '/sim/', '/client/'];
const twice = all.filter((f) => PATH_DEPENDENT.some((d) => f.includes(d)));

const totals = { pass: 0, fail: 0, skipped: 0 };
function run(label, files, env) {
  if (files.length === 0) return;
  process.stdout.write(`\n== ${label}: ${files.length} files\n`);
  // Hang guards: no single test may run 5 minutes, and no run 35 minutes (CI has 90 in all).
  const r = spawnSync(process.execPath, ['--test', '--test-timeout=300000', '--test-reporter=spec', '--test-reporter=tap', '--test-reporter-destination=stdout', `--test-reporter-destination=${join(root, 'dist', `tap-${label}.txt`)}`, ...files.map((f) => relative(root, f))], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit'],
    timeout: 35 * 60 * 1000,
    killSignal: 'SIGKILL',
  });
  if (r.error) process.stdout.write(`\n${label} run stopped: ${r.error.message}\n`);
  const tap = spawnSync('cat', [join(root, 'dist', `tap-${label}.txt`)], { encoding: 'utf8' }).stdout ?? '';
  const num = (k) => Number((tap.match(new RegExp(`^# ${k} (\\d+)`, 'm')) ?? [])[1] ?? 0);
  totals.pass += num('pass');
  totals.fail += num('fail') + num('cancelled');
  totals.skipped += num('skipped') + num('todo');
  if (r.status !== 0 && num('fail') + num('cancelled') === 0) totals.fail += 1;
  failures.push(...failedTests(tap, label));
}

/**
 * The failing tests of a TAP report, each with the start of its error: CI shows only the end of
 * the output, so the failures (a fuzz seed to replay, the assertion) are printed again last.
 * Suites that failed only because a subtest did are left out.
 */
function failedTests(tap, label) {
  const lines = tap.split('\n');
  const out = [];
  for (let i = 0; i < lines.length; i++) {
    const m = /^(\s*)not ok \d+ - (.*)$/.exec(lines[i]);
    if (m === null) continue;
    const body = [];
    for (let j = i + 1; j < lines.length && lines[j] !== `${m[1]}  ...`; j++) body.push(lines[j]);
    if (body.some((l) => l.includes("failureType: 'subtestsFailed'"))) continue;
    const text = body.join('\n');
    out.push(`[${label}] ${m[2]}\n${text.length > 1500 ? `${text.slice(0, 1500)}\n  … (${text.length - 1500} more characters in dist/tap-${label}.txt)` : text}`);
  }
  return out;
}

const failures = [];

run('auto', all, {});
run('js', twice, { MUXWIRE_NO_NATIVE: '1' });
if (failures.length > 0) process.stdout.write(`\nfailed tests, again:\n${failures.slice(0, 5).join('\n\n')}\n`);
process.stdout.write(`\ntests: ${totals.pass} passed, ${totals.fail} failed, ${totals.skipped} skipped\n`);
process.exitCode = totals.fail === 0 && totals.pass > 0 ? 0 : 1;
