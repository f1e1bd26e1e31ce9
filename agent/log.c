/*
 * log: structured logging to stderr (see log.h). A record is built in a
 * stack buffer (spilling to the heap for long ones) and written with one
 * write(2), which keeps concurrent lines whole without a lock.
 */
#include "log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"

static atomic_int log_threshold = LOG_INFO;
static atomic_int log_fmt = LOG_FORMAT_JSON;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_setup(enum log_level level, enum log_format format)
{
    atomic_store(&log_threshold, (int)level);
    atomic_store(&log_fmt, (int)format);
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    if (strcmp(s, "warning") == 0) {
        *out = LOG_WARN;
        return 0;
    }
    return -EINVAL;
}

int log_format_parse(const char *s, enum log_format *out)
{
    if (strcmp(s, "json") == 0)
        *out = LOG_FORMAT_JSON;
    else if (strcmp(s, "text") == 0)
        *out = LOG_FORMAT_TEXT;
    else
        return -EINVAL;
    return 0;
}

const char *log_level_name(enum log_level level)
{
    return (unsigned)level < 4 ? level_names[level] : "?";
}

bool log_enabled(enum log_level level)
{
    return (int)level >= atomic_load_explicit(&log_threshold, memory_order_relaxed);
}

static void put_json_string(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    buf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            buf_append(b, esc, 2);
        } else if (c == '\n') {
            buf_append(b, "\\n", 2);
        } else if (c == '\r') {
            buf_append(b, "\\r", 2);
        } else if (c == '\t') {
            buf_append(b, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            buf_append(b, esc, 6);
        } else {
            buf_append(b, p, 1);
        }
    }
    buf_append(b, "\"", 1);
}

/* Text format: quote values that would be ambiguous unquoted. */
static void put_text_value(struct buf *b, const char *s)
{
    if (*s && !strpbrk(s, " \"=\n\t"))
        buf_puts(b, s);
    else
        put_json_string(b, s);
}

static void put_timestamp(struct buf *b)
{
    struct timespec ts;
    struct tm tm;
    char stamp[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof(stamp) - n, ".%03ldZ", ts.tv_nsec / 1000000);
    buf_puts(b, stamp);
}

static void put_field_value(struct buf *b, const struct log_field *f, bool json)
{
    switch (f->type) {
    case LOG_FIELD_INT:
        buf_printf(b, "%lld", f->i);
        break;
    case LOG_FIELD_DOUBLE:
        buf_printf(b, "%.6g", f->d);
        break;
    case LOG_FIELD_RAW:
        buf_puts(b, f->s ? f->s : "null");
        break;
    case LOG_FIELD_STR:
        if (!f->s)
            buf_puts(b, "null");
        else if (json)
            put_json_string(b, f->s);
        else
            put_text_value(b, f->s);
        break;
    }
}

void log_write(enum log_level level, const char *msg, size_t n_fields,
               const struct log_field *fields)
{
    if (!log_enabled(level))
        return;
    bool json = atomic_load_explicit(&log_fmt, memory_order_relaxed) == LOG_FORMAT_JSON;
    struct buf b;
    buf_init(&b, 1 << 20);
    if (json) {
        buf_puts(&b, "{\"ts\":\"");
        put_timestamp(&b);
        buf_printf(&b, "\",\"level\":\"%s\",\"msg\":", log_level_name(level));
        put_json_string(&b, msg);
        for (size_t i = 0; i < n_fields; i++) {
            buf_puts(&b, ",");
            put_json_string(&b, fields[i].key);
            buf_puts(&b, ":");
            put_field_value(&b, &fields[i], true);
        }
        buf_puts(&b, "}\n");
    } else {
        put_timestamp(&b);
        buf_printf(&b, " %-5s %s", log_level_name(level), msg);
        for (size_t i = 0; i < n_fields; i++) {
            buf_printf(&b, " %s=", fields[i].key);
            put_field_value(&b, &fields[i], false);
        }
        buf_puts(&b, "\n");
    }
    if (b.data) {
        size_t off = 0;
        while (off < b.len) {
            ssize_t w = write(STDERR_FILENO, b.data + off, b.len - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            off += (size_t)w;
        }
    }
    buf_free(&b);
}
