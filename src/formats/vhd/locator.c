/* VHD parent locators: UTF-16 <-> UTF-8, the W2ku/W2ru/MacX encodings and
 * the path arithmetic that turns a locator into a file to open (and a
 * parent's location into a relative locator). Pure string code, no I/O. */
#include "format.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void put_unit(uint8_t *p, uint16_t u, bool be)
{
	p[be ? 0 : 1] = (uint8_t)(u >> 8);
	p[be ? 1 : 0] = (uint8_t)u;
}

static uint16_t get_unit(const uint8_t *p, bool be)
{
	return be ? (uint16_t)(p[0] << 8 | p[1]) : (uint16_t)(p[1] << 8 | p[0]);
}

/* Next code point of a NUL-terminated UTF-8 string; -1 if malformed
 * (overlong forms, surrogates and values past U+10FFFF included). */
static int32_t utf8_next(const unsigned char **sp)
{
	const unsigned char *s = *sp;
	uint32_t cp, min;
	int n;

	if (s[0] < 0x80) {
		*sp = s + 1;
		return s[0];
	}
	if ((s[0] & 0xe0) == 0xc0) {
		n = 1, cp = s[0] & 0x1f, min = 0x80;
	} else if ((s[0] & 0xf0) == 0xe0) {
		n = 2, cp = s[0] & 0x0f, min = 0x800;
	} else if ((s[0] & 0xf8) == 0xf0) {
		n = 3, cp = s[0] & 0x07, min = 0x10000;
	} else {
		return -1;
	}
	for (int i = 1; i <= n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return -1;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	*sp = s + n + 1;
	return (int32_t)cp;
}

ssize_t vhd_utf16_encode(const char *str, uint8_t *out, size_t out_size, bool big_endian)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t n = 0;

	while (*s) {
		int32_t cp = utf8_next(&s);

		if (cp < 0)
			return -EINVAL;
		if (cp >= 0x10000) {
			if (n + 4 > out_size)
				return -ENAMETOOLONG;
			cp -= 0x10000;
			put_unit(out + n, (uint16_t)(0xd800 | (cp >> 10)), big_endian);
			put_unit(out + n + 2, (uint16_t)(0xdc00 | (cp & 0x3ff)), big_endian);
			n += 4;
		} else {
			if (n + 2 > out_size)
				return -ENAMETOOLONG;
			put_unit(out + n, (uint16_t)cp, big_endian);
			n += 2;
		}
	}
	return (ssize_t)n;
}

int vhd_utf16_decode(const uint8_t *in, size_t in_len, bool big_endian, char *out,
		     size_t out_size)
{
	size_t o = 0;

	if (!out_size)
		return -ENAMETOOLONG;
	for (size_t i = 0; i + 1 < in_len; i += 2) {
		uint32_t cp = get_unit(in + i, big_endian);
		char enc[4];
		int n;

		if (!cp)
			break;
		if (cp >= 0xd800 && cp <= 0xdbff) {
			uint32_t lo;

			if (i + 3 >= in_len)
				return -EINVAL;
			lo = get_unit(in + i + 2, big_endian);
			if (lo < 0xdc00 || lo > 0xdfff)
				return -EINVAL;
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			i += 2;
		} else if (cp >= 0xdc00 && cp <= 0xdfff) {
			return -EINVAL;
		}
		if (cp < 0x80) {
			enc[0] = (char)cp, n = 1;
		} else if (cp < 0x800) {
			enc[0] = (char)(0xc0 | cp >> 6), enc[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
		} else if (cp < 0x10000) {
			enc[0] = (char)(0xe0 | cp >> 12);
			enc[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
			enc[2] = (char)(0x80 | (cp & 0x3f));
			n = 3;
		} else {
			enc[0] = (char)(0xf0 | cp >> 18);
			enc[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
			enc[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
			enc[3] = (char)(0x80 | (cp & 0x3f));
			n = 4;
		}
		if (o + n + 1 > out_size)
			return -ENAMETOOLONG;
		memcpy(out + o, enc, n);
		o += n;
	}
	out[o] = '\0';
	return 0;
}

uint64_t vhd_locator_space(const struct vhd_locator *loc)
{
	/* The spec says sectors; Windows (and blktap after it) write bytes.
	 * Small values can only be sectors, whole multiples of 512 bytes. */
	if (loc->data_space < VHD_SECTOR_SIZE)
		return (uint64_t)loc->data_space << VHD_SECTOR_SHIFT;
	if (loc->data_space % VHD_SECTOR_SIZE == 0)
		return loc->data_space;
	return 0;
}

ssize_t vhd_locator_encode(uint32_t code, const char *path, uint8_t *out, size_t out_size)
{
	char buf[VHD_PATH_MAX + 8];
	int n;

	switch (code) {
	case VHD_PLAT_MACX:
		n = snprintf(buf, sizeof(buf), "file://%s", path);
		if (n < 0 || (size_t)n >= sizeof(buf) || (size_t)n > out_size)
			return -ENAMETOOLONG;
		memcpy(out, buf, n);
		return n;
	case VHD_PLAT_W2KU:
		if (path[0] != '/')
			return -EINVAL;
		n = snprintf(buf, sizeof(buf), "%s", path);
		break;
	case VHD_PLAT_W2RU:
		if (path[0] == '/')
			return -EINVAL;
		/* Windows wants relative locators to start with ".\". */
		if (!strncmp(path, "./", 2))
			path += 2;
		n = snprintf(buf, sizeof(buf), "%s%s", strncmp(path, "../", 3) ? "./" : "", path);
		break;
	default:
		return -ENOTSUP;
	}
	if (n < 0 || (size_t)n >= sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf; *p; p++)
		if (*p == '/')
			*p = '\\';
	return vhd_utf16_encode(buf, out, out_size, false);
}

int vhd_locator_decode(uint32_t code, const uint8_t *data, size_t len, char *out,
		       size_t out_size, struct errbuf *eb)
{
	char *p;
	int r;

	switch (code) {
	case VHD_PLAT_MACX:
		if (len >= out_size) {
			err_set(eb, "MacX parent locator too long");
			return -ENAMETOOLONG;
		}
		if (memchr(data, '\0', len))
			len = strnlen((const char *)data, len);
		if (len < 7 || memcmp(data, "file://", 7)) {
			err_set(eb, "MacX parent locator is not a file:// URL");
			return -EINVAL;
		}
		memcpy(out, data + 7, len - 7);
		out[len - 7] = '\0';
		if (!out[0]) {
			err_set(eb, "MacX parent locator holds an empty path");
			return -EINVAL;
		}
		return 0;
	case VHD_PLAT_W2KU:
	case VHD_PLAT_W2RU:
		r = vhd_utf16_decode(data, len, false, out, out_size);
		if (r) {
			err_set(eb, "%s parent locator is not valid UTF-16LE",
				code == VHD_PLAT_W2KU ? "W2ku" : "W2ru");
			return r;
		}
		for (p = out; *p; p++)
			if (*p == '\\')
				*p = '/';
		/* A drive letter means nothing here: drop it, keep the path. */
		if (((out[0] | 0x20) >= 'a' && (out[0] | 0x20) <= 'z') && out[1] == ':')
			memmove(out, out + 2, strlen(out + 2) + 1);
		if (!out[0]) {
			err_set(eb, "parent locator holds an empty path");
			return -EINVAL;
		}
		return 0;
	default:
		err_set(eb, "parent locator code 0x%08" PRIx32 " carries no usable path", code);
		return -ENOTSUP;
	}
}

int vhd_parent_join(const char *child_path, const char *loc_path, char *out, size_t out_size)
{
	const char *slash;
	int n;

	if (loc_path[0] == '/') {
		n = snprintf(out, out_size, "%s", loc_path);
	} else {
		while (!strncmp(loc_path, "./", 2))
			loc_path += 2;
		slash = strrchr(child_path, '/');
		if (slash)
			n = snprintf(out, out_size, "%.*s/%s", (int)(slash - child_path),
				     child_path, loc_path);
		else
			n = snprintf(out, out_size, "%s", loc_path);
	}
	return n < 0 || (size_t)n >= out_size ? -ENAMETOOLONG : 0;
}

int vhd_relative_path(const char *from_file, const char *to_file, char *out, size_t out_size)
{
	size_t common = 0, o = 0;
	const char *rest;
	int n;

	if (from_file[0] != '/' || to_file[0] != '/')
		return -EINVAL;
	/* Longest common prefix that ends at a '/'. */
	for (size_t i = 0; from_file[i] && from_file[i] == to_file[i]; i++)
		if (from_file[i] == '/')
			common = i + 1;
	rest = from_file + common;
	out[0] = '\0';
	for (const char *p = rest; *p; p++) {
		if (*p != '/')
			continue;
		if (o + 4 > out_size)
			return -ENAMETOOLONG;
		memcpy(out + o, "../", 4);
		o += 3;
	}
	n = snprintf(out + o, out_size - o, "%s", to_file + common);
	return n < 0 || (size_t)n >= out_size - o ? -ENAMETOOLONG : 0;
}
