/*
 * validate: the CloudEvents 1.0 attribute rules (see validate.h), checked
 * on an already parsed object so ingest parses each event exactly once.
 *
 * Order of checks: the four required attributes first (in spec order), then
 * every member once, in the object's order, so the first error reported is
 * stable for a given input. Null values follow the spec's "null is absent"
 * rule for optional attributes and extensions; a null required attribute is
 * reported as such rather than as missing, which is clearer to the sender.
 * Pure module: no I/O, no allocation.
 */
#include "validate.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "hdrcode.h"

#define ATTR_NAME_MAX 20

/* Every failure is an invalid_event naming @attr; evaluates to -EINVAL. */
#define INVALID(err, index, attr, ...)                                       \
    (ce_error_set((err), "invalid_event", (index), (attr), __VA_ARGS__),     \
     -EINVAL)

enum kind {
    KIND_REQUIRED,
    KIND_DATA,
    KIND_DATA_BASE64,
    KIND_DATACONTENTTYPE,
    KIND_DATASCHEMA,
    KIND_SUBJECT,
    KIND_TIME,
    KIND_EXTENSION,
};

static const struct {
    const char *name;
    enum kind kind;
} known_attrs[] = {
    {"id", KIND_REQUIRED},
    {"source", KIND_REQUIRED},
    {"specversion", KIND_REQUIRED},
    {"type", KIND_REQUIRED},
    {"data", KIND_DATA},
    {"data_base64", KIND_DATA_BASE64},
    {"datacontenttype", KIND_DATACONTENTTYPE},
    {"dataschema", KIND_DATASCHEMA},
    {"subject", KIND_SUBJECT},
    {"time", KIND_TIME},
};

static enum kind kind_of(const char *name)
{
    for (size_t i = 0; i < sizeof(known_attrs) / sizeof(known_attrs[0]); i++)
        if (strcmp(name, known_attrs[i].name) == 0)
            return known_attrs[i].kind;
    return KIND_EXTENSION;
}

/* ---- primitives ------------------------------------------------------- */

bool validate_attr_name(const char *name, size_t len)
{
    if (len == 0 || len > ATTR_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

/* Parse exactly @n ASCII digits; stops at a NUL, so never reads past it. */
static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

static int days_in_month(int year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    return month == 2 && leap ? 29 : days[month - 1];
}

/* full-date = YYYY-MM-DD */
static bool full_date(const char *s)
{
    int y, m, d;
    if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &m) ||
        s[7] != '-' || !digits(s + 8, 2, &d))
        return false;
    return m >= 1 && m <= 12 && d >= 1 && d <= days_in_month(y, m);
}

/* partial-time = hh:mm:ss[.frac]; returns the rest, or NULL. */
static const char *partial_time(const char *s)
{
    int h, m, sec;
    if (!digits(s, 2, &h) || s[2] != ':' || !digits(s + 3, 2, &m) ||
        s[5] != ':' || !digits(s + 6, 2, &sec))
        return NULL;
    /* 60 admits a leap second; which minutes may carry one is not checked. */
    if (h > 23 || m > 59 || sec > 60)
        return NULL;
    s += 8;
    if (*s == '.') {
        s++;
        if (*s < '0' || *s > '9')
            return NULL;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    return s;
}

/* time-offset = "Z" / ("+" / "-") hh:mm, and nothing after it. */
static bool time_offset(const char *s)
{
    if (*s == 'Z' || *s == 'z')
        return s[1] == '\0';
    if (*s != '+' && *s != '-')
        return false;
    int h, m;
    if (!digits(s + 1, 2, &h) || s[3] != ':' || !digits(s + 4, 2, &m))
        return false;
    return h <= 23 && m <= 59 && s[6] == '\0';
}

bool validate_rfc3339(const char *s)
{
    if (!full_date(s) || (s[10] != 'T' && s[10] != 't'))
        return false;
    const char *rest = partial_time(s + 11);
    return rest && time_offset(rest);
}

/* A URI needs no parser here: only text that could never be one is
 * refused, so senders' relative or unusual schemas are not second-guessed. */
static bool uri_plausible(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7F)
            return false;
    }
    return true;
}

/* Media types never hold control characters; refusing them here also keeps
 * a CR/LF from reaching a Content-Type header line on delivery. */
static bool media_type_plausible(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7F)
            return false;
    }
    return true;
}

/* ---- attributes ------------------------------------------------------- */

static int check_required(json_t *obj, const char *name, long index,
                          struct ce_error *err)
{
    json_t *v = json_object_get(obj, name);
    if (!v)
        return INVALID(err, index, name, "missing required attribute \"%s\"",
                       name);
    if (json_is_null(v))
        return INVALID(err, index, name,
                       "required attribute \"%s\" must not be null", name);
    if (!json_is_string(v))
        return INVALID(err, index, name, "attribute \"%s\" must be a string",
                       name);
    if (json_string_length(v) == 0)
        return INVALID(err, index, name, "attribute \"%s\" must not be empty",
                       name);
    return 0;
}

static int check_specversion(json_t *obj, long index, struct ce_error *err)
{
    const char *v = json_string_value(json_object_get(obj, "specversion"));
    if (strcmp(v, "1.0") != 0)
        return INVALID(err, index, "specversion",
                       "unsupported specversion \"%.32s\"; expected \"1.0\"",
                       v);
    return 0;
}

static int check_extension(const char *name, json_t *v, long index,
                           struct ce_error *err)
{
    if (json_is_string(v) || json_is_boolean(v))
        return 0;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < INT32_MIN || i > INT32_MAX)
            return INVALID(err, index, name,
                           "extension \"%s\": integer %" JSON_INTEGER_FORMAT
                           " is outside the 32-bit signed range",
                           name, i);
        return 0;
    }
    return INVALID(err, index, name,
                   "extension \"%s\" must be a string, integer or boolean",
                   name);
}

static int check_data_base64(json_t *v, long index, struct ce_error *err)
{
    if (!json_is_string(v))
        return INVALID(err, index, "data_base64",
                       "\"data_base64\" must be a string");
    if (!base64_valid(json_string_value(v), json_string_length(v)))
        return INVALID(err, index, "data_base64",
                       "\"data_base64\" is not valid base64 (RFC 4648, "
                       "padded, no whitespace)");
    return 0;
}

static int check_string_attr(const char *name, json_t *v, long index,
                             struct ce_error *err)
{
    if (!json_is_string(v))
        return INVALID(err, index, name, "attribute \"%s\" must be a string",
                       name);
    return 0;
}

static int check_typed(const char *name, enum kind kind, json_t *v,
                       long index, struct ce_error *err)
{
    int rc = check_string_attr(name, v, index, err);
    if (rc)
        return rc;
    const char *s = json_string_value(v);
    if (kind == KIND_DATACONTENTTYPE &&
        !media_type_plausible(s, json_string_length(v)))
        return INVALID(err, index, name,
                       "attribute \"datacontenttype\" must be a media type "
                       "(RFC 2046), e.g. \"application/json\"");
    if (kind == KIND_DATASCHEMA && !uri_plausible(s, json_string_length(v)))
        return INVALID(err, index, name,
                       "attribute \"dataschema\" must be a non-empty URI");
    if (kind == KIND_TIME && !validate_rfc3339(s))
        return INVALID(err, index, name,
                       "attribute \"time\" is not an RFC 3339 timestamp: "
                       "\"%.40s\"",
                       s);
    return 0;
}

static int check_member(const char *name, json_t *v, bool allow_data,
                        long index, struct ce_error *err)
{
    enum kind kind = kind_of(name);
    if ((kind == KIND_DATA || kind == KIND_DATA_BASE64) && !allow_data)
        return INVALID(err, index, name,
                       "\"%s\" is not allowed here: in binary mode the body "
                       "is the data",
                       name);
    if (kind == KIND_EXTENSION && !validate_attr_name(name, strlen(name)))
        return INVALID(err, index, name,
                       "invalid attribute name \"%.40s\": names are 1-20 "
                       "characters of a-z and 0-9",
                       name);
    if (kind == KIND_REQUIRED || kind == KIND_DATA || json_is_null(v))
        return 0;
    switch (kind) {
    case KIND_DATA_BASE64:
        return check_data_base64(v, index, err);
    case KIND_EXTENSION:
        return check_extension(name, v, index, err);
    default:
        return check_typed(name, kind, v, index, err);
    }
}

static bool present(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);
    return v && !json_is_null(v);
}

int validate_event(json_t *obj, bool allow_data, long index,
                   struct ce_error *err)
{
    static const char *const required[] = {"id", "source", "specversion",
                                           "type"};
    if (!json_is_object(obj))
        return INVALID(err, index, "", "an event must be a JSON object");
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        int rc = check_required(obj, required[i], index, err);
        if (rc)
            return rc;
    }
    int rc = check_specversion(obj, index, err);
    if (rc)
        return rc;

    const char *name;
    json_t *v;
    json_object_foreach(obj, name, v) {
        rc = check_member(name, v, allow_data, index, err);
        if (rc)
            return rc;
    }
    if (present(obj, "data") && present(obj, "data_base64"))
        return INVALID(err, index, "data_base64",
                       "\"data\" and \"data_base64\" must not both be present");
    return 0;
}
