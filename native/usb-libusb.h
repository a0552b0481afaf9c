// The part of libusb-1.0's C ABI the USB pipeline uses, declared here so that building the addon
// needs no libusb headers (DESIGN.md "Native and TypeScript paths"): libusb itself is loaded at
// run time with dlopen (usb-loader.cc), and a machine without it falls back cleanly.
//
// Written from libusb's public API documentation (libusb.sourceforge.io/api-1.0). Every layout
// here must match the real library on every platform it runs on: the field order and types of
// struct libusb_transfer and struct libusb_device_descriptor, the enum values, and the function
// signatures (LIBUSB_CALL is empty everywhere but Windows, which this addon does not target).
//
//   struct libusb_transfer (LP64 offsets)
//     0 dev_handle*   8 flags u8   9 endpoint u8   10 type u8   12 timeout u32   16 status i32
//    20 length i32   24 actual_length i32   32 callback*   40 user_data*   48 buffer*
//    56 num_iso_packets i32   60 iso_packet_desc[] (unused: 0 packets)
//
//   control transfer buffer: 8-byte setup packet, then the data stage
//     0 bmRequestType  1 bRequest  2 wValue LE  4 wIndex LE  6 wLength LE  8 data…
#ifndef MUXWIRE_NATIVE_USB_LIBUSB_H_
#define MUXWIRE_NATIVE_USB_LIBUSB_H_

#include <sys/time.h>

#include <cstddef>
#include <cstdint>

namespace muxwire {
namespace libusb {

// Opaque handles.
struct Context;
struct Device;
struct DeviceHandle;

struct DeviceDescriptor {
  uint8_t bLength;
  uint8_t bDescriptorType;
  uint16_t bcdUSB;
  uint8_t bDeviceClass;
  uint8_t bDeviceSubClass;
  uint8_t bDeviceProtocol;
  uint8_t bMaxPacketSize0;
  uint16_t idVendor;
  uint16_t idProduct;
  uint16_t bcdDevice;
  uint8_t iManufacturer;
  uint8_t iProduct;
  uint8_t iSerialNumber;
  uint8_t bNumConfigurations;
};

struct Transfer;
using TransferCallback = void (*)(Transfer* transfer);

struct IsoPacketDescriptor {
  unsigned int length;
  unsigned int actual_length;
  int status;
};

struct Transfer {
  DeviceHandle* dev_handle;
  uint8_t flags;
  unsigned char endpoint;
  unsigned char type;
  unsigned int timeout;
  int status;
  int length;
  int actual_length;
  TransferCallback callback;
  void* user_data;
  unsigned char* buffer;
  int num_iso_packets;
  // Flexible in C (`[0]`): a transfer allocated for 0 iso packets ends before this member, so the
  // struct is never copied or sized as a whole (sizeof is 8 bytes more than libusb allocates).
  IsoPacketDescriptor iso_packet_desc[1];
};

// enum libusb_error
constexpr int kSuccess = 0;
constexpr int kErrorIo = -1;
constexpr int kErrorInvalidParam = -2;
constexpr int kErrorNoDevice = -4;
constexpr int kErrorNotFound = -5;
constexpr int kErrorBusy = -6;
constexpr int kErrorPipe = -9;
constexpr int kErrorNoMem = -11;
constexpr int kErrorNotSupported = -12;
constexpr int kErrorOther = -99;

// enum libusb_transfer_status
constexpr int kTransferCompleted = 0;
constexpr int kTransferError = 1;
constexpr int kTransferTimedOut = 2;
constexpr int kTransferCancelled = 3;
constexpr int kTransferStall = 4;
constexpr int kTransferNoDevice = 5;
constexpr int kTransferOverflow = 6;

// enum libusb_transfer_type
constexpr unsigned char kTransferTypeControl = 0;
constexpr unsigned char kTransferTypeBulk = 2;

constexpr uint32_t kCapHasHotplug = 0x0001;
constexpr int kHotplugArrived = 1 << 0;
constexpr int kHotplugLeft = 1 << 1;
constexpr int kHotplugEnumerate = 1 << 0;
constexpr int kHotplugMatchAny = -1;

constexpr size_t kControlSetupSize = 8;

using HotplugCallbackHandle = int;
using HotplugCallback = int (*)(Context* ctx, Device* device, int event, void* user_data);

// The functions, as pointers filled by dlsym. Optional ones may be null (older libusb, or a
// platform without kernel drivers to detach).
struct Api {
  int (*init)(Context** ctx);
  void (*exit)(Context* ctx);
  int (*has_capability)(uint32_t capability);
  const char* (*error_name)(int code);
  long (*get_device_list)(Context* ctx, Device*** list);  // ssize_t
  void (*free_device_list)(Device** list, int unref_devices);
  Device* (*ref_device)(Device* dev);
  void (*unref_device)(Device* dev);
  int (*get_device_descriptor)(Device* dev, DeviceDescriptor* desc);
  uint8_t (*get_bus_number)(Device* dev);
  uint8_t (*get_device_address)(Device* dev);
  int (*get_device_speed)(Device* dev);
  int (*open)(Device* dev, DeviceHandle** handle);
  void (*close)(DeviceHandle* handle);
  int (*get_configuration)(DeviceHandle* handle, int* config);
  int (*set_configuration)(DeviceHandle* handle, int configuration);
  int (*claim_interface)(DeviceHandle* handle, int interface_number);
  int (*release_interface)(DeviceHandle* handle, int interface_number);
  Transfer* (*alloc_transfer)(int iso_packets);
  int (*submit_transfer)(Transfer* transfer);
  int (*cancel_transfer)(Transfer* transfer);
  void (*free_transfer)(Transfer* transfer);
  int (*handle_events_timeout_completed)(Context* ctx, timeval* tv, int* completed);
  int (*hotplug_register_callback)(Context* ctx, int events, int flags, int vendor_id,
                                   int product_id, int dev_class, HotplugCallback cb,
                                   void* user_data, HotplugCallbackHandle* handle);
  void (*hotplug_deregister_callback)(Context* ctx, HotplugCallbackHandle handle);
  // Optional.
  void (*interrupt_event_handler)(Context* ctx);
  int (*kernel_driver_active)(DeviceHandle* handle, int interface_number);
  int (*detach_kernel_driver)(DeviceHandle* handle, int interface_number);
};

}  // namespace libusb
}  // namespace muxwire

#endif  // MUXWIRE_NATIVE_USB_LIBUSB_H_
