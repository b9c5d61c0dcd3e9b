/* Image strings ("driver:arg") and the driver table. */
#include "image.h"

#include <errno.h>
#include <string.h>

static const struct driver *const drivers[] = {
	&driver_raw,
	&driver_ram,
	&driver_null,
};

int image_open(const char *spec, bool read_only, struct image **out, struct errbuf *eb)
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
		err_set(eb, "unknown image driver '%.*s' (known: raw, ram, null)", (int)(colon - spec),
			spec);
		return -EINVAL;
	}
	img = calloc(1, sizeof(*img));
	if (!img)
		return -ENOMEM;
	img->drv = drv;
	img->read_only = read_only;
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
	*out = img;
	return 0;
}

void image_close(struct image *img)
{
	if (!img)
		return;
	img->drv->close(img);
	free(img->spec);
	free(img);
}
