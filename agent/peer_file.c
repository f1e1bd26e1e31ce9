/*
 * peer_file: appends each delivered event as one line of structured-mode
 * CloudEvents JSON to a file (JSON Lines). The file is opened once with
 * O_APPEND, so other appenders and log rotation by copy-truncate keep
 * whole lines, and reopened after any error (rotation by rename is picked
 * up then, or on restart). Each batch is fdatasync'ed before its
 * deliveries count as done: the spool forgets an event once it is
 * delivered, so the file must hold it first.
 */
#include "peer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct file_peer {
    const struct peer_config *pc;
    int fd; /* -1 until opened, and after an error */
};

static void *file_create(const struct peer_config *pc, char *err,
                         size_t err_len)
{
    if (!pc->path || !*pc->path) {
        snprintf(err, err_len, "peer \"%s\": file peer without a path",
                 pc->name);
        return NULL;
    }
    struct file_peer *fp = calloc(1, sizeof(*fp));
    if (!fp) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    fp->pc = pc;
    fp->fd = -1; /* opened on first use: a missing directory may appear */
    return fp;
}

static void file_close(struct file_peer *fp)
{
    if (fp->fd >= 0)
        close(fp->fd);
    fp->fd = -1;
}

static void file_destroy(void *ctx)
{
    struct file_peer *fp = ctx;
    if (!fp)
        return;
    file_close(fp);
    free(fp);
}

static void fail_all(struct peer_job *const *jobs, size_t n, const char *what,
                     const char *path, int err)
{
    for (size_t i = 0; i < n; i++) {
        jobs[i]->res.result = DELIVER_RETRY;
        jobs[i]->res.status = 0;
        jobs[i]->res.retry_after_ms = -1;
        snprintf(jobs[i]->res.error, sizeof(jobs[i]->res.error), "%s %s: %s",
                 what, path, strerror(err));
    }
}

static void file_deliver(void *ctx, struct peer_job *const *jobs, size_t n)
{
    struct file_peer *fp = ctx;
    const char *path = fp->pc->path;
    if (fp->fd < 0) {
        fp->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (fp->fd < 0) {
            fail_all(jobs, n, "open", path, errno);
            return;
        }
    }
    if (peer_write_lines(fp->fd, path, jobs, n) < 0) {
        file_close(fp);
        return;
    }
    if (fdatasync(fp->fd) < 0) {
        /* Written but maybe not durable: deliver again rather than lose. */
        fail_all(jobs, n, "fdatasync", path, errno);
        file_close(fp);
    }
}

const struct peer_ops peer_file_ops = {
    .type = "file",
    .async = false,
    .create = file_create,
    .destroy = file_destroy,
    .deliver = file_deliver,
};
