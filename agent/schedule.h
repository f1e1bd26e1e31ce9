/*
 * schedule: scheduled events, the config's "schedules".
 *
 *     { "name": "tick", "cron": "*\/5 * * * *",
 *       "event": { "type": "com.example.tick", "source": "/ferry/tick",
 *                  "data": {} } }
 *
 * Each schedule produces one event per slot of its "cron" expression (the
 * syntax is in cron.h: five fields in UTC, "@every <duration>", @hourly and
 * the other macros). The event is the template "event" with three
 * attributes set by Ferry:
 *   - id:          "<name>-<slot as RFC 3339>", e.g.
 *                  "tick-2026-01-02T03:05:00Z" (replaces any in the
 *                  template), so the id is the same wherever and however
 *                  often the slot is computed, and dedupe catches repeats;
 *   - time:        the slot, RFC 3339 (replaces any in the template);
 *   - specversion: "1.0" unless the template has one.
 * It is validated like an ingested event, routed by the routes like one,
 * stored through spool_submit and counted as
 * ferry_events_received_total{mode="schedule"}.
 *
 * Exactly once. The spool keeps each schedule's last fired slot (table
 * schedules), written by the spool writer in the same transaction as the
 * slot's event (spool_event.schedule). An event whose slot is not later
 * than the recorded one is refused as a duplicate. So a slot is durable
 * with its event or not at all, a crash or kill -9 can neither repeat a
 * recorded slot nor lose one after it was recorded, and two schedulers
 * racing on one spool (a reload) cannot both fire it.
 *
 * Missed slots. When Ferry was down (or the spool refused the event), the
 * slots that passed meanwhile are missed. The most recent of them fires
 * once (never one event per missed slot) if it is at most the grace period
 * old: 5 minutes, or the interval of an "@every" schedule when that is
 * shorter. Older missed slots are skipped and logged at info. A failed
 * submission (spool full, disk error) is retried every second while its
 * slot is within the grace period.
 *
 * New schedules. A schedule whose name the spool has never seen fire
 * starts from the moment the scheduler starts: nothing is backfilled. The
 * last slot is kept per name, so renaming a schedule makes it new, and a
 * changed expression under the same name continues after the last slot.
 *
 * DESIGN
 * One scheduler thread per struct schedule. It computes every schedule's
 * next slot, sleeps on a condition variable until the earliest one (an
 * absolute CLOCK_REALTIME deadline, so a stepped wall clock moves the
 * wake-up with it; at most a minute at a time as a safeguard), and is woken
 * early only by schedule_stop. When slots are due it builds, routes and
 * submits their events one at a time and waits for each commit before
 * recording the slot in memory; ingest never waits for it, it only shares
 * the writer's group commits. The schedules, the cron expressions and the
 * in-memory last slots belong to that thread (to the caller while it is
 * not running); the config is borrowed immutable, with a reference held.
 * A reload builds a new struct schedule on the new config: stop the old
 * one (its last submission is then committed), start the new one, which
 * reads the recorded slots from the spool.
 */
#ifndef FERRY_SCHEDULE_H
#define FERRY_SCHEDULE_H

#include <stdint.h>
#include <stddef.h>

#include "config.h"
#include "spool.h"

/* The grace period for missed slots (see above). */
#define SCHEDULE_GRACE_MS (5 * 60 * 1000LL)
/* How soon a slot whose event the spool refused is tried again. */
#define SCHEDULE_RETRY_MS 1000LL

struct schedule;

struct schedule_deps {
    struct config *cfg;  /* a reference is taken */
    struct spool *spool; /* must outlive the scheduler; its writer must run
                          * while the scheduler does */
    /* Wall clock in ms. NULL: clock_wall_ms. Tests inject time here. */
    int64_t (*clock_ms)(void *arg);
    void *clock_arg;
};

/**
 * Check what config.c leaves to this module: each schedule's "cron"
 * (cron_parse) and that its template makes a valid CloudEvent. Appends
 * "schedules[i].cron: MESSAGE" / "schedules[i].event: MESSAGE" errors to
 * @errs. Returns 0, or -EINVAL when it added any.
 */
int schedule_check_config(const struct config *cfg,
                          struct config_errors *errs);

/**
 * A scheduler for @deps->cfg's schedules (none is fine: then start runs
 * no thread). Returns NULL with a message in @err ("schedules[0].cron:
 * ..." or out of memory). Nothing runs until schedule_start.
 */
struct schedule *schedule_create(const struct schedule_deps *deps, char *err,
                                 size_t err_len);

/**
 * Read every schedule's recorded last slot from the spool (schedule_load)
 * and start the thread. Returns 0, -EALREADY, or -errno (then nothing
 * runs). Restartable after schedule_stop.
 */
int schedule_start(struct schedule *s);

/**
 * Stop the thread: wakes it, lets a submission in flight commit, joins.
 * Afterwards nothing of @s is queued to the spool. Idempotent; NULL-safe.
 */
void schedule_stop(struct schedule *s);

/** Stop (if needed) and free; drops the config reference. NULL-safe. */
void schedule_destroy(struct schedule *s);

/* ---- the thread's steps, for tests (call only while it does not run) ---- */

/**
 * Load the recorded last slots through a new spool reader; a schedule
 * never fired starts from the clock's now. 0 or -errno.
 */
int schedule_load(struct schedule *s);

/**
 * At the clock's now: fire (submit and wait for the commit) each
 * schedule's due slot, skip what is too old. Returns the wall ms at which
 * something is next due (CRON_NEVER when nothing ever will be).
 */
int64_t schedule_tick(struct schedule *s);

#endif
