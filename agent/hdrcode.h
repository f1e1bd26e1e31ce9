/*
 * hdrcode: CloudEvents HTTP binding header value coding (section 3.1.3.2):
 * on the way in, percent-decode and require valid UTF-8; on the way out,
 * percent-encode space, '"', '%' and every byte outside printable ASCII.
 * Plus base64 for data_base64. Pure module.
 */
#ifndef FERRY_HDRCODE_H
#define FERRY_HDRCODE_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/**
 * Percent-decode @len bytes of @in into a new NUL-terminated string.
 * Returns 0 and sets *@out (caller frees), -EINVAL for a malformed escape,
 * -EILSEQ when the decoded bytes are not valid UTF-8 (or contain NUL),
 * -ENOMEM.
 */
int hdr_decode(const char *in, size_t len, char **out);

/** Percent-encode @in for a header value, appending to @out. 0 or -E2BIG/-ENOMEM. */
int hdr_encode(const char *in, size_t len, struct buf *out);

/** Strict UTF-8 check (no overlongs, no surrogates, <= U+10FFFF). */
bool utf8_valid(const char *s, size_t len);

/** Standard base64 (RFC 4648 with padding), appended to @out. */
int base64_encode(const void *in, size_t len, struct buf *out);

/** Decode standard base64 (padding required, no whitespace) into @out. 0 or -EINVAL. */
int base64_decode(const char *in, size_t len, struct buf *out);

/**
 * True when @in is what base64_decode() accepts; lets validation check
 * data_base64 without decoding (and allocating) it.
 */
bool base64_valid(const char *in, size_t len);

#endif
