/**
 * The simulated device on the network (`muxwire sim --network ADDR`), as an iPhone on Wi-Fi:
 * lockdownd on TCP 62078 at ADDR and every service StartService opens on its own TCP port there,
 * served by the same lockdownd, pairing, TLS and services as the USB side (device-ports.ts), and a
 * DNS-SD advertisement of `_apple-mobdev2._tcp` with the instance `<Wi-Fi MAC>@<link-local>`.
 *
 * ```
 *  DevicePorts ──portOpened(p)──> net.Server on ADDR:p ──accept──> the port's handler (lockdownd, AFC…)
 *  mDNS on ADDR's interface: answers PTR/SRV/TXT/A queries, announces on start, says goodbye
 *  (TTL 0) on stop, so a browsing daemon drops the device at once rather than at its probe.
 * ```
 *
 * Multicast goes out only on the interface of ADDR (an IPv4 address; with an IPv6 ADDR the device
 * is served but not advertised), so a test that puts ADDR in a network namespace of its own keeps
 * every packet there.
 */
import { createServer, isIP } from 'node:net';
import type { Server, Socket } from 'node:net';
import makeMdns from 'multicast-dns';
import type { MulticastDNS, QueryPacket } from 'multicast-dns';
import type { Answer } from 'dns-packet';
import { MuxwireError } from '../errors.js';
import { log as rootLog } from '../log.js';
import type { Logger } from '../log.js';
import { MOBDEV2_SERVICE, mdnsReady, mobdev2FullName, mobdev2Instance } from '../transport/mobdev2.js';
import type { ConnectionHandler } from './device-mux.js';
import type { DevicePorts, PortObserver } from './device-ports.js';
import { LOCKDOWN_PORT } from './lockdownd.js';

/** TTL of the advertised records (s): RFC 6762's 120 s for host records, 4500 s for the rest. */
const HOST_TTL = 120;
const SERVICE_TTL = 4500;

/** Options of a {@link SimNetworkSide}. */
export interface SimNetworkOptions {
  /** The device's IP address; TCP listeners bind it. */
  address: string;
  /** The device's Wi-Fi MAC (the instance name and what pair records call WiFiMACAddress). */
  wifiMac: string;
  /** The name the SRV record points at (default `muxwire-<udid-tail>`). */
  hostName: string;
  /** Advertise over mDNS (default true; an IPv6 address is never advertised). */
  advertise?: boolean;
  log?: Logger;
}

export class SimNetworkSide implements PortObserver {
  readonly address: string;
  /** `EscapedFullServiceName` as a daemon will list it. */
  readonly serviceName: string;
  readonly #ports: DevicePorts;
  readonly #opts: SimNetworkOptions;
  readonly #log: Logger;
  readonly #servers = new Map<number, Server>();
  readonly #sockets = new Set<Socket>();
  #mdns: MulticastDNS | undefined;
  #running = false;

  constructor(ports: DevicePorts, opts: SimNetworkOptions) {
    if (isIP(opts.address) === 0) throw new MuxwireError('MUXWIRE_ERR_BAD_ADDRESS', `--network wants an IP address, not '${opts.address}'`);
    this.#ports = ports;
    this.#opts = opts;
    this.address = opts.address;
    this.serviceName = mobdev2FullName(mobdev2Instance(opts.wifiMac));
    this.#log = opts.log ?? rootLog.child({ net: opts.address });
  }

  get running(): boolean {
    return this.#running;
  }

  /** Listens on every open device port (lockdownd first), then advertises. */
  async start(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    this.#ports.observe(this);
    const lockdown = this.#servers.get(LOCKDOWN_PORT);
    if (lockdown === undefined) {
      await this.stop();
      throw new MuxwireError('MUXWIRE_ERR_LISTEN', 'lockdownd is not listening');
    }
    try {
      await listening(lockdown);
    } catch (err) {
      await this.stop();
      throw new MuxwireError('MUXWIRE_ERR_LISTEN', `cannot listen on ${this.address}:${LOCKDOWN_PORT}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
    if (this.#opts.advertise !== false && isIP(this.address) === 4) await this.#advertise();
  }

  /** Says goodbye over mDNS, closes every listener and every connection (the Wi-Fi goes away). */
  async stop(): Promise<void> {
    if (!this.#running) return;
    this.#running = false;
    this.#ports.unobserve(this);
    const mdns = this.#mdns;
    this.#mdns = undefined;
    if (mdns !== undefined) {
      await new Promise<void>((resolve) => mdns.respond({ answers: this.#records(0) }, () => resolve()));
      mdns.destroy();
    }
    const closing = [...this.#servers.values()].map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    this.#servers.clear();
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
    await Promise.all(closing);
  }

  /** Settles once the port's listener is bound, or has failed to be (logged; the USB side still serves it). */
  portOpened(port: number, handler: ConnectionHandler): Promise<void> {
    const server = createServer({ noDelay: true }, (socket) => {
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
      socket.on('error', (err) => this.#log.debug(`port ${port}: ${err.message}`));
      handler(socket);
    });
    server.on('error', (err: NodeJS.ErrnoException) => this.#log.warn(`cannot serve port ${port} on ${this.address}: ${err.code ?? err.message}`));
    // The bind happens a tick later (listen looks the host up first), hence the promise.
    server.listen({ host: this.address, port, exclusive: true });
    this.#servers.set(port, server);
    return listening(server).catch(() => undefined);
  }

  portClosed(port: number): void {
    const server = this.#servers.get(port);
    if (server === undefined) return;
    this.#servers.delete(port);
    server.close();
  }

  async #advertise(): Promise<void> {
    const mdns = makeMdns({ interface: this.address, bind: '0.0.0.0', loopback: true, reuseAddr: true });
    this.#mdns = mdns;
    mdns.on('warning', (err: Error) => this.#log.debug(`mDNS: ${err.message}`));
    mdns.on('query', (query: QueryPacket) => this.#answer(mdns, query));
    try {
      await mdnsReady(mdns);
    } catch (err) {
      this.#mdns = undefined;
      await this.stop();
      throw err;
    }
    mdns.on('error', (err: Error) => this.#log.warn(`mDNS: ${err.message}`));
    // Announce (RFC 6762 §8.3): twice, a second apart; later answers come from queries.
    mdns.respond({ answers: this.#records(1) });
    const again = setTimeout(() => {
      if (this.#mdns === mdns) mdns.respond({ answers: this.#records(1) });
    }, 1000);
    again.unref();
    this.#log.info(`advertising ${this.serviceName} at ${this.address}`);
  }

  #answer(mdns: MulticastDNS, query: QueryPacket): void {
    const records = this.#records(1);
    const wanted = records.filter((r) => query.questions.some((q) => q.name.toLowerCase() === r.name.toLowerCase() && (q.type === r.type || (q.type as string) === 'ANY')));
    if (wanted.length === 0) return;
    const additionals = records.filter((r) => !wanted.includes(r));
    mdns.respond({ answers: wanted, additionals });
  }

  /** PTR, SRV, TXT and A records; `live` 0 gives the goodbye (TTL 0) versions. */
  #records(live: 0 | 1): Answer[] {
    const host = `${this.#opts.hostName}.local`;
    return [
      { name: MOBDEV2_SERVICE, type: 'PTR', ttl: live * SERVICE_TTL, data: this.serviceName },
      { name: this.serviceName, type: 'SRV', ttl: live * HOST_TTL, flush: true, data: { port: LOCKDOWN_PORT, target: host, priority: 0, weight: 0 } },
      { name: this.serviceName, type: 'TXT', ttl: live * SERVICE_TTL, flush: true, data: [] },
      { name: host, type: 'A', ttl: live * HOST_TTL, flush: true, data: this.address },
    ];
  }
}

/** Settles when `server` is bound; rejects on a listen error, or when it is closed first. */
function listening(server: Server): Promise<void> {
  if (server.listening) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const settle = (err?: Error): void => {
      server.off('listening', onListening);
      server.off('error', onError);
      server.off('close', onClose);
      if (err === undefined) resolve();
      else reject(err);
    };
    const onListening = (): void => settle();
    const onError = (err: Error): void => settle(err);
    const onClose = (): void => settle(new Error('closed before it was listening'));
    server.once('error', onError);
    server.once('close', onClose);
    server.once('listening', onListening);
  });
}
