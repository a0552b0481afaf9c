/**
 * The README lists every error code and every environment switch the code uses
 * (docs/ARCHITECTURE.md, conventions §14): a new code or switch without its line fails here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const readme = readFileSync(join(root, 'README.md'), 'utf8');

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (/\.(ts|c|cc|h|mjs)$/.test(name)) out.push(readFileSync(p, 'utf8'));
  }
  return out;
}

const code = [...sources(join(root, 'src')), ...sources(join(root, 'native')), ...sources(join(root, 'scripts'))].join('\n');

test('every error code used in the source has a line in the README', () => {
  const codes = new Set(code.match(/MUXWIRE_ERR_[A-Z_]+/g) ?? []);
  assert.ok(codes.size > 10);
  const missing = [...codes].filter((c) => !readme.includes('`' + c + '`'));
  assert.deepEqual(missing, []);
});

test('every MUXWIRE_ environment switch used in the source has a line in the README', () => {
  // Include guards (MUXWIRE_…_H) are not switches.
  const switches = new Set((code.match(/MUXWIRE_(?!ERR_)[A-Z_]+/g) ?? []).filter((s) => !s.endsWith('_') && !s.endsWith('_H')));
  const missing = [...switches].filter((s) => !readme.includes('`' + s));
  assert.deepEqual(missing, []);
});

test('the README opens with the two set-up commands, and .ci/run runs its test command', () => {
  const head = readme.split('\n').slice(0, 6).join('\n');
  assert.match(head, /npm ci && npx muxwire demo/);
  assert.match(head, /^npm test/m);
  assert.match(readFileSync(join(root, '.ci', 'run'), 'utf8'), /^npm test$/m);
});
