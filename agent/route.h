/*
 * route: which peers an event goes to. Every route whose filter matches
 * the event (a route without a filter matches them all) contributes its
 * "to" peers; the result is the distinct peers, in order of first
 * appearance. An event that matches no route goes nowhere: the caller
 * counts and drops it.
 *
 * Pure module: no I/O, no threads, no allocation; safe to call from any
 * thread on an immutable config.
 */
#ifndef FERRY_ROUTE_H
#define FERRY_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "filter.h"

/**
 * Write the distinct indexes (into cfg->peers) of the peers targeted by
 * every route that matches the event seen through @get/@arg into
 * @peers_out, which must hold cfg->n_peers entries, in order of first
 * appearance. Returns how many were written; 0 means no route matched.
 */
size_t route_match(const struct config *cfg, filter_lookup_fn get, void *arg,
                   size_t *peers_out);

/**
 * True when some route that matches the event and targets peer @peer_idx
 * asks for "ordering": "partitionkey", i.e. the event must be delivered to
 * that peer in order with the other events of its partition key.
 */
bool route_ordered(const struct config *cfg, filter_lookup_fn get, void *arg,
                   size_t peer_idx);

#endif
