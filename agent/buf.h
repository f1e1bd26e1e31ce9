/*
 * buf: a growable byte buffer with a hard size cap fixed at init
 * (after curl's dynbuf). The cap makes body and batch limits hold by
 * construction: an append past it fails and leaves the buffer unaltered.
 * The data is always NUL-terminated (not counted in len).
 */
#ifndef FERRY_BUF_H
#define FERRY_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data;  /* NULL until the first append */
    size_t len;  /* bytes used, excluding the trailing NUL */
    size_t cap;  /* bytes allocated */
    size_t max;  /* the most len may ever be */
};

/** Init an empty buffer that may grow to @max bytes. Allocates nothing. */
void buf_init(struct buf *b, size_t max);

/** Free the storage; the buffer is empty again (same cap). NULL-safe. */
void buf_free(struct buf *b);

/** Keep the storage, drop the contents. */
void buf_reset(struct buf *b);

/**
 * Append @n bytes. Returns 0, -E2BIG past the cap or -ENOMEM; on failure
 * the buffer is unaltered.
 */
int buf_append(struct buf *b, const void *p, size_t n);

/** Append a NUL-terminated string. Same returns as buf_append. */
int buf_puts(struct buf *b, const char *s);

/** Append formatted text. Same returns as buf_append. */
int buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/**
 * Hand the storage to the caller (who frees it with free()) and leave the
 * buffer empty. Returns an empty malloc'd string when nothing was appended,
 * NULL only on -ENOMEM.
 */
char *buf_take(struct buf *b, size_t *len);

#endif
