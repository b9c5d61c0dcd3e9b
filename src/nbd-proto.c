/* NBD wire format: parsing and encoding with no I/O, so that every rule
 * about what a client may send is checked here and unit-tested in
 * tests/unit/check-nbd-proto.c. The connection logic is in nbd-server.c. */
#include <errno.h>
#include <string.h>

#include "nbd-proto.h"

void nbd_put16(void *p, uint16_t v)
{
	unsigned char *b = p;

	b[0] = v >> 8;
	b[1] = v;
}

void nbd_put32(void *p, uint32_t v)
{
	unsigned char *b = p;

	b[0] = v >> 24;
	b[1] = v >> 16;
	b[2] = v >> 8;
	b[3] = v;
}

void nbd_put64(void *p, uint64_t v)
{
	nbd_put32(p, v >> 32);
	nbd_put32((unsigned char *)p + 4, (uint32_t)v);
}

uint16_t nbd_get16(const void *p)
{
	const unsigned char *b = p;

	return (uint16_t)(b[0] << 8 | b[1]);
}

uint32_t nbd_get32(const void *p)
{
	const unsigned char *b = p;

	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

uint64_t nbd_get64(const void *p)
{
	return (uint64_t)nbd_get32(p) << 32 | nbd_get32((const unsigned char *)p + 4);
}

size_t nbd_encode_greeting(void *buf)
{
	unsigned char *b = buf;

	nbd_put64(b, NBD_MAGIC);
	nbd_put64(b + 8, NBD_IHAVEOPT);
	nbd_put16(b + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	return NBD_GREETING_LEN;
}

int nbd_parse_client_flags(const void *buf, bool *no_zeroes)
{
	uint32_t f = nbd_get32(buf);

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

	if (nbd_get64(b) != NBD_IHAVEOPT)
		return -EBADMSG;
	h->opt = nbd_get32(b + 8);
	h->len = nbd_get32(b + 12);
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
	go->name_len = nbd_get32(b);
	/* 64-bit sum: a name length near 4G must not wrap around. */
	need = 4 + (uint64_t)go->name_len + 2;
	if (need > len)
		return -EINVAL;
	go->name = (const char *)b + 4;
	go->n_info = nbd_get16(b + 4 + go->name_len);
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
		if (nbd_get16(go->info + 2 * i) == t)
			return true;
	return false;
}

size_t nbd_encode_opt_reply(void *buf, uint32_t opt, uint32_t type, uint32_t len)
{
	unsigned char *b = buf;

	nbd_put64(b, NBD_REP_MAGIC);
	nbd_put32(b + 8, opt);
	nbd_put32(b + 12, type);
	nbd_put32(b + 16, len);
	return NBD_OPT_REPLY_HDR_LEN;
}

size_t nbd_encode_rep_server(void *buf, const char *name, uint32_t name_len)
{
	unsigned char *b = buf;

	nbd_encode_opt_reply(b, NBD_OPT_LIST, NBD_REP_SERVER, 4 + name_len);
	nbd_put32(b + NBD_OPT_REPLY_HDR_LEN, name_len);
	memcpy(b + NBD_OPT_REPLY_HDR_LEN + 4, name, name_len);
	return NBD_OPT_REPLY_HDR_LEN + 4 + name_len;
}

size_t nbd_encode_info_export(void *buf, uint32_t opt, uint64_t size, uint16_t tx_flags)
{
	unsigned char *b = buf;

	nbd_encode_opt_reply(b, opt, NBD_REP_INFO, 12);
	b += NBD_OPT_REPLY_HDR_LEN;
	nbd_put16(b, NBD_INFO_EXPORT);
	nbd_put64(b + 2, size);
	nbd_put16(b + 10, tx_flags);
	return NBD_INFO_EXPORT_LEN;
}

size_t nbd_encode_info_block_size(void *buf, uint32_t opt, uint32_t min, uint32_t pref,
				  uint32_t max)
{
	unsigned char *b = buf;

	nbd_encode_opt_reply(b, opt, NBD_REP_INFO, 14);
	b += NBD_OPT_REPLY_HDR_LEN;
	nbd_put16(b, NBD_INFO_BLOCK_SIZE);
	nbd_put32(b + 2, min);
	nbd_put32(b + 6, pref);
	nbd_put32(b + 10, max);
	return NBD_INFO_BLOCK_SIZE_LEN;
}

size_t nbd_encode_export_name_reply(void *buf, uint64_t size, uint16_t tx_flags, bool no_zeroes)
{
	unsigned char *b = buf;

	nbd_put64(b, size);
	nbd_put16(b + 8, tx_flags);
	if (no_zeroes)
		return 10;
	memset(b + 10, 0, 124);
	return NBD_EXPORT_NAME_REPLY_LEN;
}

uint16_t nbd_tx_flags(bool read_only, bool can_flush, bool can_fua)
{
	uint16_t f = NBD_FLAG_HAS_FLAGS;

	if (read_only)
		f |= NBD_FLAG_READ_ONLY;
	if (can_flush)
		f |= NBD_FLAG_SEND_FLUSH;
	/* FUA on a read-only export means nothing. */
	if (can_fua && !read_only)
		f |= NBD_FLAG_SEND_FUA;
	return f;
}

int nbd_parse_request(const void *buf, struct nbd_request *r)
{
	const unsigned char *b = buf;

	if (nbd_get32(b) != NBD_REQUEST_MAGIC)
		return -EBADMSG;
	r->flags = nbd_get16(b + 4);
	r->type = nbd_get16(b + 6);
	r->cookie = nbd_get64(b + 8);
	r->off = nbd_get64(b + 16);
	r->len = nbd_get32(b + 24);
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

enum nbd_action nbd_classify(const struct nbd_request *r, uint16_t tx_flags, uint64_t size,
			     uint32_t max_len, uint32_t *error)
{
	/* FUA is valid on every command (a no-op except on writes); the
	 * other flags belong to features we do not advertise. */
	bool bad_flags = r->flags & ~NBD_CMD_FLAG_FUA;
	bool wraps = r->off + r->len < r->off;

	*error = 0;
	switch (r->type) {
	case NBD_CMD_READ:
		if (bad_flags || wraps || r->len > max_len) {
			*error = NBD_EINVAL;
			return NBD_ACT_REPLY;
		}
		if (r->len == 0) {
			*error = empty_range_error(r, size, false);
			return NBD_ACT_REPLY;
		}
		return NBD_ACT_READ;
	case NBD_CMD_WRITE:
		if (r->len > max_len)
			return NBD_ACT_HANGUP;
		if (tx_flags & NBD_FLAG_READ_ONLY)
			*error = NBD_EPERM;
		else if (bad_flags || wraps)
			*error = NBD_EINVAL;
		else if (r->len == 0)
			*error = empty_range_error(r, size, true);
		else
			return NBD_ACT_WRITE;
		return r->len ? NBD_ACT_DISCARD : NBD_ACT_REPLY;
	case NBD_CMD_FLUSH:
		/* Offset and length are reserved (zero); old clients sent
		 * garbage there, so they are ignored rather than refused. */
		if (bad_flags) {
			*error = NBD_EINVAL;
			return NBD_ACT_REPLY;
		}
		return NBD_ACT_FLUSH;
	case NBD_CMD_DISC:
		return NBD_ACT_DISC;
	default:
		/* TRIM and WRITE_ZEROES are not advertised yet; neither
		 * carries a payload, so the stream stays in sync. */
		*error = NBD_EINVAL;
		return NBD_ACT_REPLY;
	}
}

size_t nbd_encode_simple_reply(void *buf, uint32_t error, uint64_t cookie)
{
	unsigned char *b = buf;

	nbd_put32(b, NBD_SIMPLE_REPLY_MAGIC);
	nbd_put32(b + 4, error);
	nbd_put64(b + 8, cookie);
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
	default:
		return "unknown";
	}
}
