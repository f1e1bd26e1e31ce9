/*
 * metrics: Prometheus counters, gauges and histograms behind the contract's
 * fixed names. Any thread updates them with C11 atomics (relaxed: these are
 * statistics, not synchronisation); metrics_render() writes the text
 * exposition format for GET /metrics.
 *
 * Per-peer series live in a registry keyed by peer name: metrics_peer()
 * returns a stable pointer that stays valid until metrics_shutdown(), so a
 * reload that keeps a peer keeps its counters.
 */
#ifndef FERRY_METRICS_H
#define FERRY_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "buf.h"

/* METRICS_MODE_REPLY: events a peer answered a delivery with (Prefer: reply).
 * METRICS_MODE_SCHEDULE: events produced by "schedules" (schedule.c). */
enum metrics_mode { METRICS_MODE_STRUCTURED = 0, METRICS_MODE_BINARY, METRICS_MODE_BATCH, METRICS_MODE_REPLY, METRICS_MODE_SCHEDULE, METRICS_MODE__N };

enum metrics_reject {
    METRICS_REJECT_INVALID_JSON = 0,
    METRICS_REJECT_INVALID_EVENT,
    METRICS_REJECT_UNAUTHORIZED,
    METRICS_REJECT_TOO_LARGE,
    METRICS_REJECT_UNSUPPORTED_MEDIA_TYPE,
    METRICS_REJECT_UNAVAILABLE,
    METRICS_REJECT__N
};

enum metrics_breaker { METRICS_BREAKER_CLOSED = 0, METRICS_BREAKER_OPEN, METRICS_BREAKER_HALF_OPEN };

/* Delivery duration buckets, seconds. */
#define METRICS_DURATION_BUCKETS 12
extern const double metrics_duration_bounds[METRICS_DURATION_BUCKETS];

struct peer_metrics {
    char *name;
    atomic_llong success, retry, dead;                /* deliveries_total by outcome */
    atomic_llong in_flight;                           /* gauge */
    atomic_llong pending;                             /* gauge, spool_pending */
    atomic_llong dead_letters;                        /* gauge */
    atomic_llong oldest_age_s;                        /* gauge */
    atomic_int breaker_open;                          /* gauge 0/1 */
    atomic_int breaker_state;                         /* enum metrics_breaker, for GET /v1/peers */
    atomic_llong duration_buckets[METRICS_DURATION_BUCKETS]; /* non-cumulative */
    atomic_llong duration_count;
    atomic_llong duration_sum_us;
    struct peer_metrics *next; /* registry list, private */
};

/** Prepare the registry. Call once in main before threads start. */
void metrics_init(void);
/** Free the registry. Call after all threads stopped. */
void metrics_shutdown(void);

void metrics_received(enum metrics_mode mode, long n);
void metrics_rejected(enum metrics_reject reason);
void metrics_duplicates(long n);
void metrics_spool_bytes(int64_t bytes);

/** Get or create the series of @peer. NULL only on -ENOMEM. */
struct peer_metrics *metrics_peer(const char *peer);

/** Record one attempt's duration. */
void metrics_observe_duration(struct peer_metrics *pm, int64_t duration_us);

/** Append the exposition text. 0 or -ENOMEM. */
int metrics_render(struct buf *out);

/** Read one counter (tests, logs). */
long long metrics_received_total(enum metrics_mode mode);
long long metrics_rejected_total(enum metrics_reject reason);
long long metrics_duplicates_total(void);

#endif
