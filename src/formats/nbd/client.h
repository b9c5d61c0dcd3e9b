/* The client's side of the NBD wire format, for the nbd: image driver: URI
 * parsing, what a client sends, and parsing what a server answers. Pure
 * functions like proto.h (whose constants they use): no I/O, no
 * allocation, so bad server input is decided without a socket. */
#ifndef TAPD_NBD_CLIENT_PROTO_H
#define TAPD_NBD_CLIENT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"
#include "lib/util.h"

#define NBDC_DEFAULT_PORT "10809"
/* Old-style servers send this after NBDMAGIC instead of IHAVEOPT. */
#define NBD_OLDSTYLE_MAGIC 0x0000420281861253ull

/* A parsed nbd: image argument, one of
 *   nbd+unix:///EXPORT?socket=PATH[&timeout=SECONDS]
 *   nbd://HOST[:PORT]/EXPORT[?timeout=SECONDS]   (HOST may be [IPv6])
 * The export name is percent-decoded. */
struct nbdc_uri {
	bool is_unix;
	char socket[108]; /* sizeof(sun_path) */
	char host[256];
	char port[8];
	char name[NBD_NAME_MAX + 1];
	uint32_t name_len;
	unsigned timeout; /* seconds; 0: not given */
};

/* Returns 0, or -EINVAL with a readable reason in eb. */
int nbdc_uri_parse(const char *s, struct nbdc_uri *u, struct errbuf *eb);

/* Greeting (NBD_GREETING_LEN bytes). Returns 0 with the handshake flags,
 * -EPROTONOSUPPORT for an old-style server, -EBADMSG for anything else. */
int nbdc_parse_greeting(const void *buf, uint16_t *hs_flags);

/* Option header with len bytes of data to follow (NBD_OPT_HDR_LEN). */
size_t nbdc_encode_opt(void *buf, uint32_t opt, uint32_t len);
/* Whole NBD_OPT_GO asking for NBD_INFO_BLOCK_SIZE; buf must hold
 * NBDC_OPT_GO_LEN(name_len) bytes. */
#define NBDC_OPT_GO_LEN(n) (NBD_OPT_HDR_LEN + 4 + (n) + 2 + 2)
size_t nbdc_encode_opt_go(void *buf, const char *name, uint32_t name_len);

struct nbdc_opt_reply {
	uint32_t opt;
	uint32_t type;
	uint32_t len;
};

/* Option reply header (NBD_OPT_REPLY_HDR_LEN). -EBADMSG on bad magic. */
int nbdc_parse_opt_reply(const void *buf, struct nbdc_opt_reply *r);

/* What the server told us about its export. */
struct nbdc_export {
	uint64_t size;
	uint16_t tx_flags;
	bool have_export;			   /* NBD_INFO_EXPORT seen */
	uint32_t min_block, pref_block, max_block; /* 0: not given */
};

/* Data of an NBD_REP_INFO reply. Unknown info types are ignored (the
 * protocol allows them); 0, or -EBADMSG when the length is wrong for the
 * type or the block sizes make no sense. */
int nbdc_parse_info(const void *data, uint32_t len, struct nbdc_export *x);
/* Reply to NBD_OPT_EXPORT_NAME (10 bytes are enough: size and flags). */
void nbdc_parse_export_name_reply(const void *buf, struct nbdc_export *x);

/* Request header (NBD_REQUEST_LEN bytes). */
size_t nbdc_encode_request(void *buf, uint16_t flags, uint16_t type, uint64_t cookie, uint64_t off,
			   uint32_t len);
/* Simple reply header (NBD_SIMPLE_REPLY_LEN). -EBADMSG on bad magic
 * (structured replies are never negotiated by this client). */
int nbdc_parse_simple_reply(const void *buf, uint32_t *error, uint64_t *cookie);

/* An NBD error value as a negative errno; unknown values are -EIO. */
int nbdc_error_to_errno(uint32_t error);
/* A readable name for an NBD_REP_ERR_* option reply. */
const char *nbdc_rep_err_name(uint32_t type);

#endif
