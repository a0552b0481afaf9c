/**
 * What usbmuxd does with a freshly opened device (usbmux.md §1.3–§1.6), over a VusbLink's control
 * transfers: read the device descriptor, walk the configurations from the highest down for the
 * usbmux interface, make that configuration current, select the interface, read the serial number
 * through string descriptor 0's first LANGID, and turn it into the UDID usbmuxd publishes.
 *
 * Differences from usbmuxd, on purpose:
 * - the interface must match FF/FE/02 exactly and have one bulk IN and one bulk OUT endpoint
 *   (usbmuxd ORs the triple and ignores the transfer type, usbmux.md §6.1);
 * - SET_CONFIGURATION uses the descriptor's bConfigurationValue, where usbmuxd passes its loop
 *   index (the two are equal on every iPhone);
 * - no mode switching (usbmux.md §1.2): the default desired mode is 1, the initial mode, in
 *   which a device with ≤ 4 configurations already is.
 */
import { MuxwireError } from '../errors.js';
import type { Logger } from '../log.js';
import { isAppleMuxDevice, serialFromStringDescriptor, udidFromUsbSerial } from './usb-ids.js';
import {
  configurationTotalLength,
  findMuxInterface,
  parseConfigurationDescriptor,
  parseDeviceDescriptor,
  type MuxInterfaceMatch,
  type UsbDeviceDescriptor,
} from './usb-descriptor-parser.js';
import {
  USB_DIR_IN,
  USB_DIR_OUT,
  USB_RECIP_DEVICE,
  USB_RECIP_INTERFACE,
  USB_TYPE_STANDARD,
  UsbDescriptorType,
  UsbRequest,
} from './usb-standard.js';
import type { UsbSetupPacket } from '../protocol/vusb-wire.js';

/** The control-transfer side of a device handle. */
export interface ControlChannel {
  control(setup: UsbSetupPacket, data?: Buffer): Promise<Buffer>;
}

/** What enumeration learned. */
export interface EnumeratedDevice {
  device: UsbDeviceDescriptor;
  configurationValue: number;
  mux: MuxInterfaceMatch;
  /** The serial number string as the device reports it. */
  usbSerial: string;
  /** After usbmuxd's fix-up (24 → dashed 25). */
  udid: string;
}

/** usbmuxd asks for 1024 + 8 bytes for both string descriptors (usbmux.md §1.6). */
const STRING_REQUEST_LENGTH = 1024 + 8;

const IN_STANDARD_DEVICE = USB_DIR_IN | USB_TYPE_STANDARD | USB_RECIP_DEVICE;

function getDescriptor(ch: ControlChannel, type: number, index: number, wLength: number, langId = 0): Promise<Buffer> {
  return ch.control({
    bmRequestType: IN_STANDARD_DEVICE,
    bRequest: UsbRequest.GET_DESCRIPTOR,
    wValue: (type << 8) | index,
    wIndex: langId,
    wLength,
  });
}

/**
 * Enumerates one device. Resolves undefined when it is not a device usbmuxd would take (wrong
 * VID/PID, no usbmux interface in any configuration that can be set); rejects when the device
 * misbehaves (MUXWIRE_ERR_BAD_DESCRIPTOR, control transfer errors).
 */
export async function enumerateMuxDevice(ch: ControlChannel, log: Logger): Promise<EnumeratedDevice | undefined> {
  const device = parseDeviceDescriptor(await getDescriptor(ch, UsbDescriptorType.DEVICE, 0, 18));
  if (!isAppleMuxDevice(device.idVendor, device.idProduct)) {
    log.debug(`ignoring ${hex4(device.idVendor)}:${hex4(device.idProduct)}: not an iOS device`);
    return undefined;
  }
  const current = (await ch.control({
    bmRequestType: IN_STANDARD_DEVICE, bRequest: UsbRequest.GET_CONFIGURATION, wValue: 0, wIndex: 0, wLength: 1,
  }))[0] ?? 0;

  let chosen: { value: number; mux: MuxInterfaceMatch } | undefined;
  for (let index = device.bNumConfigurations - 1; index >= 0 && !chosen; index--) {
    const head = await getDescriptor(ch, UsbDescriptorType.CONFIGURATION, index, 9);
    const total = configurationTotalLength(head);
    const config = parseConfigurationDescriptor(await getDescriptor(ch, UsbDescriptorType.CONFIGURATION, index, total));
    const mux = findMuxInterface(config);
    if (!mux) continue;
    const value = config.bConfigurationValue;
    try {
      if (value !== current) {
        await ch.control({ bmRequestType: USB_DIR_OUT | USB_TYPE_STANDARD | USB_RECIP_DEVICE,
          bRequest: UsbRequest.SET_CONFIGURATION, wValue: value, wIndex: 0, wLength: 0 });
      }
      await ch.control({ bmRequestType: USB_DIR_OUT | USB_TYPE_STANDARD | USB_RECIP_INTERFACE,
        bRequest: UsbRequest.SET_INTERFACE, wValue: 0, wIndex: mux.interfaceNumber, wLength: 0 });
    } catch (err) {
      // As usbmuxd: a configuration that cannot be set sends the search to the next lower one.
      if ((err as MuxwireError).code !== 'MUXWIRE_ERR_USB_STALL') throw err;
      log.debug(`configuration ${value} refused: ${(err as Error).message}`);
      continue;
    }
    chosen = { value, mux };
  }
  if (!chosen) {
    log.info(`${hex4(device.idVendor)}:${hex4(device.idProduct)} has no usable usbmux interface`);
    return undefined;
  }

  if (device.iSerialNumber === 0) throw new MuxwireError('MUXWIRE_ERR_BAD_DESCRIPTOR', 'the device has no serial number string');
  const langs = await getDescriptor(ch, UsbDescriptorType.STRING, 0, STRING_REQUEST_LENGTH);
  if (langs.length < 4 || langs[1] !== UsbDescriptorType.STRING) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_DESCRIPTOR', `LANGID descriptor of ${langs.length} bytes`);
  }
  const langId = langs.readUInt16LE(2);
  const serialDescriptor = await getDescriptor(ch, UsbDescriptorType.STRING, device.iSerialNumber, STRING_REQUEST_LENGTH, langId);
  if (serialDescriptor.length < 2 || serialDescriptor[1] !== UsbDescriptorType.STRING) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_DESCRIPTOR', `serial string descriptor of ${serialDescriptor.length} bytes`);
  }
  const usbSerial = serialFromStringDescriptor(serialDescriptor);
  if (usbSerial === '') throw new MuxwireError('MUXWIRE_ERR_BAD_DESCRIPTOR', 'empty serial number');
  return { device, configurationValue: chosen.value, mux: chosen.mux, usbSerial, udid: udidFromUsbSerial(usbSerial) };
}

function hex4(n: number): string {
  return n.toString(16).padStart(4, '0');
}
