/*
 * test_reply: reading a peer's answer as a CloudEvent (reply_parse is
 * pure): structured and binary replies, plain answers, and the invalid
 * ones (bad events, batches, over the cap, too many headers). Routing and
 * storing replies run in test_dispatch against a real spool.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "metrics.h"
#include "peer.h"
#include "reply.h"

/* A reply as peer_http.c builds it: headers "name\0value\0" pairs. */
struct fake {
    struct peer_reply r;
    char hdrs[4096];
};

static void fake_init(struct fake *f, const char *content_type,
                      const char *body)
{
    memset(f, 0, sizeof(*f));
    f->r.status = 200;
    f->r.content_type = (char *)(uintptr_t)content_type;
    f->r.body = (char *)(uintptr_t)body;
    f->r.body_len = body ? strlen(body) : 0;
    f->r.headers = f->hdrs;
}

static void fake_header(struct fake *f, const char *name, const char *value)
{
    size_t n = strlen(name) + 1, v = strlen(value) + 1;
    assert_true(f->r.headers_len + n + v <= sizeof(f->hdrs));
    memcpy(f->hdrs + f->r.headers_len, name, n);
    memcpy(f->hdrs + f->r.headers_len + n, value, v);
    f->r.headers_len += n + v;
}

static const char *attr(const struct event *ev, const char *name)
{
    static char scratch[64];
    return event_attr(ev, name, scratch, sizeof(scratch));
}

#define STRUCTURED_EVENT                                                     \
    "{\"specversion\":\"1.0\",\"id\":\"r1\",\"source\":\"/p\","              \
    "\"type\":\"com.example.reply\",\"data\":{\"ok\":1}}"

static void test_reply_structured(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f, "application/cloudevents+json; charset=utf-8",
              STRUCTURED_EVENT);
    struct event ev;
    struct ce_error err;
    assert_int_equal(reply_parse(&f.r, &ev, &err), 1);
    assert_int_equal(ev.format, EVENT_STRUCTURED);
    assert_string_equal(attr(&ev, "id"), "r1");
    assert_string_equal(attr(&ev, "type"), "com.example.reply");
    event_free(&ev);
}

static void test_reply_binary(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f, "text/plain", "pong");
    fake_header(&f, "CE-SpecVersion", "1.0");
    fake_header(&f, "ce-id", "r2");
    fake_header(&f, "ce-source", "/peer%20a");
    fake_header(&f, "ce-type", "com.example.reply");
    struct event ev;
    struct ce_error err;
    assert_int_equal(reply_parse(&f.r, &ev, &err), 1);
    assert_int_equal(ev.format, EVENT_BINARY);
    assert_string_equal(attr(&ev, "source"), "/peer a");
    assert_string_equal(attr(&ev, "datacontenttype"), "text/plain");
    assert_int_equal(ev.data_len, 4);
    assert_ptr_equal(ev.data, f.r.body); /* borrowed */
    event_free(&ev);
}

static void test_reply_binary_without_data(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f, NULL, NULL);
    fake_header(&f, "ce-specversion", "1.0");
    fake_header(&f, "ce-id", "r3");
    fake_header(&f, "ce-source", "/p");
    fake_header(&f, "ce-type", "t");
    struct event ev;
    struct ce_error err;
    assert_int_equal(reply_parse(&f.r, &ev, &err), 1);
    assert_int_equal(ev.data_len, 0);
    event_free(&ev);
}

static void test_reply_plain_answer_is_none(void **state)
{
    (void)state;
    struct fake f;
    struct event ev;
    struct ce_error err;
    fake_init(&f, "application/json", STRUCTURED_EVENT);
    assert_int_equal(reply_parse(&f.r, &ev, &err), 0);
    fake_init(&f, NULL, "ok");
    fake_header(&f, "ce", "not an attribute header");
    assert_int_equal(reply_parse(&f.r, &ev, &err), 0);
    fake_init(&f, "text/html", "<html>");
    f.r.too_large = true; /* big, but not an event: nothing to say */
    assert_int_equal(reply_parse(&f.r, &ev, &err), 0);
}

static void expect_invalid(struct fake *f, const char *why)
{
    struct event ev;
    struct ce_error err;
    assert_int_equal(reply_parse(&f->r, &ev, &err), -EINVAL);
    if (!strstr(err.message, why))
        fail_msg("reason \"%s\" lacks \"%s\"", err.message, why);
    assert_null(ev.obj);
}

static void test_reply_invalid_events(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f, "application/cloudevents+json",
              "{\"specversion\":\"1.0\",\"id\":\"x\"}");
    expect_invalid(&f, "source");
    fake_init(&f, "application/cloudevents+json", "{not json");
    expect_invalid(&f, "");
    fake_init(&f, NULL, "x");
    fake_header(&f, "ce-specversion", "1.0");
    fake_header(&f, "ce-id", "no-source-no-type");
    expect_invalid(&f, "source");
    fake_init(&f, "application/cloudevents-batch+json",
              "[" STRUCTURED_EVENT "]");
    expect_invalid(&f, "batch");
}

static void test_reply_over_the_cap(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f, "application/cloudevents+json", "{\"specversion\":");
    f.r.too_large = true;
    expect_invalid(&f, "1 MiB");
}

static void test_reply_too_many_headers(void **state)
{
    (void)state;
    struct fake f;
    fake_init(&f, NULL, NULL);
    for (int i = 0; i < 70; i++) {
        char name[16];
        snprintf(name, sizeof(name), "ce-x%d", i);
        fake_header(&f, name, "v");
    }
    expect_invalid(&f, "64");
}

static void test_reply_without_route_is_dropped(void **state)
{
    (void)state;
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg)); /* no peers, no routes */
    struct peer_reply *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    r->content_type = strdup("application/cloudevents+json");
    r->body = strdup(STRUCTURED_EVENT);
    r->body_len = strlen(STRUCTURED_EVENT);
    struct event ev;
    struct ce_error err;
    assert_int_equal(reply_parse(r, &ev, &err), 1);
    long long n0 = metrics_received_total(METRICS_MODE_REPLY);
    /* no route: never reaches the spool, frees what it took */
    assert_int_equal(reply_submit(NULL, &cfg, &ev, r, "a", 0), 0);
    assert_null(ev.obj);
    assert_int_equal(metrics_received_total(METRICS_MODE_REPLY), n0 + 1);
}

static int group_setup(void **state)
{
    (void)state;
    metrics_init();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    metrics_shutdown();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_structured),
        cmocka_unit_test(test_reply_binary),
        cmocka_unit_test(test_reply_binary_without_data),
        cmocka_unit_test(test_reply_plain_answer_is_none),
        cmocka_unit_test(test_reply_invalid_events),
        cmocka_unit_test(test_reply_over_the_cap),
        cmocka_unit_test(test_reply_too_many_headers),
        cmocka_unit_test(test_reply_without_route_is_dropped),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
