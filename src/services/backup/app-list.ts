/**
 * The user apps a backup's Info.plist lists, asked as idevicebackup2 asks: installation_proxy
 * `Browse` (ApplicationType User; CFBundleIdentifier, ApplicationSINF, iTunesMetadata), then each
 * app's icon from springboardservices `getIconPNGData`. A device that offers neither service gives
 * an empty list (idevicebackup2 goes on without them too).
 */
import type { Duplex } from 'node:stream';
import { MuxwireError } from '../../errors.js';
import { isPlistDict } from '../../protocol/plist.js';
import type { PlistDict, PlistValue } from '../../protocol/plist.js';
import { PlistChannel } from '../../lockdown/plist-channel.js';
import { startService } from '../../client/device-services.js';
import type { DeviceMuxer, LockdownHandle } from '../../client/device-services.js';

/** Info.plist's two app fields. */
export interface BackupApps {
  /** `Installed Applications`: bundle ids. */
  installed: string[];
  /** `Applications`: id → {ApplicationSINF, iTunesMetadata, PlaceholderIcon?}. */
  applications: PlistDict;
}

const TIMEOUT_MS = 30_000;

/** Sends `request` and collects replies until `done(reply)` says so; rejects on an Error reply. */
function exchange(stream: Duplex, request: PlistDict, done: (reply: PlistDict) => boolean): Promise<PlistDict[]> {
  return new Promise((resolve, reject) => {
    const replies: PlistDict[] = [];
    let settled = false;
    const finish = (err?: MuxwireError): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      channel.close(true);
      if (err) reject(err);
      else resolve(replies);
    };
    const timer = setTimeout(() => finish(new MuxwireError('MUXWIRE_ERR_TIMEOUT', `no answer to ${String(request.Command ?? request.command)}`)), TIMEOUT_MS);
    const channel: PlistChannel = new PlistChannel(stream, {
      onMessage: ({ value }) => {
        if (!isPlistDict(value)) return;
        if (typeof value.Error === 'string') return finish(new MuxwireError('MUXWIRE_ERR_SERVICE', `${String(request.Command ?? request.command)}: ${value.Error}`, { detail: value.Error }));
        replies.push(value);
        if (done(value)) finish();
      },
      onClose: (err) => finish(err ?? new MuxwireError('MUXWIRE_ERR_CLOSED', 'the service closed before answering')),
    });
    channel.send(request);
  });
}

/** The device's user apps with their SINF, metadata and icons. */
export async function listBackupApps(mux: DeviceMuxer, lockdown: LockdownHandle): Promise<BackupApps> {
  let ip: Duplex;
  try {
    ip = await startService(mux, lockdown, 'com.apple.mobile.installation_proxy');
  } catch {
    return { installed: [], applications: {} };
  }
  const pages = await exchange(
    ip,
    { Command: 'Browse', ClientOptions: { ApplicationType: 'User', ReturnAttributes: ['CFBundleIdentifier', 'ApplicationSINF', 'iTunesMetadata'] } },
    (r) => r.Status === 'Complete',
  );
  const apps = pages.flatMap((p) => (Array.isArray(p.CurrentList) ? p.CurrentList : [])).filter(isPlistDict);
  const installed: string[] = [];
  const applications: PlistDict = {};
  let sbs: Duplex | undefined;
  for (const app of apps) {
    const id = app.CFBundleIdentifier;
    if (typeof id !== 'string') continue;
    installed.push(id);
    if (!Buffer.isBuffer(app.ApplicationSINF) || !Buffer.isBuffer(app.iTunesMetadata)) continue;
    const entry: PlistDict = { ApplicationSINF: app.ApplicationSINF };
    // One springboardservices connection per icon keeps each exchange self-contained.
    sbs = await startService(mux, lockdown, 'com.apple.springboardservices').catch(() => undefined);
    if (sbs) {
      const [reply] = await exchange(sbs, { command: 'getIconPNGData', bundleId: id }, () => true).catch(() => [] as PlistDict[]);
      const png: PlistValue | undefined = reply?.pngData;
      if (Buffer.isBuffer(png) && png.length > 0) entry.PlaceholderIcon = png;
    }
    entry.iTunesMetadata = app.iTunesMetadata;
    applications[id] = entry;
  }
  return { installed, applications };
}
