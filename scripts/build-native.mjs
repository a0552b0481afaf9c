#!/usr/bin/env node
// Attempts the native builds and never fails the install (DESIGN.md "Native and TypeScript paths"):
// where a compiler or node-gyp is missing, the TypeScript path serves and a line says why.
// MUXWIRE_SKIP_NATIVE_BUILD=1 skips the attempt.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

const root = new URL('..', import.meta.url).pathname;
if (process.env.MUXWIRE_SKIP_NATIVE_BUILD === '1') process.exit(0);
if (!existsSync(`${root}/binding.gyp`)) process.exit(0);

function nodeGyp() {
  try {
    return createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    return undefined;
  }
}
const gyp = nodeGyp();
const r = gyp
  ? spawnSync(process.execPath, [gyp, 'rebuild'], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' })
  : spawnSync('npm', ['exec', '--no', '--', 'node-gyp', 'rebuild'], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
if (r.status !== 0) {
  const why = (r.stderr || r.error?.message || 'unknown').trim().split('\n').slice(-3).join(' | ');
  process.stderr.write(`muxwire: native addon not built, the TypeScript path will serve (${why})\n`);
}
