/*
 * Devices and handles: the device list, identity (bus 1, an address counting up, one port),
 * open/close, configuration, interfaces and the kernel-driver calls.
 *
 * No kernel driver ever binds a simulated device, so the kernel-driver calls answer as libusb does
 * for an interface without one: not active, nothing to detach. Configuration and alternate
 * settings are real requests on the wire; the device decides.
 */
#include <stdlib.h>
#include <string.h>

#include "vusb.h"

VUSB_API ssize_t libusb_get_device_list(libusb_context *ctx, libusb_device ***list)
{
	ctx = vusb_ctx(ctx);
	if (!ctx || !list)
		return LIBUSB_ERROR_INVALID_PARAM;
	/* A program that polls the list instead of handling events still sees plugs and unplugs. */
	pthread_mutex_lock(&ctx->lock);
	hotplug_scan_locked(ctx);
	device_reap_locked(ctx);
	pthread_mutex_unlock(&ctx->lock);
	events_io_step(ctx, 0, false);
	hotplug_settle(ctx, vusb_settle_ms());
	pthread_mutex_lock(&ctx->lock);
	size_t n = 0;
	struct vlist *pos, *tmp;
	vlist_for_each_safe(pos, tmp, &ctx->devices) {
		if (vcontainer_of(pos, libusb_device, link)->state == DEV_READY)
			n++;
	}
	libusb_device **arr = calloc(n + 1, sizeof(*arr));
	if (!arr) {
		pthread_mutex_unlock(&ctx->lock);
		return LIBUSB_ERROR_NO_MEM;
	}
	size_t i = 0;
	vlist_for_each_safe(pos, tmp, &ctx->devices) {
		libusb_device *dev = vcontainer_of(pos, libusb_device, link);
		if (dev->state == DEV_READY) {
			device_ref_locked(dev);
			arr[i++] = dev;
		}
	}
	pthread_mutex_unlock(&ctx->lock);
	*list = arr;
	return (ssize_t)n;
}

VUSB_API void libusb_free_device_list(libusb_device **list, int unref_devices)
{
	if (!list)
		return;
	if (unref_devices)
		for (libusb_device **p = list; *p; p++)
			libusb_unref_device(*p);
	free(list);
}

VUSB_API libusb_device *libusb_ref_device(libusb_device *dev)
{
	pthread_mutex_lock(&dev->ctx->lock);
	device_ref_locked(dev);
	pthread_mutex_unlock(&dev->ctx->lock);
	return dev;
}

VUSB_API void libusb_unref_device(libusb_device *dev)
{
	if (!dev)
		return;
	libusb_context *ctx = dev->ctx;
	pthread_mutex_lock(&ctx->lock);
	device_unref_locked(dev);
	pthread_mutex_unlock(&ctx->lock);
}

VUSB_API uint8_t libusb_get_bus_number(libusb_device *dev) { return dev->bus; }
VUSB_API uint8_t libusb_get_device_address(libusb_device *dev) { return dev->address; }
VUSB_API int libusb_get_device_speed(libusb_device *dev) { return dev->speed; }
VUSB_API libusb_device *libusb_get_parent(libusb_device *dev) { (void)dev; return NULL; }

/* Each device hangs off its own root-hub port, numbered like its address so it is stable. */
VUSB_API uint8_t libusb_get_port_number(libusb_device *dev) { return dev->address; }

VUSB_API int libusb_get_port_numbers(libusb_device *dev, uint8_t *port_numbers, int port_numbers_len)
{
	if (!port_numbers || port_numbers_len <= 0)
		return LIBUSB_ERROR_INVALID_PARAM;
	port_numbers[0] = dev->address;
	return 1;
}

VUSB_API int libusb_get_port_path(libusb_context *ctx, libusb_device *dev, uint8_t *path, uint8_t path_length)
{
	(void)ctx;
	return libusb_get_port_numbers(dev, path, path_length);
}

VUSB_API int libusb_open(libusb_device *dev, libusb_device_handle **dev_handle)
{
	libusb_context *ctx = dev->ctx;
	pthread_mutex_lock(&ctx->lock);
	int r = 0;
	if (dev->state != DEV_READY) {
		r = LIBUSB_ERROR_NO_DEVICE;
	} else {
		libusb_device_handle *h = calloc(1, sizeof(*h));
		if (!h) {
			r = LIBUSB_ERROR_NO_MEM;
		} else {
			h->dev = dev;
			device_ref_locked(dev);
			*dev_handle = h;
		}
	}
	pthread_mutex_unlock(&ctx->lock);
	return r;
}

VUSB_API void libusb_close(libusb_device_handle *dev_handle)
{
	if (!dev_handle)
		return;
	libusb_device *dev = dev_handle->dev;
	libusb_context *ctx = dev->ctx;
	pthread_mutex_lock(&ctx->lock);
	device_unref_locked(dev);
	pthread_mutex_unlock(&ctx->lock);
	free(dev_handle);
}

VUSB_API libusb_device *libusb_get_device(libusb_device_handle *dev_handle)
{
	return dev_handle->dev;
}

VUSB_API libusb_device_handle *libusb_open_device_with_vid_pid(libusb_context *ctx, uint16_t vendor_id,
                                                                uint16_t product_id)
{
	libusb_device **list;
	ssize_t n = libusb_get_device_list(ctx, &list);
	if (n < 0)
		return NULL;
	libusb_device_handle *h = NULL;
	for (ssize_t i = 0; i < n && !h; i++) {
		struct libusb_device_descriptor d;
		libusb_get_device_descriptor(list[i], &d);
		if (d.idVendor == vendor_id && d.idProduct == product_id && libusb_open(list[i], &h) < 0)
			h = NULL;
	}
	libusb_free_device_list(list, 1);
	return h;
}

static bool gone(libusb_device *dev)
{
	pthread_mutex_lock(&dev->ctx->lock);
	bool g = dev->state == DEV_GONE;
	pthread_mutex_unlock(&dev->ctx->lock);
	return g;
}

/* GET_CONFIGURATION on the wire; the answer also refreshes what
 * libusb_get_active_config_descriptor() reports. */
VUSB_API int libusb_get_configuration(libusb_device_handle *dev_handle, int *config)
{
	libusb_device *dev = dev_handle->dev;
	unsigned char value = 0;
	int r = libusb_control_transfer(dev_handle, LIBUSB_ENDPOINT_IN, LIBUSB_REQUEST_GET_CONFIGURATION, 0, 0,
	                                &value, 1, 1000);
	if (r == LIBUSB_ERROR_NO_DEVICE)
		return r;
	pthread_mutex_lock(&dev->ctx->lock);
	if (r == 1 && (value == 0 || desc_find_config_by_value(dev, value)))
		dev->active_config = value;
	else
		VLOG_WARN(dev->ctx, "vusb %s: GET_CONFIGURATION failed (%d), using %u", dev->name, r, dev->active_config);
	*config = dev->active_config;
	pthread_mutex_unlock(&dev->ctx->lock);
	return 0;
}

VUSB_API int libusb_set_configuration(libusb_device_handle *dev_handle, int configuration)
{
	libusb_device *dev = dev_handle->dev;
	if (configuration < -1 || configuration > 255)
		return LIBUSB_ERROR_INVALID_PARAM;
	uint8_t value = configuration == -1 ? 0 : (uint8_t)configuration;
	pthread_mutex_lock(&dev->ctx->lock);
	bool known = value == 0 || desc_find_config_by_value(dev, value) != NULL;
	uint32_t claimed = dev_handle->claimed;
	pthread_mutex_unlock(&dev->ctx->lock);
	if (!known)
		return LIBUSB_ERROR_NOT_FOUND;
	if (claimed)
		return LIBUSB_ERROR_BUSY; /* as the kernel: not while interfaces are claimed */
	int r = libusb_control_transfer(dev_handle, LIBUSB_ENDPOINT_OUT, LIBUSB_REQUEST_SET_CONFIGURATION, value, 0,
	                                NULL, 0, 1000);
	if (r < 0)
		return r;
	pthread_mutex_lock(&dev->ctx->lock);
	dev->active_config = value;
	pthread_mutex_unlock(&dev->ctx->lock);
	return 0;
}

/* True when the active configuration has an interface with this number. */
static bool has_interface(libusb_device *dev, int number)
{
	struct libusb_config_descriptor *c;
	if (libusb_get_active_config_descriptor(dev, &c) < 0)
		return false;
	bool found = false;
	for (int i = 0; i < c->bNumInterfaces; i++)
		if (c->interface[i].num_altsetting > 0 && c->interface[i].altsetting[0].bInterfaceNumber == number)
			found = true;
	libusb_free_config_descriptor(c);
	return found;
}

VUSB_API int libusb_claim_interface(libusb_device_handle *dev_handle, int interface_number)
{
	if (interface_number < 0 || interface_number >= 32)
		return LIBUSB_ERROR_INVALID_PARAM;
	if (gone(dev_handle->dev))
		return LIBUSB_ERROR_NO_DEVICE;
	if (!has_interface(dev_handle->dev, interface_number))
		return LIBUSB_ERROR_NOT_FOUND;
	pthread_mutex_lock(&dev_handle->dev->ctx->lock);
	dev_handle->claimed |= 1u << interface_number;
	pthread_mutex_unlock(&dev_handle->dev->ctx->lock);
	return 0;
}

VUSB_API int libusb_release_interface(libusb_device_handle *dev_handle, int interface_number)
{
	if (interface_number < 0 || interface_number >= 32)
		return LIBUSB_ERROR_INVALID_PARAM;
	libusb_context *ctx = dev_handle->dev->ctx;
	pthread_mutex_lock(&ctx->lock);
	int r = 0;
	if (!(dev_handle->claimed & (1u << interface_number)))
		r = LIBUSB_ERROR_NOT_FOUND;
	dev_handle->claimed &= ~(1u << interface_number);
	if (r == 0 && dev_handle->dev->state == DEV_GONE)
		r = LIBUSB_ERROR_NO_DEVICE;
	pthread_mutex_unlock(&ctx->lock);
	return r;
}

VUSB_API int libusb_set_interface_alt_setting(libusb_device_handle *dev_handle, int interface_number,
                                              int alternate_setting)
{
	if (interface_number < 0 || interface_number >= 32 || alternate_setting < 0 || alternate_setting > 255)
		return LIBUSB_ERROR_INVALID_PARAM;
	if (!(dev_handle->claimed & (1u << interface_number)))
		return LIBUSB_ERROR_NOT_FOUND;
	int r = libusb_control_transfer(dev_handle, LIBUSB_RECIPIENT_INTERFACE, LIBUSB_REQUEST_SET_INTERFACE,
	                                (uint16_t)alternate_setting, (uint16_t)interface_number, NULL, 0, 1000);
	return r < 0 ? (r == LIBUSB_ERROR_PIPE ? LIBUSB_ERROR_NOT_FOUND : r) : 0;
}

VUSB_API int libusb_clear_halt(libusb_device_handle *dev_handle, unsigned char endpoint)
{
	int r = libusb_control_transfer(dev_handle, LIBUSB_RECIPIENT_ENDPOINT, LIBUSB_REQUEST_CLEAR_FEATURE,
	                                0 /* ENDPOINT_HALT */, endpoint, NULL, 0, 1000);
	return r < 0 ? r : 0;
}

/* A port reset has no message on the vusb wire. */
VUSB_API int libusb_reset_device(libusb_device_handle *dev_handle)
{
	return gone(dev_handle->dev) ? LIBUSB_ERROR_NO_DEVICE : LIBUSB_ERROR_NOT_SUPPORTED;
}

VUSB_API int libusb_kernel_driver_active(libusb_device_handle *dev_handle, int interface_number)
{
	if (interface_number < 0 || interface_number > 255)
		return LIBUSB_ERROR_INVALID_PARAM;
	return gone(dev_handle->dev) ? LIBUSB_ERROR_NO_DEVICE : 0;
}

VUSB_API int libusb_detach_kernel_driver(libusb_device_handle *dev_handle, int interface_number)
{
	if (interface_number < 0 || interface_number > 255)
		return LIBUSB_ERROR_INVALID_PARAM;
	return gone(dev_handle->dev) ? LIBUSB_ERROR_NO_DEVICE : LIBUSB_ERROR_NOT_FOUND; /* none attached */
}

VUSB_API int libusb_attach_kernel_driver(libusb_device_handle *dev_handle, int interface_number)
{
	if (interface_number < 0 || interface_number > 255)
		return LIBUSB_ERROR_INVALID_PARAM;
	return gone(dev_handle->dev) ? LIBUSB_ERROR_NO_DEVICE : LIBUSB_ERROR_NOT_FOUND; /* no driver to attach */
}

VUSB_API int libusb_set_auto_detach_kernel_driver(libusb_device_handle *dev_handle, int enable)
{
	dev_handle->auto_detach = enable != 0;
	return 0;
}

VUSB_API int libusb_alloc_streams(libusb_device_handle *dev_handle, uint32_t num_streams, unsigned char *endpoints,
                                  int num_endpoints)
{
	(void)dev_handle;
	(void)num_streams;
	(void)endpoints;
	(void)num_endpoints;
	return LIBUSB_ERROR_NOT_SUPPORTED;
}

VUSB_API int libusb_free_streams(libusb_device_handle *dev_handle, unsigned char *endpoints, int num_endpoints)
{
	(void)dev_handle;
	(void)endpoints;
	(void)num_endpoints;
	return LIBUSB_ERROR_NOT_SUPPORTED;
}

VUSB_API unsigned char *libusb_dev_mem_alloc(libusb_device_handle *dev_handle, size_t length)
{
	(void)dev_handle;
	(void)length;
	return NULL; /* as libusb where the platform has no DMA-able memory: callers fall back to malloc */
}

VUSB_API int libusb_dev_mem_free(libusb_device_handle *dev_handle, unsigned char *buffer, size_t length)
{
	(void)dev_handle;
	(void)buffer;
	(void)length;
	return LIBUSB_ERROR_NOT_SUPPORTED;
}

VUSB_API int libusb_wrap_sys_device(libusb_context *ctx, intptr_t sys_dev, libusb_device_handle **dev_handle)
{
	(void)ctx;
	(void)sys_dev;
	(void)dev_handle;
	return LIBUSB_ERROR_NOT_SUPPORTED;
}
