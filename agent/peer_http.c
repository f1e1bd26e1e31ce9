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
 * The answer. Its status and Retry-After decide the outcome (retry.h).
 * Requests say "Prefer: reply", so a 2xx answer other than 202 and 204
 * may carry a reply event: only for those are the Content-Type and the
 * ce-* headers kept, and the body too when the headers announce an event
 * (each capped at PEER_REPLY_MAX; past that the rest is read and dropped,
 * and the reply is marked too large); reply.c decides. Any other body is
 * discarded as it arrives.
 *
 * Signing. With signing_secret set, the secret is decoded once, at
 * create, and each request carries the Standard Webhooks headers over its
 * final body (sign.h), webhook-timestamp being the attempt's start.
 */
#include "peer.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "sign.h"

#ifndef FERRY_VERSION
#define FERRY_VERSION "dev"
#endif

/* The largest request body we build (decoded data_base64 or structured
 * JSON): far above ingest's max_body_bytes. */
#define BODY_MAX ((size_t)1 << 30)
/* An idle handle keeps buffers up to this size for the next request. */
#define KEEP_BUF_MAX ((size_t)1 << 20)

/* The longest Content-Type of a reply we keep. */
#define REPLY_TYPE_MAX 1024

/* One configured easy handle and its per-request buffers. */
struct http_xfer {
    CURL *easy;
    struct curl_slist *headers;
    struct buf body; /* request body when it had to be built */
    struct buf line; /* scratch for "Name: value" */
    char retry_after[80];
    char errbuf[CURL_ERROR_SIZE];
    /* the answer, kept only when it may be a reply (see the top) */
    bool capture;
    bool too_large;
    struct buf rtype; /* Content-Type */
    struct buf rhdrs; /* ce-* headers, "name\0value\0" */
    struct buf rbody;
    struct http_xfer *next; /* free-list */
};

struct http_peer {
    const struct peer_config *pc;
    struct sign_key *key;   /* NULL: unsigned */
    struct http_xfer *idle; /* free-list of configured handles */
    size_t n_idle;
    size_t max_idle;
};

/* ---- handles ---------------------------------------------------------- */

/* The body: kept when it may be a reply, else dropped as it arrives. */
static size_t body_cb(char *p, size_t size, size_t n, void *arg)
{
    struct http_xfer *x = arg;
    size_t len = size * n;
    if (x->capture && !x->too_large && buf_append(&x->rbody, p, len) != 0)
        x->too_large = true; /* -E2BIG, or -ENOMEM: either way not kept */
    return len;
}

/* Forget what an earlier response (a 1xx, or a redirect) left. */
static void reset_answer(struct http_xfer *x)
{
    x->retry_after[0] = '\0';
    x->capture = false;
    x->too_large = false;
    buf_reset(&x->rtype);
    buf_reset(&x->rhdrs);
    buf_reset(&x->rbody);
}

/* "HTTP/1.1 200 OK": may this answer carry a reply event? */
static bool reply_status(const char *p, size_t len)
{
    char line[32];
    size_t n = len < sizeof(line) - 1 ? len : sizeof(line) - 1;
    memcpy(line, p, n);
    line[n] = '\0';
    const char *sp = strchr(line, ' ');
    if (!sp)
        return false;
    char *end;
    long status = strtol(sp + 1, &end, 10);
    return end != sp + 1 && status >= 200 && status < 300 && status != 202 &&
           status != 204;
}

/* A header line without its line end and surrounding blanks. */
static void trim(const char **v, size_t *len)
{
    while (*len && (**v == ' ' || **v == '\t')) {
        (*v)++;
        (*len)--;
    }
    while (*len && strchr(" \t\r\n", (*v)[*len - 1]))
        (*len)--;
}

/* Keep Content-Type and ce-* headers of an answer that may be a reply. */
static void keep_header(struct http_xfer *x, const char *p, size_t len)
{
    const char *colon = memchr(p, ':', len);
    if (!colon)
        return;
    size_t nlen = (size_t)(colon - p);
    const char *v = colon + 1;
    size_t vlen = len - nlen - 1;
    trim(&v, &vlen);
    int rc = 0;
    if (nlen == 12 && strncasecmp(p, "content-type", 12) == 0) {
        buf_reset(&x->rtype);
        rc = buf_append(&x->rtype, v, vlen);
    } else if (nlen > 3 && strncasecmp(p, "ce-", 3) == 0) {
        size_t mark = x->rhdrs.len;
        rc = buf_append(&x->rhdrs, p, nlen);
        if (!rc)
            rc = buf_append(&x->rhdrs, "", 1);
        if (!rc)
            rc = buf_append(&x->rhdrs, v, vlen);
        if (!rc)
            rc = buf_append(&x->rhdrs, "", 1);
        if (rc) { /* drop the partial pair */
            x->rhdrs.len = mark;
            if (x->rhdrs.data)
                x->rhdrs.data[mark] = '\0';
        }
    }
    if (rc)
        x->too_large = true;
}

/* At the end of the headers: keep the body only if they announce an
 * event (a CloudEvents media type or ce-* headers), so plain answers are
 * never copied. Past the header cap we cannot tell: keep, and let the
 * reply be reported as too large. */
static bool may_be_event(const struct http_xfer *x)
{
    static const char ce[] = "application/cloudevents";
    return x->too_large || x->rhdrs.len ||
           (x->rtype.len >= sizeof(ce) - 1 &&
            strncasecmp(x->rtype.data, ce, sizeof(ce) - 1) == 0);
}

/* Remembers Retry-After of the final response (a new status line, e.g.
 * after a 1xx, starts over), and what a reply needs. */
static size_t header_cb(char *p, size_t size, size_t n, void *arg)
{
    struct http_xfer *x = arg;
    size_t len = size * n;
    static const char name[] = "retry-after:";
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        reset_answer(x);
        x->capture = reply_status(p, len);
    } else if (len > sizeof(name) - 1 &&
               strncasecmp(p, name, sizeof(name) - 1) == 0) {
        size_t vlen = len - (sizeof(name) - 1);
        if (vlen >= sizeof(x->retry_after))
            vlen = sizeof(x->retry_after) - 1; /* retry_after_parse rejects */
        memcpy(x->retry_after, p + sizeof(name) - 1, vlen);
        x->retry_after[vlen] = '\0';
    } else if (x->capture && (p[0] == '\r' || p[0] == '\n')) {
        x->capture = may_be_event(x); /* the blank line: headers done */
    } else if (x->capture) {
        keep_header(x, p, len);
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
        rc = curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, body_cb);
    if (!rc)
        rc = curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    if (!rc)
        rc = curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    /* TLS to the peer: always verified (curl's default, stated here so
     * no one turns it off by accident), against ca_file when set, else
     * the system's CAs; a client certificate when set (mTLS). A failed
     * handshake is a transport error: retried, with curl's message. */
    if (!rc)
        rc = curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    if (!rc)
        rc = curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
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
    buf_free(&x->rtype);
    buf_free(&x->rhdrs);
    buf_free(&x->rbody);
    free(x);
}

static struct http_xfer *xfer_create(const struct peer_config *pc)
{
    struct http_xfer *x = calloc(1, sizeof(*x));
    if (!x)
        return NULL;
    buf_init(&x->body, BODY_MAX);
    buf_init(&x->line, BODY_MAX);
    buf_init(&x->rtype, REPLY_TYPE_MAX);
    buf_init(&x->rhdrs, PEER_REPLY_MAX);
    buf_init(&x->rbody, PEER_REPLY_MAX);
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
    reset_answer(x);
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

/* Batch mode: the chain's events as one JSON array, in queue order. */
static int build_batch(struct http_xfer *x, const struct peer_job *job,
                       const char **body, size_t *len)
{
    int rc = buf_append(&x->body, "[", 1);
    for (const struct peer_job *j = job; !rc && j; j = j->batch_next) {
        if (j != job)
            rc = buf_append(&x->body, ",", 1);
        if (!rc)
            rc = event_to_structured(&j->ev, &x->body);
    }
    if (!rc)
        rc = buf_append(&x->body, "]", 1);
    if (rc)
        return rc;
    *body = x->body.data;
    *len = x->body.len;
    return add_header(x, "Content-Type",
                      "application/cloudevents-batch+json; charset=utf-8");
}

static int build_body(const struct peer_config *pc, struct http_xfer *x,
                      const struct peer_job *job, const char **body,
                      size_t *len)
{
    const struct event *ev = &job->ev;
    if (pc->mode == PEER_MODE_BATCH)
        return build_batch(x, job, body, len);
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

/* Standard Webhooks headers over the final @body (see sign.h). */
static int add_signature(const struct http_peer *hp, struct http_xfer *x,
                         const struct peer_job *job, const char *body,
                         size_t len)
{
    char id[SIGN_ID_LEN], sig[SIGN_SIGNATURE_LEN], ts[24];
    int64_t ts_s = job->at_ms / 1000;
    const char *source = event_attr(&job->ev, "source", NULL, 0);
    const char *eid = event_attr(&job->ev, "id", NULL, 0);
    int rc = sign_webhook_id(hp->pc->name, source, eid, id);
    if (!rc)
        rc = sign_webhook(hp->key, id, ts_s, body, len, sig);
    if (!rc)
        snprintf(ts, sizeof(ts), "%" PRId64, ts_s);
    if (!rc)
        rc = add_header(x, "webhook-id", id);
    if (!rc)
        rc = add_header(x, "webhook-timestamp", ts);
    if (!rc)
        rc = add_header(x, "webhook-signature", sig);
    return rc;
}

static int build_request(const struct http_peer *hp, struct http_xfer *x,
                         const struct peer_job *job, const char **body,
                         size_t *len)
{
    const struct peer_config *pc = hp->pc;
    int rc = build_body(pc, x, job, body, len);
    if (!rc)
        rc = add_trace_headers(x, &job->ev);
    for (size_t i = 0; !rc && i < pc->n_headers; i++)
        rc = add_header(x, pc->headers[i].name, pc->headers[i].value);
    if (!rc && pc->mode != PEER_MODE_BATCH) /* no reply to a batch */
        rc = add_header(x, "Prefer", "reply");
    if (!rc) /* an empty value removes the header: no 100-continue pause */
        rc = add_header(x, "Expect", "");
    if (!rc && hp->key)
        rc = add_signature(hp, x, job, *body ? *body : "", *len);
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
    int rc = build_request(hp, x, job, &body, &len);
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

void peer_reply_destroy(struct peer_reply *r)
{
    if (!r)
        return;
    free(r->content_type);
    free(r->headers);
    free(r->body);
    free(r);
}

/* The answer as a possible reply, taking @x's buffers; NULL when it
 * carries nothing (an empty body and no ce-* headers) or on -ENOMEM. */
static struct peer_reply *take_reply(struct http_xfer *x, long status)
{
    if (!x->rbody.len && !x->rhdrs.len && !x->too_large)
        return NULL;
    struct peer_reply *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->status = status;
    r->too_large = x->too_large;
    bool ok = true;
    if (x->rtype.len)
        ok = (r->content_type = buf_take(&x->rtype, NULL)) != NULL;
    if (ok && x->rhdrs.len)
        ok = (r->headers = buf_take(&x->rhdrs, &r->headers_len)) != NULL;
    if (ok && x->rbody.len)
        ok = (r->body = buf_take(&x->rbody, &r->body_len)) != NULL;
    if (!ok) {
        peer_reply_destroy(r);
        return NULL;
    }
    return r;
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
    if (res->result == DELIVER_OK && x->capture &&
        hp->pc->mode != PEER_MODE_BATCH)
        job->reply = take_reply(x, status);
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

/*
 * curl reads the TLS files at each new connection, so a missing one would
 * only show as failed attempts: check at create (start or reload) that
 * each set file is a readable regular file. Returns 0, or -errno with
 * "peers.NAME.tls.KEY FILE: reason" in @err.
 */
static int check_tls_file(const struct peer_config *pc, const char *key,
                          const char *file, char *err, size_t err_len)
{
    struct stat st;
    int rc = 0;
    if (!file)
        return 0;
    FILE *f = fopen(file, "rb");
    if (!f || fstat(fileno(f), &st) != 0)
        rc = -errno;
    else if (!S_ISREG(st.st_mode))
        rc = -EISDIR;
    if (f)
        fclose(f);
    if (rc == -EISDIR)
        snprintf(err, err_len, "peers.%s.tls.%s %s: not a regular file",
                 pc->name, key, file);
    else if (rc)
        snprintf(err, err_len, "peers.%s.tls.%s %s: %s", pc->name, key, file,
                 strerror(-rc));
    return rc;
}

static void *http_create(const struct peer_config *pc, char *err,
                         size_t err_len)
{
    if (!pc->url || !*pc->url) {
        snprintf(err, err_len, "peer \"%s\": http peer without a url",
                 pc->name);
        return NULL;
    }
    if (check_tls_file(pc, "ca_file", pc->tls.ca_file, err, err_len) ||
        check_tls_file(pc, "cert_file", pc->tls.cert_file, err, err_len) ||
        check_tls_file(pc, "key_file", pc->tls.key_file, err, err_len))
        return NULL;
    struct http_peer *hp = calloc(1, sizeof(*hp));
    if (!hp) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    hp->pc = pc;
    hp->max_idle = pc->max_in_flight > 0 ? (size_t)pc->max_in_flight : 1;
    if (pc->signing_secret) {
        char why[160];
        hp->key = sign_key_create(pc->signing_secret, why, sizeof(why));
        if (!hp->key) {
            snprintf(err, err_len, "peer \"%s\": %s", pc->name, why);
            free(hp);
            return NULL;
        }
    }
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
    sign_key_destroy(hp->key);
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
