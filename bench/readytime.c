/*
 * readytime: how long a server takes from exec to ready. Forks, pins the
 * child to a CPU, execs the command, then polls http://127.0.0.1:PORT/PATH
 * every 200 microseconds (a fresh connection each time) until it answers
 * 200. Then it stops the child with SIGTERM and waits for it.
 *
 *   readytime [--cpu N] [--port P] [--path /readyz] [--timeout-ms T]
 *             -- COMMAND [ARGS...]
 *
 * Prints one JSON object: listen_ms (first accepted connection), ready_ms
 * (first 200), rss_kb (VmRSS at that moment) and stop_ms (SIGTERM to exit).
 * The clock starts just before fork(), so it includes exec and the dynamic
 * loader. Exit 1 if the child dies or is not ready within the timeout.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* -1: not listening, 0: listening but not 200, 1: 200 */
static int probe(unsigned port, const char *path)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
        close(fd);
        return -1;
    }
    char req[256];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Connection: close\r\n\r\n",
                     path);
    char resp[64] = {0};
    int status = 0;
    struct timeval tv = {.tv_sec = 1};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (write(fd, req, (size_t)n) == n &&
        read(fd, resp, sizeof(resp) - 1) > 0)
        sscanf(resp, "HTTP/1.%*d %d", &status);
    close(fd);
    return status == 200 ? 1 : 0;
}

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, "VmRSS:", 6))
            kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

static void usage(void)
{
    fprintf(stderr, "usage: readytime [--cpu N] [--port P] [--path PATH] "
                    "[--timeout-ms T] -- COMMAND [ARGS...]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int cpu = -1, i;
    unsigned port = 8080;
    const char *path = "/readyz";
    long timeout_ms = 60000;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            i++;
            break;
        }
        if (i + 1 >= argc)
            usage();
        if (!strcmp(argv[i], "--cpu"))
            cpu = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--port"))
            port = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--path"))
            path = argv[++i];
        else if (!strcmp(argv[i], "--timeout-ms"))
            timeout_ms = strtol(argv[++i], NULL, 10);
        else
            usage();
    }
    if (i >= argc)
        usage();
    if (probe(port, path) >= 0) {
        fprintf(stderr, "readytime: port %u is already in use\n", port);
        return 1;
    }
    int64_t t0 = mono_ns();
    pid_t pid = fork();
    if (pid < 0) {
        perror("readytime: fork");
        return 1;
    }
    if (pid == 0) {
        /* the server must not outlive us if we are killed */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (cpu >= 0) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(cpu, &set);
            sched_setaffinity(0, sizeof(set), &set);
        }
        execvp(argv[i], argv + i);
        fprintf(stderr, "readytime: exec %s: %s\n", argv[i], strerror(errno));
        _exit(127);
    }
    int64_t listen_ns = -1, ready_ns = -1;
    long rss = -1;
    int status;
    for (;;) {
        int r = probe(port, path);
        int64_t now = mono_ns();
        if (r >= 0 && listen_ns < 0)
            listen_ns = now - t0;
        if (r == 1) {
            ready_ns = now - t0;
            rss = rss_kb(pid);
            break;
        }
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "readytime: the server exited before ready\n");
            return 1;
        }
        if (now - t0 > timeout_ms * 1000000) {
            fprintf(stderr, "readytime: not ready after %ld ms\n", timeout_ms);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return 1;
        }
        nanosleep(&(struct timespec){0, 200000}, NULL);
    }
    int64_t t1 = mono_ns();
    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
    int64_t stop_ns = mono_ns() - t1;
    printf("{\"listen_ms\":%.3f,\"ready_ms\":%.3f,\"rss_kb\":%ld,"
           "\"stop_ms\":%.3f,\"exit\":%d}\n",
           (double)listen_ns / 1e6, (double)ready_ns / 1e6, rss,
           (double)stop_ns / 1e6, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}
