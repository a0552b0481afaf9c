/**
 * Host-side parsing of the USB descriptors a device returns (USB 2.0 §9.6), and the usbmux
 * interface search of usbmux.md §1.3. Pure functions; every length is checked before it is read.
 *
 * ```
 * device descriptor (18 bytes, LE)
 *   0 bLength  1 bDescriptorType=1  2 bcdUSB u16  4 class  5 subclass  6 protocol
 *   7 bMaxPacketSize0  8 idVendor u16  10 idProduct u16  12 bcdDevice u16
 *   14 iManufacturer  15 iProduct  16 iSerialNumber  17 bNumConfigurations
 *
 * configuration descriptor set (wTotalLength bytes): a 9-byte header, then descriptors, each
 * starting with bLength, bDescriptorType
 *   0 bLength=9  1 type=2  2 wTotalLength u16  4 bNumInterfaces  5 bConfigurationValue
 *   6 iConfiguration  7 bmAttributes  8 bMaxPower
 *   interface (9): 2 bInterfaceNumber 3 bAlternateSetting 4 bNumEndpoints 5 class 6 sub 7 proto 8 iInterface
 *   endpoint (7+): 2 bEndpointAddress 3 bmAttributes 4 wMaxPacketSize u16 6 bInterval
 * ```
 */
import { MuxwireError } from '../errors.js';
import {
  MUX_INTERFACE_CLASS,
  MUX_INTERFACE_PROTOCOL,
  MUX_INTERFACE_SUBCLASS,
  UsbDescriptorType,
  UsbTransferType,
} from './usb-standard.js';

export interface UsbDeviceDescriptor {
  bcdUSB: number;
  bMaxPacketSize0: number;
  idVendor: number;
  idProduct: number;
  bcdDevice: number;
  iManufacturer: number;
  iProduct: number;
  iSerialNumber: number;
  bNumConfigurations: number;
}

export interface UsbEndpointDescriptor {
  bEndpointAddress: number;
  bmAttributes: number;
  /** wMaxPacketSize bits 10..0 (bits 12..11 are high-bandwidth multipliers). */
  maxPacketSize: number;
}

export interface UsbInterfaceDescriptor {
  bInterfaceNumber: number;
  bAlternateSetting: number;
  bInterfaceClass: number;
  bInterfaceSubClass: number;
  bInterfaceProtocol: number;
  endpoints: UsbEndpointDescriptor[];
}

export interface UsbConfigurationDescriptor {
  wTotalLength: number;
  bNumInterfaces: number;
  bConfigurationValue: number;
  bmAttributes: number;
  interfaces: UsbInterfaceDescriptor[];
}

function bad(text: string): MuxwireError {
  return new MuxwireError('MUXWIRE_ERR_BAD_DESCRIPTOR', text);
}

/** Parses an 18-byte device descriptor. */
export function parseDeviceDescriptor(buf: Buffer): UsbDeviceDescriptor {
  if (buf.length < 18 || buf[0]! < 18 || buf[1] !== UsbDescriptorType.DEVICE) {
    throw bad(`device descriptor of ${buf.length} bytes (bLength ${buf[0]}, type ${buf[1]})`);
  }
  return {
    bcdUSB: buf.readUInt16LE(2),
    bMaxPacketSize0: buf[7]!,
    idVendor: buf.readUInt16LE(8),
    idProduct: buf.readUInt16LE(10),
    bcdDevice: buf.readUInt16LE(12),
    iManufacturer: buf[14]!,
    iProduct: buf[15]!,
    iSerialNumber: buf[16]!,
    bNumConfigurations: buf[17]!,
  };
}

/** wTotalLength from the first 9 bytes of a configuration descriptor. */
export function configurationTotalLength(head: Buffer): number {
  if (head.length < 9 || head[0]! < 9 || head[1] !== UsbDescriptorType.CONFIGURATION) {
    throw bad(`configuration descriptor header of ${head.length} bytes (bLength ${head[0]}, type ${head[1]})`);
  }
  const total = head.readUInt16LE(2);
  if (total < 9) throw bad(`configuration wTotalLength ${total} < 9`);
  return total;
}

/**
 * Parses a whole configuration descriptor set, as libusb does: interfaces with their alternate
 * settings, endpoints attached to the interface descriptor before them, class-specific and
 * companion descriptors skipped.
 */
export function parseConfigurationDescriptor(buf: Buffer): UsbConfigurationDescriptor {
  const total = configurationTotalLength(buf);
  if (buf.length < total) throw bad(`configuration descriptor of ${buf.length} bytes, wTotalLength ${total}`);
  const config: UsbConfigurationDescriptor = {
    wTotalLength: total,
    bNumInterfaces: buf[4]!,
    bConfigurationValue: buf[5]!,
    bmAttributes: buf[7]!,
    interfaces: [],
  };
  let current: UsbInterfaceDescriptor | undefined;
  let offset = buf[0]!;
  while (offset < total) {
    const len = buf[offset]!;
    if (len < 2 || offset + len > total) throw bad(`descriptor of bLength ${len} at offset ${offset} of ${total}`);
    const type = buf[offset + 1]!;
    if (type === UsbDescriptorType.INTERFACE) {
      if (len < 9) throw bad(`interface descriptor of bLength ${len}`);
      current = {
        bInterfaceNumber: buf[offset + 2]!,
        bAlternateSetting: buf[offset + 3]!,
        bInterfaceClass: buf[offset + 5]!,
        bInterfaceSubClass: buf[offset + 6]!,
        bInterfaceProtocol: buf[offset + 7]!,
        endpoints: [],
      };
      config.interfaces.push(current);
    } else if (type === UsbDescriptorType.ENDPOINT) {
      if (len < 7) throw bad(`endpoint descriptor of bLength ${len}`);
      if (!current) throw bad(`endpoint descriptor before any interface at offset ${offset}`);
      current.endpoints.push({
        bEndpointAddress: buf[offset + 2]!,
        bmAttributes: buf[offset + 3]!,
        maxPacketSize: buf.readUInt16LE(offset + 4) & 0x7ff,
      });
    }
    offset += len;
  }
  return config;
}

/** The usbmux interface of a configuration and its two bulk endpoints. */
export interface MuxInterfaceMatch {
  interfaceNumber: number;
  outEndpoint: number;
  inEndpoint: number;
  /** wMaxPacketSize of the OUT endpoint (usbmuxd's libusb_get_max_packet_size(ep_out)). */
  maxPacketSize: number;
}

/**
 * Finds the usbmux interface in altsetting 0 of a configuration: class, subclass and protocol
 * exactly FF/FE/02 (as usbmuxd2 and netmuxd; not usbmuxd's OR, usbmux.md §6.1) with exactly two
 * endpoints, one bulk IN and one bulk OUT.
 */
export function findMuxInterface(config: UsbConfigurationDescriptor): MuxInterfaceMatch | undefined {
  for (const intf of config.interfaces) {
    if (intf.bAlternateSetting !== 0) continue;
    if (intf.bInterfaceClass !== MUX_INTERFACE_CLASS || intf.bInterfaceSubClass !== MUX_INTERFACE_SUBCLASS
      || intf.bInterfaceProtocol !== MUX_INTERFACE_PROTOCOL || intf.endpoints.length !== 2) continue;
    const bulk = intf.endpoints.filter((e) => (e.bmAttributes & 0x03) === UsbTransferType.BULK);
    const out = bulk.find((e) => (e.bEndpointAddress & 0x80) === 0);
    const inn = bulk.find((e) => (e.bEndpointAddress & 0x80) !== 0);
    if (!out || !inn) continue;
    return {
      interfaceNumber: intf.bInterfaceNumber,
      outEndpoint: out.bEndpointAddress,
      inEndpoint: inn.bEndpointAddress,
      // usbmuxd falls back to 64 when the size reads as ≤ 0 (usbmux.md §1.4).
      maxPacketSize: out.maxPacketSize > 0 ? out.maxPacketSize : 64,
    };
  }
  return undefined;
}
