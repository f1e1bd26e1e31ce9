/*
 * Unit tests for seen.c: the dedupe index and its snapshot file.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "seen.h"

struct fixture {
    char dir[64];
    char path[128];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/ferry-seen-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/dedupe.snapshot", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char tmp[160];
    unlink(f->path);
    snprintf(tmp, sizeof(tmp), "%s.tmp", f->path);
    unlink(tmp);
    rmdir(f->dir);
    free(f);
    return 0;
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void test_seen_claims_expire_and_undo(void **state)
{
    (void)state;
    struct seen_set d;
    seen_init(&d, 1000);
    uint64_t a = seen_hash(&d, "/src", "a"), b = seen_hash(&d, "/src", "b");
    assert_true(a != b);
    assert_true(a == seen_hash(&d, "/src", "a"));
    assert_true(a != seen_hash(&d, "/sr", "ca")); /* the NUL separates */
    assert_int_equal(seen_claim(&d, a, 1000, 2000, false), 1);
    assert_int_equal(seen_claim(&d, a, 1999, 3000, false), 0); /* live */
    assert_int_equal(seen_claim(&d, a, 2000, 3000, false), 1); /* expired */

    size_t mark = d.n_undo;
    assert_int_equal(seen_claim(&d, b, 2000, 3000, true), 1);
    assert_int_equal(seen_claim(&d, a, 3000, 4000, true), 1);
    seen_undo_to(&d, mark);
    assert_int_equal(seen_claim(&d, b, 2000, 3000, false), 1); /* revoked */
    assert_int_equal(seen_claim(&d, a, 2999, 4000, false), 0); /* back to 3000 */
    seen_free(&d);
}

/* Presized for n entries, loading n does not rebuild (cap unchanged). */
static void test_seen_presize_holds_n_without_growing(void **state)
{
    (void)state;
    struct seen_set d;
    seen_init(&d, 1000);
    assert_int_equal(seen_presize(&d, 5000), 0);
    size_t bytes = seen_bytes(&d);
    char id[16];
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof(id), "%d", i);
        assert_int_equal(seen_claim(&d, seen_hash(&d, "s", id), 1, 10, false), 1);
    }
    assert_int_equal(seen_bytes(&d), bytes);
    assert_int_equal(d.used, 5000);
    seen_free(&d);
}

/* Expiry is kept to window/4096: live until then, at most a unit more. */
static void test_seen_coarse_ticks_round_expiry_up(void **state)
{
    (void)state;
    struct seen_set d;
    seen_init(&d, 600000); /* unit: 146 ms */
    assert_int_equal(d.unit_ms, 146);
    uint64_t a = seen_hash(&d, "s", "a");
    assert_int_equal(seen_claim(&d, a, 0, 600000, false), 1);
    assert_int_equal(seen_claim(&d, a, 599999, 700000, false), 0);
    assert_int_equal(seen_claim(&d, a, 600000 + 146, 700000, false), 1);
    seen_free(&d);
}

/* Far from the base, ticks shift to a new one: expiries are unchanged. */
static void test_seen_rebase_keeps_expiries(void **state)
{
    (void)state;
    struct seen_set d;
    seen_init(&d, 1000); /* unit 1 ms: a rebase every ~33 s */
    uint64_t a = seen_hash(&d, "s", "a"), b = seen_hash(&d, "s", "b"),
             c = seen_hash(&d, "s", "c");
    int64_t now = 0;
    assert_int_equal(seen_claim(&d, a, now, now + 1000, false), 1);
    for (int round = 0; round < 10; round++) {
        now += 30000;
        assert_int_equal(seen_claim(&d, b, now, now + 1000, false), 1);
        assert_int_equal(seen_claim(&d, b, now + 999, now + 5000, false), 0);
        assert_int_equal(seen_claim(&d, a, now, now + 1000, false), 1);
        /* b and a now both expire at now + 1000 */
    }
    assert_true(d.base_ms > 0); /* it did move */
    assert_int_equal(seen_claim(&d, a, now + 999, now + 2000, false), 0);
    assert_int_equal(seen_claim(&d, b, now + 1000, now + 2000, false), 1);
    /* Open claims put a rebase off: their undo records hold old ticks. */
    int64_t t0 = now + 2000;
    size_t mark = d.n_undo;
    assert_int_equal(seen_claim(&d, c, t0, t0 + 100000, true), 1);
    int64_t base = d.base_ms;
    assert_int_equal(seen_claim(&d, b, t0 + 40000, t0 + 41000, true), 1);
    assert_int_equal(d.base_ms, base);
    assert_int_equal(seen_claim(&d, b, t0 + 40999, t0 + 50000, false), 0);
    seen_undo_to(&d, mark);
    assert_int_equal(seen_claim(&d, c, t0 + 40000, t0 + 41000, false), 1);
    assert_int_equal(seen_claim(&d, b, t0 + 40000, t0 + 41000, false), 1);
    seen_free(&d);
}

/* About 11 bytes an entry, no false duplicate among fresh ids, and
 * expired entries leave memory as new ones come. */
static void test_seen_compact_and_exact(void **state)
{
    (void)state;
    struct seen_set d;
    seen_init(&d, 1000);
    char id[24];
    enum { N = 200000 };
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "a%d", i);
        assert_int_equal(seen_claim(&d, seen_hash(&d, "s", id), 1, 1000, false), 1);
    }
    assert_int_equal(d.used, N);
    assert_true(seen_bytes(&d) <= (size_t)N * 14);
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "a%d", i);
        assert_int_equal(seen_claim(&d, seen_hash(&d, "s", id), 2, 1000, false), 0);
        snprintf(id, sizeof(id), "b%d", i);
        assert_int_equal(seen_claim(&d, seen_hash(&d, "s", id), 999, 1000, false), 1);
    }
    size_t full = seen_bytes(&d);
    /* All expired at 1000: the next million replace them in place. */
    for (int i = 0; i < 2 * N; i++) {
        snprintf(id, sizeof(id), "c%d", i);
        assert_int_equal(seen_claim(&d, seen_hash(&d, "s", id), 2000, 3000, false), 1);
    }
    assert_true(seen_bytes(&d) <= full + full / 4);
    seen_free(&d);
}

static void test_seen_snapshot_round_trip_once(void **state)
{
    struct fixture *f = *state;
    struct seen_set d, e;
    seen_init(&d, 1000);
    char id[16];
    for (int i = 0; i < 3000; i++) {
        snprintf(id, sizeof(id), "id%d", i);
        assert_int_equal(seen_claim(&d, seen_hash(&d, "s", id), 1, 100 + i, false), 1);
    }
    assert_int_equal(seen_save(&d, f->path, 42), 0);
    assert_true(exists(f->path));
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600); /* it holds the hash key */

    seen_init(&e, 1000); /* another key: the file's replaces it */
    assert_int_equal(seen_load_file(&e, f->path, 42), 0);
    assert_false(exists(f->path)); /* used at most once */
    assert_int_equal(seen_bytes(&e), seen_bytes(&d));
    assert_int_equal(e.used, d.used);
    for (int i = 0; i < 3000; i++) {
        snprintf(id, sizeof(id), "id%d", i);
        uint64_t h = seen_hash(&e, "s", id);
        assert_true(h == seen_hash(&d, "s", id));
        assert_int_equal(seen_claim(&e, h, 100 + i - 1, 999, false), 0);
        assert_int_equal(seen_claim(&e, h, 100 + i, 999, false), 1);
    }
    assert_int_equal(seen_load_file(&e, f->path, 42), -ENOENT);
    if (sysconf(_SC_PAGESIZE) == 4096)
        assert_true(e.map != NULL); /* mapped, not copied */
    /* Growing replaces the mapped slots; the entries move with them. */
    for (int i = 0; i < 30000; i++) {
        snprintf(id, sizeof(id), "more%d", i);
        assert_int_equal(seen_claim(&e, seen_hash(&e, "s", id), 1, 50000, false), 1);
    }
    assert_null(e.map); /* every shard grew off it, so it is gone */
    for (int i = 0; i < 3000; i++) {
        snprintf(id, sizeof(id), "id%d", i);
        assert_int_equal(seen_claim(&e, seen_hash(&e, "s", id), 1, 50000, false), 0);
    }
    seen_free(&d);
    seen_free(&e);
}

static void test_seen_snapshot_refused_when_stale_or_broken(void **state)
{
    struct fixture *f = *state;
    struct seen_set d, e;
    seen_init(&d, 1000);
    assert_int_equal(seen_claim(&d, seen_hash(&d, "s", "x"), 1, 100, false), 1);

    /* The log moved on since the save: not used, and removed. */
    assert_int_equal(seen_save(&d, f->path, 7), 0);
    seen_init(&e, 1000);
    assert_int_equal(seen_load_file(&e, f->path, 8), -ESTALE);
    assert_false(exists(f->path));
    assert_int_equal(e.used, 0); /* unaltered */

    /* Cut short (a torn copy): not a whole snapshot. */
    assert_int_equal(seen_save(&d, f->path, 7), 0);
    assert_int_equal(truncate(f->path, 4096 + 100), 0);
    assert_int_equal(seen_load_file(&e, f->path, 7), -EINVAL);
    assert_int_equal(e.used, 0);

    /* A flipped header byte. */
    assert_int_equal(seen_save(&d, f->path, 7), 0);
    int fd = open(f->path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "\xff", 1, 40), 1);
    close(fd);
    assert_int_equal(seen_load_file(&e, f->path, 7), -EINVAL);
    assert_false(exists(f->path));

    /* Open claims cannot be saved. */
    assert_int_equal(seen_claim(&d, seen_hash(&d, "s", "y"), 1, 100, true), 1);
    assert_int_equal(seen_save(&d, f->path, 7), -EINVAL);
    assert_false(exists(f->path));
    seen_free(&d);
    seen_free(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seen_claims_expire_and_undo),
        cmocka_unit_test(test_seen_presize_holds_n_without_growing),
        cmocka_unit_test(test_seen_coarse_ticks_round_expiry_up),
        cmocka_unit_test(test_seen_rebase_keeps_expiries),
        cmocka_unit_test(test_seen_compact_and_exact),
        cmocka_unit_test_setup_teardown(test_seen_snapshot_round_trip_once,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_seen_snapshot_refused_when_stale_or_broken, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
