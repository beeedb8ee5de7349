/*
 * bench-idle-conns: opens N keep-alive connections to a server and holds
 * them idle, so tools/bench/bench-http.sh can read the server's RSS before
 * and after (memory per idle connection).
 *
 *   bench-idle-conns --port P [--host 127.0.0.1] [-n N] [--request PATH]
 *                    [--hold S]
 *
 * With --request, each connection first sends one GET PATH and reads the
 * whole answer (Content-Length), so the server has set up everything a
 * served keep-alive connection keeps.  Prints "ready N" once all are open
 * (and answered), then holds them until SIGTERM/SIGINT or S seconds
 * (default 120), and finally prints "closed_by_server K": how many the
 * server had closed meanwhile (should be 0 for a fair figure).
 * Raises its own RLIMIT_NOFILE soft limit to the hard limit.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, int i)
{
    fprintf(stderr, "bench-idle-conns: %s (connection %d): %s\n", what, i, strerror(errno));
    exit(1);
}

/* Reads one whole answer (head + Content-Length body) within 5 s. */
static void read_answer(int fd, int i)
{
    char buf[4096];
    size_t have = 0;
    long want = -1;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5000) != 1) {
            errno = ETIMEDOUT;
            die("no answer", i);
        }
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n <= 0) {
            if (n == 0)
                errno = ECONNRESET;
            die("read", i);
        }
        have += (size_t)n;
        buf[have] = 0;
        char *end = strstr(buf, "\r\n\r\n");
        if (!end)
            continue;
        if (want < 0) {
            if (strncmp(buf, "HTTP/1.1 200 ", 13)) {
                fprintf(stderr, "bench-idle-conns: connection %d: not a 200: %.40s\n", i, buf);
                exit(1);
            }
            char *cl = strcasestr(buf, "\r\ncontent-length:");
            want = (end - buf) + 4 + (cl && cl < end ? strtol(cl + 17, NULL, 10) : 0);
        }
        if ((long)have >= want)
            return;
    }
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *path = NULL;
    int port = 0, n = 10000, hold = 120;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port"))
            port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--host"))
            host = argv[i + 1];
        else if (!strcmp(argv[i], "-n"))
            n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--request"))
            path = argv[i + 1];
        else if (!strcmp(argv[i], "--hold"))
            hold = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "bench-idle-conns: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (port <= 0 || n <= 0) {
        fprintf(stderr, "usage: bench-idle-conns --port P [--host H] [-n N] [--request PATH] [--hold S]\n");
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGTERM);
    sigaddset(&ss, SIGINT);
    sigprocmask(SIG_BLOCK, &ss, NULL); /* taken by sigtimedwait below */

    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "bench-idle-conns: bad IPv4 address %s\n", host);
        return 2;
    }
    char req[512];
    int req_len = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n",
                           path ? path : "/", host, port);
    int *fds = calloc((size_t)n, sizeof *fds);
    if (!fds)
        return 1;
    for (int i = 0; i < n; i++) {
        if ((fds[i] = socket(AF_INET, SOCK_STREAM, 0)) < 0)
            die("socket", i);
        /* Blocking connect: a full accept queue only slows us down (SYN retries). */
        if (connect(fds[i], (struct sockaddr *)&a, sizeof a) < 0)
            die("connect", i);
        if (path) {
            if (write(fds[i], req, (size_t)req_len) != req_len)
                die("write", i);
            read_answer(fds[i], i);
        }
    }
    printf("ready %d\n", n);
    fflush(stdout);

    struct timespec ts = {.tv_sec = hold};
    sigtimedwait(&ss, NULL, &ts);

    /* Closed by the server: readable with EOF (or an error). */
    int closed = 0;
    struct pollfd *p = calloc((size_t)n, sizeof *p);
    if (!p)
        return 1;
    for (int i = 0; i < n; i++)
        p[i] = (struct pollfd){.fd = fds[i], .events = POLLIN | POLLRDHUP};
    poll(p, (nfds_t)n, 0);
    for (int i = 0; i < n; i++)
        closed += (p[i].revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
    printf("closed_by_server %d\n", closed);
    return 0;
}
