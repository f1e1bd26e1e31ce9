/*
 * seen: the in-memory dedupe index (see seen.h).
 *
 * DESIGN
 * Ids are usually random (UUIDs). Kept in a b-tree keyed by (source, id),
 * every claim would dirty a random leaf page, so a commit of 100 events
 * would write ~100 more pages to the WAL: measured, that halved the
 * throughput with UUID ids. So the dedupe table is an append-only log (a
 * claim touches only its rightmost page) and lookups use this in-memory
 * index of 64-bit SipHash-1-3 values, rebuilt from the log at open.
 *
 * Memory. At high rates the window holds millions of ids, so a slot is
 * one 64-bit word: the hash's top 48 bits and a 16-bit expiry tick. Ticks
 * count units of window/4096 (at least 1 ms) from a base time, so an
 * entry is live until its expiry and at most one unit longer; every 32768
 * units the ticks are shifted down to a new base. The index is 256 shards
 * (by the hash's low 8 bits, which are thus implied, not stored), each an
 * open-addressing table with linear probing that is rebuilt without its
 * expired entries at 4/5 full, to 5/8 full, growing or shrinking: ~11
 * bytes per entry, and a rebuild never holds more than one shard twice
 * (one big table doubling held 1.5x the whole index for a moment).
 * A false duplicate needs a 48-bit collision with one of the few slots a
 * lookup probes, under a key drawn at random at each open (about 2^-45
 * per event; ids cannot be crafted to collide).
 *
 * Claims can be undone: each records the tick it replaced, and a
 * rolled-back savepoint or transaction restores them in reverse order, so
 * memory never disagrees with the database. An entry is never removed from
 * its slot, only marked dead (tick 0), so probe runs stay intact.
 *
 * Snapshot. Rebuilding from the log reads every row of the window (a
 * million at high rates: most of a second), which would hold a restart
 * back from ready. So a clean stop writes the index to a file (the shards
 * as they are, each on pages of its own, with the hash key, the base time
 * and the log row it covers), and the next open maps it back if the log
 * still ends at that row: only the pages lookups touch are read in. The
 * file is deleted once read: after a crash there is none, and the log is
 * read as before. It holds the hash key, so it is private to the spool's
 * owner.
 */

#include "seen.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"

#define TICKS_PER_WINDOW 4096
#define REBASE_TICKS 32768 /* shift the ticks once now is this far from base */
#define TICK_MAX 0xffff
#define KEY_MASK (~(uint64_t)TICK_MAX)
#define SHARD_MIN 64
#define PAGE 4096

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

struct sip {
    uint64_t v0, v1, v2, v3, m;
    size_t n;
};

static void sip_round(struct sip *s)
{
    s->v0 += s->v1;
    s->v1 = ROTL(s->v1, 13) ^ s->v0;
    s->v0 = ROTL(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = ROTL(s->v3, 16) ^ s->v2;
    s->v0 += s->v3;
    s->v3 = ROTL(s->v3, 21) ^ s->v0;
    s->v2 += s->v1;
    s->v1 = ROTL(s->v1, 17) ^ s->v2;
    s->v2 = ROTL(s->v2, 32);
}

static void sip_block(struct sip *s, uint64_t m)
{
    s->v3 ^= m;
    sip_round(s); /* SipHash-1-3: one compression round */
    s->v0 ^= m;
}

static void sip_init(struct sip *s, uint64_t k0, uint64_t k1)
{
    s->v0 = k0 ^ 0x736f6d6570736575ULL;
    s->v1 = k1 ^ 0x646f72616e646f6dULL;
    s->v2 = k0 ^ 0x6c7967656e657261ULL;
    s->v3 = k1 ^ 0x7465646279746573ULL;
    s->m = 0;
    s->n = 0;
}

static void sip_feed(struct sip *s, const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        s->m |= (uint64_t)(unsigned char)p[i] << (8 * (s->n & 7));
        if ((++s->n & 7) == 0) {
            sip_block(s, s->m);
            s->m = 0;
        }
    }
}

static uint64_t sip_final(struct sip *s)
{
    sip_block(s, ((uint64_t)s->n << 56) | s->m);
    s->v2 ^= 0xff;
    for (int i = 0; i < 3; i++)
        sip_round(s);
    return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

void seen_init(struct seen_set *d, int64_t window_ms)
{
    *d = (struct seen_set){0};
    d->unit_ms = window_ms / TICKS_PER_WINDOW > 1 ? window_ms / TICKS_PER_WINDOW : 1;
    uint64_t k[2];
    if (getrandom(k, sizeof(k), 0) != (ssize_t)sizeof(k)) {
        /* No entropy yet: still a fine hash, only less crafted-proof. */
        k[0] = (uint64_t)clock_mono_us() * 0x9e3779b97f4a7c15ULL;
        k[1] = (uint64_t)getpid() ^ (uint64_t)clock_wall_ms();
    }
    d->k0 = k[0];
    d->k1 = k[1];
}

uint64_t seen_hash(const struct seen_set *d, const char *source,
                          const char *id)
{
    struct sip st;
    sip_init(&st, d->k0, d->k1);
    sip_feed(&st, source, strlen(source) + 1); /* the NUL separates */
    sip_feed(&st, id, strlen(id));
    uint64_t h = sip_final(&st);
    return h ? h : 1; /* 0 marks an empty slot */
}


/* ---- the table ----------------------------------------------------------- */

static struct seen_shard *shard_of(struct seen_set *d, uint64_t h)
{
    return &d->shard[h & (SEEN_SHARDS - 1)];
}

/* What a slot keeps of @h: its top 48 bits, never all zero. */
static uint64_t key_of(uint64_t h)
{
    uint64_t k = h & KEY_MASK;
    return k ? k : (uint64_t)1 << 16;
}

/* A key's first slot. The key's bits are mixed first: the low ones are
 * the tick's, and the shard's size is not a power of two. */
static uint32_t home(uint64_t k, uint32_t cap)
{
    uint64_t x = (k * 0x9e3779b97f4a7c15ULL) >> 32;
    return (uint32_t)((x * cap) >> 32);
}

/* The slot holding @k, or the empty slot where it would go. */
static uint32_t slot_find(const struct seen_shard *sh, uint64_t k)
{
    uint32_t i = home(k, sh->cap);
    for (;;) {
        uint64_t s = sh->slots[i];
        if (s == 0 || (s & KEY_MASK) == k)
            return i;
        if (++i == sh->cap)
            i = 0;
    }
}

static bool slot_live(const struct seen_set *d, uint64_t s, int64_t now)
{
    int64_t t = (int64_t)(s & TICK_MAX);
    return t && now < d->base_ms + t * d->unit_ms;
}

/* The tick of @expires_ms, rounded up (live at least that long). */
static uint64_t tick_of(const struct seen_set *d, int64_t expires_ms)
{
    int64_t t = expires_ms - d->base_ms;
    if (t <= 0)
        return 0; /* expired before the base: dead at once */
    t = (t + d->unit_ms - 1) / d->unit_ms;
    return t > TICK_MAX ? TICK_MAX : (uint64_t)t;
}

/* A shard's bytes in a snapshot (and in its mapping): its slots, padded to whole pages. */
static size_t region_bytes(uint32_t cap)
{
    return ((size_t)cap * sizeof(uint64_t) + PAGE - 1) / PAGE * PAGE;
}

/* A shard's slots go back: freed, or, in the snapshot's mapping, their
 * pages are dropped (the mapping goes once no shard uses it). */
static void release_slots(struct seen_set *d, struct seen_shard *sh)
{
    if (!sh->mapped) {
        free(sh->slots);
        return;
    }
    madvise(sh->slots, region_bytes(sh->cap), MADV_DONTNEED);
    sh->mapped = false;
    if (--d->map_shards == 0) {
        munmap(d->map, d->map_bytes);
        d->map = NULL;
        d->map_bytes = 0;
    }
}

/* Put @s in @sh (not there yet, room assured). */
static void slot_put(struct seen_shard *sh, uint64_t s)
{
    sh->slots[slot_find(sh, s & KEY_MASK)] = s;
    sh->used++;
}

/* Rebuild @sh for its live entries plus @extra, 5/8 full. 0 or -ENOMEM. */
static int shard_rebuild(struct seen_set *d, struct seen_shard *sh,
                         int64_t now, size_t extra)
{
    size_t live = extra;
    for (uint32_t i = 0; i < sh->cap; i++)
        live += slot_live(d, sh->slots[i], now);
    uint64_t cap = (uint64_t)(live + 1) * 8 / 5;
    if (cap < SHARD_MIN)
        cap = SHARD_MIN;
    if (cap > UINT32_MAX / 2)
        return -ENOMEM;
    struct seen_shard n = {.cap = (uint32_t)cap};
    if (!(n.slots = calloc(cap, sizeof(*n.slots))))
        return -ENOMEM;
    for (uint32_t i = 0; i < sh->cap; i++)
        if (slot_live(d, sh->slots[i], now))
            slot_put(&n, sh->slots[i]);
    d->used = d->used - sh->used + n.used;
    if (sh->slots)
        release_slots(d, sh);
    *sh = n;
    return 0;
}

/* Room for one more entry in @sh: rebuilt at 4/5 full (which is how
 * expired entries leave memory). Rare, so not an allocation per event. */
static int shard_reserve(struct seen_set *d, struct seen_shard *sh,
                         int64_t now)
{
    if (sh->cap && ((uint64_t)sh->used + 1) * 5 <= (uint64_t)sh->cap * 4)
        return 0;
    return shard_rebuild(d, sh, now, 0);
}

/*
 * Move the base up to just before @now, shifting every tick down by as
 * much: live entries keep their expiry, and expired ones die. Writes only
 * the slots whose tick changes.
 */
static void rebase(struct seen_set *d, int64_t now)
{
    int64_t delta = (now - d->base_ms) / d->unit_ms - 1;
    for (int j = 0; j < SEEN_SHARDS; j++) {
        struct seen_shard *sh = &d->shard[j];
        for (uint32_t i = 0; i < sh->cap; i++) {
            uint64_t s = sh->slots[i];
            int64_t t = (int64_t)(s & TICK_MAX);
            if (t)
                sh->slots[i] = (s & KEY_MASK) |
                               (uint64_t)(t > delta ? t - delta : 0);
        }
    }
    d->base_ms += delta * d->unit_ms;
}

static int seen_reserve_undo(struct seen_set *d)
{
    if (d->n_undo < d->cap_undo)
        return 0;
    size_t cap = d->cap_undo ? d->cap_undo * 2 : 256;
    struct seen_undo *u = realloc(d->undo, cap * sizeof(*u));
    if (!u)
        return -ENOMEM;
    d->undo = u;
    d->cap_undo = cap;
    return 0;
}

int seen_claim(struct seen_set *d, uint64_t h, int64_t now,
               int64_t expires_ms, bool undo)
{
    if (!d->based) {
        d->base_ms = now;
        d->based = true;
    } else if (d->n_undo == 0 &&
               now - d->base_ms > (int64_t)REBASE_TICKS * d->unit_ms) {
        /* Not with open claims: their undo records hold old ticks. */
        rebase(d, now);
    }
    struct seen_shard *sh = shard_of(d, h);
    if (shard_reserve(d, sh, now) || (undo && seen_reserve_undo(d)))
        return -ENOMEM;
    uint64_t k = key_of(h);
    uint32_t i = slot_find(sh, k);
    uint64_t s = sh->slots[i];
    if (s && slot_live(d, s, now))
        return 0;
    if (undo)
        d->undo[d->n_undo++] =
            (struct seen_undo){h, (uint16_t)(s & TICK_MAX)};
    if (!s) {
        sh->used++;
        d->used++;
    }
    sh->slots[i] = k | tick_of(d, expires_ms);
    return 1;
}

void seen_undo_to(struct seen_set *d, size_t mark)
{
    while (d->n_undo > mark) {
        const struct seen_undo *u = &d->undo[--d->n_undo];
        struct seen_shard *sh = shard_of(d, u->h);
        if (!sh->cap)
            continue;
        uint64_t k = key_of(u->h);
        uint32_t i = slot_find(sh, k);
        if (sh->slots[i])
            sh->slots[i] = k | u->prev_tick;
    }
}

size_t seen_bytes(const struct seen_set *d)
{
    size_t n = 0;
    for (int j = 0; j < SEEN_SHARDS; j++)
        n += (size_t)d->shard[j].cap * sizeof(uint64_t);
    return n;
}

void seen_free(struct seen_set *d)
{
    for (int j = 0; j < SEEN_SHARDS; j++)
        if (!d->shard[j].mapped)
            free(d->shard[j].slots);
    if (d->map)
        munmap(d->map, d->map_bytes);
    free(d->undo);
}

int seen_presize(struct seen_set *d, size_t n)
{
    if (d->used)
        return 0;
    /* Room for the mean share of a shard plus four standard deviations
     * (hashes fall on shards at random), so loading n grows none. */
    size_t mean = n / SEEN_SHARDS, root = 1;
    while (root * root < mean)
        root++;
    size_t per = mean + 4 * root + 8;
    for (int j = 0; j < SEEN_SHARDS; j++) {
        struct seen_shard *sh = &d->shard[j];
        if (sh->cap)
            continue;
        if (shard_rebuild(d, sh, 0, per) != 0)
            return -ENOMEM;
    }
    return 0;
}

/* ---- snapshot ------------------------------------------------------------ */

#define SNAP_MAGIC "FERRYDX2"

struct snap_header {
    char magic[8];
    uint32_t slot_size, shards;
    uint64_t k0, k1;
    int64_t log_seq, base_ms, unit_ms;
    uint64_t based, used;
    uint32_t cap[SEEN_SHARDS], shard_used[SEEN_SHARDS];
    uint64_t check; /* of everything above */
};
_Static_assert(sizeof(struct snap_header) <= PAGE, "header fits its page");

static uint64_t header_check(const struct snap_header *h)
{
    const unsigned char *p = (const unsigned char *)h;
    uint64_t x = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (size_t i = 0; i < offsetof(struct snap_header, check); i++)
        x = (x ^ p[i]) * 0x100000001b3ULL;
    return x;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int pread_all(int fd, void *buf, size_t len, off_t off)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EINVAL; /* shorter than its header says */
        p += n;
        off += n;
        len -= (size_t)n;
    }
    return 0;
}

int seen_save(const struct seen_set *d, const char *path, int64_t log_seq)
{
    if (d->n_undo)
        return -EINVAL;
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    static const char zeros[PAGE];
    char page[PAGE] = {0};
    struct snap_header h = {.slot_size = sizeof(uint64_t),
                            .shards = SEEN_SHARDS,
                            .k0 = d->k0, .k1 = d->k1, .log_seq = log_seq,
                            .base_ms = d->base_ms, .unit_ms = d->unit_ms,
                            .based = d->based, .used = d->used};
    memcpy(h.magic, SNAP_MAGIC, sizeof(h.magic));
    for (int j = 0; j < SEEN_SHARDS; j++) {
        h.cap[j] = d->shard[j].cap;
        h.shard_used[j] = d->shard[j].used;
    }
    h.check = header_check(&h);
    memcpy(page, &h, sizeof(h));
    int rc = write_all(fd, page, sizeof(page));
    for (int j = 0; j < SEEN_SHARDS && !rc; j++) {
        const struct seen_shard *sh = &d->shard[j];
        size_t len = (size_t)sh->cap * sizeof(uint64_t);
        rc = write_all(fd, sh->slots, len);
        if (!rc)
            rc = write_all(fd, zeros, region_bytes(sh->cap) - len);
    }
    /* Synced before the rename: a snapshot that is there is whole. */
    if (!rc && fdatasync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && !rc)
        rc = -errno;
    if (!rc && rename(tmp, path) != 0)
        rc = -errno;
    if (rc)
        unlink(tmp);
    return rc;
}

/* Header @h, read from a file of @size bytes, describes a whole snapshot
 * whose slot regions take *@total bytes. */
static bool header_valid(const struct snap_header *h, off_t size,
                         size_t *total)
{
    if (memcmp(h->magic, SNAP_MAGIC, sizeof(h->magic)) != 0 ||
        h->check != header_check(h) || h->slot_size != sizeof(uint64_t) ||
        h->shards != SEEN_SHARDS || h->unit_ms < 1)
        return false;
    uint64_t used = 0;
    size_t sum = 0;
    for (int j = 0; j < SEEN_SHARDS; j++) {
        if (h->shard_used[j] > h->cap[j] || h->cap[j] > UINT32_MAX / 2)
            return false;
        used += h->shard_used[j];
        sum += region_bytes(h->cap[j]);
    }
    *total = sum;
    return used == h->used && size >= 0 && (uint64_t)size == PAGE + sum;
}

int seen_load_file(struct seen_set *d, const char *path, int64_t log_seq)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    unlink(path); /* at most once: whatever follows, it will be stale */
    char page[PAGE];
    struct snap_header h;
    struct stat st;
    size_t total = 0;
    int rc = pread_all(fd, page, sizeof(page), 0);
    if (!rc)
        memcpy(&h, page, sizeof(h));
    if (!rc && (fstat(fd, &st) != 0 || !header_valid(&h, st.st_size, &total)))
        rc = -EINVAL;
    if (!rc && (h.log_seq != log_seq || h.unit_ms != d->unit_ms))
        rc = -ESTALE;
    /* Mapped, not read: nothing is copied, and only the pages that
     * lookups touch are ever read in (a private mapping: writes stay
     * ours). Where pages are not 4 KiB, each shard is read. */
    char *map = NULL;
    if (!rc && total && sysconf(_SC_PAGESIZE) == PAGE) {
        void *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd,
                       PAGE);
        if (m != MAP_FAILED)
            map = m;
    }
    struct seen_shard shards[SEEN_SHARDS] = {{0}};
    size_t off = 0;
    for (int j = 0; j < SEEN_SHARDS && !rc; j++) {
        struct seen_shard *sh = &shards[j];
        sh->cap = h.cap[j];
        sh->used = h.shard_used[j];
        if (!sh->cap)
            continue;
        size_t len = (size_t)sh->cap * sizeof(uint64_t);
        if (map) {
            sh->slots = (uint64_t *)(map + off);
            sh->mapped = true;
        } else if (!(sh->slots = malloc(len))) {
            rc = -ENOMEM;
        } else {
            rc = pread_all(fd, sh->slots, len, (off_t)(PAGE + off));
        }
        off += region_bytes(sh->cap);
    }
    close(fd);
    if (rc) {
        for (int j = 0; j < SEEN_SHARDS; j++)
            if (!shards[j].mapped)
                free(shards[j].slots);
        if (map)
            munmap(map, total);
        return rc;
    }
    seen_free(d);
    d->n_undo = d->cap_undo = 0;
    d->undo = NULL;
    memcpy(d->shard, shards, sizeof(shards));
    d->map = map;
    d->map_bytes = map ? total : 0;
    d->map_shards = 0;
    for (int j = 0; j < SEEN_SHARDS; j++)
        d->map_shards += shards[j].mapped;
    d->used = h.used;
    d->base_ms = h.base_ms;
    d->based = h.based != 0;
    d->k0 = h.k0;
    d->k1 = h.k1;
    return 0;
}
