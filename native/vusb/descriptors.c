/*
 * Descriptors as libusb hands them out, parsed from the raw bytes the device sent at discovery.
 *
 *   configuration descriptor (wTotalLength bytes)
 *    +--------+-----+--------+------+--------+------+--------+------+-----
 *    | config | ... | iface  | ...  | endpt  | ...  | endpt  | iface| ...
 *    | 9 B    |extra| 9 B    |extra | 7/9 B  |extra | 7/9 B  | (alt)|
 *    +--------+-----+--------+------+--------+------+--------+------+-----
 *    each descriptor: u8 bLength, u8 bDescriptorType, fields (multi-byte ones little-endian)
 *
 * As libusb does: descriptors it does not parse (class-specific, companions) become the `extra`
 * bytes of the config, interface or endpoint they follow; consecutive interface descriptors with
 * the same bInterfaceNumber are the alternate settings of one libusb_interface. Every bLength is
 * checked against the bytes left before it is read; counts in the structs are the counts actually
 * present, so a program that loops to bNumEndpoints never reads past an array.
 */
#include <stdlib.h>
#include <string.h>

#include "vusb.h"

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

int desc_config_header_ok(const uint8_t *raw, size_t len)
{
	return len >= LIBUSB_DT_CONFIG_SIZE && raw[0] >= LIBUSB_DT_CONFIG_SIZE && raw[1] == LIBUSB_DT_CONFIG &&
	       le16(raw + 2) >= LIBUSB_DT_CONFIG_SIZE;
}

const struct vusb_config *desc_find_config_by_value(const libusb_device *dev, uint8_t value)
{
	if (value == 0)
		return NULL;
	for (int i = 0; i < dev->num_configs; i++) {
		const struct vusb_config *c = &dev->configs[i];
		if (c->raw && c->raw[5] == value)
			return c;
	}
	return NULL;
}

/* Bytes from `off` up to the next descriptor of one of the stop types (or the end). */
static size_t extra_until(const uint8_t *raw, size_t len, size_t off, bool stop_at_endpoint)
{
	size_t start = off;
	while (off + 2 <= len) {
		uint8_t bl = raw[off], type = raw[off + 1];
		if (bl < 2 || off + bl > len)
			break;
		if (type == LIBUSB_DT_INTERFACE || type == LIBUSB_DT_CONFIG || type == LIBUSB_DT_DEVICE ||
		    (stop_at_endpoint && type == LIBUSB_DT_ENDPOINT))
			break;
		off += bl;
	}
	return off - start;
}

static int copy_extra(const uint8_t *src, size_t n, const unsigned char **extra, int *extra_length)
{
	*extra = NULL;
	*extra_length = 0;
	if (n == 0)
		return 0;
	unsigned char *e = malloc(n);
	if (!e)
		return LIBUSB_ERROR_NO_MEM;
	memcpy(e, src, n);
	*extra = e;
	*extra_length = (int)n;
	return 0;
}

static void free_altsetting(struct libusb_interface_descriptor *alt)
{
	if (alt->endpoint) {
		for (int e = 0; e < alt->bNumEndpoints; e++)
			free((void *)alt->endpoint[e].extra);
		free((void *)alt->endpoint);
	}
	free((void *)alt->extra);
}

void desc_free_config(struct libusb_config_descriptor *c)
{
	if (!c)
		return;
	if (c->interface) {
		for (int i = 0; i < c->bNumInterfaces; i++) {
			const struct libusb_interface *itf = &c->interface[i];
			for (int a = 0; a < itf->num_altsetting; a++)
				free_altsetting((struct libusb_interface_descriptor *)&itf->altsetting[a]);
			free((void *)itf->altsetting);
		}
		free((void *)c->interface);
	}
	free((void *)c->extra);
	free(c);
}

/* Parses one interface descriptor at `*off` with its endpoints and extras. */
static int parse_altsetting(const uint8_t *raw, size_t len, size_t *off, struct libusb_interface_descriptor *alt)
{
	const uint8_t *d = raw + *off;
	if (d[0] < LIBUSB_DT_INTERFACE_SIZE)
		return LIBUSB_ERROR_IO;
	alt->bLength = d[0];
	alt->bDescriptorType = d[1];
	alt->bInterfaceNumber = d[2];
	alt->bAlternateSetting = d[3];
	alt->bInterfaceClass = d[5];
	alt->bInterfaceSubClass = d[6];
	alt->bInterfaceProtocol = d[7];
	alt->iInterface = d[8];
	uint8_t declared = d[4];
	*off += d[0];
	size_t n = extra_until(raw, len, *off, true);
	if (copy_extra(raw + *off, n, &alt->extra, &alt->extra_length) < 0)
		return LIBUSB_ERROR_NO_MEM;
	*off += n;
	/* Count the endpoint descriptors really present before the next interface. */
	int count = 0;
	for (size_t o = *off; o + 2 <= len && count < declared;) {
		uint8_t bl = raw[o], type = raw[o + 1];
		if (bl < 2 || o + bl > len || type == LIBUSB_DT_INTERFACE || type == LIBUSB_DT_CONFIG)
			break;
		if (type == LIBUSB_DT_ENDPOINT)
			count++;
		o += bl;
	}
	alt->bNumEndpoints = (uint8_t)count;
	if (count == 0)
		return 0;
	struct libusb_endpoint_descriptor *eps = calloc((size_t)count, sizeof(*eps));
	if (!eps)
		return LIBUSB_ERROR_NO_MEM;
	alt->endpoint = eps;
	for (int e = 0; e < count;) {
		const uint8_t *p = raw + *off;
		if (p[1] != LIBUSB_DT_ENDPOINT) { /* something between endpoints: skip it */
			*off += p[0];
			continue;
		}
		if (p[0] < LIBUSB_DT_ENDPOINT_SIZE)
			return LIBUSB_ERROR_IO;
		struct libusb_endpoint_descriptor *ep = &eps[e++];
		ep->bLength = p[0];
		ep->bDescriptorType = p[1];
		ep->bEndpointAddress = p[2];
		ep->bmAttributes = p[3];
		ep->wMaxPacketSize = le16(p + 4);
		ep->bInterval = p[6];
		if (p[0] >= LIBUSB_DT_ENDPOINT_AUDIO_SIZE) {
			ep->bRefresh = p[7];
			ep->bSynchAddress = p[8];
		}
		*off += p[0];
		size_t en = extra_until(raw, len, *off, true);
		if (copy_extra(raw + *off, en, &ep->extra, &ep->extra_length) < 0)
			return LIBUSB_ERROR_NO_MEM;
		*off += en;
	}
	return 0;
}

/* Lengths were all checked by the first walk, so stepping by bLength stays inside `len`. */
static void skip_to_interface(const uint8_t *raw, size_t len, size_t *off)
{
	while (*off < len && raw[*off + 1] != LIBUSB_DT_INTERFACE)
		*off += raw[*off];
}

int desc_parse_config(const uint8_t *raw, size_t len, struct libusb_config_descriptor **out)
{
	*out = NULL;
	if (!desc_config_header_ok(raw, len))
		return LIBUSB_ERROR_IO;
	size_t total = le16(raw + 2);
	if (total < len)
		len = total;
	/* Walk once: every descriptor must fit, and count the distinct interfaces. */
	int groups = 0, last_number = -1;
	for (size_t o = raw[0]; o < len;) {
		if (o + 2 > len || raw[o] < 2 || o + raw[o] > len)
			return LIBUSB_ERROR_IO;
		if (raw[o + 1] == LIBUSB_DT_INTERFACE) {
			if (raw[o] < LIBUSB_DT_INTERFACE_SIZE)
				return LIBUSB_ERROR_IO;
			if (raw[o + 2] != last_number)
				groups++;
			last_number = raw[o + 2];
		}
		o += raw[o];
	}
	struct libusb_config_descriptor *c = calloc(1, sizeof(*c));
	if (!c)
		return LIBUSB_ERROR_NO_MEM;
	c->bLength = raw[0];
	c->bDescriptorType = raw[1];
	c->wTotalLength = (uint16_t)total;
	c->bConfigurationValue = raw[5];
	c->iConfiguration = raw[6];
	c->bmAttributes = raw[7];
	c->MaxPower = raw[8];
	size_t off = raw[0];
	size_t n = extra_until(raw, len, off, false);
	if (copy_extra(raw + off, n, &c->extra, &c->extra_length) < 0)
		goto nomem;
	off += n;
	if (groups > 0) {
		struct libusb_interface *itfs = calloc((size_t)groups, sizeof(*itfs));
		if (!itfs)
			goto nomem;
		c->interface = itfs;
		c->bNumInterfaces = (uint8_t)groups;
		for (int g = 0; g < groups; g++) {
			skip_to_interface(raw, len, &off);
			if (off >= len)
				break;
			/* Alternate settings: consecutive interface descriptors with one bInterfaceNumber. */
			uint8_t number = raw[off + 2];
			int alts = 0;
			for (size_t o = off; o < len; o += raw[o])
				if (raw[o + 1] == LIBUSB_DT_INTERFACE) {
					if (raw[o + 2] != number)
						break;
					alts++;
				}
			struct libusb_interface_descriptor *arr = calloc((size_t)alts, sizeof(*arr));
			if (!arr)
				goto nomem;
			itfs[g].altsetting = arr;
			for (int a = 0; a < alts; a++) {
				skip_to_interface(raw, len, &off);
				itfs[g].num_altsetting = a + 1;
				int r = parse_altsetting(raw, len, &off, &arr[a]);
				if (r < 0) {
					desc_free_config(c);
					return r;
				}
			}
		}
	}
	*out = c;
	return 0;
nomem:
	desc_free_config(c);
	return LIBUSB_ERROR_NO_MEM;
}

/* ---- public descriptor calls ---- */

VUSB_API int libusb_get_device_descriptor(libusb_device *dev, struct libusb_device_descriptor *desc)
{
	const uint8_t *d = dev->dev_desc;
	desc->bLength = d[0];
	desc->bDescriptorType = d[1];
	desc->bcdUSB = le16(d + 2);
	desc->bDeviceClass = d[4];
	desc->bDeviceSubClass = d[5];
	desc->bDeviceProtocol = d[6];
	desc->bMaxPacketSize0 = d[7];
	desc->idVendor = le16(d + 8);
	desc->idProduct = le16(d + 10);
	desc->bcdDevice = le16(d + 12);
	desc->iManufacturer = d[14];
	desc->iProduct = d[15];
	desc->iSerialNumber = d[16];
	desc->bNumConfigurations = d[17];
	return 0;
}

/* Configurations are immutable once a device is READY, so parsing needs no lock. */
static int parse_config(const struct vusb_config *c, struct libusb_config_descriptor **config)
{
	return desc_parse_config(c->raw, c->len, config);
}

VUSB_API int libusb_get_active_config_descriptor(libusb_device *dev, struct libusb_config_descriptor **config)
{
	pthread_mutex_lock(&dev->ctx->lock);
	const struct vusb_config *c = desc_find_config_by_value(dev, dev->active_config);
	int r = c ? parse_config(c, config) : LIBUSB_ERROR_NOT_FOUND; /* unconfigured */
	pthread_mutex_unlock(&dev->ctx->lock);
	return r;
}

VUSB_API int libusb_get_config_descriptor(libusb_device *dev, uint8_t config_index,
                                          struct libusb_config_descriptor **config)
{
	if (config_index >= dev->num_configs || !dev->configs[config_index].raw)
		return LIBUSB_ERROR_NOT_FOUND;
	return parse_config(&dev->configs[config_index], config);
}

VUSB_API int libusb_get_config_descriptor_by_value(libusb_device *dev, uint8_t bConfigurationValue,
                                                   struct libusb_config_descriptor **config)
{
	const struct vusb_config *c = desc_find_config_by_value(dev, bConfigurationValue);
	return c ? parse_config(c, config) : LIBUSB_ERROR_NOT_FOUND;
}

VUSB_API void libusb_free_config_descriptor(struct libusb_config_descriptor *config)
{
	desc_free_config(config);
}

static const struct libusb_endpoint_descriptor *find_endpoint(const struct libusb_config_descriptor *c,
                                                               unsigned char endpoint)
{
	for (int i = 0; i < c->bNumInterfaces; i++)
		for (int a = 0; a < c->interface[i].num_altsetting; a++) {
			const struct libusb_interface_descriptor *alt = &c->interface[i].altsetting[a];
			for (int e = 0; e < alt->bNumEndpoints; e++)
				if (alt->endpoint[e].bEndpointAddress == endpoint)
					return &alt->endpoint[e];
		}
	return NULL;
}

/* As libusb: the raw wMaxPacketSize of the endpoint in the active configuration. */
VUSB_API int libusb_get_max_packet_size(libusb_device *dev, unsigned char endpoint)
{
	struct libusb_config_descriptor *c;
	if (libusb_get_active_config_descriptor(dev, &c) < 0)
		return LIBUSB_ERROR_NOT_FOUND;
	const struct libusb_endpoint_descriptor *ep = find_endpoint(c, endpoint);
	int r = ep ? ep->wMaxPacketSize : LIBUSB_ERROR_NOT_FOUND;
	libusb_free_config_descriptor(c);
	return r;
}

/* As libusb: for isochronous and interrupt endpoints, size times transactions per microframe. */
VUSB_API int libusb_get_max_iso_packet_size(libusb_device *dev, unsigned char endpoint)
{
	struct libusb_config_descriptor *c;
	if (libusb_get_active_config_descriptor(dev, &c) < 0)
		return LIBUSB_ERROR_NOT_FOUND;
	const struct libusb_endpoint_descriptor *ep = find_endpoint(c, endpoint);
	int r = LIBUSB_ERROR_NOT_FOUND;
	if (ep) {
		int size = ep->wMaxPacketSize & 0x7ff;
		int type = ep->bmAttributes & LIBUSB_TRANSFER_TYPE_MASK;
		if (type == LIBUSB_TRANSFER_TYPE_ISOCHRONOUS || type == LIBUSB_TRANSFER_TYPE_INTERRUPT)
			size *= 1 + ((ep->wMaxPacketSize >> 11) & 3);
		r = size;
	}
	libusb_free_config_descriptor(c);
	return r;
}

/* SuperSpeed endpoint companion: found in the endpoint's extra bytes, where libusb leaves it. */
VUSB_API int libusb_get_ss_endpoint_companion_descriptor(libusb_context *ctx,
                                                         const struct libusb_endpoint_descriptor *endpoint,
                                                         struct libusb_ss_endpoint_companion_descriptor **ep_comp)
{
	(void)ctx;
	const unsigned char *e = endpoint->extra;
	int n = endpoint->extra_length;
	for (int off = 0; off + 2 <= n;) {
		uint8_t bl = e[off];
		if (bl < 2 || off + bl > n)
			break;
		if (e[off + 1] == LIBUSB_DT_SS_ENDPOINT_COMPANION && bl >= 6) {
			struct libusb_ss_endpoint_companion_descriptor *d = malloc(sizeof(*d));
			if (!d)
				return LIBUSB_ERROR_NO_MEM;
			d->bLength = e[off];
			d->bDescriptorType = e[off + 1];
			d->bMaxBurst = e[off + 2];
			d->bmAttributes = e[off + 3];
			d->wBytesPerInterval = le16(e + off + 4);
			*ep_comp = d;
			return 0;
		}
		off += bl;
	}
	return LIBUSB_ERROR_NOT_FOUND;
}

VUSB_API void libusb_free_ss_endpoint_companion_descriptor(struct libusb_ss_endpoint_companion_descriptor *ep_comp)
{
	free(ep_comp);
}

/* No simulated device has a BOS descriptor (they are USB 2.0 devices at the descriptor level). */
VUSB_API int libusb_get_bos_descriptor(libusb_device_handle *dev_handle, struct libusb_bos_descriptor **bos)
{
	(void)dev_handle;
	(void)bos;
	return LIBUSB_ERROR_PIPE; /* what libusb returns when the device stalls the request */
}

VUSB_API void libusb_free_bos_descriptor(struct libusb_bos_descriptor *bos)
{
	free(bos);
}

/*
 * The BOS device-capability helpers take a capability from a BOS descriptor, which no simulated
 * device has (libusb_get_bos_descriptor never succeeds), so any capability handed in is not one of
 * ours: libusb answers a capability of the wrong type with INVALID_PARAM.
 */
struct libusb_bos_dev_capability_descriptor;
struct libusb_usb_2_0_extension_descriptor;
struct libusb_ss_usb_device_capability_descriptor;
struct libusb_container_id_descriptor;

VUSB_API int libusb_get_usb_2_0_extension_descriptor(libusb_context *ctx,
                                                     struct libusb_bos_dev_capability_descriptor *dev_cap,
                                                     struct libusb_usb_2_0_extension_descriptor **out)
{
	(void)ctx;
	(void)dev_cap;
	(void)out;
	return LIBUSB_ERROR_INVALID_PARAM;
}

VUSB_API void libusb_free_usb_2_0_extension_descriptor(struct libusb_usb_2_0_extension_descriptor *d)
{
	free(d);
}

VUSB_API int libusb_get_ss_usb_device_capability_descriptor(libusb_context *ctx,
                                                            struct libusb_bos_dev_capability_descriptor *dev_cap,
                                                            struct libusb_ss_usb_device_capability_descriptor **out)
{
	(void)ctx;
	(void)dev_cap;
	(void)out;
	return LIBUSB_ERROR_INVALID_PARAM;
}

VUSB_API void libusb_free_ss_usb_device_capability_descriptor(struct libusb_ss_usb_device_capability_descriptor *d)
{
	free(d);
}

VUSB_API int libusb_get_container_id_descriptor(libusb_context *ctx,
                                                struct libusb_bos_dev_capability_descriptor *dev_cap,
                                                struct libusb_container_id_descriptor **out)
{
	(void)ctx;
	(void)dev_cap;
	(void)out;
	return LIBUSB_ERROR_INVALID_PARAM;
}

VUSB_API void libusb_free_container_id_descriptor(struct libusb_container_id_descriptor *d)
{
	free(d);
}
