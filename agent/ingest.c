/*
 * ingest: the main listener's request handling (see ingest.h for the
 * design). A POST /v1/events request moves through three states:
 *
 *   RECEIVING  body chunks are appended to a buffer capped at
 *              ingest.max_body_bytes (past it we keep reading, discard, and
 *              answer 413 at the end: libmicrohttpd cannot answer mid-body)
 *   WAITING    parsed, validated and routed; queued to the spool writer and
 *              the connection suspended until the commit
 *   ANSWERED   resumed by the writer's callback; 202 or 503 queued
 *
 * Everything a request owns hangs off struct request and is freed in the
 * request-completed callback, which libmicrohttpd calls exactly once.
 */
#include "ingest.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "auth.h"
#include "buf.h"
#include "clock.h"
#include "event.h"
#include "filter.h"
#include "httpd.h"
#include "log.h"
#include "metrics.h"
#include "route.h"

#define CT_STRUCTURED "application/cloudevents+json"
#define CT_BATCH "application/cloudevents-batch+json"
#define CT_JSON "application/json"
/* How long a client should wait before retrying a 503. */
#define RETRY_AFTER_S 1
/* Binary mode: more ce- headers than this is not a real event. */
#define MAX_CE_HEADERS 64

struct ingest {
    struct ingest_deps deps;     /* deps.cfg unused after start: see cfg */
    struct httpd *daemon;
    pthread_mutex_t cfg_lock;
    struct config *cfg;          /* current; one reference held here */
    atomic_bool draining;
    atomic_long waiting; /* requests suspended until a commit */
};

enum req_state { REQ_RECEIVING = 0, REQ_WAITING, REQ_ANSWERED };

struct request {
    struct ingest *ing;
    struct config *cfg; /* the config this request was admitted under (a reference) */
    struct MHD_Connection *conn;
    enum metrics_mode mode;
    enum req_state state;
    struct buf body;
    size_t discarded; /* bytes past the cap */
    struct event *events; /* n_events of them */
    size_t n_events;
    struct event one;     /* storage when a single event */
    struct spool_event *stored;
    char (*key_scratch)[24]; /* integer partition keys, formatted */
    const char **peer_names;      /* n_events * cfg->n_peers slots */
    char *strings;                /* stored[].source, id, partition_key */
    unsigned char *ordered;       /* parallel to peer_names */
    struct spool_write write;
    atomic_int result;    /* set by the writer before resuming */
};

/* ---- small helpers -------------------------------------------------- */

static const char *header(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned status,
                                  struct buf *body)
{
    return httpd_reply(c, status, CT_JSON, body->data ? body->data : "",
                       body->len, 0);
}

static enum metrics_reject reject_reason(const char *code)
{
    if (strcmp(code, "invalid_json") == 0)
        return METRICS_REJECT_INVALID_JSON;
    if (strcmp(code, "too_large") == 0)
        return METRICS_REJECT_TOO_LARGE;
    return METRICS_REJECT_INVALID_EVENT;
}

static enum MHD_Result reject(struct MHD_Connection *c, unsigned status,
                              enum metrics_reject why, const char *code,
                              const char *message)
{
    metrics_rejected(why);
    return httpd_reply_error(c, status, code, message, -1, NULL,
                             why == METRICS_REJECT_UNAVAILABLE ? RETRY_AFTER_S : 0);
}

static enum MHD_Result reject_event(struct MHD_Connection *c,
                                    const struct ce_error *err)
{
    if (strcmp(err->code, "unavailable") == 0) /* out of memory while parsing */
        return reject(c, MHD_HTTP_SERVICE_UNAVAILABLE, METRICS_REJECT_UNAVAILABLE,
                      "unavailable", err->message);
    unsigned status = strcmp(err->code, "too_large") == 0
                          ? MHD_HTTP_CONTENT_TOO_LARGE
                          : MHD_HTTP_BAD_REQUEST;
    metrics_rejected(reject_reason(err->code));
    return httpd_reply_error(c, status, err->code, err->message, err->index,
                             err->attribute, 0);
}

/* ---- health and metrics --------------------------------------------- */

static enum MHD_Result serve_health(struct ingest *ing, struct MHD_Connection *c,
                                    int ready)
{
    struct health_inputs in;
    struct buf body;
    buf_init(&body, 4096);
    ing->deps.health_snapshot(ing->deps.health_arg, &in);
    int status = ready ? health_ready(&in, &body) : health_live(&in, &body);
    enum MHD_Result ret = reply_json(c, (unsigned)status, &body);
    buf_free(&body);
    return ret;
}

static enum MHD_Result serve_metrics(struct ingest *ing, struct MHD_Connection *c)
{
    metrics_spool_bytes(spool_bytes(ing->deps.spool));
    struct buf body;
    buf_init(&body, 64u << 20);
    enum MHD_Result ret;
    if (metrics_render(&body) == 0)
        ret = httpd_reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
                          body.data ? body.data : "", body.len, 0);
    else
        ret = httpd_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
                                "cannot render metrics", -1, NULL, 0);
    buf_free(&body);
    return ret;
}

/* ---- POST /v1/events: admission --------------------------------------- */

/* Content mode from the headers, or -1 when unsupported. */
static int content_mode(struct MHD_Connection *c)
{
    const char *ct = header(c, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (httpd_media_type_is(ct, CT_STRUCTURED))
        return METRICS_MODE_STRUCTURED;
    if (httpd_media_type_is(ct, CT_BATCH))
        return METRICS_MODE_BATCH;
    if (ct && strncasecmp(ct, "application/cloudevents", 23) == 0)
        return -1; /* another event format (avro, protobuf): not ours */
    if (header(c, "ce-specversion") || header(c, "ce-id") || header(c, "ce-type"))
        return METRICS_MODE_BINARY;
    return -1;
}

static struct config *current_config(struct ingest *ing)
{
    pthread_mutex_lock(&ing->cfg_lock);
    struct config *cfg = config_ref(ing->cfg);
    pthread_mutex_unlock(&ing->cfg_lock);
    return cfg;
}

/*
 * First call for POST /v1/events: refuse what we can before reading the
 * body (auth, draining, media type, a declared length over the cap).
 * On success the new request takes over the reference to @cfg.
 */
static enum MHD_Result admit_under(struct ingest *ing, struct config *cfg,
                                   struct MHD_Connection *c, void **con_cls)
{
    if (!auth_bearer_ok(header(c, MHD_HTTP_HEADER_AUTHORIZATION), cfg->ingest.token))
        return reject(c, MHD_HTTP_UNAUTHORIZED, METRICS_REJECT_UNAUTHORIZED,
                      "unauthorized", "missing or wrong bearer token");
    if (atomic_load(&ing->draining))
        return reject(c, MHD_HTTP_SERVICE_UNAVAILABLE, METRICS_REJECT_UNAVAILABLE,
                      "unavailable", "shutting down");
    int mode = content_mode(c);
    if (mode < 0)
        return reject(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
                      METRICS_REJECT_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                      "expected Content-Type " CT_STRUCTURED " or " CT_BATCH
                      ", or a binary-mode event with ce-* headers");
    const char *cl = header(c, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno == 0 && end != cl && n > cfg->ingest.max_body_bytes) {
            char msg[128];
            snprintf(msg, sizeof(msg), "body of %llu bytes exceeds ingest.max_body_bytes (%zu)",
                     n, cfg->ingest.max_body_bytes);
            return reject(c, MHD_HTTP_CONTENT_TOO_LARGE, METRICS_REJECT_TOO_LARGE,
                          "too_large", msg);
        }
    }
    struct request *r = calloc(1, sizeof(*r));
    if (!r)
        return MHD_NO;
    r->ing = ing;
    r->cfg = cfg;
    r->conn = c;
    r->mode = (enum metrics_mode)mode;
    buf_init(&r->body, cfg->ingest.max_body_bytes);
    *con_cls = r;
    return MHD_YES;
}

static enum MHD_Result admit(struct ingest *ing, struct MHD_Connection *c,
                             void **con_cls)
{
    struct config *cfg = current_config(ing);
    enum MHD_Result ret = admit_under(ing, cfg, c, con_cls);
    if (!*con_cls)
        config_destroy(cfg); /* refused: no request holds it */
    return ret;
}

static void receive(struct request *r, const char *data, size_t size)
{
    if (r->discarded || buf_append(&r->body, data, size) != 0)
        r->discarded += size;
}

/* ---- POST /v1/events: parse ------------------------------------------ */

struct ce_headers {
    struct http_header items[MAX_CE_HEADERS];
    size_t n;
    int overflow;
};

static enum MHD_Result collect_ce_header(void *cls, enum MHD_ValueKind kind,
                                         const char *key, const char *value)
{
    (void)kind;
    struct ce_headers *h = cls;
    if (strncasecmp(key, "ce-", 3) != 0)
        return MHD_YES;
    if (h->n == MAX_CE_HEADERS) {
        h->overflow = 1;
        return MHD_NO;
    }
    h->items[h->n++] = (struct http_header){key, strlen(key), value ? value : "",
                                            value ? strlen(value) : 0};
    return MHD_YES;
}

static int parse(struct request *r, struct ce_error *err)
{
    const char *body = r->body.data ? r->body.data : "";
    size_t len = r->body.len;
    if (r->mode == METRICS_MODE_BATCH)
        return event_batch_from_json(body, len, r->cfg->ingest.max_batch,
                                     &r->events, &r->n_events, err);
    int rc;
    if (r->mode == METRICS_MODE_STRUCTURED) {
        rc = event_from_structured(body, len, &r->one, err);
    } else {
        struct ce_headers h = {.n = 0};
        MHD_get_connection_values(r->conn, MHD_HEADER_KIND, collect_ce_header, &h);
        if (h.overflow) {
            ce_error_set(err, "invalid_event", -1, "",
                         "more than %d ce- headers", MAX_CE_HEADERS);
            return -EINVAL;
        }
        rc = event_from_binary(h.items, h.n,
                               header(r->conn, MHD_HTTP_HEADER_CONTENT_TYPE),
                               body, len, &r->one, err);
    }
    if (rc == 0) {
        r->events = &r->one;
        r->n_events = 1;
    }
    return rc;
}

/*
 * Tracing middleware puts the W3C trace context on the HTTP request, not
 * in the event. Adopt it as the distributed-tracing extension of events
 * that carry none, so it travels with every delivery. A malformed header
 * is not the producer's event's fault: it is ignored.
 */
static void adopt_trace_context(struct request *r)
{
    const char *parent = header(r->conn, "traceparent");
    if (!parent)
        return;
    const char *state = header(r->conn, "tracestate");
    for (size_t i = 0; i < r->n_events; i++) {
        if (event_add_attr(&r->events[i], "traceparent", parent) == 1 && state)
            event_add_attr(&r->events[i], "tracestate", state);
    }
}

/* ---- POST /v1/events: route and store --------------------------------- */

static const char *lookup_attr(void *arg, const char *attr, char *scratch,
                               size_t scratch_len)
{
    return event_attr(arg, attr, scratch, scratch_len);
}

/*
 * The spool needs only the stored fields until the commit: copy the
 * strings they borrow from the parsed attributes and let those go now,
 * not after the commit (a 100-event batch holds ~130 KB of them, and 32
 * connections wait at once). 0 or -ENOMEM (nothing released).
 */
static int keep_strings(struct request *r)
{
    size_t total = 1;
    for (size_t i = 0; i < r->n_events; i++) {
        const struct spool_event *se = &r->stored[i];
        const char *fields[] = {se->source, se->id, se->partition_key};
        for (size_t k = 0; k < 3; k++)
            total += fields[k] ? strlen(fields[k]) + 1 : 0;
    }
    char *p = r->strings = malloc(total);
    if (!p)
        return -ENOMEM;
    for (size_t i = 0; i < r->n_events; i++) {
        struct spool_event *se = &r->stored[i];
        const char **fields[] = {&se->source, &se->id, &se->partition_key};
        for (size_t k = 0; k < 3; k++) {
            if (!*fields[k])
                continue;
            size_t n = strlen(*fields[k]) + 1;
            memcpy(p, *fields[k], n);
            *fields[k] = p;
            p += n;
        }
        json_decref(r->events[i].obj);
        r->events[i].obj = NULL;
    }
    return 0;
}

/* Fill r->stored: one spool_event per event with the peers it goes to. */
static int route_all(struct request *r)
{
    const struct config *cfg = r->cfg;
    size_t n_peers = cfg->n_peers;
    char scratch[32];
    int64_t now = clock_wall_ms();

    r->stored = calloc(r->n_events ? r->n_events : 1, sizeof(*r->stored));
    r->peer_names = calloc(r->n_events * n_peers + 1, sizeof(*r->peer_names));
    r->ordered = calloc(r->n_events * n_peers + 1, 1);
    r->key_scratch = calloc(r->n_events ? r->n_events : 1, sizeof(*r->key_scratch));
    size_t *idx_scratch = malloc((n_peers + 1) * sizeof(*idx_scratch));
    if (!r->stored || !r->peer_names || !r->ordered || !r->key_scratch || !idx_scratch) {
        free(idx_scratch);
        return -ENOMEM;
    }
    for (size_t i = 0; i < r->n_events; i++) {
        struct event *ev = &r->events[i];
        struct spool_event *se = &r->stored[i];
        const char **names = r->peer_names + i * n_peers;
        unsigned char *ordered = r->ordered + i * n_peers;
        size_t n = route_match(cfg, lookup_attr, ev, idx_scratch);
        for (size_t k = 0; k < n; k++) {
            names[k] = cfg->peers[idx_scratch[k]].name;
            ordered[k] = route_ordered(cfg, lookup_attr, ev, idx_scratch[k]);
        }
        se->source = event_attr(ev, "source", scratch, sizeof(scratch));
        se->id = event_attr(ev, "id", scratch, sizeof(scratch));
        se->partition_key = event_attr(ev, "partitionkey", r->key_scratch[i],
                                       sizeof(r->key_scratch[i]));
        se->format = ev->format;
        se->text = ev->text;
        se->text_len = ev->text_len;
        se->data = ev->data;
        se->data_len = ev->data_len;
        se->peers = names;
        se->n_peers = n;
        se->ordered = ordered;
        se->received_ms = now;
    }
    free(idx_scratch);
    return keep_strings(r);
}

/* Writer thread: the commit is done (or failed); wake the request. */
static void stored_cb(struct spool_write *w)
{
    struct request *r = w->arg;
    atomic_store(&r->result, w->result);
    /* After resume the pool thread may answer and free r: touch nothing. */
    MHD_resume_connection(r->conn);
}

static enum MHD_Result store(struct request *r)
{
    if (route_all(r) != 0)
        return reject(r->conn, MHD_HTTP_SERVICE_UNAVAILABLE, METRICS_REJECT_UNAVAILABLE,
                      "unavailable", "out of memory");
    r->write = (struct spool_write){.events = r->stored, .n_events = r->n_events,
                                    .done = stored_cb, .arg = r};
    r->state = REQ_WAITING;
    atomic_fetch_add(&r->ing->waiting, 1);
    /* Suspend before submitting, so the resume cannot come first. */
    MHD_suspend_connection(r->conn);
    if (spool_submit(r->ing->deps.spool, &r->write) != 0) {
        atomic_store(&r->result, -ESHUTDOWN);
        MHD_resume_connection(r->conn);
    }
    return MHD_YES;
}

static enum MHD_Result answer(struct request *r)
{
    r->state = REQ_ANSWERED;
    atomic_fetch_sub(&r->ing->waiting, 1);
    int result = atomic_load(&r->result);
    if (result < 0) {
        const char *why = result == -ENOSPC    ? "spool full"
                          : result == -ESHUTDOWN ? "shutting down"
                                                 : "spool write failed";
        return reject(r->conn, MHD_HTTP_SERVICE_UNAVAILABLE,
                      METRICS_REJECT_UNAVAILABLE, "unavailable", why);
    }
    metrics_received(r->mode, (long)r->n_events);
    if (r->write.n_duplicates)
        metrics_duplicates((long)r->write.n_duplicates);
    char body[48];
    int n = snprintf(body, sizeof(body), "{\"accepted\":%zu}", r->n_events);
    return httpd_reply(r->conn, MHD_HTTP_ACCEPTED, CT_JSON, body, (size_t)n, 0);
}

/* Last call of the upload: the whole body is in. */
static enum MHD_Result complete(struct request *r)
{
    if (r->discarded) {
        char msg[128];
        snprintf(msg, sizeof(msg), "body exceeds ingest.max_body_bytes (%zu)",
                 r->cfg->ingest.max_body_bytes);
        return reject(r->conn, MHD_HTTP_CONTENT_TOO_LARGE, METRICS_REJECT_TOO_LARGE,
                      "too_large", msg);
    }
    struct ce_error err = {.code = "invalid_event", .index = -1};
    if (parse(r, &err) != 0)
        return reject_event(r->conn, &err);
    /* The events hold their own texts now; only a binary event's data
     * still points into the body. Freed before the wait for the commit,
     * so 32 connections of 100-event batches do not hold 3 MB of it. */
    if (r->mode != METRICS_MODE_BINARY)
        buf_free(&r->body);
    adopt_trace_context(r);
    return store(r);
}

static enum MHD_Result on_events(struct request *r, const char *upload_data,
                                 size_t *upload_data_size)
{
    switch (r->state) {
    case REQ_RECEIVING:
        if (*upload_data_size) {
            receive(r, upload_data, *upload_data_size);
            *upload_data_size = 0;
            return MHD_YES;
        }
        return complete(r);
    case REQ_WAITING:
        return answer(r);
    case REQ_ANSWERED:
        break;
    }
    return MHD_YES;
}

/* ---- dispatch by path ------------------------------------------------ */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    struct ingest *ing = cls;
    if (*con_cls)
        return on_events(*con_cls, upload_data, upload_data_size);

    int is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
                 strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (strcmp(url, "/v1/events") == 0) {
        if (strcmp(method, MHD_HTTP_METHOD_POST) == 0)
            return admit(ing, c, con_cls);
    } else if (strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0) {
        if (is_get)
            return serve_health(ing, c, url[1] == 'r');
    } else if (strcmp(url, "/metrics") == 0) {
        if (is_get)
            return serve_metrics(ing, c);
    } else {
        return httpd_reply_error(c, MHD_HTTP_NOT_FOUND, "not_found",
                                 "no such endpoint", -1, NULL, 0);
    }
    return httpd_reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                             "method not allowed on this endpoint", -1, NULL, 0);
}

static void free_request(struct request *r)
{
    if (r->events == &r->one) {
        event_free(&r->one);
    } else {
        for (size_t i = 0; i < r->n_events; i++)
            event_free(&r->events[i]);
        free(r->events);
    }
    free(r->stored);
    free(r->key_scratch);
    free(r->peer_names);
    free(r->ordered);
    free(r->strings);
    buf_free(&r->body);
    config_destroy(r->cfg);
    free(r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)c;
    (void)toe;
    struct request *r = *con_cls;
    if (!r)
        return;
    /* A waiting request cannot end here: suspended connections are not
     * timed out or closed by libmicrohttpd, and we resume before stop. */
    if (r->state == REQ_WAITING)
        atomic_fetch_sub(&((struct ingest *)cls)->waiting, 1);
    free_request(r);
    *con_cls = NULL;
}

/* ---- lifecycle ------------------------------------------------------- */

struct ingest *ingest_start(const struct ingest_deps *deps, char *err,
                            size_t err_len)
{
    struct ingest *ing = calloc(1, sizeof(*ing));
    if (!ing) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    ing->deps = *deps;
    pthread_mutex_init(&ing->cfg_lock, NULL);
    ing->cfg = config_ref(deps->cfg);
    atomic_init(&ing->draining, false);
    atomic_init(&ing->waiting, 0);
    struct httpd_options opt = {
        .listen = deps->cfg->listen,
        .threads = deps->threads,
        .tls_cert_file = deps->cfg->tls.cert_file,
        .tls_key_file = deps->cfg->tls.key_file,
        .tls_path = "tls",
        .handler = on_request,
        .handler_cls = ing,
        .completed = on_completed,
        .completed_cls = ing,
    };
    /* The config's "http" limits, and its pool size unless the caller
     * (a test) fixed one. */
    httpd_options_from_config(&opt, deps->cfg, deps->threads == 0);
    ing->daemon = httpd_start(&opt, err, err_len);
    if (!ing->daemon) {
        config_destroy(ing->cfg);
        pthread_mutex_destroy(&ing->cfg_lock);
        free(ing);
        return NULL;
    }
    return ing;
}

uint16_t ingest_port(struct ingest *ing)
{
    return httpd_port(ing->daemon);
}

void ingest_set_draining(struct ingest *ing)
{
    atomic_store(&ing->draining, true);
}

int ingest_wait_idle(struct ingest *ing, int64_t deadline_ms)
{
    while (atomic_load(&ing->waiting) > 0) {
        if (clock_mono_ms() >= deadline_ms)
            return -ETIMEDOUT;
        nanosleep(&(struct timespec){.tv_nsec = 5 * 1000 * 1000}, NULL);
    }
    return 0;
}

void ingest_set_config(struct ingest *ing, struct config *cfg)
{
    config_ref(cfg);
    pthread_mutex_lock(&ing->cfg_lock);
    struct config *old = ing->cfg;
    ing->cfg = cfg;
    pthread_mutex_unlock(&ing->cfg_lock);
    config_destroy(old); /* requests admitted under it keep their own */
}

void ingest_stop(struct ingest *ing)
{
    if (!ing)
        return;
    httpd_stop(ing->daemon);
    config_destroy(ing->cfg);
    pthread_mutex_destroy(&ing->cfg_lock);
    free(ing);
}
