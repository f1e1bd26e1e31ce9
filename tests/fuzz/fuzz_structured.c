/*
 * fuzz_structured: one structured-mode request body
 * (Content-Type: application/cloudevents+json), as ingest hands it to
 * event_from_structured(); whatever is accepted then goes through routing,
 * the spool round trip and both delivery modes (fuzz_check_event).
 */
#include <string.h>

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct event ev;
    struct ce_error err;
    memset(&err, 0, sizeof(err));
    int rc = event_from_structured((const char *)data, size, &ev, &err);
    if (rc != 0) {
        fuzz_check_refusal(rc, &err);
        FUZZ_CHECK(strcmp(err.code, "too_large") != 0, "too_large for one event");
        FUZZ_CHECK(!ev.obj && !ev.text, "refused event still owns memory");
        return 0;
    }
    FUZZ_CHECK(ev.format == EVENT_STRUCTURED, "structured event of format %d",
               (int)ev.format);
    fuzz_check_event(&ev);
    event_free(&ev);
    return 0;
}
