/*
 * httpd: libmicrohttpd daemon set-up and JSON replies (see httpd.h).
 *
 * DESIGN
 * TLS. libmicrohttpd does TLS with GnuTLS and takes the certificate and
 * key as PEM text in memory (MHD_OPTION_HTTPS_MEM_CERT/KEY). We read both
 * files at start, check them with OpenSSL first so a bad file is named in
 * the error instead of failing inside GnuTLS, and keep the text until the
 * daemon is stopped.
 *
 * Limits. libmicrohttpd's own options do part of the job:
 * PER_IP_CONNECTION_LIMIT refuses (closes) a connection over the limit,
 * CONNECTION_MEMORY_LIMIT bounds the headers (431), CONNECTION_TIMEOUT
 * closes a connection idle that long. Two gaps are closed here, by a
 * connection guard that follows every connection (NOTIFY_CONNECTION):
 *   - libmicrohttpd's timeout is an *idle* timeout, so a client that
 *     trickles its request a byte at a time (slow loris) holds its
 *     connection for ever. The guard gives each request a deadline:
 *     connection_timeout_s from the connection's start or the previous
 *     request's end to the request line, and again from the request line
 *     to the last byte of the body. A guard thread shuts down the socket of
 *     a request past its deadline; libmicrohttpd then sees the end of the
 *     stream and closes the connection as usual. A request received in
 *     full (suspended waiting for the spool, or being answered) has no
 *     deadline.
 *   - At CONNECTION_LIMIT libmicrohttpd stops accepting, so further
 *     clients wait unanswered in the kernel's backlog. The guard counts
 *     connections and refuses (accept, then close) one past max_connections
 *     instead, so clients learn at once; libmicrohttpd's own limit is set
 *     above ours, as a backstop only.
 *
 * Threads. The guard's list is shared by the pool threads (start, close)
 * and the guard thread, under conns_lock. libmicrohttpd notifies a close
 * before it closes the socket, so a descriptor in the list is still the
 * connection's when the guard shuts it down. Each entry's request state
 * (calls) is touched only by the connection's own pool thread; its
 * deadline is atomic.
 */
#include "httpd.h"

#include <arpa/inet.h>
#include <sched.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>

#include "clock.h"
#include "config.h"
#include "log.h"

/* The largest PEM file we read: a certificate chain is a few KiB. */
#define PEM_MAX ((size_t)1 << 20)
/*
 * libmicrohttpd keeps a connection's request line and headers, an index
 * entry per header line (about 70 bytes each) and the read buffer in one
 * per-connection pool, and builds the response headers there too. The
 * pool is twice max_header_bytes, so a request with that many bytes of
 * headers is served even in a couple of hundred lines, and one whose
 * headers outgrow the pool is refused by libmicrohttpd (431, see
 * httpd.h). max_header_bytes 16 KiB gives libmicrohttpd's default pool.
 */
#define POOL_PER_HEADER_BYTE 2
/* Connections per pool thread up to which it polls with poll(), not
 * epoll (see httpd_start). */
#define POLL_MAX_CONNS 1024
/* How often the guard looks for requests past their deadline: a quarter
 * of the timeout, within these bounds. */
#define GUARD_TICK_MIN_MS 50
#define GUARD_TICK_MAX_MS 1000
/* Refused connections are logged at most this often (with a count). */
#define REFUSAL_LOG_MS 10000

/* One open connection, as the guard follows it (its socket context). */
struct conn {
    struct conn *prev, *next;
    int fd;
    _Atomic int64_t deadline_ms; /* monotonic; 0: none */
    unsigned calls; /* access handler calls for the current request */
};

struct httpd {
    struct MHD_Daemon *daemon;
    /* NUL-terminated PEM text handed to libmicrohttpd, kept until the
     * daemon is stopped; the key is wiped. */
    char *cert_pem;
    char *key_pem;
    size_t key_len;
    /* The first error libmicrohttpd logs while starting, for @err. */
    pthread_mutex_t log_lock;
    bool capturing;
    char start_msg[512];
    /* The caller's callbacks, which ours wrap. */
    MHD_AccessHandlerCallback handler;
    void *handler_cls;
    MHD_RequestCompletedCallback completed;
    void *completed_cls;
    /* The connection guard (see the top). */
    char *listen;       /* a copy, for logs (the config may be reloaded) */
    unsigned max_conns; /* 0: no limit of ours */
    int64_t timeout_ms; /* 0: no request deadline */
    atomic_uint n_conns;
    atomic_ulong refused;
    pthread_mutex_t conns_lock;
    struct conn *conns;
    pthread_cond_t wake;  /* the guard's sleep; signalled at stop */
    bool stopping;        /* under conns_lock */
    bool guard_running;
    pthread_t guard;
};

/* libmicrohttpd's own messages: debug records (a TLS handshake that a
 * plain-HTTP client breaks, a client that went away), and while starting
 * the first one is also kept for the start-up error. */
static void mhd_log_cb(void *cls, const char *fmt, va_list ap)
{
    struct httpd *h = cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    pthread_mutex_lock(&h->log_lock);
    if (h->capturing && !h->start_msg[0])
        snprintf(h->start_msg, sizeof(h->start_msg), "%s", msg);
    pthread_mutex_unlock(&h->log_lock);
    log_write(LOG_DEBUG, "libmicrohttpd", LOG_FIELDS(LOG_S("detail", msg)));
}

static int resolve(const char *listen, const char *label,
                   struct sockaddr_storage *ss, char *err, size_t err_len)
{
    char host[256];
    uint16_t port;
    if (config_split_hostport(listen, host, sizeof(host), &port)) {
        snprintf(err, err_len, "%s %s: expected HOST:PORT", label, listen);
        return -EINVAL;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", port);
    int rc = getaddrinfo(host[0] ? host : NULL, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(err, err_len, "%s %s: %s", label, listen, gai_strerror(rc));
        return -EINVAL;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

void httpd_options_from_config(struct httpd_options *opt,
                               const struct config *cfg, bool threads_too)
{
    opt->connection_limit = (unsigned)cfg->http.max_connections;
    opt->per_ip_limit = (unsigned)cfg->http.max_connections_per_ip;
    opt->timeout_s = (unsigned)cfg->http.connection_timeout_s;
    opt->max_header_bytes = cfg->http.max_header_bytes;
    if (threads_too) {
        unsigned n = cfg->http.threads > 0 ? (unsigned)cfg->http.threads
                                           : httpd_auto_threads();
        if (n > opt->connection_limit) /* each thread needs a connection */
            n = opt->connection_limit;
        opt->threads = n;
    }
}

/*
 * The CPUs a cgroup v2 "cpu.max" quota allows ("max 100000": no quota),
 * rounded up; 0 when there is none or no such file.
 */
static unsigned cgroup_cpus(void)
{
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
    if (!f)
        return 0;
    long long quota = 0, period = 0;
    char word[32];
    unsigned n = 0;
    if (fscanf(f, "%31s %lld", word, &period) == 2 && period > 0 &&
        sscanf(word, "%lld", &quota) == 1 && quota > 0)
        n = (unsigned)((quota + period - 1) / period);
    fclose(f);
    return n;
}

unsigned httpd_auto_threads(void)
{
    cpu_set_t set;
    unsigned n = 1;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        n = (unsigned)CPU_COUNT(&set);
    unsigned quota = cgroup_cpus();
    if (quota > 0 && quota < n)
        n = quota;
    return n < HTTPD_AUTO_THREADS_MAX ? n : HTTPD_AUTO_THREADS_MAX;
}

/* ---- TLS material --------------------------------------------------- */

/*
 * Read the PEM file @file (named @key in errors, "tls.cert_file") into a
 * new NUL-terminated string, allocated once at the file's size so no
 * stray copy of a private key is left in freed memory. Returns 0, or
 * -errno with @err set.
 */
static int read_pem(const char *key, const char *file, char **out,
                    size_t *out_len, char *err, size_t err_len)
{
    struct stat st;
    char *text = NULL;
    size_t len = 0;
    int rc = 0;
    FILE *f = fopen(file, "rb");
    if (!f || fstat(fileno(f), &st) != 0) {
        rc = -errno;
        goto out;
    }
    setvbuf(f, NULL, _IONBF, 0); /* no stdio buffer holding the key */
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        snprintf(err, err_len, "%s %s: not a regular file", key, file);
        goto out;
    }
    if ((size_t)st.st_size > PEM_MAX) {
        rc = -E2BIG;
        snprintf(err, err_len, "%s %s: larger than %zu KiB", key, file,
                 PEM_MAX >> 10);
        goto out;
    }
    text = malloc((size_t)st.st_size + 1);
    if (!text) {
        rc = -ENOMEM;
        goto out;
    }
    len = fread(text, 1, (size_t)st.st_size, f);
    if (ferror(f)) {
        rc = -EIO;
        goto out;
    }
    text[len] = '\0';
    if (len == 0 || strlen(text) != len) {
        rc = -EINVAL;
        snprintf(err, err_len, "%s %s: not a PEM file", key, file);
        goto out;
    }
    *out = text;
    *out_len = len;
    text = NULL;
out:
    if (rc && rc != -EINVAL && rc != -E2BIG)
        snprintf(err, err_len, "%s %s: %s", key, file, strerror(-rc));
    if (text) {
        explicit_bzero(text, len);
        free(text);
    }
    if (f)
        fclose(f);
    return rc;
}

/* Never prompt for a passphrase: an encrypted key is refused. */
static int no_passphrase_cb(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

/*
 * Check what GnuTLS will be given, with OpenSSL (already linked), so each
 * mistake gets a message naming its file: a certificate that is not PEM,
 * a key that is not PEM or is encrypted, a key of another certificate.
 * An expired certificate is only logged: clients decide. Returns 0 or
 * -EINVAL with @err set.
 */
static int check_tls_pair(const struct httpd_options *opt, const char *cert,
                          const char *key, size_t key_len, char *err,
                          size_t err_len)
{
    const char *p = opt->tls_path ? opt->tls_path : "tls";
    int rc = -EINVAL;
    X509 *x = NULL;
    EVP_PKEY *k = NULL;
    BIO *cb = BIO_new_mem_buf(cert, -1);
    BIO *kb = BIO_new_mem_buf(key, (int)key_len);
    if (!cb || !kb) {
        snprintf(err, err_len, "%s: out of memory", p);
        goto out;
    }
    x = PEM_read_bio_X509(cb, NULL, NULL, NULL);
    if (!x) {
        snprintf(err, err_len, "%s.cert_file %s: no PEM certificate in it", p,
                 opt->tls_cert_file);
        goto out;
    }
    k = PEM_read_bio_PrivateKey(kb, NULL, no_passphrase_cb, NULL);
    if (!k) {
        snprintf(err, err_len, "%s.key_file %s: %s", p, opt->tls_key_file,
                 strstr(key, "ENCRYPTED")
                     ? "the key is encrypted (a passphrase is not supported)"
                     : "no PEM private key in it");
        goto out;
    }
    if (X509_check_private_key(x, k) != 1) {
        snprintf(err, err_len, "%s.key_file %s: does not match %s.cert_file %s",
                 p, opt->tls_key_file, p, opt->tls_cert_file);
        goto out;
    }
    if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0)
        log_warn("the TLS certificate has expired",
                 LOG_FIELDS(LOG_S("path", p),
                            LOG_S("cert_file", opt->tls_cert_file)));
    rc = 0;
out:
    EVP_PKEY_free(k);
    X509_free(x);
    BIO_free(kb);
    BIO_free(cb);
    ERR_clear_error(); /* leave nothing for curl to find on this thread */
    return rc;
}

/* Read and check the listener's certificate and key into @h. */
static int load_tls(struct httpd *h, const struct httpd_options *opt,
                    char *err, size_t err_len)
{
    const char *p = opt->tls_path ? opt->tls_path : "tls";
    char key[64];
    size_t cert_len;
    int rc;
    if (!opt->tls_cert_file || !opt->tls_key_file) {
        snprintf(err, err_len, "%s: cert_file and key_file go together", p);
        return -EINVAL;
    }
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
        snprintf(err, err_len,
                 "%s: this libmicrohttpd was built without TLS support", p);
        return -ENOTSUP;
    }
    snprintf(key, sizeof(key), "%s.cert_file", p);
    rc = read_pem(key, opt->tls_cert_file, &h->cert_pem, &cert_len, err,
                  err_len);
    if (rc)
        return rc;
    snprintf(key, sizeof(key), "%s.key_file", p);
    rc = read_pem(key, opt->tls_key_file, &h->key_pem, &h->key_len, err,
                  err_len);
    if (rc)
        return rc;
    return check_tls_pair(opt, h->cert_pem, h->key_pem, h->key_len, err,
                          err_len);
}

/* ---- connection guard ------------------------------------------------ */

static struct conn *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info ? info->socket_context : NULL;
}

static void arm(struct httpd *h, struct conn *t)
{
    if (t && h->timeout_ms)
        atomic_store(&t->deadline_ms, clock_mono_ms() + h->timeout_ms);
}

/* Refuse a connection past max_connections (see the top). Pool threads. */
static enum MHD_Result accept_cb(void *cls, const struct sockaddr *addr,
                                 socklen_t addrlen)
{
    struct httpd *h = cls;
    (void)addr;
    (void)addrlen;
    if (!h->max_conns || atomic_load(&h->n_conns) < h->max_conns)
        return MHD_YES;
    atomic_fetch_add(&h->refused, 1);
    return MHD_NO;
}

/* Follow a connection from its start to its close. Pool threads. */
static void connection_cb(void *cls, struct MHD_Connection *c,
                          void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct httpd *h = cls;
    struct conn *t = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        t = info ? calloc(1, sizeof(*t)) : NULL;
        if (!t)
            return; /* not followed: no deadline, not counted */
        t->fd = info->connect_fd;
        arm(h, t);
        pthread_mutex_lock(&h->conns_lock);
        t->next = h->conns;
        if (h->conns)
            h->conns->prev = t;
        h->conns = t;
        pthread_mutex_unlock(&h->conns_lock);
        atomic_fetch_add(&h->n_conns, 1);
        *socket_context = t;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && t) {
        pthread_mutex_lock(&h->conns_lock);
        if (t->prev)
            t->prev->next = t->next;
        else
            h->conns = t->next;
        if (t->next)
            t->next->prev = t->prev;
        pthread_mutex_unlock(&h->conns_lock);
        atomic_fetch_sub(&h->n_conns, 1);
        *socket_context = NULL;
        free(t);
    }
}

/* The request line is in: the rest of the request gets a fresh deadline.
 * The return value is the request's first *con_cls, NULL as before. */
static void *request_line_cb(void *cls, const char *uri,
                             struct MHD_Connection *c)
{
    struct httpd *h = cls;
    struct conn *t = conn_of(c);
    (void)uri;
    if (t) {
        t->calls = 0;
        arm(h, t);
    }
    return NULL;
}

/* The caller's handler, once its request's deadline is settled: the
 * call after the body (or the second call of a bodiless request) means
 * the request is all in, so it no longer has one. */
static enum MHD_Result access_cb(void *cls, struct MHD_Connection *c,
                                 const char *url, const char *method,
                                 const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    struct httpd *h = cls;
    struct conn *t = conn_of(c);
    if (t && t->calls++ > 0 && *upload_data_size == 0)
        atomic_store(&t->deadline_ms, 0);
    return h->handler(h->handler_cls, c, url, method, version, upload_data,
                      upload_data_size, con_cls);
}

/* A request is over: the next one (or idling) gets a fresh deadline. */
static void completed_cb(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct httpd *h = cls;
    struct conn *t = conn_of(c);
    if (t) {
        t->calls = 0;
        arm(h, t);
    }
    if (h->completed)
        h->completed(h->completed_cls, c, con_cls, toe);
}

/* Shut down the sockets of requests past their deadline. Under conns_lock. */
static unsigned cut_overdue(struct httpd *h, int64_t now)
{
    unsigned cut = 0;
    for (struct conn *t = h->conns; t; t = t->next) {
        int64_t d = atomic_load(&t->deadline_ms);
        if (d == 0 || now < d)
            continue;
        atomic_store(&t->deadline_ms, 0);
        shutdown(t->fd, SHUT_RDWR);
        cut++;
    }
    return cut;
}

static void *guard_main(void *arg)
{
    struct httpd *h = arg;
    int64_t tick = h->timeout_ms / 4;
    int64_t last_log = 0;
    unsigned long logged = 0;
    if (tick < GUARD_TICK_MIN_MS)
        tick = GUARD_TICK_MIN_MS;
    if (tick > GUARD_TICK_MAX_MS)
        tick = GUARD_TICK_MAX_MS;
    pthread_mutex_lock(&h->conns_lock);
    while (!h->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += tick / 1000;
        ts.tv_nsec += (tick % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&h->wake, &h->conns_lock, &ts);
        if (h->stopping)
            break;
        int64_t now = clock_mono_ms();
        unsigned cut = h->timeout_ms ? cut_overdue(h, now) : 0;
        unsigned long refused = atomic_load(&h->refused);
        pthread_mutex_unlock(&h->conns_lock);
        if (cut)
            log_debug("closed connections whose request was not in within "
                      "connection_timeout_s",
                      LOG_FIELDS(LOG_S("listen", h->listen),
                                 LOG_I("connections", cut)));
        if (refused != logged && now - last_log >= REFUSAL_LOG_MS) {
            log_warn("refused connections: max_connections reached",
                     LOG_FIELDS(LOG_S("listen", h->listen),
                                LOG_I("refused", refused - logged),
                                LOG_I("max_connections", h->max_conns)));
            logged = refused;
            last_log = now;
        }
        pthread_mutex_lock(&h->conns_lock);
    }
    pthread_mutex_unlock(&h->conns_lock);
    return NULL;
}

static void guard_init(struct httpd *h, const struct httpd_options *opt)
{
    pthread_condattr_t ca;
    h->max_conns = opt->connection_limit;
    h->timeout_ms = (int64_t)opt->timeout_s * 1000;
    atomic_init(&h->n_conns, 0);
    atomic_init(&h->refused, 0);
    pthread_mutex_init(&h->conns_lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->wake, &ca);
    pthread_condattr_destroy(&ca);
}

static int guard_start(struct httpd *h)
{
    int rc = pthread_create(&h->guard, NULL, guard_main, h);
    if (rc)
        return -rc;
    h->guard_running = true;
    return 0;
}

static void guard_stop(struct httpd *h)
{
    if (!h->guard_running)
        return;
    pthread_mutex_lock(&h->conns_lock);
    h->stopping = true;
    pthread_cond_signal(&h->wake);
    pthread_mutex_unlock(&h->conns_lock);
    pthread_join(h->guard, NULL);
    h->guard_running = false;
}

/* ---- start and stop ------------------------------------------------ */

static void httpd_free(struct httpd *h)
{
    guard_stop(h);
    free(h->listen);
    free(h->cert_pem);
    if (h->key_pem)
        explicit_bzero(h->key_pem, h->key_len);
    free(h->key_pem);
    pthread_cond_destroy(&h->wake);
    pthread_mutex_destroy(&h->conns_lock);
    pthread_mutex_destroy(&h->log_lock);
    free(h);
}

/* Append one option to the array (sized for every option we use). */
#define ADD_OPT(o, v, p)                                                     \
    do {                                                                     \
        ops[n].option = (o);                                                 \
        ops[n].value = (intptr_t)(v);                                        \
        ops[n].ptr_value = (p);                                              \
        n++;                                                                 \
    } while (0)

struct httpd *httpd_start(const struct httpd_options *opt, char *err,
                          size_t err_len)
{
    const char *label = opt->label ? opt->label : "listen";
    unsigned threads = opt->threads ? opt->threads : 1;
    struct sockaddr_storage ss;
    struct MHD_OptionItem ops[16];
    size_t n = 0;
    int rc;
    struct httpd *h = calloc(1, sizeof(*h));
    if (!h) {
        snprintf(err, err_len, "%s %s: out of memory", label, opt->listen);
        return NULL;
    }
    pthread_mutex_init(&h->log_lock, NULL);
    guard_init(h, opt);
    h->listen = strdup(opt->listen);
    if (!h->listen) {
        snprintf(err, err_len, "%s %s: out of memory", label, opt->listen);
        goto fail;
    }
    h->handler = opt->handler;
    h->handler_cls = opt->handler_cls;
    h->completed = opt->completed;
    h->completed_cls = opt->completed_cls;
    if (resolve(opt->listen, label, &ss, err, err_len))
        goto fail;
    /* Every ingest request is suspended until its commit and resumed
     * after it. With epoll that is two epoll_ctl calls per request, which
     * cost more than poll() over a few hundred descriptors does (ingest
     * 15.8k -> 16.7k requests/s on one core). So poll while a thread has
     * at most POLL_MAX_CONNS connections to watch; epoll (AUTO) beyond. */
    unsigned per_thread = opt->connection_limit
                              ? (opt->connection_limit + threads - 1) / threads
                              : UINT_MAX;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD |
                     (per_thread <= POLL_MAX_CONNS ? MHD_USE_POLL
                                                   : MHD_USE_AUTO) |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    ADD_OPT(MHD_OPTION_SOCK_ADDR, 0, &ss);
    ADD_OPT(MHD_OPTION_THREAD_POOL_SIZE, threads, NULL);
    ADD_OPT(MHD_OPTION_CONNECTION_TIMEOUT, opt->timeout_s, NULL);
    ADD_OPT(MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)completed_cb, h);
    ADD_OPT(MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)connection_cb, h);
    ADD_OPT(MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)request_line_cb, h);
    /* The backstop: past ours by the most that can race past accept_cb. */
    if (opt->connection_limit)
        ADD_OPT(MHD_OPTION_CONNECTION_LIMIT, opt->connection_limit + threads,
                NULL);
    if (opt->per_ip_limit)
        ADD_OPT(MHD_OPTION_PER_IP_CONNECTION_LIMIT, opt->per_ip_limit, NULL);
    if (opt->max_header_bytes)
        ADD_OPT(MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                opt->max_header_bytes * POOL_PER_HEADER_BYTE, NULL);
    if (opt->tls_cert_file || opt->tls_key_file) {
        if (load_tls(h, opt, err, err_len))
            goto fail;
        flags |= MHD_USE_TLS;
        ADD_OPT(MHD_OPTION_HTTPS_MEM_CERT, 0, h->cert_pem);
        ADD_OPT(MHD_OPTION_HTTPS_MEM_KEY, 0, h->key_pem);
    }
    ADD_OPT(MHD_OPTION_END, 0, NULL);
    rc = guard_start(h);
    if (rc) {
        snprintf(err, err_len, "%s %s: cannot start a thread: %s", label,
                 opt->listen, strerror(-rc));
        goto fail;
    }
    h->capturing = true; /* until MHD_start_daemon returns */
    errno = 0;
    h->daemon = MHD_start_daemon(flags, 0, accept_cb, h, access_cb, h,
                                 /* first, so option errors reach our log */
                                 MHD_OPTION_EXTERNAL_LOGGER, mhd_log_cb, h,
                                 MHD_OPTION_ARRAY, ops, MHD_OPTION_END);
    int saved = errno;
    pthread_mutex_lock(&h->log_lock);
    h->capturing = false;
    pthread_mutex_unlock(&h->log_lock);
    if (!h->daemon) {
        snprintf(err, err_len, "%s %s: %s", label, opt->listen,
                 saved ? strerror(saved)
                 : h->start_msg[0] ? h->start_msg
                                   : "cannot start the HTTP server");
        goto fail;
    }
    return h;
fail:
    httpd_free(h);
    return NULL;
}

void httpd_stop(struct httpd *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->daemon); /* closes (and unlinks) every connection */
    httpd_free(h);
}

uint16_t httpd_port(const struct httpd *h)
{
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info ? info->port : 0;
}

enum MHD_Result httpd_reply(struct MHD_Connection *c, unsigned status,
                            const char *content_type, const char *body,
                            size_t len, int retry_after)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    if (content_type)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%d", retry_after);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result httpd_reply_error(struct MHD_Connection *c, unsigned status,
                                  const char *code, const char *message,
                                  long index, const char *attribute,
                                  int retry_after)
{
    json_t *o = json_pack("{s:s, s:s}", "error", code, "message", message);
    if (o && index >= 0)
        json_object_set_new(o, "index", json_integer(index));
    if (o && attribute && attribute[0])
        json_object_set_new(o, "attribute", json_string(attribute));
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    enum MHD_Result ret;
    if (text)
        ret = httpd_reply(c, status, "application/json", text, strlen(text),
                          retry_after);
    else
        ret = httpd_reply(c, status, "application/json",
                          "{\"error\":\"internal\"}", 20, retry_after);
    free(text);
    return ret;
}

int httpd_media_type_is(const char *content_type, const char *want)
{
    if (!content_type)
        return 0;
    while (*content_type == ' ' || *content_type == '\t')
        content_type++;
    size_t n = strcspn(content_type, ";");
    while (n && (content_type[n - 1] == ' ' || content_type[n - 1] == '\t'))
        n--;
    return n == strlen(want) && strncasecmp(content_type, want, n) == 0;
}
