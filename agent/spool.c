/*
 * spool: the durable store between ingest and delivery (see spool.h).
 * Everything Ferry has answered 202 for lives here until every peer it was
 * routed to has it, or it is dead-lettered.
 *
 * DESIGN
 * Threads. One writer thread owns the write connection (s->db and the w[]
 * statements). Ingest threads and the dispatcher only append to two
 * intrusive queues under s->lock (submissions, outcome batches) and signal
 * s->cond. The reader connection (struct spool_reader) belongs to whichever
 * single thread opened it; WAL lets it read while the writer writes.
 *
 * A turn. The writer sleeps on s->cond (1 s timeout for housekeeping),
 * takes BOTH queues whole, and applies them in one BEGIN IMMEDIATE ...
 * COMMIT: outcomes first (they free space and never fail individually),
 * then the submissions. A submission is all or nothing while the rest of
 * the group still commits: invalid ones are refused before they write,
 * and should one fail part way (rare: a peer named twice, an I/O error),
 * the turn is rolled back and redone with each submission inside its own
 * SAVEPOINT, which then rolls back alone. (Savepoints on every turn would
 * cost a third of the apply time.) With
 * synchronous=FULL that one COMMIT is one fsync for everyone queued; the
 * group grows by itself under load because work piles up during the sync.
 * Only after COMMIT returns are the done callbacks run (ingest answers 202
 * then), followed by the commit callback (the dispatcher learns of new
 * deliveries and of outcomes that are now durable).
 *
 * Failure. If the transaction dies (COMMIT or a statement fails with the
 * transaction rolled back: SQLITE_FULL, SQLITE_IOERR), every submission of
 * the turn that had not failed on its own gets -ENOSPC or -EIO, the outcome
 * batches go back to the head of their queue for the next turn (they must
 * not be lost: the dispatcher forgets a delivery only once its outcome is
 * durable), and spool_writable() reads false until a commit succeeds. The
 * writer then waits up to a second before retrying, so a full disk does not
 * spin it.
 *
 * Counts. The writer keeps per-peer pending/dead counts in a small hash of
 * struct peer. Changes made by a turn are kept as deltas (per submission,
 * then per turn) and published under s->counts_lock only after COMMIT, so
 * readers never see counts of rolled-back work. They are first counted by
 * the writer thread before its first turn, off the way to ready.
 *
 * Space. Auto-checkpointing is off (it would run inside COMMIT and delay
 * the 202s). When the WAL has grown past CHECKPOINT_FRAMES the writer asks
 * a checkpointer thread, with its own connection, to copy it into the
 * database on the other core while commits go on. The WAL can only start
 * over once every frame is copied, which a concurrent copy never achieves
 * under steady load, so when the background pass is done the writer
 * copies the few frames appended meanwhile itself, between two turns; its
 * next transaction then rewinds the WAL (journal_size_limit trims it).
 * Expired dedupe rows are pruned in bounded DELETEs inside turns, at least
 * once a second and on every turn while a backlog remains. Dedupe lookups
 * never touch SQLite: see "dedupe index" for the in-memory index.
 *
 * I/O. The connections use a thin VFS that writes a commit's WAL frames
 * with a few large writes instead of two per page (walvfs.c).
 * Measured on a 2-core VM, 100k 1 KiB events from 4 threads x 32 in
 * flight: ~100 events per commit, 50-79k events/s depending on the disk's
 * fsync latency at the time (a plain keyed-dedupe, savepoint-per-
 * submission, checkpoint-in-COMMIT design did 24k).
 *
 * Ids. deliveries uses AUTOINCREMENT so an id is never reused: a late or
 * repeated outcome for a settled delivery must not hit a newer one, and a
 * dead letter keeps its delivery id as its own.
 *
 * Ordering. An ordered delivery stores its partition key in okey. Only the
 * head of each (peer, okey), the one with the smallest id, is ever due:
 * the others are PARKED (next_ms = INT64_MAX, beyond every fetch). The
 * writer keeps that invariant: a new ordered delivery is parked when its
 * key already has a pending delivery, and settling a head (delivered or
 * dead) unparks the next one in the same transaction. So the fetch needs
 * no extra test per row and never walks over a blocked key's backlog,
 * and the partial index on okey costs unordered work nothing.
 *
 * Admin ops. Replays and purges of dead letters are a third queue. Their
 * callers block on admin_cond until the op is finished. The writer applies
 * at most ADMIN_BATCH dead letters per turn (in the turn's transaction,
 * after the outcomes), so a huge purge is spread over turns instead of
 * holding every 202 behind one long transaction; an unfinished op goes
 * back to the head of its queue.
 *
 * The commit callback is called under cb_lock, which spool_set_commit_cb
 * also takes: swapping it waits for a call in progress, and the old one
 * is never called after the swap returns.
 */
#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "seen.h"
#include "walvfs.h"

#define SCHEMA_VERSION 3
/* next_ms of a parked ordered delivery: due only once it heads its key. */
#define PARKED_MS INT64_MAX
#define ADMIN_BATCH 1000 /* dead letters replayed or purged per turn */
#define HOUSEKEEPING_MS 1000
#define FAILED_TURN_BACKOFF_MS 1000
#define PRUNE_BATCH 2000
#define CHECKPOINT_FRAMES 4000           /* ~16 MiB of 4 KiB pages */
#define RESERVE_MIN_BYTES (1LL << 20)
#define RESERVE_MAX_BYTES (256LL << 20)
#define CATCHUP_FRAMES 256
#define JOURNAL_SIZE_LIMIT (64LL << 20)  /* WAL file kept at most this */
#define BUSY_TIMEOUT_MS 5000
#define LOW_DISK_OUTCOMES 256 /* outcomes per turn while the disk is low */
#define LOW_DISK_BUSY_MS 50   /* a hard checkpoint waits out readers this long */
#define EVENT_OVERHEAD_BYTES 128 /* row + index estimate for max_bytes */
#define PEER_BUCKETS 64

/* Version 1: the tables (an empty file is version 0). */
static const char schema_v1_sql[] =
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
    /* An append-only log: see "dedupe index" below for why not keyed. */
    "CREATE TABLE dedupe("
    " seq INTEGER PRIMARY KEY, source TEXT NOT NULL, ce_id TEXT NOT NULL,"
    " expires_ms INTEGER NOT NULL);";

/*
 * Version 2: ordered delivery and replay. okey is the partition key of an
 * ordered delivery (NULL when unordered; a dead letter keeps it for a
 * replay), indexed only where set; since_ms is when a replayed delivery's
 * age starts (NULL: the event's received_ms).
 */
static const char schema_v2_sql[] =
    "ALTER TABLE deliveries ADD COLUMN okey TEXT;"
    "ALTER TABLE deliveries ADD COLUMN since_ms INTEGER;"
    "ALTER TABLE dead_letters ADD COLUMN okey TEXT;"
    "CREATE INDEX deliveries_okey ON deliveries(peer, okey, id)"
    " WHERE okey IS NOT NULL;";

/*
 * Version 3: schedules. One row per schedule name that has fired: the last
 * slot it fired, written in the transaction of the event it produced.
 */
static const char schema_v3_sql[] =
    "CREATE TABLE schedules("
    " name TEXT PRIMARY KEY, last_slot_ms INTEGER NOT NULL);";

/* migrations[v] takes the schema from version v to v + 1. */
static const char *const migrations[SCHEMA_VERSION] = {
    schema_v1_sql, schema_v2_sql, schema_v3_sql};

/* The writer's statements, prepared once at open. */
enum wstmt {
    W_BEGIN, W_COMMIT, W_ROLLBACK, W_SAVEPOINT, W_RELEASE, W_ROLLBACK_TO,
    W_DEDUPE, W_EVENT_INSERT, W_DELIVERY_INSERT, W_DELIVERY_TAKE,
    W_DELIVERY_RETRY, W_ATTEMPT_INSERT, W_ATTEMPTS_DELETE, W_EVENT_UNREF,
    W_EVENT_DELETE, W_EVENT_DELETE_LAST, W_DEAD_INSERT, W_PRUNE, W_BYTES, W_OKEY_BUSY,
    W_OKEY_PROMOTE, W_DEAD_TAKE_ID, W_DEAD_TAKE_PEER, W_DEAD_TAKE_ANY,
    W_LAST_ID, W_SLOT_CLAIM, W__N
};

static const char *const writer_sql[W__N] = {
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    [W_SAVEPOINT] = "SAVEPOINT sub",
    [W_RELEASE] = "RELEASE sub",
    [W_ROLLBACK_TO] = "ROLLBACK TO sub",
    [W_DEDUPE] = "INSERT INTO dedupe(source, ce_id, expires_ms)"
                 " VALUES(?1, ?2, ?3)",
    [W_EVENT_INSERT] = "INSERT INTO events(source, ce_id, received_ms,"
                       " partition_key, format, text, data, refs)"
                       " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [W_DELIVERY_INSERT] = "INSERT INTO deliveries(event_seq, peer, attempts,"
                          " next_ms, okey, since_ms)"
                          " VALUES(?1, ?2, 0, ?3, ?4, ?5)",
    /* The take statements all return a struct taken. */
    [W_DELIVERY_TAKE] = "DELETE FROM deliveries WHERE id = ?1"
                        " RETURNING id, event_seq, peer, okey, attempts",
    [W_DELIVERY_RETRY] = "UPDATE deliveries SET attempts = CASE WHEN ?2 > 0"
                         " THEN ?2 ELSE attempts END, next_ms = ?3"
                         " WHERE id = ?1",
    [W_ATTEMPT_INSERT] = "INSERT INTO attempts(delivery_id, n, at_ms,"
                         " duration_ms, status, error)"
                         " VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
    [W_ATTEMPTS_DELETE] = "DELETE FROM attempts WHERE delivery_id = ?1",
    [W_EVENT_UNREF] = "UPDATE events SET refs = refs - 1 WHERE seq = ?1"
                      " RETURNING refs",
    [W_EVENT_DELETE] = "DELETE FROM events WHERE seq = ?1",
    /* The usual case, one peer: one statement instead of two. */
    [W_EVENT_DELETE_LAST] = "DELETE FROM events WHERE seq = ?1 AND refs <= 1",
    [W_DEAD_INSERT] = "INSERT INTO dead_letters(id, event_seq, peer,"
                      " attempts, dead_ms, reason, last_status, last_error,"
                      " okey) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    /* Looks at the ?2 oldest claims only, so it stays bounded even when
     * a shorter window left younger rows expired behind older ones. */
    [W_PRUNE] = "DELETE FROM dedupe WHERE seq IN (SELECT seq FROM"
                " (SELECT seq, expires_ms FROM dedupe ORDER BY seq LIMIT ?2)"
                " WHERE expires_ms <= ?1)",
    [W_BYTES] = "SELECT (SELECT page_count FROM pragma_page_count()),"
                " (SELECT freelist_count FROM pragma_freelist_count())",
    /* Ordering: one seek each in the partial index deliveries_okey. */
    [W_OKEY_BUSY] = "SELECT 1 FROM deliveries WHERE peer = ?1 AND okey = ?2"
                    " LIMIT 1",
    /* The new head becomes due as of its age start, ahead of younger
     * work, since it has waited all along. */
    [W_OKEY_PROMOTE] = "UPDATE deliveries SET next_ms = coalesce(since_ms,"
                       " (SELECT received_ms FROM events"
                       " WHERE seq = deliveries.event_seq), ?3)"
                       " WHERE id = (SELECT id FROM deliveries WHERE peer = ?1"
                       " AND okey = ?2 ORDER BY id LIMIT 1) AND next_ms = ?4",
    [W_DEAD_TAKE_ID] = "DELETE FROM dead_letters WHERE id = ?1"
                       " RETURNING id, event_seq, peer, okey, attempts",
    /* ?2 bounds a long op to the dead letters that existed when it began. */
    [W_DEAD_TAKE_PEER] = "DELETE FROM dead_letters WHERE id = (SELECT id"
                         " FROM dead_letters WHERE peer = ?1 AND id <= ?2"
                         " ORDER BY id LIMIT 1)"
                         " RETURNING id, event_seq, peer, okey, attempts",
    [W_DEAD_TAKE_ANY] = "DELETE FROM dead_letters WHERE id = (SELECT min(id)"
                        " FROM dead_letters WHERE id <= ?2)"
                        " RETURNING id, event_seq, peer, okey, attempts",
    [W_LAST_ID] = "SELECT coalesce((SELECT seq FROM sqlite_sequence"
                  " WHERE name = 'deliveries'), 0)",
    /* Changes one row only when slot ?2 is later than the one recorded. */
    [W_SLOT_CLAIM] = "INSERT INTO schedules(name, last_slot_ms) VALUES(?1, ?2)"
                     " ON CONFLICT(name) DO UPDATE SET last_slot_ms ="
                     " excluded.last_slot_ms"
                     " WHERE excluded.last_slot_ms > last_slot_ms",
};

/* The reader's statements. */
enum rstmt {
    R_DUE, R_NEXT_DUE, R_OLDEST, R_PEERS, R_BEGIN, R_COMMIT, R_DEAD_LIST,
    R_DEAD_LIST_PEER, R_DEAD_GET, R_DEAD_ATTEMPTS, R_DEAD_PEERS,
    R_SLOT_LAST, R__N
};

/* A dead letter's columns, as load_dead_letter() reads them. The type is
 * in the stored JSON (the whole event, or a binary event's attributes). */
#define DEAD_COLUMNS                                                         \
    "dl.id, dl.peer, e.ce_id, e.source, CASE WHEN"                          \
    " json_valid(CAST(e.text AS TEXT)) THEN"                                \
    " json_extract(CAST(e.text AS TEXT), '$.type') END, dl.attempts,"      \
    " e.received_ms, dl.dead_ms, dl.reason, dl.last_status, dl.last_error"
#define DEAD_FROM                                                            \
    " FROM dead_letters dl LEFT JOIN events e ON e.seq = dl.event_seq"

static const char *const reader_sql[R__N] = {
    /* ?2 is below PARKED_MS: a parked delivery is never due. */
    [R_DUE] = "SELECT d.id, d.event_seq, d.attempts, d.next_ms,"
              " coalesce(d.since_ms, e.received_ms), e.ce_id, e.partition_key,"
              " e.format, e.text, e.data"
              " FROM deliveries d JOIN events e ON e.seq = d.event_seq"
              " WHERE d.peer = ?1 AND d.next_ms <= ?2 ORDER BY d.next_ms, d.id",
    [R_NEXT_DUE] = "SELECT min(next_ms) FROM deliveries"
                   " WHERE peer = ?1 AND next_ms > ?2",
    [R_OLDEST] = "SELECT e.received_ms FROM deliveries d"
                 " JOIN events e ON e.seq = d.event_seq WHERE d.peer = ?1"
                 " ORDER BY d.event_seq LIMIT 1",
    /* DISTINCT would scan every delivery; this seeks once per peer. */
    [R_PEERS] = "WITH RECURSIVE p(name) AS (SELECT min(peer) FROM deliveries"
                " UNION ALL SELECT (SELECT min(peer) FROM deliveries"
                " WHERE peer > p.name) FROM p WHERE p.name IS NOT NULL)"
                " SELECT name FROM p WHERE name IS NOT NULL",
    [R_BEGIN] = "BEGIN",
    [R_COMMIT] = "COMMIT",
    [R_DEAD_LIST] = "SELECT " DEAD_COLUMNS DEAD_FROM
                    " WHERE dl.id > ?1 ORDER BY dl.id LIMIT ?2",
    [R_DEAD_LIST_PEER] = "SELECT " DEAD_COLUMNS DEAD_FROM
                         " WHERE dl.peer = ?3 AND dl.id > ?1"
                         " ORDER BY dl.id LIMIT ?2",
    [R_DEAD_GET] = "SELECT " DEAD_COLUMNS ", e.seq IS NOT NULL, e.format,"
                   " e.text, e.data" DEAD_FROM " WHERE dl.id = ?1",
    [R_DEAD_ATTEMPTS] = "SELECT n, at_ms, duration_ms, status, error"
                        " FROM attempts WHERE delivery_id = ?1 ORDER BY n",
    [R_DEAD_PEERS] = "WITH RECURSIVE p(name) AS (SELECT min(peer)"
                     " FROM dead_letters UNION ALL SELECT (SELECT min(peer)"
                     " FROM dead_letters WHERE peer > p.name) FROM p"
                     " WHERE p.name IS NOT NULL)"
                     " SELECT name FROM p WHERE name IS NOT NULL",
    [R_SLOT_LAST] = "SELECT last_slot_ms FROM schedules WHERE name = ?1",
};

/*
 * A peer's counts. pending/dead are published (read under counts_lock);
 * the rest is the writer's scratch for the turn in progress. Entries live
 * until spool_close, so the writer may bind ->name with SQLITE_STATIC.
 */
struct peer {
    char *name;
    uint64_t hash;
    int64_t pending, dead;          /* published */
    int64_t turn_pending, turn_dead; /* deltas of the open transaction */
    int64_t sub_pending;             /* deltas of the open savepoint */
    bool in_turn, in_sub;
    struct peer *turn_next, *sub_next;
    struct peer *next; /* hash chain */
};

/* Outcomes as posted: one allocation per spool_post_outcomes call. */
struct outcome_batch {
    struct outcome_batch *next;
    size_t n;
    struct spool_outcome o[];
};


/* What a turn changed so far; writer thread only. */
struct turn {
    int64_t now;          /* wall ms, from the injectable clock */
    int64_t added_bytes;  /* estimate, for max_bytes within one turn */
    size_t n_new, sub_new; /* new deliveries: committed-to-be, savepoint */
    struct peer *touched, *sub_touched;
    bool io_error;        /* saw SQLITE_FULL or SQLITE_IOERR */
};

/*
 * A replay or purge of dead letters (spool_dead_replay/_purge). It lives on
 * the blocked caller's stack: once @finished is set (under lock) the
 * writer never touches it again.
 */
struct admin_op {
    bool purge;          /* else replay */
    int64_t id;          /* > 0: only this dead letter */
    const char *peer;    /* non-NULL: only this peer's */
    int64_t bound;       /* ids above were dead-lettered after the op began;
                          * 0 until the writer first looks */
    long turn_n;         /* writer: done in the open transaction */
    bool turn_finished;  /* writer: nothing left, as of that transaction */
    long done;           /* under lock: committed so far */
    int result;          /* under lock: 0 or -errno, once finished */
    bool finished;       /* under lock */
    struct admin_op *next;
};

/* A row taken out of deliveries or dead_letters (the take statements). */
struct taken {
    int64_t id;
    int64_t seq;       /* its event */
    struct peer *peer;
    char *okey;        /* malloc'd partition key when ordered, else NULL */
    int attempts;
};

struct spool {
    /* Set at open, read-only afterwards. */
    char *dir, *db_path, *wal_path;
    char *seen_path; /* the dedupe snapshot (see seen.c) */
    bool opened;     /* spool_open succeeded */
    int64_t max_bytes, dedupe_ms;
    int64_t (*clock_ms)(void *arg);
    void *clock_arg;
    int lock_fd;
    int64_t page_size;

    /* Writer thread only (or the opener/closer while no writer runs). */
    sqlite3 *db;
    sqlite3_stmt *w[W__N];
    int wal_frames;            /* from the WAL hook */
    enum { CKPT_IDLE, CKPT_WANTED, CKPT_RUNNING, CKPT_DONE, CKPT_QUIT }
        ckpt_state;            /* under lock */
    int ckpt_frames_done;      /* under lock: copied by the last pass */
    sqlite3 *ckpt_db;          /* checkpointer thread only */
    int ckpt_sync_fd;          /* spool.db, for fdatasync */
    pthread_cond_t ckpt_cond;  /* under lock */
    pthread_t ckpt_thread;
    bool ckpt_started;
    int64_t next_housekeeping_ms; /* monotonic */
    bool prune_backlog;        /* last prune hit PRUNE_BATCH */
    int64_t backoff_until_ms;  /* monotonic; after a failed turn */
    int64_t *settled;
    size_t n_settled, cap_settled;
    struct seen_set seen;

    /* Queues, under lock. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct spool_write *subs, **subs_tail;
    struct outcome_batch *outs, **outs_tail;
    struct admin_op *ops, **ops_tail;
    pthread_cond_t admin_cond; /* an admin op finished */
    bool stopping, writer_idle;
    bool started, joined;
    pthread_t thread;

    /* The commit callback, under cb_lock (held while it runs). */
    pthread_mutex_t cb_lock;
    spool_commit_cb commit_cb;
    void *commit_arg;

    /* Peer counts: the writer inserts under counts_lock and reads freely;
     * other threads read under counts_lock. */
    pthread_mutex_t counts_lock;
    pthread_cond_t counts_cond; /* counts_loaded became true */
    atomic_bool counts_loaded;
    struct peer *peers[PEER_BUCKETS];

    /* Disk headroom (see "Disk space"); set at open, then writer only. */
    int64_t reserve_bytes;
    int checkpoint_frames;
    int64_t free_bytes;

    /* Any thread. */
    atomic_llong bytes;
    atomic_bool disk_low;
    atomic_bool writable;
    atomic_ullong commits;
    atomic_llong heartbeat_ms;
};

struct spool_reader {
    sqlite3 *db;
    sqlite3_stmt *st[R__N];
};

/* ---- small helpers --------------------------------------------------- */

static int64_t default_clock(void *arg)
{
    (void)arg;
    return clock_wall_ms();
}

/* Map a SQLite result code to the negative errno our callers see. */
static int sqlite_errno(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_CONSTRAINT:
    case SQLITE_TOOBIG:
    case SQLITE_MISMATCH:
        return -EINVAL;
    default:
        return -EIO;
    }
}

static bool is_io_error(int rc)
{
    return (rc & 0xff) == SQLITE_FULL || (rc & 0xff) == SQLITE_IOERR;
}

/* Step @st until it is done and reset it. Returns the last step's code. */
static int run(sqlite3_stmt *st)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    sqlite3_reset(st);
    return rc;
}

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* mkdir -p with mode 0750 for each missing component. 0 or -errno. */
static int mkdir_p(const char *dir)
{
    if (!*dir)
        return -EINVAL;
    char *p = strdup(dir);
    int rc = 0;
    if (!p)
        return -ENOMEM;
    for (char *c = p + 1;; c++) {
        if (*c != '/' && *c != '\0')
            continue;
        char saved = *c;
        *c = '\0';
        if (mkdir(p, 0750) != 0 && errno != EEXIST) {
            rc = -errno;
            break;
        }
        *c = saved;
        if (saved == '\0')
            break;
    }
    free(p);
    struct stat st;
    if (rc == 0 && stat(dir, &st) != 0)
        rc = -errno;
    else if (rc == 0 && !S_ISDIR(st.st_mode))
        rc = -ENOTDIR;
    return rc;
}

static int prepare_all(sqlite3 *db, const char *const *sql, size_t n,
                       sqlite3_stmt **out)
{
    for (size_t i = 0; i < n; i++) {
        int rc = sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                    &out[i], NULL);
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

static void finalize_all(sqlite3_stmt **st, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        sqlite3_finalize(st[i]);
        st[i] = NULL;
    }
}

/*
 * SQLite is the spool's alone in Ferry, so the spool may set its global
 * options, once, before the library initialises: without memory
 * statistics every SQLite allocation skips a global mutex (~10% of the
 * writer's time). Fails harmlessly if SQLite was already initialised.
 */
static const char *vfs_name; /* NULL: SQLite's default VFS */

static void sqlite_setup(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    vfs_name = walvfs_register();
}

/*
 * Open @path with one connection per thread in mind: NOMUTEX is safe
 * because a connection is never shared, and saves a lock per call.
 * NULL with "spool.db PATH: why" in @err on failure.
 */
static sqlite3 *open_db(const char *path, int flags, char *err,
                        size_t err_len)
{
    sqlite3 *db = NULL;
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sqlite_setup);
    int rc = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX,
                             vfs_name);
    if (rc != SQLITE_OK) {
        snprintf(err, err_len, "spool.db %s: %s", path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    return db;
}

/* ---- peers ----------------------------------------------------------- */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static struct peer *peer_find(struct spool *s, const char *name, uint64_t h)
{
    for (struct peer *p = s->peers[h % PEER_BUCKETS]; p; p = p->next)
        if (p->hash == h && strcmp(p->name, name) == 0)
            return p;
    return NULL;
}

/* Find or add @name; writer side (or open). NULL only on -ENOMEM. */
static struct peer *peer_get(struct spool *s, const char *name)
{
    uint64_t h = fnv1a(name);
    struct peer *p = peer_find(s, name, h);
    if (p)
        return p;
    p = calloc(1, sizeof(*p));
    if (!p || !(p->name = strdup(name))) {
        free(p);
        return NULL;
    }
    p->hash = h;
    pthread_mutex_lock(&s->counts_lock);
    p->next = s->peers[h % PEER_BUCKETS];
    s->peers[h % PEER_BUCKETS] = p;
    pthread_mutex_unlock(&s->counts_lock);
    return p;
}

static void touch_turn(struct turn *t, struct peer *p)
{
    if (p->in_turn)
        return;
    p->in_turn = true;
    p->turn_next = t->touched;
    t->touched = p;
}

static void touch_sub(struct turn *t, struct peer *p)
{
    if (p->in_sub)
        return;
    p->in_sub = true;
    p->sub_next = t->sub_touched;
    t->sub_touched = p;
}

/* The savepoint was released: its deltas join the turn's. */
static void sub_keep(struct turn *t)
{
    for (struct peer *p = t->sub_touched; p; p = p->sub_next) {
        p->turn_pending += p->sub_pending;
        p->sub_pending = 0;
        p->in_sub = false;
        touch_turn(t, p);
    }
    t->sub_touched = NULL;
    t->n_new += t->sub_new;
    t->sub_new = 0;
}

static void sub_drop(struct turn *t)
{
    for (struct peer *p = t->sub_touched; p; p = p->sub_next) {
        p->sub_pending = 0;
        p->in_sub = false;
    }
    t->sub_touched = NULL;
    t->sub_new = 0;
}

/* After COMMIT: make the turn's deltas visible. With @keep false, drop. */
static void turn_publish(struct spool *s, struct turn *t, bool keep)
{
    sub_drop(t);
    pthread_mutex_lock(&s->counts_lock);
    for (struct peer *p = t->touched; p; p = p->turn_next) {
        if (keep) {
            p->pending += p->turn_pending;
            p->dead += p->turn_dead;
        }
        p->turn_pending = p->turn_dead = 0;
        p->in_turn = false;
    }
    pthread_mutex_unlock(&s->counts_lock);
    t->touched = NULL;
}

/* Initial counts: one GROUP BY per table. */
static int load_counts(struct spool *s)
{
    static const char *const sql[2] = {
        "SELECT peer, count(*) FROM deliveries GROUP BY peer",
        "SELECT peer, count(*) FROM dead_letters GROUP BY peer",
    };
    for (int i = 0; i < 2; i++) {
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(s->db, sql[i], -1, &st, NULL);
        while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            const char *name = (const char *)sqlite3_column_text(st, 0);
            struct peer *p = name ? peer_get(s, name) : NULL;
            if (!p) {
                rc = SQLITE_NOMEM;
                break;
            }
            pthread_mutex_lock(&s->counts_lock); /* published */
            *(i == 0 ? &p->pending : &p->dead) = sqlite3_column_int64(st, 1);
            pthread_mutex_unlock(&s->counts_lock);
            rc = SQLITE_OK;
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return rc;
    }
    return SQLITE_OK;
}

/*
 * Count once, on the writer thread before its first turn (or on the
 * caller's, if the writer never started), then wake anyone waiting in
 * spool_peer_counts(). A failure leaves the counts at 0 and is logged.
 */
static void count_once(struct spool *s)
{
    if (atomic_load(&s->counts_loaded))
        return;
    if (load_counts(s) != SQLITE_OK)
        log_warn("spool: cannot count the pending deliveries; the gauges"
                 " start from 0",
                 LOG_FIELDS(LOG_S("error", sqlite3_errmsg(s->db))));
    pthread_mutex_lock(&s->counts_lock);
    atomic_store(&s->counts_loaded, true);
    pthread_cond_broadcast(&s->counts_cond);
    pthread_mutex_unlock(&s->counts_lock);
}

/* The dedupe log's first and last rows (0 and 0 when empty). Two queries:
 * SQLite answers a lone min() or max() from the b-tree's edge, but scans
 * the whole table for both at once. */
static int log_bounds(struct spool *s, int64_t *first, int64_t *last)
{
    static const char *const sql[2] = {
        "SELECT seq FROM dedupe ORDER BY seq LIMIT 1",
        "SELECT seq FROM dedupe ORDER BY seq DESC LIMIT 1",
    };
    int64_t *out[2] = {first, last};
    int rc = SQLITE_OK;
    for (int i = 0; i < 2 && rc == SQLITE_OK; i++) {
        sqlite3_stmt *st = NULL;
        *out[i] = 0;
        rc = sqlite3_prepare_v2(s->db, sql[i], -1, &st, NULL);
        if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
            *out[i] = sqlite3_column_int64(st, 0);
        if (rc == SQLITE_ROW || rc == SQLITE_DONE)
            rc = SQLITE_OK;
        sqlite3_finalize(st);
    }
    return rc;
}

/*
 * The dedupe index: the snapshot the last clean stop left, if the log has
 * not moved since; otherwise rebuilt from the log's live rows.
 */
static int seen_load(struct spool *s)
{
    int64_t now = s->clock_ms(s->clock_arg), first = 0, last = 0;
    int rc = log_bounds(s, &first, &last);
    if (rc != SQLITE_OK)
        return rc;
    int src = seen_load_file(&s->seen, s->seen_path, last);
    if (src == 0)
        return SQLITE_OK;
    if (src != -ENOENT)
        log_info("spool: dedupe snapshot not used, reading the log",
                 LOG_FIELDS(LOG_S("reason",
                                  src == -ESTALE   ? "the log changed since"
                                  : src == -EINVAL ? "not a whole snapshot"
                                                   : strerror(-src))));
    if (last > 0 && seen_presize(&s->seen, (size_t)(last - first + 1)))
        return SQLITE_NOMEM;
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT source, ce_id, expires_ms FROM dedupe"
                            " WHERE expires_ms > ?1",
                            -1, &st, NULL);
    if (rc == SQLITE_OK)
        sqlite3_bind_int64(st, 1, now);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *src_text = (const char *)sqlite3_column_text(st, 0);
        const char *id = (const char *)sqlite3_column_text(st, 1);
        uint64_t h = seen_hash(&s->seen, src_text ? src_text : "", id ? id : "");
        /* A later claim of the same key (after expiry) may follow. */
        if (seen_claim(&s->seen, h, now, sqlite3_column_int64(st, 2),
                       false) < 0) {
            rc = SQLITE_NOMEM;
            break;
        }
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* At a clean close: leave the index for the next open (see seen.c). */
static void seen_snapshot(struct spool *s)
{
    int64_t first = 0, last = 0;
    if (!s->opened || s->dedupe_ms <= 0 || !s->db ||
        log_bounds(s, &first, &last) != SQLITE_OK)
        return;
    int rc = seen_save(&s->seen, s->seen_path, last);
    if (rc)
        log_warn("spool: cannot save the dedupe snapshot; the next start"
                 " reads the log",
                 LOG_FIELDS(LOG_S("path", s->seen_path),
                            LOG_S("error", strerror(-rc))));
}

/* ---- opening --------------------------------------------------------- */

static int user_version(sqlite3 *db, int *v)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        *v = sqlite3_column_int(st, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/*
 * Bring the schema to SCHEMA_VERSION, applying migrations[v..] in one
 * transaction: a crash half way leaves the old version intact. Version 0
 * is an empty file.
 */
static int migrate(sqlite3 *db, char *err, size_t err_len)
{
    int v = 0;
    int rc = user_version(db, &v);
    if (rc != SQLITE_OK)
        goto out;
    if (v > SCHEMA_VERSION) {
        snprintf(err, err_len,
                 "spool.db schema version %d is newer than this ferry (%d)",
                 v, SCHEMA_VERSION);
        return -EPROTO;
    }
    if (v == SCHEMA_VERSION)
        return 0;
    if (v < 0) {
        snprintf(err, err_len, "spool.db schema version %d is invalid", v);
        return -EPROTO;
    }
    char bump[64];
    snprintf(bump, sizeof(bump), "PRAGMA user_version = %d; COMMIT",
             SCHEMA_VERSION);
    rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    for (int i = v; rc == SQLITE_OK && i < SCHEMA_VERSION; i++)
        rc = sqlite3_exec(db, migrations[i], NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, bump, NULL, NULL, NULL);
    if (rc == SQLITE_OK && v > 0)
        log_info("spool: schema migrated",
                 LOG_FIELDS(LOG_I("from", v), LOG_I("to", SCHEMA_VERSION)));
out:
    if (rc != SQLITE_OK) {
        snprintf(err, err_len, "spool.db schema: %s", sqlite3_errmsg(db));
        if (!sqlite3_get_autocommit(db))
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return sqlite_errno(rc);
    }
    return 0;
}

/* Record the WAL size after each commit (replaces auto-checkpointing). */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    (void)db;
    (void)name;
    ((struct spool *)arg)->wal_frames = frames;
    return SQLITE_OK;
}

static int configure_writer(struct spool *s, char *err, size_t err_len)
{
    char sql[160];
    snprintf(sql, sizeof(sql),
             "PRAGMA synchronous = FULL; PRAGMA journal_size_limit = %lld;"
             " PRAGMA cache_size = -2048; PRAGMA temp_store = MEMORY",
             JOURNAL_SIZE_LIMIT);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st,
                                NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW &&
        strcmp((const char *)sqlite3_column_text(st, 0), "wal") != 0)
        rc = SQLITE_CANTOPEN; /* e.g. a filesystem without shared memory */
    sqlite3_finalize(st);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, err_len, "spool.db %s: cannot enable WAL: %s",
                 s->db_path, sqlite3_errmsg(s->db));
        return sqlite_errno(rc);
    }
    sqlite3_wal_hook(s->db, wal_hook, s);
    return 0;
}

/* One ferry per spool: two writers would deliver everything twice. */
static int lock_dir(struct spool *s, char *err, size_t err_len)
{
    char *path = path_join(s->dir, "spool.lock");
    int rc = 0;
    if (!path)
        return -ENOMEM;
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (s->lock_fd < 0 || flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        rc = -errno;
        if (rc == -EWOULDBLOCK)
            snprintf(err, err_len, "spool.dir %s: in use by another process",
                     s->dir);
        else
            snprintf(err, err_len, "spool.dir %s: %s", path, strerror(-rc));
    }
    free(path);
    return rc;
}

/*
 * The backlog's size: live data pages. Freed pages are reused, so they do
 * not count (the db file itself never shrinks), and the WAL only holds
 * newer copies of pages already counted; it is bounded by checkpoints and
 * given back when idle (idle_checkpoint). Counting it would keep a drained
 * spool "full" until the next burst.
 */
static void refresh_bytes(struct spool *s)
{
    int64_t pages = 0, free_pages = 0;
    if (sqlite3_step(s->w[W_BYTES]) == SQLITE_ROW) {
        pages = sqlite3_column_int64(s->w[W_BYTES], 0);
        free_pages = sqlite3_column_int64(s->w[W_BYTES], 1);
    }
    sqlite3_reset(s->w[W_BYTES]);
    atomic_store(&s->bytes, (pages - free_pages) * s->page_size);
    /* Free pages inside the database hold new data without the file
     * growing: they count as free space too. */
    struct statvfs vfs;
    if (statvfs(s->dir, &vfs) == 0) {
        s->free_bytes = (int64_t)vfs.f_bavail * (int64_t)vfs.f_frsize +
                        free_pages * s->page_size;
        /* Hysteresis: once low, stay low until half a reserve more is
         * free, or truncating the WAL (see low_disk_checkpoint) would
         * flip readiness and ingest back and forth at the threshold. */
        int64_t need = atomic_load(&s->disk_low)
                           ? s->reserve_bytes + s->reserve_bytes / 2
                           : s->reserve_bytes;
        atomic_store(&s->disk_low, s->free_bytes < need);
    }
}

/*
 * Disk space. SQLite cannot free space on a full disk: deleting delivered
 * rows appends WAL frames, and copying the WAL back needs the database file
 * to grow. So ingest stops while a reserve is still free (1/8 of the
 * filesystem, 1 MiB to 256 MiB), outcomes keep using that reserve, and the
 * WAL is checkpointed before it outgrows a quarter of it, so a checkpoint
 * always fits. Another process can still fill the disk: then commits fail
 * (ENOSPC), nothing is acknowledged, and the writer retries until it can.
 */
static void size_reserve(struct spool *s)
{
    struct statvfs vfs;
    int64_t fs = 0;
    if (statvfs(s->dir, &vfs) == 0)
        fs = (int64_t)vfs.f_blocks * (int64_t)vfs.f_frsize;
    int64_t reserve = fs / 8;
    if (reserve < RESERVE_MIN_BYTES)
        reserve = RESERVE_MIN_BYTES;
    if (reserve > RESERVE_MAX_BYTES)
        reserve = RESERVE_MAX_BYTES;
    s->reserve_bytes = reserve;
    int64_t frames = reserve / 4 / (s->page_size > 0 ? s->page_size : 4096);
    s->checkpoint_frames = frames < CHECKPOINT_FRAMES ? (int)frames : CHECKPOINT_FRAMES;
    if (s->checkpoint_frames < 64)
        s->checkpoint_frames = 64;
}

static int prepare_writer(struct spool *s, char *err, size_t err_len)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA page_size", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        s->page_size = sqlite3_column_int64(st, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_OK)
        rc = prepare_all(s->db, writer_sql, W__N, s->w);
    if (rc == SQLITE_OK && s->dedupe_ms > 0)
        rc = seen_load(s);
    if (rc != SQLITE_OK) {
        snprintf(err, err_len, "spool.db %s: %s", s->db_path,
                 sqlite3_errmsg(s->db));
        return sqlite_errno(rc);
    }
    return 0;
}

/* The checkpointer's connection; FULL so that the database file is
 * synced before the WAL it was copied from may be overwritten. */
static int open_checkpointer(struct spool *s, char *err, size_t err_len)
{
    s->ckpt_db = open_db(s->db_path, SQLITE_OPEN_READWRITE, err, err_len);
    if (!s->ckpt_db)
        return -EIO;
    s->ckpt_sync_fd = open(s->db_path, O_RDONLY | O_CLOEXEC);
    int rc = sqlite3_exec(s->ckpt_db, "PRAGMA synchronous = FULL", NULL, NULL,
                          NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, err_len, "spool.db %s: %s", s->db_path,
                 sqlite3_errmsg(s->ckpt_db));
        return sqlite_errno(rc);
    }
    return 0;
}

/* The struct with its locks and paths; NULL on -ENOMEM. */
static struct spool *spool_alloc(const struct spool_options *opt)
{
    struct spool *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    pthread_condattr_t ca;
    bool ok = pthread_condattr_init(&ca) == 0;
    ok = ok && pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0;
    if (!ok || pthread_cond_init(&s->cond, &ca) != 0) {
        free(s);
        return NULL;
    }
    if (pthread_cond_init(&s->ckpt_cond, NULL) != 0) {
        pthread_cond_destroy(&s->cond);
        free(s);
        return NULL;
    }
    if (pthread_cond_init(&s->admin_cond, NULL) != 0) {
        pthread_cond_destroy(&s->cond);
        pthread_cond_destroy(&s->ckpt_cond);
        free(s);
        return NULL;
    }
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&s->lock, NULL);       /* cannot fail on Linux */
    pthread_mutex_init(&s->counts_lock, NULL);
    pthread_cond_init(&s->counts_cond, NULL);
    pthread_mutex_init(&s->cb_lock, NULL);
    s->ops_tail = &s->ops;
    s->lock_fd = -1;
    s->ckpt_sync_fd = -1;
    s->subs_tail = &s->subs;
    s->outs_tail = &s->outs;
    atomic_init(&s->writable, true);
    s->max_bytes = opt->max_bytes;
    s->dedupe_ms = opt->dedupe_window_s > 0 ? opt->dedupe_window_s * 1000 : 0;
    seen_init(&s->seen, s->dedupe_ms);
    s->clock_ms = opt->clock_ms ? opt->clock_ms : default_clock;
    s->clock_arg = opt->clock_arg;
    s->dir = strdup(opt->dir ? opt->dir : "");
    s->db_path = s->dir ? path_join(s->dir, "spool.db") : NULL;
    s->wal_path = s->dir ? path_join(s->dir, "spool.db-wal") : NULL;
    s->seen_path = s->dir ? path_join(s->dir, "dedupe.snapshot") : NULL;
    if (!s->wal_path || !s->db_path || !s->seen_path) {
        spool_close(s);
        return NULL;
    }
    return s;
}

struct spool *spool_open(const struct spool_options *opt, char *err,
                         size_t err_len)
{
    struct spool *s = spool_alloc(opt);
    int rc = 0;
    if (!s) {
        snprintf(err, err_len, "spool: out of memory");
        return NULL;
    }
    rc = mkdir_p(s->dir);
    if (rc) {
        snprintf(err, err_len, "spool.dir %s: %s", s->dir, strerror(-rc));
        goto out;
    }
    rc = lock_dir(s, err, err_len);
    if (rc)
        goto out;
    s->db = open_db(s->db_path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                    err, err_len);
    if (!s->db) {
        rc = -EIO;
        goto out;
    }
    rc = configure_writer(s, err, err_len);
    if (!rc)
        rc = migrate(s->db, err, err_len);
    if (!rc)
        rc = prepare_writer(s, err, err_len);
    if (!rc)
        rc = open_checkpointer(s, err, err_len);
    if (!rc) {
        size_reserve(s);
        refresh_bytes(s);
        s->opened = true;
    }
out:
    if (rc) {
        spool_close(s);
        return NULL;
    }
    return s;
}

/* ---- writer: submissions ----------------------------------------------- */

/* Record @rc (a failed step) in the turn and map it to -errno. */
static int sql_fail(struct turn *t, int rc)
{
    if (is_io_error(rc))
        t->io_error = true;
    return sqlite_errno(rc);
}

/* Run writer statement @i (no bindings, no rows). 0 or -errno. */
static int exec_w(struct spool *s, struct turn *t, enum wstmt i)
{
    int rc = run(s->w[i]);
    return rc == SQLITE_DONE ? 0 : sql_fail(t, rc);
}

static bool event_valid(const struct spool_event *ev)
{
    if (!ev->source || !ev->id || !ev->text)
        return false;
    if (ev->format != EVENT_STRUCTURED && ev->format != EVENT_BINARY)
        return false;
    if (ev->n_peers && !ev->peers)
        return false;
    for (size_t i = 0; i < ev->n_peers; i++)
        if (!ev->peers[i])
            return false;
    return true;
}

/* 1: (source, id) was unseen or expired and is now claimed (in memory
 * and in the log); 0: duplicate; or -errno. */
static int dedupe_claim(struct spool *s, struct turn *t,
                        const struct spool_event *ev)
{
    int64_t expires = t->now + s->dedupe_ms;
    uint64_t h = seen_hash(&s->seen, ev->source, ev->id);
    int rc = seen_claim(&s->seen, h, t->now, expires, true);
    if (rc <= 0)
        return rc;
    /* Should the insert fail, the savepoint's undo revokes the claim. */
    sqlite3_stmt *st = s->w[W_DEDUPE];
    rc = sqlite3_bind_text(st, 1, ev->source, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 2, ev->id, -1, SQLITE_STATIC);
    if (rc != SQLITE_OK)
        return sql_fail(t, rc);
    sqlite3_bind_int64(st, 3, expires);
    rc = run(st);
    return rc == SQLITE_DONE ? 1 : sql_fail(t, rc);
}

static int insert_event(struct spool *s, struct turn *t,
                        const struct spool_event *ev, int64_t *seq)
{
    sqlite3_stmt *st = s->w[W_EVENT_INSERT];
    /* The text binds can fail (SQLITE_TOOBIG); a failed bind would leave
     * the previous event's value in place, so every one is checked. */
    int rc = sqlite3_bind_text(st, 1, ev->source, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 2, ev->id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(st, 4, ev->partition_key, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_blob64(st, 6, ev->text, ev->text_len, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = ev->data ? sqlite3_bind_blob64(st, 7, ev->data, ev->data_len,
                                            SQLITE_STATIC)
                      : sqlite3_bind_null(st, 7);
    if (rc != SQLITE_OK)
        return sql_fail(t, rc);
    sqlite3_bind_int64(st, 3, ev->received_ms);
    sqlite3_bind_int(st, 5, (int)ev->format);
    sqlite3_bind_int64(st, 8, (int64_t)ev->n_peers);
    rc = run(st);
    if (rc != SQLITE_DONE)
        return sql_fail(t, rc);
    *seq = sqlite3_last_insert_rowid(s->db);
    return 0;
}

/* Does @peer have a pending delivery with partition key @okey? Sets
 * *@busy; 0 or -errno. */
static int okey_busy(struct spool *s, struct turn *t, const char *peer,
                     const char *okey, bool *busy)
{
    sqlite3_stmt *st = s->w[W_OKEY_BUSY];
    sqlite3_bind_text(st, 1, peer, -1, SQLITE_STATIC);
    int rc = sqlite3_bind_text(st, 2, okey, -1, SQLITE_STATIC);
    if (rc != SQLITE_OK)
        return sql_fail(t, rc);
    rc = sqlite3_step(st);
    *busy = rc == SQLITE_ROW;
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sql_fail(t, rc);
}

/*
 * Insert a pending delivery of event @seq to @peer, due at @due_ms; with
 * @okey (ordered) it is parked instead when its key has a head already.
 * @since_ms > 0: a replay, whose age counts from then. Sets *@parked when
 * not NULL. 0 or -errno.
 */
static int insert_delivery(struct spool *s, struct turn *t, int64_t seq,
                           const struct peer *p, const char *okey,
                           int64_t due_ms, int64_t since_ms, bool *parked)
{
    bool busy = false;
    int rc = okey ? okey_busy(s, t, p->name, okey, &busy) : 0;
    if (rc)
        return rc;
    sqlite3_stmt *st = s->w[W_DELIVERY_INSERT];
    rc = okey ? sqlite3_bind_text(st, 4, okey, -1, SQLITE_STATIC)
              : sqlite3_bind_null(st, 4);
    if (rc != SQLITE_OK)
        return sql_fail(t, rc);
    sqlite3_bind_int64(st, 1, seq);
    sqlite3_bind_text(st, 2, p->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, busy ? PARKED_MS : due_ms);
    if (since_ms > 0)
        sqlite3_bind_int64(st, 5, since_ms);
    else
        sqlite3_bind_null(st, 5);
    rc = run(st);
    if (parked)
        *parked = busy;
    return rc == SQLITE_DONE ? 0 : sql_fail(t, rc);
}

/* One row per peer, due at once (or parked behind its key's head); a peer
 * named twice violates the unique (peer, event_seq) index and fails the
 * submission with -EINVAL. */
static int insert_deliveries(struct spool *s, struct turn *t,
                             const struct spool_event *ev, int64_t seq)
{
    for (size_t i = 0; i < ev->n_peers; i++) {
        struct peer *p = peer_get(s, ev->peers[i]);
        if (!p)
            return -ENOMEM;
        const char *okey = ev->ordered && ev->ordered[i] ? ev->partition_key
                                                         : NULL;
        int rc = insert_delivery(s, t, seq, p, okey, ev->received_ms, 0, NULL);
        if (rc)
            return rc;
        p->sub_pending++;
        touch_sub(t, p);
        t->sub_new++;
    }
    return 0;
}

/* A scheduled event: record its slot as its schedule's last. 1: done,
 * 0: that slot or a later one was recorded already (a duplicate), or
 * -errno. Rolled back with the event, as it is in its transaction. */
static int slot_claim(struct spool *s, struct turn *t,
                      const struct spool_event *ev)
{
    sqlite3_stmt *st = s->w[W_SLOT_CLAIM];
    int rc = sqlite3_bind_text(st, 1, ev->schedule, -1, SQLITE_STATIC);
    if (rc != SQLITE_OK)
        return sql_fail(t, rc);
    sqlite3_bind_int64(st, 2, ev->slot_ms);
    rc = run(st);
    if (rc != SQLITE_DONE)
        return sql_fail(t, rc);
    return sqlite3_changes(s->db) > 0;
}

/* 1: accepted, 0: duplicate, or -errno. @ev is valid. */
static int apply_event(struct spool *s, struct turn *t,
                       const struct spool_event *ev)
{
    if (ev->schedule) {
        int rc = slot_claim(s, t, ev);
        if (rc <= 0)
            return rc;
    }
    if (s->dedupe_ms > 0) {
        int rc = dedupe_claim(s, t, ev);
        if (rc <= 0)
            return rc;
    }
    if (ev->n_peers == 0)
        return 1; /* accepted, nothing to deliver: not stored */
    int64_t seq = 0;
    int rc = insert_event(s, t, ev, &seq);
    if (rc == 0)
        rc = insert_deliveries(s, t, ev, seq);
    return rc < 0 ? rc : 1;
}

/* Over spool.max_bytes, or into the disk reserve (new data lands in the
 * WAL first and the database later: count it twice). */
static bool spool_full(struct spool *s, const struct turn *t)
{
    if (s->max_bytes > 0 && atomic_load(&s->bytes) + t->added_bytes >= s->max_bytes)
        return true;
    if (atomic_load(&s->disk_low))
        return true;
    return s->free_bytes - 2 * t->added_bytes < s->reserve_bytes;
}

static bool submission_valid(const struct spool_write *w)
{
    for (size_t i = 0; i < w->n_events; i++)
        if (!event_valid(&w->events[i]))
            return false;
    return true;
}

/*
 * Apply @w all or nothing; its fate goes to @w->result. Invalid events and
 * a full spool fail it before it writes anything. With @safe, it runs
 * inside SAVEPOINT sub, so a failure part way rolls back just @w. Without,
 * such a failure returns -EAGAIN and the caller redoes the whole turn
 * safely: savepoints cost a third of the apply time (each one copies the
 * pages it touches into a sub-journal), and failures past validation are
 * rare (a peer named twice, I/O errors). Otherwise returns 0, or -errno
 * when the transaction itself is lost (then the whole turn fails).
 */
static int apply_submission(struct spool *s, struct turn *t,
                            struct spool_write *w, bool safe)
{
    int result = 0, rc = 0;
    int64_t bytes = 0;
    size_t undo_mark = s->seen.n_undo;
    w->n_duplicates = 0;
    w->result = !submission_valid(w) ? -EINVAL : spool_full(s, t) ? -ENOSPC : 0;
    if (w->result < 0)
        return 0;
    if (safe && (rc = exec_w(s, t, W_SAVEPOINT)))
        return rc;
    for (size_t i = 0; i < w->n_events && result >= 0; i++) {
        const struct spool_event *ev = &w->events[i];
        int r = apply_event(s, t, ev);
        if (r < 0)
            result = r;
        else if (r == 0)
            w->n_duplicates++;
        else {
            result++;
            bytes += (int64_t)(ev->text_len + ev->data_len) +
                     EVENT_OVERHEAD_BYTES;
        }
    }
    w->result = result;
    if (result >= 0) {
        sub_keep(t);
        t->added_bytes += bytes;
        return safe ? exec_w(s, t, W_RELEASE) : 0;
    }
    if (!safe)
        return -EAGAIN;
    sub_drop(t);
    seen_undo_to(&s->seen, undo_mark);
    w->n_duplicates = 0;
    if (sqlite3_get_autocommit(s->db))
        return result; /* SQLite rolled the whole transaction back */
    rc = exec_w(s, t, W_ROLLBACK_TO);
    return rc ? rc : exec_w(s, t, W_RELEASE);
}

/* ---- writer: outcomes ------------------------------------------------- */

/*
 * Step take statement @st (bound by the caller: a DELETE ... RETURNING of
 * at most one row) into @r. 1: a row was taken (free r->okey), 0: none,
 * or -errno (nothing to free).
 */
static int take_row(struct spool *s, struct turn *t, sqlite3_stmt *st,
                    struct taken *r)
{
    int found = 0;
    memset(r, 0, sizeof(*r));
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 2);
        const char *okey = (const char *)sqlite3_column_text(st, 3);
        r->id = sqlite3_column_int64(st, 0);
        r->seq = sqlite3_column_int64(st, 1);
        r->attempts = sqlite3_column_int(st, 4);
        r->peer = peer_get(s, name ? name : "");
        r->okey = okey ? strdup(okey) : NULL;
        found = r->peer && (!okey || r->okey) ? 1 : -ENOMEM;
        rc = sqlite3_step(st);
    }
    sqlite3_reset(st);
    if (found >= 0 && rc != SQLITE_DONE)
        found = sql_fail(t, rc);
    if (found < 0) {
        free(r->okey);
        r->okey = NULL;
    }
    return found;
}

/* Delete delivery @id into @r. 1: found, 0: unknown (already settled),
 * or -errno. */
static int take_delivery(struct spool *s, struct turn *t, int64_t id,
                         struct taken *r)
{
    sqlite3_bind_int64(s->w[W_DELIVERY_TAKE], 1, id);
    return take_row(s, t, s->w[W_DELIVERY_TAKE], r);
}

/* @r, an ordered delivery, has left: the next of its key (if parked)
 * becomes the head and is due. 0 or -errno. */
static int promote_next(struct spool *s, struct turn *t, const struct taken *r)
{
    if (!r->okey)
        return 0;
    sqlite3_stmt *st = s->w[W_OKEY_PROMOTE];
    sqlite3_bind_text(st, 1, r->peer->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->okey, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, t->now);
    sqlite3_bind_int64(st, 4, PARKED_MS);
    int rc = run(st);
    if (rc != SQLITE_DONE)
        return sql_fail(t, rc);
    if (sqlite3_changes(s->db) > 0)
        t->n_new++; /* due now: the commit callback must say so */
    return 0;
}

static int delete_attempts(struct spool *s, struct turn *t, int64_t id)
{
    sqlite3_bind_int64(s->w[W_ATTEMPTS_DELETE], 1, id);
    return exec_w(s, t, W_ATTEMPTS_DELETE);
}

static int insert_attempt(struct spool *s, struct turn *t,
                          const struct spool_outcome *o)
{
    if (o->attempt <= 0)
        return 0;
    sqlite3_stmt *st = s->w[W_ATTEMPT_INSERT];
    sqlite3_bind_int64(st, 1, o->delivery_id);
    sqlite3_bind_int(st, 2, o->attempt);
    sqlite3_bind_int64(st, 3, o->at_ms);
    sqlite3_bind_int64(st, 4, o->duration_ms);
    sqlite3_bind_int64(st, 5, o->status);
    if (o->error[0])
        sqlite3_bind_text(st, 6, o->error, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 6);
    int rc = run(st);
    return rc == SQLITE_DONE ? 0 : sql_fail(t, rc);
}

/* One reference fewer on event @seq; the last one deletes it. */
static int unref_event(struct spool *s, struct turn *t, int64_t seq)
{
    sqlite3_bind_int64(s->w[W_EVENT_DELETE_LAST], 1, seq);
    int rc = exec_w(s, t, W_EVENT_DELETE_LAST);
    if (rc || sqlite3_changes(s->db) > 0)
        return rc;
    sqlite3_stmt *st = s->w[W_EVENT_UNREF];
    int64_t refs = 1;
    sqlite3_bind_int64(st, 1, seq);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        refs = sqlite3_column_int64(st, 0);
        rc = sqlite3_step(st);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return sql_fail(t, rc);
    if (refs > 0)
        return 0;
    sqlite3_bind_int64(s->w[W_EVENT_DELETE], 1, seq);
    return exec_w(s, t, W_EVENT_DELETE);
}

static int outcome_delivered(struct spool *s, struct turn *t,
                             const struct spool_outcome *o)
{
    struct taken r;
    int rc = take_delivery(s, t, o->delivery_id, &r);
    if (rc <= 0)
        return rc;
    /* Attempt rows exist only once an attempt failed (outcome_retry). */
    rc = r.attempts > 0 ? delete_attempts(s, t, r.id) : 0;
    if (rc == 0)
        rc = unref_event(s, t, r.seq);
    if (rc == 0)
        rc = promote_next(s, t, &r);
    r.peer->turn_pending--;
    touch_turn(t, r.peer);
    free(r.okey);
    return rc;
}

static int outcome_retry(struct spool *s, struct turn *t,
                         const struct spool_outcome *o)
{
    sqlite3_stmt *st = s->w[W_DELIVERY_RETRY];
    sqlite3_bind_int64(st, 1, o->delivery_id);
    sqlite3_bind_int(st, 2, o->attempt);
    sqlite3_bind_int64(st, 3, o->next_ms);
    int rc = run(st);
    if (rc != SQLITE_DONE)
        return sql_fail(t, rc);
    if (sqlite3_changes(s->db) == 0)
        return 0; /* already settled */
    return insert_attempt(s, t, o);
}

/* Move the delivery to dead_letters (same id); the event keeps its
 * reference, and the attempt rows stay as the dead letter's history. */
static int insert_dead(struct spool *s, struct turn *t,
                       const struct spool_outcome *o, const struct taken *r)
{
    sqlite3_stmt *st = s->w[W_DEAD_INSERT];
    sqlite3_bind_int64(st, 1, o->delivery_id);
    sqlite3_bind_int64(st, 2, r->seq);
    sqlite3_bind_text(st, 3, r->peer->name, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, o->attempt > 0 ? o->attempt : r->attempts);
    sqlite3_bind_int64(st, 5, t->now);
    sqlite3_bind_text(st, 6, o->reason, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, o->status);
    if (o->error[0])
        sqlite3_bind_text(st, 8, o->error, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 8);
    if (r->okey)
        sqlite3_bind_text(st, 9, r->okey, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 9);
    return exec_w(s, t, W_DEAD_INSERT);
}

static int outcome_dead(struct spool *s, struct turn *t,
                        const struct spool_outcome *o)
{
    struct taken r;
    int rc = take_delivery(s, t, o->delivery_id, &r);
    if (rc <= 0)
        return rc;
    r.peer->turn_pending--;
    r.peer->turn_dead++;
    touch_turn(t, r.peer);
    rc = insert_attempt(s, t, o);
    if (rc == 0)
        rc = insert_dead(s, t, o, &r);
    if (rc == 0)
        rc = promote_next(s, t, &r); /* a dead head unblocks its key */
    free(r.okey);
    return rc;
}

static int reserve_settled(struct spool *s, size_t n)
{
    if (n <= s->cap_settled)
        return 0;
    size_t cap = s->cap_settled ? s->cap_settled : 256;
    while (cap < n)
        cap *= 2;
    int64_t *p = realloc(s->settled, cap * sizeof(*p));
    if (!p)
        return -ENOMEM;
    s->settled = p;
    s->cap_settled = cap;
    return 0;
}

/* Apply every outcome; each one's id is settled once the turn commits,
 * including ids no longer known (settled before). 0 or -errno. */
static int apply_outcomes(struct spool *s, struct turn *t,
                          const struct outcome_batch *b)
{
    size_t total = 0;
    for (const struct outcome_batch *x = b; x; x = x->next)
        total += x->n;
    if (reserve_settled(s, total))
        return -ENOMEM;
    for (; b; b = b->next) {
        for (size_t i = 0; i < b->n; i++) {
            const struct spool_outcome *o = &b->o[i];
            int rc = 0;
            if (o->kind == SPOOL_DELIVERED)
                rc = outcome_delivered(s, t, o);
            else if (o->kind == SPOOL_RETRY)
                rc = outcome_retry(s, t, o);
            else if (o->kind == SPOOL_DEAD)
                rc = outcome_dead(s, t, o);
            if (rc < 0)
                return rc;
            s->settled[s->n_settled++] = o->delivery_id;
        }
    }
    return 0;
}

/* ---- writer: admin ops (dead letters) ---------------------------------- */

/* Dead letter @r back to pending, with a new id and a fresh age. */
static int replay_row(struct spool *s, struct turn *t, const struct taken *r)
{
    bool parked = false;
    int rc = insert_delivery(s, t, r->seq, r->peer, r->okey, t->now, t->now,
                             &parked);
    if (rc == 0)
        rc = delete_attempts(s, t, r->id);
    r->peer->turn_dead--;
    r->peer->turn_pending++;
    touch_turn(t, r->peer);
    if (!parked)
        t->n_new++;
    return rc;
}

static int purge_row(struct spool *s, struct turn *t, const struct taken *r)
{
    int rc = delete_attempts(s, t, r->id);
    if (rc == 0)
        rc = unref_event(s, t, r->seq);
    r->peer->turn_dead--;
    touch_turn(t, r->peer);
    return rc;
}

/* @op's take statement, bound. */
static sqlite3_stmt *admin_take_stmt(struct spool *s, const struct admin_op *op)
{
    sqlite3_stmt *st;
    if (op->id > 0) {
        st = s->w[W_DEAD_TAKE_ID];
        sqlite3_bind_int64(st, 1, op->id);
        return st;
    }
    st = s->w[op->peer ? W_DEAD_TAKE_PEER : W_DEAD_TAKE_ANY];
    if (op->peer)
        sqlite3_bind_text(st, 1, op->peer, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, op->bound);
    return st;
}

/* The highest delivery id ever given (so every dead letter's id is <= it):
 * an op's bound, so that what dies again while it runs is left alone. */
static int last_delivery_id(struct spool *s, struct turn *t, int64_t *id)
{
    sqlite3_stmt *st = s->w[W_LAST_ID];
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *id = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : sql_fail(t, rc);
}

/* Replay or purge the next dead letter of @op. 1: one done, 0: none left,
 * or -errno. */
static int admin_step(struct spool *s, struct turn *t, struct admin_op *op)
{
    struct taken r;
    int rc = take_row(s, t, admin_take_stmt(s, op), &r);
    if (rc <= 0)
        return rc;
    rc = op->purge ? purge_row(s, t, &r) : replay_row(s, t, &r);
    free(r.okey);
    return rc < 0 ? rc : 1;
}

/* Up to ADMIN_BATCH dead letters of the queued ops, in queue order; an op
 * is turn_finished once nothing matches any more. 0 or -errno. */
static int apply_admin(struct spool *s, struct turn *t, struct admin_op *ops)
{
    long budget = ADMIN_BATCH;
    for (struct admin_op *op = ops; op; op = op->next) {
        op->turn_n = 0;
        op->turn_finished = false;
    }
    for (struct admin_op *op = ops; op && budget > 0; op = op->next) {
        int rc = 0;
        if (op->id <= 0 && op->bound == 0)
            rc = last_delivery_id(s, t, &op->bound);
        while (rc == 0 && budget > 0 && !op->turn_finished) {
            rc = admin_step(s, t, op);
            op->turn_finished = rc == 0;
            if (rc == 1) {
                op->turn_n++;
                budget--;
                rc = 0;
            }
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

/*
 * After the turn: with @err (the turn failed) every op finishes with it;
 * otherwise its progress is committed, a finished op is done and the rest
 * go back to the head of the queue, in order, for the next turn.
 */
static void admin_settle(struct spool *s, struct admin_op *ops, int err)
{
    struct admin_op *keep = NULL, **tail = &keep;
    if (!ops)
        return;
    pthread_mutex_lock(&s->lock);
    for (struct admin_op *op = ops, *next; op; op = next) {
        next = op->next; /* once finished, op may vanish */
        if (!err)
            op->done += op->turn_n;
        if (err || op->turn_finished) {
            op->result = err;
            op->finished = true;
        } else {
            *tail = op;
            tail = &op->next;
        }
    }
    if (keep) {
        *tail = s->ops;
        if (!s->ops)
            s->ops_tail = tail;
        s->ops = keep;
    }
    pthread_cond_broadcast(&s->admin_cond);
    pthread_mutex_unlock(&s->lock);
}

/* ---- writer: the turn ------------------------------------------------- */

/* One bounded DELETE of expired dedupe rows. Only a lost transaction is
 * an error: a prune that fails otherwise just waits for the next turn. */
static int prune_dedupe(struct spool *s, struct turn *t)
{
    sqlite3_stmt *st = s->w[W_PRUNE];
    sqlite3_bind_int64(st, 1, t->now);
    sqlite3_bind_int(st, 2, PRUNE_BATCH);
    int rc = run(st);
    if (rc == SQLITE_DONE) {
        s->prune_backlog = sqlite3_changes(s->db) >= PRUNE_BATCH;
        return 0;
    }
    log_warn("spool: dedupe prune failed",
             LOG_FIELDS(LOG_S("error", sqlite3_errmsg(s->db))));
    return sqlite3_get_autocommit(s->db) ? sql_fail(t, rc) : 0;
}

static void free_outcomes(struct outcome_batch *b)
{
    while (b) {
        struct outcome_batch *next = b->next;
        free(b);
        b = next;
    }
}

/* Put @b back at the head of the queue, in order, for the next turn; at
 * shutdown drop it instead (the dispatcher will redeliver next start). */
static void requeue_outcomes(struct spool *s, struct outcome_batch *b)
{
    if (!b)
        return;
    struct outcome_batch *last = b;
    while (last->next)
        last = last->next;
    pthread_mutex_lock(&s->lock);
    bool drop = s->stopping;
    if (!drop) {
        last->next = s->outs;
        if (!s->outs)
            s->outs_tail = &last->next;
        s->outs = b;
    }
    pthread_mutex_unlock(&s->lock);
    if (drop) {
        log_warn("spool: outcomes not recorded at shutdown; those "
                 "deliveries will be retried",
                 LOG_NOFIELDS);
        free_outcomes(b);
    }
}

static void call_done(struct spool_write *w)
{
    while (w) {
        struct spool_write *next = w->next; /* done may free w */
        w->next = NULL;
        w->done(w);
        w = next;
    }
}

/* PASSIVE: copies what no reader still needs, never waits. Returns how
 * many WAL frames are now in the database. */
static int checkpoint(sqlite3 *db)
{
    int n_log = 0, n_done = 0;
    int rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE,
                                       &n_log, &n_done);
    if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY)
        log_warn("spool: checkpoint failed",
                 LOG_FIELDS(LOG_S("error", sqlite3_errmsg(db))));
    return rc == SQLITE_OK ? n_done : 0;
}

static void *checkpointer_main(void *arg)
{
    struct spool *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (s->ckpt_state != CKPT_WANTED && s->ckpt_state != CKPT_QUIT)
            pthread_cond_wait(&s->ckpt_cond, &s->lock);
        if (s->ckpt_state == CKPT_QUIT)
            break;
        s->ckpt_state = CKPT_RUNNING;
        pthread_mutex_unlock(&s->lock);
        int done = checkpoint(s->ckpt_db);
        /* A pass that could not copy every frame leaves the database
         * unsynced for whoever copies the rest: that would be the writer,
         * between two turns. Sync here (any fd syncs the file). */
        if (s->ckpt_sync_fd >= 0)
            fdatasync(s->ckpt_sync_fd);
        pthread_mutex_lock(&s->lock);
        s->ckpt_frames_done = done;
        if (s->ckpt_state == CKPT_RUNNING)
            s->ckpt_state = CKPT_DONE;
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/*
 * After a turn: hand a grown WAL to the checkpointer; once its passes have
 * left fewer than CATCHUP_FRAMES uncopied, copy those here so the WAL can
 * rewind (see DESIGN). Without the thread (a drain at close), copy here.
 */
static void maybe_checkpoint(struct spool *s)
{
    if (s->wal_frames < s->checkpoint_frames)
        return;
    bool here = false;
    pthread_mutex_lock(&s->lock);
    if (!s->ckpt_started) {
        here = true;
    } else if (s->ckpt_state == CKPT_DONE &&
               s->wal_frames - s->ckpt_frames_done <= CATCHUP_FRAMES) {
        s->ckpt_state = CKPT_IDLE;
        here = true;
    } else if (s->ckpt_state == CKPT_IDLE || s->ckpt_state == CKPT_DONE) {
        s->ckpt_state = CKPT_WANTED;
        pthread_cond_signal(&s->ckpt_cond);
    }
    pthread_mutex_unlock(&s->lock);
    /* Also copy here if the WAL runs away from a slow checkpointer. */
    if (here || s->wal_frames >= 8 * s->checkpoint_frames) {
        checkpoint(s->db);
        s->wal_frames = 0;
    }
}

static void low_disk_checkpoint(struct spool *s);

static void turn_failed(struct spool *s, struct turn *t,
                        struct spool_write *subs, struct outcome_batch *outs,
                        struct admin_op *ops, int err)
{
    log_error("spool: commit failed",
              LOG_FIELDS(LOG_S("error", sqlite3_errmsg(s->db)),
                         LOG_S("errno", strerror(-err))));
    if (!sqlite3_get_autocommit(s->db))
        run(s->w[W_ROLLBACK]);
    turn_publish(s, t, false);
    seen_undo_to(&s->seen, 0);
    atomic_store(&s->writable, false);
    s->backoff_until_ms = clock_mono_ms() + FAILED_TURN_BACKOFF_MS;
    requeue_outcomes(s, outs);
    for (struct spool_write *w = subs; w; w = w->next) {
        if (w->result >= 0) {
            w->result = err < 0 ? err : -EIO;
            w->n_duplicates = 0;
        }
    }
    call_done(subs);
    admin_settle(s, ops, err < 0 ? err : -EIO);
    if (err == -ENOSPC) {
        atomic_store(&s->disk_low, true);
        low_disk_checkpoint(s);
    }
}

static void turn_committed(struct spool *s, struct turn *t,
                           struct spool_write *subs,
                           struct outcome_batch *outs, struct admin_op *ops)
{
    bool work = subs || outs || ops;
    turn_publish(s, t, true);
    seen_keep(&s->seen); /* the claims are durable now */
    if (work) { /* a prune-only turn may have written nothing: no proof */
        atomic_store(&s->writable, !t->io_error);
        atomic_fetch_add(&s->commits, 1);
    }
    refresh_bytes(s);
    call_done(subs);
    if (work) {
        struct spool_commit c = {.n_new_deliveries = t->n_new,
                                 .settled = s->settled,
                                 .n_settled = s->n_settled};
        pthread_mutex_lock(&s->cb_lock);
        if (s->commit_cb)
            s->commit_cb(s->commit_arg, &c);
        pthread_mutex_unlock(&s->cb_lock);
    }
    admin_settle(s, ops, 0);
    free_outcomes(outs);
    if (atomic_load(&s->disk_low) && s->wal_frames > 0)
        low_disk_checkpoint(s);
    else
        maybe_checkpoint(s);
}

/* Everything taken from the queues, up to COMMIT. 0 or -errno; -EAGAIN
 * (only without @safe): rolled back, to be redone with savepoints. */
static int try_turn(struct spool *s, struct turn *t, struct spool_write *subs,
                    struct outcome_batch *outs, struct admin_op *ops,
                    bool prune, bool safe)
{
    *t = (struct turn){.now = s->clock_ms(s->clock_arg)};
    s->n_settled = 0;
    int rc = exec_w(s, t, W_BEGIN);
    if (!rc)
        rc = apply_outcomes(s, t, outs);
    if (!rc)
        rc = apply_admin(s, t, ops);
    if (!rc && prune)
        rc = prune_dedupe(s, t);
    for (struct spool_write *w = subs; !rc && w; w = w->next)
        rc = apply_submission(s, t, w, safe);
    if (!rc)
        return exec_w(s, t, W_COMMIT);
    if (rc == -EAGAIN) {
        if (!sqlite3_get_autocommit(s->db))
            run(s->w[W_ROLLBACK]);
        turn_publish(s, t, false);
        seen_undo_to(&s->seen, 0);
    }
    return rc;
}

/*
 * Copy the whole WAL into the database and truncate it, giving its disk
 * space back. Waits at most @busy_ms for readers still on the WAL (new
 * readers read the database once it is fully copied, so they do not hold
 * it up). Returns whether the WAL is now empty.
 */
static bool truncate_wal(struct spool *s, int busy_ms)
{
    sqlite3_busy_timeout(s->db, busy_ms);
    int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE,
                                       NULL, NULL);
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    if (rc == SQLITE_OK)
        s->wal_frames = 0;
    return rc == SQLITE_OK;
}

/*
 * A burst leaves freed memory in glibc's per-thread arenas, where it
 * stays resident (a batched load: ~16 MB). After the first housekeeping
 * period without a commit, malloc_trim(0) gives it back to the system.
 *
 * Nothing was committed for two housekeeping periods: truncate the WAL,
 * so a burst's disk space comes back. Never waits for a reader (busy
 * timeout 0): if one is active, try next time.
 */
static void idle_checkpoint(struct spool *s)
{
    if (s->wal_frames == 0)
        return;
    pthread_mutex_lock(&s->lock);
    bool busy = s->ckpt_state == CKPT_WANTED || s->ckpt_state == CKPT_RUNNING;
    pthread_mutex_unlock(&s->lock);
    if (!busy)
        truncate_wal(s, 0);
}

/*
 * The disk is low, or a commit just failed for want of space. The WAL only
 * restarts once no reader is on it, which a busy dispatcher can postpone
 * for ever, and then every turn (the drain's deletes too) appends to it
 * until it eats the reserve and nothing commits again. So while space is
 * short, truncate it after every turn instead of waiting for passive
 * checkpoints.
 */
static void low_disk_checkpoint(struct spool *s)
{
    truncate_wal(s, LOW_DISK_BUSY_MS);
    refresh_bytes(s);
}

/* One transaction for everything taken from the queues. */
static void run_turn(struct spool *s, struct spool_write *subs,
                     struct outcome_batch *outs, struct admin_op *ops,
                     bool prune)
{
    struct turn t;
    int rc = try_turn(s, &t, subs, outs, ops, prune, false);
    if (rc == -EAGAIN)
        rc = try_turn(s, &t, subs, outs, ops, prune, true);
    if (rc)
        turn_failed(s, &t, subs, outs, ops, rc);
    else
        turn_committed(s, &t, subs, outs, ops);
}

/*
 * The queued outcomes for one turn: all of them, unless the disk is low.
 * Then a turn takes a bounded share, so that its WAL frames fit what is
 * left; a turn that failed for space would otherwise come back bigger
 * (requeued plus new outcomes) and never fit again. Called locked.
 */
static struct outcome_batch *take_outcomes_locked(struct spool *s)
{
    struct outcome_batch *head = s->outs, **link = &s->outs;
    if (!atomic_load(&s->disk_low)) {
        s->outs = NULL;
        s->outs_tail = &s->outs;
        return head;
    }
    size_t n = 0;
    while (*link && n < LOW_DISK_OUTCOMES) {
        n += (*link)->n;
        link = &(*link)->next;
    }
    s->outs = *link;
    *link = NULL;
    if (!s->outs)
        s->outs_tail = &s->outs;
    return head;
}

/* Sleep until work, stop, or @deadline_ms (monotonic). Called locked. */
static void wait_locked(struct spool *s, int64_t deadline_ms)
{
    struct timespec ts = {.tv_sec = deadline_ms / 1000,
                          .tv_nsec = (deadline_ms % 1000) * 1000000};
    s->writer_idle = true;
    pthread_cond_timedwait(&s->cond, &s->lock, &ts);
    s->writer_idle = false;
}

static void *writer_main(void *arg)
{
    struct spool *s = arg;
    int idle_turns = 0; /* housekeeping turns since work was last committed */
    /* Counting a large backlog takes a while (a million rows: ~70 ms), and
     * the counts only feed gauges: count here, before the first turn, not
     * on the way to ready. */
    atomic_store(&s->heartbeat_ms, clock_mono_ms());
    count_once(s);
    s->next_housekeeping_ms = clock_mono_ms() + HOUSEKEEPING_MS;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        int64_t now = clock_mono_ms();
        atomic_store(&s->heartbeat_ms, now);
        bool work = s->subs || s->outs || s->ops;
        if (s->stopping && !work)
            break;
        /* After a failed turn, queued work waits (a full disk must not
         * spin the writer) unless we are stopping. */
        bool ready = work && (s->stopping || now >= s->backoff_until_ms);
        bool housekeeping = now >= s->next_housekeeping_ms;
        if (!ready && !housekeeping) {
            int64_t until = s->next_housekeeping_ms;
            if (work && s->backoff_until_ms < until)
                until = s->backoff_until_ms;
            wait_locked(s, until);
            continue;
        }
        struct spool_write *subs = ready ? s->subs : NULL;
        struct outcome_batch *outs = ready ? take_outcomes_locked(s) : NULL;
        struct admin_op *ops = ready ? s->ops : NULL;
        if (ready) {
            s->subs = NULL;
            s->subs_tail = &s->subs;
            s->ops = NULL;
            s->ops_tail = &s->ops;
        }
        pthread_mutex_unlock(&s->lock);
        if (housekeeping)
            s->next_housekeeping_ms = now + HOUSEKEEPING_MS;
        /* Prune even with dedupe off: a former window may have left rows. */
        bool prune = housekeeping || (ready && s->prune_backlog);
        run_turn(s, subs, outs, ops, prune);
        if (ready)
            idle_turns = 0;
        else if (housekeeping && ++idle_turns == 1)
            malloc_trim(0);
        else if (housekeeping && idle_turns >= 2)
            idle_checkpoint(s);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- public: queues and lifecycle ---------------------------------------- */

static void wake_locked(struct spool *s)
{
    if (s->writer_idle)
        pthread_cond_signal(&s->cond);
}

int spool_submit(struct spool *s, struct spool_write *w)
{
    w->result = 0;
    w->n_duplicates = 0;
    w->next = NULL;
    pthread_mutex_lock(&s->lock);
    if (s->stopping) {
        pthread_mutex_unlock(&s->lock);
        return -ESHUTDOWN;
    }
    *s->subs_tail = w;
    s->subs_tail = &w->next;
    wake_locked(s);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int spool_post_outcomes(struct spool *s, const struct spool_outcome *o,
                        size_t n)
{
    if (n == 0)
        return 0;
    if (n > (SIZE_MAX - sizeof(struct outcome_batch)) / sizeof(*o))
        return -ENOMEM;
    struct outcome_batch *b = malloc(sizeof(*b) + n * sizeof(*o));
    if (!b)
        return -ENOMEM;
    b->next = NULL;
    b->n = n;
    memcpy(b->o, o, n * sizeof(*o));
    for (size_t i = 0; i < n; i++) { /* bound as C strings later */
        b->o[i].error[sizeof(b->o[i].error) - 1] = '\0';
        b->o[i].reason[sizeof(b->o[i].reason) - 1] = '\0';
    }
    pthread_mutex_lock(&s->lock);
    if (s->stopping) {
        pthread_mutex_unlock(&s->lock);
        free(b);
        return -ESHUTDOWN;
    }
    *s->outs_tail = b;
    s->outs_tail = &b->next;
    wake_locked(s);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

void spool_set_commit_cb(struct spool *s, spool_commit_cb cb, void *arg)
{
    pthread_mutex_lock(&s->cb_lock);
    s->commit_cb = cb;
    s->commit_arg = arg;
    pthread_mutex_unlock(&s->cb_lock);
}

/* Queue an admin op and wait until the writer has finished it. */
static long admin_run(struct spool *s, bool purge,
                      const struct spool_dead_filter *f)
{
    struct admin_op op = {.purge = purge,
                          .id = f && f->id > 0 ? f->id : 0,
                          .peer = f ? f->peer : NULL};
    long rc;
    pthread_mutex_lock(&s->lock);
    if (s->stopping) {
        rc = -ESHUTDOWN;
    } else if (!s->started) {
        rc = -EAGAIN; /* nobody would ever run it */
    } else {
        *s->ops_tail = &op;
        s->ops_tail = &op.next;
        wake_locked(s);
        while (!op.finished)
            pthread_cond_wait(&s->admin_cond, &s->lock);
        rc = op.result < 0 ? op.result : op.done;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

long spool_dead_replay(struct spool *s, const struct spool_dead_filter *f)
{
    return admin_run(s, false, f);
}

long spool_dead_purge(struct spool *s, const struct spool_dead_filter *f)
{
    return admin_run(s, true, f);
}

static void stop_checkpointer(struct spool *s)
{
    pthread_mutex_lock(&s->lock);
    bool join = s->ckpt_started;
    s->ckpt_started = false;
    s->ckpt_state = CKPT_QUIT;
    pthread_cond_signal(&s->ckpt_cond);
    pthread_mutex_unlock(&s->lock);
    if (join)
        pthread_join(s->ckpt_thread, NULL);
}

int spool_start(struct spool *s)
{
    sigset_t all, old;
    pthread_mutex_lock(&s->lock);
    int rc = s->stopping ? -ESHUTDOWN : s->started ? -EALREADY : 0;
    pthread_mutex_unlock(&s->lock);
    if (rc)
        return rc;
    s->ckpt_state = CKPT_IDLE; /* no thread yet: no lock needed */
    /* Signals belong to the main thread: ours block them all. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = -pthread_create(&s->ckpt_thread, NULL, checkpointer_main, s);
    if (rc == 0) {
        s->ckpt_started = true; /* before the writer exists: no lock */
        rc = -pthread_create(&s->thread, NULL, writer_main, s);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0) {
        pthread_mutex_lock(&s->lock);
        s->started = true;
        pthread_mutex_unlock(&s->lock);
    } else {
        stop_checkpointer(s);
    }
    return rc;
}

void spool_stop(struct spool *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_signal(&s->cond);
    bool join = s->started && !s->joined;
    s->joined = s->started;
    bool drain = !s->started && (s->subs || s->outs);
    pthread_mutex_unlock(&s->lock);
    if (join)
        pthread_join(s->thread, NULL);
    else if (drain)
        writer_main(s); /* never started: commit the queue on this thread */
    stop_checkpointer(s);
}

void spool_close(struct spool *s)
{
    if (!s)
        return;
    spool_stop(s);
    seen_snapshot(s);
    finalize_all(s->w, W__N);
    sqlite3_close(s->db);
    sqlite3_close(s->ckpt_db);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    if (s->ckpt_sync_fd >= 0)
        close(s->ckpt_sync_fd);
    for (size_t i = 0; i < PEER_BUCKETS; i++) {
        for (struct peer *p = s->peers[i], *next; p; p = next) {
            next = p->next;
            free(p->name);
            free(p);
        }
    }
    free_outcomes(s->outs);
    free(s->settled);
    seen_free(&s->seen);
    free(s->dir);
    free(s->db_path);
    free(s->wal_path);
    free(s->seen_path);
    pthread_cond_destroy(&s->cond);
    pthread_cond_destroy(&s->ckpt_cond);
    pthread_cond_destroy(&s->admin_cond);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->counts_lock);
    pthread_cond_destroy(&s->counts_cond);
    pthread_mutex_destroy(&s->cb_lock);
    free(s);
}

/* ---- public: state ------------------------------------------------------ */

int64_t spool_bytes(const struct spool *s)
{
    return atomic_load(&s->bytes);
}

bool spool_disk_low(const struct spool *s)
{
    return atomic_load(&s->disk_low);
}

bool spool_writable(const struct spool *s)
{
    return atomic_load(&s->writable);
}

uint64_t spool_commit_count(const struct spool *s)
{
    return atomic_load(&s->commits);
}

int64_t spool_heartbeat_ms(const struct spool *s)
{
    return atomic_load(&s->heartbeat_ms);
}

void spool_peer_counts(struct spool *s, const char *peer, int64_t *pending,
                       int64_t *dead)
{
    uint64_t h = fnv1a(peer);
    if (!atomic_load(&s->counts_loaded)) {
        pthread_mutex_lock(&s->lock);
        bool writer = s->started;
        pthread_mutex_unlock(&s->lock);
        if (!writer)
            count_once(s);
    }
    pthread_mutex_lock(&s->counts_lock);
    while (!atomic_load(&s->counts_loaded)) /* the writer is counting */
        pthread_cond_wait(&s->counts_cond, &s->counts_lock);
    struct peer *p = peer_find(s, peer, h);
    *pending = p ? p->pending : 0;
    *dead = p ? p->dead : 0;
    pthread_mutex_unlock(&s->counts_lock);
}

/* ---- reader ------------------------------------------------------------- */

struct spool_reader *spool_reader_open(struct spool *s)
{
    char err[256] = "";
    struct spool_reader *r = calloc(1, sizeof(*r));
    int rc = SQLITE_NOMEM;
    if (!r)
        goto out;
    r->db = open_db(s->db_path, SQLITE_OPEN_READWRITE, err, sizeof(err));
    if (!r->db)
        goto out;
    /* Read-write only because WAL readers need the -shm; never write. */
    rc = sqlite3_exec(r->db, "PRAGMA query_only = ON", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = prepare_all(r->db, reader_sql, R__N, r->st);
    if (rc != SQLITE_OK)
        snprintf(err, sizeof(err), "spool reader: %s", sqlite3_errmsg(r->db));
out:
    if (rc != SQLITE_OK) {
        log_error("spool: cannot open reader",
                  LOG_FIELDS(LOG_S("error", err[0] ? err : "out of memory")));
        spool_reader_close(r);
        return NULL;
    }
    return r;
}

void spool_reader_close(struct spool_reader *r)
{
    if (!r)
        return;
    finalize_all(r->st, R__N);
    sqlite3_close(r->db);
    free(r);
}

/* A malloc'd NUL-terminated copy of column @i (text or blob). */
static char *dup_column(sqlite3_stmt *st, int i, size_t *len)
{
    const void *p = sqlite3_column_blob(st, i);
    size_t n = (size_t)sqlite3_column_bytes(st, i);
    char *c = malloc(n + 1);
    if (!c)
        return NULL;
    if (n)
        memcpy(c, p, n);
    c[n] = '\0';
    if (len)
        *len = n;
    return c;
}

static int load_delivery(sqlite3_stmt *st, struct spool_delivery *d)
{
    memset(d, 0, sizeof(*d));
    d->id = sqlite3_column_int64(st, 0);
    d->event_seq = sqlite3_column_int64(st, 1);
    d->attempts = sqlite3_column_int(st, 2);
    d->next_ms = sqlite3_column_int64(st, 3);
    d->received_ms = sqlite3_column_int64(st, 4);
    d->format = sqlite3_column_int(st, 7) == EVENT_BINARY ? EVENT_BINARY
                                                          : EVENT_STRUCTURED;
    d->event_id = dup_column(st, 5, NULL);
    d->text = dup_column(st, 8, &d->text_len);
    bool ok = d->event_id && d->text;
    if (ok && sqlite3_column_type(st, 6) != SQLITE_NULL)
        ok = (d->partition_key = dup_column(st, 6, NULL)) != NULL;
    if (ok && sqlite3_column_type(st, 9) != SQLITE_NULL)
        ok = (d->data = dup_column(st, 9, &d->data_len)) != NULL;
    if (!ok) {
        spool_delivery_free(d);
        return -ENOMEM;
    }
    return 0;
}

long spool_fetch_due(struct spool_reader *r, const char *peer, int64_t now_ms,
                     size_t max, spool_skip_cb skip, void *arg,
                     struct spool_delivery *out)
{
    sqlite3_stmt *st = r->st[R_DUE];
    size_t n = 0;
    int rc = SQLITE_DONE;
    long err = 0;
    sqlite3_bind_text(st, 1, peer, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now_ms < PARKED_MS ? now_ms : PARKED_MS - 1);
    while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        /* Ask before loading: the big columns are read only if kept. */
        if (skip && skip(arg, sqlite3_column_int64(st, 0)))
            continue;
        if (load_delivery(st, &out[n]) != 0) {
            err = -ENOMEM;
            break;
        }
        n++;
    }
    sqlite3_reset(st); /* ends the read transaction: the WAL may move on */
    if (!err && rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = sqlite_errno(rc);
    if (err) {
        while (n > 0)
            spool_delivery_free(&out[--n]);
        return err;
    }
    return (long)n;
}

int64_t spool_next_due(struct spool_reader *r, const char *peer,
                       int64_t after_ms)
{
    sqlite3_stmt *st = r->st[R_NEXT_DUE];
    int64_t next = INT64_MAX;
    sqlite3_bind_text(st, 1, peer, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, after_ms);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        next = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW) {
        /* Look again soon rather than never. */
        log_warn("spool: next_due failed",
                 LOG_FIELDS(LOG_S("error", sqlite3_errmsg(r->db))));
        next = after_ms + 1000;
    }
    return next;
}

int64_t spool_oldest_ms(struct spool_reader *r, const char *peer)
{
    sqlite3_stmt *st = r->st[R_OLDEST];
    int64_t oldest = 0;
    sqlite3_bind_text(st, 1, peer, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        oldest = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return oldest;
}

/* The names statement @st returns: a new array of new strings. */
static long list_names(sqlite3_stmt *st, char ***names)
{
    char **v = NULL;
    size_t n = 0, cap = 0;
    long err = 0;
    int rc;
    *names = NULL;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            char **nv = realloc(v, cap * sizeof(*v));
            if (!nv) {
                err = -ENOMEM;
                break;
            }
            v = nv;
        }
        if (!(v[n] = dup_column(st, 0, NULL))) {
            err = -ENOMEM;
            break;
        }
        n++;
    }
    sqlite3_reset(st);
    if (!err && rc != SQLITE_DONE)
        err = sqlite_errno(rc);
    if (err) {
        while (n > 0)
            free(v[--n]);
        free(v);
        return err;
    }
    *names = v;
    return (long)n;
}

long spool_pending_peers(struct spool_reader *r, char ***names)
{
    return list_names(r->st[R_PEERS], names);
}

void spool_delivery_free(struct spool_delivery *d)
{
    if (!d)
        return;
    free(d->event_id);
    free(d->partition_key);
    free(d->text);
    free(d->data);
    memset(d, 0, sizeof(*d));
}

/* ---- reader: dead letters ------------------------------------------------ */

void spool_dead_letter_free(struct spool_dead_letter *dl)
{
    if (!dl)
        return;
    free(dl->peer);
    free(dl->event_id);
    free(dl->source);
    free(dl->type);
    free(dl->reason);
    free(dl->last_error);
    memset(dl, 0, sizeof(*dl));
}

/* The DEAD_COLUMNS of the current row into @dl. 0 or -ENOMEM. */
static int load_dead_letter(sqlite3_stmt *st, struct spool_dead_letter *dl)
{
    memset(dl, 0, sizeof(*dl));
    dl->id = sqlite3_column_int64(st, 0);
    dl->peer = dup_column(st, 1, NULL);
    dl->event_id = dup_column(st, 2, NULL);
    dl->source = dup_column(st, 3, NULL);
    dl->type = dup_column(st, 4, NULL);
    dl->attempts = sqlite3_column_int(st, 5);
    dl->received_ms = sqlite3_column_int64(st, 6);
    dl->dead_ms = sqlite3_column_int64(st, 7);
    dl->reason = dup_column(st, 8, NULL);
    dl->last_status = (long)sqlite3_column_int64(st, 9);
    bool ok = dl->peer && dl->event_id && dl->source && dl->type && dl->reason;
    if (ok && sqlite3_column_type(st, 10) != SQLITE_NULL)
        ok = (dl->last_error = dup_column(st, 10, NULL)) != NULL;
    if (!ok) {
        spool_dead_letter_free(dl);
        return -ENOMEM;
    }
    return 0;
}

long spool_dead_list(struct spool_reader *r, const char *peer, int64_t after,
                     size_t limit, struct spool_dead_letter *out)
{
    sqlite3_stmt *st = r->st[peer ? R_DEAD_LIST_PEER : R_DEAD_LIST];
    size_t n = 0;
    long err = 0;
    int rc = SQLITE_DONE;
    if (limit == 0)
        return 0;
    sqlite3_bind_int64(st, 1, after);
    sqlite3_bind_int64(st, 2, limit > INT64_MAX ? INT64_MAX : (int64_t)limit);
    if (peer)
        sqlite3_bind_text(st, 3, peer, -1, SQLITE_STATIC);
    while (n < limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (load_dead_letter(st, &out[n]) != 0) {
            err = -ENOMEM;
            break;
        }
        n++;
    }
    sqlite3_reset(st);
    if (!err && rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = sqlite_errno(rc);
    if (err) {
        while (n > 0)
            spool_dead_letter_free(&out[--n]);
        return err;
    }
    return (long)n;
}

void spool_dead_detail_free(struct spool_dead_detail *d)
{
    if (!d)
        return;
    spool_dead_letter_free(&d->dl);
    for (size_t i = 0; i < d->n_attempts; i++)
        free(d->attempts[i].error);
    free(d->attempts);
    free(d->text);
    free(d->data);
    memset(d, 0, sizeof(*d));
}

/* The dead letter's row (R_DEAD_GET is stepped) with its event. */
static int load_dead_detail(sqlite3_stmt *st, struct spool_dead_detail *d)
{
    int rc = load_dead_letter(st, &d->dl);
    if (rc)
        return rc;
    d->has_event = sqlite3_column_int(st, 11) != 0;
    if (!d->has_event)
        return 0;
    d->format = sqlite3_column_int(st, 12) == EVENT_BINARY ? EVENT_BINARY
                                                           : EVENT_STRUCTURED;
    if (!(d->text = dup_column(st, 13, &d->text_len)))
        return -ENOMEM;
    if (sqlite3_column_type(st, 14) != SQLITE_NULL &&
        !(d->data = dup_column(st, 14, &d->data_len)))
        return -ENOMEM;
    return 0;
}

/* Append the current attempt row to @d. 0 or -ENOMEM. */
static int add_attempt(sqlite3_stmt *st, struct spool_dead_detail *d,
                       size_t *cap)
{
    if (d->n_attempts == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        struct spool_attempt *a = realloc(d->attempts, ncap * sizeof(*a));
        if (!a)
            return -ENOMEM;
        d->attempts = a;
        *cap = ncap;
    }
    struct spool_attempt *a = &d->attempts[d->n_attempts];
    *a = (struct spool_attempt){.n = sqlite3_column_int(st, 0),
                                .at_ms = sqlite3_column_int64(st, 1),
                                .duration_ms = sqlite3_column_int64(st, 2),
                                .status = (long)sqlite3_column_int64(st, 3)};
    if (sqlite3_column_type(st, 4) != SQLITE_NULL &&
        !(a->error = dup_column(st, 4, NULL)))
        return -ENOMEM;
    d->n_attempts++;
    return 0;
}

static int load_attempts(struct spool_reader *r, int64_t id,
                         struct spool_dead_detail *d)
{
    sqlite3_stmt *st = r->st[R_DEAD_ATTEMPTS];
    size_t cap = 0;
    int err = 0, rc;
    sqlite3_bind_int64(st, 1, id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if ((err = add_attempt(st, d, &cap)) != 0)
            break;
    sqlite3_reset(st);
    if (!err && rc != SQLITE_DONE)
        err = sqlite_errno(rc);
    return err;
}

int spool_dead_get(struct spool_reader *r, int64_t id,
                   struct spool_dead_detail *out)
{
    sqlite3_stmt *st = r->st[R_DEAD_GET];
    memset(out, 0, sizeof(*out));
    int rc = run(r->st[R_BEGIN]); /* one snapshot for both queries */
    if (rc != SQLITE_DONE)
        return sqlite_errno(rc);
    int err = -ENOENT;
    sqlite3_bind_int64(st, 1, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        err = load_dead_detail(st, out);
    else if (rc != SQLITE_DONE)
        err = sqlite_errno(rc);
    sqlite3_reset(st);
    if (!err)
        err = load_attempts(r, id, out);
    run(r->st[R_COMMIT]);
    if (err)
        spool_dead_detail_free(out);
    return err;
}

long spool_dead_peers(struct spool_reader *r, char ***names)
{
    return list_names(r->st[R_DEAD_PEERS], names);
}

/* ---- schedules ----------------------------------------------------------- */

int spool_schedule_last(struct spool_reader *r, const char *name,
                        int64_t *slot_ms)
{
    sqlite3_stmt *st = r->st[R_SLOT_LAST];
    int rc = sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *slot_ms = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE)
        return rc == SQLITE_ROW;
    log_warn("spool: reading a schedule's last slot failed",
             LOG_FIELDS(LOG_S("error", sqlite3_errmsg(r->db))));
    return sqlite_errno(rc);
}
