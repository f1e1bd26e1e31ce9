/* Unit tests for serve_load_config: where the configuration comes from
 * and which source wins (file < environment < command line). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "serve.h"

static char path[64];

static int setup(void **state)
{
    (void)state;
    snprintf(path, sizeof(path), "/tmp/ferry-test-serve-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *doc = "{\"listen\":\"127.0.0.1:9000\",\"spool\":{\"dir\":\"/from/file\"},"
                      "\"log\":{\"level\":\"warn\"},\"peers\":{\"out\":{\"type\":\"stdout\"}},"
                      "\"routes\":[{\"to\":[\"out\"]}]}";
    assert_int_equal(write(fd, doc, strlen(doc)), (ssize_t)strlen(doc));
    close(fd);
    unsetenv("FERRY_CONFIG");
    unsetenv("FERRY_LISTEN");
    unsetenv("FERRY_SPOOL_DIR");
    unsetenv("FERRY_LOG_LEVEL");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    unsetenv("FERRY_CONFIG");
    unsetenv("FERRY_LISTEN");
    unsetenv("FERRY_SPOOL_DIR");
    unsetenv("FERRY_LOG_LEVEL");
    return 0;
}

static void test_serve_embedded_default_without_file(void **state)
{
    (void)state;
    struct serve_options o = {0};
    struct config *cfg = serve_load_config(&o);
    assert_non_null(cfg);
    assert_string_equal(cfg->listen, "127.0.0.1:8080");
    assert_string_equal(cfg->spool.dir, "./ferry-data");
    assert_int_equal(cfg->n_peers, 1);
    assert_int_equal(cfg->peers[0].type, PEER_STDOUT);
    config_destroy(cfg);
}

static void test_serve_file_from_ferry_config_env(void **state)
{
    (void)state;
    setenv("FERRY_CONFIG", path, 1);
    struct serve_options o = {0};
    struct config *cfg = serve_load_config(&o);
    assert_non_null(cfg);
    assert_string_equal(cfg->listen, "127.0.0.1:9000");
    assert_string_equal(cfg->peers[0].name, "out");
    config_destroy(cfg);
}

static void test_serve_env_beats_file_and_flags_beat_env(void **state)
{
    (void)state;
    setenv("FERRY_LISTEN", "127.0.0.1:9100", 1);
    setenv("FERRY_SPOOL_DIR", "/from/env", 1);
    setenv("FERRY_LOG_LEVEL", "debug", 1);
    struct serve_options o = {.config_path = path, .listen = "127.0.0.1:9200"};
    struct config *cfg = serve_load_config(&o);
    assert_non_null(cfg);
    assert_string_equal(cfg->listen, "127.0.0.1:9200");   /* flag */
    assert_string_equal(cfg->spool.dir, "/from/env");     /* env over file */
    assert_int_equal(cfg->log.level, LOG_DEBUG);          /* env over file */
    config_destroy(cfg);

    o = (struct serve_options){.config_path = path, .spool_dir = "/from/flag",
                               .log_level = "error"};
    cfg = serve_load_config(&o);
    assert_non_null(cfg);
    assert_string_equal(cfg->spool.dir, "/from/flag");
    assert_int_equal(cfg->log.level, LOG_ERROR);
    config_destroy(cfg);
}

static void test_serve_bad_flag_or_file_is_refused(void **state)
{
    (void)state;
    struct serve_options o = {.config_path = path, .listen = "nonsense"};
    assert_null(serve_load_config(&o));
    o = (struct serve_options){.config_path = path, .log_level = "loud"};
    assert_null(serve_load_config(&o));
    o = (struct serve_options){.config_path = "/nonexistent/ferry.json"};
    assert_null(serve_load_config(&o));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_serve_embedded_default_without_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_serve_file_from_ferry_config_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_serve_env_beats_file_and_flags_beat_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_serve_bad_flag_or_file_is_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
