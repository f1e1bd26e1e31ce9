/*
 * cli: the operator commands that talk to a running Ferry over HTTP
 * (`ferry send`, `ferry healthcheck`, `ferry dead-letters`). Each takes
 * argc/argv from the command name on (argv[0] is the command) and returns
 * the process exit code: 0 success, 1 runtime failure, 2 usage error.
 */
#ifndef FERRY_CLI_H
#define FERRY_CLI_H

#include <stddef.h>

struct buf;
struct curl_slist;

int cli_send(int argc, char **argv);
int cli_healthcheck(int argc, char **argv);

/** `ferry dead-letters list|show|replay|purge ...` (cli_deadletters.c). */
int cli_dead_letters(int argc, char **argv);

/**
 * One blocking request to @url: @method (NULL: POST when @body is set,
 * else GET) with @headers (borrowed, may be NULL) and @body/@len. The
 * answer's body is appended to @answer. Returns 0 with the HTTP status in
 * *@status, or -EIO / -ENOMEM after printing "WHO: URL: reason" to stderr.
 */
int cli_http(const char *who, const char *method, const char *url,
             struct curl_slist *headers, const char *body, size_t len,
             long timeout_ms, long *status, struct buf *answer);

/** Print a random UUID v4 into @out (at least 37 bytes). 0 or -EIO. */
int cli_uuid4(char *out, size_t len);

#endif
