/*
 * Unit tests for validate: CloudEvents 1.0 attribute rules on parsed JSON
 * objects, RFC 3339 timestamps and attribute names.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "event.h"
#include "validate.h"

static const char *const required_attrs[] = {"id", "source", "specversion",
                                             "type"};
#define N_REQUIRED (sizeof(required_attrs) / sizeof(required_attrs[0]))

/* A minimal valid event; the caller adds or changes members. */
static json_t *base_event(void)
{
    json_t *obj = json_pack("{s:s, s:s, s:s, s:s}", "specversion", "1.0", "id",
                            "e-1", "source", "/test", "type", "com.example.t");
    assert_non_null(obj);
    return obj;
}

/* Parse @json and validate it; the document must be well-formed. */
static int validate_text(const char *json, bool allow_data, long index,
                         struct ce_error *err)
{
    json_error_t jerr;
    json_t *obj = json_loads(json, JSON_DECODE_ANY, &jerr);
    assert_non_null(obj);
    int rc = validate_event(obj, allow_data, index, err);
    json_decref(obj);
    return rc;
}

static struct ce_error fresh_error(void)
{
    struct ce_error err = {.code = NULL, .index = -7};
    return err;
}

/* Validate @obj (consumed) expecting invalid_event on @attr with a
 * message containing @needle. */
static void expect_invalid(json_t *obj, bool allow_data, const char *attr,
                           const char *needle)
{
    struct ce_error err = fresh_error();
    assert_int_equal(validate_event(obj, allow_data, -1, &err), -EINVAL);
    assert_string_equal(err.code, "invalid_event");
    assert_int_equal(err.index, -1);
    assert_string_equal(err.attribute, attr);
    assert_non_null(strstr(err.message, needle));
    json_decref(obj);
}

static void expect_valid(json_t *obj, bool allow_data)
{
    struct ce_error err = fresh_error();
    assert_int_equal(validate_event(obj, allow_data, -1, &err), 0);
    assert_null(err.code);
    json_decref(obj);
}

static json_t *event_with(const char *name, json_t *value)
{
    json_t *obj = base_event();
    assert_int_equal(json_object_set_new(obj, name, value), 0);
    return obj;
}

/* ---- required attributes ---------------------------------------------- */

static void test_validate_accepts_minimal_event(void **state)
{
    (void)state;
    expect_valid(base_event(), true);
    expect_valid(base_event(), false);
}

static void test_validate_accepts_full_event(void **state)
{
    (void)state;
    struct ce_error err = fresh_error();
    assert_int_equal(
        validate_text("{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":"
                      "\"https://example.com/x\",\"type\":\"t\","
                      "\"datacontenttype\":\"application/json\","
                      "\"dataschema\":\"https://example.com/s.json\","
                      "\"subject\":\"s\",\"time\":\"2026-11-22T10:00:00Z\","
                      "\"partitionkey\":\"k\",\"count\":3,\"flag\":true,"
                      "\"data\":{\"a\":[1,2]}}",
                      true, -1, &err),
        0);
}

static void test_validate_rejects_missing_id(void **state)
{
    (void)state;
    json_t *obj = base_event();
    json_object_del(obj, "id");
    expect_invalid(obj, true, "id", "missing required attribute \"id\"");
}

static void test_validate_rejects_missing_each_required(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_REQUIRED; i++) {
        json_t *obj = base_event();
        json_object_del(obj, required_attrs[i]);
        expect_invalid(obj, true, required_attrs[i], "missing required");
    }
}

static void test_validate_rejects_empty_required(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_REQUIRED; i++)
        expect_invalid(event_with(required_attrs[i], json_string("")), true,
                       required_attrs[i], "must not be empty");
}

static void test_validate_rejects_non_string_required(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_REQUIRED; i++) {
        expect_invalid(event_with(required_attrs[i], json_integer(1)), true,
                       required_attrs[i], "must be a string");
        expect_invalid(event_with(required_attrs[i], json_true()), true,
                       required_attrs[i], "must be a string");
        expect_invalid(event_with(required_attrs[i], json_object()), true,
                       required_attrs[i], "must be a string");
    }
}

static void test_validate_rejects_null_required(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_REQUIRED; i++)
        expect_invalid(event_with(required_attrs[i], json_null()), true,
                       required_attrs[i], "must not be null");
}

static void test_validate_rejects_specversion_0_3(void **state)
{
    (void)state;
    struct ce_error err = fresh_error();
    json_t *obj = event_with("specversion", json_string("0.3"));
    assert_int_equal(validate_event(obj, true, -1, &err), -EINVAL);
    assert_string_equal(err.attribute, "specversion");
    assert_string_equal(err.message,
                        "unsupported specversion \"0.3\"; expected \"1.0\"");
    json_decref(obj);
    expect_invalid(event_with("specversion", json_string("1.0.0")), true,
                   "specversion", "unsupported specversion");
}

static void test_validate_rejects_non_object(void **state)
{
    (void)state;
    struct ce_error err = fresh_error();
    assert_int_equal(validate_text("[1,2]", true, 3, &err), -EINVAL);
    assert_string_equal(err.code, "invalid_event");
    assert_int_equal(err.index, 3);
    assert_string_equal(err.attribute, "");
}

static void test_validate_copies_index(void **state)
{
    (void)state;
    struct ce_error err = fresh_error();
    assert_int_equal(
        validate_text("{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\"}",
                      true, 42, &err),
        -EINVAL);
    assert_int_equal(err.index, 42);
    assert_string_equal(err.attribute, "type");
}

/* ---- optional attributes ------------------------------------------------ */

static void test_validate_rejects_wrongly_typed_optional(void **state)
{
    (void)state;
    expect_invalid(event_with("datacontenttype", json_integer(1)), true,
                   "datacontenttype", "must be a string");
    expect_invalid(event_with("subject", json_false()), true, "subject",
                   "must be a string");
    expect_invalid(event_with("dataschema", json_array()), true, "dataschema",
                   "must be a string");
    expect_invalid(event_with("time", json_integer(1700000000)), true, "time",
                   "must be a string");
}

static void test_validate_rejects_bad_datacontenttype(void **state)
{
    (void)state;
    expect_invalid(event_with("datacontenttype", json_string("")), true,
                   "datacontenttype", "media type");
    expect_invalid(event_with("datacontenttype",
                              json_string("text/plain\r\nX-Evil: 1")),
                   true, "datacontenttype", "media type");
    expect_valid(event_with("datacontenttype",
                            json_string("text/plain; charset=utf-8")),
                 true);
}

static void test_validate_rejects_bad_dataschema(void **state)
{
    (void)state;
    expect_invalid(event_with("dataschema", json_string("")), true,
                   "dataschema", "non-empty URI");
    expect_invalid(event_with("dataschema", json_string("has space")), true,
                   "dataschema", "URI");
    expect_valid(event_with("dataschema", json_string("urn:example:s")), true);
}

static void test_validate_accepts_null_optional(void **state)
{
    (void)state;
    expect_valid(event_with("subject", json_null()), true);
    expect_valid(event_with("time", json_null()), true);
    expect_valid(event_with("myext", json_null()), true);
}

static void test_validate_rejects_invalid_time_attribute(void **state)
{
    (void)state;
    expect_invalid(event_with("time", json_string("2026-02-29T00:00:00Z")),
                   true, "time", "RFC 3339");
    expect_valid(event_with("time", json_string("2026-11-22T10:00:00.5Z")),
                 true);
}

/* ---- RFC 3339 ------------------------------------------------------------ */

static void test_validate_rfc3339_accepts_valid(void **state)
{
    (void)state;
    static const char *const ok[] = {
        "2026-11-22T10:00:00Z",
        "2026-11-22t10:00:00z",
        "2026-11-22T10:00:00.5Z",
        "2026-11-22T10:00:00.123456789Z",
        "2026-11-22T10:00:00+05:30",
        "2026-11-22T10:00:00-08:00",
        "2026-11-22T23:59:59+23:59",
        "2024-02-29T00:00:00Z",   /* leap year */
        "2000-02-29T00:00:00Z",   /* divisible by 400 */
        "2016-12-31T23:59:60Z",   /* leap second */
        "0001-01-01T00:00:00Z",
        "2026-04-30T00:00:00Z",
        "2026-01-31T00:00:00Z",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        assert_true(validate_rfc3339(ok[i]));
}

static void test_validate_rfc3339_rejects_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "2026-11-22",                /* date only */
        "2026-11-22 10:00:00Z",      /* space instead of T */
        "2026-11-2210:00:00Z",       /* missing T */
        "2026-11-22T10:00:00",       /* missing offset */
        "2026-11-22T10:00Z",         /* missing seconds */
        "2026-11-22T24:00:00Z",      /* hour 24 */
        "2026-11-22T10:60:00Z",
        "2026-11-22T10:00:61Z",
        "2026-11-22T10:00:00.Z",     /* empty fraction */
        "2026-11-22T10:00:00+24:00", /* offset hour */
        "2026-11-22T10:00:00+05:60", /* offset minute */
        "2026-11-22T10:00:00+0530",  /* offset without colon */
        "2026-11-22T10:00:00+05",
        "2026-11-22T10:00:00ZZ",     /* trailing garbage */
        "2026-11-22T10:00:00Z ",
        "2023-02-29T00:00:00Z",      /* not a leap year */
        "1900-02-29T00:00:00Z",      /* century, not leap */
        "2026-04-31T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-00-10T00:00:00Z",
        "2026-01-00T00:00:00Z",
        "26-11-22T10:00:00Z",        /* two-digit year */
        "2026-1-22T10:00:00Z",
        "+2026-11-22T10:00:00Z",
        "2026-11-22T1a:00:00Z",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(validate_rfc3339(bad[i]));
}

/* ---- extensions --------------------------------------------------------- */

static void test_validate_attr_name_rules(void **state)
{
    (void)state;
    assert_true(validate_attr_name("a", 1));
    assert_true(validate_attr_name("abc123", 6));
    assert_true(validate_attr_name("12345678901234567890", 20));
    assert_false(validate_attr_name("", 0));
    assert_false(validate_attr_name("123456789012345678901", 21));
    assert_false(validate_attr_name("Abc", 3));
    assert_false(validate_attr_name("a-b", 3));
    assert_false(validate_attr_name("a_b", 3));
    assert_false(validate_attr_name("a.b", 3));
    assert_false(validate_attr_name("a b", 3));
    assert_false(validate_attr_name("caf\xC3\xA9", 5));
    /* Only @len bytes count. */
    assert_true(validate_attr_name("ab-", 2));
}

static void test_validate_rejects_uppercase_extension(void **state)
{
    (void)state;
    expect_invalid(event_with("myExt", json_string("x")), true, "myExt",
                   "invalid attribute name");
}

static void test_validate_rejects_too_long_extension(void **state)
{
    (void)state;
    expect_invalid(event_with("abcdefghijklmnopqrstu", json_string("x")), true,
                   "abcdefghijklmnopqrstu", "1-20 characters");
    expect_valid(event_with("abcdefghijklmnopqrst", json_string("x")), true);
}

static void test_validate_rejects_punctuation_extension(void **state)
{
    (void)state;
    expect_invalid(event_with("my_ext", json_string("x")), true, "my_ext",
                   "invalid attribute name");
    expect_invalid(event_with("my-ext", json_string("x")), true, "my-ext",
                   "invalid attribute name");
    expect_invalid(event_with("", json_string("x")), true, "",
                   "invalid attribute name");
}

static void test_validate_accepts_extension_value_types(void **state)
{
    (void)state;
    expect_valid(event_with("ext", json_string("v")), true);
    expect_valid(event_with("ext", json_integer(-5)), true);
    expect_valid(event_with("ext", json_integer(INT32_MAX)), true);
    expect_valid(event_with("ext", json_integer(INT32_MIN)), true);
    expect_valid(event_with("ext", json_true()), true);
    expect_valid(event_with("ext", json_false()), true);
}

static void test_validate_rejects_extension_value_types(void **state)
{
    (void)state;
    expect_invalid(event_with("ext", json_integer((json_int_t)INT32_MAX + 1)),
                   true, "ext", "32-bit");
    expect_invalid(event_with("ext", json_integer((json_int_t)INT32_MIN - 1)),
                   true, "ext", "32-bit");
    expect_invalid(event_with("ext", json_real(1.5)), true, "ext",
                   "string, integer or boolean");
    expect_invalid(event_with("ext", json_object()), true, "ext",
                   "string, integer or boolean");
    expect_invalid(event_with("ext", json_array()), true, "ext",
                   "string, integer or boolean");
}

/* ---- data ---------------------------------------------------------------- */

static void test_validate_accepts_any_data(void **state)
{
    (void)state;
    expect_valid(event_with("data", json_pack("{s:[i,i]}", "a", 1, 2)), true);
    expect_valid(event_with("data", json_string("text")), true);
    expect_valid(event_with("data", json_real(2.5)), true);
    expect_valid(event_with("data", json_null()), true);
}

static void test_validate_accepts_data_base64(void **state)
{
    (void)state;
    expect_valid(event_with("data_base64", json_string("Zm9vYmFy")), true);
    expect_valid(event_with("data_base64", json_string("")), true);
}

static void test_validate_rejects_invalid_data_base64(void **state)
{
    (void)state;
    expect_invalid(event_with("data_base64", json_string("Zm9v!")), true,
                   "data_base64", "not valid base64");
    expect_invalid(event_with("data_base64", json_integer(3)), true,
                   "data_base64", "must be a string");
}

static void test_validate_rejects_data_and_data_base64(void **state)
{
    (void)state;
    json_t *obj = event_with("data", json_string("x"));
    json_object_set_new(obj, "data_base64", json_string("eA=="));
    expect_invalid(obj, true, "data_base64", "must not both be present");

    /* A null member is absent, so this pair is fine. */
    obj = event_with("data", json_null());
    json_object_set_new(obj, "data_base64", json_string("eA=="));
    expect_valid(obj, true);
}

static void test_validate_rejects_data_when_not_allowed(void **state)
{
    (void)state;
    expect_invalid(event_with("data", json_string("x")), false, "data",
                   "not allowed");
    expect_invalid(event_with("data_base64", json_string("eA==")), false,
                   "data_base64", "not allowed");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate_accepts_minimal_event),
        cmocka_unit_test(test_validate_accepts_full_event),
        cmocka_unit_test(test_validate_rejects_missing_id),
        cmocka_unit_test(test_validate_rejects_missing_each_required),
        cmocka_unit_test(test_validate_rejects_empty_required),
        cmocka_unit_test(test_validate_rejects_non_string_required),
        cmocka_unit_test(test_validate_rejects_null_required),
        cmocka_unit_test(test_validate_rejects_specversion_0_3),
        cmocka_unit_test(test_validate_rejects_non_object),
        cmocka_unit_test(test_validate_copies_index),
        cmocka_unit_test(test_validate_rejects_wrongly_typed_optional),
        cmocka_unit_test(test_validate_rejects_bad_datacontenttype),
        cmocka_unit_test(test_validate_rejects_bad_dataschema),
        cmocka_unit_test(test_validate_accepts_null_optional),
        cmocka_unit_test(test_validate_rejects_invalid_time_attribute),
        cmocka_unit_test(test_validate_rfc3339_accepts_valid),
        cmocka_unit_test(test_validate_rfc3339_rejects_invalid),
        cmocka_unit_test(test_validate_attr_name_rules),
        cmocka_unit_test(test_validate_rejects_uppercase_extension),
        cmocka_unit_test(test_validate_rejects_too_long_extension),
        cmocka_unit_test(test_validate_rejects_punctuation_extension),
        cmocka_unit_test(test_validate_accepts_extension_value_types),
        cmocka_unit_test(test_validate_rejects_extension_value_types),
        cmocka_unit_test(test_validate_accepts_any_data),
        cmocka_unit_test(test_validate_accepts_data_base64),
        cmocka_unit_test(test_validate_rejects_invalid_data_base64),
        cmocka_unit_test(test_validate_rejects_data_and_data_base64),
        cmocka_unit_test(test_validate_rejects_data_when_not_allowed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
