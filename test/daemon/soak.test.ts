/**
 * `muxwire soak` as a command: a very small run (the kill -9 scenario of --quick, whose bounds
 * hold no timing) must pass with every record whole and no temp file after the next start; bad
 * arguments are one coded line. The full and quick runs themselves are `muxwire soak [--quick]`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { formatTable } from '../../src/cli/commands/soak.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

test('soak --quick --only kill: 20 kill -9 cycles during SavePairRecord leave no corrupted record and no temp file', () => {
  const r = spawnSync(process.execPath, [CLI, 'soak', '--quick', '--only', 'kill', '--json'], { encoding: 'utf8', timeout: 240_000 });
  assert.equal(r.status, 0, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
  const report = JSON.parse(r.stdout) as { quick: boolean; failed: number; rows: Array<{ figure: string; value: string; ok?: boolean }> };
  assert.equal(report.quick, true);
  assert.equal(report.failed, 0);
  const row = (figure: RegExp) => report.rows.find((x) => figure.test(x.figure))!;
  assert.match(row(/^kills/).value, /^20 \(\d+\)$/);
  assert.match(row(/^records corrupted/).value, /^0 of [1-9]/);
  assert.match(row(/^temp files/).value, / → 0$/);
  assert.equal(row(/^record modes/).value, '0 / 0700');
});

test('soak refuses an unknown scenario with one coded line, and its help names every scenario', () => {
  const r = spawnSync(process.execPath, [CLI, 'soak', '--only', 'everything'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^muxwire soak: --only takes unplug, kill, slow, flood, malformed, not 'everything' \(MUXWIRE_ERR_BAD_ARGUMENT\)\n$/);
  const help = spawnSync(process.execPath, [CLI, 'soak', '--help'], { encoding: 'utf8' });
  assert.equal(help.status, 0);
  for (const word of ['--quick', '--only', 'unplug', 'kill', 'slow', 'flood', 'malformed']) assert.ok(help.stdout.includes(word), word);
});

test('the table aligns its columns and names each scenario once', () => {
  const text = formatTable([
    { scenario: 'a', figure: 'x', value: '1', bound: '< 2', ok: true },
    { scenario: 'a', figure: 'longer figure', value: '3' },
    { scenario: 'b', figure: 'y', value: '5', bound: '0', ok: false },
  ]);
  assert.equal(text, ['scenario  figure         value  bound', 'a         x              1      < 2    ok', '          longer figure  3', 'b         y              5      0      FAIL'].join('\n'));
});
