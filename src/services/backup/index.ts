/** Backups over mobilebackup2: the client, the DeviceLink channel, Manifest.db access (re-exports only). */
export { BackupClient, backupDirPath } from './backup-client.js';
export type { BackupOptions, BackupProgress, BackupResult, RestoreOptions } from './backup-client.js';
export { DeviceLinkChannel } from './device-link-channel.js';
export {
  MANIFEST_FLAG_DIRECTORY,
  MANIFEST_FLAG_FILE,
  MANIFEST_FLAG_SYMLINK,
  backupFileId,
  backupFilePath,
  readManifestDb,
  writeManifestDb,
} from './manifest-db.js';
export type { ManifestEntry } from './manifest-db.js';
