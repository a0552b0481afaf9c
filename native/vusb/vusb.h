/*
 * libvusb internals: the context, devices, handles and transfers behind the opaque libusb types,
 * and the functions the files of this library share.
 *
 * Locking. One mutex per context (ctx->lock) guards every device, transfer list and queue of that
 * context. Functions named *_locked expect it held. User callbacks (transfer completions, hotplug)
 * always run with it released, so they may submit, cancel, open and close freely. I/O on the
 * device sockets is non-blocking and done with the lock held, so a thread handling events and a
 * thread waiting in a synchronous call may both poll the same descriptors safely.
 *
 * Completion. A transfer finishes in one place, xfer_finish_locked(): internal transfers (the
 * discovery's descriptor reads, the synchronous wrappers) are told at once; user transfers join
 * ctx->done and their callbacks run in the next libusb_handle_events*() call, woken through the
 * context's eventfd, as libusb runs callbacks only from event handling.
 */
#ifndef MUXWIRE_VUSB_H
#define MUXWIRE_VUSB_H

#include <pthread.h>
#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>
#include <sys/types.h>

#include "../libusb-abi.h"

/* On the definition of every libusb function this library exports: the build hides everything
 * else (-fvisibility=hidden), so only the libusb ABI is visible to the programs that load it. */
#define VUSB_API __attribute__((visibility("default")))

/* The version libusb_get_version reports: the libusb release whose ABI this library follows. */
#define VUSB_LIBUSB_MAJOR 1
#define VUSB_LIBUSB_MINOR 0
#define VUSB_LIBUSB_MICRO 26

/* ---- the wire (docs/ARCHITECTURE.md "The vusb wire") ---- */
enum vusb_msg_type {
	VUSB_HELLO = 1,
	VUSB_CONTROL = 2,
	VUSB_CONTROL_DONE = 3,
	VUSB_BULK_OUT = 4,
	VUSB_BULK_IN = 5
};
#define VUSB_WIRE_VERSION 1
#define VUSB_HELLO_BODY 4
#define VUSB_CONTROL_FIXED 12     /* id + setup packet */
#define VUSB_CONTROL_DONE_FIXED 8 /* id + status */
/* Largest payload of one message, as src/protocol/vusb-wire.ts VUSB_MAX_PAYLOAD: a device refuses
 * longer OUT messages, and a longer IN message is a broken device. */
#define VUSB_MAX_PAYLOAD (1024u * 1024u)
#define VUSB_MAX_LENGTH (1u + VUSB_CONTROL_FIXED + VUSB_MAX_PAYLOAD)
/* Device data held for IN transfers not yet submitted; beyond this the socket is not read, so a
 * device that writes faster than the host asks is held back by the socket, not by our memory. */
#define VUSB_STASH_LIMIT (4u * 1024u * 1024u)
#define VUSB_MAX_CONFIGS 8
#define VUSB_MAX_CONFIG_TOTAL 4096

/* ---- small intrusive doubly linked list ---- */
struct vlist {
	struct vlist *prev, *next;
};
static inline void vlist_init(struct vlist *l) { l->prev = l->next = l; }
static inline bool vlist_empty(const struct vlist *l) { return l->next == l; }
static inline bool vlist_linked(const struct vlist *n) { return n->next != NULL && n->next != n; }
static inline void vlist_add_tail(struct vlist *head, struct vlist *n)
{
	n->prev = head->prev;
	n->next = head;
	head->prev->next = n;
	head->prev = n;
}
static inline void vlist_del(struct vlist *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}
#define vcontainer_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#define vlist_for_each_safe(pos, tmp, head) \
	for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->next)

/* ---- transfers ---- */
enum xfer_state {
	XFER_IDLE,      /* allocated, or completed and handed back */
	XFER_OUT_QUEUED, /* its message is (partly) in the device's out queue */
	XFER_CTRL_WAIT, /* CONTROL written, waiting for CONTROL_DONE */
	XFER_IN_WAIT,   /* bulk/interrupt IN waiting for BULK_IN data */
	XFER_DONE       /* finished, callback not yet run */
};

struct vusb_xfer;
typedef void (*xfer_done_fn)(struct vusb_xfer *x);

/* Private part, allocated in front of the public struct libusb_transfer. */
struct vusb_xfer {
	struct vlist link;    /* in the device's ctrl/in list, or ctx->done */
	struct vlist timed;   /* in ctx->timed while it has a deadline */
	struct libusb_device *dev; /* the device it was last submitted to */
	struct vusb_out *out; /* its message in the out queue, while XFER_OUT_QUEUED */
	enum xfer_state state;
	uint32_t ctrl_id;
	uint64_t deadline_ms; /* CLOCK_MONOTONIC ms, 0 = none */
	bool cancelling;
	xfer_done_fn internal; /* non-NULL: internal transfer, told at once under the lock */
	void *internal_data;
	int num_iso;
	/* struct libusb_transfer follows, aligned */
};

#define XFER_PRIV_SIZE ((sizeof(struct vusb_xfer) + 15u) & ~(size_t)15u)
static inline struct libusb_transfer *xfer_pub(struct vusb_xfer *x)
{
	return (struct libusb_transfer *)((char *)x + XFER_PRIV_SIZE);
}
static inline struct vusb_xfer *xfer_priv(struct libusb_transfer *t)
{
	return (struct vusb_xfer *)((char *)t - XFER_PRIV_SIZE);
}

/* One queued message to the device: a header we build and a payload we may borrow from a
 * transfer's buffer (zero copy) until the transfer completes or is cancelled. */
struct vusb_out {
	struct vusb_out *next;
	uint8_t head[20];
	size_t head_len;
	const uint8_t *data;
	size_t data_len;
	size_t sent;         /* bytes of head + data written so far */
	uint8_t *owned;      /* data copied into our own memory, freed with the message */
	struct vusb_xfer *xfer; /* completes when written (bulk OUT) or NULL */
};

/* Device data not yet taken by an IN transfer, one entry per BULK_IN message. */
struct vusb_stash {
	struct vusb_stash *next;
	uint8_t endpoint;
	size_t len, off;
	uint8_t data[];
};

/* ---- devices ---- */
enum dev_state {
	DEV_HELLO,    /* connected, waiting for HELLO */
	DEV_DESCRIBE, /* reading descriptors over the wire */
	DEV_READY,    /* listed, hotplug ARRIVED sent */
	DEV_GONE      /* unplugged: socket closed, no longer listed */
};

struct vusb_config {
	uint8_t *raw; /* the whole configuration descriptor, wTotalLength bytes */
	uint16_t len;
};

struct libusb_device {
	struct vlist link; /* in ctx->devices while not GONE, then in ctx->graveyard until reaped */
	struct libusb_context *ctx;
	int refcnt;
	enum dev_state state;
	char *name;   /* socket file name in the bus directory */
	dev_t st_dev; /* identity of the socket file, so a new socket under the old name is new */
	ino_t st_ino;
	int fd;
	short poll_events; /* what the fd is registered for with pollfd notifiers */
	uint8_t bus, address;
	uint8_t speed;
	uint64_t discover_deadline_ms;
	/* descriptors, read once at discovery as libusb caches them at enumeration */
	uint8_t dev_desc[LIBUSB_DT_DEVICE_SIZE];
	struct vusb_config configs[VUSB_MAX_CONFIGS];
	int num_configs;
	int describe_step;    /* discovery progress, see device.c */
	uint8_t active_config; /* bConfigurationValue, 0 = unconfigured */
	/* wire state */
	uint8_t *rbuf;
	size_t rlen, rcap;
	struct vusb_out *out_head, *out_tail;
	uint32_t next_ctrl_id;
	struct vlist ctrl_wait; /* control transfers sent, by id */
	struct vlist in_wait;   /* IN transfers in submission order */
	struct vusb_stash *stash_head, *stash_tail;
	size_t stash_bytes;
	bool arrived_sent;
	bool in_parse;
};

struct libusb_device_handle {
	struct libusb_device *dev;
	uint32_t claimed; /* bit per interface number < 32 */
	bool auto_detach;
};

/* ---- hotplug ---- */
struct vusb_hotplug_cb {
	struct vlist link;
	libusb_hotplug_callback_handle handle;
	int events, vendor_id, product_id, dev_class;
	libusb_hotplug_callback_fn fn;
	void *user_data;
	bool dead;
};

struct vusb_hotplug_event {
	struct vusb_hotplug_event *next;
	libusb_device *dev; /* holds a reference */
	libusb_hotplug_event event;
	libusb_hotplug_callback_handle max_handle; /* callbacks registered after it skip it */
};

/* ---- the context ---- */
struct vusb_pollfd_entry {
	struct libusb_pollfd pfd; /* handed out by libusb_get_pollfds, so it stays put */
	struct vusb_pollfd_entry *next;
};

struct libusb_context {
	pthread_mutex_t lock;
	int refcnt; /* for the default context: libusb_init(NULL) calls */
	int log_level;
	libusb_log_cb log_cb;
	char *bus_dir;
	int inotify_fd, watch_fd;
	int event_fd; /* completions waiting, or the poll set changed */
	struct vlist devices;
	/* Devices gone since the last I/O round. Their list reference is dropped only at the end of
	 * the round (device_reap_locked), so code deep in a read, a flush or a completion may still
	 * look at a device that just went. */
	struct vlist graveyard;
	struct vlist done;  /* user transfers finished, callbacks pending */
	struct vlist timed; /* transfers with a deadline */
	struct vlist hotplug_cbs;
	libusb_hotplug_callback_handle next_hotplug_handle;
	struct vusb_hotplug_event *hp_head, *hp_tail;
	uint8_t next_address;
	/* the names this context has already tried and given up on or lost (dev, ino, name) */
	struct vusb_seen *seen;
	/* pollfds as handed to the application */
	struct vusb_pollfd_entry *pollfds;
	libusb_pollfd_added_cb added_cb;
	libusb_pollfd_removed_cb removed_cb;
	void *notifier_data;
	/* event handling lock (libusb_lock_events) and waiters (libusb_wait_for_event) */
	pthread_mutex_t events_lock;
	pthread_mutex_t waiters_lock;
	pthread_cond_t waiters_cond;
	pthread_t events_owner;
	bool events_owned;
	volatile int interrupted;
	bool no_discovery;
};

struct vusb_seen {
	struct vusb_seen *next;
	dev_t st_dev;
	ino_t st_ino;
	int tries;            /* connection attempts so far; RETRY_MAX_TRIES = given up */
	uint64_t retry_at_ms; /* next attempt, 0 = none */
	char name[];
};

/* ---- api-core.c ---- */
libusb_context *vusb_ctx(libusb_context *ctx); /* NULL → the default context (may be NULL) */
void vusb_log(libusb_context *ctx, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define VLOG_ERR(ctx, ...) vusb_log((ctx), LIBUSB_LOG_LEVEL_ERROR, __VA_ARGS__)
#define VLOG_WARN(ctx, ...) vusb_log((ctx), LIBUSB_LOG_LEVEL_WARNING, __VA_ARGS__)
#define VLOG_INFO(ctx, ...) vusb_log((ctx), LIBUSB_LOG_LEVEL_INFO, __VA_ARGS__)
#define VLOG_DBG(ctx, ...) vusb_log((ctx), LIBUSB_LOG_LEVEL_DEBUG, __VA_ARGS__)
uint64_t vusb_now_ms(void);
int vusb_settle_ms(void);

/* ---- wire.c ---- */
int wire_queue_locked(struct libusb_device *dev, struct vusb_out *m); /* takes ownership */
struct vusb_out *wire_new_control(uint32_t id, const uint8_t *setup_and_data, size_t data_len);
struct vusb_out *wire_new_bulk_out(uint8_t endpoint, const uint8_t *data, size_t len);
void wire_detach_locked(struct libusb_device *dev, struct vusb_out *m);
bool wire_unlink_unsent_locked(struct libusb_device *dev, struct vusb_out *m);
int wire_flush_locked(struct libusb_device *dev);
int wire_read_locked(struct libusb_device *dev);
void wire_free_queues(struct libusb_device *dev);
short wire_poll_events_locked(const struct libusb_device *dev);
void wire_resume_locked(struct libusb_device *dev);

/* ---- device.c ---- */
libusb_device *device_connect_locked(libusb_context *ctx, const char *name, dev_t st_dev, ino_t st_ino);
void device_gone_locked(libusb_device *dev, const char *why);
void device_on_hello_locked(libusb_device *dev, const uint8_t *body, size_t len);
void device_ref_locked(libusb_device *dev);
void device_unref_locked(libusb_device *dev);
void device_check_discovery_locked(libusb_context *ctx, uint64_t now);
void device_reap_locked(libusb_context *ctx);
bool device_discovering_locked(libusb_context *ctx);
uint64_t device_next_deadline_locked(libusb_context *ctx);

/* ---- descriptors.c ---- */
int desc_parse_config(const uint8_t *raw, size_t len, struct libusb_config_descriptor **out);
void desc_free_config(struct libusb_config_descriptor *c);
const struct vusb_config *desc_find_config_by_value(const libusb_device *dev, uint8_t value);
int desc_config_header_ok(const uint8_t *raw, size_t len);

/* ---- transfer.c ---- */
struct vusb_xfer *xfer_alloc(int iso_packets);
int xfer_submit_locked(struct vusb_xfer *x);
void xfer_finish_locked(struct vusb_xfer *x, enum libusb_transfer_status status);
int xfer_abort_locked(struct vusb_xfer *x, enum libusb_transfer_status status);
void xfer_on_bulk_in_locked(libusb_device *dev, uint8_t endpoint, const uint8_t *data, size_t len);
void xfer_on_control_done_locked(libusb_device *dev, const uint8_t *body, size_t len);
void xfer_on_out_written_locked(struct vusb_xfer *x);
void xfer_fail_device_locked(libusb_device *dev);
void xfer_check_timeouts_locked(libusb_context *ctx, uint64_t now);
uint64_t xfer_next_deadline_locked(libusb_context *ctx);
void xfer_drain_stash_locked(libusb_device *dev);

/* ---- events.c ---- */
void events_wake(libusb_context *ctx);
void events_fd_changed_locked(libusb_context *ctx, int fd, short old_events, short new_events);
void events_refresh_device_locked(libusb_device *dev);
int events_io_step(libusb_context *ctx, int timeout_ms, bool handler);
int events_init(libusb_context *ctx);
void events_exit(libusb_context *ctx);
void events_dispatch(libusb_context *ctx);
/* Depth of application callbacks running on this thread (transfer or hotplug). */
extern __thread int vusb_callback_depth;

/* ---- hotplug.c ---- */
int hotplug_init(libusb_context *ctx);
void hotplug_exit(libusb_context *ctx);
void hotplug_scan_locked(libusb_context *ctx);
void hotplug_on_inotify_locked(libusb_context *ctx);
void hotplug_queue_locked(libusb_device *dev, libusb_hotplug_event event);
void hotplug_dispatch(libusb_context *ctx);
void hotplug_forget_seen_locked(libusb_context *ctx, const char *name);
void hotplug_remember_seen_locked(libusb_context *ctx, const char *name, dev_t st_dev, ino_t st_ino);
void hotplug_settle(libusb_context *ctx, int timeout_ms);
uint64_t hotplug_next_retry_locked(libusb_context *ctx);
void hotplug_check_retry_locked(libusb_context *ctx, uint64_t now);

#endif
