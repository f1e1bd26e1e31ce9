/*
 * ingest: the main HTTP listener. POST /v1/events in the three CloudEvents
 * content modes, plus GET /healthz, /readyz and /metrics.
 *
 * DESIGN
 * libmicrohttpd's pool threads read and validate a request, route each
 * event, queue the batch to the spool writer and SUSPEND the connection;
 * they never touch SQLite or a peer. The writer's done callback resumes
 * the connection after the commit, and the pool thread then answers 202
 * (or 503). So a slow disk delays answers, never the HTTP threads, and all
 * requests waiting together share one fsync.
 */
#ifndef FERRY_INGEST_H
#define FERRY_INGEST_H

#include <stdint.h>

#include "config.h"
#include "health.h"
#include "spool.h"

struct ingest;

struct ingest_deps {
    struct config *cfg; /* the listener takes its own reference */
    struct spool *spool;
    /* Fills a health snapshot; called on pool threads. */
    void (*health_snapshot)(void *arg, struct health_inputs *in);
    void *health_arg;
    unsigned threads; /* pool size; 0: the config's http.threads */
};

/** Start listening on cfg->listen. NULL with @err on failure. */
struct ingest *ingest_start(const struct ingest_deps *deps, char *err,
                            size_t err_len);

/**
 * Route and limit new requests by @cfg from now on (reload). Takes a
 * reference; requests already admitted finish under the config they
 * started with. The listen address is not changed. Any thread.
 */
void ingest_set_config(struct ingest *ing, struct config *cfg);

/** The bound port (for logs and listen ports of 0). */
uint16_t ingest_port(struct ingest *ing);

/** From now on POST /v1/events answers 503 "shutting down". Any thread. */
void ingest_set_draining(struct ingest *ing);

/**
 * Wait (bounded by the monotonic @deadline_ms) until no request waits for
 * a spool commit. Returns 0, or -ETIMEDOUT.
 */
int ingest_wait_idle(struct ingest *ing, int64_t deadline_ms);

/** Stop the listener and free. NULL-safe. Call after ingest_wait_idle. */
void ingest_stop(struct ingest *ing);

#endif
