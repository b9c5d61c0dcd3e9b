/* The NBD server's clients as a whole: the list of live connections, who
 * each one's peer is, and the limits that apply to them (connections in
 * all and per peer, per tap, bytes in flight, timeouts). Pure bookkeeping
 * below every other part: server.c adds and removes connections and asks
 * before it takes one, the others only ask. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "internal.h"
#include "server.h"

static struct {
	LIST_HEAD(, nbd_conn) conns;
	unsigned n;
} cl = {
	.conns = LIST_HEAD_INITIALIZER(cl.conns),
};

static struct nbd_limits lim = {
	.max_client_bytes = NBD_DEFAULT_MAX_CLIENT_BYTES,
	.max_connections = NBD_DEFAULT_MAX_CONNECTIONS,
	.max_clients = NBD_DEFAULT_MAX_CLIENTS,
	.max_clients_per_peer = NBD_DEFAULT_MAX_CLIENTS / 4,
	.handshake_timeout = NBD_DEFAULT_HANDSHAKE_TIMEOUT,
	.write_timeout = NBD_DEFAULT_WRITE_TIMEOUT,
};

void nbd_server_default_limits(struct nbd_limits *l)
{
	struct rlimit rl;
	uint64_t fds = 1024, n;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		fds = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : rl.rlim_cur;
	/* Every client at its most (socket and splice pipes) still leaves
	 * the reserve to images and the bus. */
	n = fds > NBD_FD_RESERVE ? (fds - NBD_FD_RESERVE) / NBD_FDS_PER_CLIENT : 0;
	*l = lim;
	l->max_clients = (unsigned)MAX(MIN(n, (uint64_t)NBD_DEFAULT_MAX_CLIENTS), 1u);
	l->max_clients_per_peer = MAX(l->max_clients / 4, 1u);
}

void nbd_server_set_limits(const struct nbd_limits *l)
{
	lim = *l;
}

const struct nbd_limits *nbd_server_limits(void)
{
	return &lim;
}

unsigned nbd_server_tap_conns(const struct tap *t)
{
	struct nbd_conn *c;
	unsigned n = 0;

	LIST_FOREACH (c, &cl.conns, link)
		if (c->tap == t)
			n++;
	return n;
}

void nbd_clients_add(struct nbd_conn *c)
{
	LIST_INSERT_HEAD(&cl.conns, c, link);
	cl.n++;
}

void nbd_clients_remove(struct nbd_conn *c)
{
	LIST_REMOVE(c, link);
	cl.n--;
}

unsigned nbd_clients_count(void)
{
	return cl.n;
}

struct nbd_conn *nbd_clients_first(void)
{
	return LIST_FIRST(&cl.conns);
}

/* ---- peers ---- */

void nbd_peer_get(int fd, bool tcp, struct nbd_peer *p)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	memset(p, 0, sizeof(*p));
	p->kind = NBD_PEER_UNKNOWN;
	if (!tcp) {
		struct ucred cred;
		socklen_t cl_len = sizeof(cred);

		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl_len) == 0) {
			p->kind = NBD_PEER_UID;
			p->uid = cred.uid;
		}
		return;
	}
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
		return;
	if (ss.ss_family == AF_INET) {
		p->kind = NBD_PEER_IPV4;
		memcpy(p->addr, &((struct sockaddr_in *)&ss)->sin_addr, 4);
	} else if (ss.ss_family == AF_INET6) {
		const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(a)) {
			p->kind = NBD_PEER_IPV4;
			memcpy(p->addr, a->s6_addr + 12, 4);
		} else {
			p->kind = NBD_PEER_IPV6;
			memcpy(p->addr, a->s6_addr, 8);
		}
	}
}

const char *nbd_peer_name(const struct nbd_peer *p, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN];
	unsigned char v6[16] = {0};

	switch (p->kind) {
	case NBD_PEER_UID:
		snprintf(buf, len, "uid %u", p->uid);
		break;
	case NBD_PEER_IPV4:
		snprintf(buf, len, "%s", inet_ntop(AF_INET, p->addr, a, sizeof(a)) ?: "?");
		break;
	case NBD_PEER_IPV6:
		memcpy(v6, p->addr, 8);
		snprintf(buf, len, "%s/64", inet_ntop(AF_INET6, v6, a, sizeof(a)) ?: "?");
		break;
	default:
		snprintf(buf, len, "an unknown peer");
		break;
	}
	return buf;
}

static bool peer_same(const struct nbd_peer *a, const struct nbd_peer *b)
{
	if (a->kind != b->kind || a->kind == NBD_PEER_UNKNOWN)
		return false;
	if (a->kind == NBD_PEER_UID)
		return a->uid == b->uid;
	return !memcmp(a->addr, b->addr, a->kind == NBD_PEER_IPV4 ? 4 : 8);
}

int nbd_clients_admit(const struct nbd_peer *p, char *why, size_t len)
{
	const struct nbd_conn *c;
	unsigned n = 0;
	char name[64];

	/* Connections still draining after their socket closed count too:
	 * they hold memory until the tap gives their requests back. */
	if (cl.n >= lim.max_clients) {
		snprintf(why, len, "%u connections (limit %u)", cl.n, lim.max_clients);
		return -EUSERS;
	}
	/* uid 0 could stop the daemon anyway: sharing out slots against it
	 * protects nobody, and would cap the host's own consumers. */
	if (p->kind == NBD_PEER_UNKNOWN || (p->kind == NBD_PEER_UID && p->uid == 0))
		return 0;
	LIST_FOREACH (c, &cl.conns, link)
		if (peer_same(&c->peer, p))
			n++;
	if (n >= lim.max_clients_per_peer) {
		snprintf(why, len, "%u connections from %s (limit %u per peer)", n,
			 nbd_peer_name(p, name, sizeof(name)), lim.max_clients_per_peer);
		return -EMFILE;
	}
	return 0;
}
