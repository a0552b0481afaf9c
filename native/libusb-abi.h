/*
 * The libusb-1.0 C ABI, declared once for the whole tree: the structs, enums, constants and
 * function prototypes of libusb's public libusb.h that muxwire needs. Two parts of the tree meet
 * libusb through it, and must agree with the real library and with each other:
 *
 *   native/vusb/   implements this ABI (libusb-1.0.so.0 over the vusb wire), so a program built
 *                  against the real libusb.h (Debian's usbmuxd) can load it in libusb's place;
 *   native/        the addon, which dlopens a libusb (the system's, or vusb's) at run time and
 *                  calls it through a table of function pointers typed from the prototypes here
 *                  (usb-libusb.h), so building it needs no libusb headers.
 *
 * Written from libusb's public API documentation (https://libusb.sourceforge.io/api-1.0/); the
 * values are libusb 1.0.26's. Everything must match the real library bit for bit: struct layouts
 * (field order, types, natural alignment on LP64 and ILP32), enum values, function signatures.
 * The real header marks functions LIBUSB_CALL, which is empty on every non-Windows platform.
 * The checks at the end of this file turn a layout that drifts from libusb's into a build error
 * (as the iso_packet_desc[1] of a second copy of struct libusb_transfer once turned into a heap
 * overflow).
 *
 * Valid C (gnu11) and C++ (C++17): the declarations have C linkage either way.
 */
#ifndef MUXWIRE_LIBUSB_ABI_H
#define MUXWIRE_LIBUSB_ABI_H

#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- descriptor types and standard requests (USB 2.0 chapter 9) ---- */
enum libusb_descriptor_type {
	LIBUSB_DT_DEVICE = 0x01,
	LIBUSB_DT_CONFIG = 0x02,
	LIBUSB_DT_STRING = 0x03,
	LIBUSB_DT_INTERFACE = 0x04,
	LIBUSB_DT_ENDPOINT = 0x05,
	LIBUSB_DT_BOS = 0x0f,
	LIBUSB_DT_DEVICE_CAPABILITY = 0x10,
	LIBUSB_DT_SS_ENDPOINT_COMPANION = 0x30
};

#define LIBUSB_DT_DEVICE_SIZE 18
#define LIBUSB_DT_CONFIG_SIZE 9
#define LIBUSB_DT_INTERFACE_SIZE 9
#define LIBUSB_DT_ENDPOINT_SIZE 7
#define LIBUSB_DT_ENDPOINT_AUDIO_SIZE 9
#define LIBUSB_CONTROL_SETUP_SIZE 8

#define LIBUSB_ENDPOINT_DIR_MASK 0x80
#define LIBUSB_ENDPOINT_IN 0x80
#define LIBUSB_ENDPOINT_OUT 0x00
#define LIBUSB_TRANSFER_TYPE_MASK 0x03

enum libusb_standard_request {
	LIBUSB_REQUEST_GET_STATUS = 0x00,
	LIBUSB_REQUEST_CLEAR_FEATURE = 0x01,
	LIBUSB_REQUEST_SET_FEATURE = 0x03,
	LIBUSB_REQUEST_SET_ADDRESS = 0x05,
	LIBUSB_REQUEST_GET_DESCRIPTOR = 0x06,
	LIBUSB_REQUEST_SET_DESCRIPTOR = 0x07,
	LIBUSB_REQUEST_GET_CONFIGURATION = 0x08,
	LIBUSB_REQUEST_SET_CONFIGURATION = 0x09,
	LIBUSB_REQUEST_GET_INTERFACE = 0x0a,
	LIBUSB_REQUEST_SET_INTERFACE = 0x0b
};

#define LIBUSB_RECIPIENT_DEVICE 0x00
#define LIBUSB_RECIPIENT_INTERFACE 0x01
#define LIBUSB_RECIPIENT_ENDPOINT 0x02

/* ---- descriptor structs: host-endian copies of the wire descriptors ---- */
struct libusb_device_descriptor {
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

struct libusb_endpoint_descriptor {
	uint8_t bLength;
	uint8_t bDescriptorType;
	uint8_t bEndpointAddress;
	uint8_t bmAttributes;
	uint16_t wMaxPacketSize;
	uint8_t bInterval;
	uint8_t bRefresh;
	uint8_t bSynchAddress;
	const unsigned char *extra; /* descriptors following this one that libusb does not parse */
	int extra_length;
};

struct libusb_interface_descriptor {
	uint8_t bLength;
	uint8_t bDescriptorType;
	uint8_t bInterfaceNumber;
	uint8_t bAlternateSetting;
	uint8_t bNumEndpoints;
	uint8_t bInterfaceClass;
	uint8_t bInterfaceSubClass;
	uint8_t bInterfaceProtocol;
	uint8_t iInterface;
	const struct libusb_endpoint_descriptor *endpoint;
	const unsigned char *extra;
	int extra_length;
};

struct libusb_interface {
	const struct libusb_interface_descriptor *altsetting;
	int num_altsetting;
};

struct libusb_config_descriptor {
	uint8_t bLength;
	uint8_t bDescriptorType;
	uint16_t wTotalLength;
	uint8_t bNumInterfaces;
	uint8_t bConfigurationValue;
	uint8_t iConfiguration;
	uint8_t bmAttributes;
	uint8_t MaxPower;
	const struct libusb_interface *interface;
	const unsigned char *extra;
	int extra_length;
};

struct libusb_ss_endpoint_companion_descriptor {
	uint8_t bLength;
	uint8_t bDescriptorType;
	uint8_t bMaxBurst;
	uint8_t bmAttributes;
	uint16_t wBytesPerInterval;
};

struct libusb_bos_descriptor; /* only ever handled through pointers here */

/* Packed under GCC and clang, as libusb declares it: alignment 1, so it may overlay any byte of a
 * transfer buffer. */
struct libusb_control_setup {
	uint8_t bmRequestType;
	uint8_t bRequest;
	uint16_t wValue; /* little-endian in the transfer buffer */
	uint16_t wIndex;
	uint16_t wLength;
}
#if defined(__GNUC__)
__attribute__((packed))
#endif
;

/* ---- opaque handles ---- */
typedef struct libusb_context libusb_context;
typedef struct libusb_device libusb_device;
typedef struct libusb_device_handle libusb_device_handle;

struct libusb_version {
	const uint16_t major;
	const uint16_t minor;
	const uint16_t micro;
	const uint16_t nano;
	const char *rc;
	const char *describe;
};

enum libusb_speed {
	LIBUSB_SPEED_UNKNOWN = 0,
	LIBUSB_SPEED_LOW = 1,
	LIBUSB_SPEED_FULL = 2,
	LIBUSB_SPEED_HIGH = 3,
	LIBUSB_SPEED_SUPER = 4,
	LIBUSB_SPEED_SUPER_PLUS = 5
};

enum libusb_error {
	LIBUSB_SUCCESS = 0,
	LIBUSB_ERROR_IO = -1,
	LIBUSB_ERROR_INVALID_PARAM = -2,
	LIBUSB_ERROR_ACCESS = -3,
	LIBUSB_ERROR_NO_DEVICE = -4,
	LIBUSB_ERROR_NOT_FOUND = -5,
	LIBUSB_ERROR_BUSY = -6,
	LIBUSB_ERROR_TIMEOUT = -7,
	LIBUSB_ERROR_OVERFLOW = -8,
	LIBUSB_ERROR_PIPE = -9,
	LIBUSB_ERROR_INTERRUPTED = -10,
	LIBUSB_ERROR_NO_MEM = -11,
	LIBUSB_ERROR_NOT_SUPPORTED = -12,
	LIBUSB_ERROR_OTHER = -99
};

enum libusb_transfer_type {
	LIBUSB_TRANSFER_TYPE_CONTROL = 0,
	LIBUSB_TRANSFER_TYPE_ISOCHRONOUS = 1,
	LIBUSB_TRANSFER_TYPE_BULK = 2,
	LIBUSB_TRANSFER_TYPE_INTERRUPT = 3,
	LIBUSB_TRANSFER_TYPE_BULK_STREAM = 4
};

enum libusb_transfer_status {
	LIBUSB_TRANSFER_COMPLETED = 0,
	LIBUSB_TRANSFER_ERROR = 1,
	LIBUSB_TRANSFER_TIMED_OUT = 2,
	LIBUSB_TRANSFER_CANCELLED = 3,
	LIBUSB_TRANSFER_STALL = 4,
	LIBUSB_TRANSFER_NO_DEVICE = 5,
	LIBUSB_TRANSFER_OVERFLOW = 6
};

enum libusb_transfer_flags {
	LIBUSB_TRANSFER_SHORT_NOT_OK = 1U << 0,
	LIBUSB_TRANSFER_FREE_BUFFER = 1U << 1,
	LIBUSB_TRANSFER_FREE_TRANSFER = 1U << 2,
	LIBUSB_TRANSFER_ADD_ZERO_PACKET = 1U << 3
};

struct libusb_iso_packet_descriptor {
	unsigned int length;
	unsigned int actual_length;
	enum libusb_transfer_status status;
};

struct libusb_transfer;
typedef void (*libusb_transfer_cb_fn)(struct libusb_transfer *transfer);

struct libusb_transfer {
	libusb_device_handle *dev_handle;
	uint8_t flags;
	unsigned char endpoint;
	unsigned char type;
	unsigned int timeout; /* milliseconds, 0 = none */
	enum libusb_transfer_status status;
	int length;
	int actual_length;
	libusb_transfer_cb_fn callback;
	void *user_data;
	unsigned char *buffer;
	int num_iso_packets;
	/* Flexible: libusb allocates a transfer with room for exactly num_iso_packets of these, so
	 * sizeof(struct libusb_transfer) is what a transfer for 0 packets occupies, and a whole-struct
	 * copy stays inside it. C++ has no flexible array members; [0] is the GNU extension libusb.h
	 * itself uses there, with the same layout. */
#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 199901L
	struct libusb_iso_packet_descriptor iso_packet_desc[];
#else
	struct libusb_iso_packet_descriptor iso_packet_desc[0];
#endif
};

enum libusb_capability {
	LIBUSB_CAP_HAS_CAPABILITY = 0x0000,
	LIBUSB_CAP_HAS_HOTPLUG = 0x0001,
	LIBUSB_CAP_HAS_HID_ACCESS = 0x0100,
	LIBUSB_CAP_SUPPORTS_DETACH_KERNEL_DRIVER = 0x0101
};

enum libusb_log_level {
	LIBUSB_LOG_LEVEL_NONE = 0,
	LIBUSB_LOG_LEVEL_ERROR = 1,
	LIBUSB_LOG_LEVEL_WARNING = 2,
	LIBUSB_LOG_LEVEL_INFO = 3,
	LIBUSB_LOG_LEVEL_DEBUG = 4
};

enum libusb_log_cb_mode {
	LIBUSB_LOG_CB_GLOBAL = 1 << 0,
	LIBUSB_LOG_CB_CONTEXT = 1 << 1
};

typedef void (*libusb_log_cb)(libusb_context *ctx, enum libusb_log_level level, const char *str);

enum libusb_option {
	LIBUSB_OPTION_LOG_LEVEL = 0,
	LIBUSB_OPTION_USE_USBDK = 1,
	LIBUSB_OPTION_NO_DEVICE_DISCOVERY = 2,
	LIBUSB_OPTION_LOG_CB = 3, /* libusb 1.0.27's; 1.0.26 ends with LIBUSB_OPTION_MAX = 3 */
	LIBUSB_OPTION_MAX = 4
};

struct libusb_pollfd {
	int fd;
	short events; /* POLLIN / POLLOUT as for poll(2) */
};

typedef void (*libusb_pollfd_added_cb)(int fd, short events, void *user_data);
typedef void (*libusb_pollfd_removed_cb)(int fd, void *user_data);

typedef int libusb_hotplug_callback_handle;

typedef enum {
	LIBUSB_HOTPLUG_NO_FLAGS = 0,
	LIBUSB_HOTPLUG_ENUMERATE = 1 << 0
} libusb_hotplug_flag;

typedef enum {
	LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED = 1 << 0,
	LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT = 1 << 1
} libusb_hotplug_event;

#define LIBUSB_HOTPLUG_MATCH_ANY -1

typedef int (*libusb_hotplug_callback_fn)(libusb_context *ctx, libusb_device *device,
                                          libusb_hotplug_event event, void *user_data);


/* ---- the functions, as libusb.h declares them ---- */

int libusb_init(libusb_context **ctx);
void libusb_exit(libusb_context *ctx);
void libusb_set_debug(libusb_context *ctx, int level);
void libusb_set_log_cb(libusb_context *ctx, libusb_log_cb cb, int mode);
int libusb_set_option(libusb_context *ctx, enum libusb_option option, ...);
const struct libusb_version *libusb_get_version(void);
int libusb_has_capability(uint32_t capability);
const char *libusb_error_name(int error_code);
const char *libusb_strerror(int errcode);
int libusb_setlocale(const char *locale);

ssize_t libusb_get_device_list(libusb_context *ctx, libusb_device ***list);
void libusb_free_device_list(libusb_device **list, int unref_devices);
libusb_device *libusb_ref_device(libusb_device *dev);
void libusb_unref_device(libusb_device *dev);
int libusb_get_configuration(libusb_device_handle *dev, int *config);
int libusb_get_device_descriptor(libusb_device *dev, struct libusb_device_descriptor *desc);
int libusb_get_active_config_descriptor(libusb_device *dev, struct libusb_config_descriptor **config);
int libusb_get_config_descriptor(libusb_device *dev, uint8_t config_index,
                                 struct libusb_config_descriptor **config);
int libusb_get_config_descriptor_by_value(libusb_device *dev, uint8_t bConfigurationValue,
                                          struct libusb_config_descriptor **config);
void libusb_free_config_descriptor(struct libusb_config_descriptor *config);
int libusb_get_ss_endpoint_companion_descriptor(libusb_context *ctx,
                                                const struct libusb_endpoint_descriptor *endpoint,
                                                struct libusb_ss_endpoint_companion_descriptor **ep_comp);
void libusb_free_ss_endpoint_companion_descriptor(struct libusb_ss_endpoint_companion_descriptor *ep_comp);
int libusb_get_bos_descriptor(libusb_device_handle *dev_handle, struct libusb_bos_descriptor **bos);
void libusb_free_bos_descriptor(struct libusb_bos_descriptor *bos);
uint8_t libusb_get_bus_number(libusb_device *dev);
uint8_t libusb_get_port_number(libusb_device *dev);
int libusb_get_port_numbers(libusb_device *dev, uint8_t *port_numbers, int port_numbers_len);
int libusb_get_port_path(libusb_context *ctx, libusb_device *dev, uint8_t *path, uint8_t path_length);
libusb_device *libusb_get_parent(libusb_device *dev);
uint8_t libusb_get_device_address(libusb_device *dev);
int libusb_get_device_speed(libusb_device *dev);
int libusb_get_max_packet_size(libusb_device *dev, unsigned char endpoint);
int libusb_get_max_iso_packet_size(libusb_device *dev, unsigned char endpoint);
int libusb_wrap_sys_device(libusb_context *ctx, intptr_t sys_dev, libusb_device_handle **dev_handle);
int libusb_open(libusb_device *dev, libusb_device_handle **dev_handle);
void libusb_close(libusb_device_handle *dev_handle);
libusb_device *libusb_get_device(libusb_device_handle *dev_handle);
int libusb_set_configuration(libusb_device_handle *dev_handle, int configuration);
int libusb_claim_interface(libusb_device_handle *dev_handle, int interface_number);
int libusb_release_interface(libusb_device_handle *dev_handle, int interface_number);
libusb_device_handle *libusb_open_device_with_vid_pid(libusb_context *ctx, uint16_t vendor_id,
                                                       uint16_t product_id);
int libusb_set_interface_alt_setting(libusb_device_handle *dev_handle, int interface_number,
                                     int alternate_setting);
int libusb_clear_halt(libusb_device_handle *dev_handle, unsigned char endpoint);
int libusb_reset_device(libusb_device_handle *dev_handle);
int libusb_alloc_streams(libusb_device_handle *dev_handle, uint32_t num_streams, unsigned char *endpoints,
                         int num_endpoints);
int libusb_free_streams(libusb_device_handle *dev_handle, unsigned char *endpoints, int num_endpoints);
unsigned char *libusb_dev_mem_alloc(libusb_device_handle *dev_handle, size_t length);
int libusb_dev_mem_free(libusb_device_handle *dev_handle, unsigned char *buffer, size_t length);
int libusb_kernel_driver_active(libusb_device_handle *dev_handle, int interface_number);
int libusb_detach_kernel_driver(libusb_device_handle *dev_handle, int interface_number);
int libusb_attach_kernel_driver(libusb_device_handle *dev_handle, int interface_number);
int libusb_set_auto_detach_kernel_driver(libusb_device_handle *dev_handle, int enable);

struct libusb_transfer *libusb_alloc_transfer(int iso_packets);
int libusb_submit_transfer(struct libusb_transfer *transfer);
int libusb_cancel_transfer(struct libusb_transfer *transfer);
void libusb_free_transfer(struct libusb_transfer *transfer);
void libusb_transfer_set_stream_id(struct libusb_transfer *transfer, uint32_t stream_id);
uint32_t libusb_transfer_get_stream_id(struct libusb_transfer *transfer);

int libusb_control_transfer(libusb_device_handle *dev_handle, uint8_t request_type, uint8_t bRequest,
                            uint16_t wValue, uint16_t wIndex, unsigned char *data, uint16_t wLength,
                            unsigned int timeout);
int libusb_bulk_transfer(libusb_device_handle *dev_handle, unsigned char endpoint, unsigned char *data,
                         int length, int *actual_length, unsigned int timeout);
int libusb_interrupt_transfer(libusb_device_handle *dev_handle, unsigned char endpoint,
                              unsigned char *data, int length, int *actual_length, unsigned int timeout);
int libusb_get_string_descriptor_ascii(libusb_device_handle *dev_handle, uint8_t desc_index,
                                       unsigned char *data, int length);

int libusb_try_lock_events(libusb_context *ctx);
void libusb_lock_events(libusb_context *ctx);
void libusb_unlock_events(libusb_context *ctx);
int libusb_event_handling_ok(libusb_context *ctx);
int libusb_event_handler_active(libusb_context *ctx);
void libusb_interrupt_event_handler(libusb_context *ctx);
void libusb_lock_event_waiters(libusb_context *ctx);
void libusb_unlock_event_waiters(libusb_context *ctx);
int libusb_wait_for_event(libusb_context *ctx, struct timeval *tv);
int libusb_handle_events_timeout(libusb_context *ctx, struct timeval *tv);
int libusb_handle_events_timeout_completed(libusb_context *ctx, struct timeval *tv, int *completed);
int libusb_handle_events(libusb_context *ctx);
int libusb_handle_events_completed(libusb_context *ctx, int *completed);
int libusb_handle_events_locked(libusb_context *ctx, struct timeval *tv);
int libusb_pollfds_handle_timeouts(libusb_context *ctx);
int libusb_get_next_timeout(libusb_context *ctx, struct timeval *tv);
const struct libusb_pollfd **libusb_get_pollfds(libusb_context *ctx);
void libusb_free_pollfds(const struct libusb_pollfd **pollfds);
void libusb_set_pollfd_notifiers(libusb_context *ctx, libusb_pollfd_added_cb added_cb,
                                 libusb_pollfd_removed_cb removed_cb, void *user_data);

int libusb_hotplug_register_callback(libusb_context *ctx, int events, int flags, int vendor_id,
                                     int product_id, int dev_class, libusb_hotplug_callback_fn cb_fn,
                                     void *user_data, libusb_hotplug_callback_handle *callback_handle);
void libusb_hotplug_deregister_callback(libusb_context *ctx, libusb_hotplug_callback_handle callback_handle);
void *libusb_hotplug_get_user_data(libusb_context *ctx, libusb_hotplug_callback_handle callback_handle);

/* ---- layout checks: libusb's real layouts, on LP64 and on ILP32 ---- */
#ifdef __cplusplus
#define LIBUSB_ABI_CHECK(cond) static_assert(cond, "libusb ABI: " #cond)
#else
#define LIBUSB_ABI_CHECK(cond) _Static_assert(cond, "libusb ABI: " #cond)
#endif
/* The offset or size on LP64 (64-bit Linux and macOS) and on ILP32 (32-bit ARM and x86, where no
 * member here needs more than 4-byte alignment). */
#define LIBUSB_ABI_AT(lp64, ilp32) (sizeof(void *) == 8 ? (lp64) : (ilp32))
#define LIBUSB_ABI_OFFSET(type, member, lp64, ilp32) \
	LIBUSB_ABI_CHECK(offsetof(struct type, member) == LIBUSB_ABI_AT(lp64, ilp32))
#define LIBUSB_ABI_SIZE(type, lp64, ilp32) LIBUSB_ABI_CHECK(sizeof(struct type) == LIBUSB_ABI_AT(lp64, ilp32))

LIBUSB_ABI_CHECK(sizeof(void *) == 8 || sizeof(void *) == 4);
/* Enums stand in structs (status) and signatures as int. */
LIBUSB_ABI_CHECK(sizeof(enum libusb_transfer_status) == sizeof(int));
LIBUSB_ABI_CHECK(sizeof(enum libusb_error) == sizeof(int));
LIBUSB_ABI_CHECK(sizeof(libusb_hotplug_event) == sizeof(int));
LIBUSB_ABI_CHECK(LIBUSB_CONTROL_SETUP_SIZE == sizeof(struct libusb_control_setup));
LIBUSB_ABI_CHECK(LIBUSB_DT_DEVICE_SIZE == sizeof(struct libusb_device_descriptor));

LIBUSB_ABI_OFFSET(libusb_transfer, dev_handle, 0, 0);
LIBUSB_ABI_OFFSET(libusb_transfer, flags, 8, 4);
LIBUSB_ABI_OFFSET(libusb_transfer, endpoint, 9, 5);
LIBUSB_ABI_OFFSET(libusb_transfer, type, 10, 6);
LIBUSB_ABI_OFFSET(libusb_transfer, timeout, 12, 8);
LIBUSB_ABI_OFFSET(libusb_transfer, status, 16, 12);
LIBUSB_ABI_OFFSET(libusb_transfer, length, 20, 16);
LIBUSB_ABI_OFFSET(libusb_transfer, actual_length, 24, 20);
LIBUSB_ABI_OFFSET(libusb_transfer, callback, 32, 24);
LIBUSB_ABI_OFFSET(libusb_transfer, user_data, 40, 28);
LIBUSB_ABI_OFFSET(libusb_transfer, buffer, 48, 32);
LIBUSB_ABI_OFFSET(libusb_transfer, num_iso_packets, 56, 36);
LIBUSB_ABI_OFFSET(libusb_transfer, iso_packet_desc, 60, 40);
/* What libusb_alloc_transfer(0) provides: no room for an iso packet descriptor. */
LIBUSB_ABI_SIZE(libusb_transfer, 64, 40);
LIBUSB_ABI_SIZE(libusb_iso_packet_descriptor, 12, 12);

LIBUSB_ABI_OFFSET(libusb_control_setup, bmRequestType, 0, 0);
LIBUSB_ABI_OFFSET(libusb_control_setup, bRequest, 1, 1);
LIBUSB_ABI_OFFSET(libusb_control_setup, wValue, 2, 2);
LIBUSB_ABI_OFFSET(libusb_control_setup, wIndex, 4, 4);
LIBUSB_ABI_OFFSET(libusb_control_setup, wLength, 6, 6);
LIBUSB_ABI_SIZE(libusb_control_setup, 8, 8);

LIBUSB_ABI_OFFSET(libusb_device_descriptor, bcdUSB, 2, 2);
LIBUSB_ABI_OFFSET(libusb_device_descriptor, bDeviceClass, 4, 4);
LIBUSB_ABI_OFFSET(libusb_device_descriptor, bMaxPacketSize0, 7, 7);
LIBUSB_ABI_OFFSET(libusb_device_descriptor, idVendor, 8, 8);
LIBUSB_ABI_OFFSET(libusb_device_descriptor, idProduct, 10, 10);
LIBUSB_ABI_OFFSET(libusb_device_descriptor, bcdDevice, 12, 12);
LIBUSB_ABI_OFFSET(libusb_device_descriptor, iManufacturer, 14, 14);
LIBUSB_ABI_OFFSET(libusb_device_descriptor, bNumConfigurations, 17, 17);
LIBUSB_ABI_SIZE(libusb_device_descriptor, 18, 18);

LIBUSB_ABI_OFFSET(libusb_endpoint_descriptor, wMaxPacketSize, 4, 4);
LIBUSB_ABI_OFFSET(libusb_endpoint_descriptor, bSynchAddress, 8, 8);
LIBUSB_ABI_OFFSET(libusb_endpoint_descriptor, extra, 16, 12);
LIBUSB_ABI_OFFSET(libusb_endpoint_descriptor, extra_length, 24, 16);
LIBUSB_ABI_SIZE(libusb_endpoint_descriptor, 32, 20);

LIBUSB_ABI_OFFSET(libusb_interface_descriptor, iInterface, 8, 8);
LIBUSB_ABI_OFFSET(libusb_interface_descriptor, endpoint, 16, 12);
LIBUSB_ABI_OFFSET(libusb_interface_descriptor, extra, 24, 16);
LIBUSB_ABI_OFFSET(libusb_interface_descriptor, extra_length, 32, 20);
LIBUSB_ABI_SIZE(libusb_interface_descriptor, 40, 24);

LIBUSB_ABI_OFFSET(libusb_interface, num_altsetting, 8, 4);
LIBUSB_ABI_SIZE(libusb_interface, 16, 8);

LIBUSB_ABI_OFFSET(libusb_config_descriptor, wTotalLength, 2, 2);
LIBUSB_ABI_OFFSET(libusb_config_descriptor, MaxPower, 8, 8);
LIBUSB_ABI_OFFSET(libusb_config_descriptor, interface, 16, 12);
LIBUSB_ABI_OFFSET(libusb_config_descriptor, extra, 24, 16);
LIBUSB_ABI_OFFSET(libusb_config_descriptor, extra_length, 32, 20);
LIBUSB_ABI_SIZE(libusb_config_descriptor, 40, 24);

LIBUSB_ABI_OFFSET(libusb_ss_endpoint_companion_descriptor, wBytesPerInterval, 4, 4);
LIBUSB_ABI_SIZE(libusb_ss_endpoint_companion_descriptor, 6, 6);

LIBUSB_ABI_OFFSET(libusb_version, rc, 8, 8);
LIBUSB_ABI_OFFSET(libusb_version, describe, 16, 12);
LIBUSB_ABI_SIZE(libusb_version, 24, 16);

LIBUSB_ABI_OFFSET(libusb_pollfd, events, 4, 4);
LIBUSB_ABI_SIZE(libusb_pollfd, 8, 8);

#undef LIBUSB_ABI_SIZE
#undef LIBUSB_ABI_OFFSET
#undef LIBUSB_ABI_AT
#undef LIBUSB_ABI_CHECK

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif /* MUXWIRE_LIBUSB_ABI_H */
