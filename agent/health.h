/*
 * health: liveness and readiness as pure decisions over a snapshot of the
 * process's state, so every reason is unit-testable. The HTTP handlers take
 * the snapshot; this module only judges it and writes the JSON body.
 */
#ifndef FERRY_HEALTH_H
#define FERRY_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"

/* A loop that has not turned for this long is considered stuck. */
#define HEALTH_STALL_MS 10000

struct health_inputs {
    bool draining;              /* SIGTERM received */
    bool spool_writable;        /* last commit succeeded */
    bool disk_low;              /* free space below the spool's reserve */
    int64_t spool_bytes;
    int64_t spool_max_bytes;
    int64_t dispatcher_idle_ms; /* since the dispatcher loop last turned */
    int64_t writer_idle_ms;     /* since the spool writer loop last turned */
};

/**
 * /healthz: 200 while the loops turn, else 503. Appends the JSON body
 * ({"status":"ok"} or {"status":"unhealthy","reasons":[...]}) to @body.
 */
int health_live(const struct health_inputs *in, struct buf *body);

/**
 * /readyz: 200 when not draining, the spool is writable and below its
 * limit and the dispatcher runs; otherwise 503 with every reason listed.
 */
int health_ready(const struct health_inputs *in, struct buf *body);

#endif
