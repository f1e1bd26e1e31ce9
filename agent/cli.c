/*
 * cli: `ferry send` and `ferry healthcheck` (see cli.h), and the one HTTP
 * request helper every command shares (`ferry dead-letters` lives in
 * cli_deadletters.c). Plain libcurl easy handles: these run once and
 * exit, so the multi interface buys nothing.
 */
#include "cli.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "buf.h"
#include "hdrcode.h"

#define DEFAULT_EVENTS_URL "http://127.0.0.1:8080/v1/events"
#define DEFAULT_READY_URL "http://127.0.0.1:8080/readyz"

int cli_uuid4(char *out, size_t len)
{
    unsigned char b[16];
    if (len < 37 || getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        return -EIO;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, len,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10],
             b[11], b[12], b[13], b[14], b[15]);
    return 0;
}

static size_t collect_cb(char *p, size_t size, size_t n, void *arg)
{
    return buf_append(arg, p, size * n) == 0 ? size * n : 0;
}

int cli_http(const char *who, const char *method, const char *url,
             struct curl_slist *headers, const char *body, size_t len,
             long timeout_ms, long *status, struct buf *answer)
{
    *status = 0;
    CURL *curl = curl_easy_init();
    if (!curl) {
        fprintf(stderr, "%s: out of memory\n", who);
        return -ENOMEM;
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    if (method)
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect_cb);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, answer);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    CURLcode cc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(curl);
    if (cc == CURLE_OK)
        return 0;
    fprintf(stderr, "%s: %s: %s\n", who, url, curl_easy_strerror(cc));
    return -EIO;
}

/* ---- send ------------------------------------------------------------ */

static const char send_usage[] =
    "usage: ferry send [--url URL] --type T --source S [--id ID] [--subject X]\n"
    "                  [--data JSON|@FILE] [--binary] [--token TOKEN]\n"
    "\n"
    "Post one CloudEvent to Ferry and print the answer.\n"
    "  --url URL      ingest URL (default " DEFAULT_EVENTS_URL ")\n"
    "  --type T       event type, e.g. com.example.order.paid (required)\n"
    "  --source S     event source, e.g. /checkout (required)\n"
    "  --id ID        event id (default: a random UUID)\n"
    "  --subject X    subject attribute\n"
    "  --data D       JSON data, or @FILE to read it from a file\n"
    "  --binary       send in binary content mode (default: structured)\n"
    "  --token T      bearer token (default: $FERRY_INGEST_TOKEN)\n"
    "Exit status: 0 accepted (202), 1 refused or unreachable, 2 usage error.\n";

struct send_args {
    const char *url, *type, *source, *id, *subject, *data, *token;
    int binary;
};

static int parse_send(int argc, char **argv, struct send_args *a)
{
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},     {"type", required_argument, NULL, 't'},
        {"source", required_argument, NULL, 's'},  {"id", required_argument, NULL, 'i'},
        {"subject", required_argument, NULL, 'j'}, {"data", required_argument, NULL, 'd'},
        {"binary", no_argument, NULL, 'b'},        {"token", required_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    *a = (struct send_args){.url = DEFAULT_EVENTS_URL, .token = getenv("FERRY_INGEST_TOKEN")};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'u': a->url = optarg; break;
        case 't': a->type = optarg; break;
        case 's': a->source = optarg; break;
        case 'i': a->id = optarg; break;
        case 'j': a->subject = optarg; break;
        case 'd': a->data = optarg; break;
        case 'b': a->binary = 1; break;
        case 'k': a->token = optarg; break;
        case 'h': fputs(send_usage, stdout); return 1;
        default: fputs(send_usage, stderr); return -1;
        }
    }
    if (optind < argc || !a->type || !a->source) {
        fputs(!a->type || !a->source ? "ferry send: --type and --source are required\n"
                                     : "ferry send: unexpected argument\n",
              stderr);
        fputs(send_usage, stderr);
        return -1;
    }
    return 0;
}

/* The --data value parsed as JSON (new reference), or NULL with a message. */
static json_t *load_data(const char *arg)
{
    json_error_t jerr;
    json_t *v = arg[0] == '@' ? json_load_file(arg + 1, JSON_DECODE_ANY, &jerr)
                              : json_loads(arg, JSON_DECODE_ANY, &jerr);
    if (!v)
        fprintf(stderr, "ferry send: --data: %s: %s (line %d, column %d)\n",
                arg[0] == '@' ? arg + 1 : "not valid JSON", jerr.text, jerr.line,
                jerr.column);
    return v;
}

static struct curl_slist *add_header(struct curl_slist *h, const char *name,
                                     const char *value, int encode)
{
    struct buf b;
    buf_init(&b, 1 << 16);
    buf_printf(&b, "%s: ", name);
    if (encode)
        hdr_encode(value, strlen(value), &b);
    else
        buf_puts(&b, value);
    struct curl_slist *r = curl_slist_append(h, b.data);
    buf_free(&b);
    return r;
}

static int post(const struct send_args *a, struct curl_slist *headers,
                const char *body, size_t len)
{
    struct buf answer;
    buf_init(&answer, 1 << 20);
    long status;
    int rc = cli_http("ferry send", NULL, a->url, headers, body, len, 30000L,
                      &status, &answer);
    if (rc == 0)
        printf("%ld %s\n", status, answer.data ? answer.data : "");
    buf_free(&answer);
    return rc == 0 && status == 202 ? 0 : 1;
}

int cli_send(int argc, char **argv)
{
    struct send_args a;
    int prc = parse_send(argc, argv, &a);
    if (prc)
        return prc > 0 ? 0 : 2;
    char uuid[40], when[40];
    if (!a.id) {
        if (cli_uuid4(uuid, sizeof(uuid)) != 0)
            return 1;
        a.id = uuid;
    }
    time_t now = time(NULL);
    struct tm tm;
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    json_t *data = a.data ? load_data(a.data) : NULL;
    if (a.data && !data)
        return 2;

    int rc;
    struct curl_slist *h = NULL;
    if (a.token) {
        char auth[512];
        snprintf(auth, sizeof(auth), "Bearer %s", a.token);
        h = add_header(h, "Authorization", auth, 0);
    }
    if (a.binary) {
        h = add_header(h, "ce-specversion", "1.0", 0);
        h = add_header(h, "ce-id", a.id, 1);
        h = add_header(h, "ce-source", a.source, 1);
        h = add_header(h, "ce-type", a.type, 1);
        h = add_header(h, "ce-time", when, 0);
        if (a.subject)
            h = add_header(h, "ce-subject", a.subject, 1);
        h = add_header(h, "Content-Type", "application/json", 0);
        char *body = data ? json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        rc = post(&a, h, body ? body : "", body ? strlen(body) : 0);
        free(body);
    } else {
        json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:s}", "specversion", "1.0", "id",
                               a.id, "source", a.source, "type", a.type, "time", when);
        if (a.subject)
            json_object_set_new(ev, "subject", json_string(a.subject));
        if (data) {
            json_object_set_new(ev, "datacontenttype", json_string("application/json"));
            json_object_set(ev, "data", data);
        }
        char *body = json_dumps(ev, JSON_COMPACT);
        json_decref(ev);
        h = add_header(h, "Content-Type", "application/cloudevents+json", 0);
        rc = body ? post(&a, h, body, strlen(body)) : 1;
        free(body);
    }
    curl_slist_free_all(h);
    json_decref(data);
    return rc;
}

/* ---- healthcheck ----------------------------------------------------- */

static const char health_usage[] =
    "usage: ferry healthcheck [--url URL]\n"
    "\n"
    "GET the readiness URL (default " DEFAULT_READY_URL ").\n"
    "Exit status: 0 when it answers 200, 1 otherwise. Meant for Docker's\n"
    "HEALTHCHECK, so the image needs no curl.\n";

int cli_healthcheck(int argc, char **argv)
{
    static const struct option opts[] = {{"url", required_argument, NULL, 'u'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *url = DEFAULT_READY_URL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'u') {
            url = optarg;
        } else if (c == 'h') {
            fputs(health_usage, stdout);
            return 0;
        } else {
            fputs(health_usage, stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fputs(health_usage, stderr);
        return 2;
    }
    struct buf answer;
    buf_init(&answer, 1 << 16);
    long status;
    int rc = cli_http("ferry healthcheck", NULL, url, NULL, NULL, 0, 5000L,
                      &status, &answer);
    if (rc == 0)
        printf("%ld %s\n", status, answer.data ? answer.data : "");
    buf_free(&answer);
    return rc == 0 && status == 200 ? 0 : 1;
}
