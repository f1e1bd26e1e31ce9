/*
 * baseline: the yardstick Ferry's ingest is measured against. A minimal
 * libmicrohttpd server that reads a POST body, parses it with jansson and
 * answers 202 {"accepted":1}; nothing is stored. A measuring tool for
 * bench/run.py, not product code.
 *
 *   baseline [--listen PORT] [--threads N] [--no-parse]
 *
 * --threads 0 (the default) runs one internal polling thread on epoll
 * (MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, no pool), which gave the
 * best figure pinned to one core; N > 0 adds MHD_OPTION_THREAD_POOL_SIZE N.
 * --no-parse answers 202 without parsing: bare libmicrohttpd.
 *
 * A body that is not JSON gets 400, so a broken load script cannot pass for
 * a fast baseline. SIGINT or SIGTERM stops the server.
 */
#include <jansson.h>
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BODY_CAP (64u * 1024 * 1024)

static const char ACCEPTED[] = "{\"accepted\":1}";
static const char INVALID[] = "{\"error\":\"invalid_json\"}";
static bool parse = true;

struct body {
    char *data;
    size_t len, cap;
    bool too_large;
};

static int append(struct body *b, const char *data, size_t len)
{
    if (b->len + len > BODY_CAP) {
        b->too_large = true;
        return 0;
    }
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 2048;
        while (cap < b->len + len)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p)
            return -1;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status,
                              const char *text)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "application/json");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *c,
                                 const char *url, const char *method,
                                 const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
    (void)cls, (void)url, (void)version;
    if (strcmp(method, "POST") != 0)
        return answer(c, MHD_HTTP_OK, "{\"status\":\"ok\"}");
    struct body *b = *con_cls;
    if (!b) {
        b = calloc(1, sizeof(*b));
        if (!b)
            return MHD_NO;
        *con_cls = b;
        return MHD_YES;
    }
    if (*upload_size) {
        if (append(b, upload, *upload_size))
            return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    if (b->too_large)
        return answer(c, 413, "{\"error\":\"too_large\"}");
    if (!parse)
        return answer(c, MHD_HTTP_ACCEPTED, ACCEPTED);
    json_error_t err;
    json_t *doc = json_loadb(b->data ? b->data : "", b->len, 0, &err);
    if (!doc)
        return answer(c, MHD_HTTP_BAD_REQUEST, INVALID);
    json_decref(doc);
    return answer(c, MHD_HTTP_ACCEPTED, ACCEPTED);
}

static void completed_cb(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)c, (void)toe;
    struct body *b = *con_cls;
    if (b) {
        free(b->data);
        free(b);
        *con_cls = NULL;
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: baseline [--listen PORT] [--threads N] [--no-parse]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    unsigned port = 18090, threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc)
            port = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--no-parse"))
            parse = false;
        else
            usage();
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* MHD threads inherit it */

    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                     MHD_USE_ERROR_LOG;
    struct MHD_Daemon *d;
    if (threads > 0)
        d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, access_cb,
                             NULL, MHD_OPTION_NOTIFY_COMPLETED, completed_cb,
                             NULL, MHD_OPTION_CONNECTION_TIMEOUT, 30u,
                             MHD_OPTION_SOCK_ADDR, &sa,
                             MHD_OPTION_THREAD_POOL_SIZE, threads,
                             MHD_OPTION_END);
    else
        d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, access_cb,
                             NULL, MHD_OPTION_NOTIFY_COMPLETED, completed_cb,
                             NULL, MHD_OPTION_CONNECTION_TIMEOUT, 30u,
                             MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "baseline: cannot listen on 127.0.0.1:%u\n", port);
        return 1;
    }
    int sig;
    sigwait(&set, &sig);
    MHD_stop_daemon(d);
    return 0;
}
