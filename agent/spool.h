/*
 * spool: the durable store between ingest and delivery, one SQLite database
 * in WAL mode with synchronous=FULL under spool.dir.
 *
 * DESIGN
 * One writer thread owns the write connection. Ingest threads and the
 * dispatcher never write: they queue work (spool_submit, spool_post_outcomes)
 * and the writer drains everything queued into ONE transaction per turn, so
 * concurrent requests share one fsync (group commit; the batch grows with
 * the load because work piles up while the previous commit syncs). After
 * the commit the writer calls each submission's done callback (ingest
 * answers 202 only then) and the commit callback (the dispatcher learns of
 * new deliveries and settled outcomes).
 *
 * The dispatcher reads through its own connection (struct spool_reader);
 * WAL lets that run concurrently with the writer.
 *
 * Tables: events (one row per accepted event, with its stored form),
 * deliveries (one row per event x peer still pending), dead_letters,
 * attempts (history of failed attempts), dedupe (source+id seen recently),
 * schedules (the last slot each schedule fired, see spool_event.schedule).
 */
#ifndef FERRY_SPOOL_H
#define FERRY_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"

struct spool;
struct spool_reader;

struct spool_options {
    const char *dir;         /* created if missing */
    int64_t max_bytes;       /* above this, submissions fail with -ENOSPC;
                              * <= 0: no limit */
    int64_t dedupe_window_s; /* 0: no dedupe */
    /* Wall clock in ms for dedupe expiry and dead_ms. NULL: clock_wall_ms.
     * Tests inject time here; called on the writer thread. */
    int64_t (*clock_ms)(void *arg);
    void *clock_arg;
};

/**
 * Open (creating or migrating) the spool in @opt->dir. Does not start the
 * writer. Returns NULL with a message in @err (e.g. "spool.dir
 * /x: Permission denied"); also when another process has the same
 * directory open ("in use by another process": two writers would deliver
 * everything twice).
 */
struct spool *spool_open(const struct spool_options *opt, char *err,
                         size_t err_len);

/* ---- ingest side ----------------------------------------------------- */

/** One event to persist with the peers it goes to. All borrowed. */
struct spool_event {
    const char *source;
    const char *id;
    const char *partition_key; /* NULL when none */
    enum event_format format;
    const char *text;          /* struct event .text */
    size_t text_len;
    const void *data;          /* BINARY only */
    size_t data_len;
    const char *const *peers;  /* distinct peer names; may be empty */
    size_t n_peers;
    /* Per peer (parallel to peers): 1 = deliver in acceptance order among
     * this peer's deliveries with the same partition_key ("ordering":
     * "partitionkey"). NULL, or a NULL partition_key: unordered. */
    const unsigned char *ordered;
    int64_t received_ms;
    /* A scheduled event (schedule.c): the schedule's name and the slot it
     * fires. The writer records @slot_ms as the schedule's last slot in the
     * transaction that stores the event, so the two are durable together
     * or not at all. When the recorded slot is already >= @slot_ms, the
     * event is a duplicate (counted in n_duplicates, not stored). The slot
     * is recorded even when the event has no peers. NULL: not scheduled. */
    const char *schedule;
    int64_t slot_ms;
};

struct spool_write;
/**
 * Called on the writer thread once @w's fate is sealed. @w->result is the
 * number of events accepted (n_events - n_duplicates) or a negative errno:
 * -ENOSPC (disk full or spool.max_bytes reached), -EIO, -EINVAL (an event
 * with a NULL source/id/text/peer name, an unknown format or a peer named
 * twice), -ENOMEM. (-ESHUTDOWN is returned by spool_submit, never here.)
 * Nothing of @w is stored unless result >= 0 (all or nothing).
 * An accepted event with no peers is not stored (nothing would deliver
 * it) but its source+id is still recorded for dedupe.
 */
typedef void (*spool_done_cb)(struct spool_write *w);

/** A submission; caller-owned, must stay valid until @done runs. */
struct spool_write {
    const struct spool_event *events;
    size_t n_events;
    spool_done_cb done;
    void *arg;
    /* out */
    int result;
    size_t n_duplicates;
    /* private to the spool */
    struct spool_write *next;
};

/**
 * Queue @w for the next commit. Returns 0 (done will be called exactly
 * once, on the writer thread) or -ESHUTDOWN when the spool is stopping
 * (done is not called). Thread-safe.
 */
int spool_submit(struct spool *s, struct spool_write *w);

/* ---- dispatcher side ------------------------------------------------- */

enum spool_outcome_kind { SPOOL_DELIVERED = 0, SPOOL_RETRY, SPOOL_DEAD };

/** The result of one delivery attempt, as the dispatcher reports it. */
struct spool_outcome {
    int64_t delivery_id;
    enum spool_outcome_kind kind;
    int attempt;         /* 1-based number of this attempt; 0 = none made */
    int64_t at_ms;       /* wall time the attempt started */
    int64_t duration_ms;
    long status;         /* HTTP status, 0 when none */
    char error[160];     /* transport error text, "" when none */
    int64_t next_ms;     /* RETRY: when to try again */
    char reason[160];    /* DEAD: why, e.g. "max_attempts reached" */
};

/**
 * Queue outcomes (copied) for the next commit. DELIVERED deletes the
 * delivery (and its event once no delivery or dead letter needs it);
 * RETRY records the attempt and sets attempts/next_ms; DEAD records the
 * attempt (if any) and moves the delivery to dead_letters with @reason.
 * Returns 0 or -ENOMEM / -ESHUTDOWN. Thread-safe.
 */
int spool_post_outcomes(struct spool *s, const struct spool_outcome *o,
                        size_t n);

/** What a commit made durable, for the commit callback. */
struct spool_commit {
    /* A wake-up hint: > 0 when the commit may have made deliveries due
     * that no fetch has seen yet: rows created by ingest or by a replay of
     * dead letters, and ordered deliveries that became the head of their
     * partition key because the head before them settled. */
    size_t n_new_deliveries;
    const int64_t *settled;   /* delivery ids whose outcome is durable */
    size_t n_settled;
};

/** Called on the writer thread after each successful commit. */
typedef void (*spool_commit_cb)(void *arg, const struct spool_commit *c);

/**
 * Set (or, with NULL, clear) the commit callback. Safe while the writer
 * runs (a reload swaps dispatchers): it waits for a callback in progress,
 * and once it returns the previous callback is never called again, so its
 * @arg may be freed. Must not be called from inside a commit callback (it
 * would wait for itself).
 */
void spool_set_commit_cb(struct spool *s, spool_commit_cb cb, void *arg);

/* ---- lifecycle ------------------------------------------------------- */

/** Start the writer thread. 0 or -errno. */
int spool_start(struct spool *s);

/**
 * Stop accepting work, commit everything already queued, stop the writer.
 * Submissions after this fail with -ESHUTDOWN. Idempotent.
 */
void spool_stop(struct spool *s);

/** Stop (if needed) and close. NULL-safe. */
void spool_close(struct spool *s);

/* ---- state, any thread ----------------------------------------------- */

/**
 * The backlog's size: database pages holding data. Free pages (which SQLite
 * reuses) and the WAL (newer copies of counted pages, checkpointed under
 * load and truncated when idle) are not counted, so the figure falls as
 * deliveries drain. Updated after each commit and each second.
 */
int64_t spool_bytes(const struct spool *s);

/**
 * True while the spool's filesystem has less free space than the reserve
 * the spool keeps for draining (1/8 of the filesystem, 1 MiB to 256 MiB):
 * submissions fail with -ENOSPC meanwhile. Updated after each commit and
 * each second.
 */
bool spool_disk_low(const struct spool *s);

/** Monotonic ms of the writer loop's last turn (for /healthz). */
int64_t spool_heartbeat_ms(const struct spool *s);

/** False after a commit failed (disk full, I/O error) until one succeeds. */
bool spool_writable(const struct spool *s);

/** Pending and dead-lettered delivery counts for @peer (0 if unknown). */
void spool_peer_counts(struct spool *s, const char *peer, int64_t *pending,
                       int64_t *dead);

/** Transactions committed that carried submissions or outcomes (stats). */
uint64_t spool_commit_count(const struct spool *s);

/* ---- reading (one reader per thread; the dispatcher's) ---------------- */

/** A pending delivery loaded for dispatch. Everything owned. */
struct spool_delivery {
    int64_t id;
    int64_t event_seq;      /* acceptance order */
    int attempts;           /* failed attempts so far */
    int64_t received_ms;    /* when the event was accepted or, for a
                             * delivery replayed from the dead letters,
                             * replayed: max_age_s counts from here */
    int64_t next_ms;
    char *event_id;         /* the CloudEvent id, for logs */
    char *partition_key;    /* NULL when none */
    enum event_format format;
    char *text;
    size_t text_len;
    void *data;
    size_t data_len;
};

/** Open a read connection. NULL on failure. Use from one thread only. */
struct spool_reader *spool_reader_open(struct spool *s);
void spool_reader_close(struct spool_reader *r);

typedef bool (*spool_skip_cb)(void *arg, int64_t delivery_id);

/**
 * Load up to @max deliveries of @peer with next_ms <= @now_ms in
 * (next_ms, id) order into @out, skipping ids for which @skip returns true
 * (those already in the dispatcher's hands). Returns how many, or -errno.
 * Free each with spool_delivery_free.
 *
 * Ordered deliveries (spool_event.ordered) are returned only when they are
 * the head of their (peer, partition key): no pending delivery of that
 * peer and key has a smaller id. While the head waits for a retry or is in
 * flight (it stays pending until its outcome commits), the rest of its key
 * waits; other keys and unordered deliveries are unaffected. When the head
 * is delivered or dead-lettered, the next one becomes due in the same
 * commit (n_new_deliveries tells the commit callback to look).
 */
long spool_fetch_due(struct spool_reader *r, const char *peer, int64_t now_ms,
                     size_t max, spool_skip_cb skip, void *arg,
                     struct spool_delivery *out);

/** Earliest next_ms > @after_ms among @peer's pending deliveries, or
 *  INT64_MAX. On a read error: logged, and @after_ms + 1000 (look again). */
int64_t spool_next_due(struct spool_reader *r, const char *peer,
                       int64_t after_ms);

/** received_ms of @peer's oldest pending delivery, or 0 when none. */
int64_t spool_oldest_ms(struct spool_reader *r, const char *peer);

/** Peers that have pending deliveries (at start: to find orphans). New
 *  array of new strings in *@names; returns the count or -errno. */
long spool_pending_peers(struct spool_reader *r, char ***names);

/** Free what @d owns (not @d itself) and zero it. NULL-safe. */
void spool_delivery_free(struct spool_delivery *d);

/**
 * The last slot schedule @name fired (spool_event.schedule), as
 * committed. Returns 1 with *@slot_ms set, 0 when it never fired, or
 * -errno. Use from the reader's thread only.
 */
int spool_schedule_last(struct spool_reader *r, const char *name,
                        int64_t *slot_ms);

/* ---- dead letters (the admin API) -------------------------------------
 *
 * A dead letter keeps the id of the delivery it was. Reads go through a
 * spool_reader (the admin listener keeps its own, never the dispatcher's);
 * replay and purge are writes, so they are queued to the writer like
 * everything else and the caller blocks until they are committed. They run
 * in bounded batches per writer turn, so purging a million dead letters
 * does not hold ingest's 202s behind one huge transaction.
 */

/** One dead letter as listed. Everything owned; free with
 *  spool_dead_letter_free. Strings are "" when the event is missing. */
struct spool_dead_letter {
    int64_t id;
    char *peer;
    char *event_id;      /* the CloudEvent id */
    char *source;
    char *type;
    int attempts;        /* attempts made */
    int64_t received_ms; /* when the event was accepted */
    int64_t dead_ms;     /* when it was dead-lettered */
    char *reason;        /* e.g. "status 404", "max_attempts reached" */
    long last_status;    /* HTTP status of the last attempt, 0 when none */
    char *last_error;    /* transport error of the last attempt, or NULL */
};

/**
 * Load up to @limit dead letters with id > @after (0: from the start), of
 * @peer only unless NULL, in id order into @out. Returns how many, or
 * -errno (then @out holds nothing to free). Page on with the last id as
 * the next @after. Use from the reader's thread only.
 */
long spool_dead_list(struct spool_reader *r, const char *peer, int64_t after,
                     size_t limit, struct spool_dead_letter *out);

/** Free what @dl owns (not @dl itself) and zero it. NULL-safe. */
void spool_dead_letter_free(struct spool_dead_letter *dl);

/** One failed attempt of a dead letter's history. */
struct spool_attempt {
    int n;               /* 1-based attempt number */
    int64_t at_ms;       /* wall time it started */
    int64_t duration_ms;
    long status;         /* HTTP status, 0 when none */
    char *error;         /* transport error, or NULL */
};

/** A dead letter with its attempt history and its stored event. */
struct spool_dead_detail {
    struct spool_dead_letter dl;
    struct spool_attempt *attempts; /* by n; n_attempts of them */
    size_t n_attempts;
    bool has_event;      /* false only if the event row is missing */
    enum event_format format; /* the stored form, for event_load() */
    char *text;
    size_t text_len;
    void *data;          /* BINARY only, else NULL */
    size_t data_len;
};

/**
 * Load dead letter @id with its history and event into @out (one
 * consistent snapshot). Returns 0, -ENOENT when there is no such dead
 * letter, or -errno; on failure @out holds nothing to free. Free with
 * spool_dead_detail_free.
 */
int spool_dead_get(struct spool_reader *r, int64_t id,
                   struct spool_dead_detail *out);

/** Free what @d owns (not @d itself) and zero it. NULL-safe. */
void spool_dead_detail_free(struct spool_dead_detail *d);

/** Peers that have dead letters, by name. New array of new strings in
 *  *@names; returns the count or -errno (then *@names is NULL). */
long spool_dead_peers(struct spool_reader *r, char ***names);

/** Which dead letters a replay or purge applies to. */
struct spool_dead_filter {
    int64_t id;       /* > 0: only this one */
    const char *peer; /* non-NULL: only this peer's; with neither, all */
};

/**
 * Move the dead letters matching @f back to pending: attempts reset to 0,
 * due now, their attempt history deleted, max_age_s counted from now. Each
 * gets a new delivery id, so an ordered one joins the back of its key's
 * queue. Dead letters that become dead again while a large replay is
 * still running are not replayed twice. Wakes the commit callback.
 *
 * The spool does not know the configuration: the caller must refuse
 * replays to peers that no longer exist (nothing would deliver them).
 * Blocks until committed; call from any thread but the writer's (never
 * from a commit or done callback). Returns how many were replayed (0 when
 * none matched), -ESHUTDOWN when the spool is stopping, -EAGAIN when the
 * writer was never started, or -EIO / -ENOSPC / -ENOMEM when a commit
 * failed (batches committed before stay committed).
 */
long spool_dead_replay(struct spool *s, const struct spool_dead_filter *f);

/**
 * Delete the dead letters matching @f with their attempt history; an event
 * no delivery or dead letter needs any more is deleted too. Blocking and
 * returns as spool_dead_replay (the number purged).
 */
long spool_dead_purge(struct spool *s, const struct spool_dead_filter *f);

#endif
