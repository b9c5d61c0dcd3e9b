/* NBD wire format: parsing and encoding with no I/O, so that every rule
 * about what a client may send is checked here and unit-tested in
 * tests/unit/check-nbd-proto.c. Structured reply chunks are in exports/nbd/chunk.c,
 * the connection logic in exports/nbd/conn.c and handshake.c. */
#include <errno.h>
#include <string.h>

#include "proto.h"

size_t nbd_encode_greeting(void *buf)
{
	unsigned char *b = buf;

	put_be64(b, NBD_MAGIC);
	put_be64(b + 8, NBD_IHAVEOPT);
	put_be16(b + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	return NBD_GREETING_LEN;
}

int nbd_parse_client_flags(const void *buf, bool *no_zeroes)
{
	uint32_t f = get_be32(buf);

	/* Both flags we know are offered, so only unknown bits are wrong.
	 * A client without FIXED_NEWSTYLE is served anyway: we never rely on
	 * anything it would not understand except option error replies. */
	if (f & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
		return -EPROTO;
	*no_zeroes = f & NBD_FLAG_C_NO_ZEROES;
	return 0;
}

int nbd_parse_opt_hdr(const void *buf, struct nbd_opt_hdr *h)
{
	const unsigned char *b = buf;

	if (get_be64(b) != NBD_IHAVEOPT)
		return -EBADMSG;
	h->opt = get_be32(b + 8);
	h->len = get_be32(b + 12);
	return 0;
}

bool nbd_name_valid(const char *name, size_t len)
{
	return len <= NBD_NAME_MAX && !memchr(name, '\0', len);
}

int nbd_parse_opt_go(const void *data, uint32_t len, struct nbd_opt_go *go)
{
	const unsigned char *b = data;
	uint64_t need;

	if (len < 6)
		return -EINVAL;
	go->name_len = get_be32(b);
	/* 64-bit sum: a name length near 4G must not wrap around. */
	need = 4 + (uint64_t)go->name_len + 2;
	if (need > len)
		return -EINVAL;
	go->name = (const char *)b + 4;
	go->n_info = get_be16(b + 4 + go->name_len);
	go->info = b + 4 + go->name_len + 2;
	if (need + 2 * (uint64_t)go->n_info != len)
		return -EINVAL;
	if (!nbd_name_valid(go->name, go->name_len))
		return -EINVAL;
	return 0;
}

bool nbd_opt_go_wants(const struct nbd_opt_go *go, uint16_t t)
{
	for (uint16_t i = 0; i < go->n_info; i++)
		if (get_be16(go->info + 2 * i) == t)
			return true;
	return false;
}

size_t nbd_encode_opt_reply(void *buf, uint32_t opt, uint32_t type, uint32_t len)
{
	unsigned char *b = buf;

	put_be64(b, NBD_REP_MAGIC);
	put_be32(b + 8, opt);
	put_be32(b + 12, type);
	put_be32(b + 16, len);
	return NBD_OPT_REPLY_HDR_LEN;
}

size_t nbd_encode_rep_server(void *buf, const char *name, uint32_t name_len)
{
	unsigned char *b = buf;

	nbd_encode_opt_reply(b, NBD_OPT_LIST, NBD_REP_SERVER, 4 + name_len);
	put_be32(b + NBD_OPT_REPLY_HDR_LEN, name_len);
	memcpy(b + NBD_OPT_REPLY_HDR_LEN + 4, name, name_len);
	return NBD_OPT_REPLY_HDR_LEN + 4 + name_len;
}

size_t nbd_encode_info_export(void *buf, uint32_t opt, uint64_t size, uint16_t tx_flags)
{
	unsigned char *b = buf;

	nbd_encode_opt_reply(b, opt, NBD_REP_INFO, 12);
	b += NBD_OPT_REPLY_HDR_LEN;
	put_be16(b, NBD_INFO_EXPORT);
	put_be64(b + 2, size);
	put_be16(b + 10, tx_flags);
	return NBD_INFO_EXPORT_LEN;
}

size_t nbd_encode_info_block_size(void *buf, uint32_t opt, uint32_t min, uint32_t pref,
				  uint32_t max)
{
	unsigned char *b = buf;

	nbd_encode_opt_reply(b, opt, NBD_REP_INFO, 14);
	b += NBD_OPT_REPLY_HDR_LEN;
	put_be16(b, NBD_INFO_BLOCK_SIZE);
	put_be32(b + 2, min);
	put_be32(b + 6, pref);
	put_be32(b + 10, max);
	return NBD_INFO_BLOCK_SIZE_LEN;
}

size_t nbd_encode_export_name_reply(void *buf, uint64_t size, uint16_t tx_flags, bool no_zeroes)
{
	unsigned char *b = buf;

	put_be64(b, size);
	put_be16(b + 8, tx_flags);
	if (no_zeroes)
		return 10;
	memset(b + 10, 0, 124);
	return NBD_EXPORT_NAME_REPLY_LEN;
}

size_t nbd_encode_info_string(void *buf, uint32_t opt, uint16_t type, const char *str, uint32_t len)
{
	unsigned char *b = buf;

	nbd_encode_opt_reply(b, opt, NBD_REP_INFO, 2 + len);
	put_be16(b + NBD_OPT_REPLY_HDR_LEN, type);
	memcpy(b + NBD_OPT_REPLY_HDR_LEN + 2, str, len);
	return NBD_OPT_REPLY_HDR_LEN + 2 + len;
}

size_t nbd_encode_meta_context(void *buf, uint32_t opt, uint32_t id, const char *name)
{
	unsigned char *b = buf;
	uint32_t len = (uint32_t)strlen(name);

	nbd_encode_opt_reply(b, opt, NBD_REP_META_CONTEXT, 4 + len);
	put_be32(b + NBD_OPT_REPLY_HDR_LEN, id);
	memcpy(b + NBD_OPT_REPLY_HDR_LEN + 4, name, len);
	return NBD_OPT_REPLY_HDR_LEN + 4 + len;
}

/* One length-prefixed string at *pos of data[0, len): checks that it fits
 * and is valid, then moves *pos past it. 64-bit arithmetic throughout so a
 * length near 4G cannot wrap. */
static int take_string(const unsigned char *data, uint32_t len, uint64_t *pos, const char **s,
		       uint32_t *slen)
{
	if (*pos + 4 > len)
		return -EINVAL;
	*slen = get_be32(data + *pos);
	*pos += 4;
	if (*pos + *slen > len)
		return -EINVAL;
	*s = (const char *)data + *pos;
	*pos += *slen;
	return nbd_name_valid(*s, *slen) ? 0 : -EINVAL;
}

int nbd_parse_opt_meta(const void *data, uint32_t len, struct nbd_opt_meta *m)
{
	const unsigned char *b = data;
	uint64_t pos = 0;
	const char *q;
	uint32_t qlen;

	if (take_string(b, len, &pos, &m->name, &m->name_len) < 0 || pos + 4 > len)
		return -EINVAL;
	m->n_queries = get_be32(b + pos);
	pos += 4;
	m->queries = b + pos;
	m->queries_len = len - (uint32_t)pos;
	/* Each query takes at least its 4-byte length: a huge count cannot
	 * make us loop long before the data runs out. */
	for (uint32_t i = 0; i < m->n_queries; i++)
		if (take_string(b, len, &pos, &q, &qlen) < 0)
			return -EINVAL;
	return pos == len ? 0 : -EINVAL;
}

static bool str_is(const char *s, uint32_t len, const char *lit)
{
	return len == strlen(lit) && memcmp(s, lit, len) == 0;
}

bool nbd_meta_selects_base(const struct nbd_opt_meta *m, bool list)
{
	uint64_t pos = 0;
	const char *q;
	uint32_t qlen;

	if (list && m->n_queries == 0)
		return true;
	for (uint32_t i = 0; i < m->n_queries; i++) {
		/* Already validated by nbd_parse_opt_meta. */
		if (take_string(m->queries, m->queries_len, &pos, &q, &qlen) < 0)
			return false;
		if (str_is(q, qlen, NBD_CONTEXT_BASE_ALLOCATION))
			return true;
		if (list && str_is(q, qlen, "base:"))
			return true;
	}
	return false;
}

uint16_t nbd_tx_flags(const struct nbd_caps *caps)
{
	/* FLUSH and CACHE are harmless everywhere (a no-op where nothing is
	 * cached); every connection to a tap shares its one image, so a
	 * flush on any of them covers all: multi-conn is true. */
	uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_CACHE |
		     NBD_FLAG_CAN_MULTI_CONN;

	if (caps->structured)
		f |= NBD_FLAG_SEND_DF;
	if (caps->read_only)
		return f | NBD_FLAG_READ_ONLY;
	/* FUA is honoured by the tap (a no-op where the image has no cache);
	 * TRIM and WRITE_ZEROES work on every image. */
	f |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;
	if (caps->fast_zero)
		f |= NBD_FLAG_SEND_FAST_ZERO;
	return f;
}

int nbd_parse_request(const void *buf, struct nbd_request *r)
{
	const unsigned char *b = buf;

	if (get_be32(b) != NBD_REQUEST_MAGIC)
		return -EBADMSG;
	r->flags = get_be16(b + 4);
	r->type = get_be16(b + 6);
	r->cookie = get_be64(b + 8);
	r->off = get_be64(b + 16);
	r->len = get_be32(b + 24);
	return 0;
}

/* Validity of [off, off + len) for a zero-length request, which we answer
 * ourselves: at or before the end is fine. */
static uint32_t empty_range_error(const struct nbd_request *r, uint64_t size, bool write)
{
	if (r->off <= size)
		return 0;
	return write ? NBD_ENOSPC : NBD_EINVAL;
}

/* A request that writes nothing but carries no payload either. */
static enum nbd_action no_payload(const struct nbd_request *r, const struct nbd_export_view *x,
				  uint16_t allowed, bool writes, uint32_t *error)
{
	if (writes && (x->tx_flags & NBD_FLAG_READ_ONLY))
		*error = NBD_EPERM;
	else if ((r->flags & ~allowed) || r->off + r->len < r->off)
		*error = NBD_EINVAL;
	else if (r->len == 0)
		*error = empty_range_error(r, x->size, writes);
	else
		return NBD_ACT_SUBMIT;
	return NBD_ACT_REPLY;
}

enum nbd_action nbd_classify(const struct nbd_request *r, const struct nbd_export_view *x,
			     uint32_t *error)
{
	/* FUA is valid on every command (a no-op except on writes). */
	uint16_t allowed = NBD_CMD_FLAG_FUA;
	bool wraps = r->off + r->len < r->off;

	*error = 0;
	switch (r->type) {
	case NBD_CMD_READ:
		/* DF only once offered, i.e. with structured replies. */
		if (x->tx_flags & NBD_FLAG_SEND_DF)
			allowed |= NBD_CMD_FLAG_DF;
		if ((r->flags & ~allowed) || wraps || r->len > x->max_len) {
			*error = NBD_EINVAL;
			return NBD_ACT_REPLY;
		}
		if (r->len == 0) {
			*error = empty_range_error(r, x->size, false);
			return NBD_ACT_REPLY;
		}
		return NBD_ACT_READ;
	case NBD_CMD_WRITE:
		if (r->len > x->max_len)
			return NBD_ACT_HANGUP;
		if (x->tx_flags & NBD_FLAG_READ_ONLY)
			*error = NBD_EPERM;
		else if ((r->flags & ~allowed) || wraps)
			*error = NBD_EINVAL;
		else if (r->len == 0)
			*error = empty_range_error(r, x->size, true);
		else
			return NBD_ACT_WRITE;
		return r->len ? NBD_ACT_DISCARD : NBD_ACT_REPLY;
	case NBD_CMD_FLUSH:
		/* Offset and length are reserved (zero); old clients sent
		 * garbage there, so they are ignored rather than refused. */
		if (r->flags & ~allowed) {
			*error = NBD_EINVAL;
			return NBD_ACT_REPLY;
		}
		return NBD_ACT_SUBMIT;
	case NBD_CMD_TRIM:
		return no_payload(r, x, allowed, true, error);
	case NBD_CMD_WRITE_ZEROES:
		/* FAST_ZERO goes to the tap even where not offered: it answers
		 * ENOTSUP, which is the truth. */
		allowed |= NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
		return no_payload(r, x, allowed, true, error);
	case NBD_CMD_CACHE:
		return no_payload(r, x, allowed, false, error);
	case NBD_CMD_BLOCK_STATUS:
		allowed |= NBD_CMD_FLAG_REQ_ONE;
		/* Checked here rather than by the tap: the connection may ask
		 * the tap for less than the client did. */
		if (!x->meta || (r->flags & ~allowed) || r->len == 0 || r->off > x->size ||
		    r->len > x->size - r->off) {
			*error = NBD_EINVAL;
			return NBD_ACT_REPLY;
		}
		return NBD_ACT_BLOCK_STATUS;
	case NBD_CMD_DISC:
		return NBD_ACT_DISC;
	default:
		*error = NBD_EINVAL;
		return NBD_ACT_REPLY;
	}
}

size_t nbd_encode_simple_reply(void *buf, uint32_t error, uint64_t cookie)
{
	unsigned char *b = buf;

	put_be32(b, NBD_SIMPLE_REPLY_MAGIC);
	put_be32(b + 4, error);
	put_be64(b + 8, cookie);
	return NBD_SIMPLE_REPLY_LEN;
}

uint32_t nbd_errno_to_nbd(int err)
{
	switch (err < 0 ? -err : err) {
	case 0:
		return 0;
	case EPERM:
	case EROFS:
		return NBD_EPERM;
	case EIO:
		return NBD_EIO;
	case ENOMEM:
		return NBD_ENOMEM;
	case EINVAL:
		return NBD_EINVAL;
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
		return NBD_ENOSPC;
	case EOVERFLOW:
		return NBD_EOVERFLOW;
	case ENOTSUP:
		return NBD_ENOTSUP;
	case ESHUTDOWN:
		return NBD_ESHUTDOWN;
	default:
		return NBD_EIO;
	}
}

const char *nbd_opt_name(uint32_t opt)
{
	switch (opt) {
	case NBD_OPT_EXPORT_NAME:
		return "EXPORT_NAME";
	case NBD_OPT_ABORT:
		return "ABORT";
	case NBD_OPT_LIST:
		return "LIST";
	case NBD_OPT_STARTTLS:
		return "STARTTLS";
	case NBD_OPT_INFO:
		return "INFO";
	case NBD_OPT_GO:
		return "GO";
	case NBD_OPT_STRUCTURED_REPLY:
		return "STRUCTURED_REPLY";
	case NBD_OPT_LIST_META_CONTEXT:
		return "LIST_META_CONTEXT";
	case NBD_OPT_SET_META_CONTEXT:
		return "SET_META_CONTEXT";
	default:
		return "unknown";
	}
}

const char *nbd_cmd_name(uint16_t type)
{
	switch (type) {
	case NBD_CMD_READ:
		return "READ";
	case NBD_CMD_WRITE:
		return "WRITE";
	case NBD_CMD_DISC:
		return "DISC";
	case NBD_CMD_FLUSH:
		return "FLUSH";
	case NBD_CMD_TRIM:
		return "TRIM";
	case NBD_CMD_WRITE_ZEROES:
		return "WRITE_ZEROES";
	case NBD_CMD_CACHE:
		return "CACHE";
	case NBD_CMD_BLOCK_STATUS:
		return "BLOCK_STATUS";
	default:
		return "unknown";
	}
}
