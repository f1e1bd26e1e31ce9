/*
 * Unit tests for httpd: the pure helpers, the mapping of the config's
 * "http" limits, TLS start-up (files read and checked, errors naming the
 * file and its config path, HTTPS served) and the connection guard
 * (a trickled request is cut at its deadline, a request received in full
 * is not, connections past the limit are refused). Real daemons on port 0
 * of 127.0.0.1; the TLS material is made here, with OpenSSL, in a
 * temporary directory.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "clock.h"
#include "config.h"
#include "httpd.h"

/* ---- fixtures ----------------------------------------------------------- */

/* Where the PEM files of one test live. */
struct pki {
    char dir[64];
    char cert[128]; /* self-signed, CN=localhost, SAN localhost + 127.0.0.1 */
    char key[128];  /* its key */
    char other_key[128]; /* a key of no certificate here */
    char junk[128];      /* not PEM */
};

static void write_key(const char *path, EVP_PKEY *k)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
}

/* A self-signed certificate for 127.0.0.1, valid for a day. */
static X509 *self_signed(EVP_PKEY *k)
{
    X509 *x = X509_new();
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               (const unsigned char *)"localhost", -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    X509_EXTENSION *san = X509V3_EXT_conf_nid(
        NULL, &ctx, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
    X509_EXTENSION *bc = X509V3_EXT_conf_nid(NULL, &ctx,
                                             NID_basic_constraints, "CA:TRUE");
    assert_non_null(san);
    assert_non_null(bc);
    X509_add_ext(x, san, -1);
    X509_add_ext(x, bc, -1);
    X509_EXTENSION_free(san);
    X509_EXTENSION_free(bc);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    return x;
}

static int pki_setup(void **state)
{
    struct pki *p = calloc(1, sizeof(*p));
    assert_non_null(p);
    snprintf(p->dir, sizeof(p->dir), "/tmp/ferry-test-httpd-XXXXXX");
    assert_non_null(mkdtemp(p->dir));
    snprintf(p->cert, sizeof(p->cert), "%s/cert.pem", p->dir);
    snprintf(p->key, sizeof(p->key), "%s/key.pem", p->dir);
    snprintf(p->other_key, sizeof(p->other_key), "%s/other.pem", p->dir);
    snprintf(p->junk, sizeof(p->junk), "%s/junk.pem", p->dir);

    EVP_PKEY *k = EVP_EC_gen("P-256");
    EVP_PKEY *other = EVP_EC_gen("P-256");
    assert_non_null(k);
    assert_non_null(other);
    X509 *x = self_signed(k);
    FILE *f = fopen(p->cert, "wb");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, x), 1);
    fclose(f);
    write_key(p->key, k);
    write_key(p->other_key, other);
    f = fopen(p->junk, "wb");
    assert_non_null(f);
    fputs("not a certificate\n", f);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(k);
    EVP_PKEY_free(other);
    *state = p;
    return 0;
}

static int pki_teardown(void **state)
{
    struct pki *p = *state;
    unlink(p->cert);
    unlink(p->key);
    unlink(p->other_key);
    unlink(p->junk);
    rmdir(p->dir);
    free(p);
    return 0;
}

/* ---- a tiny handler and client ------------------------------------------ */

/*
 * Answers 200 "ok" on the call after the body. With suspend_ms > 0 it
 * first suspends the request that long (a thread resumes it), as ingest
 * does while the spool commits.
 */
struct app {
    int suspend_ms;
    pthread_t resumer;
    bool resumer_started;
};

struct resume_job {
    struct MHD_Connection *c;
    int ms;
};

static void *resume_main(void *arg)
{
    struct resume_job *j = arg;
    usleep((useconds_t)j->ms * 1000);
    MHD_resume_connection(j->c);
    free(j);
    return NULL;
}

static enum MHD_Result app_cb(void *cls, struct MHD_Connection *c,
                              const char *url, const char *method,
                              const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    struct app *a = cls;
    (void)url;
    (void)method;
    (void)version;
    (void)upload_data;
    if (!*con_cls) { /* the first call: headers are in */
        *con_cls = (void *)1;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (a && a->suspend_ms && *con_cls == (void *)1) {
        struct resume_job *j = malloc(sizeof(*j));
        assert_non_null(j);
        j->c = c;
        j->ms = a->suspend_ms;
        *con_cls = (void *)2;
        MHD_suspend_connection(c);
        assert_int_equal(pthread_create(&a->resumer, NULL, resume_main, j), 0);
        a->resumer_started = true;
        return MHD_YES;
    }
    return httpd_reply(c, 200, "text/plain", "ok", 2, 0);
}

static struct httpd_options plain_options(struct app *a)
{
    struct httpd_options o = {.listen = "127.0.0.1:0",
                              .threads = 1,
                              .timeout_s = 30,
                              .handler = app_cb,
                              .handler_cls = a};
    return o;
}

static int connect_to(uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void send_all(int fd, const char *s)
{
    size_t n = strlen(s);
    assert_int_equal(send(fd, s, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Read until the server closes (or 10 s pass); returns the bytes read, or
 * -1 when the connection was reset. */
static ssize_t read_to_close(int fd, char *buf, size_t len)
{
    size_t got = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + got, len - 1 - got, 0);
        if (n == 0)
            break;
        if (n < 0)
            return errno == ECONNRESET ? -1 : (ssize_t)got;
        got += (size_t)n;
        if (got == len - 1)
            break;
    }
    buf[got] = '\0';
    return (ssize_t)got;
}

/* GET / on a new connection that says "close"; returns the status. */
static int get_status(uint16_t port)
{
    char buf[1024];
    int fd = connect_to(port);
    send_all(fd, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    ssize_t n = read_to_close(fd, buf, sizeof(buf));
    close(fd);
    int status = 0;
    if (n > 0 && sscanf(buf, "HTTP/1.1 %d", &status) != 1)
        status = 0;
    return status;
}

/* ---- pure helpers ------------------------------------------------------- */

static void test_httpd_media_type_ignores_case_params_blanks(void **state)
{
    (void)state;
    const char *want = "application/cloudevents+json";
    assert_true(httpd_media_type_is("application/cloudevents+json", want));
    assert_true(httpd_media_type_is("Application/CloudEvents+JSON; charset=utf-8", want));
    assert_true(httpd_media_type_is("  application/cloudevents+json ;charset=utf-8", want));
    assert_false(httpd_media_type_is("application/cloudevents-batch+json", want));
    assert_false(httpd_media_type_is("application/cloudevents+jsonx", want));
    assert_false(httpd_media_type_is(NULL, want));
    assert_false(httpd_media_type_is("", want));
}

static void test_httpd_options_from_config_maps_http_limits(void **state)
{
    (void)state;
    const char *doc = "{\"http\": {\"max_connections\": 64, "
                      "\"max_connections_per_ip\": 8, \"connection_timeout_s\": 5, "
                      "\"max_header_bytes\": 8192, \"threads\": 4}}";
    struct config_errors errs;
    config_errors_init(&errs);
    struct config *cfg = config_parse(doc, strlen(doc), "test", &errs);
    assert_non_null(cfg);
    config_errors_free(&errs);

    struct httpd_options o = {.threads = 1};
    httpd_options_from_config(&o, cfg, false);
    assert_int_equal(o.connection_limit, 64);
    assert_int_equal(o.per_ip_limit, 8);
    assert_int_equal(o.timeout_s, 5);
    assert_int_equal(o.max_header_bytes, 8192);
    assert_int_equal(o.threads, 1); /* the admin keeps its own pool */
    httpd_options_from_config(&o, cfg, true);
    assert_int_equal(o.threads, 4);
    config_destroy(cfg);
}

/* "auto": one pool thread per CPU the process may use, capped; never more
 * threads than connections. */
static void test_httpd_auto_threads_follow_affinity(void **state)
{
    (void)state;
    cpu_set_t saved, one;
    assert_int_equal(sched_getaffinity(0, sizeof(saved), &saved), 0);
    unsigned n = httpd_auto_threads();
    assert_true(n >= 1 && n <= HTTPD_AUTO_THREADS_MAX);
    assert_true(n <= (unsigned)CPU_COUNT(&saved));

    /* Pinned to one CPU (taskset -c 0): one thread. */
    CPU_ZERO(&one);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &saved)) {
            CPU_SET(c, &one);
            break;
        }
    assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
    assert_int_equal(httpd_auto_threads(), 1);

    const char *doc = "{\"http\": {\"max_connections\": 1}}";
    struct config_errors errs;
    config_errors_init(&errs);
    struct config *cfg = config_parse(doc, strlen(doc), "test", &errs);
    assert_non_null(cfg);
    config_errors_free(&errs);
    assert_int_equal(sched_setaffinity(0, sizeof(saved), &saved), 0);
    struct httpd_options o = {0};
    httpd_options_from_config(&o, cfg, true);
    assert_int_equal(o.threads, 1); /* capped by max_connections */
    config_destroy(cfg);
}

/* ---- TLS ---------------------------------------------------------------- */

static void expect_start_error(const struct httpd_options *o, const char *want)
{
    char err[512] = "";
    struct httpd *h = httpd_start(o, err, sizeof(err));
    if (h)
        httpd_stop(h);
    assert_null(h);
    assert_string_equal(err, want);
}

static void test_httpd_tls_bad_files_are_start_errors(void **state)
{
    struct pki *p = *state;
    char want[512];
    struct httpd_options o = plain_options(NULL);
    o.tls_path = "tls";

    o.tls_cert_file = "/nonexistent/x.pem";
    o.tls_key_file = p->key;
    expect_start_error(&o, "tls.cert_file /nonexistent/x.pem: No such file or directory");

    o.tls_cert_file = p->cert;
    o.tls_key_file = "/nonexistent/k.pem";
    expect_start_error(&o, "tls.key_file /nonexistent/k.pem: No such file or directory");

    o.tls_cert_file = p->junk;
    o.tls_key_file = p->key;
    snprintf(want, sizeof(want), "tls.cert_file %s: no PEM certificate in it", p->junk);
    expect_start_error(&o, want);

    o.tls_cert_file = p->cert;
    o.tls_key_file = p->cert;
    snprintf(want, sizeof(want), "tls.key_file %s: no PEM private key in it", p->cert);
    expect_start_error(&o, want);

    o.tls_cert_file = p->dir;
    snprintf(want, sizeof(want), "tls.cert_file %s: not a regular file", p->dir);
    expect_start_error(&o, want);

    /* The admin listener names its own path. */
    o.tls_path = "admin.tls";
    o.tls_cert_file = p->cert;
    o.tls_key_file = p->other_key;
    snprintf(want, sizeof(want),
             "admin.tls.key_file %s: does not match admin.tls.cert_file %s",
             p->other_key, p->cert);
    expect_start_error(&o, want);
}

static size_t sink_cb(char *ptr, size_t size, size_t n, void *arg)
{
    char *out = arg;
    size_t len = size * n, used = strlen(out);
    if (used + len < 64) {
        memcpy(out + used, ptr, len);
        out[used + len] = '\0';
    }
    return len;
}

/* GET / over HTTPS trusting @ca; returns curl's result, status in @status. */
static CURLcode https_get(uint16_t port, const char *ca, long *status,
                          char *body)
{
    char url[64];
    snprintf(url, sizeof(url), "https://127.0.0.1:%u/", port);
    CURL *e = curl_easy_init();
    assert_non_null(e);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CAINFO, ca);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, body);
    CURLcode rc = curl_easy_perform(e);
    *status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(e);
    return rc;
}

static void test_httpd_tls_serves_https(void **state)
{
    struct pki *p = *state;
    char err[512] = "";
    struct httpd_options o = plain_options(NULL);
    o.tls_cert_file = p->cert;
    o.tls_key_file = p->key;
    o.tls_path = "tls";
    struct httpd *h = httpd_start(&o, err, sizeof(err));
    if (!h)
        fail_msg("httpd_start: %s", err);
    uint16_t port = httpd_port(h);

    long status;
    char body[64] = "";
    assert_int_equal(https_get(port, p->cert, &status, body), CURLE_OK);
    assert_int_equal(status, 200);
    assert_string_equal(body, "ok");

    /* Plain HTTP to it: the connection is closed, nothing else happens. */
    char buf[256];
    int fd = connect_to(port);
    send_all(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    ssize_t n = read_to_close(fd, buf, sizeof(buf));
    close(fd);
    assert_true(n <= 0 || strncmp(buf, "HTTP/1.1 200", 12) != 0);

    body[0] = '\0';
    assert_int_equal(https_get(port, p->cert, &status, body), CURLE_OK);
    assert_int_equal(status, 200);
    httpd_stop(h);
}

/* ---- the connection guard ----------------------------------------------- */

/* A request trickled a byte at a time is cut at its deadline (1 s after
 * its request line), though it is never idle for as long as the timeout. */
static void test_httpd_cuts_a_trickled_request(void **state)
{
    (void)state;
    char err[512] = "";
    struct httpd_options o = plain_options(NULL);
    o.timeout_s = 1;
    struct httpd *h = httpd_start(&o, err, sizeof(err));
    if (!h)
        fail_msg("httpd_start: %s", err);
    int fd = connect_to(httpd_port(h));
    struct timeval tv = {.tv_usec = 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int64_t t0 = clock_mono_ms();
    send_all(fd, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    bool closed = false;
    while (!closed && clock_mono_ms() - t0 < 8000) {
        char c;
        if (send(fd, "a", 1, MSG_NOSIGNAL) != 1) {
            closed = true;
            break;
        }
        ssize_t n = recv(fd, &c, 1, 0); /* waits 200 ms: the trickle rate */
        closed = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
    }
    int64_t took = clock_mono_ms() - t0;
    close(fd);
    assert_true(closed);
    assert_true(took >= 900);  /* not before its deadline */
    assert_true(took < 6000);  /* and soon after it */
    /* Others are served as usual. */
    assert_int_equal(get_status(httpd_port(h)), 200);
    httpd_stop(h);
}

/* A request received in full has no deadline: one suspended for longer
 * than the timeout (a slow spool commit) still gets its answer. */
static void test_httpd_keeps_a_request_received_in_full(void **state)
{
    (void)state;
    char err[512] = "";
    struct app a = {.suspend_ms = 2500};
    struct httpd_options o = plain_options(&a);
    o.timeout_s = 1;
    struct httpd *h = httpd_start(&o, err, sizeof(err));
    if (!h)
        fail_msg("httpd_start: %s", err);
    assert_int_equal(get_status(httpd_port(h)), 200);
    if (a.resumer_started)
        pthread_join(a.resumer, NULL);
    assert_true(a.resumer_started);
    httpd_stop(h);
}

/* Past max_connections a connection is closed at once, not left in the
 * backlog; the open ones keep working, and a slot freed is usable. */
static void test_httpd_refuses_past_max_connections(void **state)
{
    (void)state;
    char err[512] = "";
    char buf[256];
    struct httpd_options o = plain_options(NULL);
    o.connection_limit = 2;
    struct httpd *h = httpd_start(&o, err, sizeof(err));
    if (!h)
        fail_msg("httpd_start: %s", err);
    uint16_t port = httpd_port(h);
    int a = connect_to(port), b = connect_to(port);
    send_all(a, "GET / HTTP/1.1\r\nHost: x\r\n");
    send_all(b, "GET / HTTP/1.1\r\nHost: x\r\n");
    usleep(200 * 1000); /* both accepted and counted */

    int64_t t0 = clock_mono_ms();
    int c = connect_to(port);
    send(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27, MSG_NOSIGNAL);
    ssize_t n = read_to_close(c, buf, sizeof(buf));
    close(c);
    assert_true(n <= 0);                   /* no answer: closed or reset */
    assert_true(clock_mono_ms() - t0 < 3000); /* at once, not after a timeout */

    send_all(a, "Connection: close\r\n\r\n");
    n = read_to_close(a, buf, sizeof(buf));
    close(a);
    assert_true(n > 0);
    assert_memory_equal(buf, "HTTP/1.1 200", 12);
    usleep(200 * 1000); /* a's close is noticed */
    assert_int_equal(get_status(port), 200);
    close(b);
    httpd_stop(h);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_httpd_media_type_ignores_case_params_blanks),
        cmocka_unit_test(test_httpd_options_from_config_maps_http_limits),
        cmocka_unit_test(test_httpd_auto_threads_follow_affinity),
        cmocka_unit_test_setup_teardown(test_httpd_tls_bad_files_are_start_errors,
                                        pki_setup, pki_teardown),
        cmocka_unit_test_setup_teardown(test_httpd_tls_serves_https, pki_setup,
                                        pki_teardown),
        cmocka_unit_test(test_httpd_cuts_a_trickled_request),
        cmocka_unit_test(test_httpd_keeps_a_request_received_in_full),
        cmocka_unit_test(test_httpd_refuses_past_max_connections),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
