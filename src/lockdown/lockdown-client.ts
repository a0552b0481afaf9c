/**
 * The host side of lockdownd (lockdown-afc.md §3–§5, §7): requests over any Duplex that reaches
 * device port 62078 (a usbmuxd tunnel, a DeviceSession connection, a TCP socket), one at a time,
 * each with a timeout; pairing with certificate generation and the Trust-dialog wait; sessions with
 * TLS on the same stream and back; StartService.
 *
 * Every reply's `Request` echo is checked (Unpair excepted: some firmware answers it with
 * `Request: ValidatePair`, as libimobiledevice notes). A reply with `Error` becomes
 * MuxwireError('MUXWIRE_ERR_LOCKDOWN') whose `detail` is the device's error string.
 */
import type { Duplex } from 'node:stream';
import { isPlistDict, type PlistDict, type PlistValue } from '../protocol/plist.js';
import { MuxwireError } from '../errors.js';
import { log as rootLog, type Logger } from '../log.js';
import { PlistChannel, type ChannelMessage } from './plist-channel.js';
import { generatePairCertificates } from './certificates.js';
import { buildPairRecord, newHostId, pairRecordForRequest, parsePairRecord, type PairRecordStore } from './pair-record.js';
import { hostTlsOptions, type ClientCertificateChoice } from './tls-policy.js';
import { ERR_LOCKDOWN } from './lockdown-errors.js';

export type { PairRecordStore } from './pair-record.js';

/** Options of {@link LockdownClient.open}. */
export interface LockdownClientOptions {
  /** `Label` sent with every request (the device only logs it). Default `muxwire`. */
  label?: string;
  /** Time allowed for each reply, in ms (default 10 s; the pairing wait is separate). */
  timeoutMs?: number;
  /** Request encoding: XML like libimobiledevice (default) or binary like appium. */
  format?: 'xml' | 'binary';
  /** Logger context. */
  log?: Logger;
}

/** Options of {@link LockdownClient.pair}. */
export interface PairOptions {
  /** How long to wait for the user to answer the Trust dialog (default 60 s). */
  timeoutMs?: number;
  /** Called each time the device says the Trust dialog is still showing (about once a second). */
  onWaiting?: (elapsedMs: number) => void;
  /** The device's UDID for the record's name (default: GetValue UniqueDeviceID). */
  udid?: string;
  /** usbmuxd's device id, passed to SavePairRecord so a daemon can announce Paired. */
  deviceId?: number;
  /** Signature digest of the generated certificates (default sha256). */
  digest?: 'sha256' | 'sha1';
  /** Retry interval while the dialog shows (default 1000 ms, as PMD3). */
  retryMs?: number;
}

/** What StartSession returned. */
export interface SessionInfo {
  sessionId: string;
  enableSessionSSL: boolean;
}

/** What StartService returned. */
export interface ServiceInfo {
  service: string;
  port: number;
  enableServiceSSL: boolean;
}

const PROTOCOL_VERSION = '2';

/** Error thrown for an `Error` reply; `detail` is the lockdown error string. */
function lockdownError(verb: string, error: string): MuxwireError {
  return new MuxwireError(ERR_LOCKDOWN, `${verb} failed: ${error}`, { detail: error });
}

/** A lockdown connection from the host. */
export class LockdownClient {
  readonly #channel: PlistChannel;
  readonly #label: string;
  readonly #timeoutMs: number;
  readonly #format: 'xml' | 'binary';
  readonly #log: Logger;
  #waiter: { resolve: (m: ChannelMessage) => void; reject: (e: MuxwireError) => void } | undefined;
  #busy = false;
  #closedError: MuxwireError | undefined;
  #session: SessionInfo | undefined;

  private constructor(stream: Duplex, opts: LockdownClientOptions) {
    this.#label = opts.label ?? 'muxwire';
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#format = opts.format ?? 'xml';
    this.#log = opts.log ?? rootLog.child({ lockdown: this.#label });
    this.#channel = new PlistChannel(stream, {
      onMessage: (msg) => this.#receive(msg),
      onClose: (err) => {
        this.#closedError = new MuxwireError('MUXWIRE_ERR_CLOSED', `lockdown connection closed${err ? `: ${err.message}` : ''}`, {
          cause: err,
        });
        const w = this.#waiter;
        this.#waiter = undefined;
        w?.reject(this.#closedError);
      },
    });
  }

  /** Wraps a stream connected to device port 62078. */
  static async open(stream: Duplex, opts: LockdownClientOptions = {}): Promise<LockdownClient> {
    return new LockdownClient(stream, opts);
  }

  /** The active session, if any. */
  get session(): SessionInfo | undefined {
    return this.#session;
  }

  /** True while the lockdown traffic runs inside TLS. */
  get secure(): boolean {
    return this.#channel.secure;
  }

  /** The negotiated TLS version and cipher while the session runs inside TLS. */
  get tls(): { protocol: string | null; cipher: string } | undefined {
    const socket = this.#channel.tlsSocket;
    return socket ? { protocol: socket.getProtocol(), cipher: socket.getCipher().name } : undefined;
  }

  /** QueryType: `com.apple.mobile.lockdown` in normal mode. */
  async queryType(): Promise<string> {
    const reply = await this.request('QueryType');
    if (typeof reply.Type !== 'string') throw new MuxwireError(ERR_LOCKDOWN, 'QueryType reply has no Type', { detail: 'InvalidResponse' });
    return reply.Type;
  }

  /**
   * GetValue. Without `key` the whole domain comes back as a dict. A reply without `Value` means
   * the value is absent: undefined (as libimobiledevice reads it).
   */
  async getValue(opts: { domain?: string; key?: string } = {}): Promise<PlistValue | undefined> {
    const reply = await this.request('GetValue', { Domain: opts.domain, Key: opts.key });
    return reply.Value;
  }

  /** SetValue (DeviceName, and UntrustedHostBUID without a session, as usbmuxd's preflight). */
  async setValue(opts: { domain?: string; key: string; value: PlistValue }): Promise<void> {
    await this.request('SetValue', { Domain: opts.domain, Key: opts.key, Value: opts.value });
  }

  /** RemoveValue. */
  async removeValue(opts: { domain?: string; key: string }): Promise<void> {
    await this.request('RemoveValue', { Domain: opts.domain, Key: opts.key });
  }

  /**
   * Pairs as libimobiledevice's `lockdownd_pair` does (§4.1): GetValue DevicePublicKey, ReadBUID,
   * GetValue WiFiAddress (before Pair: asking after fails on iOS 7), generate the certificates,
   * Pair with `ExtendedPairingErrors`; while the Trust dialog shows (`PairingDialogResponsePending`)
   * ask again every second until `timeoutMs`; then save the record (with EscrowBag and
   * WiFiMACAddress) through `store.savePairRecord`. Returns the saved record.
   */
  async pair(store: PairRecordStore, opts: PairOptions = {}): Promise<PlistDict> {
    const publicKey = await this.getValue({ key: 'DevicePublicKey' });
    if (!Buffer.isBuffer(publicKey)) {
      throw new MuxwireError(ERR_LOCKDOWN, 'the device gave no DevicePublicKey', { detail: 'MissingValue' });
    }
    const systemBUID = await store.readBUID();
    const wifi = await this.getValue({ key: 'WiFiAddress' });
    const udidValue = opts.udid ?? (await this.getValue({ key: 'UniqueDeviceID' }));
    if (typeof udidValue !== 'string' || udidValue === '') {
      throw new MuxwireError(ERR_LOCKDOWN, 'the device gave no UniqueDeviceID', { detail: 'MissingValue' });
    }
    const certificates = await generatePairCertificates(publicKey, { digest: opts.digest });
    const record = buildPairRecord({
      certificates,
      hostId: newHostId(),
      systemBUID,
      wifiMacAddress: typeof wifi === 'string' ? wifi : undefined,
    });
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const retryMs = opts.retryMs ?? 1000;
    const started = Date.now();
    for (;;) {
      try {
        const reply = await this.request('Pair', {
          PairRecord: pairRecordForRequest(record),
          ProtocolVersion: PROTOCOL_VERSION,
          PairingOptions: { ExtendedPairingErrors: true },
        });
        if (Buffer.isBuffer(reply.EscrowBag)) record.EscrowBag = reply.EscrowBag;
        break;
      } catch (err) {
        const elapsed = Date.now() - started;
        if (!(err instanceof MuxwireError) || err.detail !== 'PairingDialogResponsePending') throw err;
        if (elapsed + retryMs > timeoutMs) {
          throw new MuxwireError('MUXWIRE_ERR_TIMEOUT', `the Trust dialog was not answered within ${timeoutMs} ms`, {
            cause: err,
            detail: 'PairingDialogResponsePending',
          });
        }
        opts.onWaiting?.(elapsed);
        await new Promise((r) => setTimeout(r, retryMs));
      }
    }
    await store.savePairRecord(udidValue, record, opts.deviceId);
    this.#log.debug(`paired: HostID ${String(record.HostID)}`);
    return record;
  }

  /** ValidatePair with a stored record (only iOS below 7 needs it, §3). */
  async validatePair(record: PlistDict): Promise<void> {
    await this.request('ValidatePair', { PairRecord: pairRecordForRequest(record), ProtocolVersion: PROTOCOL_VERSION });
  }

  /** Unpair: any record shape with a HostID; the device forgets the host. */
  async unpair(record: PlistDict): Promise<void> {
    await this.request('Unpair', { PairRecord: pairRecordForRequest(record), ProtocolVersion: PROTOCOL_VERSION }, { anyEcho: true });
  }

  /**
   * StartSession with the record's HostID; when the device enables SSL (current iOS always does),
   * a TLS client handshake follows on the same stream with the host certificate (or the root one,
   * as libimobiledevice+OpenSSL presents). A session already open is stopped first, as LIMD does.
   */
  async startSession(record: PlistDict, systemBUID: string, opts: { certificate?: ClientCertificateChoice } = {}): Promise<SessionInfo> {
    const parsed = parsePairRecord(record);
    const tlsOptions = hostTlsOptions(parsed, { certificate: opts.certificate });
    if (this.#session) await this.stopSession();
    const reply = await this.request('StartSession', { HostID: parsed.hostId, SystemBUID: systemBUID });
    if (typeof reply.SessionID !== 'string' || reply.SessionID === '') {
      throw new MuxwireError(ERR_LOCKDOWN, 'StartSession reply has no SessionID', { detail: 'InvalidResponse' });
    }
    const info: SessionInfo = { sessionId: reply.SessionID, enableSessionSSL: reply.EnableSessionSSL === true };
    if (info.enableSessionSSL) await this.#channel.startTlsClient(tlsOptions, this.#timeoutMs);
    this.#session = info;
    return info;
  }

  /** StopSession inside TLS, then back to plaintext on the same stream (§5.4). */
  async stopSession(): Promise<void> {
    const session = this.#session;
    if (!session) return;
    try {
      await this.request('StopSession', { SessionID: session.sessionId });
    } catch (err) {
      // An Error reply means the device is still in its session (and in TLS): so are we. Any
      // other failure has closed the connection.
      if (!(err instanceof MuxwireError && err.code === ERR_LOCKDOWN)) this.#session = undefined;
      throw err;
    }
    this.#session = undefined;
    this.#channel.stopTls();
  }

  /** StartService: the port to connect to next, and whether it starts with TLS. */
  async startService(name: string, opts: { escrowBag?: Buffer } = {}): Promise<ServiceInfo> {
    const reply = await this.request('StartService', { Service: name, EscrowBag: opts.escrowBag });
    const port = reply.Port;
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw new MuxwireError(ERR_LOCKDOWN, `StartService ${name} gave no usable Port`, { detail: 'InvalidResponse' });
    }
    return { service: name, port, enableServiceSSL: reply.EnableServiceSSL === true };
  }

  /** Goodbye, then close. */
  async goodbye(): Promise<void> {
    try {
      await this.request('Goodbye');
    } finally {
      this.close();
    }
  }

  /** Closes the connection at once (no StopSession, as appium and LIMD's simple mode do). */
  close(): void {
    this.#channel.close();
  }

  /**
   * Sends one request (with Label) and returns the reply dict once its echo checks out. Throws
   * MUXWIRE_ERR_LOCKDOWN for an Error reply, MUXWIRE_ERR_TIMEOUT (and closes the connection, whose
   * state is then unknown) when no reply comes in time, MUXWIRE_ERR_CLOSED when the stream ends.
   */
  async request(verb: string, fields: PlistDict = {}, opts: { anyEcho?: boolean; timeoutMs?: number } = {}): Promise<PlistDict> {
    if (this.#closedError) throw this.#closedError;
    if (this.#busy) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `${verb} sent while another lockdown request is in flight`);
    this.#busy = true;
    try {
      const reply = new Promise<ChannelMessage>((resolve, reject) => {
        this.#waiter = { resolve, reject };
      });
      this.#channel.send({ Label: this.#label, Request: verb, ...fields }, this.#format);
      const timeoutMs = opts.timeoutMs ?? this.#timeoutMs;
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          reject(new MuxwireError('MUXWIRE_ERR_TIMEOUT', `no reply to ${verb} within ${timeoutMs} ms`));
        }, timeoutMs);
      });
      let msg: ChannelMessage;
      try {
        msg = await Promise.race([reply, timeout]);
      } catch (err) {
        if ((err as MuxwireError).code === 'MUXWIRE_ERR_TIMEOUT') {
          this.#waiter = undefined;
          this.close();
        }
        throw err;
      } finally {
        clearTimeout(timer);
      }
      return this.#check(verb, msg.value, opts.anyEcho === true);
    } finally {
      this.#busy = false;
    }
  }

  #check(verb: string, value: PlistValue, anyEcho: boolean): PlistDict {
    if (!isPlistDict(value)) throw new MuxwireError(ERR_LOCKDOWN, `${verb} reply is not a dict`, { detail: 'InvalidResponse' });
    const echo = value.Request;
    if (typeof echo !== 'string' || (!anyEcho && echo !== verb)) {
      throw new MuxwireError(ERR_LOCKDOWN, `${verb} reply echoes Request ${JSON.stringify(echo ?? null)}`, { detail: 'InvalidResponse' });
    }
    if (value.Error !== undefined) throw lockdownError(verb, typeof value.Error === 'string' ? value.Error : 'InvalidResponse');
    if (value.Result !== undefined && value.Result !== 'Success') {
      throw lockdownError(verb, value.Result === 'Failure' ? 'InvalidResponse' : String(value.Result));
    }
    return value;
  }

  #receive(msg: ChannelMessage): void {
    const w = this.#waiter;
    if (!w) {
      // lockdownd never speaks unasked; anything else means the two sides disagree on state.
      this.#log.warn('unsolicited lockdown message; closing');
      this.close();
      return;
    }
    this.#waiter = undefined;
    w.resolve(msg);
  }
}
