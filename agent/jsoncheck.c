/*
 * jsoncheck: does jansson accept this JSON text? (see jsoncheck.h)
 *
 * DESIGN
 * Why: jansson allocates a node per value, and parsing the whole ~1 KB
 * structured body was the largest CPU cost of ingest. Validation needs no
 * tree, so this walks the bytes once, keeps a small fixed stack and never
 * allocates; ingest then parses only the part it needs.
 *
 * Exactness: the answer must match jansson 2.14 (load.c, utf.c,
 * strconv.c), not RFC 8259, because jansson decides what Ferry stores.
 * The rules copied from it, each pinned by tests/unit/test_jsoncheck.c:
 *   - whitespace is space, \t, \n, \r; any value may be the top level;
 *   - strings: no byte < 0x20, UTF-8 as utf.c checks it (no overlong
 *     forms, no encoded surrogates, nothing above U+10FFFF), escapes
 *     \" \\ \/ \b \f \n \r \t \uXXXX, surrogates only as a valid pair,
 *     no \u0000 (JSON_ALLOW_NUL is not set);
 *   - numbers: the JSON grammar; an integer (no '.', 'e', 'E') must fit a
 *     long long (strtoll ERANGE is "too big integer"); a real must not
 *     round to +-HUGE_VAL (underflow to 0 is fine). Instead of strtod,
 *     which would depend on the locale, the magnitude is read from the
 *     digit count and the exponent; only a value of 1e308 up to 1e309 is
 *     compared digit by digit with 2^1024 - 2^970, the smallest decimal
 *     that rounds to infinity;
 *   - REJECT_DUPLICATES in every object, nested ones too;
 *   - a NUL byte outside a string is an invalid token, except right after
 *     a number or literal, where jansson's one-byte look-ahead drops it
 *     (its unget cannot push back a NUL): that one gives -EAGAIN.
 *
 * Cost bounds: duplicate keys are found by comparing each key with the
 * earlier keys of its object, which is quadratic, so only the first
 * JSONCHECK_MAX_KEYS keys of an object are compared (O(k^2) on a small k);
 * past that, or for a key with an escape (jansson compares the decoded
 * key), the answer can only be -EINVAL (a syntax error found later) or
 * -EAGAIN. Nesting past JSONCHECK_MAX_DEPTH gives -EAGAIN at once.
 *
 * Speed: inside strings, 8 bytes at a time are tested for '"', '\\', a
 * control byte or a non-ASCII byte (SWAR on a uint64_t), so long ASCII
 * strings cost about a cycle per byte.
 */
#include "jsoncheck.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* A key of an open object: its raw bytes between the quotes. */
struct key {
    uint32_t off;
    uint32_t len;
};

enum { IN_ARRAY = 0, IN_OBJECT = 1 };

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Bytes a string can hold as they are: 0x20-0x7f except '"' and '\\'. */
static const unsigned char plain[256] = {
    /* 0x00 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 0x10 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 0x20 */ 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* 0x30 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* 0x40 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* 0x50 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    /* 0x60 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* 0x70 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* 0x80-0xff: 0 */
};

/* The smallest positive decimal that strtod rounds to infinity,
 * 2^1024 - 2^970 (the midpoint above DBL_MAX; ties go to even, i.e. up),
 * as significant digits: the value is 0.<digits> * 10^309. */
static const char dbl_overflow[] =
    "17976931348623158079372897140530341507993413271003782693617377898044"
    "49682927647509466490179775872070963302864166928879109465555478519404"
    "02630657488671505820681908902000708383676273854845817711531764475730"
    "27006985557136695962284291481986083493647529271907416844436551070434"
    "2711559699508093042880177904174497792";

static bool is_digit(unsigned char c)
{
    return (unsigned)(c - '0') < 10u;
}

/* True when one of the 8 bytes of @v is '"', '\\', below 0x20 or above
 * 0x7f. Exact: with no byte above 0x7f, a borrow in the subtractions
 * starts only at a byte that matches. */
static bool special8(uint64_t v)
{
    uint64_t q = v ^ (ONES * '"');
    uint64_t b = v ^ (ONES * '\\');
    return ((v - ONES * 0x20) | (q - ONES) | (b - ONES) | v) & HIGHS;
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

static int hexval(unsigned char c)
{
    if ((unsigned)(c - '0') < 10u)
        return c - '0';
    c |= 0x20;
    if ((unsigned)(c - 'a') < 6u)
        return c - 'a' + 10;
    return -1;
}

/* The 4 hex digits at @p as a code unit, or -1. */
static long hex4(const char *p, const char *end)
{
    if (end - p < 4)
        return -1;
    int a = hexval((unsigned char)p[0]), b = hexval((unsigned char)p[1]);
    int c = hexval((unsigned char)p[2]), d = hexval((unsigned char)p[3]);
    if ((a | b | c | d) < 0)
        return -1;
    return (long)a << 12 | b << 8 | c << 4 | d;
}

/* @p just after a backslash: the end of the escape, or NULL. */
static const char *scan_escape(const char *p, const char *end)
{
    if (p == end)
        return NULL;
    switch (*p) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            return p + 1;
        case 'u':
            break;
        default:
            return NULL;
    }
    long cp = hex4(p + 1, end);
    p += 5;
    if (cp <= 0 || (cp >= 0xDC00 && cp <= 0xDFFF))
        return NULL; /* bad hex, \u0000, or a lone low surrogate */
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (end - p < 6 || p[0] != '\\' || p[1] != 'u')
            return NULL;
        long lo = hex4(p + 2, end);
        if (lo < 0xDC00 || lo > 0xDFFF)
            return NULL;
        p += 6;
    }
    return p;
}

/* @p at a byte >= 0x80: past one well-formed UTF-8 sequence, or NULL.
 * The ranges are utf.c's (RFC 3629 table 3-7). */
static const char *scan_utf8(const char *p, const char *end)
{
    const unsigned char *u = (const unsigned char *)p;
    size_t left = (size_t)(end - p);
    unsigned char lo = 0x80, hi = 0xBF;
    if (u[0] < 0xC2 || u[0] > 0xF4)
        return NULL;
    if (u[0] < 0xE0) {
        if (left < 2 || u[1] < 0x80 || u[1] > 0xBF)
            return NULL;
        return p + 2;
    }
    if (u[0] < 0xF0) {
        if (u[0] == 0xE0)
            lo = 0xA0; /* overlong */
        else if (u[0] == 0xED)
            hi = 0x9F; /* UTF-16 surrogates */
        if (left < 3 || u[1] < lo || u[1] > hi || u[2] < 0x80 || u[2] > 0xBF)
            return NULL;
        return p + 3;
    }
    if (u[0] == 0xF0)
        lo = 0x90; /* overlong */
    else if (u[0] == 0xF4)
        hi = 0x8F; /* above U+10FFFF */
    if (left < 4 || u[1] < lo || u[1] > hi || u[2] < 0x80 || u[2] > 0xBF ||
        u[3] < 0x80 || u[3] > 0xBF)
        return NULL;
    return p + 4;
}

/* @p just after the opening quote: past the closing quote, or NULL when
 * the string is invalid. Sets *@escaped when it holds a backslash. */
static const char *scan_string(const char *p, const char *end, bool *escaped)
{
    for (;;) {
        while (end - p >= 8) {
            uint64_t v;
            memcpy(&v, p, sizeof(v));
            if (special8(v))
                break;
            p += 8;
        }
        while (p < end && plain[(unsigned char)*p])
            p++;
        if (p == end)
            return NULL;
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            return p + 1;
        if (c == '\\') {
            *escaped = true;
            p = scan_escape(p + 1, end);
        } else if (c < 0x20) {
            return NULL;
        } else {
            p = scan_utf8(p, end);
        }
        if (!p)
            return NULL;
    }
}

/* A real of magnitude 0.<digits from @d to @mend, '.' skipped> * 10^309:
 * 0 when it stays finite, -EINVAL when it rounds to infinity. */
static int compare_overflow(const char *d, const char *mend)
{
    const char *t = dbl_overflow;
    for (; d < mend; d++) {
        if (*d == '.')
            continue;
        if (!*t || *d != *t)
            return !*t || *d > *t ? -EINVAL : 0;
        t++;
    }
    return *t ? 0 : -EINVAL; /* dbl_overflow ends in a non-zero digit */
}

/* Cap on the exponent we accumulate: far above any digit count (n is at
 * most UINT32_MAX), so capping does not change the verdict. */
#define EXP_CAP 1000000000000000LL

/*
 * *@pp at '-' or a digit: moves *@pp past the number. 0 when jansson
 * accepts it, -EINVAL when not (grammar, long long overflow, real
 * overflow), -EAGAIN when a NUL byte follows (see the top).
 */
static int scan_number(const char **pp, const char *end)
{
    const char *p = *pp;
    bool neg = *p == '-';
    if (neg)
        p++;
    const char *digits = p;
    if (p == end)
        return -EINVAL;
    if (*p == '0') {
        p++;
        if (p < end && is_digit((unsigned char)*p))
            return -EINVAL;
    } else if (is_digit((unsigned char)*p)) {
        do
            p++;
        while (p < end && is_digit((unsigned char)*p));
    } else {
        return -EINVAL;
    }
    size_t ndig = (size_t)(p - digits);
    int rc = 0;

    if (p == end || (*p != '.' && *p != 'e' && *p != 'E')) {
        /* An integer: strtoll's range. */
        if (ndig > 19)
            rc = -EINVAL;
        else if (ndig == 19)
            rc = memcmp(digits,
                        neg ? "9223372036854775808" : "9223372036854775807",
                        19) > 0
                     ? -EINVAL
                     : 0;
        goto out;
    }

    const char *frac = NULL, *mend = p;
    if (*p == '.') {
        p++;
        frac = p;
        if (p == end || !is_digit((unsigned char)*p))
            return -EINVAL;
        do
            p++;
        while (p < end && is_digit((unsigned char)*p));
        mend = p;
    }
    long long ex = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        bool eneg = false;
        if (p < end && (*p == '+' || *p == '-')) {
            eneg = *p == '-';
            p++;
        }
        if (p == end || !is_digit((unsigned char)*p))
            return -EINVAL;
        do {
            if (ex < EXP_CAP)
                ex = ex * 10 + (*p - '0');
            p++;
        } while (p < end && is_digit((unsigned char)*p));
        if (eneg)
            ex = -ex;
    }

    /* The value is 0.<significant digits> * 10^(e10 + ex). */
    const char *d = digits;
    long long e10 = (long long)ndig;
    if (*digits == '0') {
        if (!frac)
            goto out; /* zero */
        for (d = frac; d < mend && *d == '0'; d++)
            ;
        if (d == mend)
            goto out; /* zero */
        e10 = -(long long)(d - frac);
    }
    long long mag = e10 + ex;
    if (mag > 309)
        rc = -EINVAL; /* >= 1e309 */
    else if (mag == 309)
        rc = compare_overflow(d, mend);

out:
    *pp = p;
    if (rc == 0 && p < end && *p == '\0')
        return -EAGAIN;
    return rc;
}

/* @p at a 't', 'f' or 'n': past the literal, or NULL. */
static const char *scan_literal(const char *p, const char *end)
{
    const char *lit = *p == 't' ? "true" : *p == 'f' ? "false" : "null";
    size_t len = strlen(lit);
    if ((size_t)(end - p) < len || memcmp(p, lit, len) != 0)
        return NULL;
    return p + len;
}

int jsoncheck(const char *s, size_t n)
{
    if (n == 0)
        return -EINVAL;
    if (n > UINT32_MAX)
        return -EAGAIN;

    const char *p = s, *end = s + n;
    unsigned char kind[JSONCHECK_MAX_DEPTH];
    uint16_t base[JSONCHECK_MAX_DEPTH]; /* first key of each open object */
    struct key keys[JSONCHECK_KEY_SLOTS];
    unsigned depth = 0, nkeys = 0;
    bool unsure = false; /* valid so far would be -EAGAIN, not 0 */
    int rc;

value:
    p = skip_ws(p, end);
    if (p == end)
        return -EINVAL;
    switch (*p) {
        case '{':
        case '[':
            if (depth == JSONCHECK_MAX_DEPTH)
                return -EAGAIN;
            kind[depth] = *p == '{' ? IN_OBJECT : IN_ARRAY;
            base[depth] = (uint16_t)nkeys;
            depth++;
            p = skip_ws(p + 1, end);
            if (p < end && *p == (kind[depth - 1] == IN_OBJECT ? '}' : ']')) {
                p++;
                depth--;
                goto next;
            }
            if (kind[depth - 1] == IN_OBJECT)
                goto key;
            goto value;
        case '"': {
            bool escaped = false;
            p = scan_string(p + 1, end, &escaped);
            if (!p)
                return -EINVAL;
            goto next;
        }
        case 't':
        case 'f':
        case 'n':
            p = scan_literal(p, end);
            if (!p)
                return -EINVAL;
            if (p < end && *p == '\0')
                return -EAGAIN;
            goto next;
        default:
            if (*p != '-' && !is_digit((unsigned char)*p))
                return -EINVAL;
            rc = scan_number(&p, end);
            if (rc)
                return rc;
            goto next;
    }

key:
    /* @p at what must be a key's opening quote. */
    if (p == end || *p != '"')
        return -EINVAL;
    {
        bool escaped = false;
        const char *k = p + 1;
        p = scan_string(k, end, &escaped);
        if (!p)
            return -EINVAL;
        uint32_t klen = (uint32_t)(p - 1 - k);
        unsigned first = base[depth - 1];
        if (escaped)
            unsure = true;
        if (nkeys - first < JSONCHECK_MAX_KEYS && nkeys < JSONCHECK_KEY_SLOTS) {
            /* Raw-equal keys decode equally: a duplicate for sure. */
            for (unsigned i = first; i < nkeys; i++)
                if (keys[i].len == klen &&
                    memcmp(s + keys[i].off, k, klen) == 0)
                    return -EINVAL;
            keys[nkeys].off = (uint32_t)(k - s);
            keys[nkeys].len = klen;
            nkeys++;
        } else {
            unsure = true;
        }
    }
    p = skip_ws(p, end);
    if (p == end || *p != ':')
        return -EINVAL;
    p++;
    goto value;

next:
    /* After a value: a separator, the end of a container, or the end. */
    p = skip_ws(p, end);
    if (depth == 0) {
        if (p != end)
            return -EINVAL;
        return unsure ? -EAGAIN : 0;
    }
    if (p == end)
        return -EINVAL;
    if (*p == ',') {
        p = skip_ws(p + 1, end);
        if (kind[depth - 1] == IN_OBJECT)
            goto key;
        goto value;
    }
    if (*p == (kind[depth - 1] == IN_OBJECT ? '}' : ']')) {
        p++;
        depth--;
        if (kind[depth] == IN_OBJECT)
            nkeys = base[depth];
        goto next;
    }
    return -EINVAL;
}
