/**
 * What usbmuxd does with a freshly opened USB device before the mux starts (usbmux.md §1.2–§1.6),
 * over any USB stack that can make control requests, set a configuration and claim an interface:
 * the native libusb pipeline and WebUSB share it.
 *
 * 1. Read the device descriptor and every configuration descriptor (GET_DESCRIPTOR).
 * 2. Ask the mode (vendor request 0x45, logged only, as usbmuxd) and guess it from the
 *    descriptors; when a desired mode is given and differs, request it (0x52) — a device that
 *    accepts re-enumerates with other descriptors, and this setup ends there.
 * 3. From the highest configuration down, take the first with the usbmux interface; make it
 *    current if it is not (kernel drivers detached first); one that cannot be set sends the search
 *    to the next lower one.
 * 4. Claim the interface, read the serial number through string descriptor 0's first LANGID, and
 *    turn it into the UDID usbmuxd publishes.
 *
 * Differences from usbmuxd, on purpose (as vusb-enumerate.ts): the interface must match FF/FE/02
 * exactly with one bulk IN and one bulk OUT endpoint (usbmux.md §6.1); configuration values are
 * the descriptors' bConfigurationValue, not the loop index; and by default the mode is left
 * alone (usbmuxd's default desired mode is 1, the initial mode a device with ≤ 4 configurations
 * already is in; a desired mode is an option here).
 */
import { MuxwireError } from '../errors.js';
import type { Logger } from '../log.js';
import type { UsbSetupPacket } from '../protocol/vusb-wire.js';
import {
  configurationTotalLength,
  findMuxInterface,
  parseConfigurationDescriptor,
  parseDeviceDescriptor,
  type MuxInterfaceMatch,
  type UsbConfigurationDescriptor,
  type UsbDeviceDescriptor,
} from './usb-descriptor-parser.js';
import { serialFromStringDescriptor, udidFromUsbSerial } from './usb-ids.js';
import {
  AppleVendorRequest,
  USB_DIR_IN,
  USB_RECIP_DEVICE,
  USB_TYPE_STANDARD,
  USB_TYPE_VENDOR,
  UsbDescriptorType,
  UsbRequest,
} from './usb-standard.js';

/** The operations setup needs from an opened device. */
export interface UsbSetupHandle {
  /** One control transfer; resolves with the IN data stage. Rejects MUXWIRE_ERR_USB_STALL on a stall. */
  control(setup: UsbSetupPacket, data?: Buffer): Promise<Buffer>;
  /** The active configuration value, 0 when unconfigured. */
  getConfiguration(): Promise<number>;
  /** Detaches kernel drivers from `interfaces` where the platform has them, then sets `value`. */
  setConfiguration(value: number, interfaces: number[]): Promise<void>;
  claimInterface(interfaceNumber: number): Promise<void>;
}

/** The outcome of setup. */
export type MuxSetupResult =
  | {
      readonly kind: 'ready';
      readonly device: UsbDeviceDescriptor;
      readonly configurationValue: number;
      readonly mux: MuxInterfaceMatch;
      /** As the device reports it. */
      readonly usbSerial: string;
      /** After usbmuxd's fix-up (24 characters → dashed 25). */
      readonly udid: string;
      /** usbmuxd's guess of the device's mode (usbmux.md §1.2), 0 when unknown. */
      readonly mode: number;
    }
  /** No configuration offers a usable usbmux interface. */
  | { readonly kind: 'no-mux'; readonly mode: number }
  /** The device accepted a mode change and will re-enumerate. */
  | { readonly kind: 'mode-switch'; readonly from: number; readonly to: number };

export interface MuxSetupOptions {
  readonly log: Logger;
  /** Mode to request (1–5, usbmux.md §1.2); undefined leaves the device's mode alone. */
  readonly desiredMode?: number;
  /** Per control request; usbmuxd uses 1000 ms. */
  readonly controlTimeoutMs?: number;
}

/** usbmuxd asks for 1024 + 8 bytes for both string descriptors (usbmux.md §1.6). */
const STRING_REQUEST_LENGTH = 1024 + 8;
/** More configurations than any Apple device has (6 in mode 4); a bound on what we read. */
const MAX_CONFIGURATIONS = 16;
const IN_STANDARD_DEVICE = USB_DIR_IN | USB_TYPE_STANDARD | USB_RECIP_DEVICE;
const IN_VENDOR_DEVICE = USB_DIR_IN | USB_TYPE_VENDOR | USB_RECIP_DEVICE;

function getDescriptor(h: UsbSetupHandle, type: number, index: number, wLength: number, langId = 0): Promise<Buffer> {
  return h.control({ bmRequestType: IN_STANDARD_DEVICE, bRequest: UsbRequest.GET_DESCRIPTOR, wValue: (type << 8) | index, wIndex: langId, wLength });
}

async function readConfiguration(h: UsbSetupHandle, index: number): Promise<UsbConfigurationDescriptor> {
  const total = configurationTotalLength(await getDescriptor(h, UsbDescriptorType.CONFIGURATION, index, 9));
  return parseConfigurationDescriptor(await getDescriptor(h, UsbDescriptorType.CONFIGURATION, index, total));
}

function hasTriple(c: UsbConfigurationDescriptor, cls: number, sub: number, proto?: number): boolean {
  return c.interfaces.some((i) => i.bAlternateSetting === 0 && i.bInterfaceClass === cls && i.bInterfaceSubClass === sub
    && (proto === undefined || i.bInterfaceProtocol === proto));
}

/** usbmuxd's guess_mode (usbmux.md §1.2): the mode a descriptor set belongs to, 0 when unknown. */
export function guessMode(configs: UsbConfigurationDescriptor[]): number {
  const n = configs.length;
  if (n === 1) return 5;
  if (n <= 4) return 1;
  if (n === 6) return 4;
  if (n === 5) {
    const fifth = configs[4]!;
    if (findMuxInterface(fifth)) {
      if (hasTriple(fifth, 0xff, 0x2a, 0xff)) return 2;
      if (hasTriple(fifth, 0x02, 0x0d)) return 3;
    }
  }
  return 0;
}

/**
 * Sets a device up for the mux as usbmuxd does. Rejects with MUXWIRE_ERR_BAD_DESCRIPTOR when the
 * device's descriptors are malformed, with the transfer's coded error when a request fails.
 */
export async function setUpMuxDevice(h: UsbSetupHandle, opts: MuxSetupOptions): Promise<MuxSetupResult> {
  const { log } = opts;
  const device = parseDeviceDescriptor(await getDescriptor(h, UsbDescriptorType.DEVICE, 0, 18));
  const count = Math.min(device.bNumConfigurations, MAX_CONFIGURATIONS);
  const configs: UsbConfigurationDescriptor[] = [];
  for (let index = 0; index < count; index++) configs.push(await readConfiguration(h, index));

  // As usbmuxd: GET_MODE is asked and logged, but the mode is guessed from the descriptors.
  const mode = guessMode(configs);
  try {
    const reply = await h.control({ bmRequestType: IN_VENDOR_DEVICE, bRequest: AppleVendorRequest.GET_MODE, wValue: 0, wIndex: 0, wLength: 4 });
    log.debug(`GET_MODE ${[...reply].join(':')}, guessed mode ${mode}`);
  } catch (err) {
    log.debug(`GET_MODE failed (${(err as Error).message}), guessed mode ${mode}`);
  }
  const desired = opts.desiredMode;
  if (desired !== undefined && desired >= 1 && desired <= 5 && mode > 0 && mode !== desired) {
    try {
      const reply = await h.control({ bmRequestType: IN_VENDOR_DEVICE, bRequest: AppleVendorRequest.SET_MODE, wValue: 0, wIndex: desired, wLength: 1 });
      if (reply[0] === 0) {
        log.info(`switching from mode ${mode} to ${desired}; the device will re-enumerate`);
        return { kind: 'mode-switch', from: mode, to: desired };
      }
      log.info(`the device refused mode ${desired} (reply ${reply[0]}); carrying on in mode ${mode}`);
    } catch (err) {
      log.info(`SET_MODE ${desired} failed (${(err as Error).message}); carrying on in mode ${mode}`);
    }
  }

  const current = await h.getConfiguration();
  let chosen: { value: number; mux: MuxInterfaceMatch } | undefined;
  for (let index = configs.length - 1; index >= 0 && !chosen; index--) {
    const config = configs[index]!;
    const mux = findMuxInterface(config);
    if (!mux) continue;
    const value = config.bConfigurationValue;
    if (value !== current) {
      try {
        log.debug(`setting configuration ${value} (was ${current})`);
        await h.setConfiguration(value, config.interfaces.filter((i) => i.bAlternateSetting === 0).map((i) => i.bInterfaceNumber));
      } catch (err) {
        if ((err as MuxwireError).code === 'MUXWIRE_ERR_NO_DEVICE') throw err;
        log.debug(`configuration ${value} refused: ${(err as Error).message}`);
        continue;
      }
    }
    chosen = { value, mux };
  }
  if (!chosen) return { kind: 'no-mux', mode };
  await h.claimInterface(chosen.mux.interfaceNumber);

  if (device.iSerialNumber === 0) throw new MuxwireError('MUXWIRE_ERR_BAD_DESCRIPTOR', 'the device has no serial number string');
  const langs = await getDescriptor(h, UsbDescriptorType.STRING, 0, STRING_REQUEST_LENGTH);
  if (langs.length < 4 || langs[1] !== UsbDescriptorType.STRING) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_DESCRIPTOR', `LANGID descriptor of ${langs.length} bytes`);
  }
  const serialDescriptor = await getDescriptor(h, UsbDescriptorType.STRING, device.iSerialNumber, STRING_REQUEST_LENGTH, langs.readUInt16LE(2));
  if (serialDescriptor.length < 2 || serialDescriptor[1] !== UsbDescriptorType.STRING) {
    throw new MuxwireError('MUXWIRE_ERR_BAD_DESCRIPTOR', `serial string descriptor of ${serialDescriptor.length} bytes`);
  }
  const usbSerial = serialFromStringDescriptor(serialDescriptor);
  if (usbSerial === '') throw new MuxwireError('MUXWIRE_ERR_BAD_DESCRIPTOR', 'empty serial number');
  return { kind: 'ready', device, configurationValue: chosen.value, mux: chosen.mux, usbSerial, udid: udidFromUsbSerial(usbSerial), mode };
}
