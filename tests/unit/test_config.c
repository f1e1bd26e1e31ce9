/*
 * Unit tests for config: defaults, the contract's example, every kind of
 * error with its exact path text, error collection and order, environment
 * overrides, the masked dump and file loading.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "config.h"
#include "filter.h"

#define GOOD_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

/* The example of CONTRACT.md, with the signing_secret pair as a parameter. */
#define CONTRACT_EXAMPLE(SECRET_PAIR)                                        \
    "{\n"                                                                    \
    "  \"listen\": \"127.0.0.1:8080\",\n"                                    \
    "  \"admin\":  { \"listen\": \"127.0.0.1:8081\", \"token\": null },\n"   \
    "  \"log\":    { \"level\": \"info\", \"format\": \"json\" },\n"         \
    "  \"ingest\": { \"token\": null, \"max_body_bytes\": 1048576, "         \
    "\"max_batch\": 1000, \"dedupe_window_s\": 600 },\n"                     \
    "  \"spool\":  { \"dir\": \"./ferry-data\", \"max_bytes\": 1073741824 },\n" \
    "  \"retry\":  { \"max_attempts\": 12, \"initial_delay_ms\": 1000, "     \
    "\"max_delay_ms\": 300000,\n"                                            \
    "              \"multiplier\": 2.0, \"jitter\": \"full\", "              \
    "\"max_age_s\": 86400 },\n"                                              \
    "  \"peers\": {\n"                                                       \
    "    \"inventory\": { \"url\": \"http://inventory:8080/events\", "       \
    "\"mode\": \"binary\", \"timeout_ms\": 10000,\n"                         \
    "                   \"max_in_flight\": 32, \"headers\": { \"X-Env\": "   \
    "\"prod\" },\n"                                                          \
    "                   " SECRET_PAIR "\"retry\": { \"max_attempts\": 5 },\n" \
    "                   \"breaker\": { \"failure_threshold\": 5, "           \
    "\"open_ms\": 30000 } },\n"                                              \
    "    \"audit\":     { \"type\": \"file\", \"path\": "                    \
    "\"/var/log/ferry/audit.jsonl\" },\n"                                    \
    "    \"console\":   { \"type\": \"stdout\" }\n"                          \
    "  },\n"                                                                 \
    "  \"routes\": [\n"                                                      \
    "    { \"name\": \"payments\", \"filter\": { \"prefix\": { \"type\": "   \
    "\"com.example.payment.\" } },\n"                                        \
    "      \"to\": [\"inventory\", \"audit\"], \"ordering\": "               \
    "\"partitionkey\" }\n"                                                   \
    "  ],\n"                                                                 \
    "  \"schedules\": [\n"                                                   \
    "    { \"name\": \"tick\", \"cron\": \"*/5 * * * *\",\n"                 \
    "      \"event\": { \"type\": \"com.example.tick\", \"source\": "        \
    "\"/ferry/schedules/tick\", \"data\": {} } }\n"                          \
    "  ]\n"                                                                  \
    "}\n"

/* ---- helpers ----------------------------------------------------------- */

static void print_errors(const struct config_errors *e)
{
    for (size_t i = 0; i < e->n; i++)
        print_message("  error: %s\n", e->items[i]);
}

/* Parse @json, which must be valid. */
static struct config *parse_ok(const char *json)
{
    struct config_errors e;
    config_errors_init(&e);
    struct config *cfg = config_parse(json, strlen(json), "test.json", &e);
    print_errors(&e);
    assert_non_null(cfg);
    assert_int_equal(e.n, 0);
    config_errors_free(&e);
    return cfg;
}

static void assert_errors(const struct config_errors *e,
                          const char *const *want)
{
    size_t n = 0;
    while (want[n])
        n++;
    if (e->n != n)
        print_errors(e);
    assert_int_equal(e->n, n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(e->items[i], want[i]);
}

/* Parse @json, which must fail with exactly the errors @want, in order. */
static void expect_errors(const char *json, const char *const *want)
{
    struct config_errors e;
    config_errors_init(&e);
    struct config *cfg = config_parse(json, strlen(json), "test.json", &e);
    assert_null(cfg);
    assert_errors(&e, want);
    config_errors_free(&e);
}

#define EXPECT_ERRORS(json, ...)                                             \
    expect_errors((json), (const char *const[]){__VA_ARGS__, NULL})

static void assert_default_retry(const struct retry_policy *r)
{
    assert_int_equal(r->max_attempts, 12);
    assert_int_equal(r->initial_delay_ms, 1000);
    assert_int_equal(r->max_delay_ms, 300000);
    assert_true(r->multiplier == 2.0);
    assert_int_equal(r->jitter, JITTER_FULL);
    assert_int_equal(r->max_age_s, 86400);
}

/* ---- defaults ---------------------------------------------------------- */

static void test_config_empty_doc_has_defaults(void **state)
{
    (void)state;
    struct config *cfg = parse_ok("{}");
    assert_string_equal(cfg->listen, "127.0.0.1:8080");
    assert_null(cfg->tls.cert_file);
    assert_null(cfg->tls.key_file);
    assert_string_equal(cfg->admin.listen, "127.0.0.1:8081");
    assert_null(cfg->admin.token);
    assert_null(cfg->admin.tls.cert_file);
    assert_int_equal(cfg->log.level, LOG_INFO);
    assert_int_equal(cfg->log.format, LOG_FORMAT_JSON);
    assert_null(cfg->ingest.token);
    assert_int_equal(cfg->ingest.max_body_bytes, 1048576);
    assert_int_equal(cfg->ingest.max_batch, 1000);
    assert_int_equal(cfg->ingest.dedupe_window_s, 600);
    assert_string_equal(cfg->spool.dir, "./ferry-data");
    assert_int_equal(cfg->spool.max_bytes, 1073741824);
    assert_default_retry(&cfg->retry);
    assert_int_equal(cfg->drain_timeout_ms, 10000);
    assert_int_equal(cfg->n_peers, 0);
    assert_int_equal(cfg->n_routes, 0);
    assert_int_equal(cfg->n_schedules, 0);
    config_destroy(cfg);
}

static void test_config_embedded_default_routes_all_to_stdout(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(CONFIG_DEFAULT_JSON);
    assert_string_equal(cfg->listen, "127.0.0.1:8080");
    assert_string_equal(cfg->spool.dir, "./ferry-data");
    assert_int_equal(cfg->n_peers, 1);
    assert_string_equal(cfg->peers[0].name, "stdout");
    assert_int_equal(cfg->peers[0].type, PEER_STDOUT);
    assert_default_retry(&cfg->peers[0].retry);
    assert_int_equal(cfg->n_routes, 1);
    assert_string_equal(cfg->routes[0].name, "default");
    assert_null(cfg->routes[0].filter);
    assert_int_equal(cfg->routes[0].n_to, 1);
    assert_int_equal(cfg->routes[0].to[0], 0);
    assert_int_equal(cfg->routes[0].ordering, ORDERING_NONE);
    config_destroy(cfg);
}

static void test_config_contract_example_parses(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(CONTRACT_EXAMPLE(
        "\"signing_secret\": \"" GOOD_SECRET "\", "));
    assert_default_retry(&cfg->retry);
    assert_int_equal(cfg->n_peers, 3);

    const struct peer_config *inv = &cfg->peers[0];
    assert_string_equal(inv->name, "inventory");
    assert_int_equal(inv->type, PEER_HTTP);
    assert_string_equal(inv->url, "http://inventory:8080/events");
    assert_int_equal(inv->mode, PEER_MODE_BINARY);
    assert_int_equal(inv->timeout_ms, 10000);
    assert_int_equal(inv->max_in_flight, 32);
    assert_int_equal(inv->n_headers, 1);
    assert_string_equal(inv->headers[0].name, "X-Env");
    assert_string_equal(inv->headers[0].value, "prod");
    assert_string_equal(inv->signing_secret, GOOD_SECRET);
    assert_int_equal(inv->retry.max_attempts, 5);
    assert_int_equal(inv->retry.max_delay_ms, 300000);
    assert_int_equal(inv->breaker.failure_threshold, 5);
    assert_int_equal(inv->breaker.open_ms, 30000);
    assert_null(inv->tls.ca_file);

    assert_string_equal(cfg->peers[1].name, "audit");
    assert_int_equal(cfg->peers[1].type, PEER_FILE);
    assert_string_equal(cfg->peers[1].path, "/var/log/ferry/audit.jsonl");
    assert_string_equal(cfg->peers[2].name, "console");
    assert_int_equal(cfg->peers[2].type, PEER_STDOUT);

    assert_int_equal(cfg->n_routes, 1);
    const struct route_config *r = &cfg->routes[0];
    assert_string_equal(r->name, "payments");
    assert_non_null(r->filter);
    assert_int_equal(r->filter->kind, FILTER_PREFIX);
    assert_int_equal(r->filter->n_attrs, 1);
    assert_string_equal(r->filter->attrs[0].name, "type");
    assert_string_equal(r->filter->attrs[0].value, "com.example.payment.");
    assert_int_equal(r->n_to, 2);
    assert_int_equal(r->to[0], 0);
    assert_int_equal(r->to[1], 1);
    assert_int_equal(r->ordering, ORDERING_PARTITIONKEY);

    assert_int_equal(cfg->n_schedules, 1);
    assert_string_equal(cfg->schedules[0].name, "tick");
    assert_string_equal(cfg->schedules[0].cron, "*/5 * * * *");
    assert_string_equal(cfg->schedules[0].event_json,
                        "{\"type\":\"com.example.tick\",\"source\":"
                        "\"/ferry/schedules/tick\",\"data\":{}}");
    config_destroy(cfg);
}

/* The contract's "whsec_..." is a placeholder, not a key. */
static void test_config_contract_placeholder_secret_rejected(void **state)
{
    (void)state;
    EXPECT_ERRORS(CONTRACT_EXAMPLE("\"signing_secret\": \"whsec_...\", "),
                  "peers.inventory.signing_secret: must be \"whsec_\" "
                  "followed by standard base64");
}

/* ---- errors and their paths ------------------------------------------- */

static void test_config_unknown_key_reports_path(void **state)
{
    (void)state;
    EXPECT_ERRORS("{\"lsiten\": \"127.0.0.1:1\", \"log\": {\"colour\": true},"
                  " \"peers\": {\"inventory\": {\"url\": \"http://i\","
                  " \"retry\": {\"max_atempts\": 3}}}}",
                  "lsiten: unknown key", "log.colour: unknown key",
                  "peers.inventory.retry.max_atempts: unknown key");
}

static void test_config_wrong_type_reports_path(void **state)
{
    (void)state;
    EXPECT_ERRORS("{\"listen\": 8080, \"admin\": [], \"ingest\": "
                  "{\"max_body_bytes\": \"1\", \"token\": 5}, \"retry\": "
                  "{\"multiplier\": \"2\"}, \"peers\": {\"p\": {\"url\": 5}},"
                  " \"routes\": {}, \"schedules\": 1, \"spool\": {\"dir\": "
                  "null}}",
                  "listen: expected a string", "admin: expected an object",
                  "ingest.max_body_bytes: expected an integer",
                  "ingest.token: expected a string or null",
                  "retry.multiplier: expected a number",
                  "peers.p.url: expected a string",
                  "routes: expected an array",
                  "schedules: expected an array",
                  "spool.dir: expected a string");
}

static void test_config_out_of_range_reports_bounds(void **state)
{
    (void)state;
    EXPECT_ERRORS("{\"ingest\": {\"max_body_bytes\": 0, \"max_batch\": 100001,"
                  " \"dedupe_window_s\": -1}, \"spool\": {\"max_bytes\": 5},"
                  " \"retry\": {\"max_attempts\": 0, \"multiplier\": 0.5,"
                  " \"jitter\": \"half\", \"max_age_s\": 0},"
                  " \"drain_timeout_ms\": -1,"
                  " \"peers\": {\"p\": {\"url\": \"http://p\", "
                  "\"max_in_flight\": 0, \"batch_size\": 1001, "
                  "\"timeout_ms\": 3600001, \"mode\": "
                  "\"json\", \"breaker\": {\"failure_threshold\": 0, "
                  "\"open_ms\": 0}}}, \"log\": {\"level\": \"verbose\", "
                  "\"format\": \"xml\"}}",
                  "ingest.max_body_bytes: must be between 1 and 67108864",
                  "ingest.max_batch: must be between 1 and 100000",
                  "ingest.dedupe_window_s: must be at least 0",
                  "spool.max_bytes: must be at least 1048576",
                  "retry.max_attempts: must be at least 1",
                  "retry.multiplier: must be at least 1",
                  "retry.jitter: must be \"full\", \"equal\" or \"none\"",
                  "retry.max_age_s: must be at least 1",
                  "drain_timeout_ms: must be at least 0",
                  "peers.p.max_in_flight: must be between 1 and 1024",
                  "peers.p.batch_size: must be between 1 and 1000",
                  "peers.p.timeout_ms: must be between 1 and 3600000",
                  "peers.p.mode: must be \"binary\", \"structured\" or "
                  "\"batch\"",
                  "peers.p.breaker.failure_threshold: must be at least 1",
                  "peers.p.breaker.open_ms: must be at least 1",
                  "log.level: must be \"debug\", \"info\", \"warn\" or "
                  "\"error\"",
                  "log.format: must be \"json\" or \"text\"");
}

static void test_config_multiple_errors_in_document_order(void **state)
{
    (void)state;
    /* routes before peers, retry after peers: order follows the text. */
    EXPECT_ERRORS("{\"routes\": [{\"to\": [\"nope\"]}], \"zzz\": 1,"
                  " \"peers\": {\"a\": {\"type\": \"file\"}},"
                  " \"retry\": {\"jitter\": 1}, \"listen\": \"x\"}",
                  "routes[0].to[0]: no peer named \"nope\"",
                  "zzz: unknown key", "peers.a.path: required",
                  "retry.jitter: must be \"full\", \"equal\" or \"none\"",
                  "listen: must be HOST:PORT or [IPV6]:PORT with a port from "
                  "0 to 65535");
}

static void test_config_syntax_error_has_line_and_col(void **state)
{
    (void)state;
    EXPECT_ERRORS("{\n  \"listen\": \"127.0.0.1:1\",\n  oops\n}",
                  "test.json:3:6: string or '}' expected near 'oops'");
    EXPECT_ERRORS("", "test.json:1:0: '[' or '{' expected near end of file");
}

static void test_config_duplicate_key_rejected(void **state)
{
    (void)state;
    EXPECT_ERRORS("{\"listen\": \"a:1\",\n \"listen\": \"b:2\"}",
                  "test.json:2:9: duplicate object key near '\"listen\"'");
}

static void test_config_top_level_must_be_object(void **state)
{
    (void)state;
    EXPECT_ERRORS("[1, 2]", "test.json: the top level must be a JSON object");
}

/* ---- routes ------------------------------------------------------------- */

static void test_config_undefined_peer_in_route(void **state)
{
    (void)state;
    EXPECT_ERRORS("{\"peers\": {\"inventory\": {\"url\": \"http://i\"}},"
                  " \"routes\": [{\"to\": [\"inventory\", \"shiping\"]}]}",
                  "routes[0].to[1]: no peer named \"shiping\"");
}

static void test_config_route_targets_forward_refs_and_dedupe(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(
        "{\"routes\": [{\"to\": [\"b\", \"a\", \"b\", \"a\"]}],"
        " \"peers\": {\"a\": {\"type\": \"stdout\"},"
        " \"b\": {\"type\": \"file\", \"path\": \"/tmp/b\"}}}");
    assert_int_equal(cfg->routes[0].n_to, 2);
    assert_int_equal(cfg->routes[0].to[0], 1);
    assert_int_equal(cfg->routes[0].to[1], 0);
    config_destroy(cfg);
}

static void test_config_route_defaults_and_errors(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(
        "{\"peers\": {\"s\": {\"type\": \"stdout\"}}, \"routes\": ["
        "{\"name\": \"first\", \"to\": [\"s\"]}, {\"to\": [\"s\"]}]}");
    assert_int_equal(cfg->n_routes, 2);
    assert_string_equal(cfg->routes[0].name, "first");
    assert_string_equal(cfg->routes[1].name, "routes[1]");
    assert_null(cfg->routes[1].filter);
    assert_int_equal(cfg->routes[1].ordering, ORDERING_NONE);
    config_destroy(cfg);

    EXPECT_ERRORS("{\"peers\": {\"s\": {\"type\": \"stdout\"}}, \"routes\": ["
                  "{\"name\": \"\"}, {\"to\": []}, 7, {\"to\": \"s\","
                  " \"ordering\": \"fifo\", \"via\": 1}, {\"to\": [1]}]}",
                  "routes[0].name: must not be empty", "routes[0].to: required",
                  "routes[1].to: must name at least one peer",
                  "routes[2]: expected an object",
                  "routes[3].to: expected an array",
                  "routes[3].ordering: must be \"none\" or \"partitionkey\"",
                  "routes[3].via: unknown key",
                  "routes[4].to[0]: expected a string");
}

static void test_config_filter_errors_have_paths(void **state)
{
    (void)state;
    EXPECT_ERRORS(
        "{\"peers\": {\"s\": {\"type\": \"stdout\"}}, \"routes\": ["
        "{\"to\": [\"s\"], \"filter\": {\"all\": [{\"exact\": {\"type\": "
        "\"a\"}}, {\"exact\": {\"type\": 1, \"Source\": \"x\"}}]}},"
        "{\"to\": [\"s\"], \"filter\": {\"sql\": \"type = 'a'\"}},"
        "{\"to\": [\"s\"], \"filter\": {\"exact\": {\"type\": \"a\"},"
        " \"prefix\": {\"type\": \"b\"}}},"
        "{\"to\": [\"s\"], \"filter\": {\"any\": []}},"
        "{\"to\": [\"s\"], \"filter\": {}}]}",
        "routes[0].filter.all[1].exact.type: expected a string",
        "routes[0].filter.all[1].exact.Source: attribute names are 1-20 "
        "lower-case letters or digits",
        "routes[1].filter.sql: unknown filter dialect (expected exact, "
        "prefix, suffix, all, any or not)",
        "routes[2].filter: must hold exactly one dialect; combine several "
        "with \"all\"",
        "routes[3].filter.any: must hold at least one filter",
        "routes[4].filter: must hold one of exact, prefix, suffix, all, any "
        "or not");
}

/* ---- peers -------------------------------------------------------------- */

static void test_config_peer_retry_overrides_key_by_key(void **state)
{
    (void)state;
    /* The peers come first: the merge must still see the final retry. */
    struct config *cfg = parse_ok(
        "{\"peers\": {\"p\": {\"type\": \"stdout\", \"retry\": "
        "{\"max_attempts\": 3, \"jitter\": \"none\"}},"
        " \"q\": {\"url\": \"http://q\"}},"
        " \"retry\": {\"initial_delay_ms\": 50, \"multiplier\": 3}}");
    const struct retry_policy *p = &cfg->peers[0].retry;
    assert_int_equal(p->max_attempts, 3);
    assert_int_equal(p->jitter, JITTER_NONE);
    assert_int_equal(p->initial_delay_ms, 50);
    assert_true(p->multiplier == 3.0);
    assert_int_equal(p->max_delay_ms, 300000);
    assert_int_equal(p->max_age_s, 86400);
    const struct retry_policy *q = &cfg->peers[1].retry;
    assert_int_equal(q->max_attempts, 12);
    assert_int_equal(q->jitter, JITTER_FULL);
    assert_int_equal(q->initial_delay_ms, 50);
    assert_true(q->multiplier == 3.0);
    assert_int_equal(cfg->retry.max_attempts, 12);
    config_destroy(cfg);
}

static void test_config_peer_retry_merge_checks_delays(void **state)
{
    (void)state;
    EXPECT_ERRORS("{\"peers\": {\"p\": {\"type\": \"stdout\", \"retry\": "
                  "{\"initial_delay_ms\": 5000}}, \"q\": {\"type\": "
                  "\"stdout\"}}, \"retry\": {\"max_delay_ms\": 2000, "
                  "\"initial_delay_ms\": 10}}",
                  "peers.p.retry.initial_delay_ms: must be at most "
                  "max_delay_ms (2000)");
    EXPECT_ERRORS("{\"retry\": {\"max_delay_ms\": 10}}",
                  "retry.max_delay_ms: must be at least initial_delay_ms "
                  "(1000)");
}

static void test_config_peer_type_rules(void **state)
{
    (void)state;
    EXPECT_ERRORS(
        "{\"peers\": {\"none\": {\"mode\": \"binary\"},"
        " \"f\": {\"type\": \"file\", \"url\": \"http://x\"},"
        " \"s\": {\"type\": \"stdout\", \"headers\": {}, \"path\": \"/x\"},"
        " \"h\": {\"type\": \"http\"},"
        " \"k\": {\"type\": \"kafka\", \"brokers\": 1},"
        " \"e\": {\"type\": \"file\", \"path\": \"\"}}}",
        "peers.none: needs a \"url\" (an http peer) or a \"type\"",
        "peers.f.url: not allowed for a file peer", "peers.f.path: required",
        "peers.s.headers: not allowed for a stdout peer",
        "peers.s.path: not allowed for a stdout peer",
        "peers.h.url: required",
        "peers.k.type: must be \"http\", \"stdout\" or \"file\"",
        "peers.k.brokers: unknown key", "peers.e.path: must not be empty");

    struct config *cfg = parse_ok(
        "{\"peers\": {\"h\": {\"url\": \"https://h/x\", \"mode\": "
        "\"structured\", \"timeout_ms\": 5, \"max_in_flight\": 1024}}}");
    assert_int_equal(cfg->peers[0].type, PEER_HTTP);
    assert_int_equal(cfg->peers[0].mode, PEER_MODE_STRUCTURED);
    assert_int_equal(cfg->peers[0].timeout_ms, 5);
    assert_int_equal(cfg->peers[0].max_in_flight, 1024);
    assert_int_equal(cfg->peers[0].batch_size, 100); /* the default */
    config_destroy(cfg);

    cfg = parse_ok("{\"peers\": {\"h\": {\"url\": \"https://h/x\", \"mode\": "
                   "\"batch\", \"batch_size\": 7}}}");
    assert_int_equal(cfg->peers[0].mode, PEER_MODE_BATCH);
    assert_int_equal(cfg->peers[0].batch_size, 7);
    config_destroy(cfg);
}

static void test_config_peer_name_rules(void **state)
{
    (void)state;
    char json[256];
    char name[66];
    memset(name, 'a', 64);
    name[64] = '\0';
    snprintf(json, sizeof(json), "{\"peers\": {\"%s\": {\"type\": "
             "\"stdout\"}, \"A_z-0.9\": {\"type\": \"stdout\"}}}", name);
    config_destroy(parse_ok(json));

    name[64] = 'a';
    name[65] = '\0';
    snprintf(json, sizeof(json), "{\"peers\": {\"%s\": {\"type\": "
             "\"stdout\"}, \"bad name\": {\"type\": \"stdout\"}, \"\": "
             "{\"type\": \"stdout\"}}}", name);
    char want0[160];
    snprintf(want0, sizeof(want0), "peers.%s: peer names are 1-64 characters "
             "of A-Z, a-z, 0-9, '_', '.' and '-'", name);
    EXPECT_ERRORS(json, want0,
                  "peers.bad name: peer names are 1-64 characters of A-Z, "
                  "a-z, 0-9, '_', '.' and '-'",
                  "peers.: peer names are 1-64 characters of A-Z, a-z, 0-9, "
                  "'_', '.' and '-'");
}

static void test_config_peer_url_rules(void **state)
{
    (void)state;
    EXPECT_ERRORS("{\"peers\": {\"a\": {\"url\": \"ftp://a\"}, \"b\": {\"url\":"
                  " \"http://\"}, \"c\": {\"url\": \"https:///path\"},"
                  " \"d\": {\"url\": \"http://a b\"}, \"e\": {\"url\": \"\"}}}",
                  "peers.a.url: must be an http:// or https:// URL with a "
                  "host",
                  "peers.b.url: must be an http:// or https:// URL with a "
                  "host",
                  "peers.c.url: must be an http:// or https:// URL with a "
                  "host",
                  "peers.d.url: must not contain spaces or control characters",
                  "peers.e.url: must be an http:// or https:// URL with a "
                  "host");
}

static void test_config_peer_headers_validated(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(
        "{\"peers\": {\"p\": {\"url\": \"http://p\", \"headers\": "
        "{\"X-Env\": \"prod\", \"x-b!#$%&'*+.^_`|~\": \"\"}}}}");
    assert_int_equal(cfg->peers[0].n_headers, 2);
    assert_string_equal(cfg->peers[0].headers[0].name, "X-Env");
    assert_string_equal(cfg->peers[0].headers[0].value, "prod");
    assert_string_equal(cfg->peers[0].headers[1].value, "");
    config_destroy(cfg);

    EXPECT_ERRORS("{\"peers\": {\"p\": {\"url\": \"http://p\", \"headers\": "
                  "{\"Bad Name\": \"x\", \"X-A\": \"a\\r\\nX-Evil: 1\", "
                  "\"X-B\": 1, \"\": \"x\", \"X(c)\": \"x\"}}, \"q\": {\"url\":"
                  " \"http://q\", \"headers\": [\"X-A: b\"]}}}",
                  "peers.p.headers.Bad Name: not a valid header name",
                  "peers.p.headers.X-A: must not contain CR or LF",
                  "peers.p.headers.X-B: expected a string",
                  "peers.p.headers.: not a valid header name",
                  "peers.p.headers.X(c): not a valid header name",
                  "peers.q.headers: expected an object");
}

static void test_config_signing_secret_validated(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(
        "{\"peers\": {\"a\": {\"url\": \"http://a\", \"signing_secret\": "
        "\"whsec_YQ==\"}, \"b\": {\"url\": \"http://b\", \"signing_secret\":"
        " null}}}");
    assert_string_equal(cfg->peers[0].signing_secret, "whsec_YQ==");
    assert_null(cfg->peers[1].signing_secret);
    config_destroy(cfg);

    const char *bad[] = {"whsec_", "whsec_YQ", "whsec_Y===", "whsec_!!!!",
                         "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_YQ=a",
                         "whsec_-_==", "WHSEC_YQ=="};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char json[200];
        snprintf(json, sizeof(json), "{\"peers\": {\"a\": {\"url\": "
                 "\"http://a\", \"signing_secret\": \"%s\"}}}", bad[i]);
        EXPECT_ERRORS(json, "peers.a.signing_secret: must be \"whsec_\" "
                      "followed by standard base64");
    }
    EXPECT_ERRORS("{\"peers\": {\"a\": {\"url\": \"http://a\", "
                  "\"signing_secret\": 1}}}",
                  "peers.a.signing_secret: expected a string or null");
}

static void test_config_tls_needs_cert_and_key(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(
        "{\"tls\": {\"cert_file\": \"c.pem\", \"key_file\": \"k.pem\"},"
        " \"admin\": {\"tls\": {\"cert_file\": null, \"key_file\": null}},"
        " \"peers\": {\"p\": {\"url\": \"https://p\", \"tls\": "
        "{\"ca_file\": \"ca.pem\"}}}}");
    assert_string_equal(cfg->tls.cert_file, "c.pem");
    assert_string_equal(cfg->tls.key_file, "k.pem");
    assert_null(cfg->admin.tls.cert_file);
    assert_string_equal(cfg->peers[0].tls.ca_file, "ca.pem");
    assert_null(cfg->peers[0].tls.cert_file);
    config_destroy(cfg);

    EXPECT_ERRORS("{\"tls\": {\"cert_file\": \"c.pem\"}, \"admin\": {\"tls\":"
                  " {\"key_file\": \"k.pem\", \"ca_file\": \"x\"}},"
                  " \"peers\": {\"p\": {\"url\": \"https://p\", \"tls\": "
                  "{\"key_file\": \"k.pem\"}}}}",
                  "tls.key_file: required when cert_file is set",
                  "admin.tls.ca_file: unknown key",
                  "peers.p.tls.cert_file: required when key_file is set");
}

/* The "http" extension: the listeners' limits. */
static void test_config_http_limits_defaults(void **state)
{
    (void)state;
    struct config *cfg = parse_ok("{}");
    assert_int_equal(cfg->http.max_connections, 1024);
    assert_int_equal(cfg->http.max_connections_per_ip, 0);
    assert_int_equal(cfg->http.connection_timeout_s, 30);
    assert_int_equal(cfg->http.max_header_bytes, 16384);
    assert_int_equal(cfg->http.threads, 0); /* "auto" */
    config_destroy(cfg);

    cfg = parse_ok("{\"http\": {\"threads\": \"auto\"}}");
    assert_int_equal(cfg->http.threads, 0);
    config_destroy(cfg);

    cfg = parse_ok("{\"http\": {\"max_connections\": 8,"
                   " \"max_connections_per_ip\": 4,"
                   " \"connection_timeout_s\": 2, \"max_header_bytes\": 4096,"
                   " \"threads\": 8}}");
    assert_int_equal(cfg->http.max_connections, 8);
    assert_int_equal(cfg->http.max_connections_per_ip, 4);
    assert_int_equal(cfg->http.connection_timeout_s, 2);
    assert_int_equal(cfg->http.max_header_bytes, 4096);
    assert_int_equal(cfg->http.threads, 8);
    config_destroy(cfg);
}

static void test_config_http_limits_errors_have_paths(void **state)
{
    (void)state;
    EXPECT_ERRORS("{\"http\": {\"max_connections\": 0,"
                  " \"max_connections_per_ip\": -1,"
                  " \"connection_timeout_s\": 0, \"max_header_bytes\": 1024,"
                  " \"threads\": 0, \"max_conections\": 5}}",
                  "http.max_connections: must be between 1 and 1048576",
                  "http.max_connections_per_ip: must be between 0 and 1048576",
                  "http.connection_timeout_s: must be between 1 and 86400",
                  "http.max_header_bytes: must be between 4096 and 1048576",
                  "http.threads: must be between 1 and 256",
                  "http.max_conections: unknown key");
    EXPECT_ERRORS("{\"http\": {\"threads\": \"2\", \"max_header_bytes\": "
                  "2097152, \"connection_timeout_s\": 1.5}}",
                  "http.threads: expected an integer or \"auto\"",
                  "http.max_header_bytes: must be between 4096 and 1048576",
                  "http.connection_timeout_s: expected an integer");
    EXPECT_ERRORS("{\"http\": []}", "http: expected an object");
    /* libmicrohttpd shares connections out among its threads: the key
     * this object sets is blamed. */
    EXPECT_ERRORS("{\"http\": {\"max_connections\": 2, \"threads\": 4}}",
                  "http.max_connections: must be at least threads (4)");
    EXPECT_ERRORS("{\"http\": {\"threads\": 4, \"max_connections\": 2}}",
                  "http.max_connections: must be at least threads (4)");
    EXPECT_ERRORS("{\"http\": {\"threads\": 2000}}",
                  "http.threads: must be between 1 and 256");
    EXPECT_ERRORS("{\"http\": {\"threads\": \"many\"}}",
                  "http.threads: expected an integer or \"auto\"");
}

static void test_config_http_limits_in_dump(void **state)
{
    (void)state;
    struct config *cfg = parse_ok("{\"http\": {\"connection_timeout_s\": 5}}");
    char *text = config_dump_masked(cfg);
    assert_non_null(text);
    assert_non_null(strstr(text, "\"http\":{\"max_connections\":1024,"
                                 "\"max_connections_per_ip\":0,"
                                 "\"connection_timeout_s\":5,"
                                 "\"max_header_bytes\":16384,"
                                 "\"threads\":\"auto\"}"));
    free(text);
    config_destroy(cfg);
}

static void test_config_tokens_null_or_non_empty(void **state)
{
    (void)state;
    struct config *cfg = parse_ok("{\"ingest\": {\"token\": \"in\"},"
                                  " \"admin\": {\"token\": null}}");
    assert_string_equal(cfg->ingest.token, "in");
    assert_null(cfg->admin.token);
    config_destroy(cfg);
    EXPECT_ERRORS("{\"ingest\": {\"token\": \"\"}, \"admin\": {\"token\": "
                  "false}}",
                  "ingest.token: must not be empty",
                  "admin.token: expected a string or null");
}

static void test_config_numbers_integer_or_real(void **state)
{
    (void)state;
    struct config *cfg = parse_ok("{\"retry\": {\"multiplier\": 3},"
                                  " \"drain_timeout_ms\": 0}");
    assert_true(cfg->retry.multiplier == 3.0);
    assert_int_equal(cfg->drain_timeout_ms, 0);
    config_destroy(cfg);
    EXPECT_ERRORS("{\"retry\": {\"max_attempts\": 5.0}, \"ingest\": "
                  "{\"max_batch\": true}, \"drain_timeout_ms\": null}",
                  "retry.max_attempts: expected an integer",
                  "ingest.max_batch: expected an integer",
                  "drain_timeout_ms: expected an integer");
}

/* ---- listen addresses ---------------------------------------------------- */

static void test_config_listen_validated(void **state)
{
    (void)state;
    struct config *cfg = parse_ok("{\"listen\": \"[::]:0\", \"admin\": "
                                  "{\"listen\": \"localhost:9\"}}");
    assert_string_equal(cfg->listen, "[::]:0");
    assert_string_equal(cfg->admin.listen, "localhost:9");
    config_destroy(cfg);
    EXPECT_ERRORS("{\"listen\": \"8080\", \"admin\": {\"listen\": "
                  "\"h:99999\"}}",
                  "listen: must be HOST:PORT or [IPV6]:PORT with a port from "
                  "0 to 65535",
                  "admin.listen: must be HOST:PORT or [IPV6]:PORT with a port "
                  "from 0 to 65535");
}

static void test_config_split_hostport(void **state)
{
    (void)state;
    char host[64];
    uint16_t port = 1;
    assert_int_equal(config_split_hostport("127.0.0.1:8080", host,
                                           sizeof(host), &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8080);
    assert_int_equal(config_split_hostport("[::1]:9000", host, sizeof(host),
                                           &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 9000);
    assert_int_equal(config_split_hostport("[fe80::1%eth0]:65535", host,
                                           sizeof(host), &port), 0);
    assert_string_equal(host, "fe80::1%eth0");
    assert_int_equal(port, 65535);
    assert_int_equal(config_split_hostport("my-host.example:0", host,
                                           sizeof(host), &port), 0);
    assert_string_equal(host, "my-host.example");
    assert_int_equal(port, 0);

    const char *bad[] = {"8080",     ":80",        "host:",   "host:65536",
                         "h:123456", "[::1]8080",  "a:b:c",   "host:80x",
                         "[]:80",    "[host]:80",  "ho st:80", "::1:80",
                         "[::1:80",  "host:-1",    "",        "host:+80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (config_split_hostport(bad[i], host, sizeof(host), &port) !=
            -EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    /* The host must fit the caller's buffer. */
    assert_int_equal(config_split_hostport("abcd:1", host, 4, &port), -EINVAL);
    assert_int_equal(config_split_hostport("abc:1", host, 4, &port), 0);
    assert_string_equal(host, "abc");
}

/* ---- schedules ------------------------------------------------------------ */

static void test_config_schedules_stored_and_checked(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(
        "{\"schedules\": [{\"name\": \"a\", \"cron\": \"@every 5s\", "
        "\"event\": {\"type\": \"t\", \"source\": \"/s\", \"subject\": "
        "\"x y\"}}, {\"name\": \"b\", \"cron\": \"not evaluated\", "
        "\"event\": {\"source\": \"/s\", \"type\": \"u\"}}]}");
    assert_int_equal(cfg->n_schedules, 2);
    assert_string_equal(cfg->schedules[0].cron, "@every 5s");
    assert_string_equal(cfg->schedules[0].event_json,
                        "{\"type\":\"t\",\"source\":\"/s\",\"subject\":"
                        "\"x y\"}");
    assert_string_equal(cfg->schedules[1].name, "b");
    config_destroy(cfg);

    EXPECT_ERRORS("{\"schedules\": [{\"name\": \"a\", \"cron\": \"x\", "
                  "\"event\": {\"type\": \"t\"}},"
                  " {\"name\": \"a\", \"cron\": \"\", \"event\": []},"
                  " {\"every\": 5}, \"tick\","
                  " {\"name\": \"c\", \"cron\": \"x\", \"event\": "
                  "{\"type\": 1, \"source\": \"\"}}]}",
                  "schedules[0].event.source: required",
                  "schedules[1].name: duplicate name \"a\"",
                  "schedules[1].cron: must not be empty",
                  "schedules[1].event: expected an object",
                  "schedules[2].every: unknown key",
                  "schedules[2].name: required", "schedules[2].cron: required",
                  "schedules[2].event: required",
                  "schedules[3]: expected an object",
                  "schedules[4].event.type: expected a string",
                  "schedules[4].event.source: must not be empty");
}

/* ---- environment ----------------------------------------------------------- */

static const char *const *env_table;

static const char *fake_env(const char *name)
{
    for (size_t i = 0; env_table[i]; i += 2)
        if (strcmp(env_table[i], name) == 0)
            return env_table[i + 1];
    return NULL;
}

static void test_config_env_overrides_win(void **state)
{
    (void)state;
    static const char *const env[] = {
        "FERRY_LISTEN", "0.0.0.0:9090",
        "FERRY_ADMIN_LISTEN", "[::1]:9091",
        "FERRY_SPOOL_DIR", "/var/lib/ferry",
        "FERRY_LOG_LEVEL", "debug",
        "FERRY_LOG_FORMAT", "text",
        "FERRY_INGEST_TOKEN", "in-secret",
        "FERRY_ADMIN_TOKEN", "admin-secret",
        "FERRY_CONFIG", "/ignored.json",
        NULL};
    struct config_errors e;
    struct config *cfg = parse_ok("{\"listen\": \"127.0.0.1:1\", \"log\": "
                                  "{\"level\": \"error\"}, \"ingest\": "
                                  "{\"token\": \"file-token\"}}");
    config_errors_init(&e);
    env_table = env;
    assert_int_equal(config_apply_env(cfg, fake_env, &e), 0);
    assert_int_equal(e.n, 0);
    assert_string_equal(cfg->listen, "0.0.0.0:9090");
    assert_string_equal(cfg->admin.listen, "[::1]:9091");
    assert_string_equal(cfg->spool.dir, "/var/lib/ferry");
    assert_int_equal(cfg->log.level, LOG_DEBUG);
    assert_int_equal(cfg->log.format, LOG_FORMAT_TEXT);
    assert_string_equal(cfg->ingest.token, "in-secret");
    assert_string_equal(cfg->admin.token, "admin-secret");
    config_errors_free(&e);
    config_destroy(cfg);
}

static void test_config_env_empty_means_unset(void **state)
{
    (void)state;
    static const char *const env[] = {"FERRY_LISTEN", "",
                                      "FERRY_INGEST_TOKEN", "", NULL};
    struct config_errors e;
    struct config *cfg = parse_ok("{\"listen\": \"127.0.0.1:1\", \"ingest\": "
                                  "{\"token\": \"file-token\"}}");
    config_errors_init(&e);
    env_table = env;
    assert_int_equal(config_apply_env(cfg, fake_env, &e), 0);
    assert_string_equal(cfg->listen, "127.0.0.1:1");
    assert_string_equal(cfg->ingest.token, "file-token");
    assert_string_equal(cfg->spool.dir, "./ferry-data");
    config_errors_free(&e);
    config_destroy(cfg);
}

static void test_config_env_bad_values_collected(void **state)
{
    (void)state;
    static const char *const env[] = {
        "FERRY_LISTEN", "nope",
        "FERRY_ADMIN_LISTEN", "h:70000",
        "FERRY_LOG_LEVEL", "verbose",
        "FERRY_LOG_FORMAT", "xml",
        NULL};
    struct config_errors e;
    struct config *cfg = parse_ok("{}");
    config_errors_init(&e);
    env_table = env;
    assert_int_equal(config_apply_env(cfg, fake_env, &e), -EINVAL);
    assert_errors(&e, (const char *const[]){
        "env FERRY_LISTEN: must be HOST:PORT or [IPV6]:PORT with a port from "
        "0 to 65535",
        "env FERRY_ADMIN_LISTEN: must be HOST:PORT or [IPV6]:PORT with a port "
        "from 0 to 65535",
        "env FERRY_LOG_LEVEL: must be \"debug\", \"info\", \"warn\" or "
        "\"error\"",
        "env FERRY_LOG_FORMAT: must be \"json\" or \"text\"", NULL});
    assert_string_equal(cfg->listen, "127.0.0.1:8080");
    config_errors_free(&e);
    config_destroy(cfg);
}

/* ---- masked dump ------------------------------------------------------------ */

static json_t *dump_json(const struct config *cfg)
{
    char *text = config_dump_masked(cfg);
    assert_non_null(text);
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    free(text);
    return j;
}

static void test_config_dump_masks_secrets(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(
        "{\"ingest\": {\"token\": \"ingest-tok\"}, \"admin\": {\"token\": "
        "\"admin-tok\"}, \"peers\": {\"p\": {\"url\": "
        "\"https://user:hunter2@p.example/x?q=1\", \"signing_secret\": \""
        GOOD_SECRET "\", \"headers\": {\"Authorization\": \"Bearer abc\", "
        "\"X-Api-Key\": \"k1\", \"X-Env\": \"prod\"}}}}");
    char *text = config_dump_masked(cfg);
    assert_non_null(text);
    assert_null(strstr(text, "ingest-tok"));
    assert_null(strstr(text, "admin-tok"));
    assert_null(strstr(text, "MfKQ9r8"));
    assert_null(strstr(text, "hunter2"));
    assert_null(strstr(text, "Bearer"));
    assert_null(strstr(text, "k1"));
    free(text);

    json_t *j = dump_json(cfg);
    json_t *p = json_object_get(json_object_get(j, "peers"), "p");
    json_t *h = json_object_get(p, "headers");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(j, "ingest"), "token")), "***");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(j, "admin"), "token")), "***");
    assert_string_equal(json_string_value(json_object_get(p, "signing_secret")),
                        "***");
    assert_string_equal(json_string_value(json_object_get(p, "url")),
                        "https://user:***@p.example/x?q=1");
    assert_string_equal(json_string_value(json_object_get(h, "Authorization")),
                        "***");
    assert_string_equal(json_string_value(json_object_get(h, "X-Api-Key")),
                        "***");
    assert_string_equal(json_string_value(json_object_get(h, "X-Env")), "prod");
    json_decref(j);
    config_destroy(cfg);
}

static void test_config_dump_shows_defaults(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(CONFIG_DEFAULT_JSON);
    json_t *j = dump_json(cfg);
    assert_true(json_is_null(json_object_get(json_object_get(j, "ingest"),
                                             "token")));
    assert_string_equal(json_string_value(json_object_get(j, "listen")),
                        "127.0.0.1:8080");
    assert_int_equal(json_integer_value(json_object_get(j, "drain_timeout_ms")),
                     10000);
    json_t *retry = json_object_get(j, "retry");
    assert_int_equal(json_integer_value(json_object_get(retry, "max_attempts")),
                     12);
    assert_string_equal(json_string_value(json_object_get(retry, "jitter")),
                        "full");
    json_t *route = json_array_get(json_object_get(j, "routes"), 0);
    assert_string_equal(json_string_value(json_object_get(route, "name")),
                        "default");
    assert_null(json_object_get(route, "filter"));
    assert_string_equal(json_string_value(json_array_get(
                            json_object_get(route, "to"), 0)), "stdout");
    json_t *sink = json_object_get(json_object_get(j, "peers"), "stdout");
    assert_string_equal(json_string_value(json_object_get(sink, "type")),
                        "stdout");
    json_decref(j);
    config_destroy(cfg);
}

/* Without secrets, the dump is itself a valid config with the same dump. */
static void test_config_dump_round_trips(void **state)
{
    (void)state;
    struct config *a = parse_ok(CONTRACT_EXAMPLE(""));
    char *first = config_dump_masked(a);
    assert_non_null(first);
    struct config *b = parse_ok(first);
    char *second = config_dump_masked(b);
    assert_non_null(second);
    assert_string_equal(first, second);
    assert_non_null(strstr(first, "\"filter\":{\"prefix\":{\"type\":"
                                  "\"com.example.payment.\"}}"));
    free(first);
    free(second);
    config_destroy(a);
    config_destroy(b);
}

/* ---- files and small API ------------------------------------------------------ */

static void test_config_load_file_missing(void **state)
{
    (void)state;
    struct config_errors e;
    config_errors_init(&e);
    assert_null(config_load_file("/nonexistent/ferry.json", &e));
    assert_errors(&e, (const char *const[]){
        "/nonexistent/ferry.json: No such file or directory", NULL});
    config_errors_free(&e);

    config_errors_init(&e);
    assert_null(config_load_file("/", &e));
    assert_errors(&e, (const char *const[]){"/: Is a directory", NULL});
    config_errors_free(&e);
}

/* Write @text to a new temporary file; returns its malloc'd path. */
static char *temp_file(const char *text)
{
    const char *dir = getenv("TMPDIR");
    char path[256];
    snprintf(path, sizeof(path), "%s/ferry-test-XXXXXX", dir ? dir : "/tmp");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return strdup(path);
}

static void test_config_load_file_uses_path_as_origin(void **state)
{
    (void)state;
    struct config_errors e;
    char want[300];
    char *good = temp_file(CONFIG_DEFAULT_JSON);
    char *bad = temp_file("{\n\"listen\": }");
    config_errors_init(&e);

    struct config *cfg = config_load_file(good, &e);
    assert_non_null(cfg);
    assert_int_equal(cfg->n_peers, 1);
    config_destroy(cfg);

    assert_null(config_load_file(bad, &e));
    snprintf(want, sizeof(want), "%s:2:11: unexpected token near '}'", bad);
    assert_errors(&e, (const char *const[]){want, NULL});

    config_errors_free(&e);
    unlink(good);
    unlink(bad);
    free(good);
    free(bad);
}

static void test_config_peer_index(void **state)
{
    (void)state;
    struct config *cfg = parse_ok(
        "{\"peers\": {\"a\": {\"type\": \"stdout\"}, \"b\": {\"type\": "
        "\"stdout\"}}}");
    assert_int_equal(config_peer_index(cfg, "a"), 0);
    assert_int_equal(config_peer_index(cfg, "b"), 1);
    assert_int_equal(config_peer_index(cfg, "c"), -1);
    assert_int_equal(config_peer_index(cfg, ""), -1);
    config_destroy(cfg);
}

static void test_config_errors_add_formats(void **state)
{
    (void)state;
    struct config_errors e;
    config_errors_init(&e);
    config_errors_add(&e, "a.b", "bad %d", 7);
    config_errors_add(&e, "", "alone");
    config_errors_add(&e, NULL, "also %s", "alone");
    assert_errors(&e, (const char *const[]){"a.b: bad 7", "alone",
                                            "also alone", NULL});
    config_errors_free(&e);
    assert_int_equal(e.n, 0);
    assert_null(e.items);
    config_errors_free(NULL);
    config_destroy(NULL);
}

/* ---- secret references -------------------------------------------------- */

static void test_config_secret_refs_resolve_env_and_file(void **state)
{
    (void)state;
    char path[] = "/tmp/ferry-secret-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char body[] = GOOD_SECRET "\n";
    assert_int_equal(write(fd, body, sizeof(body) - 1),
                     (ssize_t)(sizeof(body) - 1));
    close(fd);
    setenv("FERRY_TEST_ADMIN_TOKEN", "admin-from-env", 1);
    setenv("FERRY_TEST_AUTH", "Bearer abc", 1);
    char json[1024];
    snprintf(json, sizeof(json),
             "{\"admin\": {\"token\": {\"env\": \"FERRY_TEST_ADMIN_TOKEN\"}},"
             " \"ingest\": {\"token\": {\"file\": \"%s\"}},"
             " \"peers\": {\"p\": {\"url\": \"http://127.0.0.1:1/\","
             "   \"signing_secret\": {\"file\": \"%s\"},"
             "   \"headers\": {\"Authorization\": {\"env\": \"FERRY_TEST_AUTH\"},"
             "                 \"X-Plain\": \"v\"}}}}",
             path, path);
    struct config *cfg = parse_ok(json);
    assert_string_equal(cfg->admin.token, "admin-from-env");
    assert_string_equal(cfg->ingest.token, GOOD_SECRET); /* newline gone */
    assert_string_equal(cfg->peers[0].signing_secret, GOOD_SECRET);
    assert_int_equal(cfg->peers[0].n_headers, 2);
    assert_string_equal(cfg->peers[0].headers[0].value, "Bearer abc");
    assert_string_equal(cfg->peers[0].headers[1].value, "v");
    config_destroy(cfg);
    unlink(path);
    unsetenv("FERRY_TEST_ADMIN_TOKEN");
    unsetenv("FERRY_TEST_AUTH");
}

static void test_config_secret_ref_errors_name_the_reference(void **state)
{
    (void)state;
    unsetenv("FERRY_TEST_UNSET");
    setenv("FERRY_TEST_BAD_SECRET", "not-a-secret", 1);
    EXPECT_ERRORS(
        "{\"admin\": {\"token\": {\"env\": \"FERRY_TEST_UNSET\"}},"
        " \"ingest\": {\"token\": {\"file\": \"/nonexistent/ferry/token\"}},"
        " \"peers\": {\"p\": {\"url\": \"http://127.0.0.1:1/\","
        "   \"signing_secret\": {\"env\": \"FERRY_TEST_BAD_SECRET\"},"
        "   \"headers\": {\"X-A\": {\"vault\": \"x\"},"
        "                 \"X-B\": {\"env\": \"\"},"
        "                 \"X-C\": {\"env\": \"A\", \"file\": \"B\"}}}}}",
        "admin.token.env: environment variable \"FERRY_TEST_UNSET\" is not set",
        "ingest.token.file: cannot read \"/nonexistent/ferry/token\": "
        "No such file or directory",
        "peers.p.signing_secret: must be \"whsec_\" followed by standard "
        "base64",
        "peers.p.headers.X-A.vault: unknown secret reference; use \"env\" or "
        "\"file\"",
        "peers.p.headers.X-B.env: expected a non-empty string",
        "peers.p.headers.X-C: a secret reference is {\"env\": NAME} or "
        "{\"file\": PATH}");
    unsetenv("FERRY_TEST_BAD_SECRET");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_empty_doc_has_defaults),
        cmocka_unit_test(test_config_embedded_default_routes_all_to_stdout),
        cmocka_unit_test(test_config_contract_example_parses),
        cmocka_unit_test(test_config_contract_placeholder_secret_rejected),
        cmocka_unit_test(test_config_unknown_key_reports_path),
        cmocka_unit_test(test_config_wrong_type_reports_path),
        cmocka_unit_test(test_config_out_of_range_reports_bounds),
        cmocka_unit_test(test_config_multiple_errors_in_document_order),
        cmocka_unit_test(test_config_syntax_error_has_line_and_col),
        cmocka_unit_test(test_config_duplicate_key_rejected),
        cmocka_unit_test(test_config_top_level_must_be_object),
        cmocka_unit_test(test_config_undefined_peer_in_route),
        cmocka_unit_test(test_config_route_targets_forward_refs_and_dedupe),
        cmocka_unit_test(test_config_route_defaults_and_errors),
        cmocka_unit_test(test_config_filter_errors_have_paths),
        cmocka_unit_test(test_config_peer_retry_overrides_key_by_key),
        cmocka_unit_test(test_config_peer_retry_merge_checks_delays),
        cmocka_unit_test(test_config_peer_type_rules),
        cmocka_unit_test(test_config_peer_name_rules),
        cmocka_unit_test(test_config_peer_url_rules),
        cmocka_unit_test(test_config_secret_refs_resolve_env_and_file),
        cmocka_unit_test(test_config_secret_ref_errors_name_the_reference),
        cmocka_unit_test(test_config_peer_headers_validated),
        cmocka_unit_test(test_config_signing_secret_validated),
        cmocka_unit_test(test_config_tls_needs_cert_and_key),
        cmocka_unit_test(test_config_http_limits_defaults),
        cmocka_unit_test(test_config_http_limits_errors_have_paths),
        cmocka_unit_test(test_config_http_limits_in_dump),
        cmocka_unit_test(test_config_tokens_null_or_non_empty),
        cmocka_unit_test(test_config_numbers_integer_or_real),
        cmocka_unit_test(test_config_listen_validated),
        cmocka_unit_test(test_config_split_hostport),
        cmocka_unit_test(test_config_schedules_stored_and_checked),
        cmocka_unit_test(test_config_env_overrides_win),
        cmocka_unit_test(test_config_env_empty_means_unset),
        cmocka_unit_test(test_config_env_bad_values_collected),
        cmocka_unit_test(test_config_dump_masks_secrets),
        cmocka_unit_test(test_config_dump_shows_defaults),
        cmocka_unit_test(test_config_dump_round_trips),
        cmocka_unit_test(test_config_load_file_missing),
        cmocka_unit_test(test_config_load_file_uses_path_as_origin),
        cmocka_unit_test(test_config_peer_index),
        cmocka_unit_test(test_config_errors_add_formats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
