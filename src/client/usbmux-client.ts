/**
 * The usbmux client (issue 7): list devices, watch attach/detach/pair events, connect to a device
 * port as a Node stream, and the BUID and pair-record calls — against any usbmuxd (ours,
 * libimobiledevice's, Apple's). Like libusbmuxd, each request uses its own short-lived socket, the
 * plist protocol is spoken by default, and a BADVERSION answer to Listen or Connect makes the
 * client fall back to the binary protocol for the rest of its life (usbmux.md §4.6, §4.12).
 */
import type { Socket } from 'node:net';
import { basename } from 'node:path';
import { MuxwireError } from '../errors.js';
import { ResultCode, type ClientMessage } from '../protocol/client-message.js';
import { encodePortNumber, plistRequest } from '../protocol/client-plist.js';
import { decodePlist, encodeXmlPlist, isPlistDict, type PlistDict } from '../protocol/plist.js';
import { deviceFromPlist, pickDevice, type ConnectionType, type DeviceInfo } from './device-info.js';
import { MuxdConnection } from './muxd-connection.js';
import { resolveSocketAddress, type SocketAddress } from './socket-address.js';
import { DeviceWatcher } from './device-watcher.js';

export interface UsbmuxClientOptions {
  /** `UNIX:/path`, `/path`, `host:port`, `[v6]:port`; default: USBMUXD_SOCKET_ADDRESS, else /var/run/usbmuxd. */
  address?: string | SocketAddress;
  /** Deadline for every request, in ms (libusbmuxd: 5 s). */
  timeoutMs?: number;
  /** ProgName sent to the daemon (shown by ListListeners). */
  progName?: string;
  /** Start with the binary protocol instead of plist. */
  protocol?: 'plist' | 'binary';
  /**
   * The token of a muxwire daemon's TCP listener (`muxwire daemon --tcp-token FILE`): sent as
   * `{MessageType: Authenticate, Token}` first on every TCP socket. Ignored on UNIX sockets.
   */
  token?: string;
}

/** What a pair-record store needs; the lockdown client pairs through it (src/lockdown). */
export interface MuxdPairRecordApi {
  readBUID(): Promise<string>;
  readPairRecord(udid: string): Promise<PlistDict | undefined>;
  savePairRecord(udid: string, record: PlistDict, deviceId?: number): Promise<void>;
}

export class UsbmuxClient implements MuxdPairRecordApi {
  readonly address: SocketAddress;
  readonly timeoutMs: number;
  readonly progName: string;
  #protocol: 'plist' | 'binary';
  readonly #token: string | undefined;
  #tag = 1;

  constructor(options: UsbmuxClientOptions = {}) {
    this.address = typeof options.address === 'object' ? options.address : resolveSocketAddress(options.address);
    this.timeoutMs = options.timeoutMs ?? 5000;
    this.progName = options.progName ?? (basename(process.argv[1] ?? 'node').replace(/\.js$/, '') || 'muxwire');
    this.#protocol = options.protocol ?? 'plist';
    this.#token = options.token;
  }

  /** The protocol in use: plist until a daemon answers BADVERSION. */
  get protocol(): 'plist' | 'binary' {
    return this.#protocol;
  }

  /** Devices the daemon lists now (ListDevices; Listen for binary-only daemons). */
  async listDevices(): Promise<DeviceInfo[]> {
    if (this.#protocol === 'plist') {
      const reply = await this.#plistCall('ListDevices', {});
      if (isPlistDict(reply) && Array.isArray(reply.DeviceList)) {
        return reply.DeviceList.filter(isPlistDict).map(deviceFromPlist);
      }
      const number = resultNumber(reply);
      if (number !== ResultCode.BADVERSION && number !== ResultCode.BADCOMMAND) throw unexpected('ListDevices', reply);
    }
    // A daemon without ListDevices: collect the Attached events a Listen sends at once (libusbmuxd).
    return this.#listViaListen();
  }

  /**
   * The device with this UDID (either spelling), or the first device when none is named. A device
   * on USB and on the network at once has two entries: `connection` picks one (as
   * libimobiledevice's `-n`); without it the USB entry is preferred, then any.
   */
  async findDevice(udid?: string, options: { connection?: ConnectionType } = {}): Promise<DeviceInfo> {
    return pickDevice(await this.listDevices(), udid, options.connection);
  }

  /** Attach, detach and pair events as an EventEmitter and an async iterator; stops on `signal`. */
  watch(options: { signal?: AbortSignal } = {}): DeviceWatcher {
    return DeviceWatcher.overDaemon(() => this.#openListen(), options.signal);
  }

  /**
   * Connects to `port` on the device and returns the daemon socket as the tunnel: a real net.Socket
   * carrying the device stream in both directions.
   */
  async connect(device: DeviceInfo | number, port: number, options: { timeoutMs?: number } = {}): Promise<Socket> {
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `device port must be 1..65535, not ${port}`);
    }
    const deviceId = typeof device === 'number' ? device : device.deviceId;
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    for (;;) {
      const conn = await this.#open(timeoutMs);
      try {
        const tag = this.#nextTag();
        if (this.#protocol === 'plist') {
          conn.send({
            kind: 'plist',
            tag,
            version: 1,
            plist: plistRequest('Connect', { DeviceID: deviceId, PortNumber: encodePortNumber(port) }, this.progName),
          });
        } else {
          conn.send({ kind: 'connect', tag, deviceId, port });
        }
        const reply = await conn.next(timeoutMs, 'Connect result');
        const number = resultNumber(messageBody(reply));
        if (number === ResultCode.BADVERSION && this.#protocol === 'plist') {
          this.#protocol = 'binary';
          conn.close();
          continue;
        }
        if (number === ResultCode.OK) return conn.detach();
        conn.close();
        throw connectError(number, deviceId, port);
      } catch (err) {
        conn.close();
        throw err;
      }
    }
  }

  /** The host's SystemBUID. */
  async readBUID(): Promise<string> {
    const reply = await this.#plistCall('ReadBUID', {});
    if (isPlistDict(reply) && typeof reply.BUID === 'string') return reply.BUID;
    throw unexpected('ReadBUID', reply);
  }

  /** The stored pair record for `udid`, or undefined when the daemon has none. */
  async readPairRecord(udid: string): Promise<PlistDict | undefined> {
    const reply = await this.#plistCall('ReadPairRecord', { PairRecordID: udid });
    if (isPlistDict(reply) && Buffer.isBuffer(reply.PairRecordData)) {
      const record = decodePlist(reply.PairRecordData);
      if (!isPlistDict(record)) throw unexpected('ReadPairRecord', reply);
      return record;
    }
    const number = resultNumber(reply);
    // A refusal is not "no record": read as one, it made `muxwire info` say "not paired" and
    // `muxwire pair` try to pair a device whose record this user may not read.
    if (number === RESULT_ACCESS_DENIED) throw accessDenied('ReadPairRecord');
    if (number !== undefined && number !== 0) return undefined;
    throw unexpected('ReadPairRecord', reply);
  }

  /** Stores a pair record; with `deviceId` the daemon sends a Paired event to its listeners. */
  async savePairRecord(udid: string, record: PlistDict, deviceId?: number): Promise<void> {
    const fields: PlistDict = { PairRecordID: udid, PairRecordData: encodeXmlPlist(record) };
    if (deviceId !== undefined) fields.DeviceID = deviceId;
    const reply = await this.#plistCall('SavePairRecord', fields);
    const number = resultNumber(reply);
    if (number === RESULT_ACCESS_DENIED) throw accessDenied('SavePairRecord');
    if (number !== 0) throw new MuxwireError('MUXWIRE_ERR_PAIR_RECORD', `usbmuxd could not save the pair record for ${udid} (result ${number})`, { detail: number });
  }

  /** Deletes a pair record (no error when there was none). */
  async deletePairRecord(udid: string): Promise<void> {
    const reply = await this.#plistCall('DeletePairRecord', { PairRecordID: udid });
    const number = resultNumber(reply);
    if (number === RESULT_ACCESS_DENIED) throw accessDenied('DeletePairRecord');
    if (number !== 0 && number !== 2) throw new MuxwireError('MUXWIRE_ERR_PAIR_RECORD', `usbmuxd could not delete the pair record for ${udid} (result ${number})`, { detail: number });
  }

  /** The daemon's clients that are listening for events. */
  async listListeners(): Promise<PlistDict[]> {
    const reply = await this.#plistCall('ListListeners', {});
    if (isPlistDict(reply) && Array.isArray(reply.ListenerList)) return reply.ListenerList.filter(isPlistDict);
    throw unexpected('ListListeners', reply);
  }

  /**
   * A socket to the daemon, authenticated first when a token is set and the daemon is reached over
   * TCP (access-policy.ts on the daemon's side: Result 0, or 13 and a closed socket).
   */
  async #open(timeoutMs: number): Promise<MuxdConnection> {
    const conn = await MuxdConnection.open(this.address, timeoutMs);
    if (this.#token === undefined || this.address.kind !== 'tcp') return conn;
    try {
      conn.send({ kind: 'plist', tag: this.#nextTag(), version: 1, plist: plistRequest('Authenticate', { Token: this.#token }, this.progName) });
      const number = resultNumber(messageBody(await conn.next(timeoutMs, 'Authenticate result')));
      if (number === ResultCode.OK) return conn;
      throw new MuxwireError('MUXWIRE_ERR_ACCESS_DENIED', `the daemon refused the TCP token (result ${number ?? 'none'})`, { detail: number });
    } catch (err) {
      conn.close();
      throw err;
    }
  }

  #nextTag(): number {
    const tag = this.#tag;
    this.#tag = (this.#tag % 0x7fffffff) + 1;
    return tag;
  }

  /** One plist request on a fresh socket; returns the reply's dictionary (or Result). */
  async #plistCall(messageType: string, fields: PlistDict): Promise<PlistDict> {
    const conn = await this.#open(this.timeoutMs);
    try {
      conn.send({ kind: 'plist', tag: this.#nextTag(), version: 1, plist: plistRequest(messageType, fields, this.progName) });
      const reply = await conn.next(this.timeoutMs, `${messageType} reply`);
      return messageBody(reply);
    } finally {
      conn.close();
    }
  }

  async #openListen(): Promise<MuxdConnection> {
    for (;;) {
      const conn = await this.#open(this.timeoutMs);
      const tag = this.#nextTag();
      if (this.#protocol === 'plist') {
        conn.send({ kind: 'plist', tag, version: 1, plist: plistRequest('Listen', {}, this.progName) });
      } else {
        conn.send({ kind: 'listen', tag });
      }
      let number: number | undefined;
      try {
        number = resultNumber(messageBody(await conn.next(this.timeoutMs, 'Listen result')));
      } catch (err) {
        conn.close();
        throw err;
      }
      if (number === ResultCode.BADVERSION && this.#protocol === 'plist') {
        this.#protocol = 'binary';
        conn.close();
        continue;
      }
      if (number !== 0) {
        conn.close();
        if (number === RESULT_ACCESS_DENIED) throw accessDenied('Listen');
        throw new MuxwireError('MUXWIRE_ERR_DAEMON', `usbmuxd refused Listen (result ${number})`, { detail: number });
      }
      return conn;
    }
  }

  async #listViaListen(): Promise<DeviceInfo[]> {
    const conn = await this.#openListen();
    const devices = new Map<number, DeviceInfo>();
    try {
      for (;;) {
        let msg: ClientMessage;
        try {
          msg = await conn.next(100, 'event');
        } catch (err) {
          if ((err as MuxwireError).code === 'MUXWIRE_ERR_TIMEOUT') break;
          throw err;
        }
        const event = DeviceWatcher.toEvent(msg);
        if (event?.type === 'attached') devices.set(event.device.deviceId, event.device);
        else if (event?.type === 'detached') devices.delete(event.deviceId);
      }
    } finally {
      conn.close();
    }
    return [...devices.values()];
  }
}

/** The dictionary a reply carries, with binary RESULTs shown as `{MessageType: Result, Number}`. */
export function messageBody(msg: ClientMessage): PlistDict {
  switch (msg.kind) {
    case 'plist':
      return msg.plist;
    case 'result':
      return { MessageType: 'Result', Number: msg.result };
    default:
      throw new MuxwireError('MUXWIRE_ERR_BAD_MESSAGE', `usbmuxd sent an unexpected ${msg.kind} message`);
  }
}

function resultNumber(reply: PlistDict): number | undefined {
  if (reply.MessageType === 'Result' && typeof reply.Number === 'number') return reply.Number;
  return undefined;
}

/** Result 13 (EACCES): a muxwire daemon's access policy said no (`--pair-access`, `--tcp-token`). */
const RESULT_ACCESS_DENIED = 13;

function accessDenied(what: string): MuxwireError {
  return new MuxwireError('MUXWIRE_ERR_ACCESS_DENIED', `usbmuxd refused ${what}: access denied (result 13; the daemon's --pair-access, or its --tcp-token: give it with --tcp-token FILE)`, {
    detail: RESULT_ACCESS_DENIED,
  });
}

function unexpected(what: string, reply: PlistDict): MuxwireError {
  const number = resultNumber(reply);
  if (number === RESULT_ACCESS_DENIED) return accessDenied(what);
  return new MuxwireError(
    'MUXWIRE_ERR_DAEMON',
    number !== undefined ? `usbmuxd answered ${what} with result ${number}` : `usbmuxd sent an unexpected reply to ${what}`,
    { detail: number },
  );
}

function connectError(number: number | undefined, deviceId: number, port: number): MuxwireError {
  if (number === ResultCode.CONNREFUSED) {
    return new MuxwireError('MUXWIRE_ERR_CONN_REFUSED', `device ${deviceId} refused the connection to port ${port}`, { detail: number });
  }
  if (number === ResultCode.BADDEV) {
    return new MuxwireError('MUXWIRE_ERR_NO_DEVICE', `device ${deviceId} is not attached`, { detail: number });
  }
  if (number === RESULT_ACCESS_DENIED) return accessDenied(`Connect to ${deviceId}:${port}`);
  return new MuxwireError('MUXWIRE_ERR_DAEMON', `usbmuxd refused Connect to ${deviceId}:${port} (result ${number})`, { detail: number });
}
