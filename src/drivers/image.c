/* Image strings ("driver:arg"), the driver table and shared parents. The
 * table is filled by registration (builtin.c for this folder's drivers,
 * core for tap:) and names no driver itself: the drivers sit above this
 * file, since the vhd driver opens its parents through it. */
#include "image.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Registered drivers, in the order they came. */
static const struct driver *drivers[16];
static size_t ndrivers;

/* Shared read-only images, a short list: parents are few. */
static struct image *shared;

static const struct driver *image_driver(const char *name, size_t len)
{
	for (size_t i = 0; i < ndrivers; i++)
		if (strlen(drivers[i]->name) == len && strncmp(drivers[i]->name, name, len) == 0)
			return drivers[i];
	return NULL;
}

int image_register_driver(const struct driver *drv)
{
	const struct driver *known = image_driver(drv->name, strlen(drv->name));

	if (known)
		return known == drv ? 0 : -EEXIST;
	if (ndrivers == ARRAY_SIZE(drivers))
		return -ENOSPC;
	drivers[ndrivers++] = drv;
	return 0;
}

/* "raw, ram, ...": the registered drivers' names, for an error message. */
static void image_driver_names(char *buf, size_t size)
{
	size_t n = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < ndrivers && n < size; i++)
		n += (size_t)snprintf(buf + n, size - n, "%s%s", i ? ", " : "", drivers[i]->name);
}

int image_open(const char *spec, bool read_only, struct image **out, struct errbuf *eb)
{
	return image_open_parent(spec, read_only, NULL, out, eb);
}

int image_open_parent(const char *spec, bool read_only, const char *parent,
		      struct image **out, struct errbuf *eb)
{
	const char *colon = spec ? strchr(spec, ':') : NULL;
	const struct driver *drv;
	struct image *img;
	int ret;

	if (!colon || colon == spec) {
		err_set(eb, "bad image string '%s': want DRIVER:ARG, e.g. raw:/path, ram:64M, null:1G",
			spec ? spec : "");
		return -EINVAL;
	}
	drv = image_driver(spec, (size_t)(colon - spec));
	if (!drv) {
		char known[128];

		image_driver_names(known, sizeof(known));
		err_set(eb, "unknown image driver '%.*s' (known: %s)", (int)(colon - spec), spec,
			known);
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
