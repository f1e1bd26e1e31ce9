/*
 * config: parse, check, override and dump Ferry's JSON configuration
 * (see config.h).
 *
 * DESIGN
 * Parsing is table driven, after Fluent Bit's config_map: a JSON object is
 * described by a NULL-terminated `struct field` table (key, kind, offset,
 * bounds) and parse_fields() walks the object's keys in document order
 * (jansson keeps insertion order), so errors come out in document order and
 * unknown keys are caught in one place. Objects whose shape depends on their
 * content (peers, routes, schedules, filters) have their own parsers, which
 * reuse the tables for the fixed parts. The environment overrides go
 * through the same field parsers, so they are checked the same way.
 *
 * Parsing never stops at the first error: every problem is reported.
 *
 * Two things depend on what comes later in the document:
 *   - a peer's "retry" overrides the FINAL top-level "retry" key by key, so
 *     a pre-pass parses the top-level "retry" (its errors are discarded and
 *     reported by the main pass) before any peer is read;
 *   - a route may name a peer defined further down, so route targets are
 *     resolved against the keys of the "peers" object, whose order is the
 *     order of config.peers.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "buf.h"
#include "filter.h"

#define PATH_LEN 512
#define MSG_LEN 1024
#define CONFIG_FILE_MAX ((size_t)16 << 20)
/* Bounds that keep later arithmetic (ms -> ns, s -> ns) from overflowing. */
#define MAX_MS ((int64_t)1 << 40) /* ~34 years */
#define MAX_S ((int64_t)1 << 30)  /* ~34 years */
#define PEER_NAME_MAX 64
/* Connections per listener: far above what file descriptors allow. */
#define HTTP_CONN_MAX 1048576

const char CONFIG_DEFAULT_JSON[] =
    "{\"peers\":{\"stdout\":{\"type\":\"stdout\"}},"
    "\"routes\":[{\"name\":\"default\",\"to\":[\"stdout\"]}]}";

/* ---- errors ---------------------------------------------------------- */

void config_errors_init(struct config_errors *e)
{
    e->items = NULL;
    e->n = 0;
}

void config_errors_free(struct config_errors *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->n; i++)
        free(e->items[i]);
    free(e->items);
    e->items = NULL;
    e->n = 0;
}

void config_errors_add(struct config_errors *e, const char *path,
                       const char *fmt, ...)
{
    struct buf b;
    va_list ap;
    buf_init(&b, 64 * 1024);
    if (path && *path)
        buf_printf(&b, "%s: ", path);
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    char *msg = buf_take(&b, NULL);
    char **items = msg ? realloc(e->items, (e->n + 1) * sizeof(*items)) : NULL;
    if (!items) {
        free(msg); /* out of memory: the message is lost, nothing else */
        return;
    }
    items[e->n++] = msg;
    e->items = items;
}

/* ---- parse context and paths ----------------------------------------- */

struct ctx {
    struct config_errors *errs;
    struct config *cfg;
    json_t *peers;  /* borrowed: the document's "peers" value, or NULL */
    size_t n_err;   /* errors found; the config is valid iff 0 */
};

__attribute__((format(printf, 3, 4))) static void
fail(struct ctx *c, const char *path, const char *fmt, ...)
{
    char msg[MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    c->n_err++;
    config_errors_add(c->errs, path, "%s", msg);
}

/* A path that did not fit in PATH_LEN ends in "...". */
static const char *mark_truncated(char *out, int n)
{
    if (n < 0 || n >= PATH_LEN)
        memcpy(out + PATH_LEN - 4, "...", 4);
    return out;
}

/* "parent.key", or "key" at the top level. */
static const char *key_path(char *out, const char *parent, const char *key)
{
    int n = *parent ? snprintf(out, PATH_LEN, "%s.%s", parent, key)
                    : snprintf(out, PATH_LEN, "%s", key);
    return mark_truncated(out, n);
}

static const char *index_path(char *out, const char *parent, size_t i)
{
    return mark_truncated(out, snprintf(out, PATH_LEN, "%s[%zu]", parent, i));
}

/* Report "PARENT.KEY: required" when @obj lacks @key. */
static void require(struct ctx *c, json_t *obj, const char *parent,
                    const char *key)
{
    char path[PATH_LEN];
    if (json_is_object(obj) && !json_object_get(obj, key))
        fail(c, key_path(path, parent, key), "required");
}

/* Replace *dst by a copy of @s. */
static void set_dup(struct ctx *c, const char *path, char **dst, const char *s)
{
    char *copy = strdup(s);
    if (!copy) {
        fail(c, path, "out of memory");
        return;
    }
    free(*dst);
    *dst = copy;
}

/* ---- secret references ------------------------------------------------ */

#define SECRET_FILE_MAX 65536

/* Reads @path whole into a new string, without its trailing line breaks. */
static char *read_secret_file(struct ctx *c, const char *path,
                              const char *file)
{
    char *buf = NULL;
    FILE *f = fopen(file, "rb");
    if (!f) {
        fail(c, path, "cannot read \"%s\": %s", file, strerror(errno));
        return NULL;
    }
    buf = malloc(SECRET_FILE_MAX + 1);
    if (!buf) {
        fail(c, path, "out of memory");
        goto out;
    }
    size_t n = fread(buf, 1, SECRET_FILE_MAX + 1, f);
    if (ferror(f) || n > SECRET_FILE_MAX) {
        fail(c, path, ferror(f) ? "cannot read \"%s\"" :
             "\"%s\" is larger than 64 KiB", file);
        free(buf);
        buf = NULL;
        goto out;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
out:
    fclose(f);
    return buf;
}

/*
 * Secrets may be written inline or as a reference, so that a config file
 * (a ConfigMap, say) need not hold them: {"env": "NAME"} reads the
 * environment, {"file": "/path"} a file (a mounted Secret), both at every
 * load and reload.  Returns a new reference: the resolved string, @v itself
 * when it is no reference, or NULL after reporting the problem.
 */
static json_t *resolve_secret(struct ctx *c, json_t *v, const char *path)
{
    char sub[PATH_LEN];
    const char *kind, *name;
    json_t *ref;
    if (!json_is_object(v))
        return json_incref(v);
    if (json_object_size(v) != 1) {
        fail(c, path, "a secret reference is {\"env\": NAME} or "
             "{\"file\": PATH}");
        return NULL;
    }
    kind = json_object_iter_key(json_object_iter(v));
    ref = json_object_get(v, kind);
    key_path(sub, path, kind);
    name = json_string_value(ref);
    if (strcmp(kind, "env") != 0 && strcmp(kind, "file") != 0) {
        fail(c, sub, "unknown secret reference; use \"env\" or \"file\"");
        return NULL;
    }
    if (!name || !*name) {
        fail(c, sub, "expected a non-empty string");
        return NULL;
    }
    if (strcmp(kind, "env") == 0) {
        const char *val = getenv(name);
        if (!val || !*val) {
            fail(c, sub, "environment variable \"%s\" is not set", name);
            return NULL;
        }
        return json_string_nocheck(val);
    }
    char *text = read_secret_file(c, sub, name);
    if (!text)
        return NULL;
    if (!*text) {
        fail(c, sub, "\"%s\" is empty", name);
        free(text);
        return NULL;
    }
    json_t *s = json_string_nocheck(text);
    free(text);
    return s;
}

/* ---- field tables ----------------------------------------------------- */

typedef void (*sub_fn)(struct ctx *c, json_t *v, const char *path, void *dst);

enum kind {
    K_SKIP,     /* accepted here, parsed elsewhere */
    K_STR,      /* char *: non-empty string */
    K_STR_NULL, /* char *: non-empty string, or null for none */
    K_SECRET,   /* K_STR_NULL, or a secret reference (resolve_secret) */
    K_HOSTPORT, /* char *: HOST:PORT or [V6]:PORT */
    K_INT,      /* int in [min, max] */
    K_I64,      /* int64_t in [min, max] */
    K_SIZE,     /* size_t in [min, max] */
    K_DOUBLE,   /* double >= min; integers accepted */
    K_ENUM,     /* enum: index of the string in names[] */
    K_OBJ,      /* nested object described by fields[] */
    K_SUB,      /* custom parser fn */
};

struct field {
    const char *key;
    enum kind kind;
    size_t off; /* of the destination, from the table's base pointer */
    int64_t min, max;
    const char *const *names;    /* K_ENUM: NULL-terminated */
    const struct field *fields;  /* K_OBJ */
    sub_fn fn;                   /* K_SUB */
};

#define SKIP(k) {.key = (k), .kind = K_SKIP}
#define STR(k, o) {.key = (k), .kind = K_STR, .off = (o)}
#define STR_NULL(k, o) {.key = (k), .kind = K_STR_NULL, .off = (o)}
#define SECRET(k, o) {.key = (k), .kind = K_SECRET, .off = (o)}
#define HOSTPORT(k, o) {.key = (k), .kind = K_HOSTPORT, .off = (o)}
#define NUM(k, kd, o, lo, hi)                                                \
    {.key = (k), .kind = (kd), .off = (o), .min = (lo), .max = (hi)}
#define ENUM(k, o, n) {.key = (k), .kind = K_ENUM, .off = (o), .names = (n)}
#define OBJ(k, o, f) {.key = (k), .kind = K_OBJ, .off = (o), .fields = (f)}
#define SUB(k, o, f) {.key = (k), .kind = K_SUB, .off = (o), .fn = (f)}

static void parse_fields(struct ctx *c, json_t *obj, const char *path,
                         const struct field *table, void *base);

static const struct field *find_field(const struct field *t, const char *key)
{
    for (; t && t->key; t++)
        if (strcmp(t->key, key) == 0)
            return t;
    return NULL;
}

static void set_string(struct ctx *c, const struct field *f, json_t *v,
                       const char *path, char **dst)
{
    char host[256];
    uint16_t port;
    if (f->kind == K_STR_NULL && json_is_null(v)) {
        free(*dst);
        *dst = NULL;
    } else if (!json_is_string(v)) {
        fail(c, path, f->kind == K_STR_NULL ? "expected a string or null"
                                            : "expected a string");
    } else if (json_string_value(v)[0] == '\0') {
        fail(c, path, "must not be empty");
    } else if (f->kind == K_HOSTPORT &&
               config_split_hostport(json_string_value(v), host, sizeof(host),
                                     &port)) {
        fail(c, path, "must be HOST:PORT or [IPV6]:PORT with a port "
             "from 0 to 65535");
    } else {
        set_dup(c, path, dst, json_string_value(v));
    }
}

static void range_error(struct ctx *c, const char *path, int64_t lo,
                        int64_t hi, json_int_t n)
{
    if (hi < MAX_S) /* a real upper bound, not an overflow guard */
        fail(c, path, "must be between %lld and %lld", (long long)lo,
             (long long)hi);
    else if (n < lo)
        fail(c, path, "must be at least %lld", (long long)lo);
    else
        fail(c, path, "must be at most %lld", (long long)hi);
}

static void set_integer(struct ctx *c, const struct field *f, json_t *v,
                        const char *path, void *dst)
{
    if (!json_is_integer(v)) {
        fail(c, path, "expected an integer");
        return;
    }
    json_int_t n = json_integer_value(v);
    if (n < f->min || n > f->max) {
        range_error(c, path, f->min, f->max, n);
        return;
    }
    if (f->kind == K_INT)
        *(int *)dst = (int)n;
    else if (f->kind == K_I64)
        *(int64_t *)dst = (int64_t)n;
    else
        *(size_t *)dst = (size_t)n;
}

static void set_double(struct ctx *c, const struct field *f, json_t *v,
                       const char *path, double *dst)
{
    if (!json_is_number(v)) {
        fail(c, path, "expected a number");
        return;
    }
    double d = json_number_value(v);
    if (d < (double)f->min) {
        fail(c, path, "must be at least %lld", (long long)f->min);
        return;
    }
    *dst = d;
}

/* `"a", "b" or "c"` */
static void list_names(char *out, size_t len, const char *const *names)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; names[i] && used < len; i++) {
        const char *sep = i == 0 ? "" : names[i + 1] ? ", " : " or ";
        int n = snprintf(out + used, len - used, "%s\"%s\"", sep, names[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

/* The index of @v's string in @names, or -1 (reported). */
static int lookup_enum(struct ctx *c, json_t *v, const char *path,
                       const char *const *names)
{
    char choices[256];
    if (json_is_string(v)) {
        for (int i = 0; names[i]; i++)
            if (strcmp(json_string_value(v), names[i]) == 0)
                return i;
    }
    list_names(choices, sizeof(choices), names);
    fail(c, path, "must be %s", choices);
    return -1;
}

/* Enums here have no negative values: GCC gives them type unsigned int. */
static void set_enum(struct ctx *c, const struct field *f, json_t *v,
                     const char *path, unsigned *dst)
{
    int i = lookup_enum(c, v, path, f->names);
    if (i >= 0)
        *dst = (unsigned)i;
}

static void parse_value(struct ctx *c, const struct field *f, json_t *v,
                        const char *path, void *base)
{
    void *dst = (char *)base + f->off;
    switch (f->kind) {
    case K_SKIP:
        break;
    case K_STR:
    case K_STR_NULL:
    case K_HOSTPORT:
        set_string(c, f, v, path, dst);
        break;
    case K_SECRET: {
        static const struct field as_str = {.kind = K_STR_NULL};
        json_t *r = resolve_secret(c, v, path);
        if (r)
            set_string(c, &as_str, r, path, dst);
        json_decref(r);
        break;
    }
    case K_INT:
    case K_I64:
    case K_SIZE:
        set_integer(c, f, v, path, dst);
        break;
    case K_DOUBLE:
        set_double(c, f, v, path, dst);
        break;
    case K_ENUM:
        set_enum(c, f, v, path, dst);
        break;
    case K_OBJ:
        parse_fields(c, v, path, f->fields, dst);
        break;
    case K_SUB:
        f->fn(c, v, path, dst);
        break;
    }
}

static void parse_fields(struct ctx *c, json_t *obj, const char *path,
                         const struct field *table, void *base)
{
    const char *key;
    json_t *v;
    if (!json_is_object(obj)) {
        fail(c, path, "expected an object");
        return;
    }
    json_object_foreach(obj, key, v) {
        char sub[PATH_LEN];
        const struct field *f = find_field(table, key);
        key_path(sub, path, key);
        if (f)
            parse_value(c, f, v, sub, base);
        else
            fail(c, sub, "unknown key");
    }
}

/* ---- small objects: tls, retry ---------------------------------------- */

/* cert_file and key_file come together or not at all. */
static void check_pair(struct ctx *c, const char *path, const char *cert,
                       const char *key)
{
    char sub[PATH_LEN];
    if (cert && !key)
        fail(c, key_path(sub, path, "key_file"),
             "required when cert_file is set");
    else if (key && !cert)
        fail(c, key_path(sub, path, "cert_file"),
             "required when key_file is set");
}

#define TS(m) offsetof(struct tls_server_config, m)
static const struct field tls_server_fields[] = {
    STR_NULL("cert_file", TS(cert_file)),
    STR_NULL("key_file", TS(key_file)),
    {0},
};

static void parse_tls_server(struct ctx *c, json_t *v, const char *path,
                             void *dst)
{
    struct tls_server_config *t = dst;
    size_t before = c->n_err;
    parse_fields(c, v, path, tls_server_fields, t);
    if (c->n_err == before)
        check_pair(c, path, t->cert_file, t->key_file);
}

#define TC(m) offsetof(struct tls_client_config, m)
static const struct field tls_client_fields[] = {
    STR_NULL("ca_file", TC(ca_file)),
    STR_NULL("cert_file", TC(cert_file)),
    STR_NULL("key_file", TC(key_file)),
    {0},
};

static void parse_tls_client(struct ctx *c, json_t *v, const char *path,
                             void *dst)
{
    struct tls_client_config *t = dst;
    size_t before = c->n_err;
    parse_fields(c, v, path, tls_client_fields, t);
    if (c->n_err == before)
        check_pair(c, path, t->cert_file, t->key_file);
}

static const char *const jitter_names[] = {"full", "equal", "none", NULL};

#define RP(m) offsetof(struct retry_policy, m)
static const struct field retry_fields[] = {
    NUM("max_attempts", K_INT, RP(max_attempts), 1, INT_MAX),
    NUM("initial_delay_ms", K_I64, RP(initial_delay_ms), 0, MAX_MS),
    NUM("max_delay_ms", K_I64, RP(max_delay_ms), 0, MAX_MS),
    NUM("multiplier", K_DOUBLE, RP(multiplier), 1, 0),
    ENUM("jitter", RP(jitter), jitter_names),
    NUM("max_age_s", K_I64, RP(max_age_s), 1, MAX_S),
    {0},
};

/*
 * Apply the keys of @v over the policy in @dst (defaults or the top-level
 * policy), then check the delays of the result. The delay error is given to
 * the key this object sets, so a peer is blamed only for its own overrides.
 */
static void parse_retry(struct ctx *c, json_t *v, const char *path, void *dst)
{
    struct retry_policy *r = dst;
    size_t before = c->n_err;
    char sub[PATH_LEN];
    parse_fields(c, v, path, retry_fields, r);
    if (c->n_err != before || r->max_delay_ms >= r->initial_delay_ms)
        return;
    if (json_object_get(v, "max_delay_ms"))
        fail(c, key_path(sub, path, "max_delay_ms"),
             "must be at least initial_delay_ms (%lld)",
             (long long)r->initial_delay_ms);
    else if (json_object_get(v, "initial_delay_ms"))
        fail(c, key_path(sub, path, "initial_delay_ms"),
             "must be at most max_delay_ms (%lld)",
             (long long)r->max_delay_ms);
}

/* ---- peers ------------------------------------------------------------ */

static bool valid_peer_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > PEER_NAME_MAX)
        return false;
    for (; *s; s++) {
        char ch = *s;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' ||
                  ch == '-';
        if (!ok)
            return false;
    }
    return true;
}

static void parse_url(struct ctx *c, json_t *v, const char *path, void *dst)
{
    const char *s = json_string_value(v);
    if (!s) {
        fail(c, path, "expected a string");
        return;
    }
    size_t skip = strncasecmp(s, "http://", 7) == 0    ? 7
                  : strncasecmp(s, "https://", 8) == 0 ? 8
                                                       : 0;
    if (!skip || s[skip] == '\0' || s[skip] == '/') {
        fail(c, path, "must be an http:// or https:// URL with a host");
        return;
    }
    for (const char *p = s; *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            fail(c, path, "must not contain spaces or control characters");
            return;
        }
    }
    set_dup(c, path, dst, s);
}

/* RFC 7230 tchar. */
static bool is_tchar(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool valid_header_name(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!is_tchar(*s))
            return false;
    return true;
}

static void add_header(struct ctx *c, struct peer_config *p, const char *path,
                       const char *name, json_t *raw)
{
    json_t *v = resolve_secret(c, raw, path);
    if (!v) {
        return;
    } else if (!valid_header_name(name)) {
        fail(c, path, "not a valid header name");
    } else if (!json_is_string(v)) {
        fail(c, path, "expected a string");
    } else if (strpbrk(json_string_value(v), "\r\n")) {
        fail(c, path, "must not contain CR or LF");
    } else {
        struct header_pair *h = &p->headers[p->n_headers++];
        h->name = strdup(name);
        h->value = strdup(json_string_value(v));
        if (!h->name || !h->value)
            fail(c, path, "out of memory");
    }
    json_decref(v);
}

static void parse_headers(struct ctx *c, json_t *v, const char *path,
                          void *dst)
{
    struct peer_config *p = dst;
    const char *name;
    json_t *hv;
    if (!json_is_object(v)) {
        fail(c, path, "expected an object");
        return;
    }
    if (json_object_size(v) == 0)
        return;
    p->headers = calloc(json_object_size(v), sizeof(*p->headers));
    if (!p->headers) {
        fail(c, path, "out of memory");
        return;
    }
    json_object_foreach(v, name, hv) {
        char sub[PATH_LEN];
        add_header(c, p, key_path(sub, path, name), name, hv);
    }
}

static bool is_b64(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
           (ch >= '0' && ch <= '9') || ch == '+' || ch == '/';
}

/* Standard, padded base64 of at least one byte. */
static bool valid_base64(const char *s)
{
    size_t n = strlen(s), pad = 0;
    if (n == 0 || n % 4 != 0)
        return false;
    while (pad < 2 && s[n - 1 - pad] == '=')
        pad++;
    for (size_t i = 0; i < n - pad; i++)
        if (!is_b64(s[i]))
            return false;
    return true;
}

/* Standard Webhooks: "whsec_" + base64 of the key; null means unsigned. */
static void parse_secret(struct ctx *c, json_t *raw, const char *path,
                         void *dst)
{
    char **out = dst;
    json_t *v = resolve_secret(c, raw, path);
    const char *s = json_string_value(v);
    if (!v) {
        return;
    } else if (json_is_null(v)) {
        free(*out);
        *out = NULL;
    } else if (!s) {
        fail(c, path, "expected a string or null");
    } else if (strncmp(s, "whsec_", 6) != 0 || !valid_base64(s + 6)) {
        fail(c, path, "must be \"whsec_\" followed by standard base64");
    } else {
        set_dup(c, path, out, s);
    }
    json_decref(v);
}

static const char *const peer_type_names[] = {"http", "stdout", "file", NULL};
static const char *const mode_names[] = {"binary", "structured", "batch",
                                         NULL};

#define BP(m) offsetof(struct breaker_policy, m)
static const struct field breaker_fields[] = {
    NUM("failure_threshold", K_INT, BP(failure_threshold), 1, INT_MAX),
    NUM("open_ms", K_I64, BP(open_ms), 1, MAX_MS),
    {0},
};

#define PC(m) offsetof(struct peer_config, m)
static const struct field http_fields[] = {
    SKIP("type"),
    SUB("url", PC(url), parse_url),
    ENUM("mode", PC(mode), mode_names),
    NUM("timeout_ms", K_I64, PC(timeout_ms), 1, 3600000),
    NUM("max_in_flight", K_INT, PC(max_in_flight), 1, 1024),
    NUM("batch_size", K_INT, PC(batch_size), 1, 1000),
    SUB("headers", 0, parse_headers),
    SUB("signing_secret", PC(signing_secret), parse_secret),
    SUB("retry", PC(retry), parse_retry),
    OBJ("breaker", PC(breaker), breaker_fields),
    SUB("tls", PC(tls), parse_tls_client),
    {0},
};
static const struct field stdout_fields[] = {
    SKIP("type"),
    SUB("retry", PC(retry), parse_retry),
    {0},
};
static const struct field file_fields[] = {
    SKIP("type"),
    STR("path", PC(path)),
    SUB("retry", PC(retry), parse_retry),
    {0},
};
/* Indexed by enum peer_type. */
static const struct field *const peer_tables[] = {
    http_fields, stdout_fields, file_fields,
};

static bool is_peer_key(const char *key)
{
    return find_field(http_fields, key) || find_field(file_fields, key);
}

/* The peer's type from "type", else http when it has a "url". */
static int peer_type(struct ctx *c, json_t *v, const char *path,
                     enum peer_type *out)
{
    char sub[PATH_LEN];
    json_t *t = json_object_get(v, "type");
    if (!t && json_object_get(v, "url")) {
        *out = PEER_HTTP;
        return 0;
    }
    if (!t) {
        fail(c, path, "needs a \"url\" (an http peer) or a \"type\"");
        return -EINVAL;
    }
    int i = lookup_enum(c, t, key_path(sub, path, "type"), peer_type_names);
    if (i < 0)
        return -EINVAL;
    *out = (enum peer_type)i;
    return 0;
}

static void peer_defaults(struct peer_config *p, const struct retry_policy *r)
{
    p->type = PEER_HTTP;
    p->mode = PEER_MODE_BINARY;
    p->timeout_ms = 10000;
    p->max_in_flight = 32;
    p->batch_size = 100;
    p->breaker.failure_threshold = 5;
    p->breaker.open_ms = 30000;
    p->retry = *r;
}

/*
 * Keys are checked against the table of the peer's type; a key that
 * belongs to another type is "not allowed" rather than "unknown". With a
 * bad type only unknown keys are reported.
 */
static void parse_peer(struct ctx *c, json_t *v, const char *path,
                       const char *name, struct peer_config *p)
{
    const struct field *table = NULL;
    const char *key;
    json_t *kv;
    peer_defaults(p, &c->cfg->retry);
    set_dup(c, path, &p->name, name);
    if (!valid_peer_name(name))
        fail(c, path, "peer names are 1-64 characters of A-Z, a-z, 0-9, "
             "'_', '.' and '-'");
    if (!json_is_object(v)) {
        fail(c, path, "expected an object");
        return;
    }
    if (peer_type(c, v, path, &p->type) == 0)
        table = peer_tables[p->type];
    json_object_foreach(v, key, kv) {
        char sub[PATH_LEN];
        const struct field *f = find_field(table, key);
        key_path(sub, path, key);
        if (f)
            parse_value(c, f, kv, sub, p);
        else if (!is_peer_key(key))
            fail(c, sub, "unknown key");
        else if (table)
            fail(c, sub, "not allowed for a %s peer", peer_type_names[p->type]);
    }
    if (table && p->type == PEER_HTTP)
        require(c, v, path, "url");
    else if (table && p->type == PEER_FILE)
        require(c, v, path, "path");
}

static void parse_peers(struct ctx *c, json_t *v, const char *path, void *dst)
{
    struct config *cfg = dst;
    const char *name;
    json_t *pv;
    if (!json_is_object(v)) {
        fail(c, path, "expected an object");
        return;
    }
    if (json_object_size(v) == 0)
        return;
    cfg->peers = calloc(json_object_size(v), sizeof(*cfg->peers));
    if (!cfg->peers) {
        fail(c, path, "out of memory");
        return;
    }
    json_object_foreach(v, name, pv) {
        char sub[PATH_LEN];
        struct peer_config *p = &cfg->peers[cfg->n_peers++];
        parse_peer(c, pv, key_path(sub, path, name), name, p);
    }
}

/* ---- routes ----------------------------------------------------------- */

/* Position of @name among the keys of the "peers" object, or -1. */
static long peer_position(json_t *peers, const char *name)
{
    const char *key;
    json_t *v;
    long i = 0;
    if (!json_is_object(peers))
        return -1;
    json_object_foreach(peers, key, v) {
        if (strcmp(key, name) == 0)
            return i;
        i++;
    }
    return -1;
}

static void add_target(struct ctx *c, struct route_config *r, json_t *t,
                       const char *path)
{
    if (!json_is_string(t)) {
        fail(c, path, "expected a string");
        return;
    }
    long idx = peer_position(c->peers, json_string_value(t));
    if (idx < 0) {
        fail(c, path, "no peer named \"%s\"", json_string_value(t));
        return;
    }
    for (size_t i = 0; i < r->n_to; i++)
        if (r->to[i] == (size_t)idx)
            return;
    r->to[r->n_to++] = (size_t)idx;
}

static void parse_targets(struct ctx *c, json_t *v, const char *path,
                          void *dst)
{
    struct route_config *r = dst;
    size_t i;
    json_t *t;
    if (!json_is_array(v)) {
        fail(c, path, "expected an array");
        return;
    }
    if (json_array_size(v) == 0) {
        fail(c, path, "must name at least one peer");
        return;
    }
    free(r->to);
    r->n_to = 0;
    r->to = calloc(json_array_size(v), sizeof(*r->to));
    if (!r->to) {
        fail(c, path, "out of memory");
        return;
    }
    json_array_foreach(v, i, t) {
        char sub[PATH_LEN];
        add_target(c, r, t, index_path(sub, path, i));
    }
}

static void parse_filter(struct ctx *c, json_t *v, const char *path,
                         void *dst)
{
    struct filter **f = dst;
    filter_destroy(*f);
    *f = filter_parse(v, path, c->errs);
    if (!*f)
        c->n_err++;
}

static const char *const ordering_names[] = {"none", "partitionkey", NULL};

#define RC(m) offsetof(struct route_config, m)
static const struct field route_fields[] = {
    STR("name", RC(name)),
    SUB("filter", RC(filter), parse_filter),
    SUB("to", 0, parse_targets),
    ENUM("ordering", RC(ordering), ordering_names),
    {0},
};

static void parse_routes(struct ctx *c, json_t *v, const char *path,
                         void *dst)
{
    struct config *cfg = dst;
    size_t i;
    json_t *rv;
    if (!json_is_array(v)) {
        fail(c, path, "expected an array");
        return;
    }
    if (json_array_size(v) == 0)
        return;
    cfg->routes = calloc(json_array_size(v), sizeof(*cfg->routes));
    if (!cfg->routes) {
        fail(c, path, "out of memory");
        return;
    }
    json_array_foreach(v, i, rv) {
        char sub[PATH_LEN];
        struct route_config *r = &cfg->routes[cfg->n_routes++];
        index_path(sub, path, i);
        set_dup(c, sub, &r->name, sub); /* default name: "routes[i]" */
        parse_fields(c, rv, sub, route_fields, r);
        require(c, rv, sub, "to");
    }
}

/* ---- schedules -------------------------------------------------------- */

static void check_event_attr(struct ctx *c, json_t *ev, const char *path,
                             const char *key)
{
    char sub[PATH_LEN];
    json_t *v = json_object_get(ev, key);
    key_path(sub, path, key);
    if (!v)
        fail(c, sub, "required");
    else if (!json_is_string(v))
        fail(c, sub, "expected a string");
    else if (json_string_value(v)[0] == '\0')
        fail(c, sub, "must not be empty");
}

/* The event template: an object with "type" and "source", kept as text. */
static void parse_event(struct ctx *c, json_t *v, const char *path, void *dst)
{
    char **out = dst;
    size_t before = c->n_err;
    if (!json_is_object(v)) {
        fail(c, path, "expected an object");
        return;
    }
    check_event_attr(c, v, path, "type");
    check_event_attr(c, v, path, "source");
    if (c->n_err != before)
        return;
    /* json_dumps allocates with malloc (Ferry keeps jansson's defaults). */
    char *text = json_dumps(v, JSON_COMPACT);
    if (!text) {
        fail(c, path, "out of memory");
        return;
    }
    free(*out);
    *out = text;
}

/* A schedule's name, which must differ from the names before it. */
static void parse_schedule_name(struct ctx *c, json_t *v, const char *path,
                                void *dst)
{
    struct schedule_config *s = dst;
    const struct config *cfg = c->cfg;
    static const struct field name_field = STR("name", 0);
    size_t before = c->n_err;
    set_string(c, &name_field, v, path, &s->name);
    if (c->n_err != before)
        return;
    for (const struct schedule_config *o = cfg->schedules; o < s; o++) {
        if (o->name && strcmp(o->name, s->name) == 0) {
            fail(c, path, "duplicate name \"%s\"", s->name);
            return;
        }
    }
}

#define SC(m) offsetof(struct schedule_config, m)
static const struct field schedule_fields[] = {
    SUB("name", 0, parse_schedule_name),
    STR("cron", SC(cron)),
    SUB("event", SC(event_json), parse_event),
    {0},
};

static void parse_schedules(struct ctx *c, json_t *v, const char *path,
                            void *dst)
{
    struct config *cfg = dst;
    size_t i;
    json_t *sv;
    if (!json_is_array(v)) {
        fail(c, path, "expected an array");
        return;
    }
    if (json_array_size(v) == 0)
        return;
    cfg->schedules = calloc(json_array_size(v), sizeof(*cfg->schedules));
    if (!cfg->schedules) {
        fail(c, path, "out of memory");
        return;
    }
    json_array_foreach(v, i, sv) {
        char sub[PATH_LEN];
        index_path(sub, path, i);
        cfg->n_schedules++;
        parse_fields(c, sv, sub, schedule_fields, &cfg->schedules[i]);
        require(c, sv, sub, "name");
        require(c, sv, sub, "cron");
        require(c, sv, sub, "event");
    }
}

/* ---- the document ----------------------------------------------------- */

static const char *const level_names[] = {"debug", "info", "warn", "error",
                                          NULL};
static const char *const format_names[] = {"json", "text", NULL};

#define CFG(m) offsetof(struct config, m)
static const struct field admin_fields[] = {
    HOSTPORT("listen", CFG(admin.listen)),
    SECRET("token", CFG(admin.token)),
    SUB("tls", CFG(admin.tls), parse_tls_server),
    {0},
};
static const struct field log_fields[] = {
    ENUM("level", CFG(log.level), level_names),
    ENUM("format", CFG(log.format), format_names),
    {0},
};
static const struct field ingest_fields[] = {
    SECRET("token", CFG(ingest.token)),
    NUM("max_body_bytes", K_SIZE, CFG(ingest.max_body_bytes), 1, 67108864),
    NUM("max_batch", K_SIZE, CFG(ingest.max_batch), 1, 100000),
    NUM("dedupe_window_s", K_I64, CFG(ingest.dedupe_window_s), 0, MAX_S),
    {0},
};
static const struct field spool_fields[] = {
    STR("dir", CFG(spool.dir)),
    NUM("max_bytes", K_I64, CFG(spool.max_bytes), 1048576, INT64_MAX),
    {0},
};
/* "threads": 1-256, or "auto" (0 here): see httpd_auto_threads(). */
static void parse_threads(struct ctx *c, json_t *v, const char *path,
                          void *dst)
{
    static const struct field range = {.kind = K_INT, .min = 1, .max = 256};
    if (json_is_string(v) && strcmp(json_string_value(v), "auto") == 0)
        *(int *)dst = 0;
    else if (json_is_integer(v))
        set_integer(c, &range, v, path, dst);
    else
        fail(c, path, "expected an integer or \"auto\"");
}

static const struct field listener_fields[] = {
    NUM("max_connections", K_INT, CFG(http.max_connections), 1, HTTP_CONN_MAX),
    NUM("max_connections_per_ip", K_INT, CFG(http.max_connections_per_ip), 0,
        HTTP_CONN_MAX),
    NUM("connection_timeout_s", K_INT, CFG(http.connection_timeout_s), 1,
        86400),
    NUM("max_header_bytes", K_SIZE, CFG(http.max_header_bytes), 4096,
        1048576),
    SUB("threads", CFG(http.threads), parse_threads),
    {0},
};

/*
 * "http": the listeners' limits. libmicrohttpd shares max_connections out
 * among the pool threads, so a thread would get none if there were more
 * threads than connections.
 */
static void parse_http(struct ctx *c, json_t *v, const char *path, void *dst)
{
    struct config *cfg = dst;
    size_t before = c->n_err;
    char sub[PATH_LEN];
    parse_fields(c, v, path, listener_fields, cfg);
    if (c->n_err != before || cfg->http.max_connections >= cfg->http.threads)
        return; /* "auto" (0) is capped at max_connections when applied */
    if (json_object_get(v, "max_connections"))
        fail(c, key_path(sub, path, "max_connections"),
             "must be at least threads (%d)", cfg->http.threads);
    else
        fail(c, key_path(sub, path, "threads"),
             "must be at most max_connections (%d)",
             cfg->http.max_connections);
}

/* The admin/log/ingest/spool tables use offsets from the config itself. */
static const struct field top_fields[] = {
    HOSTPORT("listen", CFG(listen)),
    SUB("tls", CFG(tls), parse_tls_server),
    OBJ("admin", 0, admin_fields),
    OBJ("log", 0, log_fields),
    OBJ("ingest", 0, ingest_fields),
    OBJ("spool", 0, spool_fields),
    SUB("retry", CFG(retry), parse_retry),
    NUM("drain_timeout_ms", K_I64, CFG(drain_timeout_ms), 0, MAX_MS),
    SUB("http", 0, parse_http),
    SUB("peers", 0, parse_peers),
    SUB("routes", 0, parse_routes),
    SUB("schedules", 0, parse_schedules),
    {0},
};

static struct config *config_defaults(void)
{
    struct config *cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        return NULL;
    atomic_init(&cfg->refs, 1);
    cfg->listen = strdup("127.0.0.1:8080");
    cfg->admin.listen = strdup("127.0.0.1:8081");
    cfg->spool.dir = strdup("./ferry-data");
    cfg->log.level = LOG_INFO;
    cfg->log.format = LOG_FORMAT_JSON;
    cfg->ingest.max_body_bytes = 1048576;
    cfg->ingest.max_batch = 1000;
    cfg->ingest.dedupe_window_s = 600;
    cfg->spool.max_bytes = 1073741824;
    cfg->retry = (struct retry_policy){
        .max_attempts = 12, .initial_delay_ms = 1000, .max_delay_ms = 300000,
        .multiplier = 2.0, .jitter = JITTER_FULL, .max_age_s = 86400,
    };
    cfg->drain_timeout_ms = 10000;
    cfg->http.max_connections = 1024;
    cfg->http.max_connections_per_ip = 0;
    cfg->http.connection_timeout_s = 30;
    cfg->http.max_header_bytes = 16384;
    cfg->http.threads = 0; /* auto */
    if (!cfg->listen || !cfg->admin.listen || !cfg->spool.dir) {
        config_destroy(cfg);
        return NULL;
    }
    return cfg;
}

/* The top-level "retry" as the peers must see it; errors are discarded. */
static void prepass_retry(struct config *cfg, json_t *root)
{
    struct config_errors scratch;
    json_t *r = json_object_get(root, "retry");
    if (!r)
        return;
    config_errors_init(&scratch);
    struct ctx c = {.errs = &scratch, .cfg = cfg};
    parse_retry(&c, r, "retry", &cfg->retry);
    config_errors_free(&scratch);
}

struct config *config_parse(const char *json, size_t len, const char *origin,
                            struct config_errors *errs)
{
    json_error_t jerr;
    struct config *cfg = NULL;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!origin)
        origin = "config";
    if (!root) {
        config_errors_add(errs, "", "%s:%d:%d: %s", origin, jerr.line,
                          jerr.column, jerr.text);
        return NULL;
    }
    struct ctx c = {.errs = errs, .peers = json_object_get(root, "peers")};
    cfg = config_defaults();
    if (!cfg) {
        fail(&c, origin, "out of memory");
    } else if (!json_is_object(root)) {
        fail(&c, origin, "the top level must be a JSON object");
    } else {
        c.cfg = cfg;
        prepass_retry(cfg, root);
        parse_fields(&c, root, "", top_fields, cfg);
    }
    json_decref(root);
    if (c.n_err) {
        config_destroy(cfg);
        return NULL;
    }
    return cfg;
}

/* Read all of @f into @b. Returns 0, -E2BIG past the cap, or -errno. */
static int read_all(FILE *f, struct buf *b)
{
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        int rc = buf_append(b, chunk, n);
        if (rc)
            return rc;
    }
    return ferror(f) ? -(errno ? errno : EIO) : 0;
}

struct config *config_load_file(const char *path, struct config_errors *errs)
{
    struct buf b;
    struct config *cfg = NULL;
    buf_init(&b, CONFIG_FILE_MAX);
    FILE *f = fopen(path, "rb");
    if (!f) {
        config_errors_add(errs, path, "%s", strerror(errno));
        goto out;
    }
    errno = 0;
    int rc = read_all(f, &b);
    fclose(f);
    if (rc == -E2BIG)
        config_errors_add(errs, path, "larger than %zu MiB",
                          CONFIG_FILE_MAX >> 20);
    else if (rc)
        config_errors_add(errs, path, "%s", strerror(-rc));
    else
        cfg = config_parse(b.data ? b.data : "", b.len, path, errs);
out:
    buf_free(&b);
    return cfg;
}

/* ---- environment ------------------------------------------------------ */

static const struct field env_fields[] = {
    HOSTPORT("FERRY_LISTEN", CFG(listen)),
    HOSTPORT("FERRY_ADMIN_LISTEN", CFG(admin.listen)),
    STR("FERRY_SPOOL_DIR", CFG(spool.dir)),
    ENUM("FERRY_LOG_LEVEL", CFG(log.level), level_names),
    ENUM("FERRY_LOG_FORMAT", CFG(log.format), format_names),
    STR_NULL("FERRY_INGEST_TOKEN", CFG(ingest.token)),
    STR_NULL("FERRY_ADMIN_TOKEN", CFG(admin.token)),
    {0},
};

/* Used when the caller passes no @get (getenv's type is not const). */
static const char *real_getenv(const char *name)
{
    return getenv(name);
}

int config_apply_env(struct config *cfg, const char *(*get)(const char *name),
                     struct config_errors *errs)
{
    struct ctx c = {.errs = errs, .cfg = cfg};
    if (!get)
        get = real_getenv;
    for (const struct field *f = env_fields; f->key; f++) {
        char path[PATH_LEN];
        const char *val = get(f->key);
        if (!val || !*val)
            continue;
        snprintf(path, sizeof(path), "env %s", f->key);
        json_t *s = json_string_nocheck(val);
        if (!s) {
            fail(&c, path, "out of memory");
            continue;
        }
        parse_value(&c, f, s, path, cfg);
        json_decref(s);
    }
    return c.n_err ? -EINVAL : 0;
}

/* ---- lookup, split, destroy ------------------------------------------- */

long config_peer_index(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_peers; i++)
        if (cfg->peers[i].name && strcmp(cfg->peers[i].name, name) == 0)
            return (long)i;
    return -1;
}

static bool host_char(char ch, bool bracketed)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
        (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_')
        return true;
    return bracketed && (ch == ':' || ch == '%');
}

/* 1-5 decimal digits, at most 65535. */
static int parse_port(const char *s, uint16_t *port)
{
    unsigned long v = 0;
    size_t n = 0;
    for (; s[n]; n++) {
        if (s[n] < '0' || s[n] > '9' || n == 5)
            return -EINVAL;
        v = v * 10 + (unsigned long)(s[n] - '0');
    }
    if (n == 0 || v > 65535)
        return -EINVAL;
    *port = (uint16_t)v;
    return 0;
}

int config_split_hostport(const char *s, char *host, size_t host_len,
                          uint16_t *port)
{
    const char *h = s, *colon;
    bool bracketed = s[0] == '[';
    if (bracketed) {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return -EINVAL;
        h = s + 1;
        colon = close + 1;
        if (!memchr(h, ':', (size_t)(close - h)))
            return -EINVAL; /* brackets are for IPv6 addresses only */
    } else {
        colon = strchr(s, ':');
        if (!colon)
            return -EINVAL;
    }
    size_t hlen = (size_t)(colon - h) - (bracketed ? 1 : 0);
    if (hlen == 0 || hlen >= host_len)
        return -EINVAL;
    for (size_t i = 0; i < hlen; i++)
        if (!host_char(h[i], bracketed))
            return -EINVAL;
    if (parse_port(colon + 1, port))
        return -EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    return 0;
}

static void free_tls_client(struct tls_client_config *t)
{
    free(t->ca_file);
    free(t->cert_file);
    free(t->key_file);
}

static void free_peer(struct peer_config *p)
{
    free(p->name);
    free(p->url);
    for (size_t i = 0; i < p->n_headers; i++) {
        free(p->headers[i].name);
        free(p->headers[i].value);
    }
    free(p->headers);
    free(p->signing_secret);
    free_tls_client(&p->tls);
    free(p->path);
}

struct config *config_ref(struct config *cfg)
{
    atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
    return cfg;
}

void config_destroy(struct config *cfg)
{
    if (!cfg)
        return;
    /* A hand-built config (refs 0) counts as singly owned. */
    if (atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) > 1)
        return;
    free(cfg->listen);
    free(cfg->tls.cert_file);
    free(cfg->tls.key_file);
    free(cfg->admin.listen);
    free(cfg->admin.token);
    free(cfg->admin.tls.cert_file);
    free(cfg->admin.tls.key_file);
    free(cfg->ingest.token);
    free(cfg->spool.dir);
    for (size_t i = 0; i < cfg->n_peers; i++)
        free_peer(&cfg->peers[i]);
    free(cfg->peers);
    for (size_t i = 0; i < cfg->n_routes; i++) {
        free(cfg->routes[i].name);
        filter_destroy(cfg->routes[i].filter);
        free(cfg->routes[i].to);
    }
    free(cfg->routes);
    for (size_t i = 0; i < cfg->n_schedules; i++) {
        free(cfg->schedules[i].name);
        free(cfg->schedules[i].cron);
        free(cfg->schedules[i].event_json);
    }
    free(cfg->schedules);
    free(cfg);
}

/* ---- masked dump ------------------------------------------------------ */

static const char *mask(const char *secret)
{
    return secret ? "***" : NULL;
}

/* Header names that usually carry credentials get their values masked. */
static bool sensitive_header(const char *name)
{
    static const char *const words[] = {"auth", "token", "secret", "key",
                                        "cookie", "password"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strcasestr(name, words[i]))
            return true;
    return false;
}

/* The URL with the password of any "user:password@" masked. */
static json_t *masked_url(const char *url)
{
    const char *auth = strstr(url, "://");
    auth = auth ? auth + 3 : url;
    size_t span = strcspn(auth, "/?#");
    const char *at = memchr(auth, '@', span);
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (!colon)
        return json_string(url);
    struct buf b;
    buf_init(&b, strlen(url) + 4);
    buf_append(&b, url, (size_t)(colon + 1 - url));
    buf_puts(&b, "***");
    buf_puts(&b, at);
    json_t *j = b.data ? json_string(b.data) : NULL;
    buf_free(&b);
    return j;
}

static json_t *dump_tls_server(const struct tls_server_config *t)
{
    return json_pack("{s:s?, s:s?}", "cert_file", t->cert_file, "key_file",
                     t->key_file);
}

static json_t *dump_retry(const struct retry_policy *r)
{
    return json_pack("{s:i, s:I, s:I, s:f, s:s, s:I}", "max_attempts",
                     r->max_attempts, "initial_delay_ms",
                     (json_int_t)r->initial_delay_ms, "max_delay_ms",
                     (json_int_t)r->max_delay_ms, "multiplier", r->multiplier,
                     "jitter", jitter_names[r->jitter], "max_age_s",
                     (json_int_t)r->max_age_s);
}

static json_t *dump_headers(const struct peer_config *p)
{
    json_t *obj = json_object();
    for (size_t i = 0; obj && i < p->n_headers; i++) {
        const struct header_pair *h = &p->headers[i];
        const char *v = sensitive_header(h->name) ? "***" : h->value;
        if (json_object_set_new(obj, h->name, json_string(v))) {
            json_decref(obj);
            obj = NULL;
        }
    }
    return obj;
}

static json_t *dump_http_peer(const struct peer_config *p)
{
    return json_pack(
        "{s:s, s:o, s:s, s:I, s:i, s:i, s:o, s:s?, s:{s:s?, s:s?, s:s?}, "
        "s:{s:i, s:I}, s:o}",
        "type", "http", "url", masked_url(p->url), "mode",
        mode_names[p->mode], "timeout_ms", (json_int_t)p->timeout_ms,
        "max_in_flight", p->max_in_flight, "batch_size", p->batch_size,
        "headers", dump_headers(p),
        "signing_secret", mask(p->signing_secret), "tls", "ca_file",
        p->tls.ca_file, "cert_file", p->tls.cert_file, "key_file",
        p->tls.key_file, "breaker", "failure_threshold",
        p->breaker.failure_threshold, "open_ms", (json_int_t)p->breaker.open_ms,
        "retry", dump_retry(&p->retry));
}

static json_t *dump_peer(const struct peer_config *p)
{
    switch (p->type) {
    case PEER_HTTP:
        return dump_http_peer(p);
    case PEER_FILE:
        return json_pack("{s:s, s:s, s:o}", "type", "file", "path", p->path,
                         "retry", dump_retry(&p->retry));
    case PEER_STDOUT:
        return json_pack("{s:s, s:o}", "type", "stdout", "retry",
                         dump_retry(&p->retry));
    }
    return NULL;
}

static json_t *dump_peers(const struct config *cfg)
{
    json_t *obj = json_object();
    for (size_t i = 0; obj && i < cfg->n_peers; i++) {
        if (json_object_set_new(obj, cfg->peers[i].name,
                                dump_peer(&cfg->peers[i]))) {
            json_decref(obj);
            obj = NULL;
        }
    }
    return obj;
}

static json_t *dump_route(const struct config *cfg,
                          const struct route_config *r)
{
    json_t *to = json_array();
    for (size_t i = 0; to && i < r->n_to; i++) {
        if (json_array_append_new(to, json_string(cfg->peers[r->to[i]].name))) {
            json_decref(to);
            to = NULL;
        }
    }
    json_t *j = json_pack("{s:s, s:o, s:s}", "name", r->name, "to", to,
                          "ordering", ordering_names[r->ordering]);
    /* A route without a filter has no "filter" key. */
    if (j && r->filter &&
        json_object_set_new(j, "filter", filter_to_json(r->filter))) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

static json_t *dump_array(const struct config *cfg, size_t n,
                          json_t *(*one)(const struct config *, size_t))
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        if (json_array_append_new(arr, one(cfg, i))) {
            json_decref(arr);
            arr = NULL;
        }
    }
    return arr;
}

static json_t *dump_route_at(const struct config *cfg, size_t i)
{
    return dump_route(cfg, &cfg->routes[i]);
}

static json_t *dump_schedule_at(const struct config *cfg, size_t i)
{
    const struct schedule_config *s = &cfg->schedules[i];
    return json_pack("{s:s, s:s, s:o}", "name", s->name, "cron", s->cron,
                     "event", json_loads(s->event_json, 0, NULL));
}

static json_t *dump_http(const struct config *cfg)
{
    json_t *threads = cfg->http.threads ? json_integer(cfg->http.threads)
                                        : json_string("auto");
    return json_pack("{s:i, s:i, s:i, s:I, s:o}", "max_connections",
                     cfg->http.max_connections, "max_connections_per_ip",
                     cfg->http.max_connections_per_ip, "connection_timeout_s",
                     cfg->http.connection_timeout_s, "max_header_bytes",
                     (json_int_t)cfg->http.max_header_bytes, "threads",
                     threads);
}

static json_t *dump_config(const struct config *cfg)
{
    return json_pack(
        "{s:s, s:o, s:{s:s, s:s?, s:o}, s:{s:s, s:s}, s:{s:s?, s:I, s:I, s:I},"
        " s:{s:s, s:I}, s:o, s:I, s:o, s:o, s:o, s:o}",
        "listen", cfg->listen, "tls", dump_tls_server(&cfg->tls), "admin",
        "listen", cfg->admin.listen, "token", mask(cfg->admin.token), "tls",
        dump_tls_server(&cfg->admin.tls), "log", "level",
        level_names[cfg->log.level], "format", format_names[cfg->log.format],
        "ingest", "token", mask(cfg->ingest.token), "max_body_bytes",
        (json_int_t)cfg->ingest.max_body_bytes, "max_batch",
        (json_int_t)cfg->ingest.max_batch, "dedupe_window_s",
        (json_int_t)cfg->ingest.dedupe_window_s, "spool", "dir",
        cfg->spool.dir, "max_bytes", (json_int_t)cfg->spool.max_bytes,
        "retry", dump_retry(&cfg->retry), "drain_timeout_ms",
        (json_int_t)cfg->drain_timeout_ms, "http", dump_http(cfg), "peers",
        dump_peers(cfg), "routes",
        dump_array(cfg, cfg->n_routes, dump_route_at), "schedules",
        dump_array(cfg, cfg->n_schedules, dump_schedule_at));
}

char *config_dump_masked(const struct config *cfg)
{
    json_t *root = dump_config(cfg);
    char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    return text;
}
