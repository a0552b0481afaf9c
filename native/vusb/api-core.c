/*
 * Library-wide calls: contexts (libusb_init / libusb_exit, the default context), logging and
 * options, version, capabilities and error names.
 *
 * Environment:
 *   MUXWIRE_VUSB_DIR        the bus directory; unset → a working library with no devices
 *   MUXWIRE_VUSB_SETTLE_MS  how long libusb_init and libusb_get_device_list wait for devices that
 *                           are mid-discovery (default 2000), so a program that lists devices
 *                           right after init sees the ones already plugged
 *   LIBUSB_DEBUG            initial log level 0..4, as libusb
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vusb.h"

static pthread_mutex_t default_lock = PTHREAD_MUTEX_INITIALIZER;
static libusb_context *default_ctx;
static int default_log_level = -1; /* set before any context exists: applies to new ones */
static libusb_log_cb global_log_cb;
static bool default_no_discovery;

uint64_t vusb_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

libusb_context *vusb_ctx(libusb_context *ctx)
{
	return ctx ? ctx : default_ctx;
}

void vusb_log(libusb_context *ctx, int level, const char *fmt, ...)
{
	libusb_context *c = vusb_ctx(ctx);
	int threshold = c ? c->log_level : default_log_level;
	if (threshold < 0)
		threshold = LIBUSB_LOG_LEVEL_NONE;
	if (level > threshold)
		return;
	static const char *names[] = { "", "error", "warning", "info", "debug" };
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	int n = snprintf(msg, sizeof(msg), "libusb: %s [vusb] ", names[level >= 1 && level <= 4 ? level : 0]);
	if (n < 0)
		n = 0;
	vsnprintf(msg + n, sizeof(msg) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = strlen(msg);
	msg[len] = '\n';
	msg[len + 1] = '\0';
	libusb_log_cb cb = c && c->log_cb ? c->log_cb : global_log_cb;
	if (cb)
		cb(c, (enum libusb_log_level)level, msg);
	else
		fputs(msg, stderr);
}

static int env_int(const char *name, int fallback)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return fallback;
	char *end;
	long n = strtol(v, &end, 10);
	return (*end == '\0' && n >= 0 && n <= 600000) ? (int)n : fallback;
}

int vusb_settle_ms(void)
{
	return env_int("MUXWIRE_VUSB_SETTLE_MS", 2000);
}

static libusb_context *ctx_new(void)
{
	libusb_context *ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return NULL;
	pthread_mutex_init(&ctx->lock, NULL);
	pthread_mutex_init(&ctx->events_lock, NULL);
	pthread_mutex_init(&ctx->waiters_lock, NULL);
	pthread_cond_init(&ctx->waiters_cond, NULL);
	vlist_init(&ctx->devices);
	vlist_init(&ctx->graveyard);
	vlist_init(&ctx->done);
	vlist_init(&ctx->timed);
	vlist_init(&ctx->hotplug_cbs);
	ctx->refcnt = 1;
	ctx->next_hotplug_handle = 1;
	ctx->next_address = 1;
	ctx->event_fd = ctx->inotify_fd = ctx->watch_fd = -1;
	ctx->log_level = env_int("LIBUSB_DEBUG", default_log_level >= 0 ? default_log_level : LIBUSB_LOG_LEVEL_NONE);
	if (ctx->log_level > LIBUSB_LOG_LEVEL_DEBUG)
		ctx->log_level = LIBUSB_LOG_LEVEL_DEBUG;
	ctx->no_discovery = default_no_discovery;
	const char *dir = getenv("MUXWIRE_VUSB_DIR");
	if (dir && *dir)
		ctx->bus_dir = strdup(dir);
	pthread_mutex_lock(&ctx->lock);
	int r = events_init(ctx);
	if (r == 0)
		r = hotplug_init(ctx);
	pthread_mutex_unlock(&ctx->lock);
	if (r < 0) {
		events_exit(ctx);
		free(ctx->bus_dir);
		free(ctx);
		return NULL;
	}
	VLOG_INFO(ctx, "vusb: bus directory %s", ctx->bus_dir ? ctx->bus_dir : "(none: MUXWIRE_VUSB_DIR unset)");
	hotplug_settle(ctx, vusb_settle_ms());
	return ctx;
}

static void ctx_free(libusb_context *ctx)
{
	pthread_mutex_lock(&ctx->lock);
	/* Devices go without hotplug LEFT: nobody is left to hear it. */
	while (!vlist_empty(&ctx->devices)) {
		libusb_device *dev = vcontainer_of(ctx->devices.next, libusb_device, link);
		dev->arrived_sent = false;
		device_gone_locked(dev, "libusb_exit");
	}
	device_reap_locked(ctx);
	while (!vlist_empty(&ctx->done))
		vlist_del(ctx->done.next); /* the application owns its transfers */
	hotplug_exit(ctx);
	events_exit(ctx);
	pthread_mutex_unlock(&ctx->lock);
	free(ctx->bus_dir);
	pthread_mutex_destroy(&ctx->lock);
	pthread_mutex_destroy(&ctx->events_lock);
	pthread_mutex_destroy(&ctx->waiters_lock);
	pthread_cond_destroy(&ctx->waiters_cond);
	free(ctx);
}

VUSB_API int libusb_init(libusb_context **ctx)
{
	if (ctx) {
		libusb_context *c = ctx_new();
		if (!c)
			return LIBUSB_ERROR_NO_MEM;
		*ctx = c;
		return 0;
	}
	pthread_mutex_lock(&default_lock);
	int r = 0;
	if (default_ctx) {
		default_ctx->refcnt++;
	} else {
		default_ctx = ctx_new();
		if (!default_ctx)
			r = LIBUSB_ERROR_NO_MEM;
	}
	pthread_mutex_unlock(&default_lock);
	return r;
}

VUSB_API void libusb_exit(libusb_context *ctx)
{
	if (ctx && ctx != default_ctx) {
		ctx_free(ctx);
		return;
	}
	pthread_mutex_lock(&default_lock);
	if (default_ctx && --default_ctx->refcnt == 0) {
		ctx_free(default_ctx);
		default_ctx = NULL;
	}
	pthread_mutex_unlock(&default_lock);
}

VUSB_API void libusb_set_debug(libusb_context *ctx, int level)
{
	if (level < LIBUSB_LOG_LEVEL_NONE)
		level = LIBUSB_LOG_LEVEL_NONE;
	if (level > LIBUSB_LOG_LEVEL_DEBUG)
		level = LIBUSB_LOG_LEVEL_DEBUG;
	libusb_context *c = vusb_ctx(ctx);
	if (!ctx)
		default_log_level = level;
	if (c && !getenv("LIBUSB_DEBUG")) /* as libusb: the environment wins */
		c->log_level = level;
}

VUSB_API void libusb_set_log_cb(libusb_context *ctx, libusb_log_cb cb, int mode)
{
	if (mode & LIBUSB_LOG_CB_GLOBAL)
		global_log_cb = cb;
	libusb_context *c = vusb_ctx(ctx);
	if ((mode & LIBUSB_LOG_CB_CONTEXT) && c)
		c->log_cb = cb;
}

VUSB_API int libusb_set_option(libusb_context *ctx, enum libusb_option option, ...)
{
	va_list ap;
	va_start(ap, option);
	int r = LIBUSB_SUCCESS;
	switch (option) {
	case LIBUSB_OPTION_LOG_LEVEL: {
		int level = va_arg(ap, int);
		if (level < LIBUSB_LOG_LEVEL_NONE || level > LIBUSB_LOG_LEVEL_DEBUG)
			r = LIBUSB_ERROR_INVALID_PARAM;
		else
			libusb_set_debug(ctx, level);
		break;
	}
	case LIBUSB_OPTION_USE_USBDK:
		r = LIBUSB_ERROR_NOT_SUPPORTED; /* Windows only, as in libusb */
		break;
	case LIBUSB_OPTION_NO_DEVICE_DISCOVERY:
		/* Applies to contexts created afterwards, as in libusb; an existing one keeps its devices. */
		if (!ctx)
			default_no_discovery = true;
		break;
	case LIBUSB_OPTION_LOG_CB: {
		libusb_log_cb cb = va_arg(ap, libusb_log_cb);
		libusb_set_log_cb(ctx, cb, LIBUSB_LOG_CB_CONTEXT | (ctx ? 0 : LIBUSB_LOG_CB_GLOBAL));
		break;
	}
	default:
		r = LIBUSB_ERROR_INVALID_PARAM;
	}
	va_end(ap);
	return r;
}

static const struct libusb_version version = {
	.major = VUSB_LIBUSB_MAJOR,
	.minor = VUSB_LIBUSB_MINOR,
	.micro = VUSB_LIBUSB_MICRO,
	.nano = 0,
	.rc = "",
	.describe = "muxwire vusb: the libusb-1.0 API over simulated devices (MUXWIRE_VUSB_DIR)",
};

VUSB_API const struct libusb_version *libusb_get_version(void)
{
	return &version;
}

VUSB_API int libusb_has_capability(uint32_t capability)
{
	switch (capability) {
	case LIBUSB_CAP_HAS_CAPABILITY:
	case LIBUSB_CAP_HAS_HOTPLUG:
	case LIBUSB_CAP_SUPPORTS_DETACH_KERNEL_DRIVER: /* the calls exist; no kernel driver ever binds */
		return 1;
	default:
		return 0;
	}
}

VUSB_API const char *libusb_error_name(int error_code)
{
	switch (error_code) {
	case LIBUSB_ERROR_IO: return "LIBUSB_ERROR_IO";
	case LIBUSB_ERROR_INVALID_PARAM: return "LIBUSB_ERROR_INVALID_PARAM";
	case LIBUSB_ERROR_ACCESS: return "LIBUSB_ERROR_ACCESS";
	case LIBUSB_ERROR_NO_DEVICE: return "LIBUSB_ERROR_NO_DEVICE";
	case LIBUSB_ERROR_NOT_FOUND: return "LIBUSB_ERROR_NOT_FOUND";
	case LIBUSB_ERROR_BUSY: return "LIBUSB_ERROR_BUSY";
	case LIBUSB_ERROR_TIMEOUT: return "LIBUSB_ERROR_TIMEOUT";
	case LIBUSB_ERROR_OVERFLOW: return "LIBUSB_ERROR_OVERFLOW";
	case LIBUSB_ERROR_PIPE: return "LIBUSB_ERROR_PIPE";
	case LIBUSB_ERROR_INTERRUPTED: return "LIBUSB_ERROR_INTERRUPTED";
	case LIBUSB_ERROR_NO_MEM: return "LIBUSB_ERROR_NO_MEM";
	case LIBUSB_ERROR_NOT_SUPPORTED: return "LIBUSB_ERROR_NOT_SUPPORTED";
	case LIBUSB_ERROR_OTHER: return "LIBUSB_ERROR_OTHER";
	/* Transfer statuses share the call in libusb; 0 is both. */
	case LIBUSB_SUCCESS: return "LIBUSB_SUCCESS / LIBUSB_TRANSFER_COMPLETED";
	case LIBUSB_TRANSFER_ERROR: return "LIBUSB_TRANSFER_ERROR";
	case LIBUSB_TRANSFER_TIMED_OUT: return "LIBUSB_TRANSFER_TIMED_OUT";
	case LIBUSB_TRANSFER_CANCELLED: return "LIBUSB_TRANSFER_CANCELLED";
	case LIBUSB_TRANSFER_STALL: return "LIBUSB_TRANSFER_STALL";
	case LIBUSB_TRANSFER_NO_DEVICE: return "LIBUSB_TRANSFER_NO_DEVICE";
	case LIBUSB_TRANSFER_OVERFLOW: return "LIBUSB_TRANSFER_OVERFLOW";
	default: return "**UNKNOWN**";
	}
}

VUSB_API const char *libusb_strerror(int errcode)
{
	switch (errcode) {
	case LIBUSB_SUCCESS: return "Success";
	case LIBUSB_ERROR_IO: return "Input/Output Error";
	case LIBUSB_ERROR_INVALID_PARAM: return "Invalid parameter";
	case LIBUSB_ERROR_ACCESS: return "Access denied (insufficient permissions)";
	case LIBUSB_ERROR_NO_DEVICE: return "No such device (it may have been disconnected)";
	case LIBUSB_ERROR_NOT_FOUND: return "Entity not found";
	case LIBUSB_ERROR_BUSY: return "Resource busy";
	case LIBUSB_ERROR_TIMEOUT: return "Operation timed out";
	case LIBUSB_ERROR_OVERFLOW: return "Overflow";
	case LIBUSB_ERROR_PIPE: return "Pipe error";
	case LIBUSB_ERROR_INTERRUPTED: return "System call interrupted (perhaps due to signal)";
	case LIBUSB_ERROR_NO_MEM: return "Insufficient memory";
	case LIBUSB_ERROR_NOT_SUPPORTED: return "Operation not supported or unimplemented on this platform";
	default: return "Other error";
	}
}

VUSB_API int libusb_setlocale(const char *locale)
{
	/* Messages exist in English only. */
	if (!locale || strlen(locale) < 2)
		return LIBUSB_ERROR_INVALID_PARAM;
	return (locale[0] == 'e' || locale[0] == 'E') && (locale[1] == 'n' || locale[1] == 'N')
	           ? LIBUSB_SUCCESS
	           : LIBUSB_ERROR_NOT_FOUND;
}
