/**
 * One client of the daemon: a socket speaking the usbmuxd client protocol (usbmux.md §4), binary
 * (v0) or plist (v1), until it becomes an event stream (Listen) or a raw tunnel (Connect).
 *
 * ```
 *  command ──Listen────────────────────> listening   (events until the client goes)
 *  command ──Connect───────────────────> connecting  (socket paused; bytes behind the Connect kept)
 *  connecting ──device accepts─────────> connected   (Result 0, kept bytes forwarded, raw tunnel)
 *  connecting ──refused/timeout/gone───> command     (Result 3 / 3 / 2; more requests may follow)
 *  command ──any other request─────────> command     (any number of requests per socket)
 *  any ──EOF, error, impossible length─> closed      (fail(): one path releases everything)
 * ```
 *
 * Reply format (§4.6): binary until the client sends any PLIST message, plist for good after.
 *
 * Differences from usbmuxd, on purpose: every request gets a reply (a malformed plist or a
 * missing MessageType gets Result 1, where usbmuxd is silent, §6.8); bytes a client sends right
 * behind its Connect are kept and forwarded once connected (usbmuxd parses them as a command and
 * drops the client, §6.7); a request on a listening socket gets Result 1 and the events go on.
 */
import type { Socket } from 'node:net';
import { MuxwireError, isMuxwireError } from '../errors.js';
import type { Logger } from '../log.js';
import { ClientMessageDecoder, ClientMessageType, ResultCode, encodeClientMessage, encodePlistResult } from '../protocol/client-message.js';
import type { ClientMessage } from '../protocol/client-message.js';
import { CLIENT_VERSION_PLIST } from '../protocol/client-header.js';
import {
  attachedEvent,
  buidReply,
  decodePortNumber,
  detachedEvent,
  deviceListReply,
  listenersReply,
  listenersReplyBytesAtMost,
  pairRecordReply,
  pairedEvent,
} from '../protocol/client-plist.js';
import type { ListenerInfo } from '../protocol/client-plist.js';
import type { PlistDict, PlistValue } from '../protocol/plist.js';
import type { MuxConnection, MuxConnectionStats } from '../mux/mux-connection.js';
import type { DeviceEntry, DeviceRegistry } from './device-registry.js';
import type { AccessPolicy, ClientAction, ClientPeer } from './access-policy.js';
import type { BudgetHolder, ClientLimits, ClientMemoryBudget } from './client-limits.js';
import { clientString } from './client-limits.js';
import type { PeerCredentials } from '../accel/peer-credentials.js';
import { BULK_READ, RingReader, stopReading, type RingReaderStats } from '../accel/client-reader.js';
import { EINVAL, errnoOf, validatePairRecordId } from './pair-store.js';
import type { PairStore } from './pair-store.js';

/** Client states (see the drawing above). */
export type ClientState = 'command' | 'listening' | 'connecting' | 'connected' | 'closed';

/** What a client session needs from the daemon. */
export interface ClientContext {
  registry: DeviceRegistry;
  pairStore: PairStore;
  /** Who may do what (access-policy.ts). */
  policy: AccessPolicy;
  /** Per-client memory and time limits (client-limits.ts). */
  limits: ClientLimits;
  /** The memory budget of all clients together. */
  budget: ClientMemoryBudget;
  /** Every live client, for ListListeners. */
  clients: ReadonlySet<ClientSession>;
  /** Connect timeout (ms) for device connections. */
  connectTimeoutMs?: number;
  /** Called once when the client is gone. */
  onClosed(client: ClientSession): void;
}

/** One client's buffers and flow state (ClientSession.stats). */
export interface ClientStats {
  id: number;
  state: ClientState;
  /** Bytes queued on the client socket, not yet taken by the kernel. */
  socketWritable: number;
  /** True while the daemon does not read the client (backpressure from the device side). */
  socketReadPaused: boolean;
  /** True while its requests are not read because its replies are over the soft cap. */
  pausedForReplies: boolean;
  /** Bytes it holds toward the daemon's client budget (client-limits.ts). */
  held: number;
  /** While tunnelling through a RingReader (src/accel/client-reader.ts): what it has read. */
  reader: RingReaderStats | undefined;
  connection: (MuxConnectionStats & { readPaused: boolean; writableNeedDrain: boolean }) | undefined;
}

/** Most event bytes a listening client may leave unread before it is dropped. */
const MAX_EVENT_BACKLOG = 1024 * 1024;
/** A closing tunnel that makes no progress delivering to its client for this long is cut (§3.9). */
const FLUSH_STALL_MS = 1000;
/**
 * Most requests of one client answered in one turn of the event loop; the rest wait for the next
 * turn, so a client that pipelines thousands of requests cannot hold every other client up for
 * the time it takes to answer them all.
 */
const REQUESTS_PER_TURN = 64;
/** Device data a client's socket may hold unwritten before its connection stops reading. */
const RELAY_HIGH_WATER = 256 * 1024;

export class ClientSession implements ClientPeer, BudgetHolder {
  /** The client number (log context, ListListeners "ID String"). */
  readonly id: number;
  readonly socket: Socket;
  /** Which listener accepted it. */
  readonly transport: 'unix' | 'tcp';

  /** The logger the client's own is a child of, and that child once a line needs it. */
  #parentLog: Logger;
  #log: Logger | undefined;
  #ctx: ClientContext;
  #state: ClientState = 'command';
  #protoVersion: 0 | 1 = 0;
  /** Requests: integer fields are range-checked as they are decoded ('bad-request'). */
  #decoder = new ClientMessageDecoder({ requests: true });
  #progName: string | undefined;
  #bundleId: string | undefined;
  #clientVersion: string | undefined;
  #libUSBMuxVersion: number | undefined;
  #conn: MuxConnection | undefined;
  /** While tunnelling with the addon: the client's reader into reused memory (src/accel/client-reader.ts). */
  #reader: RingReader | undefined;
  /** A tunnel that may still get a RingReader: at its first bulk read of the client (#receive). */
  #readerWanted = false;
  /** Client bytes handed to the tunnel's connection (a reader made later counts the untaken ones). */
  #tunnelWritten = 0;
  /** The client's EOF has been acted on (it can come from the socket and from the reader). */
  #clientEof = false;
  #device: DeviceEntry | undefined;
  #flushTimer: NodeJS.Timeout | undefined;
  #flushMark = -1;
  #flushProgressAt = 0;
  #onData = (chunk: Buffer): void => this.#receive(chunk);
  /** undefined: not read yet; null: read and not available. */
  #credentials: PeerCredentials | null | undefined;
  #authenticated = false;
  /** A refusal that closes the client is on its way out: no more requests are read. */
  #closing = false;
  #refusalLogged = false;
  /** Bytes this client holds as last reported to the budget (client-limits.ts). */
  #held = 0;
  /** Requests are not read while the replies queued are over the soft cap. */
  #replyPaused = false;
  /** Runs while a request is arriving (its first bytes in, the rest not). */
  #requestTimer: NodeJS.Timeout | undefined;
  /**
   * After each reply is taken by the kernel: what the client holds now, and reading again once
   * half the soft cap is left ('drain' is no signal: it only follows a write that returned false,
   * which a soft cap below the socket's own high-water mark never sees).
   */
  /** Requests are waiting for the next turn (REQUESTS_PER_TURN); reading is paused meanwhile. */
  #yielded = false;
  #onFlushed = (): void => {
    this.#account();
    if (this.#replyPaused && this.socket.writableLength <= this.#ctx.limits.replyHighWater / 2) this.#repliesDrained();
  };

  /** `log`: the daemon's logger; the client's lines carry `client=N` on top of its context. */
  /** `credentials`: the peer's, when the daemon has read them already (uid-quota.ts). */
  constructor(socket: Socket, id: number, ctx: ClientContext, log: Logger, transport: 'unix' | 'tcp' = 'unix', credentials?: PeerCredentials) {
    this.socket = socket;
    this.#credentials = credentials;
    this.id = id;
    this.transport = transport;
    this.#ctx = ctx;
    this.#parentLog = log;
    socket.on('data', this.#onData);
    socket.on('end', () => this.#onEnd());
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail());
  }

  get state(): ClientState {
    return this.#state;
  }

  /** The connecting process's ids (SO_PEERCRED), read once on first use; undefined when unknown. */
  credentials(): PeerCredentials | undefined {
    if (this.#credentials === undefined) this.#credentials = this.#ctx.policy.peerReader?.read(this.socket) ?? null;
    return this.#credentials ?? undefined;
  }

  /** A TCP client that sent the right token (access-policy.ts). */
  get authenticated(): boolean {
    return this.#authenticated;
  }

  /**
   * `client=N`, and `client=N dev=M conn=S→P` once it tunnels to device M. Built on first use: most
   * clients never log a line (debug is off), and a connect should not pay for the strings.
   */
  get log(): Logger {
    if (this.#log === undefined) {
      const fields: Record<string, string | number> = { client: this.id };
      const conn = this.#conn;
      if (this.#device !== undefined && conn !== undefined) {
        fields.dev = this.#device.id;
        fields.conn = `${conn.sourcePort}→${conn.devicePort}`;
      }
      this.#log = this.#parentLog.child(fields);
    }
    return this.#log;
  }

  /** The device connection of a tunnel (connecting or connected), if any. */
  get connection(): MuxConnection | undefined {
    return this.#conn;
  }

  /** This client as a ListListeners entry, with its own number (usbmuxd uses the asker's, §6.10). */
  listenerInfo(): ListenerInfo {
    const info: ListenerInfo = { idString: `${this.id}-${this.#progName ?? 'unknown'}` };
    if (this.#progName !== undefined) info.progName = this.#progName;
    if (this.#bundleId !== undefined) info.bundleId = this.#bundleId;
    if (this.#libUSBMuxVersion !== undefined) info.libUSBMuxVersion = this.#libUSBMuxVersion;
    return info;
  }

  /** What this client holds and whether each side is flowing, for diagnostics and tests. */
  stats(): ClientStats {
    const conn = this.#conn;
    return {
      id: this.id,
      state: this.#state,
      socketWritable: this.socket.writableLength,
      socketReadPaused: this.#reader !== undefined ? this.#reader.paused : this.socket.isPaused(),
      pausedForReplies: this.#replyPaused,
      held: this.#held,
      reader: this.#reader?.stats,
      connection: conn === undefined ? undefined : { ...conn.stats(), readPaused: conn.isPaused(), writableNeedDrain: conn.writableNeedDrain },
    };
  }

  /** True while the client receives device events. */
  get listening(): boolean {
    return this.#state === 'listening';
  }

  /** A debug line; nothing is built (not even the client's logger) while debug is off. */
  #debug(message: string): void {
    if (this.#parentLog.enabled('debug')) this.log.debug(message);
  }

  // ---- events to a listening client ------------------------------------------------------------

  /** Sends an Attached / DEVICE_ADD event. */
  deviceAttached(entry: DeviceEntry): void {
    if (this.#state !== 'listening') return;
    this.#sendEvent(
      this.#protoVersion === 1
        ? encodeClientMessage({ kind: 'plist', tag: 0, version: CLIENT_VERSION_PLIST, plist: attachedEvent(entry.properties) })
        : encodeClientMessage({
            kind: 'device-add',
            tag: 0,
            device: { deviceId: entry.id, productId: entry.properties.productId, serialNumber: entry.properties.serialNumber, locationId: entry.properties.locationId },
          }),
    );
  }

  /** Sends a Detached / DEVICE_REMOVE event. */
  deviceDetached(entry: DeviceEntry): void {
    if (this.#state !== 'listening') return;
    this.#sendEvent(
      this.#protoVersion === 1
        ? encodeClientMessage({ kind: 'plist', tag: 0, version: CLIENT_VERSION_PLIST, plist: detachedEvent(entry.id) })
        : encodeClientMessage({ kind: 'device-remove', tag: 0, deviceId: entry.id }),
    );
  }

  /** Sends a Paired / DEVICE_PAIRED event. */
  devicePaired(entry: DeviceEntry): void {
    if (this.#state !== 'listening') return;
    this.#sendEvent(
      this.#protoVersion === 1
        ? encodeClientMessage({ kind: 'plist', tag: 0, version: CLIENT_VERSION_PLIST, plist: pairedEvent(entry.id) })
        : encodeClientMessage({ kind: 'device-paired', tag: 0, deviceId: entry.id }),
    );
  }

  #sendEvent(bytes: Buffer): void {
    if (this.socket.writableLength > MAX_EVENT_BACKLOG) {
      this.log.warn('listener does not read its events; dropping it');
      this.fail(new MuxwireError('MUXWIRE_ERR_SLOW_CLIENT', 'listener does not read its events'));
      return;
    }
    this.#send(bytes);
  }

  // ---- memory and time limits (client-limits.ts) ---------------------------------------------------

  /** Bytes held for this client: requests not yet decoded, replies not yet taken by the kernel. */
  get held(): number {
    return this.#held;
  }

  /** Writes a reply or event, accounts for it, and closes the client past the hard cap. */
  #send(bytes: Buffer): void {
    this.socket.write(bytes, this.#onFlushed);
    if (this.socket.writableLength > this.#ctx.limits.replyMax) {
      this.log.warn(`client does not read its replies (${this.socket.writableLength} bytes queued); closing it`);
      this.fail(new MuxwireError('MUXWIRE_ERR_CLIENT_LIMIT', 'client does not read its replies'));
      return;
    }
    this.#account();
  }

  /** Reports what the client holds to the budget (which may close the biggest holder). */
  #account(): void {
    const state = this.#state;
    const now = state === 'closed' || state === 'connected' ? 0 : this.#decoder.buffered + this.socket.writableLength;
    const before = this.#held;
    if (now === before) return;
    this.#held = now;
    this.#ctx.budget.update(this, before, now);
  }

  /** @internal The budget of all clients is spent and this client holds the most. */
  overBudget(): void {
    this.log.warn(`clients hold more than the daemon's budget of ${this.#ctx.budget.limit} bytes; closing this one (${this.#held} bytes)`);
    this.fail(new MuxwireError('MUXWIRE_ERR_CLIENT_LIMIT', 'daemon memory budget for clients exceeded'));
  }

  /** Lets the other clients' events run before this client's next requests are answered. */
  #yieldTurn(): void {
    this.#yielded = true;
    const readPaused = !this.#replyPaused;
    if (readPaused) this.socket.pause();
    setImmediate(() => {
      this.#yielded = false;
      if (this.#state !== 'command' && this.#state !== 'listening') return;
      if (readPaused && !this.#replyPaused) this.socket.resume();
      this.#processCommands();
      this.#account();
      if (this.#endPending && !this.#busy && !this.#closing && !this.#replyPaused && !this.#yielded) this.socket.end();
    });
  }

  /** Stops reading requests until the queued replies drain (the client reads them). */
  #pauseForReplies(): void {
    this.#replyPaused = true;
    this.socket.pause();
    this.#debug(`${this.socket.writableLength} bytes of replies queued; not reading requests until they drain`);
  }

  #repliesDrained(): void {
    this.#replyPaused = false;
    if (this.#state !== 'command' && this.#state !== 'listening') return;
    this.socket.resume();
    this.#processCommands();
    if (this.#endPending && !this.#busy && !this.#closing && !this.#replyPaused) this.socket.end();
  }

  /** True while requests are not read because replies are queued (diagnostics, tests). */
  get pausedForReplies(): boolean {
    return this.#replyPaused;
  }

  #armRequestTimer(): void {
    if (this.#requestTimer !== undefined) return;
    this.#requestTimer = setTimeout(onRequestTimeout, this.#ctx.limits.requestTimeoutMs, this);
    this.#requestTimer.unref();
  }

  #clearRequestTimer(): void {
    if (this.#requestTimer === undefined) return;
    clearTimeout(this.#requestTimer);
    this.#requestTimer = undefined;
  }

  /** @internal A request started arriving requestTimeoutMs ago and is still not whole. */
  requestTimedOut(): void {
    this.#requestTimer = undefined;
    // Only the client's own slowness counts: not bytes we stopped reading, nor whole requests
    // waiting behind a pair-record request, nor tunnel bytes behind a Connect.
    if ((this.#state !== 'command' && this.#state !== 'listening') || this.#replyPaused || !this.#decoder.partial) return;
    this.log.warn(`request not complete after ${this.#ctx.limits.requestTimeoutMs} ms (${this.#decoder.buffered} bytes in); closing the client`);
    this.fail(new MuxwireError('MUXWIRE_ERR_CLIENT_LIMIT', 'request not complete in time'));
  }

  // ---- the one fatal path ------------------------------------------------------------------------

  /** Ends the client: closes its socket and its device connection (RST), reports once. */
  fail(err?: Error): void {
    if (this.#state === 'closed') return;
    const prev = this.#state;
    this.#state = 'closed';
    if (err && !isMuxwireError(err, 'MUXWIRE_ERR_SLOW_CLIENT')) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ECONNRESET' || code === 'EPIPE') this.#debug(`client gone (${code})`);
      else this.#debug(`client closed: ${err.message}`);
    } else {
      this.#debug(`client closed (was ${prev})`);
    }
    if (this.#flushTimer !== undefined) clearInterval(this.#flushTimer);
    this.#flushTimer = undefined;
    this.#clearRequestTimer();
    this.socket.off('data', this.#onData);
    const conn = this.#conn;
    this.#conn = undefined;
    if (conn !== undefined) {
      conn.off('data', this.#onDeviceData);
      conn.onPayloadTaken = undefined;
      conn.destroy();
    }
    this.#reader?.destroy();
    this.#reader = undefined;
    this.socket.destroy();
    this.#account();
    this.#ctx.onClosed(this);
  }

  // ---- command mode ----------------------------------------------------------------------------

  #receive(chunk: Buffer): void {
    const state = this.#state;
    if (state === 'connected') {
      this.#toDevice(chunk);
      if (this.#readerWanted && chunk.length >= BULK_READ) this.#startReader();
      return;
    }
    if (state === 'closed') return;
    this.#decoder.push(chunk);
    this.#processCommands();
    this.#account();
  }

  #processCommands(): void {
    // One request at a time: a pair-record request waits for the disk, and the requests behind it
    // wait for it, so replies leave in request order as usbmuxd's do.
    if (this.#yielded) return;
    let handled = 0;
    while ((this.#state === 'command' || this.#state === 'listening') && !this.#busy && !this.#closing) {
      if (handled === REQUESTS_PER_TURN) {
        this.#yieldTurn();
        return;
      }
      if (this.socket.writableLength >= this.#ctx.limits.replyHighWater) {
        this.#pauseForReplies();
        return;
      }
      let msg: ClientMessage | undefined;
      try {
        msg = this.#decoder.next();
      } catch (err) {
        // An impossible length: no way to find the next message. Only this client is closed.
        this.log.warn(`closing client: ${(err as Error).message}`);
        this.fail(err as Error);
        return;
      }
      if (msg === undefined) {
        if (this.#decoder.buffered > 0) this.#armRequestTimer();
        return;
      }
      this.#clearRequestTimer();
      handled++;
      try {
        this.#handle(msg);
      } catch (err) {
        // A request the daemon could not handle ends its client, never the daemon.
        this.log.warn(`closing client: request failed: ${(err as Error).message}`);
        this.fail(err as Error);
        return;
      }
    }
  }

  #onEnd(): void {
    if (this.#state === 'closed') return;
    if (this.#state === 'connected') {
      this.#clientEnded();
      return;
    }
    if (this.#state === 'connecting') {
      // The client gave up waiting for its Connect (libusbmuxd does after 5 s): abort it (RST).
      this.fail();
      return;
    }
    // EOF from a command or listen client: answer what is pending, then close.
    this.#endPending = true;
    if (!this.#busy && !this.#closing && !this.#replyPaused && !this.#yielded) this.socket.end();
  }

  #endPending = false;

  #handle(msg: ClientMessage): void {
    if (this.transport === 'tcp' && !this.#authenticated && this.#ctx.policy.tcpTokenRequired) {
      this.#authenticate(msg);
      return;
    }
    switch (msg.kind) {
      case 'listen':
        this.#listen(msg.tag);
        return;
      case 'connect':
        this.#connect(msg.tag, msg.deviceId, msg.port);
        return;
      case 'plist':
        this.#protoVersion = 1;
        this.#plistRequest(msg.tag, msg.plist);
        return;
      case 'bad-plist':
      case 'bad-request':
        // usbmuxd answers BADCOMMAND to a request it cannot read; a number it would have cut to
        // size (DeviceID 2^40+1 → device 1, PortNumber 70000 → 4464) is refused the same way.
        this.#protoVersion = 1;
        this.#debug(`malformed plist request: ${msg.error.message}`);
        this.#result(msg.tag, ResultCode.BADCOMMAND);
        return;
      case 'unknown':
        if (msg.version !== 0 && msg.version !== 1) {
          this.#debug(`request with header version ${msg.version}`);
          this.#result(msg.tag, ResultCode.BADVERSION);
        } else {
          if (msg.message === ClientMessageType.PLIST) this.#protoVersion = 1;
          this.#debug(`unknown request type ${msg.message} (${msg.payload.length} payload bytes)`);
          this.#result(msg.tag, ResultCode.BADCOMMAND);
        }
        return;
      default:
        // Daemon-to-client types (RESULT, DEVICE_ADD…) sent by a client.
        this.#result(msg.tag, ResultCode.BADCOMMAND);
    }
  }

  /**
   * The first request on a TCP listener that needs a token: `{MessageType: "Authenticate", Token}`
   * gets Result 0 (in plist; the client's reply format stays as it was), anything else Result 13
   * and the socket is closed (access-policy.ts).
   */
  #authenticate(msg: ClientMessage): void {
    const plist = msg.kind === 'plist' ? msg.plist : undefined;
    if (plist !== undefined && plist.MessageType === 'Authenticate' && this.#ctx.policy.checkToken(plist.Token)) {
      this.#authenticated = true;
      this.#debug('TCP client authenticated');
      this.#send(encodePlistResult(msg.tag, ResultCode.OK, CLIENT_VERSION_PLIST));
      return;
    }
    if (msg.kind === 'plist' || msg.kind === 'bad-plist' || msg.kind === 'bad-request') this.#protoVersion = 1;
    const refusal = this.#ctx.policy.decide('list', this)!;
    const why = plist?.MessageType === 'Authenticate' ? 'wrong token' : 'no Authenticate request first';
    this.#refuse(msg.tag, { ...refusal, error: new MuxwireError(refusal.error.code, `TCP client refused: ${why}`, { detail: refusal.result }) });
  }

  /** Answers `action` per the policy; true when it was refused (the Result is sent). */
  #refused(tag: number, action: ClientAction): boolean {
    const refusal = this.#ctx.policy.decide(action, this);
    if (refusal === undefined) return false;
    this.#refuse(tag, refusal);
    return true;
  }

  #refuse(tag: number, refusal: { result: number; close: boolean; error: MuxwireError }): void {
    // One warning per client: a client that asks again and again does not flood the log.
    if (!this.#refusalLogged) this.log.warn(refusal.error.message);
    else this.#debug(refusal.error.message);
    this.#refusalLogged = true;
    this.#result(tag, refusal.result);
    if (refusal.close) {
      this.#closing = true;
      this.socket.end();
      this.socket.once('finish', () => this.fail());
    }
  }

  #plistRequest(tag: number, req: PlistDict): void {
    // usbmuxd copies these from every request and uses them for ListListeners (§4.4).
    if (typeof req.ProgName === 'string') this.#progName = clientString(req.ProgName);
    if (typeof req.BundleID === 'string') this.#bundleId = clientString(req.BundleID);
    if (typeof req.ClientVersionString === 'string') this.#clientVersion = clientString(req.ClientVersionString);
    const v = toUint(req.kLibUSBMuxVersion);
    if (v !== undefined) this.#libUSBMuxVersion = v;
    const type = req.MessageType;
    if (typeof type !== 'string') {
      this.#result(tag, ResultCode.BADCOMMAND);
      return;
    }
    if (this.#parentLog.enabled('debug')) this.#debug(`${clientString(type)} from ${this.#progName ?? 'unknown'}`);
    switch (type) {
      case 'Listen':
        this.#listen(tag);
        return;
      case 'Connect': {
        const deviceId = toUint(req.DeviceID);
        const portNumber = toUint(req.PortNumber);
        // usbmuxd: no DeviceID → BADDEV, no PortNumber → BADCOMMAND (§4.4).
        if (deviceId === undefined) this.#result(tag, ResultCode.BADDEV);
        else if (portNumber === undefined) this.#result(tag, ResultCode.BADCOMMAND);
        else this.#connect(tag, deviceId, decodePortNumber(portNumber));
        return;
      }
      case 'ListDevices':
        this.#reply(tag, deviceListReply(this.#ctx.registry.visible().map((d) => d.properties)));
        return;
      case 'ListListeners':
        this.#listListeners(tag);
        return;
      case 'ReadBUID':
        this.#async(tag, this.#ctx.pairStore.readBUID().then((buid) => buidReply(buid)));
        return;
      case 'ReadPairRecord':
        if (!this.#refused(tag, 'read-pair-record')) this.#async(tag, this.#readPairRecord(req.PairRecordID));
        return;
      case 'SavePairRecord':
        if (!this.#refused(tag, 'save-pair-record')) this.#async(tag, this.#savePairRecord(req.PairRecordID, req.PairRecordData, toUint(req.DeviceID)));
        return;
      case 'DeletePairRecord':
        if (!this.#refused(tag, 'delete-pair-record')) this.#async(tag, this.#deletePairRecord(req.PairRecordID));
        return;
      default:
        this.#debug(`unknown MessageType ${clientString(type)}`);
        this.#result(tag, ResultCode.BADCOMMAND);
    }
  }

  /**
   * The listeners' list, unless it could be over the hard reply cap: then the client is closed as
   * one that does not read its replies would be, before the reply is built (thousands of listeners
   * make a reply of many megabytes).
   */
  #listListeners(tag: number): void {
    const listeners = [...this.#ctx.clients].filter((c) => c.listening).map((c) => c.listenerInfo());
    const atMost = listenersReplyBytesAtMost(listeners);
    if (atMost > this.#ctx.limits.replyMax) {
      this.log.warn(`ListListeners reply of up to ${atMost} bytes (${listeners.length} listeners) is over the reply cap of ${this.#ctx.limits.replyMax}; closing the client`);
      this.fail(new MuxwireError('MUXWIRE_ERR_CLIENT_LIMIT', 'ListListeners reply over the reply cap'));
      return;
    }
    this.#reply(tag, listenersReply(listeners));
  }

  /** Replies with the dictionary `work` gives, or with Result errno when it fails. */
  #async(tag: number, work: Promise<PlistDict | number>): void {
    this.#busy = true;
    work
      .then(
        (reply) => {
          if (typeof reply === 'number') this.#result(tag, reply);
          else this.#reply(tag, reply);
        },
        (err: unknown) => {
          this.#debug(`pair-record request failed: ${err instanceof Error ? err.message : String(err)}`);
          this.#result(tag, errnoOf(err));
        },
      )
      .finally(() => {
        this.#busy = false;
        if (this.#state === 'command' || this.#state === 'listening') {
          this.#processCommands();
          this.#account();
          if (this.#endPending && !this.#busy && !this.#replyPaused) this.socket.end();
        }
      });
  }

  #busy = false;

  async #readPairRecord(id: PlistValue | undefined): Promise<PlistDict | number> {
    if (typeof id !== 'string') return EINVAL;
    validatePairRecordId(id);
    const data = await this.#ctx.pairStore.readPairRecordData(id);
    if (data === undefined) return 2; // ENOENT, as usbmuxd (it collides with BADDEV, §6.9)
    return pairRecordReply(data);
  }

  async #savePairRecord(id: PlistValue | undefined, data: PlistValue | undefined, deviceId: number | undefined): Promise<number> {
    if (typeof id !== 'string' || !Buffer.isBuffer(data)) return EINVAL;
    validatePairRecordId(id);
    // The store's 'saved' event turns a matching DeviceID into a Paired event.
    await this.#ctx.pairStore.savePairRecordData(id, data, deviceId);
    return ResultCode.OK;
  }

  async #deletePairRecord(id: PlistValue | undefined): Promise<number> {
    if (typeof id !== 'string') return EINVAL;
    validatePairRecordId(id);
    await this.#ctx.pairStore.deletePairRecord(id);
    return ResultCode.OK;
  }

  #listen(tag: number): void {
    if (this.#state === 'listening') {
      this.#result(tag, ResultCode.BADCOMMAND);
      return;
    }
    this.#result(tag, ResultCode.OK);
    this.#state = 'listening';
    for (const entry of this.#ctx.registry.visible()) this.deviceAttached(entry);
  }

  // ---- connect and tunnel --------------------------------------------------------------------

  #connect(tag: number, deviceId: number, port: number): void {
    if (this.#state === 'listening') {
      this.#result(tag, ResultCode.BADCOMMAND);
      return;
    }
    const entry = this.#ctx.registry.get(deviceId);
    if (entry === undefined) {
      this.#debug(`Connect to unknown device ${deviceId}`);
      this.#result(tag, ResultCode.BADDEV);
      return;
    }
    this.#state = 'connecting';
    this.#device = entry;
    // Stop reading: the bytes behind the Connect (already in the decoder, or still in the socket)
    // are tunnel data for the device if it accepts, and more requests if it refuses.
    this.socket.pause();
    this.#debug(`connecting to device ${deviceId} port ${port}`);
    const opts = this.#ctx.connectTimeoutMs !== undefined ? { timeoutMs: this.#ctx.connectTimeoutMs } : {};
    entry.session.openConnection(port, opts, (err, conn) => {
      if (err !== undefined) this.#connectFailed(tag, err);
      else this.#connected(tag, conn!);
    });
  }

  #connectFailed(tag: number, err: unknown): void {
    if (this.#state !== 'connecting') return;
    this.#device = undefined;
    const code = isMuxwireError(err) ? err.code : '';
    this.#debug(`connect failed: ${err instanceof Error ? err.message : String(err)}`);
    // libusbmuxd maps 3 to ECONNREFUSED and 2 to ENODEV (§4.12).
    const result = code === 'MUXWIRE_ERR_NO_DEVICE' || code === 'MUXWIRE_ERR_CLOSED' || code === 'MUXWIRE_ERR_NO_PORT' ? ResultCode.BADDEV : ResultCode.CONNREFUSED;
    this.#state = 'command';
    this.#result(tag, result);
    this.socket.resume();
    // Requests the client sent behind the Connect are answered now.
    this.#processCommands();
  }

  #connected(tag: number, conn: MuxConnection): void {
    if (this.#state !== 'connecting') {
      conn.destroy();
      return;
    }
    this.#state = 'connected';
    this.#conn = conn;
    // Rebuilt with dev= and conn= when a line needs it.
    this.#log = undefined;
    // Result 0 first: the client is waiting on it, and nothing below changes what it says.
    this.#result(tag, ResultCode.OK);
    const early = this.#decoder.remainder();
    if (early.length > 0) {
      this.#debug(`forwarding ${early.length} bytes sent before the Connect result`);
      this.#tunnelWritten += early.length;
      conn.write(early);
    }
    conn.on('error', onTunnelError);
    conn.once('end', () => this.#deviceEnded());
    conn.on('close', () => this.#deviceClosed());
    conn.on('closing', () => this.#startFlushGuard());
    // Ring mode: views of ring memory go straight to the client socket and are released (and
    // ACKed) in its write callbacks, with no copy; the stream path remains for other modes.
    // With the addon, the demuxer also sends straight to the socket's descriptor when it can,
    // from the device's first BULK_READ bytes on: a tunnel that carries only requests and replies
    // never costs the demuxer's duplicate of the descriptor (four system calls per connect).
    if (!conn.relayTo(this.socket, directRelayFd(this.socket), BULK_READ)) conn.on('data', this.#onDeviceData);
    // Client → device: the socket's 'data' now goes to the connection (#toDevice), and its EOF
    // ends it (#clientEnded). Bytes the socket held while paused follow the early ones, in order.
    // A RingReader takes over at the client's first bulk read (#startReader): a tunnel that only
    // carries requests and replies (a connect and close, lockdown, AFC commands) never costs a
    // second descriptor and socket.
    this.#readerWanted = RingReader.available();
    this.socket.resume();
  }

  /**
   * The client has sent bulk data: from now on it is read by a RingReader over a duplicate of its
   * descriptor (src/accel/client-reader.ts). The reader counts every byte the connection releases
   * (onPayloadTaken), so the bytes it was given before and has not released yet count first.
   */
  #startReader(): void {
    this.#readerWanted = false;
    const conn = this.#conn;
    if (conn === undefined || this.#state !== 'connected') return;
    const reader = RingReader.create(this.socket, this.#readerSink);
    if (reader === undefined) return;
    this.#reader = reader;
    reader.foreign(this.#tunnelWritten - conn.bytesReleased);
    conn.onPayloadTaken = (n) => reader.release(n);
    // The connection's window is full: the reader starts paused and #deviceDrained resumes it.
    if (this.#waitingForDevice) reader.pause();
    this.#handOverReading(reader);
  }

  /**
   * The socket stops reading; what it already read goes first, then the reader reads on. False
   * (and no reader) when the socket cannot be stopped: it is then read as before.
   */
  #handOverReading(reader: RingReader): boolean {
    if (!stopReading(this.socket)) {
      this.#dropReader();
      return false;
    }
    this.socket.off('data', this.#onData);
    for (let chunk = this.socket.read() as Buffer | null; chunk !== null && this.#state === 'connected'; chunk = this.socket.read() as Buffer | null) {
      reader.foreign(chunk.length);
      this.#toDevice(chunk);
    }
    if (this.#state === 'connected') reader.start();
    return true;
  }

  #dropReader(): void {
    this.#reader?.destroy();
    this.#reader = undefined;
    if (this.#conn !== undefined) this.#conn.onPayloadTaken = undefined;
  }

  readonly #readerSink = {
    data: (chunk: Buffer): void => {
      if (this.#state === 'connected') this.#toDevice(chunk);
    },
    end: (): void => this.#onEnd(),
    error: (err: Error): void => this.fail(err),
  };

  /**
   * Client → device (hot path), what `socket.pipe(conn)` would do without its per-connection
   * listeners: write, and stop reading the client while the connection's window is full.
   */
  #toDevice(chunk: Buffer): void {
    const conn = this.#conn!;
    // Destroyed and not yet reported ('close' comes next tick): the bytes have nowhere to go.
    if (!conn.writable) return;
    this.#tunnelWritten += chunk.length;
    if (!conn.write(chunk) && !this.#waitingForDevice) {
      this.#waitingForDevice = true;
      if (this.#reader !== undefined) this.#reader.pause();
      else this.socket.pause();
      conn.once('drain', () => this.#deviceDrained());
    }
  }

  #waitingForDevice = false;

  #deviceDrained(): void {
    this.#waitingForDevice = false;
    if (this.#state !== 'connected') return;
    if (this.#reader !== undefined) this.#reader.resume();
    else this.socket.resume();
  }

  /**
   * The client sent EOF while tunnelling. The mux has no half-close, so the device connection is
   * reset either way (§6.5). With nothing left in either direction — no client bytes waiting for
   * the device's window, no device bytes not yet taken by the socket — the client is closed at
   * once, as usbmuxd closes a client on EOF: one RST, one close, no stream teardown. Otherwise the
   * connection's writable side ends (its RST follows the written data) and what the device sent
   * is still delivered to the client (#deviceEnded closes it then).
   */
  #clientEnded(): void {
    if (this.#clientEof) return;
    this.#clientEof = true;
    const conn = this.#conn!;
    const s = conn.stats();
    if (s.txPending === 0 && s.rxQueued === 0 && s.readableBuffered === 0 && this.socket.writableLength === 0) {
      this.fail();
      return;
    }
    conn.end();
  }

  /**
   * Device → client (hot path). The socket is corked for the rest of the tick, so the packets of
   * one batch of IN transfers leave in one writev instead of one system call each; backpressure
   * is checked when the batch is flushed (see #flushToClient).
   */
  #onDeviceData = (chunk: Buffer): void => {
    if (!this.#corked) {
      this.#corked = true;
      this.socket.cork();
      process.nextTick(flushToClient, this);
    }
    this.socket.write(chunk);
  };

  #corked = false;

  /** @internal End of the tick: write the batch; pause the device side while the client is full. */
  flushToClient(): void {
    this.#corked = false;
    const socket = this.socket;
    socket.uncork();
    const conn = this.#conn;
    if (conn !== undefined && socket.writableLength > RELAY_HIGH_WATER && !conn.isPaused()) {
      // The connection stops handing data over, so its ACKs stop and the device waits (§3.5).
      conn.pause();
      socket.once('drain', this.#onClientDrain);
    }
  }

  #onClientDrain = (): void => {
    this.#conn?.resume();
  };

  /** Every byte the device sent has been handed to the socket: close it once written. */
  #deviceEnded(): void {
    if (this.#state !== 'connected') return;
    this.#debug(`tunnel ended (${this.#conn?.closeReason ?? 'closed'})`);
    this.#startFlushGuard();
    this.socket.end();
    this.socket.once('finish', () => this.fail());
  }

  #deviceClosed(): void {
    if (this.#state !== 'connected') return;
    // Destroyed without ending (e.g. session shutdown): nothing more will come.
    if (this.#conn !== undefined && !this.#conn.readableEnded) this.fail();
  }

  /**
   * The device side is over; the client gets what was received, but a client that stops reading
   * is cut after FLUSH_STALL_MS without progress (usbmuxd gives 1 s, §3.9).
   */
  #startFlushGuard(): void {
    if (this.#flushTimer !== undefined || this.#state !== 'connected') return;
    this.#flushMark = this.socket.bytesWritten;
    this.#flushProgressAt = Date.now();
    this.#flushTimer = setInterval(onFlushCheck, FLUSH_STALL_MS / 4, this);
    this.#flushTimer.unref();
  }

  /** @internal */
  checkFlush(): void {
    const progress = this.socket.bytesWritten;
    const now = Date.now();
    if (progress !== this.#flushMark) {
      this.#flushMark = progress;
      this.#flushProgressAt = now;
      return;
    }
    if (now - this.#flushProgressAt >= FLUSH_STALL_MS) {
      this.#debug('client makes no progress reading the last device data; closing');
      this.fail();
    }
  }

  // ---- replies -----------------------------------------------------------------------------------

  #result(tag: number, n: number): void {
    if (this.#state === 'closed') return;
    const bytes = this.#protoVersion === 1 ? encodePlistResult(tag, n, CLIENT_VERSION_PLIST) : encodeClientMessage({ kind: 'result', tag, result: n });
    this.#send(bytes);
  }

  #reply(tag: number, dict: PlistDict): void {
    if (this.#state === 'closed') return;
    this.#send(encodeClientMessage({ kind: 'plist', tag, version: CLIENT_VERSION_PLIST, plist: dict }));
  }

  /** The device a tunnel goes to (log context). */
  get device(): DeviceEntry | undefined {
    return this.#device;
  }

  /** What the client said it is (ClientVersionString), for logs. */
  get clientVersion(): string | undefined {
    return this.#clientVersion;
  }
}

function onTunnelError(this: MuxConnection, err: Error): void {
  this.log.debug(`connection error: ${err.message}`);
}

function flushToClient(client: ClientSession): void {
  client.flushToClient();
}

function onFlushCheck(client: ClientSession): void {
  client.checkFlush();
}

function onRequestTimeout(client: ClientSession): void {
  client.requestTimedOut();
}

/**
 * An integer field of a request, or undefined when absent. The decoder has already refused every
 * value out of its range or of another type (REQUEST_INTEGER_FIELDS), so a present one is a number.
 */
function toUint(v: PlistValue | undefined): number | undefined {
  return typeof v === 'number' ? v : undefined;
}

/**
 * The client socket's file descriptor for the demuxer's direct sends, unless
 * `MUXWIRE_DIRECT_RELAY=0` turns them off (every byte then goes through the socket object).
 */
function directRelayFd(socket: Socket): number | undefined {
  if (process.env.MUXWIRE_DIRECT_RELAY === '0') return undefined;
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}
