/*
 * admin: the admin listener's requests (see admin.h for the endpoints and
 * the design). Every answer is JSON; errors have the contract's shape
 * {"error": CODE, "message": TEXT}, plus "parameter" naming a bad query
 * parameter. The token is checked on a request's first handler call, so
 * an unauthorised body is never read; everything else happens on the
 * last call, once the body (which no endpoint takes) has been dropped.
 *
 * Safety: unknown query parameters are refused rather than ignored, so a
 * typo such as DELETE /v1/dead-letters?pear=x cannot purge every dead
 * letter. Replays to a peer the current config no longer has are refused
 * (409): nothing would deliver them.
 */
#include "admin.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "buf.h"
#include "event.h"
#include "httpd.h"
#include "log.h"
#include "metrics.h"

#define LIST_DEFAULT 100
#define LIST_MAX 1000
#define DL_PATH "/v1/dead-letters"
#define EVENT_TEXT_MAX (256u << 20) /* an event as JSON in GET .../{id} */
#define RELOAD_MSG_MAX 4096

/* A peer as the admin shows it. */
struct view_peer {
    char *name;
    enum peer_type type;
    char *url;  /* http, else NULL */
    char *path; /* file, else NULL */
};

/* What requests read of the config: a private copy, swapped whole. */
struct view {
    char *token; /* NULL: no auth */
    struct view_peer *peers;
    size_t n_peers;
};

struct admin {
    struct spool *spool;
    admin_reload_fn reload;
    void *reload_arg;
    struct httpd *daemon;
    pthread_mutex_t view_lock;   /* held while a request reads the view */
    struct view *view;
    pthread_mutex_t reader_lock; /* the reader serves one request at once */
    struct spool_reader *reader;
    pthread_mutex_t reload_lock; /* one reload at a time */
};

/* ---- the view ----------------------------------------------------------- */

static void view_free(struct view *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n_peers; i++) {
        free(v->peers[i].name);
        free(v->peers[i].url);
        free(v->peers[i].path);
    }
    free(v->peers);
    free(v->token);
    free(v);
}

/* strdup that keeps NULL; sets *@ok false when out of memory. */
static char *dup_opt(const char *s, bool *ok)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d)
        *ok = false;
    return d;
}

static struct view *view_from(const struct config *cfg)
{
    struct view *v = calloc(1, sizeof(*v));
    bool ok = v != NULL;
    if (ok && cfg->n_peers)
        ok = (v->peers = calloc(cfg->n_peers, sizeof(*v->peers))) != NULL;
    if (ok)
        v->token = dup_opt(cfg->admin.token, &ok);
    for (size_t i = 0; ok && i < cfg->n_peers; i++) {
        const struct peer_config *pc = &cfg->peers[i];
        struct view_peer *p = &v->peers[v->n_peers++];
        p->type = pc->type;
        p->name = dup_opt(pc->name, &ok);
        p->url = dup_opt(pc->type == PEER_HTTP ? pc->url : NULL, &ok);
        p->path = dup_opt(pc->type == PEER_FILE ? pc->path : NULL, &ok);
    }
    if (!ok) {
        view_free(v);
        return NULL;
    }
    return v;
}

/* Is @peer in the current config? */
static bool peer_known(struct admin *a, const char *peer)
{
    bool known = false;
    pthread_mutex_lock(&a->view_lock);
    for (size_t i = 0; !known && i < a->view->n_peers; i++)
        known = strcmp(a->view->peers[i].name, peer) == 0;
    pthread_mutex_unlock(&a->view_lock);
    return known;
}

/* ---- answers ----------------------------------------------------------- */

/* Queue @body as JSON, with one extra header when @hname is set. */
static enum MHD_Result send_body(struct MHD_Connection *c, unsigned status,
                                 const char *body, size_t len,
                                 const char *hname, const char *hvalue)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (hname)
        MHD_add_response_header(r, hname, hvalue);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static const char OOM_JSON[] =
    "{\"error\":\"internal\",\"message\":\"out of memory\"}";

/* Queue @o (a new reference, consumed; NULL: out of memory). */
static enum MHD_Result send_json_h(struct MHD_Connection *c, unsigned status,
                                   json_t *o, const char *hname,
                                   const char *hvalue)
{
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    enum MHD_Result ret =
        text ? send_body(c, status, text, strlen(text), hname, hvalue)
             : send_body(c, MHD_HTTP_INTERNAL_SERVER_ERROR, OOM_JSON,
                         sizeof(OOM_JSON) - 1, NULL, NULL);
    free(text);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status,
                                 json_t *o)
{
    return send_json_h(c, status, o, NULL, NULL);
}

/* A JSON string of @s; bytes that are not valid UTF-8 become '?' (stored
 * text is valid UTF-8; this only keeps one bad row from failing a list). */
static json_t *jstr(const char *s)
{
    json_t *j = json_string(s ? s : "");
    if (j)
        return j;
    char *copy = strdup(s);
    if (!copy)
        return NULL;
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}

static json_t *error_json(const char *code, const char *message)
{
    json_t *o = json_object();
    if (o) {
        json_object_set_new(o, "error", json_string(code));
        json_object_set_new(o, "message", jstr(message));
    }
    return o;
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status,
                                  const char *code, const char *message)
{
    return send_json(c, status, error_json(code, message));
}

/* 400 for query parameter @name. */
static enum MHD_Result bad_param(struct MHD_Connection *c, const char *name,
                                 const char *message)
{
    json_t *o = error_json("invalid_parameter", message);
    if (o)
        json_object_set_new(o, "parameter", jstr(name));
    return send_json(c, MHD_HTTP_BAD_REQUEST, o);
}

static enum MHD_Result not_allowed(struct MHD_Connection *c,
                                   const char *allow)
{
    char msg[96];
    snprintf(msg, sizeof(msg), "method not allowed here (allowed: %s)", allow);
    return send_json_h(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                       error_json("method_not_allowed", msg),
                       MHD_HTTP_HEADER_ALLOW, allow);
}

static enum MHD_Result not_found(struct MHD_Connection *c, const char *what)
{
    return send_error(c, MHD_HTTP_NOT_FOUND, "not_found", what);
}

/* The answer to a failed spool call. */
static enum MHD_Result spool_error(struct MHD_Connection *c, long rc)
{
    char msg[128];
    if (rc == -ESHUTDOWN || rc == -EAGAIN)
        return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                          rc == -ESHUTDOWN ? "shutting down"
                                           : "the spool writer is not running");
    snprintf(msg, sizeof(msg), "spool: %s", strerror((int)-rc));
    return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", msg);
}

/* ---- query parameters ---------------------------------------------------- */

struct arg_check {
    const char *const *allowed;
    const char *unknown;
};

static enum MHD_Result check_arg(void *cls, enum MHD_ValueKind kind,
                                 const char *key, const char *value)
{
    (void)kind;
    (void)value;
    struct arg_check *ac = cls;
    for (const char *const *a = ac->allowed; *a; a++)
        if (strcmp(*a, key) == 0)
            return MHD_YES;
    ac->unknown = key;
    return MHD_NO;
}

/* A 400 answer when the query has a parameter not in @allowed (a
 * NULL-terminated list), else MHD_YES with *@answered false. */
static enum MHD_Result refuse_unknown(struct MHD_Connection *c,
                                      const char *const *allowed,
                                      bool *answered)
{
    struct arg_check ac = {.allowed = allowed};
    char msg[160];
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, check_arg, &ac);
    *answered = ac.unknown != NULL;
    if (!ac.unknown)
        return MHD_YES;
    snprintf(msg, sizeof(msg), "unknown query parameter \"%.64s\"",
             ac.unknown);
    return bad_param(c, ac.unknown, msg);
}

/* Parse decimal digits only (no sign, no blanks) in [min, max]. */
static int parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 19)
        return -EINVAL;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

/* The query's peer: NULL when absent; *@bad when empty or not UTF-8. */
static const char *peer_arg(struct MHD_Connection *c, bool *bad)
{
    const char *p = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND,
                                                "peer");
    json_t *probe = p ? json_string(p) : NULL;
    *bad = p && (!*p || !probe);
    json_decref(probe);
    return p;
}

/* ---- dead letters: reading ---------------------------------------------- */

static json_t *dead_json(const struct spool_dead_letter *dl)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "id", json_integer(dl->id));
    json_object_set_new(o, "peer", jstr(dl->peer));
    json_object_set_new(o, "event_id", jstr(dl->event_id));
    json_object_set_new(o, "source", jstr(dl->source));
    json_object_set_new(o, "type", jstr(dl->type));
    json_object_set_new(o, "attempts", json_integer(dl->attempts));
    json_object_set_new(o, "received_ms", json_integer(dl->received_ms));
    json_object_set_new(o, "dead_ms", json_integer(dl->dead_ms));
    json_object_set_new(o, "reason", jstr(dl->reason));
    json_object_set_new(o, "last_status", json_integer(dl->last_status));
    json_object_set_new(o, "last_error",
                        dl->last_error ? jstr(dl->last_error) : json_null());
    return o;
}

/* The list page: the first @limit of @dl's @n items, and the cursor when
 * there are more (@n is then limit + 1). */
static json_t *page_json(const struct spool_dead_letter *dl, size_t n,
                         size_t limit)
{
    json_t *items = json_array();
    size_t shown = n > limit ? limit : n;
    for (size_t i = 0; items && i < shown; i++)
        json_array_append_new(items, dead_json(&dl[i]));
    json_t *next = json_null();
    if (n > limit) {
        char cursor[24];
        snprintf(cursor, sizeof(cursor), "%" PRId64, dl[limit - 1].id);
        next = json_string(cursor);
    }
    return items ? json_pack("{s:o, s:o}", "items", items, "next", next)
                 : NULL;
}

struct list_args {
    const char *peer;
    int64_t limit, after;
};

/* Parse GET /v1/dead-letters' query. MHD_YES with *@answered false when
 * it is valid, else the 400 answer. */
static enum MHD_Result list_args(struct MHD_Connection *c, struct list_args *la,
                                 bool *answered)
{
    static const char *const allowed[] = {"peer", "limit", "after", NULL};
    enum MHD_Result ret = refuse_unknown(c, allowed, answered);
    if (*answered)
        return ret;
    *answered = true;
    bool bad;
    la->peer = peer_arg(c, &bad);
    if (bad)
        return bad_param(c, "peer", "peer must be a non-empty peer name");
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND,
                                                "limit");
    la->limit = LIST_DEFAULT;
    if (v && parse_i64(v, 1, LIST_MAX, &la->limit))
        return bad_param(c, "limit", "limit must be an integer from 1 to 1000");
    v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after");
    la->after = 0;
    if (v && parse_i64(v, 0, INT64_MAX, &la->after))
        return bad_param(c, "after", "after must be the \"next\" cursor"
                                     " of a previous page");
    *answered = false;
    return MHD_YES;
}

static enum MHD_Result list_dead(struct admin *a, struct MHD_Connection *c)
{
    struct list_args la;
    bool answered;
    enum MHD_Result ret = list_args(c, &la, &answered);
    if (answered)
        return ret;
    size_t want = (size_t)la.limit + 1; /* one more: is there a next page? */
    struct spool_dead_letter *dl = calloc(want, sizeof(*dl));
    if (!dl)
        return send_json(c, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
    pthread_mutex_lock(&a->reader_lock);
    long n = spool_dead_list(a->reader, la.peer, la.after, want, dl);
    pthread_mutex_unlock(&a->reader_lock);
    if (n < 0) {
        free(dl);
        return spool_error(c, n);
    }
    json_t *page = page_json(dl, (size_t)n, (size_t)la.limit);
    for (long i = 0; i < n; i++)
        spool_dead_letter_free(&dl[i]);
    free(dl);
    return send_json(c, MHD_HTTP_OK, page);
}

/* The stored event in structured mode, or null if it cannot be read. */
static json_t *event_json(const struct spool_dead_detail *d)
{
    struct event ev;
    struct buf b;
    json_t *o = NULL;
    if (!d->has_event ||
        event_load(d->format, d->text, d->text_len, d->data, d->data_len,
                   &ev) != 0)
        return json_null();
    buf_init(&b, EVENT_TEXT_MAX);
    if (event_to_structured(&ev, &b) == 0)
        o = json_loadb(b.data ? b.data : "", b.len, 0, NULL);
    buf_free(&b);
    event_free(&ev);
    return o ? o : json_null();
}

static json_t *attempts_json(const struct spool_dead_detail *d)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < d->n_attempts; i++) {
        const struct spool_attempt *at = &d->attempts[i];
        json_t *o = json_pack("{s:i, s:I, s:I, s:I}", "n", at->n, "at_ms",
                              (json_int_t)at->at_ms, "duration_ms",
                              (json_int_t)at->duration_ms, "status",
                              (json_int_t)at->status);
        if (o)
            json_object_set_new(o, "error",
                                at->error ? jstr(at->error) : json_null());
        json_array_append_new(arr, o);
    }
    return arr;
}

/* GET /v1/dead-letters/{id}: the list's fields, with "attempts" as the
 * history (the count is "attempt_count") and the "event". */
static enum MHD_Result show_dead(struct admin *a, struct MHD_Connection *c,
                                 int64_t id)
{
    struct spool_dead_detail d;
    pthread_mutex_lock(&a->reader_lock);
    int rc = spool_dead_get(a->reader, id, &d);
    pthread_mutex_unlock(&a->reader_lock);
    if (rc == -ENOENT)
        return not_found(c, "no such dead letter");
    if (rc)
        return spool_error(c, rc);
    json_t *o = dead_json(&d.dl);
    if (o) {
        json_object_set_new(o, "attempt_count", json_integer(d.dl.attempts));
        json_object_set_new(o, "attempts", attempts_json(&d));
        json_object_set_new(o, "event", event_json(&d));
    }
    spool_dead_detail_free(&d);
    return send_json(c, MHD_HTTP_OK, o);
}

/* ---- dead letters: replay and purge ------------------------------------ */

static enum MHD_Result send_count(struct MHD_Connection *c, const char *key,
                                  long n)
{
    return send_json(c, MHD_HTTP_OK, json_pack("{s:I}", key, (json_int_t)n));
}

static enum MHD_Result unknown_peer(struct MHD_Connection *c, const char *peer)
{
    char msg[320];
    snprintf(msg, sizeof(msg),
             "peer \"%.128s\" is not in the current configuration: nothing "
             "would deliver a replay (add the peer back, or purge its dead "
             "letters)",
             peer);
    return send_error(c, MHD_HTTP_CONFLICT, "unknown_peer", msg);
}

static void log_op(const char *what, int64_t id, const char *peer, long n)
{
    log_info(what, LOG_FIELDS(LOG_I("id", id), LOG_S("peer", peer),
                              LOG_I("count", n)));
}

/* Is dead letter @id's peer configured? 1 yes, 0 no (its name, new, in
 * *@peer), -ENOENT when there is no such dead letter, or -errno. */
static long dead_peer_known(struct admin *a, int64_t id, char **peer)
{
    struct spool_dead_letter dl;
    *peer = NULL;
    pthread_mutex_lock(&a->reader_lock);
    long n = spool_dead_list(a->reader, NULL, id - 1, 1, &dl);
    pthread_mutex_unlock(&a->reader_lock);
    if (n <= 0)
        return n < 0 ? n : -ENOENT;
    long rc = dl.id != id ? -ENOENT : peer_known(a, dl.peer) ? 1 : 0;
    if (rc == 0) {
        *peer = dl.peer; /* taken over */
        dl.peer = NULL;
    }
    spool_dead_letter_free(&dl);
    return rc;
}

static enum MHD_Result replay_one(struct admin *a, struct MHD_Connection *c,
                                  int64_t id)
{
    char *peer = NULL;
    long n = dead_peer_known(a, id, &peer);
    if (n == -ENOENT)
        return not_found(c, "no such dead letter");
    if (n < 0)
        return spool_error(c, n);
    if (n == 0) {
        enum MHD_Result ret = unknown_peer(c, peer);
        free(peer);
        return ret;
    }
    n = spool_dead_replay(a->spool, &(struct spool_dead_filter){.id = id});
    if (n < 0)
        return spool_error(c, n);
    if (n == 0) /* purged meanwhile */
        return not_found(c, "no such dead letter");
    log_op("admin: dead letters replayed", id, NULL, n);
    return send_count(c, "replayed", n);
}

/* Replay every dead letter whose peer is configured; report the others. */
static enum MHD_Result replay_all(struct admin *a, struct MHD_Connection *c)
{
    char **names = NULL;
    pthread_mutex_lock(&a->reader_lock);
    long n = spool_dead_peers(a->reader, &names);
    pthread_mutex_unlock(&a->reader_lock);
    if (n < 0)
        return spool_error(c, n);
    long replayed = 0, rc = 0;
    int64_t skipped = 0, pending, dead;
    json_t *skipped_peers = json_array();
    for (long i = 0; i < n && rc >= 0; i++) {
        if (peer_known(a, names[i])) {
            struct spool_dead_filter by_peer = {.peer = names[i]};
            rc = spool_dead_replay(a->spool, &by_peer);
            replayed += rc > 0 ? rc : 0;
            continue;
        }
        spool_peer_counts(a->spool, names[i], &pending, &dead);
        skipped += dead;
        json_array_append_new(skipped_peers, jstr(names[i]));
    }
    for (long i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (rc < 0) {
        json_decref(skipped_peers);
        return spool_error(c, rc);
    }
    log_op("admin: dead letters replayed", 0, NULL, replayed);
    json_t *o = json_pack("{s:I, s:I}", "replayed", (json_int_t)replayed,
                          "skipped", (json_int_t)skipped);
    if (o && skipped)
        json_object_set(o, "skipped_peers", skipped_peers);
    json_decref(skipped_peers);
    return send_json(c, MHD_HTTP_OK, o);
}

/* POST /v1/dead-letters/replay[?peer=P] */
static enum MHD_Result replay_many(struct admin *a, struct MHD_Connection *c)
{
    static const char *const allowed[] = {"peer", NULL};
    bool answered, bad;
    enum MHD_Result ret = refuse_unknown(c, allowed, &answered);
    if (answered)
        return ret;
    const char *peer = peer_arg(c, &bad);
    if (bad)
        return bad_param(c, "peer", "peer must be a non-empty peer name");
    if (!peer)
        return replay_all(a, c);
    if (!peer_known(a, peer))
        return unknown_peer(c, peer);
    struct spool_dead_filter by_peer = {.peer = peer};
    long n = spool_dead_replay(a->spool, &by_peer);
    if (n < 0)
        return spool_error(c, n);
    log_op("admin: dead letters replayed", 0, peer, n);
    return send_count(c, "replayed", n);
}

static enum MHD_Result purge_one(struct admin *a, struct MHD_Connection *c,
                                 int64_t id)
{
    long n = spool_dead_purge(a->spool, &(struct spool_dead_filter){.id = id});
    if (n < 0)
        return spool_error(c, n);
    if (n == 0)
        return not_found(c, "no such dead letter");
    log_op("admin: dead letters purged", id, NULL, n);
    return send_count(c, "purged", n);
}

/* DELETE /v1/dead-letters[?peer=P] */
static enum MHD_Result purge_many(struct admin *a, struct MHD_Connection *c)
{
    static const char *const allowed[] = {"peer", NULL};
    bool answered, bad;
    enum MHD_Result ret = refuse_unknown(c, allowed, &answered);
    if (answered)
        return ret;
    const char *peer = peer_arg(c, &bad);
    if (bad)
        return bad_param(c, "peer", "peer must be a non-empty peer name");
    struct spool_dead_filter by_peer = {.peer = peer};
    long n = spool_dead_purge(a->spool, &by_peer);
    if (n < 0)
        return spool_error(c, n);
    log_op("admin: dead letters purged", 0, peer, n);
    return send_count(c, "purged", n);
}

/* ---- peers and reload ------------------------------------------------- */

static json_t *peer_json(struct spool *s, const struct view_peer *p)
{
    static const char *const types[] = {
        [PEER_HTTP] = "http", [PEER_STDOUT] = "stdout", [PEER_FILE] = "file"};
    static const char *const states[] = {[METRICS_BREAKER_CLOSED] = "closed",
                                         [METRICS_BREAKER_OPEN] = "open",
                                         [METRICS_BREAKER_HALF_OPEN] =
                                             "half-open"};
    struct peer_metrics *pm = metrics_peer(p->name);
    int st = pm ? atomic_load(&pm->breaker_state) : METRICS_BREAKER_CLOSED;
    long long in_flight = pm ? atomic_load(&pm->in_flight) : 0;
    int64_t pending = 0, dead = 0;
    spool_peer_counts(s, p->name, &pending, &dead);
    if (st < 0 || st > METRICS_BREAKER_HALF_OPEN)
        st = METRICS_BREAKER_CLOSED;
    json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I}", "name", p->name,
                          "type", types[p->type], "breaker", states[st],
                          "in_flight", (json_int_t)in_flight, "pending",
                          (json_int_t)pending, "dead_letters",
                          (json_int_t)dead);
    if (o && p->url)
        json_object_set_new(o, "url", jstr(p->url));
    if (o && p->path)
        json_object_set_new(o, "path", jstr(p->path));
    return o;
}

static enum MHD_Result list_peers(struct admin *a, struct MHD_Connection *c)
{
    json_t *arr = json_array();
    pthread_mutex_lock(&a->view_lock);
    for (size_t i = 0; arr && i < a->view->n_peers; i++)
        json_array_append_new(arr, peer_json(a->spool, &a->view->peers[i]));
    pthread_mutex_unlock(&a->view_lock);
    return send_json(c, MHD_HTTP_OK,
                     arr ? json_pack("{s:o}", "peers", arr) : NULL);
}

static enum MHD_Result do_reload(struct admin *a, struct MHD_Connection *c)
{
    if (!a->reload)
        return send_error(c, MHD_HTTP_NOT_IMPLEMENTED, "not_implemented",
                          "reload is not available");
    char *msg = calloc(1, RELOAD_MSG_MAX);
    if (!msg)
        return send_json(c, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL);
    pthread_mutex_lock(&a->reload_lock);
    int rc = a->reload(a->reload_arg, msg, RELOAD_MSG_MAX);
    pthread_mutex_unlock(&a->reload_lock);
    enum MHD_Result ret;
    if (rc == 0)
        ret = send_json(c, MHD_HTTP_OK, json_pack("{s:b}", "reloaded", 1));
    else if (rc == -EINVAL)
        ret = send_error(c, MHD_HTTP_BAD_REQUEST, "invalid_config",
                         msg[0] ? msg : "invalid configuration");
    else
        ret = send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "reload_failed",
                         msg[0] ? msg : strerror(-rc));
    free(msg);
    return ret;
}

/* ---- routing ----------------------------------------------------------- */

static bool is(const char *method, const char *want)
{
    return strcmp(method, want) == 0;
}

/* /v1/dead-letters/{id} and /v1/dead-letters/{id}/replay */
static enum MHD_Result route_one(struct admin *a, struct MHD_Connection *c,
                                 const char *rest, const char *method)
{
    char digits[24];
    size_t n = strcspn(rest, "/");
    int64_t id;
    if (n == 0 || n >= sizeof(digits))
        return not_found(c, "no such endpoint");
    memcpy(digits, rest, n);
    digits[n] = '\0';
    if (parse_i64(digits, 1, INT64_MAX, &id))
        return not_found(c, "no such dead letter");
    rest += n;
    if (strcmp(rest, "/replay") == 0)
        return is(method, MHD_HTTP_METHOD_POST) ? replay_one(a, c, id)
                                                : not_allowed(c, "POST");
    if (*rest)
        return not_found(c, "no such endpoint");
    if (is(method, MHD_HTTP_METHOD_GET))
        return show_dead(a, c, id);
    if (is(method, MHD_HTTP_METHOD_DELETE))
        return purge_one(a, c, id);
    return not_allowed(c, "GET, DELETE");
}

static enum MHD_Result route(struct admin *a, struct MHD_Connection *c,
                             const char *url, const char *method)
{
    if (strcmp(url, DL_PATH) == 0) {
        if (is(method, MHD_HTTP_METHOD_GET))
            return list_dead(a, c);
        if (is(method, MHD_HTTP_METHOD_DELETE))
            return purge_many(a, c);
        return not_allowed(c, "GET, DELETE");
    }
    if (strcmp(url, DL_PATH "/replay") == 0)
        return is(method, MHD_HTTP_METHOD_POST) ? replay_many(a, c)
                                                : not_allowed(c, "POST");
    if (strncmp(url, DL_PATH "/", sizeof(DL_PATH)) == 0)
        return route_one(a, c, url + sizeof(DL_PATH), method);
    if (strcmp(url, "/v1/peers") == 0)
        return is(method, MHD_HTTP_METHOD_GET) ? list_peers(a, c)
                                               : not_allowed(c, "GET");
    if (strcmp(url, "/v1/reload") == 0)
        return is(method, MHD_HTTP_METHOD_POST) ? do_reload(a, c)
                                                : not_allowed(c, "POST");
    return not_found(c, "no such endpoint");
}

static bool authorized(struct admin *a, struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_AUTHORIZATION);
    pthread_mutex_lock(&a->view_lock);
    bool ok = auth_bearer_ok(h, a->view->token);
    pthread_mutex_unlock(&a->view_lock);
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    static int seen; /* marks a request past its first call */
    struct admin *a = cls;
    (void)version;
    (void)upload_data;
    if (!*con_cls) {
        *con_cls = &seen;
        if (authorized(a, c))
            return MHD_YES;
        return send_json_h(c, MHD_HTTP_UNAUTHORIZED,
                           error_json("unauthorized",
                                      "missing or wrong bearer token"),
                           MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    }
    if (*upload_data_size) { /* no endpoint takes a body: drop it */
        *upload_data_size = 0;
        return MHD_YES;
    }
    return route(a, c, url, method);
}

/* ---- lifecycle --------------------------------------------------------- */

static void admin_free(struct admin *a)
{
    spool_reader_close(a->reader);
    view_free(a->view);
    pthread_mutex_destroy(&a->view_lock);
    pthread_mutex_destroy(&a->reader_lock);
    pthread_mutex_destroy(&a->reload_lock);
    free(a);
}

struct admin *admin_start(const struct admin_deps *deps, char *err,
                          size_t err_len)
{
    struct admin *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(err, err_len, "admin: out of memory");
        return NULL;
    }
    pthread_mutex_init(&a->view_lock, NULL);
    pthread_mutex_init(&a->reader_lock, NULL);
    pthread_mutex_init(&a->reload_lock, NULL);
    a->spool = deps->spool;
    a->reload = deps->reload;
    a->reload_arg = deps->reload_arg;
    a->view = view_from(deps->cfg);
    a->reader = a->view ? spool_reader_open(deps->spool) : NULL;
    if (!a->reader) {
        snprintf(err, err_len, "admin: %s",
                 a->view ? "cannot open a spool reader" : "out of memory");
        admin_free(a);
        return NULL;
    }
    struct httpd_options opt = {.listen = deps->cfg->admin.listen,
                                .label = "admin listen",
                                .threads = deps->threads ? deps->threads : 2,
                                .tls_cert_file = deps->cfg->admin.tls.cert_file,
                                .tls_key_file = deps->cfg->admin.tls.key_file,
                                .tls_path = "admin.tls",
                                .handler = on_request,
                                .handler_cls = a};
    /* The "http" limits; the pool stays small (operators, not traffic). */
    httpd_options_from_config(&opt, deps->cfg, false);
    a->daemon = httpd_start(&opt, err, err_len);
    if (!a->daemon) {
        admin_free(a);
        return NULL;
    }
    return a;
}

uint16_t admin_port(struct admin *a)
{
    return httpd_port(a->daemon);
}

int admin_set_config(struct admin *a, const struct config *cfg)
{
    struct view *v = view_from(cfg);
    if (!v)
        return -ENOMEM;
    pthread_mutex_lock(&a->view_lock);
    struct view *old = a->view;
    a->view = v;
    pthread_mutex_unlock(&a->view_lock);
    view_free(old);
    return 0;
}

void admin_stop(struct admin *a)
{
    if (!a)
        return;
    httpd_stop(a->daemon);
    admin_free(a);
}
