/* Connecting the nbd: driver to its server: address resolution, a
 * non-blocking connect and the fixed-newstyle handshake (NBD_OPT_GO, or
 * NBD_OPT_EXPORT_NAME for servers without it) as a state machine fed by
 * whatever the socket has. The loop drives it on reconnects; open() drives
 * the same machine with poll() and a deadline. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

uint64_t nbdc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int nbdc_resolve(struct nbdc *c, struct errbuf *eb)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG};
	struct addrinfo *res, *ai;
	int ret;

	if (c->uri.is_unix) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&c->addrs[0];

		sun->sun_family = AF_UNIX;
		memcpy(sun->sun_path, c->uri.socket, sizeof(sun->sun_path));
		c->addr_lens[0] = sizeof(*sun);
		c->n_addrs = 1;
		return 0;
	}
	ret = getaddrinfo(c->uri.host, c->uri.port, &hints, &res);
	if (ret) {
		err_set(eb, "nbd: cannot resolve %s: %s", c->uri.host, gai_strerror(ret));
		return -EHOSTUNREACH;
	}
	c->n_addrs = 0;
	for (ai = res; ai && c->n_addrs < NBDC_MAX_ADDRS; ai = ai->ai_next) {
		if (ai->ai_addrlen > sizeof(c->addrs[0]))
			continue;
		memcpy(&c->addrs[c->n_addrs], ai->ai_addr, ai->ai_addrlen);
		c->addr_lens[c->n_addrs++] = ai->ai_addrlen;
	}
	freeaddrinfo(res);
	if (!c->n_addrs) {
		err_set(eb, "nbd: no usable address for %s", c->uri.host);
		return -EHOSTUNREACH;
	}
	return 0;
}

static void hs_expect(struct nbdc_hs *hs, enum nbdc_hs_state st, uint32_t want)
{
	hs->state = st;
	hs->have = 0;
	hs->want = want;
}

static void hs_queue(struct nbdc_hs *hs, const void *p, size_t n)
{
	/* Sized for the largest sequence we send before reading again. */
	memcpy(hs->out + hs->out_len, p, n);
	hs->out_len += (uint32_t)n;
}

int nbdc_hs_start(struct nbdc *c, unsigned i, struct errbuf *eb)
{
	const struct sockaddr *sa = (const struct sockaddr *)&c->addrs[i];
	int fd, ret, one = 1;

	memset(&c->hs, 0, offsetof(struct nbdc_hs, in));
	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		err_set(eb, "nbd: %s: socket: %s", c->desc, strerror(errno));
		return ret;
	}
	if (sa->sa_family != AF_UNIX) {
		/* Requests are small and latency matters; keepalive notices
		 * a peer that vanished without a FIN. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	}
	c->fd = fd;
	if (connect(fd, sa, c->addr_lens[i]) == 0) {
		struct ucred cred;
		socklen_t len = sizeof(cred);

		/* tapd's own socket: a tap reading through tapd's NBD server
		 * would wait on itself (tap:NAME is the way to stack). */
		if (sa->sa_family == AF_UNIX &&
		    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
		    cred.pid == getpid()) {
			err_set(eb, "nbd: %s is this tapd's own NBD socket; to read through "
				    "another tap, use tap:NAME", c->desc);
			close(fd);
			c->fd = -1;
			return -ELOOP;
		}
		hs_expect(&c->hs, HS_GREETING, NBD_GREETING_LEN);
		return 0;
	}
	if (errno == EINPROGRESS) {
		c->hs.state = HS_CONNECTING;
		return 0;
	}
	ret = -errno;
	err_set(eb, "nbd: cannot connect to %s: %s", c->desc, strerror(errno));
	close(fd);
	c->fd = -1;
	return ret;
}

bool nbdc_hs_wants_write(const struct nbdc *c)
{
	return c->hs.state == HS_CONNECTING || c->hs.out_sent < c->hs.out_len;
}

static void hs_send_export_name(struct nbdc *c)
{
	unsigned char hdr[NBD_OPT_HDR_LEN];

	hs_queue(&c->hs, hdr, nbdc_encode_opt(hdr, NBD_OPT_EXPORT_NAME, c->uri.name_len));
	hs_queue(&c->hs, c->uri.name, c->uri.name_len);
	hs_expect(&c->hs, HS_EXPORT_NAME,
		  c->hs.no_zeroes ? NBD_EXPORT_NAME_REPLY_LEN - 124 : NBD_EXPORT_NAME_REPLY_LEN);
}

static int hs_greeting(struct nbdc *c, struct errbuf *eb)
{
	struct nbdc_hs *hs = &c->hs;
	unsigned char buf[NBDC_OPT_GO_LEN(NBD_NAME_MAX)];
	uint16_t flags;
	uint32_t cflags = 0;
	int ret;

	ret = nbdc_parse_greeting(hs->in, &flags);
	if (ret == -EPROTONOSUPPORT) {
		err_set(eb, "nbd: %s is an old-style NBD server, which is not supported", c->desc);
		return ret;
	}
	if (ret < 0) {
		err_set(eb, "nbd: %s does not speak NBD (bad greeting)", c->desc);
		return ret;
	}
	if (flags & NBD_FLAG_FIXED_NEWSTYLE)
		cflags |= NBD_FLAG_C_FIXED_NEWSTYLE;
	if (flags & NBD_FLAG_NO_ZEROES) {
		cflags |= NBD_FLAG_C_NO_ZEROES;
		hs->no_zeroes = true;
	}
	put_be32(buf, cflags);
	hs_queue(hs, buf, NBD_CLIENT_FLAGS_LEN);
	/* Without fixed newstyle a server may drop the connection on an
	 * option it does not know: only EXPORT_NAME is safe. */
	if (!(flags & NBD_FLAG_FIXED_NEWSTYLE)) {
		hs_send_export_name(c);
		return 0;
	}
	hs_queue(hs, buf, nbdc_encode_opt_go(buf, c->uri.name, c->uri.name_len));
	hs_expect(hs, HS_OPT_HDR, NBD_OPT_REPLY_HDR_LEN);
	return 0;
}

/* A whole option reply to GO is in: 1 when the export is ready. */
static int hs_opt_reply(struct nbdc *c, struct errbuf *eb)
{
	struct nbdc_hs *hs = &c->hs;
	uint32_t type = hs->rep.type;

	if (type == NBD_REP_INFO) {
		if (nbdc_parse_info(hs->in, hs->rep.len, &hs->x) < 0) {
			err_set(eb, "nbd: %s sent a malformed NBD_REP_INFO", c->desc);
			return -EBADMSG;
		}
		hs_expect(hs, HS_OPT_HDR, NBD_OPT_REPLY_HDR_LEN);
		return 0;
	}
	if (type == NBD_REP_ACK) {
		if (!hs->x.have_export) {
			err_set(eb, "nbd: %s accepted NBD_OPT_GO without telling the export size",
				c->desc);
			return -EBADMSG;
		}
		hs->state = HS_DONE;
		return 1;
	}
	if (type == NBD_REP_ERR_UNSUP) {
		/* A server older than NBD_OPT_GO. */
		hs_send_export_name(c);
		return 0;
	}
	if (type & (1u << 31)) {
		err_set(eb, "nbd: %s refused export '%s': %s%s%.*s", c->desc, c->uri.name,
			nbdc_rep_err_name(type), hs->rep.len ? ": " : "",
			(int)MIN(hs->rep.len, 200u), (const char *)hs->in);
		return type == NBD_REP_ERR_UNKNOWN  ? -ENOENT
		       : type == NBD_REP_ERR_POLICY ? -EACCES
						    : -EPROTO;
	}
	err_set(eb, "nbd: %s sent unexpected option reply type %u", c->desc, type);
	return -EBADMSG;
}

/* hs->want bytes are in hs->in: act on them. */
static int hs_process(struct nbdc *c, struct errbuf *eb)
{
	struct nbdc_hs *hs = &c->hs;

	switch (hs->state) {
	case HS_GREETING:
		return hs_greeting(c, eb);
	case HS_OPT_HDR:
		if (nbdc_parse_opt_reply(hs->in, &hs->rep) < 0 || hs->rep.opt != NBD_OPT_GO) {
			err_set(eb, "nbd: %s sent a malformed option reply", c->desc);
			return -EBADMSG;
		}
		if (hs->rep.len > sizeof(hs->in)) {
			err_set(eb, "nbd: %s sent an option reply of %u bytes", c->desc,
				hs->rep.len);
			return -EBADMSG;
		}
		if (hs->rep.len == 0)
			return hs_opt_reply(c, eb);
		hs_expect(hs, HS_OPT_DATA, hs->rep.len);
		return 0;
	case HS_OPT_DATA:
		return hs_opt_reply(c, eb);
	case HS_EXPORT_NAME:
		nbdc_parse_export_name_reply(hs->in, &hs->x);
		hs->state = HS_DONE;
		return 1;
	default:
		return -EINVAL;
	}
}

/* A send() or recv() of the handshake failed: 0 to wait for the socket
 * (EAGAIN, EINTR), else the error, described in eb. */
static int hs_sock_error(struct nbdc *c, struct errbuf *eb)
{
	int err = errno;

	if (err == EAGAIN || err == EINTR)
		return 0;
	err_set(eb, "nbd: %s: handshake: %s", c->desc, strerror(err));
	return -err;
}

int nbdc_hs_step(struct nbdc *c, struct errbuf *eb)
{
	struct nbdc_hs *hs = &c->hs;
	int ret;

	if (hs->state == HS_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);

		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err == EINPROGRESS || err == EALREADY)
			return 0;
		if (err) {
			err_set(eb, "nbd: cannot connect to %s: %s", c->desc, strerror(err));
			return -err;
		}
		hs_expect(hs, HS_GREETING, NBD_GREETING_LEN);
	}
	for (;;) {
		ssize_t n;

		while (hs->out_sent < hs->out_len) {
			n = send(c->fd, hs->out + hs->out_sent, hs->out_len - hs->out_sent,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n < 0)
				return hs_sock_error(c, eb);
			hs->out_sent += (uint32_t)n;
		}
		hs->out_sent = hs->out_len = 0;
		if (hs->state == HS_DONE)
			return 1;
		while (hs->have < hs->want) {
			n = recv(c->fd, hs->in + hs->have, hs->want - hs->have, MSG_DONTWAIT);
			if (n < 0)
				return hs_sock_error(c, eb);
			if (n == 0) {
				err_set(eb, "nbd: %s closed the connection during the handshake%s",
					c->desc,
					hs->state == HS_EXPORT_NAME ? " (no such export?)" : "");
				return -ECONNRESET;
			}
			hs->have += (uint32_t)n;
		}
		ret = hs_process(c, eb);
		if (ret < 0)
			return ret;
		/* Done, but what was queued (nothing, today) goes first. */
		if (ret > 0 && hs->out_len == 0)
			return 1;
	}
}

static int connect_one(struct nbdc *c, unsigned i, uint64_t deadline, struct errbuf *eb)
{
	int ret = nbdc_hs_start(c, i, eb);

	while (ret == 0) {
		struct pollfd pfd = {.fd = c->fd};
		uint64_t now = nbdc_now_ms();

		ret = nbdc_hs_step(c, eb);
		if (ret != 0)
			break;
		if (now >= deadline) {
			err_set(eb, "nbd: %s: connect or handshake timed out", c->desc);
			ret = -ETIMEDOUT;
			break;
		}
		pfd.events = nbdc_hs_wants_write(c) ? POLLOUT : POLLIN;
		if (poll(&pfd, 1, (int)(deadline - now)) < 0 && errno != EINTR) {
			ret = -errno;
			break;
		}
	}
	if (ret < 0 && c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	return ret < 0 ? ret : 0;
}

int nbdc_connect_blocking(struct nbdc *c, unsigned timeout_ms, struct errbuf *eb)
{
	uint64_t deadline = nbdc_now_ms() + timeout_ms;
	int ret = -EHOSTUNREACH;

	for (unsigned i = 0; i < c->n_addrs; i++) {
		ret = connect_one(c, i, deadline, eb);
		if (ret == 0) {
			c->addr_cur = i;
			return 0;
		}
		/* The server answered and said no: another address of the
		 * same host would say the same. */
		if (ret != -ECONNREFUSED && ret != -ETIMEDOUT && ret != -EHOSTUNREACH &&
		    ret != -ENETUNREACH && ret != -EADDRNOTAVAIL)
			break;
	}
	return ret;
}
