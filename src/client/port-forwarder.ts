/**
 * Port forwarding (`muxwire forward LOCAL:DEVICE …`), like iproxy but in one process for many pairs:
 * each accepted local connection looks the device up again (so the forwarder survives unplug and
 * replug, ecosystem.md §4.6), connects through the muxer and relays both ways with backpressure
 * (pipe pauses the faster side). Binds loopback unless told otherwise — iproxy's usage says
 * 127.0.0.1 but it binds the wildcard (usbmux.md §4.12); we do what the usage says.
 */
import { EventEmitter } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { MuxwireError } from '../errors.js';
import { log } from '../log.js';
import type { ConnectionType, DeviceInfo } from './device-info.js';

export interface ForwardPair {
  localPort: number;
  devicePort: number;
}

/** What the forwarder needs from a muxer: the UsbmuxClient and embedded mode both fit. */
export interface ForwardMux {
  findDevice(udid?: string, options?: { connection?: ConnectionType }): Promise<DeviceInfo>;
  connect(device: DeviceInfo, port: number): Promise<Socket | NodeJS.ReadWriteStream>;
}

export interface PortForwarderOptions {
  mux: ForwardMux;
  pairs: ForwardPair[];
  /** UDID of the device to reach; default: the first USB device at each accept. */
  udid?: string;
  /** Which entry of a device on USB and on the network at once (default: USB first). */
  connection?: ConnectionType;
  /** Address to bind; default 127.0.0.1. */
  host?: string;
}

/** Parses `LOCAL:DEVICE` (e.g. `2222:22`). */
export function parseForwardPair(text: string): ForwardPair {
  const m = /^(\d{1,5}):(\d{1,5})$/.exec(text.trim());
  const localPort = m ? Number(m[1]) : NaN;
  const devicePort = m ? Number(m[2]) : NaN;
  if (!m || localPort > 65535 || devicePort < 1 || devicePort > 65535) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `'${text}' is not LOCAL:DEVICE (two ports, e.g. 2222:22)`);
  }
  return { localPort, devicePort };
}

/**
 * The positional arguments of `muxwire forward`, in iproxy's forms too: `LOCAL:DEVICE…` pairs, or
 * iproxy's old form `LOCAL DEVICE [UDID]` (two plain port numbers, then optionally the UDID).
 * Returns the pairs and the UDID the old form named, if any.
 */
export function parseForwardArgs(positionals: readonly string[]): { pairs: ForwardPair[]; udid?: string } {
  if (positionals.length === 0) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', 'give at least one LOCAL:DEVICE pair');
  const plain = (t: string | undefined): boolean => t !== undefined && /^\d{1,5}$/.test(t.trim());
  if ((positionals.length === 2 || positionals.length === 3) && plain(positionals[0]) && plain(positionals[1])) {
    const pairs = [parseForwardPair(`${positionals[0]!.trim()}:${positionals[1]!.trim()}`)];
    const udid = positionals[2]?.trim();
    if (udid === '') throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', 'the UDID after LOCAL DEVICE is empty');
    return udid === undefined ? { pairs } : { pairs, udid };
  }
  return { pairs: positionals.map(parseForwardPair) };
}

/** Events: 'connection' ({pair, device}), 'relay-error' (err, pair), 'close'. */
export class PortForwarder extends EventEmitter {
  readonly #options: PortForwarderOptions;
  readonly #servers: Server[] = [];
  readonly #sockets = new Set<Socket | NodeJS.ReadWriteStream>();
  #active = 0;

  constructor(options: PortForwarderOptions) {
    super();
    if (options.pairs.length === 0) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', 'nothing to forward: give at least one LOCAL:DEVICE pair');
    this.#options = options;
  }

  /** Connections being relayed now. */
  get activeConnections(): number {
    return this.#active;
  }

  /** Binds every pair; resolves with the bound addresses (a local port of 0 picks a free one). */
  async listen(): Promise<{ pair: ForwardPair; address: AddressInfo }[]> {
    const host = this.#options.host ?? '127.0.0.1';
    const bound: { pair: ForwardPair; address: AddressInfo }[] = [];
    try {
      for (const pair of this.#options.pairs) {
        const server = createServer((socket) => this.#accept(pair, socket));
        this.#servers.push(server);
        await new Promise<void>((resolve, reject) => {
          server.once('error', (err: NodeJS.ErrnoException) =>
            reject(new MuxwireError('MUXWIRE_ERR_LISTEN', `cannot listen on ${host}:${pair.localPort}: ${err.code ?? err.message}`, { cause: err })),
          );
          server.listen(pair.localPort, host, () => resolve());
        });
        bound.push({ pair, address: server.address() as AddressInfo });
      }
    } catch (err) {
      await this.close();
      throw err;
    }
    return bound;
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) (s as Socket).destroy?.();
    await Promise.all(this.#servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    this.#servers.length = 0;
    this.emit('close');
  }

  async #accept(pair: ForwardPair, local: Socket): Promise<void> {
    this.#sockets.add(local);
    this.#active++;
    local.on('error', () => undefined);
    local.pause();
    let remote: Socket | NodeJS.ReadWriteStream | undefined;
    const pairLog = log.child({ forward: `${pair.localPort}:${pair.devicePort}` });
    const from = `${local.remoteAddress ?? '?'}:${local.remotePort ?? '?'}`;
    const done = (): void => {
      if (!this.#sockets.delete(local)) return;
      this.#active--;
      if (pairLog.enabled('debug')) pairLog.debug(`${from} closed: ${local.bytesRead} bytes to the device, ${local.bytesWritten} from it`);
      local.destroy();
      if (remote) {
        this.#sockets.delete(remote);
        (remote as Socket).destroy?.();
      }
    };
    local.once('close', done);
    try {
      const device = await this.#options.mux.findDevice(this.#options.udid, this.#options.connection !== undefined ? { connection: this.#options.connection } : {});
      remote = await this.#options.mux.connect(device, pair.devicePort);
      if (local.destroyed) {
        (remote as Socket).destroy?.();
        return;
      }
      this.#sockets.add(remote);
      (remote as Socket).on('error', done);
      (remote as Socket).once('close', done);
      remote.on('end', () => local.end());
      local.on('end', () => (remote as Socket).end?.());
      local.pipe(remote as NodeJS.WritableStream, { end: false });
      remote.pipe(local, { end: false });
      local.resume();
      if (pairLog.enabled('debug')) pairLog.debug(`${from} connected to ${device.udid} port ${pair.devicePort}`);
      this.emit('connection', { pair, device });
    } catch (err) {
      pairLog.warn((err as Error).message);
      this.emit('relay-error', err, pair);
      done();
    }
  }
}
