/* The drivers of this folder, for core to register with image.c at setup.
 * A file of its own, above every driver: image.c is below them (the vhd
 * driver opens its parents through it) and so cannot name them. */
#include "image.h"

int image_register_builtin(void)
{
	static const struct driver *const builtin[] = {
		&driver_raw, &driver_ram, &driver_null, &driver_vhd, &driver_nbd, &driver_error,
	};
	int ret;

	for (size_t i = 0; i < ARRAY_SIZE(builtin); i++) {
		ret = image_register_driver(builtin[i]);
		if (ret < 0)
			return ret;
	}
	return 0;
}
