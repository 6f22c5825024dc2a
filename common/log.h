/* log.h - one line per event on stderr: "2026-11-26T10:00:00.123Z info pool: ..." */
#ifndef EMBER_COMMON_LOG_H
#define EMBER_COMMON_LOG_H

enum ember_log_level { EMBER_LOG_DEBUG, EMBER_LOG_INFO, EMBER_LOG_WARN, EMBER_LOG_ERROR };

/** Messages below @level are dropped. Default: INFO (EMBER_LOG=debug overrides). */
void ember_log_set_level(enum ember_log_level level);

/** Write one log line; thread-safe (one write(2) per line). */
void ember_log(enum ember_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_debug(...) ember_log(EMBER_LOG_DEBUG, __VA_ARGS__)
#define log_info(...) ember_log(EMBER_LOG_INFO, __VA_ARGS__)
#define log_warn(...) ember_log(EMBER_LOG_WARN, __VA_ARGS__)
#define log_error(...) ember_log(EMBER_LOG_ERROR, __VA_ARGS__)

#endif
