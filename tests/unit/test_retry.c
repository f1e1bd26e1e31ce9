/*
 * test_retry: the delivery policy's pure functions, with time and
 * randomness passed in so every bound is asserted exactly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>

#include "retry.h"

/* 1994-11-06T08:49:37Z, the RFC's example date. */
#define RFC_DATE_S INT64_C(784111777)

static struct retry_policy policy(int64_t initial, int64_t max, double mult,
                                  enum retry_jitter jitter)
{
    struct retry_policy p = {
        .max_attempts = 5,
        .initial_delay_ms = initial,
        .max_delay_ms = max,
        .multiplier = mult,
        .jitter = jitter,
        .max_age_s = 60,
    };
    return p;
}

static void test_retry_classification_table(void **state)
{
    (void)state;
    static const struct {
        int transport;
        long status;
        enum deliver_result want;
    } rows[] = {
        {0, 200, DELIVER_OK},
        {0, 201, DELIVER_OK},
        {0, 202, DELIVER_OK},
        {0, 204, DELIVER_OK},
        {0, 299, DELIVER_OK},
        {0, 408, DELIVER_RETRY},
        {0, 429, DELIVER_RETRY},
        {0, 500, DELIVER_RETRY},
        {0, 502, DELIVER_RETRY},
        {0, 503, DELIVER_RETRY},
        {0, 599, DELIVER_RETRY},
        {0, 0, DELIVER_RETRY},
        {0, 301, DELIVER_DEAD},
        {0, 400, DELIVER_DEAD},
        {0, 401, DELIVER_DEAD},
        {0, 403, DELIVER_DEAD},
        {0, 404, DELIVER_DEAD},
        {0, 409, DELIVER_DEAD},
        {0, 410, DELIVER_DEAD},
        {0, 413, DELIVER_DEAD},
        {0, 422, DELIVER_DEAD},
        {0, 600, DELIVER_DEAD},
        /* also "Received HTTP/0.9": a peer speaking something else */
        {CURLE_UNSUPPORTED_PROTOCOL, 0, DELIVER_RETRY},
        {CURLE_URL_MALFORMAT, 0, DELIVER_DEAD},
        {CURLE_COULDNT_CONNECT, 0, DELIVER_RETRY},
        {CURLE_COULDNT_RESOLVE_HOST, 0, DELIVER_RETRY},
        {CURLE_OPERATION_TIMEDOUT, 0, DELIVER_RETRY},
        {CURLE_SSL_CONNECT_ERROR, 0, DELIVER_RETRY},
        {CURLE_PEER_FAILED_VERIFICATION, 0, DELIVER_RETRY},
        {CURLE_SEND_ERROR, 0, DELIVER_RETRY},
        {CURLE_RECV_ERROR, 0, DELIVER_RETRY},
        {CURLE_GOT_NOTHING, 0, DELIVER_RETRY},
        /* A transport error wins over a status seen before it. */
        {CURLE_OPERATION_TIMEDOUT, 200, DELIVER_RETRY},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        enum deliver_result got = retry_classify(rows[i].transport,
                                                 rows[i].status);
        if (got != rows[i].want)
            fail_msg("row %zu: transport %d status %ld: got %d want %d", i,
                     rows[i].transport, rows[i].status, (int)got,
                     (int)rows[i].want);
    }
}

static void test_retry_none_is_exact(void **state)
{
    (void)state;
    struct retry_policy p = policy(100, 100000, 2.0, JITTER_NONE);
    assert_int_equal(retry_backoff_ms(&p, 1, 0), 100);
    assert_int_equal(retry_backoff_ms(&p, 1, UINT64_MAX), 100);
    assert_int_equal(retry_backoff_ms(&p, 1, 12345), 100);
}

static void test_retry_multiplier_growth(void **state)
{
    (void)state;
    struct retry_policy p = policy(100, 100000, 2.0, JITTER_NONE);
    assert_int_equal(retry_backoff_ms(&p, 1, 0), 100);
    assert_int_equal(retry_backoff_ms(&p, 2, 0), 200);
    assert_int_equal(retry_backoff_ms(&p, 3, 0), 400);
    assert_int_equal(retry_backoff_ms(&p, 4, 0), 800);
    p.multiplier = 1.5;
    assert_int_equal(retry_backoff_ms(&p, 3, 0), 225);
    p.multiplier = 1.0;
    assert_int_equal(retry_backoff_ms(&p, 10, 0), 100);
    /* failed < 1 is treated as the first failure */
    p.multiplier = 2.0;
    assert_int_equal(retry_backoff_ms(&p, 0, 0), 100);
}

static void test_retry_caps_at_max_delay(void **state)
{
    (void)state;
    struct retry_policy p = policy(1000, 5000, 2.0, JITTER_NONE);
    assert_int_equal(retry_backoff_ms(&p, 3, 0), 4000);
    assert_int_equal(retry_backoff_ms(&p, 4, 0), 5000);
    assert_int_equal(retry_backoff_ms(&p, 20, 0), 5000);
    p.initial_delay_ms = 0;
    assert_int_equal(retry_backoff_ms(&p, 20, 0), 0);
}

static void test_retry_huge_attempts_do_not_overflow(void **state)
{
    (void)state;
    struct retry_policy p = policy(1000, INT64_MAX, 10.0, JITTER_NONE);
    assert_int_equal(retry_backoff_ms(&p, INT_MAX, 0), INT64_MAX);
    assert_true(retry_backoff_ms(&p, 1000, 0) > 0);
    p.max_delay_ms = 300000;
    assert_int_equal(retry_backoff_ms(&p, INT_MAX, 0), 300000);
    p.jitter = JITTER_FULL;
    assert_int_equal(retry_backoff_ms(&p, INT_MAX, UINT64_MAX), 300000);
    p.jitter = JITTER_EQUAL;
    assert_int_equal(retry_backoff_ms(&p, INT_MAX, 0), 150000);
    p.max_delay_ms = INT64_MAX;
    p.jitter = JITTER_FULL;
    assert_int_equal(retry_backoff_ms(&p, INT_MAX, UINT64_MAX), INT64_MAX);
    assert_int_equal(retry_next_delay_ms(&p, INT_MAX, INT64_MAX, 0),
                     INT64_MAX);
}

static void test_retry_full_jitter_bounds(void **state)
{
    (void)state;
    struct retry_policy p = policy(1000, 60000, 2.0, JITTER_FULL);
    assert_int_equal(retry_backoff_ms(&p, 3, 0), 0);
    assert_int_equal(retry_backoff_ms(&p, 3, UINT64_MAX), 4000);
    for (uint64_t r = 1; r != 0; r <<= 1) {
        int64_t d = retry_backoff_ms(&p, 3, r * 0x9e3779b97f4a7c15ULL);
        assert_in_range(d, 0, 4000);
    }
    /* the midpoint draws the middle of the range */
    int64_t mid = retry_backoff_ms(&p, 3, UINT64_MAX / 2);
    assert_in_range(mid, 1999, 2001);
}

static void test_retry_equal_jitter_bounds(void **state)
{
    (void)state;
    struct retry_policy p = policy(1000, 60000, 2.0, JITTER_EQUAL);
    assert_int_equal(retry_backoff_ms(&p, 3, 0), 2000);
    assert_int_equal(retry_backoff_ms(&p, 3, UINT64_MAX), 4000);
    for (uint64_t r = 1; r != 0; r <<= 1) {
        int64_t d = retry_backoff_ms(&p, 3, r * 0x9e3779b97f4a7c15ULL);
        assert_in_range(d, 2000, 4000);
    }
    /* odd caps keep the upper bound exact */
    p.initial_delay_ms = 7;
    assert_int_equal(retry_backoff_ms(&p, 1, 0), 3);
    assert_int_equal(retry_backoff_ms(&p, 1, UINT64_MAX), 7);
}

static void test_retry_after_seconds(void **state)
{
    (void)state;
    int64_t d = -1;
    assert_int_equal(retry_after_parse("120", 0, &d), 0);
    assert_int_equal(d, 120000);
    assert_int_equal(retry_after_parse("  5 \r\n", 0, &d), 0);
    assert_int_equal(d, 5000);
    assert_int_equal(retry_after_parse("0", 0, &d), 0);
    assert_int_equal(d, 0);
    /* absurd values saturate instead of wrapping negative */
    assert_int_equal(retry_after_parse("99999999999999999999999", 0, &d), 0);
    assert_true(d > 0);
}

static void test_retry_after_imf_fixdate(void **state)
{
    (void)state;
    int64_t d = -1;
    int64_t now = (RFC_DATE_S - 10) * 1000;
    assert_int_equal(
        retry_after_parse("Sun, 06 Nov 1994 08:49:37 GMT", now, &d), 0);
    assert_int_equal(d, 10000);
}

static void test_retry_after_rfc850(void **state)
{
    (void)state;
    int64_t d = -1;
    int64_t now = (RFC_DATE_S - 10) * 1000 + 500;
    assert_int_equal(
        retry_after_parse("Sunday, 06-Nov-94 08:49:37 GMT", now, &d), 0);
    assert_int_equal(d, 9500);
}

static void test_retry_after_asctime(void **state)
{
    (void)state;
    int64_t d = -1;
    int64_t now = (RFC_DATE_S - 60) * 1000;
    assert_int_equal(retry_after_parse("Sun Nov  6 08:49:37 1994", now, &d),
                     0);
    assert_int_equal(d, 60000);
}

static void test_retry_after_past_date_is_zero(void **state)
{
    (void)state;
    int64_t d = -1;
    int64_t now = (RFC_DATE_S + 3600) * 1000;
    assert_int_equal(
        retry_after_parse("Sun, 06 Nov 1994 08:49:37 GMT", now, &d), 0);
    assert_int_equal(d, 0);
}

static void test_retry_after_garbage_rejected(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "   ",
        "soon",
        "-5",
        "+5",
        "1.5",
        "5s",
        "5 6",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, 06 Nov 1994 08:49:37 GMT and more",
        "Sun, 32 Nov 1994 08:49:37 GMT",
        "2026-11-22T10:00:00Z",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t d = 42;
        if (retry_after_parse(bad[i], 0, &d) != -EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_int_equal(d, 42);
    }
    int64_t d = 42;
    assert_int_equal(retry_after_parse(NULL, 0, &d), -EINVAL);
}

static void test_retry_next_delay_is_max_of_backoff_and_retry_after(
    void **state)
{
    (void)state;
    struct retry_policy p = policy(1000, 30000, 2.0, JITTER_NONE);
    /* none given: the backoff */
    assert_int_equal(retry_next_delay_ms(&p, 2, -1, 0), 2000);
    /* smaller Retry-After: the backoff still wins */
    assert_int_equal(retry_next_delay_ms(&p, 2, 500, 0), 2000);
    /* larger Retry-After raises the delay */
    assert_int_equal(retry_next_delay_ms(&p, 2, 7000, 0), 7000);
    /* ...but never past max_delay_ms */
    assert_int_equal(retry_next_delay_ms(&p, 2, 3600000, 0), 30000);
    /* with full jitter a low draw is raised to Retry-After */
    p.jitter = JITTER_FULL;
    assert_int_equal(retry_next_delay_ms(&p, 2, 1500, 0), 1500);
}

static void test_retry_give_up_by_attempts(void **state)
{
    (void)state;
    struct retry_policy p = policy(1000, 30000, 2.0, JITTER_NONE);
    char why[80];
    assert_false(retry_give_up(&p, 4, 0, 1000, why, sizeof(why)));
    assert_string_equal(why, "");
    assert_true(retry_give_up(&p, 5, 0, 1000, why, sizeof(why)));
    assert_string_equal(why, "max_attempts (5) reached");
    assert_true(retry_give_up(&p, INT_MAX, 0, 1000, why, sizeof(why)));
}

static void test_retry_give_up_by_age(void **state)
{
    (void)state;
    struct retry_policy p = policy(1000, 30000, 2.0, JITTER_NONE);
    char why[80];
    int64_t received = 1000000;
    assert_false(
        retry_give_up(&p, 1, received, received + 60000, why, sizeof(why)));
    assert_true(
        retry_give_up(&p, 1, received, received + 60001, why, sizeof(why)));
    assert_string_equal(why, "max_age_s (60) exceeded");
    /* huge ages and times saturate */
    p.max_age_s = INT64_MAX;
    assert_false(retry_give_up(&p, 1, INT64_MAX - 5, INT64_MAX, why,
                               sizeof(why)));
    /* a NULL buffer is allowed */
    assert_true(retry_give_up(&p, 9, 0, 0, NULL, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry_classification_table),
        cmocka_unit_test(test_retry_none_is_exact),
        cmocka_unit_test(test_retry_multiplier_growth),
        cmocka_unit_test(test_retry_caps_at_max_delay),
        cmocka_unit_test(test_retry_huge_attempts_do_not_overflow),
        cmocka_unit_test(test_retry_full_jitter_bounds),
        cmocka_unit_test(test_retry_equal_jitter_bounds),
        cmocka_unit_test(test_retry_after_seconds),
        cmocka_unit_test(test_retry_after_imf_fixdate),
        cmocka_unit_test(test_retry_after_rfc850),
        cmocka_unit_test(test_retry_after_asctime),
        cmocka_unit_test(test_retry_after_past_date_is_zero),
        cmocka_unit_test(test_retry_after_garbage_rejected),
        cmocka_unit_test(
            test_retry_next_delay_is_max_of_backoff_and_retry_after),
        cmocka_unit_test(test_retry_give_up_by_attempts),
        cmocka_unit_test(test_retry_give_up_by_age),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
