/* Unit tests of image strings "DRIVER[,KEY=VALUE...]:ARG": the option parser
 * under well-formed and hostile input (bounds, repeats, bytes that do not
 * belong), drivers refusing keys they do not take, and the error layer's
 * own values, checked by opening it over null: images. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "check-run.h"
#include "drivers/image.h"
#include "lib/log.h"

static struct errbuf eb;

static int parse(const char *spec, struct image_spec *s)
{
	memset(&eb, 0, sizeof(eb));
	return image_spec_parse(spec, s, &eb);
}

/* Parse spec, expecting -EINVAL with a message containing what. */
static void parse_bad(const char *spec, const char *what)
{
	struct image_spec s;

	ck_assert_int_eq(parse(spec, &s), -EINVAL);
	ck_assert_msg(strstr(eb.msg, what), "'%s': message '%s' lacks '%s'", spec, eb.msg, what);
	image_spec_free(&s);
}

static int open_img(const char *spec, struct image **img)
{
	memset(&eb, 0, sizeof(eb));
	return image_open(spec, false, img, &eb);
}

static void open_bad(const char *spec, const char *what)
{
	struct image *img = NULL;

	ck_assert_int_eq(open_img(spec, &img), -EINVAL);
	ck_assert_ptr_null(img);
	ck_assert_msg(strstr(eb.msg, what), "'%s': message '%s' lacks '%s'", spec, eb.msg, what);
}

START_TEST(parse_plain)
{
	struct image_spec s;

	ck_assert_int_eq(parse("raw:/srv/d.img", &s), 0);
	ck_assert_int_eq(s.driver_len, 3);
	ck_assert(!strncmp(s.driver, "raw", 3));
	ck_assert_str_eq(s.arg, "/srv/d.img");
	ck_assert_uint_eq(s.opts.n, 0);
	image_spec_free(&s);
	/* Only the first ':' ends the driver: the rest is the argument. */
	ck_assert_int_eq(parse("nbd:nbd+unix:///x?socket=/a:b", &s), 0);
	ck_assert_str_eq(s.arg, "nbd+unix:///x?socket=/a:b");
	image_spec_free(&s);
}
END_TEST

START_TEST(parse_options)
{
	struct image_spec s;

	ck_assert_int_eq(parse("error,errno=ENOSPC,ops=write,rate=0.5,trigger=/run/x,delay-ms=20:"
			       "raw,lock=off:/srv/d.img",
			       &s),
			 0);
	ck_assert(!strncmp(s.driver, "error", s.driver_len) && s.driver_len == 5);
	ck_assert_str_eq(s.arg, "raw,lock=off:/srv/d.img");
	ck_assert_uint_eq(s.opts.n, 5);
	ck_assert_str_eq(image_opt(&s.opts, "errno"), "ENOSPC");
	ck_assert_str_eq(image_opt(&s.opts, "ops"), "write");
	ck_assert_str_eq(image_opt(&s.opts, "rate"), "0.5");
	ck_assert_str_eq(image_opt(&s.opts, "trigger"), "/run/x");
	ck_assert_str_eq(image_opt(&s.opts, "delay-ms"), "20");
	ck_assert_ptr_null(image_opt(&s.opts, "lock"));
	ck_assert_ptr_null(image_opt(&s.opts, "err"));
	image_spec_free(&s);
	/* A value may hold '=' and spaces; only ',' and ':' end it. */
	ck_assert_int_eq(parse("x,k=a=b c:y", &s), 0);
	ck_assert_str_eq(image_opt(&s.opts, "k"), "a=b c");
	image_spec_free(&s);
}
END_TEST

START_TEST(parse_malformed)
{
	parse_bad(NULL, "want DRIVER");
	parse_bad("", "want DRIVER");
	parse_bad("raw", "want DRIVER");
	parse_bad(":/x", "want DRIVER");
	parse_bad(",a=1:/x", "want DRIVER");
	parse_bad("raw,:/x", "empty option");
	parse_bad("raw,a=1,:/x", "empty option");
	parse_bad("raw,,a=1:/x", "empty option");
	parse_bad("raw,a=1,,b=2:/x", "empty option");
	parse_bad("raw,=1:/x", "key is missing");
	parse_bad("raw,lock:/x", "'lock': it wants a value");
	parse_bad("raw,lock=:/x", "'lock': it wants a value");
	parse_bad("raw,Lock=off:/x", "lower-case");
	parse_bad("raw,lo ck=off:/x", "lower-case");
	parse_bad("raw,lo\x01"
		  "ck=off:/x",
		  "'lo?ck'");
	parse_bad("raw,lock=o\tff:/x", "'lock': its value has a control character");
	parse_bad("raw,lock=o\x7f:/x", "control character");
	parse_bad("raw,lock=off,lock=on:/x", "'lock' is given twice");
	parse_bad("raw,a=1,b=2,a=1:/x", "'a' is given twice");
}
END_TEST

START_TEST(parse_bounds)
{
	char spec[IMAGE_SPEC_MAX + 64], *p = spec;
	struct image_spec s;

	/* IMAGE_OPTS_MAX keys pass, one more does not. */
	p += sprintf(p, "x");
	for (int i = 0; i < IMAGE_OPTS_MAX; i++)
		p += sprintf(p, ",k%d=%d", i, i);
	strcpy(p, ":y");
	ck_assert_int_eq(parse(spec, &s), 0);
	ck_assert_uint_eq(s.opts.n, IMAGE_OPTS_MAX);
	ck_assert_str_eq(image_opt(&s.opts, "k15"), "15");
	image_spec_free(&s);
	strcpy(p, ",k99=1:y");
	parse_bad(spec, "more than 16");

	/* Keys and values at their bounds pass, one byte more does not. */
	p = spec + sprintf(spec, "x,");
	memset(p, 'k', IMAGE_OPT_KEY_MAX);
	strcpy(p + IMAGE_OPT_KEY_MAX, "=v:y");
	ck_assert_int_eq(parse(spec, &s), 0);
	image_spec_free(&s);
	memset(p, 'k', IMAGE_OPT_KEY_MAX + 1);
	strcpy(p + IMAGE_OPT_KEY_MAX + 1, "=v:y");
	parse_bad(spec, "keys are at most 32");

	p = spec + sprintf(spec, "x,k=");
	memset(p, 'v', IMAGE_OPT_VALUE_MAX);
	strcpy(p + IMAGE_OPT_VALUE_MAX, ":y");
	ck_assert_int_eq(parse(spec, &s), 0);
	ck_assert_uint_eq(strlen(image_opt(&s.opts, "k")), IMAGE_OPT_VALUE_MAX);
	image_spec_free(&s);
	memset(p, 'v', IMAGE_OPT_VALUE_MAX + 1);
	strcpy(p + IMAGE_OPT_VALUE_MAX + 1, ":y");
	parse_bad(spec, "'k': its value is longer than 1024");

	/* The whole string is bounded too. */
	memset(spec, 'a', IMAGE_SPEC_MAX + 1);
	memcpy(spec, "raw:", 4);
	spec[IMAGE_SPEC_MAX + 1] = '\0';
	parse_bad(spec, "longer than 8192");
	spec[IMAGE_SPEC_MAX] = '\0';
	ck_assert_int_eq(parse(spec, &s), 0);
	image_spec_free(&s);
}
END_TEST

/* Every byte value in every position of a short string: the parser must
 * answer 0 or -EINVAL, never crash or read out of bounds (run it under
 * valgrind or ASan to see the latter). */
START_TEST(parse_hostile_bytes)
{
	const char *base = "x,ab=cd,e=f:g";
	size_t len = strlen(base);
	char spec[32];
	struct image_spec s;

	for (size_t pos = 0; pos < len; pos++) {
		for (int c = 1; c < 256; c++) {
			int ret;

			memcpy(spec, base, len + 1);
			spec[pos] = (char)c;
			ret = parse(spec, &s);
			ck_assert_msg(ret == 0 || ret == -EINVAL, "byte %#x at %zu: %d", c, pos,
				      ret);
			if (ret == 0)
				for (unsigned i = 0; i < s.opts.n; i++)
					ck_assert(strlen(s.opts.opt[i].key) > 0 &&
						  strlen(s.opts.opt[i].value) > 0);
			image_spec_free(&s);
		}
		/* Cut short here. */
		memcpy(spec, base, pos);
		spec[pos] = '\0';
		ck_assert_int_le(parse(spec, &s), 0);
		image_spec_free(&s);
	}
}
END_TEST

START_TEST(drivers_refuse_keys)
{
	struct image *img;

	open_bad("null,lock=off:1M", "image driver null takes no option 'lock' (it takes none)");
	open_bad("ram,size=1:1M", "image driver ram takes no option 'size'");
	open_bad("raw,lock=off:/nonexistent", "image driver raw takes no option 'lock'");
	open_bad("vhd,x=1:/nonexistent", "image driver vhd takes no option 'x'");
	open_bad("error,colour=red:null:1M", "image driver error takes no option 'colour' "
					     "(it takes: errno, rate, ops, trigger, delay-ms)");
	open_bad("nosuch,a=b:x", "unknown image driver 'nosuch'");
	/* The inner image string's options are its own driver's. */
	open_bad("error:null,errno=EIO:1M", "image driver null takes no option 'errno'");
	ck_assert_int_eq(open_img("null:1M", &img), 0);
	image_close(img);
}
END_TEST

START_TEST(error_values)
{
	struct image *img;

	open_bad("error,errno=EFOO:null:1M", "bad errno 'EFOO'");
	open_bad("error,errno=0:null:1M", "bad errno '0'");
	open_bad("error,errno=4096:null:1M", "bad errno");
	open_bad("error,errno=-5:null:1M", "bad errno");
	open_bad("error,rate=1.5:null:1M", "bad rate '1.5'");
	open_bad("error,rate=-0.1:null:1M", "bad rate");
	open_bad("error,rate=101%:null:1M", "bad rate");
	open_bad("error,rate=nan:null:1M", "bad rate");
	open_bad("error,rate=inf:null:1M", "bad rate");
	open_bad("error,rate=%:null:1M", "bad rate");
	open_bad("error,rate=0.5x:null:1M", "bad rate");
	open_bad("error,ops=read+bogus:null:1M", "at 'bogus'");
	open_bad("error,ops=read++write:null:1M", "bad ops");
	open_bad("error,ops=+:null:1M", "bad ops");
	open_bad("error,delay-ms=60001:null:1M", "bad delay-ms '60001'");
	open_bad("error,delay-ms=-1:null:1M", "bad delay-ms");
	open_bad("error,delay-ms=1e3:null:1M", "bad delay-ms");
	open_bad("error:null:0", "null: bad size");
	/* Good values open (no loop here: no delay or trigger). */
	ck_assert_int_eq(open_img("error,errno=ENOSPC,rate=50%,ops=write+zero+flush:null:1M", &img),
			 0);
	ck_assert_uint_eq(img->size, 1u << 20);
	image_close(img);
	ck_assert_int_eq(open_img("error,errno=28,rate=1e-3,ops=all:null:1M", &img), 0);
	image_close(img);
	/* Delays and triggers need the loop, which this test has not set. */
	memset(&eb, 0, sizeof(eb));
	ck_assert_int_eq(image_open("error,delay-ms=5:null:1M", false, &img, &eb), -ENOTSUP);
}
END_TEST

START_TEST(nesting_bounded)
{
	static char spec[IMAGE_SPEC_MAX];
	struct image *img;
	size_t n = 0;

	/* Deep, but within bounds: opens. */
	for (int i = 0; i < IMAGE_DEPTH_MAX - 1; i++)
		n += (size_t)sprintf(spec + n, "error,rate=0:");
	strcpy(spec + n, "null:1M");
	ck_assert_int_eq(open_img(spec, &img), 0);
	image_close(img);
	/* One layer more is refused, without recursing further. */
	n = 0;
	for (int i = 0; i < IMAGE_DEPTH_MAX + 10; i++)
		n += (size_t)sprintf(spec + n, "error:");
	strcpy(spec + n, "null:1M");
	open_bad(spec, "image chain deeper than 64");
}
END_TEST

static int seen_err, seen_calls;

static void on_done(struct image_io *io, int err)
{
	(void)io;
	seen_err = err;
	seen_calls++;
}

/* Faults land on the chosen operations only, with the chosen errno. */
START_TEST(error_injects)
{
	static char buf[4096] __attribute__((aligned(4096)));
	struct image_io io = {.len = sizeof(buf), .buf = buf, .done = on_done};
	struct image *img;

	ck_assert_int_eq(open_img("error,errno=ENOSPC,ops=write:null:1M", &img), 0);
	io.op = IMAGE_OP_WRITE;
	image_submit(img, &io);
	ck_assert_int_eq(seen_calls, 1);
	ck_assert_int_eq(seen_err, -ENOSPC);
	io.op = IMAGE_OP_READ;
	memset(buf, 0xaa, sizeof(buf));
	image_submit(img, &io);
	ck_assert_int_eq(seen_calls, 2);
	ck_assert_int_eq(seen_err, 0);
	ck_assert_int_eq(buf[0], 0); /* it reached null: zeros */
	image_close(img);

	ck_assert_int_eq(open_img("error,rate=0:null:1M", &img), 0);
	io.op = IMAGE_OP_WRITE;
	image_submit(img, &io);
	ck_assert_int_eq(seen_err, 0);
	image_close(img);

	/* rate=50%: some fail, some do not. */
	ck_assert_int_eq(open_img("error,rate=50%,errno=EPERM:null:1M", &img), 0);
	int fails = 0;
	for (int i = 0; i < 1000; i++) {
		image_submit(img, &io);
		fails += seen_err == -EPERM;
	}
	ck_assert_int_gt(fails, 300);
	ck_assert_int_lt(fails, 700);
	image_close(img);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("image-opts");
	TCase *tc = tcase_create("core");

	log_set_level(LOG_ERR);
	image_register_builtin();
	tcase_add_test(tc, parse_plain);
	tcase_add_test(tc, parse_options);
	tcase_add_test(tc, parse_malformed);
	tcase_add_test(tc, parse_bounds);
	tcase_add_test(tc, parse_hostile_bytes);
	tcase_add_test(tc, drivers_refuse_keys);
	tcase_add_test(tc, error_values);
	tcase_add_test(tc, nesting_bounded);
	tcase_add_test(tc, error_injects);
	return check_run(s, tc);
}
