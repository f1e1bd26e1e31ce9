/*
 * dispatch: delivers pending deliveries to peers.
 *
 * DESIGN
 * One dispatcher thread owns the curl multi handle, every easy handle, the
 * per-peer queues, in-flight counts and circuit breakers: nothing here is
 * shared, so nothing here is locked except the small inbox through which
 * the spool's commit callback hands over "new deliveries" and "these
 * outcomes are durable" (then curl_multi_wakeup).
 *
 * The spool is the source of truth. Per peer the dispatcher pages due
 * deliveries in (next_ms, id) order through its own spool_reader, keeps at
 * most a small window in memory (queued + in flight + outcome not yet
 * committed, all remembered by id so a page never loads one twice), starts
 * up to max_in_flight at once, and posts each outcome to the spool writer.
 * A delivery leaves memory only when its outcome is durable, so a crash at
 * any point leads to redelivery, never to loss (at-least-once).
 *
 * Delivery policies: a circuit breaker per HTTP peer (breaker.h) gates
 * starting attempts and publishes its state to the peer's metrics
 * (breaker_open, breaker_state); signing is the HTTP back-end's (sign.h);
 * reply events in 2xx answers are routed with the dispatcher's config and
 * queued to the spool (reply.h).
 */
#ifndef FERRY_DISPATCH_H
#define FERRY_DISPATCH_H

#include <stdint.h>

#include "config.h"
#include "spool.h"

struct dispatch;

/**
 * Create the dispatcher for @cfg (borrowed; must outlive the dispatcher)
 * over @spool. Registers itself as the spool's commit callback, so call
 * before spool_start(). NULL with @err on failure.
 */
struct dispatch *dispatch_create(const struct config *cfg, struct spool *spool,
                                 char *err, size_t err_len);

/** Start the thread. 0 or -errno. */
int dispatch_start(struct dispatch *d);

/**
 * Stop starting deliveries, let in-flight ones finish until @deadline_ms
 * (monotonic), abandon the rest without an outcome (they stay pending in
 * the spool), post the outcomes, and join the thread. Shutdown never
 * dead-letters.
 */
void dispatch_stop(struct dispatch *d, int64_t deadline_ms);

/**
 * NULL-safe; stops first if needed. Call after spool_stop(): until then
 * the spool's writer may still run the commit callback, which points here.
 */
void dispatch_destroy(struct dispatch *d);

/** Monotonic ms of the loop's last turn (for /healthz). Any thread. */
int64_t dispatch_heartbeat_ms(const struct dispatch *d);

#endif
