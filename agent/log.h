/*
 * log: structured, levelled logging to stderr, one line per record, as
 * JSON ({"ts":..,"level":..,"msg":..,fields..}) or readable text
 * ("2026-11-22T10:00:00.123Z WARN msg key=value ..."). Any thread may log;
 * each record is written with a single write(2) so lines never interleave.
 *
 *     log_write(LOG_WARN, "delivery failed", LOG_FIELDS(
 *         LOG_S("peer", name), LOG_I("attempt", n)));
 */
#ifndef FERRY_LOG_H
#define FERRY_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_JSON = 0, LOG_FORMAT_TEXT };

enum log_field_type { LOG_FIELD_STR, LOG_FIELD_INT, LOG_FIELD_DOUBLE, LOG_FIELD_RAW };

struct log_field {
    const char *key;
    enum log_field_type type;
    const char *s;  /* STR: text (NULL prints null); RAW: JSON text as is */
    long long i;
    double d;
};

#define LOG_S(k, v) ((struct log_field){.key = (k), .type = LOG_FIELD_STR, .s = (v)})
#define LOG_I(k, v) ((struct log_field){.key = (k), .type = LOG_FIELD_INT, .i = (long long)(v)})
#define LOG_D(k, v) ((struct log_field){.key = (k), .type = LOG_FIELD_DOUBLE, .d = (v)})
#define LOG_RAW(k, v) ((struct log_field){.key = (k), .type = LOG_FIELD_RAW, .s = (v)})
/* Expands to "count, array" for log_write's last two parameters. */
#define LOG_FIELDS(...)                                                      \
    sizeof((struct log_field[]){__VA_ARGS__}) / sizeof(struct log_field),   \
        (struct log_field[]){__VA_ARGS__}
#define LOG_NOFIELDS 0, NULL

/** Set the threshold and format. Call before starting threads. */
void log_setup(enum log_level level, enum log_format format);

/** Parse "debug"/"info"/"warn"/"error"; returns 0 or -EINVAL. */
int log_level_parse(const char *s, enum log_level *out);
/** Parse "json"/"text"; returns 0 or -EINVAL. */
int log_format_parse(const char *s, enum log_format *out);
const char *log_level_name(enum log_level level);

bool log_enabled(enum log_level level);

void log_write(enum log_level level, const char *msg, size_t n_fields,
               const struct log_field *fields);

#define log_debug(msg, ...) log_write(LOG_DEBUG, (msg), __VA_ARGS__)
#define log_info(msg, ...) log_write(LOG_INFO, (msg), __VA_ARGS__)
#define log_warn(msg, ...) log_write(LOG_WARN, (msg), __VA_ARGS__)
#define log_error(msg, ...) log_write(LOG_ERROR, (msg), __VA_ARGS__)

#endif
