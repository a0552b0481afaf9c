export { DeviceSession } from './device-session.js';
export type { DeviceSessionOptions, DeviceSessionState, DeviceSessionStats, ConnectOptions } from './device-session.js';
export { MuxConnection, HOST_WINDOW, MAX_PAYLOAD } from './mux-connection.js';
export type { MuxConnectionState, MuxCloseReason, MuxConnectionStats } from './mux-connection.js';
export { PortAllocator } from './port-allocator.js';
