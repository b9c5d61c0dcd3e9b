/* The configuration file reader: one "key = value" a line, blank lines and
 * '#' comments skipped. Each line is bounded, and so is the file, and an
 * error names the line so that a typo is found at start, not at use. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "config.h"

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

int config_read(const char *file, bool must_exist, config_fn fn, void *arg, struct errbuf *eb)
{
	char line[CONFIG_LINE_MAX + 2];
	struct errbuf why = { "" };
	unsigned n = 0;
	int ret = 0;
	FILE *f;

	f = fopen(file, "re");
	if (!f) {
		ret = -errno;
		if (ret == -ENOENT && !must_exist)
			return 0;
		err_set(eb, "%s: %s", file, strerror(-ret));
		return ret;
	}
	while (fgets(line, sizeof(line), f)) {
		char *s, *eq, *key;

		if (++n > CONFIG_LINES_MAX) {
			err_set(eb, "%s: more than %d lines", file, CONFIG_LINES_MAX);
			ret = -EINVAL;
			break;
		}
		if (!strchr(line, '\n') && !feof(f)) {
			err_set(eb, "%s:%u: line longer than %d bytes", file, n, CONFIG_LINE_MAX);
			ret = -EINVAL;
			break;
		}
		s = trim(line);
		if (!*s || *s == '#')
			continue;
		eq = strchr(s, '=');
		if (!eq) {
			err_set(eb, "%s:%u: expected KEY = VALUE: %s", file, n, s);
			ret = -EINVAL;
			break;
		}
		*eq = '\0';
		key = trim(s);
		ret = fn(key, trim(eq + 1), arg, &why);
		if (ret < 0) {
			err_set(eb, "%s:%u: %s", file, n, why.msg[0] ? why.msg : strerror(-ret));
			break;
		}
	}
	if (!ret && ferror(f)) {
		ret = -EIO;
		err_set(eb, "%s: read error", file);
	}
	fclose(f);
	return ret;
}
