/*
 * Regression tests for bugs the fuzz targets (tests/fuzz) found. Each case
 * names its reproducer in tests/fuzz/regressions/<target>/, which
 * tests/fuzz/run.sh also replays under the sanitizers; these tests keep
 * the fix checked in the plain unit run, without clang.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "event.h"
#include "hdrcode.h"

/* What ingest puts in a JSON error body must be valid UTF-8. */
static void assert_error_utf8(const struct ce_error *err)
{
    assert_true(utf8_valid(err->message, strlen(err->message)));
    assert_true(utf8_valid(err->attribute, strlen(err->attribute)));
}

/*
 * fuzz_structured/invalid-escape-raw-bytes.json: jansson quotes the bytes
 * after a bad \u escape ("near '...'") without checking them, so the
 * message held invalid UTF-8 and the 400 answer became
 * {"error":"internal"} instead of invalid_json with its message.
 */
static void test_fuzz_structured_error_message_is_utf8(void **state)
{
    (void)state;
    static const char body[] = "{\"specversion\":\"1.0\",\"id\":\"\\ud83d\\ud"
                               "\xcd\xb0\x8c\xbb\xfd\x7f\",\"source\":\"/s\","
                               "\"type\":\"t\"}";
    struct event ev;
    struct ce_error err = {0};
    assert_int_equal(event_from_structured(body, sizeof(body) - 1, &ev, &err),
                     -EINVAL);
    assert_string_equal(err.code, "invalid_json");
    assert_non_null(strstr(err.message, "invalid JSON at line 1"));
    assert_error_utf8(&err);
}

/*
 * fuzz_binary_headers/header-name-raw-bytes.req: a ce- header whose name
 * holds bytes that are not UTF-8 was quoted as is in the message and the
 * attribute.
 */
static void test_fuzz_binary_header_name_error_is_utf8(void **state)
{
    (void)state;
    static const char name[] = "CE-IDtio\xff\xff\xff\xffnK";
    struct http_header h[] = {
        {name, sizeof(name) - 1, "1", 1},
        {"ce-source", 9, "/s", 2},
        {"ce-type", 7, "t", 1},
        {"ce-specversion", 14, "1.0", 3},
    };
    struct event ev;
    struct ce_error err = {0};
    assert_int_equal(event_from_binary(h, 4, NULL, "", 0, &ev, &err), -EINVAL);
    assert_string_equal(err.code, "invalid_event");
    assert_non_null(strstr(err.message, "does not name a valid attribute"));
    /* Each bad byte is replaced, the rest is kept. */
    assert_non_null(strstr(err.message, "CE-IDtio????nK"));
    assert_string_equal(err.attribute, "idtio????nk");
    assert_error_utf8(&err);
}

/* Truncation ("%.40s" of a bad time) must not leave half a character. */
static void test_fuzz_truncated_message_is_utf8(void **state)
{
    (void)state;
    /* 5 ASCII bytes then 2-byte characters: byte 40 falls mid-character. */
    static const char body[] =
        "{\"specversion\":\"1.0\",\"id\":\"i\",\"source\":\"/s\",\"type\":\"t\","
        "\"time\":\"20261\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"}";
    struct event ev;
    struct ce_error err = {0};
    assert_int_equal(event_from_structured(body, sizeof(body) - 1, &ev, &err),
                     -EINVAL);
    assert_string_equal(err.attribute, "time");
    assert_error_utf8(&err);
    /* The 17 whole characters survive; only the cut one is replaced. */
    assert_non_null(strstr(err.message, "\"20261\xc3\xa9"));
    assert_non_null(strstr(err.message, "\xc3\xa9?\""));
}

/* Valid UTF-8 in an error (a quoted value) is left alone. */
static void test_fuzz_valid_utf8_error_is_unchanged(void **state)
{
    (void)state;
    struct ce_error err = {0};
    ce_error_set(&err, "invalid_event", 3, "caf\xc3\xa9", "bad \"%s\" \xf0\x9f\x98\x80",
                 "\xe2\x82\xac");
    assert_string_equal(err.attribute, "caf\xc3\xa9");
    assert_string_equal(err.message, "bad \"\xe2\x82\xac\" \xf0\x9f\x98\x80");
    assert_int_equal(err.index, 3);
}

/*
 * fuzz_binary_headers/text-data-with-nul.req: binary data of a text type
 * (here JSON that does not parse) holding a NUL byte went to structured
 * peers as "data": "...\u0000...", which Ferry's own structured ingest
 * (jansson) refuses. It now goes as data_base64 and round-trips.
 */
static void test_fuzz_text_data_with_nul_goes_as_base64(void **state)
{
    (void)state;
    static const char body[] = "{\"total\":42\0\0}";
    static const char *const types[] = {"application/json", "text/plain", NULL};
    struct http_header h[] = {
        {"ce-id", 5, "order-1", 7},
        {"ce-source", 9, "/checkout", 9},
        {"ce-type", 7, "t", 1},
        {"ce-specversion", 14, "1.0", 3},
    };
    for (size_t i = 0; i < 3; i++) {
        struct event ev, again;
        struct ce_error err = {0};
        struct buf out;
        buf_init(&out, 1 << 20);
        assert_int_equal(event_from_binary(h, 4, types[i], body,
                                           sizeof(body) - 1, &ev, &err), 0);
        assert_int_equal(event_to_structured(&ev, &out), 0);
        assert_non_null(strstr(out.data, "\"data_base64\":\""));
        assert_null(strstr(out.data, "\\u0000"));
        assert_int_equal(event_from_structured(out.data, out.len, &again, &err), 0);
        event_free(&again);
        event_free(&ev);
        buf_free(&out);
    }
}

/* Text without NUL bytes is still carried as a JSON string. */
static void test_fuzz_text_data_without_nul_stays_text(void **state)
{
    (void)state;
    struct http_header h[] = {
        {"ce-id", 5, "order-1", 7},
        {"ce-source", 9, "/checkout", 9},
        {"ce-type", 7, "t", 1},
        {"ce-specversion", 14, "1.0", 3},
    };
    struct event ev;
    struct ce_error err = {0};
    struct buf out;
    buf_init(&out, 1 << 20);
    assert_int_equal(event_from_binary(h, 4, "text/plain", "a\tb\x01", 4, &ev,
                                       &err), 0);
    assert_int_equal(event_to_structured(&ev, &out), 0);
    assert_non_null(strstr(out.data, "\"data\":\"a\\u0009b\\u0001\""));
    event_free(&ev);
    buf_free(&out);
}

/*
 * fuzz_structured/nul-after-literal.json: jansson skips a NUL byte that
 * follows a number or a literal, so {"...","n":null\0} was accepted and,
 * since structured mode stores the body's own bytes, delivered with the
 * NUL in it. Bodies holding a NUL are refused as invalid JSON.
 */
static void test_fuzz_nul_byte_in_body_is_invalid_json(void **state)
{
    (void)state;
    static const char one[] = "{\"specversion\":\"1.0\",\"id\":\"a\","
                              "\"source\":\"/s\",\"type\":\"t\",\n"
                              "\"n\":null\0}";
    static const char batch[] = "[{\"specversion\":\"1.0\",\"id\":\"a\","
                                "\"source\":\"/s\",\"type\":\"t\",\"n\":1\0}]";
    struct event ev, *evs = NULL;
    size_t n = 7;
    struct ce_error err = {0};
    assert_int_equal(event_from_structured(one, sizeof(one) - 1, &ev, &err),
                     -EINVAL);
    assert_string_equal(err.code, "invalid_json");
    assert_string_equal(err.message,
                        "invalid JSON at line 2, column 9: NUL byte");
    assert_null(ev.obj);
    assert_null(ev.text);

    err = (struct ce_error){0};
    assert_int_equal(event_batch_from_json(batch, sizeof(batch) - 1, 10, &evs,
                                           &n, &err),
                     -EINVAL);
    assert_string_equal(err.code, "invalid_json");
    assert_null(evs);
    assert_int_equal(n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fuzz_structured_error_message_is_utf8),
        cmocka_unit_test(test_fuzz_binary_header_name_error_is_utf8),
        cmocka_unit_test(test_fuzz_truncated_message_is_utf8),
        cmocka_unit_test(test_fuzz_valid_utf8_error_is_unchanged),
        cmocka_unit_test(test_fuzz_text_data_with_nul_goes_as_base64),
        cmocka_unit_test(test_fuzz_text_data_without_nul_stays_text),
        cmocka_unit_test(test_fuzz_nul_byte_in_body_is_invalid_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
