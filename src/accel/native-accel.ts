/**
 * The accelerator contract served by the C++ addon. As bufferutil does, work too small to repay
 * the call into native code stays in TypeScript. A scan costs a few nanoseconds per packet either
 * way, while entering the addon costs a fixed ~65 ns (bench/demux-scan.ts, Node 20, x86-64):
 * the addon wins from about 10 packets per call. The packet count is estimated from the first
 * packet's length, which costs one read; `nativeMinPackets: 0` sends every call to the addon (the
 * tests do, so the native path is exercised on every input they build).
 */
import type { Accel } from './accel.js';
import { Demuxer, type DemuxerOptions } from './demuxer.js';
import { checkScanResult, MAX_MUX_PACKET, scanMuxPacketsJs, validateScanArgs } from './mux-scan.js';
import type { NativeBinding } from './native-binding.js';

/**
 * A scan goes to the addon when the input holds room for at least this many packets of the first
 * packet's size. A real device writes one mux packet per USB write (usbmux.md §2.5), so a single
 * IN transfer usually holds one packet and stays in TypeScript; batches of small packets, as a
 * reassembling reader or a vusb peer may hand over, go native.
 */
export const NATIVE_SCAN_MIN_PACKETS = 12;

export interface NativeAccelOptions {
  /** See {@link NATIVE_SCAN_MIN_PACKETS} (the default); 0 sends every scan to the addon. */
  readonly nativeMinPackets?: number;
}

export class NativeAccel implements Accel {
  readonly kind = 'native' as const;
  readonly #binding: NativeBinding;
  readonly #nativeMinPackets: number;

  constructor(binding: NativeBinding, options: NativeAccelOptions = {}) {
    this.#binding = binding;
    this.#nativeMinPackets = options.nativeMinPackets ?? NATIVE_SCAN_MIN_PACKETS;
  }

  scanMuxPackets(buf: Uint8Array, version: 1 | 2, out: Uint32Array): number {
    validateScanArgs(buf, version, out);
    const result = this.#worthNative(buf, version, out)
      ? this.#binding.scanMuxPackets(buf, version, out)
      : scanMuxPacketsJs(buf, version, out);
    return checkScanResult(result, version, out);
  }

  createDemuxer(options: DemuxerOptions): Demuxer {
    return new Demuxer(this.#binding.Demuxer, options);
  }

  /** Whether the input likely holds enough packets (and `out` room for them) to repay the call. */
  #worthNative(buf: Uint8Array, version: 1 | 2, out: Uint32Array): boolean {
    const min = this.#nativeMinPackets;
    if (min === 0) return true;
    if (buf.length < 8 || out.length < min * 5) return false;
    const first = ((buf[4]! << 24) | (buf[5]! << 16) | (buf[6]! << 8) | buf[7]!) >>> 0;
    // A bad first length is reported by TypeScript just as well, and sooner.
    if (first < (version === 1 ? 8 : 16) || first > MAX_MUX_PACKET) return false;
    return buf.length >= first * min;
  }
}
