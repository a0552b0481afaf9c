/** The TypeScript implementation of the accelerator contract: serves wherever the addon does not. */
import type { Accel } from './accel.js';
import { DemuxCoreJs } from './demux-core.js';
import { Demuxer, type DemuxerOptions } from './demuxer.js';
import { checkScanResult, scanMuxPacketsJs, validateScanArgs } from './mux-scan.js';

export class JsAccel implements Accel {
  readonly kind = 'js' as const;

  scanMuxPackets(buf: Uint8Array, version: 1 | 2, out: Uint32Array): number {
    validateScanArgs(buf, version, out);
    return checkScanResult(scanMuxPacketsJs(buf, version, out), version, out);
  }

  createDemuxer(options: DemuxerOptions): Demuxer {
    return new Demuxer(DemuxCoreJs, options);
  }
}
