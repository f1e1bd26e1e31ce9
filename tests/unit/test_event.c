/*
 * Unit tests for event: structured, batch and binary ingest, attribute
 * lookup, reloading from the spool's stored form, and structured/binary
 * output, including round trips between the two modes.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "buf.h"
#include "event.h"

#define BUF_MAX (1 << 20)

#define MIN_EVENT                                                            \
    "{\"specversion\":\"1.0\",\"id\":\"e-1\",\"source\":\"/src\","          \
    "\"type\":\"com.example.t\"}"

static struct http_header hdr(const char *name, const char *value)
{
    return (struct http_header){name, strlen(name), value, strlen(value)};
}

/* The standard four binary-mode headers, followed by room for more. */
#define BASE_HEADERS                                                         \
    hdr("ce-specversion", "1.0"), hdr("ce-id", "b-1"),                      \
        hdr("ce-source", "/bin"), hdr("ce-type", "com.example.b")

static struct ce_error fresh_error(void)
{
    struct ce_error err = {.code = NULL, .index = -7};
    return err;
}

static void assert_json_text_equal(const char *got, const char *want)
{
    json_error_t e1, e2;
    json_t *a = json_loads(got, JSON_DECODE_ANY, &e1);
    json_t *b = json_loads(want, JSON_DECODE_ANY, &e2);
    assert_non_null(a);
    assert_non_null(b);
    if (!json_equal(a, b))
        fail_msg("JSON differs:\n got: %s\nwant: %s", got, want);
    json_decref(a);
    json_decref(b);
}

/* Structured output of @ev as a new string (caller frees). */
static char *structured_of(const struct event *ev)
{
    struct buf out;
    buf_init(&out, BUF_MAX);
    assert_int_equal(event_to_structured(ev, &out), 0);
    char *s = buf_take(&out, NULL);
    assert_non_null(s);
    assert_null(strchr(s, '\n'));
    return s;
}

/* ---- header capture for event_binary_headers() -------------------------- */

#define MAX_CAPTURED 32

struct captured {
    size_t n;
    char *name[MAX_CAPTURED];
    char *value[MAX_CAPTURED];
    int fail_at; /* return -EIO on this call (1-based); 0 never */
};

static int capture_cb(void *arg, const char *name, const char *value)
{
    struct captured *c = arg;
    assert_true(c->n < MAX_CAPTURED);
    if (c->fail_at && (int)c->n + 1 == c->fail_at)
        return -EIO;
    c->name[c->n] = strdup(name);
    c->value[c->n] = strdup(value);
    c->n++;
    return 0;
}

static const char *captured_get(const struct captured *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcasecmp(c->name[i], name) == 0)
            return c->value[i];
    return NULL;
}

static void captured_free(struct captured *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->name[i]);
        free(c->value[i]);
    }
    c->n = 0;
}

/* ---- structured ingest --------------------------------------------------- */

static void test_event_structured_parses_valid_event(void **state)
{
    (void)state;
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(
        event_from_structured(MIN_EVENT, strlen(MIN_EVENT), &ev, &err), 0);
    assert_int_equal(ev.format, EVENT_STRUCTURED);
    assert_string_equal(ev.text, MIN_EVENT);
    assert_int_equal(ev.text_len, strlen(MIN_EVENT));
    assert_string_equal(json_string_value(json_object_get(ev.obj, "id")),
                        "e-1");
    assert_null(ev.data);
    assert_null(err.code);
    event_free(&ev);
    assert_null(ev.obj);
    assert_null(ev.text);
}

static void test_event_structured_keeps_single_line_body(void **state)
{
    (void)state;
    /* Spacing and key order are the sender's; one line is kept verbatim. */
    const char *body = "  { \"type\": \"t\", \"specversion\": \"1.0\", "
                       "\"id\": \"x\", \"source\": \"s\", \"data\": [1, 2] }\t";
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_structured(body, strlen(body), &ev, &err), 0);
    assert_int_equal(ev.text_len, strlen(body) - 3);
    assert_int_equal(strlen(ev.text), ev.text_len);
    assert_memory_equal(ev.text, body + 2, ev.text_len);
    assert_int_equal(ev.text[ev.text_len - 1], '}');
    event_free(&ev);
}

static void test_event_structured_compacts_multiline_body(void **state)
{
    (void)state;
    const char *body = "{\n  \"specversion\": \"1.0\",\r\n  \"id\": \"x\",\n"
                       "  \"source\": \"s\",\n  \"type\": \"t\",\n"
                       "  \"data\": {\"k\": \"line\\nbreak\"}\n}\n";
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_structured(body, strlen(body), &ev, &err), 0);
    assert_null(strchr(ev.text, '\n'));
    assert_null(strchr(ev.text, '\r'));
    assert_int_equal(ev.text_len, strlen(ev.text));
    assert_json_text_equal(ev.text, body);
    event_free(&ev);
}

static void test_event_structured_reports_invalid_json_position(void **state)
{
    (void)state;
    const char *body = "{\n  \"id\": }";
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_structured(body, strlen(body), &ev, &err),
                     -EINVAL);
    assert_string_equal(err.code, "invalid_json");
    assert_int_equal(err.index, -1);
    assert_string_equal(err.attribute, "");
    assert_non_null(strstr(err.message, "line 2"));
    assert_non_null(strstr(err.message, "column"));
    assert_null(ev.obj);
    assert_null(ev.text);
    event_free(&ev);
}

static void test_event_structured_rejects_trailing_garbage(void **state)
{
    (void)state;
    const char *body = MIN_EVENT " x";
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_structured(body, strlen(body), &ev, &err),
                     -EINVAL);
    assert_string_equal(err.code, "invalid_json");
}

static void test_event_structured_rejects_duplicate_keys(void **state)
{
    (void)state;
    const char *body = "{\"specversion\":\"1.0\",\"id\":\"a\",\"id\":\"b\","
                       "\"source\":\"s\",\"type\":\"t\"}";
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_structured(body, strlen(body), &ev, &err),
                     -EINVAL);
    assert_string_equal(err.code, "invalid_json");
    assert_non_null(strstr(err.message, "duplicate"));
}

static void test_event_structured_rejects_non_object(void **state)
{
    (void)state;
    static const char *const bodies[] = {"[" MIN_EVENT "]", "\"text\"", "42",
                                         "null"};
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        struct event ev;
        struct ce_error err = fresh_error();
        assert_int_equal(
            event_from_structured(bodies[i], strlen(bodies[i]), &ev, &err),
            -EINVAL);
        assert_string_equal(err.code, "invalid_event");
        assert_null(ev.obj);
    }
}

static void test_event_structured_rejects_empty_body(void **state)
{
    (void)state;
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_structured("", 0, &ev, &err), -EINVAL);
    assert_string_equal(err.code, "invalid_json");
}

static void test_event_structured_reports_missing_attribute(void **state)
{
    (void)state;
    const char *body = "{\"specversion\":\"1.0\",\"id\":\"a\",\"source\":\"s\"}";
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_structured(body, strlen(body), &ev, &err),
                     -EINVAL);
    assert_string_equal(err.code, "invalid_event");
    assert_string_equal(err.attribute, "type");
    assert_int_equal(err.index, -1);
    assert_null(ev.obj);
}

static void test_event_structured_uses_body_length(void **state)
{
    (void)state;
    /* The body is not NUL-terminated where the event ends. */
    char body[128];
    size_t n = strlen(MIN_EVENT);
    memcpy(body, MIN_EVENT, n);
    memcpy(body + n, "GARBAGE", 8);
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_structured(body, n, &ev, &err), 0);
    assert_string_equal(ev.text, MIN_EVENT);
    event_free(&ev);
}

/* Ingest checks the whole body with jsoncheck() and parses only the
 * attributes: what it keeps, and that nothing it refused before passes. */
static void test_event_structured_fast_path_keeps_data_text(void **state)
{
    (void)state;
    const char *body = "  {\"specversion\":\"1.0\",\"id\":\"f\",\"source\":\"/s\","
                       "\"type\":\"t\",\"data\":{\"n\":[1,2.5e3,null]},\"x\":true}";
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_structured(body, strlen(body), &ev, &err), 0);
    assert_string_equal(ev.text, body + 2); /* as received, less the blanks */
    assert_null(json_object_get(ev.obj, "data"));
    assert_memory_equal(ev.data_json, "{\"n\":[1,2.5e3,null]}", ev.data_json_len);
    assert_true(json_is_true(json_object_get(ev.obj, "x")));
    event_free(&ev);

    /* Line breaks: parsed whole, as before. */
    const char *lines = "{\"specversion\":\"1.0\",\"id\":\"f\",\"source\":\"/s\",\n"
                        "\"type\":\"t\",\"data\":{\"n\":1}}";
    assert_int_equal(event_from_structured(lines, strlen(lines), &ev, &err), 0);
    assert_non_null(json_object_get(ev.obj, "data"));
    assert_null(ev.data_json);
    event_free(&ev);

    static const struct {
        const char *body, *code, *attr, *msg;
    } bad[] = {
        /* a duplicate key inside the data: jansson's message */
        {"{\"specversion\":\"1.0\",\"id\":\"f\",\"source\":\"/s\",\"type\":\"t\","
         "\"data\":{\"a\":1,\"a\":2}}",
         "invalid_json", NULL, "duplicate object key"},
        {"{\"specversion\":\"1.0\",\"id\":\"f\",\"source\":\"/s\",\"type\":\"t\","
         "\"data\":{\"a\":01}}",
         "invalid_json", NULL, "invalid JSON at line 1"},
        {"{\"specversion\":\"1.0\",\"id\":\"f\",\"source\":\"/s\",\"type\":\"t\","
         "\"data\":1,\"data_base64\":\"AA==\"}",
         "invalid_event", "data_base64", "must not both be present"},
        {"{\"id\":\"f\",\"source\":\"/s\",\"type\":\"t\",\"data\":1}",
         "invalid_event", "specversion", "specversion"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = fresh_error();
        assert_int_equal(event_from_structured(bad[i].body, strlen(bad[i].body),
                                               &ev, &err), -EINVAL);
        assert_null(ev.obj);
        assert_null(ev.text);
        assert_string_equal(err.code, bad[i].code);
        if (bad[i].attr)
            assert_string_equal(err.attribute, bad[i].attr);
        if (!strstr(err.message, bad[i].msg))
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err.message, bad[i].msg);
    }
}

/* ---- batch ingest ------------------------------------------------------- */

static void test_event_batch_parses_all(void **state)
{
    (void)state;
    const char *body =
        "[\n" MIN_EVENT ",\n{\"specversion\":\"1.0\",\"id\":\"e-2\","
        "\"source\":\"/src\",\"type\":\"t\",\"data\":{\"a\" : 1}}\n]";
    struct event *evs = NULL;
    size_t n = 99;
    struct ce_error err = fresh_error();
    assert_int_equal(event_batch_from_json(body, strlen(body), 10, &evs, &n,
                                           &err),
                     0);
    assert_int_equal(n, 2);
    assert_non_null(evs);
    assert_int_equal(evs[0].format, EVENT_STRUCTURED);
    assert_string_equal(evs[0].text, MIN_EVENT);
    /* An element on one line is kept as received (its data is not
     * parsed); the data is found in it. */
    assert_string_equal(evs[1].text,
                        "{\"specversion\":\"1.0\",\"id\":\"e-2\",\"source\":"
                        "\"/src\",\"type\":\"t\",\"data\":{\"a\" : 1}}");
    assert_null(json_object_get(evs[1].obj, "data"));
    assert_memory_equal(evs[1].data_json, "{\"a\" : 1}", evs[1].data_json_len);
    assert_int_equal(evs[1].text_len, strlen(evs[1].text));
    for (size_t i = 0; i < n; i++)
        event_free(&evs[i]);
    free(evs);
}

static void test_event_batch_reports_index(void **state)
{
    (void)state;
    const char *body = "[" MIN_EVENT ",{\"specversion\":\"1.0\",\"id\":\"\","
                       "\"source\":\"s\",\"type\":\"t\"}," MIN_EVENT "]";
    struct event sentinel;
    struct event *evs = &sentinel; /* must be reset to NULL */
    size_t n = 99;
    struct ce_error err = fresh_error();
    assert_int_equal(event_batch_from_json(body, strlen(body), 10, &evs, &n,
                                           &err),
                     -EINVAL);
    assert_null(evs);
    assert_int_equal(n, 0);
    assert_string_equal(err.code, "invalid_event");
    assert_int_equal(err.index, 1);
    assert_string_equal(err.attribute, "id");
}

static void test_event_batch_reports_non_object_element(void **state)
{
    (void)state;
    const char *body = "[" MIN_EVENT "," MIN_EVENT ",7]";
    struct event *evs = NULL;
    size_t n = 0;
    struct ce_error err = fresh_error();
    assert_int_equal(event_batch_from_json(body, strlen(body), 10, &evs, &n,
                                           &err),
                     -EINVAL);
    assert_string_equal(err.code, "invalid_event");
    assert_int_equal(err.index, 2);
    assert_null(evs);
}

static void test_event_batch_rejects_over_max(void **state)
{
    (void)state;
    const char *body = "[" MIN_EVENT "," MIN_EVENT "," MIN_EVENT "]";
    struct event *evs = NULL;
    size_t n = 0;
    struct ce_error err = fresh_error();
    assert_int_equal(event_batch_from_json(body, strlen(body), 2, &evs, &n,
                                           &err),
                     -EINVAL);
    assert_string_equal(err.code, "too_large");
    assert_int_equal(err.index, -1);
    assert_null(evs);
    assert_int_equal(n, 0);

    /* Exactly at the limit is fine. */
    assert_int_equal(event_batch_from_json(body, strlen(body), 3, &evs, &n,
                                           &err),
                     0);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        event_free(&evs[i]);
    free(evs);
}

static void test_event_batch_accepts_empty(void **state)
{
    (void)state;
    struct event *evs = NULL;
    size_t n = 99;
    struct ce_error err = fresh_error();
    assert_int_equal(event_batch_from_json(" [ ] ", 5, 10, &evs, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_non_null(evs);
    free(evs);
}

static void test_event_batch_rejects_non_array(void **state)
{
    (void)state;
    struct event *evs = NULL;
    size_t n = 0;
    struct ce_error err = fresh_error();
    assert_int_equal(event_batch_from_json(MIN_EVENT, strlen(MIN_EVENT), 10,
                                           &evs, &n, &err),
                     -EINVAL);
    assert_string_equal(err.code, "invalid_event");
    assert_int_equal(event_batch_from_json("[1,", 3, 10, &evs, &n, &err),
                     -EINVAL);
    assert_string_equal(err.code, "invalid_json");
}

/* ---- binary ingest -------------------------------------------------------- */

static void test_event_binary_builds_attributes(void **state)
{
    (void)state;
    struct http_header h[] = {BASE_HEADERS, hdr("Host", "example.com"),
                              hdr("ce-subject", "sub"),
                              hdr("ce-time", "2026-11-22T10:00:00Z")};
    const char *body = "hello";
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_binary(h, sizeof(h) / sizeof(h[0]),
                                       "text/plain", body, 5, &ev, &err),
                     0);
    assert_int_equal(ev.format, EVENT_BINARY);
    assert_ptr_equal(ev.data, body); /* borrowed, not copied */
    assert_int_equal(ev.data_len, 5);
    assert_false(ev.data_owned);
    assert_json_text_equal(
        ev.text, "{\"specversion\":\"1.0\",\"id\":\"b-1\",\"source\":\"/bin\","
                 "\"type\":\"com.example.b\",\"subject\":\"sub\","
                 "\"time\":\"2026-11-22T10:00:00Z\","
                 "\"datacontenttype\":\"text/plain\"}");
    assert_null(strchr(ev.text, '\n'));
    assert_null(json_object_get(ev.obj, "host"));
    event_free(&ev);
}

static void test_event_binary_decodes_percent_encoding(void **state)
{
    (void)state;
    struct http_header h[] = {BASE_HEADERS,
                              hdr("ce-subject", "%E2%82%AC%20and%20%22q%22")};
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_binary(h, 5, NULL, "", 0, &ev, &err), 0);
    assert_string_equal(
        json_string_value(json_object_get(ev.obj, "subject")),
        "\xE2\x82\xAC and \"q\"");
    event_free(&ev);
}

static void test_event_binary_rejects_invalid_escape(void **state)
{
    (void)state;
    struct http_header h[] = {BASE_HEADERS, hdr("ce-subject", "100%")};
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_binary(h, 5, NULL, "", 0, &ev, &err),
                     -EINVAL);
    assert_string_equal(err.code, "invalid_event");
    assert_string_equal(err.attribute, "subject");
    assert_non_null(strstr(err.message, "percent-encoding"));
    assert_null(ev.obj);
}

static void test_event_binary_rejects_invalid_utf8(void **state)
{
    (void)state;
    struct http_header h[] = {BASE_HEADERS, hdr("ce-subject", "%C3%28")};
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_binary(h, 5, NULL, "", 0, &ev, &err),
                     -EINVAL);
    assert_string_equal(err.code, "invalid_event");
    assert_string_equal(err.attribute, "subject");
    assert_non_null(
        strstr(err.message, "not valid UTF-8 after percent-decoding"));

    /* Raw (unescaped) invalid UTF-8 is refused the same way. */
    h[4] = hdr("ce-subject", "\xFF");
    assert_int_equal(event_from_binary(h, 5, NULL, "", 0, &ev, &err),
                     -EINVAL);
    assert_string_equal(err.attribute, "subject");
}

static void test_event_binary_rejects_duplicate_attribute(void **state)
{
    (void)state;
    struct http_header h[] = {BASE_HEADERS, hdr("CE-ID", "other")};
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_binary(h, 5, NULL, "", 0, &ev, &err),
                     -EINVAL);
    assert_string_equal(err.code, "invalid_event");
    assert_string_equal(err.attribute, "id");
    assert_non_null(strstr(err.message, "more than once"));
}

static void test_event_binary_header_names_case_insensitive(void **state)
{
    (void)state;
    struct http_header h[] = {
        hdr("Ce-SpecVersion", "1.0"), hdr("CE-ID", "x"),
        hdr("ce-Source", "/s"), hdr("cE-tYpE", "t"), hdr("Ce-PartitionKey", "k")};
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_binary(h, 5, NULL, "", 0, &ev, &err), 0);
    assert_string_equal(
        json_string_value(json_object_get(ev.obj, "partitionkey")), "k");
    assert_string_equal(json_string_value(json_object_get(ev.obj, "id")), "x");
    event_free(&ev);
}

static void test_event_binary_rejects_invalid_attribute_name(void **state)
{
    (void)state;
    static const char *const names[] = {"ce-my_ext", "ce-", "ce-a.b",
                                        "ce-abcdefghijklmnopqrstu"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        struct http_header h[] = {BASE_HEADERS, hdr(names[i], "v")};
        struct event ev;
        struct ce_error err = fresh_error();
        assert_int_equal(event_from_binary(h, 5, NULL, "", 0, &ev, &err),
                         -EINVAL);
        assert_string_equal(err.code, "invalid_event");
        assert_string_equal(err.attribute, names[i] + 3);
        assert_non_null(strstr(err.message, names[i]));
    }
}

static void test_event_binary_rejects_data_headers(void **state)
{
    (void)state;
    static const char *const names[] = {"ce-data", "CE-Data_Base64"};
    for (size_t i = 0; i < 2; i++) {
        struct http_header h[] = {BASE_HEADERS, hdr(names[i], "eA==")};
        struct event ev;
        struct ce_error err = fresh_error();
        assert_int_equal(event_from_binary(h, 5, NULL, "", 0, &ev, &err),
                         -EINVAL);
        assert_string_equal(err.code, "invalid_event");
        assert_non_null(strstr(err.message, "body is the data"));
    }
}

static void test_event_binary_extensions_stay_strings(void **state)
{
    (void)state;
    struct http_header h[] = {BASE_HEADERS, hdr("ce-count", "5"),
                              hdr("ce-flag", "true")};
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_binary(h, 6, NULL, "", 0, &ev, &err), 0);
    assert_true(json_is_string(json_object_get(ev.obj, "count")));
    assert_true(json_is_string(json_object_get(ev.obj, "flag")));
    event_free(&ev);
}

static void test_event_binary_content_type_wins(void **state)
{
    (void)state;
    struct http_header h[] = {BASE_HEADERS,
                              hdr("ce-datacontenttype", "text/plain")};
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_binary(h, 5, "application/json", "{}", 2, &ev,
                                       &err),
                     0);
    assert_string_equal(
        json_string_value(json_object_get(ev.obj, "datacontenttype")),
        "application/json");
    event_free(&ev);

    /* Without Content-Type the ce- header supplies it. */
    assert_int_equal(event_from_binary(h, 5, NULL, "x", 1, &ev, &err), 0);
    assert_string_equal(
        json_string_value(json_object_get(ev.obj, "datacontenttype")),
        "text/plain");
    event_free(&ev);
}

static void test_event_binary_validates_attributes(void **state)
{
    (void)state;
    struct http_header h[] = {hdr("ce-id", "x"), hdr("ce-source", "/s"),
                              hdr("ce-type", "t")};
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_binary(h, 3, NULL, "", 0, &ev, &err),
                     -EINVAL);
    assert_string_equal(err.attribute, "specversion");

    struct http_header h2[] = {BASE_HEADERS, hdr("ce-time", "yesterday")};
    assert_int_equal(event_from_binary(h2, 5, NULL, "", 0, &ev, &err),
                     -EINVAL);
    assert_string_equal(err.attribute, "time");
    assert_null(ev.obj);
}

/* ---- attributes ---------------------------------------------------------- */

static void test_event_attr_formats_values(void **state)
{
    (void)state;
    const char *body = "{\"specversion\":\"1.0\",\"id\":\"e\",\"source\":\"s\","
                       "\"type\":\"t\",\"count\":-42,\"flag\":false,"
                       "\"on\":true,\"gone\":null,\"data\":\"d\"}";
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_structured(body, strlen(body), &ev, &err), 0);
    char scratch[32];
    assert_string_equal(event_attr(&ev, "id", scratch, sizeof(scratch)), "e");
    assert_string_equal(event_attr(&ev, "count", scratch, sizeof(scratch)),
                        "-42");
    assert_string_equal(event_attr(&ev, "flag", scratch, sizeof(scratch)),
                        "false");
    assert_string_equal(event_attr(&ev, "on", NULL, 0), "true");
    assert_null(event_attr(&ev, "gone", scratch, sizeof(scratch)));
    assert_null(event_attr(&ev, "missing", scratch, sizeof(scratch)));
    assert_null(event_attr(&ev, "data", scratch, sizeof(scratch)));
    /* No room to format an integer: absent rather than truncated. */
    assert_null(event_attr(&ev, "count", NULL, 0));
    assert_null(event_attr(&ev, "count", scratch, 3));
    event_free(&ev);
}

/* ---- structured output ---------------------------------------------------- */

static void test_event_to_structured_returns_text(void **state)
{
    (void)state;
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(
        event_from_structured(MIN_EVENT, strlen(MIN_EVENT), &ev, &err), 0);
    char *s = structured_of(&ev);
    assert_string_equal(s, MIN_EVENT);
    free(s);
    event_free(&ev);
}

/* Build a binary event with @ct and @data, return its structured form. */
static char *binary_to_structured(const char *ct, const char *data,
                                  size_t len)
{
    struct http_header h[] = {BASE_HEADERS};
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_binary(h, 4, ct, data, len, &ev, &err), 0);
    char *s = structured_of(&ev);
    event_free(&ev);
    return s;
}

#define BIN_ATTRS                                                            \
    "\"specversion\":\"1.0\",\"id\":\"b-1\",\"source\":\"/bin\","           \
    "\"type\":\"com.example.b\""

static void test_event_binary_json_data_becomes_object(void **state)
{
    (void)state;
    const char *data = "{\n  \"a\": [1, 2],\n  \"b\": \"x\"\n}\n";
    char *s = binary_to_structured("application/json; charset=utf-8", data,
                                   strlen(data));
    assert_json_text_equal(
        s, "{" BIN_ATTRS ",\"datacontenttype\":\"application/json; "
           "charset=utf-8\",\"data\":{\"a\":[1,2],\"b\":\"x\"}}");
    free(s);

    s = binary_to_structured("Application/Vnd.Foo+JSON", "42", 2);
    assert_json_text_equal(
        s, "{" BIN_ATTRS ",\"datacontenttype\":\"Application/Vnd.Foo+JSON\","
           "\"data\":42}");
    free(s);
}

static void test_event_binary_octet_stream_becomes_base64(void **state)
{
    (void)state;
    char *s = binary_to_structured("application/octet-stream", "foobar", 6);
    assert_json_text_equal(
        s, "{" BIN_ATTRS ",\"datacontenttype\":\"application/octet-stream\","
           "\"data_base64\":\"Zm9vYmFy\"}");
    free(s);
}

static void test_event_binary_text_data_becomes_string(void **state)
{
    (void)state;
    const char *data = "caf\xC3\xA9 \"quoted\"\n\ttab\\";
    char *s = binary_to_structured("text/plain", data, strlen(data));
    assert_json_text_equal(
        s, "{" BIN_ATTRS ",\"datacontenttype\":\"text/plain\","
           "\"data\":\"caf\xC3\xA9 \\\"quoted\\\"\\n\\ttab\\\\\"}");
    free(s);

    s = binary_to_structured("application/xml", "<a/>", 4);
    assert_json_text_equal(
        s, "{" BIN_ATTRS ",\"datacontenttype\":\"application/xml\","
           "\"data\":\"<a/>\"}");
    free(s);

    /* Without a datacontenttype, UTF-8 data reads as text. */
    s = binary_to_structured(NULL, "plain", 5);
    assert_json_text_equal(s, "{" BIN_ATTRS ",\"data\":\"plain\"}");
    free(s);
}

static void test_event_binary_control_bytes_escape(void **state)
{
    (void)state;
    char *s = binary_to_structured("text/plain", "a\x01\x1F" "b", 4);
    assert_non_null(strstr(s, "\"data\":\"a\\u0001\\u001fb\""));
    assert_json_text_equal(
        s, "{" BIN_ATTRS ",\"datacontenttype\":\"text/plain\","
           "\"data\":\"a\\u0001\\u001fb\"}");
    free(s);
}

static void test_event_binary_invalid_json_becomes_string(void **state)
{
    (void)state;
    char *s = binary_to_structured("application/json", "{not json", 9);
    assert_json_text_equal(
        s, "{" BIN_ATTRS ",\"datacontenttype\":\"application/json\","
           "\"data\":\"{not json\"}");
    free(s);
}

static void test_event_binary_non_utf8_text_becomes_base64(void **state)
{
    (void)state;
    char *s = binary_to_structured("text/plain", "\xFF\xFE", 2);
    assert_json_text_equal(
        s, "{" BIN_ATTRS ",\"datacontenttype\":\"text/plain\","
           "\"data_base64\":\"//4=\"}");
    free(s);
}

static void test_event_binary_empty_body_has_no_data(void **state)
{
    (void)state;
    char *s = binary_to_structured("application/json", "", 0);
    assert_json_text_equal(
        s, "{" BIN_ATTRS ",\"datacontenttype\":\"application/json\"}");
    free(s);
}

static void test_event_to_structured_respects_cap(void **state)
{
    (void)state;
    struct http_header h[] = {BASE_HEADERS};
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(
        event_from_binary(h, 4, "text/plain", "hello", 5, &ev, &err), 0);
    struct buf out;
    buf_init(&out, ev.text_len + 5);
    assert_int_equal(buf_puts(&out, "x"), 0);
    assert_int_equal(event_to_structured(&ev, &out), -E2BIG);
    assert_int_equal(out.len, 1); /* unaltered */
    buf_free(&out);
    event_free(&ev);
}

/* ---- binary output -------------------------------------------------------- */

static void test_event_binary_headers_from_structured(void **state)
{
    (void)state;
    const char *body =
        "{\"specversion\":\"1.0\",\"id\":\"e 1\",\"source\":\"/src\","
        "\"type\":\"t\",\"subject\":\"\xE2\x82\xAC%\",\"count\":7,"
        "\"flag\":true,\"gone\":null,\"data\":{\"a\":[1,2]}}";
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_structured(body, strlen(body), &ev, &err), 0);

    struct captured c = {0};
    struct buf scratch;
    buf_init(&scratch, BUF_MAX);
    const char *out;
    size_t out_len;
    assert_int_equal(
        event_binary_headers(&ev, capture_cb, &c, &scratch, &out, &out_len),
        0);
    assert_int_equal(c.n, 8);
    assert_string_equal(captured_get(&c, "ce-specversion"), "1.0");
    assert_string_equal(captured_get(&c, "ce-id"), "e%201");
    assert_string_equal(captured_get(&c, "ce-subject"), "%E2%82%AC%25");
    assert_string_equal(captured_get(&c, "ce-count"), "7");
    assert_string_equal(captured_get(&c, "ce-flag"), "true");
    assert_null(captured_get(&c, "ce-gone"));
    assert_null(captured_get(&c, "ce-data"));
    assert_string_equal(captured_get(&c, "Content-Type"), "application/json");
    /* Header names are given in lower case, in the object's order. */
    assert_string_equal(c.name[0], "ce-specversion");
    for (size_t i = 0; i + 1 < c.n; i++)
        for (const char *p = c.name[i]; *p; p++)
            assert_false(*p >= 'A' && *p <= 'Z');
    assert_int_equal(out_len, strlen("{\"a\":[1,2]}"));
    assert_memory_equal(out, "{\"a\":[1,2]}", out_len);
    captured_free(&c);
    buf_free(&scratch);
    event_free(&ev);
}

static void test_event_binary_headers_decodes_base64_body(void **state)
{
    (void)state;
    const char *body = "{\"specversion\":\"1.0\",\"id\":\"e\",\"source\":\"s\","
                       "\"type\":\"t\",\"datacontenttype\":"
                       "\"application/octet-stream\",\"data_base64\":\"AAEC/w==\"}";
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_structured(body, strlen(body), &ev, &err), 0);
    struct captured c = {0};
    struct buf scratch;
    buf_init(&scratch, BUF_MAX);
    const char *out;
    size_t out_len;
    assert_int_equal(
        event_binary_headers(&ev, capture_cb, &c, &scratch, &out, &out_len),
        0);
    assert_string_equal(captured_get(&c, "Content-Type"),
                        "application/octet-stream");
    assert_null(captured_get(&c, "ce-datacontenttype"));
    assert_null(captured_get(&c, "ce-data_base64"));
    assert_int_equal(out_len, 4);
    assert_memory_equal(out, "\x00\x01\x02\xFF", 4);
    captured_free(&c);
    buf_free(&scratch);
    event_free(&ev);
}

static void test_event_binary_headers_raw_string_for_text(void **state)
{
    (void)state;
    const char *body = "{\"specversion\":\"1.0\",\"id\":\"e\",\"source\":\"s\","
                       "\"type\":\"t\",\"datacontenttype\":\"text/plain\","
                       "\"data\":\"hello \\\"world\\\"\"}";
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_structured(body, strlen(body), &ev, &err), 0);
    struct captured c = {0};
    struct buf scratch;
    buf_init(&scratch, BUF_MAX);
    const char *out;
    size_t out_len;
    assert_int_equal(
        event_binary_headers(&ev, capture_cb, &c, &scratch, &out, &out_len),
        0);
    assert_string_equal(captured_get(&c, "Content-Type"), "text/plain");
    assert_int_equal(out_len, strlen("hello \"world\""));
    assert_memory_equal(out, "hello \"world\"", out_len);
    captured_free(&c);
    buf_free(&scratch);
    event_free(&ev);
}

static void test_event_binary_headers_json_string_data(void **state)
{
    (void)state;
    /* A string in JSON data without a type is JSON: quotes stay. */
    const char *body = "{\"specversion\":\"1.0\",\"id\":\"e\",\"source\":\"s\","
                       "\"type\":\"t\",\"data\":\"hi\"}";
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_structured(body, strlen(body), &ev, &err), 0);
    struct captured c = {0};
    struct buf scratch;
    buf_init(&scratch, BUF_MAX);
    const char *out;
    size_t out_len;
    assert_int_equal(
        event_binary_headers(&ev, capture_cb, &c, &scratch, &out, &out_len),
        0);
    assert_string_equal(captured_get(&c, "Content-Type"), "application/json");
    assert_int_equal(out_len, 4);
    assert_memory_equal(out, "\"hi\"", 4);
    captured_free(&c);
    buf_free(&scratch);
    event_free(&ev);
}

static void test_event_binary_headers_without_data(void **state)
{
    (void)state;
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(
        event_from_structured(MIN_EVENT, strlen(MIN_EVENT), &ev, &err), 0);
    struct captured c = {0};
    struct buf scratch;
    buf_init(&scratch, BUF_MAX);
    const char *out = NULL;
    size_t out_len = 99;
    assert_int_equal(
        event_binary_headers(&ev, capture_cb, &c, &scratch, &out, &out_len),
        0);
    assert_int_equal(c.n, 4);
    assert_null(captured_get(&c, "Content-Type"));
    assert_non_null(out);
    assert_int_equal(out_len, 0);
    captured_free(&c);
    buf_free(&scratch);
    event_free(&ev);
}

static void test_event_binary_headers_stops_on_callback_error(void **state)
{
    (void)state;
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(
        event_from_structured(MIN_EVENT, strlen(MIN_EVENT), &ev, &err), 0);
    struct captured c = {.fail_at = 2};
    struct buf scratch;
    buf_init(&scratch, BUF_MAX);
    const char *out;
    size_t out_len;
    assert_int_equal(
        event_binary_headers(&ev, capture_cb, &c, &scratch, &out, &out_len),
        -EIO);
    assert_int_equal(c.n, 1);
    assert_int_equal(scratch.len, 0);
    captured_free(&c);
    buf_free(&scratch);
    event_free(&ev);
}

static void test_event_binary_headers_from_binary_event(void **state)
{
    (void)state;
    struct http_header h[] = {BASE_HEADERS, hdr("ce-subject", "%E2%82%AC")};
    const char *body = "\x00\x01raw";
    struct event ev;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_binary(h, 5, "application/octet-stream", body,
                                       5, &ev, &err),
                     0);
    struct captured c = {0};
    struct buf scratch;
    buf_init(&scratch, BUF_MAX);
    assert_int_equal(buf_puts(&scratch, "keep"), 0);
    const char *out;
    size_t out_len;
    assert_int_equal(
        event_binary_headers(&ev, capture_cb, &c, &scratch, &out, &out_len),
        0);
    assert_ptr_equal(out, body); /* the stored bytes, not a copy */
    assert_int_equal(out_len, 5);
    assert_string_equal(captured_get(&c, "ce-subject"), "%E2%82%AC");
    assert_string_equal(captured_get(&c, "Content-Type"),
                        "application/octet-stream");
    assert_null(captured_get(&c, "ce-datacontenttype"));
    assert_int_equal(c.n, 6);
    assert_string_equal(scratch.data, "keep"); /* caller's bytes untouched */
    captured_free(&c);
    buf_free(&scratch);
    event_free(&ev);
}

static void test_event_binary_headers_refuse_header_injection(void **state)
{
    (void)state;
    /* Spool text is not re-validated, so delivery guards the one value
     * that goes out without percent-encoding. */
    const char *attrs = "{\"specversion\":\"1.0\",\"id\":\"e\","
                        "\"source\":\"s\",\"type\":\"t\","
                        "\"datacontenttype\":\"text/plain\\r\\nX-Evil: 1\"}";
    struct event ev;
    assert_int_equal(event_load(EVENT_BINARY, attrs, strlen(attrs), "x", 1,
                                &ev),
                     0);
    struct captured c = {0};
    struct buf scratch;
    buf_init(&scratch, BUF_MAX);
    const char *out;
    size_t out_len;
    assert_int_equal(
        event_binary_headers(&ev, capture_cb, &c, &scratch, &out, &out_len),
        -EINVAL);
    assert_null(captured_get(&c, "Content-Type"));
    captured_free(&c);
    buf_free(&scratch);
    event_free(&ev);
}

/* ---- round trips ---------------------------------------------------------- */

/*
 * structured -> binary headers/body -> event_from_binary -> structured,
 * which must be the same JSON object as @json.
 */
static void assert_round_trip(const char *json)
{
    struct event ev, back;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_structured(json, strlen(json), &ev, &err), 0);

    struct captured c = {0};
    struct buf scratch;
    buf_init(&scratch, BUF_MAX);
    const char *body;
    size_t body_len;
    assert_int_equal(
        event_binary_headers(&ev, capture_cb, &c, &scratch, &body, &body_len),
        0);
    char *body_copy = malloc(body_len + 1);
    assert_non_null(body_copy);
    memcpy(body_copy, body, body_len);

    struct http_header h[MAX_CAPTURED];
    const char *ct = NULL;
    size_t n = 0;
    for (size_t i = 0; i < c.n; i++) {
        if (strcmp(c.name[i], "Content-Type") == 0)
            ct = c.value[i];
        else
            h[n++] = hdr(c.name[i], c.value[i]);
    }
    assert_int_equal(
        event_from_binary(h, n, ct, body_copy, body_len, &back, &err), 0);
    char *s = structured_of(&back);
    assert_json_text_equal(s, json);

    free(s);
    event_free(&back);
    free(body_copy);
    captured_free(&c);
    buf_free(&scratch);
    event_free(&ev);
}

static void test_event_round_trip_json_data(void **state)
{
    (void)state;
    assert_round_trip(
        "{\"specversion\":\"1.0\",\"id\":\"r-1\",\"source\":\"/s p\","
        "\"type\":\"com.example.rt\",\"subject\":\"\xE2\x82\xAC \\\"q\\\" 100%\","
        "\"time\":\"2026-11-22T10:00:00.25+01:00\",\"partitionkey\":\"k\","
        "\"datacontenttype\":\"application/json\","
        "\"data\":{\"n\":[1,2,{\"x\":null}],\"s\":\"\xC3\xA9\"}}");
}

static void test_event_round_trip_text_data(void **state)
{
    (void)state;
    assert_round_trip(
        "{\"specversion\":\"1.0\",\"id\":\"r-2\",\"source\":\"/s\","
        "\"type\":\"t\",\"datacontenttype\":\"text/plain; charset=utf-8\","
        "\"data\":\"h\xC3\xA9llo\\nworld\"}");
}

static void test_event_round_trip_binary_data(void **state)
{
    (void)state;
    assert_round_trip(
        "{\"specversion\":\"1.0\",\"id\":\"r-3\",\"source\":\"/s\","
        "\"type\":\"t\",\"datacontenttype\":\"image/png\","
        "\"dataschema\":\"https://example.com/png\","
        "\"data_base64\":\"iVBORw0KGgoAAAAN/w==\"}");
}

static void test_event_round_trip_no_data(void **state)
{
    (void)state;
    assert_round_trip(MIN_EVENT);
}

static void test_event_round_trip_structured_json_suffix(void **state)
{
    (void)state;
    assert_round_trip(
        "{\"specversion\":\"1.0\",\"id\":\"r-4\",\"source\":\"/s\","
        "\"type\":\"t\",\"datacontenttype\":\"application/cloudevents+json\","
        "\"data\":[true,false,3.5,\"x\"]}");
}

/* ---- load and free ---------------------------------------------------------- */

static void test_event_load_rebuilds_structured(void **state)
{
    (void)state;
    struct event ev;
    assert_int_equal(event_load(EVENT_STRUCTURED, MIN_EVENT, strlen(MIN_EVENT),
                                NULL, 0, &ev),
                     0);
    assert_int_equal(ev.format, EVENT_STRUCTURED);
    assert_string_equal(ev.text, MIN_EVENT);
    char scratch[16];
    assert_string_equal(event_attr(&ev, "source", scratch, sizeof(scratch)),
                        "/src");
    char *s = structured_of(&ev);
    assert_string_equal(s, MIN_EVENT);
    free(s);
    event_free(&ev);
}

static void test_event_load_rebuilds_binary(void **state)
{
    (void)state;
    const char *attrs = "{" BIN_ATTRS ",\"datacontenttype\":\"text/plain\"}";
    const char data[] = "payload";
    struct event ev;
    assert_int_equal(event_load(EVENT_BINARY, attrs, strlen(attrs), data, 7,
                                &ev),
                     0);
    assert_ptr_equal(ev.data, data);
    assert_int_equal(ev.data_len, 7);
    assert_false(ev.data_owned);
    char *s = structured_of(&ev);
    assert_json_text_equal(s, "{" BIN_ATTRS ",\"datacontenttype\":"
                              "\"text/plain\",\"data\":\"payload\"}");
    free(s);
    event_free(&ev);
}

static void test_event_load_rejects_unreadable_text(void **state)
{
    (void)state;
    struct event ev;
    assert_int_equal(event_load(EVENT_STRUCTURED, "{\"a\":", 5, NULL, 0, &ev),
                     -EINVAL);
    assert_null(ev.obj);
    assert_int_equal(event_load(EVENT_BINARY, "[1]", 3, NULL, 0, &ev),
                     -EINVAL);
    assert_null(ev.text);
}

static void test_event_free_is_null_safe_and_frees_owned_data(void **state)
{
    (void)state;
    event_free(NULL);
    struct event ev;
    assert_int_equal(event_load(EVENT_BINARY, MIN_EVENT, strlen(MIN_EVENT),
                                NULL, 0, &ev),
                     0);
    /* Ownership of data handed over: event_free must release it (ASan
     * reports a leak otherwise). */
    ev.data = strdup("owned");
    ev.data_len = 5;
    ev.data_owned = true;
    event_free(&ev);
    assert_null(ev.data);
    assert_null(ev.obj);
    event_free(&ev); /* zeroed: a second free is harmless */
}

static void test_event_add_attr_sets_missing_extension_and_text(void **state)
{
    (void)state;
    struct event ev;
    struct ce_error err;
    const char *body = "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\"}";
    assert_int_equal(event_from_structured(body, strlen(body), &ev, &err), 0);
    assert_int_equal(event_add_attr(&ev, "traceparent",
                                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), 1);
    char scratch[32];
    assert_string_equal(event_attr(&ev, "traceparent", scratch, sizeof(scratch)),
                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    assert_non_null(strstr(ev.text, "\"traceparent\":\"00-0af7651916cd43dd8448eb211c80319c"));
    assert_null(strchr(ev.text, '\n'));
    /* present already: kept as it was */
    assert_int_equal(event_add_attr(&ev, "traceparent", "other"), 0);
    assert_non_null(strstr(ev.text, "b7ad6b7169203331"));
    event_free(&ev);
}

static void test_event_add_attr_rejects_bad_name_or_value(void **state)
{
    (void)state;
    struct event ev;
    struct ce_error err;
    const char *body = "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\"}";
    assert_int_equal(event_from_structured(body, strlen(body), &ev, &err), 0);
    char *before = strdup(ev.text);
    assert_int_equal(event_add_attr(&ev, "Trace", "x"), -EINVAL);
    assert_int_equal(event_add_attr(&ev, "traceparent", "a\r\nX-Evil: 1"), -EINVAL);
    assert_int_equal(event_add_attr(&ev, "traceparent", "\xff"), -EINVAL);
    assert_string_equal(ev.text, before);
    free(before);
    event_free(&ev);
}

/* ---- loading stored structured events ---------------------------------- */

/* Binary-mode output of @ev: its headers as "name: value\n" lines in
 * *@headers, its body in *@body (both new strings). */
static void binary_rendering(const struct event *ev, char **headers,
                             char **body)
{
    struct captured c = {0};
    struct buf scratch, out;
    buf_init(&scratch, BUF_MAX);
    buf_init(&out, BUF_MAX);
    const char *b;
    size_t b_len;
    assert_int_equal(
        event_binary_headers(ev, capture_cb, &c, &scratch, &b, &b_len), 0);
    for (size_t i = 0; i < c.n; i++)
        assert_int_equal(buf_printf(&out, "%s: %s\n", c.name[i], c.value[i]), 0);
    assert_int_equal(buf_append(&out, "", 1), 0);
    *headers = strdup(out.data);
    *body = strndup(b, b_len);
    captured_free(&c);
    buf_free(&scratch);
    buf_free(&out);
}

/* A loaded structured event answers event_attr() by scanning its text
 * where it can, and by parsing where it cannot: the answers are those of
 * the parsed event, for present, absent, escaped and non-string members. */
static void test_event_load_defers_attributes_same_answers(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\","
        "\"traceparent\":\"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\","
        "\"count\":7,\"flag\":false,\"esc\":\"a\\\"b\",\"data\":{\"traceparent\":1}}",
        "{ \"data\" : [1,\"x\"] , \"specversion\":\"1.0\",\"id\":\"2\","
        "\"source\":\"/a-rather-long-source-that-does-not-fit-a-small-scratch\","
        "\"type\":\"t\"}",
        "{\"specversion\":\"1.0\",\"id\":\"3\",\"source\":\"/s\",\"type\":\"t\","
        "\"tr\\u0061ceparent\":\"x\",\"data\":1}",
    };
    static const char *const names[] = {
        "id", "source", "type", "traceparent", "tracestate", "count", "flag",
        "esc", "subject", "specversion",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        struct event parsed, loaded;
        struct ce_error err = fresh_error();
        print_message("case %zu\n", i);
        assert_int_equal(event_from_structured(bodies[i], strlen(bodies[i]),
                                               &parsed, &err), 0);
        assert_int_equal(event_load(EVENT_STRUCTURED, parsed.text,
                                    parsed.text_len, NULL, 0, &loaded), 0);
        /* an escaped key: parsed at once, as before */
        assert_int_equal(loaded.attrs_deferred, i < 2);
        for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
            char s1[16], s2[16];
            const char *a = event_attr(&parsed, names[k], s1, sizeof(s1));
            const char *b = event_attr(&loaded, names[k], s2, sizeof(s2));
            print_message("  %s\n", names[k]);
            if (!a)
                assert_null(b);
            else
                assert_string_equal(a, b);
        }
        event_free(&parsed);
        event_free(&loaded);
    }
    /* A top-level string member with no escapes is read without a parse. */
    struct event ev;
    const char *t = bodies[0];
    struct event parsed;
    struct ce_error err = fresh_error();
    assert_int_equal(event_from_structured(t, strlen(t), &parsed, &err), 0);
    assert_int_equal(event_load(EVENT_STRUCTURED, parsed.text, parsed.text_len,
                                NULL, 0, &ev), 0);
    char scratch[64];
    assert_string_equal(event_attr(&ev, "traceparent", scratch, sizeof(scratch)),
                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    assert_null(event_attr(&ev, "tracestate", scratch, sizeof(scratch)));
    assert_true(ev.attrs_deferred); /* still not parsed */
    event_free(&ev);
    event_free(&parsed);
}

/* event_load leaves "data" unparsed; what it delivers must not change. */
static void test_event_load_splits_data_same_output(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        /* data first, in the middle, last, alone-ish; blanks around */
        "{\"data\":{\"a\":[1,{\"b\":\"}]\\\"\"}]},\"specversion\":\"1.0\","
        "\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\"}",
        "{\"specversion\":\"1.0\",\"id\":\"2\", \"data\" : [1, 2.50, -3e2] ,"
        " \"source\":\"/s\",\"type\":\"t\",\"subject\":\"x y\"}",
        "{\"specversion\":\"1.0\",\"id\":\"3\",\"source\":\"/s\",\"type\":\"t\","
        "\"count\":7,\"flag\":false,\"data\":\"q\\\"uote\\u00e9\"}",
        "{\"specversion\":\"1.0\",\"id\":\"4\",\"source\":\"/s\",\"type\":\"t\","
        "\"datacontenttype\":\"text/plain\",\"data\":\"hello \\\"w\\\"\\n\"}",
        "{\"specversion\":\"1.0\",\"id\":\"5\",\"source\":\"/s\",\"type\":\"t\","
        "\"data\":null}",
        "{\"specversion\":\"1.0\",\"id\":\"6\",\"source\":\"/s\",\"type\":\"t\","
        "\"data\":true}",
        "{\"specversion\":\"1.0\",\"id\":\"7\",\"source\":\"/s\",\"type\":\"t\","
        "\"datacontenttype\":\"application/octet-stream\","
        "\"data_base64\":\"AAEC/w==\"}",
        "{\"specversion\":\"1.0\",\"id\":\"8\",\"source\":\"/s\",\"type\":\"t\"}",
        /* an escaped key: the full parse, same answer */
        "{\"specversion\":\"1.0\",\"id\":\"9\",\"source\":\"/s\",\"type\":\"t\","
        "\"d\\u0061ta\":{\"k\":1}}",
        "{\"specversion\":\"1.0\",\"id\":\"10\",\"source\":\"/s\",\"type\":\"t\","
        "\"datacontenttype\":\"application/cloudevents+json\","
        "\"data\":\"{\\\"x\\\":1}\"}",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        struct event parsed, loaded;
        struct ce_error err = fresh_error();
        const char *b = bodies[i];
        char *h1, *b1, *h2, *b2;
        print_message("case %zu\n", i);
        assert_int_equal(event_from_structured(b, strlen(b), &parsed, &err), 0);
        assert_int_equal(event_load(EVENT_STRUCTURED, parsed.text,
                                    parsed.text_len, NULL, 0, &loaded), 0);
        binary_rendering(&parsed, &h1, &b1);
        binary_rendering(&loaded, &h2, &b2);
        assert_string_equal(h1, h2);
        /* JSON data goes out as sent instead of re-serialised: the same
         * JSON value, maybe not the same bytes. Anything else: the same. */
        if (strcmp(b1, b2) != 0) {
            assert_non_null(strstr(h1, "Content-Type: application/json"));
            json_t *x = json_loads(b1, JSON_DECODE_ANY, NULL);
            json_t *y = json_loads(b2, JSON_DECODE_ANY, NULL);
            assert_true(x && y && json_equal(x, y));
            json_decref(x);
            json_decref(y);
        }
        /* Structured output is the stored text either way. */
        struct buf s1, s2;
        buf_init(&s1, BUF_MAX);
        buf_init(&s2, BUF_MAX);
        assert_int_equal(event_to_structured(&parsed, &s1), 0);
        assert_int_equal(event_to_structured(&loaded, &s2), 0);
        assert_int_equal(s1.len, s2.len);
        assert_memory_equal(s1.data, s2.data, s1.len);
        buf_free(&s1);
        buf_free(&s2);
        free(h1);
        free(b1);
        free(h2);
        free(b2);
        event_free(&parsed);
        event_free(&loaded);
    }
}

/* The data member is left out of the parsed attributes, and attributes
 * still read as before. */
static void test_event_load_keeps_data_as_text(void **state)
{
    (void)state;
    const char *t = "{\"specversion\":\"1.0\",\"id\":\"i\",\"source\":\"/s\","
                    "\"type\":\"t\",\"data\":{\"big\":\"x\"},\"ext\":5}";
    struct event ev;
    char scratch[32];
    assert_int_equal(event_load(EVENT_STRUCTURED, t, strlen(t), NULL, 0, &ev), 0);
    assert_null(json_object_get(ev.obj, "data"));
    assert_non_null(ev.data_json);
    assert_int_equal(ev.data_json_len, strlen("{\"big\":\"x\"}"));
    assert_memory_equal(ev.data_json, "{\"big\":\"x\"}", ev.data_json_len);
    assert_string_equal(event_attr(&ev, "id", scratch, sizeof(scratch)), "i");
    assert_string_equal(event_attr(&ev, "ext", scratch, sizeof(scratch)), "5");
    /* An attribute added goes into the text in front; the data stays. */
    assert_int_equal(event_add_attr(&ev, "traceparent", "x\"y"), 1);
    assert_string_equal(ev.text,
                        "{\"traceparent\":\"x\\\"y\",\"specversion\":\"1.0\","
                        "\"id\":\"i\",\"source\":\"/s\",\"type\":\"t\","
                        "\"data\":{\"big\":\"x\"},\"ext\":5}");
    assert_int_equal(ev.text_len, strlen(ev.text));
    assert_memory_equal(ev.data_json, "{\"big\":\"x\"}", ev.data_json_len);
    assert_string_equal(event_attr(&ev, "traceparent", scratch, sizeof(scratch)),
                        "x\"y");
    assert_int_equal(event_add_attr(&ev, "traceparent", "z"), 0); /* has one */
    event_free(&ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_structured_parses_valid_event),
        cmocka_unit_test(test_event_structured_keeps_single_line_body),
        cmocka_unit_test(test_event_structured_compacts_multiline_body),
        cmocka_unit_test(test_event_structured_reports_invalid_json_position),
        cmocka_unit_test(test_event_structured_rejects_trailing_garbage),
        cmocka_unit_test(test_event_structured_rejects_duplicate_keys),
        cmocka_unit_test(test_event_structured_rejects_non_object),
        cmocka_unit_test(test_event_structured_rejects_empty_body),
        cmocka_unit_test(test_event_structured_reports_missing_attribute),
        cmocka_unit_test(test_event_structured_uses_body_length),
        cmocka_unit_test(test_event_structured_fast_path_keeps_data_text),
        cmocka_unit_test(test_event_batch_parses_all),
        cmocka_unit_test(test_event_batch_reports_index),
        cmocka_unit_test(test_event_batch_reports_non_object_element),
        cmocka_unit_test(test_event_batch_rejects_over_max),
        cmocka_unit_test(test_event_batch_accepts_empty),
        cmocka_unit_test(test_event_batch_rejects_non_array),
        cmocka_unit_test(test_event_binary_builds_attributes),
        cmocka_unit_test(test_event_binary_decodes_percent_encoding),
        cmocka_unit_test(test_event_binary_rejects_invalid_escape),
        cmocka_unit_test(test_event_binary_rejects_invalid_utf8),
        cmocka_unit_test(test_event_binary_rejects_duplicate_attribute),
        cmocka_unit_test(test_event_binary_header_names_case_insensitive),
        cmocka_unit_test(test_event_binary_rejects_invalid_attribute_name),
        cmocka_unit_test(test_event_binary_rejects_data_headers),
        cmocka_unit_test(test_event_binary_extensions_stay_strings),
        cmocka_unit_test(test_event_binary_content_type_wins),
        cmocka_unit_test(test_event_binary_validates_attributes),
        cmocka_unit_test(test_event_attr_formats_values),
        cmocka_unit_test(test_event_to_structured_returns_text),
        cmocka_unit_test(test_event_binary_json_data_becomes_object),
        cmocka_unit_test(test_event_binary_octet_stream_becomes_base64),
        cmocka_unit_test(test_event_binary_text_data_becomes_string),
        cmocka_unit_test(test_event_binary_control_bytes_escape),
        cmocka_unit_test(test_event_binary_invalid_json_becomes_string),
        cmocka_unit_test(test_event_binary_non_utf8_text_becomes_base64),
        cmocka_unit_test(test_event_binary_empty_body_has_no_data),
        cmocka_unit_test(test_event_to_structured_respects_cap),
        cmocka_unit_test(test_event_binary_headers_from_structured),
        cmocka_unit_test(test_event_binary_headers_decodes_base64_body),
        cmocka_unit_test(test_event_binary_headers_raw_string_for_text),
        cmocka_unit_test(test_event_load_splits_data_same_output),
        cmocka_unit_test(test_event_load_keeps_data_as_text),
        cmocka_unit_test(test_event_binary_headers_json_string_data),
        cmocka_unit_test(test_event_binary_headers_without_data),
        cmocka_unit_test(test_event_binary_headers_stops_on_callback_error),
        cmocka_unit_test(test_event_binary_headers_from_binary_event),
        cmocka_unit_test(test_event_binary_headers_refuse_header_injection),
        cmocka_unit_test(test_event_round_trip_json_data),
        cmocka_unit_test(test_event_round_trip_text_data),
        cmocka_unit_test(test_event_round_trip_binary_data),
        cmocka_unit_test(test_event_round_trip_no_data),
        cmocka_unit_test(test_event_round_trip_structured_json_suffix),
        cmocka_unit_test(test_event_load_rebuilds_structured),
        cmocka_unit_test(test_event_load_defers_attributes_same_answers),
        cmocka_unit_test(test_event_load_rebuilds_binary),
        cmocka_unit_test(test_event_load_rejects_unreadable_text),
        cmocka_unit_test(test_event_free_is_null_safe_and_frees_owned_data),
        cmocka_unit_test(test_event_add_attr_sets_missing_extension_and_text),
        cmocka_unit_test(test_event_add_attr_rejects_bad_name_or_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
