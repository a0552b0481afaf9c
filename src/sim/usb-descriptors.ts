/**
 * The USB descriptors of a simulated iPhone in its initial mode ("mode 1", usbmux.md §1.2): four
 * configurations, laid out after descriptor dumps of real iPhones (USBView dump of an iOS 17 device
 * in fritzlb/iOS17-JIT-WIN#8, `lsusb -v` of iOS 10 and 12 devices in liquidctl#412 and
 * facedancer#82):
 *
 * ```
 * config 1 "PTP"                                  wTotalLength 39 (0x27)
 *   if 0  06/01/01 still image (PTP)  EP 0x02 bulk OUT, 0x81 bulk IN, 0x83 interrupt IN
 * config 2 "iPod USB Interface"                   wTotalLength 149 (0x95)
 *   if 0  01/01/00 audio control      (class-specific header, input + output terminal)
 *   if 1  01/02/00 audio streaming    alt 0: no endpoint; alt 1: EP 0x81 isochronous IN
 *   if 2  03/00/00 HID                EP 0x83 interrupt IN
 * config 3 "PTP + Apple Mobile Device"            wTotalLength 62 (0x3E)
 *   if 0  PTP as in config 1
 *   if 1  FF/FE/02 usbmux             EP 0x04 bulk OUT, 0x85 bulk IN
 * config 4 "PTP + Apple Mobile Device + Apple USB Ethernet"  wTotalLength 117 (0x75)
 *   if 0  PTP, if 1 usbmux as in config 3
 *   if 2  FF/FD/01 Apple USB Ethernet alt 0: no endpoint; alt 1, 2: EP 0x86 bulk IN, 0x05 bulk OUT
 * ```
 *
 * Configs 1, 3 and 4 reproduce the iOS 17 dump byte for byte at high speed. Config 2's audio
 * class descriptors are not in that dump: they are a plausible UAC1 layout (44.1/48 kHz 16-bit
 * stereo source) whose size matches the 149 bytes the dump reports. Bulk endpoints have 64-byte
 * packets at full speed, 512 at high speed, 1024 at SuperSpeed; at SuperSpeed every endpoint is
 * followed by its companion descriptor and the device has a BOS descriptor, as USB 3.x requires.
 *
 * Every descriptor here is an ordinary USB chapter 9 byte layout (little-endian fields):
 * device 18 bytes, configuration 9, interface 9, endpoint 7 (9 for audio), string 2 + 2n.
 */
import { UsbSpeed } from '../protocol/vusb-wire.js';
import { MuxwireError } from '../errors.js';
import {
  LANGID_EN_US,
  MUX_INTERFACE_CLASS,
  MUX_INTERFACE_PROTOCOL,
  MUX_INTERFACE_SUBCLASS,
  UsbDescriptorType,
  UsbTransferType,
} from '../transport/usb-standard.js';
import { VID_APPLE } from '../transport/usb-ids.js';

/** Link speed of a simulated device. */
export type SimUsbSpeed = 'high' | 'super';

/** One configuration as the device serves it. */
export interface SimUsbConfiguration {
  /** bConfigurationValue. */
  value: number;
  /** The whole configuration descriptor set (wTotalLength bytes). */
  descriptor: Buffer;
  /** The same configuration described for the other speed (high-speed devices only, type 7). */
  otherSpeed?: Buffer;
  /** Interface number → number of alternate settings. */
  interfaces: Map<number, number>;
  /** Endpoint addresses of altsetting 0 of every interface, for GET_STATUS / CLEAR_FEATURE. */
  endpoints: Set<number>;
}

/** Where the usbmux function lives in the descriptor set. */
export interface SimMuxFunction {
  configurationValue: number;
  interfaceNumber: number;
  outEndpoint: number;
  inEndpoint: number;
  maxPacketSize: number;
}

/** Everything the simulated device answers GET_DESCRIPTOR with. */
export interface SimUsbDescriptorSet {
  device: Buffer;
  /** Index = descriptor index (GET_DESCRIPTOR wValue low byte) = bConfigurationValue - 1. */
  configurations: SimUsbConfiguration[];
  /** High speed only: what the device would be at full speed (USB 2.0 §9.6.2). */
  deviceQualifier?: Buffer;
  /** SuperSpeed only (USB 3.x §9.6.2). */
  bos?: Buffer;
  /** String descriptor index → text; index 0 is the LANGID list. */
  strings: Map<number, string>;
  langIds: number[];
  mux: SimMuxFunction;
}

/** Options of iphoneDescriptors. */
export interface IphoneDescriptorOptions {
  /** idProduct, 0x1290–0x12AF for an iPhone-class device (0x12A8 for an iPhone). */
  productId: number;
  /** The serial number string exactly as the device reports it (24 or 40 characters). */
  serialNumber: string;
  speed: SimUsbSpeed;
  /** iProduct text. Default "iPhone". */
  productName?: string;
  /** bcdDevice. Default 0x1205, as an iOS 12.5 iPhone reports it. */
  bcdDevice?: number;
}

// String indices as the iOS 17 dump has them.
const STR_MANUFACTURER = 1;
const STR_PRODUCT = 2;
const STR_SERIAL = 3;
const STR_CONFIG_PTP = 5;
const STR_CONFIG_IPOD = 6;
const STR_CONFIG_PTP_MUX = 7;
const STR_CONFIG_PTP_MUX_ETH = 8;
const STR_IF_MUX = 0x0f;
const STR_IF_ETHERNET = 0x11;
const STR_IF_PTP = 0x1b;

type Speed = 'full' | 'high' | 'super';

function bulkPacket(speed: Speed): number {
  return speed === 'full' ? 64 : speed === 'high' ? 512 : 1024;
}

function interfaceDescriptor(num: number, alt: number, eps: number, cls: number, sub: number, proto: number, str: number): Buffer {
  return Buffer.from([9, UsbDescriptorType.INTERFACE, num, alt, eps, cls, sub, proto, str]);
}

function endpointDescriptor(speed: Speed, address: number, type: UsbTransferType, maxPacket: number, interval: number): Buffer {
  const ep = Buffer.from([7, UsbDescriptorType.ENDPOINT, address, type, maxPacket & 0xff, maxPacket >> 8, interval]);
  if (speed !== 'super') return ep;
  // USB 3.x §9.6.7: every endpoint of a SuperSpeed configuration is followed by its companion.
  // bMaxBurst 0 (one packet per burst): real iPhones' value is not in any dump we found.
  const perInterval = type === UsbTransferType.BULK ? 0 : maxPacket;
  return Buffer.concat([ep, Buffer.from([6, UsbDescriptorType.SUPERSPEED_ENDPOINT_COMPANION, 0, 0, perInterval & 0xff, perInterval >> 8])]);
}

function bulk(speed: Speed, address: number): Buffer {
  return endpointDescriptor(speed, address, UsbTransferType.BULK, bulkPacket(speed), 0);
}

function configurationDescriptor(
  type: UsbDescriptorType.CONFIGURATION | UsbDescriptorType.OTHER_SPEED_CONFIGURATION,
  speed: Speed,
  value: number,
  numInterfaces: number,
  str: number,
  body: Buffer[],
): Buffer {
  const total = 9 + body.reduce((n, b) => n + b.length, 0);
  // bmAttributes 0xC0: self-powered. bMaxPower 0xFA = 500 mA in 2 mA units (USB 2.0); at
  // SuperSpeed the unit is 8 mA, 0x70 = 896 mA.
  const maxPower = speed === 'super' ? 0x70 : 0xfa;
  const head = Buffer.from([9, type, total & 0xff, total >> 8, numInterfaces, value, str, 0xc0, maxPower]);
  return Buffer.concat([head, ...body]);
}

function ptpInterface(speed: Speed): Buffer[] {
  return [
    interfaceDescriptor(0, 0, 3, 0x06, 0x01, 0x01, STR_IF_PTP),
    bulk(speed, 0x02),
    bulk(speed, 0x81),
    endpointDescriptor(speed, 0x83, UsbTransferType.INTERRUPT, 64, speed === 'full' ? 0x40 : 0x0a),
  ];
}

function muxInterface(speed: Speed): Buffer[] {
  return [
    interfaceDescriptor(1, 0, 2, MUX_INTERFACE_CLASS, MUX_INTERFACE_SUBCLASS, MUX_INTERFACE_PROTOCOL, STR_IF_MUX),
    bulk(speed, 0x04),
    bulk(speed, 0x85),
  ];
}

function ethernetInterface(speed: Speed): Buffer[] {
  const parts = [interfaceDescriptor(2, 0, 0, 0xff, 0xfd, 0x01, STR_IF_ETHERNET)];
  for (const alt of [1, 2]) {
    parts.push(interfaceDescriptor(2, alt, 2, 0xff, 0xfd, 0x01, STR_IF_ETHERNET), bulk(speed, 0x86), bulk(speed, 0x05));
  }
  return parts;
}

function ipodInterfaces(speed: Speed): Buffer[] {
  // UAC1 audio control: header (wTotalLength 30 = header 9 + input terminal 12 + output terminal 9,
  // one streaming interface: 1), an input terminal "digital audio" feeding a USB-streaming output.
  const acHeader = Buffer.from([9, UsbDescriptorType.CS_INTERFACE, 0x01, 0x00, 0x01, 30, 0, 1, 1]);
  const inputTerminal = Buffer.from([12, UsbDescriptorType.CS_INTERFACE, 0x02, 1, 0x02, 0x06, 0, 2, 0x03, 0x00, 0, 0]);
  const outputTerminal = Buffer.from([9, UsbDescriptorType.CS_INTERFACE, 0x03, 2, 0x01, 0x01, 0, 1, 0]);
  // Streaming: general (terminal link 2, PCM) and format type I, 2 channels, 16 bits, the nine
  // sample rates the iOS 4 dump in libimobiledevice#1486 lists (8 kHz … 48 kHz).
  const asGeneral = Buffer.from([7, UsbDescriptorType.CS_INTERFACE, 0x01, 2, 1, 0x01, 0x00]);
  const rates = [8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000];
  const format = Buffer.alloc(8 + 3 * rates.length);
  format.set([format.length, UsbDescriptorType.CS_INTERFACE, 0x02, 0x01, 2, 2, 16, rates.length]);
  rates.forEach((r, i) => format.writeUIntLE(r, 8 + 3 * i, 3));
  // Audio endpoints are 9 bytes (bRefresh, bSynchAddress) in UAC1.
  const isoEp = Buffer.from([9, UsbDescriptorType.ENDPOINT, 0x81, UsbTransferType.ISOCHRONOUS, 0xc0, 0x00, speed === 'full' ? 1 : 4, 0, 0]);
  const isoCompanion = speed === 'super' ? [Buffer.from([6, UsbDescriptorType.SUPERSPEED_ENDPOINT_COMPANION, 0, 0, 0xc0, 0])] : [];
  const csEp = Buffer.from([7, UsbDescriptorType.CS_ENDPOINT, 0x01, 0x01, 0, 0, 0]);
  // HID 1.11, one report descriptor of 208 bytes (facedancer#82 reports that size). Its contents
  // are not simulated: a GET_DESCRIPTOR(report) stalls, as any request we do not implement.
  const hid = Buffer.from([9, UsbDescriptorType.HID, 0x11, 0x01, 0, 1, 0x22, 208, 0]);
  return [
    interfaceDescriptor(0, 0, 0, 0x01, 0x01, 0x00, 0),
    acHeader,
    inputTerminal,
    outputTerminal,
    interfaceDescriptor(1, 0, 0, 0x01, 0x02, 0x00, 0),
    interfaceDescriptor(1, 1, 1, 0x01, 0x02, 0x00, 0),
    asGeneral,
    format,
    isoEp,
    ...isoCompanion,
    csEp,
    interfaceDescriptor(2, 0, 1, 0x03, 0x00, 0x00, 0),
    hid,
    endpointDescriptor(speed, 0x83, UsbTransferType.INTERRUPT, 64, speed === 'full' ? 0x40 : 0x07),
  ];
}

interface ConfigLayout {
  value: number;
  str: number;
  interfaces: Map<number, number>;
  endpoints: number[];
  body(speed: Speed): Buffer[];
}

const LAYOUTS: ConfigLayout[] = [
  { value: 1, str: STR_CONFIG_PTP, interfaces: new Map([[0, 1]]), endpoints: [0x02, 0x81, 0x83], body: ptpInterface },
  {
    value: 2,
    str: STR_CONFIG_IPOD,
    interfaces: new Map([[0, 1], [1, 2], [2, 1]]),
    endpoints: [0x81, 0x83],
    body: ipodInterfaces,
  },
  {
    value: 3,
    str: STR_CONFIG_PTP_MUX,
    interfaces: new Map([[0, 1], [1, 1]]),
    endpoints: [0x02, 0x81, 0x83, 0x04, 0x85],
    body: (s) => [...ptpInterface(s), ...muxInterface(s)],
  },
  {
    value: 4,
    str: STR_CONFIG_PTP_MUX_ETH,
    interfaces: new Map([[0, 1], [1, 1], [2, 3]]),
    endpoints: [0x02, 0x81, 0x83, 0x04, 0x85],
    body: (s) => [...ptpInterface(s), ...muxInterface(s), ...ethernetInterface(s)],
  },
];

/** Encodes a string descriptor: bLength, type 3, UTF-16LE code units. */
export function encodeStringDescriptor(text: string): Buffer {
  const units = Buffer.from(text, 'utf16le');
  if (units.length + 2 > 0xff) throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `string descriptor too long: ${text}`);
  return Buffer.concat([Buffer.from([units.length + 2, UsbDescriptorType.STRING]), units]);
}

/** Encodes string descriptor 0, the list of supported LANGIDs. */
export function encodeLangIdDescriptor(langIds: number[]): Buffer {
  const out = Buffer.alloc(2 + 2 * langIds.length);
  out[0] = out.length;
  out[1] = UsbDescriptorType.STRING;
  langIds.forEach((id, i) => out.writeUInt16LE(id, 2 + 2 * i));
  return out;
}

/** Builds the descriptor set of a simulated iPhone in mode 1. */
export function iphoneDescriptors(opts: IphoneDescriptorOptions): SimUsbDescriptorSet {
  const { productId, serialNumber, speed } = opts;
  if (!Number.isInteger(productId) || productId < 0 || productId > 0xffff) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_ARGUMENT', `product id ${productId} is not a u16`);
  }
  const bcdDevice = opts.bcdDevice ?? 0x1205;
  // bcdUSB 2.00 and a 64-byte EP0 at high speed (as every dump shows); a SuperSpeed device reports
  // USB 3.20 and bMaxPacketSize0 9 (2^9 = 512 bytes), as USB 3.x §9.6.1 requires.
  const bcdUsb = speed === 'super' ? 0x0320 : 0x0200;
  const device = Buffer.alloc(18);
  device.set([18, UsbDescriptorType.DEVICE]);
  device.writeUInt16LE(bcdUsb, 2);
  device.set([0, 0, 0, speed === 'super' ? 9 : 64], 4);
  device.writeUInt16LE(VID_APPLE, 8);
  device.writeUInt16LE(productId, 10);
  device.writeUInt16LE(bcdDevice, 12);
  device.set([STR_MANUFACTURER, STR_PRODUCT, STR_SERIAL, LAYOUTS.length], 14);

  const configurations = LAYOUTS.map((layout): SimUsbConfiguration => {
    const main = configurationDescriptor(
      UsbDescriptorType.CONFIGURATION, speed, layout.value, layout.interfaces.size, layout.str, layout.body(speed));
    const config: SimUsbConfiguration = {
      value: layout.value,
      descriptor: main,
      interfaces: layout.interfaces,
      endpoints: new Set(layout.endpoints),
    };
    if (speed === 'high') {
      config.otherSpeed = configurationDescriptor(
        UsbDescriptorType.OTHER_SPEED_CONFIGURATION, 'full', layout.value, layout.interfaces.size, layout.str, layout.body('full'));
    }
    return config;
  });

  const strings = new Map<number, string>([
    [STR_MANUFACTURER, 'Apple Inc.'],
    [STR_PRODUCT, opts.productName ?? 'iPhone'],
    [STR_SERIAL, serialNumber],
    [STR_CONFIG_PTP, 'PTP'],
    [STR_CONFIG_IPOD, 'iPod USB Interface'],
    [STR_CONFIG_PTP_MUX, 'PTP + Apple Mobile Device'],
    [STR_CONFIG_PTP_MUX_ETH, 'PTP + Apple Mobile Device + Apple USB Ethernet'],
    [STR_IF_MUX, 'Apple USB Multiplexor'],
    [STR_IF_ETHERNET, 'Apple USB Ethernet'],
    [STR_IF_PTP, 'PTP'],
  ]);

  const set: SimUsbDescriptorSet = {
    device,
    configurations,
    strings,
    langIds: [LANGID_EN_US],
    mux: { configurationValue: 4, interfaceNumber: 1, outEndpoint: 0x04, inEndpoint: 0x85, maxPacketSize: bulkPacket(speed) },
  };
  if (speed === 'high') {
    // The full-speed view of this device: bcdUSB, class triple, EP0 size, configuration count.
    set.deviceQualifier = Buffer.from([10, UsbDescriptorType.DEVICE_QUALIFIER, 0x00, 0x02, 0, 0, 0, 64, LAYOUTS.length, 0]);
  } else {
    // BOS: USB 2.0 extension (LPM supported) + SuperSpeed capability (full/high/super speeds,
    // lowest full function at full speed, U1 exit 10 µs, U2 exit 2047 µs).
    const usb2Ext = Buffer.from([7, UsbDescriptorType.DEVICE_CAPABILITY, 0x02, 0x02, 0, 0, 0]);
    const ss = Buffer.from([10, UsbDescriptorType.DEVICE_CAPABILITY, 0x03, 0x00, 0x0e, 0x00, 0x01, 0x0a, 0xff, 0x07]);
    const total = 5 + usb2Ext.length + ss.length;
    set.bos = Buffer.concat([Buffer.from([5, UsbDescriptorType.BOS, total & 0xff, total >> 8, 2]), usb2Ext, ss]);
  }
  return set;
}

/** The libusb speed number a SimUsbSpeed is announced as in HELLO. */
export function simSpeedToUsbSpeed(speed: SimUsbSpeed): UsbSpeed {
  return speed === 'super' ? UsbSpeed.SUPER : UsbSpeed.HIGH;
}
