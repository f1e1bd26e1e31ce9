/*
 * peer: the delivery back-ends behind one descriptor, like Fluent Bit's
 * output plugins (struct flb_output_plugin). The dispatcher knows peers only
 * through struct peer_ops; a back-end knows nothing of the spool, of retry
 * policy or of other peers. It turns one attempt into a struct peer_result.
 *
 * Two shapes of back-end:
 *   - asynchronous (http): start() prepares a curl easy handle that the
 *     dispatcher adds to its multi handle; when curl is done the dispatcher
 *     calls finish() to read the result, or cancel() at shutdown.
 *   - synchronous (stdout, file): deliver() writes a batch at once, on the
 *     dispatcher thread (local writes only, never the network).
 *
 * Threading: every function here runs on the dispatcher thread, which owns
 * each back-end's context and every easy handle (libcurl-thread.md: never
 * share a handle).
 */
#ifndef FERRY_PEER_H
#define FERRY_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <curl/curl.h>

#include "config.h"
#include "event.h"
#include "retry.h"
#include "spool.h"

/** What one attempt came to, as a back-end reports it. */
struct peer_result {
    enum deliver_result result;
    long status;            /* HTTP status, 0 when none */
    int64_t retry_after_ms; /* from Retry-After, -1 when none */
    char error[160];        /* transport or I/O error text, "" when none */
};

/* The most of a reply we keep: body, and ce-* headers each. */
#define PEER_REPLY_MAX ((size_t)1 << 20)

/**
 * A 2xx answer other than 202 and 204, kept because it may carry a reply
 * event (Prefer: reply): its Content-Type, ce-* headers and body (the body
 * only when the headers announce an event: a CloudEvents media type or
 * ce-* headers). Only HTTP back-ends make one; the job owns it
 * (peer_reply_destroy).
 */
struct peer_reply {
    long status;
    char *content_type; /* NULL when none */
    char *headers;      /* ce-* headers as "name\0value\0" pairs, raw */
    size_t headers_len; /* bytes of @headers */
    char *body;         /* NUL-terminated; NULL when empty */
    size_t body_len;
    bool too_large;     /* over PEER_REPLY_MAX: what was kept is partial */
};

/** Free @r and what it owns. NULL-safe. */
void peer_reply_destroy(struct peer_reply *r);

/**
 * One delivery in the dispatcher's hands. The dispatcher owns it and its
 * fields; @io belongs to the back-end between start() and finish()/cancel().
 */
struct peer_job {
    struct spool_delivery d; /* the spool row (owned) */
    struct event ev;         /* rebuilt from d (owned; borrows d.data) */
    struct peer_result res;
    int64_t at_ms;           /* wall time the attempt started */
    int64_t t0_us;           /* monotonic start, for the duration */
    void *io;                /* back-end state of the running attempt */
    struct peer_reply *reply; /* set by finish() when the answer may be a
                               * reply event (owned; NULL otherwise) */
    /* the dispatcher's bookkeeping */
    CURL *easy;              /* async: the handle in the multi */
    size_t peer;             /* index of the dispatcher's peer */
    bool probe;              /* the half-open breaker's probe */
    struct peer_job *batch_next; /* batch mode: the next job riding in this
                                  * job's request; the first job of a
                                  * request owns the rest (job_free) */
    struct peer_job *prev, *next;
};

struct peer_ops {
    const char *type; /* "http", "stdout", "file" */
    bool async;

    /**
     * Create the back-end context for @pc (borrowed; outlives the
     * context). NULL with a message in @err on failure.
     */
    void *(*create)(const struct peer_config *pc, char *err, size_t err_len);
    /** Free the context and everything it pooled. NULL-safe. */
    void (*destroy)(void *ctx);

    /* ---- asynchronous back-ends ---- */

    /**
     * Prepare @job's request and return it in *@easy, with CURLOPT_PRIVATE
     * set to @job, for the caller to add to its multi handle. In batch
     * mode the request carries @job and every job on its batch_next chain,
     * and finish() reports one result for all of them. @job->at_ms
     * is the attempt's wall time (webhook-timestamp when signing). Returns 0,
     * -EINVAL when the event cannot be encoded (not retryable), or
     * -ENOMEM; on failure @job->res.error says why and nothing is held.
     */
    int (*start)(void *ctx, struct peer_job *job, CURL **easy);
    /**
     * curl finished @job's transfer with @rc (the caller has removed the
     * handle from its multi handle): fill @job->res (and @job->reply for a
     * 2xx answer that may be a reply event) and take the handle back for
     * reuse. @now_ms is wall time, for Retry-After dates.
     */
    void (*finish)(void *ctx, struct peer_job *job, CURLcode rc,
                   int64_t now_ms);
    /** Take the handle back without a result (shutdown). */
    void (*cancel)(void *ctx, struct peer_job *job);

    /* ---- synchronous back-ends ---- */

    /** Deliver @n jobs in order, filling each job's res. */
    void (*deliver)(void *ctx, struct peer_job *const *jobs, size_t n);
};

extern const struct peer_ops peer_http_ops;
extern const struct peer_ops peer_stdout_ops;
extern const struct peer_ops peer_file_ops;

/**
 * Shared by the local sinks (defined in peer_stdout.c): write each job's
 * event as one line of structured JSON to @fd, the whole batch in as few
 * write(2) calls as the kernel allows (one, normally), so lines never
 * interleave with other writers. Jobs whose line was written completely
 * get DELIVER_OK; the rest RETRY with "@what: <strerror>" (DEAD when the
 * stored event cannot be rendered at all). Returns 0, or the first -errno
 * of the write.
 */
int peer_write_lines(int fd, const char *what, struct peer_job *const *jobs,
                     size_t n);

#endif
