/*
 * libfloor: the memory floor of Ferry's libraries. Links what ferry links
 * (libcurl, libmicrohttpd, jansson, SQLite, libcrypto), initialises them
 * the way ferry does at start (curl_global_init, sqlite3_initialize), then
 * waits for SIGTERM doing nothing. Its RSS is what any program built on
 * these shared libraries pays before it holds a byte of its own: the part
 * of Ferry's idle RSS that is not Ferry's (bench/run.py, scenario 5).
 *
 *   libfloor        prints "ready" on stdout, then sleeps until a signal
 */
#include <curl/curl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <unistd.h>

int main(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK ||
        sqlite3_initialize() != SQLITE_OK)
        return 1;
    /* One call into each of the others, so that every one is loaded and
     * relocated as in ferry (and no linker drops one as unused). */
    json_t *j = json_object();
    int ok = j && MHD_get_version() && OpenSSL_version_num();
    json_decref(j);
    if (!ok)
        return 1;
    printf("ready\n");
    fflush(stdout);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sig;
    sigwait(&set, &sig);
    curl_global_cleanup();
    return 0;
}
