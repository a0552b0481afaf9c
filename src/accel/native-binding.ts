/**
 * The shape of build/Release/muxwire.node's exports (native/addon.cc), and the check that a loaded
 * module has it. A build/ left over from other sources is refused with a reason instead of being
 * called with the wrong contract.
 */
import type { RawScan } from './accel.js';
import type { RawDemuxerConstructor } from './demux-core.js';

/** Must equal `kAbiVersion` in native/addon.cc; both change whenever an export changes shape. */
export const ADDON_ABI_VERSION = 3;

/** What the addon exports. Every entry point has a TypeScript twin in this folder. */
export interface NativeBinding {
  readonly abiVersion: number;
  /** Twin: `scanMuxPacketsJs` (mux-scan.ts). */
  readonly scanMuxPackets: RawScan;
  /** Twin: `DemuxCoreJs` (demux-core.ts). */
  readonly Demuxer: RawDemuxerConstructor;
}

/** Returns `mod` typed as the binding, or throws an Error saying what does not match. */
export function asNativeBinding(mod: unknown): NativeBinding {
  const m = mod as Partial<NativeBinding> | null;
  if (m === null || typeof m !== 'object') throw new Error('addon exports no object');
  if (m.abiVersion !== ADDON_ABI_VERSION) {
    throw new Error(`addon ABI ${String(m.abiVersion)} does not match ${ADDON_ABI_VERSION}: rebuild it (npx node-gyp rebuild)`);
  }
  if (typeof m.scanMuxPackets !== 'function' || typeof m.Demuxer !== 'function') {
    throw new Error('addon lacks an entry point of this version: rebuild it (npx node-gyp rebuild)');
  }
  return m as NativeBinding;
}
