/* VHD (Microsoft "Virtual Hard Disk Image Format Specification") metadata:
 * the contract between the format code and its two users, the asynchronous
 * driver (src/drivers/vhd/vhd.c) and the offline tool (tools/tapd-vhd).
 *
 * ON-DISK LAYOUT
 *
 * Every integer on disk is big-endian. A sector is 512 bytes.
 *
 *   Fixed:    [ data: curr_size bytes ][ footer 512 ]
 *
 *   Dynamic / differencing:
 *     0      footer copy (512)      identical to the footer at the end
 *     512    dynamic header (1024)  footer.data_offset points here
 *     1536   BAT (table_offset)     max_bat_entries x u32 sector offsets,
 *                                   0xFFFFFFFF = block not allocated; padded
 *                                   with 0xFF to a whole sector
 *     ...    batmap (optional)      blktap extension right after the padded
 *                                   BAT: a "tdbatmap" header sector, then
 *                                   one bit per block (MSB first) meaning
 *                                   "every sector of this block is written"
 *     ...    parent locator data    differencing only: where header.loc[]
 *                                   points (W2ru/W2ku UTF-16LE paths)
 *     ...    data blocks            each = sector bitmap (block_size/512
 *                                   bits, MSB first, padded to a sector)
 *                                   followed by block_size bytes of data
 *     end    footer (512)
 *
 * A sector whose bitmap bit is 0 has never been written in this image: a
 * dynamic disk reads it as zeros, a differencing disk reads it from its
 * parent. A block whose BAT entry is unused has all bits 0. Reads past the
 * end of a (smaller) parent read zeros.
 *
 * CRASH-SAFE WRITE ORDER
 *
 * Writes into an allocated block: data first, then (only if bits change)
 * the bitmap sector(s). A crash in between leaves bits clear over new data:
 * the sectors read as before the write, which is a legal outcome of an
 * unacknowledged write.
 *
 * Writes into an unallocated block (new block at offset E, the old footer
 * position, see vhd_data_end()):
 *   1. the data, at E + bitmap_size + offset-in-block;
 *   2. a new footer at E + bitmap_size + block_size (the file now ends
 *      with a valid footer again);
 *   3. the bitmap at E (it overwrites the old footer);
 *   4. flush (fdatasync) so that 1-3 are durable before
 *   5. the BAT sector holding the entry, which makes the block visible.
 * Until step 5 the block is unreferenced: a crash loses only the
 * unacknowledged write and leaks space. A crash between 1 and 2 leaves a
 * file whose last 512 bytes are not a footer; that is why dynamic disks
 * carry the footer copy at offset 0, and why vhd_meta_load() falls back to
 * it (reporting it) and a writable open rewrites the end footer.
 * Steps may be issued asynchronously, but each only after the previous one
 * completed. Never rewrite a BAT entry that is in use: blocks are not moved.
 *
 * LOCKING
 *
 * Whoever opens an image takes an OFD lock (fcntl F_OFD_SETLK, whole file,
 * see vhd_lock()): a write lock on a leaf it may modify, a read lock on
 * every parent it only reads. tapd's driver does this for each chain it
 * opens and releases the locks on close/pause; tapd-vhd takes the same
 * locks for create, snapshot (read lock on the parent), coalesce (write
 * lock on child and parent) and resize, so it refuses to touch an image
 * a running tapd has open for writing, and tapd refuses an image the tool
 * is changing. query and check take no lock (they only read).
 *
 * API SHAPE
 *
 * The "pure" part (format.c) works on byte buffers and never does I/O:
 * decode/encode of each structure, validation against the file size,
 * address arithmetic for the I/O path and bitmap helpers. The locator
 * and path codecs (locator.c) are pure too. vhd_meta_load() (meta.c)
 * strings them together over a caller-given pread callback; the driver
 * (drivers/vhd/vhd.c) calls it at open with vhd_fd_pread, blocking, on
 * the loop thread, and also uses vhd_file_size and vhd_find_parent
 * (file.c) there: a known issue to fix in issue 10: the BAT is read
 * synchronously at open. The vhd_image_* part (file.c: open, read, write;
 * ops.c: create, resize, coalesce; check.c: check) is blocking file I/O
 * for tapd-vhd only; the daemon does not use it.
 *
 * Errors: negative errno and a readable reason in a struct errbuf
 * (lib/util.h).
 * Nothing here keeps global state; all functions are thread-compatible.
 */
#ifndef TAPD_VHD_FORMAT_H
#define TAPD_VHD_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "lib/util.h"

#define VHD_SECTOR_SHIFT 9
#define VHD_SECTOR_SIZE 512u
#define VHD_FOOTER_SIZE 512u
#define VHD_HEADER_SIZE 1024u
#define VHD_LOCATORS 8
#define VHD_BAT_UNUSED 0xffffffffu
#define VHD_NO_OFFSET 0xffffffffffffffffull
#define VHD_MAX_SIZE (2040ull << 30)		/* the spec's limit */
#define VHD_DEFAULT_BLOCK_SIZE (2u << 20)
#define VHD_MIN_BLOCK_SIZE (64u << 10)		/* bounds the BAT */
#define VHD_MAX_BLOCK_SIZE (256u << 20)
#define VHD_NAME_MAX 1024			/* UTF-8 bytes incl. NUL */
#define VHD_PATH_MAX 4096

enum vhd_type {
	VHD_TYPE_FIXED = 2,
	VHD_TYPE_DYNAMIC = 3,
	VHD_TYPE_DIFF = 4,
};

/* Parent locator platform codes (the four ASCII bytes, big-endian). */
#define VHD_PLAT_NONE 0u
#define VHD_PLAT_W2RU 0x57327275u /* "W2ru": relative, UTF-16LE */
#define VHD_PLAT_W2KU 0x57326b75u /* "W2ku": absolute, UTF-16LE */
#define VHD_PLAT_MACX 0x4d616358u /* "MacX": file:// URL, UTF-8 */
#define VHD_PLAT_WI2R 0x57693272u /* deprecated, recognised only */
#define VHD_PLAT_WI2K 0x5769326bu
#define VHD_PLAT_MAC 0x4d616320u

/* The 512-byte footer, decoded. Sizes are bytes. */
struct vhd_footer {
	uint32_t features;
	uint32_t version;
	uint64_t data_offset;	/* dynamic header; VHD_NO_OFFSET if fixed */
	uint32_t timestamp;	/* seconds since 2000-01-01 00:00 UTC */
	char creator_app[4];
	uint32_t creator_version;
	uint32_t creator_os;
	uint64_t orig_size;
	uint64_t curr_size;	/* the virtual size */
	uint16_t cylinders;
	uint8_t heads;
	uint8_t sectors;	/* per track */
	uint32_t type;		/* enum vhd_type */
	uint32_t checksum;	/* as read; encode recomputes it */
	uint8_t uuid[16];
	uint8_t saved_state;
	uint8_t hidden;		/* blktap's flag (first reserved byte) */
};

struct vhd_locator {
	uint32_t code;		/* VHD_PLAT_* */
	uint32_t data_space;	/* as stored: sectors (spec) or bytes (Windows) */
	uint32_t data_len;	/* bytes of encoded path */
	uint64_t data_offset;	/* absolute file offset */
};

/* The 1024-byte dynamic disk header, decoded. */
struct vhd_header {
	uint64_t data_offset;	/* must be VHD_NO_OFFSET */
	uint64_t table_offset;	/* BAT */
	uint32_t version;
	uint32_t max_bat_entries;
	uint32_t block_size;
	uint32_t checksum;
	uint8_t parent_uuid[16];
	uint32_t parent_timestamp;
	char parent_name[VHD_NAME_MAX];	/* UTF-8, from UTF-16BE on disk */
	struct vhd_locator loc[VHD_LOCATORS];
};

/* Everything the I/O path needs, derived once from footer + header by
 * vhd_layout_init(). Fixed disks have block_size 0 and no BAT. */
struct vhd_layout {
	enum vhd_type type;
	uint64_t size;			/* virtual size in bytes */
	uint64_t sectors;		/* size / 512 */
	uint32_t block_size;
	uint32_t block_sectors;		/* block_size / 512 */
	uint32_t bitmap_size;		/* bytes on disk, sector padded */
	uint32_t blocks;		/* blocks covering size */
	uint32_t bat_entries;		/* header.max_bat_entries (>= blocks) */
	uint64_t bat_offset;
	uint32_t bat_size;		/* bytes on disk, sector padded */
	uint64_t meta_end;		/* first byte past header/BAT/locators */
};

/* blktap's batmap header (one sector after the padded BAT). */
struct vhd_batmap {
	uint64_t offset;	/* of the map */
	uint32_t size;		/* map size in sectors */
	uint32_t version;
	uint32_t checksum;
	uint8_t marker;
};

/* Problem sink for checks: one readable line per call, no newline. */
typedef void vhd_report_fn(void *opaque, const char *msg);

/* --- pure codecs (format.c) ------------------------------------- */

/* One's complement of the byte sum of buf, skipping the 4 bytes at
 * skip (the checksum field itself). */
uint32_t vhd_checksum(const uint8_t *buf, size_t len, size_t skip);

/* Decode and validate a footer: cookie "conectix", checksum, version 1.x,
 * type, size sector-aligned and <= VHD_MAX_SIZE, data_offset shape.
 * file_size is used for the data_offset check (0 = skip that check). */
int vhd_footer_decode(const uint8_t buf[VHD_FOOTER_SIZE], struct vhd_footer *f,
		      uint64_t file_size, struct errbuf *eb);
/* Encode f into buf with a fresh checksum (f->checksum is updated). */
void vhd_footer_encode(struct vhd_footer *f, uint8_t buf[VHD_FOOTER_SIZE]);

/* Decode and validate a dynamic header: cookie "cxsparse", checksum,
 * version, data_offset, locator codes. Structure only; cross checks with
 * the footer and file size are vhd_layout_init()'s. */
int vhd_header_decode(const uint8_t buf[VHD_HEADER_SIZE], struct vhd_header *h,
		      struct errbuf *eb);
/* Encode; -ENAMETOOLONG/-EINVAL if parent_name does not fit/is not UTF-8. */
int vhd_header_encode(struct vhd_header *h, uint8_t buf[VHD_HEADER_SIZE]);

/* Cross-check footer (+ header unless fixed) against each other and the
 * file size and fill l: block size a power of two in range, BAT inside
 * the file and after the header, max_bat_entries covering the disk (and
 * not absurdly beyond it), locator data inside the file. */
int vhd_layout_init(struct vhd_layout *l, const struct vhd_footer *f,
		    const struct vhd_header *h, uint64_t file_size,
		    struct errbuf *eb);

/* BAT: l->bat_entries entries from the on-disk (big-endian) table. */
void vhd_bat_decode(const uint8_t *buf, uint32_t entries, uint32_t *bat);
void vhd_bat_encode(const uint32_t *bat, uint32_t entries, uint8_t *buf);
/* The BAT sector that holds block's entry, encoded into buf (one sector)
 * with that entry set to entry, without changing bat (the caller records
 * it once the sector is on disk), and 0xFF past the end of the table.
 * Returns the sector's file offset. */
uint64_t vhd_bat_sector_encode(const struct vhd_layout *l, const uint32_t *bat, uint32_t block,
			       uint32_t entry, uint8_t *buf);
/* Every used entry inside [meta_end, file_size - 512) with its whole block,
 * no two blocks overlapping, no entry beyond l->blocks in use. Each bad
 * entry is reported through report (if set); eb gets the first. Returns
 * 0 or -EINVAL. Allocates a scratch copy (open path only). */
int vhd_bat_validate(const struct vhd_layout *l, const uint32_t *bat,
		     uint64_t file_size, vhd_report_fn *report, void *opaque,
		     struct errbuf *eb);
/* First byte past the last block (or meta_end): where a new block goes
 * when the footer is rewritten after it. */
uint64_t vhd_data_end(const struct vhd_layout *l, const uint32_t *bat);
/* Number of used BAT entries. */
uint32_t vhd_bat_allocated(const struct vhd_layout *l, const uint32_t *bat);

/* I/O path arithmetic (sector = virtual 512-byte sector). */
static inline uint32_t vhd_block_of(const struct vhd_layout *l, uint64_t sector)
{
	return (uint32_t)(sector / l->block_sectors);
}
static inline uint32_t vhd_block_sector(const struct vhd_layout *l, uint64_t sector)
{
	return (uint32_t)(sector % l->block_sectors);
}
/* File offsets of a block's bitmap and of sector s inside it. */
static inline uint64_t vhd_bitmap_offset(uint32_t bat_entry)
{
	return (uint64_t)bat_entry << VHD_SECTOR_SHIFT;
}
static inline uint64_t vhd_data_offset(const struct vhd_layout *l, uint32_t bat_entry,
				       uint32_t s)
{
	return ((uint64_t)bat_entry << VHD_SECTOR_SHIFT) + l->bitmap_size +
	       ((uint64_t)s << VHD_SECTOR_SHIFT);
}

/* Sector bitmaps and the batmap: bit n is byte n/8, mask 0x80 >> n%8. */
static inline bool vhd_bit_test(const uint8_t *map, uint32_t n)
{
	return map[n >> 3] & (0x80 >> (n & 7));
}
void vhd_bits_set(uint8_t *map, uint32_t first, uint32_t count);
/* Length of the run of equal bits starting at first, at most max; the
 * run's value goes to *set. The driver splits requests with it. */
uint32_t vhd_bits_run(const uint8_t *map, uint32_t first, uint32_t max, bool *set);
/* Whether bits [first, first+count) are all set. */
bool vhd_bits_all(const uint8_t *map, uint32_t first, uint32_t count);

/* Batmap: decode the header sector; returns 0, -ENOENT (no "tdbatmap"
 * cookie: no batmap, not an error) or -EINVAL (present but unusable).
 * vhd_batmap_verify() checks the map's checksum (map_len = size*512). */
int vhd_batmap_decode(const uint8_t buf[VHD_SECTOR_SIZE], const struct vhd_layout *l,
		      uint64_t file_size, struct vhd_batmap *bm, struct errbuf *eb);
int vhd_batmap_verify(const struct vhd_batmap *bm, const uint8_t *map,
		      struct errbuf *eb);
static inline uint64_t vhd_batmap_header_offset(const struct vhd_layout *l)
{
	return l->bat_offset + l->bat_size;
}

/* Geometry (CHS) for a size, the spec's algorithm; and back. */
void vhd_geometry(uint64_t size, uint16_t *cyl, uint8_t *heads, uint8_t *spt);
/* Unix time <-> VHD timestamp (epoch 2000-01-01 00:00:00 UTC). */
uint32_t vhd_timestamp(time_t t);
time_t vhd_time_to_unix(uint32_t ts);

/* A new footer/header pair for create: creator "tap\0" (qemu then trusts
 * curr_size instead of CHS), geometry, BAT at 1536 with bat_entries (>=
 * blocks, room to grow), locators left empty. h is ignored for fixed. */
int vhd_init_new(struct vhd_footer *f, struct vhd_header *h, enum vhd_type type,
		 uint64_t size, uint32_t block_size, uint32_t bat_entries,
		 const uint8_t uuid[16], uint32_t timestamp, struct errbuf *eb);

/* --- locators and paths, pure (locator.c) ------------------------ */

/* UTF-8 <-> UTF-16 (surrogate pairs handled). encode returns the bytes
 * written or -EINVAL (bad UTF-8) / -ENAMETOOLONG; decode stops at a NUL
 * unit and returns 0, -EINVAL (unpaired surrogate) or -ENAMETOOLONG. */
ssize_t vhd_utf16_encode(const char *s, uint8_t *out, size_t out_size, bool big_endian);
int vhd_utf16_decode(const uint8_t *in, size_t in_len, bool big_endian, char *out,
		     size_t out_size);

/* Locators. Bytes of locator space (Windows stores bytes, the spec
 * sectors); 0 if the value is nonsense. */
uint64_t vhd_locator_space(const struct vhd_locator *loc);
/* Encode a POSIX path for code: W2ku (absolute), W2ru (relative, written
 * ".\\dir\\name"), MacX ("file://" + UTF-8). Returns length or -errno. */
ssize_t vhd_locator_encode(uint32_t code, const char *path, uint8_t *out, size_t out_size);
/* Decode locator bytes into a POSIX path ('\\' -> '/', "C:" dropped).
 * -ENOTSUP for codes that carry no usable path. */
int vhd_locator_decode(uint32_t code, const uint8_t *data, size_t len, char *out,
		       size_t out_size, struct errbuf *eb);
/* Join a decoded locator path with the child's location: absolute paths
 * stay, relative ones are taken from the directory of child_path. */
int vhd_parent_join(const char *child_path, const char *loc_path, char *out,
		    size_t out_size);
/* Relative path from the directory of from_file to to_file (both
 * absolute, canonical), e.g. "../base/p.vhd". */
int vhd_relative_path(const char *from_file, const char *to_file, char *out,
		      size_t out_size);

/* --- metadata loader, UUIDs, locks (meta.c) --------------------- */

/* Reads exactly len bytes at off; returns 0 or -errno (-EIO if short). */
typedef int vhd_pread_fn(void *opaque, void *buf, size_t len, uint64_t off);

struct vhd_meta {
	struct vhd_footer footer;
	struct vhd_header header;	/* zero for fixed */
	struct vhd_layout layout;
	uint64_t file_size;
	uint64_t footer_offset;		/* where the trusted footer was read */
	bool footer_from_copy;		/* end footer bad; copy at 0 used */
	bool copies_differ;		/* footer copy at 0 != end footer */
	uint32_t *bat;			/* layout.bat_entries, host order */
	bool has_batmap;		/* and it verified: usable as hint */
	struct vhd_batmap batmap;
	uint8_t *batmap_map;		/* batmap.size * 512 bytes */
	/* Decoded parent locators (POSIX paths, not yet joined), in header
	 * order; NULL where absent or undecodable. */
	char *parent_loc[VHD_LOCATORS];
};

/* Load and validate all metadata of one image. Fatal problems return
 * -errno with the reason in eb; non-fatal ones (end footer bad but copy
 * good, copies differ, batmap unusable, a locator undecodable) go to
 * report if set. With report set, BAT problems are all listed. Frees
 * everything on failure; vhd_meta_free() after success. */
int vhd_meta_load(struct vhd_meta *m, vhd_pread_fn *rd, void *opaque,
		  uint64_t file_size, vhd_report_fn *report, void *rep_opaque,
		  struct errbuf *eb);
void vhd_meta_free(struct vhd_meta *m);

/* Does parent (its footer) match what child's header expects? 0, or
 * -EINVAL "UUID mismatch", or -ESTALE for a timestamp-only mismatch
 * (check reports it; opening may accept it). */
int vhd_parent_match(const struct vhd_meta *child, const struct vhd_footer *parent,
		     struct errbuf *eb);

/* Format a UUID as 8-4-4-4-12 hex into out (>= 37 bytes). */
const char *vhd_uuid_str(const uint8_t uuid[16], char *out);

/* Take an OFD lock on the whole of fd: write (exclusive) or read. Fails at
 * once with -EAGAIN and "in use" in eb if another open file holds a
 * conflicting lock (a running tapd, another tapd-vhd). */
int vhd_lock(int fd, bool write, const char *path, struct errbuf *eb);

/* The files of a chain being walked (opened, checked), leaf first, so that
 * a chain that comes back to one of its own files is told from a deep one:
 * locators are data, and a crafted pair of images can name each other. */
#define VHD_CHAIN_MAX 64
struct vhd_chain {
	unsigned n;
	struct {
		dev_t dev;
		ino_t ino;
	} file[VHD_CHAIN_MAX];
};

/* Add fd's file to the chain: 0, or -ELOOP with eb saying that it is in
 * the chain already or that the chain is deeper than VHD_CHAIN_MAX; -errno
 * if fd cannot be looked at. eb does not name the file: callers do. */
int vhd_chain_add(struct vhd_chain *c, int fd, struct errbuf *eb);

/* --- blocking image API for tapd-vhd: open, read, write (file.c) - */

struct vhd_image {
	char *path;
	int fd;
	bool writable;
	struct vhd_meta meta;
	uint64_t next_block;		/* where a new block goes */
	struct vhd_image *parent;	/* differencing chain, or NULL */
};

#define VHD_OPEN_RDWR 0x1		/* leaf opened for writing */
#define VHD_OPEN_NOCHAIN 0x2		/* do not open parents */
#define VHD_OPEN_LOCK 0x4		/* OFD locks (write leaf, read parents) */
#define VHD_OPEN_PARENT_RDWR 0x8	/* also the direct parent writable */

int vhd_image_open(struct vhd_image **out, const char *path, unsigned flags,
		   struct errbuf *eb);
/* Closes the whole chain (and drops its locks). NULL is fine. */
void vhd_image_close(struct vhd_image *img);

/* Virtual size. Reads go down the chain; writes allocate blocks in the
 * crash-safe order above. Buffers are any alignment. */
int vhd_image_read(struct vhd_image *img, void *buf, uint64_t sector, uint32_t count,
		   struct errbuf *eb);
int vhd_image_write(struct vhd_image *img, const void *buf, uint64_t sector,
		    uint32_t count, struct errbuf *eb);

/* --- whole-image operations for tapd-vhd (ops.c, check.c) ------- */

struct vhd_create_opts {
	enum vhd_type type;
	uint64_t size;			/* ignored with parent: parent's size */
	uint32_t block_size;		/* 0 = default or parent's */
	uint64_t max_size;		/* BAT room to grow to; 0 = size */
	const char *parent;		/* differencing child of this image */
};
/* Create path (refusing an existing file) and leave it write-locked until
 * done; a failed create removes the file. */
int vhd_image_create(const char *path, const struct vhd_create_opts *o,
		     struct errbuf *eb);
/* Grow to size (never shrinks): -ENOSPC "BAT has room for ..." when a
 * dynamic disk's BAT is too small. */
int vhd_image_resize(struct vhd_image *img, uint64_t size, struct errbuf *eb);

typedef void vhd_progress_fn(void *opaque, uint64_t done, uint64_t total);
/* Copy every sector written in child into its parent (opened with
 * VHD_OPEN_PARENT_RDWR). The child is left as it was. */
int vhd_image_coalesce(struct vhd_image *child, vhd_progress_fn *progress,
		       void *opaque, struct errbuf *eb);

/* check.c: check path and its whole chain; every problem goes to report as
 * "PATH: reason". Returns the number of problems (0 = consistent). */
unsigned vhd_image_check(const char *path, vhd_report_fn *report, void *opaque);

/* --- blocking file helpers (file.c) ----------------------------- */
/* Shared by file.c, ops.c and check.c; the driver also uses vhd_fd_pread,
 * vhd_file_size and vhd_find_parent at open (see API SHAPE above). */
int vhd_fd_pread(void *opaque_fd, void *buf, size_t len, uint64_t off);
int vhd_fd_pwrite(int fd, const void *buf, size_t len, uint64_t off, const char *path,
		  struct errbuf *eb);
int vhd_file_size(int fd, uint64_t *size);
/* Write img's footer at end_off and, for dynamic disks, the copy at 0. */
int vhd_write_footer(struct vhd_image *img, uint64_t end_off, struct errbuf *eb);
/* The first existing parent candidate of a differencing disk. */
int vhd_find_parent(const char *child_path, const struct vhd_meta *m, char *out,
		    size_t out_size, struct errbuf *eb);

#endif
