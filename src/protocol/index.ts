/** The pure codecs of muxwire (no I/O): plist, client protocol, mux and TCP-like headers, plist services, AFC. */
export * from './plist.js';
export * from './client-header.js';
export * from './client-message.js';
export * from './client-plist.js';
export * from './mux-header.js';
export * from './tcp-header.js';
export * from './mux-decoder.js';
export * from './plist-frame.js';
export * from './afc.js';
export * from './device-link.js';
export { ByteQueue } from './byte-queue.js';
export * from './network-address.js';
