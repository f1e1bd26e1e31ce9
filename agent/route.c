/*
 * route: match an event against the configured routes (see route.h).
 * Linear in routes x targets, which stay small; the distinct-peer check
 * scans the output so far instead of allocating a set.
 */
#include "route.h"

static bool contains(const size_t *v, size_t n, size_t x)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == x)
            return true;
    return false;
}

size_t route_match(const struct config *cfg, filter_lookup_fn get, void *arg,
                   size_t *peers_out)
{
    size_t n = 0;
    for (size_t r = 0; r < cfg->n_routes; r++) {
        const struct route_config *route = &cfg->routes[r];
        if (!filter_match(route->filter, get, arg))
            continue;
        for (size_t t = 0; t < route->n_to; t++) {
            if (n < cfg->n_peers && !contains(peers_out, n, route->to[t]))
                peers_out[n++] = route->to[t];
        }
    }
    return n;
}

bool route_ordered(const struct config *cfg, filter_lookup_fn get, void *arg,
                   size_t peer_idx)
{
    for (size_t r = 0; r < cfg->n_routes; r++) {
        const struct route_config *route = &cfg->routes[r];
        if (route->ordering != ORDERING_PARTITIONKEY ||
            !contains(route->to, route->n_to, peer_idx))
            continue;
        if (filter_match(route->filter, get, arg))
            return true;
    }
    return false;
}
