/*
 * serve: process lifecycle for `ferry serve` (see serve.h).
 *
 * DESIGN
 * The main thread owns the config and the lifecycle and does nothing else:
 * it blocks the signals in every thread (set before any thread starts, so
 * threads inherit the mask) and takes them synchronously with sigwait().
 * Start order follows the data flow backwards, so nothing can be accepted
 * before there is somewhere to put it: spool writer, dispatcher, scheduler,
 * listeners. Drain goes forwards: stop the scheduler, refuse new events
 * (readiness turns 503), let
 * requests waiting for a commit finish, let in-flight deliveries finish
 * until drain_timeout_ms, commit their outcomes, close the spool.
 */
#include "serve.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "admin.h"
#include "config.h"
#include "dispatch.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "schedule.h"
#include "spool.h"

struct server {
    struct serve_options opt;  /* to load the config again on reload */
    struct config *cfg;        /* current; main thread or under reload_lock */
    struct spool *spool;
    struct dispatch *dispatch; /* swapped on reload under dispatch_lock */
    struct ingest *ingest;
    struct admin *admin;
    struct schedule *schedule; /* main thread or under reload_lock */
    atomic_bool draining;
    pthread_mutex_t reload_lock;   /* one reload at a time (SIGHUP, admin) */
    pthread_mutex_t dispatch_lock; /* guards the dispatch pointer only */
};

static const char *env_get(const char *name)
{
    return getenv(name);
}

static void print_errors(const struct config_errors *errs)
{
    for (size_t i = 0; i < errs->n; i++)
        fprintf(stderr, "ferry: %s\n", errs->items[i]);
}

static struct config *load_config(const struct serve_options *opt,
                                  struct config_errors *out)
{
    struct config_errors errs;
    config_errors_init(&errs);
    const char *path = opt->config_path;
    if (!path || !*path)
        path = getenv("FERRY_CONFIG");
    struct config *cfg =
        path && *path ? config_load_file(path, &errs)
                      : config_parse(CONFIG_DEFAULT_JSON, strlen(CONFIG_DEFAULT_JSON),
                                     "embedded default", &errs);
    if (cfg && config_apply_env(cfg, env_get, &errs) != 0) {
        config_destroy(cfg);
        cfg = NULL;
    }
    if (cfg && opt->listen) {
        char host[256];
        uint16_t port;
        if (config_split_hostport(opt->listen, host, sizeof(host), &port) == 0) {
            free(cfg->listen);
            cfg->listen = strdup(opt->listen);
        } else {
            config_errors_add(&errs, "--listen", "expected HOST:PORT, got \"%s\"", opt->listen);
        }
    }
    if (cfg && opt->spool_dir) {
        free(cfg->spool.dir);
        cfg->spool.dir = strdup(opt->spool_dir);
    }
    if (cfg && opt->log_level && log_level_parse(opt->log_level, &cfg->log.level) != 0)
        config_errors_add(&errs, "--log-level",
                          "expected debug, info, warn or error, got \"%s\"", opt->log_level);
    if (cfg && (!cfg->listen || !cfg->spool.dir))
        config_errors_add(&errs, "", "out of memory");
    if (cfg) /* what config.c leaves to schedule.c: cron, event templates */
        schedule_check_config(cfg, &errs);
    if (errs.n) {
        config_destroy(cfg);
        cfg = NULL;
    }
    *out = errs;
    return cfg;
}

struct config *serve_load_config(const struct serve_options *opt)
{
    struct config_errors errs;
    struct config *cfg = load_config(opt, &errs);
    print_errors(&errs);
    config_errors_free(&errs);
    return cfg;
}

static void health_snapshot(void *arg, struct health_inputs *in)
{
    struct server *s = arg;
    int64_t now = clock_mono_ms();
    in->draining = atomic_load(&s->draining);
    in->spool_writable = spool_writable(s->spool);
    in->disk_low = spool_disk_low(s->spool);
    in->spool_bytes = spool_bytes(s->spool);
    in->spool_max_bytes = s->cfg->spool.max_bytes;
    pthread_mutex_lock(&s->dispatch_lock);
    /* No dispatcher for a moment while a reload swaps it: not a stall. */
    in->dispatcher_idle_ms = s->dispatch ? now - dispatch_heartbeat_ms(s->dispatch) : 0;
    pthread_mutex_unlock(&s->dispatch_lock);
    in->writer_idle_ms = now - spool_heartbeat_ms(s->spool);
}

static int reload(struct server *s, char *msg, size_t msg_len);

static int reload_cb(void *arg, char *msg, size_t msg_len)
{
    return reload(arg, msg, msg_len);
}

static struct schedule *create_schedule(struct server *s, struct config *cfg,
                                        char *err, size_t err_len)
{
    struct schedule_deps sd = {.cfg = cfg, .spool = s->spool};
    return schedule_create(&sd, err, err_len);
}

static int start_schedule(struct server *s, char *err, size_t err_len)
{
    s->schedule = create_schedule(s, s->cfg, err, err_len);
    if (!s->schedule)
        return -1;
    int rc = schedule_start(s->schedule);
    if (rc)
        snprintf(err, err_len, "cannot start the scheduler: %s", strerror(-rc));
    return rc;
}

static int start(struct server *s, int64_t t0)
{
    char err[512] = "";
    struct spool_options so = {.dir = s->cfg->spool.dir,
                               .max_bytes = s->cfg->spool.max_bytes,
                               .dedupe_window_s = s->cfg->ingest.dedupe_window_s};
    s->spool = spool_open(&so, err, sizeof(err));
    if (!s->spool)
        goto fail;
    s->dispatch = dispatch_create(s->cfg, s->spool, err, sizeof(err));
    if (!s->dispatch)
        goto fail;
    if (spool_start(s->spool) != 0 || dispatch_start(s->dispatch) != 0) {
        snprintf(err, sizeof(err), "cannot start threads: %s", strerror(errno));
        goto fail;
    }
    if (start_schedule(s, err, sizeof(err)) != 0)
        goto fail;
    /* Admin before ingest: once /readyz says 200, every listener is up. */
    struct admin_deps ad = {.cfg = s->cfg, .spool = s->spool, .reload = reload_cb,
                            .reload_arg = s, .threads = 1};
    /* An admin reload may come as soon as the admin listens: it must find
     * the listeners it swaps configs on already set (reload() checks). */
    pthread_mutex_lock(&s->reload_lock);
    s->admin = admin_start(&ad, err, sizeof(err));
    if (!s->admin) {
        pthread_mutex_unlock(&s->reload_lock);
        goto fail;
    }
    struct ingest_deps deps = {.cfg = s->cfg, .spool = s->spool,
                               .health_snapshot = health_snapshot, .health_arg = s};
    s->ingest = ingest_start(&deps, err, sizeof(err));
    pthread_mutex_unlock(&s->reload_lock);
    if (!s->ingest)
        goto fail;
    log_info("ready", LOG_FIELDS(LOG_S("listen", s->cfg->listen),
                                 LOG_I("port", ingest_port(s->ingest)),
                                 LOG_S("admin", s->cfg->admin.listen),
                                 LOG_S("spool", s->cfg->spool.dir),
                                 LOG_I("startup_ms", clock_mono_ms() - t0)));
    return 0;
fail:
    log_error("cannot start", LOG_FIELDS(LOG_S("error", err)));
    return -1;
}

static void drain_and_stop(struct server *s)
{
    /* Let a reload in progress (from the admin API) finish first; later
     * ones see draining and refuse. */
    atomic_store(&s->draining, true);
    pthread_mutex_lock(&s->reload_lock);
    pthread_mutex_unlock(&s->reload_lock);
    int64_t deadline = clock_mono_ms() + s->cfg->drain_timeout_ms;
    schedule_stop(s->schedule); /* its last event is committed on return */
    if (s->ingest) {
        ingest_set_draining(s->ingest);
        ingest_wait_idle(s->ingest, deadline + 5000);
    }
    if (s->dispatch)
        dispatch_stop(s->dispatch, deadline);
    ingest_stop(s->ingest);
    admin_stop(s->admin);
    if (s->spool)
        spool_stop(s->spool);
    dispatch_destroy(s->dispatch);
    schedule_destroy(s->schedule);
    spool_close(s->spool);
}

/* ---- reload ----------------------------------------------------------- */

struct barrier {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
};

static void barrier_cb(struct spool_write *w)
{
    struct barrier *b = w->arg;
    pthread_mutex_lock(&b->lock);
    b->done = true;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

/*
 * Wait until everything queued to the spool so far is committed: an empty
 * submission is applied in the same turn as (or after) every outcome
 * posted before it, so its callback proves those outcomes durable.
 */
static void spool_barrier(struct spool *spool)
{
    struct barrier b = {.done = false};
    pthread_mutex_init(&b.lock, NULL);
    pthread_cond_init(&b.cond, NULL);
    struct spool_write w = {.events = NULL, .n_events = 0, .done = barrier_cb, .arg = &b};
    if (spool_submit(spool, &w) == 0) {
        pthread_mutex_lock(&b.lock);
        while (!b.done)
            pthread_cond_wait(&b.cond, &b.lock);
        pthread_mutex_unlock(&b.lock);
    }
    pthread_cond_destroy(&b.cond);
    pthread_mutex_destroy(&b.lock);
}

/* Long enough for every in-flight request to end by its own timeout, so a
 * reload never abandons one (which could deliver it twice). */
static int64_t settle_deadline(const struct config *cfg)
{
    int64_t longest = 0;
    for (size_t i = 0; i < cfg->n_peers; i++)
        if (cfg->peers[i].timeout_ms > longest)
            longest = cfg->peers[i].timeout_ms;
    return clock_mono_ms() + longest + 1000;
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Settings the running process cannot change in place. */
static void warn_restart_only(const struct config *old, const struct config *next)
{
    const char *what = NULL;
    if (strcmp(old->listen, next->listen) != 0)
        what = "listen";
    else if (strcmp(old->admin.listen, next->admin.listen) != 0)
        what = "admin.listen";
    else if (strcmp(old->spool.dir, next->spool.dir) != 0)
        what = "spool.dir";
    else if (old->spool.max_bytes != next->spool.max_bytes)
        what = "spool.max_bytes";
    else if (old->ingest.dedupe_window_s != next->ingest.dedupe_window_s)
        what = "ingest.dedupe_window_s";
    else if (!same_str(old->tls.cert_file, next->tls.cert_file) ||
             !same_str(old->tls.key_file, next->tls.key_file))
        what = "tls";
    else if (!same_str(old->admin.tls.cert_file, next->admin.tls.cert_file) ||
             !same_str(old->admin.tls.key_file, next->admin.tls.key_file))
        what = "admin.tls";
    else if (old->http.max_connections != next->http.max_connections ||
             old->http.max_connections_per_ip != next->http.max_connections_per_ip ||
             old->http.connection_timeout_s != next->http.connection_timeout_s ||
             old->http.max_header_bytes != next->http.max_header_bytes ||
             old->http.threads != next->http.threads)
        what = "http";
    if (what)
        log_warn("reload: setting changed but takes effect only after a restart",
                 LOG_FIELDS(LOG_S("key", what)));
}

/*
 * Replace the dispatcher with one built on @next. The old one finishes its
 * in-flight deliveries, its outcomes are committed, and only then does the
 * new one page the spool, so nothing is lost or delivered twice. Pending
 * deliveries of removed peers are dead-lettered by the new dispatcher's
 * start-up scan.
 */
static int swap_dispatcher(struct server *s, struct config *next, char *err,
                           size_t err_len)
{
    pthread_mutex_lock(&s->dispatch_lock);
    struct dispatch *old = s->dispatch;
    s->dispatch = NULL;
    pthread_mutex_unlock(&s->dispatch_lock);
    dispatch_stop(old, settle_deadline(s->cfg));
    spool_barrier(s->spool);
    spool_set_commit_cb(s->spool, NULL, NULL); /* old is about to go */
    dispatch_destroy(old);
    struct dispatch *d = dispatch_create(next, s->spool, err, err_len);
    if (d && dispatch_start(d) != 0) {
        snprintf(err, err_len, "cannot start the dispatcher: %s", strerror(errno));
        dispatch_destroy(d);
        d = NULL;
    }
    if (!d)
        return -EIO;
    pthread_mutex_lock(&s->dispatch_lock);
    s->dispatch = d;
    pthread_mutex_unlock(&s->dispatch_lock);
    return 0;
}

/*
 * Replace the scheduler with @next (created, not started). The old one is
 * stopped first, so its last event is committed and @next reads its last
 * slots; should @next not start, the old one runs on.
 */
static void swap_schedule(struct server *s, struct schedule *next)
{
    schedule_stop(s->schedule);
    int rc = schedule_start(next);
    if (rc == 0) {
        schedule_destroy(s->schedule);
        s->schedule = next;
        return;
    }
    log_error("reload: cannot start the new scheduler; keeping the old one",
              LOG_FIELDS(LOG_S("error", strerror(-rc))));
    schedule_destroy(next);
    rc = schedule_start(s->schedule);
    if (rc)
        log_error("reload: cannot restart the scheduler; schedules stopped",
                  LOG_FIELDS(LOG_S("error", strerror(-rc))));
}

/* Errors of a rejected reload: each logged, the first into @msg. */
static void reject_reload(struct config_errors *errs, char *msg, size_t len)
{
    for (size_t i = 0; i < errs->n; i++)
        log_error("reload rejected; keeping the current config",
                  LOG_FIELDS(LOG_S("error", errs->items[i])));
    snprintf(msg, len, "%s", errs->n ? errs->items[0] : "invalid config");
}

/*
 * SIGHUP and POST /v1/reload. Returns 0, -EINVAL (the new config is
 * invalid: the old one stays in force) or -EIO (the new dispatcher could
 * not start: the old config is restored).
 */
static int reload(struct server *s, char *msg, size_t msg_len)
{
    struct config_errors errs;
    int rc = 0;
    pthread_mutex_lock(&s->reload_lock);
    if (atomic_load(&s->draining) || !s->ingest) {
        snprintf(msg, msg_len, s->ingest ? "shutting down" : "not started");
        pthread_mutex_unlock(&s->reload_lock);
        return -EIO;
    }
    struct config *next = load_config(&s->opt, &errs);
    if (errs.n) {
        reject_reload(&errs, msg, msg_len);
        config_destroy(next);
        rc = -EINVAL;
        goto out;
    }
    warn_restart_only(s->cfg, next);
    char err[512] = "";
    struct schedule *sched = create_schedule(s, next, err, sizeof(err));
    if (!sched) {
        config_destroy(next);
        snprintf(msg, msg_len, "reload failed: %s", err);
        rc = -EIO;
        goto out;
    }
    ingest_set_config(s->ingest, next);
    if (swap_dispatcher(s, next, err, sizeof(err)) != 0) {
        log_error("reload failed; restoring the previous config",
                  LOG_FIELDS(LOG_S("error", err)));
        ingest_set_config(s->ingest, s->cfg);
        swap_dispatcher(s, s->cfg, err, sizeof(err));
        schedule_destroy(sched);
        config_destroy(next);
        snprintf(msg, msg_len, "reload failed: %s", err);
        rc = -EIO;
        goto out;
    }
    swap_schedule(s, sched);
    admin_set_config(s->admin, next);
    log_setup(next->log.level, next->log.format);
    config_destroy(s->cfg);
    s->cfg = next;
    log_info("reloaded", LOG_FIELDS(LOG_I("peers", next->n_peers),
                                    LOG_I("routes", next->n_routes),
                                    LOG_I("schedules", next->n_schedules)));
    snprintf(msg, msg_len, "reloaded");
out:
    config_errors_free(&errs);
    pthread_mutex_unlock(&s->reload_lock);
    return rc;
}

/* The main thread's loop: SIGHUP reloads, SIGTERM/SIGINT end it. */
static int wait_for_stop_signal(struct server *s)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            char msg[512];
            log_info("reloading", LOG_FIELDS(LOG_S("signal", "SIGHUP")));
            reload(s, msg, sizeof(msg));
            continue;
        }
        log_info("draining", LOG_FIELDS(LOG_S("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT")));
        return sig;
    }
}

int serve_main(const struct serve_options *opt)
{
    int64_t t0 = clock_mono_ms();
    struct server s = {.opt = *opt};
    atomic_init(&s.draining, false);
    s.cfg = serve_load_config(opt);
    if (!s.cfg)
        return 2;
    pthread_mutex_init(&s.reload_lock, NULL);
    pthread_mutex_init(&s.dispatch_lock, NULL);
    log_setup(s.cfg->log.level, s.cfg->log.format);
    char *dump = config_dump_masked(s.cfg);
    log_info("starting", LOG_FIELDS(LOG_S("version", FERRY_VERSION), LOG_RAW("config", dump)));
    free(dump);

    /* Before any thread exists, so every thread inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    metrics_init();
    curl_global_init(CURL_GLOBAL_DEFAULT);

    int rc = 0;
    if (start(&s, t0) == 0)
        wait_for_stop_signal(&s);
    else
        rc = 1;
    drain_and_stop(&s);
    if (rc == 0)
        log_info("stopped", LOG_NOFIELDS);
    config_destroy(s.cfg);
    pthread_mutex_destroy(&s.reload_lock);
    pthread_mutex_destroy(&s.dispatch_lock);
    metrics_shutdown();
    curl_global_cleanup();
    return rc;
}
