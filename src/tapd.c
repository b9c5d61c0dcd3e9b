/* tapd: options, privileges, the loop, and the start and stop sequences.
 * Start: protect the process (I/O flusher, locked memory) before any thread
 * exists, build pools, taps, the NBD export, the bus and the FUSE export,
 * then tell systemd READY. Stop: refuse new work, drain the NBD export,
 * detach the kernel devices, unmount, flush, close, exit 0. */
#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "lib/aio.h"
#include "lib/config.h"
#include "control/bus/bus.h"
#include "drivers/image.h"
#include "drivers/nbd/nbd.h"
#include "drivers/path.h"
#include "lib/log.h"
#include "exports/device.h"
#include "exports/fuse/fuse.h"
#include "exports/ublk/ublk.h"
#include "exports/nbd/kernel.h"
#include "exports/nbd/server.h"
#include "exports/nbd/tls.h"
#include "pools/pool.h"
#include "core/tap.h"
#include "lib/util.h"
#include "lib/worker.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#define PR_GET_IO_FLUSHER 58
#endif
#ifndef MCL_ONFAULT
#define MCL_ONFAULT 4
#endif
#ifndef TAPD_VERSION
#define TAPD_VERSION "0.0.0"
#endif

#if defined(__SANITIZE_ADDRESS__)
#define TAPD_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TAPD_SANITIZED 1
#endif
#endif

/* A stop that takes longer than this (a client that never reads its
 * replies, storage that never answers) ends with exit status 1. */
#define STOP_TIMEOUT_SEC 30

/* Read at start if it exists (--config names another, which must). */
#define TAPD_CONFIG_DEFAULT "/etc/tapd/tapd.conf"

struct options {
	bool foreground;
	const char *state_dir;
	const char *nbd_socket;
	const char *bus;
	uint64_t default_pool_size;
	bool strict;
	bool no_mlock;
	const char *nbd_listen[8]; /* --nbd-listen HOST:PORT, in order */
	unsigned n_nbd_listen;
	struct nbd_limits nbd; /* per-peer default: a quarter of max_clients */
	unsigned nbd_kernel_conns; /* --nbd-kernel-connections */
	bool nbd_per_peer_set;
	struct nbd_tls_config tls;
	uint64_t poll_us;
	const char *config;
};

static struct {
	struct event_base *base;
	struct event *sig_term, *sig_int, *tick, *stop_timer;
	struct daemon_info info;
	bool stopping;
	int exit_code;
	uint64_t watchdog_usec;
	unsigned last_count;
} d = { .last_count = (unsigned)-1 };

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: tapd [OPTIONS]\n"
		"Serve userspace block devices (taps) over NBD, as files in STATE_DIR/fuse and\n"
		"as kernel block devices, controlled over D-Bus.\n\n"
		"  -f, --foreground            stay in the foreground (the default; for systemd)\n"
		"      --state-dir DIR         state and sockets (default /run/tapd)\n"
		"      --nbd-socket PATH       NBD unix socket (default STATE_DIR/nbd.sock)\n"
		"      --nbd-listen HOST:PORT  also serve NBD on TCP (repeatable; [IPV6]:PORT)\n"
		"      --nbd-max-client-bytes SZ  READ/WRITE bytes in flight per client (32M)\n"
		"      --nbd-max-connections N NBD connections per tap (default 16)\n"
		"      --nbd-kernel-connections N  connections of each /dev/nbdN (default 2)\n"
		"      --nbd-max-clients N     NBD connections in all (default: from\n"
		"                              RLIMIT_NOFILE, at most 1024)\n"
		"      --nbd-max-clients-per-peer N  per client uid or address (default 1/4)\n"
		"      --nbd-handshake-timeout S  seconds from connect to transmission (10)\n"
		"      --nbd-write-timeout S   drop a client leaving replies unread this long\n"
		"                              (default 60, 0 never)\n"
		"      --tls off|on|require    TLS on the NBD export (default off)\n"
		"      --tls-certs DIR         X.509: server-cert.pem, server-key.pem, ca-cert.pem\n"
		"      --tls-psk FILE          PSK: username:hexkey lines (psktool)\n"
		"      --tls-verify-peer       X.509 clients need a certificate signed by the CA\n"
		"      --bus BUS               system, session or a D-Bus address (default system)\n"
		"      --log-level LEVEL       err, warning, notice, info or debug (default info)\n"
		"      --default-pool-size SZ  size of the default pool (default 64M)\n"
		"      --strict                fail if the I/O flusher flag or memory locking fails\n"
		"      --no-mlock              do not lock memory (for tests under sanitizers)\n"
		"      --image-dir DIR         images may be opened only beneath DIR (repeatable;\n"
		"                              default: anywhere, see tapd(8))\n"
		"      --device-allow PATTERN  block devices that may be images (repeatable, glob)\n"
		"      --config FILE           image-dir = DIR, device-allow = PATTERN lines\n"
		"                              (default " TAPD_CONFIG_DEFAULT " if it exists)\n"
		"      --open-timeout S        fail CreateTap/Unpause whose image takes longer\n"
		"                              than S seconds to open (default 30)\n"
		"      --poll-us N             poll for AIO completions up to N us before\n"
		"                              sleeping while disk I/O is in flight (default 0)\n"
		"  -h, --help                  this help\n"
		"  -V, --version               print the version\n");
}

/* A decimal count in [min, max]. */
static int parse_count(const char *s, unsigned long min, unsigned long max, unsigned long *n)
{
	char *end;

	errno = 0;
	*n = strtoul(s, &end, 10);
	if (!*s || *end || errno || *s == '-' || *n < min || *n > max)
		return -EINVAL;
	return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
	enum {
		O_STATE = 256,
		O_NBD,
		O_BUS,
		O_LOG,
		O_POOL,
		O_STRICT,
		O_NOMLOCK,
		O_NBD_LISTEN,
		O_NBD_MAX_BYTES,
		O_NBD_MAX_CONNS,
		O_NBD_MAX_CLIENTS,
		O_NBD_MAX_PER_PEER,
		O_NBD_HS_TIMEOUT,
		O_NBD_WRITE_TIMEOUT,
		O_POLL,
		O_TLS,
		O_TLS_CERTS,
		O_TLS_PSK,
		O_TLS_VERIFY,
		O_IMAGE_DIR,
		O_DEVICE_ALLOW,
		O_CONFIG,
		O_OPEN_TIMEOUT,
		O_NBD_KERNEL_CONNS,
	};
	static const struct option longopts[] = {
		{ "foreground", no_argument, NULL, 'f' },
		{ "state-dir", required_argument, NULL, O_STATE },
		{ "nbd-socket", required_argument, NULL, O_NBD },
		{ "bus", required_argument, NULL, O_BUS },
		{ "log-level", required_argument, NULL, O_LOG },
		{ "default-pool-size", required_argument, NULL, O_POOL },
		{ "strict", no_argument, NULL, O_STRICT },
		{ "no-mlock", no_argument, NULL, O_NOMLOCK },
		{ "nbd-listen", required_argument, NULL, O_NBD_LISTEN },
		{ "nbd-max-client-bytes", required_argument, NULL, O_NBD_MAX_BYTES },
		{ "nbd-max-connections", required_argument, NULL, O_NBD_MAX_CONNS },
		{ "nbd-max-clients", required_argument, NULL, O_NBD_MAX_CLIENTS },
		{ "nbd-kernel-connections", required_argument, NULL, O_NBD_KERNEL_CONNS },
		{ "nbd-max-clients-per-peer", required_argument, NULL, O_NBD_MAX_PER_PEER },
		{ "nbd-handshake-timeout", required_argument, NULL, O_NBD_HS_TIMEOUT },
		{ "nbd-write-timeout", required_argument, NULL, O_NBD_WRITE_TIMEOUT },
		{ "poll-us", required_argument, NULL, O_POLL },
		{ "tls", required_argument, NULL, O_TLS },
		{ "tls-certs", required_argument, NULL, O_TLS_CERTS },
		{ "tls-psk", required_argument, NULL, O_TLS_PSK },
		{ "tls-verify-peer", no_argument, NULL, O_TLS_VERIFY },
		{ "image-dir", required_argument, NULL, O_IMAGE_DIR },
		{ "device-allow", required_argument, NULL, O_DEVICE_ALLOW },
		{ "config", required_argument, NULL, O_CONFIG },
		{ "open-timeout", required_argument, NULL, O_OPEN_TIMEOUT },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	int c, level;
	unsigned long n;
	char *end;

	while ((c = getopt_long(argc, argv, "fhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			o->foreground = true;
			break;
		case O_STATE:
			o->state_dir = optarg;
			break;
		case O_NBD:
			o->nbd_socket = optarg;
			break;
		case O_BUS:
			o->bus = optarg;
			break;
		case O_LOG:
			level = log_parse_level(optarg);
			if (level < 0) {
				fprintf(stderr, "tapd: bad log level '%s'\n", optarg);
				return 2;
			}
			log_set_level(level);
			break;
		case O_POOL:
			if (parse_size(optarg, &o->default_pool_size) < 0 ||
			    o->default_pool_size < POOL_PAGE) {
				fprintf(stderr, "tapd: bad pool size '%s' (e.g. 64M)\n", optarg);
				return 2;
			}
			break;
		case O_STRICT:
			o->strict = true;
			break;
		case O_NOMLOCK:
			o->no_mlock = true;
			break;
		case O_NBD_LISTEN:
			if (o->n_nbd_listen == ARRAY_SIZE(o->nbd_listen)) {
				fprintf(stderr, "tapd: at most %zu --nbd-listen\n",
					ARRAY_SIZE(o->nbd_listen));
				return 2;
			}
			o->nbd_listen[o->n_nbd_listen++] = optarg;
			break;
		case O_NBD_MAX_BYTES:
			if (parse_size(optarg, &o->nbd.max_client_bytes) < 0 ||
			    o->nbd.max_client_bytes == 0) {
				fprintf(stderr, "tapd: bad byte limit '%s' (e.g. 32M)\n", optarg);
				return 2;
			}
			break;
		case O_POLL:
			errno = 0;
			n = strtoul(optarg, &end, 10);
			if (!*optarg || *end || errno || n > 1000000) {
				fprintf(stderr, "tapd: bad poll time '%s' (0-1000000 us)\n", optarg);
				return 2;
			}
			o->poll_us = n;
			break;
		case O_NBD_MAX_CONNS:
			errno = 0;
			n = strtoul(optarg, &end, 10);
			if (!*optarg || *end || errno || n == 0 || n > 65535) {
				fprintf(stderr, "tapd: bad connection limit '%s' (1-65535)\n",
					optarg);
				return 2;
			}
			o->nbd.max_connections = (unsigned)n;
			break;
		case O_NBD_KERNEL_CONNS:
			if (parse_count(optarg, 1, KNBD_CONNS_MAX, &n) < 0) {
				fprintf(stderr, "tapd: bad connection count '%s' (1-%u)\n", optarg,
					KNBD_CONNS_MAX);
				return 2;
			}
			o->nbd_kernel_conns = (unsigned)n;
			break;
		case O_NBD_MAX_CLIENTS:
		case O_NBD_MAX_PER_PEER:
			if (parse_count(optarg, 1, 65535, &n) < 0) {
				fprintf(stderr, "tapd: bad client limit '%s' (1-65535)\n", optarg);
				return 2;
			}
			if (c == O_NBD_MAX_CLIENTS) {
				o->nbd.max_clients = (unsigned)n;
			} else {
				o->nbd.max_clients_per_peer = (unsigned)n;
				o->nbd_per_peer_set = true;
			}
			break;
		case O_NBD_HS_TIMEOUT:
			if (parse_count(optarg, 1, 3600, &n) < 0) {
				fprintf(stderr, "tapd: bad handshake timeout '%s' (1-3600 s)\n",
					optarg);
				return 2;
			}
			o->nbd.handshake_timeout = (unsigned)n;
			break;
		case O_OPEN_TIMEOUT:
			if (parse_count(optarg, 1, 3600, &n) < 0) {
				fprintf(stderr, "tapd: bad open timeout '%s' (1-3600 s)\n", optarg);
				return 2;
			}
			tap_set_open_timeout((unsigned)n);
			break;
		case O_NBD_WRITE_TIMEOUT:
			if (parse_count(optarg, 0, 86400, &n) < 0) {
				fprintf(stderr, "tapd: bad write timeout '%s' (0-86400 s)\n", optarg);
				return 2;
			}
			o->nbd.write_timeout = (unsigned)n;
			break;
		case O_TLS:
			level = nbd_tls_parse_mode(optarg);
			if (level < 0) {
				fprintf(stderr, "tapd: bad --tls '%s' (off, on or require)\n",
					optarg);
				return 2;
			}
			o->tls.mode = (enum nbd_tls_mode)level;
			break;
		case O_TLS_CERTS:
			o->tls.certs_dir = optarg;
			break;
		case O_TLS_PSK:
			o->tls.psk_file = optarg;
			break;
		case O_TLS_VERIFY:
			o->tls.verify_peer = true;
			break;
		case O_IMAGE_DIR:
		case O_DEVICE_ALLOW: {
			struct errbuf eb = { "" };
			int r = c == O_IMAGE_DIR ? image_path_allow_dir(optarg, &eb)
						 : image_path_allow_device(optarg, &eb);

			if (r < 0) {
				fprintf(stderr, "tapd: %s\n", eb.msg[0] ? eb.msg : strerror(-r));
				return 2;
			}
			break;
		}
		case O_CONFIG:
			o->config = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("tapd %s\n", TAPD_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "tapd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (!o->nbd_per_peer_set)
		o->nbd.max_clients_per_peer = MAX(o->nbd.max_clients / 4, 1u);
	return -1;
}

/* One setting of the configuration file; unknown keys are refused, so a
 * misspelt image-dir does not silently leave images unrestricted. */
static int config_setting(const char *key, const char *value, void *arg, struct errbuf *eb)
{
	(void)arg;
	if (strcmp(key, "image-dir") == 0)
		return image_path_allow_dir(value, eb);
	if (strcmp(key, "device-allow") == 0)
		return image_path_allow_device(value, eb);
	err_set(eb, "unknown setting '%s' (image-dir, device-allow)", key);
	return -EINVAL;
}

/* The I/O flusher flag exempts us from dirty-page throttling and makes our
 * allocations avoid recursing into I/O: without it, a tap whose consumer
 * lives on this host (loop, FUSE, kernel NBD) can wedge the daemon behind the
 * very pages it is meant to clean. */
static int protect_flusher(bool strict)
{
	int ret = prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);

	if (ret < 0) {
		int e = errno;

		log_msg(strict ? LOG_ERR : LOG_WARNING,
			"PR_SET_IO_FLUSHER failed: %s%s. Without it, writes to taps consumed on "
			"this host (loop, FUSE, kernel NBD) can deadlock in dirty-page throttling "
			"under memory pressure.",
			strerror(e), e == EPERM ? " (tapd lacks CAP_SYS_RESOURCE)" : "");
		if (strict)
			return -e;
	}
	d.info.io_flusher = prctl(PR_GET_IO_FLUSHER, 0, 0, 0, 0) == 1;
	return 0;
}

/* Locked memory keeps the daemon's own pages (code, pools, metadata) out of
 * swap, so serving I/O never waits for I/O. MCL_ONFAULT locks pages as they
 * are touched rather than populating every mapping now: a sparse ram: disk
 * then costs only what is written to it. */
static int protect_memory(bool strict, bool no_mlock)
{
	if (no_mlock) {
		log_notice("memory locking disabled by --no-mlock");
		return 0;
	}
#ifdef TAPD_SANITIZED
	(void)strict;
	log_notice("memory locking skipped: sanitizer builds map terabytes of shadow memory");
	return 0;
#else
	if (mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) < 0) {
		int e = errno;

		log_msg(strict ? LOG_ERR : LOG_WARNING,
			"mlockall failed: %s. The daemon's memory may be swapped out and I/O "
			"may then stall behind swap-in (raise LimitMEMLOCK or grant CAP_IPC_LOCK).",
			strerror(e));
		if (strict)
			return -e;
		return 0;
	}
	d.info.memory_locked = true;
	return 0;
#endif
}

static void update_status(void)
{
	unsigned n = tap_count();

	if (n == d.last_count)
		return;
	d.last_count = n;
	sd_notifyf(0, "STATUS=Serving %u tap%s", n, n == 1 ? "" : "s");
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	if (d.watchdog_usec)
		sd_notify(0, "WATCHDOG=1");
	if (!d.stopping)
		update_status();
}

static void stop_done(void *arg)
{
	(void)arg;
	log_info("all taps closed; exiting");
	/* Pools still being made: answer their callers while the bus is up. */
	pool_stop();
	bus_stop();
	event_base_loopbreak(d.base);
}

static void stop_fuse_done(void *arg)
{
	(void)arg;
	tap_shutdown_all(stop_done, NULL);
}

/* The consumers first: kernel devices are detached (with force: their
 * users' I/O fails) while the FUSE export still serves their I/O, then
 * the FUSE mount goes, then the taps. */
static void stop_devices_done(void *arg)
{
	(void)arg;
	fuse_export_stop(stop_fuse_done, NULL);
}

static void stop_exports_done(void *arg)
{
	(void)arg;
	device_shutdown_all(stop_devices_done, NULL);
}

static void on_stop_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	log_err("stop did not finish within %d s; exiting with in-flight work abandoned",
		STOP_TIMEOUT_SEC);
	d.exit_code = 1;
	event_base_loopbreak(d.base);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct timeval tv = { STOP_TIMEOUT_SEC, 0 };

	(void)what;
	(void)arg;
	if (d.stopping) {
		log_notice("already stopping (signal %d)", (int)sig);
		return;
	}
	d.stopping = true;
	log_info("%s received: stopping", strsignal((int)sig));
	sd_notify(0, "STOPPING=1\nSTATUS=Stopping: draining in-flight requests");
	d.stop_timer = evtimer_new(d.base, on_stop_timeout, NULL);
	evtimer_add(d.stop_timer, &tv);
	tap_stop_begin();
	nbd_server_shutdown(stop_exports_done, NULL);
}

static int make_state_dir(const char *dir)
{
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		log_err("cannot create state directory %s: %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The event loop. With poll_us, while disk I/O is in flight the loop
 * spins (passes that do not sleep) for up to poll_us after the last
 * completion before it sleeps: a completion or a request is then picked up
 * without the wake-up of a sleeping thread, which on a virtual machine
 * costs more than a fast device's own latency (QEMU's poll-max-ns does the
 * same). It spends CPU only while AIO is in flight. */
static void loop_run(struct event_base *base, uint64_t poll_us)
{
	if (!poll_us) {
		event_base_dispatch(base);
		return;
	}
	while (!event_base_got_break(base)) {
		uint64_t start = mono_us();
		unsigned long seen = aio_completed();

		while (aio_inflight() && mono_us() - start < poll_us &&
		       !event_base_got_break(base)) {
			event_base_loop(base, EVLOOP_NONBLOCK);
			if (aio_completed() != seen) {
				seen = aio_completed();
				start = mono_us();
			}
		}
		/* A pass above may have broken the loop (the stop is done):
		 * the next event_base_loop would forget that. */
		if (event_base_got_break(base) || event_base_loop(base, EVLOOP_ONCE) != 0)
			break;
	}
}

int main(int argc, char **argv)
{
	struct options o = {
		.state_dir = "/run/tapd",
		.bus = "system",
		.default_pool_size = 64u << 20,
		.nbd_kernel_conns = KNBD_CONNS_DEFAULT,
	};
	struct errbuf eb = { { 0 } };
	char sock_buf[4096];
	struct timeval one_sec = { 1, 0 };
	struct nbd_limits nbd_def;
	struct rlimit rl;
	struct pool *def;
	int ret;

	/* Every fd the hard limit allows (systemd's advice: the soft limit
	 * is low only for programs that use select(), and we do not). The
	 * NBD client limit is sized from the result. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	nbd_server_default_limits(&nbd_def);
	o.nbd = nbd_def;
	ret = parse_options(argc, argv, &o);
	if (ret >= 0) {
		image_path_policy_free();
		return ret;
	}
	ret = config_read(o.config ? o.config : TAPD_CONFIG_DEFAULT, o.config != NULL,
			  config_setting, NULL, &eb);
	if (ret < 0) {
		log_err("configuration: %s", eb.msg[0] ? eb.msg : strerror(-ret));
		image_path_policy_free();
		return 2;
	}
	if (!image_path_restricted())
		log_notice("images may be opened anywhere: no --image-dir or --device-allow "
			   "(see tapd(8))");

	/* Both must happen before any thread exists, so that every thread
	 * inherits the flag and every stack is locked. */
	if (protect_flusher(o.strict) < 0 || protect_memory(o.strict, o.no_mlock) < 0)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	/* Credentials first: a bad file stops us before anything exists. */
	ret = nbd_tls_setup(&o.tls, &eb);
	if (ret < 0) {
		log_err("NBD TLS: %s", eb.msg[0] ? eb.msg : strerror(-ret));
		nbd_tls_teardown();
		return 1;
	}

	if (make_state_dir(o.state_dir) < 0)
		return 1;
	if (!o.nbd_socket) {
		snprintf(sock_buf, sizeof(sock_buf), "%s/nbd.sock", o.state_dir);
		o.nbd_socket = sock_buf;
	}
	d.info.version = TAPD_VERSION;
	d.info.state_dir = o.state_dir;
	d.info.nbd_socket = o.nbd_socket;

	d.base = event_base_new();
	if (!d.base) {
		log_err("cannot create the event loop");
		return 1;
	}
	pool_setup(d.base);
	image_set_loop(d.base);
	/* Pools are locked when the daemon is: otherwise RLIMIT_MEMLOCK is
	 * no limit to hold them to (--no-mlock, sanitizers, mlockall refused). */
	pool_set_lock(d.info.memory_locked);
	/* Two workers: a slow fallocate on one image does not hold up
	 * block status on another. */
	if (tap_setup(d.base) < 0 || aio_setup(d.base) < 0 || worker_setup(d.base, 2) < 0 ||
	    nbd_client_setup(d.base) < 0 || device_setup(d.base) < 0) {
		log_err("cannot set up the I/O path");
		return 1;
	}
	ret = pool_create(POOL_DEFAULT, o.default_pool_size, &def, &eb);
	if (ret < 0) {
		log_err("cannot create the default pool: %s", eb.msg[0] ? eb.msg : strerror(-ret));
		return 1;
	}
	if (o.nbd.max_clients > nbd_def.max_clients && nbd_def.max_clients < NBD_DEFAULT_MAX_CLIENTS)
		log_warn("--nbd-max-clients %u is more than the open file limit allows for (%u): "
			 "clients may take the fds images and D-Bus need",
			 o.nbd.max_clients, nbd_def.max_clients);
	nbd_server_set_limits(&o.nbd);
	log_debug("nbd: at most %u clients, %u per peer; handshake timeout %u s, write "
		  "timeout %u s",
		  o.nbd.max_clients, o.nbd.max_clients_per_peer, o.nbd.handshake_timeout,
		  o.nbd.write_timeout);
	/* Sockets passed by systemd replace the unix socket we would make. */
	ret = nbd_server_activate(d.base, &eb);
	if (ret < 0) {
		log_err("NBD socket activation: %s", eb.msg[0] ? eb.msg : strerror(-ret));
		return 1;
	}
	if (!nbd_server_socket()) {
		ret = nbd_server_start(d.base, o.nbd_socket, &eb);
		if (ret < 0) {
			log_err("NBD export on %s: %s", o.nbd_socket,
				eb.msg[0] ? eb.msg : strerror(-ret));
			return 1;
		}
	}
	o.nbd_socket = nbd_server_socket();
	d.info.nbd_socket = o.nbd_socket;
	for (unsigned i = 0; i < o.n_nbd_listen; i++) {
		ret = nbd_server_listen_tcp(d.base, o.nbd_listen[i], &eb);
		if (ret < 0) {
			log_err("NBD TCP listener %s: %s", o.nbd_listen[i],
				eb.msg[0] ? eb.msg : strerror(-ret));
			return 1;
		}
	}
	ret = bus_start(d.base, o.bus, &d.info, &eb);
	if (ret < 0) {
		log_err("D-Bus (%s): %s", o.bus, eb.msg[0] ? eb.msg : strerror(-ret));
		return 1;
	}
	/* After the bus name is ours: no other tapd serves this bus, so a
	 * mount found at STATE_DIR/fuse is a dead one's, and is cleaned. */
	eb.msg[0] = '\0';
	ret = fuse_export_start(d.base, o.state_dir, &eb);
	if (ret < 0)
		log_notice("%s: taps are not served as files, and cannot be attached as fuse "
			   "devices", eb.msg[0] ? eb.msg : strerror(-ret));
	ret = nbd_kernel_start(d.base, o.nbd_kernel_conns, &eb);
	if (ret < 0) {
		log_err("%s", eb.msg[0] ? eb.msg : strerror(-ret));
		return 1;
	}

	eb.msg[0] = '\0';
	ret = ublk_export_start(d.base, &eb);
	if (ret < 0)
		log_notice("%s: taps cannot be attached as ublk devices",
			   eb.msg[0] ? eb.msg : strerror(-ret));

	d.sig_term = evsignal_new(d.base, SIGTERM, on_signal, NULL);
	d.sig_int = evsignal_new(d.base, SIGINT, on_signal, NULL);
	evsignal_add(d.sig_term, NULL);
	evsignal_add(d.sig_int, NULL);
	if (sd_watchdog_enabled(0, &d.watchdog_usec) > 0) {
		/* Pet at a third of the interval: late enough to be cheap,
		 * early enough to survive a slow tick. */
		one_sec.tv_sec = (time_t)(d.watchdog_usec / 3000000);
		one_sec.tv_usec = (suseconds_t)(d.watchdog_usec / 3 % 1000000);
		if (one_sec.tv_sec >= 1) {
			one_sec.tv_sec = 1;
			one_sec.tv_usec = 0;
		}
	} else {
		d.watchdog_usec = 0;
	}
	d.tick = event_new(d.base, -1, EV_PERSIST, on_tick, NULL);
	event_add(d.tick, &one_sec);

	log_info("tapd %s ready: NBD on %s%s%s, bus %s, I/O flusher %s, memory %s", TAPD_VERSION,
		 o.nbd_socket, nbd_server_tcp_address() ? " and tcp " : "",
		 nbd_server_tcp_address() ? nbd_server_tcp_address() : "", o.bus,
		 d.info.io_flusher ? "on" : "OFF", d.info.memory_locked ? "locked" : "NOT locked");
	sd_notify(0, "READY=1");
	update_status();

	loop_run(d.base, o.poll_us);

	nbd_server_free();
	nbd_tls_teardown();
	/* Both still hold taps (tap_attach) if the stop did not finish. */
	fuse_export_free();
	ublk_export_free();
	device_teardown();
	tap_teardown();
	/* Workers first: a pool still being mapped is then freed here. */
	worker_teardown();
	pool_teardown();
	aio_teardown();
	image_path_policy_free();
	event_free(d.tick);
	event_free(d.sig_term);
	event_free(d.sig_int);
	if (d.stop_timer)
		event_free(d.stop_timer);
	event_base_free(d.base);
	return d.exit_code;
}
