#!/usr/bin/env node
// Builds native/vusb/ — the libusb-1.0-compatible library that presents simulated devices
// (docs/ARCHITECTURE.md "The vusb wire") — into build/vusb/libusb-1.0.so.0 (SONAME libusb-1.0.so.0)
// plus a libusb-1.0.so symlink, with the system C compiler. Put build/vusb first on LD_LIBRARY_PATH
// and set MUXWIRE_VUSB_DIR, and an unmodified libusb program (Debian's usbmuxd) sees the devices of
// that bus directory.
//
// Like the addon build, this never fails an install: without a compiler, or off Linux (the library
// uses inotify and eventfd), it prints one line saying why and exits 0. MUXWIRE_SKIP_NATIVE_BUILD=1
// skips it. `--check` exits 1 instead when the build fails (for CI and tests that need it).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, symlinkSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const src = join(root, 'native', 'vusb');
const out = join(root, 'build', 'vusb');
const strict = process.argv.includes('--check');

function skip(reason) {
  process.stderr.write(`muxwire: vusb libusb library not built (${reason})\n`);
  process.exit(strict ? 1 : 0);
}

if (process.env.MUXWIRE_SKIP_NATIVE_BUILD === '1' && !strict) process.exit(0);
if (process.platform !== 'linux') skip(`needs Linux, this is ${process.platform}`);
if (!existsSync(src)) skip('native/vusb is missing');

const sources = readdirSync(src).filter((f) => f.endsWith('.c')).sort().map((f) => join(src, f));
if (sources.length === 0) skip('no C sources in native/vusb');

const target = join(out, 'libusb-1.0.so.0');
// Up to date: nothing newer than the library among the sources and headers, the libusb ABI header
// it shares with the addon (native/libusb-abi.h) among them.
if (existsSync(target) && !process.argv.includes('--force')) {
  const built = statSync(target).mtimeMs;
  const inputs = readdirSync(src).filter((f) => /\.[ch]$/.test(f)).map((f) => statSync(join(src, f)).mtimeMs);
  inputs.push(statSync(join(root, 'native', 'libusb-abi.h')).mtimeMs);
  inputs.push(statSync(fileURLToPath(import.meta.url)).mtimeMs);
  if (inputs.every((m) => m <= built)) process.exit(0);
}

const cc = process.env.CC || 'cc';
mkdirSync(out, { recursive: true });
const tmp = `${target}.tmp-${process.pid}`;
const args = [
  '-std=gnu11', '-O2', '-g', '-fPIC', '-shared', '-fvisibility=hidden', '-pthread',
  '-Wall', '-Wextra', '-Wshadow',
  '-Wl,-soname,libusb-1.0.so.0', '-Wl,--no-undefined',
  '-o', tmp, ...sources,
];
const r = spawnSync(cc, args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
if (r.error || r.status !== 0) {
  rmSync(tmp, { force: true });
  const why = r.error ? `${cc}: ${r.error.message}` : (r.stderr || '').trim().split('\n').slice(-3).join(' | ');
  skip(why || `${cc} exited with ${r.status}`);
}
if (r.stderr && r.stderr.trim() !== '') process.stderr.write(r.stderr);
renameSync(tmp, target); // atomic: a test running the old library never sees half a file
const link = join(out, 'libusb-1.0.so');
rmSync(link, { force: true });
symlinkSync('libusb-1.0.so.0', link);
