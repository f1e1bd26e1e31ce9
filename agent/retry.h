/*
 * retry: the delivery policy as pure functions: classify an attempt's
 * result, compute the next delay (exponential backoff with jitter, raised
 * to Retry-After), and decide when to give up. Time and randomness come in
 * as parameters, so every branch is testable without clocks.
 */
#ifndef FERRY_RETRY_H
#define FERRY_RETRY_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

enum deliver_result { DELIVER_OK = 0, DELIVER_RETRY, DELIVER_DEAD };

/**
 * Map a transport result (0 = a response arrived, otherwise a CURLcode)
 * and an HTTP status to an outcome: 2xx OK; 408, 429 and 5xx RETRY; any
 * other status DEAD; transport errors RETRY except those that cannot heal
 * by waiting (malformed URL, unsupported protocol), which are DEAD.
 */
enum deliver_result retry_classify(int transport_error, long http_status);

/**
 * Backoff before attempt @failed + 1, after @failed (>= 1) failed attempts:
 * cap = min(max_delay, initial * multiplier^(failed-1)); full jitter draws
 * from [0, cap], equal from [cap/2, cap], none gives cap. @rnd is a uniform
 * 64-bit random number.
 */
int64_t retry_backoff_ms(const struct retry_policy *p, int failed,
                         uint64_t rnd);

/**
 * Parse a Retry-After value: delta-seconds or an HTTP-date (IMF-fixdate,
 * RFC 850 or asctime). Returns 0 with *@delay_ms (>= 0, relative to
 * @now_ms), or -EINVAL.
 */
int retry_after_parse(const char *value, int64_t now_ms, int64_t *delay_ms);

/**
 * The delay to wait: max(backoff, retry_after) capped by max_delay_ms.
 * @retry_after_ms < 0 means none was given.
 */
int64_t retry_next_delay_ms(const struct retry_policy *p, int failed,
                            int64_t retry_after_ms, uint64_t rnd);

/**
 * Whether to dead-letter instead of retrying: @failed >= max_attempts, or
 * the retry at @next_ms would be past received_ms + max_age_s. Writes the
 * reason ("max_attempts (5) reached", "max_age_s (60) exceeded") into @why.
 */
bool retry_give_up(const struct retry_policy *p, int failed,
                   int64_t received_ms, int64_t next_ms, char *why,
                   size_t why_len);

#endif
