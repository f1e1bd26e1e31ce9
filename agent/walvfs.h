/*
 * walvfs: a SQLite VFS ("ferry") that is the default one except for WAL
 * files, whose contiguous frame writes it gathers into one pwrite(2) per
 * commit (see walvfs.c).
 */
#ifndef FERRY_WALVFS_H
#define FERRY_WALVFS_H

#include <sqlite3.h>

/**
 * Register the VFS (not as the default) and return its name for
 * sqlite3_open_v2(), or NULL if it could not be registered: then open
 * with SQLite's default VFS, which is correct, only slower. Call once,
 * before any connection is opened.
 */
const char *walvfs_register(void);

#endif
