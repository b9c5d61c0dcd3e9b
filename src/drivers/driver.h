/* The driver ops table: one driver per image format or storage kind, in the
 * manner of nbdkit plugins and blktap's struct tap_disk. A driver knows
 * nothing of taps, pools or exports: it moves bytes between an aligned
 * buffer and its storage, asynchronously. Drivers are registered with
 * image.c (image_register_driver); core adds its own, tap:, that way.
 *
 * Threading: open() runs on a thread of its own (image_open_async) and may
 * block there: open files, read metadata, resolve names, connect and
 * handshake, each with a bound of its own; it must not touch the loop
 * (no events added, no daemon state), which start() then does, on the
 * loop. Drivers whose open needs daemon state (tap:) say on_loop, and
 * image.c runs their open and close there. Every other callback runs on
 * the loop thread and must not block it (no synchronous data I/O). The
 * one exception is memory: copying a tmpfs page is what io_submit does
 * there anyway, so raw copies tmpfs files inline. close() may run on the
 * opening thread too, when a chain fails half-way: it must cope with an
 * image that never started. */
#ifndef TAPD_DRIVER_H
#define TAPD_DRIVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "lib/util.h"

enum image_op {
	IMAGE_OP_READ,
	IMAGE_OP_WRITE,
	IMAGE_OP_FLUSH,
	IMAGE_OP_TRIM,         /* advisory: the range may be deallocated */
	IMAGE_OP_WRITE_ZEROES, /* the range reads as zeros afterwards */
	IMAGE_OP_BLOCK_STATUS, /* describe allocation of the range into io->ext */
	IMAGE_OP_CACHE,        /* advisory: the range will be read soon */
};

#define IMAGE_F_FUA 0x1u       /* write through to stable storage before completing */
#define IMAGE_F_NO_HOLE 0x2u   /* WRITE_ZEROES: leave the range allocated */
#define IMAGE_F_FAST_ZERO 0x4u /* WRITE_ZEROES: fail with -ENOTSUP rather than be slow */

/* One run of a BLOCK_STATUS answer; the flags mean what NBD's
 * base:allocation context means by them. */
#define IMAGE_EXT_HOLE 0x1u /* not allocated: reads come from below (zeros) */
#define IMAGE_EXT_ZERO 0x2u /* reads as zeros */
struct image_extent {
	uint64_t len;
	uint32_t flags;
};

struct image;

/* Options of an image string "DRIVER,KEY=VALUE,...:ARG", parsed by image.c
 * before the driver is called: at most IMAGE_OPTS_MAX pairs, each key
 * once, keys of lower-case letters, digits and '-', values of printable
 * characters other than ',' and ':'. */
#define IMAGE_OPTS_MAX 16
#define IMAGE_OPT_KEY_MAX 32
#define IMAGE_OPT_VALUE_MAX 1024
struct image_opts {
	unsigned n;
	struct {
		const char *key, *value;
	} opt[IMAGE_OPTS_MAX];
	char *buf; /* owned: the keys and values, NUL-terminated */
};

/* One operation on one image. off and len are multiples of the image's
 * align; buf is aligned to POOL_PAGE and holds len bytes (READ, WRITE). */
struct image_io {
	enum image_op op;
	uint32_t flags;
	uint64_t off;
	uint32_t len;
	void *buf;
	/* Called by the driver exactly once with 0 or a negative errno (the
	 * storage's own: ENOSPC stays ENOSPC). May be called from inside
	 * submit. */
	void (*done)(struct image_io *io, int err);
	/* BLOCK_STATUS: an array of ext_max extents (ext_max >= 1) that the
	 * driver fills from off onwards, in order and without gaps, covering
	 * at most len bytes and at least one byte; it sets ext_count. */
	struct image_extent *ext;
	uint32_t ext_max;
	uint32_t ext_count;
	/* Scratch space for the driver while the io is in flight. */
	_Alignas(16) unsigned char priv[128];
};

struct driver {
	/* Required. Prefix of the image string: "raw" in "raw:/path". */
	const char *name;
	/* Required. Open the storage named by arg (the text after "name:").
	 * img->read_only is set on entry. Must set img->size and img->align
	 * (the smallest I/O unit, a power of two; 1 for memory), and may set
	 * img->priv and the capability flags. Returns 0 or a negative errno
	 * with eb filled. */
	int (*open)(struct image *img, const char *arg, struct errbuf *eb);
	/* Optional. On the loop, once the whole chain is open (parents
	 * first): add the events open() prepared. 0 or a negative errno with
	 * eb filled; close() follows a failure. */
	int (*start)(struct image *img, struct errbuf *eb);
	/* open() and close() run on the loop thread (they use daemon state;
	 * they must not block). */
	bool on_loop;
	/* Optional. The option keys open() accepts (NULL-terminated); image.c
	 * refuses any other key before calling open(), and every key when
	 * this is NULL. open() finds the values in img->opts and refuses a
	 * value out of range with -EINVAL and a message naming the key. */
	const char *const *options;
	/* Required. Release everything open() took. No io is in flight. */
	void (*close)(struct image *img);
	/* Required. Start io; complete it through io->done. READ, WRITE and
	 * FLUSH are always sent. TRIM only when can_trim, BLOCK_STATUS only
	 * when can_extents, WRITE_ZEROES only when can_zero and aligned to
	 * align; a driver may still answer WRITE_ZEROES with -EOPNOTSUPP (the
	 * storage turned out not to support it) and the tap then writes
	 * zeros itself. CACHE never reaches drivers. */
	void (*submit)(struct image *img, struct image_io *io);
	/* Optional. The image this one reads through to, or NULL. */
	struct image *(*parent)(struct image *img);
	/* Optional. Move [off, off + len) into the pipe pipe_fd with
	 * splice(2), so that an export can pass the storage's own pages on
	 * to its client without copying them. Only for storage whose reads
	 * never block (memory), and only when the caller knows the pipe has
	 * room for all of it. Returns len, or a negative errno when nothing
	 * was moved (-EOPNOTSUPP: this image cannot; READ it instead), or
	 * the bytes moved when it stopped short (the pipe is then out of
	 * step with what the caller expected). */
	ssize_t (*splice_read)(struct image *img, uint64_t off, size_t len, int pipe_fd);
	/* Optional, with splice_read: the other way, len bytes that the pipe
	 * pipe_fd holds go to [off, off + len) of a writable image. Returns
	 * len, a negative errno when nothing was written (the pipe holds all
	 * of it still), or the bytes written when it stopped short (the rest
	 * is still in the pipe). */
	ssize_t (*splice_write)(struct image *img, uint64_t off, size_t len, int pipe_fd);
	/* The image's contents live only in tapd and die with close() (ram):
	 * a pause keeps such an image open and idle instead of closing it,
	 * and an unpause without a new image string goes on with it. Only
	 * for images without a parent. */
	bool keep_on_pause;
};

struct image {
	const struct driver *drv;
	char *spec;     /* the full image string, owned */
	uint64_t size;  /* bytes */
	uint32_t align; /* bytes, power of two */
	bool read_only;
	bool can_flush;     /* flush does something (false: no-op is correct) */
	bool can_trim;      /* TRIM can free storage */
	bool can_zero;      /* WRITE_ZEROES is cheaper than writing zeros */
	bool can_extents;   /* BLOCK_STATUS knows holes (else: all data) */
	bool can_splice;    /* splice_read (and splice_write if writable) work */
	/* Set on entry to open(): an image string to use as the parent
	 * instead of the one the image's metadata names, or NULL. Drivers
	 * with parents honour it (and check it is the right parent). */
	const char *parent_spec;
	/* Set on entry to open(), never NULL: the image string's options,
	 * already checked against drv->options. Gone after open() returns. */
	const struct image_opts *opts;
	void *priv;
	/* Private to image.c (drivers leave them alone): references and
	 * the sharing of read-only parents. */
	unsigned refs;
	bool started;
	char *shared_key;
	struct image *shared_next;
};

extern const struct driver driver_raw;
extern const struct driver driver_ram;
extern const struct driver driver_null;
extern const struct driver driver_vhd;
extern const struct driver driver_nbd;
extern const struct driver driver_error;

#endif
