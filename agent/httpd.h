/*
 * httpd: the small libmicrohttpd wrapper both listeners share: start a
 * daemon on "HOST:PORT" with an internal thread pool and suspend/resume
 * enabled, plain or HTTPS (GnuTLS inside libmicrohttpd), with the limits of
 * the config's "http" object, and answer with JSON bodies (the contract's
 * error shape).
 */
#ifndef FERRY_HTTPD_H
#define FERRY_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <microhttpd.h>

struct config;

struct httpd_options {
    const char *listen;        /* "HOST:PORT"; port 0 picks a free one */
    const char *label;         /* prefix of listen errors; NULL: "listen" */
    unsigned threads;          /* thread pool size, >= 1 */
    /* Open connections at most; one past it is accepted and closed at
     * once, not left in the backlog. 0: libmicrohttpd's default. */
    unsigned connection_limit;
    unsigned per_ip_limit;     /* connections from one address; 0: no limit */
    /* An idle connection is closed after this, and each request must be in
     * (request line, headers and body) within it: from the connection's
     * start or the previous answer to the request line, and from there to
     * the body's end, however slowly it trickles. 0: none. */
    unsigned timeout_s;
    /* Request line and headers: up to this many bytes (in up to a couple
     * of hundred lines) are served; headers that outgrow twice this get
     * libmicrohttpd's 431, or a closed connection when they just fit and
     * leave no room for the answer. 0: libmicrohttpd's default. */
    size_t max_header_bytes;
    /* HTTPS: both PEM files, or neither for plain HTTP. tls_path names
     * them in errors ("tls", "admin.tls"). */
    const char *tls_cert_file;
    const char *tls_key_file;
    const char *tls_path;
    MHD_AccessHandlerCallback handler;
    void *handler_cls;
    MHD_RequestCompletedCallback completed; /* may be NULL */
    void *completed_cls;
};

/* A running listener: the daemon and the TLS material it was given. */
struct httpd;

/* "threads": "auto" never starts more pool threads than this. */
#define HTTPD_AUTO_THREADS_MAX 4

/**
 * The pool size for "threads": "auto": one thread per CPU this process may
 * run on (its affinity mask, lowered to a cgroup v2 cpu.max quota), at
 * most HTTPD_AUTO_THREADS_MAX. On one CPU a second pool thread only adds
 * context switches to every request; the spool writer and the dispatcher
 * have threads of their own.
 */
unsigned httpd_auto_threads(void);

/**
 * Fill the limits of @opt (connections, timeout, header bytes, per-IP
 * limit and, when @threads_too, the thread pool: its "threads", or
 * httpd_auto_threads() for "auto", at most the connection limit) from
 * @cfg->http. The
 * listen address, TLS files and handlers are the caller's.
 */
void httpd_options_from_config(struct httpd_options *opt,
                               const struct config *cfg, bool threads_too);

/**
 * Start a daemon. With TLS, the PEM files are read and checked first (a
 * missing file, no certificate, an encrypted key or a key that does not
 * match the certificate are errors) and kept in memory until
 * httpd_stop(). Returns the listener, or NULL with a message in @err
 * naming the address or the file ("listen 127.0.0.1:8080: Address already
 * in use", "tls.cert_file /x.pem: No such file or directory"); nothing is
 * left running on failure.
 */
struct httpd *httpd_start(const struct httpd_options *opt, char *err,
                          size_t err_len);

/**
 * Stop the daemon (waiting for its threads), then wipe and free the TLS
 * material. NULL-safe.
 */
void httpd_stop(struct httpd *h);

/** The port the daemon is bound to (useful with port 0). */
uint16_t httpd_port(const struct httpd *h);

/**
 * Queue a response with @body (copied). @retry_after (seconds) is added as
 * Retry-After when > 0. Returns MHD_YES/MHD_NO as MHD_queue_response.
 */
enum MHD_Result httpd_reply(struct MHD_Connection *c, unsigned status,
                            const char *content_type, const char *body,
                            size_t len, int retry_after);

/**
 * Queue the contract's error JSON:
 * {"error": CODE, "message": TEXT[, "index": N][, "attribute": A]}.
 * @index < 0 and empty/NULL @attribute are left out.
 */
enum MHD_Result httpd_reply_error(struct MHD_Connection *c, unsigned status,
                                  const char *code, const char *message,
                                  long index, const char *attribute,
                                  int retry_after);

/** Case-insensitive media-type comparison ignoring parameters and blanks. */
int httpd_media_type_is(const char *content_type, const char *want);

#endif
