/*
 * breaker: the circuit breaker state machine (see breaker.h). Pure: no
 * clocks, no I/O, no allocation.
 */
#include "breaker.h"

#include <limits.h>

void breaker_init(struct breaker *b, const struct breaker_policy *p)
{
    b->threshold = p->failure_threshold;
    b->open_ms = p->open_ms > 0 ? p->open_ms : 0;
    b->state = BREAKER_CLOSED;
    b->failures = 0;
    b->until_ms = 0;
    b->probing = false;
}

static void trip(struct breaker *b, int64_t now_ms)
{
    b->state = BREAKER_OPEN;
    b->probing = false;
    b->until_ms = now_ms > INT64_MAX - b->open_ms ? INT64_MAX
                                                  : now_ms + b->open_ms;
}

static void reset(struct breaker *b)
{
    b->state = BREAKER_CLOSED;
    b->failures = 0;
    b->probing = false;
}

enum breaker_state breaker_poll(struct breaker *b, int64_t now_ms)
{
    if (b->state == BREAKER_OPEN && now_ms >= b->until_ms) {
        b->state = BREAKER_HALF_OPEN;
        b->probing = false;
    }
    return b->state;
}

bool breaker_allow(struct breaker *b, int64_t now_ms, bool *probe)
{
    *probe = false;
    switch (breaker_poll(b, now_ms)) {
    case BREAKER_CLOSED:
        return true;
    case BREAKER_HALF_OPEN:
        if (b->probing)
            return false;
        b->probing = true;
        *probe = true;
        return true;
    case BREAKER_OPEN:
    default:
        return false;
    }
}

void breaker_release(struct breaker *b)
{
    if (b->state == BREAKER_HALF_OPEN)
        b->probing = false;
}

/* CLOSED: count failures, reset on success; a plain answer is neither. */
static void record_closed(struct breaker *b, enum breaker_outcome outcome,
                          int64_t now_ms)
{
    if (outcome == BREAKER_SUCCESS) {
        b->failures = 0;
    } else if (outcome == BREAKER_FAILURE) {
        if (b->failures < INT_MAX)
            b->failures++;
        if (b->threshold >= 1 && b->failures >= b->threshold)
            trip(b, now_ms);
    }
}

void breaker_record(struct breaker *b, enum breaker_outcome outcome,
                    bool probe, int64_t now_ms)
{
    switch (b->state) {
    case BREAKER_CLOSED:
        record_closed(b, outcome, now_ms);
        break;
    case BREAKER_HALF_OPEN:
        if (!probe)
            break; /* an attempt from before the breaker opened */
        if (outcome == BREAKER_FAILURE) {
            if (b->failures < INT_MAX)
                b->failures++;
            trip(b, now_ms);
        } else {
            reset(b);
        }
        break;
    case BREAKER_OPEN:
    default:
        break; /* stragglers from before it opened */
    }
}

int64_t breaker_wait_ms(const struct breaker *b, int64_t now_ms)
{
    if (b->state != BREAKER_OPEN)
        return -1;
    return b->until_ms > now_ms ? b->until_ms - now_ms : 0;
}

const char *breaker_state_name(enum breaker_state s)
{
    switch (s) {
    case BREAKER_OPEN:
        return "open";
    case BREAKER_HALF_OPEN:
        return "half-open";
    case BREAKER_CLOSED:
    default:
        return "closed";
    }
}
