/**
 * USB 2.0/3.x chapter 9 constants shared by the host side (transport/) and the simulated device
 * (sim/): request codes, descriptor types, request-type bits. Values are those of the USB
 * specification (and libusb.h, which names them the same way).
 */

/** bmRequestType bit 7: data stage direction. */
export const USB_DIR_OUT = 0x00;
export const USB_DIR_IN = 0x80;
/** bmRequestType bits 6..5: request type. */
export const USB_TYPE_STANDARD = 0x00;
export const USB_TYPE_CLASS = 0x20;
export const USB_TYPE_VENDOR = 0x40;
/** bmRequestType bits 4..0: recipient. */
export const USB_RECIP_DEVICE = 0x00;
export const USB_RECIP_INTERFACE = 0x01;
export const USB_RECIP_ENDPOINT = 0x02;

/** Standard bRequest codes. */
export enum UsbRequest {
  GET_STATUS = 0x00,
  CLEAR_FEATURE = 0x01,
  SET_FEATURE = 0x03,
  SET_ADDRESS = 0x05,
  GET_DESCRIPTOR = 0x06,
  SET_DESCRIPTOR = 0x07,
  GET_CONFIGURATION = 0x08,
  SET_CONFIGURATION = 0x09,
  GET_INTERFACE = 0x0a,
  SET_INTERFACE = 0x0b,
  SYNCH_FRAME = 0x0c,
}

/** Apple's vendor requests (usbmux.md §1.2), bmRequestType 0xC0. */
export enum AppleVendorRequest {
  GET_MODE = 0x45,
  SET_MODE = 0x52,
}

/** Descriptor types (high byte of wValue in GET_DESCRIPTOR). */
export enum UsbDescriptorType {
  DEVICE = 0x01,
  CONFIGURATION = 0x02,
  STRING = 0x03,
  INTERFACE = 0x04,
  ENDPOINT = 0x05,
  DEVICE_QUALIFIER = 0x06,
  OTHER_SPEED_CONFIGURATION = 0x07,
  INTERFACE_ASSOCIATION = 0x0b,
  BOS = 0x0f,
  DEVICE_CAPABILITY = 0x10,
  HID = 0x21,
  CS_INTERFACE = 0x24,
  CS_ENDPOINT = 0x25,
  SUPERSPEED_ENDPOINT_COMPANION = 0x30,
}

/** Feature selectors for CLEAR_FEATURE / SET_FEATURE. */
export const USB_FEATURE_ENDPOINT_HALT = 0x00;

/** Endpoint bmAttributes bits 1..0. */
export enum UsbTransferType {
  CONTROL = 0,
  ISOCHRONOUS = 1,
  BULK = 2,
  INTERRUPT = 3,
}

/** The usbmux interface triple (usbmux.md §1.3). */
export const MUX_INTERFACE_CLASS = 0xff;
export const MUX_INTERFACE_SUBCLASS = 0xfe;
export const MUX_INTERFACE_PROTOCOL = 0x02;

/** US English, the LANGID every Apple device lists first. */
export const LANGID_EN_US = 0x0409;
