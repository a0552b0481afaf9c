/**
 * The steps every device tool takes, composed once (lockdown-afc.md §7): connect to lockdownd
 * through the muxer, QueryType, read the pair record (pairing when asked to and none exists),
 * StartSession with TLS, and StartService → a stream to the service, TLS-wrapped when the device
 * says EnableServiceSSL. Works over any muxer that can connect and keep pair records: the usbmux
 * client (against any usbmuxd) or embedded mode.
 */
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { MuxwireError } from '../errors.js';
import { LockdownClient } from '../lockdown/lockdown-client.js';
import { parsePairRecord } from '../lockdown/pair-record.js';
import { hostTlsOptions } from '../lockdown/tls-policy.js';
import type { PlistDict } from '../protocol/plist.js';
import type { DeviceInfo } from './device-info.js';
import type { MuxdPairRecordApi } from './usbmux-client.js';

/** Lockdown's port on every device (0xF27E). */
export const LOCKDOWN_PORT = 62078;

/** A muxer as the device tools need it: the usbmux client and embedded mode both fit. */
export interface DeviceMuxer extends MuxdPairRecordApi {
  findDevice(udid?: string): Promise<DeviceInfo>;
  connect(device: DeviceInfo, port: number): Promise<Duplex>;
}

export interface OpenLockdownOptions {
  /** Label sent to lockdownd (default `muxwire`). */
  label?: string;
  /** Start a TLS session with the stored pair record (default true). */
  session?: boolean;
  /** Pair first when no record is stored (default false: a coded error instead). */
  pairIfNeeded?: boolean;
  /** How long to wait for the Trust dialog when pairing. */
  pairTimeoutMs?: number;
  /** Called while the Trust dialog is showing. */
  onWaiting?: (elapsedMs: number) => void;
}

export interface LockdownHandle {
  lockdown: LockdownClient;
  device: DeviceInfo;
  /** The pair record used for the session (undefined without a session). */
  record?: PlistDict;
}

/** Opens lockdownd on `device`, optionally pairing, optionally in a TLS session. */
export async function openLockdown(mux: DeviceMuxer, device: DeviceInfo, options: OpenLockdownOptions = {}): Promise<LockdownHandle> {
  const stream = await mux.connect(device, LOCKDOWN_PORT);
  const lockdown = await LockdownClient.open(stream, { label: options.label ?? 'muxwire' });
  try {
    const type = await lockdown.queryType();
    if (type !== 'com.apple.mobile.lockdown') {
      throw new MuxwireError('MUXWIRE_ERR_LOCKDOWN', `device answers QueryType with ${type}, not lockdown (restore or recovery mode?)`, { detail: type });
    }
    if (options.session === false) return { lockdown, device };
    let record = await mux.readPairRecord(device.udid);
    if (!record) {
      if (!options.pairIfNeeded) {
        throw new MuxwireError('MUXWIRE_ERR_NOT_PAIRED', `device ${device.udid} is not paired with this host (run 'muxwire pair')`);
      }
      record = await lockdown.pair(mux, {
        udid: device.udid,
        deviceId: device.deviceId,
        timeoutMs: options.pairTimeoutMs,
        onWaiting: options.onWaiting,
      });
    }
    await lockdown.startSession(record, await mux.readBUID());
    return { lockdown, device, record };
  } catch (err) {
    lockdown.close();
    throw err;
  }
}

/**
 * StartService `name` in an open session and connects to it; the stream speaks the service
 * protocol (inside TLS when the device asked for it, with the same host certificate).
 */
export async function startService(mux: DeviceMuxer, handle: LockdownHandle, name: string): Promise<Duplex> {
  if (!handle.record) throw new MuxwireError('MUXWIRE_ERR_NOT_PAIRED', `StartService ${name} needs a session`);
  const escrowBag = Buffer.isBuffer(handle.record.EscrowBag) ? handle.record.EscrowBag : undefined;
  const info = await handle.lockdown.startService(name, { escrowBag });
  const stream = await mux.connect(handle.device, info.port);
  if (!info.enableServiceSSL) return stream;
  const options = hostTlsOptions(parsePairRecord(handle.record), { maxVersion: 'TLSv1.2' });
  return new Promise<Duplex>((resolve, reject) => {
    const tls = tlsConnect({ ...options, socket: stream as never });
    tls.once('secureConnect', () => {
      tls.removeListener('error', reject);
      resolve(tls);
    });
    tls.once('error', (err) => {
      stream.destroy();
      reject(new MuxwireError('MUXWIRE_ERR_TLS', `TLS with service ${name} failed: ${err.message}`, { cause: err }));
    });
  });
}
