/*
 * test_spool: the durable spool against a real SQLite file in a fresh
 * temporary directory per test. Time is injected through
 * spool_options.clock_ms, so nothing sleeps to make time pass: the tests
 * wait on a condition variable for the writer's callbacks, and one polls
 * for the background checkpoint. No assertion is about durations.
 */
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "spool.h"

#define T0 1700000000000LL

static atomic_llong test_now;

/* RLIMIT_FSIZE as it was before a test lowered it (teardown restores). */
static struct rlimit saved_fsize;
static bool fsize_lowered;

static int64_t test_clock(void *arg)
{
    (void)arg;
    return atomic_load(&test_now);
}

struct fixture {
    char dir[64];
    struct spool *s;
    struct spool_reader *r;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n_done;
    int n_commit_cb;
    size_t n_new;
    int64_t settled[256];
    size_t n_settled;
    size_t n_settled_total; /* not capped at 256 */
};

/* ---- harness ------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_spool.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    atomic_store(&test_now, T0);
    *state = f;
    return 0;
}

static void restore_fsize(void)
{
    if (fsize_lowered)
        setrlimit(RLIMIT_FSIZE, &saved_fsize);
    fsize_lowered = false;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    restore_fsize();
    spool_reader_close(f->r);
    spool_close(f->s);
    nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
    return 0;
}

static void on_commit(void *arg, const struct spool_commit *c)
{
    struct fixture *f = arg;
    pthread_mutex_lock(&f->mu);
    f->n_commit_cb++;
    f->n_new += c->n_new_deliveries;
    for (size_t i = 0; i < c->n_settled && f->n_settled < 256; i++)
        f->settled[f->n_settled++] = c->settled[i];
    f->n_settled_total += c->n_settled;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void on_done(struct spool_write *w)
{
    struct fixture *f = w->arg;
    pthread_mutex_lock(&f->mu);
    f->n_done++;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* Open (not start) the spool of @f; reader opened too. */
static void open_spool(struct fixture *f, int64_t max_bytes, int64_t window_s)
{
    char err[256] = "";
    struct spool_options opt = {.dir = f->dir,
                                .max_bytes = max_bytes,
                                .dedupe_window_s = window_s,
                                .clock_ms = test_clock};
    f->s = spool_open(&opt, err, sizeof(err));
    if (!f->s)
        fail_msg("spool_open: %s", err);
    spool_set_commit_cb(f->s, on_commit, f);
    f->r = spool_reader_open(f->s);
    assert_non_null(f->r);
}

static void start_spool(struct fixture *f, int64_t max_bytes, int64_t window_s)
{
    open_spool(f, max_bytes, window_s);
    assert_int_equal(spool_start(f->s), 0);
}

static void close_spool(struct fixture *f)
{
    spool_reader_close(f->r);
    spool_close(f->s);
    f->r = NULL;
    f->s = NULL;
}

static void wait_done(struct fixture *f, int n)
{
    pthread_mutex_lock(&f->mu);
    while (f->n_done < n)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
}

static void wait_settled(struct fixture *f, size_t n)
{
    pthread_mutex_lock(&f->mu);
    while (f->n_settled < n)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
}

/* The commit callback runs after the done callbacks: wait for it too. */
static void wait_commits(struct fixture *f, int n)
{
    pthread_mutex_lock(&f->mu);
    while (f->n_commit_cb < n)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
}

static size_t new_deliveries(struct fixture *f)
{
    pthread_mutex_lock(&f->mu);
    size_t n = f->n_new;
    pthread_mutex_unlock(&f->mu);
    return n;
}

static struct spool_event event(const char *id, const char *const *peers,
                                size_t n_peers, const char *text)
{
    return (struct spool_event){.source = "/test",
                                .id = id,
                                .format = EVENT_STRUCTURED,
                                .text = text,
                                .text_len = text ? strlen(text) : 0,
                                .peers = peers,
                                .n_peers = n_peers,
                                .received_ms = T0};
}

static void prepare_write(struct fixture *f, struct spool_write *w,
                          const struct spool_event *evs, size_t n)
{
    memset(w, 0, sizeof(*w));
    w->events = evs;
    w->n_events = n;
    w->done = on_done;
    w->arg = f;
}

/* Submit @n events as one submission and wait for its done callback. */
static int submit_sync(struct fixture *f, const struct spool_event *evs,
                       size_t n, size_t *dups)
{
    struct spool_write w;
    prepare_write(f, &w, evs, n);
    pthread_mutex_lock(&f->mu);
    int target = f->n_done + 1;
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(spool_submit(f->s, &w), 0);
    wait_done(f, target);
    if (dups)
        *dups = w.n_duplicates;
    return w.result;
}

static void post_sync(struct fixture *f, const struct spool_outcome *o,
                      size_t n)
{
    pthread_mutex_lock(&f->mu);
    size_t target = f->n_settled + n;
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(spool_post_outcomes(f->s, o, n), 0);
    wait_settled(f, target);
}

static struct spool_outcome outcome(int64_t id, enum spool_outcome_kind kind,
                                    int attempt, long status)
{
    struct spool_outcome o = {.delivery_id = id,
                              .kind = kind,
                              .attempt = attempt,
                              .at_ms = T0 + attempt,
                              .duration_ms = 7,
                              .status = status};
    if (status == 0)
        snprintf(o.error, sizeof(o.error), "connection refused");
    return o;
}

/* All due deliveries of @peer (at most 64); returns the count. */
static long fetch_all(struct fixture *f, const char *peer, int64_t now,
                      struct spool_delivery *out)
{
    long n = spool_fetch_due(f->r, peer, now, 64, NULL, NULL, out);
    assert_true(n >= 0);
    return n;
}

static void free_all(struct spool_delivery *d, long n)
{
    for (long i = 0; i < n; i++)
        spool_delivery_free(&d[i]);
}

/* One integer from a query over the spool file, on a separate connection. */
static int64_t query_int(struct fixture *f, const char *sql)
{
    char path[128];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    snprintf(path, sizeof(path), "%s/spool.db", f->dir);
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static int64_t file_size(struct fixture *f, const char *name)
{
    char path[128];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

/*
 * Where the WAL's frames end: past the last frame whose salts match the
 * header's. The file may be longer (zeros walvfs put ahead, or frames
 * of an earlier generation).
 */
static int64_t wal_frames_end(struct fixture *f)
{
    char path[128];
    unsigned char h[32], fh[24];
    snprintf(path, sizeof(path), "%s/spool.db-wal", f->dir);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(h, 1, sizeof(h), fp), sizeof(h));
    uint32_t page = (uint32_t)h[8] << 24 | (uint32_t)h[9] << 16 |
                    (uint32_t)h[10] << 8 | h[11];
    int64_t end = 32;
    while (fseek(fp, (long)end, SEEK_SET) == 0 &&
           fread(fh, 1, sizeof(fh), fp) == sizeof(fh) &&
           memcmp(fh + 8, h + 16, 8) == 0)
        end += 24 + (int64_t)page;
    fclose(fp);
    return end;
}

/* The WAL header's checkpoint sequence: it changes when the WAL restarts. */
static uint32_t wal_checkpoint_seq(struct fixture *f)
{
    char path[128];
    unsigned char b[4] = {0};
    snprintf(path, sizeof(path), "%s/spool.db-wal", f->dir);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 12, SEEK_SET), 0);
    assert_int_equal(fread(b, 1, 4, fp), 4);
    fclose(fp);
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 |
           b[3];
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static void assert_counts(struct fixture *f, const char *peer,
                          int64_t pending, int64_t dead)
{
    int64_t p = -1, d = -1;
    spool_peer_counts(f->s, peer, &p, &d);
    assert_int_equal(p, pending);
    assert_int_equal(d, dead);
}

/* ---- storing and reading --------------------------------------------- */

static void test_spool_submit_then_fetch_due(void **state)
{
    struct fixture *f = *state;
    static const char *const ab[] = {"a", "b"}, *const a[] = {"a"},
                             *const b[] = {"b"};
    struct spool_event evs[3] = {event("e1", ab, 2, "{\"id\":\"e1\"}"),
                                 event("e2", a, 1, "{\"id\":\"e2\"}"),
                                 event("e3", b, 1, "{\"id\":\"e3\"}")};
    evs[0].partition_key = "k1";
    evs[1].format = EVENT_BINARY;
    evs[1].data = "\x00\x01\x02";
    evs[1].data_len = 3;
    evs[1].received_ms = T0 + 5;
    start_spool(f, 0, 600);

    assert_int_equal(submit_sync(f, evs, 3, NULL), 3);
    wait_commits(f, 1);
    assert_int_equal(new_deliveries(f), 4);
    assert_counts(f, "a", 2, 0);
    assert_counts(f, "b", 2, 0);
    assert_counts(f, "nobody", 0, 0);

    struct spool_delivery d[64];
    assert_int_equal(fetch_all(f, "a", T0 + 10, d), 2);
    assert_string_equal(d[0].event_id, "e1");
    assert_string_equal(d[0].partition_key, "k1");
    assert_string_equal(d[0].text, "{\"id\":\"e1\"}");
    assert_int_equal(d[0].text_len, strlen("{\"id\":\"e1\"}"));
    assert_int_equal(d[0].format, EVENT_STRUCTURED);
    assert_null(d[0].data);
    assert_int_equal(d[0].attempts, 0);
    assert_int_equal(d[0].received_ms, T0);
    assert_string_equal(d[1].event_id, "e2");
    assert_null(d[1].partition_key);
    assert_int_equal(d[1].format, EVENT_BINARY);
    assert_int_equal(d[1].data_len, 3);
    assert_memory_equal(d[1].data, "\x00\x01\x02", 3);
    assert_true(d[0].event_seq < d[1].event_seq);
    free_all(d, 2);

    /* e2 is received (and so due) at T0 + 5. */
    assert_int_equal(fetch_all(f, "a", T0, d), 1);
    free_all(d, 1);
    assert_int_equal(fetch_all(f, "b", T0 + 10, d), 2);
    assert_string_equal(d[0].event_id, "e1");
    assert_string_equal(d[1].event_id, "e3");
    free_all(d, 2);

    assert_int_equal(spool_next_due(f->r, "a", T0), T0 + 5);
    assert_int_equal(spool_next_due(f->r, "a", T0 + 5), INT64_MAX);
    assert_int_equal(spool_oldest_ms(f->r, "a"), T0);
    assert_int_equal(spool_oldest_ms(f->r, "nobody"), 0);
    char **names = NULL;
    assert_int_equal(spool_pending_peers(f->r, &names), 2);
    assert_string_equal(names[0], "a");
    assert_string_equal(names[1], "b");
    free(names[0]);
    free(names[1]);
    free(names);
    assert_true(spool_bytes(f->s) > 0);
    assert_true(spool_writable(f->s));
}

/* Decision: an event routed to no peer is accepted but not stored (no
 * delivery would ever free it); its source+id still counts for dedupe. */
static void test_spool_event_without_peers_not_stored_but_deduped(void **state)
{
    struct fixture *f = *state;
    struct spool_event ev = event("lonely", NULL, 0, "{}");
    size_t dups = 9;
    start_spool(f, 0, 600);

    assert_int_equal(submit_sync(f, &ev, 1, &dups), 1);
    assert_int_equal(dups, 0);
    assert_int_equal(query_int(f, "SELECT count(*) FROM events"), 0);
    assert_int_equal(submit_sync(f, &ev, 1, &dups), 0);
    assert_int_equal(dups, 1);
}

static void test_spool_group_commit_before_start(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"};
    enum { N = 20 };
    struct spool_event evs[N];
    struct spool_write w[N];
    char ids[N][16];
    open_spool(f, 0, 600);

    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof(ids[i]), "g%d", i);
        evs[i] = event(ids[i], p, 1, "{}");
        prepare_write(f, &w[i], &evs[i], 1);
        assert_int_equal(spool_submit(f->s, &w[i]), 0);
    }
    assert_int_equal(spool_start(f->s), 0);
    wait_done(f, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(w[i].result, 1);
    wait_commits(f, 1);
    assert_int_equal(spool_commit_count(f->s), 1);
    pthread_mutex_lock(&f->mu);
    assert_int_equal(f->n_commit_cb, 1);
    assert_int_equal(f->n_new, N);
    pthread_mutex_unlock(&f->mu);
}

/*
 * Submission A fails part way (its second event names a peer twice, which
 * the spool refuses with -EINVAL after A's first event was written) while B
 * in the same transaction commits. Nothing of A remains, not even its
 * dedupe claim.
 */
static void test_spool_submission_all_or_nothing(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"}, *const pp[] = {"p", "p"};
    struct spool_event a[2] = {event("a1", p, 1, "{}"),
                               event("a2", pp, 2, "{}")};
    struct spool_event b = event("b1", p, 1, "{}");
    struct spool_event c[2] = {event("c1", p, 1, "{}"),
                               event("c2", p, 1, NULL)};
    struct spool_write wa, wb, wc;
    open_spool(f, 0, 600);
    prepare_write(f, &wa, a, 2);
    prepare_write(f, &wb, &b, 1);
    prepare_write(f, &wc, c, 2);
    assert_int_equal(spool_submit(f->s, &wa), 0);
    assert_int_equal(spool_submit(f->s, &wb), 0);
    assert_int_equal(spool_submit(f->s, &wc), 0);
    assert_int_equal(spool_start(f->s), 0);
    wait_done(f, 3);

    assert_int_equal(wa.result, -EINVAL);
    assert_int_equal(wb.result, 1);
    assert_int_equal(wc.result, -EINVAL);
    wait_commits(f, 1);
    assert_int_equal(spool_commit_count(f->s), 1);
    assert_int_equal(new_deliveries(f), 1);
    assert_counts(f, "p", 1, 0);
    struct spool_delivery d[64];
    assert_int_equal(fetch_all(f, "p", T0, d), 1);
    assert_string_equal(d[0].event_id, "b1");
    free_all(d, 1);
    assert_int_equal(query_int(f, "SELECT count(*) FROM events"), 1);

    /* The rolled-back claims on a1 and c1 are gone: not duplicates. */
    size_t dups = 9;
    assert_int_equal(submit_sync(f, &a[0], 1, &dups), 1);
    assert_int_equal(dups, 0);
    assert_int_equal(submit_sync(f, &c[0], 1, &dups), 1);
    assert_int_equal(dups, 0);
}

/* ---- dedupe ---------------------------------------------------------- */

static void test_spool_dedupe_within_submission(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"};
    struct spool_event evs[3] = {event("x", p, 1, "{}"), event("y", p, 1, "{}"),
                                 event("x", p, 1, "{}")};
    size_t dups = 0;
    start_spool(f, 0, 600);

    assert_int_equal(submit_sync(f, evs, 3, &dups), 2);
    assert_int_equal(dups, 1);
    assert_counts(f, "p", 2, 0);
}

static void test_spool_dedupe_across_submissions_and_reopen(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"};
    struct spool_event ev = event("same", p, 1, "{}");
    size_t dups = 0;
    start_spool(f, 0, 600);

    assert_int_equal(submit_sync(f, &ev, 1, &dups), 1);
    assert_int_equal(submit_sync(f, &ev, 1, &dups), 0);
    assert_int_equal(dups, 1);
    close_spool(f);

    start_spool(f, 0, 600);
    assert_int_equal(submit_sync(f, &ev, 1, &dups), 0);
    assert_int_equal(dups, 1);
    ev.source = "/other"; /* dedupe is per (source, id) */
    assert_int_equal(submit_sync(f, &ev, 1, &dups), 1);
    assert_int_equal(dups, 0);
    assert_counts(f, "p", 2, 0);
}

static bool snapshot_exists(struct fixture *f)
{
    char path[512];
    struct stat st;
    snprintf(path, sizeof(path), "%s/dedupe.snapshot", f->dir);
    return stat(path, &st) == 0;
}

/* A clean close leaves the index for the next open, which uses it once;
 * without it (a crash) the log gives the same answers. */
static void test_spool_dedupe_snapshot_then_log(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"};
    struct spool_event a = event("a", p, 1, "{}"), b = event("b", p, 1, "{}");
    size_t dups = 0;
    start_spool(f, 0, 600);
    assert_int_equal(submit_sync(f, &a, 1, &dups), 1);
    close_spool(f);
    assert_true(snapshot_exists(f));

    start_spool(f, 0, 600); /* from the snapshot */
    assert_false(snapshot_exists(f));
    assert_int_equal(submit_sync(f, &a, 1, &dups), 0);
    assert_int_equal(submit_sync(f, &b, 1, &dups), 1);
    /* A crash: the writer's claims of b are only in the log. */
    close_spool(f);
    char path[512];
    snprintf(path, sizeof(path), "%s/dedupe.snapshot", f->dir);
    assert_int_equal(unlink(path), 0);

    start_spool(f, 0, 600); /* from the log */
    assert_int_equal(submit_sync(f, &a, 1, &dups), 0);
    assert_int_equal(submit_sync(f, &b, 1, &dups), 0);
    close_spool(f);

    /* A snapshot older than the log (the log moved on since) is refused. */
    char old[512];
    snprintf(old, sizeof(old), "%s/old.snapshot", f->dir);
    assert_int_equal(rename(path, old), 0);
    start_spool(f, 0, 600);
    struct spool_event c = event("c", p, 1, "{}");
    assert_int_equal(submit_sync(f, &c, 1, &dups), 1);
    close_spool(f);
    assert_int_equal(rename(old, path), 0); /* without c */
    start_spool(f, 0, 600);
    assert_false(snapshot_exists(f));
    assert_int_equal(submit_sync(f, &c, 1, &dups), 0);
    assert_int_equal(submit_sync(f, &a, 1, &dups), 0);
    assert_counts(f, "p", 3, 0);
}

static void test_spool_dedupe_expires(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"};
    struct spool_event ev = event("ttl", p, 1, "{}");
    size_t dups = 0;
    start_spool(f, 0, 10);

    assert_int_equal(submit_sync(f, &ev, 1, &dups), 1);
    atomic_store(&test_now, T0 + 9999);
    assert_int_equal(submit_sync(f, &ev, 1, &dups), 0);
    assert_int_equal(dups, 1);
    atomic_store(&test_now, T0 + 10000);
    assert_int_equal(submit_sync(f, &ev, 1, &dups), 1);
    assert_int_equal(dups, 0);
    assert_counts(f, "p", 2, 0);
}

/* The in-memory index rebuilds itself as it fills, dropping what expired
 * and keeping what did not. */
static void test_spool_dedupe_index_growth_keeps_live_entries(void **state)
{
    struct fixture *f = *state;
    enum { N = 3000 };
    static struct spool_event evs[N];
    static char ids[N][16];
    size_t dups = 0;
    start_spool(f, 0, 10);

    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof(ids[i]), "old%d", i);
        evs[i] = event(ids[i], NULL, 0, "{}");
    }
    assert_int_equal(submit_sync(f, evs, N, &dups), N);
    atomic_store(&test_now, T0 + 5000);
    for (int i = 0; i < N; i++)
        ids[i][0] = 'n'; /* "nld%d": new ids, claimed until T0 + 15 s */
    assert_int_equal(submit_sync(f, evs, N, &dups), N);
    atomic_store(&test_now, T0 + 12000); /* the "old" ones have expired */
    for (int i = 0; i < N; i++)
        ids[i][0] = 'x';
    assert_int_equal(submit_sync(f, evs, N, &dups), N); /* forces rebuilds */
    for (int i = 0; i < N; i++)
        ids[i][0] = 'n';
    assert_int_equal(submit_sync(f, evs, N, &dups), 0);
    assert_int_equal(dups, N);
    for (int i = 0; i < N; i++)
        ids[i][0] = 'o';
    assert_int_equal(submit_sync(f, evs, N, &dups), N);
}

static void test_spool_dedupe_disabled_with_zero_window(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"};
    struct spool_event evs[2] = {event("d", p, 1, "{}"),
                                 event("d", p, 1, "{}")};
    size_t dups = 9;
    start_spool(f, 0, 0);

    assert_int_equal(submit_sync(f, evs, 2, &dups), 2);
    assert_int_equal(dups, 0);
    assert_int_equal(query_int(f, "SELECT count(*) FROM dedupe"), 0);
}

/* ---- outcomes -------------------------------------------------------- */

/* Submit one event to @peers and return its delivery ids per peer. */
static void one_event(struct fixture *f, const char *id,
                      const char *const *peers, size_t n, int64_t *ids)
{
    struct spool_event ev = event(id, peers, n, "{}");
    struct spool_delivery d[64];
    assert_int_equal(submit_sync(f, &ev, 1, NULL), 1);
    for (size_t i = 0; i < n; i++) {
        long got = fetch_all(f, peers[i], INT64_MAX - 1, d);
        assert_true(got >= 1);
        ids[i] = d[got - 1].id;
        free_all(d, got);
    }
}

static void test_spool_delivered_removes_delivery_and_event(void **state)
{
    struct fixture *f = *state;
    static const char *const ab[] = {"a", "b"};
    int64_t id[2];
    start_spool(f, 0, 600);
    one_event(f, "e", ab, 2, id);

    struct spool_outcome o[2] = {outcome(id[0], SPOOL_RETRY, 1, 503),
                                 outcome(id[0], SPOOL_DELIVERED, 2, 200)};
    o[0].next_ms = T0;
    post_sync(f, o, 2);
    assert_int_equal(query_int(f, "SELECT count(*) FROM attempts"), 0);
    assert_int_equal(query_int(f, "SELECT count(*) FROM deliveries"), 1);
    assert_int_equal(query_int(f, "SELECT refs FROM events"), 1);
    assert_counts(f, "a", 0, 0);
    assert_counts(f, "b", 1, 0);

    o[0] = outcome(id[1], SPOOL_DELIVERED, 1, 200);
    post_sync(f, o, 1);
    assert_int_equal(query_int(f, "SELECT count(*) FROM events"), 0);
    assert_int_equal(query_int(f, "SELECT count(*) FROM deliveries"), 0);
    assert_counts(f, "b", 0, 0);
}

static void test_spool_retry_updates_attempts_and_next_due(void **state)
{
    struct fixture *f = *state;
    static const char *const a[] = {"a"};
    int64_t id;
    struct spool_delivery d[64];
    start_spool(f, 0, 600);
    one_event(f, "e", a, 1, &id);

    struct spool_outcome o = outcome(id, SPOOL_RETRY, 1, 0);
    o.next_ms = T0 + 5000;
    post_sync(f, &o, 1);

    assert_int_equal(fetch_all(f, "a", T0 + 4999, d), 0);
    assert_int_equal(spool_next_due(f->r, "a", T0 + 1), T0 + 5000);
    assert_int_equal(fetch_all(f, "a", T0 + 5000, d), 1);
    assert_int_equal(d[0].id, id);
    assert_int_equal(d[0].attempts, 1);
    assert_int_equal(d[0].next_ms, T0 + 5000);
    free_all(d, 1);
    assert_int_equal(query_int(f, "SELECT count(*) FROM attempts WHERE n = 1"
                                  " AND status = 0 AND duration_ms = 7 AND"
                                  " error = 'connection refused'"),
                     1);
    assert_counts(f, "a", 1, 0);
}

static void test_spool_dead_moves_to_dead_letters_with_history(void **state)
{
    struct fixture *f = *state;
    static const char *const a[] = {"a"};
    int64_t id;
    struct spool_delivery d[64];
    start_spool(f, 0, 600);
    one_event(f, "e", a, 1, &id);
    atomic_store(&test_now, T0 + 42);

    struct spool_outcome o[2] = {outcome(id, SPOOL_RETRY, 1, 503),
                                 outcome(id, SPOOL_DEAD, 2, 400)};
    o[0].next_ms = T0;
    snprintf(o[1].reason, sizeof(o[1].reason), "status 400");
    post_sync(f, o, 2);

    assert_int_equal(fetch_all(f, "a", INT64_MAX - 1, d), 0);
    assert_counts(f, "a", 0, 1);
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM dead_letters WHERE id = %lld AND peer = 'a'"
             " AND attempts = 2 AND reason = 'status 400' AND last_status = 400"
             " AND dead_ms = %lld AND last_error IS NULL",
             (long long)id, T0 + 42);
    assert_int_equal(query_int(f, sql), 1);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM attempts WHERE delivery_id = %lld AND"
             " ((n = 1 AND status = 503) OR (n = 2 AND status = 400))",
             (long long)id);
    assert_int_equal(query_int(f, sql), 2);
    assert_int_equal(query_int(f, "SELECT count(*) FROM attempts"), 2);
    /* The dead letter still refers to the event. */
    assert_int_equal(query_int(f, "SELECT refs FROM events"), 1);
}

static void test_spool_settled_ids_reach_commit_cb(void **state)
{
    struct fixture *f = *state;
    static const char *const ab[] = {"a", "b"};
    int64_t id[2];
    start_spool(f, 0, 600);
    one_event(f, "e", ab, 2, id);

    struct spool_outcome o[3] = {outcome(id[0], SPOOL_DELIVERED, 1, 200),
                                 outcome(987654, SPOOL_DELIVERED, 1, 200),
                                 outcome(id[1], SPOOL_RETRY, 1, 500)};
    o[2].next_ms = T0 + 1;
    post_sync(f, o, 3);
    pthread_mutex_lock(&f->mu);
    assert_int_equal(f->n_settled, 3);
    assert_int_equal(f->settled[0], id[0]);
    assert_int_equal(f->settled[1], 987654);
    assert_int_equal(f->settled[2], id[1]);
    pthread_mutex_unlock(&f->mu);

    /* Later outcomes for a settled delivery are ignored, still settled. */
    o[0] = outcome(id[0], SPOOL_DEAD, 2, 400);
    o[1] = outcome(id[0], SPOOL_RETRY, 2, 500);
    post_sync(f, o, 2);
    assert_counts(f, "a", 0, 0);
    assert_counts(f, "b", 1, 0);
    assert_int_equal(query_int(f, "SELECT count(*) FROM dead_letters"), 0);
    assert_int_equal(query_int(f, "SELECT count(*) FROM attempts"), 1);
}

static bool skip_even(void *arg, int64_t id)
{
    (*(int *)arg)++;
    return id % 2 == 0;
}

static void test_spool_fetch_due_skips_and_limits(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"};
    struct spool_event evs[6];
    char ids[6][16];
    struct spool_delivery d[64];
    start_spool(f, 0, 600);
    for (int i = 0; i < 6; i++) {
        snprintf(ids[i], sizeof(ids[i]), "s%d", i);
        evs[i] = event(ids[i], p, 1, "{}");
    }
    assert_int_equal(submit_sync(f, evs, 6, NULL), 6);
    assert_int_equal(fetch_all(f, "p", T0, d), 6);
    int64_t all[6];
    for (int i = 0; i < 6; i++)
        all[i] = d[i].id;
    free_all(d, 6);

    int calls = 0;
    long n = spool_fetch_due(f->r, "p", T0, 2, skip_even, &calls, d);
    assert_int_equal(n, 2);
    int64_t want[6];
    int nw = 0;
    for (int i = 0; i < 6; i++)
        if (all[i] % 2 != 0)
            want[nw++] = all[i];
    assert_int_equal(d[0].id, want[0]);
    assert_int_equal(d[1].id, want[1]);
    assert_true(calls >= 3);
    free_all(d, 2);
    assert_int_equal(spool_fetch_due(f->r, "p", T0, 0, NULL, NULL, d), 0);
}

/* ---- limits and lifecycle -------------------------------------------- */

static void test_spool_max_bytes_refuses_but_applies_outcomes(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"};
    int64_t id[3];
    start_spool(f, 0, 600);
    one_event(f, "m0", p, 1, &id[0]);
    one_event(f, "m1", p, 1, &id[1]);
    one_event(f, "m2", p, 1, &id[2]);
    close_spool(f);

    start_spool(f, 1, 600);
    assert_true(spool_bytes(f->s) >= 1);
    struct spool_event ev = event("m3", p, 1, "{}");
    assert_int_equal(submit_sync(f, &ev, 1, NULL), -ENOSPC);
    struct spool_outcome o[3];
    for (int i = 0; i < 3; i++)
        o[i] = outcome(id[i], SPOOL_DELIVERED, 1, 200);
    post_sync(f, o, 3);
    assert_counts(f, "p", 0, 0);
    assert_int_equal(query_int(f, "SELECT count(*) FROM events"), 0);
    assert_true(spool_writable(f->s)); /* full is not unwritable */
}

/* The size limit measures the backlog: it must fall as deliveries drain,
 * or a spool that once filled up would refuse ingest forever. */
static void test_spool_bytes_fall_as_deliveries_drain(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"};
    enum { N = 40, SIZE = 16 * 1024 };
    char *text = malloc(SIZE + 16);
    assert_non_null(text);
    memset(text, 'x', SIZE + 16);
    memcpy(text, "{\"d\":\"", 6);
    memcpy(text + SIZE, "\"}", 3);
    start_spool(f, 0, 600);
    int64_t before = spool_bytes(f->s);
    char id[16];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "big%d", i);
        struct spool_event ev = event(id, p, 1, text);
        assert_int_equal(submit_sync(f, &ev, 1, NULL), 1);
    }
    int64_t full = spool_bytes(f->s);
    assert_true(full - before >= (int64_t)N * SIZE);

    struct spool_delivery d[N];
    long got = spool_fetch_due(f->r, "p", INT64_MAX - 1, N, NULL, NULL, d);
    assert_int_equal(got, N);
    struct spool_outcome o[N];
    for (int i = 0; i < N; i++)
        o[i] = outcome(d[i].id, SPOOL_DELIVERED, 1, 200);
    free_all(d, got);
    post_sync(f, o, N);
    assert_true(spool_bytes(f->s) < before + (full - before) / 4);
    free(text);
}

static void test_spool_stop_commits_queue_then_refuses(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"};
    struct spool_event ev = event("last", p, 1, "{}");
    struct spool_write w;
    start_spool(f, 0, 600);
    prepare_write(f, &w, &ev, 1);
    assert_int_equal(spool_submit(f->s, &w), 0);
    spool_stop(f->s);
    assert_int_equal(f->n_done, 1);
    assert_int_equal(w.result, 1);

    assert_int_equal(spool_submit(f->s, &w), -ESHUTDOWN);
    struct spool_outcome o = outcome(1, SPOOL_DELIVERED, 1, 200);
    assert_int_equal(spool_post_outcomes(f->s, &o, 1), -ESHUTDOWN);
    spool_stop(f->s); /* idempotent */
    assert_int_equal(f->n_done, 1);
    close_spool(f);

    open_spool(f, 0, 600);
    assert_counts(f, "p", 1, 0);
}

static void test_spool_close_without_start_commits_queue(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"};
    struct spool_event ev = event("q", p, 1, "{}");
    struct spool_write w;
    open_spool(f, 0, 600);
    prepare_write(f, &w, &ev, 1);
    assert_int_equal(spool_submit(f->s, &w), 0);
    close_spool(f);
    assert_int_equal(f->n_done, 1);
    assert_int_equal(w.result, 1);
    assert_int_equal(query_int(f, "SELECT count(*) FROM deliveries"), 1);
}

static void test_spool_counts_loaded_at_open(void **state)
{
    struct fixture *f = *state;
    static const char *const ab[] = {"a", "b"};
    int64_t id[2];
    start_spool(f, 0, 600);
    one_event(f, "e", ab, 2, id);
    struct spool_outcome o = outcome(id[0], SPOOL_DEAD, 0, 0);
    snprintf(o.reason, sizeof(o.reason), "max_age_s reached");
    o.error[0] = '\0';
    post_sync(f, &o, 1);
    close_spool(f);

    open_spool(f, 0, 600);
    assert_counts(f, "a", 0, 1);
    assert_counts(f, "b", 1, 0);
    /* No attempt was made, so no attempt row. */
    assert_int_equal(query_int(f, "SELECT count(*) FROM attempts"), 0);
    assert_int_equal(query_int(f, "PRAGMA user_version"), 3);
    assert_int_equal(query_int(f, "SELECT count(*) FROM pragma_journal_mode"
                                  " WHERE journal_mode = 'wal'"),
                     1);
}

static void test_spool_open_errors(void **state)
{
    struct fixture *f = *state;
    char err[256] = "", path[128];
    snprintf(path, sizeof(path), "%s/file", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fclose(fp);

    struct spool_options opt = {.dir = path};
    assert_null(spool_open(&opt, err, sizeof(err)));
    assert_non_null(strstr(err, "spool.dir"));

    /* A nested missing directory is created. */
    snprintf(path, sizeof(path), "%s/x/y", f->dir);
    opt.dir = path;
    struct spool *s = spool_open(&opt, err, sizeof(err));
    assert_non_null(s);
    /* A second process (or open) on the same dir is refused. */
    assert_null(spool_open(&opt, err, sizeof(err)));
    assert_non_null(strstr(err, "in use"));
    spool_close(s);

    /* A newer schema is refused rather than misread. */
    open_spool(f, 0, 0);
    close_spool(f);
    char db[128];
    sqlite3 *h = NULL;
    snprintf(db, sizeof(db), "%s/spool.db", f->dir);
    assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
    assert_int_equal(sqlite3_exec(h, "PRAGMA user_version = 99", NULL, NULL,
                                  NULL),
                     SQLITE_OK);
    sqlite3_close(h);
    opt.dir = f->dir;
    assert_null(spool_open(&opt, err, sizeof(err)));
    assert_non_null(strstr(err, "schema version 99"));
}

/*
 * A commit that fails (here: the WAL may not grow, RLIMIT_FSIZE, so the
 * write fails with EFBIG, an I/O error) fails its submissions, makes the
 * spool unwritable, and keeps the outcomes of that turn queued until a
 * commit succeeds again. The limit is where the WAL's frames end, not
 * its size: walvfs may have put zeros ahead of them.
 */
static void test_spool_failed_commit_keeps_outcomes(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"};
    static char big[64 * 1024];
    int64_t id;
    start_spool(f, 0, 600);
    one_event(f, "before", p, 1, &id);

    memset(big, 'x', sizeof(big) - 1);
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved_fsize), 0);
    struct rlimit lim = saved_fsize;
    lim.rlim_cur = (rlim_t)wal_frames_end(f);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    fsize_lowered = true;

    /* The outcome goes in the same turn as the submission, or earlier. */
    struct spool_outcome o = outcome(id, SPOOL_DELIVERED, 1, 200);
    assert_int_equal(spool_post_outcomes(f->s, &o, 1), 0);
    struct spool_event ev = event("during", p, 1, big);
    assert_int_equal(submit_sync(f, &ev, 1, NULL), -EIO);
    assert_false(spool_writable(f->s));
    pthread_mutex_lock(&f->mu);
    assert_int_equal(f->n_settled, 0);
    pthread_mutex_unlock(&f->mu);
    assert_counts(f, "p", 1, 0);

    restore_fsize();
    wait_settled(f, 1); /* retried after the writer's back-off */
    assert_int_equal(f->settled[0], id);
    assert_counts(f, "p", 0, 0);
    ev.id = "after";
    assert_int_equal(submit_sync(f, &ev, 1, NULL), 1);
    assert_true(spool_writable(f->s));
    signal(SIGXFSZ, SIG_DFL);
}

/* Enough data to pass the checkpoint threshold (16 MiB of WAL) ends up
 * copied into the database file while the spool runs. */
static void test_spool_checkpoints_wal_into_database(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"};
    static char text[8192];
    enum { PER = 100, SUBS = 30 };
    static struct spool_event evs[SUBS][PER];
    static char ids[SUBS][PER][32];
    struct spool_write w[SUBS];
    memset(text, 'c', sizeof(text) - 1);
    start_spool(f, 0, 0);

    for (int i = 0; i < SUBS; i++) {
        for (int k = 0; k < PER; k++) {
            snprintf(ids[i][k], sizeof(ids[i][k]), "c%d-%d", i, k);
            evs[i][k] = event(ids[i][k], p, 1, text);
        }
        prepare_write(f, &w[i], evs[i], PER);
        assert_int_equal(spool_submit(f->s, &w[i]), 0);
    }
    wait_done(f, SUBS);
    for (int i = 0; i < SUBS; i++)
        assert_int_equal(w[i].result, PER);
    /* The checkpointer copies in the background and the writer finishes
     * its pass between turns, after which the WAL starts over: its header
     * then carries the next checkpoint sequence number. */
    uint32_t seq0 = wal_checkpoint_seq(f);
    int ticks = 0;
    while (ticks < 400 && wal_checkpoint_seq(f) == seq0) {
        char id[16];
        snprintf(id, sizeof(id), "tick%d", ticks++);
        struct spool_event tick = event(id, p, 1, "{}");
        assert_int_equal(submit_sync(f, &tick, 1, NULL), 1);
        sleep_ms(50);
    }
    assert_int_not_equal(wal_checkpoint_seq(f), seq0);
    assert_true(file_size(f, "spool.db") >= (16 << 20));
    assert_counts(f, "p", SUBS * PER + ticks, 0);
}

/* ---- durability ------------------------------------------------------ */

struct child_write {
    struct spool_write w;
    struct spool_event ev;
    char id[32];
    long long n;
};

static int child_fd;
static sem_t child_slots;

static void child_done(struct spool_write *w)
{
    struct child_write *c = w->arg;
    if (w->result == 1 && write(child_fd, &c->n, sizeof(c->n)) < 0)
        _exit(3);
    free(c);
    sem_post(&child_slots);
}

/* Submit forever, 32 in flight, reporting every acknowledged event. */
static void child_run(const char *dir)
{
    static const char *const p[] = {"p"};
    char err[256];
    struct spool_options opt = {.dir = dir, .dedupe_window_s = 600};
    struct spool *s = spool_open(&opt, err, sizeof(err));
    if (!s || spool_start(s) != 0 || sem_init(&child_slots, 0, 32) != 0)
        _exit(2);
    for (long long n = 0;; n++) {
        sem_wait(&child_slots);
        struct child_write *c = calloc(1, sizeof(*c));
        if (!c)
            _exit(2);
        c->n = n;
        snprintf(c->id, sizeof(c->id), "k%lld", n);
        c->ev = (struct spool_event){.source = "/kill", .id = c->id,
                                     .text = "{\"durable\":true}",
                                     .text_len = 16, .peers = p,
                                     .n_peers = 1, .received_ms = n};
        c->w = (struct spool_write){.events = &c->ev, .n_events = 1,
                                    .done = child_done, .arg = c};
        if (spool_submit(s, &c->w) != 0)
            _exit(2);
    }
}

static void test_spool_acknowledged_events_survive_kill9(void **state)
{
    struct fixture *f = *state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        child_fd = fds[1];
        child_run(f->dir);
        _exit(1);
    }
    close(fds[1]);

    enum { MAX_ACKS = 1 << 20 };
    long long *acks = malloc(MAX_ACKS * sizeof(*acks));
    size_t n_acks = 0;
    assert_non_null(acks);
    /* Read a few hundred acks, kill -9 mid-stream, then drain what the
     * child had acknowledged before it died. */
    while (n_acks < 500 &&
           read(fds[0], &acks[n_acks], sizeof(*acks)) == sizeof(*acks))
        n_acks++;
    kill(pid, SIGKILL);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    while (n_acks < MAX_ACKS &&
           read(fds[0], &acks[n_acks], sizeof(*acks)) == sizeof(*acks))
        n_acks++;
    close(fds[0]);
    assert_true(n_acks >= 500);

    open_spool(f, 0, 600);
    int64_t pending = 0, dead = 0;
    spool_peer_counts(f->s, "p", &pending, &dead);
    assert_true(pending >= (int64_t)n_acks);
    struct spool_delivery *d = calloc((size_t)pending, sizeof(*d));
    assert_non_null(d);
    long n = spool_fetch_due(f->r, "p", INT64_MAX - 1, (size_t)pending, NULL,
                             NULL, d);
    assert_int_equal(n, pending);
    /* received_ms carries the child's counter: mark what is present. */
    unsigned char *present = calloc(MAX_ACKS, 1);
    assert_non_null(present);
    for (long i = 0; i < n; i++) {
        if (d[i].received_ms >= 0 && d[i].received_ms < MAX_ACKS)
            present[d[i].received_ms] = 1;
        spool_delivery_free(&d[i]);
    }
    for (size_t i = 0; i < n_acks; i++)
        if (!present[acks[i]])
            fail_msg("acknowledged event k%lld lost", acks[i]);
    free(present);
    free(d);
    free(acks);
    assert_int_equal(query_int(f, "SELECT count(*) FROM pragma_integrity_check"
                                  " WHERE integrity_check = 'ok'"),
                     1);
}


/* ---- ordered delivery ------------------------------------------------ */

static const unsigned char ORDERED[] = {1, 1, 1, 1};

/* An event to @peers, ordered on all of them, with partition key @key. */
static struct spool_event keyed(const char *id, const char *const *peers,
                                size_t n, const char *key)
{
    struct spool_event ev = event(id, peers, n, "{}");
    ev.partition_key = key;
    ev.ordered = ORDERED;
    return ev;
}

/* The event ids of @peer's due deliveries at @now, comma-separated into
 * @out (ids of at most 64), with their delivery ids in @ids if not NULL. */
static const char *due_ids(struct fixture *f, const char *peer, int64_t now,
                           char *out, size_t len, int64_t *ids)
{
    struct spool_delivery d[64];
    long n = fetch_all(f, peer, now, d);
    out[0] = '\0';
    for (long i = 0; i < n; i++) {
        size_t used = strlen(out);
        snprintf(out + used, len - used, "%s%s", i ? "," : "", d[i].event_id);
        if (ids)
            ids[i] = d[i].id;
    }
    free_all(d, n);
    return out;
}

/* Post @kind for delivery @id and wait until it is durable. */
static void settle(struct fixture *f, int64_t id, enum spool_outcome_kind kind,
                   int64_t next_ms)
{
    struct spool_outcome o = outcome(id, kind, 1, kind == SPOOL_DEAD ? 404 : 200);
    o.next_ms = next_ms;
    if (kind == SPOOL_DEAD)
        snprintf(o.reason, sizeof(o.reason), "status 404");
    post_sync(f, &o, 1);
}

static void test_spool_ordered_fetch_returns_heads_only(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"};
    char got[256];
    int64_t ids[64];
    struct spool_event evs[5] = {keyed("a1", p, 1, "A"), keyed("a2", p, 1, "A"),
                                 keyed("b1", p, 1, "B"), event("u1", p, 1, "{}"),
                                 keyed("n1", p, 1, NULL)};
    start_spool(f, 0, 600);
    assert_int_equal(submit_sync(f, evs, 3, NULL), 3);
    assert_int_equal(submit_sync(f, evs + 3, 2, NULL), 2);
    /* A second submission of the same key queues behind the first. */
    struct spool_event a3 = keyed("a3", p, 1, "A");
    assert_int_equal(submit_sync(f, &a3, 1, NULL), 1);
    assert_counts(f, "p", 6, 0);

    /* u1 is unordered; n1 asked for order but has no key: unordered. */
    assert_string_equal(due_ids(f, "p", T0, got, sizeof(got), ids),
                        "a1,b1,u1,n1");
    assert_int_equal(spool_next_due(f->r, "p", T0), INT64_MAX);

    wait_commits(f, 2);
    size_t before = new_deliveries(f);
    settle(f, ids[0], SPOOL_DELIVERED, 0);
    assert_true(new_deliveries(f) > before); /* the dispatcher must look */
    assert_string_equal(due_ids(f, "p", T0, got, sizeof(got), ids),
                        "a2,b1,u1,n1");
    settle(f, ids[0], SPOOL_DELIVERED, 0);
    /* Same received time: (next_ms, id) order puts the later a3 last. */
    assert_string_equal(due_ids(f, "p", T0, got, sizeof(got), NULL),
                        "b1,u1,n1,a3");
    /* Even "now = forever" (orphan paging) never returns a parked one. */
    struct spool_event a4 = keyed("a4", p, 1, "A");
    assert_int_equal(submit_sync(f, &a4, 1, NULL), 1);
    assert_string_equal(due_ids(f, "p", INT64_MAX, got, sizeof(got), NULL),
                        "b1,u1,n1,a3");
}

static void test_spool_ordered_retrying_head_blocks_only_its_key(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"};
    char got[256];
    int64_t ids[64];
    struct spool_event evs[4] = {keyed("a1", p, 1, "A"), keyed("a2", p, 1, "A"),
                                 keyed("b1", p, 1, "B"), keyed("b2", p, 1, "B")};
    start_spool(f, 0, 600);
    assert_int_equal(submit_sync(f, evs, 4, NULL), 4);
    assert_string_equal(due_ids(f, "p", T0, got, sizeof(got), ids), "a1,b1");
    int64_t a1 = ids[0], b1 = ids[1];

    settle(f, a1, SPOOL_RETRY, T0 + 5000);
    assert_string_equal(due_ids(f, "p", T0, got, sizeof(got), NULL), "b1");
    settle(f, b1, SPOOL_DELIVERED, 0);
    assert_string_equal(due_ids(f, "p", T0, got, sizeof(got), NULL), "b2");
    assert_int_equal(spool_next_due(f->r, "p", T0), T0 + 5000);
    /* The retry comes due: the head again, never a2 before it. */
    assert_string_equal(due_ids(f, "p", T0 + 5000, got, sizeof(got), ids),
                        "b2,a1");
    assert_int_equal(ids[1], a1);
    /* A dead head unblocks its key. */
    settle(f, a1, SPOOL_DEAD, 0);
    assert_string_equal(due_ids(f, "p", T0 + 5000, got, sizeof(got), NULL),
                        "a2,b2");
    assert_counts(f, "p", 2, 1);
}

static void test_spool_ordered_order_survives_reopen(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"};
    char got[256];
    int64_t ids[64];
    struct spool_event evs[3] = {keyed("k1", p, 1, "K"), keyed("k2", p, 1, "K"),
                                 keyed("k3", p, 1, "K")};
    start_spool(f, 0, 600);
    assert_int_equal(submit_sync(f, evs, 3, NULL), 3);
    assert_string_equal(due_ids(f, "p", T0, got, sizeof(got), ids), "k1");
    close_spool(f); /* k1 was "in flight": no outcome */

    start_spool(f, 0, 600);
    assert_string_equal(due_ids(f, "p", T0, got, sizeof(got), ids), "k1");
    settle(f, ids[0], SPOOL_DELIVERED, 0);
    close_spool(f);

    start_spool(f, 0, 600);
    assert_string_equal(due_ids(f, "p", T0, got, sizeof(got), ids), "k2");
    settle(f, ids[0], SPOOL_DELIVERED, 0);
    assert_string_equal(due_ids(f, "p", T0, got, sizeof(got), NULL), "k3");
}

static void test_spool_ordered_per_peer_and_unordered_unaffected(void **state)
{
    struct fixture *f = *state;
    static const char *const pq[] = {"p", "q"};
    static const unsigned char only_p[] = {1, 0};
    char got[256];
    struct spool_event evs[3];
    for (int i = 0; i < 3; i++) {
        static const char *const names[] = {"e1", "e2", "e3"};
        evs[i] = keyed(names[i], pq, 2, "K");
        evs[i].ordered = only_p;
    }
    start_spool(f, 0, 600);
    assert_int_equal(submit_sync(f, evs, 3, NULL), 3);
    assert_string_equal(due_ids(f, "p", T0, got, sizeof(got), NULL), "e1");
    assert_string_equal(due_ids(f, "q", T0, got, sizeof(got), NULL),
                        "e1,e2,e3");
    assert_int_equal(query_int(f, "SELECT count(*) FROM deliveries"
                                  " WHERE peer = 'q' AND okey IS NULL"),
                     3);
}

/* The version 1 schema as ferry 0.1.0 created it. */
static const char v1_schema[] =
    "CREATE TABLE events("
    " seq INTEGER PRIMARY KEY, source TEXT NOT NULL, ce_id TEXT NOT NULL,"
    " received_ms INTEGER NOT NULL, partition_key TEXT,"
    " format INTEGER NOT NULL, text BLOB NOT NULL, data BLOB,"
    " refs INTEGER NOT NULL);"
    "CREATE TABLE deliveries("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, event_seq INTEGER NOT NULL,"
    " peer TEXT NOT NULL, attempts INTEGER NOT NULL, next_ms INTEGER NOT NULL);"
    "CREATE INDEX deliveries_due ON deliveries(peer, next_ms, id);"
    "CREATE UNIQUE INDEX deliveries_event ON deliveries(peer, event_seq);"
    "CREATE TABLE dead_letters("
    " id INTEGER PRIMARY KEY, event_seq INTEGER NOT NULL, peer TEXT NOT NULL,"
    " attempts INTEGER NOT NULL, dead_ms INTEGER NOT NULL,"
    " reason TEXT NOT NULL, last_status INTEGER NOT NULL, last_error TEXT);"
    "CREATE INDEX dead_letters_peer ON dead_letters(peer, id);"
    "CREATE TABLE attempts("
    " delivery_id INTEGER NOT NULL, n INTEGER NOT NULL, at_ms INTEGER NOT NULL,"
    " duration_ms INTEGER NOT NULL, status INTEGER NOT NULL, error TEXT);"
    "CREATE INDEX attempts_delivery ON attempts(delivery_id, n);"
    "CREATE TABLE dedupe("
    " seq INTEGER PRIMARY KEY, source TEXT NOT NULL, ce_id TEXT NOT NULL,"
    " expires_ms INTEGER NOT NULL);"
    "INSERT INTO events VALUES(1, '/s', 'old1', 1700000000000, 'K', 0,"
    " '{\"id\":\"old1\",\"type\":\"t.old\"}', NULL, 1);"
    "INSERT INTO events VALUES(2, '/s', 'old2', 1700000000000, NULL, 0,"
    " '{\"id\":\"old2\",\"type\":\"t.old\"}', NULL, 1);"
    "INSERT INTO deliveries VALUES(7, 1, 'p', 2, 1700000000000);"
    "INSERT INTO dead_letters VALUES(5, 2, 'p', 3, 1700000000001,"
    " 'status 404', 404, NULL);"
    "INSERT INTO attempts VALUES(5, 3, 1700000000000, 12, 404, NULL);"
    "PRAGMA user_version = 1;";

static void test_spool_migrates_a_v1_database(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"};
    char path[128], got[256];
    sqlite3 *db = NULL;
    snprintf(path, sizeof(path), "%s/spool.db", f->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL,
                                  NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, v1_schema, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    start_spool(f, 0, 600);
    assert_int_equal(query_int(f, "PRAGMA user_version"), 3);
    assert_int_equal(query_int(f, "SELECT count(*) FROM sqlite_master"
                                  " WHERE name = 'deliveries_okey'"),
                     1);
    assert_int_equal(query_int(f, "SELECT count(*) FROM sqlite_master"
                                  " WHERE name = 'schedules'"),
                     1);
    assert_counts(f, "p", 1, 1);
    /* Old deliveries are unordered and still due; new ids follow on. */
    struct spool_event evs[2] = {keyed("new1", p, 1, "K"),
                                 keyed("new2", p, 1, "K")};
    assert_int_equal(submit_sync(f, evs, 2, NULL), 2);
    assert_string_equal(due_ids(f, "p", T0, got, sizeof(got), NULL),
                        "old1,new1");
    assert_int_equal(query_int(f, "SELECT min(id) FROM deliveries"
                                  " WHERE okey = 'K'"),
                     8);
    /* The old dead letter reads like a new one. */
    struct spool_dead_detail d;
    assert_int_equal(spool_dead_get(f->r, 5, &d), 0);
    assert_string_equal(d.dl.event_id, "old2");
    assert_string_equal(d.dl.type, "t.old");
    assert_int_equal(d.n_attempts, 1);
    spool_dead_detail_free(&d);
    assert_int_equal(spool_dead_replay(f->s, &(struct spool_dead_filter){.id = 5}),
                     1);
    assert_counts(f, "p", 4, 0);
}

static void test_spool_refuses_a_newer_schema(void **state)
{
    struct fixture *f = *state;
    char path[128], err[256] = "";
    sqlite3 *db = NULL;
    snprintf(path, sizeof(path), "%s/spool.db", f->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 4", NULL, NULL,
                                  NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    struct spool_options opt = {.dir = f->dir, .clock_ms = test_clock};
    assert_null(spool_open(&opt, err, sizeof(err)));
    assert_non_null(strstr(err, "newer"));
}

/* ---- dead letters ------------------------------------------------------ */

/* Submit one event per peer name in @peers[i] (ids "d0", "d1", ...) with
 * a type, and dead-letter each; the dead letters' ids go to @ids. */
static void make_dead(struct fixture *f, const char *const *peers, size_t n,
                      int64_t *ids)
{
    for (size_t i = 0; i < n; i++) {
        char id[32], text[96];
        snprintf(id, sizeof(id), "d%zu", i);
        snprintf(text, sizeof(text),
                 "{\"id\":\"%s\",\"source\":\"/test\",\"type\":\"t.%zu\"}", id, i);
        struct spool_event ev = event(id, &peers[i], 1, text);
        struct spool_delivery d[64];
        assert_int_equal(submit_sync(f, &ev, 1, NULL), 1);
        long got = fetch_all(f, peers[i], INT64_MAX - 1, d);
        assert_true(got >= 1);
        ids[i] = d[got - 1].id;
        free_all(d, got);
        struct spool_outcome o[2] = {outcome(ids[i], SPOOL_RETRY, 1, 503),
                                     outcome(ids[i], SPOOL_DEAD, 2, 404)};
        o[0].next_ms = T0;
        snprintf(o[1].reason, sizeof(o[1].reason), "status 404");
        post_sync(f, o, 2);
    }
}

static void free_list(struct spool_dead_letter *dl, long n)
{
    for (long i = 0; i < n; i++)
        spool_dead_letter_free(&dl[i]);
}

static void test_spool_dead_list_pages_and_filters(void **state)
{
    struct fixture *f = *state;
    static const char *const peers[] = {"a", "b", "a", "a", "b"};
    int64_t ids[5];
    struct spool_dead_letter dl[8];
    start_spool(f, 0, 600);
    atomic_store(&test_now, T0 + 100);
    make_dead(f, peers, 5, ids);

    long n = spool_dead_list(f->r, NULL, 0, 8, dl);
    assert_int_equal(n, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(dl[i].id, ids[i]);
    assert_string_equal(dl[0].peer, "a");
    assert_string_equal(dl[0].event_id, "d0");
    assert_string_equal(dl[0].source, "/test");
    assert_string_equal(dl[0].type, "t.0");
    assert_int_equal(dl[0].attempts, 2);
    assert_int_equal(dl[0].received_ms, T0);
    assert_int_equal(dl[0].dead_ms, T0 + 100);
    assert_string_equal(dl[0].reason, "status 404");
    assert_int_equal(dl[0].last_status, 404);
    assert_null(dl[0].last_error);
    free_list(dl, n);

    /* Pages of two: the last id is the cursor. */
    n = spool_dead_list(f->r, NULL, 0, 2, dl);
    assert_int_equal(n, 2);
    int64_t cursor = dl[1].id;
    free_list(dl, n);
    n = spool_dead_list(f->r, NULL, cursor, 2, dl);
    assert_int_equal(n, 2);
    assert_int_equal(dl[0].id, ids[2]);
    cursor = dl[1].id;
    free_list(dl, n);
    n = spool_dead_list(f->r, NULL, cursor, 2, dl);
    assert_int_equal(n, 1);
    assert_int_equal(dl[0].id, ids[4]);
    free_list(dl, n);

    n = spool_dead_list(f->r, "a", ids[0], 8, dl);
    assert_int_equal(n, 2);
    assert_int_equal(dl[0].id, ids[2]);
    assert_int_equal(dl[1].id, ids[3]);
    free_list(dl, n);
    assert_int_equal(spool_dead_list(f->r, "nobody", 0, 8, dl), 0);
    assert_int_equal(spool_dead_list(f->r, NULL, 0, 0, dl), 0);

    char **names = NULL;
    assert_int_equal(spool_dead_peers(f->r, &names), 2);
    assert_string_equal(names[0], "a");
    assert_string_equal(names[1], "b");
    free(names[0]);
    free(names[1]);
    free(names);
}

static void test_spool_dead_get_has_history_and_event(void **state)
{
    struct fixture *f = *state;
    static const char *const a[] = {"a"};
    int64_t id;
    struct spool_dead_detail d;
    start_spool(f, 0, 600);
    make_dead(f, a, 1, &id);

    assert_int_equal(spool_dead_get(f->r, id, &d), 0);
    assert_int_equal(d.dl.id, id);
    assert_string_equal(d.dl.type, "t.0");
    assert_int_equal(d.n_attempts, 2);
    assert_int_equal(d.attempts[0].n, 1);
    assert_int_equal(d.attempts[0].status, 503);
    assert_int_equal(d.attempts[0].at_ms, T0 + 1);
    assert_int_equal(d.attempts[0].duration_ms, 7);
    assert_null(d.attempts[0].error);
    assert_int_equal(d.attempts[1].n, 2);
    assert_int_equal(d.attempts[1].status, 404);
    assert_true(d.has_event);
    assert_int_equal(d.format, EVENT_STRUCTURED);
    assert_string_equal(d.text,
                        "{\"id\":\"d0\",\"source\":\"/test\",\"type\":\"t.0\"}");
    assert_null(d.data);
    spool_dead_detail_free(&d);
    assert_int_equal(spool_dead_get(f->r, id + 1000, &d), -ENOENT);
    spool_dead_detail_free(&d); /* nothing to free: still safe */
}

static void test_spool_dead_replay_one_moves_it_back(void **state)
{
    struct fixture *f = *state;
    static const char *const a[] = {"a"};
    int64_t id;
    struct spool_delivery d[64];
    start_spool(f, 0, 600);
    make_dead(f, a, 1, &id);
    assert_counts(f, "a", 0, 1);
    atomic_store(&test_now, T0 + 9000);
    size_t before = new_deliveries(f);

    long n = spool_dead_replay(f->s, &(struct spool_dead_filter){.id = id});
    assert_int_equal(n, 1);
    assert_true(new_deliveries(f) > before); /* the dispatcher was told */
    assert_counts(f, "a", 1, 0);
    assert_int_equal(query_int(f, "SELECT count(*) FROM dead_letters"), 0);
    assert_int_equal(query_int(f, "SELECT count(*) FROM attempts"), 0);
    assert_int_equal(fetch_all(f, "a", T0 + 8999, d), 0); /* due as of now */
    assert_int_equal(fetch_all(f, "a", T0 + 9000, d), 1);
    assert_true(d[0].id > id); /* a new id: never confused with the old */
    assert_int_equal(d[0].attempts, 0);
    assert_int_equal(d[0].received_ms, T0 + 9000); /* max_age starts again */
    assert_string_equal(d[0].event_id, "d0");
    free_all(d, 1);
    assert_int_equal(spool_dead_replay(f->s, &(struct spool_dead_filter){.id = id}),
                     0);
    /* The counts come back the same from the database. */
    close_spool(f);
    start_spool(f, 0, 600);
    assert_counts(f, "a", 1, 0);
}

static void test_spool_dead_replay_by_peer_and_all(void **state)
{
    struct fixture *f = *state;
    static const char *const peers[] = {"a", "b", "a", "c"};
    int64_t ids[4];
    struct spool_delivery d[64];
    start_spool(f, 0, 600);
    make_dead(f, peers, 4, ids);

    assert_int_equal(spool_dead_replay(f->s, &(struct spool_dead_filter){.peer = "a"}),
                     2);
    assert_counts(f, "a", 2, 0);
    assert_counts(f, "b", 0, 1);
    assert_int_equal(fetch_all(f, "a", T0, d), 2);
    free_all(d, 2);
    assert_int_equal(spool_dead_replay(f->s, &(struct spool_dead_filter){.peer = "zz"}),
                     0);
    assert_int_equal(spool_dead_replay(f->s, &(struct spool_dead_filter){0}), 2);
    assert_counts(f, "b", 1, 0);
    assert_counts(f, "c", 1, 0);
    assert_int_equal(spool_dead_replay(f->s, NULL), 0);
}

static void test_spool_dead_replay_ordered_joins_back_of_key(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"};
    char got[256];
    int64_t ids[64];
    struct spool_event evs[3] = {keyed("k1", p, 1, "K"), keyed("k2", p, 1, "K"),
                                 keyed("k3", p, 1, "K")};
    start_spool(f, 0, 600);
    assert_int_equal(submit_sync(f, evs, 3, NULL), 3);
    assert_string_equal(due_ids(f, "p", T0, got, sizeof(got), ids), "k1");
    settle(f, ids[0], SPOOL_DEAD, 0);
    int64_t dead = ids[0];
    assert_string_equal(due_ids(f, "p", T0, got, sizeof(got), ids), "k2");

    /* While k2 heads the key, the replayed k1 waits behind k3. */
    assert_int_equal(spool_dead_replay(f->s, &(struct spool_dead_filter){.id = dead}),
                     1);
    assert_string_equal(due_ids(f, "p", T0, got, sizeof(got), ids), "k2");
    settle(f, ids[0], SPOOL_DELIVERED, 0);
    assert_string_equal(due_ids(f, "p", T0, got, sizeof(got), ids), "k3");
    settle(f, ids[0], SPOOL_DELIVERED, 0);
    assert_string_equal(due_ids(f, "p", T0, got, sizeof(got), ids), "k1");
    settle(f, ids[0], SPOOL_DELIVERED, 0);
    assert_counts(f, "p", 0, 0);

    /* With its key idle, a replayed one is due at once. */
    struct spool_event k4 = keyed("k4", p, 1, "K");
    assert_int_equal(submit_sync(f, &k4, 1, NULL), 1);
    assert_string_equal(due_ids(f, "p", T0, got, sizeof(got), ids), "k4");
    settle(f, ids[0], SPOOL_DEAD, 0);
    assert_int_equal(spool_dead_replay(f->s, &(struct spool_dead_filter){.peer = "p"}),
                     1);
    assert_string_equal(due_ids(f, "p", T0, got, sizeof(got), NULL), "k4");
}

static void test_spool_dead_purge_one_peer_and_all(void **state)
{
    struct fixture *f = *state;
    static const char *const peers[] = {"a", "b", "a", "c"}, *const ab[] = {"a", "b"};
    int64_t ids[4], shared[2];
    start_spool(f, 0, 600);
    make_dead(f, peers, 4, ids);
    assert_int_equal(query_int(f, "SELECT count(*) FROM events"), 4);

    assert_int_equal(spool_dead_purge(f->s, &(struct spool_dead_filter){.id = ids[1]}),
                     1);
    assert_counts(f, "b", 0, 0);
    assert_int_equal(query_int(f, "SELECT count(*) FROM events"), 3);
    assert_int_equal(query_int(f, "SELECT count(*) FROM attempts"), 6);
    assert_int_equal(spool_dead_purge(f->s, &(struct spool_dead_filter){.id = ids[1]}),
                     0);
    assert_int_equal(spool_dead_purge(f->s, &(struct spool_dead_filter){.peer = "a"}),
                     2);
    assert_counts(f, "a", 0, 0);
    assert_counts(f, "c", 0, 1);

    /* An event still pending for another peer stays. */
    one_event(f, "s", ab, 2, shared);
    struct spool_outcome o = outcome(shared[0], SPOOL_DEAD, 1, 410);
    snprintf(o.reason, sizeof(o.reason), "status 410");
    post_sync(f, &o, 1);
    assert_int_equal(spool_dead_purge(f->s, &(struct spool_dead_filter){0}), 2);
    assert_int_equal(query_int(f, "SELECT count(*) FROM dead_letters"), 0);
    assert_int_equal(query_int(f, "SELECT count(*) FROM attempts"), 0);
    assert_int_equal(query_int(f, "SELECT count(*) FROM events"), 1);
    assert_int_equal(query_int(f, "SELECT refs FROM events"), 1);
    assert_counts(f, "b", 1, 0);
    assert_counts(f, "c", 0, 0);
}

/* More dead letters than one turn takes: the op spans turns, ingest in
 * between still commits, and the counts come out right. */
static void test_spool_dead_ops_span_turns(void **state)
{
    struct fixture *f = *state;
    enum { N = 2500 };
    static const char *const p[] = {"p"};
    struct spool_event *evs = calloc(N, sizeof(*evs));
    char (*names)[16] = calloc(N, sizeof(*names));
    struct spool_outcome *o = calloc(N, sizeof(*o));
    struct spool_delivery *d = calloc(N, sizeof(*d));
    assert_true(evs && names && o && d);
    start_spool(f, 0, 600);
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "m%d", i);
        evs[i] = event(names[i], p, 1, "{}");
    }
    assert_int_equal(submit_sync(f, evs, N, NULL), N);
    long n = spool_fetch_due(f->r, "p", T0, N, NULL, NULL, d);
    assert_int_equal(n, N);
    for (int i = 0; i < N; i++) {
        o[i] = outcome(d[i].id, SPOOL_DEAD, 1, 404);
        snprintf(o[i].reason, sizeof(o[i].reason), "status 404");
        spool_delivery_free(&d[i]);
    }
    pthread_mutex_lock(&f->mu);
    size_t target = f->n_settled_total + N;
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(spool_post_outcomes(f->s, o, N), 0);
    pthread_mutex_lock(&f->mu);
    while (f->n_settled_total < target)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
    assert_counts(f, "p", 0, N);

    uint64_t commits = spool_commit_count(f->s);
    assert_int_equal(spool_dead_replay(f->s, &(struct spool_dead_filter){.peer = "p"}),
                     N);
    assert_true(spool_commit_count(f->s) - commits >= 3); /* 1000 a turn */
    assert_counts(f, "p", N, 0);
    assert_int_equal(query_int(f, "SELECT count(*) FROM deliveries"), N);
    n = spool_fetch_due(f->r, "p", T0, N, NULL, NULL, d);
    assert_int_equal(n, N);
    for (int i = 0; i < N; i++) {
        o[i] = outcome(d[i].id, SPOOL_DEAD, 1, 404);
        snprintf(o[i].reason, sizeof(o[i].reason), "status 404");
        spool_delivery_free(&d[i]);
    }
    pthread_mutex_lock(&f->mu);
    target = f->n_settled_total + N;
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(spool_post_outcomes(f->s, o, N), 0);
    pthread_mutex_lock(&f->mu);
    while (f->n_settled_total < target)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(spool_dead_purge(f->s, NULL), N);
    assert_counts(f, "p", 0, 0);
    assert_int_equal(query_int(f, "SELECT count(*) FROM events"), 0);
    free(evs);
    free(names);
    free(o);
    free(d);
}

static void test_spool_dead_ops_need_a_running_writer(void **state)
{
    struct fixture *f = *state;
    open_spool(f, 0, 600);
    assert_int_equal(spool_dead_purge(f->s, NULL), -EAGAIN);
    assert_int_equal(spool_start(f->s), 0);
    assert_int_equal(spool_dead_purge(f->s, NULL), 0);
    spool_stop(f->s);
    assert_int_equal(spool_dead_replay(f->s, NULL), -ESHUTDOWN);
}

/* ---- commit callback swap ---------------------------------------------- */

struct swap_state {
    atomic_int calls_old, calls_new;
    atomic_bool swapped; /* set after spool_set_commit_cb returned */
    atomic_int late;     /* old callback calls after that */
};

static void old_cb(void *arg, const struct spool_commit *c)
{
    (void)c;
    struct swap_state *st = arg;
    atomic_fetch_add(&st->calls_old, 1);
    sleep_ms(1); /* widen the window in which a swap must wait */
    if (atomic_load(&st->swapped))
        atomic_fetch_add(&st->late, 1);
}

static void new_cb(void *arg, const struct spool_commit *c)
{
    (void)c;
    atomic_fetch_add(&((struct swap_state *)arg)->calls_new, 1);
}

struct submitter {
    struct fixture *f;
    atomic_bool stop;
    int n;
};

static void *submit_loop(void *arg)
{
    struct submitter *sb = arg;
    static const char *const p[] = {"p"};
    char id[32];
    while (!atomic_load(&sb->stop)) {
        snprintf(id, sizeof(id), "sw%d", sb->n++);
        struct spool_event ev = event(id, p, 1, "{}");
        assert_int_equal(submit_sync(sb->f, &ev, 1, NULL), 1);
    }
    return NULL;
}

static void test_spool_commit_cb_swap_while_running(void **state)
{
    struct fixture *f = *state;
    struct swap_state st = {0};
    struct submitter sb = {.f = f};
    pthread_t th;
    start_spool(f, 0, 0);
    spool_set_commit_cb(f->s, old_cb, &st);
    assert_int_equal(pthread_create(&th, NULL, submit_loop, &sb), 0);
    while (atomic_load(&st.calls_old) < 20)
        sleep_ms(1);
    spool_set_commit_cb(f->s, new_cb, &st);
    atomic_store(&st.swapped, true);
    int old_at_swap = atomic_load(&st.calls_old);
    while (atomic_load(&st.calls_new) < 20)
        sleep_ms(1);
    atomic_store(&sb.stop, true);
    pthread_join(th, NULL);
    assert_int_equal(atomic_load(&st.late), 0);
    assert_int_equal(atomic_load(&st.calls_old), old_at_swap);
    spool_set_commit_cb(f->s, NULL, NULL);
    static const char *const p[] = {"p"};
    struct spool_event ev = event("after", p, 1, "{}");
    int new_at_clear = atomic_load(&st.calls_new);
    assert_int_equal(submit_sync(f, &ev, 1, NULL), 1);
    assert_int_equal(atomic_load(&st.calls_new), new_at_clear);
}

/* ---- schedules --------------------------------------------------------- */

/* An event of schedule "tick" for @slot (id and text from the slot). */
static struct spool_event slot_event(const char *const *peers, size_t n,
                                     int64_t slot, char *id, size_t id_len)
{
    snprintf(id, id_len, "tick-%lld", (long long)slot);
    struct spool_event ev = event(id, peers, n, "{}");
    ev.schedule = "tick";
    ev.slot_ms = slot;
    return ev;
}

static int64_t last_slot(struct fixture *f, const char *name)
{
    int64_t slot = -1;
    int rc = spool_schedule_last(f->r, name, &slot);
    assert_true(rc >= 0);
    return rc == 1 ? slot : -1;
}

static void test_spool_schedule_slot_recorded_with_event(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"};
    char id[4][32];
    size_t dups = 9;
    start_spool(f, 0, 0); /* dedupe off: the slot alone must refuse */
    assert_int_equal(last_slot(f, "tick"), -1);
    struct spool_event ev = slot_event(p, 1, T0 + 60000, id[0], sizeof(id[0]));
    assert_int_equal(submit_sync(f, &ev, 1, &dups), 1);
    assert_int_equal(dups, 0);
    assert_int_equal(last_slot(f, "tick"), T0 + 60000);
    assert_counts(f, "p", 1, 0);

    /* The same slot again, or an earlier one, is a duplicate: not stored. */
    ev = slot_event(p, 1, T0 + 60000, id[1], sizeof(id[1]));
    ev.id = "other-id";
    assert_int_equal(submit_sync(f, &ev, 1, &dups), 0);
    assert_int_equal(dups, 1);
    ev = slot_event(p, 1, T0, id[2], sizeof(id[2]));
    assert_int_equal(submit_sync(f, &ev, 1, &dups), 0);
    assert_int_equal(dups, 1);
    assert_counts(f, "p", 1, 0);
    assert_int_equal(last_slot(f, "tick"), T0 + 60000);

    /* A later slot fires; it survives a reopen. */
    ev = slot_event(p, 1, T0 + 120000, id[3], sizeof(id[3]));
    assert_int_equal(submit_sync(f, &ev, 1, &dups), 1);
    close_spool(f);
    open_spool(f, 0, 0);
    assert_int_equal(last_slot(f, "tick"), T0 + 120000);
    assert_int_equal(last_slot(f, "other"), -1);
    assert_counts(f, "p", 2, 0);
}

static void test_spool_schedule_slot_without_peers_still_recorded(void **state)
{
    struct fixture *f = *state;
    char id[32];
    start_spool(f, 0, 600);
    struct spool_event ev = slot_event(NULL, 0, T0, id, sizeof(id));
    assert_int_equal(submit_sync(f, &ev, 1, NULL), 1);
    assert_int_equal(last_slot(f, "tick"), T0);
    assert_int_equal(query_int(f, "SELECT count(*) FROM events"), 0);
}

/* A submission that fails part way records neither its event nor its
 * slot: they share the transaction (here, the savepoint). */
static void test_spool_schedule_slot_rolls_back_with_event(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"}, *const twice[] = {"q", "q"};
    char id[32];
    start_spool(f, 0, 600);
    struct spool_event evs[2] = {slot_event(p, 1, T0, id, sizeof(id)),
                                 event("bad", twice, 2, "{}")};
    assert_int_equal(submit_sync(f, evs, 2, NULL), -EINVAL);
    assert_int_equal(last_slot(f, "tick"), -1);
    assert_int_equal(query_int(f, "SELECT count(*) FROM events"), 0);
    /* The slot is still free, and the event dedupe did not keep it. */
    assert_int_equal(submit_sync(f, evs, 1, NULL), 1);
    assert_int_equal(last_slot(f, "tick"), T0);
}

/* A full spool refuses the event, and so the slot stays unrecorded. */
static void test_spool_schedule_slot_not_recorded_when_full(void **state)
{
    struct fixture *f = *state;
    static const char *const p[] = {"p"};
    char id[32];
    start_spool(f, 1, 600); /* 1 byte: every submission is refused */
    struct spool_event ev = slot_event(p, 1, T0, id, sizeof(id));
    assert_int_equal(submit_sync(f, &ev, 1, NULL), -ENOSPC);
    assert_int_equal(last_slot(f, "tick"), -1);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_spool_submit_then_fetch_due),
        T(test_spool_event_without_peers_not_stored_but_deduped),
        T(test_spool_group_commit_before_start),
        T(test_spool_submission_all_or_nothing),
        T(test_spool_dedupe_within_submission),
        T(test_spool_dedupe_across_submissions_and_reopen),
        T(test_spool_dedupe_snapshot_then_log),
        T(test_spool_dedupe_expires),
        T(test_spool_dedupe_index_growth_keeps_live_entries),
        T(test_spool_dedupe_disabled_with_zero_window),
        T(test_spool_delivered_removes_delivery_and_event),
        T(test_spool_retry_updates_attempts_and_next_due),
        T(test_spool_dead_moves_to_dead_letters_with_history),
        T(test_spool_settled_ids_reach_commit_cb),
        T(test_spool_fetch_due_skips_and_limits),
        T(test_spool_max_bytes_refuses_but_applies_outcomes),
        T(test_spool_bytes_fall_as_deliveries_drain),
        T(test_spool_stop_commits_queue_then_refuses),
        T(test_spool_close_without_start_commits_queue),
        T(test_spool_counts_loaded_at_open),
        T(test_spool_open_errors),
        T(test_spool_failed_commit_keeps_outcomes),
        T(test_spool_checkpoints_wal_into_database),
        T(test_spool_acknowledged_events_survive_kill9),
        T(test_spool_ordered_fetch_returns_heads_only),
        T(test_spool_ordered_retrying_head_blocks_only_its_key),
        T(test_spool_ordered_order_survives_reopen),
        T(test_spool_ordered_per_peer_and_unordered_unaffected),
        T(test_spool_migrates_a_v1_database),
        T(test_spool_refuses_a_newer_schema),
        T(test_spool_dead_list_pages_and_filters),
        T(test_spool_dead_get_has_history_and_event),
        T(test_spool_dead_replay_one_moves_it_back),
        T(test_spool_dead_replay_by_peer_and_all),
        T(test_spool_dead_replay_ordered_joins_back_of_key),
        T(test_spool_dead_purge_one_peer_and_all),
        T(test_spool_dead_ops_span_turns),
        T(test_spool_dead_ops_need_a_running_writer),
        T(test_spool_commit_cb_swap_while_running),
        T(test_spool_schedule_slot_recorded_with_event),
        T(test_spool_schedule_slot_without_peers_still_recorded),
        T(test_spool_schedule_slot_rolls_back_with_event),
        T(test_spool_schedule_slot_not_recorded_when_full),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
