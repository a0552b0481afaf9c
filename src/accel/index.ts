export type { Accel, AccelKind, AccelMode, RawScan } from './accel.js';
export { SCAN_RECORD_FIELDS, ScanField } from './accel.js';
export { MAX_MUX_PACKET } from './mux-scan.js';
export type { AccelInfo } from './select.js';
export { accelInfo, isAccelMode, selectAccel } from './select.js';
export { Demuxer, DEFAULT_RING_CAPACITY } from './demuxer.js';
export type { DemuxerOptions } from './demuxer.js';
export { DEMUX_EVENT_FIELDS, DemuxEvent, DemuxField, NO_SLOT, SOURCE_TRANSFER } from './demux-core.js';
