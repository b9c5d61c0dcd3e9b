/* TLS for the NBD export (GnuTLS): the --tls policy and the server's
 * credentials, X.509 (a qemu-style directory) or PSK (a psktool file),
 * loaded once at start. The per-connection calls are in internal.h. */
#ifndef TAPD_NBD_TLS_H
#define TAPD_NBD_TLS_H

#include <stdbool.h>

#include "lib/util.h"

enum nbd_tls_mode {
	NBD_TLS_OFF,	 /* STARTTLS is refused (the default) */
	NBD_TLS_ON,	 /* clients choose: plain or STARTTLS */
	NBD_TLS_REQUIRE, /* nothing but STARTTLS or ABORT before TLS */
};

struct nbd_tls_config {
	enum nbd_tls_mode mode;
	/* ca-cert.pem, server-cert.pem, server-key.pem, as qemu lays them
	 * out; ca-cert.pem is needed only with verify_peer. */
	const char *certs_dir;
	/* "username:hexkey" lines, as psktool writes them. */
	const char *psk_file;
	/* X.509 clients must present a certificate signed by the CA. */
	bool verify_peer;
};

/* "off", "on" or "require" to a mode; -EINVAL for anything else. */
int nbd_tls_parse_mode(const char *s);
/* Check the configuration and load every credential now, so that a bad or
 * missing file fails the start rather than a client's handshake. Returns 0
 * or a negative errno with eb filled. Nothing to do with mode off (other
 * than refusing credentials that would go unused). */
int nbd_tls_setup(const struct nbd_tls_config *cfg, struct errbuf *eb);
/* Free the credentials (after nbd_server_free: no session is left). */
void nbd_tls_teardown(void);

#endif
