/*
 * breaker: a per-peer circuit breaker as a pure state machine. Time comes
 * in as a parameter (monotonic ms), so every transition is testable
 * without clocks; the dispatcher owns one per HTTP peer and is its only
 * user (dispatcher thread, no locking).
 *
 *   CLOSED     deliveries flow. Consecutive failed attempts are counted; a
 *              success resets the count. At failure_threshold: OPEN.
 *   OPEN       nothing starts for open_ms. Pending deliveries wait: they
 *              are not attempted, so they are neither failed nor
 *              dead-lettered. Then: HALF_OPEN.
 *   HALF_OPEN  one delivery at a time is let through as a probe. Its
 *              success closes the breaker; its failure opens it again for
 *              open_ms. An answer that is no failure of the peer (a 4xx
 *              the delivery is dead-lettered for) proves the peer is up:
 *              it closes the breaker too.
 *
 * What counts as a failure is the caller's to say (breaker_record's
 * outcome): the dispatcher maps RETRY-class results (transport errors,
 * timeouts, 408, 429, 5xx) to BREAKER_FAILURE and a non-retryable HTTP
 * status to BREAKER_ANSWERED, which neither counts nor resets in CLOSED.
 *
 * Attempts started before the breaker opened finish normally; their
 * outcomes, arriving while OPEN or (if slower than open_ms) while
 * HALF_OPEN without being the probe, change nothing.
 */
#ifndef FERRY_BREAKER_H
#define FERRY_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

enum breaker_state { BREAKER_CLOSED = 0, BREAKER_OPEN, BREAKER_HALF_OPEN };

/** What an attempt told about the peer. */
enum breaker_outcome {
    BREAKER_SUCCESS = 0, /* 2xx */
    BREAKER_FAILURE,     /* the peer failed (RETRY class) */
    BREAKER_ANSWERED,    /* the peer answered, but not 2xx (4xx dead letter) */
};

/**
 * One breaker. Embedded by its owner (breaker_init, no free needed);
 * fields are read-only outside breaker.c.
 */
struct breaker {
    int threshold;            /* < 1: the breaker never opens */
    int64_t open_ms;
    enum breaker_state state;
    int failures;             /* consecutive failures; kept while open */
    int64_t until_ms;         /* OPEN: when the probe may go */
    bool probing;             /* HALF_OPEN: the probe is out */
};

/** A CLOSED breaker for @p (copied). */
void breaker_init(struct breaker *b, const struct breaker_policy *p);

/**
 * May a delivery start at @now_ms? CLOSED: yes. OPEN: no, until open_ms
 * has passed, then the breaker turns HALF_OPEN. HALF_OPEN: yes once, for
 * the probe, and *@probe is set; no while the probe is out. The caller
 * passes *@probe back to breaker_record() with the probe's outcome, or to
 * breaker_release() when the granted probe was not sent after all.
 */
bool breaker_allow(struct breaker *b, int64_t now_ms, bool *probe);

/** Give back a probe that breaker_allow() granted but was never sent. */
void breaker_release(struct breaker *b);

/**
 * Account for an attempt's @outcome at @now_ms. @probe says whether it was
 * the HALF_OPEN probe (as breaker_allow() said).
 */
void breaker_record(struct breaker *b, enum breaker_outcome outcome,
                    bool probe, int64_t now_ms);

/**
 * The state at @now_ms: an OPEN breaker whose open_ms has passed turns
 * HALF_OPEN here too (so gauges change without traffic).
 */
enum breaker_state breaker_poll(struct breaker *b, int64_t now_ms);

/** How long from @now_ms until an OPEN breaker lets a probe go (0 when
 *  due), or -1 when the breaker is not OPEN. */
int64_t breaker_wait_ms(const struct breaker *b, int64_t now_ms);

/** "closed", "open" or "half-open". */
const char *breaker_state_name(enum breaker_state s);

#endif
