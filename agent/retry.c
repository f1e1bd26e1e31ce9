/*
 * retry: the delivery policy as pure functions (see retry.h). Nothing here
 * reads a clock or a random source: the dispatcher passes both in, so the
 * tests can pin every branch. All arithmetic saturates instead of
 * overflowing, because attempt numbers and configured delays come from
 * users and from the spool, not from us.
 */
#include "retry.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum deliver_result retry_classify(int transport_error, long http_status)
{
    if (transport_error != 0) {
        /* Waiting cannot fix a URL curl refuses to parse. (Not
         * CURLE_UNSUPPORTED_PROTOCOL: config admits only http and https,
         * and curl also reports a peer that answers with something other
         * than HTTP that way, which a restart of the peer fixes.) */
        if (transport_error == CURLE_URL_MALFORMAT)
            return DELIVER_DEAD;
        return DELIVER_RETRY;
    }
    if (http_status >= 200 && http_status <= 299)
        return DELIVER_OK;
    if (http_status == 408 || http_status == 429 ||
        (http_status >= 500 && http_status <= 599))
        return DELIVER_RETRY;
    /* No status at all means no verdict from the peer: try again. */
    if (http_status < 100)
        return DELIVER_RETRY;
    return DELIVER_DEAD;
}

/* min(max_delay, initial * multiplier^(failed-1)), never negative. */
static int64_t backoff_cap(const struct retry_policy *p, int failed)
{
    int64_t max = p->max_delay_ms > 0 ? p->max_delay_ms : 0;
    if (p->initial_delay_ms <= 0 || max == 0)
        return 0;
    if (p->initial_delay_ms >= max)
        return max;
    int exp = failed > 1 ? failed - 1 : 0;
    double mult = p->multiplier > 1.0 ? p->multiplier : 1.0;
    /* pow() saturates to +inf for huge exponents; inf compares greater
     * than any cap, so no integer ever overflows. */
    double d = (double)p->initial_delay_ms * pow(mult, (double)exp);
    if (!(d < (double)max))
        return max;
    return (int64_t)d;
}

/* A uniform draw from [0, n] scaled from @rnd: 0 maps to 0 and
 * UINT64_MAX maps to n, so the bounds are testable exactly. */
static int64_t draw(uint64_t rnd, int64_t n)
{
    if (n <= 0)
        return 0;
    unsigned __int128 x = (unsigned __int128)rnd * ((uint64_t)n + 1);
    return (int64_t)(x >> 64);
}

int64_t retry_backoff_ms(const struct retry_policy *p, int failed,
                         uint64_t rnd)
{
    int64_t cap = backoff_cap(p, failed);
    switch (p->jitter) {
    case JITTER_FULL:
        return draw(rnd, cap);
    case JITTER_EQUAL:
        return cap / 2 + draw(rnd, cap - cap / 2);
    case JITTER_NONE:
    default:
        return cap;
    }
}

/* Delta-seconds: 1*DIGIT, saturating rather than overflowing. */
static int parse_delta_seconds(const char *s, size_t len, int64_t *delay_ms)
{
    int64_t secs = 0;
    const int64_t limit = INT64_MAX / 1000;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -EINVAL;
        if (secs < limit)
            secs = secs * 10 + (s[i] - '0');
    }
    *delay_ms = (secs >= limit ? limit : secs) * 1000;
    return 0;
}

/* The three HTTP-date forms of RFC 9110 section 5.6.7, all GMT. */
static int parse_http_date(const char *s, int64_t now_ms, int64_t *delay_ms)
{
    static const char *const formats[] = {
        "%a, %d %b %Y %H:%M:%S GMT", /* IMF-fixdate */
        "%A, %d-%b-%y %H:%M:%S GMT", /* RFC 850 */
        "%a %b %e %H:%M:%S %Y",      /* asctime */
    };
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        const char *end = strptime(s, formats[i], &tm);
        if (!end)
            continue;
        while (isspace((unsigned char)*end))
            end++;
        if (*end)
            continue;
        time_t t = timegm(&tm);
        if (t == (time_t)-1)
            return -EINVAL;
        int64_t at_ms = (int64_t)t * 1000;
        *delay_ms = at_ms > now_ms ? at_ms - now_ms : 0;
        return 0;
    }
    return -EINVAL;
}

int retry_after_parse(const char *value, int64_t now_ms, int64_t *delay_ms)
{
    if (!value)
        return -EINVAL;
    while (isspace((unsigned char)*value))
        value++;
    size_t len = strlen(value);
    while (len > 0 && isspace((unsigned char)value[len - 1]))
        len--;
    if (len == 0 || len > 64)
        return -EINVAL;
    if (isdigit((unsigned char)value[0]))
        return parse_delta_seconds(value, len, delay_ms);
    char copy[65];
    memcpy(copy, value, len);
    copy[len] = '\0';
    return parse_http_date(copy, now_ms, delay_ms);
}

int64_t retry_next_delay_ms(const struct retry_policy *p, int failed,
                            int64_t retry_after_ms, uint64_t rnd)
{
    int64_t d = retry_backoff_ms(p, failed, rnd);
    if (retry_after_ms > d)
        d = retry_after_ms;
    int64_t max = p->max_delay_ms > 0 ? p->max_delay_ms : 0;
    return d < max ? d : max;
}

bool retry_give_up(const struct retry_policy *p, int failed,
                   int64_t received_ms, int64_t next_ms, char *why,
                   size_t why_len)
{
    if (failed >= p->max_attempts) {
        if (why && why_len)
            snprintf(why, why_len, "max_attempts (%d) reached",
                     p->max_attempts);
        return true;
    }
    int64_t age_s = p->max_age_s > 0 ? p->max_age_s : 0;
    int64_t age_ms = age_s > INT64_MAX / 1000 ? INT64_MAX : age_s * 1000;
    int64_t deadline = received_ms > INT64_MAX - age_ms ? INT64_MAX
                                                        : received_ms + age_ms;
    if (next_ms > deadline) {
        if (why && why_len)
            snprintf(why, why_len, "max_age_s (%lld) exceeded",
                     (long long)p->max_age_s);
        return true;
    }
    if (why && why_len)
        why[0] = '\0';
    return false;
}
