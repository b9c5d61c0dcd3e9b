/* The NBD server's clients as a whole: the list of live connections and
 * the limits that apply to them (bytes in flight per client, connections
 * per tap). Pure bookkeeping below every other part: server.c adds and
 * removes connections, the others only ask. */
#include "internal.h"
#include "server.h"

static struct {
	LIST_HEAD(, nbd_conn) conns;
	unsigned n;
	uint64_t max_client_bytes;
	unsigned max_connections;
} cl = {
	.conns = LIST_HEAD_INITIALIZER(cl.conns),
	.max_client_bytes = NBD_DEFAULT_MAX_CLIENT_BYTES,
	.max_connections = NBD_DEFAULT_MAX_CONNECTIONS,
};

void nbd_server_set_limits(uint64_t max_client_bytes, unsigned max_connections)
{
	cl.max_client_bytes = max_client_bytes;
	cl.max_connections = max_connections;
}

uint64_t nbd_server_max_client_bytes(void)
{
	return cl.max_client_bytes;
}

unsigned nbd_server_max_connections(void)
{
	return cl.max_connections;
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
