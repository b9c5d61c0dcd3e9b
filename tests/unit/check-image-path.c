/* Unit tests of the image file policy (drivers/path.c) and the
 * configuration reader (lib/config.c): every way out of an allowed
 * directory, with openat2 and with the realpath fallback, the file-type
 * rule, and malformed, hostile or oversized configuration files. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check-run.h"
#include "drivers/path.h"
#include "lib/config.h"

static char top[64], in[128], out[128];
static struct errbuf eb;

static void mkfile(const char *path, const char *data)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	fputs(data, f);
	fclose(f);
}

static void setup(void)
{
	char p[256];

	strcpy(top, "/tmp/check-image-path.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(top));
	snprintf(in, sizeof(in), "%s/in", top);
	snprintf(out, sizeof(out), "%s/out", top);
	ck_assert_int_eq(mkdir(in, 0755), 0);
	ck_assert_int_eq(mkdir(out, 0755), 0);
	snprintf(p, sizeof(p), "%s/a.img", in);
	mkfile(p, "inside");
	snprintf(p, sizeof(p), "%s/secret", out);
	mkfile(p, "outside");
	snprintf(p, sizeof(p), "%s/abs", in);
	ck_assert_int_eq(symlink("/etc/passwd", p), 0);
	snprintf(p, sizeof(p), "%s/rel", in);
	ck_assert_int_eq(symlink("../out/secret", p), 0);
	snprintf(p, sizeof(p), "%s/alias", in);
	ck_assert_int_eq(symlink("a.img", p), 0);
	snprintf(p, sizeof(p), "%s/fifo", in);
	ck_assert_int_eq(mkfifo(p, 0600), 0);
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", top);
	ck_assert_int_eq(system(cmd), 0);
	image_path_policy_free();
}

/* Open IN-or-OUT/rel read-only: the fd (closed) or -errno. */
static int try_open(const char *fmt, const char *base, const char *rel)
{
	char p[256];
	struct stat st;
	int fd;

	memset(&eb, 0, sizeof(eb));
	snprintf(p, sizeof(p), fmt, base, rel);
	fd = image_path_open(p, O_RDONLY | O_CLOEXEC, &st, &eb);
	if (fd >= 0) {
		ck_assert(S_ISREG(st.st_mode));
		close(fd);
		return 0;
	}
	ck_assert_msg(eb.msg[0], "%s: %d without a message", p, fd);
	return fd;
}

static void check_policy(void)
{
	ck_assert_int_eq(image_path_allow_dir(in, &eb), 0);
	ck_assert(image_path_restricted());
	ck_assert_int_eq(try_open("%s/%s", in, "a.img"), 0);
	ck_assert_int_eq(try_open("%s/%s", in, "alias"), 0);
	ck_assert_int_eq(try_open("%s//%s", in, "a.img"), 0);
	ck_assert_int_eq(try_open("%s/%s", out, "secret"), -EACCES);
	ck_assert(strstr(eb.msg, "not under an allowed image directory (--image-dir)"));
	ck_assert_int_eq(try_open("%s/%s", "/etc", "passwd"), -EACCES);
	ck_assert_int_eq(try_open("%s/%s", in, "abs"), -EACCES);
	ck_assert(strstr(eb.msg, "leads out"));
	ck_assert_int_eq(try_open("%s/%s", in, "rel"), -EACCES);
	ck_assert_int_eq(try_open("%s/%s", in, "../out/secret"), -EACCES);
	ck_assert_int_eq(try_open("%s/%s", in, "./../../../../../etc/passwd"), -EACCES);
	/* A sibling whose name starts like the directory is not beneath it. */
	ck_assert_int_eq(try_open("%s%s", in, "x/a.img"), -EACCES);
	ck_assert_int_eq(try_open("%s/%s", in, "missing"), -ENOENT);
	ck_assert_int_eq(try_open("%s/%s", in, "fifo"), -EINVAL);
	ck_assert(strstr(eb.msg, "is a FIFO"));
	ck_assert_int_eq(try_open("%s%s", in, ""), -EINVAL);
	ck_assert(strstr(eb.msg, "is a directory"));
}

START_TEST(beneath_openat2)
{
	check_policy();
}
END_TEST

START_TEST(beneath_fallback)
{
	image_path_no_openat2();
	check_policy();
}
END_TEST

START_TEST(unrestricted)
{
	ck_assert(!image_path_restricted());
	ck_assert_int_eq(try_open("%s/%s", out, "secret"), 0);
	ck_assert_int_eq(try_open("%s/%s", in, "rel"), 0);
	ck_assert_int_eq(try_open("%s/%s", in, "fifo"), -EINVAL);
	ck_assert_int_eq(try_open("%s%s", "/dev/", "null"), -EINVAL);
	ck_assert(strstr(eb.msg, "character device"));
	ck_assert_int_eq(try_open("%s%s", "relative/", "a.img"), -EINVAL);
	ck_assert(strstr(eb.msg, "must be absolute"));
}
END_TEST

START_TEST(devices_only)
{
	/* A device pattern alone restricts files too, and names only devices. */
	ck_assert_int_eq(image_path_allow_device("/dev/loop*", &eb), 0);
	ck_assert_int_eq(try_open("%s/%s", in, "a.img"), -EACCES);
	/* A pattern matching a regular file does not let it in. */
	char pat[160];
	snprintf(pat, sizeof(pat), "%s/*", out);
	ck_assert_int_eq(image_path_allow_device(pat, &eb), 0);
	ck_assert_int_eq(try_open("%s/%s", out, "secret"), -EACCES);
	ck_assert(strstr(eb.msg, "not under an allowed image directory"));
	ck_assert_int_eq(image_path_allow_device("relative*", &eb), -EINVAL);
	ck_assert_int_eq(image_path_allow_dir("relative", &eb), -EINVAL);
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(image_path_allow_dir("/nonexistent-dir", &eb), -ENOENT);
	ck_assert_int_eq(image_path_allow_dir("/etc/passwd", &eb), -ENOTDIR);
	for (int i = 2; i < IMAGE_PATH_DEVICES_MAX; i++)
		ck_assert_int_eq(image_path_allow_device("/dev/x", &eb), 0);
	ck_assert_int_eq(image_path_allow_device("/dev/x", &eb), -ENOSPC);
}
END_TEST

static int seen;

static int setting(const char *key, const char *value, void *arg, struct errbuf *e)
{
	(void)arg;
	if (strcmp(key, "k") == 0 && strcmp(value, "v w") == 0) {
		seen++;
		return 0;
	}
	err_set(e, "unknown setting '%s'", key);
	return -EINVAL;
}

static int read_conf(const char *text)
{
	char p[128];

	snprintf(p, sizeof(p), "%s/c.conf", top);
	mkfile(p, text);
	memset(&eb, 0, sizeof(eb));
	seen = 0;
	return config_read(p, true, setting, NULL, &eb);
}

START_TEST(config_files)
{
	char *big = malloc(CONFIG_LINE_MAX + 16);

	ck_assert_int_eq(read_conf("# c\n\n  k =  v w  \nk=v w"), 0);
	ck_assert_int_eq(seen, 2);
	ck_assert_int_eq(read_conf("k = v w\n\nnope = 1\n"), -EINVAL);
	ck_assert_msg(strstr(eb.msg, "c.conf:3: unknown setting 'nope'"), "%s", eb.msg);
	ck_assert_int_eq(read_conf("k = v w\njust words\n"), -EINVAL);
	ck_assert(strstr(eb.msg, "c.conf:2: expected KEY = VALUE"));
	memset(big, 'x', CONFIG_LINE_MAX + 10);
	big[CONFIG_LINE_MAX + 10] = '\0';
	ck_assert_int_eq(read_conf(big), -EINVAL);
	ck_assert(strstr(eb.msg, "c.conf:1: line longer than"));
	free(big);
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(config_read("/nonexistent/tapd.conf", false, setting, NULL, &eb), 0);
	ck_assert_int_eq(config_read("/nonexistent/tapd.conf", true, setting, NULL, &eb), -ENOENT);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("image-path");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, beneath_openat2);
	tcase_add_test(tc, beneath_fallback);
	tcase_add_test(tc, unrestricted);
	tcase_add_test(tc, devices_only);
	tcase_add_test(tc, config_files);
	return check_run(s, tc);
}
