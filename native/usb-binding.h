// N-API glue for the native USB pipeline (usb-host.h): the JS class `UsbHost` of the addon's
// exports. src/accel/usb-host.ts is its one user and its TypeScript-side contract.
#ifndef MUXWIRE_NATIVE_USB_BINDING_H_
#define MUXWIRE_NATIVE_USB_BINDING_H_

#include <napi.h>

namespace muxwire {

// The constructor function to export, defined once per environment.
Napi::Function DefineUsbHostClass(Napi::Env env);

}  // namespace muxwire

#endif  // MUXWIRE_NATIVE_USB_BINDING_H_
