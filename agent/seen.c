/*
 * seen: the in-memory dedupe index (see seen.h).
 *
 * DESIGN
 * Ids are usually random (UUIDs). Kept in a b-tree keyed by (source, id),
 * every claim would dirty a random leaf page, so a commit of 100 events
 * would write ~100 more pages to the WAL: measured, that halved the
 * throughput with UUID ids. So the dedupe table is an append-only log (a
 * claim touches only its rightmost page) and lookups use this
 * open-addressing table of 64-bit SipHash-1-3 values, rebuilt from the
 * log at open. Cost: 16 bytes per slot, 3/8 to 3/4 of them used. A
 * false duplicate needs a 64-bit collision under a key drawn at random at
 * each open (chance about n / 2^64 per event; ids cannot be crafted).
 *
 * Claims can be undone: each records the expiry it replaced, and a
 * rolled-back savepoint or transaction restores them in reverse order, so
 * memory never disagrees with the database.
 *
 * Snapshot. Rebuilding from the log reads every row of the window (a
 * million at high rates: most of a second), which would hold a restart
 * back from ready. So a clean stop writes the index to a file (the slots
 * as they are, with the hash key and the log row it covers), and the next
 * open reads it back if the log still ends at that row. The file is
 * deleted once read: after a crash there is none, and the log is read as
 * before. It holds the hash key, so it is private to the spool's owner.
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

void seen_init(struct seen_set *d)
{
    *d = (struct seen_set){0};
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

/* Slots come from malloc, or mapped from a snapshot (@mapped bytes). */
static void free_slots(struct seen *slots, size_t mapped)
{
    if (mapped)
        munmap(slots, mapped);
    else
        free(slots);
}

/* The slot holding @h, or the empty slot where it would go. */
static struct seen *seen_find(const struct seen_set *d, uint64_t h)
{
    size_t mask = d->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask)
        if (d->slots[i].h == h || d->slots[i].h == 0)
            return &d->slots[i];
}

/*
 * Room for one more entry: at 3/4 full, rebuild without the expired
 * entries (which is how they leave memory), growing only if the live
 * ones need it. Rare, so the allocation is not per event. 0 or -ENOMEM.
 */
static int seen_reserve(struct seen_set *d, int64_t now)
{
    if (d->cap && d->used < d->cap / 4 * 3)
        return 0;
    size_t live = 0, cap = 1024;
    for (size_t i = 0; i < d->cap; i++)
        live += d->slots[i].h && d->slots[i].expires_ms > now;
    while (cap < (live + 1) * 2)
        cap *= 2;
    struct seen *old = d->slots;
    size_t old_cap = d->cap, old_mapped = d->mapped;
    if (!(d->slots = calloc(cap, sizeof(*d->slots)))) {
        d->slots = old;
        return -ENOMEM;
    }
    d->cap = cap;
    d->used = 0;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].h && old[i].expires_ms > now) {
            *seen_find(d, old[i].h) = old[i];
            d->used++;
        }
    }
    free_slots(old, old_mapped);
    d->mapped = 0;
    return 0;
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
    if (seen_reserve(d, now) || (undo && seen_reserve_undo(d)))
        return -ENOMEM;
    struct seen *e = seen_find(d, h);
    if (e->h == h && e->expires_ms > now)
        return 0;
    if (undo)
        d->undo[d->n_undo++] =
            (struct seen_undo){h, e->h == h ? e->expires_ms : 0};
    if (e->h == 0) {
        e->h = h;
        d->used++;
    }
    e->expires_ms = expires_ms;
    return 1;
}

void seen_undo_to(struct seen_set *d, size_t mark)
{
    while (d->n_undo > mark) {
        const struct seen_undo *u = &d->undo[--d->n_undo];
        struct seen *e = seen_find(d, u->h);
        if (e->h == u->h)
            e->expires_ms = u->prev_expires_ms;
    }
}

void seen_free(struct seen_set *d)
{
    free_slots(d->slots, d->mapped);
    free(d->undo);
}


int seen_presize(struct seen_set *d, size_t n)
{
    if (d->cap)
        return 0;
    size_t cap = 1024;
    while (cap / 4 * 3 <= n + 1) /* stays under seen_reserve's 3/4 */
        cap *= 2;
    struct seen *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    d->slots = slots;
    d->cap = cap;
    return 0;
}

/* ---- snapshot ------------------------------------------------------------ */

#define SNAP_MAGIC "FERRYDX1"
#define SNAP_HEADER 4096 /* the slots start on a page of their own */

struct snap_header {
    char magic[8];
    uint32_t slot_size;
    uint32_t reserved;
    uint64_t k0, k1;
    int64_t log_seq;
    uint64_t cap, used;
    uint64_t check; /* of everything above */
};

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

static int read_all(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EINVAL; /* shorter than its header says */
        p += n;
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
    char page[SNAP_HEADER] = {0};
    struct snap_header h = {.slot_size = sizeof(struct seen),
                            .k0 = d->k0, .k1 = d->k1, .log_seq = log_seq,
                            .cap = d->cap, .used = d->used};
    memcpy(h.magic, SNAP_MAGIC, sizeof(h.magic));
    h.check = header_check(&h);
    memcpy(page, &h, sizeof(h));
    int rc = write_all(fd, page, sizeof(page));
    if (!rc && d->cap)
        rc = write_all(fd, d->slots, d->cap * sizeof(*d->slots));
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

int seen_load_file(struct seen_set *d, const char *path, int64_t log_seq)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    unlink(path); /* at most once: whatever follows, it will be stale */
    char page[SNAP_HEADER];
    struct snap_header h;
    struct stat st;
    struct seen *slots = NULL;
    int rc = read_all(fd, page, sizeof(page));
    if (!rc)
        memcpy(&h, page, sizeof(h));
    if (!rc && (memcmp(h.magic, SNAP_MAGIC, sizeof(h.magic)) != 0 ||
                h.check != header_check(&h) ||
                h.slot_size != sizeof(struct seen) || h.used > h.cap ||
                (h.cap & (h.cap - 1)) != 0 || h.cap > SIZE_MAX / sizeof(*slots)))
        rc = -EINVAL;
    if (!rc && (fstat(fd, &st) != 0 ||
                (uint64_t)st.st_size != SNAP_HEADER + h.cap * sizeof(*slots)))
        rc = -EINVAL;
    if (!rc && h.log_seq != log_seq)
        rc = -ESTALE;
    /* Mapped, not read: nothing is copied, and only the pages that
     * lookups touch are ever read in (a private mapping: writes stay
     * ours). Where the header is not a whole page, read it. */
    size_t bytes = h.cap * sizeof(*slots), mapped = 0;
    if (!rc && h.cap && sysconf(_SC_PAGESIZE) == SNAP_HEADER) {
        void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd,
                       SNAP_HEADER);
        if (m != MAP_FAILED) {
            slots = m;
            mapped = bytes;
        }
    }
    if (!rc && h.cap && !slots && !(slots = malloc(bytes)))
        rc = -ENOMEM;
    if (!rc && h.cap && !mapped)
        rc = read_all(fd, slots, bytes);
    close(fd);
    if (rc) {
        free(slots);
        return rc;
    }
    free_slots(d->slots, d->mapped);
    d->slots = slots;
    d->mapped = mapped;
    d->cap = h.cap;
    d->used = h.used;
    d->k0 = h.k0;
    d->k1 = h.k1;
    return 0;
}
