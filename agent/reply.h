/*
 * reply: a peer's answer that is itself a CloudEvent becomes a new event.
 * Deliveries say "Prefer: reply"; a 2xx answer other than 202 and 204
 * (peer_http.c keeps only those, see struct peer_reply) whose body is a
 * structured-mode event (Content-Type application/cloudevents+json) or
 * whose headers are a binary-mode event (ce-specversion, ce-id or ce-type)
 * is read and validated like an ingested event, routed with the config the
 * dispatcher runs, and queued to the spool writer like an ingested one
 * (dedupe included). A binary event may have an empty body (no data).
 *
 * The delivery that was answered succeeded whatever happens to its reply:
 * an invalid reply is logged and dropped. The reply is queued before the
 * delivery's outcome is posted, so it is durable no later than that
 * outcome (the writer commits both queues together); if the spool refuses
 * it (full, shutting down) it is logged at warn and lost.
 *
 * Loops: a reply routed back to the peer that sent it, which replies
 * again, would circulate for ever (with new ids each time, dedupe does not
 * stop it). Routes decide where replies go; give replies their own type
 * and route that type elsewhere.
 *
 * Threading: reply_parse is pure; reply_submit runs on the dispatcher
 * thread and its completion on the spool writer thread.
 */
#ifndef FERRY_REPLY_H
#define FERRY_REPLY_H

#include <stdint.h>

#include "config.h"
#include "event.h"
#include "peer.h"
#include "spool.h"

/**
 * Read @r as a CloudEvent. Returns 1 with @ev filled (free with
 * event_free; a binary event borrows r->body, which must outlive it), 0
 * when @r is no CloudEvent (a plain answer: nothing to do), or -EINVAL
 * with @err->message saying why it is an invalid one (also when it was
 * over PEER_REPLY_MAX, or a batch), or -ENOMEM.
 */
int reply_parse(const struct peer_reply *r, struct event *ev,
                struct ce_error *err);

/**
 * Route @ev (taken, as reply_parse filled it) with @cfg (borrowed for the
 * call only) and queue it to @spool, received at @now_ms (wall). @r is
 * taken too: it holds the body a binary @ev borrows. @from names the peer
 * that replied, for logs. Everything is freed once the writer is done
 * with it (or before returning on failure).
 * Returns the number of peers the reply goes to (0: no route matched; it
 * is dropped, as ingest drops such events), or -ENOMEM / -ESHUTDOWN.
 */
long reply_submit(struct spool *spool, const struct config *cfg,
                  struct event *ev, struct peer_reply *r, const char *from,
                  int64_t now_ms);

#endif
