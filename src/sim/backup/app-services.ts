/**
 * The two services a backup host asks about apps (idevicebackup2 builds Info.plist's
 * `Applications` and `Installed Applications` from them): `com.apple.mobile.installation_proxy`
 * (Browse, Lookup) and `com.apple.springboardservices` (getIconPNGData). The simulated device's
 * user apps are the `AppDomain-<bundle id>` domains of its backup content tree, so what a backup
 * lists is what it holds.
 *
 * Messages (libimobiledevice installation_proxy.c, sbservices.c), plists in the usual framing:
 *
 * | service              | host → device                                         | device → host |
 * |----------------------|-------------------------------------------------------|---------------|
 * | installation_proxy   | `{Command: Browse, ClientOptions: {ApplicationType, ReturnAttributes}}` | `{Status: BrowsingApplications, CurrentList, CurrentIndex, CurrentAmount, Total}`…, then `{Status: Complete}` |
 * | installation_proxy   | `{Command: Lookup, ClientOptions: {BundleIDs}}`        | `{LookupResult: {id: app}, Status: Complete}` |
 * | springboardservices  | `{command: getIconPNGData, bundleId}`                 | `{pngData}` |
 */
import { createHash } from 'node:crypto';
import { opendir } from 'node:fs/promises';
import type { Duplex } from 'node:stream';
import { crc32, deflateSync } from 'node:zlib';
import { encodeBinaryPlist, isPlistDict } from '../../protocol/plist.js';
import type { PlistDict, PlistValue } from '../../protocol/plist.js';
import { PlistChannel } from '../../lockdown/plist-channel.js';
import { log as rootLog, type Logger } from '../../log.js';

export const INSTALLATION_PROXY_SERVICE = 'com.apple.mobile.installation_proxy';
export const SPRINGBOARD_SERVICE = 'com.apple.springboardservices';

const APP_DOMAIN = 'AppDomain-';
/** Apps per BrowsingApplications message, as devices page them. */
const PAGE = 20;

/** The bundle ids of the user apps: the `AppDomain-<id>` folders of the content root. */
export async function installedApps(root: string): Promise<string[]> {
  const ids: string[] = [];
  for await (const d of await opendir(root)) {
    if (d.isDirectory() && d.name.startsWith(APP_DOMAIN) && d.name.length > APP_DOMAIN.length) ids.push(d.name.slice(APP_DOMAIN.length));
  }
  return ids.sort();
}

/** The installation_proxy record of one user app (opaque SINF and metadata stable per id). */
export function appRecord(id: string): PlistDict {
  const name = id.split('.').pop() ?? id;
  return {
    CFBundleIdentifier: id,
    CFBundleDisplayName: name,
    CFBundleName: name,
    CFBundleVersion: '1.0',
    CFBundleShortVersionString: '1.0',
    ApplicationType: 'User',
    Path: `/private/var/containers/Bundle/Application/${createHash('sha1').update(id).digest('hex').slice(0, 32).toUpperCase()}/${name}.app`,
    ApplicationSINF: createHash('sha512').update(`sinf:${id}`).digest(),
    iTunesMetadata: encodeBinaryPlist({ itemName: name, softwareVersionBundleId: id, bundleVersion: '1.0', kind: 'software' }),
  };
}

function pick(app: PlistDict, attributes: PlistValue | undefined): PlistDict {
  if (!Array.isArray(attributes)) return app;
  const out: PlistDict = {};
  for (const a of attributes) if (typeof a === 'string' && app[a] !== undefined) out[a] = app[a];
  return out;
}

/** Serves one installation_proxy connection (Browse and Lookup; other commands get an Error). */
export function serveInstallationProxy(stream: Duplex, root: string, log: Logger = rootLog.child({ svc: 'installation_proxy' })): void {
  const channel: PlistChannel = new PlistChannel(stream, {
    maxFrame: 1024 * 1024,
    onMessage: ({ value }) => {
      void answer(value).catch((err: unknown) => {
        log.warn(`installation_proxy: ${(err as Error).message}`);
        channel.send({ Error: 'InternalError', ErrorDescription: (err as Error).message });
      });
    },
    onClose: () => undefined,
  });
  const answer = async (value: PlistValue): Promise<void> => {
    if (!isPlistDict(value) || typeof value.Command !== 'string') {
      channel.send({ Error: 'InvalidArgument', ErrorDescription: 'a command dictionary with Command is expected' });
      return;
    }
    const options = isPlistDict(value.ClientOptions) ? value.ClientOptions : {};
    const type = typeof options.ApplicationType === 'string' ? options.ApplicationType : 'Any';
    // The simulator has no system apps to list: only User (or Any) asks find the content's apps.
    const apps = type === 'User' || type === 'Any' ? (await installedApps(root)).map(appRecord) : [];
    switch (value.Command) {
      case 'Browse': {
        for (let i = 0; i < apps.length; i += PAGE) {
          const page = apps.slice(i, i + PAGE).map((a) => pick(a, options.ReturnAttributes));
          channel.send({ Status: 'BrowsingApplications', CurrentList: page, CurrentIndex: i, CurrentAmount: page.length, Total: apps.length });
        }
        channel.send({ Status: 'Complete' });
        return;
      }
      case 'Lookup': {
        const wanted = Array.isArray(options.BundleIDs) ? options.BundleIDs.filter((x): x is string => typeof x === 'string') : undefined;
        const result: PlistDict = {};
        for (const a of apps) {
          const id = a.CFBundleIdentifier as string;
          if (!wanted || wanted.includes(id)) result[id] = pick(a, options.ReturnAttributes);
        }
        channel.send({ LookupResult: result, Status: 'Complete' });
        return;
      }
      default:
        channel.send({ Error: 'UnknownCommand', ErrorDescription: `${value.Command} is not supported by the simulator` });
    }
  };
}

/** A real PNG: 16×16, one colour derived from the bundle id. */
export function iconPng(id: string): Buffer {
  const [r, g, b] = createHash('sha1').update(id).digest();
  const chunk = (type: string, data: Buffer): Buffer => {
    const head = Buffer.alloc(8);
    head.writeUInt32BE(data.length, 0);
    head.write(type, 4, 'latin1');
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])) >>> 0, 0);
    return Buffer.concat([head, data, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(16, 0);
  ihdr.writeUInt32BE(16, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // truecolour
  const row = Buffer.concat([Buffer.from([0]), Buffer.from(Array.from({ length: 16 }, () => [r!, g!, b!]).flat())]);
  const pixels = Buffer.concat(Array.from({ length: 16 }, () => row));
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(pixels)), chunk('IEND', Buffer.alloc(0))]);
}

/** Serves one springboardservices connection (icons of the content's apps). */
export function serveSpringboardServices(stream: Duplex, root: string, log: Logger = rootLog.child({ svc: 'springboardservices' })): void {
  const channel: PlistChannel = new PlistChannel(stream, {
    maxFrame: 64 * 1024,
    onMessage: ({ value }) => {
      void (async () => {
        if (!isPlistDict(value) || value.command !== 'getIconPNGData' || typeof value.bundleId !== 'string') {
          channel.send({ Error: 'UnknownCommand' });
          return;
        }
        const known = (await installedApps(root)).includes(value.bundleId);
        // A real device answers an unknown id with an empty icon rather than an error.
        channel.send({ pngData: known ? iconPng(value.bundleId) : Buffer.alloc(0) }, 'binary');
      })().catch((err: unknown) => log.warn(`springboardservices: ${(err as Error).message}`));
    },
    onClose: () => undefined,
  });
}
