/**
 * The simulated device's side of pairing (lockdown-afc.md §4.4): the Trust dialog policy, the checks
 * on a Pair request's record, and the records of trusted hosts, keyed by HostID.
 *
 * Trust modes (`muxwire sim --trust`):
 * - `accept`: every valid Pair succeeds at once (a device on its setup screen, or one already
 *   trusting this computer).
 * - `deny`: the user taps "Don't Trust": `UserDeniedPairing`.
 * - `delay:MS`: the dialog shows for MS milliseconds after the first Pair attempt
 *   (`PairingDialogResponsePending` until then), after which the user has tapped "Trust". The
 *   dialog is per device, not per HostID, because libimobiledevice makes a fresh HostID on every
 *   attempt while no record is saved. An Unpair puts the dialog back.
 * - `passcode`: the device is locked with a passcode: `PasswordProtected`.
 *
 * With a state directory the trusted hosts live in `<stateDir>/pairings/<HostID>.plist` (XML,
 * written atomically), so a restarted simulator still knows its hosts.
 */
import { readdir, readFile, rm } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { encodeXmlPlist, decodeXmlPlist, isPlistDict, type PlistDict, type PlistValue } from '../protocol/plist.js';
import { MuxwireError } from '../errors.js';
import { log } from '../log.js';
import { checkPairCertificates, newEscrowBag } from '../lockdown/certificates.js';
import { writeFileAtomic, type DeviceIdentity } from './identity.js';

/** How the simulated device answers Pair. */
export type TrustMode = { kind: 'accept' } | { kind: 'deny' } | { kind: 'passcode' } | { kind: 'delay'; ms: number };

/** Parses `accept`, `deny`, `passcode` or `delay:MS`. Throws MUXWIRE_ERR_BAD_ARGUMENT otherwise. */
export function parseTrustMode(text: string): TrustMode {
  if (text === 'accept' || text === 'deny' || text === 'passcode') return { kind: text };
  const m = /^delay:(\d{1,9})$/.exec(text);
  if (m) return { kind: 'delay', ms: Number(m[1]) };
  throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `trust mode '${text}' is not accept, deny, passcode or delay:MS`);
}

/** A host the device trusts. */
export interface TrustedHost {
  hostId: string;
  systemBUID?: string;
  rootCertificate: Buffer;
  hostCertificate: Buffer;
  deviceCertificate: Buffer;
  escrowBag: Buffer;
}

/** A Pair/ValidatePair/Unpair outcome: success (with data) or a lockdown error string. */
export type PairingResult<T = undefined> = { ok: true; value: T } | { ok: false; error: string; reason?: string };

const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/** Trust policy and trusted-host records of one simulated device. */
export class SimPairing {
  readonly #identity: DeviceIdentity;
  readonly #trust: TrustMode;
  readonly #dir: string | undefined;
  readonly #hosts = new Map<string, TrustedHost>();
  /** When the Trust dialog first appeared (delay mode), or undefined while none shows. */
  #dialogSince: number | undefined;
  /** Fires when the user "taps Trust" (delay mode), to post request_pair. */
  #trustTimer: NodeJS.Timeout | undefined;
  readonly #onTrusted: (() => void) | undefined;
  readonly #log = log.child({ sim: 'pairing' });

  private constructor(identity: DeviceIdentity, trust: TrustMode, stateDir: string | undefined, onTrusted: (() => void) | undefined) {
    this.#identity = identity;
    this.#trust = trust;
    this.#onTrusted = onTrusted;
    this.#dir = stateDir === undefined ? undefined : join(stateDir, 'pairings');
  }

  /**
   * Creates the store, loading the trusted hosts persisted under `stateDir`. `onTrusted` runs when
   * a Trust dialog is answered with "Trust" (delay mode), as lockdownd then posts
   * `com.apple.mobile.lockdown.request_pair` for usbmuxd to pair again.
   */
  static async open(opts: { identity: DeviceIdentity; trust?: TrustMode; stateDir?: string; onTrusted?: () => void }): Promise<SimPairing> {
    const p = new SimPairing(opts.identity, opts.trust ?? { kind: 'accept' }, opts.stateDir, opts.onTrusted);
    await p.#load();
    return p;
  }

  /** The trusted host with this HostID. */
  get(hostId: string): TrustedHost | undefined {
    return this.#hosts.get(hostId);
  }

  /** Every trusted host. */
  hosts(): TrustedHost[] {
    return [...this.#hosts.values()];
  }

  /** Pair: check the record, run the Trust dialog, store the host, return the escrow bag. */
  async pair(recordValue: PlistValue | undefined, now = Date.now()): Promise<PairingResult<Buffer>> {
    const read = readRequestRecord(recordValue);
    if (!read.ok) return read;
    const record = read.value;
    const key = await this.#identity.deviceKey();
    const problem = checkPairCertificates(
      { rootCertificate: record.rootCertificate, hostCertificate: record.hostCertificate, deviceCertificate: record.deviceCertificate },
      key.privateKey,
    );
    if (problem !== undefined) return { ok: false, error: 'InvalidPairRecord', reason: problem };
    switch (this.#trust.kind) {
      case 'deny':
        return { ok: false, error: 'UserDeniedPairing' };
      case 'passcode':
        return { ok: false, error: 'PasswordProtected' };
      case 'delay':
        if (this.#dialogSince === undefined) {
          this.#dialogSince = now;
          this.#trustTimer = setTimeout(() => {
            this.#trustTimer = undefined;
            this.#onTrusted?.();
          }, this.#trust.ms);
          this.#trustTimer.unref();
        }
        if (now - this.#dialogSince < this.#trust.ms) return { ok: false, error: 'PairingDialogResponsePending' };
        break;
      case 'accept':
        break;
    }
    // Pairing again with the same HostID replaces the record, keeping nothing from before (§4.4).
    const host: TrustedHost = { ...record, escrowBag: newEscrowBag() };
    this.#hosts.set(host.hostId, host);
    await this.#save(host);
    this.#log.debug(`paired with host ${host.hostId}`);
    return { ok: true, value: host.escrowBag };
  }

  /** ValidatePair: the record must name a known HostID. */
  validate(recordValue: PlistValue | undefined): PairingResult {
    const hostId = readHostId(recordValue);
    if (!hostId.ok) return hostId;
    if (!this.#hosts.has(hostId.value)) return { ok: false, error: 'InvalidHostID' };
    return { ok: true, value: undefined };
  }

  /**
   * Unpair: forget `PairRecord.HostID` (any record shape that carries a HostID, PMD3 may send just
   * `{HostID}`). An unknown HostID also succeeds: the host is not trusted either way (§4.4).
   */
  async unpair(recordValue: PlistValue | undefined): Promise<PairingResult> {
    const hostId = readHostId(recordValue);
    if (!hostId.ok) return hostId;
    const existed = this.#hosts.delete(hostId.value);
    if (existed) await this.#remove(hostId.value);
    this.close();
    return { ok: true, value: undefined };
  }

  /** Puts the Trust dialog away (no pending "Trust" tap fires later). */
  close(): void {
    clearTimeout(this.#trustTimer);
    this.#trustTimer = undefined;
    this.#dialogSince = undefined;
  }

  #fileFor(hostId: string): string {
    const name = SAFE_NAME.test(hostId) ? hostId : createHash('sha256').update(hostId).digest('hex');
    return join(this.#dir!, `${name}.plist`);
  }

  async #save(host: TrustedHost): Promise<void> {
    if (this.#dir === undefined) return;
    const dict: PlistDict = {
      HostID: host.hostId,
      SystemBUID: host.systemBUID,
      RootCertificate: host.rootCertificate,
      HostCertificate: host.hostCertificate,
      DeviceCertificate: host.deviceCertificate,
      EscrowBag: host.escrowBag,
    };
    await writeFileAtomic(this.#fileFor(host.hostId), encodeXmlPlist(dict));
  }

  async #remove(hostId: string): Promise<void> {
    if (this.#dir === undefined) return;
    await rm(this.#fileFor(hostId), { force: true });
  }

  async #load(): Promise<void> {
    if (this.#dir === undefined) return;
    let names: string[];
    try {
      names = await readdir(this.#dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const name of names) {
      if (!name.endsWith('.plist')) continue;
      try {
        const dict = decodeXmlPlist(await readFile(join(this.#dir, name)));
        const read = readRequestRecord(dict);
        if (!read.ok || !isPlistDict(dict) || !Buffer.isBuffer(dict.EscrowBag)) throw new Error('not a pairing record');
        this.#hosts.set(read.value.hostId, { ...read.value, escrowBag: dict.EscrowBag });
      } catch (err) {
        // A damaged file must not stop the device from starting; the host will pair again.
        this.#log.warn(`ignoring ${join(this.#dir, name)}: ${(err as Error).message}`);
      }
    }
  }
}

function readHostId(recordValue: PlistValue | undefined): PairingResult<string> {
  if (recordValue === undefined) return { ok: false, error: 'MissingPairRecord' };
  if (!isPlistDict(recordValue)) return { ok: false, error: 'InvalidPairRecord', reason: 'PairRecord is not a dict' };
  const hostId = recordValue.HostID;
  if (hostId === undefined) return { ok: false, error: 'MissingHostID' };
  if (typeof hostId !== 'string' || hostId === '') return { ok: false, error: 'InvalidHostID' };
  return { ok: true, value: hostId };
}

/** PEM as data (or, tolerated, as a string). */
function pem(dict: PlistDict, key: string): Buffer | undefined {
  const v = dict[key];
  if (Buffer.isBuffer(v)) return v;
  if (typeof v === 'string') return Buffer.from(v, 'utf8');
  return undefined;
}

/** The parts of a Pair request's record the device keeps. */
function readRequestRecord(recordValue: PlistValue | undefined): PairingResult<Omit<TrustedHost, 'escrowBag'>> {
  const hostId = readHostId(recordValue);
  if (!hostId.ok) return hostId;
  const dict = recordValue as PlistDict;
  const rootCertificate = pem(dict, 'RootCertificate');
  const hostCertificate = pem(dict, 'HostCertificate');
  const deviceCertificate = pem(dict, 'DeviceCertificate');
  if (!rootCertificate || !hostCertificate || !deviceCertificate) {
    return { ok: false, error: 'InvalidPairRecord', reason: 'PairRecord lacks a certificate' };
  }
  const systemBUID = typeof dict.SystemBUID === 'string' ? dict.SystemBUID : undefined;
  return { ok: true, value: { hostId: hostId.value, systemBUID, rootCertificate, hostCertificate, deviceCertificate } };
}
