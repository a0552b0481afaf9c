/**
 * One host connection to the simulated lockdownd (device port 62078): requests are handled one at
 * a time, in arrival order, and every reply echoes `Request` (error replies included, because
 * libimobiledevice checks the echo before it looks at `Error`, lockdown-afc.md §2.2), carries
 * `Result: Success` on success (PMD3's stop_session requires it) and is XML starting with `<?xml`.
 *
 * Session states: `none` → StartSession (plaintext reply, then TLS server handshake on the same
 * stream) → `active` → StopSession (reply inside TLS, close_notify, back to plaintext) → `none`.
 * Verbs that need a session answer `SessionInactive` in `none`.
 */
import { randomUUID, X509Certificate } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { isPlistDict, type PlistDict, type PlistValue } from '../protocol/plist.js';
import { PlistChannel, type ChannelMessage } from '../lockdown/plist-channel.js';
import { deviceTlsOptions } from '../lockdown/tls-policy.js';
import { INVALID_REQUEST } from '../lockdown/lockdown-errors.js';
import type { Logger } from '../log.js';
import type { LockdowndContext } from './lockdownd.js';
import { INSECURE_SERVICES } from './service-registry.js';
import type { TrustedHost } from './sim-pairing.js';

/**
 * Requests queued behind one in progress. Clients wait for each reply (lockdown-afc.md §1.2), so a
 * deeper queue is a misbehaving peer, and the connection is closed rather than buffered without end.
 */
const MAX_QUEUED_REQUESTS = 16;

/** The lockdownd type a device in normal mode reports (restore mode says com.apple.mobile.restored). */
export const LOCKDOWN_TYPE = 'com.apple.mobile.lockdown';

interface Session {
  id: string;
  host: TrustedHost;
}

/** Handles one lockdown connection until the host closes it. */
export class LockdowndConnection {
  readonly #ctx: LockdowndContext;
  readonly #channel: PlistChannel;
  readonly #log: Logger;
  readonly #queue: ChannelMessage[] = [];
  #busy = false;
  #session: Session | undefined;
  #closed = false;

  constructor(stream: Duplex, ctx: LockdowndContext, log: Logger) {
    this.#ctx = ctx;
    this.#log = log;
    this.#channel = new PlistChannel(stream, {
      onMessage: (msg) => {
        if (this.#queue.length >= MAX_QUEUED_REQUESTS) {
          this.#log.warn(`more than ${MAX_QUEUED_REQUESTS} requests pipelined; closing the connection`);
          this.#channel.close();
          return;
        }
        this.#queue.push(msg);
        void this.#pump();
      },
      onClose: (err) => {
        this.#closed = true;
        this.#queue.length = 0;
        if (err) this.#log.debug(`connection closed: ${err.message} (${err.code})`);
        else this.#log.debug('connection closed');
      },
    });
  }

  /** Ends the connection (device shutting down). */
  close(): void {
    this.#channel.close();
  }

  async #pump(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      for (let msg = this.#queue.shift(); msg !== undefined && !this.#closed; msg = this.#queue.shift()) {
        await this.#handle(msg.value);
      }
    } catch (err) {
      // One fatal path: a handler that throws ends the connection rather than the process.
      this.#log.warn(`lockdown request failed: ${(err as Error).message}`);
      this.#channel.close();
    } finally {
      this.#busy = false;
    }
  }

  async #handle(value: PlistValue): Promise<void> {
    if (!isPlistDict(value) || typeof value.Request !== 'string') {
      this.#channel.send({ Error: INVALID_REQUEST });
      return;
    }
    const request = value.Request;
    if (this.#log.enabled('debug')) this.#log.debug(`→ ${request}`);
    if (this.#ctx.syslog.relays > 0) {
      this.#ctx.syslog.log('lockdownd', LOCKDOWND_PID, 'Notice', `${request}${describeFields(requestFields(value))} from ${this.#session ? 'a host in a session' : 'a host'}`);
    }
    switch (request) {
      case 'QueryType':
        return this.#reply(request, { Type: LOCKDOWN_TYPE });
      case 'GetValue':
        return this.#getValue(value);
      case 'SetValue':
        return this.#setValue(value);
      case 'RemoveValue':
        return this.#removeValue(value);
      case 'Pair':
        return this.#pair(value);
      case 'ValidatePair': {
        const r = this.#ctx.pairing.validate(value.PairRecord);
        return r.ok ? this.#reply(request) : this.#fail(request, r.error);
      }
      case 'Unpair': {
        const r = await this.#ctx.pairing.unpair(value.PairRecord);
        return r.ok ? this.#reply(request) : this.#fail(request, r.error);
      }
      case 'StartSession':
        return this.#startSession(value);
      case 'StopSession':
        return this.#stopSession(value);
      case 'StartService':
        return this.#startService(value);
      case 'Goodbye':
        this.#reply(request);
        this.#channel.close(true);
        return;
      case 'EnterRecovery':
      case 'Activate':
      case 'Deactivate':
        // Session-only verbs (§3). The simulator has no recovery mode and no activation server,
        // so inside a session they are refused rather than pretended.
        if (!this.#session) return this.#fail(request, 'SessionInactive');
        return this.#fail(request, INVALID_REQUEST);
      default:
        return this.#fail(request, INVALID_REQUEST);
    }
  }

  #reply(request: string, fields: PlistDict = {}): void {
    this.#channel.send({ Request: request, Result: 'Success', ...fields });
  }

  #fail(request: string, error: string, fields: PlistDict = {}): void {
    // The fields echoed (Service, Domain, Key) say what was refused: "InvalidService" alone does not.
    if (this.#log.enabled('debug')) this.#log.debug(`← ${request} ${error}${describeFields(fields)}`);
    this.#channel.send({ Request: request, ...fields, Error: error });
  }

  /** `Domain`/`Key` as strings, or undefined when absent (a wrong type is treated as absent). */
  #domainKey(req: PlistDict): { domain?: string; key?: string; echo: PlistDict } {
    const domain = typeof req.Domain === 'string' ? req.Domain : undefined;
    const key = typeof req.Key === 'string' ? req.Key : undefined;
    return { domain, key, echo: { Domain: domain, Key: key } };
  }

  async #getValue(req: PlistDict): Promise<void> {
    const { domain, key, echo } = this.#domainKey(req);
    const r = await this.#ctx.values.get(domain, key, this.#session !== undefined);
    if ('error' in r) return this.#fail('GetValue', r.error, echo);
    this.#reply('GetValue', { ...echo, Value: r.value });
  }

  async #setValue(req: PlistDict): Promise<void> {
    const { domain, key, echo } = this.#domainKey(req);
    if (key === undefined) return this.#fail('SetValue', 'MissingKey', echo);
    if (req.Value === undefined) return this.#fail('SetValue', 'MissingValue', echo);
    const r = await this.#ctx.values.set(domain, key, req.Value, this.#session !== undefined);
    if ('error' in r) return this.#fail('SetValue', r.error, echo);
    this.#reply('SetValue', echo);
  }

  async #removeValue(req: PlistDict): Promise<void> {
    const { domain, key, echo } = this.#domainKey(req);
    if (!this.#session) return this.#fail('RemoveValue', 'SessionInactive', echo);
    if (key === undefined) return this.#fail('RemoveValue', 'MissingKey', echo);
    const r = await this.#ctx.values.remove(domain, key, true);
    if ('error' in r) return this.#fail('RemoveValue', r.error, echo);
    this.#reply('RemoveValue', echo);
  }

  async #pair(req: PlistDict): Promise<void> {
    const r = await this.#ctx.pairing.pair(req.PairRecord);
    if (!r.ok) {
      if (r.reason !== undefined) this.#log.debug(`Pair refused: ${r.reason}`);
      return this.#fail('Pair', r.error);
    }
    this.#reply('Pair', { EscrowBag: r.value });
  }

  async #startSession(req: PlistDict): Promise<void> {
    if (this.#session) return this.#fail('StartSession', 'SessionActive');
    if (req.HostID === undefined) return this.#fail('StartSession', 'MissingHostID');
    const host = typeof req.HostID === 'string' ? this.#ctx.pairing.get(req.HostID) : undefined;
    if (!host) return this.#fail('StartSession', 'InvalidHostID');
    // The key is ready before the reply goes out, so TLS starts in the same tick as the reply is
    // written and the ClientHello that follows it reaches the TLS engine (§5.1).
    const key = await this.#ctx.identity.deviceKey();
    if (this.#closed) return;
    const session: Session = { id: randomUUID().toUpperCase(), host };
    this.#reply('StartSession', { SessionID: session.id, EnableSessionSSL: true });
    try {
      await this.#channel.startTlsServer(deviceTlsOptions(host.deviceCertificate, key.privateKey), (tls) => acceptPeer(tls, [host]));
    } catch (err) {
      this.#log.debug(`session TLS failed: ${(err as Error).message}`);
      return; // the channel is closed
    }
    this.#session = session;
    if (this.#log.enabled('debug')) {
      const tls = this.#channel.tlsSocket;
      this.#log.debug(`session ${session.id} for host ${host.hostId}: ${tls?.getProtocol()} ${tls?.getCipher().name}`);
    }
  }

  #stopSession(req: PlistDict): void {
    const session = this.#session;
    if (!session) return this.#fail('StopSession', 'SessionInactive');
    if (req.SessionID === undefined) return this.#fail('StopSession', 'MissingSessionID');
    if (req.SessionID !== session.id) return this.#fail('StopSession', 'InvalidSessionID');
    this.#session = undefined;
    // The reply is the last TLS record, then close_notify; the host's own close_notify is dropped
    // and the stream speaks plaintext again (§5.4).
    this.#channel.stopTls({ Request: 'StopSession', Result: 'Success' });
  }

  async #startService(req: PlistDict): Promise<void> {
    const name = req.Service;
    if (name === undefined) return this.#fail('StartService', 'MissingService');
    if (typeof name !== 'string') return this.#fail('StartService', 'InvalidService');
    const echo = { Service: name };
    if (!this.#session && !INSECURE_SERVICES.has(name)) return this.#fail('StartService', 'SessionInactive', echo);
    const handler = this.#ctx.services.get(name);
    if (!handler) return this.#fail('StartService', 'InvalidService', echo);
    // An EscrowBag unlocks the keybag for services that read protected data (mobilebackup2 sends
    // the one Pair returned). The simulated keybag needs none, but a bag that is not this host's
    // cannot unlock it: refused as a real device does.
    const bag = req.EscrowBag;
    if (bag !== undefined && (!Buffer.isBuffer(bag) || !this.#session?.host.escrowBag.equals(bag))) {
      return this.#fail('StartService', 'EscrowLocked', echo);
    }
    const ssl = this.#session !== undefined && this.#ctx.enableServiceSSL;
    const host = this.#session?.host;
    const key = ssl ? await this.#ctx.identity.deviceKey() : undefined;
    const port = await this.#ctx.openServicePort(name, handler, ssl && host && key ? { host, key: key.privateKey } : undefined);
    this.#reply('StartService', ssl ? { ...echo, Port: port, EnableServiceSSL: true } : { ...echo, Port: port });
    this.#ctx.syslog.log('lockdownd', LOCKDOWND_PID, 'Notice', `started ${name} on port ${port}${ssl ? ' (SSL)' : ''}`);
  }
}

/**
 * Client-certificate policy (lockdown-afc.md §5.2): no certificate is fine; a certificate is
 * accepted when its DER equals a trusted host's RootCertificate or HostCertificate, or when it is
 * signed by that host's root. Returns a reason to refuse, or undefined.
 */
export function acceptPeer(tls: TLSSocket, hosts: TrustedHost[]): string | undefined {
  const peer = tls.getPeerCertificate(false);
  if (peer === null || peer === undefined || peer.raw === undefined) return undefined;
  const der = peer.raw;
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(der);
  } catch {
    return 'client certificate is unreadable';
  }
  for (const host of hosts) {
    let root: X509Certificate;
    let hostCert: X509Certificate;
    try {
      root = new X509Certificate(host.rootCertificate);
      hostCert = new X509Certificate(host.hostCertificate);
    } catch {
      continue;
    }
    if (der.equals(root.raw) || der.equals(hostCert.raw)) return undefined;
    try {
      if (cert.verify(root.publicKey)) return undefined;
    } catch {
      // not verifiable with this root; try the next host
    }
  }
  return 'client certificate belongs to no trusted host';
}

/** ` Service=com.apple.syslog_relay` for the string fields of a reply, for the log line. */
function describeFields(fields: PlistDict): string {
  let text = '';
  for (const [k, v] of Object.entries(fields)) if (typeof v === 'string') text += ` ${k}=${v}`;
  return text;
}

/** lockdownd's pid in the simulated device's log (a small number, as on a device). */
const LOCKDOWND_PID = 63;

/** The fields of a request worth a log line: what it names, never a record or a key. */
function requestFields(req: PlistDict): PlistDict {
  const fields: PlistDict = {};
  for (const k of ['Domain', 'Key', 'Service'] as const) if (typeof req[k] === 'string') fields[k] = req[k];
  return fields;
}
