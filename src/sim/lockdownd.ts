/**
 * The simulated lockdownd: serves device port 62078 on a DeviceMux (or anything that can listen on
 * device ports), answering the requests real hosts send (lockdown-afc.md §3, §7, checklist §8):
 * QueryType, GetValue/SetValue/RemoveValue, Pair/ValidatePair/Unpair with a configurable Trust
 * dialog, StartSession with real TLS on the same stream, StopSession back to plaintext, and
 * StartService on ephemeral ports that outlive the lockdown connection, and the notification
 * proxies through which a Trust tap is announced (`request_pair`, which real usbmuxd waits for).
 *
 * State shared by all connections (identity, values, trusted hosts, open service ports) lives here;
 * one connection's request handling is in lockdownd-connection.ts.
 */
import type { Duplex } from 'node:stream';
import { TLSSocket, createSecureContext } from 'node:tls';
import type { KeyObject } from 'node:crypto';
import { log as rootLog, type Logger } from '../log.js';
import { deviceTlsOptions } from '../lockdown/tls-policy.js';
import type { DeviceIdentity } from './identity.js';
import { DeviceValues } from './device-values.js';
import { SimPairing, parseTrustMode, type TrustMode, type TrustedHost } from './sim-pairing.js';
import type { ServiceHandler, ServiceRegistry } from './service-registry.js';
import { LockdowndConnection, acceptPeer } from './lockdownd-connection.js';
import { NotificationCenter, NOTIFY_REQUEST_PAIR, serveNotificationProxy } from './notification-proxy.js';
import { DeviceSyslog } from './syslog-relay.js';

/** lockdownd's device port (0xF27E). */
export const LOCKDOWN_PORT = 62078;
/** The service that streams the device's system log. */
export const SYSLOG_RELAY_SERVICE = 'com.apple.syslog_relay';

/** The part of DeviceMux lockdownd uses (DeviceMux satisfies it). */
export interface LockdownMux {
  listen(port: number, onConnection: (stream: Duplex) => void): void;
  listenEphemeral(onConnection: (stream: Duplex) => void): number;
  unlisten(port: number): void;
  /** Settles once `port` is served on every link (DevicePorts); a mux alone serves it at once. */
  served?(port: number): Promise<void>;
}

/** Options of a {@link Lockdownd}. */
export interface LockdowndOptions {
  identity: DeviceIdentity;
  mux: LockdownMux;
  /** Trust dialog behaviour: a TrustMode or its text (`accept`, `deny`, `passcode`, `delay:MS`). Default accept. */
  trust?: TrustMode | string;
  /**
   * Whether StartService answers `EnableServiceSSL: true` (the service port then starts with a TLS
   * handshake). Real devices differ by iOS version and service (§3); default false.
   */
  enableServiceSSL?: boolean;
  /**
   * Services StartService can start. The notification proxies (`com.apple.mobile.notification_proxy`
   * and the insecure one) and `com.apple.syslog_relay` are added unless the map has its own.
   */
  services?: ServiceRegistry;
  /** Where trusted hosts are persisted (default: the identity's state directory). */
  stateDir?: string;
  /** How long a started service port waits for its connection (default 30 s, then it closes). */
  serviceAcceptTimeoutMs?: number;
}

/** What a connection needs from the device. @internal */
export interface LockdowndContext {
  identity: DeviceIdentity;
  values: DeviceValues;
  pairing: SimPairing;
  services: ServiceRegistry;
  enableServiceSSL: boolean;
  /** The device's system log (syslog-relay.ts): lockdownd writes its requests there. */
  syslog: DeviceSyslog;
  /** Opens an ephemeral port for one connection to `name`; resolves with it once it is served. */
  openServicePort(name: string, handler: ServiceHandler, tls?: { host: TrustedHost; key: KeyObject }): Promise<number>;
}

/** The simulated device's lockdownd. */
export class Lockdownd {
  readonly identity: DeviceIdentity;
  readonly values: DeviceValues;
  /** Darwin notifications relayed by the notification proxy services. */
  readonly notifications = new NotificationCenter();
  /** The device's system log, streamed by `com.apple.syslog_relay`. */
  readonly syslog: DeviceSyslog;
  readonly #mux: LockdownMux;
  readonly #opts: LockdowndOptions;
  readonly #services: ServiceRegistry;
  readonly #connections = new Set<LockdowndConnection>();
  /** Service ports waiting for their connection → their expiry timer. */
  readonly #servicePorts = new Map<number, NodeJS.Timeout>();
  #pairing: SimPairing | undefined;
  #started = false;
  #nextConnection = 1;
  readonly #log: Logger;

  constructor(opts: LockdowndOptions) {
    this.identity = opts.identity;
    this.values = new DeviceValues(opts.identity);
    this.#mux = opts.mux;
    this.#opts = opts;
    this.#log = rootLog.child({ sim: opts.identity.udid, svc: 'lockdownd' });
    this.#services = new Map(opts.services ?? []);
    this.syslog = new DeviceSyslog(() => this.identity.deviceName);
    if (!this.#services.has(SYSLOG_RELAY_SERVICE)) this.#services.set(SYSLOG_RELAY_SERVICE, (stream) => this.syslog.serve(stream));
    for (const name of ['com.apple.mobile.notification_proxy', 'com.apple.mobile.insecure_notification_proxy']) {
      if (!this.#services.has(name)) {
        const log = this.#log.child({ svc: name });
        this.#services.set(name, (stream) => serveNotificationProxy(stream, this.notifications, log));
      }
    }
  }

  /** Trusted hosts (available after start()). */
  get pairing(): SimPairing {
    if (!this.#pairing) throw new Error('Lockdownd.start() has not completed');
    return this.#pairing;
  }

  /** Loads the trusted hosts and starts listening on port 62078. */
  async start(): Promise<void> {
    if (this.#started) return;
    const trust = typeof this.#opts.trust === 'string' ? parseTrustMode(this.#opts.trust) : this.#opts.trust;
    this.#pairing = await SimPairing.open({
      identity: this.identity,
      trust,
      stateDir: this.#opts.stateDir ?? this.identity.stateDir,
      onTrusted: () => this.notifications.post(NOTIFY_REQUEST_PAIR),
    });
    this.#started = true;
    this.#mux.listen(LOCKDOWN_PORT, (stream) => this.#accept(stream));
  }

  /** Stops listening, closes every lockdown connection and every unused service port. */
  stop(): void {
    if (!this.#started) return;
    this.#started = false;
    this.#mux.unlisten(LOCKDOWN_PORT);
    this.#pairing?.close();
    for (const c of this.#connections) c.close();
    this.#connections.clear();
    for (const [port, timer] of this.#servicePorts) {
      clearTimeout(timer);
      this.#mux.unlisten(port);
    }
    this.#servicePorts.clear();
  }

  #accept(stream: Duplex): void {
    const ctx: LockdowndContext = {
      identity: this.identity,
      values: this.values,
      pairing: this.pairing,
      services: this.#services,
      enableServiceSSL: this.#opts.enableServiceSSL ?? false,
      syslog: this.syslog,
      openServicePort: (name, handler, tls) => this.#openServicePort(name, handler, tls),
    };
    const log = this.#log.child({ conn: this.#nextConnection++ });
    const conn = new LockdowndConnection(stream, ctx, log);
    this.#connections.add(conn);
    stream.once('close', () => this.#connections.delete(conn));
  }

  /**
   * An ephemeral port that takes one connection and hands it to the service. It belongs to the
   * device, not to the lockdown connection that asked for it, because libimobiledevice and go-ios
   * close lockdown before they connect to the service (§3 "Service lifetime").
   */
  async #openServicePort(name: string, handler: ServiceHandler, tls?: { host: TrustedHost; key: KeyObject }): Promise<number> {
    const timeoutMs = this.#opts.serviceAcceptTimeoutMs ?? 30_000;
    const port = this.#mux.listenEphemeral((stream) => {
      const timer = this.#servicePorts.get(port);
      if (timer === undefined) {
        stream.destroy();
        return;
      }
      clearTimeout(timer);
      this.#servicePorts.delete(port);
      this.#mux.unlisten(port);
      this.#log.debug(`${name} connected on port ${port}${tls ? ' (TLS)' : ''}`);
      if (tls) this.#serveOverTls(name, stream, handler, tls);
      else handler(stream);
    });
    const timer = setTimeout(() => {
      this.#servicePorts.delete(port);
      this.#mux.unlisten(port);
      this.#log.debug(`${name} port ${port} closed: nobody connected within ${timeoutMs} ms`);
    }, timeoutMs);
    timer.unref();
    this.#servicePorts.set(port, timer);
    await this.#mux.served?.(port);
    return port;
  }

  /** EnableServiceSSL: a TLS server handshake first, then the service runs inside TLS (§5.5). */
  #serveOverTls(name: string, stream: Duplex, handler: ServiceHandler, tls: { host: TrustedHost; key: KeyObject }): void {
    const secure = new TLSSocket(stream, {
      isServer: true,
      secureContext: createSecureContext(deviceTlsOptions(tls.host.deviceCertificate, tls.key)),
      requestCert: true,
      rejectUnauthorized: false,
    });
    const onError = (err: Error): void => {
      this.#log.debug(`${name} TLS failed: ${err.message}`);
      secure.destroy();
      stream.destroy();
    };
    secure.once('error', onError);
    secure.once('secure', () => {
      secure.off('error', onError);
      // Later errors belong to the service; this listener only keeps one from being unhandled.
      secure.on('error', (err: Error) => this.#log.debug(`${name} TLS error: ${err.message}`));
      const refusal = acceptPeer(secure, this.pairing.hosts());
      if (refusal !== undefined) {
        onError(new Error(refusal));
        return;
      }
      handler(secure);
    });
  }
}
