/*
 * test_breaker: the circuit breaker state machine, driven with explicit
 * times (no clocks): threshold, open blocks, half-open single probe, probe
 * success and failure, success resets the count, answers that are not
 * failures, stragglers from before the breaker opened.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>

#include "breaker.h"

static struct breaker make(int threshold, int64_t open_ms)
{
    struct breaker_policy p = {.failure_threshold = threshold,
                               .open_ms = open_ms};
    struct breaker b;
    breaker_init(&b, &p);
    return b;
}

static bool allow(struct breaker *b, int64_t now)
{
    bool probe = true;
    bool ok = breaker_allow(b, now, &probe);
    assert_false(probe && !ok);
    return ok;
}

static void fail_n(struct breaker *b, int n, int64_t now)
{
    for (int i = 0; i < n; i++)
        breaker_record(b, BREAKER_FAILURE, false, now);
}

static void test_breaker_starts_closed(void **state)
{
    (void)state;
    struct breaker b = make(3, 1000);
    assert_int_equal(b.state, BREAKER_CLOSED);
    bool probe = true;
    assert_true(breaker_allow(&b, 0, &probe));
    assert_false(probe);
    assert_int_equal(breaker_wait_ms(&b, 0), -1);
}

static void test_breaker_opens_at_threshold(void **state)
{
    (void)state;
    struct breaker b = make(3, 1000);
    fail_n(&b, 2, 100);
    assert_int_equal(b.state, BREAKER_CLOSED);
    assert_true(allow(&b, 100));
    fail_n(&b, 1, 100);
    assert_int_equal(b.state, BREAKER_OPEN);
    assert_int_equal(b.failures, 3);
    assert_int_equal(breaker_wait_ms(&b, 100), 1000);
    assert_int_equal(breaker_wait_ms(&b, 600), 500);
}

static void test_breaker_open_blocks_until_open_ms(void **state)
{
    (void)state;
    struct breaker b = make(1, 1000);
    fail_n(&b, 1, 0);
    assert_false(allow(&b, 0));
    assert_false(allow(&b, 999));
    assert_int_equal(b.state, BREAKER_OPEN);
    assert_int_equal(breaker_poll(&b, 999), BREAKER_OPEN);
    assert_int_equal(breaker_poll(&b, 1000), BREAKER_HALF_OPEN);
    assert_int_equal(breaker_wait_ms(&b, 1000), -1);
}

static void test_breaker_half_open_lets_one_probe(void **state)
{
    (void)state;
    struct breaker b = make(2, 1000);
    fail_n(&b, 2, 0);
    bool probe = false;
    assert_true(breaker_allow(&b, 1000, &probe));
    assert_true(probe);
    assert_int_equal(b.state, BREAKER_HALF_OPEN);
    for (int i = 0; i < 5; i++) /* no second probe while one is out */
        assert_false(allow(&b, 1000 + i * 10000));
}

static void test_breaker_probe_success_closes(void **state)
{
    (void)state;
    struct breaker b = make(2, 1000);
    fail_n(&b, 2, 0);
    bool probe = false;
    assert_true(breaker_allow(&b, 1500, &probe));
    breaker_record(&b, BREAKER_SUCCESS, probe, 1600);
    assert_int_equal(b.state, BREAKER_CLOSED);
    assert_int_equal(b.failures, 0);
    for (int i = 0; i < 10; i++) { /* flows freely again */
        assert_true(breaker_allow(&b, 1600, &probe));
        assert_false(probe);
    }
    fail_n(&b, 1, 1700); /* and counts from zero */
    assert_int_equal(b.state, BREAKER_CLOSED);
}

static void test_breaker_probe_failure_reopens(void **state)
{
    (void)state;
    struct breaker b = make(2, 1000);
    fail_n(&b, 2, 0);
    bool probe = false;
    assert_true(breaker_allow(&b, 1000, &probe));
    breaker_record(&b, BREAKER_FAILURE, probe, 1200);
    assert_int_equal(b.state, BREAKER_OPEN);
    assert_int_equal(breaker_wait_ms(&b, 1200), 1000); /* from the failure */
    assert_false(allow(&b, 2199));
    assert_true(breaker_allow(&b, 2200, &probe));
    assert_true(probe);
}

static void test_breaker_success_resets_count(void **state)
{
    (void)state;
    struct breaker b = make(3, 1000);
    fail_n(&b, 2, 0);
    breaker_record(&b, BREAKER_SUCCESS, false, 0);
    assert_int_equal(b.failures, 0);
    fail_n(&b, 2, 0);
    assert_int_equal(b.state, BREAKER_CLOSED);
    fail_n(&b, 1, 0);
    assert_int_equal(b.state, BREAKER_OPEN);
}

static void test_breaker_4xx_does_not_count(void **state)
{
    (void)state;
    struct breaker b = make(2, 1000);
    for (int i = 0; i < 10; i++)
        breaker_record(&b, BREAKER_ANSWERED, false, 0);
    assert_int_equal(b.state, BREAKER_CLOSED);
    assert_int_equal(b.failures, 0);
    /* nor does it reset: failures around it are still consecutive */
    fail_n(&b, 1, 0);
    breaker_record(&b, BREAKER_ANSWERED, false, 0);
    fail_n(&b, 1, 0);
    assert_int_equal(b.state, BREAKER_OPEN);
}

static void test_breaker_answered_probe_closes(void **state)
{
    (void)state;
    struct breaker b = make(1, 1000);
    fail_n(&b, 1, 0);
    bool probe = false;
    assert_true(breaker_allow(&b, 1000, &probe));
    breaker_record(&b, BREAKER_ANSWERED, probe, 1000);
    assert_int_equal(b.state, BREAKER_CLOSED);
}

static void test_breaker_released_probe_goes_again(void **state)
{
    (void)state;
    struct breaker b = make(1, 1000);
    fail_n(&b, 1, 0);
    bool probe = false;
    assert_true(breaker_allow(&b, 1000, &probe));
    assert_true(probe);
    breaker_release(&b); /* e.g. the delivery was too old to send */
    assert_int_equal(b.state, BREAKER_HALF_OPEN);
    assert_true(breaker_allow(&b, 1000, &probe));
    assert_true(probe);
    assert_false(allow(&b, 1000));
}

static void test_breaker_ignores_stragglers(void **state)
{
    (void)state;
    struct breaker b = make(2, 1000);
    fail_n(&b, 2, 0);
    /* attempts that started before it opened finish while it is open */
    breaker_record(&b, BREAKER_SUCCESS, false, 10);
    fail_n(&b, 3, 20);
    assert_int_equal(b.state, BREAKER_OPEN);
    assert_int_equal(breaker_wait_ms(&b, 20), 980); /* not extended */
    /* ... or, slower than open_ms, while the probe is out */
    bool probe = false;
    assert_true(breaker_allow(&b, 1000, &probe));
    breaker_record(&b, BREAKER_FAILURE, false, 1100);
    breaker_record(&b, BREAKER_SUCCESS, false, 1100);
    assert_int_equal(b.state, BREAKER_HALF_OPEN);
    assert_false(allow(&b, 1100));
    breaker_record(&b, BREAKER_SUCCESS, probe, 1200);
    assert_int_equal(b.state, BREAKER_CLOSED);
}

static void test_breaker_threshold_below_one_never_opens(void **state)
{
    (void)state;
    struct breaker b = make(0, 1000);
    fail_n(&b, 1000, 0);
    assert_int_equal(b.state, BREAKER_CLOSED);
    assert_true(allow(&b, 0));
}

static void test_breaker_state_names(void **state)
{
    (void)state;
    assert_string_equal(breaker_state_name(BREAKER_CLOSED), "closed");
    assert_string_equal(breaker_state_name(BREAKER_OPEN), "open");
    assert_string_equal(breaker_state_name(BREAKER_HALF_OPEN), "half-open");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_breaker_starts_closed),
        cmocka_unit_test(test_breaker_opens_at_threshold),
        cmocka_unit_test(test_breaker_open_blocks_until_open_ms),
        cmocka_unit_test(test_breaker_half_open_lets_one_probe),
        cmocka_unit_test(test_breaker_probe_success_closes),
        cmocka_unit_test(test_breaker_probe_failure_reopens),
        cmocka_unit_test(test_breaker_success_resets_count),
        cmocka_unit_test(test_breaker_4xx_does_not_count),
        cmocka_unit_test(test_breaker_answered_probe_closes),
        cmocka_unit_test(test_breaker_released_probe_goes_again),
        cmocka_unit_test(test_breaker_ignores_stragglers),
        cmocka_unit_test(test_breaker_threshold_below_one_never_opens),
        cmocka_unit_test(test_breaker_state_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
