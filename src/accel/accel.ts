/**
 * The contract every accelerator implements, native (the C++ addon) and TypeScript alike
 * (docs/ARCHITECTURE.md "The accel contract"). Callers get one uniformly shaped object from
 * `selectAccel()` and never branch on which one they hold; `kind` is there for logs and tests.
 */

import type { Demuxer, DemuxerOptions } from './demuxer.js';

/** How the caller wants the implementation chosen. */
export type AccelMode = 'auto' | 'native' | 'js';

/** Which implementation serves. */
export type AccelKind = 'native' | 'js';

/** u32 entries per packet record written by {@link Accel.scanMuxPackets}. */
export const SCAN_RECORD_FIELDS = 5;
/** Index of each field inside one scan record. */
export const ScanField = { OFFSET: 0, LENGTH: 1, PROTOCOL: 2, SPORT: 3, DPORT: 4 } as const;

export interface Accel {
  /** The implementation behind this object. */
  readonly kind: AccelKind;
  /**
   * Finds the complete mux packets at the start of `buf` (concatenated packets, header length
   * field BE at offset 4; header size 8 for `version` 1, 16 for 2). For packet k it writes
   * `[offset, length, protocol, sport, dport]` at `out[5k]` (ports from the TCP-like header when
   * the protocol is 6 and the packet holds all 20 bytes of it, else 0) and returns how many
   * packets it recorded. It stops at the first incomplete packet and when `out` is full; bytes
   * after the last record are the start of a packet still arriving.
   *
   * @throws MuxwireError `MUXWIRE_ERR_BAD_LENGTH` when a declared length is below the header size
   *   or above 65536 (`detail: {offset, length}`); TypeError/RangeError for wrong arguments.
   */
  scanMuxPackets(buf: Uint8Array, version: 1 | 2, out: Uint32Array): number;

  /** A device→host demuxer for one device (demuxer.ts), run by this implementation. */
  createDemuxer(options: DemuxerOptions): Demuxer;
}

/**
 * The raw shape of a scan, shared by the addon's export and its TypeScript twin: the count of
 * records, or `SCAN_BAD_LENGTH` with `out[0]` = offset and `out[1]` = declared length of the bad
 * packet. Arguments are assumed valid (the public wrapper checks them).
 */
export type RawScan = (buf: Uint8Array, version: 1 | 2, out: Uint32Array) => number;

/** The raw scan result for a declared length out of bounds. */
export const SCAN_BAD_LENGTH = -1;
