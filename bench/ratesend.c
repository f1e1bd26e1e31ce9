/*
 * ratesend: an open-loop HTTP load generator for Ferry's ingest. wrk sends
 * as fast as it can; the latency scenario needs a fixed rate instead, and
 * the backlog scenario an exact number of events. Each event is a ~1 KB
 * structured CloudEvent with a unique id and a `benchsent` extension
 * attribute: CLOCK_REALTIME in nanoseconds, taken just before the request is
 * written, which bench/latsink.c subtracts from its own clock on arrival.
 *
 *   ratesend [--host IP] [--port P] [--path /v1/events]
 *            [--rate EVENTS_PER_S] [--duration S | --count REQUESTS]
 *            [--connections C] [--batch B] [--size BYTES] [--nonce TAG]
 *
 * --rate 0 sends as fast as the connections allow (closed loop). With a
 * rate, request i is due at start + i * batch / rate; a request that finds
 * no idle connection goes out as soon as one frees up and counts as late
 * when that is more than 1 ms after its due time. Connections are HTTP/1.1
 * keep-alive, one request at a time each (no pipelining).
 *
 * Prints one JSON object: requests and events sent, 2xx answers, errors,
 * achieved rate, late sends and the send-to-answer (ingest) latency
 * percentiles in microseconds. Exit 0 when every request got a 2xx.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RESP_CAP 16384

enum state { IDLE, BUSY };

struct conn {
    int fd;
    enum state state;
    char *req;
    size_t req_len, req_off, req_cap;
    char resp[RESP_CAP];
    size_t resp_len;
    int64_t started; /* CLOCK_MONOTONIC ns */
    size_t events;   /* in the request on the wire */
};

struct opts {
    const char *host, *path, *nonce;
    unsigned port;
    double rate, duration;
    long count;
    int connections;
    int batch;
    int size;
};

static struct opts o = {.host = "127.0.0.1", .path = "/v1/events",
                        .nonce = "rs", .port = 8080, .rate = 0,
                        .duration = 10, .count = -1, .connections = 32,
                        .batch = 1, .size = 1024};

static struct conn *conns;
static int *idle; /* stack of idle connection indices */
static int n_idle;
static int ep;
static uint64_t seq;
static char *pad = "";
static size_t pad_len;
static int64_t *lat;
static size_t n_lat, cap_lat;
static uint64_t ok, bad_status, errors, reconnects, late, sent_req, sent_ev;

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "ratesend: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int dial(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)o.port)};
    if (inet_pton(AF_INET, o.host, &sa.sin_addr) != 1) {
        fprintf(stderr, "ratesend: bad host %s\n", o.host);
        exit(2);
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
        die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void watch(struct conn *c, int op, uint32_t ev)
{
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(ep, op, c->fd, &e))
        die("epoll_ctl");
}

static void reserve(struct conn *c, size_t need)
{
    if (need <= c->req_cap)
        return;
    size_t cap = c->req_cap ? c->req_cap : 4096;
    while (cap < need)
        cap *= 2;
    c->req = realloc(c->req, cap);
    if (!c->req)
        die("realloc");
    c->req_cap = cap;
}

/* Appends one event; events are all the same size for a given run. */
static size_t put_event(char *dst, int64_t sent)
{
    seq++;
    return (size_t)sprintf(
        dst,
        "{\"specversion\":\"1.0\",\"id\":\"%s-%012" PRIu64 "\","
        "\"source\":\"/bench/ratesend\",\"type\":\"com.example.bench\","
        "\"datacontenttype\":\"application/json\","
        "\"benchsent\":\"%019" PRId64 "\","
        "\"data\":{\"seq\":\"%012" PRIu64 "\",\"pad\":\"%s\"}}",
        o.nonce, seq, sent, seq, pad);
}

static void build(struct conn *c)
{
    size_t ev_max = (size_t)o.size + strlen(o.nonce) + 512;
    size_t body_max = (size_t)o.batch * (ev_max + 1) + 2;
    reserve(c, body_max + 512);
    char *body = c->req + 512; /* headers are written in front of it */
    int64_t sent = clock_ns(CLOCK_REALTIME);
    size_t n = 0;
    if (o.batch > 1) {
        body[n++] = '[';
        for (int i = 0; i < o.batch; i++) {
            if (i)
                body[n++] = ',';
            n += put_event(body + n, sent);
        }
        body[n++] = ']';
    } else {
        n = put_event(body, sent);
    }
    char hdr[512];
    int h = snprintf(hdr, sizeof(hdr),
                     "POST %s HTTP/1.1\r\nHost: %s:%u\r\n"
                     "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                     o.path, o.host, o.port,
                     o.batch > 1 ? "application/cloudevents-batch+json"
                                 : "application/cloudevents+json",
                     n);
    memcpy(body - h, hdr, (size_t)h);
    memmove(c->req, body - h, (size_t)h + n);
    c->req_len = (size_t)h + n;
    c->req_off = 0;
    c->events = (size_t)o.batch;
}

static void record_latency(int64_t ns)
{
    if (n_lat == cap_lat) {
        cap_lat = cap_lat ? cap_lat * 2 : 65536;
        lat = realloc(lat, cap_lat * sizeof(*lat));
        if (!lat)
            die("realloc");
    }
    lat[n_lat++] = ns;
}

static void finish(struct conn *c, bool good)
{
    if (c->state == IDLE)
        return;
    c->state = IDLE;
    c->resp_len = 0;
    idle[n_idle++] = (int)(c - conns);
    if (good)
        record_latency(clock_ns(CLOCK_MONOTONIC) - c->started);
}

/* The server closed or broke the connection: count it and dial again. */
static void redial(struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    reconnects++;
    if (c->state == BUSY)
        errors++;
    c->fd = dial();
    watch(c, EPOLL_CTL_ADD, EPOLLIN);
    finish(c, false);
}

static void pump_write(struct conn *c)
{
    while (c->req_off < c->req_len) {
        ssize_t w = write(c->fd, c->req + c->req_off, c->req_len - c->req_off);
        if (w < 0 && errno == EAGAIN) {
            watch(c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT);
            return;
        }
        if (w <= 0) {
            redial(c);
            return;
        }
        c->req_off += (size_t)w;
    }
    watch(c, EPOLL_CTL_MOD, EPOLLIN);
}

static void send_one(struct conn *c)
{
    build(c);
    c->state = BUSY;
    c->started = clock_ns(CLOCK_MONOTONIC);
    sent_req++;
    sent_ev += c->events;
    pump_write(c);
}

/* Returns true once a whole response is in c->resp. */
static bool parse(struct conn *c, int *status)
{
    c->resp[c->resp_len < RESP_CAP ? c->resp_len : RESP_CAP - 1] = '\0';
    char *end = strstr(c->resp, "\r\n\r\n");
    if (!end)
        return false;
    if (sscanf(c->resp, "HTTP/1.%*d %d", status) != 1)
        *status = 0;
    size_t clen = 0;
    for (char *p = c->resp; p && p < end; p = strstr(p, "\r\n")) {
        p += (*p == '\r') ? 2 : 0;
        if (!strncasecmp(p, "Content-Length:", 15))
            clen = strtoul(p + 15, NULL, 10);
    }
    return c->resp_len >= (size_t)(end + 4 - c->resp) + clen;
}

static void pump_read(struct conn *c)
{
    for (;;) {
        if (c->resp_len >= RESP_CAP - 1) {
            redial(c);
            return;
        }
        ssize_t r = read(c->fd, c->resp + c->resp_len,
                         RESP_CAP - 1 - c->resp_len);
        if (r < 0 && errno == EAGAIN)
            break;
        if (r <= 0) {
            redial(c);
            return;
        }
        c->resp_len += (size_t)r;
    }
    int status;
    if (c->state == BUSY && parse(c, &status)) {
        bool good = status >= 200 && status < 300;
        if (good)
            ok++;
        else
            bad_status++;
        finish(c, good);
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct_us(double p)
{
    if (!n_lat)
        return 0;
    size_t rank = (size_t)((p / 100.0) * (double)n_lat + 0.999999);
    rank = rank < 1 ? 1 : rank > n_lat ? n_lat : rank;
    return (double)lat[rank - 1] / 1000.0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: ratesend [--host IP] [--port P] [--path PATH] "
            "[--rate EVENTS_PER_S] [--duration S | --count REQUESTS]\n"
            "                [--connections C] [--batch B] [--size BYTES] "
            "[--nonce TAG]\n");
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        i++;
        if (!strcmp(a, "--host"))
            o.host = v;
        else if (!strcmp(a, "--port"))
            o.port = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--path"))
            o.path = v;
        else if (!strcmp(a, "--rate"))
            o.rate = strtod(v, NULL);
        else if (!strcmp(a, "--duration"))
            o.duration = strtod(v, NULL);
        else if (!strcmp(a, "--count"))
            o.count = strtol(v, NULL, 10);
        else if (!strcmp(a, "--connections"))
            o.connections = atoi(v);
        else if (!strcmp(a, "--batch"))
            o.batch = atoi(v);
        else if (!strcmp(a, "--size"))
            o.size = atoi(v);
        else if (!strcmp(a, "--nonce"))
            o.nonce = v;
        else
            usage();
    }
    if (o.connections < 1 || o.batch < 1 || o.size < 256 || o.rate < 0 ||
        strlen(o.nonce) > 64)
        usage();
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    /* the event without pad is ~250 bytes plus the nonce */
    char probe[1024];
    int fixed = (int)put_event(probe, 0);
    seq = 0;
    pad_len = (size_t)(o.size > fixed ? o.size - fixed : 0);
    pad = malloc(pad_len + 1);
    if (!pad)
        die("malloc");
    memset(pad, 'x', pad_len);
    pad[pad_len] = '\0';

    ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    conns = calloc((size_t)o.connections, sizeof(*conns));
    idle = calloc((size_t)o.connections, sizeof(*idle));
    if (!conns || !idle)
        die("calloc");
    for (int i = 0; i < o.connections; i++) {
        conns[i].fd = dial();
        watch(&conns[i], EPOLL_CTL_ADD, EPOLLIN);
        idle[n_idle++] = o.connections - 1 - i;
    }

    /* total requests: by count, or by duration at the rate */
    double req_rate = o.rate / o.batch;
    long total = o.count >= 0 ? o.count
                 : o.rate > 0 ? (long)(req_rate * o.duration + 0.5)
                              : -1;
    double period_ns = o.rate > 0 ? 1e9 / req_rate : 0;
    int64_t t0 = clock_ns(CLOCK_MONOTONIC);
    int64_t stop = t0 + (int64_t)(o.duration * 1e9);
    long next = 0;
    struct epoll_event evs[64];
    for (;;) {
        int64_t now = clock_ns(CLOCK_MONOTONIC);
        if (total < 0 && now >= stop)
            total = next; /* closed loop by duration: stop sending */
        while ((total < 0 || next < total) && n_idle > 0) {
            int64_t due = t0 + (int64_t)((double)next * period_ns);
            if (o.rate > 0 && due > now)
                break;
            if (o.rate > 0 && now - due > 1000000)
                late++;
            send_one(&conns[idle[--n_idle]]);
            next++;
            if (o.rate > 0)
                now = clock_ns(CLOCK_MONOTONIC);
        }
        if (total >= 0 && next >= total && n_idle == o.connections)
            break;
        struct timespec ts = {0, 100 * 1000000}; /* at most 100 ms */
        if (o.rate > 0 && n_idle > 0 && (total < 0 || next < total)) {
            int64_t wait = t0 + (int64_t)((double)next * period_ns) - now;
            wait = wait < 0 ? 0 : wait;
            ts.tv_sec = wait / 1000000000;
            ts.tv_nsec = wait % 1000000000;
        }
        int n = epoll_pwait2(ep, evs, 64, &ts, NULL);
        if (n < 0 && errno != EINTR)
            die("epoll_pwait2");
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (evs[i].events & EPOLLOUT && c->state == BUSY)
                pump_write(c);
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                pump_read(c);
        }
    }
    double elapsed = (double)(clock_ns(CLOCK_MONOTONIC) - t0) / 1e9;
    qsort(lat, n_lat, sizeof(*lat), cmp_i64);
    printf("{\"requests\":%" PRIu64 ",\"events\":%" PRIu64 ",\"ok\":%" PRIu64
           ",\"bad_status\":%" PRIu64 ",\"errors\":%" PRIu64
           ",\"reconnects\":%" PRIu64 ",\"late\":%" PRIu64
           ",\"elapsed_s\":%.4f,\"events_per_s\":%.1f,\"target_rate\":%.1f"
           ",\"event_bytes\":%d,\"batch\":%d"
           ",\"ingest_p50_us\":%.1f,\"ingest_p99_us\":%.1f"
           ",\"ingest_p999_us\":%.1f,\"ingest_max_us\":%.1f}\n",
           sent_req, sent_ev, ok, bad_status, errors, reconnects, late,
           elapsed, (double)ok * o.batch / elapsed, o.rate,
           fixed + (int)pad_len, o.batch, pct_us(50), pct_us(99),
           pct_us(99.9), pct_us(100));
    for (int i = 0; i < o.connections; i++) {
        close(conns[i].fd);
        free(conns[i].req);
    }
    free(conns);
    free(idle);
    free(lat);
    free(pad);
    return ok == sent_req ? 0 : 1;
}
