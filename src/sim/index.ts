/** The simulated device (docs/ARCHITECTURE.md "Services of the simulated device"): re-exports only. */
export { SimulatedDevice, AFC_SERVICE } from './simulator.js';
export type { SimulatedDeviceOptions } from './simulator.js';
export { DeviceMux, EPHEMERAL_PORT_FIRST } from './device-mux.js';
export type { DeviceMuxOptions, ConnectionHandler, ControlType } from './device-mux.js';
export { DeviceConnection } from './device-connection.js';
export { InProcessLink, IN_TRANSFER_SIZE } from './in-process-link.js';
export {
  serveBenchServices,
  serveEcho,
  serveSink,
  serveSource,
  serveReset,
  resetReason,
  sourcePattern,
  findPatternMismatch,
  encodeCount,
  DEFAULT_BENCH_PORTS,
  SOURCE_PATTERN_PERIOD,
} from './bench-services.js';
export type { BenchPorts, BenchServicePorts, BenchServices } from './bench-services.js';
export { SimUsbDevice } from './usb-device.js';
export { DeviceIdentity, DeviceKeyPool } from './identity.js';
export { Lockdownd, LOCKDOWN_PORT } from './lockdownd.js';
export { serveAfc } from './afc-server.js';
