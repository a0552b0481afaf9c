/**
 * Embedded mode: the client API with no daemon. The process owns the device links itself — a
 * vusb bus, in-process simulated devices, or any DeviceSource — and runs the host mux engine
 * (src/mux) and the usbmuxd-compatible pair store in-process, for backup tools and CI runners that
 * want the USB device to themselves (ecosystem.md §4.6: one muxer per device limits the blast
 * radius). The device table is the daemon's own DeviceRegistry, so ids, visibility and unplug
 * behave exactly as through `muxwire daemon`.
 */
import type { Duplex } from 'node:stream';
import { MuxwireError } from '../errors.js';
import { DeviceRegistry, type DeviceEntry } from '../daemon/device-registry.js';
import { PairStore } from '../daemon/pair-store.js';
import { deviceProperties } from '../protocol/client-plist.js';
import type { PlistDict } from '../protocol/plist.js';
import type { DeviceLink, DeviceSource } from '../transport/device-link.js';
import { VusbSource } from '../transport/vusb-source.js';
import { deviceFromPlist, pickDevice, type ConnectionType, type DeviceInfo } from './device-info.js';
import { DeviceWatcher } from './device-watcher.js';
import type { DeviceMuxer } from './device-services.js';

export interface EmbeddedMuxerOptions {
  /** Pair-record directory, usbmuxd's layout (default /var/lib/lockdown). */
  pairDir: string;
  /** A vusb bus directory to take simulated devices from. */
  vusbDir?: string;
  /** More device sources (e.g. real USB). */
  sources?: DeviceSource[];
  /** Device connect timeout (ms, default 5000). */
  connectTimeoutMs?: number;
}

export class EmbeddedMuxer implements DeviceMuxer {
  readonly #registry: DeviceRegistry;
  readonly #pairs: PairStore;
  readonly #sources: DeviceSource[] = [];
  #closed = false;

  private constructor(options: EmbeddedMuxerOptions) {
    this.#registry = new DeviceRegistry({ connectTimeoutMs: options.connectTimeoutMs });
    this.#pairs = new PairStore(options.pairDir);
    this.#pairs.on('saved', (e: { udid: string; deviceId?: number }) => this.#registry.notePaired(e.udid, e.deviceId));
  }

  /** Opens the muxer and starts its device sources. */
  static async open(options: EmbeddedMuxerOptions): Promise<EmbeddedMuxer> {
    const muxer = new EmbeddedMuxer(options);
    const sources = [...(options.sources ?? [])];
    if (options.vusbDir) sources.push(new VusbSource({ dir: options.vusbDir }));
    for (const source of sources) await muxer.addSource(source);
    return muxer;
  }

  /** Takes devices from a source (attach and detach events) and starts it. */
  async addSource(source: DeviceSource): Promise<void> {
    this.#sources.push(source);
    source.on('attach', (link: DeviceLink) => this.addLink(link));
    source.on('detach', (link: DeviceLink) => this.#registry.detach(link));
    await source.start();
  }

  /** Adds one device link (e.g. `SimulatedDevice.inProcessLink()`). */
  addLink(link: DeviceLink): void {
    if (this.#closed) link.close();
    else this.#registry.attach(link);
  }

  async listDevices(): Promise<DeviceInfo[]> {
    return this.#registry.visible().map(toInfo);
  }

  /** As UsbmuxClient.findDevice: `connection` picks the USB or the network entry. */
  async findDevice(udid?: string, options: { connection?: ConnectionType } = {}): Promise<DeviceInfo> {
    return pickDevice(await this.listDevices(), udid, options.connection);
  }

  /** Attach, detach and pair events: the same watcher as over a daemon. */
  watch(options: { signal?: AbortSignal } = {}): DeviceWatcher {
    const registry = this.#registry;
    return new DeviceWatcher(async (emit) => {
      const attached = (entry: DeviceEntry): void => emit({ type: 'attached', device: toInfo(entry) });
      const detached = (entry: DeviceEntry): void => emit({ type: 'detached', deviceId: entry.id });
      const paired = (entry: DeviceEntry): void => emit({ type: 'paired', deviceId: entry.id });
      for (const entry of registry.visible()) attached(entry);
      registry.on('attached', attached);
      registry.on('detached', detached);
      registry.on('paired', paired);
      return () => {
        registry.off('attached', attached);
        registry.off('detached', detached);
        registry.off('paired', paired);
      };
    }, options.signal);
  }

  /** A stream to `port` on the device, straight through the in-process mux engine. */
  async connect(device: DeviceInfo | number, port: number): Promise<Duplex> {
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `device port must be 1..65535, not ${port}`);
    }
    const id = typeof device === 'number' ? device : device.deviceId;
    const entry = this.#registry.get(id);
    if (!entry || entry.state === 'gone') throw new MuxwireError('MUXWIRE_ERR_NO_DEVICE', `device ${id} is not attached`);
    return entry.session.connect(port);
  }

  readBUID(): Promise<string> {
    return this.#pairs.readBUID();
  }

  readPairRecord(udid: string): Promise<PlistDict | undefined> {
    return this.#pairs.readPairRecord(udid);
  }

  savePairRecord(udid: string, record: PlistDict, deviceId?: number): Promise<void> {
    return this.#pairs.savePairRecord(udid, record, deviceId);
  }

  deletePairRecord(udid: string): Promise<void> {
    return this.#pairs.deletePairRecord(udid);
  }

  /** Stops the sources and closes every device session. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const source of this.#sources) await source.stop();
    await this.#registry.close();
  }
}

function toInfo(entry: DeviceEntry): DeviceInfo {
  return deviceFromPlist({ DeviceID: entry.id, Properties: deviceProperties(entry.properties) });
}
