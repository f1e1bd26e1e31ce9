/* Unit tests for buf: the capped growable buffer. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "buf.h"

static void test_buf_append_grows_and_terminates(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 1 << 20);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(buf_append(&b, "abc", 3), 0);
    assert_int_equal(b.len, 3000);
    assert_int_equal(b.data[b.len], '\0');
    assert_memory_equal(b.data + 2997, "abc", 3);
    buf_free(&b);
}

static void test_buf_cap_refuses_and_leaves_unaltered(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 8);
    assert_int_equal(buf_puts(&b, "12345"), 0);
    assert_int_equal(buf_puts(&b, "6789"), -E2BIG);
    assert_int_equal(b.len, 5);
    assert_string_equal(b.data, "12345");
    assert_int_equal(buf_puts(&b, "678"), 0);
    assert_string_equal(b.data, "12345678");
    assert_int_equal(buf_printf(&b, "%d", 9), -E2BIG);
    buf_free(&b);
}

static void test_buf_printf_formats(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 1024);
    assert_int_equal(buf_printf(&b, "%s=%d", "n", 42), 0);
    assert_int_equal(buf_printf(&b, ";%05.1f", 2.25), 0);
    assert_string_equal(b.data, "n=42;002.2");
    buf_free(&b);
}

static void test_buf_take_hands_over_storage(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 64);
    size_t len = 99;
    char *empty = buf_take(&b, &len);
    assert_non_null(empty);
    assert_int_equal(len, 0);
    assert_string_equal(empty, "");
    free(empty);
    buf_puts(&b, "hello");
    char *s = buf_take(&b, &len);
    assert_string_equal(s, "hello");
    assert_int_equal(len, 5);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    free(s);
}

static void test_buf_reset_keeps_storage(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 64);
    buf_puts(&b, "hello");
    char *before = b.data;
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_ptr_equal(b.data, before);
    assert_string_equal(b.data, "");
    buf_free(&b);
    buf_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_append_grows_and_terminates),
        cmocka_unit_test(test_buf_cap_refuses_and_leaves_unaltered),
        cmocka_unit_test(test_buf_printf_formats),
        cmocka_unit_test(test_buf_take_hands_over_storage),
        cmocka_unit_test(test_buf_reset_keeps_storage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
