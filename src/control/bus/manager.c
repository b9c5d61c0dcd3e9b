/* The Manager object at /org/xenproject/Tapd1: CreateTap, ListTaps,
 * CreatePool, ListPools and the daemon's own properties, beside the
 * ObjectManager that lists the tap and pool objects. */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "internal.h"
#include "lib/log.h"

/* CreateTap's options: key, D-Bus type, and where the value goes. */
enum mgr_opt_kind { MGR_OPT_STR, MGR_OPT_BOOL, MGR_OPT_U64 };

static const struct {
	const char *key;
	enum mgr_opt_kind kind;
	size_t off; /* in struct tap_config */
} mgr_options[] = {
	{ "name", MGR_OPT_STR, offsetof(struct tap_config, name) },
	{ "pool", MGR_OPT_STR, offsetof(struct tap_config, pool) },
	{ "parent", MGR_OPT_STR, offsetof(struct tap_config, parent) },
	{ "read-only", MGR_OPT_BOOL, offsetof(struct tap_config, read_only) },
	{ "qos-iops", MGR_OPT_U64, offsetof(struct tap_config, qos_iops) },
	{ "qos-bps", MGR_OPT_U64, offsetof(struct tap_config, qos_bps) },
};

static int mgr_parse_option(sd_bus_message *m, struct tap_config *cfg, const char *key,
			    unsigned *seen, sd_bus_error *e)
{
	static const char *const type_name[] = { "a string (s)", "a boolean (b)",
						 "an unsigned 64-bit integer (t)" };
	static const char sig[] = "sbt";
	const char *type;
	char *field;
	size_t i;
	int b, r;

	for (i = 0; i < ARRAY_SIZE(mgr_options) && strcmp(key, mgr_options[i].key) != 0; i++)
		;
	if (i == ARRAY_SIZE(mgr_options))
		return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS,
					 "unknown option '%s' (known: name, pool, parent, "
					 "read-only, qos-iops, qos-bps)", key);
	/* A dict may repeat a key on the wire; which value would win is
	 * nobody's guess, so neither does. */
	if (*seen & (1u << i))
		return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS,
					 "option '%s' is given twice", key);
	*seen |= 1u << i;
	r = sd_bus_message_peek_type(m, NULL, &type);
	if (r < 0)
		return r;
	if (type[0] != sig[mgr_options[i].kind] || type[1])
		return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS,
					 "option '%s' must be %s, not '%s'", key,
					 type_name[mgr_options[i].kind], type);
	field = (char *)cfg + mgr_options[i].off;
	switch (mgr_options[i].kind) {
	case MGR_OPT_STR:
		r = sd_bus_message_read(m, "v", "s", (const char **)field);
		if (r >= 0 && !**(const char **)field)
			return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS,
						 "option '%s' is empty", key);
		return r;
	case MGR_OPT_BOOL:
		r = sd_bus_message_read(m, "v", "b", &b);
		if (r >= 0)
			*(bool *)field = b;
		return r;
	case MGR_OPT_U64:
		return sd_bus_message_read(m, "v", "t", (uint64_t *)field);
	}
	return -EINVAL;
}

/* Parse CreateTap's a{sv}. Strings point into m, valid while it lives. */
static int mgr_parse_options(sd_bus_message *m, struct tap_config *cfg, sd_bus_error *e)
{
	unsigned seen = 0;
	int r;

	_Static_assert(ARRAY_SIZE(mgr_options) <= 32, "one bit per option in seen");
	r = sd_bus_message_enter_container(m, 'a', "{sv}");
	if (r < 0)
		return r;
	while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
		const char *key;

		r = sd_bus_message_read(m, "s", &key);
		if (r < 0)
			return r;
		r = mgr_parse_option(m, cfg, key, &seen, e);
		if (r < 0)
			return r;
		r = sd_bus_message_exit_container(m);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	return sd_bus_message_exit_container(m);
}

/* From the core, once CreateTap's image is open or will not be; arg is
 * the held call, about its image. */
static void mgr_tap_created(void *arg, struct tap *t, int err, const struct errbuf *eb)
{
	struct bus_held *c = arg;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_free_ char *path = NULL;

	if (err < 0) {
		log_info("CreateTap %s refused: %s", c->about,
			 eb && eb->msg[0] ? eb->msg : strerror(-err));
		bus_core_error(&e, err, eb, BUS_OP_TAP_CREATE);
	} else if (!(path = bus_tap_path(t))) {
		sd_bus_error_set_errno(&e, ENOMEM);
	}
	/* A caller gone does not undo it: the tap stays. */
	if (sd_bus_error_is_set(&e))
		bus_held_error(c, &e);
	else
		bus_held_return(c, "os", path, tap_name(t));
}

/* Answered by mgr_tap_created once the image is open: opening runs off
 * the loop and may take up to the open timeout. */
static int mgr_create_tap(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct tap_config cfg = { 0 };
	struct errbuf eb = { { 0 } };
	struct bus_held *c;
	int r;

	(void)userdata;
	r = sd_bus_message_read(m, "s", &cfg.image);
	if (r < 0)
		return r;
	r = mgr_parse_options(m, &cfg, e);
	if (r < 0)
		return r;
	if (!*cfg.image)
		return sd_bus_error_setf(e, BUS_ERR_BAD_IMAGE,
					 "empty image string; expected raw:/path, ram:SIZE or null:SIZE");
	/* Checked here: -EINVAL from the core means a bad image (BadImage),
	 * and a bad name is a bad argument (InvalidArgs). */
	if (cfg.name && (r = tap_name_check(cfg.name, &eb)) < 0)
		return bus_core_error(e, r, &eb, BUS_OP_TAP);
	/* Checked here: -ENOENT from the core means a missing image file. */
	if (cfg.parent && !tap_find(cfg.parent))
		return sd_bus_error_setf(e, BUS_ERR_NO_SUCH_TAP,
					 "no such tap: %s (the parent must be a running tap)",
					 cfg.parent);

	c = bus_held_new(m, sizeof(*c), "CreateTap", cfg.image);
	if (!c)
		return -ENOMEM;
	r = tap_create(&cfg, mgr_tap_created, c, &eb);
	if (r < 0) {
		bus_held_free(c);
		log_info("CreateTap %s refused: %s", cfg.image, eb.msg[0] ? eb.msg : strerror(-r));
		return bus_core_error(e, r, &eb, BUS_OP_TAP_CREATE);
	}
	return 1;
}

static int mgr_list_taps(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	_cleanup_msg_ sd_bus_message *reply = NULL;
	int r;

	(void)userdata;
	(void)e;
	r = sd_bus_message_new_method_return(m, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_open_container(reply, 'a', "(ussssbto)");
	if (r < 0)
		return r;
	for (struct tap *t = tap_first(); t; t = tap_next(t)) {
		_cleanup_free_ char *path = bus_tap_path(t);
		struct pool *p = tap_pool(t);

		if (!path)
			return -ENOMEM;
		r = sd_bus_message_append(reply, "(ussssbto)", (uint32_t)tap_minor(t),
					  tap_name(t), tap_image(t),
					  tap_state_name(tap_state(t)), p ? pool_name(p) : "",
					  (int)tap_read_only(t), tap_size(t), path);
		if (r < 0)
			return r;
	}
	r = sd_bus_message_close_container(reply);
	if (r < 0)
		return r;
	return sd_bus_send(NULL, reply, NULL);
}

/* Answered once the workers have mapped and locked the memory
 * (bus_pool_call_done); the pool is listed as "creating" meanwhile. */
static int mgr_create_pool(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct errbuf eb = { { 0 } };
	struct bus_pool_call *c;
	const char *name;
	uint64_t size;
	int r;

	(void)userdata;
	r = sd_bus_message_read(m, "st", &name, &size);
	if (r < 0)
		return r;
	if (!*name)
		return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS, "pool name is empty");
	if (size == 0)
		return sd_bus_error_setf(e, SD_BUS_ERROR_INVALID_ARGS,
					 "pool size must be greater than 0");
	c = bus_pool_call_new(m, name, size, true);
	if (!c)
		return -ENOMEM;
	r = pool_create_async(name, size, bus_pool_call_done, c, &eb);
	if (r < 0) {
		bus_held_free(&c->held);
		log_info("CreatePool %s (%llu bytes) refused: %s", name, (unsigned long long)size,
			 eb.msg[0] ? eb.msg : strerror(-r));
		return bus_core_error(e, r, &eb, BUS_OP_POOL_CREATE);
	}
	return 1;
}

static int mgr_list_pools(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	_cleanup_msg_ sd_bus_message *reply = NULL;
	int r;

	(void)userdata;
	(void)e;
	r = sd_bus_message_new_method_return(m, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_open_container(reply, 'a', "(sttttuuo)");
	if (r < 0)
		return r;
	for (struct pool *p = pool_first(); p; p = pool_next(p)) {
		_cleanup_free_ char *path = bus_pool_path(p);
		struct pool_stats st;

		if (!path)
			return -ENOMEM;
		pool_get_stats(p, &st);
		r = sd_bus_message_append(reply, "(sttttuuo)", pool_name(p), st.size, st.in_use,
					  st.high_water, st.mapped, st.waiters, st.taps, path);
		if (r < 0)
			return r;
	}
	r = sd_bus_message_close_container(reply);
	if (r < 0)
		return r;
	return sd_bus_send(NULL, reply, NULL);
}

static int mgr_get_bool(sd_bus *bus, const char *path, const char *iface,
			const char *prop, sd_bus_message *reply, void *userdata,
			sd_bus_error *e)
{
	(void)bus;
	(void)path;
	(void)iface;
	(void)prop;
	(void)e;
	return sd_bus_message_append(reply, "b", (int)*(const bool *)userdata);
}

static int mgr_get_str(sd_bus *bus, const char *path, const char *iface,
		       const char *prop, sd_bus_message *reply, void *userdata,
		       sd_bus_error *e)
{
	const char *s = *(const char *const *)userdata;

	(void)bus;
	(void)path;
	(void)iface;
	(void)prop;
	(void)e;
	return sd_bus_message_append(reply, "s", s ? s : "");
}

/* Methods that change something carry no UNPRIVILEGED flag: on an untrusted
 * bus sd-bus then checks the caller for CAP_SYS_ADMIN, a second fence
 * behind the bus policy (which already lets only root call them). */
static const sd_bus_vtable mgr_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_METHOD_WITH_NAMES("CreateTap", "sa{sv}", SD_BUS_PARAM(image) SD_BUS_PARAM(options),
				 "os", SD_BUS_PARAM(tap) SD_BUS_PARAM(name), mgr_create_tap, 0),
	SD_BUS_METHOD_WITH_NAMES("ListTaps", "", , "a(ussssbto)", SD_BUS_PARAM(taps),
				 mgr_list_taps, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_NAMES("CreatePool", "st", SD_BUS_PARAM(name) SD_BUS_PARAM(size),
				 "o", SD_BUS_PARAM(pool), mgr_create_pool, 0),
	SD_BUS_METHOD_WITH_NAMES("ListPools", "", , "a(sttttuuo)", SD_BUS_PARAM(pools),
				 mgr_list_pools, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_PROPERTY("Version", "s", mgr_get_str, offsetof(struct daemon_info, version),
			SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("IoFlusher", "b", mgr_get_bool, offsetof(struct daemon_info, io_flusher),
			SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("MemoryLocked", "b", mgr_get_bool,
			offsetof(struct daemon_info, memory_locked), SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("StateDirectory", "s", mgr_get_str,
			offsetof(struct daemon_info, state_dir), SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("NbdSocket", "s", mgr_get_str, offsetof(struct daemon_info, nbd_socket),
			SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_VTABLE_END
};

int bus_manager_add(sd_bus *bus, const struct daemon_info *info)
{
	int r;

	r = sd_bus_add_object_vtable(bus, NULL, BUS_ROOT, BUS_IFACE_MANAGER, mgr_vtable,
				     (void *)info);
	if (r >= 0)
		r = sd_bus_add_object_manager(bus, NULL, BUS_ROOT);
	return r;
}
