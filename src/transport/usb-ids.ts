/**
 * Which USB devices are iOS devices, and how usbmuxd turns what they report into the values it
 * publishes: the product-ID ranges of usbmux.md §1.1, the ConnectionSpeed table and the UDID
 * fix-up of §1.6.
 */
import { UsbSpeed } from '../protocol/vusb-wire.js';

/** Apple's USB vendor ID. */
export const VID_APPLE = 0x05ac;
/** iPhone, iPod, iPad and Apple TV class devices (usbmuxd, usbmuxd2, netmuxd all accept these). */
export const PID_RANGE_FIRST = 0x1290;
export const PID_RANGE_LAST = 0x12af;
/** T2/iBridge coprocessor (usbmuxd only; it skips preflight). */
export const PID_T2_COPROCESSOR = 0x8600;
/** Apple-silicon Macs in restore mode (usbmuxd only). */
export const PID_APPLE_SILICON_RESTORE_FIRST = 0x1901;
export const PID_APPLE_SILICON_RESTORE_LAST = 0x1905;

/** A PID the simulator uses for an iPhone, as a real iPhone 5 and later reports it. */
export const PID_IPHONE = 0x12a8;

/** True for the devices usbmuxd accepts (usbmux.md §1.1): VID 0x05AC and one of its PID sets. */
export function isAppleMuxDevice(vendorId: number, productId: number): boolean {
  if (vendorId !== VID_APPLE) return false;
  return (
    (productId >= PID_RANGE_FIRST && productId <= PID_RANGE_LAST) ||
    productId === PID_T2_COPROCESSOR ||
    (productId >= PID_APPLE_SILICON_RESTORE_FIRST && productId <= PID_APPLE_SILICON_RESTORE_LAST)
  );
}

/**
 * ConnectionSpeed in bit/s for a libusb speed (usbmux.md §1.6). Unknown values, SUPER_PLUS_X2
 * included, report 480 000 000 as usbmuxd does.
 */
export function speedToBitsPerSecond(speed: number): number {
  switch (speed) {
    case UsbSpeed.LOW:
      return 1_500_000;
    case UsbSpeed.FULL:
      return 12_000_000;
    case UsbSpeed.HIGH:
      return 480_000_000;
    case UsbSpeed.SUPER:
      return 5_000_000_000;
    case UsbSpeed.SUPER_PLUS:
      return 10_000_000_000;
    default:
      return 480_000_000;
  }
}

/**
 * The serial number string descriptor as usbmuxd reads it (usbmux.md §1.6): UTF-16LE after the
 * 2-byte descriptor header, stop at a NUL code unit, a non-ASCII code unit becomes '?', at most 255
 * characters. `descriptor` is the whole string descriptor (bLength, bDescriptorType, code units).
 */
export function serialFromStringDescriptor(descriptor: Buffer): string {
  const end = Math.min(descriptor.length, descriptor[0] ?? 0);
  let out = '';
  for (let i = 2; i + 1 < end && out.length < 255; i += 2) {
    const unit = descriptor[i]! | (descriptor[i + 1]! << 8);
    if (unit === 0) break;
    out += unit < 0x80 ? String.fromCharCode(unit) : '?';
  }
  return out;
}

/**
 * usbmuxd's UDID fix-up (usbmux.md §1.6): a 24-character serial gets a '-' after its 8th
 * character (`00008120000A2D910EDB401E` → `00008120-000A2D910EDB401E`); anything else, such as a
 * 40-character legacy UDID, is kept as it is.
 */
export function udidFromUsbSerial(serial: string): string {
  return serial.length === 24 ? `${serial.slice(0, 8)}-${serial.slice(8)}` : serial;
}

/**
 * The inverse: what a device with this UDID reports as its USB serial number. A dashed 8-16 UDID
 * (25 characters, '-' at index 8) loses its dash, as real devices report 24 characters; anything
 * else is reported as it is.
 */
export function usbSerialFromUdid(udid: string): string {
  return udid.length === 25 && udid[8] === '-' ? udid.slice(0, 8) + udid.slice(9) : udid;
}
