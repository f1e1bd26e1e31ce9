/* Unit tests for health: liveness and readiness decisions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "health.h"

static struct health_inputs healthy(void)
{
    return (struct health_inputs){.draining = false, .spool_writable = true,
                                  .spool_bytes = 1000, .spool_max_bytes = 10000,
                                  .dispatcher_idle_ms = 5, .writer_idle_ms = 5};
}

static int ready(const struct health_inputs *in, char *out, size_t n)
{
    struct buf b;
    buf_init(&b, 4096);
    int status = health_ready(in, &b);
    strncpy(out, b.data, n - 1);
    out[n - 1] = '\0';
    buf_free(&b);
    return status;
}

static void test_health_ready_when_all_good(void **state)
{
    (void)state;
    struct health_inputs in = healthy();
    char body[512];
    assert_int_equal(ready(&in, body, sizeof(body)), 200);
    assert_string_equal(body, "{\"status\":\"ok\"}");
}

static void test_health_not_ready_while_draining(void **state)
{
    (void)state;
    struct health_inputs in = healthy();
    in.draining = true;
    char body[512];
    assert_int_equal(ready(&in, body, sizeof(body)), 503);
    assert_non_null(strstr(body, "shutting down"));
}

static void test_health_not_ready_lists_every_reason(void **state)
{
    (void)state;
    struct health_inputs in = healthy();
    in.spool_writable = false;
    in.disk_low = true;
    in.spool_bytes = in.spool_max_bytes;
    in.dispatcher_idle_ms = HEALTH_STALL_MS + 1;
    char body[512];
    assert_int_equal(ready(&in, body, sizeof(body)), 503);
    assert_non_null(strstr(body, "spool not writable"));
    assert_non_null(strstr(body, "disk nearly full"));
    assert_non_null(strstr(body, "spool full"));
    assert_non_null(strstr(body, "dispatcher not running"));
    assert_null(strstr(body, "shutting down"));
}

static void test_health_live_ignores_readiness_only_reasons(void **state)
{
    (void)state;
    struct health_inputs in = healthy();
    in.draining = true;
    in.spool_writable = false;
    struct buf b;
    buf_init(&b, 4096);
    assert_int_equal(health_live(&in, &b), 200);
    buf_reset(&b);
    in.writer_idle_ms = HEALTH_STALL_MS + 1;
    assert_int_equal(health_live(&in, &b), 503);
    assert_non_null(strstr(b.data, "spool writer loop stalled"));
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_ready_when_all_good),
        cmocka_unit_test(test_health_not_ready_while_draining),
        cmocka_unit_test(test_health_not_ready_lists_every_reason),
        cmocka_unit_test(test_health_live_ignores_readiness_only_reasons),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
