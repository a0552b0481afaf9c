/**
 * Whether this run tests the addon. The suite runs twice (scripts/run-tests.mjs): as selected, and
 * with MUXWIRE_NO_NATIVE=1, where the native-only tests skip because that run covers TypeScript.
 * A missing addon skips them with the load error, unless MUXWIRE_REQUIRE_NATIVE=1 makes it a
 * failure.
 */
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { loadAddon } from '../../src/accel/addon-loader.js';
import type { NativeBinding } from '../../src/accel/native-binding.js';
import type { Accel } from '../../src/accel/accel.js';
import { JsAccel } from '../../src/accel/js-accel.js';
import { NativeAccel } from '../../src/accel/native-accel.js';

const load = loadAddon();

/** Why native tests do not run here, or undefined when they do (or must fail). */
export const nativeSkipReason: string | undefined =
  process.env.MUXWIRE_NO_NATIVE === '1'
    ? 'MUXWIRE_NO_NATIVE=1: this run covers the TypeScript path'
    : load.ok || process.env.MUXWIRE_REQUIRE_NATIVE === '1'
      ? undefined
      : `native addon not loaded (${load.error.message.split('\n')[0]})`;

/** The addon's binding, or undefined after marking `t` skipped (or failing it when required). */
export function nativeBinding(t: TestContext): NativeBinding | undefined {
  if (nativeSkipReason !== undefined) {
    t.skip(nativeSkipReason);
    return undefined;
  }
  if (!load.ok) assert.fail(`MUXWIRE_REQUIRE_NATIVE=1 but the addon did not load: ${load.error.message}`);
  return load.binding;
}

/** One accelerator under test: the TypeScript twin, or the addon's (undefined once `t` is skipped). */
export interface AccelUnderTest {
  name: string;
  make: (t: TestContext) => Accel | undefined;
}

/**
 * Both accelerators, for suites that run the same cases against each (mux-scan.test.ts keeps its
 * own list: it names and routes the native one differently).
 */
export function accelImplementations(): AccelUnderTest[] {
  return [
    { name: 'TypeScript', make: () => new JsAccel() },
    {
      name: 'native',
      make: (t) => {
        const binding = nativeBinding(t);
        return binding && new NativeAccel(binding);
      },
    },
  ];
}
