/*
 * metrics: the contract's Prometheus series (see metrics.h). Counters are
 * C11 atomics updated with relaxed ordering from any thread; the per-peer
 * registry is a mutex-protected list whose nodes are never freed before
 * metrics_shutdown(), so callers may cache the pointers.
 */
#include "metrics.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

const double metrics_duration_bounds[METRICS_DURATION_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10};

static const char *const mode_names[METRICS_MODE__N] = {"structured", "binary", "batch", "reply",
                                                          "schedule"};
static const char *const reject_names[METRICS_REJECT__N] = {
    "invalid_json", "invalid_event", "unauthorized",
    "too_large", "unsupported_media_type", "unavailable"};

static atomic_llong received[METRICS_MODE__N];
static atomic_llong rejected[METRICS_REJECT__N];
static atomic_llong duplicates;
static atomic_llong spool_bytes_gauge;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct peer_metrics *registry_head;
static struct peer_metrics **registry_tail = &registry_head;

void metrics_init(void)
{
    for (int i = 0; i < METRICS_MODE__N; i++)
        atomic_init(&received[i], 0);
    for (int i = 0; i < METRICS_REJECT__N; i++)
        atomic_init(&rejected[i], 0);
    atomic_init(&duplicates, 0);
    atomic_init(&spool_bytes_gauge, 0);
}

void metrics_shutdown(void)
{
    pthread_mutex_lock(&registry_lock);
    struct peer_metrics *pm = registry_head;
    while (pm) {
        struct peer_metrics *next = pm->next;
        free(pm->name);
        free(pm);
        pm = next;
    }
    registry_head = NULL;
    registry_tail = &registry_head;
    pthread_mutex_unlock(&registry_lock);
}

void metrics_received(enum metrics_mode mode, long n)
{
    atomic_fetch_add_explicit(&received[mode], n, memory_order_relaxed);
}

void metrics_rejected(enum metrics_reject reason)
{
    atomic_fetch_add_explicit(&rejected[reason], 1, memory_order_relaxed);
}

void metrics_duplicates(long n)
{
    atomic_fetch_add_explicit(&duplicates, n, memory_order_relaxed);
}

void metrics_spool_bytes(int64_t bytes)
{
    atomic_store_explicit(&spool_bytes_gauge, bytes, memory_order_relaxed);
}

long long metrics_received_total(enum metrics_mode mode)
{
    return atomic_load(&received[mode]);
}

long long metrics_rejected_total(enum metrics_reject reason)
{
    return atomic_load(&rejected[reason]);
}

long long metrics_duplicates_total(void)
{
    return atomic_load(&duplicates);
}

struct peer_metrics *metrics_peer(const char *peer)
{
    struct peer_metrics *pm;
    pthread_mutex_lock(&registry_lock);
    for (pm = registry_head; pm; pm = pm->next)
        if (strcmp(pm->name, peer) == 0)
            goto out;
    pm = calloc(1, sizeof(*pm));
    if (!pm)
        goto out;
    pm->name = strdup(peer);
    if (!pm->name) {
        free(pm);
        pm = NULL;
        goto out;
    }
    *registry_tail = pm;
    registry_tail = &pm->next;
out:
    pthread_mutex_unlock(&registry_lock);
    return pm;
}

void metrics_observe_duration(struct peer_metrics *pm, int64_t duration_us)
{
    double secs = (double)duration_us / 1e6;
    int i = 0;
    while (i < METRICS_DURATION_BUCKETS && secs > metrics_duration_bounds[i])
        i++;
    if (i < METRICS_DURATION_BUCKETS)
        atomic_fetch_add_explicit(&pm->duration_buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&pm->duration_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&pm->duration_sum_us, duration_us, memory_order_relaxed);
}

/* Peer names are [A-Za-z0-9_.-] (config checks), so they need no escaping. */

static int header(struct buf *out, const char *name, const char *type,
                  const char *help)
{
    return buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A per-peer gauge or counter family, one series per peer. */
static int peer_family(struct buf *out, const char *name, const char *type,
                       const char *help, size_t offset)
{
    int rc = header(out, name, type, help);
    for (struct peer_metrics *pm = registry_head; pm && !rc; pm = pm->next) {
        const atomic_llong *v = (const atomic_llong *)((const char *)pm + offset);
        rc = buf_printf(out, "%s{peer=\"%s\"} %lld\n", name, pm->name,
                        atomic_load_explicit(v, memory_order_relaxed));
    }
    return rc;
}

static int render_deliveries(struct buf *out)
{
    int rc = header(out, "ferry_deliveries_total", "counter",
                    "Delivery attempts by peer and outcome.");
    for (struct peer_metrics *pm = registry_head; pm && !rc; pm = pm->next) {
        rc = buf_printf(out,
                        "ferry_deliveries_total{peer=\"%s\",outcome=\"success\"} %lld\n"
                        "ferry_deliveries_total{peer=\"%s\",outcome=\"retry\"} %lld\n"
                        "ferry_deliveries_total{peer=\"%s\",outcome=\"dead\"} %lld\n",
                        pm->name, atomic_load(&pm->success), pm->name,
                        atomic_load(&pm->retry), pm->name, atomic_load(&pm->dead));
    }
    return rc;
}

static int render_durations(struct buf *out)
{
    int rc = header(out, "ferry_delivery_duration_seconds", "histogram",
                    "Time from sending a delivery to its outcome.");
    for (struct peer_metrics *pm = registry_head; pm && !rc; pm = pm->next) {
        long long cumulative = 0;
        for (int i = 0; i < METRICS_DURATION_BUCKETS && !rc; i++) {
            cumulative += atomic_load(&pm->duration_buckets[i]);
            rc = buf_printf(out,
                            "ferry_delivery_duration_seconds_bucket{peer=\"%s\",le=\"%g\"} %lld\n",
                            pm->name, metrics_duration_bounds[i], cumulative);
        }
        long long count = atomic_load(&pm->duration_count);
        if (!rc)
            rc = buf_printf(out,
                            "ferry_delivery_duration_seconds_bucket{peer=\"%s\",le=\"+Inf\"} %lld\n"
                            "ferry_delivery_duration_seconds_sum{peer=\"%s\"} %.6f\n"
                            "ferry_delivery_duration_seconds_count{peer=\"%s\"} %lld\n",
                            pm->name, count, pm->name,
                            (double)atomic_load(&pm->duration_sum_us) / 1e6,
                            pm->name, count);
    }
    return rc;
}

static int render_breakers(struct buf *out)
{
    int rc = header(out, "ferry_breaker_open", "gauge",
                    "1 while the peer's circuit breaker is open.");
    for (struct peer_metrics *pm = registry_head; pm && !rc; pm = pm->next)
        rc = buf_printf(out, "ferry_breaker_open{peer=\"%s\"} %d\n", pm->name,
                        atomic_load(&pm->breaker_open));
    return rc;
}

static int render_global(struct buf *out)
{
    int rc = header(out, "ferry_events_received_total", "counter",
                    "Events accepted on ingest, by content mode.");
    for (int i = 0; i < METRICS_MODE__N && !rc; i++)
        rc = buf_printf(out, "ferry_events_received_total{mode=\"%s\"} %lld\n",
                        mode_names[i], atomic_load(&received[i]));
    if (!rc)
        rc = header(out, "ferry_events_rejected_total", "counter",
                    "Ingest requests refused, by reason.");
    for (int i = 0; i < METRICS_REJECT__N && !rc; i++)
        rc = buf_printf(out, "ferry_events_rejected_total{reason=\"%s\"} %lld\n",
                        reject_names[i], atomic_load(&rejected[i]));
    if (!rc)
        rc = header(out, "ferry_events_duplicate_total", "counter",
                    "Events acknowledged but not stored again (same source and id).");
    if (!rc)
        rc = buf_printf(out, "ferry_events_duplicate_total %lld\n", atomic_load(&duplicates));
    if (!rc)
        rc = header(out, "ferry_spool_bytes", "gauge", "Size of the spool on disk.");
    if (!rc)
        rc = buf_printf(out, "ferry_spool_bytes %lld\n", atomic_load(&spool_bytes_gauge));
    if (!rc)
        rc = header(out, "ferry_build_info", "gauge", "Always 1; the version is a label.");
    if (!rc)
        rc = buf_printf(out, "ferry_build_info{version=\"%s\"} 1\n", FERRY_VERSION);
    return rc;
}

int metrics_render(struct buf *out)
{
    int rc = render_global(out);
    pthread_mutex_lock(&registry_lock);
    if (!rc)
        rc = render_deliveries(out);
    if (!rc)
        rc = render_durations(out);
    if (!rc)
        rc = peer_family(out, "ferry_deliveries_in_flight", "gauge",
                         "Deliveries sent and not yet answered.",
                         offsetof(struct peer_metrics, in_flight));
    if (!rc)
        rc = peer_family(out, "ferry_spool_pending", "gauge",
                         "Deliveries waiting in the spool.",
                         offsetof(struct peer_metrics, pending));
    if (!rc)
        rc = peer_family(out, "ferry_spool_oldest_age_seconds", "gauge",
                         "Age of the oldest pending delivery.",
                         offsetof(struct peer_metrics, oldest_age_s));
    if (!rc)
        rc = peer_family(out, "ferry_dead_letters", "gauge",
                         "Deliveries in the dead-letter store.",
                         offsetof(struct peer_metrics, dead_letters));
    if (!rc)
        rc = render_breakers(out);
    pthread_mutex_unlock(&registry_lock);
    return rc;
}
