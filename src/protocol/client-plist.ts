/**
 * The dictionaries of the plist (v1) client protocol (usbmux.md §4.4–§4.7, §4.12): requests as
 * libusbmuxd sends them, replies and events as usbmuxd sends them. All of them travel as the body
 * of a PLIST message (client-message.ts):
 *
 * ```
 * request  { ClientVersionString, MessageType, ProgName, kLibUSBMuxVersion: 3, …fields }
 * Result   { MessageType: "Result", Number: n }
 * Attached { MessageType: "Attached", DeviceID, Properties: { ConnectionSpeed, ConnectionType,
 *            DeviceID, LocationID, ProductID, SerialNumber [, UDID, USBSerialNumber] } }
 * Detached { MessageType: "Detached", DeviceID }          Paired { MessageType: "Paired", DeviceID }
 * Connect  PortNumber = htons(port) read as an integer: 62078 → 32498 (byte swap, §4.7)
 * ```
 */
import { PlistReal, isPlistDict } from './plist.js';
import type { PlistDict, PlistValue } from './plist.js';

/** `kLibUSBMuxVersion` that libusbmuxd sends (usbmux.md §4.12). */
export const LIBUSBMUX_VERSION = 3;

/** What we put in `ClientVersionString` (libusbmuxd sends "libusbmuxd <version>"). */
export const CLIENT_VERSION_STRING = 'muxwire 0.1.0';

/**
 * The integer a plist Connect carries in `PortNumber`: the port in network byte order read as a
 * little-endian u16, i.e. its two bytes swapped (62078 = 0xF27E → 0x7EF2 = 32498). Every client
 * studied does this (libusbmuxd htons, go-ios, pymobiledevice3, appium).
 */
export function encodePortNumber(port: number): number {
  return ((port & 0xff) << 8) | ((port >>> 8) & 0xff);
}

/**
 * The port a plist `PortNumber` means (ntohs, a swap). usbmuxd truncates a larger number to u16;
 * a daemon request is range-checked first (REQUEST_INTEGER_FIELDS), so `n` is 0..65535 here.
 */
export function decodePortNumber(n: number): number {
  return encodePortNumber(n & 0xffff);
}

/**
 * Every integer a request dictionary may carry, with its largest value: device ids are u32
 * (usbmuxd's `uint32_t device_id`), PortNumber is the u16 of htons, kLibUSBMuxVersion a u32.
 * usbmuxd reads each with `plist_get_uint_val` and casts, so DeviceID 2^40+1 means device 1 and
 * PortNumber 70000 a 16-bit wrap; a daemon refuses them instead (Result 1, BADCOMMAND).
 */
export const REQUEST_INTEGER_FIELDS: Readonly<Record<string, number>> = {
  DeviceID: 0xffffffff,
  PortNumber: 0xffff,
  kLibUSBMuxVersion: 0xffffffff,
};

/**
 * Why `value` is not an integer in 0..`max`, or undefined when it is one: a negative or too
 * large integer, a real (even an integral one, which a decoder with `keepReals` hands over as a
 * PlistReal), or another type.
 */
export function integerFieldProblem(value: PlistValue, max: number): string | undefined {
  if (typeof value === 'number') {
    // A plain number from a decoder without keepReals may be a real: only integers pass.
    if (!Number.isInteger(value)) return `${value} is not an integer`;
    return value < 0 || value > max ? `${value} is outside 0..${max}` : undefined;
  }
  if (typeof value === 'bigint') return `${value} is outside 0..${max}`; // safe integers are numbers
  if (value instanceof PlistReal) return `a real (${value.value}) where an integer belongs`;
  return `a ${plistTypeName(value)} where an integer belongs`;
}

/**
 * The first integer field of a request (REQUEST_INTEGER_FIELDS) whose value is out of range or of
 * another type, as `key: why`, or undefined when every one present is good.
 */
export function requestIntegerProblem(req: PlistDict): string | undefined {
  for (const key in REQUEST_INTEGER_FIELDS) {
    const value = Object.hasOwn(req, key) ? req[key] : undefined;
    if (value === undefined) continue;
    const why = integerFieldProblem(value, REQUEST_INTEGER_FIELDS[key]!);
    if (why !== undefined) return `${key}: ${why}`;
  }
  return undefined;
}

function plistTypeName(v: PlistValue): string {
  if (typeof v === 'string') return 'string';
  if (typeof v === 'boolean') return 'boolean';
  if (Buffer.isBuffer(v)) return 'data';
  if (v instanceof Date) return 'date';
  if (Array.isArray(v)) return 'array';
  return isPlistDict(v) ? 'dictionary' : 'UID';
}

/** What the daemon knows about one attached device, as Properties reports it. */
export interface DeviceProperties {
  deviceId: number;
  productId: number;
  /** The UDID as usbmuxd reports it (dashed for 24-character serials). */
  serialNumber: string;
  locationId: number;
  /** bit/s (usbmux.md §1.6). */
  connectionSpeed: number;
  connectionType: 'USB' | 'Network';
  /** Apple's daemon adds these two; usbmuxd does not (§4.5). */
  udid?: string;
  usbSerialNumber?: string;
  /** Network devices (§4.5): a raw sockaddr (Apple's layout), the mDNS service, the interface. */
  networkAddress?: Buffer;
  escapedFullServiceName?: string;
  interfaceIndex?: number;
}

/** The `Properties` dictionary, keys in usbmuxd's order (alphabetical), Apple's extras last. */
export function deviceProperties(dev: DeviceProperties): PlistDict {
  if (dev.connectionType === 'Network') {
    // The keys Apple's daemon, usbmuxd2 and netmuxd give a network device, alphabetical (§4.5).
    return {
      ConnectionType: 'Network',
      DeviceID: dev.deviceId,
      EscapedFullServiceName: dev.escapedFullServiceName ?? '',
      InterfaceIndex: dev.interfaceIndex ?? 0,
      NetworkAddress: dev.networkAddress ?? Buffer.alloc(0),
      SerialNumber: dev.serialNumber,
    };
  }
  const props: PlistDict = {
    ConnectionSpeed: dev.connectionSpeed,
    ConnectionType: dev.connectionType,
    DeviceID: dev.deviceId,
    LocationID: dev.locationId,
    ProductID: dev.productId,
    SerialNumber: dev.serialNumber,
  };
  if (dev.udid !== undefined) props.UDID = dev.udid;
  if (dev.usbSerialNumber !== undefined) props.USBSerialNumber = dev.usbSerialNumber;
  return props;
}

/** Reads a Properties dictionary back (from any daemon); undefined when a required key is missing. */
export function parseDeviceProperties(props: PlistValue | undefined): DeviceProperties | undefined {
  if (!isPlistDict(props)) return undefined;
  const num = (v: PlistValue | undefined): number | undefined =>
    typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v & 0xffffffffn) : undefined;
  const deviceId = num(props.DeviceID);
  const serialNumber = props.SerialNumber;
  if (deviceId === undefined || typeof serialNumber !== 'string') return undefined;
  const dev: DeviceProperties = {
    deviceId,
    productId: num(props.ProductID) ?? 0,
    serialNumber,
    locationId: num(props.LocationID) ?? 0,
    connectionSpeed: num(props.ConnectionSpeed) ?? 0,
    connectionType: props.ConnectionType === 'Network' ? 'Network' : 'USB',
  };
  if (typeof props.UDID === 'string') dev.udid = props.UDID;
  if (typeof props.USBSerialNumber === 'string') dev.usbSerialNumber = props.USBSerialNumber;
  if (Buffer.isBuffer(props.NetworkAddress)) dev.networkAddress = props.NetworkAddress;
  if (typeof props.EscapedFullServiceName === 'string') dev.escapedFullServiceName = props.EscapedFullServiceName;
  const interfaceIndex = num(props.InterfaceIndex);
  if (interfaceIndex !== undefined) dev.interfaceIndex = interfaceIndex;
  return dev;
}

/** `{MessageType: "Attached", DeviceID, Properties}` — a Listen event and a DeviceList entry. */
export function attachedEvent(dev: DeviceProperties): PlistDict {
  return { MessageType: 'Attached', DeviceID: dev.deviceId, Properties: deviceProperties(dev) };
}

/** `{MessageType: "Detached", DeviceID}`. */
export function detachedEvent(deviceId: number): PlistDict {
  return { MessageType: 'Detached', DeviceID: deviceId };
}

/** `{MessageType: "Paired", DeviceID}` (sent after a SavePairRecord with a matching DeviceID). */
export function pairedEvent(deviceId: number): PlistDict {
  return { MessageType: 'Paired', DeviceID: deviceId };
}

/** `{MessageType: "Result", Number: n}`. */
export function resultMessage(n: number): PlistDict {
  return { MessageType: 'Result', Number: n };
}

/** The client-information keys libusbmuxd adds to every request. */
export function clientInfo(progName: string): PlistDict {
  return { ClientVersionString: CLIENT_VERSION_STRING, ProgName: progName, kLibUSBMuxVersion: LIBUSBMUX_VERSION };
}

/**
 * A request dictionary as libusbmuxd builds it (`create_plist_message`): client information and
 * MessageType first, then the request's own fields. Undefined fields are skipped when encoded.
 */
export function plistRequest(messageType: string, fields: PlistDict = {}, progName = 'muxwire'): PlistDict {
  return {
    ClientVersionString: CLIENT_VERSION_STRING,
    MessageType: messageType,
    ProgName: progName,
    kLibUSBMuxVersion: LIBUSBMUX_VERSION,
    ...fields,
  };
}

// ─── Requests ─────────────────────────────────────────────────────────────────────────────────

/** `ListDevices`: reply `{DeviceList: [Attached…]}`. */
export function listDevicesRequest(progName?: string): PlistDict {
  return plistRequest('ListDevices', {}, progName);
}

/** `Listen`: reply Result 0, then Attached/Detached/Paired events. */
export function listenRequest(progName?: string): PlistDict {
  return plistRequest('Listen', {}, progName);
}

/** Connect to a device port; `port` is the ordinary port number, swapped here into PortNumber. */
export function connectRequest(deviceId: number, port: number, progName?: string): PlistDict {
  return plistRequest('Connect', { DeviceID: deviceId, PortNumber: encodePortNumber(port) }, progName);
}

/** `ListListeners`: reply `{ListenerList}`. */
export function listListenersRequest(progName?: string): PlistDict {
  return plistRequest('ListListeners', {}, progName);
}

/** `ReadBUID`: reply `{BUID}`. */
export function readBuidRequest(progName?: string): PlistDict {
  return plistRequest('ReadBUID', {}, progName);
}

/** `ReadPairRecord {PairRecordID}`: reply `{PairRecordData}`, or Result 2 (ENOENT). */
export function readPairRecordRequest(udid: string, progName?: string): PlistDict {
  return plistRequest('ReadPairRecord', { PairRecordID: udid }, progName);
}

/** SavePairRecord; with `deviceId` the daemon sends a Paired event (usbmux.md §4.4). */
export function savePairRecordRequest(udid: string, record: Buffer, deviceId?: number, progName?: string): PlistDict {
  return plistRequest('SavePairRecord', { PairRecordID: udid, PairRecordData: record, DeviceID: deviceId }, progName);
}

/** `DeletePairRecord {PairRecordID}`: reply Result 0 or an errno. */
export function deletePairRecordRequest(udid: string, progName?: string): PlistDict {
  return plistRequest('DeletePairRecord', { PairRecordID: udid }, progName);
}

// ─── Replies (no MessageType at the top level, usbmux.md §4.4) ─────────────────────────────────

/** `{DeviceList: [Attached…]}`. */
export function deviceListReply(devices: DeviceProperties[]): PlistDict {
  return { DeviceList: devices.map(attachedEvent) };
}

/** One ListListeners entry, as usbmuxd builds it. */
export interface ListenerInfo {
  /** usbmuxd puts "<client number>-<ProgName or unknown>" here. */
  idString: string;
  progName?: string;
  bundleId?: string;
  libUSBMuxVersion?: number;
}

/** `{ListenerList: [{Blacklisted, BundleID?, ConnType, "ID String", ProgName, kLibUSBMuxVersion}…]}`. */
export function listenersReply(listeners: ListenerInfo[]): PlistDict {
  return {
    ListenerList: listeners.map((l) => ({
      Blacklisted: false,
      BundleID: l.bundleId,
      ConnType: 0,
      'ID String': l.idString,
      ProgName: l.progName ?? 'unknown',
      kLibUSBMuxVersion: l.libUSBMuxVersion ?? LIBUSBMUX_VERSION,
    })),
  };
}

/** Bytes one listener's entry takes in a ListListeners reply at most, besides its strings. */
const LISTENER_ENTRY_FIXED = 400;

/** Bytes `s` takes in XML at most: its UTF-8 and each escape (`&amp;` is the longest, +4). */
function xmlBytesAtMost(s: string | undefined): number {
  if (s === undefined) return 0;
  let escapes = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x26 || c === 0x3c || c === 0x3e || c === 0x0d) escapes++;
  }
  return Buffer.byteLength(s) + 4 * escapes;
}

/**
 * An upper bound of the bytes listenersReply(listeners) encodes to, found without encoding it: the
 * daemon refuses a reply over its cap before building a string that may not even fit in memory.
 */
export function listenersReplyBytesAtMost(listeners: readonly ListenerInfo[]): number {
  let total = LISTENER_ENTRY_FIXED;
  for (const l of listeners) total += LISTENER_ENTRY_FIXED + xmlBytesAtMost(l.idString) + xmlBytesAtMost(l.progName ?? 'unknown') + xmlBytesAtMost(l.bundleId);
  return total;
}

/** `{BUID: string}`. */
export function buidReply(buid: string): PlistDict {
  return { BUID: buid };
}

/** `{PairRecordData: data}` (the stored record's raw bytes). */
export function pairRecordReply(record: Buffer): PlistDict {
  return { PairRecordData: record };
}
