/*
 * Unit tests for jsoncheck: every rule it copies from jansson 2.14. Each
 * table case is run through both jsoncheck and the real json_loadb (same
 * flags as ingest), so the tables themselves are checked against the
 * library: an accept case must be accepted by both (0), a reject case
 * refused by both (-EINVAL). The -EAGAIN corners assert only the contract
 * (never 0 for a text jansson refuses, never -EINVAL for one it accepts)
 * plus the answer the header documents.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "jsoncheck.h"

#define FLAGS (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY)

struct text {
    const char *s;
    size_t n;
};

/* A string literal with its length, so cases may hold NUL bytes. */
#define T(lit) {(lit), sizeof(lit) - 1}
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* @s for a failure message: printable ASCII as is, the rest as \xNN. */
static const char *show(const char *s, size_t n)
{
    static char out[512];
    size_t o = 0;
    for (size_t i = 0; i < n && o + 8 < sizeof(out); i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f)
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, sizeof(out) - o, "\\x%02x", c);
    }
    out[o] = '\0';
    return out;
}

/* jansson's verdict on @s: true when it accepts. */
static bool jansson_accepts(const char *s, size_t n, json_error_t *e)
{
    json_t *j = json_loadb(s, n, FLAGS, e);
    json_decref(j);
    return j != NULL;
}

/* Both jansson and jsoncheck accept (@accept) or refuse @s. */
static void expect_verdict(const char *s, size_t n, bool accept)
{
    json_error_t e;
    bool j = jansson_accepts(s, n, &e);
    int r = jsoncheck(s, n);
    if (j != accept || r != (accept ? 0 : -EINVAL))
        print_error("case '%s': jansson %s (%s), jsoncheck %d\n", show(s, n),
                    j ? "accepts" : "refuses", j ? "-" : e.text, r);
    assert_int_equal(j, accept);
    assert_int_equal(r, accept ? 0 : -EINVAL);
}

static void expect_table(const struct text *t, size_t count, bool accept)
{
    for (size_t i = 0; i < count; i++)
        expect_verdict(t[i].s, t[i].n, accept);
}

/* The contract alone: 0 only if jansson accepts, -EINVAL only if it
 * refuses. Returns jsoncheck's answer. */
static int expect_contract(const char *s, size_t n)
{
    json_error_t e;
    bool j = jansson_accepts(s, n, &e);
    int r = jsoncheck(s, n);
    if ((r == 0 && !j) || (r == -EINVAL && j) ||
        (r != 0 && r != -EINVAL && r != -EAGAIN))
        print_error("case '%s': jansson %s (%s), jsoncheck %d\n", show(s, n),
                    j ? "accepts" : "refuses", j ? "-" : e.text, r);
    assert_false(r == 0 && !j);
    assert_false(r == -EINVAL && j);
    assert_true(r == 0 || r == -EINVAL || r == -EAGAIN);
    return r;
}

static const char cloudevent[] =
    "{\"specversion\":\"1.0\",\"id\":\"w1-01-000000000001\","
    "\"source\":\"/bench/wrk\",\"type\":\"com.example.bench\","
    "\"datacontenttype\":\"application/json\",\"time\":\"2026-11-22T10:00:"
    "00Z\",\"traceparent\":\"00-0af7651916cd43dd8448eb211c80319c-"
    "b7ad6b7169203331-01\",\"data\":{\"seq\":\"000000000001\",\"n\":42,"
    "\"x\":-1.5,\"y\":1e-5,\"ok\":true,\"no\":false,\"nil\":null,"
    "\"list\":[1,2,[3,{\"a\":\"b\"}],{}],\"text\":\"caf\xc3\xa9 \xe2\x82\xac"
    " \xf0\x9f\x98\x80 line\\nquote\\\"back\\\\slash\\u00e9\\ud83d\\ude00\"}}";

static void test_jsoncheck_accepts_values(void **state)
{
    (void)state;
    static const struct text ok[] = {
        {cloudevent, sizeof(cloudevent) - 1},
        T("{}"), T("[]"), T("\"\""), T("0"), T("true"), T("false"),
        T("null"), T("[[]]"), T("{\"a\":{}}"), T("[{},[],\"\",0,null]"),
        T(" {\t\"a\" \n:\r 1 , \"b\" : [ 1 , 2 ] } "),
        T("\t\n\r 1 \t\n\r"), T("[true,false,null]"), T("{\"\":1}"),
        T("{\"a\":1,\"ab\":2,\"b\":3,\"ba\":4}"),
        T("{\"a\":{\"a\":1},\"b\":{\"a\":2}}"), T("[{\"a\":1},{\"a\":1}]"),
        T("{\"a\":[{\"a\":{\"a\":[]}}]}"),
    };
    expect_table(ok, N_OF(ok), true);
}

static void test_jsoncheck_refuses_syntax(void **state)
{
    (void)state;
    static const struct text bad[] = {
        T(""), T(" "), T("\t\n"), T("\xef\xbb\xbf{}"), T("\f1"), T("\v1"),
        T("1\f"), T("1 2"), T("[1 2]"), T("{}x"), T("{}{}"), T("[]]"),
        T("truex"), T("True"), T("nul"), T("tru"), T("nulll"), T("true1"),
        T("[1,]"), T("{\"a\":1,}"), T("[,1]"), T("{,}"), T("{\"a\"}"),
        T("{\"a\" 1}"), T("{\"a\":}"), T("{1:1}"), T("{'a':1}"),
        T("{a:1}"), T("['a']"), T("["), T("]"), T("{"), T("}"), T("[1"),
        T("{\"a\":1"), T("{\"a\""), T("{\"a\":"), T("\"abc"), T(":"),
        T(","), T("[1,,2]"), T("[1:2]"), T("{\"a\",1}"), T("{\"a\":1]"),
        T("[1}"), T("/* c */ 1"), T("1 // c"), T("\xc3\xa9"), T("[\xc3\xa9]"),
        T("{\"a\":1 \"b\":2}"), T("[\"a\" \"b\"]"),
    };
    expect_table(bad, N_OF(bad), false);
}

static void test_jsoncheck_numbers(void **state)
{
    (void)state;
    static const struct text ok[] = {
        T("0"), T("-0"), T("-0.0"), T("42"), T("-1"), T("-1.5"), T("1e-5"),
        T("1E+2"), T("1e-2"), T("1E2"), T("1e+0"), T("0.5"), T("0e0"),
        T("10.01e-01"), T("123456789012345678"), T("-123456789012345678"),
        T("1234567890123456789"), T("9223372036854775807"),
        T("-9223372036854775807"), T("-9223372036854775808"),
        T("[9223372036854775807,-9223372036854775808]"),
        T("1e0000000000000000000000000001"), T("1e308"), T("-1e308"),
        T("1.7976931348623157e308"), T("1.7976931348623158e308"),
        T("-1.7976931348623158e308"), T("0.17976931348623158e309"),
        T("17976931348623158e292"), T("1e-400"), T("-1e-400"), T("0e99999"),
        T("0.0000e99999"), T("1e-99999999999999999999999"),
        T("0.000001e314"), T("100000000000000000000000000000.0"),
        T("9223372036854775808.0"), T("99999999999999999999e0"),
        /* 2^1024 - 2^970 - 1: just below the rounding midpoint */
        T("17976931348623158079372897140530341507993413271003782693617377898"
          "04449682927647509466490179775872070963302864166928879109465555478"
          "51940402630657488671505820681908902000708383676273854845817711531"
          "76447573027006985557136695962284291481986083493647529271907416844"
          "4365510704342711559699508093042880177904174497791.999"),
        T("{\"n\":1e-5}"), T("[-0.0e-0]"),
    };
    static const struct text bad[] = {
        T("-"), T("01"), T("-01"), T("00"), T("1."), T(".5"), T("-.5"),
        T("1.e5"), T("1e"), T("1e+"), T("1e-"), T("1e+-1"), T("+1"),
        T("0x1"), T("- 1"), T("1.5.5"), T("1e5e5"), T("--1"), T("NaN"),
        T("Infinity"), T("-Infinity"), T("[01]"), T("{\"a\":-}"),
        T("9223372036854775808"), T("-9223372036854775809"),
        T("9999999999999999999"), T("12345678901234567890"),
        T("-12345678901234567890"), T("[9223372036854775808]"),
        T("1.7976931348623159e308"), T("-1.7976931348623159e308"),
        T("1e309"), T("-1e309"), T("1e99999999999999999999"),
        T("100e307"), T("0.1e310"), T("0.01e311"), T("18e307"),
        /* 2^1024 - 2^970 itself, and one past it */
        T("17976931348623158079372897140530341507993413271003782693617377898"
          "04449682927647509466490179775872070963302864166928879109465555478"
          "51940402630657488671505820681908902000708383676273854845817711531"
          "76447573027006985557136695962284291481986083493647529271907416844"
          "4365510704342711559699508093042880177904174497792.0"),
        T("17976931348623158079372897140530341507993413271003782693617377898"
          "04449682927647509466490179775872070963302864166928879109465555478"
          "51940402630657488671505820681908902000708383676273854845817711531"
          "76447573027006985557136695962284291481986083493647529271907416844"
          "4365510704342711559699508093042880177904174497792.001"),
        T("1.79769313486231580793728971405303415079934132710037826936173778"
          "98044496829276475094664901797758720709633028641669288791094655554"
          "78519404026306574886715058206819089020007083836762738548458177115"
          "31764475730270069855571366959622842914819860834936475292719074168"
          "444365510704342711559699508093042880177904174497792e308"),
    };
    expect_table(ok, N_OF(ok), true);
    expect_table(bad, N_OF(bad), false);
}

static void test_jsoncheck_strings(void **state)
{
    (void)state;
    static const struct text ok[] = {
        T("\"\x7f\""), T("\" ~!#$%&'()*+,-./09:;<=>?@AZ[]^_`az{|}\""),
        T("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\""), T("\"\\u00e9\""),
        T("\"\\u00E9\""), T("\"\\uFFFF\""), T("\"\\u0001\""),
        T("\"\\ud83d\\ude00\""), T("\"\\uD800\\uDC00\""),
        T("\"\\uDBFF\\uDFFF\""), T("\"\\uD7FF\\uE000\""),
        T("\"abcdefghijklmnopqrstuvwxyz0123456789\""),
        T("\"abcdefg\\nhijklmnop\\\"qrstuvwx\""),
        /* UTF-8 at each boundary of utf.c's ranges */
        T("\"\xc2\x80\""), T("\"\xdf\xbf\""), T("\"\xe0\xa0\x80\""),
        T("\"\xed\x9f\xbf\""), T("\"\xee\x80\x80\""), T("\"\xef\xbf\xbf\""),
        T("\"\xf0\x90\x80\x80\""), T("\"\xf4\x8f\xbf\xbf\""),
        T("\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""),
        T("\"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\""),
        T("{\"caf\xc3\xa9\":1,\"cafe\":2}"),
    };
    static const struct text bad[] = {
        /* escapes */
        T("\"\\a\""), T("\"\\x41\""), T("\"\\U0041\""), T("\"\\'\""),
        T("\"\\u00g9\""), T("\"\\u00\""), T("\"\\u\""), T("\"\\"),
        T("\"\\\""), T("\"\\u12"), T("\"\\ \""),
        /* no NUL from \u0000, in a value or a key */
        T("\"\\u0000\""), T("\"a\\u0000b\""), T("{\"a\\u0000\":1}"),
        T("[\"\\u0000\"]"),
        /* surrogates: only a low after a high */
        T("\"\\ud800\""), T("\"\\udc00\""), T("\"\\udfff\""),
        T("\"\\ud83d\\u0041\""), T("\"\\ud83d\\n\""), T("\"\\ud83d\""),
        T("\"\\ud83d\\ud83d\""), T("\"\\ude00\\ud83d\""), T("\"\\ud83d\\ude0\""),
        T("\"\\ud83d\\\""), T("\"\\ud83d\\u\""), T("\"\\ud83dx\\ude00\""),
        /* raw control bytes */
        T("\"\x01\""), T("\"\n\""), T("\"\t\""), T("\"\r\""), T("\"\x1f\""),
        T("\"abcdefghij\x01klmnop\""), T("{\"a\x01\":1}"),
        /* invalid UTF-8 */
        T("\"\x80\""), T("\"\xbf\""), T("\"\xc0\x80\""), T("\"\xc1\xbf\""),
        T("\"\xc2\""), T("\"\xc3\x28\""), T("\"\xc3\xc3\""),
        T("\"\xe0\x80\x80\""), T("\"\xe0\x9f\xbf\""), T("\"\xed\xa0\x80\""),
        T("\"\xed\xbf\xbf\""), T("\"\xe2\x82\""), T("\"\xe2\x82"),
        T("\"\xe2\x28\xa1\""), T("\"\xf0\x80\x80\x80\""),
        T("\"\xf0\x8f\xbf\xbf\""), T("\"\xf4\x90\x80\x80\""),
        T("\"\xf5\x80\x80\x80\""), T("\"\xf0\x9f\x98\""), T("\"\xf0\x9f\x98"),
        T("\"\xff\""), T("\"\xfe\""), T("\"\xf8\x88\x80\x80\x80\""),
        T("{\"\xc3\":1}"), T("\"abcdefghijklmnop\xc3\""),
    };
    expect_table(ok, N_OF(ok), true);
    expect_table(bad, N_OF(bad), false);
}

/* utf.c's rules, exhaustively for every lead and second byte: a string
 * holding byte @a, byte @b, then valid continuation bytes to fill a
 * 4-byte sequence. */
static void test_jsoncheck_utf8_matches_jansson(void **state)
{
    (void)state;
    char buf[8];
    for (int a = 0; a < 256; a++) {
        for (int b = 0; b < 256; b++) {
            for (int len = 2; len <= 4; len++) {
                buf[0] = '"';
                buf[1] = (char)a;
                buf[2] = (char)b;
                memset(buf + 3, 0x80, 2);
                buf[len + 1] = '"';
                json_error_t e;
                bool j = jansson_accepts(buf, (size_t)len + 2, &e);
                expect_verdict(buf, (size_t)len + 2, j);
            }
        }
    }
}

static void test_jsoncheck_duplicate_keys(void **state)
{
    (void)state;
    static const struct text bad[] = {
        T("{\"a\":1,\"a\":2}"), T("{\"a\":1,\"b\":2,\"a\":3}"),
        T("{\"a\":{\"b\":1,\"b\":2}}"), T("[{\"a\":1,\"a\":1}]"),
        T("{\"\":1,\"\":2}"), T("{\"x\":[{\"y\":{\"z\":1,\"z\":1}}]}"),
        T("{\"a\":{},\"b\":{},\"a\":{}}"),
        T("{\"caf\xc3\xa9\":1,\"caf\xc3\xa9\":2}"),
        /* raw-equal keys with escapes decode equally */
        T("{\"\\u0061\":1,\"\\u0061\":2}"),
    };
    static const struct text ok[] = {
        T("{\"a\":1,\"A\":2}"), T("{\"a\":{\"a\":{\"a\":1}}}"),
        T("{\"a\":[{\"b\":1},{\"b\":2}],\"b\":{\"a\":1}}"),
        T("{\"ab\":1,\"a\":2,\"abc\":3}"),
    };
    expect_table(bad, N_OF(bad), false);
    expect_table(ok, N_OF(ok), true);
}

/* NUL bytes: jansson's look-ahead drops one right after a number or a
 * literal; anywhere else it is an invalid token or a control byte. */
static void test_jsoncheck_nul_bytes(void **state)
{
    (void)state;
    static const struct text bad[] = {
        T("\0"), T(" \0"), T("[\0"), T("[\0]"), T("{\0\"a\":1}"),
        T("{\"a\"\0:1}"), T("{\"a\":\0 1}"), T("[1 \0]"), T("1 \0"),
        T("\"a\"\0"), T("\"a\0\""), T("{\"a\0\":1}"), T("[\"a\",\0]"),
        T("{}\0"), T("[]\0"), T("tr\0ue"), T("1.\0"), T("-\0"),
    };
    expect_table(bad, N_OF(bad), false);

    static const struct text after_token[] = {
        T("[1\0]"), T("1\0"), T("[true\0,1]"), T("{\"a\":1\0,\"b\":2}"),
        T("null\0"), T("1\0x"), T("[1\0\0]"), T("-0.5e3\0]"),
    };
    for (size_t i = 0; i < N_OF(after_token); i++)
        assert_int_equal(expect_contract(after_token[i].s, after_token[i].n),
                         -EAGAIN);
}

/* An object of @count members "k0".."k<count-1>" (plus @extra verbatim
 * before the closing brace) in @buf. Returns the length. */
static size_t object_of(char *buf, size_t cap, int count, const char *extra)
{
    size_t o = 0;
    buf[o++] = '{';
    for (int i = 0; i < count; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s\"k%d\":%d",
                              i ? "," : "", i, i);
    o += (size_t)snprintf(buf + o, cap - o, "%s}", extra);
    assert_true(o < cap);
    return o;
}

static void test_jsoncheck_many_keys(void **state)
{
    (void)state;
    static char buf[65536];
    size_t n;

    n = object_of(buf, sizeof(buf), JSONCHECK_MAX_KEYS, "");
    expect_verdict(buf, n, true);
    n = object_of(buf, sizeof(buf), JSONCHECK_MAX_KEYS - 1, ",\"k0\":1");
    expect_verdict(buf, n, false);

    /* Past the bound: -EAGAIN, whether or not there is a duplicate ... */
    n = object_of(buf, sizeof(buf), JSONCHECK_MAX_KEYS + 1, "");
    assert_int_equal(expect_contract(buf, n), -EAGAIN);
    n = object_of(buf, sizeof(buf), 5000, "");
    assert_int_equal(expect_contract(buf, n), -EAGAIN);
    n = object_of(buf, sizeof(buf), JSONCHECK_MAX_KEYS + 1, ",\"k0\":1");
    assert_int_equal(expect_contract(buf, n), -EAGAIN);
    n = object_of(buf, sizeof(buf), 5000, ",\"k4999\":1");
    assert_int_equal(expect_contract(buf, n), -EAGAIN);
    n = object_of(buf, sizeof(buf), 5000, ",\"k0\":1");
    assert_int_equal(expect_contract(buf, n), -EAGAIN);
    /* ... but a duplicate before the bound, or a syntax error anywhere, is
     * still -EINVAL. */
    n = object_of(buf, sizeof(buf), 5000, "");
    memcpy(buf + 1, "\"k3\":0,", 7); /* in k0's place: k3 twice */
    assert_int_equal(expect_contract(buf, n), -EINVAL);
    n = object_of(buf, sizeof(buf), 5000, ",");
    assert_int_equal(expect_contract(buf, n), -EINVAL);

    /* More keys open at once than JSONCHECK_KEY_SLOTS: nested objects of
     * 60 keys each, the last member of each holding the next. */
    size_t o = 0;
    for (int level = 0; level < 6; level++) {
        buf[o++] = '{';
        for (int i = 0; i < 60; i++)
            o += (size_t)snprintf(buf + o, sizeof(buf) - o, "\"k%d\":%d,", i,
                                  i);
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "\"next\":");
    }
    o += (size_t)snprintf(buf + o, sizeof(buf) - o, "0");
    for (int level = 0; level < 6; level++)
        buf[o++] = '}';
    assert_int_equal(expect_contract(buf, o), -EAGAIN);
}

static void test_jsoncheck_escaped_keys(void **state)
{
    (void)state;
    /* jansson compares decoded keys: these need it to decide. */
    static const struct text unsure[] = {
        T("{\"a\":1,\"\\u0061\":2}"), T("{\"\\u0061\":1,\"a\":2}"),
        T("{\"\\u0061\":1}"), T("{\"a\\nb\":1}"), T("{\"a\\/\":1,\"a/\":2}"),
        T("{\"\\ud83d\\ude00\":1,\"\xf0\x9f\x98\x80\":2}"),
    };
    for (size_t i = 0; i < N_OF(unsure); i++)
        assert_int_equal(expect_contract(unsure[i].s, unsure[i].n), -EAGAIN);
    /* A later syntax error still gives -EINVAL. */
    static const char later_error[] = "{\"\\u0061\":1,}";
    assert_int_equal(expect_contract(later_error, sizeof(later_error) - 1),
                     -EINVAL);
    /* An escape in a value is not a key: exact. */
    static const char in_value[] = "{\"a\":\"\\u0061\"}";
    expect_verdict(in_value, sizeof(in_value) - 1, true);
}

static void test_jsoncheck_depth(void **state)
{
    (void)state;
    static char buf[32768];
    for (int depth = 1; depth <= 3000; depth += depth < 70 ? 1 : 500) {
        size_t n = 0;
        for (int i = 0; i < depth; i++) {
            if (i % 2) {
                buf[n++] = '[';
            } else {
                memcpy(buf + n, "{\"a\":", 5);
                n += 5;
            }
        }
        buf[n++] = '1';
        for (int i = depth - 1; i >= 0; i--)
            buf[n++] = i % 2 ? ']' : '}';
        int r = expect_contract(buf, n);
        assert_int_equal(r, depth <= JSONCHECK_MAX_DEPTH ? 0 : -EAGAIN);
    }
    /* An error before the bound is found; past it, -EAGAIN. */
    static const char early[] = "[[[[1,]]]]";
    assert_int_equal(expect_contract(early, sizeof(early) - 1), -EINVAL);
    memset(buf, '[', 100);
    assert_int_equal(expect_contract(buf, 100), -EAGAIN);
}

/* Each seed with each byte replaced by each of a few interesting bytes,
 * and cut at each length: the contract holds, and outside the documented
 * corners (escaped keys, NUL after a token) the answer is exact. */
static void test_jsoncheck_mutations_match_jansson(void **state)
{
    (void)state;
    static const struct text seeds[] = {
        {cloudevent, sizeof(cloudevent) - 1},
        T("{\"a\":[1,-2.5e+3,true,false,null],\"b\":{\"c\":\"\\u00e9\\n\"}}"),
        T("[\"\\ud83d\\ude00\",\"\xf0\x9f\x98\x80\",0.0e-0,\"\xe2\x82\xac\"]"),
        T("{\"k\":\"v\",\"kk\":9223372036854775807}"),
    };
    static const char repl[] = {'"', '\\', '{', '}', '[', ']', ':', ',', ' ',
                                '0', '9', '-', '.', 'e', 'u', 'a', '\0',
                                '\x01', '\x7f', '\x80', '\xc3', '\xed',
                                '\xf4', '\xff'};
    static char buf[1024];
    for (size_t s = 0; s < N_OF(seeds); s++) {
        const struct text *t = &seeds[s];
        assert_true(t->n <= sizeof(buf));
        for (size_t cut = 0; cut <= t->n; cut++)
            expect_contract(t->s, cut);
        for (size_t i = 0; i < t->n; i++) {
            for (size_t r = 0; r < sizeof(repl); r++) {
                memcpy(buf, t->s, t->n);
                buf[i] = repl[r];
                expect_contract(buf, t->n);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jsoncheck_accepts_values),
        cmocka_unit_test(test_jsoncheck_refuses_syntax),
        cmocka_unit_test(test_jsoncheck_numbers),
        cmocka_unit_test(test_jsoncheck_strings),
        cmocka_unit_test(test_jsoncheck_utf8_matches_jansson),
        cmocka_unit_test(test_jsoncheck_duplicate_keys),
        cmocka_unit_test(test_jsoncheck_nul_bytes),
        cmocka_unit_test(test_jsoncheck_many_keys),
        cmocka_unit_test(test_jsoncheck_escaped_keys),
        cmocka_unit_test(test_jsoncheck_depth),
        cmocka_unit_test(test_jsoncheck_mutations_match_jansson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
