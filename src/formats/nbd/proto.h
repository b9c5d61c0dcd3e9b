/* NBD wire format (the NBD project's doc/proto.md): constants, and pure
 * functions that parse what clients send and encode what the server
 * replies. No I/O and no allocation here, so every decision about bad input
 * can be unit-tested without a socket. Multi-byte fields are big endian. */
#ifndef TAPD_NBD_PROTO_H
#define TAPD_NBD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/endian.h"

#define NBD_MAGIC 0x4e42444d41474943ull	   /* "NBDMAGIC" */
#define NBD_IHAVEOPT 0x49484156454f5054ull /* "IHAVEOPT" */
#define NBD_REP_MAGIC 0x0003e889045565a9ull
#define NBD_REQUEST_MAGIC 0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu

/* Handshake flags (server, 16 bits) and client flags (32 bits). */
#define NBD_FLAG_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_NO_ZEROES (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES (1u << 1)

/* Transmission flags (16 bits). */
#define NBD_FLAG_HAS_FLAGS (1u << 0)
#define NBD_FLAG_READ_ONLY (1u << 1)
#define NBD_FLAG_SEND_FLUSH (1u << 2)
#define NBD_FLAG_SEND_FUA (1u << 3)
#define NBD_FLAG_ROTATIONAL (1u << 4)
#define NBD_FLAG_SEND_TRIM (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN (1u << 8)
#define NBD_FLAG_SEND_CACHE (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO (1u << 11)

/* Options. */
#define NBD_OPT_EXPORT_NAME 1u
#define NBD_OPT_ABORT 2u
#define NBD_OPT_LIST 3u
#define NBD_OPT_STARTTLS 5u
#define NBD_OPT_INFO 6u
#define NBD_OPT_GO 7u
#define NBD_OPT_STRUCTURED_REPLY 8u
#define NBD_OPT_LIST_META_CONTEXT 9u
#define NBD_OPT_SET_META_CONTEXT 10u

/* Option replies. */
#define NBD_REP_ACK 1u
#define NBD_REP_SERVER 2u
#define NBD_REP_INFO 3u
#define NBD_REP_META_CONTEXT 4u
#define NBD_REP_ERR(n) ((1u << 31) + (n))
#define NBD_REP_ERR_UNSUP NBD_REP_ERR(1)
#define NBD_REP_ERR_POLICY NBD_REP_ERR(2)
#define NBD_REP_ERR_INVALID NBD_REP_ERR(3)
#define NBD_REP_ERR_TLS_REQD NBD_REP_ERR(5)
#define NBD_REP_ERR_UNKNOWN NBD_REP_ERR(6)
#define NBD_REP_ERR_SHUTDOWN NBD_REP_ERR(7)
#define NBD_REP_ERR_TOO_BIG NBD_REP_ERR(9)

/* NBD_REP_INFO types. */
#define NBD_INFO_EXPORT 0u
#define NBD_INFO_NAME 1u
#define NBD_INFO_DESCRIPTION 2u
#define NBD_INFO_BLOCK_SIZE 3u

/* Commands and command flags. */
#define NBD_CMD_READ 0u
#define NBD_CMD_WRITE 1u
#define NBD_CMD_DISC 2u
#define NBD_CMD_FLUSH 3u
#define NBD_CMD_TRIM 4u
#define NBD_CMD_CACHE 5u
#define NBD_CMD_WRITE_ZEROES 6u
#define NBD_CMD_BLOCK_STATUS 7u
#define NBD_CMD_FLAG_FUA (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE (1u << 1)
#define NBD_CMD_FLAG_DF (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1u << 4)

/* Structured reply chunks. */
#define NBD_REPLY_FLAG_DONE (1u << 0)
#define NBD_REPLY_TYPE_NONE 0u
#define NBD_REPLY_TYPE_OFFSET_DATA 1u
#define NBD_REPLY_TYPE_OFFSET_HOLE 2u
#define NBD_REPLY_TYPE_BLOCK_STATUS 5u
#define NBD_REPLY_TYPE_ERROR ((1u << 15) + 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET ((1u << 15) + 2)

/* The one metadata context we serve, and its id on the wire. */
#define NBD_CONTEXT_BASE_ALLOCATION "base:allocation"
#define NBD_CONTEXT_ID_BASE 1u
/* base:allocation flags. */
#define NBD_STATE_HOLE (1u << 0)
#define NBD_STATE_ZERO (1u << 1)

/* Error values in replies (not the host's errno numbers). */
#define NBD_EPERM 1u
#define NBD_EIO 5u
#define NBD_ENOMEM 12u
#define NBD_EINVAL 22u
#define NBD_ENOSPC 28u
#define NBD_EOVERFLOW 75u
#define NBD_ENOTSUP 95u
#define NBD_ESHUTDOWN 108u

/* Sizes of the fixed parts on the wire. */
#define NBD_GREETING_LEN 18 /* NBDMAGIC, IHAVEOPT, handshake flags */
#define NBD_CLIENT_FLAGS_LEN 4
#define NBD_OPT_HDR_LEN 16	 /* IHAVEOPT, option, length */
#define NBD_OPT_REPLY_HDR_LEN 20 /* magic, option, type, length */
#define NBD_REQUEST_LEN 28
#define NBD_SIMPLE_REPLY_LEN 16
#define NBD_EXPORT_NAME_REPLY_LEN 134 /* size, flags, 124 zeroes */
#define NBD_CHUNK_HDR_LEN 20	      /* magic, flags, type, cookie, length */
#define NBD_CHUNK_DATA_HDR_LEN 28     /* chunk header and the data's offset */
#define NBD_CHUNK_HOLE_LEN 32	      /* chunk header, offset, hole size */
#define NBD_CHUNK_ERROR_LEN 26	      /* chunk header, error, empty message */
#define NBD_CHUNK_BS_HDR_LEN 24	      /* chunk header and the context id */
#define NBD_BS_DESC_LEN 8	      /* one extent: length, flags */
/* Strings (export names) are at most 4096 bytes by the protocol. */
#define NBD_NAME_MAX 4096
/* Largest option payload we read; longer ones are discarded and answered
 * with NBD_REP_ERR_TOO_BIG. GO carries a name and a few info requests. */
#define NBD_OPT_DATA_MAX (NBD_NAME_MAX + 256)

/* Server greeting: fills NBD_GREETING_LEN bytes. */
size_t nbd_encode_greeting(void *buf);

/* Client flags. Returns 0 and stores *no_zeroes, or -EPROTO when the
 * client sets a flag we did not offer (the protocol says: disconnect). */
int nbd_parse_client_flags(const void *buf, bool *no_zeroes);

struct nbd_opt_hdr {
	uint32_t opt;
	uint32_t len;
};

/* Parse an option header (NBD_OPT_HDR_LEN bytes). -EBADMSG on bad magic. */
int nbd_parse_opt_hdr(const void *buf, struct nbd_opt_hdr *h);

/* Data of NBD_OPT_INFO and NBD_OPT_GO. name points into the caller's
 * buffer and is not NUL terminated. */
struct nbd_opt_go {
	const char *name;
	uint32_t name_len;
	uint16_t n_info;
	const unsigned char *info; /* n_info big-endian 16-bit requests */
};

/* Returns 0, or -EINVAL when the lengths inside do not add up to len or
 * the name contains a NUL. */
int nbd_parse_opt_go(const void *data, uint32_t len, struct nbd_opt_go *go);
/* Whether a GO/INFO asked for info type t. */
bool nbd_opt_go_wants(const struct nbd_opt_go *go, uint16_t t);

/* Whether an export name is acceptable at all (no NUL, length in range).
 * Does not say whether such an export exists. */
bool nbd_name_valid(const char *name, size_t len);

/* Option reply header (NBD_OPT_REPLY_HDR_LEN bytes); data follows. */
size_t nbd_encode_opt_reply(void *buf, uint32_t opt, uint32_t type, uint32_t len);
/* Whole NBD_REP_SERVER reply for one export; buf must hold
 * NBD_OPT_REPLY_HDR_LEN + 4 + name_len bytes. Returns bytes written. */
size_t nbd_encode_rep_server(void *buf, const char *name, uint32_t name_len);
/* Whole NBD_REP_INFO replies. Return bytes written. */
#define NBD_INFO_EXPORT_LEN (NBD_OPT_REPLY_HDR_LEN + 12)
#define NBD_INFO_BLOCK_SIZE_LEN (NBD_OPT_REPLY_HDR_LEN + 14)
size_t nbd_encode_info_export(void *buf, uint32_t opt, uint64_t size, uint16_t tx_flags);
size_t nbd_encode_info_block_size(void *buf, uint32_t opt, uint32_t min, uint32_t pref,
				  uint32_t max);
/* Reply to NBD_OPT_EXPORT_NAME: 10 bytes, or 134 without NO_ZEROES. */
size_t nbd_encode_export_name_reply(void *buf, uint64_t size, uint16_t tx_flags, bool no_zeroes);

/* Whole NBD_REP_INFO reply carrying a string (NBD_INFO_NAME,
 * NBD_INFO_DESCRIPTION); buf must hold NBD_OPT_REPLY_HDR_LEN + 2 + len. */
size_t nbd_encode_info_string(void *buf, uint32_t opt, uint16_t type, const char *s, uint32_t len);
/* Whole NBD_REP_META_CONTEXT reply; buf must hold NBD_OPT_REPLY_HDR_LEN +
 * 4 + strlen(name). */
size_t nbd_encode_meta_context(void *buf, uint32_t opt, uint32_t id, const char *name);

/* Data of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT: an
 * export name and n_queries strings. Pointers into the caller's buffer. */
struct nbd_opt_meta {
	const char *name;
	uint32_t name_len;
	uint32_t n_queries;
	const unsigned char *queries; /* n_queries of (32-bit length, string) */
	uint32_t queries_len;
};

/* Returns 0, or -EINVAL when the lengths inside do not add up to len or a
 * string is invalid (NUL inside, longer than NBD_NAME_MAX). */
int nbd_parse_opt_meta(const void *data, uint32_t len, struct nbd_opt_meta *m);
/* Whether the queries select base:allocation: for LIST, no query at all
 * means every context; "base:" means every context of that namespace. For
 * SET only the full name selects it. Unknown names select nothing. */
bool nbd_meta_selects_base(const struct nbd_opt_meta *m, bool list);

/* What an export can do, for its transmission flags. */
struct nbd_caps {
	bool read_only;
	bool fast_zero;	 /* WRITE_ZEROES can fail fast instead of writing */
	bool structured; /* the client negotiated structured replies */
};

/* Transmission flags for an export with these capabilities. Every other
 * command works on every tap (TRIM, WRITE_ZEROES, CACHE) and all the
 * connections to a tap share its image, so those are always offered; the
 * write-like ones only on writable exports. */
uint16_t nbd_tx_flags(const struct nbd_caps *caps);

struct nbd_request {
	uint16_t flags;
	uint16_t type;
	uint64_t cookie;
	uint64_t off;
	uint32_t len;
};

/* Parse a request header (NBD_REQUEST_LEN bytes). -EBADMSG on bad magic. */
int nbd_parse_request(const void *buf, struct nbd_request *r);

/* What the server does with a parsed request. */
enum nbd_action {
	NBD_ACT_READ,	      /* prepare, submit, reply with data */
	NBD_ACT_WRITE,	      /* prepare, read the payload into the buffer, submit */
	NBD_ACT_SUBMIT,	      /* no data either way: FLUSH, TRIM, WRITE_ZEROES, CACHE */
	NBD_ACT_BLOCK_STATUS, /* extents into the slot, reply with descriptors */
	NBD_ACT_DISC,	      /* finish in-flight requests, then close */
	NBD_ACT_REPLY,	      /* reply at once with *error (0: success, e.g. len 0) */
	NBD_ACT_DISCARD,      /* read and drop len payload bytes, then reply *error */
	NBD_ACT_HANGUP,	      /* unrecoverable: close the connection */
};

/* The connection's view of its export, for classifying requests. */
struct nbd_export_view {
	uint16_t tx_flags; /* as sent to the client */
	uint64_t size;
	uint32_t max_len; /* largest READ/WRITE payload */
	bool meta;	  /* base:allocation was selected */
};

/* Decide what to do with a request. Sets *error to an NBD error value for
 * NBD_ACT_REPLY/NBD_ACT_DISCARD. Range checks are left to the tap except
 * for zero-length requests, which never reach it, and BLOCK_STATUS. A
 * WRITE longer than max_len cannot be buffered, so the stream cannot be
 * resynchronised cheaply: hang up. Zero-length READ, WRITE, TRIM,
 * WRITE_ZEROES and CACHE succeed at or before the end; a zero-length
 * BLOCK_STATUS is EINVAL (there is no extent to describe). */
enum nbd_action nbd_classify(const struct nbd_request *r, const struct nbd_export_view *x,
			     uint32_t *error);

/* Simple reply header (NBD_SIMPLE_REPLY_LEN bytes). */
size_t nbd_encode_simple_reply(void *buf, uint32_t error, uint64_t cookie);

/* Structured reply chunks (exports/nbd/chunk.c). Each returns bytes written. */
/* A chunk header of any type; payload_len bytes follow. */
size_t nbd_encode_chunk_hdr(void *buf, uint16_t flags, uint16_t type, uint64_t cookie,
			    uint32_t payload_len);
/* OFFSET_DATA header and offset (NBD_CHUNK_DATA_HDR_LEN); len data bytes
 * follow. */
size_t nbd_encode_chunk_data(void *buf, uint16_t flags, uint64_t cookie, uint64_t off,
			     uint32_t len);
/* Whole OFFSET_HOLE chunk (NBD_CHUNK_HOLE_LEN). */
size_t nbd_encode_chunk_hole(void *buf, uint16_t flags, uint64_t cookie, uint64_t off,
			     uint32_t len);
/* Whole ERROR chunk with DONE and no message (NBD_CHUNK_ERROR_LEN). */
size_t nbd_encode_chunk_error(void *buf, uint64_t cookie, uint32_t error);
/* Whole NONE chunk with DONE (NBD_CHUNK_HDR_LEN). */
size_t nbd_encode_chunk_none(void *buf, uint64_t cookie);

struct image_extent;

/* Whole BLOCK_STATUS chunk with DONE for context id, from n extents of a
 * tap answer: adjacent extents with the same flags are merged, empty ones
 * skipped, the total clipped to len bytes, and only the first descriptor
 * kept when req_one. buf must hold NBD_CHUNK_BS_HDR_LEN + n *
 * NBD_BS_DESC_LEN. Returns 0 when no extent describes a byte (the caller
 * answers with an error instead). */
size_t nbd_encode_block_status(void *buf, uint64_t cookie, uint32_t id,
			       const struct image_extent *ext, uint32_t n, uint32_t len,
			       bool req_one);

/* One chunk of a sparse read reply. */
struct nbd_piece {
	uint32_t len;
	bool hole; /* reads as zeros: an OFFSET_HOLE chunk, no data */
};

/* Plan the chunks of a READ reply of len bytes from n extents describing
 * the range from its start: holes for extents that read as zeros, data for
 * the rest and for anything the extents do not cover, adjacent pieces of a
 * kind merged, at most max pieces (the remainder becomes one data piece).
 * The pieces cover exactly len bytes in order. Returns their number. */
unsigned nbd_plan_read(const struct image_extent *ext, uint32_t n, uint32_t len,
		       struct nbd_piece *out, unsigned max);

/* Map a negative (or positive) errno to an NBD error value. */
uint32_t nbd_errno_to_nbd(int err);

const char *nbd_opt_name(uint32_t opt);
const char *nbd_cmd_name(uint16_t type);

#endif
