/*
 * walvfs: WAL write combining (see walvfs.h).
 *
 * DESIGN
 * SQLite writes each WAL frame with two pwrite(2)s (24-byte header, then
 * the page): ~140 system calls for a commit of 100 events, about as long
 * as its fdatasync on this class of machine. The "ferry" VFS wraps the
 * default one and, for WAL files only, gathers contiguous writes in a
 * buffer written with one pwrite before anything needs them on disk or
 * visible: xSync (each commit, as synchronous=FULL), xRead of an
 * overlapping range, xTruncate, xFileSize, xClose, and a write that does
 * not continue the buffer. Other connections only ever read frames of
 * committed transactions, which xSync has flushed; only the writing
 * connection itself can read unsynced frames, and it does so through
 * xRead. Every other file, and every other method, is the default VFS's.
 */

#include "walvfs.h"

#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

/* The unix VFS cannot write 128 KiB or more in one call (seekAndWriteFd
 * masks the length with 0x1ffff), so flushes stay well below that. */
#define WAL_BUF_BYTES (64 * 1024)
#define WAL_PREPARE_BYTES (4LL << 20)
#define WAL_PREPARE_MIN_FREE (512LL << 20) /* twice the spool's largest reserve */
#define VFS_NAME "ferry"

struct wal_file {
    sqlite3_file base;   /* pMethods = &wal_io */
    sqlite3_file *real;  /* the default VFS's file, right after this */
    char *buf;           /* allocated at the first write: readers have none */
    sqlite3_int64 buf_off;
    size_t len;
    const char *name;     /* valid until xClose (SQLite's promise) */
    sqlite3_int64 ready;  /* bytes the file holds as far as we know; -1: ask */
};

static const char zeros[WAL_BUF_BYTES];

/* Before a write up to @end: extend the file with zeros if @end is past
 * what it holds (see "Preparing ahead"). Best effort: errors are
 * ignored, and the write then appends as it would without us. */
static void wal_prepare(struct wal_file *f, sqlite3_int64 end)
{
    sqlite3_file *r = f->real;
    if (f->ready < 0 && r->pMethods->xFileSize(r, &f->ready) != SQLITE_OK)
        f->ready = -1;
    if (f->ready < 0 || end <= f->ready || !f->name)
        return;
    sqlite3_int64 old = f->ready, target =
        (end + WAL_PREPARE_BYTES - 1) / WAL_PREPARE_BYTES * WAL_PREPARE_BYTES;
    struct statvfs sv;
    if (statvfs(f->name, &sv) != 0 ||
        (sqlite3_int64)sv.f_bavail * (sqlite3_int64)sv.f_frsize <
            WAL_PREPARE_MIN_FREE + (target - old)) {
        f->ready = end; /* the write extends it; ask again past that */
        return;
    }
    /* [old, end) is the write's own; the zeros go after it. */
    for (sqlite3_int64 at = end; at < target;) {
        int n = (int)(target - at < WAL_BUF_BYTES ? target - at
                                                  : WAL_BUF_BYTES);
        if (r->pMethods->xWrite(r, zeros, n, at) != SQLITE_OK) {
            r->pMethods->xTruncate(r, old);
            f->ready = old;
            return;
        }
        at += n;
    }
    f->ready = target;
}

static sqlite3_vfs *real_vfs;

static int wal_flush(struct wal_file *f)
{
    if (f->len == 0)
        return SQLITE_OK;
    wal_prepare(f, f->buf_off + (sqlite3_int64)f->len);
    int rc = f->real->pMethods->xWrite(f->real, f->buf, (int)f->len,
                                       f->buf_off);
    f->len = 0; /* on error SQLite rolls back: the bytes are not wanted */
    return rc;
}

static int wal_write(sqlite3_file *p, const void *data, int n,
                     sqlite3_int64 off)
{
    struct wal_file *f = (struct wal_file *)p;
    size_t sz = (size_t)n;
    if (f->len && (off != f->buf_off + (sqlite3_int64)f->len ||
                   sz > WAL_BUF_BYTES - f->len)) {
        int rc = wal_flush(f);
        if (rc != SQLITE_OK)
            return rc;
    }
    if (!f->buf && sz < WAL_BUF_BYTES)
        f->buf = malloc(WAL_BUF_BYTES);
    if (!f->buf || sz >= WAL_BUF_BYTES) { /* unbuffered, as without us */
        wal_prepare(f, off + n);
        return f->real->pMethods->xWrite(f->real, data, n, off);
    }
    if (f->len == 0)
        f->buf_off = off;
    memcpy(f->buf + f->len, data, sz);
    f->len += sz;
    return SQLITE_OK;
}

static int wal_read(sqlite3_file *p, void *data, int n, sqlite3_int64 off)
{
    struct wal_file *f = (struct wal_file *)p;
    if (f->len && off < f->buf_off + (sqlite3_int64)f->len &&
        off + n > f->buf_off) {
        int rc = wal_flush(f);
        if (rc != SQLITE_OK)
            return rc;
    }
    return f->real->pMethods->xRead(f->real, data, n, off);
}

static int wal_close(sqlite3_file *p)
{
    struct wal_file *f = (struct wal_file *)p;
    int rc = wal_flush(f);
    int rc2 = f->real->pMethods->xClose(f->real);
    free(f->buf);
    f->buf = NULL;
    return rc != SQLITE_OK ? rc : rc2;
}

static int wal_truncate(sqlite3_file *p, sqlite3_int64 size)
{
    struct wal_file *f = (struct wal_file *)p;
    int rc = wal_flush(f);
    if (rc == SQLITE_OK)
        rc = f->real->pMethods->xTruncate(f->real, size);
    f->ready = -1; /* whatever happened, ask before the next write */
    return rc;
}

static int wal_sync(sqlite3_file *p, int flags)
{
    struct wal_file *f = (struct wal_file *)p;
    int rc = wal_flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xSync(f->real, flags);
}

static int wal_file_size(sqlite3_file *p, sqlite3_int64 *size)
{
    struct wal_file *f = (struct wal_file *)p;
    int rc = wal_flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xFileSize(f->real, size);
}

/* The rest only forward: a WAL file is never locked, mapped or shared
 * through these, but SQLite may ask. */
#define REAL(p) (((struct wal_file *)(p))->real)

static int wal_lock(sqlite3_file *p, int l)
{
    return REAL(p)->pMethods->xLock(REAL(p), l);
}

static int wal_unlock(sqlite3_file *p, int l)
{
    return REAL(p)->pMethods->xUnlock(REAL(p), l);
}

static int wal_check_lock(sqlite3_file *p, int *out)
{
    return REAL(p)->pMethods->xCheckReservedLock(REAL(p), out);
}

static int wal_file_control(sqlite3_file *p, int op, void *arg)
{
    return REAL(p)->pMethods->xFileControl(REAL(p), op, arg);
}

static int wal_sector_size(sqlite3_file *p)
{
    return REAL(p)->pMethods->xSectorSize(REAL(p));
}

static int wal_device(sqlite3_file *p)
{
    return REAL(p)->pMethods->xDeviceCharacteristics(REAL(p));
}

static const sqlite3_io_methods wal_io = {
    .iVersion = 1,
    .xClose = wal_close,
    .xRead = wal_read,
    .xWrite = wal_write,
    .xTruncate = wal_truncate,
    .xSync = wal_sync,
    .xFileSize = wal_file_size,
    .xLock = wal_lock,
    .xUnlock = wal_unlock,
    .xCheckReservedLock = wal_check_lock,
    .xFileControl = wal_file_control,
    .xSectorSize = wal_sector_size,
    .xDeviceCharacteristics = wal_device,
};

static int vfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file,
                    int flags, int *out_flags)
{
    (void)vfs;
    if (!(flags & SQLITE_OPEN_WAL)) /* the default file, in place */
        return real_vfs->xOpen(real_vfs, name, file, flags, out_flags);
    struct wal_file *f = (struct wal_file *)file;
    memset(f, 0, sizeof(*f));
    f->real = (sqlite3_file *)(f + 1);
    f->name = name;
    f->ready = -1;
    int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out_flags);
    /* On failure pMethods stays NULL, so SQLite will not call xClose. */
    if (rc == SQLITE_OK)
        f->base.pMethods = &wal_io;
    return rc;
}

const char *walvfs_register(void)
{
    static sqlite3_vfs vfs;
    real_vfs = sqlite3_vfs_find(NULL);
    if (!real_vfs)
        return NULL;
    vfs = *real_vfs; /* its methods only read the fields we copy */
    vfs.pNext = NULL;
    vfs.zName = VFS_NAME;
    vfs.szOsFile = (int)sizeof(struct wal_file) + real_vfs->szOsFile;
    vfs.xOpen = vfs_open;
    if (sqlite3_vfs_register(&vfs, 0) != SQLITE_OK) {
        real_vfs = NULL;
        return NULL;
    }
    return VFS_NAME;
}

