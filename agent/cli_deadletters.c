/*
 * cli_deadletters: `ferry dead-letters`, the operator's view of the dead
 * letters of a running Ferry, through its admin listener (admin.h):
 *
 *   list [--peer P] [--limit N] [--page-size N] [--json]
 *   show ID
 *   replay ID | replay --all [--peer P]
 *   purge ID  | purge --all [--peer P]
 *
 * each with [--admin URL] [--token T]. `list` follows the server's page
 * cursors until the end (or --limit), so an operator never handles one.
 * Exit status: 0 success, 1 runtime failure (unreachable, 401, 404, ...),
 * 2 usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "buf.h"
#include "cli.h"

#define WHO "ferry dead-letters"
#define DEFAULT_ADMIN_URL "http://127.0.0.1:8081"
#define PAGE_DEFAULT 100
#define PAGE_MAX 1000
#define ANSWER_MAX (64u << 20)

static const char usage[] =
    "usage: ferry dead-letters list [--peer P] [--limit N] [--json]\n"
    "       ferry dead-letters show ID\n"
    "       ferry dead-letters replay ID | replay --all [--peer P]\n"
    "       ferry dead-letters purge ID  | purge --all [--peer P]\n"
    "       (each with [--admin URL] [--token T])\n"
    "\n"
    "Inspect, redeliver or delete the dead letters of a running Ferry: the\n"
    "deliveries it gave up on (a 4xx answer, max_attempts or max_age_s).\n"
    "It talks to Ferry's admin listener.\n"
    "\n"
    "Commands:\n"
    "  list          a table of dead letters (id, peer, event id, type,\n"
    "                attempts, dead since, reason), oldest first\n"
    "  show ID       one dead letter as JSON, with its attempts and event\n"
    "  replay ID     deliver it again (attempts start over)\n"
    "  replay --all  deliver every dead letter again (--peer P: only P's)\n"
    "  purge ID      delete it for good\n"
    "  purge --all   delete every dead letter (--peer P: only P's)\n"
    "\n"
    "Options:\n"
    "  --admin URL   admin listener (default " DEFAULT_ADMIN_URL ")\n"
    "  --token T     admin bearer token (default: $FERRY_ADMIN_TOKEN)\n"
    "\n"
    "Run 'ferry dead-letters COMMAND --help' for a command's options.\n"
    "Exit status: 0 success, 1 failure (unreachable, unauthorized, no such\n"
    "dead letter, ...), 2 usage error.\n";

static const char list_usage[] =
    "usage: ferry dead-letters list [--peer P] [--limit N] [--page-size N]\n"
    "                               [--json] [--admin URL] [--token T]\n"
    "\n"
    "List dead letters, oldest first, as a table: ID, PEER, EVENT ID, TYPE,\n"
    "ATTEMPTS, DEAD SINCE (UTC) and REASON. Follows the admin API's pages\n"
    "to the end.\n"
    "  --peer P        only the dead letters of peer P\n"
    "  --limit N       print at most N (default: all)\n"
    "  --page-size N   dead letters per request, 1-1000 (default 100)\n"
    "  --json          print JSON instead: {\"items\": [...], \"next\": null}\n"
    "  --admin URL     admin listener (default " DEFAULT_ADMIN_URL ")\n"
    "  --token T       admin bearer token (default: $FERRY_ADMIN_TOKEN)\n";

static const char show_usage[] =
    "usage: ferry dead-letters show ID [--admin URL] [--token T]\n"
    "\n"
    "Print dead letter ID (from `list`) as JSON: peer, reason, last status\n"
    "and error, every attempt (time, duration, status, error) and the\n"
    "event itself in structured mode.\n"
    "  --admin URL     admin listener (default " DEFAULT_ADMIN_URL ")\n"
    "  --token T       admin bearer token (default: $FERRY_ADMIN_TOKEN)\n";

static const char replay_usage[] =
    "usage: ferry dead-letters replay ID [--admin URL] [--token T]\n"
    "       ferry dead-letters replay --all [--peer P] [--admin URL]\n"
    "                                       [--token T]\n"
    "\n"
    "Move dead letters back to the delivery queue: they are delivered again\n"
    "with a fresh retry budget (attempts and max_age_s start over). Fix the\n"
    "peer first. Dead letters of peers no longer in the configuration are\n"
    "refused (by ID or --peer) or skipped (--all), since nothing would\n"
    "deliver them.\n"
    "  --all           every dead letter\n"
    "  --peer P        with --all: only those of peer P\n"
    "  --admin URL     admin listener (default " DEFAULT_ADMIN_URL ")\n"
    "  --token T       admin bearer token (default: $FERRY_ADMIN_TOKEN)\n";

static const char purge_usage[] =
    "usage: ferry dead-letters purge ID [--admin URL] [--token T]\n"
    "       ferry dead-letters purge --all [--peer P] [--admin URL]\n"
    "                                      [--token T]\n"
    "\n"
    "Delete dead letters for good, with their attempt history (and their\n"
    "events, unless another peer still needs them).\n"
    "  --all           every dead letter\n"
    "  --peer P        with --all: only those of peer P\n"
    "  --admin URL     admin listener (default " DEFAULT_ADMIN_URL ")\n"
    "  --token T       admin bearer token (default: $FERRY_ADMIN_TOKEN)\n";

enum dl_cmd { CMD_LIST, CMD_SHOW, CMD_REPLAY, CMD_PURGE };

struct dl_args {
    enum dl_cmd cmd;
    const char *admin, *token, *peer, *id;
    long limit, page; /* list: total cap (0: all) and page size */
    bool all, json;
};

/* ---- arguments ---------------------------------------------------------- */

/* A positive decimal number of at most @max; -1 when it is not one. */
static long parse_count(const char *s, long max)
{
    if (!s || !*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 9)
        return -1;
    long v = strtol(s, NULL, 10);
    return v >= 1 && v <= max ? v : -1;
}

/* A dead letter id as `list` prints them: decimal digits, not 0. */
static bool valid_id(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= 19 && strspn(s, "0123456789") == n &&
           strspn(s, "0") != n;
}

__attribute__((format(printf, 2, 3)))
static int usage_error(const char *help, const char *fmt, ...)
{
    va_list ap;
    fputs(WHO ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n", stderr);
    fputs(help, stderr);
    return -1;
}

/* Check the operands and the options' combination. 0 or -1 (printed). */
static int check_operands(struct dl_args *a, int argc, char **argv,
                          const char *help)
{
    int n = argc - optind;
    bool wants_id = a->cmd != CMD_LIST;
    if (n > (wants_id ? 1 : 0))
        return usage_error(help, "unexpected argument \"%s\"",
                           argv[argc - 1]);
    if (wants_id && n == 1)
        a->id = argv[optind];
    if (a->peer && !*a->peer)
        return usage_error(help, "--peer: empty peer name");
    if (a->id && !valid_id(a->id))
        return usage_error(help, "not a dead letter ID: \"%s\"", a->id);
    if (a->cmd == CMD_SHOW && !a->id)
        return usage_error(help, "which dead letter? (an ID from list)");
    if (a->cmd == CMD_SHOW && a->peer)
        return usage_error(help, "show takes an ID only");
    if (a->cmd == CMD_REPLAY || a->cmd == CMD_PURGE) {
        if (!a->id == !a->all)
            return usage_error(help, "give either an ID or --all");
        if (a->peer && !a->all)
            return usage_error(help, "--peer goes with --all");
    }
    return 0;
}

static const struct option opts[] = {
    {"admin", required_argument, NULL, 'a'},
    {"token", required_argument, NULL, 't'},
    {"peer", required_argument, NULL, 'p'},
    {"limit", required_argument, NULL, 'l'},
    {"page-size", required_argument, NULL, 's'},
    {"all", no_argument, NULL, 'A'},
    {"json", no_argument, NULL, 'j'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}};

/* Does option @c go with command @cmd? */
static bool option_fits(int c, enum dl_cmd cmd)
{
    switch (c) {
    case 'l': case 's': case 'j': return cmd == CMD_LIST;
    case 'A': return cmd == CMD_REPLAY || cmd == CMD_PURGE;
    case 'p': return cmd != CMD_SHOW;
    default: return true;
    }
}

/* 0 ok, 1 --help shown, -1 usage error (printed). */
static int parse_opts(struct dl_args *a, int argc, char **argv,
                      const char *help)
{
    int c, li = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, &li)) != -1) {
        if (c != '?' && !option_fits(c, a->cmd))
            return usage_error(help, "--%s does not go with %s", opts[li].name,
                               argv[0]);
        switch (c) {
        case 'a': a->admin = optarg; break;
        case 't': a->token = optarg; break;
        case 'p': a->peer = optarg; break;
        case 'A': a->all = true; break;
        case 'j': a->json = true; break;
        case 'h': fputs(help, stdout); return 1;
        case 'l':
            if ((a->limit = parse_count(optarg, 1000000000)) < 0)
                return usage_error(help, "--limit: not a positive number: %s",
                                   optarg);
            break;
        case 's':
            if ((a->page = parse_count(optarg, PAGE_MAX)) < 0)
                return usage_error(help, "--page-size: expected 1-1000, got %s",
                                   optarg);
            break;
        default: fputs(help, stderr); return -1;
        }
    }
    return check_operands(a, argc, argv, help);
}

/* ---- talking to the admin listener ------------------------------------- */

/* Percent-encode @s for a query value. */
static void query_escape(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
            (*p >= '0' && *p <= '9') || strchr("-._~", *p)) {
            buf_append(b, p, 1);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            buf_append(b, e, 3);
        }
    }
}

/* The admin URL of @path, and "?peer=P" (with @sep first) when needed. */
static int make_url(const struct dl_args *a, struct buf *url, const char *path,
                    bool with_peer)
{
    size_t n = strlen(a->admin);
    while (n && a->admin[n - 1] == '/')
        n--;
    buf_append(url, a->admin, n);
    buf_puts(url, path);
    if (with_peer && a->peer) {
        buf_puts(url, strchr(path, '?') ? "&peer=" : "?peer=");
        query_escape(url, a->peer);
    }
    return url->data ? 0 : -ENOMEM;
}

/* Say why a non-2xx answer failed, from its error JSON when it has one. */
static void report_failure(const struct dl_args *a, long status, json_t *o)
{
    const char *code = json_string_value(json_object_get(o, "error"));
    const char *msg = json_string_value(json_object_get(o, "message"));
    fprintf(stderr, WHO ": ");
    if (a->id)
        fprintf(stderr, "dead letter %s: ", a->id);
    fprintf(stderr, "%s (HTTP %ld%s%s)\n", msg ? msg : "request failed",
            status, code ? ", " : "", code ? code : "");
    if (status == 401)
        fprintf(stderr, WHO ": set --token or FERRY_ADMIN_TOKEN to the "
                        "admin.token of that Ferry\n");
}

/*
 * @method the admin URL @url. On a 2xx answer with a JSON object, 0 and
 * the object (new) in *@out; otherwise 1, with the reason printed.
 */
static int admin_call(const struct dl_args *a, const char *method,
                      const char *url, json_t **out)
{
    struct curl_slist *h = NULL;
    struct buf answer, auth;
    long status = 0;
    buf_init(&answer, ANSWER_MAX);
    buf_init(&auth, 4096);
    if (a->token && *a->token &&
        buf_printf(&auth, "Authorization: Bearer %s", a->token) == 0)
        h = curl_slist_append(h, auth.data);
    bool post = strcmp(method, "POST") == 0;
    int rc = cli_http(WHO, method, url, h, post ? "" : NULL, 0, 60000L,
                      &status, &answer);
    json_t *o = rc == 0 ? json_loadb(answer.data ? answer.data : "",
                                     answer.len, 0, NULL)
                        : NULL;
    curl_slist_free_all(h);
    buf_free(&auth);
    buf_free(&answer);
    if (rc != 0)
        return 1;
    if (status / 100 != 2 || !json_is_object(o)) {
        if (status / 100 == 2)
            fprintf(stderr, WHO ": %s: the answer is not a JSON object\n", url);
        else
            report_failure(a, status, o);
        json_decref(o);
        return 1;
    }
    *out = o;
    return 0;
}

/* ---- list ---------------------------------------------------------------- */

static void format_ms(int64_t ms, char *out, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (ms <= 0 || !gmtime_r(&t, &tm) ||
        strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, len, "-");
}

static const char *field(json_t *item, const char *key)
{
    const char *s = json_string_value(json_object_get(item, key));
    return s && *s ? s : "-";
}

#define N_COLS 7

/* One table row's cells (ID and ATTEMPTS formatted into @num). */
static void row_cells(json_t *it, const char **cell, char num[2][24],
                      char *when, size_t when_len)
{
    snprintf(num[0], sizeof(num[0]), "%" JSON_INTEGER_FORMAT,
             json_integer_value(json_object_get(it, "id")));
    snprintf(num[1], sizeof(num[1]), "%" JSON_INTEGER_FORMAT,
             json_integer_value(json_object_get(it, "attempts")));
    format_ms(json_integer_value(json_object_get(it, "dead_ms")), when,
              when_len);
    cell[0] = num[0];
    cell[1] = field(it, "peer");
    cell[2] = field(it, "event_id");
    cell[3] = field(it, "type");
    cell[4] = num[1];
    cell[5] = when;
    cell[6] = field(it, "reason");
}

static void print_table(json_t *items)
{
    static const char *const head[N_COLS] = {
        "ID", "PEER", "EVENT ID", "TYPE", "ATTEMPTS", "DEAD SINCE", "REASON"};
    const char *cell[N_COLS];
    char num[2][24], when[32];
    int w[N_COLS];
    size_t i;
    json_t *it;
    if (json_array_size(items) == 0) {
        puts("no dead letters");
        return;
    }
    for (int k = 0; k < N_COLS; k++)
        w[k] = (int)strlen(head[k]);
    json_array_foreach(items, i, it) {
        row_cells(it, cell, num, when, sizeof(when));
        for (int k = 0; k < N_COLS; k++)
            if ((int)strlen(cell[k]) > w[k])
                w[k] = (int)strlen(cell[k]);
    }
    for (int k = 0; k < N_COLS; k++)
        printf("%-*s%s", k == N_COLS - 1 ? 0 : w[k], head[k],
               k == N_COLS - 1 ? "\n" : "  ");
    json_array_foreach(items, i, it) {
        row_cells(it, cell, num, when, sizeof(when));
        for (int k = 0; k < N_COLS; k++)
            printf("%-*s%s", k == N_COLS - 1 ? 0 : w[k], cell[k],
                   k == N_COLS - 1 ? "\n" : "  ");
    }
}

/* Fetch one page after @cursor (NULL: the first) into @all; the next
 * cursor (new, or NULL at the end) in *@next. 0 or 1 (printed). */
static int fetch_page(const struct dl_args *a, const char *cursor, long want,
                      json_t *all, char **next)
{
    struct buf url, path;
    json_t *o = NULL;
    buf_init(&url, 8192);
    buf_init(&path, 8192);
    buf_printf(&path, "/v1/dead-letters?limit=%ld", want);
    if (cursor) {
        buf_puts(&path, "&after=");
        query_escape(&path, cursor);
    }
    int rc = path.data && make_url(a, &url, path.data, true) == 0
                 ? admin_call(a, "GET", url.data, &o)
                 : 1;
    buf_free(&url);
    buf_free(&path);
    if (rc)
        return rc;
    json_array_extend(all, json_object_get(o, "items"));
    const char *n = json_string_value(json_object_get(o, "next"));
    *next = n ? strdup(n) : NULL;
    json_decref(o);
    return 0;
}

static int cmd_list(const struct dl_args *a)
{
    json_t *all = json_array();
    char *cursor = NULL;
    int rc = 0;
    for (;;) {
        long want = a->page;
        long before = (long)json_array_size(all);
        if (a->limit && a->limit - before < want)
            want = a->limit - before;
        char *next = NULL;
        rc = fetch_page(a, cursor, want, all, &next);
        free(cursor);
        cursor = next;
        long have = (long)json_array_size(all);
        /* An empty page ends it too, whatever its cursor says. */
        if (rc || !cursor || have == before || (a->limit && have >= a->limit))
            break;
    }
    if (rc == 0 && a->json) {
        json_t *o = json_pack("{s:O, s:s?}", "items", all, "next", cursor);
        char *text = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
        rc = text ? 0 : 1;
        if (text)
            puts(text);
        free(text);
        json_decref(o);
    } else if (rc == 0) {
        print_table(all);
    }
    free(cursor);
    json_decref(all);
    return rc;
}

/* ---- show, replay, purge ------------------------------------------------- */

static int cmd_show(const struct dl_args *a)
{
    struct buf url, path;
    json_t *o = NULL;
    buf_init(&url, 8192);
    buf_init(&path, 256);
    buf_printf(&path, "/v1/dead-letters/%s", a->id);
    int rc = path.data && make_url(a, &url, path.data, false) == 0
                 ? admin_call(a, "GET", url.data, &o)
                 : 1;
    if (rc == 0) {
        char *text = json_dumps(o, JSON_INDENT(2));
        rc = text ? 0 : 1;
        if (text)
            puts(text);
        free(text);
    }
    json_decref(o);
    buf_free(&url);
    buf_free(&path);
    return rc;
}

/* Print what replay --all left alone. */
static void report_skipped(json_t *o)
{
    json_int_t skipped = json_integer_value(json_object_get(o, "skipped"));
    json_t *peers = json_object_get(o, "skipped_peers");
    size_t i;
    json_t *p;
    if (skipped <= 0)
        return;
    printf("skipped %" JSON_INTEGER_FORMAT " of peers no longer configured:",
           skipped);
    json_array_foreach(peers, i, p)
        printf("%s %s", i ? "," : "", json_string_value(p));
    printf(" (purge them with: ferry dead-letters purge --all --peer P)\n");
}

/* replay/purge: POST .../replay or DELETE, by ID or --all [--peer]. */
static int cmd_act(const struct dl_args *a)
{
    bool replay = a->cmd == CMD_REPLAY;
    const char *key = replay ? "replayed" : "purged";
    struct buf url, path;
    json_t *o = NULL;
    buf_init(&url, 8192);
    buf_init(&path, 256);
    if (a->id)
        buf_printf(&path, "/v1/dead-letters/%s%s", a->id,
                   replay ? "/replay" : "");
    else
        buf_puts(&path, replay ? "/v1/dead-letters/replay"
                               : "/v1/dead-letters");
    int rc = path.data && make_url(a, &url, path.data, !a->id) == 0
                 ? admin_call(a, replay ? "POST" : "DELETE", url.data, &o)
                 : 1;
    if (rc == 0) {
        json_int_t n = json_integer_value(json_object_get(o, key));
        printf("%s %" JSON_INTEGER_FORMAT " dead letter%s\n", key, n,
               n == 1 ? "" : "s");
        if (replay)
            report_skipped(o);
    }
    json_decref(o);
    buf_free(&url);
    buf_free(&path);
    return rc;
}

/* ---- entry ------------------------------------------------------------- */

int cli_dead_letters(int argc, char **argv)
{
    static const struct {
        const char *name;
        enum dl_cmd cmd;
        const char *help;
    } cmds[] = {{"list", CMD_LIST, list_usage},
                {"show", CMD_SHOW, show_usage},
                {"replay", CMD_REPLAY, replay_usage},
                {"purge", CMD_PURGE, purge_usage}};
    if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof(cmds) / sizeof(*cmds); i++) {
        if (strcmp(argv[1], cmds[i].name) != 0)
            continue;
        struct dl_args a = {.cmd = cmds[i].cmd,
                            .admin = DEFAULT_ADMIN_URL,
                            .token = getenv("FERRY_ADMIN_TOKEN"),
                            .page = PAGE_DEFAULT};
        int prc = parse_opts(&a, argc - 1, argv + 1, cmds[i].help);
        if (prc)
            return prc > 0 ? 0 : 2;
        if (a.cmd == CMD_LIST)
            return cmd_list(&a);
        return a.cmd == CMD_SHOW ? cmd_show(&a) : cmd_act(&a);
    }
    fprintf(stderr, WHO ": unknown command \"%s\"\n\n", argv[1]);
    fputs(usage, stderr);
    return 2;
}
