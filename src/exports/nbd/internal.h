/* Shared internals of the NBD server, private to src/exports/nbd/: the
 * per-connection state and the calls its parts make, always downwards
 * (lowest first: tls.c sessions, clients.c the client list and limits,
 * slots.c the request table, reply.c replies and writing, splice.c
 * zero-copy data, handshake.c options, conn.c reading and requests,
 * listen.c listeners; server.c on top owns each connection's life;
 * chunk.c, pure encoders of structured replies, is used by reply.c). A
 * part that finds its connection unusable records why (nbd_fail) and
 * returns a negative errno; only server.c closes and frees connections.
 * Not a contract for anything outside them. */
#ifndef TAPD_NBD_INTERNAL_H
#define TAPD_NBD_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/queue.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <event2/event.h>

#include "formats/nbd/proto.h"
#include "tls.h"
#include "core/tap.h"
#include "lib/util.h"

struct nbd_tls;
struct nbd_limits;

/* Requests in flight per connection. When all slots are busy we stop
 * reading the socket: TCP-style backpressure instead of queues. */
#define NBD_SLOTS 64
/* Input buffer: big enough for a whole option (header and data) plus
 * read-ahead; write payloads beyond what it holds go straight to req->buf. */
#define NBD_IN_BUF (NBD_OPT_HDR_LEN + NBD_OPT_DATA_MAX + 4096)
/* Handshake replies waiting to be written: at this much, no more options
 * are read until the client takes some (one option's replies may go
 * beyond it: a LIST of every tap). A client that takes none is dropped at
 * the handshake deadline. */
#define NBD_HS_OUT_MAX (64u << 10)
/* Refused options logged per connection (then one line says the rest
 * are not). */
#define NBD_HS_LOG_REFUSALS 4
/* Options longer than this are not worth discarding: hang up. */
#define NBD_OPT_DISCARD_MAX (1u << 20)
/* recv() calls per wakeup, so one busy client cannot starve the others. */
#define NBD_RECV_BUDGET 32
/* iovecs gathered per sendmsg(). */
#define NBD_IOV 64
/* Extents one BLOCK_STATUS asks the tap for (a sparse READ too). */
#define NBD_EXTENTS 64
/* Chunks of a sparse READ reply; more pieces are merged into data. */
#define NBD_READ_CHUNKS 16
/* READs at least this long with structured replies look for holes first:
 * below it the extra BLOCK_STATUS costs more than the zeros it saves. */
#ifndef NBD_SPARSE_MIN
#define NBD_SPARSE_MIN (64u << 10)
#endif
/* A probe that finds no zeros doubles the number of eligible READs sent
 * without one, up to 2^NBD_PROBE_BACKOFF_MAX - 1: on dense images the
 * BLOCK_STATUS round trip (a SEEK_HOLE that tmpfs answers by walking every
 * page to the end of the file) would otherwise cost more than the read. */
#define NBD_PROBE_BACKOFF_MAX 10
/* READs at least this long go to the client by splice(2) where the tap
 * allows it (memory-backed raw images, plain sockets): the image's pages
 * move into the socket by reference, with no copy in the daemon. Below
 * it the extra syscalls per reply cost more than the copies they save. */
#ifndef NBD_SPLICE_MIN
#define NBD_SPLICE_MIN (32u << 10)
#endif
/* A spliced WRITE goes into the image in pieces of at least this much
 * (a multiple of a page; less only when the pipe is full) as its payload
 * arrives: the socket is drained while the file copy happens, instead of
 * filling up behind one copy of the whole payload at its end. */
#ifndef NBD_WSPLICE_STEP
#define NBD_WSPLICE_STEP (128u << 10)
#endif
/* The pipe each splicing connection keeps (the most an unprivileged
 * F_SETPIPE_SZ gets by default: /proc/sys/fs/pipe-max-size). */
#define NBD_PIPE_SIZE (1u << 20)
/* The send buffer a splicing connection asks for. */
#define NBD_SPLICE_SNDBUF (4 << 20)
/* Reply iovecs per slot: a header and data for each chunk. */
#define NBD_SLOT_IOV (2 * NBD_READ_CHUNKS)
/* Reply headers per slot: every chunk header of a sparse READ, or a whole
 * BLOCK_STATUS chunk. */
#define NBD_SPARSE_HDRS_MAX (NBD_READ_CHUNKS * NBD_CHUNK_HOLE_LEN)
#define NBD_BS_REPLY_MAX (NBD_CHUNK_BS_HDR_LEN + NBD_EXTENTS * NBD_BS_DESC_LEN)
#define NBD_SLOT_RBUF MAX(NBD_SPARSE_HDRS_MAX, NBD_BS_REPLY_MAX)

/* Who a client is, for the per-peer limit: its uid on the unix socket,
 * its address on TCP (the /64 of an IPv6 address: one host commonly has a
 * whole one). */
enum nbd_peer_kind {
	NBD_PEER_UID,
	NBD_PEER_IPV4,
	NBD_PEER_IPV6,
	NBD_PEER_UNKNOWN, /* not found out: counts as nobody else */
};

struct nbd_peer {
	enum nbd_peer_kind kind;
	uint32_t uid;
	unsigned char addr[8]; /* IPv4: 4 bytes; IPv6: the /64 */
};

enum slot_state {
	SLOT_FREE,
	SLOT_PREPARE,  /* waiting for tap_req_prepare's ready callback */
	SLOT_PAYLOAD,  /* WRITE: payload being read (or discarded) */
	SLOT_INFLIGHT, /* submitted to the tap, done callback pending (for a
			* sparse READ, first its BLOCK_STATUS probe) */
	SLOT_QUEUED,   /* reply in the output queue */
	SLOT_SPLICE_WAIT, /* READ waiting for room in the connection's pipe */
};

struct nbd_conn;

/* One request of a connection. Slots live inside their nbd_conn and are
 * never allocated on their own: slots.c alone takes them from the free
 * list and puts them back (releasing their tap request), whichever side
 * (requests, replies, splice) is done with them; the one other release is
 * the hole probe's (conn.c), whose request the slot's READ replaces.
 * req.buf belongs to the
 * tap between tap_req_prepare and tap_req_release. */
struct nbd_slot {
	struct tap_req req;
	struct nbd_conn *conn;
	uint64_t cookie;
	uint64_t off; /* as the client asked (req may be cut shorter) */
	uint32_t len;
	uint16_t type;
	uint16_t flags;
	enum slot_state state;
	bool prepared;	/* tap_req_prepare was called: release when freed */
	bool sparse;	/* READ: pieces[] plans the reply */
	/* READ in pieces (tap_req_next): what is queued is one piece of the
	 * reply, more follow; reply.c holds the output behind it. */
	bool more;
	/* READ: the data waits in the connection's pipe (splice.c), in
	 * pipe_bufs pipe buffers at most; only the header is in riov, and
	 * rtotal counts both (the header is rtotal - len bytes). */
	bool spliced;
	uint32_t pipe_bufs;
	/* WRITE going the usual way after a splice was started: this much
	 * of its payload (that is, of req) waits in the write pipe. */
	uint32_t piped;
	uint32_t error; /* NBD error to send after a discarded payload */
	uint32_t bytes; /* counted in conn->bytes_held until freed */
	/* The reply: riov[0, rn) covers rtotal bytes, sent of them written.
	 * Headers live in rbuf, data in req.buf. */
	size_t sent, rtotal;
	unsigned rn;
	struct iovec riov[NBD_SLOT_IOV];
	unsigned char rbuf[NBD_SLOT_RBUF];
	unsigned npieces;
	struct nbd_piece pieces[NBD_READ_CHUNKS];
	struct image_extent ext[NBD_EXTENTS];
	TAILQ_ENTRY(nbd_slot) link; /* free list or output queue */
};

/* What the input side is doing. */
enum read_state {
	RS_FLAGS,      /* client flags */
	RS_OPT,	       /* option haggling */
	RS_HDR,	       /* transmission: next request header */
	RS_WRITE_WAIT, /* WRITE waiting for its buffer: do not read */
	RS_PAYLOAD,    /* WRITE payload into cur->req.buf */
	RS_SPLICE,     /* WRITE payload into the write pipe (splice.c) */
	RS_DISCARD,    /* dropping bytes, then reply */
	RS_TLS,	       /* STARTTLS acknowledged: TLS handshake, then RS_OPT */
	RS_STOP,       /* nothing more will be read */
};

/* One client. Owned by server.c: allocated (conn_accepted), killed (conn_kill:
 * the socket closed, the TLS session and pipes freed, idle slots dropped)
 * and freed (conn_destroy) there only. It stays allocated while any slot
 * is busy, even after the socket is closed, because the tap still holds
 * those requests. The hs buffer is owned by the connection and freed with
 * it. */
struct nbd_conn {
	LIST_ENTRY(nbd_conn) link;
	unsigned id;
	int fd;
	struct event *ev_read, *ev_write;
	/* Tap completions only queue their reply and activate ev_run: the
	 * connection then runs once per loop pass, so a batch of completions
	 * goes out in one sendmsg() (see nbd_conn_defer). */
	struct event *ev_run;
	bool reading, writing;
	/* The socket had nothing more to read when the reader last stopped,
	 * with EV_READ armed (level-triggered): until the loop says it is
	 * readable again, a recv() would only return EAGAIN, so skip it. Plain
	 * sockets only (GnuTLS buffers input of its own). */
	bool sock_idle;
	enum read_state rs;
	bool no_zeroes;
	bool structured; /* NBD_OPT_STRUCTURED_REPLY negotiated */
	bool tcp;	 /* accepted on a TCP listener */
	bool closing;	 /* close once idle (DISC, ABORT, server shutdown) */
	bool dead;	 /* socket closed; waiting for in-flight requests */
	bool running, rerun;
	/* In transmission (GO or EXPORT_NAME succeeded): the handshake
	 * deadline is over, slots exist. */
	bool tx;
	struct nbd_peer peer;
	/* server.c's one timer: the handshake deadline until transmission
	 * (deadline_on), then the check of a write stall (stall_on): replies
	 * waiting while the socket took nothing since out_stamp (ms,
	 * CLOCK_MONOTONIC_COARSE). timer_fired: the run that follows acts. */
	struct event *ev_timer;
	/* A zero timeout: c runs again on the next turn of the loop, after
	 * it polled (ev_run, activated, would run it in this turn). */
	struct event *ev_next;
	bool deadline_on, stall_on, timer_fired;
	uint64_t out_stamp;
	/* A part found the connection unusable (nbd_fail): server.c kills it
	 * at its first chance, with why ("" for a quiet close). */
	bool failed;
	char why[160];

	/* After STARTTLS, every byte goes through this session (tls.c,
	 * created by handshake.c, freed by server.c); NULL on plain
	 * connections. tls_want_write: the TLS layer waits for the socket
	 * to be writable with no reply to send; tls_up: the handshake is
	 * done (the STARTTLS ACK itself goes out in the clear). */
	struct nbd_tls *tls;
	bool tls_want_write, tls_up;

	struct tap *tap;	     /* attached after GO / EXPORT_NAME */
	struct nbd_export_view view; /* what requests are checked against */

	/* Adopted (nbd_server_adopt): the kernel's nbd driver is the client,
	 * in transmission from the start; gone(gone_arg) is called from the
	 * loop when the connection is freed, unless nbd_server_adopt_close
	 * took it back. */
	bool adopted;
	void (*gone)(void *arg);
	void *gone_arg;

	/* SET_META_CONTEXT selected base:allocation for this export (by
	 * name: the tap may come and go before GO). */
	bool meta_set;
	char meta_export[TAP_NAME_MAX + 1];

	/* READ/WRITE bytes between taking a slot and freeing it; new
	 * requests wait while this is at the server's per-client cap. */
	uint64_t bytes_held;

	/* Sparse READ probing backoff (see NBD_PROBE_BACKOFF_MAX); one probe
	 * at a time, so a slow one cannot be multiplied by the queue depth. */
	unsigned probe_misses, probe_skip;
	bool probing;

	/* Splicing READs (splice.c): the pipe their data waits in, in
	 * reply order, how many pipe buffers it has and how many the spliced
	 * replies in the output queue may take, and READs waiting for room. */
	int pipe_rd, pipe_wr; /* -1: no pipe (yet) */
	bool no_splice;
	uint32_t pipe_cap, pipe_bufs;
	TAILQ_HEAD(, nbd_slot) splice_q;
	/* Splicing WRITEs: the pipe the payload of c->cur goes through in
	 * RS_SPLICE; c->got bytes of it came in, wrote of them are in the
	 * image already, the rest in the pipe. */
	int wpipe_rd, wpipe_wr; /* -1: no pipe (yet) */
	uint32_t wrote;

	/* A READ in pieces whose next piece the tap is reading: nothing else
	 * goes out until it is queued again, at the head (a simple reply
	 * cannot be interleaved; the held READ waits for nothing but its
	 * image, as it keeps its buffer). */
	struct nbd_slot *out_hold;
	struct nbd_slot *cur; /* WRITE whose payload is being read */
	uint32_t got;
	uint64_t discard;     /* bytes still to drop */
	uint32_t discard_opt; /* the too-long option, in the handshake */

	/* Handshake replies, sent before any request reply exists. hs_full:
	 * options wait for NBD_HS_OUT_MAX of them to drain (server.c runs
	 * the reader again once some are written). */
	unsigned char *hs;
	size_t hs_len, hs_cap, hs_off;
	bool hs_full;
	unsigned opt_refusals; /* options refused so far (for the log) */

	TAILQ_HEAD(, nbd_slot) outq;
	TAILQ_HEAD(, nbd_slot) freeq;
	unsigned busy;
	/* NBD_SLOTS slots, allocated at transmission (nbd_slots_alloc, freed
	 * with c) and each set up when first used (slots_used of them so
	 * far): a connection that is idle, or still in its handshake, costs
	 * no more than this struct and the pages its few requests touched. */
	struct nbd_slot *slots;
	unsigned slots_used;

	size_t in_start, in_end;
	unsigned char in[NBD_IN_BUF];
};

/* A part of the server found c unusable: record why for server.c, which
 * closes c when the error reaches it (or at its next run, from a tap
 * callback); why NULL means a quiet close. The first reason wins. Returns
 * err (a negative errno, never -EAGAIN) for the caller to pass up; the
 * caller does nothing more with c. */
static inline int nbd_fail(struct nbd_conn *c, int err, const char *why)
{
	if (!c->failed) {
		c->failed = true;
		snprintf(c->why, sizeof(c->why), "%s", why ? why : "");
	}
	return err;
}

/* Nothing more will be read from or written to c (it failed or is dead):
 * what comes back from the tap is only freed. */
static inline bool nbd_conn_gone(const struct nbd_conn *c)
{
	return c->dead || c->failed;
}

/* Run c later in this loop pass, once however often it is asked: for tap
 * callbacks, which come in batches. ev_run is server.c's, and runs c
 * there. */
static inline void nbd_conn_defer(struct nbd_conn *c)
{
	/* An event already active stays so: one run however many calls. */
	event_active(c->ev_run, 0, 0);
}

/* tls.c (the configuration side is in tls.h) */

enum nbd_tls_mode nbd_tls_mode(void);
/* A session on socket fd for client id (its handshake has the
 * connection's deadline: server.c's). NULL on failure (logged). */
struct nbd_tls *nbd_tls_new(int fd, unsigned id);
/* Drive the handshake: 1 done, 0 waiting for the socket (writable when
 * *want_write, else readable), or a negative errno with why filled. */
int nbd_tls_handshake(struct nbd_tls *t, bool *want_write, char *why, size_t len);
/* recv() and sendmsg() through the session, with their return and errno
 * conventions (0 from recv: the client hung up). */
ssize_t nbd_tls_recv(struct nbd_tls *t, void *buf, size_t len);
ssize_t nbd_tls_send(struct nbd_tls *t, const struct iovec *iov, size_t n);
/* Decrypted input waits inside GnuTLS: no socket event will announce it
 * (false for NULL). */
bool nbd_tls_pending(const struct nbd_tls *t);
/* Free the session (close_notify first when graceful, without waiting). */
void nbd_tls_free(struct nbd_tls *t, bool graceful);

/* clients.c */

/* The limits set by nbd_server_set_limits. */
const struct nbd_limits *nbd_server_limits(void);
/* Connections attached to tap t (those in transmission, and those still
 * draining after their socket closed). */
unsigned nbd_server_tap_conns(const struct tap *t);
/* The list of live connections (server.c adds and removes them). */
void nbd_clients_add(struct nbd_conn *c);
void nbd_clients_remove(struct nbd_conn *c);
unsigned nbd_clients_count(void);
/* Who is at the other end of accepted socket fd (kind NBD_PEER_UNKNOWN
 * when the kernel does not say). */
void nbd_peer_get(int fd, bool tcp, struct nbd_peer *p);
/* "uid 1000", "192.0.2.1", "2001:db8::/64" into buf. */
const char *nbd_peer_name(const struct nbd_peer *p, char *buf, size_t len);
/* May one more client from p connect? 0, or -EUSERS (the total limit) or
 * -EMFILE (p's share) with why filled. */
int nbd_clients_admit(const struct nbd_peer *p, char *why, size_t len);
/* The first connection; the next is LIST_NEXT(c, link). */
struct nbd_conn *nbd_clients_first(void);

/* slots.c */

/* Empty queues and no slots yet, for a fresh connection. */
void nbd_slots_init(struct nbd_conn *c);
/* The slots, for transmission: 0 or -ENOMEM. */
int nbd_slots_alloc(struct nbd_conn *c);
/* Is a slot free for a new request? */
bool nbd_slot_available(const struct nbd_conn *c);
/* Take a free slot (there must be one) for request r. */
struct nbd_slot *nbd_slot_get(struct nbd_conn *c, const struct nbd_request *r);
/* Count a READ/WRITE's data against the client's cap until s is freed. */
void nbd_slot_hold(struct nbd_slot *s);
/* Release the slot's tap request and put it back on the free list. */
void nbd_slot_free(struct nbd_slot *s);
/* Free every slot the tap does not hold (the socket is gone). */
void nbd_slots_drop(struct nbd_conn *c);

/* reply.c */

/* Build the reply to s with NBD error value error (0: success, with the
 * data of a READ or the extents of a BLOCK_STATUS) and queue it; on a gone
 * connection just free s. */
void nbd_queue_reply(struct nbd_slot *s, uint32_t error);
/* One write of pending output (handshake replies first, then the output
 * queue, spliced data from the pipe), retiring the replies it finished:
 * the bytes written, 0 with nothing to write, or a negative errno
 * (-EAGAIN: the socket is full; -EINTR: try again; others: the socket is
 * unusable, for the caller to act on). */
ssize_t nbd_out_write(struct nbd_conn *c);

/* splice.c */

/* Serve the READ in s by splice if this connection and its tap can:
 * 1 when it did (or s waits for pipe room), 0 when it must go the usual
 * way, or a negative errno (s freed, c failed). */
int nbd_splice_read(struct nbd_slot *s);
/* Pipe room came back: splice the READs that wait for it. Returns 0 when
 * nothing more can start now, 1 with *usual set to a READ the caller must
 * start the usual way before calling again, or a negative errno (c
 * failed). */
int nbd_splice_resume(struct nbd_conn *c, struct nbd_slot **usual);
/* Close the pipes (the connection is dead). */
void nbd_splice_close(struct nbd_conn *c);
/* The WRITE in s (c->cur, its payload not yet read) takes the splice
 * path if it can: returns true in RS_SPLICE, false to go the usual way. */
bool nbd_wsplice_start(struct nbd_slot *s);
/* RS_SPLICE: put up to n bytes already read (at p) into the write pipe;
 * returns how many it took, maybe 0 (the pipe was full: a piece went out
 * to make room, or the WRITE must go the usual way and the rest is for
 * that). After this and nbd_wsplice_recv, c->rs is RS_WRITE_WAIT when the
 * WRITE must go the usual way: the caller then prepares c->cur. */
size_t nbd_wsplice_put(struct nbd_conn *c, const void *p, size_t n);
/* RS_SPLICE: move payload from the socket into the write pipe. Behaves
 * like recv(), except for -1 with errno EINTR when the pipe was full and
 * a piece went out to make room, or the WRITE must go the usual way: try
 * again (check c->rs first). */
ssize_t nbd_wsplice_recv(struct nbd_conn *c, bool *drained);
/* Take n bytes of a WRITE's payload from the write pipe into buf; -1 if
 * the pipe did not have them. */
int nbd_wsplice_take(struct nbd_conn *c, void *buf, size_t n);
/* Forget what the write pipe holds (a WRITE that will not be written). */
void nbd_wsplice_drop(struct nbd_conn *c);

/* handshake.c */

/* Queue the server greeting. Returns 0 or -ENOMEM (c is left untouched
 * apart from c->hs, which the caller frees). */
int nbd_hs_greet(struct nbd_conn *c);
/* A connection that skips the handshake (adopted): in transmission on t
 * (attached by the caller) with simple replies. 0, or -ENOMEM. */
int nbd_hs_adopt(struct nbd_conn *c, struct tap *t);
/* The transmission flags of an export of t, the one place they are
 * chosen: what a client is told, what its requests are checked against
 * (c->view.tx_flags), and what the kernel's client of an adopted
 * connection is told (nbd_server_adopt_flags, structured false). */
uint16_t nbd_hs_export_flags(const struct tap *t, bool structured);
/* Act on buffered input in RS_FLAGS / RS_OPT; same return convention as
 * the input side's consume step (1 progress, 0 need bytes, -EAGAIN wait,
 * another negative errno: c failed). */
int nbd_hs_consume(struct nbd_conn *c);
/* The too-long option in c->discard_opt has been dropped: refuse it and go
 * back to option haggling. 0 or a negative errno (c failed). */
int nbd_hs_opt_discarded(struct nbd_conn *c);

/* conn.c */

/* Read and act on input until it must wait or the recv budget is spent.
 * 0, or a negative errno when c failed. */
int nbd_conn_pump(struct nbd_conn *c);
/* Replies left the pipe: start the READs that waited for room, spliced or
 * the usual way. 0, or a negative errno when c failed. */
int nbd_reads_resume(struct nbd_conn *c);

/* listen.c */

/* Takes an accepted client socket (non-blocking, close-on-exec). */
typedef void nbd_accept_fn(int fd, bool tcp);
/* The listeners behind nbd_server_start, nbd_server_listen_tcp and
 * nbd_server_activate (same arguments and returns), handing every client
 * they accept to accepted. */
int nbd_listen_unix(struct event_base *base, const char *path, nbd_accept_fn *accepted,
		    struct errbuf *eb);
int nbd_listen_tcp(struct event_base *base, const char *hostport, nbd_accept_fn *accepted,
		   struct errbuf *eb);
int nbd_listen_activate(struct event_base *base, nbd_accept_fn *accepted, struct errbuf *eb);
/* Stop accepting and close every listener (unlinking unix socket paths we
 * created, not those systemd passed). */
void nbd_listen_close_all(void);
/* Free the listeners' memory (after nbd_listen_close_all). */
void nbd_listen_free(void);

#endif
