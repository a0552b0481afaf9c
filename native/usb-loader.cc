// dlopen of libusb-1.0 (usb-loader.h). The symbol table is filled once per library path; a
// library lacking a required symbol is refused with the symbol's name.
#include "usb-loader.h"

#include <dlfcn.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace muxwire {
namespace {

std::mutex g_mutex;
// Per path, the table of a library that loaded. Process-wide on purpose: a shared library is a
// process-wide resource, and every environment (worker) may share one loaded copy of it.
std::map<std::string, std::unique_ptr<LoadedLibusb>>& Loaded() {
  static auto* loaded = new std::map<std::string, std::unique_ptr<LoadedLibusb>>();
  return *loaded;
}
std::vector<std::unique_ptr<LibusbApi>>& Tables() {
  static auto* tables = new std::vector<std::unique_ptr<LibusbApi>>();
  return *tables;
}

template <typename Fn>
bool Bind(void* lib, const char* name, Fn* slot, std::string* missing) {
  void* sym = dlsym(lib, name);
  if (sym == nullptr) {
    if (missing != nullptr && missing->empty()) *missing = name;
    *slot = nullptr;
    return false;
  }
  *slot = reinterpret_cast<Fn>(sym);
  return true;
}

LoadedLibusb Open(const std::string& path) {
  LoadedLibusb result;
  result.path = path;
  // RTLD_LOCAL: libusb's symbols stay out of the global namespace, so another copy of libusb in
  // the process (another addon's) cannot be confused with this one.
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = dlerror();
    result.error = why != nullptr ? why : "dlopen failed";
    return result;
  }
  auto api = std::make_unique<LibusbApi>();
  std::string missing;
  bool ok = true;
  ok &= Bind(lib, "libusb_init", &api->init, &missing);
  ok &= Bind(lib, "libusb_exit", &api->exit, &missing);
  ok &= Bind(lib, "libusb_has_capability", &api->has_capability, &missing);
  ok &= Bind(lib, "libusb_error_name", &api->error_name, &missing);
  ok &= Bind(lib, "libusb_get_device_list", &api->get_device_list, &missing);
  ok &= Bind(lib, "libusb_free_device_list", &api->free_device_list, &missing);
  ok &= Bind(lib, "libusb_ref_device", &api->ref_device, &missing);
  ok &= Bind(lib, "libusb_unref_device", &api->unref_device, &missing);
  ok &= Bind(lib, "libusb_get_device_descriptor", &api->get_device_descriptor, &missing);
  ok &= Bind(lib, "libusb_get_bus_number", &api->get_bus_number, &missing);
  ok &= Bind(lib, "libusb_get_device_address", &api->get_device_address, &missing);
  ok &= Bind(lib, "libusb_get_device_speed", &api->get_device_speed, &missing);
  ok &= Bind(lib, "libusb_open", &api->open, &missing);
  ok &= Bind(lib, "libusb_close", &api->close, &missing);
  ok &= Bind(lib, "libusb_get_configuration", &api->get_configuration, &missing);
  ok &= Bind(lib, "libusb_set_configuration", &api->set_configuration, &missing);
  ok &= Bind(lib, "libusb_claim_interface", &api->claim_interface, &missing);
  ok &= Bind(lib, "libusb_release_interface", &api->release_interface, &missing);
  ok &= Bind(lib, "libusb_alloc_transfer", &api->alloc_transfer, &missing);
  ok &= Bind(lib, "libusb_submit_transfer", &api->submit_transfer, &missing);
  ok &= Bind(lib, "libusb_cancel_transfer", &api->cancel_transfer, &missing);
  ok &= Bind(lib, "libusb_free_transfer", &api->free_transfer, &missing);
  ok &= Bind(lib, "libusb_handle_events_timeout_completed", &api->handle_events_timeout_completed,
             &missing);
  ok &= Bind(lib, "libusb_hotplug_register_callback", &api->hotplug_register_callback, &missing);
  ok &= Bind(lib, "libusb_hotplug_deregister_callback", &api->hotplug_deregister_callback,
             &missing);
  // Optional: libusb before 1.0.21 lacks the first; the others exist only where kernel drivers
  // can be detached (Linux), and return NOT_SUPPORTED elsewhere.
  Bind(lib, "libusb_interrupt_event_handler", &api->interrupt_event_handler, nullptr);
  Bind(lib, "libusb_kernel_driver_active", &api->kernel_driver_active, nullptr);
  Bind(lib, "libusb_detach_kernel_driver", &api->detach_kernel_driver, nullptr);
  // Optional: without them (or where get_pollfds returns null, as on Windows) events are handled
  // on a thread of the host's own.
  Bind(lib, "libusb_get_pollfds", &api->get_pollfds, nullptr);
  Bind(lib, "libusb_free_pollfds", &api->free_pollfds, nullptr);
  Bind(lib, "libusb_set_pollfd_notifiers", &api->set_pollfd_notifiers, nullptr);
  Bind(lib, "libusb_get_next_timeout", &api->get_next_timeout, nullptr);
  Bind(lib, "libusb_pollfds_handle_timeouts", &api->pollfds_handle_timeouts, nullptr);
  if (!ok) {
    result.error = path + " lacks " + missing;
    dlclose(lib);
    return result;
  }
  result.api = api.get();
  Tables().push_back(std::move(api));
  return result;
}

}  // namespace

LoadedLibusb LoadLibusb(const std::string& requested) {
  std::vector<std::string> candidates;
  if (!requested.empty()) {
    candidates.push_back(requested);
  } else if (const char* env = std::getenv("MUXWIRE_LIBUSB_PATH"); env != nullptr && *env) {
    candidates.push_back(env);
  } else {
#if defined(__APPLE__)
    candidates = {"libusb-1.0.0.dylib", "/opt/homebrew/lib/libusb-1.0.0.dylib",
                  "/usr/local/lib/libusb-1.0.0.dylib"};
#else
    candidates = {"libusb-1.0.so.0", "libusb-1.0.so"};
#endif
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  LoadedLibusb last;
  std::string errors;
  for (const std::string& path : candidates) {
    auto found = Loaded().find(path);
    if (found != Loaded().end()) return *found->second;
    // Only successes are kept: a library installed or built later is found on the next try.
    LoadedLibusb loaded = Open(path);
    if (loaded.api != nullptr) {
      Loaded()[path] = std::make_unique<LoadedLibusb>(loaded);
      return loaded;
    }
    if (!errors.empty()) errors += "; ";
    errors += loaded.error;
    last = loaded;
  }
  last.error = errors;
  return last;
}

}  // namespace muxwire
