/*
 * fuzz_config: a config file's text, loaded the way `ferry serve` and
 * `ferry check-config` load it (serve.c load_config): config_parse(), the
 * FERRY_* environment overrides (config_apply_env, from a fixed table so
 * runs are reproducible) and what config.c leaves to schedule.c
 * (schedule_check_config: cron expressions, event templates). An accepted
 * config then goes through what start-up does with it: the masked dump
 * for the log, listener addresses, peer lookups and filter printing.
 *
 * Secret references ({"file": PATH}) are read as the loader reads them;
 * run.sh runs the targets with stdin from /dev/null so no path can block.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config.h"
#include "filter.h"
#include "fuzz.h"
#include "schedule.h"

static const char *fixed_env(const char *name)
{
    if (strcmp(name, "FERRY_LOG_LEVEL") == 0)
        return "warn";
    if (strcmp(name, "FERRY_ADMIN_LISTEN") == 0)
        return "127.0.0.1:0";
    return NULL;
}

static void check_errors(const struct config_errors *errs)
{
    for (size_t i = 0; i < errs->n; i++)
        FUZZ_CHECK(errs->items[i] && errs->items[i][0], "empty error %zu", i);
}

static void check_loaded(struct config *cfg)
{
    char host[256];
    uint16_t port;
    FUZZ_CHECK(cfg->listen && config_split_hostport(cfg->listen, host,
                                                    sizeof(host), &port) == 0,
               "accepted listen \"%s\" that does not split",
               cfg->listen ? cfg->listen : "(null)");
    FUZZ_CHECK(cfg->admin.listen &&
                   config_split_hostport(cfg->admin.listen, host, sizeof(host),
                                         &port) == 0,
               "accepted admin.listen that does not split");
    for (size_t i = 0; i < cfg->n_peers; i++)
        FUZZ_CHECK(config_peer_index(cfg, cfg->peers[i].name) == (long)i,
                   "peer %zu is not found by its name", i);
    for (size_t r = 0; r < cfg->n_routes; r++) {
        const struct route_config *route = &cfg->routes[r];
        for (size_t t = 0; t < route->n_to; t++)
            FUZZ_CHECK(route->to[t] < cfg->n_peers,
                       "routes[%zu].to[%zu] points past the peers", r, t);
        json_t *f = filter_to_json(route->filter);
        FUZZ_CHECK(!route->filter || f, "routes[%zu].filter does not print", r);
        json_decref(f);
    }
    char *dump = config_dump_masked(cfg);
    FUZZ_CHECK(dump, "config_dump_masked failed");
    json_t *j = json_loads(dump, 0, NULL);
    FUZZ_CHECK(json_is_object(j), "config_dump_masked is not a JSON object");
    json_decref(j);
    free(dump);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config_errors errs;
    config_errors_init(&errs);
    struct config *cfg = config_parse((const char *)data, size, "fuzz.json",
                                      &errs);
    if (!cfg) {
        FUZZ_CHECK(errs.n > 0, "config_parse refused without an error");
        check_errors(&errs);
        config_errors_free(&errs);
        return 0;
    }
    FUZZ_CHECK(errs.n == 0, "config_parse accepted with %zu errors", errs.n);
    FUZZ_CHECK(config_apply_env(cfg, fixed_env, &errs) == 0,
               "fixed environment refused: %s", errs.n ? errs.items[0] : "");
    if (schedule_check_config(cfg, &errs) == 0) {
        FUZZ_CHECK(errs.n == 0, "schedule_check_config: 0 with errors");
        /* A second reference, as a request holds one across a reload. */
        config_destroy(config_ref(cfg));
        check_loaded(cfg);
    } else {
        FUZZ_CHECK(errs.n > 0, "schedule_check_config refused without an error");
    }
    check_errors(&errs);
    config_errors_free(&errs);
    config_destroy(cfg);
    return 0;
}
