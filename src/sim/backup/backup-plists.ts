/**
 * The plists a device writes into a backup besides Manifest.db: Status.plist (is the snapshot
 * whole, was it full) and Manifest.plist (device identity, encryption, versions), in the shape
 * iOS 10+ writes them. idevicebackup2 reads `SnapshotState` from Status.plist ("finished" before it
 * restores) and `IsEncrypted` from Manifest.plist.
 */
import { randomUUID } from 'node:crypto';
import type { PlistDict } from '../../protocol/plist.js';

/** Status.plist of a finished snapshot. */
export function statusPlist(isFullBackup: boolean, date = new Date()): PlistDict {
  return {
    BackupState: 'new',
    Date: date,
    IsFullBackup: isFullBackup,
    SnapshotState: 'finished',
    UUID: randomUUID().toUpperCase(),
    Version: '3.3',
  };
}

/** Lockdown keys a Manifest.plist repeats. */
const MANIFEST_LOCKDOWN_KEYS = ['BuildVersion', 'DeviceName', 'ProductType', 'ProductVersion', 'SerialNumber', 'UniqueDeviceID'];

/** Manifest.plist for an unencrypted backup of a device with these lockdown values. */
export function manifestPlist(lockdown: PlistDict, keyBag: Buffer, date = new Date()): PlistDict {
  const picked: PlistDict = {};
  for (const k of MANIFEST_LOCKDOWN_KEYS) if (lockdown[k] !== undefined) picked[k] = lockdown[k];
  return {
    BackupKeyBag: keyBag,
    Version: '10.0',
    Date: date,
    SystemDomainsVersion: '24.0',
    WasPasscodeSet: false,
    Lockdown: picked,
    Applications: {},
    IsEncrypted: false,
  };
}
