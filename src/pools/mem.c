/* How much memory a pool may still take: the machine's numbers (procfs,
 * RLIMIT_MEMLOCK, CAP_IPC_LOCK) and the check against them, with the
 * numbers in the refusal. No pool state here: pool.c adds what other
 * creates still have to map and whether pools are locked. */
#include <errno.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pool.h"

/* The reserve left to the rest of the machine: min(this, MemTotal / 16). */
#define POOL_RESERVE_MAX (1ULL << 30)

/* "Key:   123 kB" from a /proc file, in bytes; UINT64_MAX if absent. */
static uint64_t proc_kb(const char *path, const char *key)
{
	uint64_t v = UINT64_MAX;
	size_t klen = strlen(key);
	char line[256];
	FILE *f = fopen(path, "re");

	if (!f)
		return v;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long kb;

		if (!strncmp(line, key, klen) && line[klen] == ':' &&
		    sscanf(line + klen + 1, "%llu", &kb) == 1) {
			v = (uint64_t)kb * 1024;
			break;
		}
	}
	fclose(f);
	return v;
}

static bool has_cap_ipc_lock(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];

	return syscall(SYS_capget, &h, d) == 0 && (d[0].effective & (1u << CAP_IPC_LOCK));
}

/* procfs reads answer from memory: cheap enough for the loop. */
void pool_mem_read(struct pool_mem *m)
{
	struct rlimit rl;

	m->available = proc_kb("/proc/meminfo", "MemAvailable");
	m->total = proc_kb("/proc/meminfo", "MemTotal");
	m->locked = proc_kb("/proc/self/status", "VmLck");
	if (m->locked == UINT64_MAX)
		m->locked = 0;
	m->pending = 0;
	m->lock = true;
	m->lock_limit = UINT64_MAX;
	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    !has_cap_ipc_lock())
		m->lock_limit = rl.rlim_cur;
}

/* What is left of limit once used is taken. */
static uint64_t room_left(uint64_t limit, uint64_t used)
{
	return limit > used ? limit - used : 0;
}

int pool_mem_check(const char *name, uint64_t asked, const struct pool_mem *m, struct errbuf *eb)
{
	uint64_t reserve =
		m->total == UINT64_MAX ? POOL_RESERVE_MAX : MIN(POOL_RESERVE_MAX, m->total / 16);
	uint64_t mem_room = UINT64_MAX, lock_room = UINT64_MAX, room;
	char s1[16], s2[16], s3[16], s4[16], others[48] = "", why[160];

	if (m->available != UINT64_MAX)
		mem_room = room_left(m->available, reserve + m->pending);
	if (m->lock && m->lock_limit != UINT64_MAX)
		lock_room = room_left(m->lock_limit, m->locked + m->pending);
	if (asked <= mem_room && asked <= lock_room)
		return 0;
	if (m->pending)
		snprintf(others, sizeof(others), ", %s being mapped for other pools",
			 format_size(m->pending, s4, sizeof(s4)));
	if (asked > mem_room) {
		room = mem_room;
		snprintf(why, sizeof(why), "MemAvailable %s less %s reserve%s",
			 format_size(m->available, s2, sizeof(s2)),
			 format_size(reserve, s3, sizeof(s3)), others);
	} else {
		room = lock_room;
		snprintf(why, sizeof(why),
			 "RLIMIT_MEMLOCK %s, %s locked already%s; raise LimitMEMLOCK or grant "
			 "CAP_IPC_LOCK",
			 format_size(m->lock_limit, s2, sizeof(s2)),
			 format_size(m->locked, s3, sizeof(s3)), others);
	}
	err_set(eb, "pool '%s': %" PRIu64 " bytes asked, %s %s (%s)", name, asked,
		format_size(room, s1, sizeof(s1)), m->lock ? "available to lock" : "available",
		why);
	return -ENOMEM;
}
