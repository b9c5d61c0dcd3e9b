/* Shared internals of the NBD server, private to src/nbd-*.c: the
 * per-connection state and the calls its three parts make into each other
 * (nbd-server.c: listener and lifetime; nbd-handshake.c: options; nbd-conn.c:
 * socket I/O and requests). Not a contract for anything outside them. */
#ifndef TAPD_NBD_INTERNAL_H
#define TAPD_NBD_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "nbd-proto.h"
#include "tap.h"
#include "util.h"

struct event;

/* Requests in flight per connection. When all slots are busy we stop
 * reading the socket: TCP-style backpressure instead of queues. */
#define NBD_SLOTS 64
/* Input buffer: big enough for a whole option (header and data) plus
 * read-ahead; write payloads beyond what it holds go straight to req->buf. */
#define NBD_IN_BUF (NBD_OPT_HDR_LEN + NBD_OPT_DATA_MAX + 4096)
/* Options longer than this are not worth discarding: hang up. */
#define NBD_OPT_DISCARD_MAX (1u << 20)
/* recv() calls per wakeup, so one busy client cannot starve the others. */
#define NBD_RECV_BUDGET 32
/* Slots gathered per sendmsg(): header and data each. */
#define NBD_IOV 64

enum slot_state {
	SLOT_FREE,
	SLOT_PREPARE,  /* waiting for tap_req_prepare's ready callback */
	SLOT_PAYLOAD,  /* WRITE: payload being read (or discarded) */
	SLOT_INFLIGHT, /* submitted to the tap, done callback pending */
	SLOT_QUEUED,   /* reply in the output queue */
};

struct nbd_conn;

/* One request of a connection. Slots live inside their nbd_conn and are
 * never allocated on their own; req.buf belongs to the tap between
 * tap_req_prepare and tap_req_release. */
struct nbd_slot {
	struct tap_req req;
	struct nbd_conn *conn;
	uint64_t cookie;
	uint16_t type;
	enum slot_state state;
	bool prepared;	/* tap_req_prepare was called: release when freed */
	bool with_data; /* the reply carries req.buf */
	uint32_t error; /* NBD error to send after a discarded payload */
	size_t sent;	/* bytes of header + data written */
	unsigned char hdr[NBD_SIMPLE_REPLY_LEN];
	TAILQ_ENTRY(nbd_slot) link; /* free list or output queue */
};

/* What the input side is doing. */
enum read_state {
	RS_FLAGS,      /* client flags */
	RS_OPT,	       /* option haggling */
	RS_HDR,	       /* transmission: next request header */
	RS_WRITE_WAIT, /* WRITE waiting for its buffer: do not read */
	RS_PAYLOAD,    /* WRITE payload into cur->req.buf */
	RS_DISCARD,    /* dropping bytes, then reply */
	RS_STOP,       /* nothing more will be read */
};

/* One client. Allocated and freed by nbd-server.c only (conn_new,
 * conn_destroy); it stays allocated while any slot is busy, even after the
 * socket is closed, because the tap still holds those requests. The hs
 * buffer is owned by the connection and freed with it. */
struct nbd_conn {
	LIST_ENTRY(nbd_conn) link;
	unsigned id;
	int fd;
	struct event *ev_read, *ev_write;
	bool reading, writing;
	enum read_state rs;
	bool no_zeroes;
	bool closing; /* close once idle (DISC, ABORT, server shutdown) */
	bool dead;    /* socket closed; waiting for in-flight requests */
	bool running, rerun;

	struct tap *tap; /* attached after GO / EXPORT_NAME */
	uint16_t tx_flags;
	uint64_t size;

	struct nbd_slot *cur; /* WRITE whose payload is being read */
	uint32_t got;
	uint64_t discard;     /* bytes still to drop */
	uint32_t discard_opt; /* the too-long option, in the handshake */

	/* Handshake replies, sent before any request reply exists. */
	unsigned char *hs;
	size_t hs_len, hs_cap, hs_off;

	TAILQ_HEAD(, nbd_slot) outq;
	TAILQ_HEAD(, nbd_slot) freeq;
	unsigned busy;

	size_t in_start, in_end;
	unsigned char in[NBD_IN_BUF];
	struct nbd_slot slots[NBD_SLOTS];
};

/* nbd-server.c */

/* Run the connection until nothing more can happen now; may free c (only
 * when it is dead and idle), so callers must not touch c afterwards. */
void nbd_conn_run(struct nbd_conn *c);
/* Close the socket and drop every request not inside the tap; c itself
 * stays until nbd_conn_run sees it idle. why NULL means a quiet close. */
void nbd_conn_kill(struct nbd_conn *c, const char *why);

/* nbd-handshake.c */

/* Queue the server greeting. Returns 0 or -ENOMEM (c is left untouched
 * apart from c->hs, which the caller frees). */
int nbd_hs_greet(struct nbd_conn *c);
/* Act on buffered input in RS_FLAGS / RS_OPT; same return convention as
 * the input side's consume step (1 progress, 0 need bytes, -1 wait). */
int nbd_hs_consume(struct nbd_conn *c);
/* The too-long option in c->discard_opt has been dropped: refuse it and go
 * back to option haggling. */
void nbd_hs_opt_discarded(struct nbd_conn *c);

/* nbd-conn.c */

/* Put every slot of a fresh connection on its free list. */
void nbd_slots_init(struct nbd_conn *c);
/* Free every slot the tap does not hold (the socket is gone). */
void nbd_slots_drop(struct nbd_conn *c);
/* Write as much output as the socket takes; arm EV_WRITE for the rest. */
void nbd_conn_flush(struct nbd_conn *c);
/* Read and act on input until it must wait or the recv budget is spent. */
void nbd_conn_pump(struct nbd_conn *c);

#endif
