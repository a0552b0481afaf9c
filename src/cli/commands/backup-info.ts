/**
 * `muxwire backup-info DIR [-u UDID] [--list]`: what a backup directory holds, read from its files
 * alone (no device needed): the device, the snapshot's state and date from Info.plist,
 * Status.plist and Manifest.plist, counts from Manifest.db; `--list` prints every file as CSV
 * (what idevicebackup2 `info` and `list` show).
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { MuxwireError } from '../../errors.js';
import { decodePlist, isPlistDict } from '../../protocol/plist.js';
import type { PlistDict } from '../../protocol/plist.js';
import { MANIFEST_FLAG_DIRECTORY, MANIFEST_FLAG_FILE, readManifestDb } from '../../services/backup/manifest-db.js';
import { formatBytes } from '../device-command.js';
import { parseCommand, printJson, runCommand } from '../common.js';

const HELP = `usage: muxwire backup-info [options] DIR

Shows the backups in DIR (one DIR/<UDID>/ per device, as muxwire backup and idevicebackup2 write
them): device, snapshot state and date, full or incremental, encryption, files and bytes.

options:
  -u, --udid UDID  only this device's backup
  --list           every file of the snapshot as CSV: domain,path,size,fileID
  --json           one JSON document
  -h, --help       this help`;

async function readPlist(path: string): Promise<PlistDict> {
  let v;
  try {
    v = decodePlist(await readFile(path));
  } catch (err) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_MANIFEST', `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  if (!isPlistDict(v)) throw new MuxwireError('MUXWIRE_ERR_BAD_MANIFEST', `${path} is not a dictionary`);
  return v;
}

const csv = (s: string): string => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);

export function run(argv: string[]): Promise<number> {
  return runCommand('backup-info', HELP, argv, async () => {
    const { values, positionals } = parseCommand(argv, { list: { type: 'boolean' } });
    if (positionals.length !== 1) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', 'give one backup directory (see --help)');
    const dir = resolve(positionals[0]!);
    const names = values.udid !== undefined ? [values.udid] : await readdir(dir).catch((err: Error) => {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `cannot read ${dir}: ${err.message}`, { cause: err });
    });
    const backups = [];
    for (const udid of names.sort()) {
      const base = join(dir, udid);
      if (!(await stat(join(base, 'Manifest.db')).catch(() => undefined))?.isFile()) {
        if (values.udid !== undefined) throw new MuxwireError('MUXWIRE_ERR_BAD_MANIFEST', `${base} holds no backup (no Manifest.db)`);
        continue;
      }
      const info = await readPlist(join(base, 'Info.plist'));
      const status = await readPlist(join(base, 'Status.plist'));
      const manifest = await readPlist(join(base, 'Manifest.plist'));
      const rows = readManifestDb(join(base, 'Manifest.db'));
      const files = rows.filter((r) => r.flags === MANIFEST_FLAG_FILE);
      backups.push({
        udid,
        deviceName: info['Device Name'],
        productType: info['Product Type'],
        productVersion: info['Product Version'],
        serialNumber: info['Serial Number'],
        lastBackupDate: info['Last Backup Date'],
        snapshotState: status.SnapshotState,
        isFullBackup: status.IsFullBackup,
        date: status.Date,
        isEncrypted: manifest.IsEncrypted === true,
        files: files.length,
        directories: rows.filter((r) => r.flags === MANIFEST_FLAG_DIRECTORY).length,
        bytes: files.reduce((n, r) => n + r.size, 0),
        ...(values.list === true ? { list: files.map((r) => ({ domain: r.domain, path: r.relativePath, size: r.size, fileID: r.fileID })) } : {}),
      });
    }
    if (backups.length === 0) throw new MuxwireError('MUXWIRE_ERR_BAD_MANIFEST', `${dir} holds no backup`);
    if (values.json === true) {
      printJson(backups);
      return;
    }
    for (const b of backups) {
      if (values.list === true) {
        process.stdout.write('domain,path,size,fileID\n');
        for (const f of b.list ?? []) process.stdout.write(`${csv(f.domain)},${csv(f.path)},${f.size},${f.fileID}\n`);
        continue;
      }
      const when = (d: unknown): string => (d instanceof Date ? d.toISOString() : String(d ?? '?'));
      process.stdout.write(
        `${b.udid}  ${String(b.deviceName ?? '?')} (${String(b.productType ?? '?')}, iOS ${String(b.productVersion ?? '?')})\n` +
          `  snapshot ${String(b.snapshotState ?? '?')}, ${b.isFullBackup === true ? 'full' : 'incremental'}, ${when(b.date)}${b.isEncrypted ? ', encrypted' : ''}\n` +
          `  ${b.files} files, ${b.directories} directories, ${formatBytes(b.bytes)}\n`,
      );
    }
  });
}
