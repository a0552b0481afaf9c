export type { DeviceLink, DeviceLinkHandlers, DeviceLinkInfo, DeviceSource } from './device-link.js';
export * from './usb-ids.js';
export * from './usb-standard.js';
export * from './usb-descriptor-parser.js';
export { enumerateMuxDevice, type ControlChannel, type EnumeratedDevice } from './vusb-enumerate.js';
export { VusbLink, type VusbLinkOptions, type VusbMuxPipes } from './vusb-link.js';
export { VusbSource, type VusbSourceOptions } from './vusb-source.js';
