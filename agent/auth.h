/*
 * auth: bearer-token checks in constant time. Both sides are hashed with
 * SHA-256 and the digests compared with CRYPTO_memcmp, so neither the
 * content nor the length of the token leaks through timing.
 */
#ifndef FERRY_AUTH_H
#define FERRY_AUTH_H

#include <stdbool.h>

/**
 * True when @authorization (the Authorization header value, may be NULL)
 * is "Bearer <token>" (scheme case-insensitive) with exactly @token.
 * A NULL @token means no auth is configured: always true.
 */
bool auth_bearer_ok(const char *authorization, const char *token);

#endif
