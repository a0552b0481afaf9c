/**
 * A device as a usbmuxd reports it (the Properties dictionary of an Attached event, usbmux.md §4.5),
 * in one shape whatever the daemon: ours, libimobiledevice's or Apple's, binary or plist.
 */
import type { PlistDict } from '../protocol/plist.js';
import type { DeviceRecord } from '../protocol/client-message.js';
import { MuxwireError } from '../errors.js';
import { decodeNetworkAddress } from '../protocol/network-address.js';

/** How a device is attached: a cable, or the network (Wi-Fi). */
export type ConnectionType = 'USB' | 'Network';

export interface DeviceInfo {
  /** The daemon's id for this attachment (a replug gets a new one). */
  deviceId: number;
  /** The UDID, as the daemon reports it in SerialNumber (dashed 25-character form for new devices). */
  udid: string;
  productId: number;
  locationId: number;
  /** Link speed in bit/s when the daemon says. */
  connectionSpeed?: number;
  /** `USB` or `Network` (a daemon may send another word; it is kept as sent). */
  connectionType: ConnectionType | (string & {});
  /** Network devices: the address the daemon reports in NetworkAddress, and its mDNS service name. */
  networkAddress?: string;
  serviceName?: string;
  /** Everything the daemon sent, as sent. */
  properties: PlistDict;
}

export type DeviceEvent =
  | { type: 'attached'; device: DeviceInfo }
  | { type: 'detached'; deviceId: number; device?: DeviceInfo }
  | { type: 'paired'; deviceId: number; device?: DeviceInfo };

function num(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  return undefined;
}

/** Reads an Attached event's (or a DeviceList entry's) dictionary. */
export function deviceFromPlist(entry: PlistDict): DeviceInfo {
  const props = (entry.Properties && typeof entry.Properties === 'object' && !Array.isArray(entry.Properties)
    ? (entry.Properties as PlistDict)
    : entry) as PlistDict;
  const deviceId = num(entry.DeviceID) ?? num(props.DeviceID) ?? 0;
  const udid = String(props.SerialNumber ?? props.UDID ?? '');
  const info: DeviceInfo = {
    deviceId,
    udid,
    productId: num(props.ProductID) ?? 0,
    locationId: num(props.LocationID) ?? 0,
    connectionType: typeof props.ConnectionType === 'string' ? props.ConnectionType : 'USB',
    properties: props,
  };
  const speed = num(props.ConnectionSpeed);
  if (speed !== undefined) info.connectionSpeed = speed;
  if (Buffer.isBuffer(props.NetworkAddress)) {
    const addr = decodeNetworkAddress(props.NetworkAddress);
    if (addr !== undefined) info.networkAddress = addr.address;
  }
  if (typeof props.EscapedFullServiceName === 'string') info.serviceName = props.EscapedFullServiceName;
  return info;
}

/** Reads a binary DEVICE_ADD record (its connection type is USB: binary daemons only have USB). */
export function deviceFromRecord(record: DeviceRecord): DeviceInfo {
  return {
    deviceId: record.deviceId,
    udid: record.serialNumber,
    productId: record.productId,
    locationId: record.locationId,
    connectionType: 'USB',
    properties: {
      DeviceID: record.deviceId,
      ProductID: record.productId,
      SerialNumber: record.serialNumber,
      LocationID: record.locationId,
      ConnectionType: 'USB',
    },
  };
}

/**
 * The device `udid` names (any when undefined) among `devices`. A device on USB and on the network
 * at once has two entries: `connection` picks one (as libimobiledevice's `-n`); without it the USB
 * entry comes first. MUXWIRE_ERR_NO_DEVICE when none fits.
 */
export function pickDevice(devices: DeviceInfo[], udid: string | undefined, connection?: ConnectionType): DeviceInfo {
  const fits = devices.filter((d) => (udid === undefined || sameUdid(d.udid, udid)) && (connection === undefined || d.connectionType === connection));
  const found = fits.find((d) => d.connectionType === 'USB') ?? fits[0];
  if (found === undefined) {
    const which = connection === 'Network' ? 'network device' : connection === 'USB' ? 'USB device' : 'device';
    throw new MuxwireError('MUXWIRE_ERR_NO_DEVICE', udid ? `no ${which} with UDID ${udid} is attached` : `no ${which} is attached`);
  }
  return found;
}

/** UDIDs compare equal in their 24-character and dashed 25-character forms (usbmux.md §6.19). */
export function sameUdid(a: string, b: string): boolean {
  return a.replace(/-/g, '').toLowerCase() === b.replace(/-/g, '').toLowerCase();
}
