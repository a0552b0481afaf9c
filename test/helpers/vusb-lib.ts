/**
 * Locates (building when needed) the libusb-compatible vusb library, build/vusb/libusb-1.0.so.0,
 * for tests and benchmarks that run unmodified libusb programs against simulated devices.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root, from dist-*\/test/helpers/ or test/helpers/. */
export function repoRoot(): string {
  let dir = fileURLToPath(new URL('.', import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'native', 'vusb'))) return dir;
    dir = join(dir, '..');
  }
  throw new Error('repository root not found above ' + fileURLToPath(import.meta.url));
}

/** The directory to put first on LD_LIBRARY_PATH. */
export function vusbLibDir(): string {
  return join(repoRoot(), 'build', 'vusb');
}

/**
 * Builds the library if it is missing or stale (scripts/build-vusb.mjs is incremental) and returns
 * its directory, or a reason it cannot be had (no compiler, not Linux).
 */
export function ensureVusbLibrary(): { dir: string } | { reason: string } {
  const root = repoRoot();
  const r = spawnSync(process.execPath, [join(root, 'scripts', 'build-vusb.mjs'), '--check'], {
    encoding: 'utf8',
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const lib = join(vusbLibDir(), 'libusb-1.0.so.0');
  if (r.status === 0 && existsSync(lib)) return { dir: vusbLibDir() };
  return { reason: (r.stderr || 'build-vusb failed').trim().split('\n').pop() ?? 'build-vusb failed' };
}
