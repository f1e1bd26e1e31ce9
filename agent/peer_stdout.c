/*
 * peer_stdout: the built-in sink of the embedded default config. Each
 * delivered event becomes one line of structured-mode CloudEvents JSON on
 * standard output. Also home of peer_write_lines(), the batch writer that
 * the file sink shares.
 */
#include "peer.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Render cap per batch: far above any body ingest accepts. */
#define LINES_MAX ((size_t)1 << 30)

static void set_result(struct peer_job *job, enum deliver_result r,
                       const char *what, int err)
{
    job->res.result = r;
    job->res.status = 0;
    job->res.retry_after_ms = -1;
    job->res.error[0] = '\0';
    if (r != DELIVER_OK)
        snprintf(job->res.error, sizeof(job->res.error), "%s: %s", what,
                 strerror(err));
}

/* Append every job's line to @b, noting where each one ends; a job whose
 * event cannot be rendered gets its RETRY now and an empty line slot. */
static void render(struct buf *b, struct peer_job *const *jobs, size_t n,
                   size_t *ends)
{
    for (size_t i = 0; i < n; i++) {
        size_t mark = b->len;
        int rc = event_to_structured(&jobs[i]->ev, b);
        if (rc == 0)
            rc = buf_append(b, "\n", 1);
        if (rc) {
            b->len = mark; /* drop the partial line */
            if (b->data)
                b->data[mark] = '\0';
            /* -EINVAL: the stored event itself is bad; waiting won't help */
            set_result(jobs[i], rc == -EINVAL ? DELIVER_DEAD : DELIVER_RETRY,
                       "render event", -rc);
            ends[i] = SIZE_MAX;
        } else {
            ends[i] = b->len;
        }
    }
}

/* Write all of @b; returns the bytes written and sets *@err on failure. */
static size_t write_all(int fd, const struct buf *b, int *err)
{
    size_t off = 0;
    *err = 0;
    while (off < b->len) {
        ssize_t w = write(fd, b->data + off, b->len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            *err = w < 0 ? errno : EIO;
            break;
        }
        off += (size_t)w;
    }
    return off;
}

int peer_write_lines(int fd, const char *what, struct peer_job *const *jobs,
                     size_t n)
{
    if (n == 0)
        return 0;
    int rc = 0;
    struct buf b;
    buf_init(&b, LINES_MAX);
    size_t *ends = calloc(n, sizeof(*ends));
    if (!ends) {
        for (size_t i = 0; i < n; i++)
            set_result(jobs[i], DELIVER_RETRY, what, ENOMEM);
        rc = -ENOMEM;
        goto out;
    }
    render(&b, jobs, n, ends);
    int err = 0;
    size_t written = write_all(fd, &b, &err);
    if (err)
        rc = -err;
    for (size_t i = 0; i < n; i++) {
        if (ends[i] == SIZE_MAX)
            continue; /* already failed to render */
        if (ends[i] <= written)
            set_result(jobs[i], DELIVER_OK, what, 0);
        else
            set_result(jobs[i], DELIVER_RETRY, what, err);
    }
out:
    free(ends);
    buf_free(&b);
    return rc;
}

static void *stdout_create(const struct peer_config *pc, char *err,
                           size_t err_len)
{
    (void)pc;
    (void)err;
    (void)err_len;
    /* No state: stdout is the process's. A non-NULL token keeps the
     * "NULL means failure" rule of constructors. */
    static int token;
    return &token;
}

static void stdout_destroy(void *ctx)
{
    (void)ctx;
}

static void stdout_deliver(void *ctx, struct peer_job *const *jobs, size_t n)
{
    (void)ctx;
    peer_write_lines(STDOUT_FILENO, "stdout", jobs, n);
}

const struct peer_ops peer_stdout_ops = {
    .type = "stdout",
    .async = false,
    .create = stdout_create,
    .destroy = stdout_destroy,
    .deliver = stdout_deliver,
};
