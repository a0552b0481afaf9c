/** The client side: usbmux client, embedded mode, device services, port forwarding. */
export { UsbmuxClient } from './usbmux-client.js';
export type { UsbmuxClientOptions, MuxdPairRecordApi } from './usbmux-client.js';
export { EmbeddedMuxer } from './embedded.js';
export type { EmbeddedMuxerOptions } from './embedded.js';
export { DeviceWatcher } from './device-watcher.js';
export type { ConnectionType, DeviceInfo, DeviceEvent } from './device-info.js';
export { pickDevice, sameUdid } from './device-info.js';
export { openLockdown, startService, LOCKDOWN_PORT } from './device-services.js';
export type { DeviceMuxer, LockdownHandle, OpenLockdownOptions } from './device-services.js';
export { PortForwarder, parseForwardPair, parseForwardArgs } from './port-forwarder.js';
export type { ForwardPair, PortForwarderOptions } from './port-forwarder.js';
export { parseSocketAddress, resolveSocketAddress, formatSocketAddress, DEFAULT_SOCKET_PATH } from './socket-address.js';
export type { SocketAddress } from './socket-address.js';
