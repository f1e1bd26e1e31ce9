/*
 * test_schedule: the scheduler against a real spool in a fresh temporary
 * directory, with an injected clock. The tests drive schedule_load and
 * schedule_tick themselves (no thread), so "time passes" by setting the
 * clock, and a restart is a new scheduler on the same spool. One test runs
 * the real thread on the real clock, and asserts only that it fires and
 * stops.
 */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "config.h"
#include "cron.h"
#include "metrics.h"
#include "schedule.h"
#include "serve.h"
#include "spool.h"

static atomic_llong test_now;

static int64_t test_clock(void *arg)
{
    (void)arg;
    return atomic_load(&test_now);
}

/* Wall ms of a UTC date and time (seconds too). */
static int64_t at(int y, int mo, int d, int h, int mi, int s)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                    .tm_hour = h, .tm_min = mi, .tm_sec = s};
    return (int64_t)timegm(&tm) * 1000;
}

struct fixture {
    char dir[64];
    struct spool *spool;
    struct spool_reader *r;
    struct config *cfg;
};

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void open_spool(struct fixture *f, int64_t max_bytes)
{
    char err[256] = "";
    struct spool_options opt = {.dir = f->dir, .max_bytes = max_bytes,
                                .dedupe_window_s = 600,
                                .clock_ms = test_clock};
    f->spool = spool_open(&opt, err, sizeof(err));
    if (!f->spool)
        fail_msg("spool_open: %s", err);
    assert_int_equal(spool_start(f->spool), 0);
    f->r = spool_reader_open(f->spool);
    assert_non_null(f->r);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_schedule.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    atomic_store(&test_now, at(2026, 1, 1, 10, 0, 30));
    metrics_init();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    spool_reader_close(f->r);
    spool_close(f->spool);
    config_destroy(f->cfg);
    nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* A config with peers a and b; @routes and @schedules are JSON arrays. */
static struct config *make_config(const char *routes, const char *schedules)
{
    char doc[2048];
    struct config_errors errs;
    config_errors_init(&errs);
    snprintf(doc, sizeof(doc),
             "{\"peers\": {\"a\": {\"type\": \"stdout\"},"
             " \"b\": {\"type\": \"stdout\"}},"
             " \"routes\": %s, \"schedules\": %s}",
             routes, schedules);
    struct config *cfg = config_parse(doc, strlen(doc), "test", &errs);
    if (!cfg)
        fail_msg("config_parse: %s", errs.n ? errs.items[0] : "?");
    config_errors_free(&errs);
    return cfg;
}

static const char ALL_TO_A[] = "[{\"to\": [\"a\"]}]";

/* One schedule "tick" with expression @cron, routed to peer a. */
static void use_schedule(struct fixture *f, const char *cron)
{
    char sched[512];
    snprintf(sched, sizeof(sched),
             "[{\"name\": \"tick\", \"cron\": \"%s\", \"event\": {\"type\":"
             " \"com.example.tick\", \"source\": \"/ferry/tick\","
             " \"data\": {\"n\": 1}}}]",
             cron);
    config_destroy(f->cfg);
    f->cfg = make_config(ALL_TO_A, sched);
}

/* A scheduler on f->cfg, loaded ("started") at the clock's now. */
static struct schedule *boot(struct fixture *f)
{
    char err[256] = "";
    struct schedule_deps d = {.cfg = f->cfg, .spool = f->spool,
                              .clock_ms = test_clock};
    struct schedule *s = schedule_create(&d, err, sizeof(err));
    if (!s)
        fail_msg("schedule_create: %s", err);
    assert_int_equal(schedule_load(s), 0);
    return s;
}

static int64_t tick_at(struct schedule *s, int64_t now)
{
    atomic_store(&test_now, now);
    return schedule_tick(s);
}

/* The ids of @peer's stored events, comma-separated, in acceptance order. */
static const char *ids(struct fixture *f, const char *peer, char *buf,
                       size_t len)
{
    struct spool_delivery d[64];
    long n = spool_fetch_due(f->r, peer, INT64_MAX - 1, 64, NULL, NULL, d);
    assert_true(n >= 0);
    buf[0] = '\0';
    for (long i = 0; i < n; i++) {
        size_t used = strlen(buf);
        snprintf(buf + used, len - used, "%s%s", i ? "," : "", d[i].event_id);
        spool_delivery_free(&d[i]);
    }
    return buf;
}

static int64_t recorded(struct fixture *f, const char *name)
{
    int64_t slot = -1;
    int rc = spool_schedule_last(f->r, name, &slot);
    assert_true(rc >= 0);
    return rc ? slot : -1;
}

/* ---- firing --------------------------------------------------------------- */

static void test_schedule_new_schedule_starts_now_without_backfill(void **state)
{
    struct fixture *f = *state;
    char got[512];
    open_spool(f, 0);
    use_schedule(f, "* * * * *");
    struct schedule *s = boot(f); /* at 10:00:30 */
    assert_int_equal(tick_at(s, at(2026, 1, 1, 10, 0, 30)),
                     at(2026, 1, 1, 10, 1, 0));
    assert_string_equal(ids(f, "a", got, sizeof(got)), "");
    assert_int_equal(recorded(f, "tick"), -1);
    assert_int_equal(tick_at(s, at(2026, 1, 1, 10, 1, 0)),
                     at(2026, 1, 1, 10, 2, 0));
    assert_string_equal(ids(f, "a", got, sizeof(got)),
                        "tick-2026-01-01T10:01:00Z");
    assert_int_equal(recorded(f, "tick"), at(2026, 1, 1, 10, 1, 0));
    assert_int_equal(metrics_received_total(METRICS_MODE_SCHEDULE), 1);
    /* Nothing more until the next slot, however often it looks. */
    assert_int_equal(tick_at(s, at(2026, 1, 1, 10, 1, 59)),
                     at(2026, 1, 1, 10, 2, 0));
    assert_string_equal(ids(f, "a", got, sizeof(got)),
                        "tick-2026-01-01T10:01:00Z");
    schedule_destroy(s);
}

static void test_schedule_event_has_template_id_time_specversion(void **state)
{
    struct fixture *f = *state;
    struct spool_delivery d[4];
    open_spool(f, 0);
    use_schedule(f, "@every 1s");
    struct schedule *s = boot(f);
    tick_at(s, at(2026, 1, 1, 10, 0, 31));
    long n = spool_fetch_due(f->r, "a", INT64_MAX - 1, 4, NULL, NULL, d);
    assert_int_equal(n, 1);
    json_t *ev = json_loadb(d[0].text, d[0].text_len, 0, NULL);
    assert_non_null(ev);
    assert_string_equal(json_string_value(json_object_get(ev, "id")),
                        "tick-2026-01-01T10:00:31Z");
    assert_string_equal(json_string_value(json_object_get(ev, "time")),
                        "2026-01-01T10:00:31Z");
    assert_string_equal(json_string_value(json_object_get(ev, "specversion")),
                        "1.0");
    assert_string_equal(json_string_value(json_object_get(ev, "type")),
                        "com.example.tick");
    assert_string_equal(json_string_value(json_object_get(ev, "source")),
                        "/ferry/tick");
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(ev, "data"), "n")),
                     1);
    json_decref(ev);
    spool_delivery_free(&d[0]);
    schedule_destroy(s);
}

/* A restart (a new scheduler on the same spool) does not fire again a slot
 * that was recorded, and fires the next one once. */
static void test_schedule_no_double_fire_across_restart(void **state)
{
    struct fixture *f = *state;
    char got[512];
    open_spool(f, 0);
    use_schedule(f, "* * * * *");
    struct schedule *s = boot(f);
    tick_at(s, at(2026, 1, 1, 10, 1, 0));
    schedule_destroy(s);

    atomic_store(&test_now, at(2026, 1, 1, 10, 1, 0)); /* same instant */
    s = boot(f);
    assert_int_equal(tick_at(s, at(2026, 1, 1, 10, 1, 0)),
                     at(2026, 1, 1, 10, 2, 0));
    assert_int_equal(tick_at(s, at(2026, 1, 1, 10, 1, 40)),
                     at(2026, 1, 1, 10, 2, 0));
    tick_at(s, at(2026, 1, 1, 10, 2, 0));
    schedule_destroy(s);
    assert_string_equal(ids(f, "a", got, sizeof(got)),
                        "tick-2026-01-01T10:01:00Z,tick-2026-01-01T10:02:00Z");
}

/* Two schedulers on one spool whose memories disagree (a crash between
 * the commit and the in-memory update, or a reload race): the spool
 * refuses the slot the second time, even with dedupe off. */
static void test_schedule_spool_refuses_a_slot_fired_elsewhere(void **state)
{
    struct fixture *f = *state;
    char err[256] = "", got[512];
    struct spool_options opt = {.dir = f->dir, .clock_ms = test_clock};
    f->spool = spool_open(&opt, err, sizeof(err)); /* dedupe off */
    assert_non_null(f->spool);
    assert_int_equal(spool_start(f->spool), 0);
    f->r = spool_reader_open(f->spool);
    use_schedule(f, "* * * * *");
    struct schedule *a = boot(f), *b = boot(f);
    tick_at(a, at(2026, 1, 1, 10, 1, 0));
    assert_int_equal(tick_at(b, at(2026, 1, 1, 10, 1, 0)),
                     at(2026, 1, 1, 10, 2, 0));
    assert_string_equal(ids(f, "a", got, sizeof(got)),
                        "tick-2026-01-01T10:01:00Z");
    assert_int_equal(metrics_duplicates_total(), 1);
    schedule_destroy(a);
    schedule_destroy(b);
}

/* ---- missed slots ------------------------------------------------------------ */

static void test_schedule_missed_slot_within_grace_fires_once(void **state)
{
    struct fixture *f = *state;
    char got[512];
    open_spool(f, 0);
    use_schedule(f, "* * * * *");
    struct schedule *s = boot(f);
    tick_at(s, at(2026, 1, 1, 10, 1, 0));
    schedule_destroy(s);

    /* Down from 10:01:10 to 10:04:20: 10:02, 10:03, 10:04 missed. */
    atomic_store(&test_now, at(2026, 1, 1, 10, 4, 20));
    s = boot(f);
    assert_int_equal(tick_at(s, at(2026, 1, 1, 10, 4, 20)),
                     at(2026, 1, 1, 10, 5, 0));
    assert_string_equal(ids(f, "a", got, sizeof(got)),
                        "tick-2026-01-01T10:01:00Z,tick-2026-01-01T10:04:00Z");
    assert_int_equal(recorded(f, "tick"), at(2026, 1, 1, 10, 4, 0));
    tick_at(s, at(2026, 1, 1, 10, 4, 59));
    assert_string_equal(ids(f, "a", got, sizeof(got)),
                        "tick-2026-01-01T10:01:00Z,tick-2026-01-01T10:04:00Z");
    schedule_destroy(s);
}

static void test_schedule_missed_slots_older_than_grace_skipped(void **state)
{
    struct fixture *f = *state;
    char got[512];
    open_spool(f, 0);
    use_schedule(f, "@hourly");
    struct schedule *s = boot(f);
    tick_at(s, at(2026, 1, 1, 11, 0, 0));
    schedule_destroy(s);

    /* 12:00 was missed 5 min 1 s ago: beyond the grace period. */
    atomic_store(&test_now, at(2026, 1, 1, 12, 5, 1));
    s = boot(f);
    assert_int_equal(tick_at(s, at(2026, 1, 1, 12, 5, 1)),
                     at(2026, 1, 1, 13, 0, 0));
    assert_string_equal(ids(f, "a", got, sizeof(got)),
                        "tick-2026-01-01T11:00:00Z");
    tick_at(s, at(2026, 1, 1, 13, 0, 0));
    assert_string_equal(ids(f, "a", got, sizeof(got)),
                        "tick-2026-01-01T11:00:00Z,tick-2026-01-01T13:00:00Z");
    schedule_destroy(s);

    /* Exactly at the grace period's end it still fires. */
    atomic_store(&test_now, at(2026, 1, 1, 14, 5, 0));
    s = boot(f);
    tick_at(s, at(2026, 1, 1, 14, 5, 0));
    assert_int_equal(recorded(f, "tick"), at(2026, 1, 1, 14, 0, 0));
    schedule_destroy(s);
}

/* @every: the grace period is the interval when shorter than 5 minutes,
 * so the latest missed slot always fires; 5 minutes above that. */
static void test_schedule_every_grace_is_interval_or_5min(void **state)
{
    struct fixture *f = *state;
    char got[512];
    open_spool(f, 0);
    use_schedule(f, "@every 10s");
    struct schedule *s = boot(f); /* 10:00:30 */
    tick_at(s, at(2026, 1, 1, 10, 0, 40));
    schedule_destroy(s);
    atomic_store(&test_now, at(2026, 1, 1, 10, 1, 5));
    s = boot(f);
    assert_int_equal(tick_at(s, at(2026, 1, 1, 10, 1, 5)),
                     at(2026, 1, 1, 10, 1, 10));
    assert_string_equal(ids(f, "a", got, sizeof(got)),
                        "tick-2026-01-01T10:00:40Z,tick-2026-01-01T10:01:00Z");
    schedule_destroy(s);

    use_schedule(f, "@every 10m");
    s = boot(f);
    tick_at(s, at(2026, 1, 1, 10, 10, 0));
    schedule_destroy(s);
    atomic_store(&test_now, at(2026, 1, 1, 10, 25, 1));
    s = boot(f);
    assert_int_equal(tick_at(s, at(2026, 1, 1, 10, 25, 1)),
                     at(2026, 1, 1, 10, 30, 0));
    assert_int_equal(recorded(f, "tick"), at(2026, 1, 1, 10, 10, 0));
    schedule_destroy(s);
}

/* ---- routing and failures ----------------------------------------------------- */

static void test_schedule_event_is_routed_like_ingest(void **state)
{
    struct fixture *f = *state;
    char got[512];
    open_spool(f, 0);
    f->cfg = make_config(
        "[{\"filter\": {\"exact\": {\"type\": \"other\"}}, \"to\": [\"a\"]},"
        " {\"filter\": {\"prefix\": {\"type\": \"com.example.\"}},"
        " \"to\": [\"b\"]}]",
        "[{\"name\": \"x\", \"cron\": \"@every 1s\", \"event\": {\"type\":"
        " \"com.example.x\", \"source\": \"/s\"}},"
        " {\"name\": \"lost\", \"cron\": \"@every 1s\", \"event\": {\"type\":"
        " \"nowhere\", \"source\": \"/s\"}}]");
    struct schedule *s = boot(f);
    tick_at(s, at(2026, 1, 1, 10, 0, 31));
    assert_string_equal(ids(f, "a", got, sizeof(got)), "");
    assert_string_equal(ids(f, "b", got, sizeof(got)),
                        "x-2026-01-01T10:00:31Z");
    /* Matched no route: dropped, as ingest drops it, but the slot counts. */
    assert_int_equal(recorded(f, "lost"), at(2026, 1, 1, 10, 0, 31));
    assert_int_equal(metrics_received_total(METRICS_MODE_SCHEDULE), 2);
    schedule_destroy(s);
}

/* A spool that refuses the event leaves the slot unrecorded and retries
 * after SCHEDULE_RETRY_MS. */
static void test_schedule_refused_event_is_retried(void **state)
{
    struct fixture *f = *state;
    open_spool(f, 1); /* max_bytes 1: every submission is refused */
    use_schedule(f, "* * * * *");
    struct schedule *s = boot(f);
    int64_t t = at(2026, 1, 1, 10, 1, 0);
    assert_int_equal(tick_at(s, t), t + SCHEDULE_RETRY_MS);
    assert_int_equal(recorded(f, "tick"), -1);
    assert_int_equal(tick_at(s, t + 500), t + SCHEDULE_RETRY_MS);
    assert_int_equal(tick_at(s, t + SCHEDULE_RETRY_MS),
                     t + 2 * SCHEDULE_RETRY_MS);
    assert_int_equal(metrics_received_total(METRICS_MODE_SCHEDULE), 0);
    schedule_destroy(s);
}

/* ---- configuration ---------------------------------------------------------------- */

static void test_schedule_check_config_reports_cron_and_event(void **state)
{
    struct fixture *f = *state;
    struct config_errors errs;
    config_errors_init(&errs);
    f->cfg = make_config(ALL_TO_A,
        "[{\"name\": \"a\", \"cron\": \"0 25 * * *\", \"event\": {\"type\":"
        " \"t\", \"source\": \"/s\"}},"
        " {\"name\": \"b\", \"cron\": \"@every 5m\", \"event\": {\"type\":"
        " \"t\", \"source\": \"/s\", \"Bad_Name\": 1}},"
        " {\"name\": \"c\", \"cron\": \"@daily\", \"event\": {\"type\":"
        " \"t\", \"source\": \"/s\"}}]");
    assert_int_equal(schedule_check_config(f->cfg, &errs), -EINVAL);
    assert_int_equal(errs.n, 2);
    assert_string_equal(errs.items[0], "schedules[0].cron: cron field 2"
                                       " (hour): 25 is out of range 0-23");
    assert_non_null(strstr(errs.items[1], "schedules[1].event: "));
    assert_non_null(strstr(errs.items[1], "Bad_Name"));
    config_errors_free(&errs);

    char err[256] = "";
    struct schedule_deps d = {.cfg = f->cfg};
    assert_null(schedule_create(&d, err, sizeof(err)));
    assert_string_equal(err, "schedules[0].cron: cron field 2 (hour): 25 is"
                             " out of range 0-23");
}

/* serve_load_config (serve and check-config) refuses a bad expression. */
static void test_schedule_serve_load_config_refuses_bad_cron(void **state)
{
    (void)state;
    char path[64];
    snprintf(path, sizeof(path), "/tmp/test_schedule_cfg.XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *doc = "{\"schedules\": [{\"name\": \"t\", \"cron\":"
                      " \"* * * * * *\", \"event\": {\"type\": \"t\","
                      " \"source\": \"/s\"}}]}";
    assert_int_equal(write(fd, doc, strlen(doc)), (ssize_t)strlen(doc));
    close(fd);
    struct serve_options o = {.config_path = path};
    assert_null(serve_load_config(&o));
    unlink(path);
}

/* ---- the thread ---------------------------------------------------------------------- */

static long stored_count(struct fixture *f)
{
    char got[2048];
    const char *s = ids(f, "a", got, sizeof(got));
    long n = *s ? 1 : 0;
    for (; *s; s++)
        n += *s == ',';
    return n;
}

/* On the real clock: "@every 1s" fires within a few seconds, stop returns,
 * and a stopped scheduler starts again. */
static void test_schedule_thread_fires_and_stops(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    open_spool(f, 0);
    use_schedule(f, "@every 1s");
    struct schedule_deps d = {.cfg = f->cfg, .spool = f->spool};
    struct schedule *s = schedule_create(&d, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(schedule_start(s), 0);
    assert_int_equal(schedule_start(s), -EALREADY);
    for (int i = 0; i < 100 && stored_count(f) < 1; i++)
        usleep(50000);
    schedule_stop(s);
    long n = stored_count(f);
    assert_true(n >= 1);
    assert_int_equal(schedule_start(s), 0);
    for (int i = 0; i < 100 && stored_count(f) <= n; i++)
        usleep(50000);
    schedule_destroy(s);
    assert_true(stored_count(f) > n);
}

static void test_schedule_without_schedules_runs_no_thread(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    open_spool(f, 0);
    f->cfg = make_config(ALL_TO_A, "[]");
    struct schedule_deps d = {.cfg = f->cfg, .spool = f->spool};
    struct schedule *s = schedule_create(&d, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(schedule_start(s), 0);
    assert_true(schedule_tick(s) == CRON_NEVER);
    schedule_stop(s);
    schedule_stop(s);
    schedule_destroy(s);
    schedule_destroy(NULL);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_schedule_new_schedule_starts_now_without_backfill),
        T(test_schedule_event_has_template_id_time_specversion),
        T(test_schedule_no_double_fire_across_restart),
        T(test_schedule_spool_refuses_a_slot_fired_elsewhere),
        T(test_schedule_missed_slot_within_grace_fires_once),
        T(test_schedule_missed_slots_older_than_grace_skipped),
        T(test_schedule_every_grace_is_interval_or_5min),
        T(test_schedule_event_is_routed_like_ingest),
        T(test_schedule_refused_event_is_retried),
        T(test_schedule_check_config_reports_cron_and_event),
        T(test_schedule_serve_load_config_refuses_bad_cron),
        T(test_schedule_thread_fires_and_stops),
        T(test_schedule_without_schedules_runs_no_thread),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
