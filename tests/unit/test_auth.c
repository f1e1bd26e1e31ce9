/* Unit tests for auth: bearer token checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "auth.h"

static void test_auth_no_token_configured_allows_all(void **state)
{
    (void)state;
    assert_true(auth_bearer_ok(NULL, NULL));
    assert_true(auth_bearer_ok("Bearer whatever", NULL));
}

static void test_auth_exact_token_passes(void **state)
{
    (void)state;
    assert_true(auth_bearer_ok("Bearer s3cret", "s3cret"));
    assert_true(auth_bearer_ok("bearer s3cret", "s3cret"));
}

static void test_auth_rejects_wrong_missing_or_prefix(void **state)
{
    (void)state;
    assert_false(auth_bearer_ok(NULL, "s3cret"));
    assert_false(auth_bearer_ok("", "s3cret"));
    assert_false(auth_bearer_ok("Basic s3cret", "s3cret"));
    assert_false(auth_bearer_ok("Bearer s3cre", "s3cret"));
    assert_false(auth_bearer_ok("Bearer s3crett", "s3cret"));
    assert_false(auth_bearer_ok("Bearer ", "s3cret"));
    assert_false(auth_bearer_ok("s3cret", "s3cret"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auth_no_token_configured_allows_all),
        cmocka_unit_test(test_auth_exact_token_passes),
        cmocka_unit_test(test_auth_rejects_wrong_missing_or_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
