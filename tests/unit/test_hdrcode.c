/*
 * Unit tests for hdrcode: HTTP binding percent coding of header values,
 * strict UTF-8 checking and RFC 4648 base64.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "hdrcode.h"

#define BUF_MAX (1 << 20)

static void assert_encodes(const char *in, size_t len, const char *want)
{
    struct buf b;
    buf_init(&b, BUF_MAX);
    assert_int_equal(hdr_encode(in, len, &b), 0);
    assert_non_null(b.data);
    assert_string_equal(b.data, want);
    buf_free(&b);
}

static void assert_decodes(const char *in, const char *want)
{
    char *out = NULL;
    assert_int_equal(hdr_decode(in, strlen(in), &out), 0);
    assert_string_equal(out, want);
    free(out);
}

static void assert_decode_fails(const char *in, size_t len, int want)
{
    char *out = NULL;
    assert_int_equal(hdr_decode(in, len, &out), want);
    assert_null(out);
}

/* ---- percent encoding -------------------------------------------------- */

static void test_hdrcode_encodes_space_quote_percent(void **state)
{
    (void)state;
    assert_encodes("a b\"c%d", 7, "a%20b%22c%25d");
}

static void test_hdrcode_encodes_utf8_bytewise(void **state)
{
    (void)state;
    assert_encodes("\xE2\x82\xAC", 3, "%E2%82%AC");
    assert_encodes("caf\xC3\xA9!", 6, "caf%C3%A9!");
}

static void test_hdrcode_encodes_controls_and_del(void **state)
{
    (void)state;
    assert_encodes("\x01\t\x7F~!", 5, "%01%09%7F~!");
}

static void test_hdrcode_leaves_other_printable_ascii(void **state)
{
    (void)state;
    char in[128];
    size_t n = 0;
    for (int c = 0x21; c <= 0x7E; c++)
        if (c != '"' && c != '%')
            in[n++] = (char)c;
    in[n] = '\0';
    assert_encodes(in, n, in);
}

static void test_hdrcode_encode_empty_appends_nothing(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 16);
    assert_int_equal(hdr_encode("", 0, &b), 0);
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

static void test_hdrcode_encode_over_cap_leaves_buffer(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 8);
    assert_int_equal(buf_puts(&b, "ab"), 0);
    /* "ab" + "%E2%82%AC" is 11 bytes, past the cap of 8. */
    assert_int_equal(hdr_encode("\xE2\x82\xAC", 3, &b), -E2BIG);
    assert_int_equal(b.len, 2);
    assert_string_equal(b.data, "ab");
    buf_free(&b);
}

/* ---- percent decoding -------------------------------------------------- */

static void test_hdrcode_decodes_upper_and_lower_hex(void **state)
{
    (void)state;
    assert_decodes("%E2%82%AC", "\xE2\x82\xAC");
    assert_decodes("%e2%82%ac", "\xE2\x82\xAC");
    assert_decodes("a%20b%22c%25d", "a b\"c%d");
}

static void test_hdrcode_decodes_plain_text_unchanged(void **state)
{
    (void)state;
    assert_decodes("hello-world/1", "hello-world/1");
    assert_decodes("", "");
}

static void test_hdrcode_rejects_malformed_escape(void **state)
{
    (void)state;
    assert_decode_fails("%", 1, -EINVAL);
    assert_decode_fails("%4", 2, -EINVAL);
    assert_decode_fails("abc%2", 5, -EINVAL);
    assert_decode_fails("%G1", 3, -EINVAL);
    assert_decode_fails("%1G", 3, -EINVAL);
    assert_decode_fails("%%41", 4, -EINVAL);
    /* The escape must not read past @len even if more bytes follow. */
    assert_decode_fails("%41", 2, -EINVAL);
}

static void test_hdrcode_rejects_invalid_utf8(void **state)
{
    (void)state;
    assert_decode_fails("%FF", 3, -EILSEQ);
    assert_decode_fails("%C3%28", 6, -EILSEQ);
    assert_decode_fails("%E2%82", 6, -EILSEQ);
    assert_decode_fails("%C0%AF", 6, -EILSEQ);
    assert_decode_fails("%ED%A0%80", 9, -EILSEQ);
    assert_decode_fails("raw\xFF", 4, -EILSEQ);
}

static void test_hdrcode_rejects_nul(void **state)
{
    (void)state;
    assert_decode_fails("a%00b", 5, -EILSEQ);
    assert_decode_fails("a\0b", 3, -EILSEQ);
}

/* ---- UTF-8 ------------------------------------------------------------- */

static void test_hdrcode_utf8_accepts_valid(void **state)
{
    (void)state;
    static const char *const ok[] = {
        "",
        "plain ascii",
        "\xC2\x80",         /* U+0080 */
        "\xDF\xBF",         /* U+07FF */
        "\xE0\xA0\x80",     /* U+0800 */
        "\xE2\x82\xAC",     /* euro */
        "\xED\x9F\xBF",     /* U+D7FF, just below the surrogates */
        "\xEE\x80\x80",     /* U+E000, just above them */
        "\xEF\xBF\xBF",     /* U+FFFF */
        "\xF0\x90\x80\x80", /* U+10000 */
        "\xF4\x8F\xBF\xBF", /* U+10FFFF */
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        assert_true(utf8_valid(ok[i], strlen(ok[i])));
}

static void test_hdrcode_utf8_rejects_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "\x80",             /* stray continuation */
        "\xC0\x80",         /* overlong NUL */
        "\xC1\xBF",         /* overlong */
        "\xE0\x80\x80",     /* overlong 3-byte */
        "\xE0\x9F\xBF",     /* overlong 3-byte */
        "\xF0\x80\x80\x80", /* overlong 4-byte */
        "\xF0\x8F\xBF\xBF", /* overlong 4-byte */
        "\xED\xA0\x80",     /* U+D800 surrogate */
        "\xED\xBF\xBF",     /* U+DFFF surrogate */
        "\xF4\x90\x80\x80", /* U+110000 */
        "\xF5\x80\x80\x80", /* invalid lead */
        "\xFF",
        "\xE2\x82",         /* truncated */
        "\xC3(",            /* bad continuation */
        "a\xF0\x9F\x98",    /* truncated at the end */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(utf8_valid(bad[i], strlen(bad[i])));
}

/* ---- round trip --------------------------------------------------------- */

static uint32_t next_rand(uint32_t *s)
{
    /* xorshift32: fixed seed, so the "random" input is reproducible. */
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Append code point @cp (never NUL or a surrogate) as UTF-8. */
static size_t put_utf8(char *p, uint32_t cp)
{
    if (cp < 0x80) {
        p[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        p[0] = (char)(0xC0 | (cp >> 6));
        p[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        p[0] = (char)(0xE0 | (cp >> 12));
        p[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        p[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    p[0] = (char)(0xF0 | (cp >> 18));
    p[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    p[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    p[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static uint32_t random_code_point(uint32_t *seed)
{
    static const uint32_t limits[] = {0x80, 0x800, 0x10000, 0x110000};
    for (;;) {
        uint32_t cp = next_rand(seed) % limits[next_rand(seed) % 4];
        if (cp != 0 && (cp < 0xD800 || cp > 0xDFFF))
            return cp;
    }
}

/* An encoded value may hold only visible ASCII other than '"', and every
 * '%' must start an uppercase escape. */
static void assert_header_safe(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        assert_true(c > 0x20 && c < 0x7F && c != '"');
        if (c == '%') {
            assert_true(i + 2 < len);
            assert_non_null(strchr("0123456789ABCDEF", s[i + 1]));
            assert_non_null(strchr("0123456789ABCDEF", s[i + 2]));
        }
    }
}

static void test_hdrcode_round_trips_random_utf8(void **state)
{
    (void)state;
    uint32_t seed = 0x2545F491u;
    struct buf enc;
    buf_init(&enc, BUF_MAX);
    for (int round = 0; round < 500; round++) {
        char in[512];
        size_t n = 0;
        size_t chars = next_rand(&seed) % 100;
        for (size_t k = 0; k < chars; k++)
            n += put_utf8(in + n, random_code_point(&seed));
        assert_true(utf8_valid(in, n));

        buf_reset(&enc);
        assert_int_equal(hdr_encode(in, n, &enc), 0);
        assert_header_safe(enc.data ? enc.data : "", enc.len);
        char *out = NULL;
        assert_int_equal(hdr_decode(enc.data ? enc.data : "", enc.len, &out),
                         0);
        assert_int_equal(strlen(out), n);
        assert_memory_equal(out, in, n);
        free(out);
    }
    buf_free(&enc);
}

/* ---- base64 ------------------------------------------------------------ */

/* RFC 4648 section 10 test vectors. */
static const char *const rfc4648[][2] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

static void test_hdrcode_base64_encodes_rfc4648_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rfc4648) / sizeof(rfc4648[0]); i++) {
        struct buf b;
        buf_init(&b, 64);
        assert_int_equal(
            base64_encode(rfc4648[i][0], strlen(rfc4648[i][0]), &b), 0);
        assert_int_equal(b.len, strlen(rfc4648[i][1]));
        assert_memory_equal(b.data ? b.data : "", rfc4648[i][1], b.len);
        buf_free(&b);
    }
}

static void test_hdrcode_base64_decodes_rfc4648_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rfc4648) / sizeof(rfc4648[0]); i++) {
        struct buf b;
        buf_init(&b, 64);
        assert_true(base64_valid(rfc4648[i][1], strlen(rfc4648[i][1])));
        assert_int_equal(
            base64_decode(rfc4648[i][1], strlen(rfc4648[i][1]), &b), 0);
        assert_int_equal(b.len, strlen(rfc4648[i][0]));
        assert_memory_equal(b.data ? b.data : "", rfc4648[i][0], b.len);
        buf_free(&b);
    }
}

static void test_hdrcode_base64_rejects_bad_input(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "Zg",       /* missing padding */
        "Zg=",      /* short padding */
        "Z===",     /* too much padding */
        "====",
        "=Zg=",     /* padding first */
        "Zg==Zg==", /* padding in the middle */
        "Zm=8",
        "Zm9v!A==", /* not in the alphabet */
        "Zm 9",     /* whitespace */
        "Zm9v\n",
        "Zm-_",     /* base64url, not standard */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct buf b;
        buf_init(&b, 64);
        assert_false(base64_valid(bad[i], strlen(bad[i])));
        assert_int_equal(base64_decode(bad[i], strlen(bad[i]), &b), -EINVAL);
        assert_int_equal(b.len, 0);
        buf_free(&b);
    }
}

static void test_hdrcode_base64_round_trips_all_bytes(void **state)
{
    (void)state;
    /* 1000 bytes spans several internal chunks and every byte value. */
    unsigned char in[1000];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (unsigned char)(i * 7 + (i >> 8));
    for (size_t len = 0; len <= sizeof(in); len += len < 10 ? 1 : 97) {
        struct buf enc, dec;
        buf_init(&enc, BUF_MAX);
        buf_init(&dec, BUF_MAX);
        assert_int_equal(base64_encode(in, len, &enc), 0);
        assert_int_equal(enc.len, (len + 2) / 3 * 4);
        assert_int_equal(
            base64_decode(enc.data ? enc.data : "", enc.len, &dec), 0);
        assert_int_equal(dec.len, len);
        if (len)
            assert_memory_equal(dec.data, in, len);
        buf_free(&enc);
        buf_free(&dec);
    }
}

static void test_hdrcode_base64_decode_appends(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 64);
    assert_int_equal(buf_puts(&b, "x:"), 0);
    assert_int_equal(base64_decode("Zm9vYmFy", 8, &b), 0);
    assert_string_equal(b.data, "x:foobar");
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hdrcode_encodes_space_quote_percent),
        cmocka_unit_test(test_hdrcode_encodes_utf8_bytewise),
        cmocka_unit_test(test_hdrcode_encodes_controls_and_del),
        cmocka_unit_test(test_hdrcode_leaves_other_printable_ascii),
        cmocka_unit_test(test_hdrcode_encode_empty_appends_nothing),
        cmocka_unit_test(test_hdrcode_encode_over_cap_leaves_buffer),
        cmocka_unit_test(test_hdrcode_decodes_upper_and_lower_hex),
        cmocka_unit_test(test_hdrcode_decodes_plain_text_unchanged),
        cmocka_unit_test(test_hdrcode_rejects_malformed_escape),
        cmocka_unit_test(test_hdrcode_rejects_invalid_utf8),
        cmocka_unit_test(test_hdrcode_rejects_nul),
        cmocka_unit_test(test_hdrcode_utf8_accepts_valid),
        cmocka_unit_test(test_hdrcode_utf8_rejects_invalid),
        cmocka_unit_test(test_hdrcode_round_trips_random_utf8),
        cmocka_unit_test(test_hdrcode_base64_encodes_rfc4648_vectors),
        cmocka_unit_test(test_hdrcode_base64_decodes_rfc4648_vectors),
        cmocka_unit_test(test_hdrcode_base64_rejects_bad_input),
        cmocka_unit_test(test_hdrcode_base64_round_trips_all_bytes),
        cmocka_unit_test(test_hdrcode_base64_decode_appends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
