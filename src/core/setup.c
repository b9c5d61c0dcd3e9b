/* Bringing core up and down. The image drivers are registered here, the
 * built-in ones and core's own tap: (stack.c), because this file is above
 * both tap.c and stack.c: were tap.c to register stack.c's driver, the two
 * would call each other. */
#include "drivers/image.h"
#include "internal.h"

int tap_setup(struct event_base *base)
{
	int ret;

	ret = image_register_builtin();
	if (ret == 0)
		ret = image_register_driver(&driver_tap);
	if (ret < 0)
		return ret;
	/* Opens are timed and started on the loop (image_open_async). */
	image_set_loop(base);
	return tap_registry_setup(base);
}

void tap_teardown(void)
{
	tap_registry_teardown();
}
