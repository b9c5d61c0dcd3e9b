/* Image chains: parse an image string, find its driver, open it. A driver
 * whose format has parents (vhd) opens them with image_open_shared(): a
 * parent is opened read-only once, whatever number of chains use it. */
#ifndef TAPD_IMAGE_H
#define TAPD_IMAGE_H

#include "driver.h"

struct event_base;

/* Bounds on what an image string may ask for: its length, and how deep
 * image_open may nest (an error layer over an error layer..., a VHD
 * chain), so that no string can exhaust the stack or memory. */
#define IMAGE_SPEC_MAX 8192
#define IMAGE_DEPTH_MAX 64

/* An image string taken apart: "DRIVER[,KEY=VALUE...]:ARG". driver and arg
 * point into the string; opts owns its copies. */
struct image_spec {
	const char *driver;
	size_t driver_len;
	const char *arg;
	struct image_opts opts;
};

/* Parse spec (any bytes) into out: 0, or -EINVAL with a message naming
 * the offending option, -ENOMEM. Free out with image_spec_free either way. */
int image_spec_parse(const char *spec, struct image_spec *out, struct errbuf *eb);
void image_spec_free(struct image_spec *s);
/* The value of option key in opts, or NULL. */
const char *image_opt(const struct image_opts *opts, const char *key);

/* Make drv openable as "NAME:arg" (drv->name). 0, also when drv is known
 * already; -EEXIST another driver has the name; -ENOSPC table full. */
int image_register_driver(const struct driver *drv);
/* builtin.c: register this folder's drivers (raw, ram, null, vhd, nbd, error). */
int image_register_builtin(void);

/* The daemon's loop, for drivers with timers or descriptors of their own
 * (error: delays and its trigger file). Set once at start; NULL before. */
void image_set_loop(struct event_base *base);
struct event_base *image_loop(void);

/* Open "driver[,key=value...]:arg". -EINVAL for a malformed string, an
 * unknown driver, an option the driver does not take or a chain deeper
 * than IMAGE_DEPTH_MAX, else the driver's error. */
int image_open(const char *spec, bool read_only, struct image **out, struct errbuf *eb);
/* The same, with parent (an image string) serving the parent chain in
 * place of the one the image names; -EINVAL for an image without one. */
int image_open_parent(const char *spec, bool read_only, const char *parent,
		      struct image **out, struct errbuf *eb);
/* Drop one reference; the image closes with the last. */
void image_close(struct image *img);
/* Open read-only, shared: if an image with the same driver and canonical
 * path is open (through this function), take a reference to it. */
int image_open_shared(const char *driver, const char *path, struct image **out,
		      struct errbuf *eb);
/* How many chains share img (1 if not shared). */
unsigned image_refs(const struct image *img);
/* The image img reads through to (drv->parent), or NULL; from any thread. */
struct image *image_below(struct image *img);
/* Who the open on this thread is for: the owner given to
 * image_open_async, also inside an on_loop driver's open; NULL else. */
void *image_open_owner(void);

/* Open spec (with parent, as image_open_parent) on a thread of its own,
 * so that storage that hangs, a name that resolves slowly or a server
 * that never answers holds up nothing else; the chain is then started on
 * the loop and done(arg, img, 0, NULL-free eb) called there, or done(arg,
 * NULL, -errno, eb) on failure, or after timeout_s (0: none) with
 * -ETIMEDOUT, the late result then closed when it comes. 0 and *out set
 * (for image_open_abandon), or -EAGAIN with IMAGE_OPENS_MAX opens in
 * flight (stuck ones counted: hung storage costs that many threads, no
 * more), -ENOMEM; done is then never called. */
#define IMAGE_OPENS_MAX 16
struct image_opening;
int image_open_async(const char *spec, bool read_only, const char *parent, void *owner,
		     unsigned timeout_s,
		     void (*done)(void *arg, struct image *img, int err, const struct errbuf *eb),
		     void *arg, struct image_opening **out, struct errbuf *eb);
/* The caller no longer wants the answer (it stops): done is not called,
 * and the chain is closed when it opens. Before done only. */
void image_open_abandon(struct image_opening *o);

static inline void image_submit(struct image *img, struct image_io *io)
{
	img->drv->submit(img, io);
}

#endif
