/* NBD option haggling: the greeting, client flags, and the options a client
 * sends before transmission (EXPORT_NAME, GO, INFO, LIST, ABORT,
 * STRUCTURED_REPLY, LIST/SET_META_CONTEXT, STARTTLS, and error replies for
 * the rest), and the --tls policy. Replies collect in the connection's hs
 * buffer, and no option is read while NBD_HS_OUT_MAX of them wait: a
 * client that sends options and never reads the replies holds that much
 * and no more until its handshake deadline. A client that must be hung up
 * on is reported (nbd_fail and a negative errno) to the input side, which
 * passes it up to server.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "internal.h"
#include "server.h"

/* Room for n more handshake bytes; NULL (the caller fails the connection)
 * if memory is short. Handshake replies are small except LIST's, and
 * nbd_hs_consume reads no option while NBD_HS_OUT_MAX wait, so the buffer
 * grows to that and one option's replies at most. */
static unsigned char *hs_space(struct nbd_conn *c, size_t n)
{
	if (c->hs_off == c->hs_len)
		c->hs_off = c->hs_len = 0;
	if (c->hs_len + n > c->hs_cap && c->hs_off) {
		/* A client that reads slowly never empties the buffer: move
		 * what is left to the front instead of growing. */
		memmove(c->hs, c->hs + c->hs_off, c->hs_len - c->hs_off);
		c->hs_len -= c->hs_off;
		c->hs_off = 0;
	}
	if (c->hs_len + n > c->hs_cap) {
		size_t cap = MAX(c->hs_cap * 2, c->hs_len + n + 256);
		unsigned char *p = realloc(c->hs, cap);

		if (!p)
			return NULL;
		c->hs = p;
		c->hs_cap = cap;
	}
	return c->hs + c->hs_len;
}

static int hs_put(struct nbd_conn *c, const void *p, size_t n)
{
	unsigned char *d = hs_space(c, n);

	if (!d)
		return nbd_fail(c, -ENOMEM, "out of memory");
	memcpy(d, p, n);
	c->hs_len += n;
	return 0;
}

static int opt_reply(struct nbd_conn *c, uint32_t opt, uint32_t type, const char *msg)
{
	size_t len = msg ? strlen(msg) : 0;
	unsigned char *d = hs_space(c, NBD_OPT_REPLY_HDR_LEN + len);

	if (!d)
		return nbd_fail(c, -ENOMEM, "out of memory");
	nbd_encode_opt_reply(d, opt, type, len);
	if (len)
		memcpy(d + NBD_OPT_REPLY_HDR_LEN, msg, len);
	c->hs_len += NBD_OPT_REPLY_HDR_LEN + len;
	return 0;
}

/* Options refused are logged for the first NBD_HS_LOG_REFUSALS of each
 * connection only: a client that loops on them must not flood the log
 * (nor spend the loop's time writing it). */
static bool refusal_logged(struct nbd_conn *c)
{
	if (c->opt_refusals < NBD_HS_LOG_REFUSALS)
		return ++c->opt_refusals, true;
	if (c->opt_refusals++ == NBD_HS_LOG_REFUSALS)
		log_info("nbd: client %u: more options refused; not logging them", c->id);
	return false;
}

int nbd_hs_greet(struct nbd_conn *c)
{
	unsigned char *d = hs_space(c, NBD_GREETING_LEN);

	if (!d)
		return -ENOMEM;
	c->hs_len += nbd_encode_greeting(d);
	return 0;
}

static struct tap *find_export(const char *name, size_t len)
{
	char buf[TAP_NAME_MAX + 1];

	if (len > TAP_NAME_MAX || !nbd_name_valid(name, len))
		return NULL;
	memcpy(buf, name, len);
	buf[len] = '\0';
	return tap_find(buf);
}

uint16_t nbd_hs_export_flags(const struct tap *t, bool structured)
{
	struct nbd_caps caps = {
		.read_only = tap_read_only(t),
		.fast_zero = tap_can_fast_zero(t),
		.structured = structured,
	};

	return nbd_tx_flags(&caps);
}

/* Returns 0 or a negative errno (c failed). */
static int enter_transmission(struct nbd_conn *c, struct tap *t)
{
	c->tap = t; /* attached: detached by conn_destroy whatever happens */
	if (nbd_slots_alloc(c) < 0)
		return nbd_fail(c, -ENOMEM, "out of memory for the request table");
	c->tx = true;
	c->view.size = tap_size(t);
	c->view.tx_flags = nbd_hs_export_flags(t, c->structured);
	c->view.max_len = TAP_REQ_MAX;
	/* Contexts chosen for another export do not carry over. */
	c->view.meta = c->meta_set && strcmp(c->meta_export, tap_name(t)) == 0;
	c->rs = RS_HDR;
	log_info("nbd: client %u: export %s (%llu bytes%s%s%s)", c->id, tap_name(t),
		 (unsigned long long)c->view.size, tap_read_only(t) ? ", read-only" : "",
		 c->structured ? ", structured replies" : "",
		 c->view.meta ? ", base:allocation" : "");
	return 0;
}

int nbd_hs_adopt(struct nbd_conn *c, struct tap *t)
{
	c->structured = false;
	c->no_zeroes = true;
	return enter_transmission(c, t) < 0 ? -ENOMEM : 0;
}

/* The per-tap connection cap. Returns true (after logging and filling msg)
 * when t already has as many NBD clients as allowed. */
static bool tap_full(struct nbd_conn *c, struct tap *t, char *msg, size_t len)
{
	unsigned n = nbd_server_tap_conns(t), max = nbd_server_limits()->max_connections;

	if (n < max)
		return false;
	snprintf(msg, len, "tap %s has %u connections (limit %u)", tap_name(t), n, max);
	if (refusal_logged(c))
		log_notice("nbd: client %u refused: %s", c->id, msg);
	return true;
}

static int opt_export_name(struct nbd_conn *c, const unsigned char *data, uint32_t len)
{
	unsigned char reply[NBD_EXPORT_NAME_REPLY_LEN];
	struct tap *t = find_export((const char *)data, len);
	char msg[TAP_NAME_MAX + 64];
	size_t n;

	/* This option has no error reply: the protocol says hang up. */
	if (!t)
		return nbd_fail(c, -ENOENT, "EXPORT_NAME: no such export");
	if (tap_full(c, t, msg, sizeof(msg)))
		return nbd_fail(c, -EBUSY, NULL);
	if (tap_attach(t) < 0)
		return nbd_fail(c, -ESHUTDOWN, "EXPORT_NAME: export is shutting down");
	if (enter_transmission(c, t) < 0)
		return -ENOMEM;
	n = nbd_encode_export_name_reply(reply, c->view.size, c->view.tx_flags, c->no_zeroes);
	return hs_put(c, reply, n);
}

/* The NBD_REP_INFO replies of GO/INFO: the export always, block sizes
 * always (any alignment works, the preferred size avoids read-modify-write
 * in the tap), name and description when asked. */
static int put_infos(struct nbd_conn *c, uint32_t opt, struct tap *t, const struct nbd_opt_go *go)
{
	unsigned char buf[NBD_INFO_EXPORT_LEN + NBD_INFO_BLOCK_SIZE_LEN];
	const char *name = tap_name(t), *desc = tap_image(t);
	size_t n;

	n = nbd_encode_info_export(buf, opt, tap_size(t), nbd_hs_export_flags(t, c->structured));
	n += nbd_encode_info_block_size(buf + n, opt, 1, MAX(4096u, tap_align(t)), TAP_REQ_MAX);
	if (hs_put(c, buf, n) < 0)
		return -ENOMEM;
	if (nbd_opt_go_wants(go, NBD_INFO_NAME)) {
		unsigned char *d = hs_space(c, NBD_OPT_REPLY_HDR_LEN + 2 + strlen(name));

		if (!d)
			goto nomem;
		c->hs_len +=
			nbd_encode_info_string(d, opt, NBD_INFO_NAME, name, (uint32_t)strlen(name));
	}
	if (nbd_opt_go_wants(go, NBD_INFO_DESCRIPTION)) {
		size_t dl = MIN(strlen(desc), (size_t)NBD_NAME_MAX);
		unsigned char *d = hs_space(c, NBD_OPT_REPLY_HDR_LEN + 2 + dl);

		if (!d)
			goto nomem;
		c->hs_len +=
			nbd_encode_info_string(d, opt, NBD_INFO_DESCRIPTION, desc, (uint32_t)dl);
	}
	return 0;
nomem:
	return nbd_fail(c, -ENOMEM, "out of memory");
}

static int opt_go(struct nbd_conn *c, uint32_t opt, const unsigned char *data, uint32_t len)
{
	struct nbd_opt_go go;
	struct tap *t;
	char msg[TAP_NAME_MAX + 64];
	int ret;

	if (nbd_parse_opt_go(data, len, &go) < 0)
		return opt_reply(c, opt, NBD_REP_ERR_INVALID, "malformed request");
	t = find_export(go.name, go.name_len);
	if (!t) {
		snprintf(msg, sizeof(msg), "no such export: %.*s", (int)MIN(go.name_len, 64u),
			 go.name);
		if (refusal_logged(c))
			log_info("nbd: client %u: %s", c->id, msg);
		return opt_reply(c, opt, NBD_REP_ERR_UNKNOWN, msg);
	}
	if (opt == NBD_OPT_GO) {
		if (tap_full(c, t, msg, sizeof(msg)))
			return opt_reply(c, opt, NBD_REP_ERR_POLICY, msg);
		if (tap_attach(t) < 0)
			return opt_reply(c, opt, NBD_REP_ERR_SHUTDOWN, "export is shutting down");
		c->tap = t; /* detached by conn_destroy whatever happens next */
	}
	if ((ret = put_infos(c, opt, t, &go)) < 0 ||
	    (ret = opt_reply(c, opt, NBD_REP_ACK, NULL)) < 0)
		return ret;
	if (opt == NBD_OPT_GO)
		return enter_transmission(c, t);
	return 0;
}

static int opt_structured_reply(struct nbd_conn *c, uint32_t len)
{
	if (len)
		return opt_reply(c, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_INVALID,
				 "STRUCTURED_REPLY takes no data");
	c->structured = true;
	return opt_reply(c, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NULL);
}

/* LIST_META_CONTEXT and SET_META_CONTEXT: we know one context,
 * base:allocation; unknown queries simply select nothing. */
static int opt_meta_context(struct nbd_conn *c, uint32_t opt, const unsigned char *data,
			    uint32_t len)
{
	bool list = opt == NBD_OPT_LIST_META_CONTEXT;
	struct nbd_opt_meta m;
	struct tap *t;
	bool base;
	unsigned char *d;

	if (!list) {
		/* A failed SET leaves nothing selected. */
		c->meta_set = false;
		if (!c->structured)
			return opt_reply(c, opt, NBD_REP_ERR_INVALID,
					 "SET_META_CONTEXT needs structured replies first");
	}
	if (nbd_parse_opt_meta(data, len, &m) < 0)
		return opt_reply(c, opt, NBD_REP_ERR_INVALID, "malformed request");
	t = find_export(m.name, m.name_len);
	if (!t)
		return opt_reply(c, opt, NBD_REP_ERR_UNKNOWN, "no such export");
	base = nbd_meta_selects_base(&m, list);
	if (base) {
		d = hs_space(c, NBD_OPT_REPLY_HDR_LEN + 4 + strlen(NBD_CONTEXT_BASE_ALLOCATION));
		if (!d)
			return nbd_fail(c, -ENOMEM, "out of memory");
		/* LIST replies carry id 0 (reserved). */
		c->hs_len += nbd_encode_meta_context(d, opt, list ? 0 : NBD_CONTEXT_ID_BASE,
						     NBD_CONTEXT_BASE_ALLOCATION);
	}
	if (!list && base) {
		c->meta_set = true;
		strcpy(c->meta_export, tap_name(t));
	}
	return opt_reply(c, opt, NBD_REP_ACK, NULL);
}

static int opt_list(struct nbd_conn *c, uint32_t len)
{
	if (len)
		return opt_reply(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID, "LIST takes no data");
	for (struct tap *t = tap_first(); t; t = tap_next(t)) {
		const char *name = tap_name(t);
		size_t nl = strlen(name);
		unsigned char *d = hs_space(c, NBD_OPT_REPLY_HDR_LEN + 4 + nl);

		if (!d)
			return nbd_fail(c, -ENOMEM, "out of memory");
		c->hs_len += nbd_encode_rep_server(d, name, (uint32_t)nl);
	}
	return opt_reply(c, NBD_OPT_LIST, NBD_REP_ACK, NULL);
}

/* STARTTLS: acknowledge in the clear, then the input side runs the TLS
 * handshake (RS_TLS) before reading the next option. */
static int opt_starttls(struct nbd_conn *c, uint32_t len)
{
	int ret;

	if (c->tls)
		return opt_reply(c, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID, "TLS is already on");
	if (len)
		return opt_reply(c, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID,
				 "STARTTLS takes no data");
	/* Bytes sent before our ACK cannot be a ClientHello we could hand
	 * over: the client broke the protocol. */
	if (c->in_start != c->in_end)
		return nbd_fail(c, -EPROTO, "data after STARTTLS before its reply");
	/* The session is the connection's from now on: server.c frees it,
	 * and the connection's handshake deadline covers TLS's. */
	c->tls = nbd_tls_new(c->fd, c->id);
	if (!c->tls)
		return opt_reply(c, NBD_OPT_STARTTLS, NBD_REP_ERR_POLICY, "TLS is unavailable now");
	ret = opt_reply(c, NBD_OPT_STARTTLS, NBD_REP_ACK, NULL);
	if (ret < 0)
		return ret; /* c failed: nothing more with it */
	c->rs = RS_TLS;
	c->rerun = true; /* flush the ACK, then shake hands */
	return ret;
}

/* With --tls require, only STARTTLS and ABORT are heard in the clear.
 * Returns 1 when the option was refused, 0 when it may go on, or a
 * negative errno (c failed). */
static int tls_required(struct nbd_conn *c, uint32_t opt)
{
	char msg[96];

	if (nbd_tls_mode() != NBD_TLS_REQUIRE || c->tls || opt == NBD_OPT_STARTTLS ||
	    opt == NBD_OPT_ABORT)
		return 0;
	/* EXPORT_NAME has no error reply: the protocol says hang up. */
	if (opt == NBD_OPT_EXPORT_NAME)
		return nbd_fail(c, -EACCES, "EXPORT_NAME without TLS (TLS is required)");
	snprintf(msg, sizeof(msg), "TLS is required: send STARTTLS before %s", nbd_opt_name(opt));
	if (refusal_logged(c))
		log_debug("nbd: client %u: %s", c->id, msg);
	return opt_reply(c, opt, NBD_REP_ERR_TLS_REQD, msg) ?: 1;
}

/* Returns 0 or a negative errno (c failed). */
static int handle_option(struct nbd_conn *c, uint32_t opt, const unsigned char *data, uint32_t len)
{
	char msg[64];
	int ret;

	if ((ret = tls_required(c, opt)))
		return MIN(ret, 0);
	if (opt == NBD_OPT_STARTTLS && nbd_tls_mode() != NBD_TLS_OFF)
		return opt_starttls(c, len);
	switch (opt) {
	case NBD_OPT_EXPORT_NAME:
		return opt_export_name(c, data, len);
	case NBD_OPT_GO:
	case NBD_OPT_INFO:
		return opt_go(c, opt, data, len);
	case NBD_OPT_LIST:
		return opt_list(c, len);
	case NBD_OPT_STRUCTURED_REPLY:
		return opt_structured_reply(c, len);
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		return opt_meta_context(c, opt, data, len);
	case NBD_OPT_ABORT:
		ret = opt_reply(c, opt, NBD_REP_ACK, NULL);
		c->closing = true;
		c->rs = RS_STOP;
		return ret;
	default:
		snprintf(msg, sizeof(msg), "option %s (%u) not supported", nbd_opt_name(opt), opt);
		if (refusal_logged(c))
			log_debug("nbd: client %u: %s", c->id, msg);
		return opt_reply(c, opt, NBD_REP_ERR_UNSUP, msg);
	}
}

int nbd_hs_opt_discarded(struct nbd_conn *c)
{
	c->rs = RS_OPT;
	return opt_reply(c, c->discard_opt, NBD_REP_ERR_TOO_BIG, "option too long");
}

int nbd_hs_consume(struct nbd_conn *c)
{
	unsigned char *p = c->in + c->in_start;
	size_t avail = c->in_end - c->in_start;
	struct nbd_opt_hdr oh;
	bool nz;

	if (c->rs == RS_FLAGS) {
		if (avail < NBD_CLIENT_FLAGS_LEN)
			return 0;
		if (nbd_parse_client_flags(p, &nz) < 0)
			return nbd_fail(c, -EPROTO, "unknown client flags");
		c->no_zeroes = nz;
		c->in_start += NBD_CLIENT_FLAGS_LEN;
		c->rs = RS_OPT;
		return 1;
	}
	/* RS_OPT */
	if (c->closing)
		return -EAGAIN;
	/* Output cap: wait (not reading) until the client takes replies. */
	if (c->hs_len - c->hs_off >= NBD_HS_OUT_MAX) {
		if (!c->hs_full)
			log_debug("nbd: client %u: %zu bytes of replies unread: not reading", c->id,
				  c->hs_len - c->hs_off);
		c->hs_full = true;
		return -EAGAIN;
	}
	if (avail < NBD_OPT_HDR_LEN)
		return 0;
	if (nbd_parse_opt_hdr(p, &oh) < 0)
		return nbd_fail(c, -EPROTO, "bad option magic");
	if (oh.len > NBD_OPT_DATA_MAX) {
		if (oh.opt == NBD_OPT_EXPORT_NAME || oh.len > NBD_OPT_DISCARD_MAX)
			return nbd_fail(c, -EMSGSIZE, "option too long");
		/* Dropped by the input side, then refused by
		 * nbd_hs_opt_discarded. */
		c->in_start += NBD_OPT_HDR_LEN;
		c->discard = oh.len;
		c->discard_opt = oh.opt;
		c->rs = RS_DISCARD;
		return 1;
	}
	if (avail < NBD_OPT_HDR_LEN + oh.len)
		return 0;
	c->in_start += NBD_OPT_HDR_LEN + oh.len;
	return handle_option(c, oh.opt, p + NBD_OPT_HDR_LEN, oh.len) ?: 1;
}
