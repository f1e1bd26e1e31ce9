/*
 * health: liveness and readiness decisions (see health.h).
 */
#include "health.h"

#include <inttypes.h>

static void reasons_begin(struct buf *b, int *n)
{
    *n = 0;
    buf_puts(b, "{\"status\":\"");
}

static void reason(struct buf *b, int *n, const char *text)
{
    if ((*n)++ == 0)
        buf_puts(b, "unavailable\",\"reasons\":[");
    else
        buf_puts(b, ",");
    buf_printf(b, "\"%s\"", text); /* static texts, nothing to escape */
}

static int reasons_end(struct buf *b, int n)
{
    buf_puts(b, n ? "]}" : "ok\"}");
    return n ? 503 : 200;
}

int health_live(const struct health_inputs *in, struct buf *body)
{
    int n;
    reasons_begin(body, &n);
    if (in->dispatcher_idle_ms > HEALTH_STALL_MS)
        reason(body, &n, "dispatcher loop stalled");
    if (in->writer_idle_ms > HEALTH_STALL_MS)
        reason(body, &n, "spool writer loop stalled");
    return reasons_end(body, n);
}

int health_ready(const struct health_inputs *in, struct buf *body)
{
    int n;
    reasons_begin(body, &n);
    if (in->draining)
        reason(body, &n, "shutting down");
    if (!in->spool_writable)
        reason(body, &n, "spool not writable (disk full or I/O error)");
    if (in->disk_low)
        reason(body, &n, "disk nearly full (below the spool's free-space reserve)");
    if (in->spool_max_bytes > 0 && in->spool_bytes >= in->spool_max_bytes)
        reason(body, &n, "spool full (spool.max_bytes reached)");
    if (in->dispatcher_idle_ms > HEALTH_STALL_MS)
        reason(body, &n, "dispatcher not running");
    if (in->writer_idle_ms > HEALTH_STALL_MS)
        reason(body, &n, "spool writer not running");
    return reasons_end(body, n);
}
