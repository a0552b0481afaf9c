#!/usr/bin/env node
// Attempts the native builds and never fails the install (docs/ARCHITECTURE.md "The accel
// contract"): where a compiler or node-gyp is missing, the TypeScript path serves and a line says
// why. MUXWIRE_SKIP_NATIVE_BUILD=1 skips the attempt; MUXWIRE_REQUIRE_NATIVE=1 makes a failed build
// an error (CI sets it, so broken C++ cannot hide behind the TypeScript fallback).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
if (process.env.MUXWIRE_SKIP_NATIVE_BUILD === '1') process.exit(0);
if (!existsSync(`${root}/binding.gyp`)) process.exit(0);
const required = process.env.MUXWIRE_REQUIRE_NATIVE === '1';

// Our own node-gyp (a devDependency) in a checkout; in an installed package, the one npm runs
// install scripts with (npm_config_node_gyp, set by npm for every lifecycle script).
function nodeGyp() {
  try {
    return createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    const npmGyp = process.env.npm_config_node_gyp;
    return npmGyp && existsSync(npmGyp) ? npmGyp : undefined;
  }
}
// node-gyp downloads headers unless told where they are. npm passes npm_config_nodedir from
// .npmrc; run directly (node scripts/build-native.mjs), use the running node's own headers when
// its prefix has them (Debian's nodejs: /usr/include/node), so an offline machine still builds.
const args = ['rebuild', '-j', 'max'];
const prefix = dirname(dirname(process.execPath));
if (!process.env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
const gyp = nodeGyp();
const r = gyp
  ? spawnSync(process.execPath, [gyp, ...args], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' })
  : spawnSync('npm', ['exec', '--no', '--', 'node-gyp', ...args], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
if (r.status !== 0) {
  // The lines that say why (a compiler error, a missing header, a network failure), not
  // node-gyp's closing "not ok" banner.
  const lines = (r.stderr || r.error?.message || 'unknown').split('\n').filter((l) => /error|ERR! stack Error|not found|No such/i.test(l) && !/gyp ERR! (not ok|cwd|node -v|node-gyp -v|System|command)/.test(l));
  const why = (lines.length > 0 ? lines : (r.stderr || 'unknown').trim().split('\n')).slice(0, 3).join(' | ');
  process.stderr.write(`muxwire: native addon not built, the TypeScript path will serve (${why})\n`);
  if (required) process.exit(1);
}

// The vusb libusb library builds into build/vusb, after node-gyp (whose rebuild cleans build/).
const vusb = spawnSync(process.execPath, [join(root, 'scripts', 'build-vusb.mjs')], { cwd: root, stdio: 'inherit' });
if (vusb.status !== 0 && required) process.exit(1);
