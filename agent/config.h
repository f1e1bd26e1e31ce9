/*
 * config: Ferry's configuration, parsed from JSON (a file or the embedded
 * default), overridden by FERRY_* environment variables, and checked
 * strictly: unknown keys, wrong types, bad values and references to
 * undefined peers are errors, each reported with its JSON path, e.g.
 *     routes[0].to[1]: no peer named "shiping"
 *
 * A loaded config is immutable: the main thread builds it, every other
 * thread only reads it (Fluent Bit: "set at init, read-only afterwards").
 * Pure module: no I/O beyond reading the file, no threads.
 */
#ifndef FERRY_CONFIG_H
#define FERRY_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"

/* ---- errors ---------------------------------------------------------- */

/** All the errors of one load, in document order ("path: message"). */
struct config_errors {
    char **items;
    size_t n;
};

void config_errors_init(struct config_errors *e);
void config_errors_free(struct config_errors *e);
/** Append "PATH: MESSAGE". An empty path prints the message alone. */
void config_errors_add(struct config_errors *e, const char *path,
                       const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- the model ------------------------------------------------------- */

enum peer_type { PEER_HTTP = 0, PEER_STDOUT, PEER_FILE };
enum peer_mode { PEER_MODE_BINARY = 0, PEER_MODE_STRUCTURED, PEER_MODE_BATCH };
enum retry_jitter { JITTER_FULL = 0, JITTER_EQUAL, JITTER_NONE };
enum route_ordering { ORDERING_NONE = 0, ORDERING_PARTITIONKEY };

struct retry_policy {
    int max_attempts;         /* total attempts, >= 1 */
    int64_t initial_delay_ms; /* >= 0 */
    int64_t max_delay_ms;     /* >= initial_delay_ms */
    double multiplier;        /* >= 1.0 */
    enum retry_jitter jitter;
    int64_t max_age_s;        /* > 0 */
};

struct breaker_policy {
    int failure_threshold; /* consecutive failures that open it, >= 1 */
    int64_t open_ms;       /* how long it stays open before a probe */
};

struct tls_server_config {
    char *cert_file; /* NULL: plain HTTP */
    char *key_file;
};

struct tls_client_config {
    char *ca_file;   /* NULL: system CAs */
    char *cert_file; /* client certificate (mTLS), or NULL */
    char *key_file;
};

struct header_pair {
    char *name;
    char *value;
};

struct peer_config {
    char *name;
    enum peer_type type;
    /* http */
    char *url;
    enum peer_mode mode;
    int64_t timeout_ms;
    int max_in_flight;    /* requests at once */
    int batch_size;       /* batch mode: most events in one request */
    struct header_pair *headers;
    size_t n_headers;
    char *signing_secret; /* NULL: unsigned */
    struct tls_client_config tls;
    struct breaker_policy breaker;
    /* file */
    char *path;
    /* every type: the top-level retry merged with the peer's overrides */
    struct retry_policy retry;
};

enum filter_kind {
    FILTER_EXACT = 0,
    FILTER_PREFIX,
    FILTER_SUFFIX,
    FILTER_ALL,
    FILTER_ANY,
    FILTER_NOT,
};

struct filter_attr {
    char *name;  /* attribute name, lower case */
    char *value;
    size_t value_len;
};

/** CloudEvents Subscriptions API filter dialects. */
struct filter {
    enum filter_kind kind;
    /* EXACT / PREFIX / SUFFIX: every pair must hold */
    struct filter_attr *attrs;
    size_t n_attrs;
    /* ALL / ANY: n_children filters; NOT: exactly one */
    struct filter **children;
    size_t n_children;
};

struct route_config {
    char *name;
    struct filter *filter; /* NULL: matches every event */
    size_t *to;            /* indexes into config.peers */
    size_t n_to;
    enum route_ordering ordering;
};

struct schedule_config {
    char *name;
    char *cron;        /* 5-field cron or "@every <duration>" */
    char *event_json;  /* the event template, compact JSON text */
};

struct config {
    /* References: the loader's, plus one per request or thread still using
     * it after a reload replaced it (config_ref / config_destroy). */
    atomic_int refs;
    char *listen; /* "HOST:PORT" */
    struct tls_server_config tls;
    struct {
        char *listen;
        char *token; /* NULL: no auth */
        struct tls_server_config tls;
    } admin;
    struct {
        enum log_level level;
        enum log_format format;
    } log;
    struct {
        char *token; /* NULL: no auth */
        size_t max_body_bytes;
        size_t max_batch;
        int64_t dedupe_window_s; /* 0: no dedupe */
    } ingest;
    struct {
        char *dir;
        int64_t max_bytes;
    } spool;
    struct retry_policy retry; /* top-level defaults */
    int64_t drain_timeout_ms;  /* extension: how long SIGTERM waits for in-flight deliveries */
    /* Extension: limits of both listeners, applied at start (a reload
     * that changes them takes effect after a restart). See httpd.h. */
    struct {
        int max_connections;        /* per listener; past it: closed */
        int max_connections_per_ip; /* 0: no per-address limit */
        int connection_timeout_s;   /* idle, and to receive a request */
        size_t max_header_bytes;    /* request line + headers */
        int threads;                /* main listener's pool, 0: auto; admin: 1 */
    } http;
    struct peer_config *peers;
    size_t n_peers;
    struct route_config *routes;
    size_t n_routes;
    struct schedule_config *schedules;
    size_t n_schedules;
};

/* ---- loading --------------------------------------------------------- */

/** The embedded default: 127.0.0.1:8080, ./ferry-data, all to stdout. */
extern const char CONFIG_DEFAULT_JSON[];

/**
 * Parse and check a config from JSON text. @origin names the source in
 * JSON syntax errors ("ferry.json:3:5: ..."). Returns a new config, or
 * NULL with every problem found appended to @errs.
 */
struct config *config_parse(const char *json, size_t len, const char *origin,
                            struct config_errors *errs);

/** Read @path and config_parse() it. NULL with errors on failure. */
struct config *config_load_file(const char *path, struct config_errors *errs);

/**
 * Apply FERRY_LISTEN, FERRY_ADMIN_LISTEN, FERRY_SPOOL_DIR, FERRY_LOG_LEVEL,
 * FERRY_LOG_FORMAT, FERRY_INGEST_TOKEN, FERRY_ADMIN_TOKEN through @get
 * (getenv in production, a table in tests). Returns 0, or -EINVAL with
 * errors (path "env FERRY_LOG_LEVEL") appended; the config may then be
 * partly updated and should be destroyed.
 */
int config_apply_env(struct config *cfg, const char *(*get)(const char *name),
                     struct config_errors *errs);

/** Take another reference to @cfg (returned for convenience). */
struct config *config_ref(struct config *cfg);

/** Drop a reference; the last one frees everything. NULL-safe. */
void config_destroy(struct config *cfg);

/** Index of the peer named @name, or -1. */
long config_peer_index(const struct config *cfg, const char *name);

/**
 * Split "HOST:PORT" / "[V6]:PORT". Writes a NUL-terminated host (brackets
 * removed) into @host. Returns 0 or -EINVAL.
 */
int config_split_hostport(const char *s, char *host, size_t host_len,
                          uint16_t *port);

/**
 * The effective config as JSON text with secrets (tokens, signing secrets)
 * masked as "***", for the start-up log. Caller frees.
 */
char *config_dump_masked(const struct config *cfg);

#endif
