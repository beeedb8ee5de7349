/*
 * The blocking client: one request on a fresh connection, on a plain
 * blocking socket whose SO_SNDTIMEO/SO_RCVTIMEO are set to the time left
 * before every call, so the whole fetch keeps one deadline.  Blocking on
 * purpose (see eddy/http_client.h).
 */
#define _GNU_SOURCE
#include "client_codec.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BLOCKING_CONNECT_MS 20000
#define BLOCKING_MAX_BYTES (16u << 20)

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int set_timeout(int fd, int opt, int64_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv) < 0 ? -errno : 0;
}

/* Non-blocking connect bounded by poll, then back to blocking mode. */
static int connect_one(const struct sockaddr *a, socklen_t len, int64_t deadline)
{
    int fd = socket(a->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = 0;
    if (connect(fd, a, len) < 0) {
        if (errno != EINPROGRESS) {
            rc = -errno;
            goto fail;
        }
        int64_t left = deadline - now_ms();
        if (left > BLOCKING_CONNECT_MS)
            left = BLOCKING_CONNECT_MS;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int n;
        do {
            n = poll(&p, 1, left > 0 ? (int)left : 0);
        } while (n < 0 && errno == EINTR);
        if (n == 0) {
            rc = -ETIMEDOUT;
            goto fail;
        }
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            rc = -err;
            goto fail;
        }
    }
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
fail:
    close(fd);
    return rc;
}

static int do_connect(const struct url *u, int64_t deadline)
{
    if (u->addrlen)
        return connect_one((const struct sockaddr *)&u->addr, u->addrlen, deadline);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    char port[8];
    snprintf(port, sizeof port, "%u", (unsigned)u->port);
    int rc = getaddrinfo(u->host, port, &hints, &res);
    if (rc != 0)
        return gai_to_errno(rc);
    int fd = -ENOENT;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = connect_one(ai->ai_addr, ai->ai_addrlen, deadline);
        if (fd >= 0 || fd == -ETIMEDOUT)
            break;
    }
    freeaddrinfo(res);
    return fd;
}

static int send_all(int fd, const char *p, size_t n, int64_t deadline)
{
    while (n) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        set_timeout(fd, SO_SNDTIMEO, left);
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return -ETIMEDOUT;
            return errno == EPIPE ? -ECONNRESET : -errno;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int recv_response(int fd, struct resp_parser *rp, int64_t deadline)
{
    char buf[16384];
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        set_timeout(fd, SO_RCVTIMEO, left);
        ssize_t k = recv(fd, buf, sizeof buf, 0);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return -ETIMEDOUT;
            return -errno;
        }
        if (k == 0) {
            int rc = resp_eof(rp);
            return rc == 1 ? 0 : rc;
        }
        size_t used;
        int rc = resp_feed(rp, buf, (size_t)k, &used);
        if (rc != 0)
            return rc == 1 ? 0 : rc;
    }
}

int eddy_http_blocking_fetch(const char *url, const char *method,
                             const struct eddy_http_pair *args, size_t nargs,
                             unsigned timeout_ms, struct eddy_http_response *out)
{
    memset(out, 0, sizeof *out);
    struct url u;
    int rc = url_parse(url, &u);
    if (rc < 0)
        return rc;
    const char *m = method ? method : "GET";
    struct request_spec s = {
        .method = m, .url = &u, .args = args, .nargs = nargs, .close = 1,
    };
    char *req;
    size_t len;
    rc = request_build(NULL, &s, &req, &len);
    if (rc < 0)
        return rc;
    int64_t deadline = now_ms() + (timeout_ms ? timeout_ms : 60000);
    int fd = do_connect(&u, deadline);
    if (fd < 0) {
        free(req);
        return fd;
    }
    rc = send_all(fd, req, len, deadline);
    free(req);
    if (rc == 0) {
        struct resp_parser rp;
        resp_begin(&rp, out, BLOCKING_MAX_BYTES, !strcmp(m, "HEAD"));
        rc = recv_response(fd, &rp, deadline);
    }
    close(fd);
    if (rc < 0)
        eddy_http_response_free(out);
    return rc;
}
