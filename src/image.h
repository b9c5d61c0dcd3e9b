/* Image chains: parse an image string, find its driver, open it. For now a
 * chain is a single image; parents (vhd, tap:) come with the vhd driver. */
#ifndef TAPD_IMAGE_H
#define TAPD_IMAGE_H

#include "drivers/driver.h"

/* Open "driver:arg". -EINVAL for a malformed string or unknown driver,
 * else the driver's error. */
int image_open(const char *spec, bool read_only, struct image **out, struct errbuf *eb);
void image_close(struct image *img);
static inline void image_submit(struct image *img, struct image_io *io)
{
	img->drv->submit(img, io);
}

#endif
