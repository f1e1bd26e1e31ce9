/*
 * seen: the in-memory dedupe index - which (source, id) pairs were
 * accepted within the dedupe window - and its snapshot file.
 *
 * Owned by one thread (the spool writer); nothing here locks.
 */
#ifndef FERRY_SEEN_H
#define FERRY_SEEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SEEN_SHARDS 256

/*
 * One shard: an open-addressing table of 8-byte slots, each the top 48
 * bits of an entry's hash and a 16-bit expiry tick (see seen.c). 0 is an
 * empty slot; tick 0 a dead one (kept: it may sit in a probe run).
 */
struct seen_shard {
    uint64_t *slots;
    uint32_t cap, used; /* used: occupied slots, dead ones included */
    bool mapped;        /* slots point into the snapshot's mapping */
};

struct seen_undo {
    uint64_t h;
    uint16_t prev_tick; /* 0: was absent or dead */
};

struct seen_set {
    struct seen_shard shard[SEEN_SHARDS]; /* by the hash's low 8 bits */
    size_t used;        /* over all shards */
    int64_t base_ms;    /* tick t means "live before base_ms + t * unit_ms" */
    int64_t unit_ms;    /* window / 4096, at least 1 ms */
    bool based;         /* base_ms is set (at the first claim) */
    void *map;          /* a snapshot's slots, mapped; NULL if none */
    size_t map_bytes;
    unsigned map_shards; /* shards still using the mapping */
    uint64_t k0, k1;     /* random per index: ids cannot be crafted to collide */
    struct seen_undo *undo; /* claims of the open transaction, in order */
    size_t n_undo, cap_undo;
};

/**
 * An empty index with a new random hash key, for a dedupe window of
 * @window_ms (it sets how finely expiry times are kept: to window/4096).
 * Allocates nothing.
 */
void seen_init(struct seen_set *d, int64_t window_ms);

/** The index's keyed hash of @source and @id (never 0). */
uint64_t seen_hash(const struct seen_set *d, const char *source,
                   const char *id);

/**
 * Claim @h until @expires_ms unless it is live at @now. 1: claimed (with
 * @undo, revocably: see seen_undo_to); 0: a duplicate; -ENOMEM (the index
 * unaltered). An entry stays live until @expires_ms and at most one tick
 * (window/4096) longer.
 */
int seen_claim(struct seen_set *d, uint64_t h, int64_t now,
               int64_t expires_ms, bool undo);

/** Revoke the revocable claims made since undo mark @mark, newest first. */
void seen_undo_to(struct seen_set *d, size_t mark);

/** Make the revocable claims permanent (their transaction committed). */
static inline void seen_keep(struct seen_set *d) { d->n_undo = 0; }

/**
 * Size an empty index for about @n entries, so loading them does not
 * rebuild it on the way. 0 or -ENOMEM (still empty and usable).
 */
int seen_presize(struct seen_set *d, size_t n);

/** Bytes of slots the index holds (mapped ones included). */
size_t seen_bytes(const struct seen_set *d);

/** Free the index's memory (not @d itself). */
void seen_free(struct seen_set *d);

/**
 * Write the index to @path (via a temporary file, synced, then renamed)
 * together with @log_seq, the last dedupe log row it covers. Only valid
 * with no revocable claims. 0 or -errno; on failure no file is left.
 */
int seen_save(const struct seen_set *d, const char *path, int64_t log_seq);

/**
 * Replace the empty index @d with the one saved at @path, if that was
 * saved at @log_seq (the log's last row now: nothing was committed since
 * the save) for the same window. The file is removed either way, so a
 * snapshot is used at most once. 0: loaded; -ENOENT: no file; -ESTALE:
 * saved at another point or for another window; -EINVAL: not a whole
 * snapshot; -ENOMEM; or another -errno. On failure @d is unaltered.
 */
int seen_load_file(struct seen_set *d, const char *path, int64_t log_seq);

#endif
