/* Fuzz target for D-Bus method argument handling: the daemon's real bus
 * objects (Manager, Tap, Pool, properties) with its core, pools and NBD
 * export run in this process on their own loop, connected to a private
 * dbus-daemon this harness starts; each input is a short program of calls
 * a client sends: which object, which method (real ones, properties,
 * unknown ones), and arguments built from the input's bytes, with the
 * method's own signature or another one. After each input every tap and
 * pool the calls made is destroyed through the core API, and the daemon
 * must still answer ListTaps. A crash, a sanitizer report, a call that is
 * never answered or a daemon left holding objects is a finding.
 *
 * Strings come from a dictionary of telling values (image strings, names,
 * option keys) or from the input, printable and without '/': image paths
 * stay the dictionary's, so no input opens a device, a FIFO or the
 * network (nbd: strings become null:1M).
 *
 * Built as a libFuzzer target (-DFUZZ_LIBFUZZER, clang) or, without
 * clang, with a standalone driver that feeds random programs. */
#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <time.h>
#include <unistd.h>

#include "control/bus/bus.h"
#include "fuzz-daemon.h"

extern char **environ;

#define DEST "org.xenproject.Tapd1"
#define ROOT "/org/xenproject/Tapd1"

static struct event_base *base;
static sd_bus *client;
static pid_t bus_pid;
static char dir[] = "/tmp/fuzz-bus.XXXXXX";
static char img_path[160];

static void die(const char *what, const char *why)
{
	fprintf(stderr, "fuzz-bus: %s: %s\n", what, why ? why : strerror(errno));
	abort();
}

static void stop_bus(void)
{
	if (bus_pid > 0)
		kill(bus_pid, SIGTERM);
}

static void start_dbus_daemon(char *address, size_t len)
{
	char conf[128], sock[128], arg[160];
	char *argv[] = { "dbus-daemon", "--nofork", "--nosyslog", arg, NULL };
	FILE *f;

	snprintf(conf, sizeof(conf), "%s/bus.conf", dir);
	snprintf(sock, sizeof(sock), "%s/bus.sock", dir);
	snprintf(arg, sizeof(arg), "--config-file=%s", conf);
	f = fopen(conf, "w");
	if (!f)
		die(conf, NULL);
	fprintf(f, "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\"\n"
		   " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
		   "<busconfig><type>system</type><listen>unix:path=%s</listen><auth>EXTERNAL</auth>"
		   "<policy context=\"default\"><allow user=\"*\"/><allow own=\"*\"/>"
		   "<allow send_type=\"method_call\"/><allow send_type=\"method_return\"/>"
		   "<allow send_type=\"error\"/><allow send_type=\"signal\"/>"
		   "<allow receive_type=\"method_call\"/><allow receive_type=\"method_return\"/>"
		   "<allow receive_type=\"error\"/><allow receive_type=\"signal\"/></policy>"
		   "</busconfig>\n",
		sock);
	fclose(f);
	if (posix_spawnp(&bus_pid, "dbus-daemon", NULL, NULL, argv, environ))
		die("dbus-daemon", NULL);
	atexit(stop_bus);
	for (int i = 0; i < 500 && access(sock, F_OK); i++)
		usleep(10000);
	if (access(sock, F_OK))
		die("dbus-daemon", "no socket");
	snprintf(address, len, "unix:path=%s", sock);
}

static void setup(void)
{
	static struct daemon_info info = { .version = "fuzz" };
	struct errbuf eb = { "" };
	char address[160], sock[160];
	FILE *f;

	if (!mkdtemp(dir))
		die("mkdtemp", NULL);
	snprintf(img_path, sizeof(img_path), "%s/disk.img", dir);
	f = fopen(img_path, "w");
	if (!f || ftruncate(fileno(f), 1 << 20) < 0)
		die(img_path, NULL);
	fclose(f);
	start_dbus_daemon(address, sizeof(address));
	snprintf(sock, sizeof(sock), "%s/nbd.sock", dir);
	info.state_dir = dir;
	info.nbd_socket = sock;
	base = fuzz_daemon_start(sock, 8u << 20);
	if (bus_start(base, address, &info, &eb) < 0)
		die("bus", eb.msg);
	if (sd_bus_new(&client) < 0 || sd_bus_set_address(client, address) < 0 ||
	    sd_bus_set_bus_client(client, 1) < 0 || sd_bus_start(client) < 0)
		die("client", NULL);
}

/* ---- reading the input ------------------------------------------------ */

struct in {
	const uint8_t *p;
	size_t n;
};

static unsigned byte(struct in *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

static uint64_t u64(struct in *in)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | byte(in);
	return v;
}

static const char *const dict[] = {
	"null:1M", "ram:1M", "ram:0", "null:", "tap:t0", "tap:nosuch", "vhd:/nonexistent.vhd",
	"raw:/nonexistent", "raw:", ":", "", "t0", "t1", "p1", "default", "..", ".", "-",
	"name", "pool", "parent", "read-only", "qos-iops", "qos-bps", "bogus",
	"tap0", "1", "a\"b", "x,y=z:null:1M",
};

/* A string: the dictionary's, the scratch image, or printable bytes of the
 * input without '/'. */
static const char *str(struct in *in, char *buf, size_t size)
{
	unsigned k = byte(in), len;

	if (k < 200)
		return dict[k % (sizeof(dict) / sizeof(dict[0]))];
	if (k < 220) {
		snprintf(buf, size, "%s:%s", k & 1 ? "raw" : "vhd", img_path);
		return buf;
	}
	len = byte(in) % (unsigned)size;
	for (unsigned i = 0; i < len; i++) {
		unsigned c = byte(in);

		buf[i] = (char)(c >= 0x20 && c < 0x7f && c != '/' ? c : 'a' + c % 26);
	}
	buf[len] = '\0';
	if (strncmp(buf, "nbd", 3) == 0)
		return "null:1M";
	return buf;
}

/* Append one value of the basic type t. Sizes stay small: the pools are
 * mlocked memory of this machine. */
static int append_basic(sd_bus_message *m, char t, struct in *in)
{
	char buf[300];
	uint64_t v;

	switch (t) {
	case 's':
		return sd_bus_message_append_basic(m, 's', str(in, buf, sizeof(buf)));
	case 't':
		/* Sizes and rates below 4 MiB, or of a TiB and more: a pool's
		 * memory is populated and locked, so what lies between would
		 * only fill this machine, and what is beyond it must be
		 * refused with the numbers. */
		v = u64(in);
		v = v & 1 ? v | 1ull << 40 : v & ((4u << 20) - 1);
		return sd_bus_message_append_basic(m, 't', &v);
	case 'u': {
		uint32_t u = (uint32_t)u64(in);

		return sd_bus_message_append_basic(m, 'u', &u);
	}
	case 'b': {
		int b = byte(in) & 1;

		return sd_bus_message_append_basic(m, 'b', &b);
	}
	default: {
		int32_t i = (int32_t)u64(in);

		return sd_bus_message_append_basic(m, 'i', &i);
	}
	}
}

/* A variant holding one value of the basic type t. */
static int append_variant(sd_bus_message *m, char t, struct in *in)
{
	char sig[2] = { t, 0 };
	int r = sd_bus_message_open_container(m, 'v', sig);

	if (r >= 0)
		r = append_basic(m, t, in);
	return r < 0 ? r : sd_bus_message_close_container(m);
}

static int append_options(sd_bus_message *m, struct in *in)
{
	static const char types[] = "stbui";
	unsigned n = byte(in) % 5;
	char key[300];
	int r;

	r = sd_bus_message_open_container(m, 'a', "{sv}");
	for (unsigned i = 0; r >= 0 && i < n; i++) {
		char t = types[byte(in) % 5];

		r = sd_bus_message_open_container(m, 'e', "sv");
		if (r >= 0)
			r = sd_bus_message_append_basic(m, 's', str(in, key, sizeof(key)));
		if (r >= 0)
			r = append_variant(m, t, in);
		if (r >= 0)
			r = sd_bus_message_close_container(m);
	}
	return r < 0 ? r : sd_bus_message_close_container(m);
}

/* Arguments for signature sig (our methods use basic types and a{sv}). */
static int append_args(sd_bus_message *m, const char *sig, struct in *in)
{
	int r = 0;

	for (const char *s = sig; r >= 0 && *s; s++) {
		if (strncmp(s, "a{sv}", 5) == 0) {
			r = append_options(m, in);
			s += 4;
		} else {
			r = append_basic(m, *s, in);
		}
	}
	return r;
}

/* ---- one call ---------------------------------------------------------- */

struct method {
	const char *iface, *name, *sig;
};

static const struct method manager_methods[] = {
	{ DEST ".Manager", "CreateTap", "sa{sv}" }, { DEST ".Manager", "ListTaps", "" },
	{ DEST ".Manager", "CreatePool", "st" },    { DEST ".Manager", "ListPools", "" },
	{ DEST ".Manager", "Bogus", "s" },
};
static const struct method tap_methods[] = {
	{ DEST ".Tap", "Destroy", "" },	   { DEST ".Tap", "Pause", "" },
	{ DEST ".Tap", "Unpause", "s" },   { DEST ".Tap", "Stats", "" },
	{ DEST ".Tap", "SetPool", "s" },   { DEST ".Tap", "SetQos", "tt" },
	{ DEST ".Tap", "Attach", "s" },	   { DEST ".Tap", "Detach", "b" },
};
static const struct method pool_methods[] = {
	{ DEST ".Pool", "Resize", "t" },
	{ DEST ".Pool", "Destroy", "" },
	{ DEST ".Pool", "SetQos", "tt" },
};
static const struct method any_methods[] = {
	{ "org.freedesktop.DBus.Properties", "Get", "ss" },
	{ "org.freedesktop.DBus.Properties", "GetAll", "s" },
	{ "org.freedesktop.DBus.Properties", "Set", "ssv" },
	{ "org.freedesktop.DBus.Introspectable", "Introspect", "" },
	{ "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", "" },
};

static bool answered;

static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	(void)m;
	(void)userdata;
	(void)e;
	answered = true;
	return 0;
}

/* Run both ends until the reply is in; false if it never comes. */
static bool pump(void)
{
	for (int i = 0; i < 20000 && !answered; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		while (sd_bus_process(client, NULL) > 0)
			;
		if (!answered)
			sd_bus_wait(client, 200);
	}
	return answered;
}

static void one_call(struct in *in)
{
	static const char *const pools[] = { "default", "p1", "nosuch" };
	unsigned target = byte(in) % 4, which = byte(in);
	const struct method *meth;
	char path[200], buf[300];
	sd_bus_message *m = NULL;
	bool wrong_sig;
	int r;

	switch (target) {
	case 0:
		snprintf(path, sizeof(path), "%s", ROOT);
		meth = &manager_methods[which % 5];
		break;
	case 1:
		snprintf(path, sizeof(path), ROOT "/tap/%u", byte(in) % 4);
		meth = &tap_methods[which % 6];
		break;
	case 2: {
		_cleanup_free_ char *p = NULL;

		if (sd_bus_path_encode(ROOT "/pool", pools[byte(in) % 3], &p) < 0)
			return;
		snprintf(path, sizeof(path), "%s", p);
		meth = &pool_methods[which % 3];
		break;
	}
	default:
		snprintf(path, sizeof(path), ROOT "%s", byte(in) & 1 ? "/tap/0" : "");
		meth = &any_methods[which % 5];
		break;
	}
	if (meth == &any_methods[2] || (which & 0x80))
		wrong_sig = true; /* Set: a variant of any type; or a wrong signature */
	else
		wrong_sig = false;
	r = sd_bus_message_new_method_call(client, &m, DEST, path, meth->iface, meth->name);
	if (r < 0)
		return;
	if (!wrong_sig) {
		r = append_args(m, meth->sig, in);
	} else if (meth == &any_methods[2]) {
		char t = "stbu"[byte(in) % 4];

		r = sd_bus_message_append(m, "ss", byte(in) & 1 ? DEST ".Tap" : DEST ".Pool",
					  str(in, buf, sizeof(buf)));
		if (r >= 0)
			r = append_variant(m, t, in);
	} else {
		static const char *const sigs[] = { "", "s", "t", "ss", "tt", "st", "sa{sv}", "u", "b" };

		r = append_args(m, sigs[byte(in) % 9], in);
	}
	answered = false;
	if (r >= 0 && sd_bus_call_async(client, NULL, m, on_reply, NULL, 5 * 1000000) >= 0 && !pump()) {
		fprintf(stderr, "fuzz-bus: %s.%s on %s was never answered\n", meth->iface, meth->name,
			path);
		abort();
	}
	sd_bus_message_unref(m);
}

/* Destroy what the calls made: stacked taps before their parents, then
 * pools; the daemon must be back where it started. */
static void clean_up(void)
{
	struct errbuf eb = { "" };
	bool progress = true;

	for (int pass = 0; progress && pass < 8; pass++) {
		struct tap *t, *next;

		progress = false;
		for (t = tap_first(); t; t = next) {
			next = tap_next(t);
			if (tap_destroy(t, &eb) == 0)
				progress = true;
		}
	}
	if (tap_first()) {
		fprintf(stderr, "fuzz-bus: a tap cannot be destroyed: %s\n", eb.msg);
		abort();
	}
	for (struct pool *p = pool_first(), *next; p; p = next) {
		next = pool_next(p);
		if (strcmp(pool_name(p), POOL_DEFAULT) != 0 && pool_destroy(p, &eb) < 0) {
			fprintf(stderr, "fuzz-bus: pool %s cannot be destroyed: %s\n", pool_name(p),
				eb.msg);
			abort();
		}
	}
	/* Let the bus send what the changes emit, then check it answers. */
	for (int i = 0; i < 8; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
}

static int one_input(const uint8_t *data, size_t size)
{
	struct in in = { data, size };
	sd_bus_message *m = NULL;

	if (!base)
		setup();
	for (int i = 0; i < 8 && in.n; i++)
		one_call(&in);
	clean_up();
	if (sd_bus_message_new_method_call(client, &m, DEST, ROOT, DEST ".Manager", "ListTaps") < 0)
		die("ListTaps", NULL);
	answered = false;
	if (sd_bus_call_async(client, NULL, m, on_reply, NULL, 5 * 1000000) < 0 || !pump())
		die("ListTaps", "no answer after the input");
	sd_bus_message_unref(m);
	return 0;
}

#ifdef FUZZ_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return one_input(data, size);
}
#else
/* Standalone: `fuzz-bus SECONDS [SEED...]` runs the seeds, then random
 * programs for SECONDS; any finding aborts. */
int main(int argc, char **argv)
{
	unsigned long execs = 0;
	uint8_t buf[512];
	time_t end;

	if (argc < 2) {
		fprintf(stderr, "usage: %s SECONDS [SEED...]\n", argv[0]);
		return 2;
	}
	for (int i = 2; i < argc; i++, execs++) {
		FILE *f = fopen(argv[i], "rb");
		size_t n;

		if (!f)
			die(argv[i], NULL);
		n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		one_input(buf, n);
	}
	srand((unsigned)time(NULL));
	end = time(NULL) + atoi(argv[1]);
	while (time(NULL) < end) {
		size_t n = 1 + (size_t)rand() % sizeof(buf);

		for (size_t i = 0; i < n; i++)
			buf[i] = (uint8_t)rand();
		one_input(buf, n);
		execs++;
	}
	printf("fuzz-bus: %lu inputs, no finding\n", execs);
	return 0;
}
#endif
