/*
 * event: the CloudEvent as Ferry holds it, read from the three HTTP content
 * modes on ingest and written in structured or binary mode on delivery.
 *
 * One representation serves both directions:
 *   - STRUCTURED: @obj is the whole event object (attributes plus "data" or
 *     "data_base64"); @text is its one-line JSON text.
 *   - BINARY: @obj holds only the attributes; @data/@data_len is the body;
 *     @text is the JSON text of the attributes.
 * @text/@data are what the spool stores, so ingest serialises once and
 * delivery of a structured event to a structured peer sends @text as is.
 *
 * Pure module: no I/O, no threads. jansson values are noted new/borrowed.
 */
#ifndef FERRY_EVENT_H
#define FERRY_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

#include "buf.h"

enum event_format { EVENT_STRUCTURED = 0, EVENT_BINARY = 1 };

struct event {
    enum event_format format;
    json_t *obj;     /* owned reference (see above) */
    char *text;      /* owned, NUL-terminated */
    size_t text_len;
    const char *data; /* BINARY only: the data bytes; owned iff data_owned */
    size_t data_len;
    bool data_owned;
    /* STRUCTURED, from event_load() only: the "data" member's JSON text
     * inside @text, left out of @obj (NULL when @obj has it, or none). */
    const char *data_json;
    size_t data_json_len;
    /* From event_load() only: @obj is not parsed yet (NULL). The first
     * reader that needs it parses it; event_attr() first tries a scan of
     * @text that needs no parse. Not thread-safe: one owner at a time. */
    bool attrs_deferred;
};

/**
 * Why an event or request was refused: the contract's error JSON fields.
 * @code is a static string ("invalid_json", "invalid_event", "too_large").
 * @index is the position in a batch, or -1. @attribute is "" when none.
 */
struct ce_error {
    const char *code;
    long index;
    char attribute[64];
    char message[256];
};

void ce_error_set(struct ce_error *err, const char *code, long index,
                  const char *attribute, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/** An HTTP header as received (name as sent, value raw). */
struct http_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* ---- ingest ---------------------------------------------------------- */

/**
 * Parse one structured-mode event (application/cloudevents+json) and
 * validate it. On success @ev owns its object and text; @body is not kept.
 * Returns 0, or -EINVAL with @err filled (invalid_json / invalid_event).
 */
int event_from_structured(const char *body, size_t len, struct event *ev,
                          struct ce_error *err);

/**
 * Parse a batch (application/cloudevents-batch+json): a JSON array of
 * structured events, at most @max_batch of them (more is "too_large").
 * All or nothing: on success *@evs is a new array of *@n events (free each
 * with event_free, then free the array); on failure nothing is returned and
 * @err names the first bad event's index. An empty array is valid (n = 0).
 */
int event_batch_from_json(const char *body, size_t len, size_t max_batch,
                          struct event **evs, size_t *n, struct ce_error *err);

/**
 * Build a binary-mode event from the request's ce-* headers (values are
 * percent-decoded per the HTTP binding and must be valid UTF-8), its
 * Content-Type (becomes datacontenttype; may be NULL) and body. Non ce-
 * headers are ignored. @body is borrowed: it must outlive @ev (ingest keeps
 * the request body until the spool commit). Returns 0 or -EINVAL with @err.
 */
int event_from_binary(const struct http_header *headers, size_t n_headers,
                      const char *content_type, const char *body, size_t len,
                      struct event *ev, struct ce_error *err);

/* ---- attributes (routing, logs) --------------------------------------- */

/**
 * The attribute object of @ev (borrowed), parsed now if event_load()
 * deferred it; NULL if that parse fails (a stored text that is not
 * valid). Not thread-safe on a deferred event: one owner at a time.
 */
json_t *event_attrs(const struct event *ev);

/**
 * The value of attribute @name as a string, or NULL when absent. String
 * attributes are returned as is (borrowed from @ev->obj); integers and
 * booleans are formatted into @scratch (canonical CloudEvents string form).
 * "data" and "data_base64" are not attributes.
 */
const char *event_attr(const struct event *ev, const char *name,
                       char *scratch, size_t scratch_len);

/**
 * Set attribute @name (an extension, e.g. "traceparent") to the string
 * @value unless the event already has it, and re-serialise @ev->text.
 * For context carried outside the event (trace headers on the request).
 * Returns 1 when set, 0 when already present, -EINVAL for a bad name or
 * value (not valid UTF-8, control characters), -ENOMEM.
 */
int event_add_attr(struct event *ev, const char *name, const char *value);

/* ---- delivery -------------------------------------------------------- */

/**
 * Rebuild an event from what the spool stored. Copies @text; @data is
 * borrowed (the dispatcher keeps it for the delivery's lifetime).
 * Returns 0, -EINVAL for unreadable text, -ENOMEM.
 */
int event_load(enum event_format format, const char *text, size_t text_len,
               const void *data, size_t data_len, struct event *ev);

/**
 * The event in structured mode, one line of JSON, appended to @out.
 * For a STRUCTURED event this is @text itself. Returns 0 or -ENOMEM/-E2BIG.
 */
int event_to_structured(const struct event *ev, struct buf *out);

/** Called once per header by event_binary_headers(). */
typedef int (*event_header_cb)(void *arg, const char *name, const char *value);

/**
 * The event in binary mode: calls @cb for "ce-<attr>" headers (values
 * percent-encoded per the HTTP binding) and "Content-Type" (from
 * datacontenttype, application/json for JSON data without one), then sets
 * *@body and *@body_len to the data, appended to @scratch when it must be
 * decoded (data_base64) or serialised (JSON data). Stops at the first
 * non-zero @cb return and returns it; otherwise 0, -ENOMEM or -EINVAL.
 */
int event_binary_headers(const struct event *ev, event_header_cb cb, void *arg,
                         struct buf *scratch, const char **body,
                         size_t *body_len);

/** Release what @ev owns; @ev is zeroed. NULL-safe. */
void event_free(struct event *ev);

#endif
