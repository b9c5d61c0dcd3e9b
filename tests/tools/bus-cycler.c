/* A test helper: N CreateTap/Destroy cycles over D-Bus from one process,
 * so that tests can run thousands of them in seconds (tapctl costs a
 * process per call). Usage: bus-cycler [--keep] ADDRESS N IMAGE...; cycle
 * i uses IMAGE number i % count and names its tap cI; with --keep the taps
 * are created and left. Exit 0 when every call succeeded, 1 at the first
 * failure (with the error on stderr). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>

#define DEST "org.xenproject.Tapd1"

int main(int argc, char **argv)
{
	sd_bus *bus = NULL;
	int keep = argc > 1 && !strcmp(argv[1], "--keep");
	long n;
	int r;

	argc -= keep;
	argv += keep;
	if (argc < 4 || (n = strtol(argv[2], NULL, 10)) < 0) {
		fprintf(stderr, "usage: %s ADDRESS N IMAGE...\n", argv[0]);
		return 2;
	}
	if ((r = sd_bus_new(&bus)) < 0 || (r = sd_bus_set_address(bus, argv[1])) < 0 ||
	    (r = sd_bus_set_bus_client(bus, 1)) < 0 || (r = sd_bus_start(bus)) < 0) {
		fprintf(stderr, "bus-cycler: cannot connect to %s: %d\n", argv[1], r);
		return 1;
	}
	for (long i = 0; i < n; i++) {
		sd_bus_error e = SD_BUS_ERROR_NULL;
		sd_bus_message *reply = NULL;
		const char *image = argv[3 + i % (argc - 3)], *path;
		char name[32];

		snprintf(name, sizeof(name), "c%ld", i);
		r = sd_bus_call_method(bus, DEST, "/org/xenproject/Tapd1", DEST ".Manager",
				       "CreateTap", &e, &reply, "sa{sv}", image, 1, "name", "s", name);
		if (r >= 0)
			r = sd_bus_message_read(reply, "o", &path);
		if (r >= 0 && !keep)
			r = sd_bus_call_method(bus, DEST, path, DEST ".Tap", "Destroy", &e, NULL, "");
		sd_bus_message_unref(reply);
		if (r < 0) {
			fprintf(stderr, "bus-cycler: cycle %ld (%s): %s\n", i, image,
				e.message ? e.message : "failed");
			sd_bus_error_free(&e);
			return 1;
		}
	}
	sd_bus_unref(bus);
	return 0;
}
