/* Logging to stderr with sd-daemon priority prefixes ("<3>"), which journald
 * turns into real priorities when tapd runs under systemd. */
#ifndef TAPD_LOG_H
#define TAPD_LOG_H

#include <syslog.h>

/* Messages above this priority (numerically greater) are dropped. */
void log_set_level(int level);
int log_get_level(void);

/* "err", "warning", "notice", "info", "debug" or a digit 0-7; -1 if unknown. */
int log_parse_level(const char *s);

void log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
