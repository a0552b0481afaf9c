/** The usbmuxd-compatible daemon, its device table and its pair store. */
export { MuxDaemon } from './mux-daemon.js';
export type { MuxDaemonOptions, MuxDaemonStats } from './mux-daemon.js';
export { PairStore, DEFAULT_PAIR_DIR } from './pair-store.js';
export { DeviceRegistry } from './device-registry.js';
export type { DeviceEntry, PreflightHook } from './device-registry.js';
