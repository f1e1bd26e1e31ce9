/*
 * fuzz_batch: one batch-mode request body
 * (Content-Type: application/cloudevents-batch+json), as ingest hands it to
 * event_batch_from_json() with the default ingest.max_batch; every event of
 * an accepted batch then goes through fuzz_check_event.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

/* ingest.max_batch's default (config.c); max_len keeps inputs under it
 * mostly, and a seed of 1001 events exercises the limit. */
#define MAX_BATCH 1000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct event *evs = NULL;
    size_t n = 0;
    struct ce_error err;
    memset(&err, 0, sizeof(err));
    int rc = event_batch_from_json((const char *)data, size, MAX_BATCH, &evs,
                                   &n, &err);
    if (rc != 0) {
        fuzz_check_refusal(rc, &err);
        FUZZ_CHECK(!evs && n == 0, "refused batch still returns events");
        return 0;
    }
    FUZZ_CHECK(evs && n <= MAX_BATCH, "accepted batch: %zu events", n);
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(evs[i].format == EVENT_STRUCTURED,
                   "batch event %zu of format %d", i, (int)evs[i].format);
        fuzz_check_event(&evs[i]);
        event_free(&evs[i]);
    }
    free(evs);
    return 0;
}
