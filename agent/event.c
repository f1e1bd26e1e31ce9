/*
 * event: CloudEvents in and out of Ferry (see event.h) - the JSON event
 * format and the HTTP binding's structured, batch and binary modes.
 *
 * Ingest is the hot path, so each structured event is parsed once
 * (json_loadb) and, when the body is already a single line, stored as the
 * received bytes instead of being serialised again. Binary-mode header
 * values without a '%' go straight into jansson without a decode copy.
 *
 * Delivery never builds a second JSON tree for the whole event: structured
 * output of a binary event splices the data member into the stored
 * attribute text, and binary output of a structured event streams header
 * values and the body through the caller's scratch buffer.
 *
 * Pure module: no I/O, no threads.
 */
#include "event.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hdrcode.h"
#include "jsoncheck.h"
#include "validate.h"

/* Longest attribute name we ever emit as a header: the spec's 20 chars. */
#define HEADER_NAME_MAX 64

/*
 * The message and attribute go back to the client inside a JSON string,
 * which must be valid UTF-8, or the whole answer degrades to
 * {"error":"internal"}. They can quote the sender's bytes (a header name,
 * jansson's "near '...'") and truncation can cut a sequence, so every byte
 * that is not part of a valid UTF-8 sequence becomes '?'.
 */
static void make_utf8(char *s)
{
    size_t len = strlen(s);
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        if (n <= len - i && utf8_valid(s + i, n)) {
            i += n;
            continue;
        }
        s[i++] = '?';
    }
}

void ce_error_set(struct ce_error *err, const char *code, long index,
                  const char *attribute, const char *fmt, ...)
{
    err->code = code;
    err->index = index;
    size_t n = attribute ? strnlen(attribute, sizeof(err->attribute) - 1) : 0;
    if (n)
        memcpy(err->attribute, attribute, n);
    err->attribute[n] = '\0';
    make_utf8(err->attribute);

    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    make_utf8(err->message);
}

static void truncate_to(struct buf *b, size_t len)
{
    b->len = len;
    if (b->data)
        b->data[len] = '\0';
}

static int out_of_memory(struct ce_error *err)
{
    ce_error_set(err, "unavailable", -1, NULL, "out of memory");
    return -ENOMEM;
}

/* ---- media types ------------------------------------------------------ */

/* The media type without parameters or surrounding blanks. */
static size_t essence(const char *ct, const char **start)
{
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    *start = ct;
    return n;
}

static bool ci_equals(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && strncasecmp(s, lit, n) == 0;
}

static bool ci_ends_with(const char *s, size_t n, const char *lit)
{
    size_t k = strlen(lit);
    return n >= k && strncasecmp(s + n - k, lit, k) == 0;
}

static bool is_json_type(const char *ct)
{
    const char *s;
    size_t n = essence(ct, &s);
    return ci_equals(s, n, "application/json") ||
           ci_equals(s, n, "text/json") || ci_ends_with(s, n, "+json");
}

/* Types whose UTF-8 content reads better as a JSON string than base64. */
static bool is_text_type(const char *ct)
{
    const char *s;
    size_t n = essence(ct, &s);
    return (n > 5 && strncasecmp(s, "text/", 5) == 0) || is_json_type(ct) ||
           ci_equals(s, n, "application/xml") || ci_ends_with(s, n, "+xml");
}

/* The string value of @name in @obj, or NULL when absent or not a string. */
static const char *string_attr(const json_t *obj, const char *name)
{
    return json_string_value(json_object_get(obj, name));
}

/* ---- ingest: structured and batch ------------------------------------- */

/*
 * JSON text never holds a NUL byte outside a string (and jansson refuses
 * it inside one), but jansson skips one that follows a number or a
 * literal: {"n":1\0} parses. Structured mode keeps the body's bytes as the
 * stored text, so such a body would reach peers as is. Refuse it here.
 */
static int refuse_nul(const char *body, size_t len, struct ce_error *err)
{
    const char *nul = memchr(body, '\0', len);
    if (!nul)
        return 0;
    int line = 1;
    const char *bol = body;
    for (const char *p = body; p < nul; p++)
        if (*p == '\n') {
            line++;
            bol = p + 1;
        }
    ce_error_set(err, "invalid_json", -1, NULL,
                 "invalid JSON at line %d, column %d: NUL byte",
                 line, (int)(nul - bol) + 1);
    return -EINVAL;
}

static int parse_json(const char *body, size_t len, json_t **out,
                      struct ce_error *err)
{
    json_error_t jerr;
    *out = NULL;
    if (refuse_nul(body, len, err))
        return -EINVAL;
    *out = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
                      &jerr);
    if (*out)
        return 0;
    if (json_error_code(&jerr) == json_error_out_of_memory)
        return out_of_memory(err);
    ce_error_set(err, "invalid_json", -1, NULL,
                 "invalid JSON at line %d, column %d: %s", jerr.line,
                 jerr.column, jerr.text);
    return -EINVAL;
}

static int dump_text(const json_t *obj, struct event *ev)
{
    ev->text = json_dumps(obj, JSON_COMPACT);
    if (!ev->text)
        return -ENOMEM;
    ev->text_len = strlen(ev->text);
    return 0;
}

/*
 * A body without line breaks is already one line of valid JSON, so keep
 * its bytes (minus the blanks around it) instead of serialising again.
 */
static int keep_text(const char *body, size_t len, const json_t *obj,
                     struct event *ev)
{
    if (memchr(body, '\n', len) || memchr(body, '\r', len))
        return dump_text(obj, ev);
    while (len > 0 && (*body == ' ' || *body == '\t')) {
        body++;
        len--;
    }
    while (len > 0 && (body[len - 1] == ' ' || body[len - 1] == '\t'))
        len--;
    ev->text = malloc(len + 1);
    if (!ev->text)
        return -ENOMEM;
    memcpy(ev->text, body, len);
    ev->text[len] = '\0';
    ev->text_len = len;
    return 0;
}

/* Where a top-level member of an object's text is (see find_member). */
struct member_pos {
    size_t val, val_end, cut_from, cut_to;
};

static int find_member(const char *s, size_t n, const char *name,
                       struct member_pos *m);

/*
 * The attributes of the event object s[0..n), parsed without its "data"
 * member, with the member's value in [*val, *val_end). The data is most
 * of an event and is never needed parsed: ingest stores the text, and
 * delivery sends the text as it is (structured) or the member's text
 * (binary). NULL when there is no such member or the text needs the full
 * parse; the caller then parses it whole. Only for text jsoncheck() has
 * passed, or that the spool stored after it did: it is valid JSON without
 * duplicate keys, so the rest is too.
 */
static json_t *checked_attributes(const char *s, size_t n, size_t *val,
                                  size_t *val_end)
{
    struct member_pos pos;
    if (find_member(s, n, "data", &pos) != 1)
        return NULL;
    size_t from = pos.cut_from, to = pos.cut_to, m = n - (to - from);
    *val = pos.val;
    *val_end = pos.val_end;
    char stack[2048];
    char *attrs = m < sizeof(stack) ? stack : malloc(m + 1);
    if (!attrs)
        return NULL;
    memcpy(attrs, s, from);
    memcpy(attrs + from, s + to, n - to);
    json_t *obj = json_loadb(attrs, m, 0, NULL);
    if (attrs != stack)
        free(attrs);
    if (obj && !json_is_object(obj)) {
        json_decref(obj);
        obj = NULL;
    }
    return obj;
}

/*
 * Validate the event object @obj (parsed from @text, or from @text less
 * its data member when @split) and keep it and its text in @ev.
 */
static int take_structured(json_t *obj, bool split, const char *text,
                           size_t len, long index, struct event *ev,
                           struct ce_error *err)
{
    if (!json_is_object(obj)) {
        if (index < 0)
            ce_error_set(err, "invalid_event", -1, NULL,
                         "a structured-mode event must be a JSON object");
        else
            ce_error_set(err, "invalid_event", index, NULL,
                         "batch element %ld is not a JSON object", index);
        return -EINVAL;
    }
    int rc = validate_event(obj, true, index, err);
    if (rc)
        return rc;
    /* The one check validate_event() cannot make without the data. */
    if (split && json_object_get(obj, "data_base64")) {
        ce_error_set(err, "invalid_event", index, "data_base64",
                     "\"data\" and \"data_base64\" must not both be present");
        return -EINVAL;
    }
    if (keep_text(text, len, obj, ev))
        return out_of_memory(err);
    ev->format = EVENT_STRUCTURED;
    ev->obj = json_incref(obj);
    return 0;
}

/*
 * One event object s[0..n), already checked by jsoncheck(): the attributes
 * alone go through jansson, the data stays text. Returns 1 when it did not
 * apply (no data member, or an unusual text): parse the whole event.
 */
static int structured_fast(const char *s, size_t n, long index,
                           struct event *ev, struct ce_error *err)
{
    /* keep_text() would serialise a text with line breaks again, which
     * needs the data parsed. */
    if (memchr(s, '\n', n) || memchr(s, '\r', n))
        return 1;
    size_t val, val_end;
    json_t *obj = checked_attributes(s, n, &val, &val_end);
    if (!obj)
        return 1;
    int rc = take_structured(obj, true, s, n, index, ev, err);
    json_decref(obj);
    if (rc == 0) { /* kept as received, less leading blanks */
        size_t lead = 0;
        while (lead < n && (s[lead] == ' ' || s[lead] == '\t'))
            lead++;
        ev->data_json = ev->text + (val - lead);
        ev->data_json_len = val_end - val;
    }
    return rc;
}

int event_from_structured(const char *body, size_t len, struct event *ev,
                          struct ce_error *err)
{
    memset(ev, 0, sizeof(*ev));
    if (refuse_nul(body, len, err))
        return -EINVAL;
    /* Most of an event is its data: check it without building it. */
    if (jsoncheck(body, len) == 0) {
        int rc = structured_fast(body, len, -1, ev, err);
        if (rc <= 0) {
            if (rc)
                event_free(ev);
            return rc;
        }
    }
    json_t *obj;
    int rc = parse_json(body, len, &obj, err);
    if (rc)
        return rc;
    rc = take_structured(obj, false, body, len, -1, ev, err);
    json_decref(obj);
    if (rc)
        event_free(ev);
    return rc;
}

static int batch_element(json_t *elem, size_t i, struct event *ev,
                         struct ce_error *err)
{
    if (!json_is_object(elem)) {
        ce_error_set(err, "invalid_event", (long)i, NULL,
                     "batch element %zu is not a JSON object", i);
        return -EINVAL;
    }
    int rc = validate_event(elem, true, (long)i, err);
    if (rc)
        return rc;
    if (dump_text(elem, ev))
        return out_of_memory(err);
    ev->format = EVENT_STRUCTURED;
    ev->obj = json_incref(elem);
    return 0;
}

static void free_events(struct event *evs, size_t n)
{
    if (!evs)
        return;
    for (size_t i = 0; i < n; i++)
        event_free(&evs[i]);
    free(evs);
}

static size_t skip_ws(const char *s, size_t i, size_t n);
static size_t skip_value(const char *s, size_t i, size_t n);

/* One element s[0..n) of a checked batch, as event @index. */
static int batch_element_text(const char *s, size_t n, size_t index,
                              struct event *ev, struct ce_error *err)
{
    int rc = structured_fast(s, n, (long)index, ev, err);
    if (rc <= 0)
        return rc;
    json_t *obj = json_loadb(s, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
    if (!obj)
        return out_of_memory(err); /* the text was checked: only memory */
    rc = take_structured(obj, false, s, n, (long)index, ev, err);
    json_decref(obj);
    return rc;
}

/*
 * The batch @body, which jsoncheck() passed and which is an array starting
 * at @i, split into its elements without building the array. On failure
 * every event made so far is freed.
 */
static int batch_fast(const char *body, size_t len, size_t i, size_t max_batch,
                      struct event **evs, size_t *n, struct ce_error *err)
{
    size_t count = 0, first = skip_ws(body, i + 1, len);
    for (size_t j = first; j < len && body[j] != ']';) {
        count++;
        j = skip_ws(body, skip_value(body, j, len), len);
        if (j < len && body[j] == ',')
            j = skip_ws(body, j + 1, len);
    }
    if (count > max_batch) {
        ce_error_set(err, "too_large", -1, NULL,
                     "batch has %zu events; the limit is %zu", count,
                     max_batch);
        return -EINVAL;
    }
    struct event *list = calloc(count ? count : 1, sizeof(*list));
    if (!list)
        return out_of_memory(err);
    int rc = 0;
    size_t k = 0;
    for (size_t j = first; rc == 0 && k < count; k++) {
        size_t end = skip_value(body, j, len);
        rc = batch_element_text(body + j, end - j, k, &list[k], err);
        j = skip_ws(body, end, len);
        if (j < len && body[j] == ',')
            j = skip_ws(body, j + 1, len);
    }
    if (rc) {
        free_events(list, count);
        return rc;
    }
    *evs = list;
    *n = count;
    return 0;
}

int event_batch_from_json(const char *body, size_t len, size_t max_batch,
                          struct event **evs, size_t *n, struct ce_error *err)
{
    struct event *list = NULL;
    size_t count = 0;
    *evs = NULL;
    *n = 0;

    if (refuse_nul(body, len, err))
        return -EINVAL;
    if (jsoncheck(body, len) == 0) {
        size_t i = skip_ws(body, 0, len);
        if (i < len && body[i] == '[')
            return batch_fast(body, len, i, max_batch, evs, n, err);
    }
    json_t *arr;
    int rc = parse_json(body, len, &arr, err);
    if (rc)
        return rc;
    if (!json_is_array(arr)) {
        ce_error_set(err, "invalid_event", -1, NULL,
                     "a batch must be a JSON array of events");
        rc = -EINVAL;
        goto out;
    }
    count = json_array_size(arr);
    if (count > max_batch) {
        ce_error_set(err, "too_large", -1, NULL,
                     "batch has %zu events; the limit is %zu", count,
                     max_batch);
        rc = -EINVAL;
        goto out;
    }
    /* Never NULL on success, even for an empty batch. */
    list = calloc(count ? count : 1, sizeof(*list));
    if (!list) {
        rc = out_of_memory(err);
        goto out;
    }
    for (size_t i = 0; i < count && rc == 0; i++)
        rc = batch_element(json_array_get(arr, i), i, &list[i], err);
    if (rc == 0) {
        *evs = list;
        *n = count;
        list = NULL;
    }
out:
    free_events(list, count);
    json_decref(arr);
    return rc;
}

/* ---- ingest: binary --------------------------------------------------- */

/*
 * The value of a ce- header as a JSON string. Values without escapes are
 * checked in place, which spares a copy for the common case.
 */
static int header_value(const char *v, size_t len, json_t **out)
{
    if (!memchr(v, '%', len)) {
        if (memchr(v, '\0', len) || !utf8_valid(v, len))
            return -EILSEQ;
        *out = json_stringn_nocheck(v, len);
        return *out ? 0 : -ENOMEM;
    }
    char *decoded;
    int rc = hdr_decode(v, len, &decoded);
    if (rc)
        return rc;
    *out = json_string_nocheck(decoded);
    free(decoded);
    return *out ? 0 : -ENOMEM;
}

static int bad_value(const struct http_header *h, const char *attr, int rc,
                     struct ce_error *err)
{
    if (rc == -ENOMEM)
        return out_of_memory(err);
    if (rc == -EINVAL)
        ce_error_set(err, "invalid_event", -1, attr,
                     "header \"%.*s\": attribute \"%s\" has a malformed "
                     "percent-encoding",
                     (int)h->name_len, h->name, attr);
    else
        ce_error_set(err, "invalid_event", -1, attr,
                     "header \"%.*s\": attribute \"%s\" is not valid UTF-8 "
                     "after percent-decoding (or contains NUL)",
                     (int)h->name_len, h->name, attr);
    return -EINVAL;
}

/* Lower-case the attribute part of a ce- header name; false if too long. */
static bool attr_from_header(const struct http_header *h, char *attr,
                             size_t size)
{
    size_t n = h->name_len - 3;
    bool fits = n < size;
    if (!fits)
        n = size - 1;
    for (size_t i = 0; i < n; i++) {
        char c = h->name[3 + i];
        attr[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    attr[n] = '\0';
    return fits;
}

static int check_header_name(const struct http_header *h, const char *attr,
                             bool fits, struct ce_error *err)
{
    /* The header's own length: a NUL inside the name must not shorten it. */
    size_t n = h->name_len - 3;
    if (strcmp(attr, "data") == 0 || strcmp(attr, "data_base64") == 0) {
        ce_error_set(err, "invalid_event", -1, attr,
                     "header \"%.*s\" is not allowed: in binary mode the "
                     "body is the data",
                     (int)h->name_len, h->name);
        return -EINVAL;
    }
    if (!fits || !validate_attr_name(attr, n)) {
        ce_error_set(err, "invalid_event", -1, attr,
                     "header \"%.*s\" does not name a valid attribute "
                     "(1-20 characters of a-z and 0-9 after \"ce-\")",
                     (int)h->name_len, h->name);
        return -EINVAL;
    }
    return 0;
}

static int add_header(json_t *obj, const struct http_header *h,
                      bool have_content_type, struct ce_error *err)
{
    if (h->name_len < 3 || strncasecmp(h->name, "ce-", 3) != 0)
        return 0;
    char attr[HEADER_NAME_MAX];
    bool fits = attr_from_header(h, attr, sizeof(attr));
    int rc = check_header_name(h, attr, fits, err);
    if (rc)
        return rc;
    /* The binding gives Content-Type precedence over ce-datacontenttype. */
    if (have_content_type && strcmp(attr, "datacontenttype") == 0)
        return 0;
    if (json_object_get(obj, attr)) {
        ce_error_set(err, "invalid_event", -1, attr,
                     "attribute \"%s\" is given more than once", attr);
        return -EINVAL;
    }
    json_t *v;
    rc = header_value(h->value, h->value_len, &v);
    if (rc)
        return bad_value(h, attr, rc, err);
    if (json_object_set_new_nocheck(obj, attr, v))
        return out_of_memory(err);
    return 0;
}

static int add_content_type(json_t *obj, const char *ct, struct ce_error *err)
{
    size_t n = strlen(ct);
    if (!utf8_valid(ct, n)) {
        ce_error_set(err, "invalid_event", -1, "datacontenttype",
                     "Content-Type is not valid UTF-8");
        return -EINVAL;
    }
    if (json_object_set_new_nocheck(obj, "datacontenttype",
                                    json_stringn_nocheck(ct, n)))
        return out_of_memory(err);
    return 0;
}

int event_from_binary(const struct http_header *headers, size_t n_headers,
                      const char *content_type, const char *body, size_t len,
                      struct event *ev, struct ce_error *err)
{
    memset(ev, 0, sizeof(*ev));
    /* An empty Content-Type says nothing; treat it like a missing one. */
    bool have_ct = content_type && *content_type;
    json_t *obj = json_object();
    if (!obj)
        return out_of_memory(err);

    int rc = 0;
    for (size_t i = 0; i < n_headers && rc == 0; i++)
        rc = add_header(obj, &headers[i], have_ct, err);
    if (rc == 0 && have_ct)
        rc = add_content_type(obj, content_type, err);
    if (rc == 0)
        rc = validate_event(obj, false, -1, err);
    if (rc)
        goto out;
    if (dump_text(obj, ev)) {
        rc = out_of_memory(err);
        goto out;
    }
    ev->format = EVENT_BINARY;
    ev->obj = obj;
    ev->data = len ? body : NULL;
    ev->data_len = len;
    ev->data_owned = false;
    obj = NULL;
out:
    json_decref(obj);
    return rc;
}

/* ---- attributes ------------------------------------------------------- */

/* The parse only fills a cache: @ev is logically unchanged, which is
 * why a const event may be written here. */
json_t *event_attrs(const struct event *ev)
{
    if (ev->attrs_deferred) {
        struct event *mut = (struct event *)(uintptr_t)ev;
        size_t val, val_end;
        mut->obj = checked_attributes(ev->text, ev->text_len, &val, &val_end);
        mut->attrs_deferred = false;
    }
    return ev->obj;
}

/*
 * event_attr() of a deferred event without parsing it: a top-level string
 * member with no escapes, copied to @scratch. 1: *@out is the answer
 * (NULL when there is no such member); 0: parse to know.
 */
static int attr_by_scan(const struct event *ev, const char *name,
                        char *scratch, size_t scratch_len, const char **out)
{
    struct member_pos m;
    int found = find_member(ev->text, ev->text_len, name, &m);
    if (found == 0) {
        *out = NULL;
        return 1;
    }
    if (found < 0 || !scratch || ev->text[m.val] != '"')
        return 0;
    size_t v = m.val, len = m.val_end - m.val - 2;
    if (len >= scratch_len || memchr(ev->text + v + 1, '\\', len))
        return 0;
    memcpy(scratch, ev->text + v + 1, len);
    scratch[len] = '\0';
    *out = scratch;
    return 1;
}

const char *event_attr(const struct event *ev, const char *name,
                       char *scratch, size_t scratch_len)
{
    if (strcmp(name, "data") == 0 || strcmp(name, "data_base64") == 0)
        return NULL;
    const char *scanned;
    if (ev->attrs_deferred &&
        attr_by_scan(ev, name, scratch, scratch_len, &scanned))
        return scanned;
    json_t *v = json_object_get(event_attrs(ev), name);
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_boolean(v))
        return json_is_true(v) ? "true" : "false";
    if (!json_is_integer(v) || !scratch)
        return NULL;
    int n = snprintf(scratch, scratch_len, "%" JSON_INTEGER_FORMAT,
                     json_integer_value(v));
    return n > 0 && (size_t)n < scratch_len ? scratch : NULL;
}

/* ---- delivery: load, structured output -------------------------------- */

/*
 * event_add_attr() for an event whose data stayed text (ev->data_json):
 * the member goes in right after the text's opening brace (an event
 * always has members, so a comma follows), and into @obj as usual.
 */
static int splice_attr(struct event *ev, const char *name, const char *value)
{
    if (ev->format != EVENT_STRUCTURED || ev->text_len == 0 ||
        ev->text[0] != '{')
        return -EINVAL;
    json_t *v = json_string(value);
    char *lit = v ? json_dumps(v, JSON_ENCODE_ANY) : NULL;
    size_t name_len = strlen(name), lit_len = lit ? strlen(lit) : 0;
    /* {"name":lit, + the rest after the brace */
    size_t add = name_len + lit_len + 4, len = ev->text_len + add;
    char *text = lit ? malloc(len + 1) : NULL;
    if (!text || json_object_set_new(ev->obj, name, json_incref(v)) != 0) {
        free(text);
        free(lit);
        json_decref(v);
        return -ENOMEM;
    }
    text[0] = '{';
    text[1] = '"';
    memcpy(text + 2, name, name_len);
    memcpy(text + 2 + name_len, "\":", 2);
    memcpy(text + 4 + name_len, lit, lit_len);
    text[add] = ',';
    memcpy(text + add + 1, ev->text + 1, ev->text_len); /* with the NUL */
    ev->data_json = text + (ev->data_json - ev->text) + add;
    free(ev->text);
    ev->text = text;
    ev->text_len = len;
    free(lit);
    json_decref(v);
    return 1;
}

int event_add_attr(struct event *ev, const char *name, const char *value)
{
    if (!validate_attr_name(name, strlen(name)) || !utf8_valid(value, strlen(value)))
        return -EINVAL;
    for (const unsigned char *p = (const unsigned char *)value; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return -EINVAL;
    if (json_object_get(event_attrs(ev), name))
        return 0;
    if (ev->data_json) /* @obj lacks the data: splice into @text instead */
        return splice_attr(ev, name, value);
    if (json_object_set_new(ev->obj, name, json_string(value)) != 0)
        return -ENOMEM;
    char *old = ev->text;
    if (dump_text(ev->obj, ev) != 0) {
        ev->text = old;
        json_object_del(ev->obj, name);
        return -ENOMEM;
    }
    free(old);
    return 1;
}

/* ---- loading a stored structured event without parsing its data ------- */

static size_t skip_ws(const char *s, size_t i, size_t n)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' ||
                     s[i] == '\r'))
        i++;
    return i;
}

/* Past the JSON string at @i (s[i] == '"'), or @n if it does not end. */
static size_t skip_string(const char *s, size_t i, size_t n)
{
    for (i++; i < n; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return n;
}

/* Past the JSON value at @i. The text was valid JSON when it was stored,
 * so this only has to find the end, not to check; @n if it runs out. */
static size_t skip_value(const char *s, size_t i, size_t n)
{
    if (i >= n)
        return n;
    if (s[i] == '"')
        return skip_string(s, i, n);
    if (s[i] == '{' || s[i] == '[') {
        size_t depth = 0;
        while (i < n) {
            char c = s[i];
            if (c == '"') {
                i = skip_string(s, i, n);
                continue;
            }
            if (c == '{' || c == '[')
                depth++;
            else if ((c == '}' || c == ']') && --depth == 0)
                return i + 1;
            i++;
        }
        return n;
    }
    while (i < n && !strchr(",}] \t\r\n", s[i]))
        i++;
    return i;
}

/*
 * Where the top-level member @name of the object @s is: its value in
 * [val, val_end), and the bytes to cut to remove it (the member and one
 * comma) in [cut_from, cut_to). Returns 1 when found, 0 when there is
 * none, -1 when the text is not as simple as that (an escaped key, say):
 * parse it whole. Stored texts passed ingest's duplicate-key check, so
 * the first match is the one.
 */
static int find_member(const char *s, size_t n, const char *name,
                       struct member_pos *m)
{
    size_t i = skip_ws(s, 0, n), prev_comma = 0, name_len = strlen(name);
    bool first = true;
    if (i >= n || s[i] != '{')
        return -1;
    for (i = skip_ws(s, i + 1, n); i < n && s[i] != '}';) {
        if (s[i] != '"')
            return -1;
        size_t key = i, key_end = skip_string(s, i, n);
        if (memchr(s + key, '\\', key_end - key))
            return -1;
        i = skip_ws(s, key_end, n);
        if (i >= n || s[i] != ':')
            return -1;
        size_t v = skip_ws(s, i + 1, n), v_end = skip_value(s, v, n);
        if (v_end >= n)
            return -1;
        i = skip_ws(s, v_end, n);
        bool last = i < n && s[i] == '}';
        if (!last && (i >= n || s[i] != ','))
            return -1;
        if (key_end - key == name_len + 2 &&
            memcmp(s + key + 1, name, name_len) == 0) {
            m->val = v;
            m->val_end = v_end;
            if (!last) { /* cut the member and the comma after it */
                m->cut_from = key;
                m->cut_to = skip_ws(s, i + 1, n);
            } else { /* the last one: cut the comma before it */
                m->cut_from = first ? key : prev_comma;
                m->cut_to = v_end;
            }
            return 1;
        }
        if (!last) {
            prev_comma = i;
            i = skip_ws(s, i + 1, n);
        }
        first = false;
    }
    return i < n ? 0 : -1;
}

int event_load(enum event_format format, const char *text, size_t text_len,
               const void *data, size_t data_len, struct event *ev)
{
    memset(ev, 0, sizeof(*ev));
    if (format != EVENT_STRUCTURED && format != EVENT_BINARY)
        return -EINVAL;
    /* A structured event whose data member can be found by a scan needs
     * no parse to be sent as it is (structured, batch): its attributes
     * are parsed only if something asks for them (see event_attrs()). */
    struct member_pos dm;
    bool split = format == EVENT_STRUCTURED &&
                 find_member(text, text_len, "data", &dm) == 1;
    json_t *obj = NULL;
    if (!split) {
        json_error_t jerr;
        obj = json_loadb(text, text_len, 0, &jerr);
        if (!obj)
            return json_error_code(&jerr) == json_error_out_of_memory
                       ? -ENOMEM
                       : -EINVAL;
        if (!json_is_object(obj)) {
            json_decref(obj);
            return -EINVAL;
        }
    }
    ev->text = malloc(text_len + 1);
    if (!ev->text) {
        json_decref(obj);
        return -ENOMEM;
    }
    memcpy(ev->text, text, text_len);
    ev->text[text_len] = '\0';
    ev->text_len = text_len;
    ev->format = format;
    ev->obj = obj;
    if (split) {
        ev->attrs_deferred = true;
        ev->data_json = ev->text + dm.val;
        ev->data_json_len = dm.val_end - dm.val;
    }
    if (format == EVENT_BINARY) {
        ev->data = data;
        ev->data_len = data ? data_len : 0;
    }
    return 0;
}

/* Append @s as a JSON string literal (quotes included). */
static int append_json_string(struct buf *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    int rc = buf_append(out, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < len && rc == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        char esc[6] = {'\\', (char)c, 0, 0, 0, 0};
        size_t n = 2;
        if (c < 0x20) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0x0F];
            n = 6;
        }
        rc = buf_append(out, s + run, i - run);
        if (rc == 0)
            rc = buf_append(out, esc, n);
        run = i + 1;
    }
    if (rc == 0)
        rc = buf_append(out, s + run, len - run);
    if (rc == 0)
        rc = buf_append(out, "\"", 1);
    return rc;
}

struct dump_ctx {
    struct buf *out;
    int rc;
};

static int dump_cb(const char *chunk, size_t size, void *arg)
{
    struct dump_ctx *ctx = arg;
    ctx->rc = buf_append(ctx->out, chunk, size);
    return ctx->rc ? -1 : 0;
}

/* Serialise @v compactly onto @out (any JSON value, one line). */
static int append_json(const json_t *v, struct buf *out)
{
    struct dump_ctx ctx = {out, 0};
    if (json_dump_callback(v, dump_cb, &ctx, JSON_COMPACT | JSON_ENCODE_ANY))
        return ctx.rc ? ctx.rc : -ENOMEM;
    return 0;
}

/* "data": <parsed JSON>; -EINVAL (nothing appended) if it is not JSON. */
static int append_json_data(const struct event *ev, struct buf *out)
{
    json_error_t jerr;
    json_t *v = json_loadb(ev->data, ev->data_len, JSON_DECODE_ANY, &jerr);
    if (!v)
        return json_error_code(&jerr) == json_error_out_of_memory ? -ENOMEM
                                                                  : -EINVAL;
    int rc = buf_puts(out, "\"data\":");
    if (rc == 0)
        rc = append_json(v, out);
    json_decref(v);
    return rc;
}

static int append_data(const struct event *ev, struct buf *out)
{
    const char *ct = string_attr(event_attrs(ev), "datacontenttype");
    if (ct && is_json_type(ct)) {
        int rc = append_json_data(ev, out);
        if (rc != -EINVAL)
            return rc;
    }
    /* Text with a NUL byte goes as base64: "\u0000" is valid JSON, but
     * jansson (so Ferry's own ingest) and PostgreSQL's jsonb refuse it. */
    if ((!ct || is_text_type(ct)) && utf8_valid(ev->data, ev->data_len) &&
        !memchr(ev->data, '\0', ev->data_len)) {
        int rc = buf_puts(out, "\"data\":");
        return rc ? rc : append_json_string(out, ev->data, ev->data_len);
    }
    int rc = buf_puts(out, "\"data_base64\":\"");
    if (rc == 0)
        rc = base64_encode(ev->data, ev->data_len, out);
    return rc ? rc : buf_append(out, "\"", 1);
}

int event_to_structured(const struct event *ev, struct buf *out)
{
    if (ev->format == EVENT_STRUCTURED || ev->data_len == 0)
        return buf_append(out, ev->text, ev->text_len);
    if (ev->text_len < 2 || ev->text[ev->text_len - 1] != '}')
        return -EINVAL;

    /* Splice the data member in before the attribute object's '}'. */
    size_t start = out->len;
    int rc = buf_append(out, ev->text, ev->text_len - 1);
    if (rc == 0 && ev->text_len > 2)
        rc = buf_append(out, ",", 1);
    if (rc == 0)
        rc = append_data(ev, out);
    if (rc == 0)
        rc = buf_append(out, "}", 1);
    if (rc)
        truncate_to(out, start);
    return rc;
}

/* ---- delivery: binary output ------------------------------------------ */

static bool is_body_member(const char *name)
{
    return strcmp(name, "data") == 0 || strcmp(name, "data_base64") == 0 ||
           strcmp(name, "datacontenttype") == 0;
}

/* Content-Type goes out unencoded, so it must not be able to end the
 * header line early (events loaded from the spool skip validation). */
static int emit_content_type(const char *ct, event_header_cb cb, void *arg)
{
    for (const char *p = ct; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7F)
            return -EINVAL;
    return cb(arg, "Content-Type", ct);
}

static bool needs_encoding(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7F || c == '"' || c == '%')
            return true;
    }
    return false;
}

/* Call @cb for one ce- header; encoded values live briefly in @scratch. */
static int emit_attr(const char *name, const json_t *v, event_header_cb cb,
                     void *arg, struct buf *scratch)
{
    char header[3 + HEADER_NAME_MAX];
    size_t n = strlen(name);
    if (n >= HEADER_NAME_MAX)
        return -EINVAL;
    memcpy(header, "ce-", 3);
    memcpy(header + 3, name, n + 1);

    char num[32];
    if (json_is_boolean(v))
        return cb(arg, header, json_is_true(v) ? "true" : "false");
    if (json_is_integer(v)) {
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(v));
        return cb(arg, header, num);
    }
    if (!json_is_string(v))
        return -EINVAL;
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (!needs_encoding(s, len))
        return cb(arg, header, s);
    size_t start = scratch->len;
    int rc = hdr_encode(s, len, scratch);
    if (rc == 0)
        rc = cb(arg, header, scratch->data + start);
    truncate_to(scratch, start);
    return rc;
}

static int emit_attrs(json_t *obj, event_header_cb cb, void *arg,
                      struct buf *scratch)
{
    const char *name;
    json_t *v;
    json_object_foreach(obj, name, v) {
        if (is_body_member(name) || json_is_null(v))
            continue;
        int rc = emit_attr(name, v, cb, arg, scratch);
        if (rc)
            return rc;
    }
    return 0;
}

/* Point *@body at what was appended to @scratch since @start. */
static void body_from_scratch(const struct buf *scratch, size_t start,
                              const char **body, size_t *body_len)
{
    *body = scratch->data ? scratch->data + start : "";
    *body_len = scratch->len - start;
}

static int structured_body(const struct event *ev, event_header_cb cb,
                           void *arg, struct buf *scratch, const char **body,
                           size_t *body_len)
{
    const json_t *obj = event_attrs(ev);
    json_t *data = json_object_get(obj, "data");
    json_t *b64 = json_object_get(obj, "data_base64");
    const char *ct = string_attr(obj, "datacontenttype");
    const char *raw = ev->data_json; /* data left unparsed by event_load */
    size_t raw_len = ev->data_json_len;
    if (json_is_null(data))
        data = NULL;
    if (raw && raw_len == 4 && memcmp(raw, "null", 4) == 0)
        raw = NULL;
    if (!json_is_string(b64))
        b64 = NULL;
    /* JSON-format data without a datacontenttype is application/json. */
    if (!ct && (data || raw))
        ct = "application/json";
    int rc = ct ? emit_content_type(ct, cb, arg) : 0;
    if (rc)
        return rc;

    size_t start = scratch->len;
    if (raw && (raw[0] != '"' || is_json_type(ct))) {
        *body = raw; /* JSON data goes out as its own text */
        *body_len = raw_len;
        return 0;
    }
    json_t *parsed = NULL;
    if (raw) { /* a string for a non-JSON type: the body is its value */
        parsed = json_loadb(raw, raw_len, JSON_DECODE_ANY, NULL);
        if (!json_is_string(parsed)) {
            json_decref(parsed);
            return parsed ? -EINVAL : -ENOMEM;
        }
        rc = buf_append(scratch, json_string_value(parsed),
                        json_string_length(parsed));
        json_decref(parsed);
        if (rc == 0)
            body_from_scratch(scratch, start, body, body_len);
        return rc;
    }
    if (b64) {
        rc = base64_decode(json_string_value(b64), json_string_length(b64),
                           scratch);
    } else if (json_is_string(data) && !is_json_type(ct)) {
        *body = json_string_value(data);
        *body_len = json_string_length(data);
        return 0;
    } else if (data) {
        rc = append_json(data, scratch);
    }
    if (rc == 0)
        body_from_scratch(scratch, start, body, body_len);
    return rc;
}

int event_binary_headers(const struct event *ev, event_header_cb cb, void *arg,
                         struct buf *scratch, const char **body,
                         size_t *body_len)
{
    size_t start = scratch->len;
    *body = "";
    *body_len = 0;
    json_t *obj = event_attrs(ev);
    if (!obj)
        return -EINVAL; /* a stored text that does not parse */
    int rc = emit_attrs(obj, cb, arg, scratch);
    if (rc)
        goto out;
    if (ev->format == EVENT_STRUCTURED) {
        rc = structured_body(ev, cb, arg, scratch, body, body_len);
        goto out;
    }
    const char *ct = string_attr(obj, "datacontenttype");
    if (ct)
        rc = emit_content_type(ct, cb, arg);
    if (rc == 0 && ev->data) {
        *body = ev->data;
        *body_len = ev->data_len;
    }
out:
    if (rc) {
        truncate_to(scratch, start);
        *body = "";
        *body_len = 0;
    }
    return rc;
}

void event_free(struct event *ev)
{
    if (!ev)
        return;
    json_decref(ev->obj);
    free(ev->text);
    if (ev->data_owned)
        free((void *)(uintptr_t)ev->data);
    memset(ev, 0, sizeof(*ev));
}
