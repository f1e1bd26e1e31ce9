/*
 * main: the `ferry` command line. Subcommands only; each lives in its own
 * module (serve.c, cli.c, config.c). Exit codes: 0 success, 1 runtime
 * failure, 2 usage or configuration error.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "serve.h"

static const char usage[] =
    "usage: ferry [serve] [-c|--config FILE] [--listen HOST:PORT] [--spool DIR]\n"
    "                     [--log-level LEVEL]\n"
    "       ferry check-config -c FILE\n"
    "       ferry healthcheck [--url URL]\n"
    "       ferry send [--url URL] --type T --source S [--id ID] [--subject X]\n"
    "                  [--data JSON|@FILE] [--binary]\n"
    "       ferry dead-letters list|show ID|replay ID|replay --all|purge ID|purge --all\n"
    "                  [--peer P] [--admin URL] [--token T]\n"
    "       ferry version\n"
    "       ferry COMMAND --help\n"
    "\n"
    "Ferry receives CloudEvents over HTTP, stores each one durably before it\n"
    "answers 202, and delivers it to the peers its routes name, retrying\n"
    "with backoff. With no config file it listens on 127.0.0.1:8080, spools\n"
    "into ./ferry-data and prints every event to stdout.\n"
    "\n"
    "Environment: FERRY_CONFIG, FERRY_LISTEN, FERRY_ADMIN_LISTEN, FERRY_SPOOL_DIR,\n"
    "FERRY_LOG_LEVEL, FERRY_LOG_FORMAT, FERRY_INGEST_TOKEN, FERRY_ADMIN_TOKEN\n"
    "(they override the config file; command-line flags override both).\n";

static const char serve_usage[] =
    "usage: ferry [serve] [-c|--config FILE] [--listen HOST:PORT] [--spool DIR]\n"
    "                     [--log-level LEVEL]\n"
    "\n"
    "Run the sidecar until SIGTERM or SIGINT, which drain it (readiness turns\n"
    "503, in-flight deliveries finish or stay spooled) and exit 0.\n"
    "  -c, --config FILE   JSON config (default: $FERRY_CONFIG, else built-in)\n"
    "  --listen HOST:PORT  main listener (ingest, health, metrics)\n"
    "  --spool DIR         spool directory\n"
    "  --log-level LEVEL   debug, info, warn or error\n";

static const char check_usage[] =
    "usage: ferry check-config -c FILE\n"
    "\n"
    "Validate a config file. Prints each error with its JSON path, e.g.\n"
    "  routes[0].to[1]: no peer named \"shiping\"\n"
    "Exit status: 0 valid, 2 invalid.\n";

static int parse_serve(int argc, char **argv, struct serve_options *o,
                       const char *help)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"listen", required_argument, NULL, 'l'},
        {"spool", required_argument, NULL, 's'},  {"log-level", required_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:", opts, NULL)) != -1) {
        switch (c) {
        case 'c': o->config_path = optarg; break;
        case 'l': o->listen = optarg; break;
        case 's': o->spool_dir = optarg; break;
        case 'v': o->log_level = optarg; break;
        case 'h': fputs(help, stdout); return 1;
        default: fputs(help, stderr); return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ferry: unexpected argument \"%s\"\n", argv[optind]);
        fputs(help, stderr);
        return -1;
    }
    return 0;
}

static int cmd_serve(int argc, char **argv)
{
    struct serve_options o = {0};
    int rc = parse_serve(argc, argv, &o, serve_usage);
    if (rc)
        return rc > 0 ? 0 : 2;
    return serve_main(&o);
}

static int cmd_check_config(int argc, char **argv)
{
    struct serve_options o = {0};
    int rc = parse_serve(argc, argv, &o, check_usage);
    if (rc)
        return rc > 0 ? 0 : 2;
    if (!o.config_path) {
        fputs("ferry check-config: -c FILE is required\n", stderr);
        fputs(check_usage, stderr);
        return 2;
    }
    struct config *cfg = serve_load_config(&o);
    if (!cfg)
        return 2;
    printf("%s: ok (%zu peers, %zu routes)\n", o.config_path, cfg->n_peers, cfg->n_routes);
    config_destroy(cfg);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-') {
        if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
            fputs(usage, stdout);
            return 0;
        }
        if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
            printf("ferry %s\n", FERRY_VERSION);
            return 0;
        }
        return cmd_serve(argc, argv);
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0)
        return cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "check-config") == 0)
        return cmd_check_config(argc - 1, argv + 1);
    if (strcmp(cmd, "healthcheck") == 0)
        return cli_healthcheck(argc - 1, argv + 1);
    if (strcmp(cmd, "send") == 0)
        return cli_send(argc - 1, argv + 1);
    if (strcmp(cmd, "dead-letters") == 0)
        return cli_dead_letters(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0) {
        printf("ferry %s\n", FERRY_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    fprintf(stderr, "ferry: unknown command \"%s\"\n\n", cmd);
    fputs(usage, stderr);
    return 2;
}
