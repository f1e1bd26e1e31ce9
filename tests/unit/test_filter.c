/*
 * Unit tests for filter: the Subscriptions API dialects against events seen
 * through a table-driven lookup, absent attributes, nesting, parse errors
 * with their paths, the depth bound and printing back to JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "filter.h"

/* An event as a NULL-terminated list of attribute name, value pairs. */
struct fake_event {
    const char *const *attrs;
    int lookups;
    size_t scratch_len; /* what the last lookup was offered */
};

static const char *lookup(void *arg, const char *attr, char *scratch,
                          size_t scratch_len)
{
    struct fake_event *ev = arg;
    ev->lookups++;
    ev->scratch_len = scratch_len;
    for (size_t i = 0; ev->attrs[i]; i += 2)
        if (strcmp(ev->attrs[i], attr) == 0)
            return ev->attrs[i + 1];
    (void)scratch;
    return NULL;
}

/* Renders a numeric extension into the scratch buffer, as event.c may. */
static const char *lookup_rendered(void *arg, const char *attr, char *scratch,
                                   size_t scratch_len)
{
    (void)arg;
    if (strcmp(attr, "sequence") != 0)
        return NULL;
    snprintf(scratch, scratch_len, "%d", 42);
    return scratch;
}

static struct filter *parse(const char *text)
{
    struct config_errors e;
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    if (!j)
        fail_msg("bad test JSON: %s", jerr.text);
    config_errors_init(&e);
    struct filter *f = filter_parse(j, "f", &e);
    for (size_t i = 0; i < e.n; i++)
        print_message("  error: %s\n", e.items[i]);
    assert_non_null(f);
    assert_int_equal(e.n, 0);
    config_errors_free(&e);
    json_decref(j);
    return f;
}

static bool matches(const char *filter_json, const char *const *attrs)
{
    struct filter *f = parse(filter_json);
    struct fake_event ev = {.attrs = attrs};
    bool m = filter_match(f, lookup, &ev);
    filter_destroy(f);
    return m;
}

#define EV(...) ((const char *const[]){__VA_ARGS__, NULL})

static const char *const payment_attrs[] = {
    "type", "com.example.payment.created", "source", "/shop/eu",
    "subject", "order-1", NULL};

static const char *const *payment(void)
{
    return payment_attrs;
}

static void expect_parse_errors(const char *text, const char *const *want)
{
    struct config_errors e;
    json_t *j = json_loads(text, JSON_DECODE_ANY, NULL);
    assert_non_null(j);
    config_errors_init(&e);
    assert_null(filter_parse(j, "routes[0].filter", &e));
    size_t n = 0;
    while (want[n])
        n++;
    if (e.n != n)
        for (size_t i = 0; i < e.n; i++)
            print_message("  error: %s\n", e.items[i]);
    assert_int_equal(e.n, n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(e.items[i], want[i]);
    config_errors_free(&e);
    json_decref(j);
}

#define EXPECT_PARSE_ERRORS(text, ...)                                       \
    expect_parse_errors((text), (const char *const[]){__VA_ARGS__, NULL})

/* ---- matching ---------------------------------------------------------- */

static void test_filter_exact_matches_whole_value(void **state)
{
    (void)state;
    assert_true(matches("{\"exact\": {\"type\": "
                        "\"com.example.payment.created\"}}", payment()));
    assert_false(matches("{\"exact\": {\"type\": \"com.example.payment\"}}",
                         payment()));
    assert_false(matches("{\"exact\": {\"type\": "
                         "\"com.example.payment.created.v2\"}}", payment()));
    assert_true(matches("{\"exact\": {\"subject\": \"\"}}",
                        EV("subject", "")));
    assert_false(matches("{\"exact\": {\"subject\": \"\"}}", EV("subject", "x")));
}

static void test_filter_prefix_and_suffix(void **state)
{
    (void)state;
    assert_true(matches("{\"prefix\": {\"type\": \"com.example.\"}}",
                        payment()));
    assert_false(matches("{\"prefix\": {\"type\": \"example\"}}", payment()));
    assert_true(matches("{\"suffix\": {\"type\": \".created\"}}", payment()));
    assert_false(matches("{\"suffix\": {\"type\": \".deleted\"}}", payment()));
    /* A pattern longer than the value never matches. */
    assert_false(matches("{\"prefix\": {\"source\": \"/shop/eu/west\"}}",
                         payment()));
    assert_false(matches("{\"suffix\": {\"source\": \"big/shop/eu\"}}",
                         payment()));
    /* The whole value is both a prefix and a suffix of itself. */
    assert_true(matches("{\"suffix\": {\"source\": \"/shop/eu\"}}", payment()));
    /* An empty prefix holds for any present attribute. */
    assert_true(matches("{\"prefix\": {\"subject\": \"\"}}", payment()));
}

static void test_filter_absent_attribute_never_matches(void **state)
{
    (void)state;
    const char *const *ev = EV("type", "t");
    assert_false(matches("{\"exact\": {\"subject\": \"\"}}", ev));
    assert_false(matches("{\"prefix\": {\"subject\": \"\"}}", ev));
    assert_false(matches("{\"suffix\": {\"subject\": \"\"}}", ev));
    /* not(absent) therefore holds. */
    assert_true(matches("{\"not\": {\"exact\": {\"subject\": \"x\"}}}", ev));
}

static void test_filter_every_pair_must_hold(void **state)
{
    (void)state;
    assert_true(matches("{\"exact\": {\"type\": \"com.example.payment.created\","
                        " \"source\": \"/shop/eu\"}}", payment()));
    assert_false(matches("{\"exact\": {\"type\": "
                         "\"com.example.payment.created\", \"source\": "
                         "\"/shop/us\"}}", payment()));
    assert_false(matches("{\"prefix\": {\"type\": \"com.\", \"partitionkey\": "
                         "\"\"}}", payment()));
}

static void test_filter_case_sensitive(void **state)
{
    (void)state;
    assert_false(matches("{\"exact\": {\"subject\": \"ORDER-1\"}}", payment()));
    assert_false(matches("{\"prefix\": {\"type\": \"COM.\"}}", payment()));
    assert_false(matches("{\"suffix\": {\"type\": \".Created\"}}", payment()));
}

static void test_filter_all_any_not(void **state)
{
    (void)state;
    const char *f =
        "{\"all\": [{\"prefix\": {\"type\": \"com.example.\"}},"
        "          {\"any\": [{\"exact\": {\"source\": \"/shop/eu\"}},"
        "                     {\"exact\": {\"source\": \"/shop/us\"}}]},"
        "          {\"not\": {\"suffix\": {\"type\": \".deleted\"}}}]}";
    assert_true(matches(f, payment()));
    assert_true(matches(f, EV("type", "com.example.x", "source", "/shop/us")));
    assert_false(matches(f, EV("type", "com.example.x", "source", "/shop/cn")));
    assert_false(matches(f, EV("type", "com.example.x.deleted", "source",
                               "/shop/eu")));
    assert_false(matches(f, EV("type", "org.other", "source", "/shop/eu")));
    assert_false(matches(f, EV("source", "/shop/eu")));

    assert_true(matches("{\"not\": {\"not\": {\"exact\": {\"subject\": "
                        "\"order-1\"}}}}", payment()));
    assert_false(matches("{\"any\": [{\"exact\": {\"type\": \"a\"}}, "
                         "{\"exact\": {\"type\": \"b\"}}]}", payment()));
}

static void test_filter_all_stops_at_first_miss(void **state)
{
    (void)state;
    struct filter *f = parse("{\"all\": [{\"exact\": {\"type\": \"no\"}}, "
                             "{\"exact\": {\"source\": \"/shop/eu\"}}]}");
    struct fake_event ev = {.attrs = payment()};
    assert_false(filter_match(f, lookup, &ev));
    assert_int_equal(ev.lookups, 1);
    filter_destroy(f);

    f = parse("{\"any\": [{\"exact\": {\"source\": \"/shop/eu\"}}, "
              "{\"exact\": {\"type\": \"no\"}}]}");
    ev.lookups = 0;
    assert_true(filter_match(f, lookup, &ev));
    assert_int_equal(ev.lookups, 1);
    filter_destroy(f);
}

static void test_filter_lookup_may_render_into_scratch(void **state)
{
    (void)state;
    struct filter *f = parse("{\"exact\": {\"sequence\": \"42\"}}");
    struct fake_event ev = {.attrs = EV("type", "t")};
    assert_true(filter_match(f, lookup_rendered, NULL));
    assert_false(filter_match(f, lookup, &ev));
    assert_int_equal(ev.scratch_len, FILTER_SCRATCH_LEN);
    filter_destroy(f);
}

static void test_filter_null_matches_everything(void **state)
{
    (void)state;
    struct fake_event ev = {.attrs = EV("type", "t")};
    assert_true(filter_match(NULL, lookup, &ev));
    assert_int_equal(ev.lookups, 0);
    filter_destroy(NULL);
}

/* ---- parsing ------------------------------------------------------------ */

static void test_filter_parse_builds_tree(void **state)
{
    (void)state;
    struct filter *f = parse("{\"any\": [{\"exact\": {\"type\": \"a\", "
                             "\"source\": \"b\"}}, {\"not\": {\"suffix\": "
                             "{\"subject\": \".x\"}}}]}");
    assert_int_equal(f->kind, FILTER_ANY);
    assert_int_equal(f->n_children, 2);
    const struct filter *exact = f->children[0];
    assert_int_equal(exact->kind, FILTER_EXACT);
    assert_int_equal(exact->n_attrs, 2);
    assert_string_equal(exact->attrs[0].name, "type");
    assert_string_equal(exact->attrs[0].value, "a");
    assert_int_equal(exact->attrs[0].value_len, 1);
    assert_string_equal(exact->attrs[1].name, "source");
    const struct filter *not = f->children[1];
    assert_int_equal(not->kind, FILTER_NOT);
    assert_int_equal(not->n_children, 1);
    assert_int_equal(not->children[0]->kind, FILTER_SUFFIX);
    assert_string_equal(not->children[0]->attrs[0].value, ".x");
    filter_destroy(f);
}

static void test_filter_parse_errors_report_paths(void **state)
{
    (void)state;
    EXPECT_PARSE_ERRORS("[]", "routes[0].filter: expected an object");
    EXPECT_PARSE_ERRORS("{}", "routes[0].filter: must hold one of exact, "
                        "prefix, suffix, all, any or not");
    EXPECT_PARSE_ERRORS("{\"sql\": \"x\"}", "routes[0].filter.sql: unknown "
                        "filter dialect (expected exact, prefix, suffix, all, "
                        "any or not)");
    EXPECT_PARSE_ERRORS("{\"exact\": {\"type\": \"a\"}, \"not\": {\"exact\": "
                        "{\"type\": 1}}}",
                        "routes[0].filter.not.exact.type: expected a string",
                        "routes[0].filter: must hold exactly one dialect; "
                        "combine several with \"all\"");
    EXPECT_PARSE_ERRORS("{\"exact\": {}}", "routes[0].filter.exact: must name "
                        "at least one attribute");
    EXPECT_PARSE_ERRORS("{\"prefix\": [\"type\"]}",
                        "routes[0].filter.prefix: expected an object");
    EXPECT_PARSE_ERRORS("{\"suffix\": {\"type\": null, \"a-b\": \"x\", "
                        "\"abcdefghijklmnopqrstu\": \"x\", \"\": \"x\"}}",
                        "routes[0].filter.suffix.type: expected a string",
                        "routes[0].filter.suffix.a-b: attribute names are 1-20 "
                        "lower-case letters or digits",
                        "routes[0].filter.suffix.abcdefghijklmnopqrstu: "
                        "attribute names are 1-20 lower-case letters or digits",
                        "routes[0].filter.suffix.: attribute names are 1-20 "
                        "lower-case letters or digits");
    EXPECT_PARSE_ERRORS("{\"all\": {}}",
                        "routes[0].filter.all: expected an array");
    EXPECT_PARSE_ERRORS("{\"any\": []}",
                        "routes[0].filter.any: must hold at least one filter");
    EXPECT_PARSE_ERRORS("{\"all\": [{\"exact\": {\"type\": \"a\"}}, 3, "
                        "{\"nope\": 1}]}",
                        "routes[0].filter.all[1]: expected an object",
                        "routes[0].filter.all[2].nope: unknown filter dialect "
                        "(expected exact, prefix, suffix, all, any or not)");
    EXPECT_PARSE_ERRORS("{\"not\": [{\"exact\": {\"type\": \"a\"}}]}",
                        "routes[0].filter.not: expected an object");
}

/* Build {"not": {"not": ... {"exact": {"type": "t"}} ...}} @depth deep. */
static char *nested_nots(int depth)
{
    size_t cap = (size_t)depth * 12 + 64;
    char *s = malloc(cap);
    size_t n = 0;
    assert_non_null(s);
    for (int i = 1; i < depth; i++)
        n += (size_t)snprintf(s + n, cap - n, "{\"not\": ");
    n += (size_t)snprintf(s + n, cap - n, "{\"exact\": {\"type\": \"t\"}}");
    for (int i = 1; i < depth; i++)
        n += (size_t)snprintf(s + n, cap - n, "}");
    return s;
}

static void test_filter_depth_is_bounded(void **state)
{
    (void)state;
    char *ok = nested_nots(FILTER_MAX_DEPTH);
    struct filter *f = parse(ok);
    struct fake_event ev = {.attrs = EV("type", "t")};
    /* An even number of nots around a match is a match. */
    assert_int_equal(filter_match(f, lookup, &ev), FILTER_MAX_DEPTH % 2 == 1);
    filter_destroy(f);
    free(ok);

    char *deep = nested_nots(FILTER_MAX_DEPTH + 1);
    struct config_errors e;
    json_t *j = json_loads(deep, 0, NULL);
    config_errors_init(&e);
    assert_null(filter_parse(j, "f", &e));
    assert_int_equal(e.n, 1);
    assert_non_null(strstr(e.items[0], ": filters nest deeper than 32 levels"));
    assert_int_equal(strncmp(e.items[0], "f.not.not.", 10), 0);
    config_errors_free(&e);
    json_decref(j);
    free(deep);
}

static void test_filter_to_json_round_trip(void **state)
{
    (void)state;
    const char *text = "{\"all\": [{\"exact\": {\"type\": \"a\", \"source\": "
                       "\"b\"}}, {\"any\": [{\"prefix\": {\"subject\": "
                       "\"x\"}}, {\"not\": {\"suffix\": {\"id\": \"9\"}}}]}]}";
    struct filter *f = parse(text);
    json_t *got = filter_to_json(f);
    json_t *want = json_loads(text, 0, NULL);
    assert_non_null(got);
    assert_true(json_equal(got, want));
    json_decref(got);
    json_decref(want);
    filter_destroy(f);
    assert_null(filter_to_json(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_filter_exact_matches_whole_value),
        cmocka_unit_test(test_filter_prefix_and_suffix),
        cmocka_unit_test(test_filter_absent_attribute_never_matches),
        cmocka_unit_test(test_filter_every_pair_must_hold),
        cmocka_unit_test(test_filter_case_sensitive),
        cmocka_unit_test(test_filter_all_any_not),
        cmocka_unit_test(test_filter_all_stops_at_first_miss),
        cmocka_unit_test(test_filter_lookup_may_render_into_scratch),
        cmocka_unit_test(test_filter_null_matches_everything),
        cmocka_unit_test(test_filter_parse_builds_tree),
        cmocka_unit_test(test_filter_parse_errors_report_paths),
        cmocka_unit_test(test_filter_depth_is_bounded),
        cmocka_unit_test(test_filter_to_json_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
