/* Loads and validates all metadata of one VHD (footer, header, BAT,
 * batmap, locators) through a caller-given pread, so that the daemon's
 * open path, tapd-vhd and the fuzzer run exactly the same checks. Also
 * the OFD lock every user of an image takes. */
#include "format.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void note(vhd_report_fn *report, void *opaque, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void note(vhd_report_fn *report, void *opaque, const char *fmt, ...)
{
	char msg[320];
	va_list ap;

	if (!report)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	report(opaque, msg);
}

/* The end footer is the authority; a dynamic disk whose end footer is
 * damaged (a crash while a block was being added) is still readable
 * through the copy at offset 0, which is reported. */
static int load_footer(struct vhd_meta *m, vhd_pread_fn *rd, void *opaque,
		       vhd_report_fn *report, void *rep_opaque, struct errbuf *eb)
{
	uint8_t end[VHD_FOOTER_SIZE], copy[VHD_FOOTER_SIZE];
	struct errbuf end_err = { "" }, copy_err = { "" };
	struct vhd_footer cf;
	int r, rc;

	if (m->file_size < VHD_FOOTER_SIZE) {
		err_set(eb, "file of %" PRIu64 " bytes is too small to be a VHD", m->file_size);
		return -EINVAL;
	}
	r = rd(opaque, end, sizeof(end), m->file_size - VHD_FOOTER_SIZE);
	if (r) {
		err_set(eb, "cannot read the footer: %s", strerror(-r));
		return r;
	}
	r = vhd_footer_decode(end, &m->footer, m->file_size, &end_err);
	if (m->file_size < 2 * VHD_FOOTER_SIZE) {
		if (r)
			err_set(eb, "%s", end_err.msg);
		return r;
	}
	rc = rd(opaque, copy, sizeof(copy), 0);
	if (rc) {
		err_set(eb, "cannot read the footer copy at offset 0: %s", strerror(-rc));
		return rc;
	}
	rc = vhd_footer_decode(copy, &cf, m->file_size, &copy_err);
	m->footer_offset = m->file_size - VHD_FOOTER_SIZE;
	if (!r) {
		if (m->footer.type == VHD_TYPE_FIXED)
			return 0;
		if (rc) {
			m->copies_differ = true;
			note(report, rep_opaque, "footer copy at offset 0 is damaged: %s", copy_err.msg);
		} else if (memcmp(end, copy, sizeof(end))) {
			m->copies_differ = true;
			note(report, rep_opaque, "footer copy at offset 0 differs from the footer at "
			     "the end of the file");
		}
		return 0;
	}
	if (rc || cf.type == VHD_TYPE_FIXED) {
		/* Report the end footer's reason: that is the one for a fixed
		 * disk, and the more telling one for garbage. */
		err_set(eb, "%s", end_err.msg);
		return r;
	}
	m->footer = cf;
	m->footer_offset = 0;
	m->footer_from_copy = true;
	note(report, rep_opaque, "footer at the end of the file is damaged (%s); using the "
	     "copy at offset 0", end_err.msg);
	return 0;
}

static int load_locators(struct vhd_meta *m, vhd_pread_fn *rd, void *opaque,
			 vhd_report_fn *report, void *rep_opaque, struct errbuf *eb)
{
	for (int i = 0; i < VHD_LOCATORS; i++) {
		const struct vhd_locator *loc = &m->header.loc[i];
		struct errbuf lerr = { "" };
		uint8_t *raw;
		char *path;
		int r;

		if (loc->code != VHD_PLAT_W2KU && loc->code != VHD_PLAT_W2RU &&
		    loc->code != VHD_PLAT_MACX)
			continue;
		if (!loc->data_len || loc->data_len > VHD_PATH_MAX * 4) {
			note(report, rep_opaque, "parent locator %d has a bad length %" PRIu32, i,
			     loc->data_len);
			continue;
		}
		raw = malloc(loc->data_len);
		path = malloc(VHD_PATH_MAX);
		if (!raw || !path) {
			free(raw);
			free(path);
			err_set(eb, "out of memory reading parent locators");
			return -ENOMEM;
		}
		r = rd(opaque, raw, loc->data_len, loc->data_offset);
		if (!r)
			r = vhd_locator_decode(loc->code, raw, loc->data_len, path, VHD_PATH_MAX,
					       &lerr);
		else
			err_set(&lerr, "%s", strerror(-r));
		free(raw);
		if (r) {
			note(report, rep_opaque, "parent locator %d unusable: %s", i, lerr.msg);
			free(path);
			continue;
		}
		m->parent_loc[i] = path;
	}
	return 0;
}

static int load_batmap(struct vhd_meta *m, vhd_pread_fn *rd, void *opaque,
		       vhd_report_fn *report, void *rep_opaque)
{
	const struct vhd_layout *l = &m->layout;
	uint8_t sec[VHD_SECTOR_SIZE];
	struct errbuf berr = { "" };
	uint64_t off = vhd_batmap_header_offset(l);
	size_t len;
	int r;

	/* The batmap is only a hint: any problem means "no batmap". */
	if (off + VHD_SECTOR_SIZE + VHD_FOOTER_SIZE > m->file_size)
		return 0;
	if (rd(opaque, sec, sizeof(sec), off))
		return 0;
	r = vhd_batmap_decode(sec, l, m->file_size, &m->batmap, &berr);
	if (r == -ENOENT)
		return 0;
	if (!r) {
		/* Even a batmap that fails its checksum occupies its sectors:
		 * keep new blocks off them. */
		m->layout.meta_end = MAX(m->layout.meta_end, m->batmap.offset +
					 ((uint64_t)m->batmap.size << VHD_SECTOR_SHIFT));
		len = (size_t)m->batmap.size << VHD_SECTOR_SHIFT;
		m->batmap_map = malloc(len);
		if (!m->batmap_map)
			return -ENOMEM;
		r = rd(opaque, m->batmap_map, len, m->batmap.offset);
		if (r)
			err_set(&berr, "cannot read the batmap: %s", strerror(-r));
		else
			r = vhd_batmap_verify(&m->batmap, m->batmap_map, &berr);
	}
	if (r) {
		note(report, rep_opaque, "batmap ignored: %s", berr.msg);
		free(m->batmap_map);
		m->batmap_map = NULL;
		return 0;
	}
	m->has_batmap = true;
	return 0;
}

int vhd_meta_load(struct vhd_meta *m, vhd_pread_fn *rd, void *opaque, uint64_t file_size,
		  vhd_report_fn *report, void *rep_opaque, struct errbuf *eb)
{
	uint8_t hbuf[VHD_HEADER_SIZE];
	uint8_t *raw = NULL;
	int r;

	memset(m, 0, sizeof(*m));
	m->file_size = file_size;
	r = load_footer(m, rd, opaque, report, rep_opaque, eb);
	if (r)
		return r;
	if (m->footer.type == VHD_TYPE_FIXED)
		return vhd_layout_init(&m->layout, &m->footer, NULL, file_size, eb);

	r = rd(opaque, hbuf, sizeof(hbuf), m->footer.data_offset);
	if (r) {
		err_set(eb, "cannot read the dynamic header: %s", strerror(-r));
		return r;
	}
	r = vhd_header_decode(hbuf, &m->header, eb);
	if (!r)
		r = vhd_layout_init(&m->layout, &m->footer, &m->header, file_size, eb);
	if (r)
		return r;

	raw = malloc(m->layout.bat_size);
	m->bat = malloc(sizeof(uint32_t) * (size_t)m->layout.bat_entries);
	if (!raw || !m->bat) {
		err_set(eb, "out of memory for a BAT of %" PRIu32 " entries", m->layout.bat_entries);
		r = -ENOMEM;
		goto fail;
	}
	r = rd(opaque, raw, m->layout.bat_size, m->layout.bat_offset);
	if (r) {
		err_set(eb, "cannot read the BAT: %s", strerror(-r));
		goto fail;
	}
	vhd_bat_decode(raw, m->layout.bat_entries, m->bat);
	free(raw);
	raw = NULL;

	r = load_batmap(m, rd, opaque, report, rep_opaque);
	if (!r && m->footer.type == VHD_TYPE_DIFF)
		r = load_locators(m, rd, opaque, report, rep_opaque, eb);
	if (r) {
		if (r == -ENOMEM)
			err_set(eb, "out of memory");
		goto fail;
	}
	r = vhd_bat_validate(&m->layout, m->bat, file_size, report, rep_opaque, eb);
	if (r)
		goto fail;
	return 0;
fail:
	free(raw);
	vhd_meta_free(m);
	return r;
}

void vhd_meta_free(struct vhd_meta *m)
{
	free(m->bat);
	m->bat = NULL;
	free(m->batmap_map);
	m->batmap_map = NULL;
	m->has_batmap = false;
	for (int i = 0; i < VHD_LOCATORS; i++) {
		free(m->parent_loc[i]);
		m->parent_loc[i] = NULL;
	}
}

const char *vhd_uuid_str(const uint8_t u[16], char *out)
{
	sprintf(out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11],
		u[12], u[13], u[14], u[15]);
	return out;
}

int vhd_parent_match(const struct vhd_meta *child, const struct vhd_footer *parent,
		     struct errbuf *eb)
{
	char want[40], have[40];

	if (memcmp(child->header.parent_uuid, parent->uuid, 16)) {
		err_set(eb, "parent UUID mismatch: the child expects %s, the parent is %s",
			vhd_uuid_str(child->header.parent_uuid, want),
			vhd_uuid_str(parent->uuid, have));
		return -EINVAL;
	}
	if (child->header.parent_timestamp != parent->timestamp) {
		err_set(eb, "parent timestamp mismatch: the child expects %" PRIu32
			", the parent has %" PRIu32, child->header.parent_timestamp,
			parent->timestamp);
		return -ESTALE;
	}
	return 0;
}

int vhd_chain_add(struct vhd_chain *c, int fd, struct errbuf *eb)
{
	struct stat st;

	if (fstat(fd, &st) < 0) {
		err_set(eb, "%s", strerror(errno));
		return -errno;
	}
	for (unsigned i = 0; i < c->n; i++) {
		if (c->file[i].dev == st.st_dev && c->file[i].ino == st.st_ino) {
			err_set(eb, "the parent chain loops: image %u of the chain is this "
				    "file again", c->n + 1);
			return -ELOOP;
		}
	}
	if (c->n == VHD_CHAIN_MAX) {
		err_set(eb, "the parent chain is deeper than %d images", VHD_CHAIN_MAX);
		return -ELOOP;
	}
	c->file[c->n].dev = st.st_dev;
	c->file[c->n].ino = st.st_ino;
	c->n++;
	return 0;
}

int vhd_lock(int fd, bool write, const char *path, struct errbuf *eb)
{
	struct flock fl = {
		.l_type = write ? F_WRLCK : F_RDLCK,
		.l_whence = SEEK_SET,
		.l_start = 0,
		.l_len = 0,
	};

	if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
		return 0;
	if (errno == EAGAIN || errno == EACCES) {
		err_set(eb, "%s is in use (locked by another process, e.g. a running tapd)",
			path);
		return -EAGAIN;
	}
	err_set(eb, "cannot lock %s: %s", path, strerror(errno));
	return -errno;
}
