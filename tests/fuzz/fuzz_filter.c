/*
 * fuzz_filter: a route filter and an event, split at the input's first
 * NUL byte:
 *
 *     FILTER-JSON \0 EVENT-JSON
 *
 * The filter is parsed as the config loader parses a route's "filter"
 * (JSON without duplicate keys, then filter_parse) and matched the way
 * ingest routes (filter_match over event_attr). The event is a structured
 * event when event_from_structured accepts it; otherwise any JSON object,
 * looked up through the same event_attr, so matching sees odd values too.
 *
 * Checks: a refused filter reports an error; filter_to_json prints what
 * filter_parse reads back into a filter that matches the same way; and
 * {"not": F} matches exactly when F does not.
 */
#include <string.h>

#include <jansson.h>

#include "config.h"
#include "filter.h"
#include "fuzz.h"

static const char *lookup_attr(void *arg, const char *attr, char *scratch,
                               size_t scratch_len)
{
    return event_attr(arg, attr, scratch, scratch_len);
}

static struct filter *parse_filter(json_t *j, bool must_parse)
{
    struct config_errors errs;
    config_errors_init(&errs);
    struct filter *f = filter_parse(j, "routes[0].filter", &errs);
    FUZZ_CHECK(f || errs.n > 0, "filter_parse refused without an error");
    FUZZ_CHECK(!f || errs.n == 0, "filter_parse accepted with %zu errors",
               errs.n);
    FUZZ_CHECK(f || !must_parse, "filter_to_json output does not parse: %s",
               errs.items[0]);
    config_errors_free(&errs);
    return f;
}

static void check_filter(const struct filter *f, json_t *j,
                         const struct event *ev)
{
    bool match = filter_match(f, lookup_attr, (void *)(uintptr_t)ev);

    json_t *printed = filter_to_json(f);
    FUZZ_CHECK(printed, "filter_to_json failed");
    struct filter *again = parse_filter(printed, true);
    FUZZ_CHECK(filter_match(again, lookup_attr, (void *)(uintptr_t)ev) == match,
               "printed filter matches differently");
    json_t *printed2 = filter_to_json(again);
    FUZZ_CHECK(json_equal(printed, printed2), "filter_to_json not stable");
    json_decref(printed2);
    json_decref(printed);
    filter_destroy(again);

    /* Negation, one level deeper: may pass FILTER_MAX_DEPTH, then refused. */
    json_t *neg = json_pack("{s:O}", "not", j);
    FUZZ_CHECK(neg, "json_pack failed");
    struct filter *nf = parse_filter(neg, false);
    if (nf)
        FUZZ_CHECK(filter_match(nf, lookup_attr, (void *)(uintptr_t)ev) == !match,
                   "{\"not\": F} matches when F does");
    filter_destroy(nf);
    json_decref(neg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    const char *nul = memchr(in, '\0', size);
    size_t flen = nul ? (size_t)(nul - in) : size;
    const char *etext = nul ? nul + 1 : "";
    size_t elen = nul ? size - flen - 1 : 0;

    json_t *fj = json_loadb(in, flen, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
    if (!fj)
        return 0;

    struct event ev;
    struct ce_error err;
    memset(&err, 0, sizeof(err));
    bool structured = event_from_structured(etext, elen, &ev, &err) == 0;
    if (!structured) {
        memset(&ev, 0, sizeof(ev));
        ev.obj = json_loadb(etext, elen, JSON_DECODE_ANY, NULL);
        if (!json_is_object(ev.obj)) {
            json_decref(ev.obj);
            ev.obj = json_object(); /* an event without attributes */
        }
    }

    struct filter *f = parse_filter(fj, false);
    if (f)
        check_filter(f, fj, &ev);
    filter_destroy(f);
    json_decref(fj);
    event_free(&ev);
    return 0;
}
