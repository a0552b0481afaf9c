/**
 * Network (Wi-Fi) devices as a DeviceSource: found by browsing DNS-SD for `_apple-mobdev2._tcp`
 * (mobdev2.ts) and/or given by address, identified through the caller (the daemon maps the
 * instance's Wi-Fi MAC to a pair record, as usbmuxd2 and netmuxd do), attached as NetworkLinks, and
 * detached when they say goodbye over mDNS or stop answering.
 *
 * ```
 *  mDNS PTR/SRV/A ─┐                      reachable (TCP 62078)   identify → UDID     attach
 *  --network-device ┴─> candidate ──probe──────────────────────────────────────────> NetworkLink
 *                                    every PROBE_INTERVAL_MS while attached: TCP connect to 62078;
 *                                    PROBE_FAILURES in a row, or an mDNS goodbye ──> detach
 * ```
 *
 * Liveness, and its bound: a probe starts every 5 s and gives up after 3 s; two failed probes in a
 * row detach the device, so one that stops answering is gone within 13 s (two intervals plus one
 * timeout), at once on an mDNS goodbye. usbmuxd2 and netmuxd use lockdown's heartbeat service
 * instead; a TCP connect needs no pairing and no session on the device.
 */
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect as netConnect, isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import makeMdns from 'multicast-dns';
import type { MulticastDNS, ResponsePacket } from 'multicast-dns';
import type { Answer } from 'dns-packet';
import { log as rootLog } from '../log.js';
import type { Logger } from '../log.js';
import type { DeviceSource } from './device-link.js';
import { encodeNetworkAddress, ipv6Bytes } from '../protocol/network-address.js';
import { NetworkLink } from './network-link.js';
import { MOBDEV2_SERVICE, macFromInstance, mdnsReady, mobdev2FullName, mobdev2Instance } from './mobdev2.js';
import { MuxwireError } from '../errors.js';

/** lockdownd's TCP port on a network device. */
export const NETWORK_LOCKDOWN_PORT = 62078;
/** Time between liveness probes of an attached device (ms). */
export const PROBE_INTERVAL_MS = 5000;
/** How long one probe waits for the TCP connect (ms). */
export const PROBE_TIMEOUT_MS = 3000;
/** Failed probes in a row that detach a device. */
export const PROBE_FAILURES = 2;
/** How often the browser asks again for `_apple-mobdev2._tcp` (ms). */
const BROWSE_INTERVAL_MS = 10_000;
/** Most devices tracked at once: an mDNS flood on the LAN cannot grow memory without bound. */
const MAX_CANDIDATES = 256;

/** A device found on the network, before it is identified. */
export interface NetworkCandidate {
  host: string;
  family: 4 | 6;
  /** `EscapedFullServiceName` (built from the identity for devices given by address). */
  serviceName: string;
  interfaceIndex: number;
  /** The Wi-Fi MAC from the instance name (mDNS only). */
  mac?: string;
}

/** Who the candidate is; undefined keeps it off the list (no pair record, not a device). */
export type NetworkIdentifier = (candidate: NetworkCandidate) => Promise<{ udid: string; mac?: string } | undefined>;

export interface NetworkSourceOptions {
  /** Browse mDNS for `_apple-mobdev2._tcp` (default true). */
  mdns?: boolean;
  /** Devices by IP address (`--network-device`), probed and attached without mDNS. */
  hosts?: string[];
  identify: NetworkIdentifier;
  probeIntervalMs?: number;
  probeTimeoutMs?: number;
  probeFailures?: number;
  log?: Logger;
}

interface Tracked {
  key: string;
  candidate: NetworkCandidate;
  /** Given by address: probed until reachable even while detached. */
  static: boolean;
  link: NetworkLink | undefined;
  failures: number;
  busy: boolean;
}

/** Attaches network devices. Events: 'attach' (NetworkLink), 'detach' (NetworkLink). */
export class NetworkSource extends EventEmitter implements DeviceSource {
  readonly #opts: NetworkSourceOptions;
  readonly #log: Logger;
  readonly #tracked = new Map<string, Tracked>();
  /** mDNS cache: instance → SRV target, host name → addresses. */
  readonly #srv = new Map<string, string>();
  readonly #addresses = new Map<string, string[]>();
  #mdns: MulticastDNS | undefined;
  #timers: NodeJS.Timeout[] = [];
  #running = false;

  constructor(opts: NetworkSourceOptions) {
    super();
    this.#opts = opts;
    this.#log = opts.log ?? rootLog.child({ src: 'network' });
    for (const host of opts.hosts ?? []) {
      const family = isIP(host);
      if (family === 0) throw new MuxwireError('MUXWIRE_ERR_BAD_ADDRESS', `a network device is given by IP address, not '${host}'`);
    }
  }

  /** Attached network links (tests, diagnostics). */
  links(): NetworkLink[] {
    return [...this.#tracked.values()].flatMap((t) => (t.link ? [t.link] : []));
  }

  async start(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    for (const host of this.#opts.hosts ?? []) {
      const family = isIP(host) as 4 | 6;
      this.#track(`host:${host}`, { host, family, serviceName: '', interfaceIndex: interfaceIndexOf(host) }, true);
    }
    const interval = this.#opts.probeIntervalMs ?? PROBE_INTERVAL_MS;
    this.#timers.push(setInterval(() => this.#probeAll(), interval));
    if (this.#opts.mdns !== false) {
      await this.#browse();
      this.#timers.push(setInterval(() => this.#query(), BROWSE_INTERVAL_MS));
    }
    for (const t of this.#timers) t.unref();
    this.#probeAll();
  }

  /**
   * Tries again, now, every device found but not attached (the daemon calls it when a pair record
   * is saved: a device paired over USB is then listed on the network at once, not at the next
   * browse).
   */
  retry(): void {
    if (!this.#running) return;
    for (const t of this.#tracked.values()) if (t.link === undefined) void this.#tryAttach(t);
  }

  async stop(): Promise<void> {
    if (!this.#running) return;
    this.#running = false;
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    const mdns = this.#mdns;
    this.#mdns = undefined;
    mdns?.destroy();
    for (const t of this.#tracked.values()) this.#detach(t, 'source stopped');
    this.#tracked.clear();
  }

  // ---- discovery -----------------------------------------------------------------------------

  async #browse(): Promise<void> {
    const mdns = makeMdns({ bind: '0.0.0.0', loopback: true, reuseAddr: true });
    this.#mdns = mdns;
    mdns.on('warning', (err: Error) => this.#log.debug(`mDNS: ${err.message}`));
    mdns.on('response', (packet: ResponsePacket) => this.#onResponse(packet));
    await mdnsReady(mdns);
    mdns.on('error', (err: Error) => this.#log.warn(`mDNS: ${err.message}`));
    this.#query();
  }

  #query(): void {
    this.#mdns?.query({ questions: [{ name: MOBDEV2_SERVICE, type: 'PTR' }] });
  }

  #onResponse(packet: ResponsePacket): void {
    const records: Answer[] = [...packet.answers, ...(packet.additionals ?? [])];
    for (const r of records) {
      if (r.type === 'SRV') this.#srv.set(r.name.toLowerCase(), r.data.target.toLowerCase());
      else if (r.type === 'A' || r.type === 'AAAA') {
        const name = r.name.toLowerCase();
        const list = this.#addresses.get(name) ?? [];
        if (!list.includes(r.data)) list.push(r.data);
        this.#addresses.set(name, list.slice(-4));
      }
    }
    // Oldest first out: the caches stay bounded whatever the LAN sends.
    while (this.#srv.size > MAX_CANDIDATES) this.#srv.delete(this.#srv.keys().next().value!);
    while (this.#addresses.size > MAX_CANDIDATES) this.#addresses.delete(this.#addresses.keys().next().value!);
    for (const r of records) {
      if (r.type !== 'PTR' || r.name.toLowerCase() !== MOBDEV2_SERVICE) continue;
      const instance = r.data;
      const key = `mdns:${instance.toLowerCase()}`;
      if (r.ttl === 0) {
        // A goodbye (RFC 6762 §10.1): the device left the network.
        const t = this.#tracked.get(key);
        if (t !== undefined) {
          this.#detach(t, 'mDNS goodbye');
          this.#tracked.delete(key);
        }
        continue;
      }
      const target = this.#srv.get(instance.toLowerCase());
      const addresses = target === undefined ? undefined : this.#addresses.get(target);
      if (addresses === undefined || addresses.length === 0) {
        // Not resolved yet: ask for the SRV and the host's addresses (answered together).
        this.#mdns?.query({ questions: [{ name: instance, type: 'SRV' }, ...(target ? [{ name: target, type: 'A' as const }] : [])] });
        continue;
      }
      // IPv4 first, as netmuxd; a device with several addresses is reached on the first.
      const host = addresses.find((a) => isIP(a) === 4) ?? addresses[0]!;
      const candidate: NetworkCandidate = {
        host,
        family: isIP(host) as 4 | 6,
        serviceName: instance,
        interfaceIndex: interfaceIndexOf(host),
        ...(macFromInstance(instance) !== undefined ? { mac: macFromInstance(instance)! } : {}),
      };
      const known = this.#tracked.get(key);
      if (known !== undefined && known.candidate.host !== host) {
        this.#detach(known, `moved to ${host}`);
        this.#tracked.delete(key);
      }
      this.#track(key, candidate, false);
    }
  }

  #track(key: string, candidate: NetworkCandidate, isStatic: boolean): void {
    let t = this.#tracked.get(key);
    if (t === undefined) {
      if (this.#tracked.size >= MAX_CANDIDATES) {
        this.#log.warn(`not tracking ${candidate.serviceName || candidate.host}: ${MAX_CANDIDATES} network devices already`);
        return;
      }
      t = { key, candidate, static: isStatic, link: undefined, failures: 0, busy: false };
      this.#tracked.set(key, t);
    }
    if (t.link === undefined) void this.#tryAttach(t);
  }

  // ---- attach, probe, detach -----------------------------------------------------------------

  async #tryAttach(t: Tracked): Promise<void> {
    if (t.busy || t.link !== undefined || !this.#running) return;
    t.busy = true;
    try {
      if (!(await this.#reachable(t.candidate.host))) return;
      const who = await this.#opts.identify(t.candidate);
      if (who === undefined || !this.#running || this.#tracked.get(t.key) !== t) return;
      const c = t.candidate;
      const mac = who.mac ?? c.mac;
      const serviceName = c.serviceName || (mac !== undefined ? mobdev2FullName(mobdev2Instance(mac)) : `${who.udid}@${c.host}.${MOBDEV2_SERVICE}`);
      const scopeId = c.family === 6 && isLinkLocal(c.host) ? c.interfaceIndex : 0;
      const link = new NetworkLink({
        host: c.host,
        info: {
          serialNumber: who.udid,
          productId: 0,
          locationId: 0,
          speed: 0,
          network: { networkAddress: encodeNetworkAddress({ address: c.host, family: c.family, scopeId }), serviceName, interfaceIndex: c.interfaceIndex },
        },
        log: this.#log.child({ udid: who.udid }),
      });
      t.link = link;
      t.failures = 0;
      this.#log.info(`network device ${who.udid} at ${c.host} (${serviceName})`);
      this.emit('attach', link);
    } catch (err) {
      this.#log.info(`network device at ${t.candidate.host} not attached: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      t.busy = false;
    }
  }

  #probeAll(): void {
    for (const t of this.#tracked.values()) {
      if (t.link === undefined) {
        if (t.static) void this.#tryAttach(t);
        continue;
      }
      if (t.busy) continue;
      t.busy = true;
      void this.#reachable(t.candidate.host).then((ok) => {
        t.busy = false;
        if (t.link === undefined) return;
        t.failures = ok ? 0 : t.failures + 1;
        if (t.failures >= (this.#opts.probeFailures ?? PROBE_FAILURES)) this.#detach(t, `no answer from ${t.candidate.host}:${NETWORK_LOCKDOWN_PORT}`);
      });
    }
  }

  #detach(t: Tracked, why: string): void {
    const link = t.link;
    if (link === undefined) return;
    t.link = undefined;
    t.failures = 0;
    this.#log.info(`network device ${link.info.serialNumber} gone: ${why}`);
    this.emit('detach', link);
    link.close();
  }

  /** True when lockdownd's port accepts a TCP connection within the probe timeout. */
  #reachable(host: string): Promise<boolean> {
    return new Promise((resolve) => {
      const socket = netConnect({ host, port: NETWORK_LOCKDOWN_PORT });
      const done = (ok: boolean): void => {
        socket.destroy();
        resolve(ok);
      };
      socket.setTimeout(this.#opts.probeTimeoutMs ?? PROBE_TIMEOUT_MS, () => done(false));
      socket.once('connect', () => done(true));
      socket.once('error', () => done(false));
    });
  }
}

function isLinkLocal(address: string): boolean {
  return (ipv6Bytes(address).readUInt16BE(0) & 0xffc0) === 0xfe80;
}

/**
 * The index of the interface `address` is reached on (Linux: /sys/class/net/NAME/ifindex of the
 * interface whose subnet holds it), or 0 when none is known.
 */
export function interfaceIndexOf(address: string): number {
  const family = isIP(address);
  for (const [name, addrs] of Object.entries(networkInterfaces())) {
    for (const a of addrs ?? []) {
      if ((a.family === 'IPv4' ? 4 : 6) !== family) continue;
      if (!sameSubnet(address, a.address, a.netmask, family)) continue;
      try {
        return Number(readFileSync(`/sys/class/net/${name}/ifindex`, 'utf8').trim()) || 0;
      } catch {
        return 0;
      }
    }
  }
  return 0;
}

function sameSubnet(a: string, b: string, mask: string, family: number): boolean {
  const bytes = (s: string): Buffer => (family === 4 ? Buffer.from(s.split('.').map(Number)) : ipv6Bytes(s));
  const x = bytes(a);
  const y = bytes(b);
  const m = bytes(mask);
  for (let i = 0; i < x.length; i++) if ((x[i]! & m[i]!) !== (y[i]! & m[i]!)) return false;
  return true;
}
