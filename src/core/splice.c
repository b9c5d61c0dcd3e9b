/* Splice on a tap: moving data between an image whose storage is memory
 * (a raw file on tmpfs) and an export's pipe by reference, beside the
 * request path. A splice is taken only where a request would run at once
 * (running tap, no QoS queue or limit, no read-modify-write in the way);
 * anything else answers "go the usual way" and the request path does it. */
#include <errno.h>

#include "internal.h"

bool tap_can_splice(const struct tap *t)
{
	return t->state == TAP_RUNNING && t->img && t->img->can_splice && TAILQ_EMPTY(&t->qos_q) &&
	       !tap_qos_limited(t);
}

ssize_t tap_read_splice(struct tap *t, uint64_t off, uint32_t len, int pipe_fd)
{
	struct image *img = t->img;
	ssize_t n;

	if (!tap_can_splice(t) || !len || off > t->size || len > t->size - off)
		return -EOPNOTSUPP;
	n = img->drv->splice_read(img, off, len, pipe_fd);
	if (n == (ssize_t)len) {
		t->st.reads++;
		t->st.read_bytes += len;
	} else if (n > 0) {
		t->st.errors++;
	} else {
		n = -EOPNOTSUPP; /* the usual READ says what is wrong */
	}
	return n;
}

bool tap_can_splice_write(const struct tap *t, uint64_t off, uint32_t len, uint32_t flags)
{
	/* Only what the usual way could take too: a WRITE it ends up on
	 * needs a pool buffer for what is left of it. */
	return tap_can_splice(t) && !t->read_only && t->img->drv->splice_write && len &&
	       off <= t->size && len <= t->size - off && !(flags & IMAGE_F_FUA) &&
	       off % t->img->align == 0 && len % t->img->align == 0 &&
	       (uint64_t)len + 2 * POOL_PAGE <= pool_max_get(t->pool);
}

size_t tap_write_splice(struct tap *t, uint64_t off, uint32_t len, uint32_t flags, int pipe_fd,
			bool last)
{
	struct tap_req probe = { .env_off = off, .env_len = len };
	ssize_t n;

	if (!tap_can_splice_write(t, off, len, flags) || tap_write_conflicts(t, &probe))
		return 0;
	n = t->img->drv->splice_write(t->img, off, len, pipe_fd);
	if (n <= 0)
		return 0;
	t->st.write_bytes += (uint64_t)n;
	if (last && n == (ssize_t)len)
		t->st.writes++;
	return (size_t)n;
}
