/*
 * One simulated device: from the socket appearing in the bus directory to unplug.
 *
 *   DEV_HELLO     connected; the device speaks first with HELLO {wire_version 1, speed}
 *   DEV_DESCRIBE  the host reads what libusb caches at enumeration, over the wire, as a kernel
 *                 does at plug-in: the device descriptor (18 bytes), each configuration
 *                 descriptor (9-byte header for wTotalLength, then the whole of it), and the
 *                 current configuration (GET_CONFIGURATION)
 *   DEV_READY     listed by libusb_get_device_list; hotplug ARRIVED queued
 *   DEV_GONE      EOF, a socket error, a protocol error or the file leaving the directory: every
 *                 transfer completes with NO_DEVICE, hotplug LEFT is queued, the socket closes;
 *                 the struct lives on while the application holds references
 *
 * Discovery steps are internal control transfers whose completions come back here at once (under
 * the context lock), so discovery advances whoever drives the I/O: libusb_init's settle, an
 * application's event loop, or a synchronous call.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "vusb.h"

#define DISCOVERY_TIMEOUT_MS 5000
#define DESCRIBE_REQUEST_TIMEOUT_MS 3000

/* describe_step: 0 device descriptor, then 2*i+1 header and 2*i+2 whole of configuration i, then
 * STEP_GET_CONFIG. */
#define STEP_GET_CONFIG (2 * VUSB_MAX_CONFIGS + 1)

static void describe_next_locked(libusb_device *dev);

libusb_device *device_connect_locked(libusb_context *ctx, const char *name, dev_t st_dev, ino_t st_ino)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", ctx->bus_dir, name);
	if (n < 0 || (size_t)n >= sizeof(sa.sun_path)) {
		VLOG_WARN(ctx, "vusb: socket path too long for %s/%s", ctx->bus_dir, name);
		hotplug_remember_seen_locked(ctx, name, st_dev, st_ino);
		return NULL;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
		int err = errno;
		close(fd);
		VLOG_DBG(ctx, "vusb: connect %s: %s", sa.sun_path, strerror(err));
		errno = err;
		return NULL;
	}
	libusb_device *dev = calloc(1, sizeof(*dev));
	char *dup = strdup(name);
	if (!dev || !dup) {
		free(dev);
		free(dup);
		close(fd);
		return NULL;
	}
	dev->ctx = ctx;
	dev->refcnt = 1; /* the context's list */
	dev->state = DEV_HELLO;
	dev->name = dup;
	dev->st_dev = st_dev;
	dev->st_ino = st_ino;
	dev->fd = fd;
	dev->bus = 1;
	/* Addresses count up (1..127, as USB assigns them) so a replugged device is a new device. */
	dev->address = ctx->next_address;
	ctx->next_address = ctx->next_address >= 127 ? 1 : ctx->next_address + 1;
	dev->discover_deadline_ms = vusb_now_ms() + DISCOVERY_TIMEOUT_MS;
	dev->next_ctrl_id = 1;
	vlist_init(&dev->ctrl_wait);
	vlist_init(&dev->in_wait);
	vlist_add_tail(&ctx->devices, &dev->link);
	events_refresh_device_locked(dev);
	VLOG_INFO(ctx, "vusb %s: connected as %u-%u", name, dev->bus, dev->address);
	return dev;
}

/*
 *   HELLO body
 *    0              1       2           4
 *    +--------------+-------+-----------+
 *    | wire_version | speed | reserved  |
 *    +--------------+-------+-----------+
 */
void device_on_hello_locked(libusb_device *dev, const uint8_t *body, size_t len)
{
	if (len != VUSB_HELLO_BODY || body[0] != VUSB_WIRE_VERSION) { /* exactly 4 bytes, as vusb-wire.ts */
		VLOG_ERR(dev->ctx, "vusb %s: bad HELLO (%zu bytes, version %u)", dev->name, len,
		         len ? body[0] : 0);
		device_gone_locked(dev, "bad HELLO");
		return;
	}
	dev->speed = body[1] <= LIBUSB_SPEED_SUPER_PLUS ? body[1] : LIBUSB_SPEED_UNKNOWN;
	dev->state = DEV_DESCRIBE;
	dev->describe_step = 0;
	describe_next_locked(dev);
}

static void describe_failed(libusb_device *dev, const char *what)
{
	VLOG_ERR(dev->ctx, "vusb %s: discovery failed: %s", dev->name, what);
	device_gone_locked(dev, what);
}

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

/* Completion of one discovery request: check what came back, keep it, take the next step. */
static void describe_done(struct vusb_xfer *x)
{
	libusb_device *dev = x->internal_data;
	struct libusb_transfer *t = xfer_pub(x);
	enum libusb_transfer_status status = t->status;
	int got = t->actual_length;
	uint8_t *data = t->buffer + LIBUSB_CONTROL_SETUP_SIZE;
	int step = dev->describe_step;
	if (dev->state != DEV_DESCRIBE) {
		free(t->buffer);
		free(x);
		return;
	}
	const char *err = NULL;
	if (step == STEP_GET_CONFIG) {
		/* A device that stalls GET_CONFIGURATION is taken as unconfigured. */
		dev->active_config = (status == LIBUSB_TRANSFER_COMPLETED && got >= 1) ? data[0] : 0;
		if (dev->active_config && !desc_find_config_by_value(dev, dev->active_config))
			dev->active_config = 0;
	} else if (status != LIBUSB_TRANSFER_COMPLETED) {
		err = "descriptor request failed";
	} else if (step == 0) {
		if (got != LIBUSB_DT_DEVICE_SIZE || data[0] != LIBUSB_DT_DEVICE_SIZE || data[1] != LIBUSB_DT_DEVICE)
			err = "bad device descriptor";
		else if (data[17] == 0)
			err = "device has no configuration";
		else {
			memcpy(dev->dev_desc, data, LIBUSB_DT_DEVICE_SIZE);
			dev->num_configs = data[17] > VUSB_MAX_CONFIGS ? VUSB_MAX_CONFIGS : data[17];
		}
	} else if (step % 2 == 1) {
		if (got < LIBUSB_DT_CONFIG_SIZE || !desc_config_header_ok(data, (size_t)got))
			err = "bad configuration descriptor header";
		else if (le16(data + 2) > VUSB_MAX_CONFIG_TOTAL)
			err = "configuration descriptor too long";
		else
			dev->configs[(step - 1) / 2].len = le16(data + 2);
	} else {
		struct vusb_config *c = &dev->configs[(step - 2) / 2];
		if (got != c->len || !desc_config_header_ok(data, (size_t)got) || le16(data + 2) != c->len) {
			err = "configuration descriptor changed length";
		} else if (!(c->raw = malloc(c->len))) {
			err = "out of memory";
		} else {
			memcpy(c->raw, data, c->len);
			struct libusb_config_descriptor *parsed;
			if (desc_parse_config(c->raw, c->len, &parsed) < 0)
				err = "malformed configuration descriptor";
			else
				desc_free_config(parsed);
		}
	}
	free(t->buffer);
	free(x);
	if (err) {
		describe_failed(dev, err);
		return;
	}
	if (step == STEP_GET_CONFIG) {
		dev->state = DEV_READY;
		dev->arrived_sent = true;
		VLOG_INFO(dev->ctx, "vusb %s: ready as %u-%u (%04x:%04x, %d configurations, active %u)",
		          dev->name, dev->bus, dev->address, le16(dev->dev_desc + 8), le16(dev->dev_desc + 10),
		          dev->num_configs, dev->active_config);
		hotplug_queue_locked(dev, LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED);
		return;
	}
	step++;
	if (step > 2 * dev->num_configs)
		step = STEP_GET_CONFIG;
	dev->describe_step = step;
	describe_next_locked(dev);
}

/* Sends the control request for the current describe_step. */
static void describe_next_locked(libusb_device *dev)
{
	int step = dev->describe_step;
	uint8_t type = LIBUSB_ENDPOINT_IN, request = LIBUSB_REQUEST_GET_DESCRIPTOR;
	uint16_t value, length;
	if (step == 0) {
		value = LIBUSB_DT_DEVICE << 8;
		length = LIBUSB_DT_DEVICE_SIZE;
	} else if (step == STEP_GET_CONFIG) {
		request = LIBUSB_REQUEST_GET_CONFIGURATION;
		value = 0;
		length = 1;
	} else {
		int index = (step - 1) / 2;
		value = (uint16_t)((LIBUSB_DT_CONFIG << 8) | index);
		length = step % 2 == 1 ? LIBUSB_DT_CONFIG_SIZE : dev->configs[index].len;
	}
	struct vusb_xfer *x = xfer_alloc(0);
	uint8_t *buf = malloc(LIBUSB_CONTROL_SETUP_SIZE + (size_t)length);
	if (!x || !buf) {
		free(x);
		free(buf);
		describe_failed(dev, "out of memory");
		return;
	}
	buf[0] = type;
	buf[1] = request;
	buf[2] = (uint8_t)value;
	buf[3] = (uint8_t)(value >> 8);
	buf[4] = 0;
	buf[5] = 0;
	buf[6] = (uint8_t)length;
	buf[7] = (uint8_t)(length >> 8);
	struct libusb_transfer *t = xfer_pub(x);
	t->type = LIBUSB_TRANSFER_TYPE_CONTROL;
	t->buffer = buf;
	t->length = LIBUSB_CONTROL_SETUP_SIZE + length;
	t->timeout = DESCRIBE_REQUEST_TIMEOUT_MS;
	x->dev = dev;
	x->internal = describe_done;
	x->internal_data = dev;
	int r = xfer_submit_locked(x);
	if (r < 0) {
		free(buf);
		free(x);
		if (dev->state != DEV_GONE)
			describe_failed(dev, "could not send a descriptor request");
	}
}

/* The one fatal path of a device. Idempotent. */
void device_gone_locked(libusb_device *dev, const char *why)
{
	if (dev->state == DEV_GONE)
		return;
	libusb_context *ctx = dev->ctx;
	VLOG_INFO(ctx, "vusb %s: gone (%s)", dev->name, why);
	dev->state = DEV_GONE;
	if (dev->poll_events)
		events_fd_changed_locked(ctx, dev->fd, dev->poll_events, 0);
	dev->poll_events = 0;
	close(dev->fd);
	dev->fd = -1;
	/* So a socket file that outlives its connection is not dialled again; a new socket under the
	 * same name (another inode) is a new device. */
	hotplug_remember_seen_locked(ctx, dev->name, dev->st_dev, dev->st_ino);
	xfer_fail_device_locked(dev);
	wire_free_queues(dev);
	vlist_del(&dev->link);
	vlist_add_tail(&ctx->graveyard, &dev->link);
	if (dev->arrived_sent)
		hotplug_queue_locked(dev, LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT);
	events_wake(ctx);
}

/* Drops the context's reference to devices gone since the last call; see ctx->graveyard. */
void device_reap_locked(libusb_context *ctx)
{
	while (!vlist_empty(&ctx->graveyard)) {
		libusb_device *dev = vcontainer_of(ctx->graveyard.next, libusb_device, link);
		vlist_del(&dev->link);
		device_unref_locked(dev);
	}
}

void device_ref_locked(libusb_device *dev)
{
	dev->refcnt++;
}

void device_unref_locked(libusb_device *dev)
{
	if (--dev->refcnt > 0)
		return;
	for (int i = 0; i < VUSB_MAX_CONFIGS; i++)
		free(dev->configs[i].raw);
	free(dev->name);
	free(dev);
}

/* A device that does not finish discovery in time is dropped (and not dialled again). */
void device_check_discovery_locked(libusb_context *ctx, uint64_t now)
{
	struct vlist *pos, *tmp;
	vlist_for_each_safe(pos, tmp, &ctx->devices) {
		libusb_device *dev = vcontainer_of(pos, libusb_device, link);
		if ((dev->state == DEV_HELLO || dev->state == DEV_DESCRIBE) && now >= dev->discover_deadline_ms) {
			VLOG_ERR(ctx, "vusb %s: no HELLO and descriptors within %d ms", dev->name, DISCOVERY_TIMEOUT_MS);
			device_gone_locked(dev, "discovery timed out");
			pos = &ctx->devices;
			tmp = pos->next;
		}
	}
}

bool device_discovering_locked(libusb_context *ctx)
{
	struct vlist *pos, *tmp;
	vlist_for_each_safe(pos, tmp, &ctx->devices) {
		libusb_device *dev = vcontainer_of(pos, libusb_device, link);
		if (dev->state == DEV_HELLO || dev->state == DEV_DESCRIBE)
			return true;
	}
	return false;
}

uint64_t device_next_deadline_locked(libusb_context *ctx)
{
	uint64_t best = 0;
	struct vlist *pos, *tmp;
	vlist_for_each_safe(pos, tmp, &ctx->devices) {
		libusb_device *dev = vcontainer_of(pos, libusb_device, link);
		if ((dev->state == DEV_HELLO || dev->state == DEV_DESCRIBE) &&
		    (best == 0 || dev->discover_deadline_ms < best))
			best = dev->discover_deadline_ms;
	}
	return best;
}
