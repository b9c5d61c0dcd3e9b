/* Image strings ("driver:arg") and the driver table. */
#include "image.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct driver *const drivers[] = {
	&driver_raw,
	&driver_ram,
	&driver_null,
	&driver_vhd,
	&driver_nbd,
	&driver_tap,
};

/* Shared read-only images, a short list: parents are few. */
static struct image *shared;

int image_open(const char *spec, bool read_only, struct image **out, struct errbuf *eb)
{
	return image_open_parent(spec, read_only, NULL, out, eb);
}

int image_open_parent(const char *spec, bool read_only, const char *parent,
		      struct image **out, struct errbuf *eb)
{
	const char *colon = spec ? strchr(spec, ':') : NULL;
	const struct driver *drv = NULL;
	struct image *img;
	int ret;

	if (!colon || colon == spec) {
		err_set(eb, "bad image string '%s': want DRIVER:ARG, e.g. raw:/path, ram:64M, null:1G",
			spec ? spec : "");
		return -EINVAL;
	}
	for (size_t i = 0; i < ARRAY_SIZE(drivers); i++)
		if (strlen(drivers[i]->name) == (size_t)(colon - spec) &&
		    strncmp(drivers[i]->name, spec, (size_t)(colon - spec)) == 0)
			drv = drivers[i];
	if (!drv) {
		err_set(eb, "unknown image driver '%.*s' (known: raw, ram, null, vhd, tap, nbd)",
			(int)(colon - spec), spec);
		return -EINVAL;
	}
	img = calloc(1, sizeof(*img));
	if (!img)
		return -ENOMEM;
	img->drv = drv;
	img->refs = 1;
	img->read_only = read_only;
	img->parent_spec = parent;
	img->spec = strdup(spec);
	if (!img->spec) {
		free(img);
		return -ENOMEM;
	}
	ret = drv->open(img, colon + 1, eb);
	if (ret < 0) {
		free(img->spec);
		free(img);
		return ret;
	}
	img->parent_spec = NULL;
	if (parent && !drv->parent) {
		err_set(eb, "%s has no parent chain for %s to serve", spec, parent);
		image_close(img);
		return -EINVAL;
	}
	*out = img;
	return 0;
}

void image_close(struct image *img)
{
	if (!img || --img->refs)
		return;
	if (img->shared_key) {
		struct image **p = &shared;

		while (*p != img)
			p = &(*p)->shared_next;
		*p = img->shared_next;
		free(img->shared_key);
	}
	img->drv->close(img);
	free(img->spec);
	free(img);
}

int image_open_shared(const char *driver, const char *path, struct image **out,
		      struct errbuf *eb)
{
	char *real = realpath(path, NULL), *key, *spec;
	struct image *img;
	int ret;

	if (!real) {
		ret = -errno;
		err_set(eb, "cannot open %s: %s", path, strerror(errno));
		return ret;
	}
	ret = asprintf(&key, "%s:%s", driver, real);
	free(real);
	if (ret < 0)
		return -ENOMEM;
	for (img = shared; img; img = img->shared_next) {
		if (strcmp(img->shared_key, key) == 0) {
			img->refs++;
			free(key);
			*out = img;
			return 0;
		}
	}
	spec = key; /* "driver:/canonical/path" is also the image string */
	ret = image_open(spec, true, &img, eb);
	if (ret < 0) {
		free(key);
		return ret;
	}
	img->shared_key = key;
	img->shared_next = shared;
	shared = img;
	*out = img;
	return 0;
}

unsigned image_refs(const struct image *img)
{
	return img->refs;
}
