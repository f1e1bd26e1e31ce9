/*
 * hdrcode: the byte-level codings the CloudEvents HTTP binding needs
 * (see hdrcode.h). Header values are percent-encoded on the way out and
 * percent-decoded plus UTF-8 checked on the way in (binding 3.1.3.2);
 * data_base64 uses standard base64 with padding (RFC 4648 section 4).
 *
 * Encoders append to a capped struct buf in runs rather than byte by byte,
 * and leave the buffer as it was when an append fails, so a caller can
 * reuse the same scratch buffer across calls. Pure module.
 */
#include "hdrcode.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char hex_digits[] = "0123456789ABCDEF";
static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Undo a partial append: the buffer contract is "unaltered on failure". */
static void truncate_to(struct buf *b, size_t len)
{
    b->len = len;
    if (b->data)
        b->data[len] = '\0';
}

/* ---- UTF-8 ------------------------------------------------------------ */

/* Length of the sequence led by @c (0 when @c cannot lead one), and the
 * payload bits of the lead byte. */
static size_t utf8_lead(unsigned char c, uint32_t *cp)
{
    if (c >= 0xC2 && c <= 0xDF) {
        *cp = c & 0x1F;
        return 2;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        *cp = c & 0x0F;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        *cp = c & 0x07;
        return 4;
    }
    return 0;
}

bool utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *end = p + len;

    while (p < end) {
        if (*p < 0x80) {
            p++;
            continue;
        }
        uint32_t cp;
        size_t n = utf8_lead(*p, &cp);
        if (n == 0 || (size_t)(end - p) < n)
            return false;
        for (size_t i = 1; i < n; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        /* C0/C1 leads are excluded above; E0 and F0 can still be overlong. */
        if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000))
            return false;
        if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return false;
        p += n;
    }
    return true;
}

/* ---- percent coding --------------------------------------------------- */

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int hdr_decode(const char *in, size_t len, char **out)
{
    char *s = malloc(len + 1);
    if (!s)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] != '%') {
            s[n++] = in[i];
            continue;
        }
        int hi = len - i >= 3 ? hex_value((unsigned char)in[i + 1]) : -1;
        int lo = hi >= 0 ? hex_value((unsigned char)in[i + 2]) : -1;
        if (lo < 0) {
            free(s);
            return -EINVAL;
        }
        s[n++] = (char)((hi << 4) | lo);
        i += 2;
    }
    s[n] = '\0';
    /* A NUL would silently cut the value short for every C consumer. */
    if (memchr(s, '\0', n) || !utf8_valid(s, n)) {
        free(s);
        return -EILSEQ;
    }
    *out = s;
    return 0;
}

static bool must_encode(unsigned char c)
{
    return c <= 0x20 || c >= 0x7F || c == '"' || c == '%';
}

int hdr_encode(const char *in, size_t len, struct buf *out)
{
    size_t start = out->len;
    size_t run = 0; /* first byte not yet appended */
    int rc = 0;

    for (size_t i = 0; i < len && rc == 0; i++) {
        unsigned char c = (unsigned char)in[i];
        if (!must_encode(c))
            continue;
        char esc[3] = {'%', hex_digits[c >> 4], hex_digits[c & 0x0F]};
        rc = buf_append(out, in + run, i - run);
        if (rc == 0)
            rc = buf_append(out, esc, sizeof(esc));
        run = i + 1;
    }
    if (rc == 0)
        rc = buf_append(out, in + run, len - run);
    if (rc)
        truncate_to(out, start);
    return rc;
}

/* ---- base64 ----------------------------------------------------------- */

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int base64_encode(const void *in, size_t len, struct buf *out)
{
    const unsigned char *p = in;
    size_t start = out->len;
    char chunk[256]; /* 64 quads per append keeps appends few and cheap */
    size_t n = 0;
    int rc = 0;

    for (size_t i = 0; i < len && rc == 0; i += 3) {
        size_t left = len - i;
        uint32_t v = (uint32_t)p[i] << 16;
        if (left > 1)
            v |= (uint32_t)p[i + 1] << 8;
        if (left > 2)
            v |= p[i + 2];
        chunk[n++] = b64_alphabet[(v >> 18) & 0x3F];
        chunk[n++] = b64_alphabet[(v >> 12) & 0x3F];
        chunk[n++] = left > 1 ? b64_alphabet[(v >> 6) & 0x3F] : '=';
        chunk[n++] = left > 2 ? b64_alphabet[v & 0x3F] : '=';
        if (n == sizeof(chunk)) {
            rc = buf_append(out, chunk, n);
            n = 0;
        }
    }
    if (rc == 0)
        rc = buf_append(out, chunk, n);
    if (rc)
        truncate_to(out, start);
    return rc;
}

bool base64_valid(const char *in, size_t len)
{
    if (len % 4 != 0)
        return false;
    size_t pad = 0;
    if (len > 0 && in[len - 1] == '=')
        pad = in[len - 2] == '=' ? 2 : 1;
    for (size_t i = 0; i < len - pad; i++)
        if (b64_value((unsigned char)in[i]) < 0)
            return false;
    return true;
}

int base64_decode(const char *in, size_t len, struct buf *out)
{
    if (!base64_valid(in, len))
        return -EINVAL;
    size_t start = out->len;
    unsigned char chunk[192];
    size_t n = 0;
    int rc = 0;

    for (size_t i = 0; i < len && rc == 0; i += 4) {
        uint32_t v = 0;
        size_t got = 0;
        for (size_t k = 0; k < 4; k++) {
            int d = in[i + k] == '=' ? 0 : b64_value((unsigned char)in[i + k]);
            got += in[i + k] != '=';
            v = (v << 6) | (uint32_t)d;
        }
        chunk[n++] = (unsigned char)(v >> 16);
        if (got > 2)
            chunk[n++] = (unsigned char)(v >> 8);
        if (got > 3)
            chunk[n++] = (unsigned char)v;
        if (n + 3 > sizeof(chunk)) {
            rc = buf_append(out, chunk, n);
            n = 0;
        }
    }
    if (rc == 0)
        rc = buf_append(out, chunk, n);
    if (rc)
        truncate_to(out, start);
    return rc;
}
