/*
 * Plug and unplug, driven by the bus directory named by MUXWIRE_VUSB_DIR (docs/ARCHITECTURE.md
 * "The vusb wire"): a `*.vusb` socket appearing is a plug-in; the file disappearing, or the device
 * closing its connection (device.c), is an unplug. inotify on the directory wakes the event loop; every
 * wake-up rescans the directory, which is the truth (events can be coalesced or overflow).
 *
 * A socket file that refused a connection is retried with backoff for a few seconds: a simulator
 * binds (the file appears) a moment before it listens. A socket that was connected once and lost,
 * or that failed discovery, is remembered by (name, inode) and not dialled again until a new file
 * takes the name.
 *
 * Hotplug callbacks follow libusb: registered with a vendor/product/class filter and an event
 * mask; LIBUSB_HOTPLUG_ENUMERATE reports the devices present at registration from inside the
 * register call; returning 1 from a callback deregisters it; callbacks run from event handling.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vusb.h"

#define RETRY_MAX_TRIES 30
#define RETRY_STEP_MS 50

static bool is_vusb_name(const char *name)
{
	size_t n = strlen(name);
	return n > 5 && strcmp(name + n - 5, ".vusb") == 0;
}

static struct vusb_seen *find_seen(libusb_context *ctx, const char *name)
{
	for (struct vusb_seen *s = ctx->seen; s; s = s->next)
		if (strcmp(s->name, name) == 0)
			return s;
	return NULL;
}

static struct vusb_seen *add_seen(libusb_context *ctx, const char *name, dev_t st_dev, ino_t st_ino)
{
	struct vusb_seen *s = find_seen(ctx, name);
	if (!s) {
		size_t len = strlen(name);
		s = calloc(1, sizeof(*s) + len + 1);
		if (!s)
			return NULL;
		memcpy(s->name, name, len + 1);
		s->next = ctx->seen;
		ctx->seen = s;
	}
	s->st_dev = st_dev;
	s->st_ino = st_ino;
	return s;
}

void hotplug_remember_seen_locked(libusb_context *ctx, const char *name, dev_t st_dev, ino_t st_ino)
{
	struct vusb_seen *s = add_seen(ctx, name, st_dev, st_ino);
	if (s) {
		s->tries = RETRY_MAX_TRIES;
		s->retry_at_ms = 0;
	}
}

void hotplug_forget_seen_locked(libusb_context *ctx, const char *name)
{
	for (struct vusb_seen **pp = &ctx->seen; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->name, name) == 0) {
			struct vusb_seen *s = *pp;
			*pp = s->next;
			free(s);
			return;
		}
	}
}

uint64_t hotplug_next_retry_locked(libusb_context *ctx)
{
	uint64_t best = 0;
	for (struct vusb_seen *s = ctx->seen; s; s = s->next)
		if (s->retry_at_ms && (best == 0 || s->retry_at_ms < best))
			best = s->retry_at_ms;
	return best;
}

void hotplug_check_retry_locked(libusb_context *ctx, uint64_t now)
{
	uint64_t next = hotplug_next_retry_locked(ctx);
	if (next && next <= now)
		hotplug_scan_locked(ctx);
}

static void try_connect(libusb_context *ctx, const char *name, const struct stat *st, uint64_t now)
{
	if (device_connect_locked(ctx, name, st->st_dev, st->st_ino)) {
		hotplug_forget_seen_locked(ctx, name);
		return;
	}
	int err = errno;
	struct vusb_seen *s = add_seen(ctx, name, st->st_dev, st->st_ino);
	if (!s)
		return;
	if ((err == ECONNREFUSED || err == EAGAIN || err == ENOENT) && s->tries < RETRY_MAX_TRIES) {
		s->tries++;
		s->retry_at_ms = now + (uint64_t)RETRY_STEP_MS * (uint64_t)s->tries;
	} else {
		VLOG_WARN(ctx, "vusb: giving up on %s/%s: %s", ctx->bus_dir, name, strerror(err));
		s->tries = RETRY_MAX_TRIES;
		s->retry_at_ms = 0;
	}
}

/* Makes the device list match the directory. */
void hotplug_scan_locked(libusb_context *ctx)
{
	if (!ctx->bus_dir || ctx->no_discovery)
		return;
	if (ctx->watch_fd < 0 && ctx->inotify_fd >= 0)
		ctx->watch_fd = inotify_add_watch(ctx->inotify_fd, ctx->bus_dir,
		                                  IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_ATTRIB |
		                                      IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR);
	int dfd = open(ctx->bus_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	/* 1. devices whose socket file left (or was replaced) are unplugged */
	struct vlist *pos, *tmp;
	vlist_for_each_safe(pos, tmp, &ctx->devices) {
		libusb_device *dev = vcontainer_of(pos, libusb_device, link);
		struct stat st;
		if (dfd < 0 || fstatat(dfd, dev->name, &st, 0) < 0 || st.st_ino != dev->st_ino || st.st_dev != dev->st_dev) {
			device_gone_locked(dev, "socket file removed");
			pos = &ctx->devices; /* gone may have completed others: start over */
			tmp = pos->next;
		}
	}
	/* 2. forget remembered names whose file is gone or replaced */
	for (struct vusb_seen **pp = &ctx->seen; *pp;) {
		struct vusb_seen *s = *pp;
		struct stat st;
		if (dfd < 0 || fstatat(dfd, s->name, &st, 0) < 0 || st.st_ino != s->st_ino || st.st_dev != s->st_dev) {
			*pp = s->next;
			free(s);
		} else {
			pp = &s->next;
		}
	}
	if (dfd < 0)
		return;
	/* 3. new sockets are plugged in */
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return;
	}
	uint64_t now = vusb_now_ms();
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (!is_vusb_name(de->d_name))
			continue;
		struct stat st;
		if (fstatat(dfd, de->d_name, &st, 0) < 0 || !S_ISSOCK(st.st_mode))
			continue;
		bool live = false;
		vlist_for_each_safe(pos, tmp, &ctx->devices) {
			libusb_device *dev = vcontainer_of(pos, libusb_device, link);
			if (strcmp(dev->name, de->d_name) == 0)
				live = true;
		}
		if (live)
			continue;
		struct vusb_seen *s = find_seen(ctx, de->d_name);
		if (s && (s->retry_at_ms == 0 || s->retry_at_ms > now))
			continue;
		try_connect(ctx, de->d_name, &st, now);
	}
	closedir(d);
}

void hotplug_on_inotify_locked(libusb_context *ctx)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool any = false;
	for (;;) {
		ssize_t n = read(ctx->inotify_fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		any = true;
		for (ssize_t off = 0; off + (ssize_t)sizeof(struct inotify_event) <= n;) {
			const struct inotify_event *ev = (const struct inotify_event *)(buf + off);
			if (ev->wd == ctx->watch_fd && (ev->mask & IN_IGNORED))
				ctx->watch_fd = -1; /* the directory went away; the next scan watches it again */
			off += (ssize_t)sizeof(*ev) + ev->len;
		}
	}
	if (any)
		hotplug_scan_locked(ctx);
}

int hotplug_init(libusb_context *ctx)
{
	ctx->inotify_fd = -1;
	ctx->watch_fd = -1;
	if (!ctx->bus_dir || ctx->no_discovery)
		return 0;
	ctx->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (ctx->inotify_fd < 0) {
		VLOG_WARN(ctx, "vusb: inotify unavailable (%s): devices are found only by libusb_get_device_list",
		          strerror(errno));
		return 0;
	}
	events_fd_changed_locked(ctx, ctx->inotify_fd, 0, POLLIN);
	hotplug_scan_locked(ctx);
	return 0;
}

void hotplug_exit(libusb_context *ctx)
{
	if (ctx->inotify_fd >= 0)
		close(ctx->inotify_fd);
	ctx->inotify_fd = ctx->watch_fd = -1;
	while (ctx->seen) {
		struct vusb_seen *s = ctx->seen;
		ctx->seen = s->next;
		free(s);
	}
	while (!vlist_empty(&ctx->hotplug_cbs)) {
		struct vusb_hotplug_cb *cb = vcontainer_of(ctx->hotplug_cbs.next, struct vusb_hotplug_cb, link);
		vlist_del(&cb->link);
		free(cb);
	}
	while (ctx->hp_head) {
		struct vusb_hotplug_event *e = ctx->hp_head;
		ctx->hp_head = e->next;
		device_unref_locked(e->dev);
		free(e);
	}
	ctx->hp_tail = NULL;
}

/* Runs I/O (no callbacks) until no device is half-discovered, for at most timeout_ms. */
void hotplug_settle(libusb_context *ctx, int timeout_ms)
{
	uint64_t end = vusb_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
	for (;;) {
		pthread_mutex_lock(&ctx->lock);
		bool busy = device_discovering_locked(ctx) || hotplug_next_retry_locked(ctx) != 0;
		pthread_mutex_unlock(&ctx->lock);
		uint64_t now = vusb_now_ms();
		if (!busy || now >= end)
			return;
		uint64_t left = end - now;
		events_io_step(ctx, left < 50 ? (int)left : 50, false);
	}
}

void hotplug_queue_locked(libusb_device *dev, libusb_hotplug_event event)
{
	libusb_context *ctx = dev->ctx;
	struct vusb_hotplug_event *e = calloc(1, sizeof(*e));
	if (!e)
		return;
	device_ref_locked(dev);
	e->dev = dev;
	e->event = event;
	e->max_handle = ctx->next_hotplug_handle - 1;
	if (ctx->hp_tail)
		ctx->hp_tail->next = e;
	else
		ctx->hp_head = e;
	ctx->hp_tail = e;
	events_wake(ctx);
}

static bool matches(const struct vusb_hotplug_cb *cb, libusb_device *dev, libusb_hotplug_event event)
{
	const uint8_t *d = dev->dev_desc;
	uint16_t vid = (uint16_t)(d[8] | (d[9] << 8)), pid = (uint16_t)(d[10] | (d[11] << 8));
	return (cb->events & (int)event) && (cb->vendor_id == LIBUSB_HOTPLUG_MATCH_ANY || cb->vendor_id == vid) &&
	       (cb->product_id == LIBUSB_HOTPLUG_MATCH_ANY || cb->product_id == pid) &&
	       (cb->dev_class == LIBUSB_HOTPLUG_MATCH_ANY || cb->dev_class == d[4]);
}

/* Calls callback `handle` if it is still registered; deregisters it when it returns 1. */
static void call_one(libusb_context *ctx, libusb_hotplug_callback_handle handle, libusb_device *dev,
                     libusb_hotplug_event event)
{
	pthread_mutex_lock(&ctx->lock);
	libusb_hotplug_callback_fn fn = NULL;
	void *user_data = NULL;
	struct vlist *pos, *tmp;
	vlist_for_each_safe(pos, tmp, &ctx->hotplug_cbs) {
		struct vusb_hotplug_cb *cb = vcontainer_of(pos, struct vusb_hotplug_cb, link);
		if (cb->handle == handle) {
			fn = cb->fn;
			user_data = cb->user_data;
		}
	}
	pthread_mutex_unlock(&ctx->lock);
	vusb_callback_depth++;
	int r = fn ? fn(ctx, dev, event, user_data) : 0;
	vusb_callback_depth--;
	if (r == 1)
		libusb_hotplug_deregister_callback(ctx, handle);
}

void hotplug_dispatch(libusb_context *ctx)
{
	for (;;) {
		pthread_mutex_lock(&ctx->lock);
		struct vusb_hotplug_event *e = ctx->hp_head;
		if (!e) {
			pthread_mutex_unlock(&ctx->lock);
			return;
		}
		ctx->hp_head = e->next;
		if (!ctx->hp_head)
			ctx->hp_tail = NULL;
		size_t n = 0, i = 0;
		struct vlist *pos, *tmp;
		vlist_for_each_safe(pos, tmp, &ctx->hotplug_cbs) n++;
		libusb_hotplug_callback_handle *handles = n ? malloc(n * sizeof(*handles)) : NULL;
		vlist_for_each_safe(pos, tmp, &ctx->hotplug_cbs) {
			struct vusb_hotplug_cb *cb = vcontainer_of(pos, struct vusb_hotplug_cb, link);
			/* A callback registered after the event was queued saw the device by ENUMERATE. */
			if (handles && cb->handle <= e->max_handle && matches(cb, e->dev, e->event))
				handles[i++] = cb->handle;
		}
		pthread_mutex_unlock(&ctx->lock);
		for (size_t k = 0; k < i; k++)
			call_one(ctx, handles[k], e->dev, e->event);
		free(handles);
		pthread_mutex_lock(&ctx->lock);
		device_unref_locked(e->dev);
		pthread_mutex_unlock(&ctx->lock);
		free(e);
	}
}

VUSB_API int libusb_hotplug_register_callback(libusb_context *ctx, int events, int flags, int vendor_id,
                                              int product_id, int dev_class, libusb_hotplug_callback_fn cb_fn,
                                              void *user_data, libusb_hotplug_callback_handle *callback_handle)
{
	ctx = vusb_ctx(ctx);
	if (!ctx || !cb_fn || events == 0 ||
	    (events & ~(LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED | LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT)) ||
	    (flags & ~LIBUSB_HOTPLUG_ENUMERATE) ||
	    (vendor_id != LIBUSB_HOTPLUG_MATCH_ANY && (vendor_id & ~0xffff)) ||
	    (product_id != LIBUSB_HOTPLUG_MATCH_ANY && (product_id & ~0xffff)) ||
	    (dev_class != LIBUSB_HOTPLUG_MATCH_ANY && (dev_class & ~0xff)))
		return LIBUSB_ERROR_INVALID_PARAM;
	struct vusb_hotplug_cb *cb = calloc(1, sizeof(*cb));
	if (!cb)
		return LIBUSB_ERROR_NO_MEM;
	cb->events = events;
	cb->vendor_id = vendor_id;
	cb->product_id = product_id;
	cb->dev_class = dev_class;
	cb->fn = cb_fn;
	cb->user_data = user_data;
	pthread_mutex_lock(&ctx->lock);
	cb->handle = ctx->next_hotplug_handle++;
	vlist_add_tail(&ctx->hotplug_cbs, &cb->link);
	libusb_hotplug_callback_handle handle = cb->handle;
	struct vusb_hotplug_cb filter = *cb; /* cb is freed if the callback deregisters itself */
	libusb_device **present = NULL;
	size_t n = 0;
	if ((flags & LIBUSB_HOTPLUG_ENUMERATE) && (events & LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED)) {
		struct vlist *pos, *tmp;
		size_t cap = 0;
		vlist_for_each_safe(pos, tmp, &ctx->devices) cap++;
		present = cap ? calloc(cap, sizeof(*present)) : NULL;
		vlist_for_each_safe(pos, tmp, &ctx->devices) {
			libusb_device *dev = vcontainer_of(pos, libusb_device, link);
			if (present && dev->state == DEV_READY) {
				device_ref_locked(dev);
				present[n++] = dev;
			}
		}
	}
	pthread_mutex_unlock(&ctx->lock);
	if (callback_handle)
		*callback_handle = handle;
	for (size_t i = 0; i < n; i++) {
		pthread_mutex_lock(&ctx->lock);
		bool ok = matches(&filter, present[i], LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED);
		pthread_mutex_unlock(&ctx->lock);
		if (ok)
			call_one(ctx, handle, present[i], LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED);
	}
	pthread_mutex_lock(&ctx->lock);
	for (size_t i = 0; i < n; i++)
		device_unref_locked(present[i]);
	pthread_mutex_unlock(&ctx->lock);
	free(present);
	return LIBUSB_SUCCESS;
}

VUSB_API void libusb_hotplug_deregister_callback(libusb_context *ctx, libusb_hotplug_callback_handle callback_handle)
{
	ctx = vusb_ctx(ctx);
	if (!ctx)
		return;
	pthread_mutex_lock(&ctx->lock);
	struct vlist *pos, *tmp;
	vlist_for_each_safe(pos, tmp, &ctx->hotplug_cbs) {
		struct vusb_hotplug_cb *cb = vcontainer_of(pos, struct vusb_hotplug_cb, link);
		if (cb->handle == callback_handle) {
			vlist_del(&cb->link);
			free(cb);
			break;
		}
	}
	pthread_mutex_unlock(&ctx->lock);
}

VUSB_API void *libusb_hotplug_get_user_data(libusb_context *ctx, libusb_hotplug_callback_handle callback_handle)
{
	ctx = vusb_ctx(ctx);
	if (!ctx)
		return NULL;
	void *data = NULL;
	pthread_mutex_lock(&ctx->lock);
	struct vlist *pos, *tmp;
	vlist_for_each_safe(pos, tmp, &ctx->hotplug_cbs) {
		struct vusb_hotplug_cb *cb = vcontainer_of(pos, struct vusb_hotplug_cb, link);
		if (cb->handle == callback_handle)
			data = cb->user_data;
	}
	pthread_mutex_unlock(&ctx->lock);
	return data;
}
