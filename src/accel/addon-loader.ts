/**
 * The one place that loads the native addon (docs/ARCHITECTURE.md "The accel contract"; the
 * ws/bufferutil pattern): the load happens inside a try, once per path, and a failure is a value
 * with its reason, never an exception, so the caller can fall back to TypeScript or report it.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { asNativeBinding, type NativeBinding } from './native-binding.js';

/** The outcome of one load attempt. */
export type AddonLoad =
  | { readonly ok: true; readonly binding: NativeBinding; readonly path: string }
  | { readonly ok: false; readonly error: Error; readonly path: string | undefined };

/** Where node-gyp leaves the addon, relative to the package root. */
const ADDON_RELATIVE_PATH = join('build', 'Release', 'muxwire.node');

const requireNative = createRequire(import.meta.url);
const loads = new Map<string, AddonLoad>();

/**
 * The folder holding the package.json named "muxwire", walking up from `from` (this module's own
 * URL by default). The compiled module sits at different depths (dist/src/accel/, dist-x/…, or
 * node_modules/muxwire/dist/src/accel/), so the root is found rather than assumed.
 */
export function findPackageRoot(from: string | URL = import.meta.url): string | undefined {
  let dir = dirname(fileURLToPath(from));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown };
      if (pkg.name === 'muxwire') return dir;
    } catch {
      // No package.json here, or not JSON: keep walking up.
    }
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

/** defaultAddonPath's answer, found once: null until then (the package root does not move). */
let defaultPath: string | undefined | null = null;

/**
 * The addon's default path, or undefined when no package root is found. Found on the first call
 * and remembered: callers ask on every client connect (the ring reader), and walking up the tree
 * reading package.json files cost each connect about 100 µs of the daemon's CPU.
 */
export function defaultAddonPath(): string | undefined {
  if (defaultPath === null) {
    const root = findPackageRoot();
    defaultPath = root === undefined ? undefined : join(root, ADDON_RELATIVE_PATH);
  }
  return defaultPath;
}

/**
 * Loads the addon at `path` (default: build/Release/muxwire.node under the package root), once
 * per path per process; later calls return the first outcome. Never throws.
 */
export function loadAddon(path: string | undefined = defaultAddonPath()): AddonLoad {
  if (path === undefined) {
    return { ok: false, error: new Error('no package.json named "muxwire" above src/accel/'), path };
  }
  const cached = loads.get(path);
  if (cached !== undefined) return cached;
  let load: AddonLoad;
  try {
    load = { ok: true, binding: asNativeBinding(requireNative(path)), path };
  } catch (err) {
    load = { ok: false, error: err instanceof Error ? err : new Error(String(err)), path };
  }
  loads.set(path, load);
  return load;
}
