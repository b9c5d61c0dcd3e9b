/* TLS on NBD connections with GnuTLS: credentials loaded at start, and per
 * connection a session that shakes hands on the loop without blocking,
 * then carries every byte the plain path would have sent with recv() and
 * sendmsg() (sock_recv in conn.c, sock_send in reply.c). A session only
 * reports (bytes, -1 with errno, a verdict): its connection's owner
 * decides what happens to the connection. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "lib/log.h"
#include "internal.h"
#include "tls.h"

/* Plaintext per record we build: TLS's maximum record. Small pieces of a
 * reply (headers) are gathered into one record of this size. */
#define NBD_TLS_STAGE 16384
/* Keys longer than this in a PSK file are refused (psktool makes 32). */
#define NBD_TLS_PSK_KEY_MAX 512
#define NBD_TLS_PSK_FILE_MAX (1u << 20)

struct psk_entry {
	char *user;
	unsigned char *key;
	size_t key_len;
};

static struct {
	enum nbd_tls_mode mode;
	bool verify_peer;
	bool global_init;
	gnutls_certificate_credentials_t x509;
	gnutls_psk_server_credentials_t psk;
	gnutls_priority_t prio;
	struct psk_entry *keys;
	size_t nkeys;
} tls;

/* One connection's session; exists from STARTTLS until the socket closes.
 * Owned by the connection's owner (server.c), which frees it; nothing here
 * touches the connection. */
struct nbd_tls {
	gnutls_session_t s;
	unsigned id;  /* the client, for the log */
	bool ready;   /* handshake done */
	bool pending; /* a record gnutls holds after GNUTLS_E_AGAIN */
	unsigned char stage[NBD_TLS_STAGE];
};

int nbd_tls_parse_mode(const char *s)
{
	if (!strcmp(s, "off"))
		return NBD_TLS_OFF;
	if (!strcmp(s, "on"))
		return NBD_TLS_ON;
	if (!strcmp(s, "require"))
		return NBD_TLS_REQUIRE;
	return -EINVAL;
}

enum nbd_tls_mode nbd_tls_mode(void)
{
	return tls.mode;
}

/* ---- credentials ---- */

static int file_readable(const char *path, struct errbuf *eb)
{
	if (access(path, R_OK) < 0) {
		int e = errno;

		err_set(eb, "%s: %s", path, strerror(e));
		return -e;
	}
	return 0;
}

static int load_x509(const char *dir, bool verify_peer, struct errbuf *eb)
{
	char ca[4096], cert[4096], key[4096];
	int ret;

	snprintf(ca, sizeof(ca), "%s/ca-cert.pem", dir);
	snprintf(cert, sizeof(cert), "%s/server-cert.pem", dir);
	snprintf(key, sizeof(key), "%s/server-key.pem", dir);
	if ((ret = file_readable(cert, eb)) < 0 || (ret = file_readable(key, eb)) < 0)
		return ret;
	if (verify_peer && (ret = file_readable(ca, eb)) < 0)
		return ret;
	if (gnutls_certificate_allocate_credentials(&tls.x509) < 0) {
		err_set(eb, "out of memory");
		return -ENOMEM;
	}
	ret = gnutls_certificate_set_x509_key_file(tls.x509, cert, key, GNUTLS_X509_FMT_PEM);
	if (ret < 0) {
		err_set(eb, "%s with %s: %s", cert, key, gnutls_strerror(ret));
		return -EINVAL;
	}
	/* The CA matters only for checking clients; load it when present so
	 * that a broken one is caught now either way. */
	if (access(ca, F_OK) == 0) {
		ret = gnutls_certificate_set_x509_trust_file(tls.x509, ca, GNUTLS_X509_FMT_PEM);
		if (ret <= 0) {
			err_set(eb, "%s: %s", ca,
				ret < 0 ? gnutls_strerror(ret) : "no certificate in it");
			return -EINVAL;
		}
	}
	gnutls_certificate_set_known_dh_params(tls.x509, GNUTLS_SEC_PARAM_MEDIUM);
	return 0;
}

static int hex_digit(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* One "username:hexkey" line (without its newline) into tls.keys. */
static int psk_add(char *line, const char *path, unsigned lineno, struct errbuf *eb)
{
	char *colon = strchr(line, ':'), *hex;
	size_t hl, ul;
	struct psk_entry *e, *k;

	if (!colon || colon == line) {
		err_set(eb, "%s:%u: expected username:hexkey", path, lineno);
		return -EINVAL;
	}
	hex = colon + 1;
	ul = (size_t)(colon - line);
	hl = strlen(hex);
	if (!hl || hl % 2 || hl / 2 > NBD_TLS_PSK_KEY_MAX) {
		err_set(eb, "%s:%u: the key must be an even number of hex digits (2-%d)", path,
			lineno, 2 * NBD_TLS_PSK_KEY_MAX);
		return -EINVAL;
	}
	k = realloc(tls.keys, (tls.nkeys + 1) * sizeof(*k));
	if (!k)
		goto nomem;
	tls.keys = k;
	e = &k[tls.nkeys];
	e->user = strndup(line, ul);
	e->key = malloc(hl / 2);
	e->key_len = hl / 2;
	if (!e->user || !e->key) {
		free(e->user);
		free(e->key);
		goto nomem;
	}
	tls.nkeys++;
	for (size_t i = 0; i < hl / 2; i++) {
		int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			err_set(eb, "%s:%u: the key is not hexadecimal", path, lineno);
			return -EINVAL;
		}
		e->key[i] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
nomem:
	err_set(eb, "out of memory");
	return -ENOMEM;
}

static int load_psk_file(const char *path, struct errbuf *eb)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), ret = 0;
	struct stat st;
	char *buf, *line, *next;
	unsigned lineno = 0;
	ssize_t n;

	if (fd < 0 || fstat(fd, &st) < 0) {
		ret = -errno;
		err_set(eb, "%s: %s", path, strerror(-ret));
		if (fd >= 0)
			close(fd);
		return ret;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > NBD_TLS_PSK_FILE_MAX) {
		close(fd);
		err_set(eb, "%s: not a regular file of at most 1M", path);
		return -EINVAL;
	}
	buf = calloc(1, (size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		err_set(eb, "out of memory");
		return -ENOMEM;
	}
	n = read(fd, buf, (size_t)st.st_size);
	close(fd);
	if (n < 0) {
		ret = -errno;
		err_set(eb, "%s: %s", path, strerror(-ret));
		goto out;
	}
	buf[n] = '\0';
	for (line = buf; line && *line && ret == 0; line = next) {
		size_t len;

		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		lineno++;
		len = strlen(line);
		if (len && line[len - 1] == '\r')
			line[--len] = '\0';
		if (!len || line[0] == '#')
			continue;
		ret = psk_add(line, path, lineno, eb);
	}
	if (!ret && !tls.nkeys) {
		err_set(eb, "%s: no username:hexkey line", path);
		ret = -EINVAL;
	}
out:
	explicit_bzero(buf, (size_t)st.st_size + 1);
	free(buf);
	return ret;
}

/* GnuTLS asks for the key of the user the client names. */
static int psk_lookup(gnutls_session_t s, const gnutls_datum_t *user, gnutls_datum_t *key)
{
	(void)s;
	for (size_t i = 0; i < tls.nkeys; i++) {
		const struct psk_entry *e = &tls.keys[i];

		if (strlen(e->user) != user->size || memcmp(e->user, user->data, user->size))
			continue;
		key->data = gnutls_malloc(e->key_len);
		if (!key->data)
			return -1;
		memcpy(key->data, e->key, e->key_len);
		key->size = (unsigned)e->key_len;
		return 0;
	}
	return -1;
}

int nbd_tls_setup(const struct nbd_tls_config *cfg, struct errbuf *eb)
{
	const char *prio;
	int ret;

	if (cfg->mode == NBD_TLS_OFF) {
		if (cfg->certs_dir || cfg->psk_file || cfg->verify_peer) {
			err_set(eb, "TLS credentials given but --tls is off");
			return -EINVAL;
		}
		return 0;
	}
	if (!cfg->certs_dir && !cfg->psk_file) {
		err_set(eb, "--tls %s needs --tls-certs DIR or --tls-psk FILE",
			cfg->mode == NBD_TLS_ON ? "on" : "require");
		return -EINVAL;
	}
	if (cfg->verify_peer && !cfg->certs_dir) {
		err_set(eb, "--tls-verify-peer needs --tls-certs DIR (for its ca-cert.pem)");
		return -EINVAL;
	}
	ret = gnutls_global_init();
	if (ret < 0) {
		err_set(eb, "GnuTLS: %s", gnutls_strerror(ret));
		return -EIO;
	}
	tls.global_init = true;
	if (cfg->certs_dir && (ret = load_x509(cfg->certs_dir, cfg->verify_peer, eb)) < 0)
		return ret;
	if (cfg->psk_file) {
		if ((ret = load_psk_file(cfg->psk_file, eb)) < 0)
			return ret;
		if (gnutls_psk_allocate_server_credentials(&tls.psk) < 0) {
			err_set(eb, "out of memory");
			return -ENOMEM;
		}
		gnutls_psk_set_server_credentials_function2(tls.psk, psk_lookup);
		gnutls_psk_set_server_known_dh_params(tls.psk, GNUTLS_SEC_PARAM_MEDIUM);
	}
	/* qemu and libnbd ask for the same PSK key exchanges. */
	prio = cfg->psk_file ? "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK" : "NORMAL";
	ret = gnutls_priority_init(&tls.prio, prio, NULL);
	if (ret < 0) {
		err_set(eb, "GnuTLS priority %s: %s", prio, gnutls_strerror(ret));
		return -EINVAL;
	}
	tls.mode = cfg->mode;
	tls.verify_peer = cfg->verify_peer;
	log_info("nbd: TLS %s (%s%s%s%s)", cfg->mode == NBD_TLS_ON ? "optional" : "required",
		 cfg->certs_dir ? "X.509" : "", cfg->certs_dir && cfg->psk_file ? ", " : "",
		 cfg->psk_file ? "PSK" : "", cfg->verify_peer ? ", client certificates" : "");
	return 0;
}

void nbd_tls_teardown(void)
{
	for (size_t i = 0; i < tls.nkeys; i++) {
		explicit_bzero(tls.keys[i].key, tls.keys[i].key_len);
		free(tls.keys[i].key);
		free(tls.keys[i].user);
	}
	free(tls.keys);
	if (tls.prio)
		gnutls_priority_deinit(tls.prio);
	if (tls.x509)
		gnutls_certificate_free_credentials(tls.x509);
	if (tls.psk)
		gnutls_psk_free_server_credentials(tls.psk);
	if (tls.global_init)
		gnutls_global_deinit();
	memset(&tls, 0, sizeof(tls));
}

/* ---- sessions ---- */

struct nbd_tls *nbd_tls_new(int fd, unsigned id)
{
	struct nbd_tls *t = calloc(1, sizeof(*t));
	int ret;

	if (!t)
		return NULL;
	t->id = id;
	ret = gnutls_init(&t->s, GNUTLS_SERVER | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL);
	if (ret < 0) {
		free(t);
		log_warn("nbd: client %u: GnuTLS session: %s", id, gnutls_strerror(ret));
		return NULL;
	}
	ret = gnutls_priority_set(t->s, tls.prio);
	if (!ret && tls.x509)
		ret = gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, tls.x509);
	if (!ret && tls.psk)
		ret = gnutls_credentials_set(t->s, GNUTLS_CRD_PSK, tls.psk);
	if (ret < 0) {
		log_warn("nbd: client %u: cannot set up TLS: %s", id, gnutls_strerror(ret));
		gnutls_deinit(t->s);
		free(t);
		return NULL;
	}
	if (tls.verify_peer) {
		gnutls_certificate_server_set_request(t->s, GNUTLS_CERT_REQUIRE);
		/* Chain checked against the CA during the handshake; clients
		 * have no host name to match. */
		gnutls_session_set_verify_cert(t->s, NULL, 0);
	}
	/* The connection's handshake deadline covers stalls; GnuTLS's
	 * would need calls to notice them. */
	gnutls_handshake_set_timeout(t->s, 0);
	gnutls_transport_set_int(t->s, fd);
	return t;
}

static void log_session(struct nbd_tls *t)
{
	gnutls_session_t s = t->s;
	const char *who = "";
	char buf[160], *desc;

	if (gnutls_auth_get_type(s) == GNUTLS_CRD_PSK) {
		snprintf(buf, sizeof(buf), ", PSK user %s",
			 gnutls_psk_server_get_username(s) ?: "?");
		who = buf;
	} else if (tls.verify_peer) {
		who = ", client certificate verified";
	}
	if (log_get_level() < LOG_DEBUG)
		return;
	/* Protocol, key exchange, signature and cipher in one string. */
	desc = gnutls_session_get_desc(s);
	log_debug("nbd: client %u: TLS %s, cipher %s: %s%s", t->id,
		  gnutls_protocol_get_name(gnutls_protocol_get_version(s)) ?: "?",
		  gnutls_cipher_get_name(gnutls_cipher_get(s)) ?: "?", desc ? desc : "", who);
	gnutls_free(desc);
}

int nbd_tls_handshake(struct nbd_tls *t, bool *want_write, char *why, size_t len)
{
	int ret, tries = 0;

	/* Warnings (a non-fatal alert, an interrupted call) let the
	 * handshake go on; a bounded number of them. */
	do {
		ret = gnutls_handshake(t->s);
	} while (ret < 0 && ret != GNUTLS_E_AGAIN && !gnutls_error_is_fatal(ret) && ++tries < 16);
	if (ret == GNUTLS_E_AGAIN) {
		*want_write = gnutls_record_get_direction(t->s) == 1;
		return 0;
	}
	*want_write = false;
	if (ret < 0) {
		snprintf(why, len, "TLS handshake failed: %s", gnutls_strerror(ret));
		return -EPROTO;
	}
	t->ready = true;
	log_session(t);
	return 1;
}

bool nbd_tls_pending(const struct nbd_tls *t)
{
	return t && t->ready && gnutls_record_check_pending(t->s) > 0;
}

/* A failed record call: errno for the caller, as the socket would set it. */
static ssize_t tls_fail(struct nbd_tls *t, ssize_t ret)
{
	switch (ret) {
	case GNUTLS_E_AGAIN:
		errno = EAGAIN;
		return -1;
	case GNUTLS_E_INTERRUPTED:
		errno = EINTR;
		return -1;
	case GNUTLS_E_PUSH_ERROR:
		/* The socket failed under GnuTLS (the client went away):
		 * the caller says so as for a plain socket. */
		errno = EPIPE;
		return -1;
	case GNUTLS_E_PULL_ERROR:
		errno = ECONNRESET;
		return -1;
	case GNUTLS_E_REHANDSHAKE:
		break;
	default:
		/* Warnings (an alert that ends nothing): carry on. */
		if (!gnutls_error_is_fatal((int)ret)) {
			errno = EINTR;
			return -1;
		}
		break;
	}
	log_info("nbd: client %u: TLS: %s", t->id, gnutls_strerror((int)ret));
	errno = EPROTO;
	return -1;
}

ssize_t nbd_tls_recv(struct nbd_tls *t, void *buf, size_t len)
{
	ssize_t ret = gnutls_record_recv(t->s, buf, len);

	if (ret >= 0)
		return ret;
	/* A peer that just closes its socket, without close_notify, is as
	 * common as a plain client hanging up: treat it as one. */
	if (ret == GNUTLS_E_PREMATURE_TERMINATION)
		return 0;
	return tls_fail(t, ret);
}

/* Like sendmsg(): returns the bytes of iov taken, from its start. A record
 * that GnuTLS encrypted but could not write is not counted until a later
 * call flushes it, so the caller keeps its data queued exactly as after a
 * partial write; the caller's next iov starts with that same data. */
static void iov_advance(const struct iovec *iov, size_t n, size_t *i, size_t *off, size_t by)
{
	*off += by;
	while (*i < n && *off >= iov[*i].iov_len) {
		*off -= iov[*i].iov_len;
		(*i)++;
	}
}

ssize_t nbd_tls_send(struct nbd_tls *t, const struct iovec *iov, size_t n)
{
	size_t i = 0, off = 0, total = 0;
	ssize_t ret;

	if (t->pending) {
		ret = gnutls_record_send(t->s, NULL, 0);
		if (ret < 0)
			return tls_fail(t, ret);
		t->pending = false;
		total = (size_t)ret;
		iov_advance(iov, n, &i, &off, total);
	}
	while (i < n) {
		const void *p;
		size_t len;

		if (iov[i].iov_len - off >= NBD_TLS_STAGE) {
			/* Big data goes straight from its buffer. */
			p = (const char *)iov[i].iov_base + off;
			len = NBD_TLS_STAGE;
		} else {
			/* Headers and small pieces: one record, not one each. */
			size_t j = i, o = off;

			for (len = 0; j < n && len < NBD_TLS_STAGE;) {
				size_t m = MIN(iov[j].iov_len - o, NBD_TLS_STAGE - len);

				memcpy(t->stage + len, (const char *)iov[j].iov_base + o, m);
				len += m;
				iov_advance(iov, n, &j, &o, m);
			}
			p = t->stage;
		}
		ret = gnutls_record_send(t->s, p, len);
		if (ret < 0) {
			if (ret == GNUTLS_E_AGAIN || ret == GNUTLS_E_INTERRUPTED)
				t->pending = true;
			if (total)
				return (ssize_t)total;
			return tls_fail(t, ret);
		}
		total += (size_t)ret;
		iov_advance(iov, n, &i, &off, (size_t)ret);
	}
	return (ssize_t)total;
}

void nbd_tls_free(struct nbd_tls *t, bool graceful)
{
	if (!t)
		return;
	/* Best effort and without waiting: the socket is non-blocking, and
	 * a client gone already makes this fail quietly. */
	if (graceful && t->ready)
		gnutls_bye(t->s, GNUTLS_SHUT_WR);
	gnutls_deinit(t->s);
	free(t);
}
