/*
 * Asynchronous transfers with libusb's semantics, carried on the vusb wire.
 *
 *   control     CONTROL {id, setup, OUT data} → CONTROL_DONE {id, status, IN data}
 *   bulk OUT    one BULK_OUT message per transfer; completes when written to the socket, which is
 *               when a real host controller would have handed the data to the device
 *   bulk IN     waits in submission order; each BULK_IN message (one device write) fills waiting
 *               transfers of its endpoint in order, each completing with min(remaining, length)
 *               bytes, so one write may span several transfers; an empty write completes one
 *               transfer with 0 bytes (a zero-length packet)
 *
 * Device data that no transfer waits for is stashed (bounded, see VUSB_STASH_LIMIT), as a real
 * device keeps it in its FIFO until the host polls. Unplug completes everything with
 * LIBUSB_TRANSFER_NO_DEVICE; later submissions fail with LIBUSB_ERROR_NO_DEVICE.
 */
#include <stdlib.h>
#include <string.h>

#include "vusb.h"

struct vusb_xfer *xfer_alloc(int iso_packets)
{
	if (iso_packets < 0 || iso_packets > 65536)
		return NULL;
	size_t size = XFER_PRIV_SIZE + sizeof(struct libusb_transfer) +
	              (size_t)iso_packets * sizeof(struct libusb_iso_packet_descriptor);
	struct vusb_xfer *x = calloc(1, size);
	if (!x)
		return NULL;
	vlist_init(&x->link);
	vlist_init(&x->timed);
	x->state = XFER_IDLE;
	x->num_iso = iso_packets;
	return x;
}

static uint16_t get_le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static void stop_timer(struct vusb_xfer *x)
{
	if (vlist_linked(&x->timed))
		vlist_del(&x->timed);
	x->deadline_ms = 0;
}

/*
 * The one place a transfer finishes. Applies SHORT_NOT_OK as libusb does (for control transfers
 * the requested length excludes the setup packet), then tells an internal owner at once or queues
 * the user callback for the next event handling round.
 */
void xfer_finish_locked(struct vusb_xfer *x, enum libusb_transfer_status status)
{
	struct libusb_transfer *t = xfer_pub(x);
	libusb_context *ctx = x->dev->ctx;
	if (vlist_linked(&x->link))
		vlist_del(&x->link);
	stop_timer(x);
	x->out = NULL;
	if (status == LIBUSB_TRANSFER_COMPLETED && (t->flags & LIBUSB_TRANSFER_SHORT_NOT_OK)) {
		int requested = t->length;
		if (t->type == LIBUSB_TRANSFER_TYPE_CONTROL)
			requested -= LIBUSB_CONTROL_SETUP_SIZE;
		if (t->actual_length != requested)
			status = LIBUSB_TRANSFER_ERROR;
	}
	t->status = status;
	if (x->internal) {
		x->state = XFER_IDLE;
		x->internal(x);
		return;
	}
	x->state = XFER_DONE;
	bool was_empty = vlist_empty(&ctx->done);
	vlist_add_tail(&ctx->done, &x->link);
	if (was_empty)
		events_wake(ctx);
}

/* The first IN transfer waiting on `endpoint`, in submission order. */
static struct vusb_xfer *first_waiting(libusb_device *dev, uint8_t endpoint)
{
	struct vlist *pos, *tmp;
	vlist_for_each_safe(pos, tmp, &dev->in_wait) {
		struct vusb_xfer *x = vcontainer_of(pos, struct vusb_xfer, link);
		if (xfer_pub(x)->endpoint == endpoint)
			return x;
	}
	return NULL;
}

static bool stash_has(libusb_device *dev, uint8_t endpoint)
{
	for (struct vusb_stash *s = dev->stash_head; s; s = s->next)
		if (s->endpoint == endpoint)
			return true;
	return false;
}

static void stash_add(libusb_device *dev, uint8_t endpoint, const uint8_t *data, size_t len)
{
	struct vusb_stash *s = malloc(sizeof(*s) + len);
	if (!s) {
		device_gone_locked(dev, "out of memory stashing device data");
		return;
	}
	s->next = NULL;
	s->endpoint = endpoint;
	s->len = len;
	s->off = 0;
	memcpy(s->data, data, len);
	if (dev->stash_tail)
		dev->stash_tail->next = s;
	else
		dev->stash_head = s;
	dev->stash_tail = s;
	dev->stash_bytes += len;
}

/* Hands `len` bytes of one device write to waiting transfers; returns how many were taken. */
static size_t fill_waiting(libusb_device *dev, uint8_t endpoint, const uint8_t *data, size_t len)
{
	if (len == 0) {
		struct vusb_xfer *x = first_waiting(dev, endpoint);
		if (x) {
			xfer_pub(x)->actual_length = 0;
			xfer_finish_locked(x, LIBUSB_TRANSFER_COMPLETED);
		}
		return 0;
	}
	size_t off = 0;
	while (off < len && dev->state != DEV_GONE) {
		struct vusb_xfer *x = first_waiting(dev, endpoint);
		if (!x)
			break;
		struct libusb_transfer *t = xfer_pub(x);
		size_t room = t->length > 0 ? (size_t)t->length : 0;
		size_t n = len - off < room ? len - off : room;
		if (n)
			memcpy(t->buffer, data + off, n);
		t->actual_length = (int)n;
		off += n;
		xfer_finish_locked(x, LIBUSB_TRANSFER_COMPLETED);
	}
	return off;
}

void xfer_on_bulk_in_locked(libusb_device *dev, uint8_t endpoint, const uint8_t *data, size_t len)
{
	if (!(endpoint & LIBUSB_ENDPOINT_IN)) {
		VLOG_WARN(dev->ctx, "vusb %s: BULK_IN on OUT endpoint 0x%02x ignored", dev->name, endpoint);
		return;
	}
	/* Data already waiting for this endpoint goes first: writes stay in order. */
	if (stash_has(dev, endpoint) || !first_waiting(dev, endpoint)) {
		stash_add(dev, endpoint, data, len);
		return;
	}
	size_t taken = fill_waiting(dev, endpoint, data, len);
	if (taken < len && dev->state != DEV_GONE)
		stash_add(dev, endpoint, data + taken, len - taken);
}

/* Gives stashed device writes to newly submitted IN transfers. */
void xfer_drain_stash_locked(libusb_device *dev)
{
	bool was_full = dev->stash_bytes >= VUSB_STASH_LIMIT;
	struct vusb_stash **pp = &dev->stash_head, *prev = NULL;
	uint8_t blocked[32]; /* endpoints whose older data is still waiting: later data must wait too */
	int nblocked = 0;
	while (*pp && dev->state != DEV_GONE) {
		struct vusb_stash *s = *pp;
		bool is_blocked = false;
		for (int i = 0; i < nblocked; i++)
			if (blocked[i] == s->endpoint)
				is_blocked = true;
		if (!is_blocked && first_waiting(dev, s->endpoint)) {
			size_t remaining = s->len - s->off;
			size_t taken = fill_waiting(dev, s->endpoint, s->data + s->off, remaining);
			if (dev->state == DEV_GONE)
				return;
			s->off += taken;
			dev->stash_bytes -= taken;
			if (s->off == s->len) {
				*pp = s->next;
				if (dev->stash_tail == s)
					dev->stash_tail = prev;
				free(s);
				continue;
			}
		}
		if (!is_blocked && nblocked < 32)
			blocked[nblocked++] = s->endpoint;
		prev = s;
		pp = &s->next;
	}
	if (was_full && dev->stash_bytes < VUSB_STASH_LIMIT) {
		wire_resume_locked(dev);
		if (dev->state != DEV_GONE)
			events_refresh_device_locked(dev);
	}
}

static enum libusb_transfer_status status_from_wire(int32_t status)
{
	switch (status) {
	case 0: return LIBUSB_TRANSFER_COMPLETED;
	case LIBUSB_ERROR_PIPE: return LIBUSB_TRANSFER_STALL;
	case LIBUSB_ERROR_NO_DEVICE: return LIBUSB_TRANSFER_NO_DEVICE;
	case LIBUSB_ERROR_TIMEOUT: return LIBUSB_TRANSFER_TIMED_OUT;
	case LIBUSB_ERROR_OVERFLOW: return LIBUSB_TRANSFER_OVERFLOW;
	default: return LIBUSB_TRANSFER_ERROR;
	}
}

/*
 *   CONTROL_DONE body
 *    0        4        8
 *    +--------+--------+------------------------------+
 *    | id     | status | IN data stage (n ≤ wLength)  |
 *    | u32 LE | i32 LE |                              |
 *    +--------+--------+------------------------------+
 * An id nobody waits for belongs to a cancelled or timed-out request and is dropped.
 */
void xfer_on_control_done_locked(libusb_device *dev, const uint8_t *body, size_t len)
{
	uint32_t id = (uint32_t)body[0] | ((uint32_t)body[1] << 8) | ((uint32_t)body[2] << 16) |
	              ((uint32_t)body[3] << 24);
	int32_t status = (int32_t)((uint32_t)body[4] | ((uint32_t)body[5] << 8) | ((uint32_t)body[6] << 16) |
	                           ((uint32_t)body[7] << 24));
	const uint8_t *data = body + VUSB_CONTROL_DONE_FIXED;
	size_t n = len - VUSB_CONTROL_DONE_FIXED;
	struct vlist *pos, *tmp;
	vlist_for_each_safe(pos, tmp, &dev->ctrl_wait) {
		struct vusb_xfer *x = vcontainer_of(pos, struct vusb_xfer, link);
		if (x->ctrl_id != id)
			continue;
		struct libusb_transfer *t = xfer_pub(x);
		uint16_t wLength = get_le16(t->buffer + 6);
		bool in = t->buffer[0] & LIBUSB_ENDPOINT_IN;
		enum libusb_transfer_status st = status_from_wire(status);
		if (st == LIBUSB_TRANSFER_COMPLETED) {
			if (in) {
				if (n > wLength) {
					VLOG_ERR(dev->ctx, "vusb %s: control reply of %zu bytes for wLength %u", dev->name,
					         n, wLength);
					t->actual_length = 0;
					st = LIBUSB_TRANSFER_OVERFLOW;
				} else {
					memcpy(t->buffer + LIBUSB_CONTROL_SETUP_SIZE, data, n);
					t->actual_length = (int)n;
				}
			} else {
				t->actual_length = wLength;
			}
		} else {
			t->actual_length = 0;
		}
		xfer_finish_locked(x, st);
		return;
	}
	VLOG_DBG(dev->ctx, "vusb %s: CONTROL_DONE for unknown id %u dropped", dev->name, id);
}

void xfer_on_out_written_locked(struct vusb_xfer *x)
{
	x->out = NULL;
	struct libusb_transfer *t = xfer_pub(x);
	if (x->state == XFER_OUT_QUEUED) {
		t->actual_length = t->length;
		xfer_finish_locked(x, LIBUSB_TRANSFER_COMPLETED);
	}
	/* A CONTROL message written: the transfer keeps waiting for CONTROL_DONE. */
}

static int submit_control_locked(libusb_device *dev, struct vusb_xfer *x)
{
	struct libusb_transfer *t = xfer_pub(x);
	if (t->length < LIBUSB_CONTROL_SETUP_SIZE || !t->buffer)
		return LIBUSB_ERROR_INVALID_PARAM;
	uint16_t wLength = get_le16(t->buffer + 6);
	if ((size_t)wLength > (size_t)(t->length - LIBUSB_CONTROL_SETUP_SIZE))
		return LIBUSB_ERROR_INVALID_PARAM;
	size_t data_len = (t->buffer[0] & LIBUSB_ENDPOINT_IN) ? 0 : wLength;
	struct vusb_out *m = wire_new_control(dev->next_ctrl_id, t->buffer, data_len);
	if (!m)
		return LIBUSB_ERROR_NO_MEM;
	x->ctrl_id = dev->next_ctrl_id++;
	x->state = XFER_CTRL_WAIT;
	vlist_add_tail(&dev->ctrl_wait, &x->link);
	x->out = m;
	m->xfer = x;
	wire_queue_locked(dev, m);
	return 0;
}

/* wMaxPacketSize of an endpoint in the active configuration, for ADD_ZERO_PACKET. */
static int ep_max_packet(libusb_device *dev, uint8_t endpoint)
{
	const struct vusb_config *c = desc_find_config_by_value(dev, dev->active_config);
	if (!c)
		return 0;
	size_t off = 0;
	while (off + 2 <= c->len) {
		uint8_t bl = c->raw[off];
		if (bl < 2 || off + bl > c->len)
			break;
		if (c->raw[off + 1] == LIBUSB_DT_ENDPOINT && bl >= LIBUSB_DT_ENDPOINT_SIZE && c->raw[off + 2] == endpoint)
			return get_le16(c->raw + off + 4) & 0x7ff;
		off += bl;
	}
	return 0;
}

static int submit_bulk_out_locked(libusb_device *dev, struct vusb_xfer *x)
{
	struct libusb_transfer *t = xfer_pub(x);
	if (t->length < 0 || (size_t)t->length > VUSB_MAX_PAYLOAD || (t->length > 0 && !t->buffer))
		return LIBUSB_ERROR_INVALID_PARAM;
	struct vusb_out *m = wire_new_bulk_out(t->endpoint, t->buffer, (size_t)t->length);
	if (!m)
		return LIBUSB_ERROR_NO_MEM;
	struct vusb_out *zlp = NULL;
	if ((t->flags & LIBUSB_TRANSFER_ADD_ZERO_PACKET) && t->length > 0) {
		int mps = ep_max_packet(dev, t->endpoint);
		if (mps > 0 && t->length % mps == 0) {
			zlp = wire_new_bulk_out(t->endpoint, NULL, 0);
			if (!zlp) {
				free(m);
				return LIBUSB_ERROR_NO_MEM;
			}
		}
	}
	x->state = XFER_OUT_QUEUED;
	x->out = m;
	m->xfer = x;
	if (zlp) {
		/* Queue both before writing, so the zero-length packet follows its transfer directly. */
		m->next = zlp;
		if (dev->out_tail)
			dev->out_tail->next = m;
		else
			dev->out_head = m;
		dev->out_tail = zlp;
		wire_flush_locked(dev);
		if (dev->state != DEV_GONE)
			events_refresh_device_locked(dev);
	} else {
		wire_queue_locked(dev, m);
	}
	return 0;
}

int xfer_submit_locked(struct vusb_xfer *x)
{
	struct libusb_transfer *t = xfer_pub(x);
	libusb_device *dev = x->dev;
	if (x->state != XFER_IDLE)
		return LIBUSB_ERROR_BUSY;
	if (!dev)
		return LIBUSB_ERROR_NO_DEVICE;
	if (dev->state == DEV_GONE) {
		/*
		 * Resubmitted from a callback of the round that also saw the unplug (a simulated device
		 * streams until EOF, so transfers full of data always precede it): accepted, and failed
		 * with NO_DEVICE in the next round, as a host controller takes the URB and then reports
		 * the disconnect. usbmuxd resubmits its IN transfers from their callbacks without looking
		 * at the result, and on unplug waits for every one of them to call back: refusing the
		 * resubmission here would leave it waiting forever.
		 */
		if (vusb_callback_depth == 0 || x->internal)
			return LIBUSB_ERROR_NO_DEVICE;
		t->actual_length = 0;
		x->state = XFER_IN_WAIT; /* briefly in flight, so the completion path applies */
		xfer_finish_locked(x, LIBUSB_TRANSFER_NO_DEVICE);
		return 0;
	}
	t->actual_length = 0;
	t->status = LIBUSB_TRANSFER_COMPLETED;
	x->cancelling = false;
	x->out = NULL;
	if (t->timeout > 0) {
		x->deadline_ms = vusb_now_ms() + t->timeout;
		vlist_add_tail(&dev->ctx->timed, &x->timed);
	}
	int r;
	switch (t->type) {
	case LIBUSB_TRANSFER_TYPE_CONTROL:
		r = submit_control_locked(dev, x);
		break;
	case LIBUSB_TRANSFER_TYPE_BULK:
	case LIBUSB_TRANSFER_TYPE_INTERRUPT:
		if (t->endpoint & LIBUSB_ENDPOINT_IN) {
			if (t->length < 0 || (t->length > 0 && !t->buffer)) {
				r = LIBUSB_ERROR_INVALID_PARAM;
				break;
			}
			x->state = XFER_IN_WAIT;
			vlist_add_tail(&dev->in_wait, &x->link);
			if (dev->stash_head)
				xfer_drain_stash_locked(dev);
			r = 0;
		} else {
			r = submit_bulk_out_locked(dev, x);
		}
		break;
	default: /* isochronous and bulk streams: no simulated device has them */
		r = LIBUSB_ERROR_NOT_SUPPORTED;
		break;
	}
	if (r < 0)
		stop_timer(x);
	return r;
}

/* Cancellation and timeout share this path; `status` says which. */
int xfer_abort_locked(struct vusb_xfer *x, enum libusb_transfer_status status)
{
	libusb_device *dev = x->dev;
	switch (x->state) {
	case XFER_OUT_QUEUED:
	case XFER_CTRL_WAIT:
		if (x->out) {
			struct vusb_out *m = x->out;
			size_t data_sent = m->sent > m->head_len ? m->sent - m->head_len : 0;
			if (!wire_unlink_unsent_locked(dev, m))
				wire_detach_locked(dev, m);
			x->out = NULL;
			if (x->state == XFER_OUT_QUEUED)
				xfer_pub(x)->actual_length = (int)data_sent;
		}
		if (x->state == XFER_IDLE || x->state == XFER_DONE) /* device went during detach */
			return 0;
		xfer_finish_locked(x, status);
		if (dev->state != DEV_GONE)
			events_refresh_device_locked(dev);
		return 0;
	case XFER_IN_WAIT:
		xfer_finish_locked(x, status);
		return 0;
	default:
		return LIBUSB_ERROR_NOT_FOUND;
	}
}

/* Every transfer still in flight on a device that is gone completes with NO_DEVICE. */
void xfer_fail_device_locked(libusb_device *dev)
{
	for (struct vusb_out *m = dev->out_head; m; m = m->next) {
		struct vusb_xfer *x = m->xfer;
		m->xfer = NULL;
		if (!x)
			continue;
		x->out = NULL;
		if (x->state == XFER_OUT_QUEUED)
			xfer_finish_locked(x, LIBUSB_TRANSFER_NO_DEVICE);
	}
	while (!vlist_empty(&dev->ctrl_wait))
		xfer_finish_locked(vcontainer_of(dev->ctrl_wait.next, struct vusb_xfer, link), LIBUSB_TRANSFER_NO_DEVICE);
	while (!vlist_empty(&dev->in_wait))
		xfer_finish_locked(vcontainer_of(dev->in_wait.next, struct vusb_xfer, link), LIBUSB_TRANSFER_NO_DEVICE);
}

void xfer_check_timeouts_locked(libusb_context *ctx, uint64_t now)
{
	struct vlist *pos, *tmp;
	vlist_for_each_safe(pos, tmp, &ctx->timed) {
		struct vusb_xfer *x = vcontainer_of(pos, struct vusb_xfer, timed);
		if (x->deadline_ms != 0 && x->deadline_ms <= now) {
			stop_timer(x);
			xfer_abort_locked(x, LIBUSB_TRANSFER_TIMED_OUT);
			/* An abort may complete others (internal owners); start over from the head. */
			pos = &ctx->timed;
			tmp = pos->next;
		}
	}
}

uint64_t xfer_next_deadline_locked(libusb_context *ctx)
{
	uint64_t best = 0;
	struct vlist *pos, *tmp;
	vlist_for_each_safe(pos, tmp, &ctx->timed) {
		struct vusb_xfer *x = vcontainer_of(pos, struct vusb_xfer, timed);
		if (x->deadline_ms && (best == 0 || x->deadline_ms < best))
			best = x->deadline_ms;
	}
	return best;
}

/* ---- the public transfer calls ---- */

VUSB_API struct libusb_transfer *libusb_alloc_transfer(int iso_packets)
{
	struct vusb_xfer *x = xfer_alloc(iso_packets);
	return x ? xfer_pub(x) : NULL;
}

VUSB_API void libusb_free_transfer(struct libusb_transfer *transfer)
{
	if (!transfer)
		return;
	struct vusb_xfer *x = xfer_priv(transfer);
	if (x->state != XFER_IDLE && x->state != XFER_DONE) {
		/* Freeing an in-flight transfer is undefined in libusb; leaking it is the safe answer. */
		VLOG_ERR(NULL, "libusb_free_transfer: transfer %p is still in flight, not freed", (void *)transfer);
		return;
	}
	if ((transfer->flags & LIBUSB_TRANSFER_FREE_BUFFER) && transfer->buffer)
		free(transfer->buffer);
	free(x);
}

VUSB_API int libusb_submit_transfer(struct libusb_transfer *transfer)
{
	if (!transfer || !transfer->dev_handle)
		return LIBUSB_ERROR_INVALID_PARAM;
	struct vusb_xfer *x = xfer_priv(transfer);
	libusb_device *dev = transfer->dev_handle->dev;
	libusb_context *ctx = dev->ctx;
	pthread_mutex_lock(&ctx->lock);
	int r;
	if (x->state != XFER_IDLE) {
		r = LIBUSB_ERROR_BUSY;
	} else {
		x->dev = dev;
		x->internal = NULL;
		r = xfer_submit_locked(x);
	}
	pthread_mutex_unlock(&ctx->lock);
	return r;
}

VUSB_API int libusb_cancel_transfer(struct libusb_transfer *transfer)
{
	if (!transfer)
		return LIBUSB_ERROR_INVALID_PARAM;
	struct vusb_xfer *x = xfer_priv(transfer);
	/* The handle is the application's and outlives its transfers; x->dev may be stale. */
	libusb_device *dev = transfer->dev_handle ? transfer->dev_handle->dev : NULL;
	if (!dev)
		return LIBUSB_ERROR_NOT_FOUND;
	libusb_context *ctx = dev->ctx;
	pthread_mutex_lock(&ctx->lock);
	int r = (x->dev == dev) ? xfer_abort_locked(x, LIBUSB_TRANSFER_CANCELLED) : LIBUSB_ERROR_NOT_FOUND;
	pthread_mutex_unlock(&ctx->lock);
	return r;
}

VUSB_API void libusb_transfer_set_stream_id(struct libusb_transfer *transfer, uint32_t stream_id)
{
	(void)transfer;
	(void)stream_id; /* bulk streams are not supported: submission of such a transfer fails */
}

VUSB_API uint32_t libusb_transfer_get_stream_id(struct libusb_transfer *transfer)
{
	(void)transfer;
	return 0;
}
