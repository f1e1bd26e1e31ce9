/*
 * filter: the CloudEvents Subscriptions API filter dialects (exact, prefix,
 * suffix, all, any, not), parsed from a route's "filter" object into the
 * struct filter tree that config.h defines, and matched against an event.
 *
 * Matching knows nothing about the event type: the caller passes a lookup
 * function that returns an attribute's value as a string. Matching never
 * allocates (it runs on the ingest hot path) and its recursion is bounded
 * by FILTER_MAX_DEPTH, which filter_parse() enforces.
 *
 * Pure module: no I/O, no threads. A parsed filter is immutable and may be
 * matched from any thread.
 */
#ifndef FERRY_FILTER_H
#define FERRY_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

#include "config.h"

/** The deepest nesting of filter objects filter_parse() accepts. */
#define FILTER_MAX_DEPTH 32

/** The size of the scratch buffer filter_match() hands to the lookup. */
#define FILTER_SCRATCH_LEN 256

/**
 * Returns the value of attribute @attr (a lower-case CloudEvents attribute
 * name such as "type" or an extension) as a NUL-terminated string, or NULL
 * when the event does not have it. A value that is not stored as a string
 * may be rendered into @scratch (@scratch_len bytes) and returned from
 * there. The result need only stay valid until the next call.
 */
typedef const char *(*filter_lookup_fn)(void *arg, const char *attr,
                                        char *scratch, size_t scratch_len);

/**
 * Parse one filter object (@j, borrowed) found at JSON path @path, e.g.
 * "routes[0].filter". Returns a new filter tree (free with filter_destroy),
 * or NULL with at least one "path: message" appended to @errs; every
 * problem in the object is reported, not just the first.
 */
struct filter *filter_parse(json_t *j, const char *path,
                            struct config_errors *errs);

/** Free a filter tree. NULL-safe. */
void filter_destroy(struct filter *f);

/**
 * True when the event seen through @get/@arg matches @f. A NULL filter
 * matches every event. An absent attribute never satisfies exact, prefix
 * or suffix; values compare case-sensitively. Allocates nothing.
 */
bool filter_match(const struct filter *f, filter_lookup_fn get, void *arg);

/**
 * The filter as JSON in the dialect syntax filter_parse() reads (for the
 * config dump). Returns a new reference, or NULL on -ENOMEM.
 */
json_t *filter_to_json(const struct filter *f);

#endif
