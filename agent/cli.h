/*
 * cli: the operator commands that talk to a running Ferry over HTTP
 * (`ferry send`, `ferry healthcheck`). Each takes argc/argv after the
 * command name and returns the process exit code: 0 success, 1 runtime
 * failure, 2 usage error.
 */
#ifndef FERRY_CLI_H
#define FERRY_CLI_H

#include <stddef.h>

int cli_send(int argc, char **argv);
int cli_healthcheck(int argc, char **argv);

/** Print a random UUID v4 into @out (at least 37 bytes). 0 or -EIO. */
int cli_uuid4(char *out, size_t len);

#endif
