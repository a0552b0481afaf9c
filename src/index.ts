/**
 * muxwire — a usbmuxd-compatible iOS device multiplexer for Node.js.
 *
 * ```ts
 * import { UsbmuxClient, openLockdown, startService, AfcClient } from 'muxwire';
 * const client = new UsbmuxClient();                 // USBMUXD_SOCKET_ADDRESS or /var/run/usbmuxd
 * const device = await client.findDevice();
 * const session = await openLockdown(client, device, { pairIfNeeded: true });
 * const afc = new AfcClient(await startService(client, session, 'com.apple.afc'));
 * ```
 */
export { MuxwireError, isMuxwireError } from './errors.js';
export { setLogLevel, setLogSink, diagnostics } from './log.js';
export type { LogLevel } from './log.js';
export * from './client/index.js';
export { LockdownClient } from './lockdown/lockdown-client.js';
export type { LockdownClientOptions, PairOptions, SessionInfo, ServiceInfo, PairRecordStore } from './lockdown/index.js';
export * from './services/afc/index.js';
export * from './services/backup/index.js';
export { MuxDaemon, PairStore, DEFAULT_PAIR_DIR, DeviceRegistry } from './daemon/index.js';
export type { MuxDaemonOptions, MuxDaemonStats, DeviceEntry, PreflightHook } from './daemon/index.js';
export { SimulatedDevice } from './sim/simulator.js';
export type { SimulatedDeviceOptions } from './sim/simulator.js';
export { DeviceSession } from './mux/device-session.js';
export { MuxConnection } from './mux/mux-connection.js';
export type { DeviceLink, DeviceLinkHandlers, DeviceLinkInfo, DeviceSource } from './transport/device-link.js';
export { VusbSource } from './transport/vusb-source.js';
export { NetworkSource, NetworkLink } from './transport/index.js';
export type { NetworkSourceOptions, NetworkCandidate, NetworkDeviceInfo } from './transport/index.js';
export { createNetworkSource } from './daemon/network-devices.js';
export { selectAccel, accelInfo } from './accel/index.js';
export * as protocol from './protocol/index.js';
