export { DeviceSession } from './device-session.js';
export type { DeviceSessionOptions, DeviceSessionState, DeviceSessionStats, DeviceSessionDemux, ConnectOptions } from './device-session.js';
export { MuxConnection, HOST_WINDOW, MAX_PAYLOAD } from './mux-connection.js';
export type { MuxConnectionState, MuxCloseReason, MuxConnectionStats, RingSink } from './mux-connection.js';
export { PortAllocator } from './port-allocator.js';
