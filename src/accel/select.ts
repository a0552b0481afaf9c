/**
 * Chooses the accelerator once per process (docs/ARCHITECTURE.md "The accel contract"):
 *
 * - `auto`: the addon when it loads, else TypeScript (and the reason is kept for `accelInfo()`);
 * - `native`: the addon, or MuxwireError `MUXWIRE_ERR_NATIVE_UNAVAILABLE` with the load error as
 *   its cause;
 * - `js`: TypeScript.
 *
 * Environment switches, read at the first selection: `MUXWIRE_NO_NATIVE=1` forces TypeScript
 * (the default selection becomes `js`, and an explicit `native` is refused rather than silently
 * ignored); `MUXWIRE_REQUIRE_NATIVE=1` makes the default selection `native`, so a missing addon is
 * an error. When both are set, as in CI's second test run, MUXWIRE_NO_NATIVE wins.
 */
import { MuxwireError } from '../errors.js';
import { log } from '../log.js';
import type { Accel, AccelKind, AccelMode } from './accel.js';
import { loadAddon } from './addon-loader.js';
import { JsAccel } from './js-accel.js';
import { NativeAccel } from './native-accel.js';

/** What was selected and why, for logs, `--backend` reports and bug reports. */
export interface AccelInfo {
  readonly selected: AccelKind;
  readonly reason: string;
}

/** Knobs for tests and tools; `selectAccel()` uses the defaults. */
export interface ResolveAccelOptions {
  /** Default: from the environment (`native` under MUXWIRE_REQUIRE_NATIVE=1, else `auto`). */
  readonly mode?: AccelMode;
  /** Default: `process.env`. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Default: build/Release/muxwire.node under the package root. A path that does not exist is
   * how tests simulate a machine without the addon. */
  readonly addonPath?: string;
  /** Scans of fewer packets stay in TypeScript on the native path (native-accel.ts); 0 sends
   * every call to the addon. */
  readonly nativeMinPackets?: number;
}

const MODES: readonly AccelMode[] = ['auto', 'native', 'js'];

/** True for 'auto', 'native' and 'js' (for command-line parsing). */
export function isAccelMode(value: unknown): value is AccelMode {
  return MODES.includes(value as AccelMode);
}

/**
 * Resolves an accelerator without caching the choice (the addon load itself is cached per path).
 * @throws MuxwireError `MUXWIRE_ERR_NATIVE_UNAVAILABLE` when the native path is required and
 *   cannot serve.
 */
export function resolveAccel(options: ResolveAccelOptions = {}): { accel: Accel; info: AccelInfo } {
  const env = options.env ?? process.env;
  const noNative = env.MUXWIRE_NO_NATIVE === '1';
  const requireNative = env.MUXWIRE_REQUIRE_NATIVE === '1';
  if (options.mode !== undefined && !isAccelMode(options.mode)) {
    throw new TypeError(`accelerator mode must be one of ${MODES.join(', ')}, not ${String(options.mode)}`);
  }
  const mode: AccelMode = options.mode ?? (noNative ? 'js' : requireNative ? 'native' : 'auto');

  if (mode === 'js') {
    const reason = options.mode === 'js' ? 'js requested' : 'MUXWIRE_NO_NATIVE=1';
    return { accel: new JsAccel(), info: { selected: 'js', reason } };
  }
  if (noNative) {
    // Only an explicit `native` reaches here: the operator's switch and the request disagree.
    throw new MuxwireError('MUXWIRE_ERR_NATIVE_UNAVAILABLE', 'native accelerator requested, but MUXWIRE_NO_NATIVE=1 turns it off');
  }
  const load = loadAddon(options.addonPath);
  if (load.ok) {
    const accel = new NativeAccel(load.binding, { nativeMinPackets: options.nativeMinPackets });
    return { accel, info: { selected: 'native', reason: `addon loaded from ${load.path}` } };
  }
  // require()'s message goes on with a require stack; the first line says what happened.
  const why = `native addon did not load from ${load.path ?? '(no package root)'}: ${load.error.message.split('\n')[0]}`;
  if (mode === 'native' || requireNative) {
    const because = requireNative && options.mode !== 'native' ? ' (MUXWIRE_REQUIRE_NATIVE=1)' : '';
    throw new MuxwireError('MUXWIRE_ERR_NATIVE_UNAVAILABLE', `${why}${because}`, { cause: load.error });
  }
  return { accel: new JsAccel(), info: { selected: 'js', reason: why } };
}

const chosen = new Map<AccelMode | 'default', { accel: Accel; info: AccelInfo }>();

/**
 * The accelerator for `mode` (default: as the environment says), chosen once per process and
 * cached: every caller shares one object per mode.
 * @throws MuxwireError `MUXWIRE_ERR_NATIVE_UNAVAILABLE` when the native path is required and
 *   cannot serve (thrown again on each call; the failed load is not retried).
 */
export function selectAccel(mode?: AccelMode): Accel {
  const key = mode ?? 'default';
  let choice = chosen.get(key);
  if (choice === undefined) {
    choice = resolveAccel({ mode });
    chosen.set(key, choice);
    log.child({ accel: choice.info.selected }).debug(`${mode ?? 'default'} selection: ${choice.info.reason}`);
  }
  return choice.accel;
}

/** Which implementation the default selection uses, and why. Selects it if nothing has yet. */
export function accelInfo(): AccelInfo {
  selectAccel();
  return chosen.get('default')!.info;
}
