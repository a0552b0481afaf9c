// What the addon adds to the libusb ABI (libusb-abi.h, shared with native/vusb): the table of
// libusb functions it calls. libusb is loaded at run time with dlopen (usb-loader.cc), so building
// the addon needs no libusb headers and a machine without libusb falls back cleanly
// (docs/ARCHITECTURE.md "The accel contract").
//
// Every slot is typed from the prototype in libusb-abi.h (decltype of the function's address; the
// functions themselves are never linked), so the structs, enums and signatures the addon uses are
// the ones vusb implements, declared once.
#ifndef MUXWIRE_NATIVE_USB_LIBUSB_H_
#define MUXWIRE_NATIVE_USB_LIBUSB_H_

#include "libusb-abi.h"

namespace muxwire {

// A slot for libusb_<name>, filled by dlsym.
#define LIBUSB_API_SLOT(name) decltype(&::libusb_##name) name

// The functions, as pointers filled by dlsym. Optional ones may be null (older libusb, or a
// platform without kernel drivers to detach).
struct LibusbApi {
  LIBUSB_API_SLOT(init);
  LIBUSB_API_SLOT(exit);
  LIBUSB_API_SLOT(has_capability);
  LIBUSB_API_SLOT(error_name);
  LIBUSB_API_SLOT(get_device_list);
  LIBUSB_API_SLOT(free_device_list);
  LIBUSB_API_SLOT(ref_device);
  LIBUSB_API_SLOT(unref_device);
  LIBUSB_API_SLOT(get_device_descriptor);
  LIBUSB_API_SLOT(get_bus_number);
  LIBUSB_API_SLOT(get_device_address);
  LIBUSB_API_SLOT(get_device_speed);
  LIBUSB_API_SLOT(open);
  LIBUSB_API_SLOT(close);
  LIBUSB_API_SLOT(get_configuration);
  LIBUSB_API_SLOT(set_configuration);
  LIBUSB_API_SLOT(claim_interface);
  LIBUSB_API_SLOT(release_interface);
  LIBUSB_API_SLOT(alloc_transfer);
  LIBUSB_API_SLOT(submit_transfer);
  LIBUSB_API_SLOT(cancel_transfer);
  LIBUSB_API_SLOT(free_transfer);
  LIBUSB_API_SLOT(handle_events_timeout_completed);
  LIBUSB_API_SLOT(hotplug_register_callback);
  LIBUSB_API_SLOT(hotplug_deregister_callback);
  // Optional.
  LIBUSB_API_SLOT(interrupt_event_handler);
  LIBUSB_API_SLOT(kernel_driver_active);
  LIBUSB_API_SLOT(detach_kernel_driver);
  // Optional: what an application needs to run libusb's events on its own poll loop (usb-loop.h).
  LIBUSB_API_SLOT(get_pollfds);
  LIBUSB_API_SLOT(free_pollfds);
  LIBUSB_API_SLOT(set_pollfd_notifiers);
  LIBUSB_API_SLOT(get_next_timeout);
  LIBUSB_API_SLOT(pollfds_handle_timeouts);
};

#undef LIBUSB_API_SLOT

}  // namespace muxwire

#endif  // MUXWIRE_NATIVE_USB_LIBUSB_H_
