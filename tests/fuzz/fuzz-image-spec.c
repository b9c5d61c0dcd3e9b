/* Fuzz target for image strings, "DRIVER[,KEY=VALUE...]:ARG" (from
 * D-Bus callers, tapctl, xenstore later): each input is one string, taken
 * apart with image_spec_parse and its options looked up; strings whose
 * drivers touch nothing outside this process (null, ram and error layers
 * over them) are also opened and closed, nested options and all. A crash,
 * a sanitizer report or a leak is a finding.
 *
 * Built as a libFuzzer target (-DFUZZ_LIBFUZZER, clang) or, without
 * clang, with a standalone driver that mutates the seeds at random. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "drivers/image.h"
#include "lib/log.h"

/* Whether every image in s (an error layer's ARG is another image string)
 * names a driver that opens no file, device or socket. */
static bool harmless(const char *s)
{
	static const char *const bad[] = { "raw", "vhd", "nbd", "tap", "/" };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (strstr(s, bad[i]))
			return false;
	return true;
}

static int one_input(const uint8_t *data, size_t size)
{
	static bool ready;
	struct errbuf eb = { "" };
	struct image_spec spec;
	struct image *img;
	char *s;

	if (!ready) {
		log_set_level(getenv("FUZZ_LOG") ? 7 : 0);
		if (image_register_builtin() < 0)
			abort();
		ready = true;
	}
	s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	if (image_spec_parse(s, &spec, &eb) == 0) {
		static const char *const keys[] = { "errno", "rate", "ops", "trigger", "delay-ms",
						    "lock", "" };

		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			(void)image_opt(&spec.opts, keys[i]);
	}
	image_spec_free(&spec);
	if (harmless(s) && image_open(s, data[0] & 1, &img, &eb) == 0)
		image_close(img);
	free(s);
	return 0;
}

#ifdef FUZZ_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return size ? one_input(data, size) : 0;
}
#else
int main(int argc, char **argv)
{
	static char seeds[64][512];
	size_t lens[64], nseeds = 0;
	unsigned long execs = 0;
	uint8_t buf[1024];
	time_t end;

	if (argc < 3) {
		fprintf(stderr, "usage: %s SECONDS SEED...\n", argv[0]);
		return 2;
	}
	for (int i = 2; i < argc && nseeds < 64; i++) {
		FILE *f = fopen(argv[i], "rb");

		if (!f)
			continue;
		lens[nseeds] = fread(seeds[nseeds], 1, sizeof(seeds[0]), f);
		fclose(f);
		one_input((uint8_t *)seeds[nseeds], lens[nseeds]);
		nseeds++, execs++;
	}
	if (!nseeds)
		return 2;
	srand((unsigned)time(NULL));
	end = time(NULL) + atoi(argv[1]);
	while (time(NULL) < end) {
		size_t s = (size_t)rand() % nseeds, len = lens[s];

		memcpy(buf, seeds[s], len);
		for (int e = 1 + rand() % 6; e-- > 0 && len;) {
			size_t at = (size_t)rand() % len;

			if (rand() % 3)
				buf[at] = (uint8_t)"=,:%.01e+-aZ\0\377"[rand() % 15];
			else if (len < sizeof(buf) - 1)
				memmove(buf + at + 1, buf + at, len++ - at);
		}
		if (len)
			one_input(buf, len);
		execs++;
	}
	printf("fuzz-image-spec: %lu inputs, no finding\n", execs);
	return 0;
}
#endif
