/* The one connection to the bus and its glue to the libevent loop (no
 * sd-event): watch the fd and the timeout sd-bus asks for, process what
 * arrives, and stop watching (taps keep running) if the connection dies. */
#include <errno.h>
#include <event2/event.h>
#include <poll.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "lib/log.h"

static struct {
	sd_bus *bus;
	struct event_base *base;
	struct event *io_ev;
	struct event *timer_ev;
	short io_flags;
} C;

static void bus_dead(int r)
{
	/* Without the bus we keep serving the taps we have; only control is
	 * lost. Stop watching the fd so a dead socket cannot spin the loop. */
	log_err("D-Bus connection lost (%s); control plane disabled, taps keep running",
		strerror(-r));
	if (C.io_ev)
		event_del(C.io_ev);
	if (C.timer_ev)
		event_del(C.timer_ev);
	C.io_flags = 0;
	sd_bus_close(C.bus);
	C.bus = sd_bus_unref(C.bus);
}

static void bus_on_io(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	bus_conn_process();
}

/* Follow what sd-bus wants next: readable and/or writable fd, and a wake-up
 * at its next timeout (method call timeouts, queued messages: 0). Called
 * after processing, and by whoever queued a message outside of it. */
void bus_kick(void)
{
	short want = EV_PERSIST;
	uint64_t until;
	int events, r;

	if (!C.bus)
		return;
	/* A failure here means the connection is closing; the next
	 * sd_bus_process() reports it and bus_conn_process() tears down. Never
	 * tear down here: we may be inside a method handler. */
	events = sd_bus_get_events(C.bus);
	if (events < 0)
		return;
	if (events & POLLIN)
		want |= EV_READ;
	if (events & POLLOUT)
		want |= EV_WRITE;
	if (want != C.io_flags) {
		event_del(C.io_ev);
		event_assign(C.io_ev, C.base, sd_bus_get_fd(C.bus), want, bus_on_io, NULL);
		if (want & (EV_READ | EV_WRITE))
			event_add(C.io_ev, NULL);
		C.io_flags = want;
	}

	r = sd_bus_get_timeout(C.bus, &until);
	if (r > 0 && until != UINT64_MAX) {
		struct timespec now;
		uint64_t now_us, rel;
		struct timeval tv;

		clock_gettime(CLOCK_MONOTONIC, &now);
		now_us = (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
		rel = until > now_us ? until - now_us : 0;
		tv.tv_sec = (time_t)(rel / 1000000);
		tv.tv_usec = (suseconds_t)(rel % 1000000);
		evtimer_add(C.timer_ev, &tv);
	} else {
		evtimer_del(C.timer_ev);
	}
}

void bus_conn_process(void)
{
	int r;

	while (C.bus) {
		r = sd_bus_process(C.bus, NULL);
		if (r < 0) {
			bus_dead(r);
			return;
		}
		if (r == 0)
			break;
	}
	bus_kick();
}

static void bus_on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	bus_conn_process();
}

static int bus_connect(const char *address, sd_bus **out)
{
	sd_bus *bus = NULL;
	int r;

	if (!address || strcmp(address, "system") == 0)
		return sd_bus_open_system(out);
	if (strcmp(address, "session") == 0)
		return sd_bus_open_user(out);
	r = sd_bus_new(&bus);
	if (r < 0)
		return r;
	r = sd_bus_set_address(bus, address);
	if (r >= 0)
		r = sd_bus_set_bus_client(bus, 1);
	/* Like sd_bus_open_system(): sd-bus itself then refuses privileged
	 * methods to callers without CAP_SYS_ADMIN, behind the bus policy. */
	if (r >= 0)
		r = sd_bus_set_trusted(bus, 0);
	if (r >= 0)
		r = sd_bus_start(bus);
	if (r < 0) {
		sd_bus_unref(bus);
		return r;
	}
	*out = bus;
	return 0;
}

int bus_conn_open(const char *address)
{
	return bus_connect(address, &C.bus);
}

int bus_conn_watch(struct event_base *base)
{
	C.base = base;
	C.io_ev = event_new(base, -1, 0, bus_on_io, NULL);
	C.timer_ev = evtimer_new(base, bus_on_timer, NULL);
	if (!C.io_ev || !C.timer_ev)
		return -ENOMEM;
	C.io_flags = 0;
	return 0;
}

sd_bus *bus_conn(void)
{
	return C.bus;
}

void bus_conn_close(void)
{
	if (C.io_ev)
		event_free(C.io_ev);
	if (C.timer_ev)
		event_free(C.timer_ev);
	C.io_ev = C.timer_ev = NULL;
	C.io_flags = 0;
	if (C.bus)
		C.bus = sd_bus_flush_close_unref(C.bus);
}
