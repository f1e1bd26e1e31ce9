/*
 * reply: read a peer's answer as a CloudEvent, route it and queue it to
 * the spool (see reply.h). A queued reply is one heap block, struct
 * reply_write, that owns everything the spool borrows until its done
 * callback runs on the writer thread and frees it: the event, the answer
 * (a binary event's data), copies of the peer names (a reload may free
 * the config meanwhile) and the partition key.
 */
#include "reply.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "httpd.h"
#include "log.h"
#include "metrics.h"
#include "route.h"

#define CT_STRUCTURED "application/cloudevents+json"
#define CT_BATCH "application/cloudevents-batch+json"
/* Binary mode: more ce- headers than this is not a real event (as ingest). */
#define MAX_CE_HEADERS 64

/* ---- parse ------------------------------------------------------------ */

/* Split r->headers ("name\0value\0" pairs) into @out; -E2BIG past @max. */
static long split_headers(const struct peer_reply *r, struct http_header *out,
                          size_t max)
{
    size_t n = 0;
    const char *p = r->headers, *end = r->headers + r->headers_len;
    while (p && p < end) {
        size_t nlen = strnlen(p, (size_t)(end - p));
        const char *v = p + nlen + 1;
        if (v >= end)
            break; /* a name without its value: cannot happen, stop */
        size_t vlen = strnlen(v, (size_t)(end - v));
        if (n == max)
            return -E2BIG;
        out[n++] = (struct http_header){p, nlen, v, vlen};
        p = v + vlen + 1;
    }
    return (long)n;
}

static bool is_binary(const struct http_header *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(h[i].name, "ce-specversion") == 0 ||
            strcasecmp(h[i].name, "ce-id") == 0 ||
            strcasecmp(h[i].name, "ce-type") == 0)
            return true;
    return false;
}

static int invalid(struct ce_error *err, const char *why)
{
    ce_error_set(err, "invalid_event", -1, "", "%s", why);
    return -EINVAL;
}

/* event.c's 0 / -EINVAL / -ENOMEM as reply_parse's 1 / -EINVAL / -ENOMEM. */
static int parsed(int rc)
{
    return rc == 0 ? 1 : rc == -ENOMEM ? -ENOMEM : -EINVAL;
}

int reply_parse(const struct peer_reply *r, struct event *ev,
                struct ce_error *err)
{
    struct http_header h[MAX_CE_HEADERS];
    memset(ev, 0, sizeof(*ev));
    *err = (struct ce_error){.code = "invalid_event", .index = -1};
    const char *ct = r->content_type;
    long n = split_headers(r, h, MAX_CE_HEADERS);
    bool structured = httpd_media_type_is(ct, CT_STRUCTURED);
    bool binary = n < 0 || is_binary(h, (size_t)n);
    if (httpd_media_type_is(ct, CT_BATCH))
        return invalid(err, "a batch is not a reply");
    if (!structured && !binary)
        return 0; /* a plain answer */
    if (r->too_large)
        return invalid(err, "larger than the 1 MiB a reply may have");
    if (n < 0)
        return invalid(err, "more than 64 ce- headers");
    if (structured)
        return parsed(event_from_structured(r->body ? r->body : "",
                                            r->body_len, ev, err));
    return parsed(event_from_binary(h, (size_t)n, ct, r->body, r->body_len,
                                    ev, err));
}

/* ---- submit ----------------------------------------------------------- */

struct reply_write {
    struct spool_write w;
    struct spool_event se;
    struct event ev;
    struct peer_reply *r;    /* owns a binary event's data */
    const char **peers;      /* into names */
    unsigned char *ordered;  /* parallel to peers */
    char *names;             /* the peer names, NUL-separated */
    char *from;
    char key[32];            /* an integer partitionkey, formatted */
};

static void reply_write_free(struct reply_write *rw)
{
    if (!rw)
        return;
    event_free(&rw->ev);
    peer_reply_destroy(rw->r);
    free(rw->peers);
    free(rw->ordered);
    free(rw->names);
    free(rw->from);
    free(rw);
}

static const char *lookup_attr(void *arg, const char *attr, char *scratch,
                               size_t scratch_len)
{
    return event_attr(arg, attr, scratch, scratch_len);
}

/* Writer thread: the reply is stored (or not). */
static void stored_cb(struct spool_write *w)
{
    struct reply_write *rw = w->arg;
    const char *id = rw->se.id;
    if (w->result < 0) {
        log_warn("reply not stored", LOG_FIELDS(
            LOG_S("peer", rw->from), LOG_S("reply_id", id),
            LOG_S("error", strerror(-w->result))));
    } else {
        metrics_received(METRICS_MODE_REPLY, 1);
        if (w->n_duplicates)
            metrics_duplicates((long)w->n_duplicates);
        log_debug("reply stored", LOG_FIELDS(
            LOG_S("peer", rw->from), LOG_S("reply_id", id),
            LOG_I("duplicate", w->n_duplicates != 0)));
    }
    reply_write_free(rw);
}

/* The peer names @idx[0..n) as owned copies, with their ordered flags. */
static int copy_peers(struct reply_write *rw, const struct config *cfg,
                      const size_t *idx, size_t n)
{
    size_t total = 0;
    for (size_t k = 0; k < n; k++)
        total += strlen(cfg->peers[idx[k]].name) + 1;
    rw->names = malloc(total ? total : 1);
    rw->peers = calloc(n ? n : 1, sizeof(*rw->peers));
    rw->ordered = calloc(n ? n : 1, 1);
    if (!rw->names || !rw->peers || !rw->ordered)
        return -ENOMEM;
    char *p = rw->names;
    for (size_t k = 0; k < n; k++) {
        size_t len = strlen(cfg->peers[idx[k]].name) + 1;
        memcpy(p, cfg->peers[idx[k]].name, len);
        rw->peers[k] = p;
        rw->ordered[k] = route_ordered(cfg, lookup_attr, &rw->ev, idx[k]);
        p += len;
    }
    return 0;
}

/* Route rw->ev; the count of peers, or -ENOMEM. */
static long route(struct reply_write *rw, const struct config *cfg)
{
    size_t *idx = malloc((cfg->n_peers + 1) * sizeof(*idx));
    if (!idx)
        return -ENOMEM;
    size_t n = route_match(cfg, lookup_attr, &rw->ev, idx);
    int rc = n ? copy_peers(rw, cfg, idx, n) : 0;
    free(idx);
    return rc < 0 ? rc : (long)n;
}

static void fill_event(struct reply_write *rw, size_t n_peers, int64_t now_ms)
{
    struct event *ev = &rw->ev;
    struct spool_event *se = &rw->se;
    se->source = event_attr(ev, "source", NULL, 0);
    se->id = event_attr(ev, "id", NULL, 0);
    se->partition_key = event_attr(ev, "partitionkey", rw->key,
                                   sizeof(rw->key));
    se->format = ev->format;
    se->text = ev->text;
    se->text_len = ev->text_len;
    se->data = ev->data;
    se->data_len = ev->data_len;
    se->peers = rw->peers;
    se->n_peers = n_peers;
    se->ordered = rw->ordered;
    se->received_ms = now_ms;
    rw->w = (struct spool_write){
        .events = se, .n_events = 1, .done = stored_cb, .arg = rw};
}

long reply_submit(struct spool *spool, const struct config *cfg,
                  struct event *ev, struct peer_reply *r, const char *from,
                  int64_t now_ms)
{
    struct reply_write *rw = calloc(1, sizeof(*rw));
    if (!rw) {
        event_free(ev);
        peer_reply_destroy(r);
        return -ENOMEM;
    }
    rw->ev = *ev; /* taken */
    memset(ev, 0, sizeof(*ev));
    rw->r = r;
    rw->from = strdup(from ? from : "");
    long n = rw->from ? route(rw, cfg) : -ENOMEM;
    if (n > 0) {
        fill_event(rw, (size_t)n, now_ms);
        int rc = spool_submit(spool, &rw->w);
        if (rc == 0)
            return n; /* stored_cb frees rw */
        n = rc;
    } else if (n == 0) {
        metrics_received(METRICS_MODE_REPLY, 1); /* counted and dropped */
    }
    reply_write_free(rw);
    return n;
}
