/*
 * latsink: the receiving end of the latency scenario. An HTTP peer that
 * answers every POST with 200 and, for each event it carries, records
 * now - benchsent: the event's `benchsent` extension attribute is the
 * sender's CLOCK_REALTIME in nanoseconds at the moment it posted the event
 * to Ferry (bench/ratesend.c sets it), so the difference is the
 * ingest-to-delivery latency. Sender, Ferry and sink share one clock.
 *
 *   latsink [--listen PORT] [--cap SAMPLES]
 *
 * Events are found in all three delivery modes Ferry may use:
 *   binary      the ce-benchsent header (one event per request)
 *   structured  the "benchsent" member of the body
 *   batch       the "benchsent" member of each element of the body array
 *
 * Every event id is remembered (a 64-bit FNV-1a hash in an open-addressing
 * set): a second arrival of the same id counts as a duplicate and adds no
 * latency sample, so at-least-once redeliveries show up instead of
 * flattering the count. The sender's ids are unique per run.
 *
 * GET /stats answers JSON: requests, events, unique events, duplicates,
 * events without a benchsent, the first and last arrival (CLOCK_REALTIME,
 * ns) and latency percentiles in microseconds. DELETE /stats resets everything;
 * DELETE /stats?id_prefix=P also makes it ignore (count as stale, nothing
 * else) events whose id does not start with P, such as a warm-up's late
 * arrivals. A measuring tool for
 * bench/run.py, not product code; one internal polling thread on epoll, so
 * nothing here needs a lock.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BODY_CAP (256u * 1024 * 1024)

struct stats {
    uint64_t requests, events, unique, duplicates, missing, dropped, stale;
    int64_t first_ns, last_ns;
    int64_t *lat;      /* ns, in arrival order */
    size_t n, cap;
};

static struct stats st;
static char id_prefix[128]; /* empty: every id counts */

/* ids seen since the last reset; 0 marks a free slot */
static uint64_t *seen;
static size_t seen_cap, seen_n; /* seen_cap is a power of two */

struct body {
    char *data;
    size_t len, cap;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 14695981039346656037ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h ? h : 1;
}

/* false when the id was seen before; ids past the set's capacity are
 * taken as new */
static bool first_arrival(const char *id)
{
    if (!id || seen_n * 2 >= seen_cap)
        return true;
    uint64_t h = fnv1a(id);
    size_t i = (size_t)h & (seen_cap - 1);
    while (seen[i]) {
        if (seen[i] == h)
            return false;
        i = (i + 1) & (seen_cap - 1);
    }
    seen[i] = h;
    seen_n++;
    return true;
}

static void record(int64_t now, const char *sent, const char *id)
{
    if (id_prefix[0] &&
        (!id || strncmp(id, id_prefix, strlen(id_prefix)) != 0)) {
        st.stale++;
        return;
    }
    st.events++;
    if (!st.first_ns)
        st.first_ns = now;
    st.last_ns = now;
    if (!first_arrival(id)) {
        st.duplicates++;
        return;
    }
    st.unique++;
    char *end;
    long long v = sent ? strtoll(sent, &end, 10) : 0;
    if (!sent || end == sent || v <= 0) {
        st.missing++;
        return;
    }
    if (st.n == st.cap) {
        st.dropped++;
        return;
    }
    st.lat[st.n++] = now - (int64_t)v;
}

static void record_json(int64_t now, json_t *ev)
{
    json_t *v = json_object_get(ev, "benchsent");
    char num[32];
    if (json_is_integer(v)) {
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(v));
        record(now, num, json_string_value(json_object_get(ev, "id")));
    } else {
        record(now, json_string_value(v),
               json_string_value(json_object_get(ev, "id")));
    }
}

static int append(struct body *b, const char *data, size_t len)
{
    if (b->len + len > BODY_CAP)
        return -1;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
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
                              char *text, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), text, mode);
    if (!r)
        return MHD_NO;
    if (*text)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                "application/json");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[0..n), in microseconds. */
static double pct(const int64_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t rank = (size_t)((p / 100.0) * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return (double)v[rank - 1] / 1000.0;
}

static char *stats_json(void)
{
    static const double ps[] = {0,  10, 25, 50,   75,    90,   95,
                                99, 99.5, 99.9, 99.99, 100};
    int64_t *sorted = malloc((st.n ? st.n : 1) * sizeof(*sorted));
    if (!sorted)
        return NULL;
    memcpy(sorted, st.lat, st.n * sizeof(*sorted));
    qsort(sorted, st.n, sizeof(*sorted), cmp_i64);
    json_t *table = json_array();
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
        json_array_append_new(table, json_pack("[f,f]", ps[i],
                                               pct(sorted, st.n, ps[i])));
    double sum = 0;
    for (size_t i = 0; i < st.n; i++)
        sum += (double)sorted[i] / 1000.0;
    json_t *o = json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:f,s:f,"
        "s:o}",
        "stale", (json_int_t)st.stale,
        "requests", (json_int_t)st.requests, "events", (json_int_t)st.events,
        "unique", (json_int_t)st.unique, "duplicates",
        (json_int_t)st.duplicates,
        "missing", (json_int_t)st.missing, "dropped", (json_int_t)st.dropped,
        "samples", (json_int_t)st.n, "first_ns", (json_int_t)st.first_ns,
        "last_ns", (json_int_t)st.last_ns, "mean_us",
        st.n ? sum / (double)st.n : 0.0, "p50_us", pct(sorted, st.n, 50),
        "p99_us", pct(sorted, st.n, 99), "p999_us", pct(sorted, st.n, 99.9),
        "min_us", pct(sorted, st.n, 0), "max_us", pct(sorted, st.n, 100),
        "percentiles", table);
    free(sorted);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *c,
                                 const char *url, const char *method,
                                 const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
    (void)cls, (void)version;
    if (!strcmp(url, "/stats")) {
        if (!strcmp(method, "DELETE")) {
            int64_t *lat = st.lat;
            size_t cap = st.cap;
            memset(&st, 0, sizeof(st));
            st.lat = lat;
            st.cap = cap;
            if (seen_n)
                memset(seen, 0, seen_cap * sizeof(*seen));
            seen_n = 0;
            const char *pfx = MHD_lookup_connection_value(
                c, MHD_GET_ARGUMENT_KIND, "id_prefix");
            snprintf(id_prefix, sizeof(id_prefix), "%s", pfx ? pfx : "");
            return answer(c, MHD_HTTP_OK, "{}", MHD_RESPMEM_PERSISTENT);
        }
        char *s = stats_json();
        if (!s)
            return MHD_NO;
        return answer(c, MHD_HTTP_OK, s, MHD_RESPMEM_MUST_FREE);
    }
    if (strcmp(method, "POST") != 0)
        return answer(c, MHD_HTTP_NOT_FOUND, "", MHD_RESPMEM_PERSISTENT);
    struct body *b = *con_cls;
    if (!b) {
        b = calloc(1, sizeof(*b));
        if (!b)
            return MHD_NO;
        *con_cls = b;
        return MHD_YES;
    }
    const char *sent =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, "ce-benchsent");
    if (*upload_size) {
        /* binary mode: the body is data we do not need */
        if (!sent && append(b, upload, *upload_size))
            return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    int64_t now = now_ns();
    st.requests++;
    if (sent) {
        record(now, sent,
               MHD_lookup_connection_value(c, MHD_HEADER_KIND, "ce-id"));
    } else if (b->len) {
        json_t *doc = json_loadb(b->data, b->len, 0, NULL);
        if (json_is_array(doc)) {
            size_t i;
            json_t *ev;
            json_array_foreach(doc, i, ev) record_json(now, ev);
        } else if (json_is_object(doc)) {
            record_json(now, doc);
        } else {
            record(now, NULL, NULL);
        }
        json_decref(doc);
    } else {
        record(now, NULL, NULL);
    }
    return answer(c, MHD_HTTP_OK, "", MHD_RESPMEM_PERSISTENT);
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
    fprintf(stderr, "usage: latsink [--listen PORT] [--cap SAMPLES]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    unsigned port = 18070;
    size_t cap = 4000000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc)
            port = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--cap") && i + 1 < argc)
            cap = strtoul(argv[++i], NULL, 10);
        else
            usage();
    }
    st.cap = cap;
    st.lat = malloc((cap ? cap : 1) * sizeof(*st.lat));
    for (seen_cap = 1024; seen_cap < 2 * cap; seen_cap *= 2)
        ;
    seen = calloc(seen_cap, sizeof(*seen));
    if (!st.lat || !seen) {
        fprintf(stderr, "latsink: out of memory\n");
        return 1;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG,
        (uint16_t)port, NULL, NULL, access_cb, NULL,
        MHD_OPTION_NOTIFY_COMPLETED, completed_cb, NULL,
        MHD_OPTION_CONNECTION_TIMEOUT, 300u, MHD_OPTION_SOCK_ADDR, &sa,
        MHD_OPTION_CONNECTION_LIMIT, 4096u, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "latsink: cannot listen on 127.0.0.1:%u\n", port);
        return 1;
    }
    int sig;
    sigwait(&set, &sig);
    MHD_stop_daemon(d);
    free(st.lat);
    free(seen);
    return 0;
}
