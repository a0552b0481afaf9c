/** The AFC client (lockdown-afc.md §9): re-exports only. */
export { AfcClient } from './afc-client.js';
export type { AfcClientOptions, AfcOpenMode } from './afc-client.js';
export { AfcChannel } from './afc-channel.js';
export type { AfcChannelOptions } from './afc-channel.js';
export { AFC_ERROR, afcOpName, afcStatusName, isAfcStatus } from './afc-error.js';
export type { AfcDeviceInfo, AfcFileInfo, AfcFileType } from './afc-info.js';
export { AfcReadStream } from './afc-read-stream.js';
export type { AfcProgress, AfcReadStreamOptions } from './afc-read-stream.js';
export { AfcWriteStream } from './afc-write-stream.js';
export type { AfcWriteStreamOptions } from './afc-write-stream.js';
export type { AfcTransferOptions, AfcTransferResult } from './afc-transfer.js';
