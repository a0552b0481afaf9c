/*
 * The vusb wire on one device socket (docs/ARCHITECTURE.md "The vusb wire"): framing of what the
 * host sends, an out queue written without blocking, and the parser of what the device sends.
 *
 *   every message                       length counts type + body
 *    0        4      5
 *    +--------+------+------------------------------------+
 *    | length | type | body (length - 1 bytes)            |
 *    | u32 LE | u8   |                                    |
 *    +--------+------+------------------------------------+
 *
 *   CONTROL (2)       host→device  u32 id, 8-byte setup packet, OUT data stage
 *   BULK_OUT (4)      host→device  u8 endpoint, the bytes of one OUT transfer (none = ZLP)
 *   HELLO (1)         device→host  u8 wire_version, u8 speed, u16 reserved
 *   CONTROL_DONE (3)  device→host  u32 id, i32 status, IN data stage (≤ wLength)
 *   BULK_IN (5)       device→host  u8 endpoint, the bytes of one device write
 *
 * A length outside [1, VUSB_MAX_LENGTH], a message the host never receives, or a body shorter
 * than its fixed part is a broken device: it goes to the one fatal path, device_gone_locked().
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "vusb.h"

#define READ_CHUNK (256u * 1024u)
#define READ_BUDGET (2u * 1024u * 1024u) /* per call, so one busy device cannot starve the rest */
#define IOV_MAX_BATCH 32

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* CONTROL: the setup packet is copied into the header; an OUT data stage is borrowed. */
struct vusb_out *wire_new_control(uint32_t id, const uint8_t *setup_and_data, size_t data_len)
{
	struct vusb_out *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	put_le32(m->head, (uint32_t)(1 + VUSB_CONTROL_FIXED + data_len));
	m->head[4] = VUSB_CONTROL;
	put_le32(m->head + 5, id);
	memcpy(m->head + 9, setup_and_data, LIBUSB_CONTROL_SETUP_SIZE);
	m->head_len = 17;
	m->data = setup_and_data + LIBUSB_CONTROL_SETUP_SIZE;
	m->data_len = data_len;
	return m;
}

/* BULK_OUT: the transfer's bytes are borrowed until the message is written. */
struct vusb_out *wire_new_bulk_out(uint8_t endpoint, const uint8_t *data, size_t len)
{
	struct vusb_out *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	put_le32(m->head, (uint32_t)(2 + len));
	m->head[4] = VUSB_BULK_OUT;
	m->head[5] = endpoint;
	m->head_len = 6;
	m->data = data;
	m->data_len = len;
	return m;
}

static void free_out(struct vusb_out *m)
{
	free(m->owned);
	free(m);
}

/* Appends a message and writes what the socket takes now. */
int wire_queue_locked(struct libusb_device *dev, struct vusb_out *m)
{
	m->next = NULL;
	if (dev->out_tail)
		dev->out_tail->next = m;
	else
		dev->out_head = m;
	dev->out_tail = m;
	int r = wire_flush_locked(dev);
	if (dev->state != DEV_GONE)
		events_refresh_device_locked(dev);
	return r;
}

/*
 * A message that has started on the wire must finish, or the byte stream loses its framing. When
 * its transfer is cancelled or times out, the rest of its payload is copied so the transfer's
 * buffer can go back to the application.
 */
void wire_detach_locked(struct libusb_device *dev, struct vusb_out *m)
{
	if (m->data_len > 0 && !m->owned) {
		uint8_t *copy = malloc(m->data_len);
		if (!copy) {
			device_gone_locked(dev, "out of memory detaching a cancelled transfer");
			return;
		}
		memcpy(copy, m->data, m->data_len);
		m->owned = copy;
		m->data = copy;
	}
	m->xfer = NULL;
}

/* Removes a message none of whose bytes were written; false when it has started. */
bool wire_unlink_unsent_locked(struct libusb_device *dev, struct vusb_out *m)
{
	if (m->sent != 0)
		return false;
	struct vusb_out **pp = &dev->out_head, *prev = NULL;
	while (*pp && *pp != m) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (!*pp)
		return false;
	*pp = m->next;
	if (dev->out_tail == m)
		dev->out_tail = prev;
	free_out(m);
	return true;
}

/* Writes queued messages until the socket would block. Negative when the device is gone. */
int wire_flush_locked(struct libusb_device *dev)
{
	while (dev->state != DEV_GONE && dev->out_head) {
		struct iovec iov[IOV_MAX_BATCH];
		int n = 0;
		for (struct vusb_out *m = dev->out_head; m && n + 2 <= IOV_MAX_BATCH; m = m->next) {
			size_t skip = m->sent;
			if (skip < m->head_len) {
				iov[n].iov_base = m->head + skip;
				iov[n].iov_len = m->head_len - skip;
				n++;
				skip = 0;
			} else {
				skip -= m->head_len;
			}
			if (m->data_len > skip) {
				iov[n].iov_base = (void *)(m->data + skip);
				iov[n].iov_len = m->data_len - skip;
				n++;
			}
		}
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
		/* MSG_NOSIGNAL: a device that hung up is an unplug, not a SIGPIPE for the application. */
		ssize_t w = sendmsg(dev->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			device_gone_locked(dev, "write to device socket failed");
			return LIBUSB_ERROR_NO_DEVICE;
		}
		size_t left = (size_t)w;
		while (left > 0 && dev->out_head) {
			struct vusb_out *m = dev->out_head;
			size_t need = m->head_len + m->data_len - m->sent;
			if (left < need) {
				m->sent += left;
				left = 0;
				break;
			}
			left -= need;
			/* Unlink before telling the transfer: its completion may queue more. */
			dev->out_head = m->next;
			if (!dev->out_head)
				dev->out_tail = NULL;
			struct vusb_xfer *x = m->xfer;
			free_out(m);
			if (x)
				xfer_on_out_written_locked(x);
			if (dev->state == DEV_GONE)
				return LIBUSB_ERROR_NO_DEVICE;
		}
	}
	return dev->state == DEV_GONE ? LIBUSB_ERROR_NO_DEVICE : 0;
}

/* One device→host message. Returns false when the device broke the protocol. */
static bool dispatch(struct libusb_device *dev, uint8_t type, const uint8_t *body, size_t len)
{
	if (dev->state == DEV_HELLO) {
		if (type != VUSB_HELLO)
			return false;
		device_on_hello_locked(dev, body, len);
		return true;
	}
	switch (type) {
	case VUSB_CONTROL_DONE:
		if (len < VUSB_CONTROL_DONE_FIXED)
			return false;
		xfer_on_control_done_locked(dev, body, len);
		return true;
	case VUSB_BULK_IN:
		if (len < 1)
			return false;
		xfer_on_bulk_in_locked(dev, body[0], body + 1, len - 1);
		return true;
	default: /* a second HELLO, a host→device type, or an unknown one */
		return false;
	}
}

/* Parses the complete messages in the read buffer, stopping while too much data waits for IN
 * transfers (the rest stays in the socket: backpressure). */
static void parse_locked(struct libusb_device *dev)
{
	size_t pos = 0;
	while (dev->state != DEV_GONE && dev->rlen - pos >= 4) {
		if (dev->stash_bytes >= VUSB_STASH_LIMIT)
			break;
		uint32_t length = get_le32(dev->rbuf + pos);
		if (length < 1 || length > VUSB_MAX_LENGTH) {
			VLOG_ERR(dev->ctx, "vusb %s: message length %u outside [1, %u]", dev->name, length,
			         (unsigned)VUSB_MAX_LENGTH);
			device_gone_locked(dev, "bad message length");
			return;
		}
		if (dev->rlen - pos - 4 < length)
			break;
		const uint8_t *msg = dev->rbuf + pos + 4;
		pos += 4 + (size_t)length;
		if (!dispatch(dev, msg[0], msg + 1, length - 1)) {
			if (dev->state != DEV_GONE) {
				VLOG_ERR(dev->ctx, "vusb %s: unexpected or malformed message type %u (body %u bytes)",
				         dev->name, msg[0], length - 1);
				device_gone_locked(dev, "protocol error");
			}
			return;
		}
	}
	if (dev->state == DEV_GONE || pos == 0)
		return;
	memmove(dev->rbuf, dev->rbuf + pos, dev->rlen - pos);
	dev->rlen -= pos;
}

/* Room for the message whose header is at the start of the buffer, or for one more chunk. */
static bool ensure_room(struct libusb_device *dev)
{
	size_t want = dev->rlen + READ_CHUNK;
	if (dev->rlen >= 4) {
		size_t whole = 4 + (size_t)get_le32(dev->rbuf);
		if (whole > want)
			want = whole; /* bounded: parse_locked refused lengths above VUSB_MAX_LENGTH */
	}
	if (want <= dev->rcap)
		return true;
	size_t cap = dev->rcap ? dev->rcap : READ_CHUNK;
	while (cap < want)
		cap *= 2;
	uint8_t *nb = realloc(dev->rbuf, cap);
	if (!nb)
		return false;
	dev->rbuf = nb;
	dev->rcap = cap;
	return true;
}

/* Reads what the socket holds (up to a budget) and handles every complete message. */
int wire_read_locked(struct libusb_device *dev)
{
	if (dev->in_parse) /* a completion inside parsing submitted an IN transfer: the outer loop goes on */
		return 0;
	dev->in_parse = true;
	size_t budget = READ_BUDGET;
	parse_locked(dev);
	while (dev->state != DEV_GONE && budget > 0 && dev->stash_bytes < VUSB_STASH_LIMIT) {
		if (!ensure_room(dev)) {
			device_gone_locked(dev, "out of memory for the read buffer");
			break;
		}
		ssize_t r = recv(dev->fd, dev->rbuf + dev->rlen, dev->rcap - dev->rlen, MSG_DONTWAIT);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				device_gone_locked(dev, "read from device socket failed");
			break;
		}
		if (r == 0) {
			device_gone_locked(dev, "device closed the connection");
			break;
		}
		dev->rlen += (size_t)r;
		budget = (size_t)r >= budget ? 0 : budget - (size_t)r;
		parse_locked(dev);
	}
	if (dev->state != DEV_GONE)
		dev->in_parse = false;
	return dev->state == DEV_GONE ? LIBUSB_ERROR_NO_DEVICE : 0;
}

/* Frees the read buffer, the out queue and the stash of a device that is gone. Transfers have
 * already been completed with NO_DEVICE by xfer_fail_device_locked(). */
void wire_free_queues(struct libusb_device *dev)
{
	free(dev->rbuf);
	dev->rbuf = NULL;
	dev->rlen = dev->rcap = 0;
	while (dev->out_head) {
		struct vusb_out *m = dev->out_head;
		dev->out_head = m->next;
		free_out(m);
	}
	dev->out_tail = NULL;
	while (dev->stash_head) {
		struct vusb_stash *s = dev->stash_head;
		dev->stash_head = s->next;
		free(s);
	}
	dev->stash_tail = NULL;
	dev->stash_bytes = 0;
}

short wire_poll_events_locked(const struct libusb_device *dev)
{
	if (dev->state == DEV_GONE || dev->fd < 0)
		return 0;
	short ev = 0;
	if (dev->stash_bytes < VUSB_STASH_LIMIT)
		ev |= POLLIN;
	if (dev->out_head)
		ev |= POLLOUT;
	return ev;
}

/* Re-parses buffered messages after IN transfers drained the stash below its limit. */
void wire_resume_locked(struct libusb_device *dev)
{
	if (dev->state != DEV_GONE && dev->rlen > 0)
		wire_read_locked(dev);
}
