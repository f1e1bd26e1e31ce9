/*
 * cron: when a schedule fires. Parses a schedule's "cron" string and
 * computes its slots (the instants it fires), in UTC.
 *
 * Syntax:
 *   - Five fields: minute (0-59), hour (0-23), day-of-month (1-31), month
 *     (1-12 or JAN-DEC), day-of-week (0-7 or SUN-SAT; 0 and 7 are Sunday).
 *     Each field is a list "a,b,..." of items: "*", "n", "a-b", "*\/s",
 *     "a-b/s" or "a/s" (a to the field's maximum, step s). Names are case-
 *     insensitive and may appear in ranges ("MON-FRI").
 *     Day rule (Vixie cron, crontab(5)): when both day-of-month and day-of-
 *     week are restricted, i.e. neither contains "*", a day matching either
 *     one fires; otherwise a day must match both ("*" matching any day).
 *   - "@hourly", "@daily" (= "@midnight"), "@weekly" (Sunday), "@monthly",
 *     "@yearly" (= "@annually"): "0 * * * *", "0 0 * * *", "0 0 * * 0",
 *     "0 0 1 * *", "0 0 1 1 *".
 *   - "@every D", D a Go duration ("30s", "5m", "1h30m", "1.5h", "2500ms":
 *     units ns, us, ms, s, m, h), from 1s to 8760h, in whole milliseconds.
 *     Its slots are the multiples of D since the Unix epoch, so they are the
 *     same in every process and across restarts ("@every 1h" fires on the
 *     hour, "@every 15m" at :00, :15, :30 and :45; an interval that does not
 *     divide a day drifts through the day, counted from 1970).
 *
 * Time is UTC throughout: no time zones, no daylight saving gaps or repeats.
 * Pure module: no I/O, no threads, no allocation.
 */
#ifndef FERRY_CRON_H
#define FERRY_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* cron_next()'s answer when there is no later slot (or it is past 9999). */
#define CRON_NEVER INT64_MAX
/* "@every" bounds. */
#define CRON_EVERY_MIN_MS 1000LL
#define CRON_EVERY_MAX_MS (8760LL * 3600 * 1000)

enum cron_kind { CRON_FIELDS = 0, CRON_EVERY };

/** A parsed expression. Plain data: copy it freely. */
struct cron {
    enum cron_kind kind;
    /* CRON_FIELDS: bit v is set when value v matches. */
    uint64_t minutes; /* 0-59 */
    uint32_t hours;   /* 0-23 */
    uint32_t mdays;   /* 1-31 */
    uint16_t months;  /* 1-12 */
    uint8_t wdays;    /* 0-6, Sunday = 0 (7 is folded into 0) */
    bool mday_star;   /* the field contained "*" (see the day rule) */
    bool wday_star;
    /* CRON_EVERY */
    int64_t every_ms;
};

/**
 * Parse @expr into @out. Returns 0, or -EINVAL with a message in @err
 * that names the field, e.g. "cron field 2 (hour): 25 is out of range
 * 0-23". An expression that can never fire ("0 0 30 2 *") is an error.
 * @out is unspecified on failure.
 */
int cron_parse(const char *expr, struct cron *out, char *err, size_t len);

/**
 * The first slot strictly after @after_ms (wall ms since the epoch, UTC),
 * or CRON_NEVER. Slots of five-field expressions are whole minutes.
 */
int64_t cron_next(const struct cron *c, int64_t after_ms);

/**
 * Format @ms as an RFC 3339 UTC timestamp, "2026-01-02T03:04:05Z", with
 * ".mmm" before the Z when @ms is not a whole second. Returns 0, or
 * -ERANGE (outside years 0000-9999, or @len too small).
 */
int cron_rfc3339(int64_t ms, char *buf, size_t len);

#endif
