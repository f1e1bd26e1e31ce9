/*
 * test_cron: parsing every syntax of a schedule's "cron" string, its error
 * messages, and slot computation (rollovers, leap years, the day-of-month
 * / day-of-week rule, @every). Dates in the tests come from the C
 * library's timegm/gmtime_r, independent of cron.c's own calendar code,
 * and a brute-force minute-by-minute scan cross-checks cron_next.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cron.h"

/* Wall ms of a UTC date and time. */
static int64_t at(int y, int mo, int d, int h, int mi)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                    .tm_hour = h, .tm_min = mi};
    return (int64_t)timegm(&tm) * 1000;
}

static struct cron parse_ok(const char *expr)
{
    struct cron c;
    char err[256] = "";
    if (cron_parse(expr, &c, err, sizeof(err)) != 0)
        fail_msg("cron_parse(\"%s\"): %s", expr, err);
    return c;
}

static void assert_parse_error(const char *expr, const char *want)
{
    struct cron c;
    char err[256] = "";
    assert_int_equal(cron_parse(expr, &c, err, sizeof(err)), -EINVAL);
    if (strcmp(err, want) != 0)
        fail_msg("cron_parse(\"%s\"):\n  got  \"%s\"\n  want \"%s\"", expr,
                 err, want);
}

static void assert_next(const char *expr, int64_t after, int64_t want)
{
    struct cron c = parse_ok(expr);
    int64_t got = cron_next(&c, after);
    if (got != want)
        fail_msg("cron_next(\"%s\", %lld) = %lld, want %lld", expr,
                 (long long)after, (long long)got, (long long)want);
}

/* ---- parsing ------------------------------------------------------------ */

static void test_cron_parses_stars_lists_ranges_steps(void **state)
{
    (void)state;
    struct cron c = parse_ok("* * * * *");
    assert_int_equal(c.kind, CRON_FIELDS);
    assert_true(c.minutes == (1ULL << 60) - 1);
    assert_int_equal(c.hours, (1U << 24) - 1);
    assert_int_equal(c.mdays, 0xfffffffeU);
    assert_int_equal(c.months, 0x1ffe);
    assert_int_equal(c.wdays, 0x7f);
    assert_true(c.mday_star && c.wday_star);

    c = parse_ok("1,5,7 2-4 */10 1-11/5 5/1");
    assert_true(c.minutes == ((1ULL << 1) | (1ULL << 5) | (1ULL << 7)));
    assert_int_equal(c.hours, (1U << 2) | (1U << 3) | (1U << 4));
    assert_int_equal(c.mdays, (1U << 1) | (1U << 11) | (1U << 21) | (1U << 31));
    assert_int_equal(c.months, (1U << 1) | (1U << 6) | (1U << 11));
    assert_int_equal(c.wdays, (1U << 5) | (1U << 6) | 1U); /* 5-7: 7 = Sun */
    assert_true(c.mday_star); /* "*\/10" contains "*" */
    assert_false(c.wday_star);

    c = parse_ok("  5/20\t0-23/12 1,15 * 1-5  ");
    assert_true(c.minutes == ((1ULL << 5) | (1ULL << 25) | (1ULL << 45)));
    assert_int_equal(c.hours, 1U | (1U << 12));
    assert_true(c.wday_star == false && c.mday_star == false);
}

static void test_cron_parses_names_case_insensitive(void **state)
{
    (void)state;
    struct cron c = parse_ok("0 0 * jan,Mar,DEC mon-fri");
    assert_int_equal(c.months, (1U << 1) | (1U << 3) | (1U << 12));
    assert_int_equal(c.wdays, 0x3e);
    c = parse_ok("0 0 * FEB-apr/2 SUN,sat");
    assert_int_equal(c.months, (1U << 2) | (1U << 4));
    assert_int_equal(c.wdays, 1U | (1U << 6));
}

static void test_cron_day_of_week_seven_is_sunday(void **state)
{
    (void)state;
    struct cron a = parse_ok("0 0 * * 7"), b = parse_ok("0 0 * * 0");
    assert_int_equal(a.wdays, 1);
    assert_int_equal(a.wdays, b.wdays);
    assert_int_equal(parse_ok("0 0 * * 0-7").wdays, 0x7f);
    assert_int_equal(parse_ok("0 0 * * */2").wdays, 0x55); /* 0,2,4,6 */
}

static void test_cron_parses_macros(void **state)
{
    (void)state;
    static const char *const pairs[][2] = {
        {"@yearly", "0 0 1 1 *"},   {"@annually", "0 0 1 1 *"},
        {"@monthly", "0 0 1 * *"},  {"@weekly", "0 0 * * 0"},
        {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
        {"@hourly", "0 * * * *"},   {"@HOURLY", "0 * * * *"},
        {" @daily ", "0 0 * * *"},
    };
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        struct cron m = parse_ok(pairs[i][0]), e = parse_ok(pairs[i][1]);
        assert_memory_equal(&m, &e, sizeof(m));
    }
}

static void test_cron_parses_every_durations(void **state)
{
    (void)state;
    static const struct {
        const char *expr;
        int64_t ms;
    } cases[] = {
        {"@every 1s", 1000},          {"@every 30s", 30000},
        {"@every 5m", 300000},        {"@every 1h30m", 5400000},
        {"@every 1.5h", 5400000},     {"@every 2500ms", 2500},
        {"@every 1m0.5s", 60500},     {"@every 1000000us", 1000},
        {"@every 1000000000ns", 1000}, {"@EVERY   2h", 7200000},
        {"@every 8760h", 8760LL * 3600000}, {"@every .5m", 30000},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cron c = parse_ok(cases[i].expr);
        assert_int_equal(c.kind, CRON_EVERY);
        if (c.every_ms != cases[i].ms)
            fail_msg("%s: %lld ms", cases[i].expr, (long long)c.every_ms);
    }
}

static void test_cron_field_errors_name_the_field(void **state)
{
    (void)state;
    assert_parse_error("0 25 * * *",
                       "cron field 2 (hour): 25 is out of range 0-23");
    assert_parse_error("60 * * * *",
                       "cron field 1 (minute): 60 is out of range 0-59");
    assert_parse_error("* * 0 * *",
                       "cron field 3 (day-of-month): 0 is out of range 1-31");
    assert_parse_error("* * 32 * *",
                       "cron field 3 (day-of-month): 32 is out of range 1-31");
    assert_parse_error("* * * 13 *",
                       "cron field 4 (month): 13 is out of range 1-12");
    assert_parse_error("* * * * 8",
                       "cron field 5 (day-of-week): 8 is out of range 0-7");
    assert_parse_error("* * * FOO *", "cron field 4 (month): \"FOO\" is not a"
                                      " month name (JAN-DEC)");
    assert_parse_error("* * * * FUNDAY", "cron field 5 (day-of-week): "
                                         "\"FUNDAY\" is not a day name"
                                         " (SUN-SAT)");
    assert_parse_error("MON * * * *",
                       "cron field 1 (minute): \"MON\" is not a number");
    assert_parse_error("*/0 * * * *",
                       "cron field 1 (minute): step 0 is out of range 1-60");
    assert_parse_error("* */25 * * *",
                       "cron field 2 (hour): step 25 is out of range 1-24");
    assert_parse_error("*/x * * * *",
                       "cron field 1 (minute): step \"x\" is not a number");
    assert_parse_error("5-1 * * * *",
                       "cron field 1 (minute): range 5-1 goes backwards");
    assert_parse_error("1,,2 * * * *",
                       "cron field 1 (minute): empty list item");
    assert_parse_error("1, * * * *",
                       "cron field 1 (minute): empty list item");
    assert_parse_error("1- * * * *",
                       "cron field 1 (minute): a value is missing");
    assert_parse_error("* * * * 1-2-3",
                       "cron field 5 (day-of-week): \"2-3\" is not a number");
    assert_parse_error("99999999999 * * * *", "cron field 1 (minute):"
                                              " 99999999999 is out of range"
                                              " 0-59");
    assert_parse_error("1.5 * * * *",
                       "cron field 1 (minute): \"1.5\" is not a number");
}

static void test_cron_expression_errors(void **state)
{
    (void)state;
    assert_parse_error("* * *", "expected 5 fields (minute hour day-of-month"
                                " month day-of-week), got 3");
    assert_parse_error("* * * * * *", "expected 5 fields (minute hour"
                                      " day-of-month month day-of-week), got"
                                      " 6");
    assert_parse_error("", "expected 5 fields (minute hour day-of-month month"
                           " day-of-week), got 0");
    assert_parse_error("0 0 30 2 *", "never fires: no date matches its"
                                     " day-of-month, month and day-of-week"
                                     " fields");
    assert_parse_error("0 0 31 4,6,9,11 *", "never fires: no date matches its"
                                            " day-of-month, month and"
                                            " day-of-week fields");
    assert_parse_error("@sometimes", "unknown macro \"@sometimes\" (expected"
                                     " @every <duration>, @hourly, @daily,"
                                     " @weekly, @monthly or @yearly)");
    assert_parse_error("@daily 5", "unknown macro \"@daily 5\" (expected"
                                   " @every <duration>, @hourly, @daily,"
                                   " @weekly, @monthly or @yearly)");
    assert_parse_error("@every", "@every: expected a duration, e.g."
                                 " \"@every 5m\"");
    assert_parse_error("@every 5x", "@every: \"5x\" is not a duration (e.g."
                                    " 30s, 5m, 1h30m)");
    assert_parse_error("@every 5", "@every: \"5\" is not a duration (e.g."
                                   " 30s, 5m, 1h30m)");
    assert_parse_error("@every -5s", "@every: \"-5s\" is not a duration (e.g."
                                     " 30s, 5m, 1h30m)");
    assert_parse_error("@every 1h 30m", "@every: \"1h 30m\" is not a duration"
                                        " (e.g. 30s, 5m, 1h30m)");
    assert_parse_error("@every 500ms",
                       "@every 500ms: shorter than the minimum of 1s");
    assert_parse_error("@every 0", "@every 0: shorter than the minimum of 1s");
    assert_parse_error("@every 8761h",
                       "@every 8761h: longer than the maximum of 8760h");
    assert_parse_error("@every 99999999999999999999h",
                       "@every 99999999999999999999h: longer than the"
                       " maximum of 8760h");
    assert_parse_error("@every 1.0001s", "@every 1.0001s: not a whole number"
                                         " of milliseconds");
}

static void test_cron_error_buffer_may_be_small(void **state)
{
    (void)state;
    struct cron c;
    char err[8];
    assert_int_equal(cron_parse("0 25 * * *", &c, err, sizeof(err)), -EINVAL);
    assert_int_equal(strlen(err), sizeof(err) - 1);
    assert_int_equal(cron_parse("0 25 * * *", &c, NULL, 0), -EINVAL);
    assert_int_equal(cron_parse(NULL, &c, err, sizeof(err)), -EINVAL);
}

/* ---- slots ---------------------------------------------------------------- */

static void test_cron_next_is_strictly_after(void **state)
{
    (void)state;
    assert_next("*/15 * * * *", at(2026, 1, 1, 10, 7) + 30000,
                at(2026, 1, 1, 10, 15));
    assert_next("*/15 * * * *", at(2026, 1, 1, 10, 15),
                at(2026, 1, 1, 10, 30));
    assert_next("*/15 * * * *", at(2026, 1, 1, 10, 15) - 1,
                at(2026, 1, 1, 10, 15));
    assert_next("* * * * *", at(2026, 1, 1, 0, 0), at(2026, 1, 1, 0, 1));
    assert_next("30 9 * * *", at(2026, 1, 1, 9, 30), at(2026, 1, 2, 9, 30));
}

static void test_cron_next_rolls_over_day_month_year(void **state)
{
    (void)state;
    assert_next("0 0 1 1 *", at(2025, 12, 31, 23, 59), at(2026, 1, 1, 0, 0));
    assert_next("59 23 31 12 *", at(2026, 1, 1, 0, 0),
                at(2026, 12, 31, 23, 59));
    assert_next("0 0 31 * *", at(2026, 4, 1, 0, 0), at(2026, 5, 31, 0, 0));
    assert_next("0 0 * * *", at(2026, 1, 31, 12, 0), at(2026, 2, 1, 0, 0));
    assert_next("15 3 * * *", at(2026, 3, 31, 23, 0), at(2026, 4, 1, 3, 15));
    assert_next("0 12 1 */3 *", at(2026, 11, 5, 0, 0), at(2027, 1, 1, 12, 0));
}

static void test_cron_next_leap_years(void **state)
{
    (void)state;
    assert_next("0 12 29 2 *", at(2025, 3, 1, 0, 0), at(2028, 2, 29, 12, 0));
    assert_next("0 12 29 2 *", at(2024, 2, 28, 0, 0), at(2024, 2, 29, 12, 0));
    /* 2100 is not a leap year; 2000 was (divisible by 400). */
    assert_next("0 12 29 2 *", at(2096, 3, 1, 0, 0), at(2104, 2, 29, 12, 0));
    assert_next("0 12 29 2 *", at(1999, 1, 1, 0, 0), at(2000, 2, 29, 12, 0));
    assert_next("0 0 1 3 *", at(2024, 2, 28, 0, 0), at(2024, 3, 1, 0, 0));
}

static void test_cron_next_day_of_month_or_day_of_week(void **state)
{
    (void)state;
    /* Both restricted: the 13th OR a Friday. 2026-01-02 is a Friday. */
    assert_next("0 0 13 * FRI", at(2026, 1, 1, 0, 0), at(2026, 1, 2, 0, 0));
    assert_next("0 0 13 * FRI", at(2026, 1, 2, 0, 0), at(2026, 1, 9, 0, 0));
    assert_next("0 0 13 * FRI", at(2026, 1, 9, 0, 0), at(2026, 1, 13, 0, 0));
    /* One is "*": only the other restricts (Mondays only). */
    assert_next("0 0 * * MON", at(2026, 1, 1, 0, 0), at(2026, 1, 5, 0, 0));
    assert_next("0 0 13 * *", at(2026, 1, 1, 0, 0), at(2026, 1, 13, 0, 0));
    /* "*\/2" contains "*": AND, odd days that are Mondays. */
    assert_next("0 0 */2 * MON", at(2026, 1, 6, 0, 0),
                at(2026, 1, 19, 0, 0));
    assert_next("0 0 */2 * MON", at(2026, 1, 19, 0, 0),
                at(2026, 2, 9, 0, 0));
}

static void test_cron_next_macros(void **state)
{
    (void)state;
    int64_t t = at(2026, 1, 1, 10, 0); /* a Thursday */
    assert_next("@hourly", t, at(2026, 1, 1, 11, 0));
    assert_next("@daily", t, at(2026, 1, 2, 0, 0));
    assert_next("@weekly", t, at(2026, 1, 4, 0, 0));
    assert_next("@monthly", t, at(2026, 2, 1, 0, 0));
    assert_next("@yearly", t, at(2027, 1, 1, 0, 0));
}

static void test_cron_next_every_is_epoch_aligned(void **state)
{
    (void)state;
    assert_next("@every 1s", 1500, 2000);
    assert_next("@every 1s", 2000, 3000);
    assert_next("@every 1s", 0, 1000);
    assert_next("@every 1s", -1500, -1000);
    assert_next("@every 1s", -1000, 0);
    assert_next("@every 90m", 0, 5400000);
    assert_next("@every 1h", at(2026, 1, 1, 10, 30), at(2026, 1, 1, 11, 0));
    assert_next("@every 2500ms", 4999, 5000);
    assert_next("@every 2500ms", 5000, 7500);
}

static void test_cron_next_never_past_year_9999(void **state)
{
    (void)state;
    struct cron c = parse_ok("* * * * *");
    assert_true(cron_next(&c, INT64_MAX) == CRON_NEVER);
    assert_true(cron_next(&c, at(9999, 12, 31, 23, 59)) == CRON_NEVER);
    assert_int_equal(cron_next(&c, at(9999, 12, 31, 23, 58)),
                     at(9999, 12, 31, 23, 59));
    c = parse_ok("@every 1s");
    assert_true(cron_next(&c, INT64_MAX - 5) == CRON_NEVER);
    c = parse_ok("0 0 1 1 *");
    assert_int_equal(cron_next(&c, INT64_MIN), 0 - 62167219200000LL);
}

/* The crontab(5) rule for the date of @tm, with gmtime's weekday. */
static bool naive_day(const struct cron *c, const struct tm *tm)
{
    bool dom = c->mdays & (1U << tm->tm_mday);
    bool dow = c->wdays & (1U << tm->tm_wday);
    bool day = c->mday_star || c->wday_star ? dom && dow : dom || dow;
    return day && (c->months & (1U << (tm->tm_mon + 1)));
}

/* The first matching minute after @after (>= 1970), scanning minute by
 * minute through matching days and skipping the others; -1 if none
 * before @limit. */
static int64_t naive_next(const struct cron *c, int64_t after, int64_t limit)
{
    for (int64_t m = (after / 60000 + 1) * 60000; m < limit;) {
        time_t t = (time_t)(m / 1000);
        struct tm tm;
        gmtime_r(&t, &tm);
        if (!naive_day(c, &tm)) {
            m = (m / 86400000 + 1) * 86400000;
            continue;
        }
        if ((c->minutes & (1ULL << tm.tm_min)) &&
            (c->hours & (1U << tm.tm_hour)))
            return m;
        m += 60000;
    }
    return -1;
}

/* cron_next agrees with a minute-by-minute scan from many start points. */
static void test_cron_next_matches_brute_force(void **state)
{
    (void)state;
    static const char *const exprs[] = {
        "*/7 */5 * * *", "0 0 13 * 5",  "15,45 8-17 * * MON-FRI",
        "0 0 */2 * 1",   "0 6 1,15 * 0", "30 23 28-31 * *",
        "0 0 29 2 *",    "5 4 * 2 *",    "0 12 * JAN,JUL SAT,SUN",
        "*/20 1 10-20/3 * 2-4",
    };
    uint64_t rng = 42;
    int compared = 0;
    for (size_t i = 0; i < sizeof(exprs) / sizeof(exprs[0]); i++) {
        struct cron c = parse_ok(exprs[i]);
        for (int k = 0; k < 20; k++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            /* 2023-2030, any second. */
            int64_t after = at(2023, 1, 1, 0, 0) +
                            (int64_t)((rng >> 16) % (8LL * 365 * 86400)) * 1000;
            int64_t want = naive_next(&c, after, after + 5LL * 366 * 86400000);
            int64_t got = cron_next(&c, after);
            if (want < 0)
                continue; /* rarer than the scan window: skip */
            if (got != want)
                fail_msg("%s after %lld: got %lld, want %lld", exprs[i],
                         (long long)after, (long long)got, (long long)want);
            compared++;
        }
    }
    assert_true(compared >= 190);
}

/* UTC whatever the process's zone: no DST gap on 2026-03-08 in New York. */
static void test_cron_next_ignores_local_time_zone(void **state)
{
    (void)state;
    setenv("TZ", "America/New_York", 1);
    tzset();
    assert_next("30 2 * * *", at(2026, 3, 7, 3, 0), at(2026, 3, 8, 2, 30));
    assert_next("30 2 * * *", at(2026, 3, 8, 3, 0), at(2026, 3, 9, 2, 30));
    assert_next("30 6 * * *", at(2026, 11, 1, 6, 30), at(2026, 11, 2, 6, 30));
    unsetenv("TZ");
    tzset();
}

/* ---- formatting -------------------------------------------------------------- */

static void test_cron_rfc3339(void **state)
{
    (void)state;
    char buf[40];
    assert_int_equal(cron_rfc3339(0, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "1970-01-01T00:00:00Z");
    assert_int_equal(cron_rfc3339(1500, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "1970-01-01T00:00:01.500Z");
    assert_int_equal(cron_rfc3339(at(2024, 2, 29, 23, 59) + 59007, buf,
                                  sizeof(buf)),
                     0);
    assert_string_equal(buf, "2024-02-29T23:59:59.007Z");
    assert_int_equal(cron_rfc3339(-1, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
    assert_int_equal(cron_rfc3339(0, buf, 20), -ERANGE);
    assert_int_equal(cron_rfc3339(0, buf, 21), 0);
    assert_int_equal(cron_rfc3339(INT64_MAX, buf, sizeof(buf)), -ERANGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cron_parses_stars_lists_ranges_steps),
        cmocka_unit_test(test_cron_parses_names_case_insensitive),
        cmocka_unit_test(test_cron_day_of_week_seven_is_sunday),
        cmocka_unit_test(test_cron_parses_macros),
        cmocka_unit_test(test_cron_parses_every_durations),
        cmocka_unit_test(test_cron_field_errors_name_the_field),
        cmocka_unit_test(test_cron_expression_errors),
        cmocka_unit_test(test_cron_error_buffer_may_be_small),
        cmocka_unit_test(test_cron_next_is_strictly_after),
        cmocka_unit_test(test_cron_next_rolls_over_day_month_year),
        cmocka_unit_test(test_cron_next_leap_years),
        cmocka_unit_test(test_cron_next_day_of_month_or_day_of_week),
        cmocka_unit_test(test_cron_next_macros),
        cmocka_unit_test(test_cron_next_every_is_epoch_aligned),
        cmocka_unit_test(test_cron_next_never_past_year_9999),
        cmocka_unit_test(test_cron_next_matches_brute_force),
        cmocka_unit_test(test_cron_next_ignores_local_time_zone),
        cmocka_unit_test(test_cron_rfc3339),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
