/**
 * scripts/connect-timeline.mjs, the step-by-step connect timeline of bench/README.md: its stamp
 * points must still be where the code is (it fails loudly when one moved), and every step of our
 * daemon's connect must come out as a number.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const SCRIPT = fileURLToPath(new URL('../../../scripts/connect-timeline.mjs', import.meta.url));

test('prints every step of our daemon\'s connect, as numbers, for a short run', { timeout: 120_000 }, () => {
  const r = spawnSync(process.execPath, [SCRIPT, 'muxwire-js', '--batches', '1', '--per', '20'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const rows = new Map(
    r.stdout
      .split('\n')
      .map((line) => /^(.+?)\s{2,}(\S+)$/.exec(line))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1]!.trim(), Number(m[2])]),
  );
  for (const step of ['Connect → daemon has it', 'daemon: to SYN written', 'SYN → sim has it', 'sim answers', 'SYN|ACK → daemon has it', 'daemon: to Result written', 'Result → client has it', 'total']) {
    const v = rows.get(step);
    assert.ok(v !== undefined && Number.isFinite(v) && v >= 0, `${step}: ${String(v)} in\n${r.stdout}`);
  }
});

test('refuses a bad batch size with one line and exit 2', () => {
  const r = spawnSync(process.execPath, [SCRIPT, '--per', '3'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^connect-timeline: --batches takes a count ≥ 1 and --per a count ≥ 10\n$/);
});
