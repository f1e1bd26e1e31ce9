/*
 * peer_http: delivery to an HTTP peer by POST, in binary mode (ce-*
 * headers, body = data) or structured mode (the whole event as
 * application/cloudevents+json), per the CloudEvents HTTP binding.
 *
 * Each peer keeps a small free-list of configured easy handles, at most
 * max_in_flight of them: a handle is set up once (URL, timeouts, TLS,
 * callbacks) and only its per-request options change afterwards. The
 * connections themselves live in the dispatcher's multi handle's pool, so
 * keep-alive works across handles.
 *
 * The response body is read and thrown away (a reply event is a later
 * feature); only the status and Retry-After matter now.
 */
#include "peer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifndef FERRY_VERSION
#define FERRY_VERSION "dev"
#endif

/* The largest request body we build (decoded data_base64 or structured
 * JSON): far above ingest's max_body_bytes. */
#define BODY_MAX ((size_t)1 << 30)
/* An idle handle keeps buffers up to this size for the next request. */
#define KEEP_BUF_MAX ((size_t)1 << 20)

/* One configured easy handle and its per-request buffers. */
struct http_xfer {
    CURL *easy;
    struct curl_slist *headers;
    struct buf body; /* request body when it had to be built */
    struct buf line; /* scratch for "Name: value" */
    char retry_after[80];
    char errbuf[CURL_ERROR_SIZE];
    struct http_xfer *next; /* free-list */
};

struct http_peer {
    const struct peer_config *pc;
    struct http_xfer *idle; /* free-list of configured handles */
    size_t n_idle;
    size_t max_idle;
};

/* ---- handles ---------------------------------------------------------- */

static size_t discard_cb(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

/* Remembers Retry-After of the final response (a new status line, e.g.
 * after a 1xx, starts over). */
static size_t header_cb(char *p, size_t size, size_t n, void *arg)
{
    struct http_xfer *x = arg;
    size_t len = size * n;
    static const char name[] = "retry-after:";
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        x->retry_after[0] = '\0';
    } else if (len > sizeof(name) - 1 &&
               strncasecmp(p, name, sizeof(name) - 1) == 0) {
        size_t vlen = len - (sizeof(name) - 1);
        if (vlen >= sizeof(x->retry_after))
            vlen = sizeof(x->retry_after) - 1; /* retry_after_parse rejects */
        memcpy(x->retry_after, p + sizeof(name) - 1, vlen);
        x->retry_after[vlen] = '\0';
    }
    return len;
}

static CURLcode set_protocols(CURL *e)
{
#if LIBCURL_VERSION_NUM >= 0x075500
    return curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    return curl_easy_setopt(e, CURLOPT_PROTOCOLS,
                            (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
}

/* The options every request of this peer shares. */
static CURLcode setup_easy(CURL *e, const struct peer_config *pc,
                           struct http_xfer *x)
{
    CURLcode rc = curl_easy_setopt(e, CURLOPT_URL, pc->url);
    if (!rc)
        rc = curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    if (!rc)
        rc = set_protocols(e);
    if (!rc && pc->timeout_ms > 0)
        rc = curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)pc->timeout_ms);
    if (!rc)
        rc = curl_easy_setopt(e, CURLOPT_USERAGENT, "ferry/" FERRY_VERSION);
    if (!rc)
        rc = curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    if (!rc)
        rc = curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    if (!rc)
        rc = curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard_cb);
    if (!rc)
        rc = curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    /* TLS to the peer: the CA to trust and an optional client cert. */
    if (!rc && pc->tls.ca_file)
        rc = curl_easy_setopt(e, CURLOPT_CAINFO, pc->tls.ca_file);
    if (!rc && pc->tls.cert_file)
        rc = curl_easy_setopt(e, CURLOPT_SSLCERT, pc->tls.cert_file);
    if (!rc && pc->tls.key_file)
        rc = curl_easy_setopt(e, CURLOPT_SSLKEY, pc->tls.key_file);
    return rc;
}

static void xfer_destroy(struct http_xfer *x)
{
    if (!x)
        return;
    if (x->easy)
        curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->headers);
    buf_free(&x->body);
    buf_free(&x->line);
    free(x);
}

static struct http_xfer *xfer_create(const struct peer_config *pc)
{
    struct http_xfer *x = calloc(1, sizeof(*x));
    if (!x)
        return NULL;
    buf_init(&x->body, BODY_MAX);
    buf_init(&x->line, BODY_MAX);
    x->easy = curl_easy_init();
    if (!x->easy || setup_easy(x->easy, pc, x) != CURLE_OK) {
        xfer_destroy(x);
        return NULL;
    }
    return x;
}

static struct http_xfer *take_xfer(struct http_peer *hp)
{
    struct http_xfer *x = hp->idle;
    if (!x)
        return xfer_create(hp->pc);
    hp->idle = x->next;
    hp->n_idle--;
    x->next = NULL;
    return x;
}

/* Back to the free-list, dropping what this request built. */
static void put_xfer(struct http_peer *hp, struct http_xfer *x)
{
    curl_slist_free_all(x->headers);
    x->headers = NULL;
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(x->easy, CURLOPT_PRIVATE, NULL);
    if (x->body.cap > KEEP_BUF_MAX)
        buf_free(&x->body);
    buf_reset(&x->body);
    buf_reset(&x->line);
    if (hp->n_idle >= hp->max_idle) {
        xfer_destroy(x);
        return;
    }
    x->next = hp->idle;
    hp->idle = x;
    hp->n_idle++;
}

/* ---- requests --------------------------------------------------------- */

static int add_header(struct http_xfer *x, const char *name, const char *value)
{
    buf_reset(&x->line);
    /* "Name:" with nothing after it tells curl to send no such header */
    int rc = *value ? buf_printf(&x->line, "%s: %s", name, value)
                    : buf_printf(&x->line, "%s:", name);
    if (rc)
        return rc;
    struct curl_slist *l = curl_slist_append(x->headers, x->line.data);
    if (!l)
        return -ENOMEM;
    x->headers = l;
    return 0;
}

struct binary_ctx {
    struct http_xfer *x;
    bool has_type;
};

static int binary_header_cb(void *arg, const char *name, const char *value)
{
    struct binary_ctx *bc = arg;
    if (strcasecmp(name, "Content-Type") == 0)
        bc->has_type = true;
    return add_header(bc->x, name, value);
}

/* True when @v can go into a header line as is (no CR, LF or controls). */
static bool header_safe(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* W3C Trace Context travels as ce-traceparent already (an extension
 * attribute); tracing middleware at the peer looks for the plain header. */
static int add_trace_headers(struct http_xfer *x, const struct event *ev)
{
    static const char *const names[] = {"traceparent", "tracestate"};
    for (size_t i = 0; i < 2; i++) {
        char scratch[64];
        const char *v = event_attr(ev, names[i], scratch, sizeof(scratch));
        if (!v || !header_safe(v))
            continue;
        int rc = add_header(x, names[i], v);
        if (rc)
            return rc;
    }
    return 0;
}

static int build_body(const struct peer_config *pc, struct http_xfer *x,
                      const struct event *ev, const char **body, size_t *len)
{
    if (pc->mode == PEER_MODE_STRUCTURED) {
        int rc = event_to_structured(ev, &x->body);
        if (rc)
            return rc;
        *body = x->body.data;
        *len = x->body.len;
        return add_header(x, "Content-Type",
                          "application/cloudevents+json; charset=utf-8");
    }
    struct binary_ctx bc = {.x = x, .has_type = false};
    int rc = event_binary_headers(ev, binary_header_cb, &bc, &x->body, body,
                                  len);
    if (rc)
        return rc;
    /* No datacontenttype: say nothing rather than let curl claim
     * application/x-www-form-urlencoded. */
    return bc.has_type ? 0 : add_header(x, "Content-Type", "");
}

static int build_request(const struct peer_config *pc, struct http_xfer *x,
                         const struct event *ev, const char **body,
                         size_t *len)
{
    int rc = build_body(pc, x, ev, body, len);
    if (!rc)
        rc = add_trace_headers(x, ev);
    for (size_t i = 0; !rc && i < pc->n_headers; i++)
        rc = add_header(x, pc->headers[i].name, pc->headers[i].value);
    if (!rc)
        rc = add_header(x, "Prefer", "reply");
    if (!rc) /* an empty value removes the header: no 100-continue pause */
        rc = add_header(x, "Expect", "");
    /* Signing (Standard Webhooks) goes here, once the body is final. */
    return rc;
}

static int http_start(void *ctx, struct peer_job *job, CURL **easy)
{
    struct http_peer *hp = ctx;
    const char *body = NULL;
    size_t len = 0;
    struct http_xfer *x = take_xfer(hp);
    if (!x) {
        snprintf(job->res.error, sizeof(job->res.error),
                 "cannot create a curl handle");
        return -ENOMEM;
    }
    x->retry_after[0] = '\0';
    x->errbuf[0] = '\0';
    int rc = build_request(hp->pc, x, &job->ev, &body, &len);
    if (!rc &&
        (curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->headers) ||
         curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE,
                          (curl_off_t)len) ||
         curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, body ? body : "") ||
         curl_easy_setopt(x->easy, CURLOPT_PRIVATE, (void *)job)))
        rc = -ENOMEM;
    if (rc) {
        snprintf(job->res.error, sizeof(job->res.error),
                 "cannot build the request: %s", strerror(-rc));
        put_xfer(hp, x);
        return rc;
    }
    job->io = x;
    *easy = x->easy;
    return 0;
}

static void http_finish(void *ctx, struct peer_job *job, CURLcode rc,
                        int64_t now_ms)
{
    struct http_peer *hp = ctx;
    struct http_xfer *x = job->io;
    struct peer_result *res = &job->res;
    long status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    res->status = status;
    res->result = retry_classify((int)rc, status);
    res->retry_after_ms = -1;
    if (x->retry_after[0] &&
        retry_after_parse(x->retry_after, now_ms, &res->retry_after_ms) < 0)
        res->retry_after_ms = -1;
    res->error[0] = '\0';
    if (rc != CURLE_OK)
        snprintf(res->error, sizeof(res->error), "%.159s",
                 x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
    job->io = NULL;
    put_xfer(hp, x);
}

static void http_cancel(void *ctx, struct peer_job *job)
{
    struct http_xfer *x = job->io;
    job->io = NULL;
    if (x)
        put_xfer(ctx, x);
}

/* ---- lifecycle -------------------------------------------------------- */

static void *http_create(const struct peer_config *pc, char *err,
                         size_t err_len)
{
    if (!pc->url || !*pc->url) {
        snprintf(err, err_len, "peer \"%s\": http peer without a url",
                 pc->name);
        return NULL;
    }
    struct http_peer *hp = calloc(1, sizeof(*hp));
    if (!hp) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    hp->pc = pc;
    hp->max_idle = pc->max_in_flight > 0 ? (size_t)pc->max_in_flight : 1;
    return hp;
}

static void http_destroy(void *ctx)
{
    struct http_peer *hp = ctx;
    if (!hp)
        return;
    while (hp->idle) {
        struct http_xfer *x = hp->idle;
        hp->idle = x->next;
        xfer_destroy(x);
    }
    free(hp);
}

const struct peer_ops peer_http_ops = {
    .type = "http",
    .async = true,
    .create = http_create,
    .destroy = http_destroy,
    .start = http_start,
    .finish = http_finish,
    .cancel = http_cancel,
};
