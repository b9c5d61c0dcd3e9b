/* tapctl's pool commands: pool-create, pool-resize, pool-destroy,
 * pool-list and pool-qos. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "tapctl-internal.h"

int cmd_pool_create(sd_bus *bus, const struct args *a)
{
	return simple_call(bus, ROOT, IFACE_MANAGER, "CreatePool", "st", a->pos[0], a->size);
}

int cmd_pool_resize(sd_bus *bus, const struct args *a)
{
	_cleanup_free_ char *path = NULL;
	int r = pool_path(a->pos[0], &path);

	return r ? r : simple_call(bus, path, IFACE_POOL, "Resize", "t", a->size);
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
		printf("%-16s %8s %8s %10s %7s %4s %9s %9s\n", "NAME", "SIZE", "IN-USE",
		       "HIGH-WATER", "WAITERS", "TAPS", "IOPS", "BPS");
	while ((r = sd_bus_message_read(reply, "(sttttuuo)", &name, &size, &in_use, &high,
					&mapped, &waiters, &taps, &path)) > 0) {
		struct obj_props p;

		/* A pool destroyed since ListPools shows no limits. */
		get_props(bus, path, IFACE_POOL, &p, NULL);
		free_props(&p);
		if (a->json) {
			printf("%s\n  {\"name\": ", first ? "" : ",");
			json_str(name);
			printf(", \"size\": %" PRIu64 ", \"in_use\": %" PRIu64
			       ", \"high_water\": %" PRIu64 ", \"mapped\": %" PRIu64
			       ", \"waiters\": %" PRIu32 ", \"taps\": %" PRIu32
			       ", \"qos_iops\": %" PRIu64 ", \"qos_bps\": %" PRIu64 ", \"path\": ",
			       size, in_use, high, mapped, waiters, taps, p.qos_iops, p.qos_bps);
			json_str(path);
			printf("}");
		} else {
			printf("%-16s %8s %8s %10s %7" PRIu32 " %4" PRIu32 " %9s %9s\n", name,
			       format_size(size, s1, sizeof(s1)), format_size(in_use, s2, sizeof(s2)),
			       format_size(high, s3, sizeof(s3)), waiters, taps,
			       p.qos_iops ? format_limit(p.qos_iops, false, s4, sizeof(s4)) : "-",
			       p.qos_bps ? format_limit(p.qos_bps, true, s5, sizeof(s5)) : "-");
		}
		first = false;
	}
	if (a->json)
		printf("%s]\n", first ? "" : "\n");
	return r < 0 ? refused(NULL, r) : 0;
}
