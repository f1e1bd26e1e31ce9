/* Unit tests for metrics: counters and the exposition text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "metrics.h"

static int setup(void **state)
{
    (void)state;
    metrics_init();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    metrics_shutdown();
    return 0;
}

static char *render(struct buf *b)
{
    buf_init(b, 1 << 20);
    assert_int_equal(metrics_render(b), 0);
    return b->data;
}

static void test_metrics_counters_render_with_labels(void **state)
{
    (void)state;
    metrics_received(METRICS_MODE_BATCH, 3);
    metrics_received(METRICS_MODE_BINARY, 1);
    metrics_rejected(METRICS_REJECT_INVALID_JSON);
    metrics_duplicates(2);
    struct buf b;
    char *text = render(&b);
    assert_non_null(strstr(text, "ferry_events_received_total{mode=\"batch\"} 3\n"));
    assert_non_null(strstr(text, "ferry_events_received_total{mode=\"binary\"} 1\n"));
    assert_non_null(strstr(text, "ferry_events_received_total{mode=\"structured\"} 0\n"));
    assert_non_null(strstr(text, "ferry_events_rejected_total{reason=\"invalid_json\"} 1\n"));
    assert_non_null(strstr(text, "ferry_events_duplicate_total 2\n"));
    assert_non_null(strstr(text, "# TYPE ferry_events_received_total counter\n"));
    assert_non_null(strstr(text, "ferry_build_info{version=\"" FERRY_VERSION "\"} 1\n"));
    buf_free(&b);
}

static void test_metrics_peer_registry_is_stable(void **state)
{
    (void)state;
    struct peer_metrics *a = metrics_peer("inventory");
    struct peer_metrics *b = metrics_peer("shipping");
    assert_non_null(a);
    assert_ptr_not_equal(a, b);
    assert_ptr_equal(metrics_peer("inventory"), a);
    atomic_fetch_add(&a->success, 5);
    atomic_fetch_add(&b->dead, 1);
    struct buf out;
    char *text = render(&out);
    assert_non_null(strstr(text, "ferry_deliveries_total{peer=\"inventory\",outcome=\"success\"} 5\n"));
    assert_non_null(strstr(text, "ferry_deliveries_total{peer=\"shipping\",outcome=\"dead\"} 1\n"));
    assert_non_null(strstr(text, "ferry_breaker_open{peer=\"shipping\"} 0\n"));
    buf_free(&out);
}

static void test_metrics_histogram_is_cumulative(void **state)
{
    (void)state;
    struct peer_metrics *pm = metrics_peer("p");
    metrics_observe_duration(pm, 500);      /* 0.5 ms -> le 0.001 */
    metrics_observe_duration(pm, 20000);    /* 20 ms -> le 0.025 */
    metrics_observe_duration(pm, 60000000); /* 60 s -> only +Inf */
    struct buf b;
    char *text = render(&b);
    assert_non_null(strstr(text, "ferry_delivery_duration_seconds_bucket{peer=\"p\",le=\"0.001\"} 1\n"));
    assert_non_null(strstr(text, "ferry_delivery_duration_seconds_bucket{peer=\"p\",le=\"0.01\"} 1\n"));
    assert_non_null(strstr(text, "ferry_delivery_duration_seconds_bucket{peer=\"p\",le=\"0.025\"} 2\n"));
    assert_non_null(strstr(text, "ferry_delivery_duration_seconds_bucket{peer=\"p\",le=\"10\"} 2\n"));
    assert_non_null(strstr(text, "ferry_delivery_duration_seconds_bucket{peer=\"p\",le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(text, "ferry_delivery_duration_seconds_count{peer=\"p\"} 3\n"));
    assert_non_null(strstr(text, "ferry_delivery_duration_seconds_sum{peer=\"p\"} 60.020500\n"));
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_metrics_counters_render_with_labels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_peer_registry_is_stable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_histogram_is_cumulative, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
