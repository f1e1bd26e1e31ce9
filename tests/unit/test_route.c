/*
 * Unit tests for route: fan-out to distinct peers in order of first
 * appearance, the catch-all route, events that match nothing, and
 * partition-key ordering per peer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "route.h"

struct fake_event {
    const char *type;
    const char *source;
};

static const char *lookup(void *arg, const char *attr, char *scratch,
                          size_t scratch_len)
{
    const struct fake_event *ev = arg;
    (void)scratch;
    (void)scratch_len;
    if (strcmp(attr, "type") == 0)
        return ev->type;
    if (strcmp(attr, "source") == 0)
        return ev->source;
    return NULL;
}

static struct config *parse_ok(const char *json)
{
    struct config_errors e;
    config_errors_init(&e);
    struct config *cfg = config_parse(json, strlen(json), "test.json", &e);
    for (size_t i = 0; i < e.n; i++)
        print_message("  error: %s\n", e.items[i]);
    assert_non_null(cfg);
    config_errors_free(&e);
    return cfg;
}

/* Peers a=0, b=1, c=2, d=3. */
#define PEERS                                                                \
    "\"peers\": {\"a\": {\"type\": \"stdout\"}, \"b\": {\"type\": "          \
    "\"stdout\"}, \"c\": {\"type\": \"stdout\"}, \"d\": {\"type\": "         \
    "\"stdout\"}}"

static const char FANOUT[] =
    "{" PEERS ", \"routes\": ["
    "{\"name\": \"payments\", \"filter\": {\"prefix\": {\"type\": "
    "\"pay.\"}}, \"to\": [\"c\", \"a\"], \"ordering\": \"partitionkey\"},"
    "{\"name\": \"eu\", \"filter\": {\"exact\": {\"source\": \"/eu\"}}, "
    "\"to\": [\"a\", \"b\", \"c\"]},"
    "{\"name\": \"refunds\", \"filter\": {\"suffix\": {\"type\": "
    "\".refund\"}}, \"to\": [\"b\"]}]}";

static void test_route_fanout_distinct_peers(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(FANOUT);
    size_t out[4];
    struct fake_event ev = {"pay.refund", "/eu"};
    /* All three routes match: c, a from the first, b from the second. */
    assert_int_equal(route_match(cfg, lookup, &ev, out), 3);
    assert_int_equal(out[0], 2);
    assert_int_equal(out[1], 0);
    assert_int_equal(out[2], 1);
    config_destroy(cfg);
}

static void test_route_only_matching_routes_contribute(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(FANOUT);
    size_t out[4];
    struct fake_event us_payment = {"pay.created", "/us"};
    assert_int_equal(route_match(cfg, lookup, &us_payment, out), 2);
    assert_int_equal(out[0], 2);
    assert_int_equal(out[1], 0);

    struct fake_event eu_other = {"user.created", "/eu"};
    assert_int_equal(route_match(cfg, lookup, &eu_other, out), 3);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 1);
    assert_int_equal(out[2], 2);

    struct fake_event refund = {"shop.refund", NULL};
    assert_int_equal(route_match(cfg, lookup, &refund, out), 1);
    assert_int_equal(out[0], 1);
    config_destroy(cfg);
}

static void test_route_no_match_returns_zero(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(FANOUT);
    size_t out[4] = {99, 99, 99, 99};
    struct fake_event ev = {"user.created", "/us"};
    assert_int_equal(route_match(cfg, lookup, &ev, out), 0);
    assert_int_equal(out[0], 99);
    config_destroy(cfg);
}

static void test_route_catch_all_without_filter(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(
        "{" PEERS ", \"routes\": [{\"filter\": {\"exact\": {\"type\": "
        "\"x\"}}, \"to\": [\"d\"]}, {\"to\": [\"b\", \"d\"]}]}");
    size_t out[4];
    struct fake_event x = {"x", NULL};
    struct fake_event other = {"y", "/s"};
    assert_int_equal(route_match(cfg, lookup, &x, out), 2);
    assert_int_equal(out[0], 3);
    assert_int_equal(out[1], 1);
    assert_int_equal(route_match(cfg, lookup, &other, out), 2);
    assert_int_equal(out[0], 1);
    assert_int_equal(out[1], 3);
    config_destroy(cfg);
}

static void test_route_embedded_default_sends_all_to_stdout(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(CONFIG_DEFAULT_JSON);
    size_t out[1];
    struct fake_event ev = {"anything", "/anywhere"};
    assert_int_equal(route_match(cfg, lookup, &ev, out), 1);
    assert_int_equal(out[0], config_peer_index(cfg, "stdout"));
    assert_false(route_ordered(cfg, lookup, &ev, out[0]));
    config_destroy(cfg);
}

static void test_route_empty_config_matches_nothing(void **state)
{
    (void)state;
    struct config *cfg = parse_ok("{}");
    struct fake_event ev = {"t", "/s"};
    assert_int_equal(route_match(cfg, lookup, &ev, NULL), 0);
    assert_false(route_ordered(cfg, lookup, &ev, 0));
    config_destroy(cfg);
}

static void test_route_ordered_partitionkey(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(FANOUT);
    struct fake_event pay = {"pay.created", "/eu"};
    struct fake_event other = {"user.created", "/eu"};
    /* The ordered route targets c and a, and only when it matches. */
    assert_true(route_ordered(cfg, lookup, &pay, 0));
    assert_true(route_ordered(cfg, lookup, &pay, 2));
    assert_false(route_ordered(cfg, lookup, &pay, 1));
    assert_false(route_ordered(cfg, lookup, &pay, 3));
    assert_false(route_ordered(cfg, lookup, &other, 0));
    assert_false(route_ordered(cfg, lookup, &other, 2));
    config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_fanout_distinct_peers),
        cmocka_unit_test(test_route_only_matching_routes_contribute),
        cmocka_unit_test(test_route_no_match_returns_zero),
        cmocka_unit_test(test_route_catch_all_without_filter),
        cmocka_unit_test(test_route_embedded_default_sends_all_to_stdout),
        cmocka_unit_test(test_route_empty_config_matches_nothing),
        cmocka_unit_test(test_route_ordered_partitionkey),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
