/* The client's side of the NBD wire format: URIs, what the nbd: driver
 * sends and how it reads what a server answers. Every check on server
 * input lives here so that a lying server is refused in one place. */
#include "client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decode s[0..n) into out (cap bytes, NUL terminated). Returns the
 * decoded length or -1 (bad escape, too long, or a NUL inside). */
static long pct_decode(const char *s, size_t n, char *out, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == '%') {
			int hi, lo;

			if (i + 2 >= n)
				return -1;
			hi = hexval(s[i + 1]);
			lo = hexval(s[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return -1;
			c = (char)(hi << 4 | lo);
			i += 2;
		}
		if (o + 1 >= cap)
			return -1;
		out[o++] = c;
	}
	out[o] = 0;
	return (long)o;
}

static int uri_query(const char *q, struct nbdc_uri *u, struct errbuf *eb)
{
	while (*q) {
		size_t n = strcspn(q, "&");
		const char *eq = memchr(q, '=', n);
		size_t klen = eq ? (size_t)(eq - q) : n;
		const char *v = eq ? eq + 1 : q + n;
		size_t vlen = (size_t)(q + n - v);

		if (klen == 6 && !strncmp(q, "socket", 6)) {
			if (!u->is_unix) {
				err_set(eb, "nbd: socket= is only for nbd+unix:// URIs");
				return -EINVAL;
			}
			if (pct_decode(v, vlen, u->socket, sizeof(u->socket)) <= 0) {
				err_set(eb, "nbd: bad or too long socket path in URI");
				return -EINVAL;
			}
		} else if (klen == 7 && !strncmp(q, "timeout", 7)) {
			char buf[16], *end;
			unsigned long t;

			if (vlen == 0 || vlen >= sizeof(buf)) {
				err_set(eb, "nbd: bad timeout= in URI");
				return -EINVAL;
			}
			memcpy(buf, v, vlen);
			buf[vlen] = 0;
			t = strtoul(buf, &end, 10);
			if (*end || t == 0 || t > 86400) {
				err_set(eb, "nbd: timeout=%s: want 1 to 86400 seconds", buf);
				return -EINVAL;
			}
			u->timeout = (unsigned)t;
		} else if (n) {
			err_set(eb, "nbd: unknown URI parameter '%.*s' (known: socket, timeout)",
				(int)klen, q);
			return -EINVAL;
		}
		q += n;
		if (*q == '&')
			q++;
	}
	return 0;
}

/* HOST[:PORT] or [V6]:PORT from s[0..n). */
static int uri_authority(const char *s, size_t n, struct nbdc_uri *u, struct errbuf *eb)
{
	const char *host = s, *port = NULL;
	size_t hlen = n;

	if (n && s[0] == '[') {
		const char *close = memchr(s, ']', n);

		if (!close)
			goto bad;
		host = s + 1;
		hlen = (size_t)(close - host);
		if (close + 1 < s + n) {
			if (close[1] != ':')
				goto bad;
			port = close + 2;
		}
	} else {
		const char *colon = memchr(s, ':', n);

		if (colon) {
			hlen = (size_t)(colon - s);
			port = colon + 1;
		}
	}
	if (hlen == 0 || hlen >= sizeof(u->host))
		goto bad;
	memcpy(u->host, host, hlen);
	u->host[hlen] = 0;
	if (port) {
		size_t plen = (size_t)(s + n - port);

		if (plen == 0 || plen >= sizeof(u->port) || strspn(port, "0123456789") < plen)
			goto bad;
		memcpy(u->port, port, plen);
		u->port[plen] = 0;
		if (atoi(u->port) < 1 || atoi(u->port) > 65535)
			goto bad;
	} else {
		strcpy(u->port, NBDC_DEFAULT_PORT);
	}
	return 0;
bad:
	err_set(eb, "nbd: bad host or port '%.*s' in URI", (int)n, s);
	return -EINVAL;
}

int nbdc_uri_parse(const char *s, struct nbdc_uri *u, struct errbuf *eb)
{
	const char *rest, *path, *query;
	long len;
	int ret;

	memset(u, 0, sizeof(*u));
	if (!strncmp(s, "nbd+unix://", 11)) {
		u->is_unix = true;
		rest = s + 11;
	} else if (!strncmp(s, "nbd://", 6)) {
		rest = s + 6;
	} else if (!strncmp(s, "nbds", 4)) {
		err_set(eb, "nbd: TLS (nbds://) is not supported by the nbd: driver");
		return -EINVAL;
	} else {
		err_set(eb,
			"nbd: bad URI '%s': want nbd+unix:///EXPORT?socket=PATH or "
			"nbd://HOST[:PORT]/EXPORT",
			s);
		return -EINVAL;
	}
	path = rest + strcspn(rest, "/?");
	if (u->is_unix) {
		if (path != rest && ((size_t)(path - rest) != 9 || strncmp(rest, "localhost", 9))) {
			err_set(eb, "nbd: nbd+unix:// URIs take no host "
				    "(nbd+unix:///EXPORT?socket=PATH)");
			return -EINVAL;
		}
	} else {
		ret = uri_authority(rest, (size_t)(path - rest), u, eb);
		if (ret < 0)
			return ret;
	}
	query = path + strcspn(path, "?");
	if (*path == '/') {
		len = pct_decode(path + 1, (size_t)(query - path - 1), u->name, sizeof(u->name));
		if (len < 0) {
			err_set(eb,
				"nbd: bad export name in URI (escape, NUL or longer than %d bytes)",
				NBD_NAME_MAX);
			return -EINVAL;
		}
		u->name_len = (uint32_t)len;
	}
	if (*query == '?') {
		ret = uri_query(query + 1, u, eb);
		if (ret < 0)
			return ret;
	}
	if (u->is_unix && !u->socket[0]) {
		err_set(eb, "nbd: nbd+unix:// URI without ?socket=PATH");
		return -EINVAL;
	}
	return 0;
}

int nbdc_parse_greeting(const void *buf, uint16_t *hs_flags)
{
	const unsigned char *p = buf;

	if (get_be64(p) != NBD_MAGIC)
		return -EBADMSG;
	if (get_be64(p + 8) == NBD_OLDSTYLE_MAGIC)
		return -EPROTONOSUPPORT;
	if (get_be64(p + 8) != NBD_IHAVEOPT)
		return -EBADMSG;
	*hs_flags = get_be16(p + 16);
	return 0;
}

size_t nbdc_encode_opt(void *buf, uint32_t opt, uint32_t len)
{
	unsigned char *p = buf;

	put_be64(p, NBD_IHAVEOPT);
	put_be32(p + 8, opt);
	put_be32(p + 12, len);
	return NBD_OPT_HDR_LEN;
}

size_t nbdc_encode_opt_go(void *buf, const char *name, uint32_t name_len)
{
	unsigned char *p = buf;
	size_t n = nbdc_encode_opt(p, NBD_OPT_GO, 4 + name_len + 2 + 2);

	put_be32(p + n, name_len);
	memcpy(p + n + 4, name, name_len);
	n += 4 + name_len;
	put_be16(p + n, 1); /* one info request */
	put_be16(p + n + 2, NBD_INFO_BLOCK_SIZE);
	return n + 4;
}

int nbdc_parse_opt_reply(const void *buf, struct nbdc_opt_reply *r)
{
	const unsigned char *p = buf;

	if (get_be64(p) != NBD_REP_MAGIC)
		return -EBADMSG;
	r->opt = get_be32(p + 8);
	r->type = get_be32(p + 12);
	r->len = get_be32(p + 16);
	return 0;
}

static bool pow2(uint32_t v)
{
	return v && !(v & (v - 1));
}

int nbdc_parse_info(const void *data, uint32_t len, struct nbdc_export *x)
{
	const unsigned char *p = data;

	if (len < 2)
		return -EBADMSG;
	switch (get_be16(p)) {
	case NBD_INFO_EXPORT:
		if (len != 12)
			return -EBADMSG;
		x->size = get_be64(p + 2);
		x->tx_flags = get_be16(p + 10);
		x->have_export = true;
		return 0;
	case NBD_INFO_BLOCK_SIZE:
		if (len != 14)
			return -EBADMSG;
		x->min_block = get_be32(p + 2);
		x->pref_block = get_be32(p + 6);
		x->max_block = get_be32(p + 10);
		/* The protocol: powers of two for min and preferred, min at
		 * most 64K, max a multiple of min and at least preferred. */
		if (!pow2(x->min_block) || x->min_block > 65536 || !pow2(x->pref_block) ||
		    x->max_block < x->min_block || x->max_block % x->min_block)
			return -EBADMSG;
		return 0;
	default:
		return 0;
	}
}

void nbdc_parse_export_name_reply(const void *buf, struct nbdc_export *x)
{
	const unsigned char *p = buf;

	x->size = get_be64(p);
	x->tx_flags = get_be16(p + 8);
	x->have_export = true;
}

size_t nbdc_encode_request(void *buf, uint16_t flags, uint16_t type, uint64_t cookie, uint64_t off,
			   uint32_t len)
{
	unsigned char *p = buf;

	put_be32(p, NBD_REQUEST_MAGIC);
	put_be16(p + 4, flags);
	put_be16(p + 6, type);
	put_be64(p + 8, cookie);
	put_be64(p + 16, off);
	put_be32(p + 24, len);
	return NBD_REQUEST_LEN;
}

int nbdc_parse_simple_reply(const void *buf, uint32_t *error, uint64_t *cookie)
{
	const unsigned char *p = buf;

	if (get_be32(p) != NBD_SIMPLE_REPLY_MAGIC)
		return -EBADMSG;
	*error = get_be32(p + 4);
	*cookie = get_be64(p + 8);
	return 0;
}

int nbdc_error_to_errno(uint32_t error)
{
	switch (error) {
	case 0:
		return 0;
	case NBD_EPERM:
		return -EPERM;
	case NBD_ENOMEM:
		return -ENOMEM;
	case NBD_EINVAL:
		return -EINVAL;
	case NBD_ENOSPC:
		return -ENOSPC;
	case NBD_EOVERFLOW:
		return -EOVERFLOW;
	case NBD_ENOTSUP:
		return -EOPNOTSUPP;
	case NBD_ESHUTDOWN:
		return -ESHUTDOWN;
	default:
		return -EIO;
	}
}

const char *nbdc_rep_err_name(uint32_t type)
{
	switch (type) {
	case NBD_REP_ERR_UNSUP:
		return "option not supported";
	case NBD_REP_ERR_POLICY:
		return "refused by server policy";
	case NBD_REP_ERR_INVALID:
		return "invalid request";
	case NBD_REP_ERR_TLS_REQD:
		return "server requires TLS";
	case NBD_REP_ERR_UNKNOWN:
		return "no such export";
	case NBD_REP_ERR_SHUTDOWN:
		return "server is shutting down";
	case NBD_REP_ERR_TOO_BIG:
		return "request too big";
	default:
		return "error";
	}
}
