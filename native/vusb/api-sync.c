/*
 * The synchronous calls: libusb_control_transfer, libusb_bulk_transfer,
 * libusb_interrupt_transfer, and the ones built on them (string descriptors).
 *
 * libusb implements these with a transfer whose callback sets a flag, and event handling until
 * the flag is set. Here the transfer is internal (finished under the lock, not through the
 * callback queue) and the waiting thread drives I/O with events_io_step(), which runs no user
 * callback: so these calls work from any thread and from inside callbacks (usbmuxd configures the
 * device from its hotplug callback, which real libusb serves from sysfs and ioctls without event
 * handling). Other transfers finishing meanwhile wait for the application's event handling.
 */
#include <stdlib.h>
#include <string.h>

#include "vusb.h"

#define SYNC_POLL_SLICE_MS 50 /* re-check with a fresh poll set when another thread moved things */

struct sync_state {
	int done; /* set under ctx->lock by sync_done() */
};

static void sync_done(struct vusb_xfer *x)
{
	struct sync_state *s = x->internal_data;
	s->done = 1;
}

/* Submits `x` (prepared by the caller) and waits until it finishes; returns its status or an
 * error from submission. */
static int run_sync(libusb_device_handle *handle, struct vusb_xfer *x, enum libusb_transfer_status *status)
{
	libusb_device *dev = handle->dev;
	libusb_context *ctx = dev->ctx;
	struct sync_state s = { 0 };
	struct libusb_transfer *t = xfer_pub(x);
	t->dev_handle = handle;
	x->dev = dev;
	x->internal = sync_done;
	x->internal_data = &s;
	pthread_mutex_lock(&ctx->lock);
	int r = xfer_submit_locked(x);
	pthread_mutex_unlock(&ctx->lock);
	if (r < 0)
		return r;
	for (;;) {
		pthread_mutex_lock(&ctx->lock);
		int done = s.done;
		pthread_mutex_unlock(&ctx->lock);
		if (done)
			break;
		events_io_step(ctx, SYNC_POLL_SLICE_MS, false);
	}
	*status = t->status;
	return 0;
}

static int status_to_error(enum libusb_transfer_status st)
{
	switch (st) {
	case LIBUSB_TRANSFER_COMPLETED: return 0;
	case LIBUSB_TRANSFER_TIMED_OUT: return LIBUSB_ERROR_TIMEOUT;
	case LIBUSB_TRANSFER_STALL: return LIBUSB_ERROR_PIPE;
	case LIBUSB_TRANSFER_NO_DEVICE: return LIBUSB_ERROR_NO_DEVICE;
	case LIBUSB_TRANSFER_OVERFLOW: return LIBUSB_ERROR_OVERFLOW;
	default: return LIBUSB_ERROR_IO;
	}
}

VUSB_API int libusb_control_transfer(libusb_device_handle *dev_handle, uint8_t request_type, uint8_t bRequest,
                                     uint16_t wValue, uint16_t wIndex, unsigned char *data, uint16_t wLength,
                                     unsigned int timeout)
{
	if (!dev_handle || (wLength > 0 && !data))
		return LIBUSB_ERROR_INVALID_PARAM;
	struct vusb_xfer *x = xfer_alloc(0);
	uint8_t *buf = malloc(LIBUSB_CONTROL_SETUP_SIZE + (size_t)wLength);
	if (!x || !buf) {
		free(x);
		free(buf);
		return LIBUSB_ERROR_NO_MEM;
	}
	buf[0] = request_type;
	buf[1] = bRequest;
	buf[2] = (uint8_t)wValue;
	buf[3] = (uint8_t)(wValue >> 8);
	buf[4] = (uint8_t)wIndex;
	buf[5] = (uint8_t)(wIndex >> 8);
	buf[6] = (uint8_t)wLength;
	buf[7] = (uint8_t)(wLength >> 8);
	if (!(request_type & LIBUSB_ENDPOINT_IN) && wLength)
		memcpy(buf + LIBUSB_CONTROL_SETUP_SIZE, data, wLength);
	struct libusb_transfer *t = xfer_pub(x);
	t->type = LIBUSB_TRANSFER_TYPE_CONTROL;
	t->buffer = buf;
	t->length = LIBUSB_CONTROL_SETUP_SIZE + wLength;
	t->timeout = timeout;
	enum libusb_transfer_status st;
	int r = run_sync(dev_handle, x, &st);
	if (r == 0) {
		r = status_to_error(st);
		if (r == 0) {
			if ((request_type & LIBUSB_ENDPOINT_IN) && t->actual_length > 0)
				memcpy(data, buf + LIBUSB_CONTROL_SETUP_SIZE, (size_t)t->actual_length);
			r = t->actual_length;
		}
	}
	free(buf);
	free(x);
	return r;
}

static int sync_bulk(libusb_device_handle *dev_handle, unsigned char endpoint, unsigned char *data, int length,
                     int *transferred, unsigned int timeout, unsigned char type)
{
	if (!dev_handle || length < 0 || (length > 0 && !data))
		return LIBUSB_ERROR_INVALID_PARAM;
	struct vusb_xfer *x = xfer_alloc(0);
	if (!x)
		return LIBUSB_ERROR_NO_MEM;
	struct libusb_transfer *t = xfer_pub(x);
	t->type = type;
	t->endpoint = endpoint;
	t->buffer = data;
	t->length = length;
	t->timeout = timeout;
	enum libusb_transfer_status st;
	int r = run_sync(dev_handle, x, &st);
	if (transferred)
		*transferred = r == 0 ? t->actual_length : 0;
	if (r == 0)
		r = status_to_error(st); /* a timeout still reports the bytes moved, as libusb */
	free(x);
	return r;
}

VUSB_API int libusb_bulk_transfer(libusb_device_handle *dev_handle, unsigned char endpoint, unsigned char *data,
                                  int length, int *transferred, unsigned int timeout)
{
	return sync_bulk(dev_handle, endpoint, data, length, transferred, timeout, LIBUSB_TRANSFER_TYPE_BULK);
}

VUSB_API int libusb_interrupt_transfer(libusb_device_handle *dev_handle, unsigned char endpoint,
                                       unsigned char *data, int length, int *transferred, unsigned int timeout)
{
	return sync_bulk(dev_handle, endpoint, data, length, transferred, timeout, LIBUSB_TRANSFER_TYPE_INTERRUPT);
}

/* As libusb: the first language the device lists, then the string in it, UTF-16LE folded to ASCII
 * with '?' for anything outside it. */
VUSB_API int libusb_get_string_descriptor_ascii(libusb_device_handle *dev_handle, uint8_t desc_index,
                                                unsigned char *data, int length)
{
	if (desc_index == 0 || !data || length <= 0)
		return LIBUSB_ERROR_INVALID_PARAM;
	unsigned char tbuf[255];
	int r = libusb_control_transfer(dev_handle, LIBUSB_ENDPOINT_IN, LIBUSB_REQUEST_GET_DESCRIPTOR,
	                                LIBUSB_DT_STRING << 8, 0, tbuf, sizeof(tbuf), 1000);
	if (r < 0)
		return r;
	if (r < 4)
		return LIBUSB_ERROR_IO;
	uint16_t langid = (uint16_t)(tbuf[2] | (tbuf[3] << 8));
	r = libusb_control_transfer(dev_handle, LIBUSB_ENDPOINT_IN, LIBUSB_REQUEST_GET_DESCRIPTOR,
	                            (uint16_t)((LIBUSB_DT_STRING << 8) | desc_index), langid, tbuf, sizeof(tbuf), 1000);
	if (r < 0)
		return r;
	if (r < 2 || tbuf[1] != LIBUSB_DT_STRING || tbuf[0] > r)
		return LIBUSB_ERROR_IO;
	int di = 0;
	for (int si = 2; si + 1 < tbuf[0] && di < length - 1; si += 2)
		data[di++] = (tbuf[si] & 0x80 || tbuf[si + 1]) ? '?' : tbuf[si];
	data[di] = 0;
	return di;
}
