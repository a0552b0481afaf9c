/*
 * A libusb program for testing native/vusb: built against the tree's libusb ABI header and run by
 * test/vusb/vusb-library.test.ts with MUXWIRE_VUSB_DIR pointing at a bus directory served by
 * wire-test-device.ts. It prints one line per observation; the test asserts on them.
 *
 *   vusb-probe list                      devices and their parsed descriptors
 *   vusb-probe echo events|pollfds|sync|threads N...
 *                                        send N bytes, read the echo back, report each IN transfer
 *                                        (threads: a second thread handles events while the main
 *                                        thread submits and waits, as a native addon does)
 *   vusb-probe unplug                    wait with IN transfers pending until the device goes
 *   vusb-probe hotplug COUNT             report hotplug events (ENUMERATE) until COUNT were seen
 *   vusb-probe misc                      cancel, timeout, stall, zero-length packet, names
 */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../native/libusb-abi.h"

#define IN_SIZE 16384
#define IN_COUNT 3

static libusb_device_handle *handle;
static uint8_t ep_in, ep_out;
static int iface_number = -1;

static void die(const char *what, int r)
{
	printf("error %s %s\n", what, libusb_error_name(r));
	fflush(stdout);
	exit(1);
}

static void print_config(const struct libusb_config_descriptor *c)
{
	printf("config %u interfaces %u extra %d\n", c->bConfigurationValue, c->bNumInterfaces, c->extra_length);
	for (int i = 0; i < c->bNumInterfaces; i++)
		for (int a = 0; a < c->interface[i].num_altsetting; a++) {
			const struct libusb_interface_descriptor *alt = &c->interface[i].altsetting[a];
			printf("iface %u alt %u class %02x %02x %02x eps %u extra %d\n", alt->bInterfaceNumber,
			       alt->bAlternateSetting, alt->bInterfaceClass, alt->bInterfaceSubClass, alt->bInterfaceProtocol,
			       alt->bNumEndpoints, alt->extra_length);
			for (int e = 0; e < alt->bNumEndpoints; e++)
				printf("ep %02x attr %02x mps %u\n", alt->endpoint[e].bEndpointAddress, alt->endpoint[e].bmAttributes,
				       alt->endpoint[e].wMaxPacketSize);
		}
}

static int cmd_list(void)
{
	libusb_device **list;
	ssize_t n = libusb_get_device_list(NULL, &list);
	if (n < 0)
		die("get_device_list", (int)n);
	printf("count %zd\n", n);
	for (ssize_t i = 0; i < n; i++) {
		struct libusb_device_descriptor d;
		libusb_get_device_descriptor(list[i], &d);
		uint8_t ports[8];
		int np = libusb_get_port_numbers(list[i], ports, 8);
		printf("device bus %u address %u ports %d speed %d vid %04x pid %04x configs %u\n",
		       libusb_get_bus_number(list[i]), libusb_get_device_address(list[i]), np,
		       libusb_get_device_speed(list[i]), d.idVendor, d.idProduct, d.bNumConfigurations);
		struct libusb_config_descriptor *c;
		int r = libusb_get_active_config_descriptor(list[i], &c);
		printf("active %s\n", r == 0 ? "yes" : libusb_error_name(r));
		if (r == 0)
			libusb_free_config_descriptor(c);
		for (uint8_t k = 0; k < d.bNumConfigurations; k++) {
			if (libusb_get_config_descriptor(list[i], k, &c) == 0) {
				print_config(c);
				libusb_free_config_descriptor(c);
			}
		}
	}
	libusb_free_device_list(list, 1);
	return 0;
}

/* Opens the first Apple device and prepares the mux interface the way usbmuxd does. */
static void open_mux(void)
{
	libusb_device **list;
	ssize_t n = libusb_get_device_list(NULL, &list);
	if (n <= 0)
		die("no device", n < 0 ? (int)n : LIBUSB_ERROR_NOT_FOUND);
	libusb_device *dev = list[0];
	struct libusb_device_descriptor d;
	libusb_get_device_descriptor(dev, &d);
	int r = libusb_open(dev, &handle);
	if (r)
		die("open", r);
	int current = -1;
	if ((r = libusb_get_configuration(handle, &current)))
		die("get_configuration", r);
	printf("configuration %d\n", current);
	if (current != d.bNumConfigurations && (r = libusb_set_configuration(handle, d.bNumConfigurations)))
		die("set_configuration", r);
	struct libusb_config_descriptor *c;
	if ((r = libusb_get_active_config_descriptor(dev, &c)))
		die("active config", r);
	for (int i = 0; i < c->bNumInterfaces; i++) {
		const struct libusb_interface_descriptor *alt = &c->interface[i].altsetting[0];
		if (alt->bInterfaceClass == 0xff && alt->bInterfaceSubClass == 0xfe && alt->bInterfaceProtocol == 2 &&
		    alt->bNumEndpoints == 2) {
			iface_number = alt->bInterfaceNumber;
			for (int e = 0; e < 2; e++) {
				if (alt->endpoint[e].bEndpointAddress & 0x80)
					ep_in = alt->endpoint[e].bEndpointAddress;
				else
					ep_out = alt->endpoint[e].bEndpointAddress;
			}
		}
	}
	libusb_free_config_descriptor(c);
	if (iface_number < 0)
		die("no mux interface", LIBUSB_ERROR_NOT_FOUND);
	if ((r = libusb_kernel_driver_active(handle, iface_number)) != 0)
		die("kernel_driver_active", r);
	if ((r = libusb_claim_interface(handle, iface_number)))
		die("claim", r);
	printf("mux interface %d out %02x in %02x mps %d\n", iface_number, ep_out, ep_in,
	       libusb_get_max_packet_size(dev, ep_out));
	unsigned char serial[128];
	r = libusb_get_string_descriptor_ascii(handle, d.iSerialNumber, serial, sizeof(serial));
	printf("serial %s\n", r >= 0 ? (char *)serial : libusb_error_name(r));
	libusb_free_device_list(list, 1);
	fflush(stdout);
}

/* ---- event loops ---- */
static int use_pollfds;
static int use_thread;
static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t state_cond = PTHREAD_COND_INITIALIZER;
static _Atomic int stop_thread;

/* The event thread of "threads" mode: handles events until told to stop, waking whoever waits. */
static void *event_thread(void *arg)
{
	(void)arg;
	while (!stop_thread) {
		struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };
		int r = libusb_handle_events_timeout(NULL, &tv);
		if (r < 0 && r != LIBUSB_ERROR_INTERRUPTED) {
			printf("error handle_events %s\n", libusb_error_name(r));
			exit(1);
		}
		pthread_mutex_lock(&state_lock);
		pthread_cond_broadcast(&state_cond);
		pthread_mutex_unlock(&state_lock);
	}
	return NULL;
}

/* One round of event handling: either libusb_handle_events_timeout, or usbmuxd's way (poll the
 * library's descriptors with its next timeout, then handle events with a zero timeout). */
static void handle_once(int max_ms)
{
	if (use_thread) { /* the event thread runs callbacks: just wait for it to go round */
		pthread_mutex_lock(&state_lock);
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&state_cond, &state_lock, &ts);
		pthread_mutex_unlock(&state_lock);
		(void)max_ms;
		return;
	}
	if (!use_pollfds) {
		struct timeval tv = { .tv_sec = max_ms / 1000, .tv_usec = (max_ms % 1000) * 1000 };
		int r = libusb_handle_events_timeout(NULL, &tv);
		if (r < 0)
			die("handle_events_timeout", r);
		return;
	}
	const struct libusb_pollfd **fds = libusb_get_pollfds(NULL);
	struct pollfd pfd[64];
	int n = 0;
	for (int i = 0; fds[i] && n < 64; i++) {
		pfd[n].fd = fds[i]->fd;
		pfd[n].events = fds[i]->events;
		n++;
	}
	free(fds);
	struct timeval tv;
	int to = max_ms;
	if (libusb_get_next_timeout(NULL, &tv) == 1) {
		int ms = (int)(tv.tv_sec * 1000 + tv.tv_usec / 1000);
		if (ms < to)
			to = ms;
	}
	poll(pfd, (nfds_t)n, to);
	struct timeval zero = { 0, 0 };
	int r = libusb_handle_events_timeout(NULL, &zero);
	if (r < 0)
		die("handle_events_timeout", r);
}

/* ---- echo ---- */
static unsigned char *expect;
static _Atomic size_t expect_len, got_len; /* shared with the event thread in "threads" mode */
static _Atomic int zlp_seen, in_flight;

static void in_cb(struct libusb_transfer *t)
{
	in_flight--;
	if (t->status != LIBUSB_TRANSFER_COMPLETED) {
		printf("in status %s\n", libusb_error_name((int)t->status));
		return;
	}
	printf("in %d\n", t->actual_length);
	if (t->actual_length == 0)
		zlp_seen = 1;
	if (got_len + (size_t)t->actual_length > expect_len ||
	    memcmp(expect + got_len, t->buffer, (size_t)t->actual_length) != 0) {
		printf("mismatch at %zu\n", got_len);
		fflush(stdout);
		exit(1);
	}
	got_len += (size_t)t->actual_length;
	if (libusb_submit_transfer(t) == 0)
		in_flight++;
}

static _Atomic int out_done, out_status;
static void out_cb(struct libusb_transfer *t)
{
	out_done = 1;
	out_status = t->status;
	printf("out %d of %d\n", t->actual_length, t->length);
}

static int cmd_echo(const char *mode, int argc, char **argv)
{
	use_pollfds = strcmp(mode, "pollfds") == 0;
	use_thread = strcmp(mode, "threads") == 0;
	int sync = strcmp(mode, "sync") == 0;
	open_mux();
	pthread_t thread;
	if (use_thread)
		pthread_create(&thread, NULL, event_thread, NULL);
	struct libusb_transfer *ins[IN_COUNT];
	if (!sync) {
		for (int i = 0; i < IN_COUNT; i++) {
			ins[i] = libusb_alloc_transfer(0);
			unsigned char *buf = malloc(IN_SIZE);
			ins[i]->dev_handle = handle;
			ins[i]->endpoint = ep_in;
			ins[i]->type = LIBUSB_TRANSFER_TYPE_BULK;
			ins[i]->buffer = buf;
			ins[i]->length = IN_SIZE;
			ins[i]->callback = in_cb;
			ins[i]->flags = LIBUSB_TRANSFER_FREE_BUFFER;
			int r = libusb_submit_transfer(ins[i]);
			if (r)
				die("submit in", r);
			in_flight++;
		}
	}
	for (int a = 0; a < argc; a++) {
		size_t size = (size_t)strtoul(argv[a], NULL, 10);
		expect = realloc(expect, size ? size : 1);
		for (size_t i = 0; i < size; i++)
			expect[i] = (unsigned char)(i * 7 + size);
		expect_len = size;
		got_len = 0;
		zlp_seen = 0;
		if (sync) {
			int sent = -1;
			int r = libusb_bulk_transfer(handle, ep_out, expect, (int)size, &sent, 5000);
			if (r)
				die("bulk out", r);
			printf("out %d of %zu\n", sent, size);
			unsigned char *buf = malloc(IN_SIZE);
			do {
				int got = -1;
				r = libusb_bulk_transfer(handle, ep_in, buf, IN_SIZE, &got, 5000);
				if (r)
					die("bulk in", r);
				printf("in %d\n", got);
				if (memcmp(expect + got_len, buf, (size_t)got) != 0)
					die("mismatch", LIBUSB_ERROR_OTHER);
				got_len += (size_t)got;
				if (got == 0)
					zlp_seen = 1;
			} while (size == 0 ? !zlp_seen : got_len < size);
			free(buf);
		} else {
			struct libusb_transfer *out = libusb_alloc_transfer(0);
			out->dev_handle = handle;
			out->endpoint = ep_out;
			out->type = LIBUSB_TRANSFER_TYPE_BULK;
			out->buffer = expect;
			out->length = (int)size;
			out->callback = out_cb;
			out_done = 0;
			int r = libusb_submit_transfer(out);
			if (r)
				die("submit out", r);
			while (!out_done || (size == 0 ? !zlp_seen : got_len < size))
				handle_once(1000);
			libusb_free_transfer(out);
		}
		printf("ok %zu\n", size);
		fflush(stdout);
	}
	if (!sync) {
		for (int i = 0; i < IN_COUNT; i++)
			libusb_cancel_transfer(ins[i]);
		while (in_flight > 0)
			handle_once(100);
		for (int i = 0; i < IN_COUNT; i++)
			libusb_free_transfer(ins[i]);
	}
	if (use_thread) {
		/* A synchronous call from this thread while the other one handles events. */
		int config = -1;
		int r = libusb_get_configuration(handle, &config);
		printf("threaded-sync %s %d\n", libusb_error_name(r), config);
		stop_thread = 1;
		libusb_interrupt_event_handler(NULL);
		pthread_join(thread, NULL);
	}
	libusb_release_interface(handle, iface_number);
	libusb_close(handle);
	free(expect);
	return 0;
}

/* ---- unplug ---- */
static int left_seen;
static int left_cb(libusb_context *ctx, libusb_device *dev, libusb_hotplug_event event, void *user_data)
{
	(void)ctx;
	(void)user_data;
	printf("hotplug %s %u-%u\n", event == LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT ? "left" : "arrived",
	       libusb_get_bus_number(dev), libusb_get_device_address(dev));
	if (event == LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT)
		left_seen = 1;
	return 0;
}

/* As usbmuxd's rx_callback: data is consumed and the transfer resubmitted at once. A resubmission
 * the library accepts must call back later, or a program waiting for every transfer hangs. */
static void unplug_in_cb(struct libusb_transfer *t)
{
	if (t->status == LIBUSB_TRANSFER_COMPLETED) {
		printf("in data %d\n", t->actual_length);
		int r = libusb_submit_transfer(t);
		if (r == 0)
			return;
		printf("resubmit %s\n", libusb_error_name(r));
		in_flight--;
		return;
	}
	in_flight--;
	printf("in status %s\n", libusb_error_name((int)t->status));
}

static int fds_added, fds_removed;
static void fd_added(int fd, short events, void *user_data)
{
	(void)fd;
	(void)events;
	(void)user_data;
	fds_added++;
}
static void fd_removed(int fd, void *user_data)
{
	(void)fd;
	(void)user_data;
	fds_removed++;
}

static int cmd_unplug(void)
{
	use_pollfds = 1;
	libusb_set_pollfd_notifiers(NULL, fd_added, fd_removed, NULL);
	open_mux();
	libusb_hotplug_callback_handle h;
	int r = libusb_hotplug_register_callback(NULL, LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT, 0, LIBUSB_HOTPLUG_MATCH_ANY,
	                                         LIBUSB_HOTPLUG_MATCH_ANY, LIBUSB_HOTPLUG_MATCH_ANY, left_cb, NULL, &h);
	if (r)
		die("hotplug register", r);
	struct libusb_transfer *ins[IN_COUNT];
	for (int i = 0; i < IN_COUNT; i++) {
		ins[i] = libusb_alloc_transfer(0);
		ins[i]->dev_handle = handle;
		ins[i]->endpoint = ep_in;
		ins[i]->type = LIBUSB_TRANSFER_TYPE_BULK;
		ins[i]->buffer = malloc(IN_SIZE);
		ins[i]->length = IN_SIZE;
		ins[i]->callback = unplug_in_cb;
		ins[i]->flags = LIBUSB_TRANSFER_FREE_BUFFER;
		if ((r = libusb_submit_transfer(ins[i])))
			die("submit in", r);
		in_flight++;
	}
	printf("ready\n");
	fflush(stdout);
	while (in_flight > 0 || !left_seen)
		handle_once(1000);
	r = libusb_submit_transfer(ins[0]);
	printf("submit %s\n", libusb_error_name(r));
	unsigned char b;
	r = libusb_control_transfer(handle, 0x80, LIBUSB_REQUEST_GET_CONFIGURATION, 0, 0, &b, 1, 1000);
	printf("control %s\n", libusb_error_name(r));
	printf("release %s\n", libusb_error_name(libusb_release_interface(handle, iface_number)));
	for (int i = 0; i < IN_COUNT; i++)
		libusb_free_transfer(ins[i]);
	libusb_hotplug_deregister_callback(NULL, h);
	libusb_close(handle);
	libusb_device **list;
	printf("count %zd\n", libusb_get_device_list(NULL, &list));
	libusb_free_device_list(list, 1);
	const struct libusb_pollfd **fds = libusb_get_pollfds(NULL);
	int n = 0;
	while (fds[n])
		n++;
	libusb_free_pollfds(fds);
	/* The device socket left the poll set, and the application heard of it. */
	printf("pollfds-after %d removed %s\n", n, fds_removed > 0 ? "yes" : "no");
	return 0;
}

/* ---- hotplug ---- */
static int events_seen;
static int hp_cb(libusb_context *ctx, libusb_device *dev, libusb_hotplug_event event, void *user_data)
{
	(void)ctx;
	(void)user_data;
	struct libusb_device_descriptor d;
	libusb_get_device_descriptor(dev, &d);
	printf("hotplug %s %u-%u %04x:%04x\n", event == LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT ? "left" : "arrived",
	       libusb_get_bus_number(dev), libusb_get_device_address(dev), d.idVendor, d.idProduct);
	fflush(stdout);
	events_seen++;
	return 0;
}

static int cmd_hotplug(int count)
{
	use_pollfds = 1;
	libusb_hotplug_callback_handle h;
	/* usbmuxd's registration: Apple devices, any product, device class 0. */
	int r = libusb_hotplug_register_callback(NULL, LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED | LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT,
	                                         LIBUSB_HOTPLUG_ENUMERATE, 0x05ac, LIBUSB_HOTPLUG_MATCH_ANY, 0, hp_cb, NULL, &h);
	if (r)
		die("hotplug register", r);
	printf("registered\n");
	fflush(stdout);
	while (events_seen < count)
		handle_once(1000);
	libusb_hotplug_deregister_callback(NULL, h);
	return 0;
}

/* ---- misc ---- */
static int misc_done;
static void misc_cb(struct libusb_transfer *t)
{
	misc_done = 1;
	printf("%s %s %d\n", (const char *)t->user_data, libusb_error_name((int)t->status), t->actual_length);
}

static void run_one(struct libusb_transfer *t, const char *label)
{
	t->user_data = (void *)label;
	t->callback = misc_cb;
	misc_done = 0;
	int r = libusb_submit_transfer(t);
	if (r)
		die(label, r);
	while (!misc_done)
		handle_once(1000);
}

static int cmd_misc(void)
{
	const struct libusb_version *v = libusb_get_version();
	printf("version %u.%u.%u\n", v->major, v->minor, v->micro);
	printf("hotplug-capable %d\n", libusb_has_capability(LIBUSB_CAP_HAS_HOTPLUG));
	printf("name %s\n", libusb_error_name(LIBUSB_ERROR_NO_DEVICE));
	printf("option %s\n", libusb_error_name(libusb_set_option(NULL, LIBUSB_OPTION_LOG_LEVEL, LIBUSB_LOG_LEVEL_NONE)));
	open_mux();
	struct timeval tv = { 0, 0 };
	printf("next-timeout-pending %d\n", libusb_get_next_timeout(NULL, &tv)); /* the ARRIVED event is due */
	libusb_handle_events_timeout(NULL, &tv);
	printf("next-timeout %d\n", libusb_get_next_timeout(NULL, &tv));
	const struct libusb_pollfd **fds = libusb_get_pollfds(NULL);
	int nfds = 0;
	while (fds[nfds])
		nfds++;
	libusb_free_pollfds(fds);
	printf("pollfds %d\n", nfds); /* wake eventfd, inotify, the device socket */
	printf("pollfds-handle-timeouts %d\n", libusb_pollfds_handle_timeouts(NULL));
	unsigned char *buf = malloc(IN_SIZE);
	struct libusb_transfer *t = libusb_alloc_transfer(0);
	t->dev_handle = handle;
	t->type = LIBUSB_TRANSFER_TYPE_BULK;
	t->buffer = buf;

	/* cancel a pending IN */
	t->endpoint = ep_in;
	t->length = IN_SIZE;
	t->timeout = 0;
	t->user_data = "cancel";
	t->callback = misc_cb;
	misc_done = 0;
	if (libusb_submit_transfer(t))
		die("submit", -1);
	printf("resubmit %s\n", libusb_error_name(libusb_submit_transfer(t)));
	printf("cancel-call %s\n", libusb_error_name(libusb_cancel_transfer(t)));
	while (!misc_done)
		handle_once(1000);
	printf("cancel-again %s\n", libusb_error_name(libusb_cancel_transfer(t)));

	/* an IN that times out: the device stays silent */
	t->timeout = 150;
	run_one(t, "timeout");
	t->timeout = 0;

	/* ADD_ZERO_PACKET on a multiple of wMaxPacketSize: the echo of the ZLP is an empty write */
	int mps = libusb_get_max_packet_size(libusb_get_device(handle), ep_out);
	for (int i = 0; i < mps; i++)
		buf[i] = (unsigned char)i;
	t->endpoint = ep_out;
	t->length = mps;
	t->flags = LIBUSB_TRANSFER_ADD_ZERO_PACKET;
	run_one(t, "out-zlp");
	t->flags = 0;
	t->endpoint = ep_in;
	t->length = IN_SIZE;
	run_one(t, "in-after-zlp");
	run_one(t, "in-zlp");

	/* SHORT_NOT_OK: a 3-byte write into a 16 KiB transfer is an error */
	t->endpoint = ep_out;
	t->length = 3;
	run_one(t, "out-short");
	t->endpoint = ep_in;
	t->length = IN_SIZE;
	t->flags = LIBUSB_TRANSFER_SHORT_NOT_OK;
	run_one(t, "in-short-not-ok");
	t->flags = 0;

	/* an unknown vendor request stalls */
	unsigned char small[4];
	printf("stall %s\n", libusb_error_name(libusb_control_transfer(handle, 0xc0, 0x77, 0, 0, small, 4, 1000)));
	/* an asynchronous control transfer reads the LANGID table, as usbmuxd does */
	unsigned char *cbuf = malloc(8 + 255);
	memcpy(cbuf, (unsigned char[]){ 0x80, 0x06, 0x00, 0x03, 0, 0, 255, 0 }, 8);
	t->type = LIBUSB_TRANSFER_TYPE_CONTROL;
	t->endpoint = 0;
	t->buffer = cbuf;
	t->length = 8 + 255;
	t->timeout = 1000;
	run_one(t, "control-langid");
	printf("langid %02x%02x\n", cbuf[8 + 3], cbuf[8 + 2]);
	free(cbuf);
	libusb_free_transfer(t);
	free(buf);
	libusb_release_interface(handle, iface_number);
	libusb_close(handle);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2)
		return 2;
	int r = libusb_init(NULL);
	if (r)
		die("init", r);
	int rc = 2;
	if (strcmp(argv[1], "list") == 0)
		rc = cmd_list();
	else if (strcmp(argv[1], "echo") == 0 && argc >= 3)
		rc = cmd_echo(argv[2], argc - 3, argv + 3);
	else if (strcmp(argv[1], "unplug") == 0)
		rc = cmd_unplug();
	else if (strcmp(argv[1], "hotplug") == 0 && argc >= 3)
		rc = cmd_hotplug(atoi(argv[2]));
	else if (strcmp(argv[1], "misc") == 0)
		rc = cmd_misc();
	libusb_exit(NULL);
	printf("exit %d\n", rc);
	return rc;
}
