/*
 * fuzz_binary_headers: one binary-mode request, as ingest hands it to
 * event_from_binary(): the ce- headers (percent-decoded and UTF-8 checked
 * by hdrcode.c), the Content-Type and the body. Input layout, one header
 * per line as on the wire:
 *
 *     Content-Type value (an empty line: no Content-Type)
 *     name: value         (at most 64 lines, ingest's MAX_CE_HEADERS)
 *     ...
 *     (an empty line)
 *     body bytes          (everything after it)
 *
 * Each header value also goes through the header coding on its own
 * (decode, encode, decode again) and the body through base64, the coding
 * data_base64 uses. An accepted event then goes through fuzz_check_event.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "fuzz.h"
#include "hdrcode.h"

#define MAX_CE_HEADERS 64 /* ingest.c: more is refused before parsing */
#define CODE_MAX ((size_t)1 << 24)

/* The next line of [*p, end) without its '\n'; *p moves past it. */
static const char *next_line(const char **p, const char *end, size_t *len)
{
    const char *start = *p;
    const char *nl = memchr(start, '\n', (size_t)(end - start));
    *len = (size_t)((nl ? nl : end) - start);
    *p = nl ? nl + 1 : end;
    return start;
}

/* Percent-decoding is the inverse of percent-encoding on what it accepts. */
static void check_header_coding(const char *v, size_t len)
{
    char *dec = NULL;
    int rc = hdr_decode(v, len, &dec);
    FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -EILSEQ,
               "hdr_decode returned %d", rc);
    if (rc)
        return;
    size_t n = strlen(dec);
    FUZZ_CHECK(utf8_valid(dec, n), "hdr_decode gave invalid UTF-8");
    struct buf enc;
    buf_init(&enc, CODE_MAX);
    FUZZ_CHECK(hdr_encode(dec, n, &enc) == 0, "hdr_encode failed");
    for (size_t i = 0; i < enc.len; i++)
        FUZZ_CHECK(enc.data[i] > 0x20 && enc.data[i] < 0x7F &&
                       enc.data[i] != '"',
                   "hdr_encode left byte 0x%02x", (unsigned char)enc.data[i]);
    char *again = NULL;
    rc = hdr_decode(enc.data ? enc.data : "", enc.len, &again);
    FUZZ_CHECK(rc == 0 && strcmp(again, dec) == 0,
               "decode(encode(x)) != x for a decoded header value");
    free(again);
    buf_free(&enc);
    free(dec);
}

/* base64: decode(encode(x)) == x; decoding succeeds iff base64_valid. */
static void check_base64(const char *body, size_t len)
{
    struct buf enc, dec;
    buf_init(&enc, CODE_MAX);
    buf_init(&dec, CODE_MAX);
    FUZZ_CHECK(base64_encode(body, len, &enc) == 0, "base64_encode failed");
    FUZZ_CHECK(base64_valid(enc.data ? enc.data : "", enc.len),
               "base64_encode output is not valid base64");
    FUZZ_CHECK(base64_decode(enc.data ? enc.data : "", enc.len, &dec) == 0 &&
                   dec.len == len && memcmp(dec.data ? dec.data : "", body, len) == 0,
               "base64 decode(encode(x)) != x");
    buf_reset(&dec);
    bool valid = base64_valid(body, len);
    int rc = base64_decode(body, len, &dec);
    FUZZ_CHECK(valid ? rc == 0 : rc == -EINVAL,
               "base64_decode returned %d for input base64_valid says is %s", rc,
               valid ? "valid" : "invalid");
    buf_free(&enc);
    buf_free(&dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    struct http_header headers[MAX_CE_HEADERS];
    size_t n = 0, len;

    /* Names and values are NUL-terminated copies, as libmicrohttpd gives
     * them; the body is an exact-size copy so over-reads show. */
    const char *line = next_line(&p, end, &len);
    char *content_type = len ? fuzz_strndup(line, len) : NULL;
    while (p < end && n < MAX_CE_HEADERS) {
        line = next_line(&p, end, &len);
        if (len == 0)
            break;
        const char *colon = memchr(line, ':', len);
        size_t name_len = colon ? (size_t)(colon - line) : len;
        const char *v = colon ? colon + 1 : line + len;
        while (v < line + len && (*v == ' ' || *v == '\t'))
            v++;
        size_t value_len = (size_t)(line + len - v);
        headers[n++] = (struct http_header){fuzz_strndup(line, name_len),
                                            name_len, fuzz_strndup(v, value_len),
                                            value_len};
    }
    size_t body_len = (size_t)(end - p);
    char *body = malloc(body_len ? body_len : 1);
    if (!body)
        abort();
    memcpy(body, p, body_len);

    for (size_t i = 0; i < n; i++)
        check_header_coding(headers[i].value, headers[i].value_len);
    check_base64(body, body_len);

    struct event ev;
    struct ce_error err;
    memset(&err, 0, sizeof(err));
    int rc = event_from_binary(headers, n, content_type, body, body_len, &ev,
                               &err);
    if (rc != 0) {
        fuzz_check_refusal(rc, &err);
        FUZZ_CHECK(!ev.obj && !ev.text, "refused event still owns memory");
    } else {
        FUZZ_CHECK(ev.format == EVENT_BINARY && ev.data_len == body_len,
                   "binary event of format %d, %zu data bytes", (int)ev.format,
                   ev.data_len);
        fuzz_check_event(&ev);
        event_free(&ev);
    }

    free(body);
    for (size_t i = 0; i < n; i++) {
        free((char *)(uintptr_t)headers[i].name);
        free((char *)(uintptr_t)headers[i].value);
    }
    free(content_type);
    return 0;
}
