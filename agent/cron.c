/*
 * cron: parse schedule expressions and compute their slots (see cron.h).
 *
 * A five-field expression becomes one bit set per field. cron_next() walks
 * the calendar forward from the minute after its argument: a month whose
 * bit is clear is skipped whole, a day is tested against the day rule, and
 * within a matching day the first matching hour and minute are found with
 * bit scans. The Gregorian calendar repeats every 400 years (146097 days, a
 * whole number of weeks), so a walk that finds nothing in 400 years never
 * will: that bounds the loop and lets cron_parse() refuse expressions such
 * as "0 0 30 2 *" that could never fire.
 *
 * Dates are converted with Howard Hinnant's days_from_civil/civil_from_days
 * algorithms (proleptic Gregorian, UTC), so nothing depends on the process
 * time zone or on the C library's time functions.
 */
#include "cron.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MS_PER_MIN 60000LL
#define MS_PER_DAY 86400000LL
#define MIN_PER_DAY 1440
#define HORIZON_MONTHS (400 * 12)
/* Slots are searched in years 0000-9999 (RFC 3339's range). */
#define CRON_MIN_MS (-62167219200000LL) /* 0000-01-01T00:00:00Z */
#define CRON_MAX_MS 253402300800000LL   /* 10000-01-01T00:00:00Z */
#define NS_PER_MS 1000000LL
#define MAX_DIGITS 9 /* a field value or step longer than this is nonsense */

/* ---- calendar --------------------------------------------------------- */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Days since 1970-01-01 of the civil date y-m-d. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
    static const int dim[13] = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dim[m];
}

/* 0 = Sunday; 1970-01-01 was a Thursday. */
static int weekday(int64_t days)
{
    return (int)(days - floor_div(days + 4, 7) * 7 + 4);
}

/* ---- errors ------------------------------------------------------------ */

/* What is being parsed, for messages. @index is 1-based; 0: no field. */
struct ctx {
    int index;
    const char *field;
    char *err;
    size_t len;
};

static int fail(const struct ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* "cron field N (NAME): MESSAGE" into c->err; returns -EINVAL. */
static int fail(const struct ctx *c, const char *fmt, ...)
{
    if (!c->err || c->len == 0)
        return -EINVAL;
    int n = c->index ? snprintf(c->err, c->len, "cron field %d (%s): ",
                                c->index, c->field)
                     : 0;
    if (n < 0 || (size_t)n >= c->len)
        return -EINVAL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err + n, c->len - (size_t)n, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* ---- fields ------------------------------------------------------------ */

static const char *const month_names[] = {"JAN", "FEB", "MAR", "APR",
                                          "MAY", "JUN", "JUL", "AUG",
                                          "SEP", "OCT", "NOV", "DEC"};
static const char *const day_names[] = {"SUN", "MON", "TUE", "WED",
                                        "THU", "FRI", "SAT"};

struct field_def {
    const char *name;
    int min, max;
    const char *const *names; /* names[i] stands for min + i */
    int n_names;
    const char *kind;         /* "month" / "day": for messages */
};

static const struct field_def field_defs[5] = {
    {"minute", 0, 59, NULL, 0, NULL},
    {"hour", 0, 23, NULL, 0, NULL},
    {"day-of-month", 1, 31, NULL, 0, NULL},
    {"month", 1, 12, month_names, 12, "month name (JAN-DEC)"},
    {"day-of-week", 0, 7, day_names, 7, "day name (SUN-SAT)"},
};

/* Digits [p, end) as a number; -1 when empty, not all digits or too long. */
static long parse_digits(const char *p, const char *end)
{
    long v = 0;
    if (p == end || end - p > MAX_DIGITS)
        return -1;
    for (; p < end; p++) {
        if (!isdigit((unsigned char)*p))
            return -1;
        v = v * 10 + (*p - '0');
    }
    return v;
}

/* A name of def->names, case-insensitive, as its value; -1 if none. */
static int parse_name(const struct field_def *def, const char *p, size_t n)
{
    for (int i = 0; i < def->n_names && n == 3; i++)
        if (strncasecmp(p, def->names[i], 3) == 0)
            return def->min + i;
    return -1;
}

/* One value of field @def: a number in range or a name. */
static int parse_value(const struct ctx *c, const struct field_def *def,
                       const char *p, const char *end, int *out)
{
    int n = (int)(end - p);
    if (p == end)
        return fail(c, "a value is missing");
    if (isalpha((unsigned char)*p)) {
        int v = def->names ? parse_name(def, p, (size_t)n) : -1;
        if (v < 0 && def->names)
            return fail(c, "\"%.*s\" is not a %s", n, p, def->kind);
        if (v < 0)
            return fail(c, "\"%.*s\" is not a number", n, p);
        *out = v;
        return 0;
    }
    long v = parse_digits(p, end);
    if (v < 0 && isdigit((unsigned char)*p) && end - p > MAX_DIGITS)
        return fail(c, "%.*s is out of range %d-%d", n, p, def->min, def->max);
    if (v < 0)
        return fail(c, "\"%.*s\" is not a number", n, p);
    if (v < def->min || v > def->max)
        return fail(c, "%ld is out of range %d-%d", v, def->min, def->max);
    *out = (int)v;
    return 0;
}

static int parse_step(const struct ctx *c, const struct field_def *def,
                      const char *p, const char *end, int *step)
{
    int span = def->max - def->min + 1, n = (int)(end - p);
    long v = parse_digits(p, end);
    if (v < 0 && p < end && isdigit((unsigned char)*p))
        return fail(c, "step %.*s is out of range 1-%d", n, p, span);
    if (v < 0)
        return fail(c, "step \"%.*s\" is not a number", n, p);
    if (v < 1 || v > span)
        return fail(c, "step %ld is out of range 1-%d", v, span);
    *step = (int)v;
    return 0;
}

/* The range part of an item (before any "/"): "*", "a" or "a-b". */
static int parse_range(const struct ctx *c, const struct field_def *def,
                       const char *p, const char *end, bool stepped, int *lo,
                       int *hi)
{
    if (end - p == 1 && *p == '*') {
        *lo = def->min;
        *hi = def->max;
        return 0;
    }
    const char *dash = memchr(p, '-', (size_t)(end - p));
    int rc = parse_value(c, def, p, dash ? dash : end, lo);
    if (rc)
        return rc;
    if (!dash) {
        *hi = stepped ? def->max : *lo; /* "a/s" runs to the maximum */
        return 0;
    }
    rc = parse_value(c, def, dash + 1, end, hi);
    if (rc == 0 && *hi < *lo)
        return fail(c, "range %.*s goes backwards", (int)(end - p), p);
    return rc;
}

/* One list item [p, end) into @bits. */
static int parse_item(const struct ctx *c, const struct field_def *def,
                      const char *p, const char *end, uint64_t *bits)
{
    int lo = 0, hi = 0, step = 1;
    if (p == end)
        return fail(c, "empty list item");
    const char *slash = memchr(p, '/', (size_t)(end - p));
    int rc = parse_range(c, def, p, slash ? slash : end, slash != NULL, &lo,
                         &hi);
    if (rc == 0 && slash)
        rc = parse_step(c, def, slash + 1, end, &step);
    for (int v = lo; rc == 0 && v <= hi; v += step)
        *bits |= 1ULL << v;
    return rc;
}

/* Field @i (0-based) of the expression, the text [p, end). */
static int parse_field(int i, const char *p, const char *end, uint64_t *bits,
                       bool *star, char *err, size_t len)
{
    const struct field_def *def = &field_defs[i];
    struct ctx c = {.index = i + 1, .field = def->name, .err = err, .len = len};
    *bits = 0;
    *star = memchr(p, '*', (size_t)(end - p)) != NULL;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        int rc = parse_item(&c, def, p, comma ? comma : end, bits);
        if (rc || !comma)
            return rc;
        p = comma + 1;
    }
}

/* ---- expressions -------------------------------------------------------- */

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/* Split @expr at whitespace into at most @max tokens; returns the count
 * (which may exceed @max: the extra tokens are counted, not stored). */
static int split(const char *expr, const char **start, const char **end,
                 int max)
{
    int n = 0;
    const char *p = expr;
    for (;;) {
        while (is_space(*p))
            p++;
        if (!*p)
            return n;
        const char *q = p;
        while (*q && !is_space(*q))
            q++;
        if (n < max) {
            start[n] = p;
            end[n] = q;
        }
        n++;
        p = q;
    }
}

static int parse_fields(const char *expr, struct cron *out, char *err,
                        size_t len)
{
    const char *s[5], *e[5];
    uint64_t bits[5];
    bool star[5];
    struct ctx c = {.err = err, .len = len};
    int n = split(expr, s, e, 5);
    if (n != 5)
        return fail(&c, "expected 5 fields (minute hour day-of-month month"
                        " day-of-week), got %d", n);
    for (int i = 0; i < 5; i++) {
        int rc = parse_field(i, s[i], e[i], &bits[i], &star[i], err, len);
        if (rc)
            return rc;
    }
    if (bits[4] & (1ULL << 7))
        bits[4] = (bits[4] | 1) & 0x7f; /* 7 is Sunday too */
    *out = (struct cron){.kind = CRON_FIELDS,
                         .minutes = bits[0],
                         .hours = (uint32_t)bits[1],
                         .mdays = (uint32_t)bits[2],
                         .months = (uint16_t)bits[3],
                         .wdays = (uint8_t)bits[4],
                         .mday_star = star[2],
                         .wday_star = star[4]};
    if (cron_next(out, 0) == CRON_NEVER)
        return fail(&c, "never fires: no date matches its day-of-month, month"
                        " and day-of-week fields");
    return 0;
}

/* A Go duration unit at [p, end) (the letters up to a digit or '.'), in
 * nanoseconds; 0 when unknown. */
static int64_t duration_unit(const char *p, const char *end)
{
    static const struct {
        const char *name;
        int64_t ns;
    } units[] = {{"ns", 1}, {"us", 1000}, {"\xc2\xb5s", 1000},
                 {"\xce\xbcs", 1000}, {"ms", NS_PER_MS},
                 {"s", 1000 * NS_PER_MS}, {"m", 60000 * NS_PER_MS},
                 {"h", 3600000 * NS_PER_MS}};
    size_t n = (size_t)(end - p);
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (strlen(units[i].name) == n && memcmp(p, units[i].name, n) == 0)
            return units[i].ns;
    return 0;
}

/* One "<number><unit>" term at *@pp in nanoseconds, added to *@total.
 * -EINVAL when malformed, -ERANGE past the "@every" maximum. */
static int duration_term(const char **pp, const char *end, int64_t *total)
{
    const int64_t max_ns = CRON_EVERY_MAX_MS * NS_PER_MS;
    const char *p = *pp;
    int64_t whole = 0, frac = 0, scale = 1;
    int digits = 0;
    for (; p < end && isdigit((unsigned char)*p); p++, digits++)
        whole = whole > max_ns ? whole : whole * 10 + (*p - '0');
    if (p < end && *p == '.')
        for (p++; p < end && isdigit((unsigned char)*p); p++, digits++)
            if (scale < 1000000000) {
                frac = frac * 10 + (*p - '0');
                scale *= 10;
            }
    const char *u = p;
    while (p < end && !isdigit((unsigned char)*p) && *p != '.')
        p++;
    int64_t unit = duration_unit(u, p);
    if (digits == 0 || unit == 0)
        return -EINVAL;
    *pp = p;
    if (whole > max_ns / unit)
        return -ERANGE;
    *total += whole * unit + (int64_t)((double)frac * (double)unit /
                                       (double)scale);
    return *total > max_ns ? -ERANGE : 0;
}

/* A Go duration ("1h30m", "2.5s") in nanoseconds. */
static int parse_duration(const char *p, const char *end, int64_t *ns)
{
    *ns = 0;
    if (end - p == 1 && *p == '0')
        return 0; /* Go's bare zero */
    if (p == end)
        return -EINVAL;
    while (p < end) {
        int rc = duration_term(&p, end, ns);
        if (rc)
            return rc;
    }
    return 0;
}

static int parse_every(const char *p, const char *end, struct cron *out,
                       char *err, size_t len)
{
    struct ctx c = {.err = err, .len = len};
    int n = (int)(end - p);
    int64_t ns = 0;
    if (p == end)
        return fail(&c, "@every: expected a duration, e.g. \"@every 5m\"");
    int rc = parse_duration(p, end, &ns);
    if (rc == -ERANGE)
        return fail(&c, "@every %.*s: longer than the maximum of 8760h", n, p);
    if (rc)
        return fail(&c, "@every: \"%.*s\" is not a duration (e.g. 30s, 5m,"
                        " 1h30m)", n, p);
    if (ns < CRON_EVERY_MIN_MS * NS_PER_MS)
        return fail(&c, "@every %.*s: shorter than the minimum of 1s", n, p);
    if (ns % NS_PER_MS)
        return fail(&c, "@every %.*s: not a whole number of milliseconds", n,
                    p);
    *out = (struct cron){.kind = CRON_EVERY, .every_ms = ns / NS_PER_MS};
    return 0;
}

static int parse_macro(const char *p, struct cron *out, char *err,
                       size_t len)
{
    static const struct {
        const char *name;
        const char *expr;
    } macros[] = {{"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"},
                  {"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
                  {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
                  {"@hourly", "0 * * * *"}};
    struct ctx c = {.err = err, .len = len};
    const char *end = p + strlen(p), *word = p;
    while (end > p && is_space(end[-1]))
        end--;
    while (p < end && !is_space(*p))
        p++;
    size_t n = (size_t)(p - word);
    if (n == 6 && strncasecmp(word, "@every", 6) == 0) {
        while (p < end && is_space(*p))
            p++;
        return parse_every(p, end, out, err, len);
    }
    for (size_t i = 0; i < sizeof(macros) / sizeof(macros[0]); i++)
        if (p == end && strlen(macros[i].name) == n &&
            strncasecmp(word, macros[i].name, n) == 0)
            return parse_fields(macros[i].expr, out, err, len);
    return fail(&c, "unknown macro \"%.*s\" (expected @every <duration>,"
                    " @hourly, @daily, @weekly, @monthly or @yearly)",
                (int)(end - word), word);
}

int cron_parse(const char *expr, struct cron *out, char *err, size_t len)
{
    struct ctx c = {.err = err, .len = len};
    if (err && len)
        err[0] = '\0';
    memset(out, 0, sizeof(*out));
    if (!expr)
        return fail(&c, "no expression");
    while (is_space(*expr))
        expr++;
    if (*expr == '@')
        return parse_macro(expr, out, err, len);
    return parse_fields(expr, out, err, len);
}

/* ---- slots --------------------------------------------------------------- */

static bool day_matches(const struct cron *c, int64_t days, int mday)
{
    bool dom = c->mdays & (1U << mday);
    bool dow = c->wdays & (1U << weekday(days));
    /* Vixie cron: both restricted -> either; otherwise both ("*" is all). */
    if (c->mday_star || c->wday_star)
        return dom && dow;
    return dom || dow;
}

/* The first matching minute of the day at or after @h:@mi, or -1. */
static int first_time(const struct cron *c, int h, int mi)
{
    for (; h < 24; h++, mi = 0) {
        if (!(c->hours & (1U << h)))
            continue;
        uint64_t left = c->minutes & ~((1ULL << mi) - 1);
        if (left)
            return h * 60 + __builtin_ctzll(left);
    }
    return -1;
}

/* The first slot at or after minute @min (minutes since the epoch). */
static int64_t next_fields(const struct cron *c, int64_t min)
{
    int64_t days = floor_div(min, MIN_PER_DAY), y;
    int tod = (int)(min - days * MIN_PER_DAY), m, d;
    int h = tod / 60, mi = tod % 60;
    civil_from_days(days, &y, &m, &d);
    for (int n = 0; n < HORIZON_MONTHS; n++) {
        if (c->months & (1U << m)) {
            int dim = days_in_month(y, m);
            for (; d <= dim; d++, h = 0, mi = 0) {
                int64_t day = days_from_civil(y, m, d);
                int t = day_matches(c, day, d) ? first_time(c, h, mi) : -1;
                if (t >= 0)
                    return (day * MIN_PER_DAY + t) * MS_PER_MIN;
            }
        }
        if (++m > 12) {
            m = 1;
            y++;
        }
        d = 1;
        h = 0;
        mi = 0;
    }
    return CRON_NEVER;
}

int64_t cron_next(const struct cron *c, int64_t after_ms)
{
    int64_t next;
    if (after_ms >= CRON_MAX_MS)
        return CRON_NEVER;
    if (after_ms < CRON_MIN_MS)
        after_ms = CRON_MIN_MS - 1;
    if (c->kind == CRON_EVERY)
        next = c->every_ms > 0
                   ? (floor_div(after_ms, c->every_ms) + 1) * c->every_ms
                   : CRON_NEVER;
    else
        next = next_fields(c, floor_div(after_ms, MS_PER_MIN) + 1);
    return next >= CRON_MAX_MS ? CRON_NEVER : next;
}

int cron_rfc3339(int64_t ms, char *buf, size_t len)
{
    if (ms < CRON_MIN_MS || ms >= CRON_MAX_MS)
        return -ERANGE;
    int64_t days = floor_div(ms, MS_PER_DAY), y;
    int64_t in_day = ms - days * MS_PER_DAY;
    int m, d, n;
    civil_from_days(days, &y, &m, &d);
    int sec = (int)(in_day / 1000), frac = (int)(in_day % 1000);
    n = snprintf(buf, len, "%04lld-%02d-%02dT%02d:%02d:%02d", (long long)y, m,
                 d, sec / 3600, sec / 60 % 60, sec % 60);
    if (n >= 0 && (size_t)n < len)
        n += frac ? snprintf(buf + n, len - (size_t)n, ".%03dZ", frac)
                  : snprintf(buf + n, len - (size_t)n, "Z");
    return n >= 0 && (size_t)n < len ? 0 : -ERANGE;
}
