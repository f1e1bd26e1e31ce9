/*
 * Unit tests for the admin listener: admin_start on port 0 over a real
 * spool (writer running, no dispatcher), driven with libcurl. Dead
 * letters are made through the spool's own API (submit, then a DEAD
 * outcome), and every answer is checked as parsed JSON, along with what
 * it left in the spool.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "admin.h"
#include "buf.h"
#include "config.h"
#include "metrics.h"
#include "spool.h"

struct fixture {
    char dir[64];
    struct config *cfg;
    struct spool *spool;
    struct spool_reader *reader;
    struct admin *admin;
    char base[64];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t n_settled, n_done;
    /* reload callback */
    int reload_rc;
    const char *reload_msg;
    struct config *reload_cfg; /* adopted by the callback when set */
    int n_reloads;
};

static const char CONFIG[] =
    "{\"listen\":\"127.0.0.1:0\",\"admin\":{\"listen\":\"127.0.0.1:0\"%s},"
    "\"peers\":{\"a\":{\"url\":\"http://127.0.0.1:9/in\"},"
    "\"b\":{\"type\":\"file\",\"path\":\"/tmp/b.jsonl\"},"
    "\"c\":{\"type\":\"stdout\"}},"
    "\"routes\":[{\"to\":[\"a\",\"b\",\"c\"]}]}";

static struct config *load_config(const char *admin_extra)
{
    char doc[1024];
    struct config_errors errs;
    snprintf(doc, sizeof(doc), CONFIG, admin_extra);
    config_errors_init(&errs);
    struct config *cfg = config_parse(doc, strlen(doc), "test", &errs);
    for (size_t i = 0; i < errs.n; i++)
        print_error("config: %s\n", errs.items[i]);
    config_errors_free(&errs);
    assert_non_null(cfg);
    return cfg;
}

static void on_commit(void *arg, const struct spool_commit *c)
{
    struct fixture *f = arg;
    pthread_mutex_lock(&f->mu);
    f->n_settled += c->n_settled;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void on_done(struct spool_write *w)
{
    struct fixture *f = w->arg;
    pthread_mutex_lock(&f->mu);
    f->n_done++;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static int reload_cb(void *arg, char *msg, size_t len)
{
    struct fixture *f = arg;
    f->n_reloads++;
    if (f->reload_msg)
        snprintf(msg, len, "%s", f->reload_msg);
    if (f->reload_rc == 0 && f->reload_cfg)
        assert_int_equal(admin_set_config(f->admin, f->reload_cfg), 0);
    return f->reload_rc;
}

static void start_admin(struct fixture *f, const char *admin_extra)
{
    char err[256] = "";
    f->cfg = load_config(admin_extra);
    struct admin_deps deps = {.cfg = f->cfg, .spool = f->spool,
                              .reload = reload_cb, .reload_arg = f};
    f->admin = admin_start(&deps, err, sizeof(err));
    if (!f->admin)
        fail_msg("admin_start: %s", err);
    snprintf(f->base, sizeof(f->base), "http://127.0.0.1:%u",
             admin_port(f->admin));
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[256];
    snprintf(f->dir, sizeof(f->dir), "/tmp/ferry-test-admin-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    metrics_init();
    struct spool_options so = {.dir = f->dir};
    f->spool = spool_open(&so, err, sizeof(err));
    assert_non_null(f->spool);
    spool_set_commit_cb(f->spool, on_commit, f);
    f->reader = spool_reader_open(f->spool);
    assert_non_null(f->reader);
    assert_int_equal(spool_start(f->spool), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    admin_stop(f->admin);
    spool_reader_close(f->reader);
    spool_close(f->spool);
    config_destroy(f->cfg);
    config_destroy(f->reload_cfg);
    metrics_shutdown();
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
    return 0;
}

/* ---- spool helpers ------------------------------------------------------- */

/* One event to @peer, dead-lettered after a 503 and a 404; its id. */
static int64_t make_dead(struct fixture *f, const char *peer, const char *id)
{
    char text[160];
    snprintf(text, sizeof(text),
             "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/s\","
             "\"type\":\"com.x.dead\",\"data\":{\"n\":1}}",
             id);
    const char *peers[] = {peer};
    struct spool_event ev = {.source = "/s", .id = id,
                             .format = EVENT_STRUCTURED, .text = text,
                             .text_len = strlen(text), .peers = peers,
                             .n_peers = 1, .received_ms = 1000};
    struct spool_write w = {.events = &ev, .n_events = 1, .done = on_done,
                            .arg = f};
    pthread_mutex_lock(&f->mu);
    size_t done = f->n_done + 1;
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(spool_submit(f->spool, &w), 0);
    pthread_mutex_lock(&f->mu);
    while (f->n_done < done)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(w.result, 1);

    struct spool_delivery d[64];
    long n = spool_fetch_due(f->reader, peer, INT64_MAX - 1, 64, NULL, NULL, d);
    assert_true(n >= 1);
    int64_t did = d[n - 1].id;
    for (long i = 0; i < n; i++)
        spool_delivery_free(&d[i]);
    struct spool_outcome o[2] = {
        {.delivery_id = did, .kind = SPOOL_RETRY, .attempt = 1, .at_ms = 2000,
         .duration_ms = 5, .status = 503, .next_ms = 0},
        {.delivery_id = did, .kind = SPOOL_DEAD, .attempt = 2, .at_ms = 3000,
         .duration_ms = 6, .status = 404}};
    snprintf(o[1].reason, sizeof(o[1].reason), "status 404");
    pthread_mutex_lock(&f->mu);
    size_t target = f->n_settled + 2;
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(spool_post_outcomes(f->spool, o, 2), 0);
    pthread_mutex_lock(&f->mu);
    while (f->n_settled < target)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
    return did;
}

static void assert_counts(struct fixture *f, const char *peer, int64_t pending,
                          int64_t dead)
{
    int64_t p = -1, d = -1;
    spool_peer_counts(f->spool, peer, &p, &d);
    assert_int_equal(p, pending);
    assert_int_equal(d, dead);
}

/* ---- HTTP helpers -------------------------------------------------------- */

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
    return buf_append(arg, p, size * n) == 0 ? size * n : 0;
}

static size_t header_cb(char *p, size_t size, size_t n, void *arg)
{
    return buf_append(arg, p, size * n) == 0 ? size * n : 0;
}

struct answer {
    long status;
    json_t *json;  /* the parsed body (new), or NULL */
    struct buf headers;
};

/* @method @path (relative to the admin) with an optional token; the
 * answer's body must be JSON. */
static struct answer call(struct fixture *f, const char *method,
                          const char *path, const char *token)
{
    struct answer an = {0};
    struct buf body;
    char url[256], auth[160];
    buf_init(&body, 1 << 20);
    buf_init(&an.headers, 1 << 16);
    snprintf(url, sizeof(url), "%s%s", f->base, path);
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    if (token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "POST") == 0)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &an.headers);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &an.status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    an.json = json_loadb(body.data ? body.data : "", body.len, 0, NULL);
    if (!an.json)
        fail_msg("%s %s: body is not JSON: %s", method, path,
                 body.data ? body.data : "");
    buf_free(&body);
    return an;
}

static void answer_free(struct answer *an)
{
    json_decref(an->json);
    buf_free(&an->headers);
}

static const char *str(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        fail_msg("\"%s\" is not a string", key);
    return json_string_value(v);
}

static json_int_t num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        fail_msg("\"%s\" is not an integer", key);
    return json_integer_value(v);
}

/* Expect @status with error @code (and parameter @param when set). */
static void expect_error(struct fixture *f, const char *method,
                         const char *path, const char *token, long status,
                         const char *code, const char *param)
{
    struct answer an = call(f, method, path, token);
    if (an.status != status)
        fail_msg("%s %s: status %ld, want %ld", method, path, an.status,
                 status);
    assert_string_equal(str(an.json, "error"), code);
    assert_true(strlen(str(an.json, "message")) > 0);
    if (param)
        assert_string_equal(str(an.json, "parameter"), param);
    answer_free(&an);
}

/* ---- tests --------------------------------------------------------------- */

static void test_admin_list_fields_and_empty(void **state)
{
    struct fixture *f = *state;
    start_admin(f, "");
    struct answer an = call(f, "GET", "/v1/dead-letters", NULL);
    assert_int_equal(an.status, 200);
    assert_int_equal(json_array_size(json_object_get(an.json, "items")), 0);
    assert_true(json_is_null(json_object_get(an.json, "next")));
    answer_free(&an);

    int64_t id = make_dead(f, "a", "ev-1");
    an = call(f, "GET", "/v1/dead-letters", NULL);
    assert_int_equal(an.status, 200);
    json_t *items = json_object_get(an.json, "items");
    assert_int_equal(json_array_size(items), 1);
    json_t *it = json_array_get(items, 0);
    assert_int_equal(num(it, "id"), id);
    assert_string_equal(str(it, "peer"), "a");
    assert_string_equal(str(it, "event_id"), "ev-1");
    assert_string_equal(str(it, "source"), "/s");
    assert_string_equal(str(it, "type"), "com.x.dead");
    assert_int_equal(num(it, "attempts"), 2);
    assert_int_equal(num(it, "received_ms"), 1000);
    assert_true(num(it, "dead_ms") > 0);
    assert_string_equal(str(it, "reason"), "status 404");
    assert_int_equal(num(it, "last_status"), 404);
    assert_true(json_is_null(json_object_get(it, "last_error")));
    assert_non_null(strstr(an.headers.data, "application/json"));
    answer_free(&an);
}

static void test_admin_list_pages_and_filters(void **state)
{
    struct fixture *f = *state;
    start_admin(f, "");
    int64_t ids[5];
    const char *peers[] = {"a", "b", "a", "a", "c"};
    for (int i = 0; i < 5; i++) {
        char name[16];
        snprintf(name, sizeof(name), "p%d", i);
        ids[i] = make_dead(f, peers[i], name);
    }
    char path[128];
    const char *cursor = NULL;
    int seen = 0, pages = 0;
    json_t *keep = NULL;
    do {
        snprintf(path, sizeof(path), "/v1/dead-letters?limit=2%s%s",
                 cursor ? "&after=" : "", cursor ? cursor : "");
        struct answer an = call(f, "GET", path, NULL);
        assert_int_equal(an.status, 200);
        json_t *items = json_object_get(an.json, "items");
        for (size_t i = 0; i < json_array_size(items); i++)
            assert_int_equal(num(json_array_get(items, i), "id"), ids[seen++]);
        json_t *next = json_object_get(an.json, "next");
        json_decref(keep);
        keep = json_incref(next);
        cursor = json_is_string(next) ? json_string_value(next) : NULL;
        pages++;
        answer_free(&an);
    } while (cursor);
    json_decref(keep);
    assert_int_equal(seen, 5);
    assert_int_equal(pages, 3);

    struct answer an = call(f, "GET", "/v1/dead-letters?peer=a&limit=10", NULL);
    json_t *items = json_object_get(an.json, "items");
    assert_int_equal(json_array_size(items), 3);
    assert_int_equal(num(json_array_get(items, 2), "id"), ids[3]);
    assert_true(json_is_null(json_object_get(an.json, "next")));
    answer_free(&an);
    /* Exactly limit items left: no next page announced. */
    snprintf(path, sizeof(path), "/v1/dead-letters?limit=2&after=%lld",
             (long long)ids[2]);
    an = call(f, "GET", path, NULL);
    assert_int_equal(json_array_size(json_object_get(an.json, "items")), 2);
    assert_true(json_is_null(json_object_get(an.json, "next")));
    answer_free(&an);
}

static void test_admin_list_rejects_bad_parameters(void **state)
{
    struct fixture *f = *state;
    start_admin(f, "");
    static const char *const limits[] = {"0", "1001", "x", "-1", "1e3", ""};
    char path[96];
    for (size_t i = 0; i < sizeof(limits) / sizeof(*limits); i++) {
        snprintf(path, sizeof(path), "/v1/dead-letters?limit=%s", limits[i]);
        expect_error(f, "GET", path, NULL, 400, "invalid_parameter", "limit");
    }
    expect_error(f, "GET", "/v1/dead-letters?after=abc", NULL, 400,
                 "invalid_parameter", "after");
    expect_error(f, "GET", "/v1/dead-letters?peer=", NULL, 400,
                 "invalid_parameter", "peer");
    expect_error(f, "GET", "/v1/dead-letters?pear=a", NULL, 400,
                 "invalid_parameter", "pear");
    /* A typo must not turn a peer purge into a purge of everything. */
    int64_t id = make_dead(f, "a", "keep");
    expect_error(f, "DELETE", "/v1/dead-letters?pear=a", NULL, 400,
                 "invalid_parameter", "pear");
    assert_counts(f, "a", 0, 1);
    (void)id;
}

static void test_admin_show_has_attempts_and_event(void **state)
{
    struct fixture *f = *state;
    start_admin(f, "");
    int64_t id = make_dead(f, "a", "ev-show");
    char path[96];
    snprintf(path, sizeof(path), "/v1/dead-letters/%lld", (long long)id);
    struct answer an = call(f, "GET", path, NULL);
    assert_int_equal(an.status, 200);
    assert_int_equal(num(an.json, "id"), id);
    assert_string_equal(str(an.json, "reason"), "status 404");
    assert_int_equal(num(an.json, "attempt_count"), 2);
    json_t *att = json_object_get(an.json, "attempts");
    assert_int_equal(json_array_size(att), 2);
    json_t *a0 = json_array_get(att, 0);
    assert_int_equal(num(a0, "n"), 1);
    assert_int_equal(num(a0, "at_ms"), 2000);
    assert_int_equal(num(a0, "duration_ms"), 5);
    assert_int_equal(num(a0, "status"), 503);
    assert_true(json_is_null(json_object_get(a0, "error")));
    assert_int_equal(num(json_array_get(att, 1), "status"), 404);
    json_t *ev = json_object_get(an.json, "event");
    assert_string_equal(str(ev, "id"), "ev-show");
    assert_string_equal(str(ev, "type"), "com.x.dead");
    assert_int_equal(num(json_object_get(ev, "data"), "n"), 1);
    answer_free(&an);

    expect_error(f, "GET", "/v1/dead-letters/999999", NULL, 404, "not_found",
                 NULL);
    expect_error(f, "GET", "/v1/dead-letters/abc", NULL, 404, "not_found",
                 NULL);
    expect_error(f, "GET", "/v1/dead-letters/0", NULL, 404, "not_found", NULL);
}

static void test_admin_replay_one_and_unknown_peer(void **state)
{
    struct fixture *f = *state;
    start_admin(f, "");
    int64_t id = make_dead(f, "a", "r1");
    int64_t gone = make_dead(f, "gone", "r2");
    char path[96];
    snprintf(path, sizeof(path), "/v1/dead-letters/%lld/replay", (long long)id);
    struct answer an = call(f, "POST", path, NULL);
    assert_int_equal(an.status, 200);
    assert_int_equal(num(an.json, "replayed"), 1);
    answer_free(&an);
    assert_counts(f, "a", 1, 0);
    expect_error(f, "POST", path, NULL, 404, "not_found", NULL);

    snprintf(path, sizeof(path), "/v1/dead-letters/%lld/replay",
             (long long)gone);
    an = call(f, "POST", path, NULL);
    assert_int_equal(an.status, 409);
    assert_string_equal(str(an.json, "error"), "unknown_peer");
    assert_non_null(strstr(str(an.json, "message"), "\"gone\""));
    answer_free(&an);
    assert_counts(f, "gone", 0, 1);
}

static void test_admin_replay_all_and_by_peer(void **state)
{
    struct fixture *f = *state;
    start_admin(f, "");
    make_dead(f, "a", "x1");
    make_dead(f, "a", "x2");
    make_dead(f, "b", "x3");
    make_dead(f, "gone", "x4");

    struct answer an = call(f, "POST", "/v1/dead-letters/replay?peer=b", NULL);
    assert_int_equal(an.status, 200);
    assert_int_equal(num(an.json, "replayed"), 1);
    answer_free(&an);
    assert_counts(f, "b", 1, 0);
    expect_error(f, "POST", "/v1/dead-letters/replay?peer=gone", NULL, 409,
                 "unknown_peer", NULL);

    an = call(f, "POST", "/v1/dead-letters/replay", NULL);
    assert_int_equal(an.status, 200);
    assert_int_equal(num(an.json, "replayed"), 2);
    assert_int_equal(num(an.json, "skipped"), 1);
    json_t *sp = json_object_get(an.json, "skipped_peers");
    assert_int_equal(json_array_size(sp), 1);
    assert_string_equal(json_string_value(json_array_get(sp, 0)), "gone");
    answer_free(&an);
    assert_counts(f, "a", 2, 0);
    assert_counts(f, "gone", 0, 1);

    an = call(f, "POST", "/v1/dead-letters/replay?peer=a", NULL);
    assert_int_equal(num(an.json, "replayed"), 0);
    answer_free(&an);
}

static void test_admin_purge_one_peer_all(void **state)
{
    struct fixture *f = *state;
    start_admin(f, "");
    int64_t id = make_dead(f, "a", "y1");
    make_dead(f, "a", "y2");
    make_dead(f, "b", "y3");
    make_dead(f, "gone", "y4");
    char path[96];
    snprintf(path, sizeof(path), "/v1/dead-letters/%lld", (long long)id);
    struct answer an = call(f, "DELETE", path, NULL);
    assert_int_equal(an.status, 200);
    assert_int_equal(num(an.json, "purged"), 1);
    answer_free(&an);
    expect_error(f, "DELETE", path, NULL, 404, "not_found", NULL);
    assert_counts(f, "a", 0, 1);

    an = call(f, "DELETE", "/v1/dead-letters?peer=b", NULL);
    assert_int_equal(num(an.json, "purged"), 1);
    answer_free(&an);
    an = call(f, "DELETE", "/v1/dead-letters", NULL);
    assert_int_equal(an.status, 200);
    assert_int_equal(num(an.json, "purged"), 2);
    answer_free(&an);
    assert_counts(f, "a", 0, 0);
    assert_counts(f, "gone", 0, 0);
    an = call(f, "GET", "/v1/dead-letters", NULL);
    assert_int_equal(json_array_size(json_object_get(an.json, "items")), 0);
    answer_free(&an);
}

static json_t *find_peer(json_t *peers, const char *name)
{
    for (size_t i = 0; i < json_array_size(peers); i++)
        if (strcmp(str(json_array_get(peers, i), "name"), name) == 0)
            return json_array_get(peers, i);
    fail_msg("peer %s not listed", name);
    return NULL;
}

static void test_admin_peers(void **state)
{
    struct fixture *f = *state;
    start_admin(f, "");
    make_dead(f, "a", "z1");
    const char *const c_only[] = {"c"};
    struct spool_event ev = {.source = "/s", .id = "pending-c",
                             .format = EVENT_STRUCTURED, .text = "{}",
                             .text_len = 2, .peers = c_only, .n_peers = 1};
    struct spool_write w = {.events = &ev, .n_events = 1, .done = on_done,
                            .arg = f};
    pthread_mutex_lock(&f->mu);
    size_t done = f->n_done + 1;
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(spool_submit(f->spool, &w), 0);
    pthread_mutex_lock(&f->mu);
    while (f->n_done < done)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
    struct peer_metrics *pm = metrics_peer("a");
    atomic_store(&pm->breaker_state, METRICS_BREAKER_HALF_OPEN);
    atomic_store(&pm->in_flight, 3);

    struct answer an = call(f, "GET", "/v1/peers", NULL);
    assert_int_equal(an.status, 200);
    json_t *peers = json_object_get(an.json, "peers");
    assert_int_equal(json_array_size(peers), 3);
    json_t *a = find_peer(peers, "a");
    assert_string_equal(str(a, "type"), "http");
    assert_string_equal(str(a, "url"), "http://127.0.0.1:9/in");
    assert_string_equal(str(a, "breaker"), "half-open");
    assert_int_equal(num(a, "in_flight"), 3);
    assert_int_equal(num(a, "pending"), 0);
    assert_int_equal(num(a, "dead_letters"), 1);
    json_t *b = find_peer(peers, "b");
    assert_string_equal(str(b, "type"), "file");
    assert_string_equal(str(b, "path"), "/tmp/b.jsonl");
    assert_string_equal(str(b, "breaker"), "closed");
    json_t *c = find_peer(peers, "c");
    assert_string_equal(str(c, "type"), "stdout");
    assert_int_equal(num(c, "pending"), 1);
    assert_null(json_object_get(c, "url"));
    answer_free(&an);
}

static void test_admin_token_required_when_set(void **state)
{
    struct fixture *f = *state;
    start_admin(f, ",\"token\":\"s3cret\"");
    expect_error(f, "GET", "/v1/dead-letters", NULL, 401, "unauthorized", NULL);
    expect_error(f, "GET", "/v1/peers", "wrong", 401, "unauthorized", NULL);
    expect_error(f, "DELETE", "/v1/dead-letters", NULL, 401, "unauthorized",
                 NULL);
    expect_error(f, "POST", "/v1/reload", NULL, 401, "unauthorized", NULL);
    expect_error(f, "GET", "/nowhere", NULL, 401, "unauthorized", NULL);
    struct answer an = call(f, "GET", "/v1/peers", NULL);
    assert_non_null(strstr(an.headers.data, "WWW-Authenticate: Bearer"));
    answer_free(&an);
    an = call(f, "GET", "/v1/peers", "s3cret");
    assert_int_equal(an.status, 200);
    answer_free(&an);
    assert_int_equal(f->n_reloads, 0);
}

static void test_admin_unknown_path_and_method(void **state)
{
    struct fixture *f = *state;
    start_admin(f, "");
    expect_error(f, "GET", "/v1/nothing", NULL, 404, "not_found", NULL);
    expect_error(f, "GET", "/v1/dead-letters/1/replay/x", NULL, 404,
                 "not_found", NULL);
    expect_error(f, "GET", "/v1/dead-letters/1/nope", NULL, 404, "not_found",
                 NULL);
    struct answer an = call(f, "PUT", "/v1/dead-letters", NULL);
    assert_int_equal(an.status, 405);
    assert_string_equal(str(an.json, "error"), "method_not_allowed");
    assert_non_null(strstr(an.headers.data, "Allow: GET, DELETE"));
    answer_free(&an);
    expect_error(f, "GET", "/v1/dead-letters/replay", NULL, 405,
                 "method_not_allowed", NULL);
    expect_error(f, "GET", "/v1/dead-letters/5/replay", NULL, 405,
                 "method_not_allowed", NULL);
    expect_error(f, "POST", "/v1/dead-letters/5", NULL, 405,
                 "method_not_allowed", NULL);
    expect_error(f, "POST", "/v1/peers", NULL, 405, "method_not_allowed", NULL);
    expect_error(f, "GET", "/v1/reload", NULL, 405, "method_not_allowed", NULL);
}

static void test_admin_reload(void **state)
{
    struct fixture *f = *state;
    start_admin(f, "");
    f->reload_rc = -EINVAL;
    f->reload_msg = "routes[0].to[0]: no peer named \"x\"";
    struct answer an = call(f, "POST", "/v1/reload", NULL);
    assert_int_equal(an.status, 400);
    assert_string_equal(str(an.json, "error"), "invalid_config");
    assert_string_equal(str(an.json, "message"), f->reload_msg);
    answer_free(&an);

    f->reload_rc = -EIO;
    f->reload_msg = NULL;
    expect_error(f, "POST", "/v1/reload", NULL, 500, "reload_failed", NULL);

    /* A good reload adopts the new config: a token and one peer less. */
    f->reload_rc = 0;
    f->reload_cfg = load_config(",\"token\":\"new\"");
    free(f->reload_cfg->peers[2].name);
    f->reload_cfg->peers[2].name = strdup("d");
    an = call(f, "POST", "/v1/reload", NULL);
    assert_int_equal(an.status, 200);
    assert_true(json_is_true(json_object_get(an.json, "reloaded")));
    answer_free(&an);
    assert_int_equal(f->n_reloads, 3);
    expect_error(f, "GET", "/v1/peers", NULL, 401, "unauthorized", NULL);
    an = call(f, "GET", "/v1/peers", "new");
    json_t *peers = json_object_get(an.json, "peers");
    find_peer(peers, "d");
    answer_free(&an);
}

static void test_admin_reload_unavailable_without_callback(void **state)
{
    struct fixture *f = *state;
    char err[256];
    f->cfg = load_config("");
    struct admin_deps deps = {.cfg = f->cfg, .spool = f->spool};
    f->admin = admin_start(&deps, err, sizeof(err));
    assert_non_null(f->admin);
    snprintf(f->base, sizeof(f->base), "http://127.0.0.1:%u",
             admin_port(f->admin));
    expect_error(f, "POST", "/v1/reload", NULL, 501, "not_implemented", NULL);
}

static void test_admin_start_fails_on_a_taken_port(void **state)
{
    struct fixture *f = *state;
    char err[256] = "", addr[64];
    /* A plain listener (no SO_REUSEPORT) holds the port. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(fd, 1), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    struct config *cfg = load_config("");
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(sin.sin_port));
    free(cfg->admin.listen);
    cfg->admin.listen = strdup(addr);
    struct admin_deps deps = {.cfg = cfg, .spool = f->spool};
    assert_null(admin_start(&deps, err, sizeof(err)));
    assert_non_null(strstr(err, "admin listen"));
    config_destroy(cfg);
    close(fd);
}

static void test_admin_spool_stopped_answers_503(void **state)
{
    struct fixture *f = *state;
    start_admin(f, "");
    make_dead(f, "a", "s1");
    spool_stop(f->spool);
    expect_error(f, "DELETE", "/v1/dead-letters", NULL, 503, "unavailable",
                 NULL);
    expect_error(f, "POST", "/v1/dead-letters/replay?peer=a", NULL, 503,
                 "unavailable", NULL);
    /* Reads still work. */
    struct answer an = call(f, "GET", "/v1/dead-letters", NULL);
    assert_int_equal(an.status, 200);
    answer_free(&an);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_admin_list_fields_and_empty),
        T(test_admin_list_pages_and_filters),
        T(test_admin_list_rejects_bad_parameters),
        T(test_admin_show_has_attempts_and_event),
        T(test_admin_replay_one_and_unknown_peer),
        T(test_admin_replay_all_and_by_peer),
        T(test_admin_purge_one_peer_all),
        T(test_admin_peers),
        T(test_admin_token_required_when_set),
        T(test_admin_unknown_path_and_method),
        T(test_admin_reload),
        T(test_admin_reload_unavailable_without_callback),
        T(test_admin_start_fails_on_a_taken_port),
        T(test_admin_spool_stopped_answers_503),
    };
#undef T
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
