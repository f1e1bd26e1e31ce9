/* Unit tests for httpd's pure helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "httpd.h"

static void test_httpd_media_type_ignores_case_params_blanks(void **state)
{
    (void)state;
    const char *want = "application/cloudevents+json";
    assert_true(httpd_media_type_is("application/cloudevents+json", want));
    assert_true(httpd_media_type_is("Application/CloudEvents+JSON; charset=utf-8", want));
    assert_true(httpd_media_type_is("  application/cloudevents+json ;charset=utf-8", want));
    assert_false(httpd_media_type_is("application/cloudevents-batch+json", want));
    assert_false(httpd_media_type_is("application/cloudevents+jsonx", want));
    assert_false(httpd_media_type_is(NULL, want));
    assert_false(httpd_media_type_is("", want));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_httpd_media_type_ignores_case_params_blanks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
