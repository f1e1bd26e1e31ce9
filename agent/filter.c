/*
 * filter: parse, match and print CloudEvents Subscriptions API filters
 * (see filter.h).
 *
 * A filter object holds exactly one dialect key. exact/prefix/suffix hold
 * a non-empty object of attribute -> string, every pair of which must hold;
 * all/any hold a non-empty array of filters; not holds one filter. Parsing
 * keeps going after an error so that one check-config run reports every
 * problem, each with its JSON path.
 */
#include "filter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_LEN 512
#define ATTR_NAME_MAX 20

/* Indexed by enum filter_kind. */
static const char *const dialect_names[] = {
    "exact", "prefix", "suffix", "all", "any", "not",
};
#define N_DIALECTS (sizeof(dialect_names) / sizeof(dialect_names[0]))

static struct filter *parse(json_t *j, const char *path,
                            struct config_errors *errs, int depth);

/* "path.key" into out[PATH_LEN]; a path that does not fit ends in "...". */
static const char *key_path(char *out, const char *path, const char *key)
{
    int n = snprintf(out, PATH_LEN, "%s.%s", path, key);
    if (n < 0 || n >= PATH_LEN)
        memcpy(out + PATH_LEN - 4, "...", 4);
    return out;
}

static const char *index_path(char *out, const char *path, size_t i)
{
    int n = snprintf(out, PATH_LEN, "%s[%zu]", path, i);
    if (n < 0 || n >= PATH_LEN)
        memcpy(out + PATH_LEN - 4, "...", 4);
    return out;
}

/* ---- parsing ---------------------------------------------------------- */

static int dialect(const char *key)
{
    for (size_t i = 0; i < N_DIALECTS; i++)
        if (strcmp(key, dialect_names[i]) == 0)
            return (int)i;
    return -1;
}

/* CloudEvents attribute names: 1-20 lower-case ASCII letters or digits. */
static bool valid_attr_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > ATTR_NAME_MAX)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')))
            return false;
    return true;
}

static struct filter *new_filter(enum filter_kind kind, size_t n_attrs,
                                 size_t n_children)
{
    struct filter *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->kind = kind;
    if (n_attrs)
        f->attrs = calloc(n_attrs, sizeof(*f->attrs));
    if (n_children)
        f->children = calloc(n_children, sizeof(*f->children));
    if ((n_attrs && !f->attrs) || (n_children && !f->children)) {
        filter_destroy(f);
        return NULL;
    }
    return f;
}

/* Copy one attribute pair into f->attrs. Returns false on -ENOMEM. */
static bool add_attr(struct filter *f, const char *name, json_t *val)
{
    struct filter_attr *a = &f->attrs[f->n_attrs++];
    size_t len = json_string_length(val);
    a->name = strdup(name);
    a->value = malloc(len + 1);
    if (!a->name || !a->value)
        return false;
    memcpy(a->value, json_string_value(val), len);
    a->value[len] = '\0';
    a->value_len = len;
    return true;
}

/* exact / prefix / suffix: { attribute: string, ... } */
static struct filter *parse_attrs(enum filter_kind kind, json_t *v,
                                  const char *path, struct config_errors *errs)
{
    if (!json_is_object(v)) {
        config_errors_add(errs, path, "expected an object");
        return NULL;
    }
    if (json_object_size(v) == 0) {
        config_errors_add(errs, path, "must name at least one attribute");
        return NULL;
    }
    struct filter *f = new_filter(kind, json_object_size(v), 0);
    bool ok = f != NULL;
    const char *name;
    json_t *val;
    json_object_foreach(v, name, val) {
        char sub[PATH_LEN];
        key_path(sub, path, name);
        if (!valid_attr_name(name)) {
            config_errors_add(errs, sub, "attribute names are 1-20 lower-case "
                              "letters or digits");
            ok = false;
        } else if (!json_is_string(val)) {
            config_errors_add(errs, sub, "expected a string");
            ok = false;
        } else if (f && !add_attr(f, name, val)) {
            config_errors_add(errs, sub, "out of memory");
            ok = false;
        }
    }
    if (!f)
        config_errors_add(errs, path, "out of memory");
    if (!ok) {
        filter_destroy(f);
        return NULL;
    }
    return f;
}

/* all / any: [ filter, ... ] */
static struct filter *parse_list(enum filter_kind kind, json_t *v,
                                 const char *path, struct config_errors *errs,
                                 int depth)
{
    if (!json_is_array(v)) {
        config_errors_add(errs, path, "expected an array");
        return NULL;
    }
    if (json_array_size(v) == 0) {
        config_errors_add(errs, path, "must hold at least one filter");
        return NULL;
    }
    struct filter *f = new_filter(kind, 0, json_array_size(v));
    bool ok = f != NULL;
    size_t i;
    json_t *child;
    json_array_foreach(v, i, child) {
        char sub[PATH_LEN];
        index_path(sub, path, i);
        struct filter *c = parse(child, sub, errs, depth + 1);
        if (c && f)
            f->children[f->n_children++] = c;
        else
            filter_destroy(c);
        ok = ok && c;
    }
    if (!f)
        config_errors_add(errs, path, "out of memory");
    if (!ok) {
        filter_destroy(f);
        return NULL;
    }
    return f;
}

/* not: filter */
static struct filter *parse_not(json_t *v, const char *path,
                                struct config_errors *errs, int depth)
{
    struct filter *c = parse(v, path, errs, depth + 1);
    if (!c)
        return NULL;
    struct filter *f = new_filter(FILTER_NOT, 0, 1);
    if (!f) {
        config_errors_add(errs, path, "out of memory");
        filter_destroy(c);
        return NULL;
    }
    f->children[0] = c;
    f->n_children = 1;
    return f;
}

static struct filter *parse_dialect(enum filter_kind kind, json_t *v,
                                    const char *path,
                                    struct config_errors *errs, int depth)
{
    switch (kind) {
    case FILTER_EXACT:
    case FILTER_PREFIX:
    case FILTER_SUFFIX:
        return parse_attrs(kind, v, path, errs);
    case FILTER_ALL:
    case FILTER_ANY:
        return parse_list(kind, v, path, errs, depth);
    case FILTER_NOT:
        return parse_not(v, path, errs, depth);
    }
    return NULL;
}

/*
 * One filter object. Every key is checked (and every dialect parsed) even
 * after an error, so that all problems are reported in one go.
 */
static struct filter *parse(json_t *j, const char *path,
                            struct config_errors *errs, int depth)
{
    if (!json_is_object(j)) {
        config_errors_add(errs, path, "expected an object");
        return NULL;
    }
    if (depth > FILTER_MAX_DEPTH) {
        config_errors_add(errs, path, "filters nest deeper than %d levels",
                          FILTER_MAX_DEPTH);
        return NULL;
    }
    struct filter *f = NULL;
    size_t n_dialects = 0;
    bool ok = true;
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v) {
        char sub[PATH_LEN];
        key_path(sub, path, key);
        int kind = dialect(key);
        if (kind < 0) {
            config_errors_add(errs, sub, "unknown filter dialect (expected "
                              "exact, prefix, suffix, all, any or not)");
            ok = false;
            continue;
        }
        n_dialects++;
        struct filter *d = parse_dialect((enum filter_kind)kind, v, sub, errs,
                                         depth);
        ok = ok && d;
        if (!f)
            f = d;
        else
            filter_destroy(d);
    }
    if (n_dialects > 1) {
        config_errors_add(errs, path, "must hold exactly one dialect; "
                          "combine several with \"all\"");
        ok = false;
    } else if (n_dialects == 0 && ok) {
        config_errors_add(errs, path, "must hold one of exact, prefix, "
                          "suffix, all, any or not");
        ok = false;
    }
    if (!ok) {
        filter_destroy(f);
        return NULL;
    }
    return f;
}

struct filter *filter_parse(json_t *j, const char *path,
                            struct config_errors *errs)
{
    return parse(j, path ? path : "", errs, 1);
}

void filter_destroy(struct filter *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n_attrs; i++) {
        free(f->attrs[i].name);
        free(f->attrs[i].value);
    }
    free(f->attrs);
    for (size_t i = 0; i < f->n_children; i++)
        filter_destroy(f->children[i]);
    free(f->children);
    free(f);
}

/* ---- matching (hot path: no allocation) ------------------------------- */

static bool match_value(enum filter_kind kind, const char *v,
                        const struct filter_attr *a)
{
    size_t n = strlen(v);
    switch (kind) {
    case FILTER_EXACT:
        return n == a->value_len && memcmp(v, a->value, n) == 0;
    case FILTER_PREFIX:
        return n >= a->value_len && memcmp(v, a->value, a->value_len) == 0;
    case FILTER_SUFFIX:
        return n >= a->value_len &&
               memcmp(v + n - a->value_len, a->value, a->value_len) == 0;
    default:
        return false;
    }
}

static bool match_attrs(const struct filter *f, filter_lookup_fn get,
                        void *arg)
{
    char scratch[FILTER_SCRATCH_LEN];
    for (size_t i = 0; i < f->n_attrs; i++) {
        const struct filter_attr *a = &f->attrs[i];
        const char *v = get(arg, a->name, scratch, sizeof(scratch));
        if (!v || !match_value(f->kind, v, a))
            return false;
    }
    return true;
}

bool filter_match(const struct filter *f, filter_lookup_fn get, void *arg)
{
    if (!f)
        return true;
    switch (f->kind) {
    case FILTER_EXACT:
    case FILTER_PREFIX:
    case FILTER_SUFFIX:
        return match_attrs(f, get, arg);
    case FILTER_ALL:
        for (size_t i = 0; i < f->n_children; i++)
            if (!filter_match(f->children[i], get, arg))
                return false;
        return true;
    case FILTER_ANY:
        for (size_t i = 0; i < f->n_children; i++)
            if (filter_match(f->children[i], get, arg))
                return true;
        return false;
    case FILTER_NOT:
        return f->n_children == 1 && !filter_match(f->children[0], get, arg);
    }
    return false;
}

/* ---- printing ---------------------------------------------------------- */

static json_t *attrs_to_json(const struct filter *f)
{
    json_t *obj = json_object();
    for (size_t i = 0; obj && i < f->n_attrs; i++) {
        const struct filter_attr *a = &f->attrs[i];
        if (json_object_set_new(obj, a->name,
                                json_stringn(a->value, a->value_len))) {
            json_decref(obj);
            obj = NULL;
        }
    }
    return obj;
}

static json_t *children_to_json(const struct filter *f)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < f->n_children; i++) {
        if (json_array_append_new(arr, filter_to_json(f->children[i]))) {
            json_decref(arr);
            arr = NULL;
        }
    }
    return arr;
}

json_t *filter_to_json(const struct filter *f)
{
    if (!f || (unsigned)f->kind >= N_DIALECTS)
        return NULL;
    json_t *body;
    switch (f->kind) {
    case FILTER_ALL:
    case FILTER_ANY:
        body = children_to_json(f);
        break;
    case FILTER_NOT:
        body = f->n_children == 1 ? filter_to_json(f->children[0]) : NULL;
        break;
    default:
        body = attrs_to_json(f);
        break;
    }
    /* "o" steals body, also when json_pack fails or body is NULL. */
    return json_pack("{s:o}", dialect_names[f->kind], body);
}
