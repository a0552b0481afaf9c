/**
 * The daemon put together: listening sockets (server.ts) → client sessions (client-session.ts) →
 * devices (device-registry.ts, one mux DeviceSession each) fed by device sources, with the pair
 * store (pair-store.ts) and preflight (preflight.ts). `muxwire daemon` is a thin command line
 * around this class; tests and embedders use it directly.
 */
import type { Socket } from 'node:net';
import { log } from '../log.js';
import type { DeviceLink, DeviceSource } from '../transport/device-link.js';
import { ClientSession } from './client-session.js';
import type { ClientContext, ClientStats } from './client-session.js';
import { DeviceRegistry } from './device-registry.js';
import type { DeviceEntry, PreflightHook } from './device-registry.js';
import { AccessPolicy } from './access-policy.js';
import { ClientMemoryBudget, resolveClientLimits } from './client-limits.js';
import { UidQuota } from './uid-quota.js';
import { peerCredentialReader } from '../accel/peer-credentials.js';
import type { PeerCredentialReader } from '../accel/peer-credentials.js';
import type { ClientLimits } from './client-limits.js';
import type { PairAccess } from './access-policy.js';
import { PairStore, DEFAULT_PAIR_DIR } from './pair-store.js';
import type { PairRecordSaved } from './pair-store.js';
import { createPreflight } from './preflight.js';
import { ClientServer, DEFAULT_SOCKET_MODE, DEFAULT_SOCKET_PATH } from './server.js';
import type { TcpAddress } from './server.js';

export interface MuxDaemonOptions {
  /** UNIX socket path (default /var/run/usbmuxd); null for no UNIX socket. */
  socketPath?: string | null;
  /** Mode of the UNIX socket (default 0o666, as usbmuxd). */
  socketMode?: number;
  /** TCP addresses to listen on as well. */
  listen?: TcpAddress[];
  /** Listening sockets inherited from a service manager (server.ts takeListenFds). */
  listenFds?: readonly number[];
  /** Pair-record directory (default /var/lib/lockdown). */
  pairDir?: string;
  /**
   * Runs once per device after the mux is up: `true` for the pairing preflight (preflight.ts), a
   * hook of your own, or nothing (default: devices are announced as soon as the mux is up).
   */
  preflight?: PreflightHook | boolean;
  /** Longest a device stays hidden while preflight runs (ms, default 3000). */
  hideMs?: number;
  /** Connect timeout for device connections (ms, default 5000). */
  connectTimeoutMs?: number;
  /** Who may read, save and delete pair records (default `any`, as usbmuxd; access-policy.ts). */
  pairAccess?: PairAccess;
  /** TCP clients must authenticate with this token (the `--tcp-token` file's text). */
  tcpToken?: Buffer;
  /** The access policy itself, for tests and embedders (pairAccess and tcpToken are then unused). */
  policy?: AccessPolicy;
  /** Client memory and time limits over the defaults and the environment (client-limits.ts). */
  limits?: Partial<ClientLimits>;
  /** Who a UNIX client is, for the per-user connection cap. Default: the policy's reader, else the addon's; none without the addon. */
  peerReader?: PeerCredentialReader;
}

/** Counts for tests and diagnostics. */
export interface MuxDaemonStats {
  clients: number;
  devices: number;
  connections: number;
  rxQueued: number;
  readableBuffered: number;
  txPending: number;
}

export class MuxDaemon {
  readonly registry: DeviceRegistry;
  /** Who may do what (access-policy.ts). */
  readonly policy: AccessPolicy;
  /** The client limits in force. */
  readonly limits: ClientLimits;
  /** What all clients together hold (client-limits.ts). */
  readonly budget: ClientMemoryBudget;
  readonly pairStore: PairStore;
  #server: ClientServer;
  #clients = new Set<ClientSession>();
  #nextClientId = 1;
  readonly #uidReader: PeerCredentialReader | undefined;
  readonly #uidQuota: UidQuota;
  /** The uid each counted client was admitted under. */
  readonly #clientUid = new Map<ClientSession, number>();
  #sources: Array<{ source: DeviceSource; onAttach: (l: DeviceLink) => void; onDetach: (l: DeviceLink) => void }> = [];
  #context: ClientContext;
  #closed = false;
  #startupWarning: string | undefined;

  /**
   * Throws MuxwireError MUXWIRE_ERR_NATIVE_UNAVAILABLE for a restrictive `pairAccess` where peer
   * credentials cannot be read, MUXWIRE_ERR_BAD_ARGUMENT for a TCP address off loopback without a
   * token (access-policy.ts).
   */
  constructor(opts: MuxDaemonOptions = {}) {
    const policy = opts.policy ?? new AccessPolicy({ pairAccess: opts.pairAccess, tcpToken: opts.tcpToken, listen: opts.listen });
    this.policy = policy;
    this.limits = resolveClientLimits(opts.limits);
    this.budget = new ClientMemoryBudget(this.limits.memoryBudget);
    this.pairStore = new PairStore(opts.pairDir ?? DEFAULT_PAIR_DIR);
    const preflight = opts.preflight === true ? createPreflight(() => this) : opts.preflight === false ? undefined : opts.preflight;
    this.registry = new DeviceRegistry({ preflight, hideMs: opts.hideMs, connectTimeoutMs: opts.connectTimeoutMs });
    const clients = this.#clients;
    this.#context = {
      registry: this.registry,
      pairStore: this.pairStore,
      policy,
      limits: this.limits,
      budget: this.budget,
      clients,
      connectTimeoutMs: opts.connectTimeoutMs,
      onClosed: (client) => {
        clients.delete(client);
        const uid = this.#clientUid.get(client);
        if (uid === undefined) return;
        this.#clientUid.delete(client);
        this.#uidQuota.release(uid);
      },
    };
    this.#uidReader = opts.peerReader ?? policy.peerReader ?? addonPeerReader();
    this.#uidQuota = new UidQuota(this.limits.perUidMax, [0, process.getuid?.() ?? 0]);
    // A record saved with a DeviceID (by a client or by preflight) announces Paired (§4.4).
    this.pairStore.on('saved', (e: PairRecordSaved) => this.registry.notePaired(e.udid, e.deviceId));
    this.registry.on('attached', (entry: DeviceEntry) => {
      for (const c of clients) c.deviceAttached(entry);
    });
    this.registry.on('detached', (entry: DeviceEntry) => {
      for (const c of clients) c.deviceDetached(entry);
    });
    this.registry.on('paired', (entry: DeviceEntry) => {
      for (const c of clients) c.devicePaired(entry);
    });
    const socketPath = opts.socketPath === null ? undefined : (opts.socketPath ?? DEFAULT_SOCKET_PATH);
    this.#startupWarning = policy.startupWarning(socketPath === undefined ? undefined : (opts.socketMode ?? DEFAULT_SOCKET_MODE), (opts.listen ?? []).length > 0);
    this.#server = new ClientServer({
      socketPath,
      socketMode: opts.socketMode,
      tcp: opts.listen,
      listenFds: opts.listenFds,
      onClient: (socket, transport) => this.#accept(socket, transport),
    });
  }

  /** Addresses being served once started. */
  get addresses(): readonly string[] {
    return this.#server.addresses;
  }

  /** Starts listening. Device sources added before or after are started by addSource. */
  async start(): Promise<void> {
    // Before any client can ask for a record: modes right, no key copies from a crashed save.
    await this.pairStore.prepare();
    await this.#server.start();
    if (this.#startupWarning !== undefined) log.warn(this.#startupWarning);
  }

  /** Takes devices from `source` (attach/detach events) and starts it. */
  async addSource(source: DeviceSource): Promise<void> {
    const onAttach = (link: DeviceLink): void => {
      this.addLink(link);
    };
    const onDetach = (link: DeviceLink): void => this.registry.detach(link);
    source.on('attach', onAttach);
    source.on('detach', onDetach);
    this.#sources.push({ source, onAttach, onDetach });
    await source.start();
  }

  /** Adds one device link directly (in-process simulated devices, tests). */
  addLink(link: DeviceLink): DeviceEntry | undefined {
    if (this.#closed) {
      link.close();
      return undefined;
    }
    return this.registry.attach(link);
  }

  /** Totals over clients, devices and connections (buffered bytes included). */
  stats(): MuxDaemonStats {
    const s: MuxDaemonStats = { clients: this.#clients.size, devices: this.registry.size, connections: 0, rxQueued: 0, readableBuffered: 0, txPending: 0 };
    for (const d of this.registry.all()) {
      const ds = d.session.stats();
      s.connections += ds.connections;
      s.rxQueued += ds.rxQueued;
      s.readableBuffered += ds.readableBuffered;
      s.txPending += ds.txPending;
    }
    return s;
  }

  /** Per-client buffers and flow state (diagnostics, tests). */
  clientStats(): ClientStats[] {
    return [...this.#clients].map((c) => c.stats());
  }

  /**
   * Shuts down: stops accepting and the sources, resets every device connection, closes every
   * client and removes the socket file.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const serverClosed = this.#server.close();
    for (const { source, onAttach, onDetach } of this.#sources) {
      source.off('attach', onAttach);
      source.off('detach', onDetach);
    }
    await this.registry.close();
    for (const c of [...this.#clients]) c.fail();
    await serverClosed;
    await Promise.all(this.#sources.map(({ source }) => source.stop().catch((err: unknown) => log.debug(`source stop: ${String(err)}`))));
    this.#sources = [];
  }

  #accept(socket: Socket, transport: 'unix' | 'tcp'): void {
    if (this.#closed) {
      socket.destroy();
      return;
    }
    // One user may not take every descriptor (uid-quota.ts); TCP clients have no uid.
    const credentials = transport === 'unix' ? this.#uidReader?.read(socket) : undefined;
    const uid = credentials?.uid;
    if (uid !== undefined && !this.#uidQuota.admit(uid, log)) {
      socket.destroy();
      return;
    }
    const id = this.#nextClientId++;
    // usbmuxd sets 128 KiB socket buffers; Node's defaults are close enough and not settable here.
    if (transport === 'tcp') socket.setNoDelay(true);
    // The credentials read once here also serve the access policy (ClientSession.credentials).
    const client = new ClientSession(socket, id, this.#context, log, transport, credentials);
    this.#clients.add(client);
    if (uid !== undefined) this.#clientUid.set(client, uid);
    if (log.enabled('debug')) client.log.debug(`accepted (${transport})`);
  }
}

/** The addon's SO_PEERCRED reader, or undefined where there is none (no per-user cap then). */
function addonPeerReader(): PeerCredentialReader | undefined {
  const support = peerCredentialReader();
  return support.ok ? support.reader : undefined;
}
