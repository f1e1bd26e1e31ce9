/*
 * httpd: libmicrohttpd daemon set-up and JSON replies (see httpd.h).
 */
#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "config.h"
#include "log.h"

static void mhd_log_cb(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_write(LOG_DEBUG, "libmicrohttpd", LOG_FIELDS(LOG_S("detail", msg)));
}

static int resolve(const char *listen, struct sockaddr_storage *ss,
                   char *err, size_t err_len)
{
    char host[256];
    uint16_t port;
    if (config_split_hostport(listen, host, sizeof(host), &port)) {
        snprintf(err, err_len, "listen %s: expected HOST:PORT", listen);
        return -EINVAL;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", port);
    int rc = getaddrinfo(host[0] ? host : NULL, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(err, err_len, "listen %s: %s", listen, gai_strerror(rc));
        return -EINVAL;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

struct MHD_Daemon *httpd_start(const struct httpd_options *opt, char *err,
                               size_t err_len)
{
    struct sockaddr_storage ss;
    if (resolve(opt->listen, &ss, err, err_len))
        return NULL;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    struct MHD_OptionItem ops[] = {
        {MHD_OPTION_SOCK_ADDR, 0, &ss},
        {MHD_OPTION_THREAD_POOL_SIZE, opt->threads ? opt->threads : 1, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, opt->timeout_s, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)opt->completed, opt->completed_cls},
        {opt->connection_limit ? MHD_OPTION_CONNECTION_LIMIT : MHD_OPTION_END,
         opt->connection_limit, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    errno = 0;
    struct MHD_Daemon *d = MHD_start_daemon(flags, 0, NULL, NULL, opt->handler,
                                            opt->handler_cls,
                                            /* first, so option errors reach our log */
                                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log_cb, NULL,
                                            MHD_OPTION_ARRAY, ops, MHD_OPTION_END);
    if (!d)
        snprintf(err, err_len, "listen %s: %s", opt->listen,
                 errno ? strerror(errno) : "cannot start the HTTP server");
    return d;
}

uint16_t httpd_port(struct MHD_Daemon *d)
{
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    return info ? info->port : 0;
}

enum MHD_Result httpd_reply(struct MHD_Connection *c, unsigned status,
                            const char *content_type, const char *body,
                            size_t len, int retry_after)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    if (content_type)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%d", retry_after);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result httpd_reply_error(struct MHD_Connection *c, unsigned status,
                                  const char *code, const char *message,
                                  long index, const char *attribute,
                                  int retry_after)
{
    json_t *o = json_pack("{s:s, s:s}", "error", code, "message", message);
    if (o && index >= 0)
        json_object_set_new(o, "index", json_integer(index));
    if (o && attribute && attribute[0])
        json_object_set_new(o, "attribute", json_string(attribute));
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    enum MHD_Result ret;
    if (text)
        ret = httpd_reply(c, status, "application/json", text, strlen(text),
                          retry_after);
    else
        ret = httpd_reply(c, status, "application/json",
                          "{\"error\":\"internal\"}", 20, retry_after);
    free(text);
    return ret;
}

int httpd_media_type_is(const char *content_type, const char *want)
{
    if (!content_type)
        return 0;
    while (*content_type == ' ' || *content_type == '\t')
        content_type++;
    size_t n = strcspn(content_type, ";");
    while (n && (content_type[n - 1] == ' ' || content_type[n - 1] == '\t'))
        n--;
    return n == strlen(want) && strncasecmp(content_type, want, n) == 0;
}
