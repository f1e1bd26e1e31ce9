/* Unit tests for log: record format and levels, captured from stderr. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "log.h"

/* Run a log call with stderr redirected into a pipe; return what it wrote. */
static void capture(char *out, size_t n, void (*fn)(void))
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved = dup(STDERR_FILENO);
    dup2(fds[1], STDERR_FILENO);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fds[1]);
    ssize_t got = read(fds[0], out, n - 1);
    out[got > 0 ? got : 0] = '\0';
    close(fds[0]);
}

static void emit_warn(void)
{
    log_warn("delivery failed", LOG_FIELDS(LOG_S("peer", "inv\"x"), LOG_I("attempt", 3),
                                           LOG_RAW("obj", "{\"a\":1}"), LOG_S("none", NULL)));
}

static void emit_debug(void)
{
    log_debug("noise", LOG_NOFIELDS);
}

static void test_log_json_record_has_fields_escaped(void **state)
{
    (void)state;
    char out[1024];
    log_setup(LOG_INFO, LOG_FORMAT_JSON);
    capture(out, sizeof(out), emit_warn);
    assert_non_null(strstr(out, "\"level\":\"warn\",\"msg\":\"delivery failed\""));
    assert_non_null(strstr(out, "\"peer\":\"inv\\\"x\""));
    assert_non_null(strstr(out, "\"attempt\":3"));
    assert_non_null(strstr(out, "\"obj\":{\"a\":1}"));
    assert_non_null(strstr(out, "\"none\":null"));
    assert_int_equal(out[strlen(out) - 1], '\n');
    assert_int_equal(strncmp(out, "{\"ts\":\"", 7), 0);
}

static void test_log_text_record_is_readable(void **state)
{
    (void)state;
    char out[1024];
    log_setup(LOG_INFO, LOG_FORMAT_TEXT);
    capture(out, sizeof(out), emit_warn);
    assert_non_null(strstr(out, " warn  delivery failed peer=\"inv\\\"x\" attempt=3"));
}

static void test_log_threshold_filters(void **state)
{
    (void)state;
    char out[256];
    log_setup(LOG_INFO, LOG_FORMAT_JSON);
    capture(out, sizeof(out), emit_debug);
    assert_string_equal(out, "");
    log_setup(LOG_DEBUG, LOG_FORMAT_JSON);
    capture(out, sizeof(out), emit_debug);
    assert_non_null(strstr(out, "\"msg\":\"noise\""));
}

static void test_log_parse_names(void **state)
{
    (void)state;
    enum log_level l;
    enum log_format f;
    assert_int_equal(log_level_parse("warn", &l), 0);
    assert_int_equal(l, LOG_WARN);
    assert_int_equal(log_level_parse("loud", &l), -22);
    assert_int_equal(log_format_parse("text", &f), 0);
    assert_int_equal(f, LOG_FORMAT_TEXT);
    assert_int_equal(log_format_parse("xml", &f), -22);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_json_record_has_fields_escaped),
        cmocka_unit_test(test_log_text_record_is_readable),
        cmocka_unit_test(test_log_threshold_filters),
        cmocka_unit_test(test_log_parse_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
