/* Unit tests for cli's pure helpers. */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "cli.h"

static void test_cli_uuid4_has_version_and_variant(void **state)
{
    (void)state;
    char a[40], b[40];
    assert_int_equal(cli_uuid4(a, sizeof(a)), 0);
    assert_int_equal(cli_uuid4(b, sizeof(b)), 0);
    assert_int_equal(strlen(a), 36);
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            assert_int_equal(a[i], '-');
        else
            assert_true(isxdigit((unsigned char)a[i]) && !isupper((unsigned char)a[i]));
    }
    assert_int_equal(a[14], '4');
    assert_non_null(strchr("89ab", a[19]));
    assert_string_not_equal(a, b);
}

static void test_cli_uuid4_refuses_short_buffer(void **state)
{
    (void)state;
    char small[36];
    assert_int_not_equal(cli_uuid4(small, sizeof(small)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli_uuid4_has_version_and_variant),
        cmocka_unit_test(test_cli_uuid4_refuses_short_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
