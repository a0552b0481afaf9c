/** The simulated device's backup service (com.apple.mobilebackup2) and its content tree. */
export { serveMobileBackup2, MOBILEBACKUP2_SERVICE, MB2_PROTOCOL_VERSIONS } from './mobilebackup2-service.js';
export type { BackupServiceContext } from './mobilebackup2-service.js';
export { DigestCache, contentPath, walkContent, writeBuiltinContent } from './content-tree.js';
export type { ContentEntry } from './content-tree.js';
export { INSTALLATION_PROXY_SERVICE, SPRINGBOARD_SERVICE, appRecord, iconPng, installedApps, serveInstallationProxy, serveSpringboardServices } from './app-services.js';
