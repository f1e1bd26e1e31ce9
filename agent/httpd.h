/*
 * httpd: the small libmicrohttpd wrapper both listeners share: start a
 * daemon on "HOST:PORT" with an internal thread pool and suspend/resume
 * enabled, and answer with JSON bodies (the contract's error shape).
 */
#ifndef FERRY_HTTPD_H
#define FERRY_HTTPD_H

#include <stddef.h>
#include <stdint.h>
#include <microhttpd.h>

struct httpd_options {
    const char *listen;        /* "HOST:PORT"; port 0 picks a free one */
    unsigned threads;          /* thread pool size, >= 1 */
    unsigned connection_limit; /* 0: libmicrohttpd's default */
    unsigned timeout_s;        /* idle connection timeout */
    MHD_AccessHandlerCallback handler;
    void *handler_cls;
    MHD_RequestCompletedCallback completed; /* may be NULL */
    void *completed_cls;
};

/**
 * Start a daemon. Returns it, or NULL with a message in @err naming the
 * address ("listen 127.0.0.1:8080: Address already in use").
 */
struct MHD_Daemon *httpd_start(const struct httpd_options *opt, char *err,
                               size_t err_len);

/** The port the daemon is bound to (useful with port 0). */
uint16_t httpd_port(struct MHD_Daemon *d);

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
