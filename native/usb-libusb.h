// What the addon adds to the libusb ABI (libusb-abi.h, shared with native/vusb): the table of
// libusb functions it calls. libusb is loaded at run time with dlopen (usb-loader.cc), so building
// the addon needs no libusb headers and a machine without libusb falls back cleanly (DESIGN.md
// "Native and TypeScript paths").
//
// Every slot is typed from the prototype in libusb-abi.h (decltype of the function's address; the
// functions themselves are never linked), so the structs, enums and signatures the addon uses are
// the ones vusb implements, declared once.
#ifndef MUXWIRE_NATIVE_USB_LIBUSB_H_
#define MUXWIRE_NATIVE_USB_LIBUSB_H_

#include "libusb-abi.h"

namespace muxwire {

// A slot for libusb_<name>, filled by dlsym.
#define MUXWIRE_LIBUSB_SLOT(name) decltype(&::libusb_##name) name

// The functions, as pointers filled by dlsym. Optional ones may be null (older libusb, or a
// platform without kernel drivers to detach).
struct LibusbApi {
  MUXWIRE_LIBUSB_SLOT(init);
  MUXWIRE_LIBUSB_SLOT(exit);
  MUXWIRE_LIBUSB_SLOT(has_capability);
  MUXWIRE_LIBUSB_SLOT(error_name);
  MUXWIRE_LIBUSB_SLOT(get_device_list);
  MUXWIRE_LIBUSB_SLOT(free_device_list);
  MUXWIRE_LIBUSB_SLOT(ref_device);
  MUXWIRE_LIBUSB_SLOT(unref_device);
  MUXWIRE_LIBUSB_SLOT(get_device_descriptor);
  MUXWIRE_LIBUSB_SLOT(get_bus_number);
  MUXWIRE_LIBUSB_SLOT(get_device_address);
  MUXWIRE_LIBUSB_SLOT(get_device_speed);
  MUXWIRE_LIBUSB_SLOT(open);
  MUXWIRE_LIBUSB_SLOT(close);
  MUXWIRE_LIBUSB_SLOT(get_configuration);
  MUXWIRE_LIBUSB_SLOT(set_configuration);
  MUXWIRE_LIBUSB_SLOT(claim_interface);
  MUXWIRE_LIBUSB_SLOT(release_interface);
  MUXWIRE_LIBUSB_SLOT(alloc_transfer);
  MUXWIRE_LIBUSB_SLOT(submit_transfer);
  MUXWIRE_LIBUSB_SLOT(cancel_transfer);
  MUXWIRE_LIBUSB_SLOT(free_transfer);
  MUXWIRE_LIBUSB_SLOT(handle_events_timeout_completed);
  MUXWIRE_LIBUSB_SLOT(hotplug_register_callback);
  MUXWIRE_LIBUSB_SLOT(hotplug_deregister_callback);
  // Optional.
  MUXWIRE_LIBUSB_SLOT(interrupt_event_handler);
  MUXWIRE_LIBUSB_SLOT(kernel_driver_active);
  MUXWIRE_LIBUSB_SLOT(detach_kernel_driver);
};

#undef MUXWIRE_LIBUSB_SLOT

}  // namespace muxwire

#endif  // MUXWIRE_NATIVE_USB_LIBUSB_H_
