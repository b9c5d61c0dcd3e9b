/* tapctl top: a live view of taps and pools. Once a second it samples
 * ListTaps, each tap's Stats and ListPools, and draws rates from the
 * difference between two samples. On a terminal the screen is redrawn in
 * place (ANSI codes) and q quits; otherwise plain tables follow each other,
 * so the output can be logged or parsed. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "tapctl-internal.h"


struct top_tap {
	char *path, *name, *state, *pool;
	uint64_t reads, writes, read_bytes, write_bytes;
	uint64_t inflight, waiting;
};

struct top_sample {
	struct timespec at;
	struct top_tap *taps;
	size_t n;
};

static volatile sig_atomic_t top_stop;

static void top_on_signal(int sig)
{
	(void)sig;
	top_stop = 1;
}

static void sample_free(struct top_sample *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->taps[i].path);
		free(s->taps[i].name);
		free(s->taps[i].state);
		free(s->taps[i].pool);
	}
	free(s->taps);
	memset(s, 0, sizeof(*s));
}

/* Stats of one tap into t; < 0 if the tap went away meanwhile. */
static int read_stats(sd_bus *bus, const char *path, struct top_tap *t)
{
	_cleanup_msg_ sd_bus_message *reply = NULL;
	const char *key;
	uint64_t val;
	int r;

	r = call_array(bus, path, IFACE_TAP, "Stats", "{st}", NULL, &reply);
	while (r >= 0 && (r = sd_bus_message_read(reply, "{st}", &key, &val)) > 0) {
		if (strcmp(key, "reads") == 0)
			t->reads = val;
		else if (strcmp(key, "writes") == 0)
			t->writes = val;
		else if (strcmp(key, "read_bytes") == 0)
			t->read_bytes = val;
		else if (strcmp(key, "write_bytes") == 0)
			t->write_bytes = val;
		else if (strcmp(key, "inflight") == 0)
			t->inflight = val;
		else if (strcmp(key, "waiting") == 0)
			t->waiting = val;
	}
	return r;
}

static int sample_take(sd_bus *bus, struct top_sample *s)
{
	_cleanup_msg_ sd_bus_message *reply = NULL;
	_cleanup_free_ struct tap_row *rows = NULL;
	size_t n;
	int r;

	memset(s, 0, sizeof(*s));
	r = list_taps(bus, &reply, &rows, &n);
	if (r)
		return r;
	clock_gettime(CLOCK_MONOTONIC, &s->at);
	s->taps = calloc(n + 1, sizeof(*s->taps));
	if (!s->taps)
		return refused(NULL, -ENOMEM);
	for (size_t i = 0; i < n; i++) {
		struct top_tap *t = &s->taps[s->n];

		/* A tap destroyed since ListTaps is left out. */
		if (read_stats(bus, rows[i].path, t) < 0) {
			memset(t, 0, sizeof(*t));
			continue;
		}
		t->path = strdup(rows[i].path);
		t->name = strdup(rows[i].name);
		t->state = strdup(rows[i].state);
		t->pool = strdup(rows[i].pool);
		s->n++;
		if (!t->path || !t->name || !t->state || !t->pool) {
			sample_free(s);
			return refused(NULL, -ENOMEM);
		}
	}
	return 0;
}

static const struct top_tap *sample_find(const struct top_sample *s, const struct top_tap *t)
{
	/* The path holds the minor; a minor reused by a new tap under
	 * another name is another tap. */
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->taps[i].path, t->path) == 0 && strcmp(s->taps[i].name, t->name) == 0)
			return &s->taps[i];
	return NULL;
}

/* A per-second rate of a counter between two samples, or "-". */
static const char *rate(uint64_t now, uint64_t before, double secs, double unit, int prec,
			char *buf, size_t len)
{
	if (now < before || secs <= 0)
		return "-";
	snprintf(buf, len, "%.*f", prec, (double)(now - before) / secs / unit);
	return buf;
}

static void draw_taps(FILE *f, const struct top_sample *prev, const struct top_sample *cur)
{
	double secs = (double)(cur->at.tv_sec - prev->at.tv_sec) +
		      (double)(cur->at.tv_nsec - prev->at.tv_nsec) / 1e9;
	int wn = 4, wp = 4;

	for (size_t i = 0; i < cur->n; i++) {
		wn = MAX(wn, (int)strlen(cur->taps[i].name));
		wp = MAX(wp, (int)strlen(cur->taps[i].pool));
	}
	fprintf(f, "%-*s %-8s %-*s %8s %8s %8s %8s %8s %7s\n", wn, "NAME", "STATE", wp, "POOL",
		"R-IOPS", "W-IOPS", "R-MB/s", "W-MB/s", "INFLIGHT", "WAITING");
	for (size_t i = 0; i < cur->n; i++) {
		const struct top_tap *t = &cur->taps[i], *o = sample_find(prev, t);
		char b[4][32];

		fprintf(f, "%-*s %-8s %-*s %8s %8s %8s %8s %8" PRIu64 " %7" PRIu64 "\n", wn,
			t->name, t->state, wp, t->pool,
			o ? rate(t->reads, o->reads, secs, 1, 0, b[0], 32) : "-",
			o ? rate(t->writes, o->writes, secs, 1, 0, b[1], 32) : "-",
			o ? rate(t->read_bytes, o->read_bytes, secs, 1e6, 1, b[2], 32) : "-",
			o ? rate(t->write_bytes, o->write_bytes, secs, 1e6, 1, b[3], 32) : "-",
			t->inflight, t->waiting);
	}
}

static int draw_pools(sd_bus *bus, FILE *f, unsigned *count)
{
	_cleanup_err_ sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_msg_ sd_bus_message *reply = NULL;
	const char *name, *path;
	uint64_t size, in_use, high, mapped;
	uint32_t waiters, taps;
	char s1[32], s2[32], s3[32];
	int r;

	*count = 0;
	r = call_array(bus, ROOT, IFACE_MANAGER, "ListPools", "(sttttuuo)", &e, &reply);
	if (r < 0)
		return refused(&e, r);
	fprintf(f, "%-16s %8s %8s %10s %7s %4s\n", "POOL", "SIZE", "IN-USE", "HIGH-WATER",
		"WAITERS", "TAPS");
	while ((r = sd_bus_message_read(reply, "(sttttuuo)", &name, &size, &in_use, &high,
					&mapped, &waiters, &taps, &path)) > 0) {
		fprintf(f, "%-16s %8s %8s %10s %7" PRIu32 " %4" PRIu32 "\n", name,
			format_size(size, s1, sizeof(s1)), format_size(in_use, s2, sizeof(s2)),
			format_size(high, s3, sizeof(s3)), waiters, taps);
		(*count)++;
	}
	return r < 0 ? refused(NULL, r) : 0;
}

/* One frame, built in memory and written at once so that a terminal never
 * shows half of it. */
static int draw(sd_bus *bus, const struct top_sample *prev, const struct top_sample *cur,
		bool tty)
{
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	unsigned npools;
	char when[32];
	time_t now = time(NULL);
	FILE *f = open_memstream(&buf, &len);
	int r;

	if (!f)
		return refused(NULL, -errno);
	strftime(when, sizeof(when), "%H:%M:%S", localtime(&now));
	draw_taps(f, prev, cur);
	fputc('\n', f);
	r = draw_pools(bus, f, &npools);
	fclose(f);
	if (r)
		return r;
	if (tty)
		fputs("\033[H\033[2J", stdout);
	printf("tapctl top  %s  %zu tap%s, %u pool%s%s\n\n", when, cur->n, cur->n == 1 ? "" : "s",
	       npools, npools == 1 ? "" : "s", tty ? "  (q quits)" : "");
	fwrite(buf, 1, len, stdout);
	if (!tty)
		putchar('\n');
	fflush(stdout);
	return 0;
}

/* Sleep until deadline (monotonic), returning early with 1 on q, Ctrl-C
 * or SIGTERM. keys: read keys from stdin (a terminal). */
static int wait_until(const struct timespec *deadline, bool *keys)
{
	for (;;) {
		struct pollfd pfd = { .fd = STDIN_FILENO, .events = POLLIN };
		struct timespec now;
		long ms;
		char c[16];
		ssize_t n;
		int r;

		if (top_stop)
			return 1;
		clock_gettime(CLOCK_MONOTONIC, &now);
		ms = (deadline->tv_sec - now.tv_sec) * 1000 +
		     (deadline->tv_nsec - now.tv_nsec) / 1000000;
		if (ms <= 0)
			return 0;
		r = poll(&pfd, *keys ? 1 : 0, (int)ms);
		if (r < 0 && errno != EINTR)
			return 1;
		if (r <= 0 || !(pfd.revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		n = read(STDIN_FILENO, c, sizeof(c));
		if (n <= 0) {
			*keys = false; /* end of input: no more keys to read */
			continue;
		}
		if (memchr(c, 'q', (size_t)n) || memchr(c, 'Q', (size_t)n))
			return 1;
	}
}

int cmd_top(sd_bus *bus, const struct args *a)
{
	struct top_sample prev, cur;
	struct sigaction sa = { .sa_handler = top_on_signal };
	struct termios saved, raw;
	struct timespec deadline;
	bool tty = isatty(STDOUT_FILENO);
	bool keys = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
	int r;

	/* No SA_RESTART: a signal must cut the wait short. */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (keys) {
		/* Keys without Enter and without echo; Ctrl-C still signals. */
		raw = saved;
		raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
		raw.c_cc[VMIN] = 0;
		raw.c_cc[VTIME] = 0;
		tcsetattr(STDIN_FILENO, TCSANOW, &raw);
	}
	if (tty) {
		fputs("\033[?25l\033[H\033[2Jtapctl top: sampling...\n", stdout);
		fflush(stdout);
	}

	/* Rates need two samples: the first frame comes one interval after a
	 * baseline, so that every frame shows real rates. */
	r = sample_take(bus, &prev);
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	for (unsigned i = 0; !r && (!a->iterations || i < a->iterations); i++) {
		deadline.tv_sec += 1;
		if (wait_until(&deadline, &keys))
			break;
		r = sample_take(bus, &cur);
		if (r)
			break;
		r = draw(bus, &prev, &cur, tty);
		sample_free(&prev);
		prev = cur;
	}
	sample_free(&prev);

	if (keys)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved);
	if (tty) {
		fputs("\033[?25h", stdout);
		fflush(stdout);
	}
	return r;
}
