import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isMuxwireError } from '../../src/errors.js';
import { accelInfo, isAccelMode, selectAccel } from '../../src/accel/index.js';
import { defaultAddonPath, findPackageRoot, loadAddon } from '../../src/accel/addon-loader.js';
import { resolveAccel } from '../../src/accel/select.js';

const tmp = mkdtempSync(join(tmpdir(), 'muxwire-accel-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
/** Where no addon is: how these tests stand for a machine where the build failed. */
const missing = join(tmp, 'nowhere', 'muxwire.node');
const addon = loadAddon();
const requireNative = process.env.MUXWIRE_REQUIRE_NATIVE === '1';

describe('accelerator selection', () => {
  test('MUXWIRE_NO_NATIVE=1 selects TypeScript and says so', () => {
    const { accel, info } = resolveAccel({ env: { MUXWIRE_NO_NATIVE: '1' } });
    assert.equal(accel.kind, 'js');
    assert.deepEqual(info, { selected: 'js', reason: 'MUXWIRE_NO_NATIVE=1' });
  });

  test('js mode selects TypeScript whatever the addon does', () => {
    const { accel, info } = resolveAccel({ mode: 'js', env: {} });
    assert.equal(accel.kind, 'js');
    assert.equal(info.reason, 'js requested');
  });

  test('auto falls back to TypeScript with the load error as the reason when the addon is missing', () => {
    const { accel, info } = resolveAccel({ mode: 'auto', env: {}, addonPath: missing });
    assert.equal(accel.kind, 'js');
    assert.equal(info.selected, 'js');
    assert.match(info.reason, /native addon did not load from .*nowhere.*muxwire\.node: Cannot find module/);
  });

  test('native mode fails with MUXWIRE_ERR_NATIVE_UNAVAILABLE and the load error as cause when the addon is missing', () => {
    assert.throws(
      () => resolveAccel({ mode: 'native', env: {}, addonPath: missing }),
      (err: unknown) => {
        assert.ok(isMuxwireError(err, 'MUXWIRE_ERR_NATIVE_UNAVAILABLE'));
        assert.equal((err.cause as NodeJS.ErrnoException).code, 'MODULE_NOT_FOUND');
        return true;
      },
    );
  });

  test('MUXWIRE_REQUIRE_NATIVE=1 turns a missing addon into an error for the default selection and for auto', () => {
    for (const mode of [undefined, 'auto'] as const) {
      assert.throws(
        () => resolveAccel({ mode, env: { MUXWIRE_REQUIRE_NATIVE: '1' }, addonPath: missing }),
        (err: unknown) => isMuxwireError(err, 'MUXWIRE_ERR_NATIVE_UNAVAILABLE') && /MUXWIRE_REQUIRE_NATIVE=1/.test(err.message),
      );
    }
  });

  test('MUXWIRE_NO_NATIVE=1 wins over MUXWIRE_REQUIRE_NATIVE=1, as in the second CI run', () => {
    const { accel } = resolveAccel({ env: { MUXWIRE_NO_NATIVE: '1', MUXWIRE_REQUIRE_NATIVE: '1' }, addonPath: missing });
    assert.equal(accel.kind, 'js');
  });

  test('an explicit native request under MUXWIRE_NO_NATIVE=1 is refused rather than ignored', () => {
    assert.throws(
      () => resolveAccel({ mode: 'native', env: { MUXWIRE_NO_NATIVE: '1' } }),
      (err: unknown) => isMuxwireError(err, 'MUXWIRE_ERR_NATIVE_UNAVAILABLE') && /MUXWIRE_NO_NATIVE=1/.test(err.message),
    );
  });

  test('a module that is not this addon build is refused with the reason', () => {
    const stale = join(tmp, 'stale.cjs');
    writeFileSync(stale, 'module.exports = { abiVersion: 0, scanMuxPackets() { return 0; } };\n');
    assert.throws(
      () => resolveAccel({ mode: 'native', env: {}, addonPath: stale }),
      (err: unknown) => isMuxwireError(err, 'MUXWIRE_ERR_NATIVE_UNAVAILABLE') && /addon ABI 0 does not match/.test(err.message),
    );
    const garbage = join(tmp, 'garbage.node');
    writeFileSync(garbage, 'not an ELF file');
    const { info } = resolveAccel({ mode: 'auto', env: {}, addonPath: garbage });
    assert.equal(info.selected, 'js');
    assert.match(info.reason, /garbage\.node/);
  });

  test('a failed load is remembered, not retried', () => {
    const first = loadAddon(missing);
    assert.equal(loadAddon(missing), first);
  });

  test('an unknown mode is a TypeError', () => {
    assert.throws(() => resolveAccel({ mode: 'fast' as never, env: {} }), TypeError);
    assert.equal(isAccelMode('native'), true);
    assert.equal(isAccelMode('fast'), false);
  });

  test('auto selects the addon when it loads', (t) => {
    if (!addon.ok) {
      if (requireNative) assert.fail(`addon required but did not load: ${addon.error.message}`);
      t.skip(`native addon not loaded: ${addon.error.message}`);
      return;
    }
    const { accel, info } = resolveAccel({ mode: 'auto', env: {} });
    assert.equal(accel.kind, 'native');
    assert.equal(info.reason, `addon loaded from ${addon.path}`);
    assert.equal(resolveAccel({ mode: 'native', env: {} }).accel.kind, 'native');
  });

  test('the process-wide selection is made once and follows this run\'s environment', () => {
    const accel = selectAccel();
    assert.equal(selectAccel(), accel);
    assert.equal(accelInfo().selected, accel.kind);
    if (process.env.MUXWIRE_NO_NATIVE === '1') assert.equal(accel.kind, 'js');
    else if (addon.ok) assert.equal(accel.kind, 'native');
    assert.equal(selectAccel('js').kind, 'js');
    assert.equal(selectAccel('js'), selectAccel('js'));
  });
});

describe('finding the addon', () => {
  test('walks up from the module to the package.json named muxwire', () => {
    const root = findPackageRoot(import.meta.url);
    assert.ok(root !== undefined);
    // This test file sits at <root>/<outDir>/test/accel/, two levels under the output folder.
    assert.equal(root, dirname(dirname(dirname(dirname(fileURLToPath(import.meta.url))))));
    assert.equal(defaultAddonPath(), join(root, 'build', 'Release', 'muxwire.node'));
  });

  test('finds no root outside the package', () => {
    assert.equal(findPackageRoot(pathToFileURL(join(tmp, 'a', 'b.js'))), undefined);
  });
});
