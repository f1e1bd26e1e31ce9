/*
 * dispatch: the delivery loop. It moves each pending delivery from the
 * spool to its peer through the peer's back-end (peer.h), applies the retry
 * policy (retry.h) to what came back, and reports every outcome to the
 * spool writer. See dispatch.h for the contract.
 *
 * DESIGN
 * Threads. One dispatcher thread owns everything in struct dispatch except
 * the inbox: the curl multi handle and its easy handles (via the back-ends),
 * the peers' queues and in-flight counts, the window set, the reader
 * connection (opened by dispatch_create, used only by this thread after
 * dispatch_start), and the outcome buffer. The spool's commit callback runs
 * on the spool writer thread and touches only the inbox (under inbox.lock)
 * and curl_multi_wakeup(), which libcurl makes safe from any thread.
 *
 * The loop. Each turn: beat the heart, drain the inbox, refill and start
 * (unless stopping), let curl work, collect finished transfers, post the
 * outcomes, refresh gauges, then sleep in curl_multi_poll() until a socket
 * is ready, a commit wakes us, or the earliest known due time comes (at
 * most 1 s). Nothing else in the loop blocks: HTTP is non-blocking; the
 * stdout and file sinks write locally and synchronously.
 *
 * The window. Per peer, the deliveries in our hands (queued, in flight, or
 * outcome posted but not yet durable) are counted, and their ids sit in one
 * hash set shared by all peers (delivery ids are unique) so that
 * spool_fetch_due() skips them. A peer holds at most 2 x max_in_flight, so
 * memory stays bounded whatever the backlog. An id leaves the set only when
 * the commit callback says its outcome is durable: until then the spool
 * still shows the old row, and loading it again would deliver it twice.
 *
 * Refill. A peer pages due work in when it has room in its window and the
 * spool may hold due work: after a commit announcing new deliveries, after
 * a page came back full, or when the earliest retry time it knows of has
 * arrived: spool_next_due() after a short page, lowered by each RETRY
 * outcome once it is durable (before that the spool still shows the old
 * row, so a short page taken meanwhile cannot know the new time).
 *
 * Orphans. Deliveries of peers no longer in the config are dead-lettered at
 * start through the same machinery: each such name becomes an orphan peer
 * (no back-end) whose pages, fetched with now = INT64_MAX, go straight to
 * DEAD outcomes.
 *
 * Stop. dispatch_stop() sets a flag and a monotonic deadline and wakes the
 * loop, which then starts nothing new, lets in-flight transfers run until
 * they finish or the deadline passes, removes the rest from the multi
 * handle without an outcome (they stay pending in the spool), posts the
 * outcomes it has, and exits. Shutdown never dead-letters.
 *
 * Breakers. Each HTTP peer has a circuit breaker (breaker.h) that gates
 * starting attempts, on monotonic time. RETRY-class results of attempts
 * that reached the transport count as failures; a non-retryable status
 * (the 4xx a delivery is dead-lettered for) is the peer answering, not
 * failing; failures to even build a request are not the peer's and are
 * not recorded. While the breaker is open nothing of that peer starts:
 * loaded deliveries wait in its queue, due ones stay in the spool, no
 * attempt is counted, nothing is dead-lettered (a delivery that grows too
 * old meanwhile is dead-lettered when it is next considered, after the
 * breaker let it through). The poll timeout wakes the loop when open_ms
 * ends; then one delivery goes as the probe, and the rest follow at full
 * max_in_flight once it succeeds. Every change is published to the
 * peer's breaker_open (1 unless closed) and breaker_state gauges, and
 * logged. Local sinks have no breaker.
 *
 * Replies. An HTTP peer's answer that may be a reply event arrives as
 * job->reply (peer_http.c); once its delivery counts as delivered,
 * reply.c parses it, routes it with d->cfg and queues it to the spool
 * (asynchronously: the writer frees it after its commit). This happens
 * before the delivery's outcome is posted, so the reply is durable no
 * later than the outcome.
 *
 * Not yet: ordering by partitionkey (refill would hold back later
 * deliveries of a key whose head is in the window).
 */
#include "dispatch.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "breaker.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "peer.h"
#include "reply.h"
#include "retry.h"

#define POLL_MAX_MS 1000
#define GAUGES_EVERY_MS 1000
#define REPOST_MS 50          /* retry posting outcomes after -ENOMEM */
#define FETCH_ERROR_BACKOFF_MS 1000
#define ORPHAN_PAGE 64

/* ---- the window set ---------------------------------------------------- */

struct slot {
    int64_t id;
    int64_t retry_at; /* posted RETRY's next_ms, else 0 */
    uint32_t peer;    /* index into dispatch.peers */
    bool used;
    bool awaiting;    /* outcome posted, not yet durable */
};

/* Open addressing with linear probing and backward-shift deletion. */
struct idset {
    struct slot *slots;
    size_t cap; /* 0 or a power of two */
    size_t n;
};

static uint64_t mix(int64_t id)
{
    uint64_t z = (uint64_t)id + 0x9e3779b97f4a7c15ULL; /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static struct slot *set_find(const struct idset *s, int64_t id)
{
    if (!s->cap)
        return NULL;
    size_t mask = s->cap - 1;
    for (size_t i = mix(id) & mask;; i = (i + 1) & mask) {
        if (!s->slots[i].used)
            return NULL;
        if (s->slots[i].id == id)
            return &s->slots[i];
    }
}

static void set_place(struct idset *s, struct slot v)
{
    size_t mask = s->cap - 1;
    size_t i = mix(v.id) & mask;
    while (s->slots[i].used)
        i = (i + 1) & mask;
    s->slots[i] = v;
    s->n++;
}

static int set_grow(struct idset *s)
{
    size_t cap = s->cap ? s->cap * 2 : 64;
    struct slot *old = s->slots;
    size_t old_cap = s->cap;
    s->slots = calloc(cap, sizeof(*s->slots));
    if (!s->slots) {
        s->slots = old;
        return -ENOMEM;
    }
    s->cap = cap;
    s->n = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].used)
            set_place(s, old[i]);
    free(old);
    return 0;
}

static int set_add(struct idset *s, int64_t id, uint32_t peer)
{
    if ((s->n + 1) * 2 > s->cap && set_grow(s) < 0)
        return -ENOMEM;
    set_place(s, (struct slot){.id = id, .peer = peer, .used = true});
    return 0;
}

static void set_del(struct idset *s, struct slot *sl)
{
    size_t mask = s->cap - 1;
    size_t i = (size_t)(sl - s->slots);
    s->slots[i].used = false;
    s->n--;
    for (size_t j = (i + 1) & mask; s->slots[j].used; j = (j + 1) & mask) {
        size_t k = mix(s->slots[j].id) & mask; /* home of the entry at j */
        bool stays = i < j ? (k > i && k <= j) : (k > i || k <= j);
        if (stays)
            continue;
        s->slots[i] = s->slots[j];
        s->slots[j].used = false;
        i = j;
    }
}

/* ---- job lists --------------------------------------------------------- */

struct jlist {
    struct peer_job *head, *tail;
    size_t n;
};

static void jl_push(struct jlist *l, struct peer_job *j)
{
    j->next = NULL;
    j->prev = l->tail;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
    l->n++;
}

static void jl_push_front(struct jlist *l, struct peer_job *j)
{
    j->prev = NULL;
    j->next = l->head;
    if (l->head)
        l->head->prev = j;
    else
        l->tail = j;
    l->head = j;
    l->n++;
}

static void jl_remove(struct jlist *l, struct peer_job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        l->head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        l->tail = j->prev;
    j->prev = j->next = NULL;
    l->n--;
}

/* Frees @j and the jobs riding in its request (batch mode). */
static void job_free(struct peer_job *j)
{
    while (j) {
        struct peer_job *next = j->batch_next;
        event_free(&j->ev);
        spool_delivery_free(&j->d);
        peer_reply_destroy(j->reply);
        free(j);
        j = next;
    }
}

/* Jobs in @j's request: 1, or the length of its batch chain. */
static size_t batch_len(const struct peer_job *j)
{
    size_t n = 0;
    for (; j; j = j->batch_next)
        n++;
    return n;
}

/* ---- state ------------------------------------------------------------- */

/* A configured peer, or an orphan (pc == NULL, ops == NULL). */
struct dpeer {
    const char *name;              /* pc->name, or owned_name */
    char *owned_name;
    const struct peer_config *pc;
    const struct peer_ops *ops;
    void *ctx;                     /* the back-end's */
    struct peer_metrics *pm;       /* NULL for orphans */
    size_t max_in_flight;
    size_t window_cap;
    size_t window;                 /* ids held in the set */
    size_t in_flight;              /* deliveries on the wire */
    size_t requests;               /* requests on the wire (fewer in batch
                                    * mode); max_in_flight bounds these */
    size_t batch_size;             /* jobs per request: 1 unless batch mode */
    struct jlist queue;            /* loaded, not started */
    struct jlist running;          /* async transfers in the multi */
    bool maybe_due;                /* the spool may hold due work */
    int64_t next_due_ms;           /* wall; earliest known future retry */
    bool gated;                    /* has a breaker (HTTP peers) */
    struct breaker br;             /* on monotonic ms */
    enum breaker_state br_seen;    /* last state published */
    int br_failures;               /* failures that opened it last */
};

/* Written by the spool writer's commit callback, read by the loop. */
struct inbox {
    pthread_mutex_t lock;
    bool new_deliveries;
    bool lost;          /* settled ids were dropped for lack of memory */
    int64_t *settled;
    size_t n, cap;
};

struct dispatch {
    /* Set by dispatch_create, read-only afterwards. */
    const struct config *cfg;
    struct spool *spool;
    CURLM *multi;

    /* The dispatcher thread's (see DESIGN). */
    struct spool_reader *reader;
    struct dpeer *peers;
    size_t n_peers;
    struct idset window;
    struct spool_delivery *page;
    size_t page_cap;
    struct spool_outcome *outs;
    size_t n_outs, cap_outs;
    int64_t *taken;         /* settled ids swapped out of the inbox */
    size_t cap_taken;
    uint64_t rng;
    int64_t next_gauges_ms; /* monotonic */
    size_t in_flight;

    struct inbox inbox;

    /* Lifecycle: the caller's thread. */
    pthread_t thread;
    bool started, joined;

    /* Any thread. */
    atomic_bool stop;
    _Atomic int64_t deadline_ms; /* monotonic, valid once stop is set */
    _Atomic int64_t heartbeat_ms;
};

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dULL;
}

static uint64_t rng_seed(void)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
        seed = (uint64_t)clock_mono_us() ^ ((uint64_t)getpid() << 32);
    return seed ? seed : 0x9e3779b97f4a7c15ULL;
}

static const struct peer_ops *ops_for(enum peer_type type)
{
    switch (type) {
    case PEER_STDOUT:
        return &peer_stdout_ops;
    case PEER_FILE:
        return &peer_file_ops;
    case PEER_HTTP:
    default:
        return &peer_http_ops;
    }
}

static void set_in_flight(struct dispatch *d, struct dpeer *p, long delta)
{
    p->in_flight = (size_t)((long)p->in_flight + delta);
    d->in_flight = (size_t)((long)d->in_flight + delta);
    if (p->pm)
        atomic_store_explicit(&p->pm->in_flight, (long long)p->in_flight,
                              memory_order_relaxed);
}

/* ---- breakers ---------------------------------------------------------- */

static enum metrics_breaker breaker_gauge(enum breaker_state s)
{
    return s == BREAKER_OPEN        ? METRICS_BREAKER_OPEN
           : s == BREAKER_HALF_OPEN ? METRICS_BREAKER_HALF_OPEN
                                    : METRICS_BREAKER_CLOSED;
}

static void log_breaker(const struct dpeer *p, enum breaker_state was)
{
    struct log_field f[] = {
        LOG_S("peer", p->name),
        LOG_I("failures", p->br_failures),
        LOG_I("open_ms", p->br.open_ms),
    };
    size_t n = sizeof(f) / sizeof(f[0]);
    if (p->br_seen == BREAKER_HALF_OPEN)
        log_write(LOG_DEBUG, "circuit breaker half-open: sending a probe", 1,
                  f);
    else if (p->br_seen == BREAKER_CLOSED)
        log_write(LOG_INFO, "circuit breaker closed", n, f);
    else if (was == BREAKER_CLOSED)
        log_write(LOG_WARN, "circuit breaker opened", n, f);
    else /* the probe failed: open again, as every open_ms while down */
        log_write(LOG_INFO, "circuit breaker probe failed: open again", n, f);
}

/* Publish and log @p's breaker state if it changed. */
static void breaker_publish(struct dpeer *p)
{
    enum breaker_state was = p->br_seen;
    if (p->br.state == was)
        return;
    p->br_seen = p->br.state;
    if (p->br_seen == BREAKER_OPEN)
        p->br_failures = p->br.failures;
    if (p->pm) {
        atomic_store_explicit(&p->pm->breaker_state,
                              (int)breaker_gauge(p->br_seen),
                              memory_order_relaxed);
        atomic_store_explicit(&p->pm->breaker_open,
                              p->br_seen != BREAKER_CLOSED,
                              memory_order_relaxed);
    }
    log_breaker(p, was);
}

/* May @p start an attempt now? Sets *@probe for the half-open probe. */
static bool breaker_gate(struct dpeer *p, int64_t mono, bool *probe)
{
    *probe = false;
    if (!p->gated)
        return true;
    bool ok = breaker_allow(&p->br, mono, probe);
    breaker_publish(p);
    return ok;
}

/* What an attempt that reached the transport says about its peer. */
static void breaker_note(struct dpeer *p, const struct peer_job *j)
{
    if (!p->gated)
        return;
    enum breaker_outcome o;
    if (j->res.result == DELIVER_OK) {
        o = BREAKER_SUCCESS;
    } else if (j->res.result == DELIVER_RETRY) {
        o = BREAKER_FAILURE;
    } else if (j->res.status >= 100) {
        o = BREAKER_ANSWERED;
    } else { /* dead without an answer (a bad URL): no news of the peer */
        if (j->probe)
            breaker_release(&p->br);
        return;
    }
    breaker_record(&p->br, o, j->probe, clock_mono_ms());
    breaker_publish(p);
}

/* ---- commit callback (spool writer thread) ----------------------------- */

static void inbox_add_settled(struct inbox *in, const int64_t *ids, size_t n)
{
    if (in->n + n > in->cap) {
        size_t cap = in->cap ? in->cap : 64;
        while (cap < in->n + n)
            cap *= 2;
        int64_t *p = realloc(in->settled, cap * sizeof(*p));
        if (!p) {
            in->lost = true;
            return;
        }
        in->settled = p;
        in->cap = cap;
    }
    memcpy(in->settled + in->n, ids, n * sizeof(*ids));
    in->n += n;
}

static void commit_cb(void *arg, const struct spool_commit *c)
{
    struct dispatch *d = arg;
    if (!c->n_new_deliveries && !c->n_settled)
        return;
    pthread_mutex_lock(&d->inbox.lock);
    if (c->n_new_deliveries)
        d->inbox.new_deliveries = true;
    if (c->n_settled)
        inbox_add_settled(&d->inbox, c->settled, c->n_settled);
    pthread_mutex_unlock(&d->inbox.lock);
    curl_multi_wakeup(d->multi);
}

/* ---- outcomes ---------------------------------------------------------- */

static void iso_time(int64_t ms, char *out, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm)) { /* past year 2^31: say the number */
        snprintf(out, len, "%" PRId64, ms);
        return;
    }
    size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, len - n, ".%03dZ", (int)(ms % 1000));
}

static void push_outcome(struct dispatch *d, const struct spool_outcome *o)
{
    if (d->n_outs == d->cap_outs) {
        size_t cap = d->cap_outs ? d->cap_outs * 2 : 64;
        struct spool_outcome *p = realloc(d->outs, cap * sizeof(*p));
        if (!p) {
            /* Dropped: the row stays as it was and is tried again after a
             * restart (its id never leaves the window until then). */
            log_error("cannot record a delivery outcome",
                      LOG_FIELDS(LOG_I("delivery", o->delivery_id),
                                 LOG_S("error", "out of memory")));
            return;
        }
        d->outs = p;
        d->cap_outs = cap;
    }
    d->outs[d->n_outs++] = *o;
    struct slot *sl = set_find(&d->window, o->delivery_id);
    if (sl) {
        sl->awaiting = true;
        sl->retry_at = o->kind == SPOOL_RETRY ? o->next_ms : 0;
    }
}

static void flush_outcomes(struct dispatch *d)
{
    if (!d->n_outs)
        return;
    int rc = spool_post_outcomes(d->spool, d->outs, d->n_outs);
    if (rc == -ENOMEM)
        return; /* kept; the loop retries soon */
    if (rc < 0)
        log_warn("delivery outcomes not recorded; they stay pending",
                 LOG_FIELDS(LOG_I("count", d->n_outs),
                            LOG_S("error", strerror(-rc))));
    d->n_outs = 0;
}

/*
 * The W3C trace id (the 32 hex digits of "00-<trace>-<span>-<flags>") of
 * the event's traceparent, so a delivery's logs join its trace. NULL when
 * the event has none or it is malformed.
 */
static const char *trace_id(const struct peer_job *j, char out[33])
{
    char scratch[64]; /* a traceparent is 55 bytes */
    const char *tp = event_attr(&j->ev, "traceparent", scratch, sizeof(scratch));
    if (!tp || strlen(tp) < 35 || tp[2] != '-' || tp[35] != '-')
        return NULL;
    for (int i = 0; i < 32; i++) {
        char c = tp[3 + i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return NULL;
        out[i] = c;
    }
    out[32] = '\0';
    return out;
}

static void log_dead(const struct dpeer *p, const struct peer_job *j,
                     const struct spool_outcome *o)
{
    char trace[33];
    const char *tid = trace_id(j, trace);
    struct log_field f[8];
    size_t n = 0;
    f[n++] = LOG_S("peer", p->name);
    f[n++] = LOG_S("event_id", j->d.event_id);
    f[n++] = LOG_I("delivery", j->d.id);
    f[n++] = LOG_I("attempts", o->attempt ? o->attempt : j->d.attempts);
    f[n++] = LOG_S("reason", o->reason);
    if (o->attempt) /* the last attempt's status and error */
        f[n++] = LOG_I("status", o->status);
    if (o->attempt && o->error[0])
        f[n++] = LOG_S("error", o->error);
    if (tid)
        f[n++] = LOG_S("trace_id", tid);
    log_write(LOG_WARN, "delivery dead-lettered", n, f);
}

/* Dead-letter @j without an attempt (orphan peer, too old, unreadable). */
static void dead_now(struct dispatch *d, struct dpeer *p, struct peer_job *j,
                     const char *reason)
{
    struct spool_outcome o;
    memset(&o, 0, sizeof(o));
    o.delivery_id = j->d.id;
    o.kind = SPOOL_DEAD;
    o.at_ms = clock_wall_ms();
    snprintf(o.reason, sizeof(o.reason), "%s", reason);
    push_outcome(d, &o);
    log_dead(p, j, &o);
    if (p->pm)
        atomic_fetch_add_explicit(&p->pm->dead, 1, memory_order_relaxed);
    job_free(j);
}

static void log_retry(const struct dpeer *p, const struct peer_job *j,
                      const struct spool_outcome *o, int64_t now)
{
    char when[40], trace[33];
    iso_time(o->next_ms, when, sizeof(when));
    const char *tid = trace_id(j, trace);
    struct log_field f[9];
    size_t n = 0;
    f[n++] = LOG_S("peer", p->name);
    f[n++] = LOG_S("event_id", j->d.event_id);
    f[n++] = LOG_I("delivery", j->d.id);
    f[n++] = LOG_I("attempt", o->attempt);
    f[n++] = LOG_I("status", o->status);
    f[n++] = LOG_S("next_retry", when);
    f[n++] = LOG_I("retry_in_ms", o->next_ms - now);
    if (o->error[0])
        f[n++] = LOG_S("error", o->error);
    if (tid)
        f[n++] = LOG_S("trace_id", tid);
    log_write(LOG_INFO, "delivery attempt failed", n, f);
}

/* A failed attempt: retry later, or give up. */
static void decide_retry(struct dispatch *d, const struct dpeer *p,
                         const struct peer_job *j, struct spool_outcome *o,
                         int64_t now)
{
    const struct retry_policy *rp = &p->pc->retry;
    int64_t delay = retry_next_delay_ms(rp, o->attempt, j->res.retry_after_ms,
                                        rng_next(&d->rng));
    int64_t next = delay > INT64_MAX - now ? INT64_MAX : now + delay;
    if (retry_give_up(rp, o->attempt, j->d.received_ms, next, o->reason,
                      sizeof(o->reason))) {
        o->kind = SPOOL_DEAD;
        return;
    }
    o->kind = SPOOL_RETRY;
    o->next_ms = next;
}

/* ---- replies ----------------------------------------------------------- */

/* @j was delivered and its answer may be a reply event: queue it. */
static void queue_reply(struct dispatch *d, const struct dpeer *p,
                       struct peer_job *j)
{
    struct peer_reply *r = j->reply;
    j->reply = NULL;
    struct event ev;
    struct ce_error err;
    int rc = reply_parse(r, &ev, &err);
    if (rc <= 0) {
        if (rc < 0)
            log_warn("reply ignored", LOG_FIELDS(
                LOG_S("peer", p->name), LOG_S("event_id", j->d.event_id),
                LOG_I("status", r->status),
                LOG_S("reason", rc == -ENOMEM ? "out of memory"
                                              : err.message)));
        peer_reply_destroy(r);
        return;
    }
    char rid[128];
    const char *id = event_attr(&ev, "id", NULL, 0);
    snprintf(rid, sizeof(rid), "%s", id ? id : "");
    long n = reply_submit(d->spool, d->cfg, &ev, r, p->name, clock_wall_ms());
    if (n < 0)
        log_warn("reply dropped", LOG_FIELDS(
            LOG_S("peer", p->name), LOG_S("event_id", j->d.event_id),
            LOG_S("reply_id", rid), LOG_S("error", strerror((int)-n))));
    else
        log_debug(n ? "reply queued" : "reply matched no route", LOG_FIELDS(
            LOG_S("peer", p->name), LOG_S("event_id", j->d.event_id),
            LOG_S("reply_id", rid), LOG_I("peers", n)));
}

/* Turn @j's result into an outcome, account for it, and free @j. */
static void complete(struct dispatch *d, struct dpeer *p, struct peer_job *j)
{
    int64_t now = clock_wall_ms();
    int64_t dur_us = clock_mono_us() - j->t0_us;
    struct spool_outcome o;
    memset(&o, 0, sizeof(o));
    o.delivery_id = j->d.id;
    o.attempt = j->d.attempts + 1;
    o.at_ms = j->at_ms;
    o.duration_ms = dur_us / 1000;
    o.status = j->res.status;
    snprintf(o.error, sizeof(o.error), "%s", j->res.error);
    switch (j->res.result) {
    case DELIVER_OK:
        o.kind = SPOOL_DELIVERED;
        if (j->reply)
            queue_reply(d, p, j);
        break;
    case DELIVER_DEAD:
        o.kind = SPOOL_DEAD;
        if (o.status >= 100)
            snprintf(o.reason, sizeof(o.reason), "HTTP %ld is not retryable",
                     o.status);
        else
            snprintf(o.reason, sizeof(o.reason), "%.140s (not retryable)",
                     o.error[0] ? o.error : "error");
        break;
    case DELIVER_RETRY:
    default:
        decide_retry(d, p, j, &o, now);
        break;
    }
    push_outcome(d, &o);
    if (p->pm) {
        metrics_observe_duration(p->pm, dur_us);
        atomic_llong *c = o.kind == SPOOL_DELIVERED ? &p->pm->success
                          : o.kind == SPOOL_RETRY   ? &p->pm->retry
                                                    : &p->pm->dead;
        atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
    }
    if (o.kind == SPOOL_RETRY)
        log_retry(p, j, &o, now);
    else if (o.kind == SPOOL_DEAD)
        log_dead(p, j, &o);
    job_free(j);
}

/* ---- refill ------------------------------------------------------------ */

static bool skip_cb(void *arg, int64_t delivery_id)
{
    const struct dispatch *d = arg;
    return set_find(&d->window, delivery_id) != NULL;
}

/* Take ownership of a fetched row; on failure the row is freed. */
static void adopt(struct dispatch *d, size_t pi, struct spool_delivery *row)
{
    struct dpeer *p = &d->peers[pi];
    struct peer_job *j = calloc(1, sizeof(*j));
    if (!j || set_add(&d->window, row->id, (uint32_t)pi) < 0) {
        free(j);
        spool_delivery_free(row); /* zeroes it */
        return;
    }
    j->d = *row;
    j->peer = pi;
    memset(row, 0, sizeof(*row));
    jl_push(&p->queue, j);
    p->window++;
}

static void refill(struct dispatch *d, size_t pi, int64_t now)
{
    struct dpeer *p = &d->peers[pi];
    if (p->window >= p->window_cap || (!p->maybe_due && now < p->next_due_ms))
        return;
    size_t max = p->window_cap - p->window;
    if (max > d->page_cap)
        max = d->page_cap;
    int64_t upto = p->pc ? now : INT64_MAX;
    long n = spool_fetch_due(d->reader, p->name, upto, max, skip_cb, d,
                             d->page);
    if (n < 0) {
        log_error("cannot read due deliveries", LOG_FIELDS(
            LOG_S("peer", p->name), LOG_S("error", strerror((int)-n))));
        p->maybe_due = false;
        p->next_due_ms = now + FETCH_ERROR_BACKOFF_MS;
        return;
    }
    for (long i = 0; i < n; i++)
        adopt(d, pi, &d->page[i]);
    p->maybe_due = (size_t)n == max;
    if (!p->maybe_due)
        p->next_due_ms = p->pc ? spool_next_due(d->reader, p->name, now)
                               : INT64_MAX;
}

/* ---- starting attempts ------------------------------------------------- */

enum readiness { GO, CONSUMED, REQUEUED };

/*
 * Checks before an attempt: too old or too often tried already (the policy
 * may have changed since), and an event we can rebuild. GO when @j may go;
 * otherwise it was dead-lettered (and freed) or requeued (out of memory).
 */
static enum readiness ready(struct dispatch *d, struct dpeer *p,
                            struct peer_job *j, int64_t now)
{
    char why[160];
    if (retry_give_up(&p->pc->retry, j->d.attempts, j->d.received_ms, now,
                      why, sizeof(why))) {
        dead_now(d, p, j, why);
        return CONSUMED;
    }
    int rc = event_load(j->d.format, j->d.text, j->d.text_len, j->d.data,
                        j->d.data_len, &j->ev);
    if (rc == -EINVAL) {
        dead_now(d, p, j, "stored event is unreadable");
        return CONSUMED;
    }
    if (rc < 0) {
        jl_push_front(&p->queue, j); /* try again next turn */
        return REQUEUED;
    }
    memset(&j->res, 0, sizeof(j->res));
    j->res.retry_after_ms = -1;
    j->at_ms = now;
    j->t0_us = clock_mono_us();
    return GO;
}

/* Complete every job of @j's request with @j's result. */
static void complete_request(struct dispatch *d, struct dpeer *p,
                             struct peer_job *j)
{
    while (j) {
        struct peer_job *next = j->batch_next;
        j->batch_next = NULL;
        if (next) {
            next->res = j->res;
            next->at_ms = j->at_ms;
            next->t0_us = j->t0_us;
        }
        complete(d, p, j);
        j = next;
    }
}

/* Send @j, with the jobs chained to it in batch mode. */
static void start_async(struct dispatch *d, struct dpeer *p,
                        struct peer_job *j)
{
    CURL *easy = NULL;
    int rc = p->ops->start(p->ctx, j, &easy);
    if (rc == 0 && curl_multi_add_handle(d->multi, easy) != CURLM_OK) {
        p->ops->cancel(p->ctx, j);
        snprintf(j->res.error, sizeof(j->res.error),
                 "curl_multi_add_handle failed");
        rc = -ENOMEM;
    }
    if (rc < 0) { /* never sent: no news of the peer for its breaker */
        if (j->probe)
            breaker_release(&p->br);
        j->res.result = rc == -EINVAL ? DELIVER_DEAD : DELIVER_RETRY;
        complete_request(d, p, j);
        return;
    }
    j->easy = easy;
    jl_push(&p->running, j);
    p->requests++;
    set_in_flight(d, p, (long)batch_len(j));
}

/* Local sinks: everything queued goes out in one batch. */
static void start_sync(struct dispatch *d, struct dpeer *p, int64_t now)
{
    size_t n = 0, cap = p->queue.n;
    struct peer_job **batch = cap ? calloc(cap, sizeof(*batch)) : NULL;
    if (!batch)
        return;
    while (p->queue.head && n < cap) {
        struct peer_job *j = p->queue.head;
        jl_remove(&p->queue, j);
        enum readiness r = ready(d, p, j, now);
        if (r == GO)
            batch[n++] = j;
        else if (r == REQUEUED)
            break;
    }
    if (n)
        p->ops->deliver(p->ctx, batch, n);
    for (size_t i = 0; i < n; i++)
        complete(d, p, batch[i]);
    free(batch);
}

static void start_orphans(struct dispatch *d, struct dpeer *p)
{
    char why[160];
    snprintf(why, sizeof(why), "peer \"%s\" is no longer configured", p->name);
    while (p->queue.head) {
        struct peer_job *j = p->queue.head;
        jl_remove(&p->queue, j);
        dead_now(d, p, j, why);
    }
}

static void start_jobs(struct dispatch *d, struct dpeer *p, int64_t now,
                       int64_t mono)
{
    if (!p->ops) {
        start_orphans(d, p);
        return;
    }
    if (!p->ops->async) {
        start_sync(d, p, now);
        return;
    }
    bool probe;
    while (p->queue.head && p->requests < p->max_in_flight &&
           breaker_gate(p, mono, &probe)) {
        /* One request: the head, and in batch mode what follows it in
         * the queue (in order, so ordered keys stay ordered). */
        struct peer_job *first = NULL, **link = &first;
        size_t n = 0;
        bool requeued = false;
        while (p->queue.head && (n == 0 || n < p->batch_size)) {
            struct peer_job *j = p->queue.head;
            jl_remove(&p->queue, j);
            enum readiness r = ready(d, p, j, now);
            if (r == REQUEUED) {
                requeued = true;
                break;
            }
            if (r == GO) {
                *link = j;
                link = &j->batch_next;
                n++;
            }
        }
        if (first) {
            first->probe = probe;
            start_async(d, p, first);
        } else if (probe) { /* not sent: the next one probes */
            breaker_release(&p->br);
        }
        if (requeued)
            break;
    }
}

/* ---- the loop ---------------------------------------------------------- */

/*
 * @sl's outcome is durable: the id leaves the window. A retry's new time
 * becomes known to the peer only now: any spool_next_due() taken while the
 * outcome was in flight still saw the old row.
 */
static void settle(struct dispatch *d, struct slot *sl)
{
    struct dpeer *p = &d->peers[sl->peer];
    p->window--;
    if (sl->retry_at && sl->retry_at < p->next_due_ms)
        p->next_due_ms = sl->retry_at;
    set_del(&d->window, sl);
}

static void drain_inbox(struct dispatch *d)
{
    struct inbox *in = &d->inbox;
    pthread_mutex_lock(&in->lock);
    bool fresh = in->new_deliveries, lost = in->lost;
    int64_t *ids = in->settled;
    size_t n = in->n, cap = in->cap;
    /* Swap buffers: the writer never waits on our bookkeeping. */
    in->settled = d->taken;
    in->cap = d->cap_taken;
    in->n = 0;
    in->new_deliveries = in->lost = false;
    pthread_mutex_unlock(&in->lock);
    d->taken = ids;
    d->cap_taken = cap;
    for (size_t i = 0; i < n; i++) {
        struct slot *sl = set_find(&d->window, ids[i]);
        if (sl)
            settle(d, sl);
    }
    if (lost) {
        /* Some settlements were dropped: forget every posted outcome.
         * The worst case is delivering one again, never a stall. */
        for (size_t i = 0; i < d->window.cap;) {
            struct slot *sl = &d->window.slots[i];
            if (sl->used && sl->awaiting) {
                settle(d, sl); /* may pull a later entry here */
                continue;
            }
            i++;
        }
    }
    for (size_t i = 0; (fresh || lost) && i < d->n_peers; i++)
        d->peers[i].maybe_due = true;
}

static void collect_done(struct dispatch *d)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(d->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        char *priv = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        curl_multi_remove_handle(d->multi, easy); /* msg is gone now */
        if (!priv)
            continue;
        struct peer_job *j = (struct peer_job *)(void *)priv;
        struct dpeer *p = &d->peers[j->peer];
        jl_remove(&p->running, j);
        p->requests--;
        set_in_flight(d, p, -(long)batch_len(j));
        p->ops->finish(p->ctx, j, rc, clock_wall_ms());
        breaker_note(p, j);
        complete_request(d, p, j);
    }
}

static void refresh_gauges(struct dispatch *d, int64_t mono, int64_t now)
{
    if (mono < d->next_gauges_ms)
        return;
    d->next_gauges_ms = mono + GAUGES_EVERY_MS;
    for (size_t i = 0; i < d->n_peers; i++) {
        struct dpeer *p = &d->peers[i];
        if (!p->pm)
            continue;
        int64_t pending = 0, dead = 0;
        spool_peer_counts(d->spool, p->name, &pending, &dead);
        int64_t oldest = spool_oldest_ms(d->reader, p->name);
        int64_t age = oldest > 0 && now > oldest ? (now - oldest) / 1000 : 0;
        atomic_store_explicit(&p->pm->pending, pending, memory_order_relaxed);
        atomic_store_explicit(&p->pm->dead_letters, dead, memory_order_relaxed);
        atomic_store_explicit(&p->pm->oldest_age_s, age, memory_order_relaxed);
    }
}

static long clamp_ms(int64_t v, long hi)
{
    return v < 0 ? 0 : v > hi ? hi : (long)v;
}

static int poll_timeout(const struct dispatch *d, bool stopping, int64_t mono,
                        int64_t now)
{
    long t = POLL_MAX_MS;
    if (d->n_outs)
        t = REPOST_MS;
    if (stopping)
        return (int)clamp_ms(atomic_load(&d->deadline_ms) - mono, t);
    for (size_t i = 0; i < d->n_peers; i++) {
        const struct dpeer *p = &d->peers[i];
        int64_t open_left = p->gated ? breaker_wait_ms(&p->br, mono) : -1;
        if (open_left >= 0) { /* open: nothing to do until it ends */
            t = clamp_ms(open_left, t);
            continue;
        }
        if (p->gated && p->br.state == BREAKER_HALF_OPEN && p->br.probing)
            continue; /* the probe's transfer wakes us */
        if (p->window >= p->window_cap)
            continue; /* a settlement or a finished transfer wakes us */
        if (p->maybe_due || (p->queue.n && p->in_flight < p->max_in_flight))
            t = clamp_ms(REPOST_MS, t); /* paused by -ENOMEM */
        else if (p->next_due_ms != INT64_MAX)
            t = clamp_ms(p->next_due_ms - now, t);
    }
    return (int)t;
}

/* One turn of the loop; false when it is time to leave. */
static bool turn(struct dispatch *d)
{
    int64_t mono = clock_mono_ms();
    atomic_store(&d->heartbeat_ms, mono);
    drain_inbox(d);
    bool stopping = atomic_load(&d->stop);
    if (stopping &&
        (d->in_flight == 0 || mono >= atomic_load(&d->deadline_ms)))
        return false;
    int64_t now = clock_wall_ms();
    for (size_t i = 0; i < d->n_peers; i++) {
        struct dpeer *p = &d->peers[i];
        if (p->gated) { /* open_ms over: half-open, even with no traffic */
            breaker_poll(&p->br, mono);
            breaker_publish(p);
        }
        if (stopping)
            continue;
        refill(d, i, now);
        start_jobs(d, p, now, mono);
    }
    int running;
    curl_multi_perform(d->multi, &running);
    collect_done(d);
    flush_outcomes(d);
    refresh_gauges(d, mono, now);
    curl_multi_poll(d->multi, NULL, 0,
                    poll_timeout(d, stopping, clock_mono_ms(), clock_wall_ms()),
                    NULL);
    return true;
}

/* Shutdown: in-flight transfers end without an outcome. */
static void abandon_running(struct dispatch *d)
{
    for (size_t i = 0; i < d->n_peers; i++) {
        struct dpeer *p = &d->peers[i];
        while (p->running.head) {
            struct peer_job *j = p->running.head;
            jl_remove(&p->running, j);
            curl_multi_remove_handle(d->multi, j->easy);
            p->ops->cancel(p->ctx, j);
            p->requests--;
            set_in_flight(d, p, -(long)batch_len(j));
            for (const struct peer_job *b = j; b; b = b->batch_next)
                log_info("delivery left pending at shutdown", LOG_FIELDS(
                    LOG_S("peer", p->name), LOG_S("event_id", b->d.event_id),
                    LOG_I("delivery", b->d.id)));
            job_free(j);
        }
    }
}

/* Each pending peer name that is not configured becomes an orphan. */
static void add_orphans(struct dispatch *d)
{
    char **names = NULL;
    long n = spool_pending_peers(d->reader, &names);
    if (n < 0) {
        log_error("cannot list pending peers", LOG_FIELDS(
            LOG_S("error", strerror((int)-n))));
        return;
    }
    struct dpeer *grown = n ? realloc(d->peers, (d->n_peers + (size_t)n) *
                                                    sizeof(*grown))
                            : d->peers;
    if (grown)
        d->peers = grown;
    for (long i = 0; i < n; i++) {
        bool known = false;
        for (size_t k = 0; k < d->cfg->n_peers && !known; k++)
            known = strcmp(d->cfg->peers[k].name, names[i]) == 0;
        if (!known && grown) {
            struct dpeer *p = &d->peers[d->n_peers++];
            memset(p, 0, sizeof(*p));
            p->name = p->owned_name = names[i];
            p->window_cap = ORPHAN_PAGE;
            p->maybe_due = true;
            p->next_due_ms = INT64_MAX;
            log_warn("dead-lettering deliveries of a peer no longer configured",
                     LOG_FIELDS(LOG_S("peer", p->name)));
            continue;
        }
        free(names[i]);
    }
    free(names);
}

static void *thread_main(void *arg)
{
    struct dispatch *d = arg;
    add_orphans(d);
    while (turn(d))
        ;
    abandon_running(d);
    flush_outcomes(d);
    if (d->n_outs) /* one more try after -ENOMEM, then let them go */
        flush_outcomes(d);
    return NULL;
}

/* ---- lifecycle --------------------------------------------------------- */

static int init_peer(struct dispatch *d, size_t i, char *err, size_t err_len)
{
    const struct peer_config *pc = &d->cfg->peers[i];
    struct dpeer *p = &d->peers[i];
    p->pc = pc;
    p->name = pc->name;
    p->ops = ops_for(pc->type);
    p->max_in_flight = pc->max_in_flight > 0 ? (size_t)pc->max_in_flight : 1;
    p->batch_size = pc->mode == PEER_MODE_BATCH && pc->batch_size > 0
                        ? (size_t)pc->batch_size : 1;
    /* Room for a full round of requests plus the next one queued. */
    p->window_cap = 2 * p->max_in_flight * p->batch_size;
    p->maybe_due = true;
    p->next_due_ms = INT64_MAX;
    p->gated = p->ops->async;
    breaker_init(&p->br, &pc->breaker);
    p->br_seen = BREAKER_CLOSED;
    p->ctx = p->ops->create(pc, err, err_len);
    if (!p->ctx)
        return -EINVAL;
    p->pm = metrics_peer(pc->name);
    if (!p->pm) {
        snprintf(err, err_len, "out of memory");
        return -ENOMEM;
    }
    /* a new dispatcher (a reload) starts closed; the series may be old */
    atomic_store(&p->pm->breaker_state, (int)METRICS_BREAKER_CLOSED);
    atomic_store(&p->pm->breaker_open, 0);
    if (p->window_cap > d->page_cap)
        d->page_cap = p->window_cap;
    return 0;
}

struct dispatch *dispatch_create(const struct config *cfg, struct spool *spool,
                                 char *err, size_t err_len)
{
    struct dispatch *d = calloc(1, sizeof(*d));
    if (!d) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&d->inbox.lock, NULL);
    d->cfg = cfg;
    d->spool = spool;
    d->rng = rng_seed();
    d->page_cap = ORPHAN_PAGE;
    d->multi = curl_multi_init();
    d->peers = cfg->n_peers ? calloc(cfg->n_peers, sizeof(*d->peers)) : NULL;
    if (!d->multi || (cfg->n_peers && !d->peers)) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    /* Zeroed entries are safe to free, so count them all from here. */
    d->n_peers = cfg->n_peers;
    size_t conns = 0;
    for (size_t i = 0; i < cfg->n_peers; i++) {
        if (init_peer(d, i, err, err_len) < 0)
            goto fail;
        conns += d->peers[i].max_in_flight;
    }
    /* Keep a connection per request slot. curl's default cache follows
     * the handles currently added, and ours leave the multi handle after
     * every transfer, so it shrank and closed warm connections: a new TCP
     * connection every few dozen deliveries. */
    curl_multi_setopt(d->multi, CURLMOPT_MAXCONNECTS,
                      (long)(conns > 16 ? conns : 16));
    d->page = calloc(d->page_cap, sizeof(*d->page));
    if (!d->page) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    d->reader = spool_reader_open(spool);
    if (!d->reader) {
        snprintf(err, err_len, "cannot open a spool reader");
        goto fail;
    }
    spool_set_commit_cb(spool, commit_cb, d);
    return d;
fail:
    dispatch_destroy(d);
    return NULL;
}

int dispatch_start(struct dispatch *d)
{
    if (d->started)
        return -EALREADY;
    atomic_store(&d->heartbeat_ms, clock_mono_ms());
    int rc = pthread_create(&d->thread, NULL, thread_main, d);
    if (rc)
        return -rc;
    d->started = true;
    return 0;
}

void dispatch_stop(struct dispatch *d, int64_t deadline_ms)
{
    if (!d || !d->started || d->joined)
        return;
    atomic_store(&d->deadline_ms, deadline_ms);
    atomic_store(&d->stop, true);
    curl_multi_wakeup(d->multi);
    pthread_join(d->thread, NULL);
    d->joined = true;
}

static void free_jobs(struct dispatch *d, struct dpeer *p, struct jlist *l)
{
    while (l->head) {
        struct peer_job *j = l->head;
        jl_remove(l, j);
        if (j->easy) {
            curl_multi_remove_handle(d->multi, j->easy);
            p->ops->cancel(p->ctx, j);
        }
        job_free(j);
    }
}

static void free_peer(struct dispatch *d, struct dpeer *p)
{
    free_jobs(d, p, &p->queue);
    free_jobs(d, p, &p->running);
    if (p->ops && p->ctx)
        p->ops->destroy(p->ctx);
    free(p->owned_name);
}

void dispatch_destroy(struct dispatch *d)
{
    if (!d)
        return;
    dispatch_stop(d, clock_mono_ms());
    for (size_t i = 0; i < d->n_peers; i++)
        free_peer(d, &d->peers[i]);
    free(d->peers);
    if (d->multi)
        curl_multi_cleanup(d->multi);
    spool_reader_close(d->reader);
    for (size_t i = 0; d->page && i < d->page_cap; i++)
        spool_delivery_free(&d->page[i]);
    free(d->page);
    free(d->window.slots);
    free(d->outs);
    free(d->taken);
    free(d->inbox.settled);
    pthread_mutex_destroy(&d->inbox.lock);
    free(d);
}

int64_t dispatch_heartbeat_ms(const struct dispatch *d)
{
    return atomic_load(&d->heartbeat_ms);
}
