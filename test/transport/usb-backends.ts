/**
 * The two USB backends as tests run them against simulated devices: `native` is the addon's libusb
 * pipeline with the vusb libusb library loaded in place of libusb (MUXWIRE_LIBUSB_PATH), `js` is
 * WebUSB over the vusb wire (VusbWebUsb). Both see the devices of one bus directory.
 *
 * The native backend needs the addon (built with its UsbHost) and the vusb library; when either is
 * missing its tests skip with the reason, or fail under MUXWIRE_REQUIRE_NATIVE=1 (the addon) or
 * MUXWIRE_REQUIRE_PEERS=1 (the vusb library), as CI sets them.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { loadAddon } from '../../src/accel/addon-loader.js';
import { UsbSource, type UsbSourceOptions } from '../../src/transport/usb-source.js';
import type { DeviceLink } from '../../src/transport/device-link.js';
import { VusbWebUsb } from '../../src/transport/webusb-vusb.js';
import { vusbLibDir } from '../helpers/vusb-lib.js';

export type Backend = 'native' | 'js';
export const BACKENDS: readonly Backend[] = ['native', 'js'];

/** The vusb libusb library (built by scripts/build-vusb.mjs). */
export function vusbLibraryPath(): string {
  return join(vusbLibDir(), 'libusb-1.0.so.0');
}

/** Why the native backend cannot run here, or undefined when it can. */
export function nativeUnavailable(): { reason: string; required: boolean } | undefined {
  const load = loadAddon();
  if (!load.ok) return { reason: `native addon not built: ${load.error.message.split('\n')[0]}`, required: process.env.MUXWIRE_REQUIRE_NATIVE === '1' };
  if (typeof (load.binding as unknown as { UsbHost?: unknown }).UsbHost !== 'function') {
    return { reason: 'the native addon has no UsbHost (stale build: npx node-gyp rebuild)', required: process.env.MUXWIRE_REQUIRE_NATIVE === '1' };
  }
  if (process.env.MUXWIRE_NO_NATIVE === '1') return { reason: 'MUXWIRE_NO_NATIVE=1', required: false };
  if (!existsSync(vusbLibraryPath())) return { reason: `vusb library missing at ${vusbLibraryPath()} (node scripts/build-vusb.mjs)`, required: process.env.MUXWIRE_REQUIRE_PEERS === '1' };
  return undefined;
}

/** True when `backend` can run; otherwise skips the test (or fails it when it is required). */
export function requireBackend(t: TestContext, backend: Backend): boolean {
  if (backend === 'js') return true;
  const missing = nativeUnavailable();
  if (!missing) return true;
  if (missing.required) assert.fail(`${missing.reason} (required by the environment)`);
  t.skip(missing.reason);
  return false;
}

/**
 * A UsbSource on `busDir` for `backend`, not started (a daemon's addSource starts it), and what
 * releases what it needs besides (the js backend's VusbWebUsb).
 */
export async function makeSource(backend: Backend, busDir: string, extra: UsbSourceOptions = {}): Promise<{ source: UsbSource; dispose(): Promise<void> }> {
  if (backend === 'native') {
    // The vusb library takes its bus from the environment, read when libusb_init runs, and
    // watches a directory that exists then (as VusbWebUsb creates its own).
    await mkdir(busDir, { recursive: true });
    process.env.MUXWIRE_VUSB_DIR = busDir;
    return { source: new UsbSource({ backend: 'native', libusbPath: vusbLibraryPath(), ...extra }), dispose: async () => undefined };
  }
  const webusb = new VusbWebUsb({ dir: busDir });
  await webusb.start();
  return { source: new UsbSource({ backend: 'js', webusb, ...extra }), dispose: () => webusb.close() };
}

/** A started UsbSource on `busDir` for `backend`, and what stops it. */
export async function startSource(backend: Backend, busDir: string, extra: UsbSourceOptions = {}): Promise<{ source: UsbSource; stop(): Promise<void> }> {
  const { source, dispose } = await makeSource(backend, busDir, extra);
  await source.start();
  return {
    source,
    async stop() {
      await source.stop();
      await dispose();
    },
  };
}

/** The next 'attach' from `source` (hang guard: 30 s). */
export function nextAttach(source: UsbSource): Promise<DeviceLink> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no device attached within 30 s')), 30_000);
    source.once('attach', (link: DeviceLink) => {
      clearTimeout(timer);
      resolve(link);
    });
  });
}

/** The next 'detach' from `source` (hang guard: 30 s). */
export function nextDetach(source: UsbSource): Promise<DeviceLink> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no device detached within 30 s')), 30_000);
    source.once('detach', (link: DeviceLink) => {
      clearTimeout(timer);
      resolve(link);
    });
  });
}
