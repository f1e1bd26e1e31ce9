/*
 * schedule: the scheduler thread that turns "schedules" into events (see
 * schedule.h for the rules: exactly once, missed slots, grace period).
 *
 * DESIGN
 * Threads. schedule_create/start/stop/destroy run on the main thread (or
 * under serve's reload lock). Everything in struct entry, the route scratch
 * and the spool reader of schedule_load belong to the scheduler thread
 * while it runs. s->lock guards only @stopping and @done; s->cond (on
 * CLOCK_REALTIME) carries three wake-ups: stop, the spool writer's done
 * callback, and the deadline of the next slot.
 *
 * One pass (schedule_tick). For each schedule: the due slot is the latest
 * slot after the last one fired and not after now; if it is older than
 * the grace period, every missed slot is skipped (logged) and the schedule
 * continues after now. Otherwise its event is submitted with the schedule
 * name and slot attached, and the thread waits for the done callback: the
 * writer commits the slot together with the event, or refuses the event
 * because the slot was recorded already (a duplicate). Only then is the
 * slot remembered in memory, so memory is never ahead of the spool. A
 * refused submission is retried after SCHEDULE_RETRY_MS.
 */
#include "schedule.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "cron.h"
#include "event.h"
#include "log.h"
#include "metrics.h"
#include "route.h"

/* Longest single sleep: a safeguard against a clock that misbehaves. */
#define MAX_SLEEP_MS 60000
#define TIME_LEN 40

struct entry {
    const struct schedule_config *sc; /* borrowed from s->cfg */
    struct cron cron;
    json_t *tmpl;        /* the event template (owned) */
    int64_t grace_ms;
    int64_t last_ms;     /* the last slot fired or skipped, or the start */
    int64_t retry_at_ms; /* after a refused submission; 0: none */
};

struct schedule {
    /* Set at create, read-only afterwards. */
    struct config *cfg; /* a reference */
    struct spool *spool;
    int64_t (*clock_ms)(void *arg);
    void *clock_arg;

    /* The scheduler thread's (the caller's while it does not run). */
    struct entry *entries;
    size_t n;
    size_t *idx;            /* route scratch: cfg->n_peers + 1 each */
    const char **names;
    unsigned char *ordered;

    pthread_mutex_t lock;
    pthread_cond_t cond;    /* CLOCK_REALTIME */
    bool stopping;          /* under lock */
    bool done;              /* under lock: the submission in flight ended */

    /* Main thread. */
    bool started, threaded;
    pthread_t thread;
};

static int64_t default_clock(void *arg)
{
    (void)arg;
    return clock_wall_ms();
}

static int64_t now_ms(const struct schedule *s)
{
    return s->clock_ms(s->clock_arg);
}

/* The missed-slot grace period of @c: 5 minutes, or a shorter @every. */
static int64_t grace_for(const struct cron *c)
{
    if (c->kind == CRON_EVERY && c->every_ms < SCHEDULE_GRACE_MS)
        return c->every_ms;
    return SCHEDULE_GRACE_MS;
}

/* ---- the event ----------------------------------------------------------- */

static int set_string(json_t *o, const char *key, const char *value)
{
    json_t *v = json_string(value);
    if (!v || json_object_set_new(o, key, v) != 0)
        return -ENOMEM;
    return 0;
}

/* The template @tmpl (borrowed, unchanged) with id, time and specversion
 * set, as JSON text (new). */
static char *event_text(const char *name, json_t *tmpl, int64_t slot)
{
    char when[TIME_LEN];
    char *text = NULL, *id = NULL;
    json_t *o = json_copy(tmpl); /* shallow: setting keys leaves tmpl */
    size_t id_len = strlen(name) + 1 + sizeof(when);
    if (!o || cron_rfc3339(slot, when, sizeof(when)) != 0)
        goto out;
    id = malloc(id_len);
    if (!id)
        goto out;
    snprintf(id, id_len, "%s-%s", name, when);
    int rc = set_string(o, "id", id);
    if (!rc)
        rc = set_string(o, "time", when);
    if (!rc && !json_object_get(o, "specversion"))
        rc = set_string(o, "specversion", "1.0");
    if (!rc)
        text = json_dumps(o, JSON_COMPACT);
out:
    free(id);
    json_decref(o);
    return text;
}

/* The event of schedule @name for @slot, parsed and validated exactly as
 * ingest does. 0, -EINVAL with @err, or -ENOMEM. */
static int make_event(const char *name, json_t *tmpl, int64_t slot,
                      struct event *ev, struct ce_error *err)
{
    *err = (struct ce_error){.code = "invalid_event", .index = -1};
    char *text = event_text(name, tmpl, slot);
    if (!text) {
        memset(ev, 0, sizeof(*ev));
        snprintf(err->message, sizeof(err->message), "out of memory");
        return -ENOMEM;
    }
    int rc = event_from_structured(text, strlen(text), ev, err);
    free(text);
    return rc;
}

/* ---- config check -------------------------------------------------------- */

static int check_one(const struct schedule_config *sc, size_t i,
                     struct config_errors *errs)
{
    char path[48], msg[256];
    struct cron c;
    int bad = 0;
    snprintf(path, sizeof(path), "schedules[%zu].cron", i);
    if (cron_parse(sc->cron, &c, msg, sizeof(msg)) != 0) {
        config_errors_add(errs, path, "%s", msg);
        bad = 1;
    }
    json_t *tmpl = json_loads(sc->event_json ? sc->event_json : "", 0, NULL);
    struct event ev;
    struct ce_error err;
    snprintf(path, sizeof(path), "schedules[%zu].event", i);
    if (!json_is_object(tmpl)) {
        config_errors_add(errs, path, "expected an object");
        bad = 1;
    } else if (make_event(sc->name ? sc->name : "", tmpl, 0, &ev, &err)) {
        config_errors_add(errs, path, "%s", err.message);
        bad = 1;
    } else {
        event_free(&ev);
    }
    json_decref(tmpl);
    return bad;
}

int schedule_check_config(const struct config *cfg,
                          struct config_errors *errs)
{
    int bad = 0;
    for (size_t i = 0; i < cfg->n_schedules; i++)
        bad |= check_one(&cfg->schedules[i], i, errs);
    return bad ? -EINVAL : 0;
}

/* ---- firing -------------------------------------------------------------- */

static const char *lookup_attr(void *arg, const char *attr, char *scratch,
                               size_t scratch_len)
{
    return event_attr(arg, attr, scratch, scratch_len);
}

/* Writer thread: the submission is committed or refused. */
static void stored_cb(struct spool_write *w)
{
    struct schedule *s = w->arg;
    pthread_mutex_lock(&s->lock);
    s->done = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* Queue @w and wait for its done callback. 0 or -ESHUTDOWN. */
static int submit_wait(struct schedule *s, struct spool_write *w)
{
    pthread_mutex_lock(&s->lock);
    s->done = false;
    pthread_mutex_unlock(&s->lock);
    int rc = spool_submit(s->spool, w);
    if (rc)
        return rc;
    pthread_mutex_lock(&s->lock);
    while (!s->done)
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* Route @ev into the scratch; the number of peers. */
static size_t route(struct schedule *s, struct event *ev)
{
    const struct config *cfg = s->cfg;
    size_t n = route_match(cfg, lookup_attr, ev, s->idx);
    for (size_t k = 0; k < n; k++) {
        s->names[k] = cfg->peers[s->idx[k]].name;
        s->ordered[k] = route_ordered(cfg, lookup_attr, ev, s->idx[k]);
    }
    return n;
}

static void log_fired(const struct entry *e, const struct spool_event *se,
                      const struct spool_write *w)
{
    if (w->n_duplicates)
        log_info("schedule: slot fired already, not again",
                 LOG_FIELDS(LOG_S("schedule", e->sc->name),
                            LOG_S("id", se->id)));
    else
        log_debug("schedule: fired",
                  LOG_FIELDS(LOG_S("schedule", e->sc->name),
                             LOG_S("id", se->id),
                             LOG_I("peers", se->n_peers)));
}

/* Build, route and store the event of @e's @slot. The result of the
 * submission (>= 0: committed, slot recorded) or -errno. */
static int fire(struct schedule *s, const struct entry *e, int64_t slot,
                int64_t now)
{
    struct event ev;
    struct ce_error err;
    char key[32];
    int rc = make_event(e->sc->name, e->tmpl, slot, &ev, &err);
    if (rc) {
        log_error("schedule: cannot build the event",
                  LOG_FIELDS(LOG_S("schedule", e->sc->name),
                             LOG_S("error", err.message)));
        return rc;
    }
    struct spool_event se = {
        .source = event_attr(&ev, "source", NULL, 0),
        .id = event_attr(&ev, "id", NULL, 0),
        .partition_key = event_attr(&ev, "partitionkey", key, sizeof(key)),
        .format = ev.format, .text = ev.text, .text_len = ev.text_len,
        .data = ev.data, .data_len = ev.data_len,
        .peers = s->names, .n_peers = route(s, &ev), .ordered = s->ordered,
        .received_ms = now, .schedule = e->sc->name, .slot_ms = slot};
    struct spool_write w = {.events = &se, .n_events = 1, .done = stored_cb,
                            .arg = s};
    rc = submit_wait(s, &w);
    if (rc == 0)
        rc = w.result;
    if (rc >= 0) {
        metrics_received(METRICS_MODE_SCHEDULE, 1);
        if (w.n_duplicates)
            metrics_duplicates((long)w.n_duplicates);
        log_fired(e, &se, &w);
    }
    event_free(&ev);
    return rc;
}

/* ---- one pass -------------------------------------------------------------- */

/* Missed slots from @first on are skipped; @fired fires (or CRON_NEVER:
 * none, all were older than the grace period). */
static void log_skipped(const struct entry *e, int64_t first, int64_t fired,
                        int64_t now)
{
    char a[TIME_LEN] = "", b[TIME_LEN] = "";
    cron_rfc3339(first, a, sizeof(a));
    if (fired == CRON_NEVER) {
        log_info("schedule: missed slots older than the grace period skipped",
                 LOG_FIELDS(LOG_S("schedule", e->sc->name),
                            LOG_S("first_missed", a),
                            LOG_I("grace_ms", e->grace_ms),
                            LOG_I("late_ms", now - first)));
        return;
    }
    cron_rfc3339(fired, b, sizeof(b));
    log_info("schedule: older missed slots skipped; firing the latest once",
             LOG_FIELDS(LOG_S("schedule", e->sc->name),
                        LOG_S("first_missed", a), LOG_S("firing", b)));
}

/*
 * The slot of @e to fire at @now: the latest slot in (last, now], if it is
 * within the grace period. Else CRON_NEVER; when missed slots are all too
 * old, they are skipped: logged, and @e continues after @now.
 */
static int64_t due_slot(struct entry *e, int64_t now)
{
    int64_t first = cron_next(&e->cron, e->last_ms);
    if (first > now)
        return CRON_NEVER;
    int64_t from = now - e->grace_ms - 1;
    int64_t slot = cron_next(&e->cron, from > e->last_ms ? from : e->last_ms);
    if (slot > now) {
        log_skipped(e, first, CRON_NEVER, now);
        e->last_ms = now;
        return CRON_NEVER;
    }
    for (int64_t next; (next = cron_next(&e->cron, slot)) <= now;)
        slot = next;
    if (first < slot)
        log_skipped(e, first, slot, now);
    return slot;
}

static void run_entry(struct schedule *s, struct entry *e, int64_t now)
{
    if (e->retry_at_ms > now)
        return;
    e->retry_at_ms = 0;
    int64_t slot = due_slot(e, now);
    if (slot == CRON_NEVER)
        return;
    int rc = fire(s, e, slot, now);
    if (rc >= 0) {
        e->last_ms = slot;
        return;
    }
    e->retry_at_ms = now + SCHEDULE_RETRY_MS;
    log_warn("schedule: event not stored; retrying",
             LOG_FIELDS(LOG_S("schedule", e->sc->name),
                        LOG_S("error", strerror(-rc)),
                        LOG_I("retry_ms", SCHEDULE_RETRY_MS)));
}

static bool stopping(struct schedule *s)
{
    pthread_mutex_lock(&s->lock);
    bool stop = s->stopping;
    pthread_mutex_unlock(&s->lock);
    return stop;
}

int64_t schedule_tick(struct schedule *s)
{
    int64_t now = now_ms(s), wake = CRON_NEVER;
    for (size_t i = 0; i < s->n && !stopping(s); i++) {
        struct entry *e = &s->entries[i];
        run_entry(s, e, now);
        int64_t at = e->retry_at_ms ? e->retry_at_ms
                                    : cron_next(&e->cron, e->last_ms);
        if (at < wake)
            wake = at;
    }
    return wake;
}

static void log_loaded(const struct entry *e, bool recorded)
{
    char last[TIME_LEN] = "", next[TIME_LEN] = "";
    cron_rfc3339(e->last_ms, last, sizeof(last));
    cron_rfc3339(cron_next(&e->cron, e->last_ms), next, sizeof(next));
    log_debug("schedule: loaded",
              LOG_FIELDS(LOG_S("schedule", e->sc->name),
                         LOG_S("last_slot", recorded ? last : NULL),
                         LOG_S("next_slot", next)));
}

int schedule_load(struct schedule *s)
{
    if (s->n == 0)
        return 0;
    struct spool_reader *r = spool_reader_open(s->spool);
    if (!r)
        return -EIO;
    int64_t now = now_ms(s);
    int rc = 0;
    for (size_t i = 0; i < s->n && rc >= 0; i++) {
        struct entry *e = &s->entries[i];
        int64_t last = 0;
        rc = spool_schedule_last(r, e->sc->name, &last);
        e->last_ms = rc == 1 ? last : now; /* never fired: start now */
        e->retry_at_ms = 0;
        log_loaded(e, rc == 1);
    }
    spool_reader_close(r);
    return rc < 0 ? rc : 0;
}

/* ---- the thread ------------------------------------------------------------ */

/* Sleep until @wake (wall ms) at most, or a signal. Called locked. */
static void wait_until(struct schedule *s, int64_t wake)
{
    int64_t delay = wake == CRON_NEVER ? MAX_SLEEP_MS : wake - now_ms(s);
    if (delay <= 0)
        return;
    if (delay > MAX_SLEEP_MS)
        delay = MAX_SLEEP_MS;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ns = ts.tv_nsec + (delay % 1000) * 1000000;
    ts.tv_sec += (time_t)(delay / 1000 + ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    pthread_cond_timedwait(&s->cond, &s->lock, &ts);
}

static void *thread_main(void *arg)
{
    struct schedule *s = arg;
    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        pthread_mutex_unlock(&s->lock);
        int64_t wake = schedule_tick(s);
        pthread_mutex_lock(&s->lock);
        if (!s->stopping)
            wait_until(s, wake);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

int schedule_start(struct schedule *s)
{
    if (s->started)
        return -EALREADY;
    int rc = schedule_load(s);
    if (rc)
        return rc;
    s->started = true;
    if (s->n == 0)
        return 0; /* nothing to fire: no thread */
    sigset_t all, old;
    sigfillset(&all); /* signals belong to the main thread */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = -pthread_create(&s->thread, NULL, thread_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    s->threaded = rc == 0;
    s->started = rc == 0;
    if (rc == 0)
        log_info("schedules started", LOG_FIELDS(LOG_I("schedules", s->n)));
    return rc;
}

void schedule_stop(struct schedule *s)
{
    if (!s || !s->started)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    if (s->threaded)
        pthread_join(s->thread, NULL);
    s->threaded = false;
    s->started = false;
    s->stopping = false; /* no thread left: restartable */
}

/* ---- create / destroy ------------------------------------------------------- */

static int init_entry(struct entry *e, const struct schedule_config *sc,
                      size_t i, char *err, size_t err_len)
{
    char msg[200];
    e->sc = sc;
    if (cron_parse(sc->cron, &e->cron, msg, sizeof(msg)) != 0) {
        snprintf(err, err_len, "schedules[%zu].cron: %s", i, msg);
        return -EINVAL;
    }
    e->grace_ms = grace_for(&e->cron);
    e->tmpl = json_loads(sc->event_json ? sc->event_json : "", 0, NULL);
    if (!json_is_object(e->tmpl)) {
        snprintf(err, err_len, "schedules[%zu].event: expected an object", i);
        return -EINVAL;
    }
    return 0;
}

static int alloc_scratch(struct schedule *s)
{
    size_t n = s->cfg->n_peers + 1, k = s->cfg->n_schedules;
    s->entries = calloc(k ? k : 1, sizeof(*s->entries));
    s->idx = calloc(n, sizeof(*s->idx));
    s->names = calloc(n, sizeof(*s->names));
    s->ordered = calloc(n, 1);
    return s->entries && s->idx && s->names && s->ordered ? 0 : -ENOMEM;
}

struct schedule *schedule_create(const struct schedule_deps *deps, char *err,
                                 size_t err_len)
{
    struct schedule *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, err_len, "schedules: out of memory");
        return NULL;
    }
    s->cfg = config_ref(deps->cfg);
    s->spool = deps->spool;
    s->clock_ms = deps->clock_ms ? deps->clock_ms : default_clock;
    s->clock_arg = deps->clock_arg;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL); /* default clock: CLOCK_REALTIME */
    int rc = alloc_scratch(s);
    if (rc)
        snprintf(err, err_len, "schedules: out of memory");
    for (size_t i = 0; !rc && i < s->cfg->n_schedules; i++) {
        rc = init_entry(&s->entries[i], &s->cfg->schedules[i], i, err,
                        err_len);
        s->n++; /* a failed entry too: destroy frees its template */
    }
    if (rc) {
        schedule_destroy(s);
        return NULL;
    }
    return s;
}

void schedule_destroy(struct schedule *s)
{
    if (!s)
        return;
    schedule_stop(s);
    for (size_t i = 0; i < s->n; i++)
        json_decref(s->entries[i].tmpl);
    free(s->entries);
    free(s->idx);
    free(s->names);
    free(s->ordered);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    config_destroy(s->cfg);
    free(s);
}
