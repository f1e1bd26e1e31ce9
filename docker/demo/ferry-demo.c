/*
 * ferry-demo: the two tiny applications of Ferry's container examples
 * (docker/compose.yaml and the Kubernetes manifests), in one binary.
 *
 *   ferry-demo consumer [--listen 0.0.0.0:9000] [--name NAME]
 *       POST /events    takes a CloudEvent delivered by Ferry (binary or
 *                       structured mode), prints it as one JSON line on
 *                       stdout and remembers its id
 *       GET  /received  {"name":NAME,"count":N,"ids":[...]} (distinct ids,
 *                       in arrival order)
 *       GET  /healthz   200
 *
 *   ferry-demo checkout [--listen 0.0.0.0:9000]
 *                       [--ferry http://127.0.0.1:8080/v1/events]
 *       POST /pay       body {"order":"o-1","amount":42}: publishes a
 *                       structured CloudEvent com.example.payment.received
 *                       (source /checkout, id = the order, data = the body)
 *                       to Ferry and answers with Ferry's status and body
 *       GET  /healthz   200
 *
 * DESIGN: libmicrohttpd runs one internal polling thread, so the handlers
 * never run concurrently and the consumer's id list needs no lock. The
 * checkout handler blocks that thread while it calls Ferry on localhost,
 * which is fine for a demo. The main thread only waits for SIGTERM or
 * SIGINT (it may be PID 1 in a container) and then stops the daemon.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_BODY (1024 * 1024)

static const char usage[] =
    "usage: ferry-demo consumer [--listen HOST:PORT] [--name NAME]\n"
    "       ferry-demo checkout [--listen HOST:PORT] [--ferry URL]\n"
    "defaults: --listen 0.0.0.0:9000, --name consumer,\n"
    "          --ferry http://127.0.0.1:8080/v1/events\n";

/* Settings and state; written by main before the daemon starts, then
 * owned by the MHD thread. */
static struct {
    bool checkout;
    const char *name;
    const char *ferry_url;
    char **ids; /* consumer: distinct event ids, in arrival order */
    size_t n_ids, cap_ids;
} app = {.name = "consumer",
         .ferry_url = "http://127.0.0.1:8080/v1/events"};

/* One request's body, collected across MHD's upload callbacks. */
struct body {
    char *data;
    size_t len;
    bool too_large;
};

/* ---- answers ------------------------------------------------------------ */

static enum MHD_Result answer(struct MHD_Connection *conn, unsigned status,
                              const char *text)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        strlen(text), (void *)(uintptr_t)text, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    if (*text)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                "application/json");
    enum MHD_Result ok = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ok;
}

/* Answers with a JSON value; takes the reference to `v`. */
static enum MHD_Result answer_json(struct MHD_Connection *conn,
                                   unsigned status, json_t *v)
{
    char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (!text)
        return answer(conn, 500, "{\"error\":\"out_of_memory\"}");
    enum MHD_Result ok = answer(conn, status, text);
    free(text);
    return ok;
}

static enum MHD_Result answer_error(struct MHD_Connection *conn,
                                    unsigned status, const char *code,
                                    const char *message)
{
    return answer_json(conn, status,
                       json_pack("{s:s,s:s}", "error", code, "message",
                                 message));
}

/* ---- consumer ------------------------------------------------------------ */

static bool media_type_is(const char *ct, const char *type)
{
    size_t n = strlen(type);
    return ct && strncasecmp(ct, type, n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A ce- header value, percent-decoded as the CloudEvents HTTP binding
 * says, as a new JSON string (NULL if it is not UTF-8). */
static json_t *decoded(const char *s)
{
    size_t n = strlen(s), j = 0;
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && (hi = hexval(s[i + 1])) >= 0 &&
            (lo = hexval(s[i + 2])) >= 0) {
            out[j++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[j++] = s[i];
        }
    }
    json_t *v = json_stringn(out, j);
    free(out);
    return v;
}

static enum MHD_Result add_ce_header(void *cls, enum MHD_ValueKind kind,
                                     const char *key, const char *value)
{
    (void)kind;
    json_t *ev = cls;
    if (strncasecmp(key, "ce-", 3) != 0 || !key[3] || !value)
        return MHD_YES;
    char attr[64];
    size_t i = 0;
    for (const char *k = key + 3; *k && i < sizeof(attr) - 1; k++)
        attr[i++] = (char)(*k >= 'A' && *k <= 'Z' ? *k - 'A' + 'a' : *k);
    attr[i] = '\0';
    json_t *v = decoded(value);
    if (v)
        json_object_set_new(ev, attr, v);
    return MHD_YES;
}

/* The event as a JSON object (new reference), or NULL with *why set. */
static json_t *read_event(struct MHD_Connection *conn, const struct body *b,
                          const char **why)
{
    const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_TYPE);
    json_error_t jerr;
    json_t *ev;
    if (media_type_is(ct, "application/cloudevents+json")) {
        ev = json_loadb(b->data ? b->data : "", b->len, 0, &jerr);
        if (!json_is_object(ev)) {
            json_decref(ev);
            *why = "structured mode: the body is not a JSON object";
            return NULL;
        }
    } else {
        ev = json_object();
        if (!ev) {
            *why = "out of memory";
            return NULL;
        }
        MHD_get_connection_values(conn, MHD_HEADER_KIND, add_ce_header, ev);
        if (ct)
            json_object_set_new(ev, "datacontenttype", json_string(ct));
        json_t *data = NULL;
        if (b->len && (media_type_is(ct, "application/json") ||
                       (ct && strstr(ct, "+json"))))
            data = json_loadb(b->data, b->len, 0, &jerr);
        if (!data && b->len)
            data = json_stringn(b->data, b->len);
        if (data)
            json_object_set_new(ev, "data", data);
    }
    if (!json_is_string(json_object_get(ev, "id"))) {
        json_decref(ev);
        *why = "the event has no id (ce-id header or \"id\" attribute)";
        return NULL;
    }
    return ev;
}

/* Remembers `id`; returns true if it was already known. */
static bool remember(const char *id)
{
    for (size_t i = 0; i < app.n_ids; i++)
        if (strcmp(app.ids[i], id) == 0)
            return true;
    if (app.n_ids == app.cap_ids) {
        size_t cap = app.cap_ids ? 2 * app.cap_ids : 64;
        char **ids = realloc(app.ids, cap * sizeof(*ids));
        if (!ids)
            return false;
        app.ids = ids;
        app.cap_ids = cap;
    }
    char *copy = strdup(id);
    if (copy)
        app.ids[app.n_ids++] = copy;
    return false;
}

static enum MHD_Result on_event(struct MHD_Connection *conn,
                                const struct body *b)
{
    const char *why = NULL;
    json_t *ev = read_event(conn, b, &why);
    if (!ev)
        return answer_error(conn, 400, "invalid_event", why);
    bool dup = remember(json_string_value(json_object_get(ev, "id")));
    json_t *line = json_pack("{s:s,s:b,s:o}", "consumer", app.name,
                             "duplicate", dup, "event", ev);
    char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
    if (text) {
        printf("%s\n", text);
        fflush(stdout);
    }
    free(text);
    json_decref(line);
    return answer(conn, 204, "");
}

static enum MHD_Result on_received(struct MHD_Connection *conn)
{
    json_t *ids = json_array();
    for (size_t i = 0; ids && i < app.n_ids; i++)
        json_array_append_new(ids, json_string(app.ids[i]));
    return answer_json(conn, 200,
                       json_pack("{s:s,s:I,s:o}", "name", app.name, "count",
                                 (json_int_t)app.n_ids, "ids", ids));
}

/* ---- checkout ------------------------------------------------------------ */

static size_t collect_cb(char *p, size_t size, size_t n, void *cls)
{
    struct body *b = cls;
    size_t len = size * n;
    if (b->len + len > MAX_BODY)
        return 0;
    char *data = realloc(b->data, b->len + len + 1);
    if (!data)
        return 0;
    memcpy(data + b->len, p, len);
    b->data = data;
    b->len += len;
    b->data[b->len] = '\0';
    return len;
}

static enum MHD_Result on_pay(struct MHD_Connection *conn,
                              const struct body *b)
{
    json_error_t jerr;
    json_t *order = json_loadb(b->data ? b->data : "", b->len, 0, &jerr);
    const char *id = json_string_value(json_object_get(order, "order"));
    if (!json_is_object(order) || !id || !*id) {
        json_decref(order);
        return answer_error(conn, 400, "invalid_order",
                            "the body must be a JSON object with a "
                            "non-empty string \"order\"");
    }
    json_t *ev = json_pack("{s:s,s:s,s:s,s:s,s:s,s:O}", "specversion", "1.0",
                           "id", id, "source", "/checkout", "type",
                           "com.example.payment.received", "datacontenttype",
                           "application/json", "data", order);
    char *text = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
    json_decref(ev);
    if (!text) {
        json_decref(order);
        return answer_error(conn, 500, "out_of_memory", "out of memory");
    }

    struct body reply = {0};
    char errbuf[CURL_ERROR_SIZE] = "";
    long status = 0;
    struct curl_slist *h =
        curl_slist_append(NULL, "Content-Type: application/cloudevents+json");
    CURL *c = curl_easy_init();
    CURLcode rc = CURLE_OUT_OF_MEMORY;
    if (c && h) {
        curl_easy_setopt(c, CURLOPT_URL, app.ferry_url);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect_cb);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
        rc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    }
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    free(text);

    enum MHD_Result ok;
    if (rc != CURLE_OK || status < 100 || status > 599)
        ok = answer_error(conn, 502, "ferry_unreachable",
                          *errbuf ? errbuf : curl_easy_strerror(rc));
    else
        ok = answer(conn, (unsigned)status, reply.data ? reply.data : "");
    fprintf(stderr, "checkout: order %s -> ferry %ld\n", id, status);
    json_decref(order); /* owns id */
    free(reply.data);
    return ok;
}

/* ---- HTTP ---------------------------------------------------------------- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    struct body *b = *con_cls;
    if (!b) { /* first call: headers only */
        *con_cls = calloc(1, sizeof(struct body));
        return *con_cls ? MHD_YES : MHD_NO;
    }
    if (*upload_size) {
        if (b->len + *upload_size > MAX_BODY) {
            b->too_large = true;
        } else if (!b->too_large) {
            char *data = realloc(b->data, b->len + *upload_size + 1);
            if (!data)
                return MHD_NO;
            memcpy(data + b->len, upload, *upload_size);
            b->data = data;
            b->len += *upload_size;
            b->data[b->len] = '\0';
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (b->too_large)
        return answer_error(conn, 413, "too_large", "body over 1 MiB");

    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    if (strcmp(url, "/healthz") == 0 && get)
        return answer(conn, 200, "{\"status\":\"ok\"}");
    if (!app.checkout && strcmp(url, "/events") == 0 && post)
        return on_event(conn, b);
    if (!app.checkout && strcmp(url, "/received") == 0 && get)
        return on_received(conn);
    if (app.checkout && strcmp(url, "/pay") == 0 && post)
        return on_pay(conn, b);
    return answer_error(conn, 404, "not_found", "no such endpoint");
}

static void on_completed(void *cls, struct MHD_Connection *conn,
                         void **con_cls, enum MHD_RequestTerminationCode why)
{
    (void)cls;
    (void)conn;
    (void)why;
    struct body *b = *con_cls;
    if (b)
        free(b->data);
    free(b);
    *con_cls = NULL;
}

/* "A.B.C.D:PORT" into `sa`; 0 or -EINVAL. */
static int parse_listen(const char *s, struct sockaddr_in *sa)
{
    const char *colon = strrchr(s, ':');
    char host[INET_ADDRSTRLEN];
    if (!colon || (size_t)(colon - s) >= sizeof(host))
        return -EINVAL;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (*end || port < 1 || port > 65535 ||
        inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return -EINVAL;
    return 0;
}

int main(int argc, char **argv)
{
    const char *listen = "0.0.0.0:9000";
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 ||
                      strcmp(argv[1], "-h") == 0)) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc < 2 || (strcmp(argv[1], "consumer") != 0 &&
                     strcmp(argv[1], "checkout") != 0)) {
        fputs(usage, stderr);
        return 2;
    }
    app.checkout = strcmp(argv[1], "checkout") == 0;
    for (int i = 2; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(opt, "--listen") == 0 && val)
            listen = val;
        else if (strcmp(opt, "--name") == 0 && val && !app.checkout)
            app.name = val;
        else if (strcmp(opt, "--ferry") == 0 && val && app.checkout)
            app.ferry_url = val;
        else {
            fprintf(stderr, "ferry-demo: bad option %s\n%s", opt, usage);
            return 2;
        }
        i++;
    }
    struct sockaddr_in sa;
    if (parse_listen(listen, &sa) != 0) {
        fprintf(stderr, "ferry-demo: --listen %s: want IPv4 HOST:PORT\n",
                listen);
        return 2;
    }

    /* Block the stop signals in every thread; main waits for them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);

    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        on_request, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "ferry-demo: cannot listen on %s\n", listen);
        return 1;
    }
    fprintf(stderr, "ferry-demo %s listening on %s%s%s\n", argv[1], listen,
            app.checkout ? ", publishing to " : "",
            app.checkout ? app.ferry_url : "");
    int sig = 0;
    sigwait(&stop, &sig);
    fprintf(stderr, "ferry-demo: signal %d, stopping\n", sig);
    MHD_stop_daemon(d);
    curl_global_cleanup();
    for (size_t i = 0; i < app.n_ids; i++)
        free(app.ids[i]);
    free(app.ids);
    return 0;
}
