/**
 * The device's diagnostics relay (`com.apple.mobile.diagnostics_relay`, and its old name
 * `com.apple.iosdiagnostics.relay`): what `idevicediagnostics` and device farms use to read the
 * battery and to restart, shut down or sleep a device. XML plists in the usual 4-byte length
 * framing; every reply carries `Status` (libimobiledevice diagnostics_relay.c reads "Success" and
 * "Failure"; anything else is an error to it):
 *
 * | request (`Request`)                 | reply                                                        |
 * |-------------------------------------|--------------------------------------------------------------|
 * | `All`, `GasGauge`, `WiFi`, `NAND`    | `Diagnostics: {GasGauge?, WiFi?, NAND?}`, each with `Status` |
 * | `MobileGestalt`, `MobileGestaltKeys` | `Diagnostics: {MobileGestalt: {Status, <key>: value…}}`; from iOS 17.4 on the device answers `Status: MobileGestaltDeprecated` and no values |
 * | `IORegistry`, `EntryClass`/`EntryName`/`CurrentPlane` | `Diagnostics: {IORegistry: {…}}` for the battery (`IOPMPowerSource`, `AppleSmartBattery`); `Failure` for anything else |
 * | `Sleep`                             | `Success`                                                    |
 * | `Restart`, `Shutdown` (`WaitForDisconnect`) | `Success`; the device acts once the host has closed the connection (WaitForDisconnect, as idevicediagnostics asks) or right after the reply |
 * | `Goodbye`                           | `Success`, then the connection closes                        |
 * | anything else                       | `Status: UnknownRequest`                                     |
 *
 * Restart is real on the simulator: its USB side unplugs and plugs back in (a new attach on the
 * host, every connection gone, the pairing kept); Shutdown unplugs it and leaves it off.
 */
import type { Duplex } from 'node:stream';
import { PlistChannel } from '../lockdown/plist-channel.js';
import { isPlistDict, type PlistDict, type PlistValue } from '../protocol/plist.js';
import { log as rootLog, type Logger } from '../log.js';

export const DIAGNOSTICS_RELAY_SERVICE = 'com.apple.mobile.diagnostics_relay';
export const DIAGNOSTICS_RELAY_OLD_SERVICE = 'com.apple.iosdiagnostics.relay';

/** What the relay needs from the device. */
export interface DiagnosticsDevice {
  /** ProductVersion, to answer MobileGestalt as that iOS does. */
  productVersion(): string;
  /** MobileGestalt answers by key, for the keys the device knows. */
  gestalt(): Promise<Record<string, PlistValue>>;
  /** Restarts (the USB side goes away and comes back); rejects where the device cannot. */
  restart(): Promise<void>;
  /** Powers off (the USB side goes away). */
  shutdown(): Promise<void>;
}

/** The simulated battery: one power source, on a cable, nearly full. */
const BATTERY: PlistDict = {
  CurrentCapacity: 92,
  MaxCapacity: 100,
  DesignCapacity: 3349,
  NominalChargeCapacity: 3180,
  CycleCount: 127,
  Voltage: 4292,
  Temperature: 2987,
  ExternalConnected: true,
  IsCharging: true,
  FullyCharged: false,
};

const DIAGNOSTICS: Record<string, PlistDict> = {
  GasGauge: { Status: 'Success', CycleCount: 127, DesignCapacity: 3349, FullChargeCapacity: 3180 },
  WiFi: { Status: 'Success', Active: true },
  NAND: { Status: 'Success' },
};

/** iOS 17.4 took MobileGestalt out of the relay. */
function gestaltDeprecated(version: string): boolean {
  const [major = 0, minor = 0] = version.split('.').map((n) => Number(n));
  return major > 17 || (major === 17 && minor >= 4);
}

/** Serves one diagnostics-relay connection until the host says Goodbye or closes it. */
export function serveDiagnosticsRelay(stream: Duplex, device: DiagnosticsDevice, log: Logger = rootLog.child({ svc: 'diagnostics_relay' })): void {
  let afterClose: (() => void) | undefined;
  const act = (what: 'restart' | 'shutdown'): void => {
    log.debug(`${what} requested`);
    void device[what]().catch((err: unknown) => log.warn(`${what} failed: ${(err as Error).message}`));
  };
  const channel: PlistChannel = new PlistChannel(stream, {
    maxFrame: 64 * 1024,
    onMessage: ({ value }) => {
      void answer(value).then(
        (reply) => {
          if (reply === undefined) return;
          channel.send(reply);
        },
        (err: unknown) => {
          log.warn(`diagnostics request failed: ${(err as Error).message}`);
          channel.send({ Status: 'Failure' });
        },
      );
    },
    onClose: () => {
      const run = afterClose;
      afterClose = undefined;
      run?.();
    },
  });

  async function answer(value: PlistValue): Promise<PlistDict | undefined> {
    if (!isPlistDict(value) || typeof value.Request !== 'string') return { Status: 'UnknownRequest' };
    const request = value.Request;
    switch (request) {
      case 'All':
        return { Status: 'Success', Diagnostics: { ...DIAGNOSTICS } };
      case 'GasGauge':
      case 'WiFi':
      case 'NAND':
        return { Status: 'Success', Diagnostics: { [request]: DIAGNOSTICS[request]! } };
      case 'MobileGestalt':
        return { Status: 'Success', Diagnostics: { MobileGestalt: await mobileGestalt(value.MobileGestaltKeys) } };
      case 'IORegistry':
        return ioRegistry(value);
      case 'Sleep':
        return { Status: 'Success' };
      case 'Restart':
      case 'Shutdown': {
        const what = request === 'Restart' ? 'restart' : 'shutdown';
        if (value.WaitForDisconnect === true) afterClose = () => act(what);
        else setImmediate(() => act(what));
        return { Status: 'Success' };
      }
      case 'Goodbye':
        channel.send({ Status: 'Success' });
        channel.close(true);
        return undefined;
      default:
        return { Status: 'UnknownRequest' };
    }
  }

  async function mobileGestalt(keys: PlistValue | undefined): Promise<PlistDict> {
    if (gestaltDeprecated(device.productVersion())) return { Status: 'MobileGestaltDeprecated' };
    const known = await device.gestalt();
    const answer: PlistDict = { Status: 'Success' };
    for (const key of Array.isArray(keys) ? keys : []) if (typeof key === 'string' && known[key] !== undefined) answer[key] = known[key]!;
    return answer;
  }
}

/** The battery's registry entry, by class or name; no other entry or plane is simulated. */
function ioRegistry(req: PlistDict): PlistDict {
  // idevicediagnostics sends the one it was given and the other as an empty string.
  const named = (v: PlistValue | undefined): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
  const entry = named(req.EntryClass) ?? named(req.EntryName);
  if (entry === 'IOPMPowerSource' || entry === 'AppleSmartBattery' || entry === 'AppleARMPMUCharger') {
    return { Status: 'Success', Diagnostics: { IORegistry: { ...BATTERY } } };
  }
  return { Status: 'Failure' };
}
