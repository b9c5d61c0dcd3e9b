/* Fuzz target for the NBD server as a client meets it: the daemon's real
 * core, pools and NBD export run in this process on their own loop, with
 * two taps (null:64M "n", ram:4M "r"), and each input is the byte stream
 * one client sends on a fresh connection to the unix socket: greeting
 * flags, options, requests and payloads, well-formed or not. The stream
 * is written in pieces (the first byte picks their size) while the loop
 * runs and the client side reads whatever the server answers; then the
 * client half-closes and the loop runs until the server has closed and
 * freed the connection. A crash, a sanitizer report, or a connection the
 * server never lets go of (the harness checks the tap's connection count
 * after each input) is a finding.
 *
 * Built as a libFuzzer target (-DFUZZ_LIBFUZZER, clang) or, without
 * clang, with a small standalone driver that replays the seeds with random
 * mutations for a given number of seconds. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "fuzz-daemon.h"

static struct event_base *base;
static char sock_path[108];
static struct tap *taps[2];

static void die(const char *what, const struct errbuf *eb)
{
	fprintf(stderr, "fuzz-nbd-server: %s: %s\n", what, eb ? eb->msg : strerror(errno));
	abort();
}

/* tap_create answers from the loop, once the image is open. */
struct created {
	bool got;
	int err;
	struct tap *t;
	struct errbuf *eb;
};

static void on_created(void *arg, struct tap *t, int err, const struct errbuf *eb)
{
	struct created *c = arg;

	c->got = true;
	c->err = err;
	c->t = t;
	*c->eb = *eb;
}

static void setup(void)
{
	static const char *const images[2] = { "null:64M", "ram:4M" };
	static const char *const names[2] = { "n", "r" };
	struct errbuf eb = { "" };
	char dir[] = "/tmp/fuzz-nbd.XXXXXX";

	if (!mkdtemp(dir))
		die("mkdtemp", NULL);
	snprintf(sock_path, sizeof(sock_path), "%s/nbd.sock", dir);
	base = fuzz_daemon_start(sock_path, 16u << 20);
	for (int i = 0; i < 2; i++) {
		struct tap_config cfg = { .name = names[i], .image = images[i] };

		struct created c = { .eb = &eb };

		if (tap_create(&cfg, on_created, &c, &eb) < 0)
			die("tap", &eb);
		while (!c.got)
			event_base_loop(base, EVLOOP_ONCE);
		if (c.err < 0)
			die("tap", &eb);
		taps[i] = c.t;
	}
}

static unsigned connections(void)
{
	unsigned n = 0;

	for (int i = 0; i < 2; i++) {
		struct tap_stats st;

		tap_get_stats(taps[i], &st);
		n += st.connections;
	}
	return n;
}

/* Read and drop what the server sent; false once it has closed. */
static bool drain(int fd)
{
	char buf[65536];

	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n > 0)
			continue;
		if (n == 0)
			return false;
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
	}
}

static void run_loop(int passes)
{
	while (passes-- > 0)
		event_base_loop(base, EVLOOP_NONBLOCK);
}

static int one_input(const uint8_t *data, size_t size)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t piece, off = 0;
	int fd, rounds;

	if (!base)
		setup();
	if (size == 0)
		return 0;
	/* Pieces of 1 to 256 bytes: partial headers and payloads. */
	piece = (size_t)data[0] + 1;
	data++;
	size--;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		die("socket", NULL);
	memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("connect", NULL);
	run_loop(2); /* accept, greet */
	while (off < size) {
		size_t n = size - off < piece ? size - off : piece;
		ssize_t w = send(fd, data + off, n, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (w > 0)
			off += (size_t)w;
		else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			break; /* the server hung up on us */
		run_loop(2);
		if (!drain(fd))
			break;
	}
	/* Let requests complete and replies go out, then say goodbye. */
	for (rounds = 0; rounds < 64 && drain(fd); rounds++)
		run_loop(1);
	shutdown(fd, SHUT_WR);
	for (rounds = 0; rounds < 4096 && drain(fd); rounds++)
		run_loop(1);
	close(fd);
	for (rounds = 0; rounds < 4096 && connections(); rounds++)
		run_loop(1);
	if (connections()) {
		fprintf(stderr, "fuzz-nbd-server: a connection outlived its client\n");
		abort();
	}
	return 0;
}

#ifdef FUZZ_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return one_input(data, size);
}
#else
/* Standalone: `fuzz-nbd-server SECONDS SEED...` mutates the seeds at
 * random (bytes flipped, inserted, dropped, pieces of two seeds spliced)
 * for SECONDS; any finding aborts. */
static uint8_t *load(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long n;

	if (!f || fseek(f, 0, SEEK_END) < 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) < 0)
		die(path, NULL);
	buf = malloc((size_t)n + 1);
	if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
		die(path, NULL);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

int main(int argc, char **argv)
{
	uint8_t *seeds[64], *buf;
	size_t lens[64], nseeds = 0, cap = 1 << 16;
	unsigned long execs = 0;
	time_t end;

	if (argc < 3) {
		fprintf(stderr, "usage: %s SECONDS SEED...\n", argv[0]);
		return 2;
	}
	for (int i = 2; i < argc && nseeds < 64; i++, nseeds++)
		seeds[nseeds] = load(argv[i], &lens[nseeds]);
	buf = malloc(cap);
	if (!buf)
		die("malloc", NULL);
	srand((unsigned)time(NULL));
	end = time(NULL) + atoi(argv[1]);
	for (size_t i = 0; i < nseeds; i++, execs++)
		one_input(seeds[i], lens[i]);
	while (time(NULL) < end) {
		size_t s = (size_t)rand() % nseeds, len = lens[s] < cap ? lens[s] : cap;
		int edits = 1 + rand() % 8;

		memcpy(buf, seeds[s], len);
		while (edits-- > 0 && len) {
			size_t at = (size_t)rand() % len;

			switch (rand() % 4) {
			case 0:
				buf[at] ^= (uint8_t)(1u << (rand() % 8));
				break;
			case 1:
				buf[at] = (uint8_t)rand();
				break;
			case 2:
				len = at; /* cut */
				break;
			default: {
				size_t o = (size_t)rand() % nseeds, from = lens[o] ? (size_t)rand() % lens[o] : 0,
				       n = lens[o] - from;

				if (at + n > cap)
					n = cap - at;
				memcpy(buf + at, seeds[o] + from, n); /* splice another seed in */
				len = at + n;
			}
			}
		}
		one_input(buf, len);
		execs++;
	}
	printf("fuzz-nbd-server: %lu inputs, no finding\n", execs);
	return 0;
}
#endif
