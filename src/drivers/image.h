/* Image chains: parse an image string, find its driver, open it. A driver
 * whose format has parents (vhd) opens them with image_open_shared(): a
 * parent is opened read-only once, whatever number of chains use it. */
#ifndef TAPD_IMAGE_H
#define TAPD_IMAGE_H

#include "driver.h"

/* Make drv openable as "NAME:arg" (drv->name). 0, also when drv is known
 * already; -EEXIST another driver has the name; -ENOSPC table full. */
int image_register_driver(const struct driver *drv);
/* builtin.c: register this folder's drivers (raw, ram, null, vhd, nbd). */
int image_register_builtin(void);

/* Open "driver:arg". -EINVAL for a malformed string or unknown driver,
 * else the driver's error. */
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
static inline void image_submit(struct image *img, struct image_io *io)
{
	img->drv->submit(img, io);
}

#endif
