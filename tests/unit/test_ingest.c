/*
 * Unit tests for ingest: the listener on port 0 over a real spool (no
 * dispatcher), driven with libcurl. Checks what a request leaves behind
 * in the spool, not just the status line.
 */
#include <curl/curl.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "buf.h"
#include "config.h"
#include "ingest.h"
#include "metrics.h"
#include "spool.h"

struct fixture {
    char dir[64];
    struct config *cfg;
    struct spool *spool;
    struct spool_reader *reader;
    struct ingest *ing;
    char url[96];
};

static void healthy(void *arg, struct health_inputs *in)
{
    (void)arg;
    *in = (struct health_inputs){.spool_writable = true};
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/ferry-test-ingest-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    const char *doc = "{\"listen\":\"127.0.0.1:0\",\"ingest\":{\"max_body_bytes\":2048,\"max_batch\":3},"
                      "\"peers\":{\"a\":{\"type\":\"stdout\"},\"b\":{\"type\":\"stdout\"}},"
                      "\"routes\":[{\"to\":[\"a\"]},"
                      "{\"filter\":{\"prefix\":{\"type\":\"com.b.\"}},\"to\":[\"b\",\"a\"]}]}";
    struct config_errors errs;
    config_errors_init(&errs);
    f->cfg = config_parse(doc, strlen(doc), "test", &errs);
    assert_non_null(f->cfg);
    config_errors_free(&errs);
    metrics_init();
    char err[256];
    struct spool_options so = {.dir = f->dir, .dedupe_window_s = 600};
    f->spool = spool_open(&so, err, sizeof(err));
    assert_non_null(f->spool);
    f->reader = spool_reader_open(f->spool);
    assert_int_equal(spool_start(f->spool), 0);
    struct ingest_deps deps = {.cfg = f->cfg, .spool = f->spool,
                               .health_snapshot = healthy, .threads = 1};
    f->ing = ingest_start(&deps, err, sizeof(err));
    assert_non_null(f->ing);
    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%u/v1/events", ingest_port(f->ing));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    ingest_wait_idle(f->ing, INT64_MAX);
    ingest_stop(f->ing);
    spool_reader_close(f->reader);
    spool_close(f->spool);
    config_destroy(f->cfg);
    metrics_shutdown();
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
    return buf_append(arg, p, size * n) == 0 ? size * n : 0;
}

/* POST and return the status; the answer's body lands in @answer. */
static long post(const char *url, const char *const *headers, const char *body,
                 struct buf *answer)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    for (; headers && *headers; headers++)
        h = curl_slist_append(h, *headers);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, answer);
    long status = 0;
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return status;
}

static long pending(struct fixture *f, const char *peer)
{
    struct spool_delivery d[16];
    long n = spool_fetch_due(f->reader, peer, INT64_MAX - 1, 16, NULL, NULL, d);
    for (long i = 0; i < n; i++)
        spool_delivery_free(&d[i]);
    return n;
}

static const char *const STRUCTURED[] = {"Content-Type: application/cloudevents+json", NULL};
static const char *const BATCH[] = {"Content-Type: application/cloudevents-batch+json", NULL};

static void test_ingest_structured_is_stored_before_202(void **state)
{
    struct fixture *f = *state;
    struct buf answer;
    buf_init(&answer, 4096);
    long st = post(f->url, STRUCTURED,
                   "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"com.b.x\"}",
                   &answer);
    assert_int_equal(st, 202);
    assert_string_equal(answer.data, "{\"accepted\":1}");
    /* The answer came after the commit: both routed peers have it now. */
    assert_int_equal(pending(f, "a"), 1);
    assert_int_equal(pending(f, "b"), 1);
    buf_free(&answer);
}

static void test_ingest_batch_is_all_or_nothing(void **state)
{
    struct fixture *f = *state;
    struct buf answer;
    buf_init(&answer, 4096);
    long st = post(f->url, BATCH,
                   "[{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\"},"
                   "{\"specversion\":\"1.0\",\"id\":\"2\",\"source\":\"/s\"}]",
                   &answer);
    assert_int_equal(st, 400);
    assert_non_null(strstr(answer.data, "\"index\":1"));
    assert_non_null(strstr(answer.data, "\"attribute\":\"type\""));
    assert_int_equal(pending(f, "a"), 0);
    buf_reset(&answer);
    st = post(f->url, BATCH,
              "[{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\"},"
              "{\"specversion\":\"1.0\",\"id\":\"2\",\"source\":\"/s\",\"type\":\"t\"}]",
              &answer);
    assert_int_equal(st, 202);
    assert_string_equal(answer.data, "{\"accepted\":2}");
    assert_int_equal(pending(f, "a"), 2);
    assert_int_equal(pending(f, "b"), 0);
    buf_free(&answer);
}

static void test_ingest_limits_and_media_type(void **state)
{
    struct fixture *f = *state;
    struct buf answer;
    buf_init(&answer, 8192);
    char big[4096];
    memset(big, ' ', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(post(f->url, STRUCTURED, big, &answer), 413);
    assert_non_null(strstr(answer.data, "too_large"));
    buf_reset(&answer);
    const char *four = "[{},{},{},{}]";
    assert_int_equal(post(f->url, BATCH, four, &answer), 413);
    buf_reset(&answer);
    const char *const text[] = {"Content-Type: text/plain", NULL};
    assert_int_equal(post(f->url, text, "hello", &answer), 415);
    assert_non_null(strstr(answer.data, "unsupported_media_type"));
    assert_int_equal(pending(f, "a"), 0);
    assert_int_equal(metrics_rejected_total(METRICS_REJECT_TOO_LARGE), 2);
    buf_free(&answer);
}

static void test_ingest_draining_answers_503(void **state)
{
    struct fixture *f = *state;
    struct buf answer;
    buf_init(&answer, 4096);
    ingest_set_draining(f->ing);
    long st = post(f->url, STRUCTURED,
                   "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\"}",
                   &answer);
    assert_int_equal(st, 503);
    assert_non_null(strstr(answer.data, "unavailable"));
    assert_int_equal(pending(f, "a"), 0);
    buf_free(&answer);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ingest_structured_is_stored_before_202, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ingest_batch_is_all_or_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ingest_limits_and_media_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ingest_draining_answers_503, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
