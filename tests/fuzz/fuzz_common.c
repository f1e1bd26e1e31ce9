/*
 * fuzz_common: the checks every event-producing fuzz target runs on an
 * event that ingest accepted (see fuzz.h). Everything here calls the
 * functions the product calls on the way out (routing, spool, delivery);
 * nothing re-implements them.
 */
#include "fuzz.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "buf.h"
#include "hdrcode.h"
#include "validate.h"

/* Delivery's own caps (peer_http.c BODY_MAX, peer_stdout.c LINES_MAX). */
#define OUT_MAX ((size_t)1 << 30)

/* A W3C traceparent, as ingest adopts it from a request header. */
#define TRACEPARENT "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

void fuzz_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "fuzz contract broken at %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

char *fuzz_strndup(const void *p, size_t len)
{
    char *s = malloc(len + 1);
    if (!s)
        abort();
    if (len)
        memcpy(s, p, len);
    s[len] = '\0';
    return s;
}

void fuzz_check_refusal(int rc, const struct ce_error *err)
{
    FUZZ_CHECK(rc == -EINVAL, "refusal with rc %d (expected -EINVAL)", rc);
    FUZZ_CHECK(err->code && (strcmp(err->code, "invalid_json") == 0 ||
                             strcmp(err->code, "invalid_event") == 0 ||
                             strcmp(err->code, "too_large") == 0),
               "refusal with code \"%s\"", err->code ? err->code : "(null)");
    size_t n = strnlen(err->message, sizeof(err->message));
    FUZZ_CHECK(n > 0 && n < sizeof(err->message), "empty or unterminated message");
    FUZZ_CHECK(utf8_valid(err->message, n), "message is not valid UTF-8: %s",
               err->message);
    n = strnlen(err->attribute, sizeof(err->attribute));
    FUZZ_CHECK(n < sizeof(err->attribute), "unterminated attribute");
    FUZZ_CHECK(utf8_valid(err->attribute, n),
               "attribute is not valid UTF-8: %s", err->attribute);
}

/* ---- binary output: the headers event_binary_headers() emits ---------- */

struct headers {
    struct http_header *items; /* ce- headers; name/value owned */
    size_t n, cap;
    char *content_type; /* owned, or NULL when none was emitted */
};

static void headers_free(struct headers *h)
{
    for (size_t i = 0; i < h->n; i++) {
        free((char *)(uintptr_t)h->items[i].name);
        free((char *)(uintptr_t)h->items[i].value);
    }
    free(h->items);
    free(h->content_type);
    memset(h, 0, sizeof(*h));
}

static int collect_header_cb(void *arg, const char *name, const char *value)
{
    struct headers *h = arg;
    size_t len = strlen(value);
    if (strcasecmp(name, "Content-Type") == 0) {
        FUZZ_CHECK(!h->content_type, "Content-Type emitted twice");
        /* It goes out unencoded: nothing may end the header line early. */
        for (size_t i = 0; i < len; i++)
            FUZZ_CHECK((unsigned char)value[i] >= 0x20 && value[i] != 0x7F,
                       "Content-Type holds control byte 0x%02x",
                       (unsigned char)value[i]);
        h->content_type = fuzz_strndup(value, len);
        return 0;
    }
    FUZZ_CHECK(strncmp(name, "ce-", 3) == 0, "unexpected header \"%s\"", name);
    /* Percent-encoded per the HTTP binding: printable ASCII only. */
    for (size_t i = 0; i < len; i++)
        FUZZ_CHECK(value[i] > 0x20 && value[i] < 0x7F,
                   "header %s: byte 0x%02x not percent-encoded", name,
                   (unsigned char)value[i]);
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 16;
        h->items = realloc(h->items, h->cap * sizeof(*h->items));
        if (!h->items)
            abort();
    }
    size_t name_len = strlen(name);
    h->items[h->n++] = (struct http_header){
        fuzz_strndup(name, name_len), name_len, fuzz_strndup(value, len), len};
    return 0;
}

/* An event's binary-mode rendering, as peer_http.c builds it. */
struct binary {
    struct headers h;
    struct buf scratch;
    const char *body; /* in @scratch, or borrowed from the event */
    size_t body_len;
};

static void render_binary(const struct event *ev, struct binary *b)
{
    memset(b, 0, sizeof(*b));
    buf_init(&b->scratch, OUT_MAX);
    int rc = event_binary_headers(ev, collect_header_cb, &b->h, &b->scratch,
                                  &b->body, &b->body_len);
    FUZZ_CHECK(rc == 0, "event_binary_headers failed: %d", rc);
}

static void binary_free(struct binary *b)
{
    headers_free(&b->h);
    buf_free(&b->scratch);
}

/*
 * @ev as one whole object: its attributes plus, when its data stayed text
 * (data_json: ingest and event_load parse only the attributes), that data
 * parsed. A new reference.
 */
static json_t *whole(const struct event *ev)
{
    json_t *o = json_deep_copy(ev->obj);
    FUZZ_CHECK(o, "out of memory");
    if (ev->data_json) {
        FUZZ_CHECK(!json_object_get(ev->obj, "data"),
                   "data both in the object and left as text");
        json_t *d = json_loadb(ev->data_json, ev->data_json_len,
                               JSON_DECODE_ANY, NULL);
        FUZZ_CHECK(d, "the data left as text is not JSON");
        json_object_set_new(o, "data", d);
    }
    return o;
}

/* ---- what ingest does to an event after parsing ----------------------- */

/*
 * Adopting a trace context (ingest.c adopt_trace_context) keeps the event
 * valid and its text in step with its object. @ev is one ingest produced.
 */
static void check_add_attr(struct event *ev)
{
    int rc = event_add_attr(ev, "traceparent", TRACEPARENT);
    FUZZ_CHECK(rc == 0 || rc == 1, "event_add_attr(traceparent): %d", rc);
    /* A tracestate taken from the event's own id: any text; refused when
     * it cannot be a header value. */
    char *id = fuzz_strndup(event_attr(ev, "id", NULL, 0),
                            strlen(event_attr(ev, "id", NULL, 0)));
    rc = event_add_attr(ev, "tracestate", id);
    free(id);
    FUZZ_CHECK(rc == 0 || rc == 1 || rc == -EINVAL,
               "event_add_attr(tracestate): %d", rc);
    json_t *obj = json_loadb(ev->text, ev->text_len, 0, NULL);
    json_t *w = whole(ev);
    FUZZ_CHECK(obj && json_equal(obj, w),
               "text after event_add_attr differs from the object");
    json_decref(w);
    struct ce_error err = {0};
    rc = validate_event(obj, ev->format == EVENT_STRUCTURED, -1, &err);
    FUZZ_CHECK(rc == 0, "event invalid after event_add_attr: %s", err.message);
    json_decref(obj);
}

/*
 * Binary output, ingested again in binary mode, gives the same attributes
 * in their string form (the binding carries every value as a string).
 */
static void check_binary_round_trip(const struct event *ev)
{
    struct binary b;
    render_binary(ev, &b);

    struct event back;
    struct ce_error err = {0};
    int rc = event_from_binary(b.h.items, b.h.n, b.h.content_type, b.body,
                               b.body_len, &back, &err);
    FUZZ_CHECK(rc == 0, "binary output refused by binary ingest: %s",
               err.message);
    FUZZ_CHECK(back.data_len == b.body_len, "binary body length changed");

    char scratch1[64];
    const char *name;
    json_t *v;
    json_object_foreach(back.obj, name, v) {
        const char *want = event_attr(ev, name, scratch1, sizeof(scratch1));
        /* Ferry names JSON data without a datacontenttype application/json. */
        if (!want && strcmp(name, "datacontenttype") == 0)
            continue;
        FUZZ_CHECK(want, "binary round trip invented attribute \"%s\"", name);
        FUZZ_CHECK(json_is_string(v) && strcmp(json_string_value(v), want) == 0,
                   "binary round trip changed attribute \"%s\"", name);
    }
    json_object_foreach(ev->obj, name, v) {
        if (json_is_null(v) || strcmp(name, "data") == 0 ||
            strcmp(name, "data_base64") == 0)
            continue;
        FUZZ_CHECK(json_object_get(back.obj, name),
                   "binary round trip lost attribute \"%s\"", name);
    }
    check_add_attr(&back);
    event_free(&back);
    binary_free(&b);
}

/* ---- structured output ------------------------------------------------ */

/* The data member of @again carries @ev's binary data. */
static void check_data_kept(const struct event *ev, json_t *again)
{
    json_t *b64 = json_object_get(again, "data_base64");
    json_t *data = json_object_get(again, "data");
    if (b64) {
        struct buf raw;
        buf_init(&raw, OUT_MAX);
        FUZZ_CHECK(base64_decode(json_string_value(b64),
                                 json_string_length(b64), &raw) == 0,
                   "data_base64 output does not decode");
        FUZZ_CHECK(raw.len == ev->data_len &&
                       memcmp(raw.data ? raw.data : "", ev->data, raw.len) == 0,
                   "data_base64 output differs from the binary data");
        buf_free(&raw);
        return;
    }
    FUZZ_CHECK(data, "structured output of binary data has no data member");
    if (json_is_string(data) && json_string_length(data) == ev->data_len &&
        memcmp(json_string_value(data), ev->data, ev->data_len) == 0)
        return; /* carried as text */
    json_t *parsed = json_loadb(ev->data, ev->data_len, JSON_DECODE_ANY, NULL);
    FUZZ_CHECK(parsed && json_equal(parsed, data),
               "structured output's data differs from the binary data");
    json_decref(parsed);
}

/* Structured output is an event structured ingest accepts, unchanged. */
static void check_structured_round_trip(const struct event *ev,
                                        const struct buf *out)
{
    struct event again;
    struct ce_error err = {0};
    int rc = event_from_structured(out->data, out->len, &again, &err);
    FUZZ_CHECK(rc == 0, "structured output refused by structured ingest: %s",
               err.message);
    json_t *w_again = whole(&again), *w_ev = whole(ev);
    if (ev->format == EVENT_STRUCTURED) {
        FUZZ_CHECK(json_equal(w_again, w_ev),
                   "structured round trip changed the event");
    } else {
        const char *name;
        json_t *v;
        json_object_foreach(ev->obj, name, v)
            FUZZ_CHECK(json_equal(json_object_get(w_again, name), v),
                       "structured output changed attribute \"%s\"", name);
        if (ev->data_len)
            check_data_kept(ev, w_again);
    }
    json_decref(w_again);
    json_decref(w_ev);
    check_add_attr(&again);
    event_free(&again);
}

/* ---- the spool: what the dispatcher loads and delivers ---------------- */

/* Two bodies carry the same data: the same bytes, or the same JSON. */
static bool same_body(const char *a, size_t a_len, const char *b, size_t b_len)
{
    if (a_len == b_len && memcmp(a, b, a_len) == 0)
        return true;
    json_t *ja = json_loadb(a, a_len, JSON_DECODE_ANY, NULL);
    json_t *jb = json_loadb(b, b_len, JSON_DECODE_ANY, NULL);
    bool same = ja && jb && json_equal(ja, jb);
    json_decref(ja);
    json_decref(jb);
    return same;
}

/*
 * The event as the dispatcher has it (event_load of the stored text and
 * data) delivers what the event ingest accepted would: the same structured
 * bytes, the same binary headers, and a binary body with the same data.
 * event_load may leave a structured event's "data" unparsed (data_json);
 * every other attribute must be in its object, equal.
 */
static void check_spool_round_trip(const struct event *ev,
                                   const struct buf *out)
{
    struct event copy;
    int rc = event_load(ev->format, ev->text, ev->text_len, ev->data,
                        ev->data_len, &copy);
    FUZZ_CHECK(rc == 0, "event_load refused the stored text: %d", rc);
    const char *name;
    json_t *v, *w_ev = whole(ev);
    /* Asked one by one first, a deferred event answers from its text
     * where it can (see event_attr): the same answers as the original. */
    json_object_foreach(w_ev, name, v) {
        char s1[64], s2[64];
        const char *a = event_attr(ev, name, s1, sizeof(s1));
        const char *b = event_attr(&copy, name, s2, sizeof(s2));
        FUZZ_CHECK((!a && !b) || (a && b && strcmp(a, b) == 0),
                   "reloaded event_attr(\"%s\") differs", name);
    }
    json_t *attrs = event_attrs(&copy);
    FUZZ_CHECK(attrs != NULL, "reloaded attributes do not parse");
    json_object_foreach(attrs, name, v)
        FUZZ_CHECK(json_equal(v, json_object_get(w_ev, name)),
                   "reloaded attribute \"%s\" differs", name);
    json_object_foreach(w_ev, name, v)
        FUZZ_CHECK(json_object_get(attrs, name) ||
                       (strcmp(name, "data") == 0 && copy.data_json),
                   "reloaded event lost \"%s\"", name);
    if (copy.data_json) {
        json_t *data = json_loadb(copy.data_json, copy.data_json_len,
                                  JSON_DECODE_ANY, NULL);
        FUZZ_CHECK(data && json_equal(data, json_object_get(w_ev, "data")),
                   "reloaded data text differs from the data");
        json_decref(data);
    }
    json_decref(w_ev);

    struct buf out2;
    buf_init(&out2, OUT_MAX);
    FUZZ_CHECK(event_to_structured(&copy, &out2) == 0,
               "structured output of the reloaded event failed");
    FUZZ_CHECK(out2.len == out->len && memcmp(out2.data, out->data, out->len) == 0,
               "reloaded event's structured output differs");
    buf_free(&out2);

    struct binary a, b;
    render_binary(ev, &a);
    render_binary(&copy, &b);
    FUZZ_CHECK(a.h.n == b.h.n, "reloaded event: %zu ce- headers, not %zu",
               b.h.n, a.h.n);
    for (size_t i = 0; i < a.h.n; i++)
        FUZZ_CHECK(strcmp(a.h.items[i].name, b.h.items[i].name) == 0 &&
                       strcmp(a.h.items[i].value, b.h.items[i].value) == 0,
                   "reloaded event: header %s differs", a.h.items[i].name);
    FUZZ_CHECK((!a.h.content_type && !b.h.content_type) ||
                   (a.h.content_type && b.h.content_type &&
                    strcmp(a.h.content_type, b.h.content_type) == 0),
               "reloaded event: Content-Type differs");
    FUZZ_CHECK(same_body(a.body, a.body_len, b.body, b.body_len),
               "reloaded event: binary body differs");
    binary_free(&a);
    binary_free(&b);

    check_binary_round_trip(&copy);
    event_free(&copy);
}

void fuzz_check_event(const struct event *ev)
{
    static const char *const required[] = {"id", "source", "specversion",
                                           "type"};
    static const char *const others[] = {
        "time", "subject", "datacontenttype", "dataschema", "partitionkey",
        "traceparent", "data", "data_base64", "nosuchattribute"};
    char scratch[32]; /* small on purpose: numbers must still fit or be NULL */

    FUZZ_CHECK(ev->obj && ev->text && ev->text_len == strlen(ev->text),
               "accepted event lacks its object or text");
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        const char *v = event_attr(ev, required[i], scratch, sizeof(scratch));
        FUZZ_CHECK(v && *v, "accepted event without \"%s\"", required[i]);
    }
    FUZZ_CHECK(strcmp(event_attr(ev, "specversion", NULL, 0), "1.0") == 0,
               "accepted specversion other than 1.0");
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
        (void)event_attr(ev, others[i], scratch, sizeof(scratch));

    struct buf out;
    buf_init(&out, OUT_MAX);
    int rc = event_to_structured(ev, &out);
    FUZZ_CHECK(rc == 0, "event_to_structured failed: %d", rc);
    check_structured_round_trip(ev, &out);
    check_binary_round_trip(ev);
    check_spool_round_trip(ev, &out);
    buf_free(&out);
}
