/* NBD structured reply chunks: encoding them, turning a tap's extent list
 * into BLOCK_STATUS descriptors, and planning the data and hole chunks of a
 * sparse READ reply. Pure functions like formats/nbd/proto.c, unit-tested in
 * tests/unit/check-formats/nbd/proto.c. */
#include <string.h>

#include "drivers/driver.h"
#include "formats/nbd/proto.h"

size_t nbd_encode_chunk_hdr(void *buf, uint16_t flags, uint16_t type, uint64_t cookie,
			    uint32_t payload_len)
{
	unsigned char *b = buf;

	put_be32(b, NBD_STRUCTURED_REPLY_MAGIC);
	put_be16(b + 4, flags);
	put_be16(b + 6, type);
	put_be64(b + 8, cookie);
	put_be32(b + 16, payload_len);
	return NBD_CHUNK_HDR_LEN;
}

size_t nbd_encode_chunk_data(void *buf, uint16_t flags, uint64_t cookie, uint64_t off, uint32_t len)
{
	unsigned char *b = buf;

	nbd_encode_chunk_hdr(b, flags, NBD_REPLY_TYPE_OFFSET_DATA, cookie, 8 + len);
	put_be64(b + NBD_CHUNK_HDR_LEN, off);
	return NBD_CHUNK_DATA_HDR_LEN;
}

size_t nbd_encode_chunk_hole(void *buf, uint16_t flags, uint64_t cookie, uint64_t off, uint32_t len)
{
	unsigned char *b = buf;

	nbd_encode_chunk_hdr(b, flags, NBD_REPLY_TYPE_OFFSET_HOLE, cookie, 12);
	put_be64(b + NBD_CHUNK_HDR_LEN, off);
	put_be32(b + NBD_CHUNK_HDR_LEN + 8, len);
	return NBD_CHUNK_HOLE_LEN;
}

size_t nbd_encode_chunk_error(void *buf, uint64_t cookie, uint32_t error)
{
	unsigned char *b = buf;

	nbd_encode_chunk_hdr(b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, cookie, 6);
	put_be32(b + NBD_CHUNK_HDR_LEN, error);
	put_be16(b + NBD_CHUNK_HDR_LEN + 4, 0);
	return NBD_CHUNK_ERROR_LEN;
}

size_t nbd_encode_chunk_none(void *buf, uint64_t cookie)
{
	return nbd_encode_chunk_hdr(buf, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, cookie, 0);
}

/* base:allocation flags from a tap extent's: the same bits by design, but
 * spelled out so that neither side can drift. */
static uint32_t state_flags(uint32_t f)
{
	return (f & IMAGE_EXT_HOLE ? NBD_STATE_HOLE : 0) |
	       (f & IMAGE_EXT_ZERO ? NBD_STATE_ZERO : 0);
}

size_t nbd_encode_block_status(void *buf, uint64_t cookie, uint32_t id,
			       const struct image_extent *ext, uint32_t n, uint32_t len,
			       bool req_one)
{
	unsigned char *b = buf, *d = b + NBD_CHUNK_BS_HDR_LEN;
	uint32_t nd = 0, left = len;

	for (uint32_t i = 0; i < n && left; i++) {
		uint32_t el = (uint32_t)MIN(ext[i].len, (uint64_t)left);
		uint32_t fl = state_flags(ext[i].flags);

		if (!el)
			continue;
		left -= el;
		if (nd && get_be32(d + (nd - 1) * NBD_BS_DESC_LEN + 4) == fl) {
			unsigned char *prev = d + (nd - 1) * NBD_BS_DESC_LEN;

			put_be32(prev, get_be32(prev) + el);
			continue;
		}
		if (req_one && nd)
			break;
		put_be32(d + nd * NBD_BS_DESC_LEN, el);
		put_be32(d + nd * NBD_BS_DESC_LEN + 4, fl);
		nd++;
	}
	if (!nd)
		return 0;
	nbd_encode_chunk_hdr(b, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, cookie,
			     4 + nd * NBD_BS_DESC_LEN);
	put_be32(b + NBD_CHUNK_HDR_LEN, id);
	return NBD_CHUNK_BS_HDR_LEN + nd * NBD_BS_DESC_LEN;
}

unsigned nbd_plan_read(const struct image_extent *ext, uint32_t n, uint32_t len,
		       struct nbd_piece *out, unsigned max)
{
	uint32_t left = len;
	unsigned np = 0;

	if (!len || !max)
		return 0;
	for (uint32_t i = 0; i < n && left; i++) {
		uint32_t el = (uint32_t)MIN(ext[i].len, (uint64_t)left);
		/* HOLE alone (unallocated, contents from below) is not zeros:
		 * only ZERO lets us skip the data. */
		bool hole = ext[i].flags & IMAGE_EXT_ZERO;

		if (!el)
			continue;
		if (np && out[np - 1].hole == hole) {
			out[np - 1].len += el;
		} else if (np == max - 1 && max > 1) {
			/* Out of pieces: the rest is sent as data, which is
			 * always correct since the buffer holds it all. */
			break;
		} else if (np == max) {
			break;
		} else {
			out[np].len = el;
			out[np].hole = hole;
			np++;
		}
		left -= el;
	}
	if (left) {
		if (np && !out[np - 1].hole) {
			out[np - 1].len += left;
		} else if (np < max) {
			out[np].len = left;
			out[np].hole = false;
			np++;
		} else {
			/* max pieces already used and the last is a hole:
			 * fold it into the data piece that follows. */
			out[np - 1].len += left;
			out[np - 1].hole = false;
		}
	}
	return np;
}
