/**
 * Preflight: what the daemon does with lockdownd when a device appears (usbmux.md §4.11), so a
 * paired device is ready for clients and an unpaired one shows its Trust dialog.
 *
 * ```
 *  connect 62078 ─ QueryType ─┬─ not "com.apple.mobile.lockdown" (restore, recovery) ──> done
 *                             └─ record stored? ─ yes ─ StartSession ─┬─ ok ─────────────> done
 *                                     │                               ├─ InvalidHostID ─┐
 *                                     no                              └─ other error ───> done
 *                                     └──────────────────────────────────────────────────┤
 *      SetValue UntrustedHostBUID ─ announce ─ Pair (asking again every second while the
 *      Trust dialog shows) ─ SavePairRecord with DeviceID ─> Paired event ──────────────> done
 * ```
 *
 * Differences from usbmuxd, on purpose:
 * - While the Trust dialog is pending we keep asking (Pair answers PairingDialogResponsePending)
 *   instead of waiting for notification-proxy messages; the device is announced first, as usbmuxd
 *   announces it before that wait.
 * - The device is always announced in the end, whatever fails (usbmuxd hides a device for good
 *   when lockdownd cannot be reached or QueryType fails, §6.13); the registry also caps the hiding.
 * - A stored record is never deleted here: not for a TLS error (usbmuxd deletes it on SSL_ERROR
 *   and pairs again), and never for a transport error. A new pairing overwrites it when it succeeds.
 */
import { MuxwireError } from '../errors.js';
import { LockdownClient } from '../lockdown/lockdown-client.js';
import type { DeviceEntry, PreflightHook } from './device-registry.js';
import type { MuxDaemon } from './mux-daemon.js';
import type { PairStore } from './pair-store.js';

/** lockdownd's port. */
const LOCKDOWN_PORT = 62078;
/** QueryType of a normally booted device. */
const LOCKDOWN_TYPE = 'com.apple.mobile.lockdown';
/** How long preflight keeps asking while the Trust dialog shows. */
const TRUST_WAIT_MS = 10 * 60 * 1000;

export interface PreflightOptions {
  /** How long to keep asking while the Trust dialog shows (default 10 min). */
  trustWaitMs?: number;
  /** Interval between Pair attempts while the dialog shows (default 1000 ms). */
  retryMs?: number;
}

/** A preflight hook for the daemon returned by `getDaemon()` (its pair store). */
export function createPreflight(getDaemon: () => MuxDaemon, opts: PreflightOptions = {}): PreflightHook {
  return (entry, announce) => runPreflight(entry, getDaemon().pairStore, announce, opts);
}

/** Runs preflight for one device; resolves when it is over (never rejects on device trouble). */
export async function runPreflight(entry: DeviceEntry, store: PairStore, announce: () => void, opts: PreflightOptions = {}): Promise<void> {
  const log = entry.log.child({ preflight: 1 });
  const udid = entry.properties.serialNumber;
  let client: LockdownClient | undefined;
  try {
    const conn = await entry.session.connect(LOCKDOWN_PORT);
    client = await LockdownClient.open(conn, { label: 'usbmuxd', log });
    const type = await client.queryType();
    if (type !== LOCKDOWN_TYPE) {
      log.info(`lockdownd type is ${type}; no pairing check`);
      return;
    }
    const buid = await store.readBUID();
    const record = await store.readPairRecord(udid).catch((err: unknown) => {
      log.warn(`stored pair record unusable: ${(err as Error).message}`);
      return undefined;
    });
    if (record !== undefined) {
      try {
        await client.startSession(record, buid);
        await client.stopSession().catch(() => undefined);
        log.debug('paired; session check passed');
        return;
      } catch (err) {
        if (lockdownError(err) !== 'InvalidHostID') {
          // usbmuxd treats any other failure as "paired" and carries on (§4.11 step 2).
          log.info(`session check failed (${(err as Error).message}); leaving the pairing as it is`);
          return;
        }
        log.info('the device does not know our stored HostID; pairing again');
        // A failed StartSession leaves the stream usable in plaintext only if TLS never started;
        // reopen to be sure.
        client.close();
        client = await LockdownClient.open(await entry.session.connect(LOCKDOWN_PORT), { label: 'usbmuxd', log });
      }
    }
    await client.setValue({ key: 'UntrustedHostBUID', value: buid }).catch((err: unknown) => {
      log.debug(`SetValue UntrustedHostBUID failed: ${(err as Error).message}`);
    });
    let waiting = false;
    await client.pair(store, {
      udid,
      deviceId: entry.id,
      timeoutMs: opts.trustWaitMs ?? TRUST_WAIT_MS,
      ...(opts.retryMs !== undefined ? { retryMs: opts.retryMs } : {}),
      onWaiting: () => {
        if (!waiting) log.info('waiting for the user to trust this computer');
        waiting = true;
        // Clients see the device while the dialog shows, as usbmuxd announces it before waiting.
        announce();
      },
    });
    log.info('paired');
  } catch (err) {
    const detail = lockdownError(err);
    if (detail === 'UserDeniedPairing') log.info('the user did not trust this computer');
    else if (detail === 'PasswordProtected') log.info('the device is locked with a passcode; unlock it to pair');
    else log.info(`preflight stopped: ${(err as Error).message}`);
  } finally {
    client?.close();
  }
}

/** The lockdown error string of a MUXWIRE_ERR_LOCKDOWN error, if it is one. */
function lockdownError(err: unknown): string | undefined {
  return err instanceof MuxwireError && typeof err.detail === 'string' ? err.detail : undefined;
}
