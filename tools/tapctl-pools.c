/* tapctl's pool commands: pool-create, pool-resize, pool-destroy,
 * pool-list and pool-qos. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "tapctl-internal.h"

/* CreatePool and a growing Resize answer once tapd has mapped and locked
 * the memory, which takes about a second a GiB (more under memory
 * pressure): wait two minutes, plus a second for every 64 MiB asked. */
static uint64_t pool_call_usec(uint64_t size)
{
	return (120 + MIN(size >> 26, (uint64_t)86400)) * 1000000ULL;
}

int cmd_pool_create(sd_bus *bus, const struct args *a)
{
	_cleanup_err_ sd_bus_error e = SD_BUS_ERROR_NULL;

	return error_call(bus, pool_call_usec(a->size), &e, ROOT, IFACE_MANAGER, "CreatePool", "st",
			  a->pos[0], a->size);
}

int cmd_pool_resize(sd_bus *bus, const struct args *a)
{
	_cleanup_err_ sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_free_ char *path = NULL;
	int r = pool_path(a->pos[0], &path);

	return r ? r
		 : error_call(bus, pool_call_usec(a->size), &e, path, IFACE_POOL, "Resize", "t",
			      a->size);
}

int cmd_pool_destroy(sd_bus *bus, const struct args *a)
{
	_cleanup_free_ char *path = NULL;
	int r = pool_path(a->pos[0], &path);

	return r ? r : simple_call(bus, path, IFACE_POOL, "Destroy", "");
}

int cmd_pool_qos(sd_bus *bus, const struct args *a)
{
	_cleanup_free_ char *path = NULL;
	int r = pool_path(a->pos[0], &path);

	return r ? r : qos_show_or_set(bus, path, IFACE_POOL, "pool", a->pos[0], a);
}

int cmd_pool_list(sd_bus *bus, const struct args *a)
{
	_cleanup_err_ sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_msg_ sd_bus_message *reply = NULL;
	const char *name, *path;
	uint64_t size, in_use, high, mapped;
	uint32_t waiters, taps;
	char s1[32], s2[32], s3[32], s4[32], s5[32];
	bool first = true;
	int r;

	r = call_array(bus, ROOT, IFACE_MANAGER, "ListPools", "(sttttuuo)", &e, &reply);
	if (r < 0)
		return refused(&e, r);
	if (a->json)
		printf("[");
	else
		printf("%-16s %8s %8s %10s %7s %4s %9s %9s %s\n", "NAME", "SIZE", "IN-USE",
		       "HIGH-WATER", "WAITERS", "TAPS", "IOPS", "BPS", "STATE");
	while ((r = sd_bus_message_read(reply, "(sttttuuo)", &name, &size, &in_use, &high,
					&mapped, &waiters, &taps, &path)) > 0) {
		_cleanup_free_ char *state = NULL;
		struct obj_props p;

		/* A pool destroyed since ListPools shows no limits. */
		get_props(bus, path, IFACE_POOL, &p, NULL);
		free_props(&p);
		/* "creating" or "growing" while tapd maps its memory. */
		if (sd_bus_get_property_string(bus, DEST, path, IFACE_POOL, "State", NULL, &state) <
		    0)
			state = NULL;
		if (a->json) {
			printf("%s\n  {\"name\": ", first ? "" : ",");
			json_str(name);
			printf(", \"size\": %" PRIu64 ", \"in_use\": %" PRIu64
			       ", \"high_water\": %" PRIu64 ", \"mapped\": %" PRIu64
			       ", \"waiters\": %" PRIu32 ", \"taps\": %" PRIu32
			       ", \"qos_iops\": %" PRIu64 ", \"qos_bps\": %" PRIu64 ", \"state\": ",
			       size, in_use, high, mapped, waiters, taps, p.qos_iops, p.qos_bps);
			json_str(state ? state : "");
			printf(", \"path\": ");
			json_str(path);
			printf("}");
		} else {
			printf("%-16s %8s %8s %10s %7" PRIu32 " %4" PRIu32 " %9s %9s %s\n", name,
			       format_size(size, s1, sizeof(s1)),
			       format_size(in_use, s2, sizeof(s2)),
			       format_size(high, s3, sizeof(s3)), waiters, taps,
			       p.qos_iops ? format_limit(p.qos_iops, false, s4, sizeof(s4)) : "-",
			       p.qos_bps ? format_limit(p.qos_bps, true, s5, sizeof(s5)) : "-",
			       state ? state : "-");
		}
		first = false;
	}
	if (a->json)
		printf("%s]\n", first ? "" : "\n");
	return r < 0 ? refused(NULL, r) : 0;
}
