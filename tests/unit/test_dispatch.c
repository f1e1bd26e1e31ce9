/*
 * test_dispatch: the dispatcher against a real spool (in a temp dir) and a
 * real loopback HTTP peer (libmicrohttpd on port 0) whose answers each
 * test scripts. Conditions are awaited with bounded polling; nothing here
 * asserts on durations (a few checks that something does NOT happen watch
 * for a while). Delays and attempt history are read back from the spool
 * (its reader API and, for dead letters, its tables). Also: circuit
 * breakers, Standard Webhooks signatures (checked with a one-shot HMAC,
 * not with sign.c) and reply events.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "clock.h"
#include "config.h"
#include "dispatch.h"
#include "event.h"
#include "filter.h"
#include "log.h"
#include "metrics.h"
#include "spool.h"

#define WAIT_MS 10000
#define MAX_REQS 64
#define MAX_HDRS 48

/* ---- the scripted peer ------------------------------------------------ */

struct step {
    int status;
    const char *retry_after; /* NULL: no header */
    bool hang;               /* hold the answer until released */
    const char *body;        /* NULL: {"ok":true} */
    const char *headers[13]; /* name, value, ..., NULL */
};

struct req {
    char *path;
    char *names[MAX_HDRS];
    char *values[MAX_HDRS];
    size_t n_hdrs;
    char *body;
    size_t body_len;
};

struct server {
    struct MHD_Daemon *mhd;
    uint16_t port;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct step steps[8]; /* answered in order, then 200 */
    size_t n_steps, next_step;
    struct req reqs[MAX_REQS];
    size_t n_reqs;
    bool released;
};

struct conn {
    char *body;
    size_t len;
};

static enum MHD_Result header_it(void *cls, enum MHD_ValueKind kind,
                                 const char *key, const char *value)
{
    (void)kind;
    struct req *r = cls;
    if (r->n_hdrs < MAX_HDRS) {
        r->names[r->n_hdrs] = strdup(key);
        r->values[r->n_hdrs] = strdup(value ? value : "");
        r->n_hdrs++;
    }
    return MHD_YES;
}

/* Record the request and pick its answer, under the lock. */
static struct step take_step(struct server *s, struct MHD_Connection *c,
                             const char *url, struct conn *cn)
{
    pthread_mutex_lock(&s->lock);
    if (s->n_reqs < MAX_REQS) {
        struct req *r = &s->reqs[s->n_reqs++];
        r->path = strdup(url);
        MHD_get_connection_values(c, MHD_HEADER_KIND, header_it, r);
        r->body = cn->body;
        r->body_len = cn->len;
        cn->body = NULL;
    }
    struct step st = {.status = 200};
    if (s->next_step < s->n_steps)
        st = s->steps[s->next_step++];
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return st;
}

static void hold(struct server *s)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 20; /* a safety net; tests release sooner */
    pthread_mutex_lock(&s->lock);
    while (!s->released)
        if (pthread_cond_timedwait(&s->cond, &s->lock, &until) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&s->lock);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c,
                               const char *url, const char *method,
                               const char *version, const char *upload,
                               size_t *upload_size, void **con_cls)
{
    (void)method;
    (void)version;
    struct server *s = cls;
    struct conn *cn = *con_cls;
    if (!cn) {
        *con_cls = calloc(1, sizeof(struct conn));
        return *con_cls ? MHD_YES : MHD_NO;
    }
    if (*upload_size) {
        char *p = realloc(cn->body, cn->len + *upload_size + 1);
        if (!p)
            return MHD_NO;
        memcpy(p + cn->len, upload, *upload_size);
        cn->len += *upload_size;
        p[cn->len] = '\0';
        cn->body = p;
        *upload_size = 0;
        return MHD_YES;
    }
    struct step st = take_step(s, c, url, cn);
    if (st.hang)
        hold(s);
    static char ok[] = "{\"ok\":true}";
    const char *body = st.body ? st.body : ok;
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        strlen(body), (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
    if (st.retry_after)
        MHD_add_response_header(resp, "Retry-After", st.retry_after);
    for (size_t i = 0; st.headers[i] && st.headers[i + 1]; i += 2)
        MHD_add_response_header(resp, st.headers[i], st.headers[i + 1]);
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)st.status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode code)
{
    (void)cls;
    (void)c;
    (void)code;
    struct conn *cn = *con_cls;
    if (cn) {
        free(cn->body);
        free(cn);
    }
    *con_cls = NULL;
}

static void server_start(struct server *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = 0;
    s->mhd = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
            MHD_USE_ERROR_LOG,
        0, NULL, NULL, handler, s, MHD_OPTION_SOCK_ADDR, &sin,
        MHD_OPTION_NOTIFY_COMPLETED, completed, s, MHD_OPTION_END);
    assert_non_null(s->mhd);
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(info);
    s->port = info->port;
    assert_true(s->port > 0);
}

static void server_release(struct server *s)
{
    pthread_mutex_lock(&s->lock);
    s->released = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void server_stop(struct server *s)
{
    if (!s->mhd)
        return;
    server_release(s);
    MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
    for (size_t i = 0; i < s->n_reqs; i++) {
        struct req *r = &s->reqs[i];
        free(r->path);
        free(r->body);
        for (size_t k = 0; k < r->n_hdrs; k++) {
            free(r->names[k]);
            free(r->values[k]);
        }
    }
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
}

static void server_script(struct server *s, const struct step *steps,
                          size_t n)
{
    pthread_mutex_lock(&s->lock);
    memcpy(s->steps, steps, n * sizeof(*steps));
    s->n_steps = n;
    s->next_step = 0;
    pthread_mutex_unlock(&s->lock);
}

static size_t server_count(struct server *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->n_reqs;
    pthread_mutex_unlock(&s->lock);
    return n;
}

/* Requests are only appended, so a recorded one can be read unlocked
 * once server_count() has shown it. */
static const char *req_header(const struct req *r, const char *name)
{
    for (size_t i = 0; i < r->n_hdrs; i++)
        if (strcasecmp(r->names[i], name) == 0)
            return r->values[i];
    return NULL;
}

/* ---- fixture ---------------------------------------------------------- */

struct fixture {
    char dir[64];
    struct server srv;
    struct config cfg;
    struct peer_config peers[3];
    struct route_config routes[2];
    size_t route_to[2][3];
    struct spool *spool;
    struct dispatch *d;
    struct spool_reader *reader; /* the test thread's */
};

static const struct retry_policy fast_retry = {
    .max_attempts = 5,
    .initial_delay_ms = 10,
    .max_delay_ms = 1000,
    .multiplier = 2.0,
    .jitter = JITTER_NONE,
    .max_age_s = 3600,
};

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    assert_non_null(p);
    return p;
}

static struct peer_config *add_peer(struct fixture *f, const char *name,
                                    enum peer_type type)
{
    assert_true(f->cfg.n_peers < 3);
    struct peer_config *pc = &f->peers[f->cfg.n_peers++];
    memset(pc, 0, sizeof(*pc));
    pc->name = xstrdup(name);
    pc->type = type;
    pc->timeout_ms = 5000;
    pc->max_in_flight = 4;
    pc->breaker.failure_threshold = 5;
    pc->breaker.open_ms = 30000;
    pc->retry = fast_retry;
    f->cfg.peers = f->peers;
    return pc;
}

static struct peer_config *add_http_peer(struct fixture *f, const char *name,
                                         const char *path,
                                         enum peer_mode mode)
{
    struct peer_config *pc = add_peer(f, name, PEER_HTTP);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s",
             (unsigned)f->srv.port, path);
    pc->url = xstrdup(url);
    pc->mode = mode;
    pc->headers = calloc(1, sizeof(*pc->headers));
    assert_non_null(pc->headers);
    pc->headers[0].name = xstrdup("X-Env");
    pc->headers[0].value = xstrdup("test");
    pc->n_headers = 1;
    return pc;
}

static struct spool *open_spool(struct fixture *f)
{
    char err[256] = "";
    struct spool_options opt = {
        .dir = f->dir, .max_bytes = INT64_C(1) << 30, .dedupe_window_s = 0};
    struct spool *s = spool_open(&opt, err, sizeof(err));
    if (!s)
        fail_msg("spool_open: %s", err);
    return s;
}

/* Spool, dispatcher (registered before spool_start), reader. */
static void start(struct fixture *f)
{
    char err[256] = "";
    f->spool = open_spool(f);
    f->d = dispatch_create(&f->cfg, f->spool, err, sizeof(err));
    if (!f->d)
        fail_msg("dispatch_create: %s", err);
    assert_int_equal(spool_start(f->spool), 0);
    assert_int_equal(dispatch_start(f->d), 0);
    f->reader = spool_reader_open(f->spool);
    assert_non_null(f->reader);
}

/* The serve.c order: dispatcher, spool writer, then free both. */
static void stop(struct fixture *f, int64_t drain_ms)
{
    if (f->d)
        dispatch_stop(f->d, clock_mono_ms() + drain_ms);
    if (f->spool)
        spool_stop(f->spool);
    dispatch_destroy(f->d);
    f->d = NULL;
    spool_reader_close(f->reader);
    f->reader = NULL;
    spool_close(f->spool);
    f->spool = NULL;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/ferry-dispatch-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    server_start(&f->srv);
    f->cfg.retry = fast_retry;
    *state = f;
    return 0;
}

static int rm_cb(const char *path, const struct stat *st, int flag,
                 struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    server_release(&f->srv);
    stop(f, 0);
    server_stop(&f->srv);
    for (size_t i = 0; i < f->cfg.n_peers; i++) {
        struct peer_config *pc = &f->peers[i];
        free(pc->name);
        free(pc->url);
        free(pc->path);
        for (size_t k = 0; k < pc->n_headers; k++) {
            free(pc->headers[k].name);
            free(pc->headers[k].value);
        }
        free(pc->headers);
        free(pc->signing_secret);
    }
    for (size_t i = 0; i < f->cfg.n_routes; i++)
        filter_destroy(f->routes[i].filter);
    nftw(f->dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* ---- helpers ---------------------------------------------------------- */

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Evaluates @cond until true (once more never: it may have effects). */
#define WAIT_FOR(cond)                                                       \
    do {                                                                     \
        int64_t until_ = clock_mono_ms() + WAIT_MS;                          \
        bool met_;                                                           \
        while (!(met_ = (cond)) && clock_mono_ms() < until_)                 \
            sleep_ms(5);                                                     \
        if (!met_)                                                           \
            fail_msg("timed out waiting for %s", #cond);                     \
    } while (0)

static void done_cb(struct spool_write *w)
{
    atomic_store((atomic_int *)w->arg, 1);
}

static void submit_event(struct spool *s, const struct event *ev,
                         const char *const *peers, size_t n_peers,
                         int64_t received_ms)
{
    char sb[64], ib[64];
    struct spool_event se = {
        .source = event_attr(ev, "source", sb, sizeof(sb)),
        .id = event_attr(ev, "id", ib, sizeof(ib)),
        .format = ev->format,
        .text = ev->text,
        .text_len = ev->text_len,
        .data = ev->data,
        .data_len = ev->data_len,
        .peers = peers,
        .n_peers = n_peers,
        .received_ms = received_ms,
    };
    atomic_int done = 0;
    struct spool_write w = {
        .events = &se, .n_events = 1, .done = done_cb, .arg = &done};
    assert_int_equal(spool_submit(s, &w), 0);
    WAIT_FOR(atomic_load(&done));
    assert_int_equal(w.result, 1);
}

static void submit_json(struct spool *s, const char *json,
                        const char *const *peers, size_t n_peers,
                        int64_t received_ms)
{
    struct event ev;
    struct ce_error err;
    if (event_from_structured(json, strlen(json), &ev, &err) != 0)
        fail_msg("bad test event: %s", err.message);
    submit_event(s, &ev, peers, n_peers, received_ms);
    event_free(&ev);
}

static void submit_simple(struct spool *s, const char *id,
                          const char *const *peers, size_t n_peers)
{
    char json[256];
    snprintf(json, sizeof(json),
             "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/test\","
             "\"type\":\"com.example.test\",\"data\":{\"n\":1}}",
             id);
    submit_json(s, json, peers, n_peers, clock_wall_ms());
}

static int64_t pending_of(struct fixture *f, const char *peer)
{
    int64_t pending = 0, dead = 0;
    spool_peer_counts(f->spool, peer, &pending, &dead);
    return pending;
}

static int64_t dead_of(struct fixture *f, const char *peer)
{
    int64_t pending = 0, dead = 0;
    spool_peer_counts(f->spool, peer, &pending, &dead);
    return dead;
}

/* The one pending delivery of @peer after @attempts attempts, or false. */
static bool pending_after(struct fixture *f, const char *peer, int attempts,
                          struct spool_delivery *out)
{
    struct spool_delivery rows[4];
    long n = spool_fetch_due(f->reader, peer, INT64_MAX, 4, NULL, NULL, rows);
    bool found = n == 1 && rows[0].attempts == attempts;
    if (found)
        *out = rows[0];
    for (long i = found ? 1 : 0; i < n; i++)
        spool_delivery_free(&rows[i]);
    return found;
}

struct dead_row {
    int64_t id;
    int attempts;
    long status;
    char reason[160];
    char error[160];
    int n_attempt_rows;
};

/* The dead letter of @peer, read from the spool's tables. */
static void dead_letter(struct fixture *f, const char *peer,
                        struct dead_row *out)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/spool.db", f->dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db,
                           "SELECT id, attempts, last_status, reason,"
                           " coalesce(last_error, ''), (SELECT count(*)"
                           " FROM attempts a WHERE a.delivery_id = d.id)"
                           " FROM dead_letters d WHERE peer = ?1",
                           -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_text(st, 1, peer, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    out->id = sqlite3_column_int64(st, 0);
    out->attempts = sqlite3_column_int(st, 1);
    out->status = (long)sqlite3_column_int64(st, 2);
    snprintf(out->reason, sizeof(out->reason), "%s",
             (const char *)sqlite3_column_text(st, 3));
    snprintf(out->error, sizeof(out->error), "%s",
             (const char *)sqlite3_column_text(st, 4));
    out->n_attempt_rows = sqlite3_column_int(st, 5);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE); /* exactly one */
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static const char *const to_a[] = {"a"};

/* A route from the events @filter_json matches (NULL: all) to peer @to. */
static void add_route(struct fixture *f, const char *filter_json, size_t to)
{
    assert_true(f->cfg.n_routes < 2);
    struct route_config *rc = &f->routes[f->cfg.n_routes];
    memset(rc, 0, sizeof(*rc));
    if (filter_json) {
        json_t *j = json_loads(filter_json, 0, NULL);
        assert_non_null(j);
        struct config_errors errs;
        config_errors_init(&errs);
        rc->filter = filter_parse(j, "routes[0].filter", &errs);
        assert_non_null(rc->filter);
        config_errors_free(&errs);
        json_decref(j);
    }
    f->route_to[f->cfg.n_routes][0] = to;
    rc->to = f->route_to[f->cfg.n_routes];
    rc->n_to = 1;
    f->cfg.routes = f->routes;
    f->cfg.n_routes++;
}

/* ---- tests: HTTP ------------------------------------------------------ */

static void test_dispatch_binary_mode(void **state)
{
    struct fixture *f = *state;
    add_http_peer(f, "a", "/events", PEER_MODE_BINARY);
    start(f);
    long long ok0 = atomic_load(&metrics_peer("a")->success);
    submit_json(f->spool,
                "{\"specversion\":\"1.0\",\"id\":\"e 1\",\"source\":\"/src\","
                "\"type\":\"com.example.t\",\"datacontenttype\":"
                "\"application/json\",\"data\":{\"a\":1},\"traceparent\":"
                "\"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\"}",
                to_a, 1, clock_wall_ms());
    WAIT_FOR(server_count(&f->srv) >= 1 && pending_of(f, "a") == 0);
    const struct req *r = &f->srv.reqs[0];
    assert_string_equal(r->path, "/events");
    assert_string_equal(req_header(r, "ce-id"), "e%201");
    assert_string_equal(req_header(r, "ce-source"), "/src");
    assert_string_equal(req_header(r, "ce-type"), "com.example.t");
    assert_string_equal(req_header(r, "ce-specversion"), "1.0");
    assert_string_equal(req_header(r, "Content-Type"), "application/json");
    assert_string_equal(
        req_header(r, "traceparent"),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    assert_non_null(req_header(r, "ce-traceparent"));
    assert_string_equal(req_header(r, "Prefer"), "reply");
    assert_string_equal(req_header(r, "X-Env"), "test");
    assert_null(req_header(r, "Expect"));
    assert_null(req_header(r, "tracestate"));
    assert_non_null(r->body);
    json_t *body = json_loadb(r->body, r->body_len, 0, NULL);
    assert_non_null(body);
    assert_int_equal(json_integer_value(json_object_get(body, "a")), 1);
    json_decref(body);
    assert_int_equal(dead_of(f, "a"), 0);
    WAIT_FOR(atomic_load(&metrics_peer("a")->success) == ok0 + 1);
}

static void test_dispatch_binary_event_body_is_data(void **state)
{
    struct fixture *f = *state;
    add_http_peer(f, "a", "/", PEER_MODE_BINARY);
    start(f);
    static const char body[] = "hello, world";
    struct http_header hdrs[] = {
        {"ce-specversion", 14, "1.0", 3},
        {"ce-id", 5, "b1", 2},
        {"ce-source", 9, "/bin", 4},
        {"ce-type", 7, "com.example.bin", 15},
    };
    struct event ev;
    struct ce_error err;
    assert_int_equal(event_from_binary(hdrs, 4, "text/plain", body,
                                       sizeof(body) - 1, &ev, &err),
                     0);
    submit_event(f->spool, &ev, to_a, 1, clock_wall_ms());
    event_free(&ev);
    WAIT_FOR(server_count(&f->srv) >= 1 && pending_of(f, "a") == 0);
    const struct req *r = &f->srv.reqs[0];
    assert_string_equal(req_header(r, "ce-id"), "b1");
    assert_string_equal(req_header(r, "Content-Type"), "text/plain");
    assert_int_equal(r->body_len, sizeof(body) - 1);
    assert_memory_equal(r->body, body, sizeof(body) - 1);
}

static void test_dispatch_structured_mode(void **state)
{
    struct fixture *f = *state;
    add_http_peer(f, "a", "/s", PEER_MODE_STRUCTURED);
    start(f);
    submit_simple(f->spool, "s1", to_a, 1);
    WAIT_FOR(server_count(&f->srv) >= 1 && pending_of(f, "a") == 0);
    const struct req *r = &f->srv.reqs[0];
    assert_string_equal(req_header(r, "Content-Type"),
                        "application/cloudevents+json; charset=utf-8");
    assert_null(req_header(r, "ce-id"));
    assert_string_equal(req_header(r, "Prefer"), "reply");
    json_t *ev = json_loadb(r->body, r->body_len, 0, NULL);
    assert_non_null(ev);
    assert_string_equal(json_string_value(json_object_get(ev, "id")), "s1");
    assert_string_equal(json_string_value(json_object_get(ev, "specversion")),
                        "1.0");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(ev, "data"), "n")),
        1);
    json_decref(ev);
}

static void test_dispatch_fan_out_to_two_peers(void **state)
{
    struct fixture *f = *state;
    add_http_peer(f, "a", "/a", PEER_MODE_BINARY);
    add_http_peer(f, "b", "/b", PEER_MODE_STRUCTURED);
    start(f);
    static const char *const both[] = {"a", "b"};
    submit_simple(f->spool, "f1", both, 2);
    WAIT_FOR(server_count(&f->srv) >= 2 && pending_of(f, "a") == 0 &&
             pending_of(f, "b") == 0);
    assert_int_equal(server_count(&f->srv), 2);
    bool seen_a = false, seen_b = false;
    for (size_t i = 0; i < 2; i++) {
        const struct req *r = &f->srv.reqs[i];
        if (strcmp(r->path, "/a") == 0)
            seen_a = strcmp(req_header(r, "ce-id"), "f1") == 0;
        if (strcmp(r->path, "/b") == 0)
            seen_b = strstr(r->body, "\"f1\"") != NULL;
    }
    assert_true(seen_a);
    assert_true(seen_b);
}

static void test_dispatch_retry_then_success(void **state)
{
    struct fixture *f = *state;
    add_http_peer(f, "a", "/", PEER_MODE_BINARY);
    static const struct step steps[] = {{.status = 503}, {.status = 503},
                                        {.status = 200}};
    server_script(&f->srv, steps, 3);
    start(f);
    struct peer_metrics *pm = metrics_peer("a");
    long long retry0 = atomic_load(&pm->retry), ok0 = atomic_load(&pm->success);
    submit_simple(f->spool, "r1", to_a, 1);
    WAIT_FOR(server_count(&f->srv) >= 3 && pending_of(f, "a") == 0);
    assert_int_equal(server_count(&f->srv), 3);
    assert_int_equal(dead_of(f, "a"), 0);
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(req_header(&f->srv.reqs[i], "ce-id"), "r1");
    WAIT_FOR(atomic_load(&pm->success) == ok0 + 1);
    assert_int_equal(atomic_load(&pm->retry), retry0 + 2);
}

static void test_dispatch_retry_after_raises_delay(void **state)
{
    struct fixture *f = *state;
    struct peer_config *pc = add_http_peer(f, "a", "/", PEER_MODE_BINARY);
    pc->retry.max_delay_ms = 7200 * 1000;
    pc->retry.max_age_s = 86400; /* or the retry would be past it */
    static const struct step steps[] = {{.status = 429, .retry_after = "3600"}};
    server_script(&f->srv, steps, 1);
    start(f);
    int64_t t0 = clock_wall_ms();
    submit_json(f->spool,
                "{\"specversion\":\"1.0\",\"id\":\"ra\",\"source\":\"/t\","
                "\"type\":\"t\"}",
                to_a, 1, t0);
    struct spool_delivery row;
    memset(&row, 0, sizeof(row));
    WAIT_FOR(pending_after(f, "a", 1, &row));
    /* backoff alone would be 10 ms; Retry-After: 3600 set the time */
    assert_true(row.next_ms >= t0 + 3600 * 1000);
    assert_true(row.next_ms <= clock_wall_ms() + 3600 * 1000);
    spool_delivery_free(&row);
    assert_int_equal(server_count(&f->srv), 1);
    /* no data, no datacontenttype: no Content-Type (not curl's form type) */
    assert_null(req_header(&f->srv.reqs[0], "Content-Type"));
    assert_int_equal(f->srv.reqs[0].body_len, 0);
}

static void test_dispatch_retry_after_capped_by_max_delay(void **state)
{
    struct fixture *f = *state;
    struct peer_config *pc = add_http_peer(f, "a", "/", PEER_MODE_BINARY);
    pc->retry.max_delay_ms = 60 * 1000;
    static const struct step steps[] = {
        {.status = 503, .retry_after = "86400"}};
    server_script(&f->srv, steps, 1);
    start(f);
    int64_t t0 = clock_wall_ms();
    submit_simple(f->spool, "cap", to_a, 1);
    struct spool_delivery row;
    memset(&row, 0, sizeof(row));
    WAIT_FOR(pending_after(f, "a", 1, &row));
    assert_true(row.next_ms >= t0 + 60 * 1000);
    assert_true(row.next_ms <= clock_wall_ms() + 60 * 1000);
    spool_delivery_free(&row);
}

static void test_dispatch_4xx_dead_letters_after_one_attempt(void **state)
{
    struct fixture *f = *state;
    add_http_peer(f, "a", "/", PEER_MODE_BINARY);
    static const struct step steps[] = {{.status = 404}, {.status = 200}};
    server_script(&f->srv, steps, 2);
    start(f);
    submit_simple(f->spool, "nf", to_a, 1);
    WAIT_FOR(dead_of(f, "a") == 1);
    assert_int_equal(pending_of(f, "a"), 0);
    assert_int_equal(server_count(&f->srv), 1);
    struct dead_row dr;
    dead_letter(f, "a", &dr);
    assert_int_equal(dr.attempts, 1);
    assert_int_equal(dr.status, 404);
    assert_string_equal(dr.reason, "HTTP 404 is not retryable");
    assert_int_equal(dr.n_attempt_rows, 1);
}

static void test_dispatch_max_attempts_exhaustion(void **state)
{
    struct fixture *f = *state;
    struct peer_config *pc = add_http_peer(f, "a", "/", PEER_MODE_BINARY);
    pc->retry.max_attempts = 3;
    static const struct step steps[] = {
        {.status = 500}, {.status = 502}, {.status = 503}, {.status = 200}};
    server_script(&f->srv, steps, 4);
    start(f);
    submit_simple(f->spool, "mx", to_a, 1);
    WAIT_FOR(dead_of(f, "a") == 1);
    assert_int_equal(pending_of(f, "a"), 0);
    assert_int_equal(server_count(&f->srv), 3);
    struct dead_row dr;
    dead_letter(f, "a", &dr);
    assert_int_equal(dr.attempts, 3);
    assert_int_equal(dr.status, 503);
    assert_string_equal(dr.reason, "max_attempts (3) reached");
    assert_int_equal(dr.n_attempt_rows, 3);
}

static void test_dispatch_timeout_counts_as_failure(void **state)
{
    struct fixture *f = *state;
    struct peer_config *pc = add_http_peer(f, "a", "/", PEER_MODE_BINARY);
    pc->timeout_ms = 200;
    pc->retry.max_attempts = 1;
    static const struct step steps[] = {{.status = 200, .hang = true}};
    server_script(&f->srv, steps, 1);
    start(f);
    submit_simple(f->spool, "to", to_a, 1);
    WAIT_FOR(dead_of(f, "a") == 1);
    server_release(&f->srv);
    struct dead_row dr;
    dead_letter(f, "a", &dr);
    assert_int_equal(dr.attempts, 1);
    assert_int_equal(dr.status, 0);
    assert_string_equal(dr.reason, "max_attempts (1) reached");
    assert_non_null(strcasestr(dr.error, "timed out"));
    assert_int_equal(dr.n_attempt_rows, 1);
}

static void test_dispatch_connection_refused_is_retried(void **state)
{
    struct fixture *f = *state;
    struct peer_config *pc = add_peer(f, "a", PEER_HTTP);
    /* a port nobody listens on: bind one, note it, close it */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", ntohs(sin.sin_port));
    pc->url = xstrdup(url);
    pc->retry.max_attempts = 2;
    start(f);
    submit_simple(f->spool, "cr", to_a, 1);
    WAIT_FOR(dead_of(f, "a") == 1);
    struct dead_row dr;
    dead_letter(f, "a", &dr);
    assert_int_equal(dr.attempts, 2);
    assert_string_equal(dr.reason, "max_attempts (2) reached");
    assert_true(dr.error[0] != '\0');
}

static void test_dispatch_too_old_dead_letters_without_attempt(void **state)
{
    struct fixture *f = *state;
    struct peer_config *pc = add_http_peer(f, "a", "/", PEER_MODE_BINARY);
    pc->retry.max_age_s = 60;
    start(f);
    submit_json(f->spool,
                "{\"specversion\":\"1.0\",\"id\":\"old\",\"source\":\"/t\","
                "\"type\":\"t\"}",
                to_a, 1, clock_wall_ms() - 2 * 3600 * 1000);
    WAIT_FOR(dead_of(f, "a") == 1);
    assert_int_equal(server_count(&f->srv), 0);
    struct dead_row dr;
    dead_letter(f, "a", &dr);
    assert_string_equal(dr.reason, "max_age_s (60) exceeded");
    assert_int_equal(dr.n_attempt_rows, 0);
}

static void test_dispatch_orphans_dead_lettered_at_start(void **state)
{
    struct fixture *f = *state;
    /* a previous run routed events to "gone" */
    struct spool *s = open_spool(f);
    assert_int_equal(spool_start(s), 0);
    static const char *const to_gone[] = {"gone"};
    submit_simple(s, "o1", to_gone, 1);
    submit_simple(s, "o2", to_gone, 1);
    spool_close(s);

    add_http_peer(f, "a", "/", PEER_MODE_BINARY);
    start(f);
    WAIT_FOR(dead_of(f, "gone") == 2);
    assert_int_equal(pending_of(f, "gone"), 0);
    assert_int_equal(server_count(&f->srv), 0);
    char path[128];
    snprintf(path, sizeof(path), "%s/spool.db", f->dir);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT reason FROM dead_letters"
                                        " WHERE peer = 'gone'",
                                        -1, &st, NULL),
                     SQLITE_OK);
    int rows = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        assert_string_equal((const char *)sqlite3_column_text(st, 0),
                            "peer \"gone\" is no longer configured");
        rows++;
    }
    assert_int_equal(rows, 2);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void test_dispatch_stop_leaves_hung_delivery_pending(void **state)
{
    struct fixture *f = *state;
    add_http_peer(f, "a", "/", PEER_MODE_BINARY);
    static const struct step steps[] = {{.status = 200, .hang = true}};
    server_script(&f->srv, steps, 1);
    start(f);
    submit_simple(f->spool, "hung", to_a, 1);
    WAIT_FOR(server_count(&f->srv) == 1);
    stop(f, 100);
    server_release(&f->srv);

    f->spool = open_spool(f);
    f->reader = spool_reader_open(f->spool);
    assert_non_null(f->reader);
    struct spool_delivery rows[2];
    long n = spool_fetch_due(f->reader, "a", INT64_MAX, 2, NULL, NULL, rows);
    assert_int_equal(n, 1);
    assert_string_equal(rows[0].event_id, "hung");
    assert_int_equal(rows[0].attempts, 0);
    spool_delivery_free(&rows[0]);
    assert_int_equal(dead_of(f, "a"), 0);
}

/* ---- tests: local sinks ----------------------------------------------- */

/* Read all of @path; caller frees. */
static char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    char *buf = calloc(1, 1 << 16);
    assert_non_null(buf);
    *len = fread(buf, 1, (1 << 16) - 1, fp);
    fclose(fp);
    return buf;
}

/* Three lines, each one structured event with ids l1, l2, l3 in order. */
static void assert_three_lines(char *text)
{
    char *save = NULL;
    int i = 0;
    for (char *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save), i++) {
        json_t *ev = json_loads(line, 0, NULL);
        if (!ev)
            fail_msg("line %d is not JSON: %s", i, line);
        char want[16];
        snprintf(want, sizeof(want), "l%d", i + 1);
        assert_string_equal(json_string_value(json_object_get(ev, "id")),
                            want);
        assert_non_null(json_object_get(ev, "data"));
        json_decref(ev);
    }
    assert_int_equal(i, 3);
}

static void submit_three(struct fixture *f, const char *peer)
{
    const char *const to[] = {peer};
    submit_simple(f->spool, "l1", to, 1);
    submit_simple(f->spool, "l2", to, 1);
    submit_simple(f->spool, "l3", to, 1);
}

static void test_dispatch_stdout_peer_writes_lines(void **state)
{
    struct fixture *f = *state;
    add_peer(f, "console", PEER_STDOUT);
    char path[128];
    snprintf(path, sizeof(path), "%s/stdout.txt", f->dir);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, STDOUT_FILENO);
    close(fd);
    start(f);
    submit_three(f, "console");
    int64_t until = clock_mono_ms() + WAIT_MS;
    while (pending_of(f, "console") != 0 && clock_mono_ms() < until)
        sleep_ms(5);
    stop(f, 0);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    size_t len = 0;
    char *text = slurp(path, &len);
    assert_true(len > 0 && text[len - 1] == '\n');
    assert_three_lines(text);
    free(text);
}

static void test_dispatch_file_peer_appends_lines(void **state)
{
    struct fixture *f = *state;
    struct peer_config *pc = add_peer(f, "audit", PEER_FILE);
    char path[128];
    snprintf(path, sizeof(path), "%s/audit.jsonl", f->dir);
    pc->path = xstrdup(path);
    start(f);
    submit_three(f, "audit");
    WAIT_FOR(pending_of(f, "audit") == 0);
    assert_int_equal(dead_of(f, "audit"), 0);
    size_t len = 0;
    char *text = slurp(path, &len);
    assert_true(len > 0 && text[len - 1] == '\n');
    assert_three_lines(text);
    free(text);
}

static void test_dispatch_file_peer_io_error_is_retried(void **state)
{
    struct fixture *f = *state;
    struct peer_config *pc = add_peer(f, "audit", PEER_FILE);
    char path[128];
    snprintf(path, sizeof(path), "%s/missing-dir/audit.jsonl", f->dir);
    pc->path = xstrdup(path);
    pc->retry.initial_delay_ms = 3600 * 1000;
    pc->retry.max_delay_ms = 3600 * 1000;
    pc->retry.max_age_s = 86400;
    start(f);
    submit_simple(f->spool, "io", (const char *const[]){"audit"}, 1);
    struct spool_delivery row;
    memset(&row, 0, sizeof(row));
    WAIT_FOR(pending_after(f, "audit", 1, &row));
    spool_delivery_free(&row);
    assert_int_equal(dead_of(f, "audit"), 0);
}

static void test_dispatch_heartbeat_advances(void **state)
{
    struct fixture *f = *state;
    add_peer(f, "console", PEER_STDOUT);
    start(f);
    int64_t first = dispatch_heartbeat_ms(f->d);
    assert_true(first > 0);
    WAIT_FOR(dispatch_heartbeat_ms(f->d) > first);
}

/* ---- tests: circuit breaker ------------------------------------------- */

/* Attempts so far of the pending delivery of @event_id to @peer, or -1. */
static int attempts_of(struct fixture *f, const char *peer,
                       const char *event_id)
{
    struct spool_delivery rows[8];
    long n = spool_fetch_due(f->reader, peer, INT64_MAX, 8, NULL, NULL, rows);
    int attempts = -1;
    for (long i = 0; i < n; i++) {
        if (strcmp(rows[i].event_id, event_id) == 0)
            attempts = rows[i].attempts;
        spool_delivery_free(&rows[i]);
    }
    return attempts;
}

static int breaker_gauge(const char *peer)
{
    return atomic_load(&metrics_peer(peer)->breaker_state);
}

static int breaker_open_gauge(const char *peer)
{
    return atomic_load(&metrics_peer(peer)->breaker_open);
}

static void test_dispatch_breaker_opens_and_holds_deliveries(void **state)
{
    struct fixture *f = *state;
    struct peer_config *pc = add_http_peer(f, "a", "/", PEER_MODE_BINARY);
    pc->breaker.failure_threshold = 3;
    pc->breaker.open_ms = 60000;
    pc->retry.max_attempts = 10;
    static const struct step steps[] = {
        {.status = 503}, {.status = 500}, {.status = 502}, {.status = 503},
        {.status = 503}, {.status = 503}, {.status = 503}, {.status = 503}};
    server_script(&f->srv, steps, 8);
    start(f);
    assert_int_equal(breaker_open_gauge("a"), 0);
    assert_int_equal(breaker_gauge("a"), METRICS_BREAKER_CLOSED);
    submit_simple(f->spool, "b1", to_a, 1);
    WAIT_FOR(breaker_open_gauge("a") == 1);
    assert_int_equal(breaker_gauge("a"), METRICS_BREAKER_OPEN);
    assert_int_equal(server_count(&f->srv), 3);
    submit_simple(f->spool, "b2", to_a, 1);
    WAIT_FOR(attempts_of(f, "a", "b1") == 3);
    /* many backoff periods (10..40 ms) pass: nothing is attempted */
    sleep_ms(500);
    assert_int_equal(server_count(&f->srv), 3);
    assert_int_equal(attempts_of(f, "a", "b1"), 3);
    assert_int_equal(attempts_of(f, "a", "b2"), 0);
    assert_int_equal(pending_of(f, "a"), 2);
    assert_int_equal(dead_of(f, "a"), 0);
    assert_int_equal(breaker_gauge("a"), METRICS_BREAKER_OPEN);
}

static void test_dispatch_breaker_probe_then_recovery(void **state)
{
    struct fixture *f = *state;
    struct peer_config *pc = add_http_peer(f, "a", "/", PEER_MODE_BINARY);
    pc->breaker.failure_threshold = 2;
    pc->breaker.open_ms = 300;
    pc->max_in_flight = 4;
    static const struct step steps[] = {
        {.status = 503}, {.status = 503}, {.status = 200, .hang = true}};
    server_script(&f->srv, steps, 3);
    start(f);
    submit_simple(f->spool, "p0", to_a, 1);
    WAIT_FOR(breaker_open_gauge("a") == 1);
    submit_simple(f->spool, "p1", to_a, 1);
    submit_simple(f->spool, "p2", to_a, 1);
    submit_simple(f->spool, "p3", to_a, 1);
    /* after open_ms exactly one probe goes (and hangs) */
    WAIT_FOR(server_count(&f->srv) == 3);
    assert_int_equal(breaker_gauge("a"), METRICS_BREAKER_HALF_OPEN);
    assert_int_equal(breaker_open_gauge("a"), 1);
    sleep_ms(300);
    assert_int_equal(server_count(&f->srv), 3);
    server_release(&f->srv);
    WAIT_FOR(pending_of(f, "a") == 0 && server_count(&f->srv) == 6);
    WAIT_FOR(breaker_open_gauge("a") == 0);
    assert_int_equal(breaker_gauge("a"), METRICS_BREAKER_CLOSED);
    assert_int_equal(dead_of(f, "a"), 0);
    bool seen[4] = {false, false, false, false};
    for (size_t i = 2; i < 6; i++) {
        const char *id = req_header(&f->srv.reqs[i], "ce-id");
        assert_non_null(id);
        assert_true(id[0] == 'p' && id[1] >= '0' && id[1] <= '3');
        seen[id[1] - '0'] = true;
    }
    for (size_t i = 0; i < 4; i++)
        assert_true(seen[i]);
}

static void test_dispatch_breaker_ignores_4xx(void **state)
{
    struct fixture *f = *state;
    struct peer_config *pc = add_http_peer(f, "a", "/", PEER_MODE_BINARY);
    pc->breaker.failure_threshold = 1;
    static const struct step steps[] = {{.status = 400}, {.status = 404}};
    server_script(&f->srv, steps, 2);
    start(f);
    submit_simple(f->spool, "x1", to_a, 1);
    submit_simple(f->spool, "x2", to_a, 1);
    WAIT_FOR(dead_of(f, "a") == 2);
    submit_simple(f->spool, "x3", to_a, 1);
    WAIT_FOR(pending_of(f, "a") == 0 && server_count(&f->srv) == 3);
    assert_int_equal(breaker_open_gauge("a"), 0);
    assert_int_equal(breaker_gauge("a"), METRICS_BREAKER_CLOSED);
}

/* ---- tests: signing --------------------------------------------------- */

#define VEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

/* Check @r's Standard Webhooks headers with a one-shot HMAC. */
static void assert_signed(const struct req *r, int64_t t0_s)
{
    const char *id = req_header(r, "webhook-id");
    const char *ts = req_header(r, "webhook-timestamp");
    const char *sig = req_header(r, "webhook-signature");
    assert_non_null(id);
    assert_non_null(ts);
    assert_non_null(sig);
    assert_int_equal(strlen(id), 36);
    assert_memory_equal(id, "msg_", 4);
    char *end;
    long long t = strtoll(ts, &end, 10);
    assert_true(*end == '\0' && t >= t0_s && t <= (long long)time(NULL));
    unsigned char key[64];
    int klen = EVP_DecodeBlock(key, (const unsigned char *)VEC_SECRET + 6,
                               (int)strlen(VEC_SECRET) - 6);
    assert_int_equal(klen, 24);
    size_t hn = strlen(id) + strlen(ts) + 2;
    unsigned char *msg = malloc(hn + r->body_len + 1);
    assert_non_null(msg);
    snprintf((char *)msg, hn + 1, "%s.%s.", id, ts);
    if (r->body_len)
        memcpy(msg + hn, r->body, r->body_len);
    unsigned char mac[32];
    unsigned int mlen = 0;
    assert_non_null(HMAC(EVP_sha256(), key, klen, msg, hn + r->body_len, mac,
                         &mlen));
    free(msg);
    char want[64] = "v1,";
    EVP_EncodeBlock((unsigned char *)want + 3, mac, (int)mlen);
    assert_string_equal(sig, want);
}

static const struct req *req_to(struct fixture *f, const char *path,
                                size_t nth)
{
    for (size_t i = 0; i < server_count(&f->srv); i++)
        if (strcmp(f->srv.reqs[i].path, path) == 0 && nth-- == 0)
            return &f->srv.reqs[i];
    fail_msg("no request %zu to %s", nth, path);
    return NULL;
}

static void test_dispatch_signs_binary_and_structured(void **state)
{
    struct fixture *f = *state;
    add_http_peer(f, "a", "/a", PEER_MODE_BINARY)->signing_secret =
        xstrdup(VEC_SECRET);
    add_http_peer(f, "b", "/b", PEER_MODE_STRUCTURED)->signing_secret =
        xstrdup(VEC_SECRET);
    int64_t t0_s = (int64_t)time(NULL);
    start(f);
    static const char *const both[] = {"a", "b"};
    submit_json(f->spool,
                "{\"specversion\":\"1.0\",\"id\":\"s1\",\"source\":\"/src\","
                "\"type\":\"t\",\"datacontenttype\":\"application/json\","
                "\"data\":{\"k\":[1,2,3]}}",
                both, 2, clock_wall_ms());
    WAIT_FOR(server_count(&f->srv) == 2 && pending_of(f, "a") == 0 &&
             pending_of(f, "b") == 0);
    const struct req *ra = req_to(f, "/a", 0), *rb = req_to(f, "/b", 0);
    assert_signed(ra, t0_s);
    assert_signed(rb, t0_s);
    assert_true(rb->body_len > 0 && strstr(rb->body, "\"s1\""));
    /* one message per peer */
    assert_string_not_equal(req_header(ra, "webhook-id"),
                            req_header(rb, "webhook-id"));
}

static void test_dispatch_signed_retry_keeps_webhook_id(void **state)
{
    struct fixture *f = *state;
    add_http_peer(f, "a", "/a", PEER_MODE_BINARY)->signing_secret =
        xstrdup(VEC_SECRET);
    static const struct step steps[] = {{.status = 503}, {.status = 500}};
    server_script(&f->srv, steps, 2);
    int64_t t0_s = (int64_t)time(NULL);
    start(f);
    submit_simple(f->spool, "rt", to_a, 1);
    submit_simple(f->spool, "rt2", to_a, 1);
    WAIT_FOR(pending_of(f, "a") == 0 && server_count(&f->srv) == 4);
    const char *ids[2] = {NULL, NULL};
    for (size_t i = 0; i < 4; i++) {
        const struct req *r = &f->srv.reqs[i];
        assert_signed(r, t0_s);
        size_t k = strcmp(req_header(r, "ce-id"), "rt") == 0 ? 0 : 1;
        if (!ids[k])
            ids[k] = req_header(r, "webhook-id");
        else
            assert_string_equal(ids[k], req_header(r, "webhook-id"));
    }
    assert_non_null(ids[0]);
    assert_non_null(ids[1]);
    assert_string_not_equal(ids[0], ids[1]);
}

static void test_dispatch_unsigned_peer_has_no_webhook_headers(void **state)
{
    struct fixture *f = *state;
    add_http_peer(f, "a", "/a", PEER_MODE_BINARY);
    start(f);
    submit_simple(f->spool, "u1", to_a, 1);
    WAIT_FOR(server_count(&f->srv) == 1 && pending_of(f, "a") == 0);
    assert_null(req_header(&f->srv.reqs[0], "webhook-id"));
    assert_null(req_header(&f->srv.reqs[0], "webhook-signature"));
}

static void test_dispatch_bad_signing_secret_fails_create(void **state)
{
    struct fixture *f = *state;
    add_http_peer(f, "a", "/a", PEER_MODE_BINARY)->signing_secret =
        xstrdup("whsec_abc");
    f->spool = open_spool(f);
    char err[256] = "";
    assert_null(dispatch_create(&f->cfg, f->spool, err, sizeof(err)));
    assert_non_null(strstr(err, "peer \"a\""));
    assert_non_null(strstr(err, "whsec_"));
}

/* ---- tests: replies --------------------------------------------------- */

#define REPLY_TYPE_ROUTE "{\"exact\":{\"type\":\"com.example.reply\"}}"
#define REPLY_JSON                                                           \
    "{\"specversion\":\"1.0\",\"id\":\"rep-1\",\"source\":\"/peer-a\","      \
    "\"type\":\"com.example.reply\",\"data\":{\"pong\":true}}"

/* Peers a (answers) and b (gets replies); replies route to b. */
static void reply_setup(struct fixture *f, const struct step *first)
{
    add_http_peer(f, "a", "/a", PEER_MODE_BINARY);
    add_http_peer(f, "b", "/b", PEER_MODE_BINARY);
    add_route(f, REPLY_TYPE_ROUTE, 1);
    struct step steps[2] = {*first, {.status = 200, .hang = true}};
    server_script(&f->srv, steps, 2);
    start(f);
}

/* The reply @id is pending for b (its delivery hangs), then goes. */
static const struct req *reply_reaches_b(struct fixture *f, const char *id)
{
    WAIT_FOR(server_count(&f->srv) >= 2);
    struct spool_delivery row;
    memset(&row, 0, sizeof(row));
    WAIT_FOR(pending_after(f, "b", 0, &row));
    assert_string_equal(row.event_id, id);
    spool_delivery_free(&row);
    server_release(&f->srv);
    WAIT_FOR(pending_of(f, "a") == 0 && pending_of(f, "b") == 0);
    const struct req *r = &f->srv.reqs[1];
    assert_string_equal(r->path, "/b");
    assert_string_equal(req_header(r, "ce-id"), id);
    assert_string_equal(req_header(r, "ce-type"), "com.example.reply");
    return r;
}

static void test_dispatch_reply_structured_is_routed(void **state)
{
    struct fixture *f = *state;
    const struct step first = {
        .status = 200,
        .body = REPLY_JSON,
        .headers = {"Content-Type",
                    "application/cloudevents+json; charset=utf-8", NULL}};
    reply_setup(f, &first);
    long long rep0 = metrics_received_total(METRICS_MODE_REPLY);
    submit_simple(f->spool, "q1", to_a, 1);
    const struct req *r = reply_reaches_b(f, "rep-1");
    assert_string_equal(req_header(r, "ce-source"), "/peer-a");
    json_t *data = json_loadb(r->body, r->body_len, 0, NULL);
    assert_non_null(data);
    assert_true(json_is_true(json_object_get(data, "pong")));
    json_decref(data);
    assert_int_equal(metrics_received_total(METRICS_MODE_REPLY), rep0 + 1);
    assert_int_equal(dead_of(f, "a"), 0);
}

static void test_dispatch_reply_binary_is_routed(void **state)
{
    struct fixture *f = *state;
    const struct step first = {
        .status = 201,
        .body = "pong",
        .headers = {"ce-specversion", "1.0", "ce-id", "rep-2", "ce-source",
                    "/peer%20a", "ce-type", "com.example.reply",
                    "Content-Type", "text/plain", NULL}};
    reply_setup(f, &first);
    submit_simple(f->spool, "q2", to_a, 1);
    const struct req *r = reply_reaches_b(f, "rep-2");
    assert_string_equal(req_header(r, "ce-source"), "/peer%20a");
    assert_string_equal(req_header(r, "Content-Type"), "text/plain");
    assert_int_equal(r->body_len, 4);
    assert_memory_equal(r->body, "pong", 4);
}

static void test_dispatch_invalid_or_202_reply_ignored(void **state)
{
    struct fixture *f = *state;
    add_http_peer(f, "a", "/a", PEER_MODE_BINARY);
    add_http_peer(f, "b", "/b", PEER_MODE_BINARY);
    add_route(f, REPLY_TYPE_ROUTE, 1);
    static const struct step steps[] = {
        {.status = 200, /* no source, no type */
         .body = "{\"specversion\":\"1.0\",\"id\":\"bad\"}",
         .headers = {"Content-Type", "application/cloudevents+json", NULL}},
        {.status = 202, /* a valid event, but 202 is never a reply */
         .body = REPLY_JSON,
         .headers = {"Content-Type", "application/cloudevents+json", NULL}},
        {.status = 200, /* a binary event that is not valid */
         .body = "x",
         .headers = {"ce-specversion", "1.0", "ce-id", "bin-bad", NULL}},
    };
    server_script(&f->srv, steps, 3);
    start(f);
    struct peer_metrics *pm = metrics_peer("a");
    long long ok0 = atomic_load(&pm->success);
    long long rep0 = metrics_received_total(METRICS_MODE_REPLY);
    submit_simple(f->spool, "i1", to_a, 1);
    submit_simple(f->spool, "i2", to_a, 1);
    submit_simple(f->spool, "i3", to_a, 1);
    WAIT_FOR(atomic_load(&pm->success) == ok0 + 3);
    WAIT_FOR(pending_of(f, "a") == 0);
    sleep_ms(300);
    assert_int_equal(server_count(&f->srv), 3);
    assert_int_equal(pending_of(f, "b"), 0);
    assert_int_equal(dead_of(f, "a"), 0);
    assert_int_equal(metrics_received_total(METRICS_MODE_REPLY), rep0);
}

static void test_dispatch_large_answers_do_not_fail_delivery(void **state)
{
    struct fixture *f = *state;
    add_http_peer(f, "a", "/a", PEER_MODE_BINARY);
    add_http_peer(f, "b", "/b", PEER_MODE_BINARY);
    add_route(f, REPLY_TYPE_ROUTE, 1);
    /* an event over the 1 MiB a reply may have, and a big plain answer */
    size_t big = (size_t)1 << 21;
    char *huge = malloc(big + 256);
    assert_non_null(huge);
    int n = snprintf(huge, 256,
                     "{\"specversion\":\"1.0\",\"id\":\"big\",\"source\":"
                     "\"/p\",\"type\":\"com.example.reply\",\"data\":\"");
    memset(huge + n, 'x', big);
    memcpy(huge + n + big, "\"}", 3);
    const struct step steps[] = {
        {.status = 200, .body = huge,
         .headers = {"Content-Type", "application/cloudevents+json", NULL}},
        {.status = 200, .body = huge,
         .headers = {"Content-Type", "application/json", NULL}},
    };
    server_script(&f->srv, steps, 2);
    start(f);
    struct peer_metrics *pm = metrics_peer("a");
    long long ok0 = atomic_load(&pm->success);
    long long rep0 = metrics_received_total(METRICS_MODE_REPLY);
    submit_simple(f->spool, "L1", to_a, 1);
    submit_simple(f->spool, "L2", to_a, 1);
    WAIT_FOR(atomic_load(&pm->success) == ok0 + 2 && pending_of(f, "a") == 0);
    sleep_ms(200);
    assert_int_equal(server_count(&f->srv), 2);
    assert_int_equal(pending_of(f, "b"), 0);
    assert_int_equal(metrics_received_total(METRICS_MODE_REPLY), rep0);
    free(huge);
}

static int group_setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    metrics_init();
    log_setup(getenv("FERRY_TEST_LOG") ? LOG_DEBUG : LOG_ERROR,
              LOG_FORMAT_TEXT);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    metrics_shutdown();
    curl_global_cleanup();
    return 0;
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_dispatch_binary_mode),
        T(test_dispatch_binary_event_body_is_data),
        T(test_dispatch_structured_mode),
        T(test_dispatch_fan_out_to_two_peers),
        T(test_dispatch_retry_then_success),
        T(test_dispatch_retry_after_raises_delay),
        T(test_dispatch_retry_after_capped_by_max_delay),
        T(test_dispatch_4xx_dead_letters_after_one_attempt),
        T(test_dispatch_max_attempts_exhaustion),
        T(test_dispatch_timeout_counts_as_failure),
        T(test_dispatch_connection_refused_is_retried),
        T(test_dispatch_too_old_dead_letters_without_attempt),
        T(test_dispatch_orphans_dead_lettered_at_start),
        T(test_dispatch_stop_leaves_hung_delivery_pending),
        T(test_dispatch_stdout_peer_writes_lines),
        T(test_dispatch_file_peer_appends_lines),
        T(test_dispatch_file_peer_io_error_is_retried),
        T(test_dispatch_heartbeat_advances),
        T(test_dispatch_breaker_opens_and_holds_deliveries),
        T(test_dispatch_breaker_probe_then_recovery),
        T(test_dispatch_breaker_ignores_4xx),
        T(test_dispatch_signs_binary_and_structured),
        T(test_dispatch_signed_retry_keeps_webhook_id),
        T(test_dispatch_unsigned_peer_has_no_webhook_headers),
        T(test_dispatch_bad_signing_secret_fails_create),
        T(test_dispatch_reply_structured_is_routed),
        T(test_dispatch_reply_binary_is_routed),
        T(test_dispatch_invalid_or_202_reply_ignored),
        T(test_dispatch_large_answers_do_not_fail_delivery),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
