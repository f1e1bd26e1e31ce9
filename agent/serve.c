/*
 * serve: process lifecycle for `ferry serve` (see serve.h).
 *
 * DESIGN
 * The main thread owns the config and the lifecycle and does nothing else:
 * it blocks the signals in every thread (set before any thread starts, so
 * threads inherit the mask) and takes them synchronously with sigwait().
 * Start order follows the data flow backwards, so nothing can be accepted
 * before there is somewhere to put it: spool writer, dispatcher, listener.
 * Drain goes forwards: refuse new events (readiness turns 503), let
 * requests waiting for a commit finish, let in-flight deliveries finish
 * until drain_timeout_ms, commit their outcomes, close the spool.
 */
#include "serve.h"

#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "config.h"
#include "dispatch.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "spool.h"

struct server {
    struct config *cfg;
    struct spool *spool;
    struct dispatch *dispatch;
    struct ingest *ingest;
    atomic_bool draining;
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

struct config *serve_load_config(const struct serve_options *opt)
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
    if (errs.n) {
        print_errors(&errs);
        config_destroy(cfg);
        cfg = NULL;
    }
    config_errors_free(&errs);
    return cfg;
}

/*
 * Contract features that later versions implement. Refusing to start is
 * safer than running without TLS or signatures the operator asked for.
 */
static int refuse_unsupported(const struct config *cfg)
{
    const char *what = NULL;
    if (cfg->tls.cert_file || cfg->admin.tls.cert_file)
        what = "tls";
    else if (cfg->n_schedules)
        what = "schedules";
    for (size_t i = 0; !what && i < cfg->n_peers; i++) {
        if (cfg->peers[i].signing_secret)
            what = "peers.*.signing_secret";
    }
    if (!what)
        return 0;
    fprintf(stderr, "ferry: %s: not supported by ferry %s yet\n", what, FERRY_VERSION);
    return -ENOTSUP;
}

static void health_snapshot(void *arg, struct health_inputs *in)
{
    struct server *s = arg;
    int64_t now = clock_mono_ms();
    in->draining = atomic_load(&s->draining);
    in->spool_writable = spool_writable(s->spool);
    in->spool_bytes = spool_bytes(s->spool);
    in->spool_max_bytes = s->cfg->spool.max_bytes;
    in->dispatcher_idle_ms = now - dispatch_heartbeat_ms(s->dispatch);
    in->writer_idle_ms = now - spool_heartbeat_ms(s->spool);
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
    struct ingest_deps deps = {.cfg = s->cfg, .spool = s->spool,
                               .health_snapshot = health_snapshot, .health_arg = s,
                               .threads = 2};
    s->ingest = ingest_start(&deps, err, sizeof(err));
    if (!s->ingest)
        goto fail;
    log_info("ready", LOG_FIELDS(LOG_S("listen", s->cfg->listen),
                                 LOG_I("port", ingest_port(s->ingest)),
                                 LOG_S("spool", s->cfg->spool.dir),
                                 LOG_I("startup_ms", clock_mono_ms() - t0)));
    return 0;
fail:
    log_error("cannot start", LOG_FIELDS(LOG_S("error", err)));
    return -1;
}

static void drain_and_stop(struct server *s)
{
    int64_t deadline = clock_mono_ms() + s->cfg->drain_timeout_ms;
    atomic_store(&s->draining, true);
    if (s->ingest) {
        ingest_set_draining(s->ingest);
        ingest_wait_idle(s->ingest, deadline + 5000);
    }
    if (s->dispatch)
        dispatch_stop(s->dispatch, deadline);
    ingest_stop(s->ingest);
    if (s->spool)
        spool_stop(s->spool);
    dispatch_destroy(s->dispatch);
    spool_close(s->spool);
}

static int wait_for_stop_signal(void)
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
            log_warn("SIGHUP ignored: configuration reload is not supported yet", LOG_NOFIELDS);
            continue;
        }
        log_info("draining", LOG_FIELDS(LOG_S("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT")));
        return sig;
    }
}

int serve_main(const struct serve_options *opt)
{
    int64_t t0 = clock_mono_ms();
    struct server s = {0};
    atomic_init(&s.draining, false);
    s.cfg = serve_load_config(opt);
    if (!s.cfg)
        return 2;
    if (refuse_unsupported(s.cfg) != 0) {
        config_destroy(s.cfg);
        return 2;
    }
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
        wait_for_stop_signal();
    else
        rc = 1;
    drain_and_stop(&s);
    if (rc == 0)
        log_info("stopped", LOG_NOFIELDS);
    config_destroy(s.cfg);
    metrics_shutdown();
    curl_global_cleanup();
    return rc;
}
