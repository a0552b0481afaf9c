// Loads libusb-1.0 at run time (dlopen), so the addon builds without libusb headers and loads on a
// machine without libusb; only creating a USB host then fails, with the reason.
#ifndef MUXWIRE_NATIVE_USB_LOADER_H_
#define MUXWIRE_NATIVE_USB_LOADER_H_

#include <string>

#include "usb-libusb.h"

namespace muxwire {

// A loaded libusb: its function table and where it came from. Libraries are never unloaded
// (libusb keeps threads and state of its own), so a loaded library lives for the process.
struct LoadedLibusb {
  const LibusbApi* api = nullptr;
  std::string path;
  std::string error;  // why it did not load, when api is null
};

// Loads `path` when not empty, else MUXWIRE_LIBUSB_PATH when set, else the platform's usual
// names. Loading the same path again returns the same table. Thread-safe.
LoadedLibusb LoadLibusb(const std::string& path);

}  // namespace muxwire

#endif  // MUXWIRE_NATIVE_USB_LOADER_H_
