/*
 * admin: the admin listener (admin.listen). Dead-letter operations, the
 * peers' state and reload, as JSON over HTTP, behind admin.token:
 *
 *   GET    /v1/dead-letters[?peer=P&limit=N&after=CURSOR]
 *   GET    /v1/dead-letters/{id}             with attempts and the event
 *   POST   /v1/dead-letters/{id}/replay
 *   POST   /v1/dead-letters/replay[?peer=P]
 *   DELETE /v1/dead-letters/{id}
 *   DELETE /v1/dead-letters[?peer=P]
 *   GET    /v1/peers
 *   POST   /v1/reload
 *
 * DESIGN
 * Its own libmicrohttpd daemon and pool threads, never ingest's. Unlike
 * ingest, an admin request may block: reads go through the admin's own
 * spool reader (one SQLite connection, used under a mutex, since a
 * connection is never used by two threads at once), and replays and
 * purges wait for the spool writer to commit them. Nothing here touches
 * the dispatcher: replayed deliveries reach it through the spool's commit
 * callback, like new events.
 *
 * The admin copies what it needs from the config (the token and the
 * peers) into a view of its own, replaced by admin_set_config() after a
 * reload. A request thus never reads a config the main thread may free,
 * and POST /v1/reload may swap the config from inside the request.
 */
#ifndef FERRY_ADMIN_H
#define FERRY_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "spool.h"

struct admin;

/**
 * Reload the configuration, as SIGHUP does (POST /v1/reload calls it on an
 * admin pool thread). Returns 0 when the new config is in force (the
 * implementation calls admin_set_config() before returning), -EINVAL when
 * it is invalid (the old one stays; @msg says why, e.g. the errors with
 * their JSON paths, and the answer is 400 invalid_config), or another
 * -errno for any other failure (500 reload_failed with @msg).
 */
typedef int (*admin_reload_fn)(void *arg, char *msg, size_t msg_len);

struct admin_deps {
    /* Borrowed, read only during admin_start: admin.listen (fixed for the
     * admin's lifetime), admin.token and the peers are copied. */
    const struct config *cfg;
    struct spool *spool;   /* borrowed; must outlive the admin */
    admin_reload_fn reload; /* NULL: POST /v1/reload answers 501 */
    void *reload_arg;
    unsigned threads;      /* pool size; 0: 2 */
};

/**
 * Open the admin's spool reader and start listening on
 * @deps->cfg->admin.listen. Returns the admin, or NULL with a message in
 * @err ("listen 127.0.0.1:8081: Address already in use"); nothing is left
 * running on failure. The spool writer should be running (replays and
 * purges answer 503 until it is).
 */
struct admin *admin_start(const struct admin_deps *deps, char *err,
                          size_t err_len);

/** The bound port (useful with port 0). */
uint16_t admin_port(struct admin *a);

/**
 * Adopt the token and the peers of @cfg (borrowed, read only during the
 * call) for the requests that start from now on; any thread, including
 * the reload callback. The listen address does not change. Returns 0, or
 * -ENOMEM with the previous view kept.
 */
int admin_set_config(struct admin *a, const struct config *cfg);

/**
 * Stop listening, waiting for the requests in progress (a replay or purge
 * may wait for a spool commit), close the reader and free. Call before
 * spool_close(); before or after spool_stop() (from then on replays and
 * purges answer 503). NULL-safe.
 */
void admin_stop(struct admin *a);

#endif
