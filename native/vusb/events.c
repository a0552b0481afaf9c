/*
 * Event handling: the file descriptors an application polls, one I/O round over them, and the
 * libusb_handle_events* family that runs completion and hotplug callbacks.
 *
 * The pollable set is: the context's eventfd (completions waiting, or the set changed), the
 * inotify descriptor of the bus directory, and every device socket (POLLIN unless its stash is
 * full, POLLOUT while its out queue is not empty). An application that polls them itself (usbmuxd
 * rebuilds its poll set from libusb_get_pollfds() on every loop) calls libusb_handle_events_timeout
 * with a zero timeout when one is ready; libusb_set_pollfd_notifiers() users hear of every change,
 * a change of events being a removal and an addition. Timeouts are not pollable here
 * (libusb_pollfds_handle_timeouts() is 0): libusb_get_next_timeout() gives the next deadline.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "vusb.h"


void events_wake(libusb_context *ctx)
{
	uint64_t one = 1;
	if (ctx->event_fd >= 0) {
		ssize_t r = write(ctx->event_fd, &one, sizeof(one));
		(void)r; /* EAGAIN: the counter is already non-zero, which is all a wake needs */
	}
}

static void drain_wake(libusb_context *ctx)
{
	uint64_t v;
	ssize_t r = read(ctx->event_fd, &v, sizeof(v));
	(void)r;
}

void events_fd_changed_locked(libusb_context *ctx, int fd, short old_events, short new_events)
{
	if (old_events == new_events || fd < 0)
		return;
	if (old_events) {
		for (struct vusb_pollfd_entry **pp = &ctx->pollfds; *pp; pp = &(*pp)->next) {
			if ((*pp)->pfd.fd == fd) {
				struct vusb_pollfd_entry *e = *pp;
				*pp = e->next;
				free(e);
				break;
			}
		}
		if (ctx->removed_cb)
			ctx->removed_cb(fd, ctx->notifier_data);
	}
	if (new_events) {
		struct vusb_pollfd_entry *e = calloc(1, sizeof(*e));
		if (e) {
			e->pfd.fd = fd;
			e->pfd.events = new_events;
			e->next = ctx->pollfds;
			ctx->pollfds = e;
			if (ctx->added_cb)
				ctx->added_cb(fd, new_events, ctx->notifier_data);
		}
	}
}

/* Brings a device socket's registration in line with what it waits for now. */
void events_refresh_device_locked(libusb_device *dev)
{
	short want = wire_poll_events_locked(dev);
	if (want == dev->poll_events)
		return;
	events_fd_changed_locked(dev->ctx, dev->fd, dev->poll_events, want);
	dev->poll_events = want;
	events_wake(dev->ctx); /* a thread in poll() must pick up the new set */
}

int events_init(libusb_context *ctx)
{
	ctx->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (ctx->event_fd < 0)
		return LIBUSB_ERROR_OTHER;
	events_fd_changed_locked(ctx, ctx->event_fd, 0, POLLIN);
	return 0;
}

void events_exit(libusb_context *ctx)
{
	while (ctx->pollfds) {
		struct vusb_pollfd_entry *e = ctx->pollfds;
		ctx->pollfds = e->next;
		free(e);
	}
	if (ctx->event_fd >= 0)
		close(ctx->event_fd);
	ctx->event_fd = -1;
}

static uint64_t min_deadline(uint64_t a, uint64_t b)
{
	if (a == 0)
		return b;
	if (b == 0)
		return a;
	return a < b ? a : b;
}

/*
 * One round: poll every descriptor of the context for at most `timeout_ms` (also bounded by the
 * next transfer or discovery deadline), then read, write, rescan and expire what is due. Runs no
 * user callback, so synchronous calls may use it from anywhere, callbacks included. Only the event
 * handler (`handler`) polls and drains the wake eventfd: a synchronous caller that consumed a wake
 * meant for it would leave completions undelivered.
 */
int events_io_step(libusb_context *ctx, int timeout_ms, bool handler)
{
	struct pollfd stack[64];
	struct pollfd *fds = stack;
	pthread_mutex_lock(&ctx->lock);
	size_t n = 0, cap = 0;
	for (struct vusb_pollfd_entry *e = ctx->pollfds; e; e = e->next)
		cap++;
	if (cap > 64) {
		fds = malloc(cap * sizeof(*fds));
		if (!fds) {
			pthread_mutex_unlock(&ctx->lock);
			return LIBUSB_ERROR_NO_MEM;
		}
	}
	for (struct vusb_pollfd_entry *e = ctx->pollfds; e; e = e->next) {
		if (!handler && e->pfd.fd == ctx->event_fd)
			continue;
		fds[n].fd = e->pfd.fd;
		fds[n].events = e->pfd.events;
		fds[n].revents = 0;
		n++;
	}
	uint64_t now = vusb_now_ms();
	uint64_t deadline = min_deadline(xfer_next_deadline_locked(ctx), device_next_deadline_locked(ctx));
	deadline = min_deadline(deadline, hotplug_next_retry_locked(ctx));
	if (deadline) {
		int64_t until = deadline > now ? (int64_t)(deadline - now) : 0;
		if (timeout_ms < 0 || until < timeout_ms)
			timeout_ms = (int)until;
	}
	pthread_mutex_unlock(&ctx->lock);

	int r = poll(fds, n, timeout_ms);
	if (r < 0 && errno != EINTR) {
		if (fds != stack)
			free(fds);
		return LIBUSB_ERROR_IO;
	}

	pthread_mutex_lock(&ctx->lock);
	for (size_t i = 0; r > 0 && i < n; i++) {
		if (!fds[i].revents)
			continue;
		int fd = fds[i].fd;
		if (fd == ctx->event_fd) {
			drain_wake(ctx);
			continue;
		}
		if (fd == ctx->inotify_fd) {
			hotplug_on_inotify_locked(ctx);
			continue;
		}
		/* The device may have gone while the lock was released; find it by its socket. */
		struct vlist *pos, *tmp;
		vlist_for_each_safe(pos, tmp, &ctx->devices) {
			libusb_device *dev = vcontainer_of(pos, libusb_device, link);
			if (dev->fd != fd)
				continue;
			if (fds[i].revents & POLLOUT)
				wire_flush_locked(dev);
			if (dev->state != DEV_GONE && (fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
				wire_read_locked(dev);
			if (dev->state != DEV_GONE)
				events_refresh_device_locked(dev);
			break;
		}
	}
	now = vusb_now_ms();
	xfer_check_timeouts_locked(ctx, now);
	device_check_discovery_locked(ctx, now);
	hotplug_check_retry_locked(ctx, now);
	device_reap_locked(ctx);
	pthread_mutex_unlock(&ctx->lock);
	if (fds != stack)
		free(fds);
	return 0;
}

__thread int vusb_callback_depth;

/* Runs the callbacks of finished transfers, then hotplug callbacks, with the lock released. */
void events_dispatch(libusb_context *ctx)
{
	/*
	 * Only the transfers finished before this round started are reported in it. A transfer that a
	 * callback resubmits and that stashed device data completes at once is reported in the next
	 * round, as with real hardware, where a resubmitted transfer needs a new completion from the
	 * host controller. This matters: usbmuxd writes to its clients between rounds and ACKs device
	 * data as its clients consume it, so a whole device burst delivered in one round would leave
	 * every ACK of the burst stale and the device waiting for usbmuxd's 30 ms ACK timer.
	 */
	struct vlist batch;
	vlist_init(&batch);
	pthread_mutex_lock(&ctx->lock);
	if (!vlist_empty(&ctx->done)) {
		batch.next = ctx->done.next;
		batch.prev = ctx->done.prev;
		batch.next->prev = &batch;
		batch.prev->next = &batch;
		vlist_init(&ctx->done);
	}
	while (!vlist_empty(&batch)) {
		struct vusb_xfer *x = vcontainer_of(batch.next, struct vusb_xfer, link);
		vlist_del(&x->link);
		x->state = XFER_IDLE;
		struct libusb_transfer *t = xfer_pub(x);
		/* As libusb: the flags are read before the callback, which may free the transfer. */
		uint8_t flags = t->flags;
		pthread_mutex_unlock(&ctx->lock);
		vusb_callback_depth++;
		if (t->callback)
			t->callback(t);
		vusb_callback_depth--;
		if (flags & LIBUSB_TRANSFER_FREE_TRANSFER)
			libusb_free_transfer(t);
		pthread_mutex_lock(&ctx->lock);
	}
	if (!vlist_empty(&ctx->done))
		events_wake(ctx); /* the next round is due at once */
	pthread_mutex_unlock(&ctx->lock);
	hotplug_dispatch(ctx);
	/* Threads blocked in libusb_wait_for_event() re-check their completion flags. */
	pthread_mutex_lock(&ctx->waiters_lock);
	pthread_cond_broadcast(&ctx->waiters_cond);
	pthread_mutex_unlock(&ctx->waiters_lock);
}

static int tv_to_ms(const struct timeval *tv)
{
	if (!tv)
		return -1;
	if (tv->tv_sec < 0 || tv->tv_usec < 0)
		return 0;
	long long ms = (long long)tv->tv_sec * 1000 + (tv->tv_usec + 999) / 1000;
	return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

static int handle_locked(libusb_context *ctx, int timeout_ms)
{
	pthread_mutex_lock(&ctx->lock);
	bool pending = !vlist_empty(&ctx->done) || ctx->hp_head != NULL;
	pthread_mutex_unlock(&ctx->lock);
	if (ctx->interrupted) {
		ctx->interrupted = 0;
		return LIBUSB_ERROR_INTERRUPTED;
	}
	int r = events_io_step(ctx, pending ? 0 : timeout_ms, true);
	events_dispatch(ctx);
	return r < 0 ? r : 0;
}

/* ---- public: locks ---- */

VUSB_API int libusb_try_lock_events(libusb_context *ctx)
{
	ctx = vusb_ctx(ctx);
	if (pthread_mutex_trylock(&ctx->events_lock) != 0)
		return 1;
	ctx->events_owner = pthread_self();
	ctx->events_owned = true;
	return 0;
}

VUSB_API void libusb_lock_events(libusb_context *ctx)
{
	ctx = vusb_ctx(ctx);
	pthread_mutex_lock(&ctx->events_lock);
	ctx->events_owner = pthread_self();
	ctx->events_owned = true;
}

VUSB_API void libusb_unlock_events(libusb_context *ctx)
{
	ctx = vusb_ctx(ctx);
	ctx->events_owned = false;
	pthread_mutex_unlock(&ctx->events_lock);
	pthread_mutex_lock(&ctx->waiters_lock);
	pthread_cond_broadcast(&ctx->waiters_cond);
	pthread_mutex_unlock(&ctx->waiters_lock);
}

VUSB_API int libusb_event_handling_ok(libusb_context *ctx)
{
	(void)ctx;
	return 1; /* no device close ever needs the event handler to step aside */
}

VUSB_API int libusb_event_handler_active(libusb_context *ctx)
{
	ctx = vusb_ctx(ctx);
	return ctx->events_owned ? 1 : 0;
}

VUSB_API void libusb_interrupt_event_handler(libusb_context *ctx)
{
	ctx = vusb_ctx(ctx);
	ctx->interrupted = 1;
	events_wake(ctx);
}

VUSB_API void libusb_lock_event_waiters(libusb_context *ctx)
{
	pthread_mutex_lock(&vusb_ctx(ctx)->waiters_lock);
}

VUSB_API void libusb_unlock_event_waiters(libusb_context *ctx)
{
	pthread_mutex_unlock(&vusb_ctx(ctx)->waiters_lock);
}

VUSB_API int libusb_wait_for_event(libusb_context *ctx, struct timeval *tv)
{
	ctx = vusb_ctx(ctx);
	if (!tv) {
		pthread_cond_wait(&ctx->waiters_cond, &ctx->waiters_lock);
		return 0;
	}
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += tv->tv_sec + (tv->tv_usec / 1000000);
	ts.tv_nsec += (tv->tv_usec % 1000000) * 1000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return pthread_cond_timedwait(&ctx->waiters_cond, &ctx->waiters_lock, &ts) == ETIMEDOUT ? 1 : 0;
}

/* ---- public: handling ---- */

VUSB_API int libusb_handle_events_locked(libusb_context *ctx, struct timeval *tv)
{
	return handle_locked(vusb_ctx(ctx), tv_to_ms(tv));
}

VUSB_API int libusb_handle_events_timeout_completed(libusb_context *ctx, struct timeval *tv, int *completed)
{
	ctx = vusb_ctx(ctx);
	if (!ctx)
		return LIBUSB_ERROR_INVALID_PARAM;
	if (libusb_try_lock_events(ctx) != 0) {
		/* Another thread handles events: wait until it has run a round, as libusb does. */
		libusb_lock_event_waiters(ctx);
		if (!completed || !*completed)
			libusb_wait_for_event(ctx, tv);
		libusb_unlock_event_waiters(ctx);
		return 0;
	}
	int r = 0;
	if (!completed || !*completed)
		r = handle_locked(ctx, tv_to_ms(tv));
	libusb_unlock_events(ctx);
	return r;
}

VUSB_API int libusb_handle_events_timeout(libusb_context *ctx, struct timeval *tv)
{
	return libusb_handle_events_timeout_completed(ctx, tv, NULL);
}

VUSB_API int libusb_handle_events_completed(libusb_context *ctx, int *completed)
{
	struct timeval tv = { .tv_sec = 60, .tv_usec = 0 };
	return libusb_handle_events_timeout_completed(ctx, &tv, completed);
}

VUSB_API int libusb_handle_events(libusb_context *ctx)
{
	struct timeval tv = { .tv_sec = 60, .tv_usec = 0 };
	return libusb_handle_events_timeout_completed(ctx, &tv, NULL);
}

VUSB_API int libusb_pollfds_handle_timeouts(libusb_context *ctx)
{
	(void)ctx;
	return 0;
}

VUSB_API int libusb_get_next_timeout(libusb_context *ctx, struct timeval *tv)
{
	ctx = vusb_ctx(ctx);
	if (!ctx)
		return LIBUSB_ERROR_INVALID_PARAM;
	pthread_mutex_lock(&ctx->lock);
	uint64_t deadline;
	if (!vlist_empty(&ctx->done) || ctx->hp_head)
		deadline = 1; /* already due */
	else
		deadline = min_deadline(min_deadline(xfer_next_deadline_locked(ctx), device_next_deadline_locked(ctx)),
		                        hotplug_next_retry_locked(ctx));
	pthread_mutex_unlock(&ctx->lock);
	if (deadline == 0)
		return 0;
	uint64_t now = vusb_now_ms();
	uint64_t left = deadline > now ? deadline - now : 0;
	tv->tv_sec = (time_t)(left / 1000);
	tv->tv_usec = (suseconds_t)((left % 1000) * 1000);
	return 1;
}

VUSB_API const struct libusb_pollfd **libusb_get_pollfds(libusb_context *ctx)
{
	ctx = vusb_ctx(ctx);
	if (!ctx)
		return NULL;
	pthread_mutex_lock(&ctx->lock);
	size_t n = 0;
	for (struct vusb_pollfd_entry *e = ctx->pollfds; e; e = e->next)
		n++;
	/* One allocation the caller frees with free() or libusb_free_pollfds(), as usbmuxd does; the
	 * entries stay owned by the context. */
	const struct libusb_pollfd **list = malloc((n + 1) * sizeof(*list));
	if (list) {
		size_t i = 0;
		for (struct vusb_pollfd_entry *e = ctx->pollfds; e; e = e->next)
			list[i++] = &e->pfd;
		list[i] = NULL;
	}
	pthread_mutex_unlock(&ctx->lock);
	return list;
}

VUSB_API void libusb_free_pollfds(const struct libusb_pollfd **pollfds)
{
	free((void *)pollfds);
}

VUSB_API void libusb_set_pollfd_notifiers(libusb_context *ctx, libusb_pollfd_added_cb added_cb,
                                          libusb_pollfd_removed_cb removed_cb, void *user_data)
{
	ctx = vusb_ctx(ctx);
	if (!ctx)
		return;
	pthread_mutex_lock(&ctx->lock);
	ctx->added_cb = added_cb;
	ctx->removed_cb = removed_cb;
	ctx->notifier_data = user_data;
	pthread_mutex_unlock(&ctx->lock);
}
