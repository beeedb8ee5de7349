/*
 * A scripted, faulty HTTP upstream for the client tests: a listener on
 * 127.0.0.1 served by plain threads (one per connection) that read
 * requests and answer with raw bytes according to a mode.  Blocking code on
 * purpose: it must not share anything with the loop under test.
 */
#ifndef EDDY_TEST_UPSTREAM_H
#define EDDY_TEST_UPSTREAM_H

#define _GNU_SOURCE
#include "testsupport.h"
#pragma GCC diagnostic ignored "-Wunused-function"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

enum up_mode {
    UP_OK,          /* 200 with Content-Length, body "echo:<request line>|<body>", keep-alive */
    UP_SILENT,      /* reads the request, never answers */
    UP_RESET_BODY,  /* Content-Length: 1000, 100 bytes, then RST */
    UP_TRUNCATED,   /* Content-Length: 1000, 100 bytes, then FIN */
    UP_CHUNKED,     /* chunked, three chunks in separate sends */
    UP_UNTIL_CLOSE, /* no length: the body ends with the connection */
    UP_CLOSE_SECOND,/* answers the first request of a connection, closes on the second */
    UP_CLOSE_AFTER, /* answers (claiming keep-alive), then closes at once */
    UP_DRIP,        /* sends the answer one byte every 20 ms */
    UP_GARBAGE,     /* not HTTP */
    UP_BIG,         /* Content-Length: 2 MiB of 'x' */
    UP_SCRIPT,      /* the n-th request of a connection gets script[n] verbatim (a
                       '\x01' in it: a 30 ms pause there), or as UP_OK when NULL */
};

#define UP_MAX_THREADS 64
#define UP_MAX_REQS 64

struct upstream {
    int lfd;
    uint16_t port;
    enum up_mode mode;
    unsigned delay_ms;           /* before each answer */
    const char *script[4];       /* UP_SCRIPT: raw answers by request index */
    pthread_t acceptor;
    pthread_t th[UP_MAX_THREADS];
    _Atomic int nth;
    _Atomic int stop;
    _Atomic int conns;           /* accepted */
    _Atomic int cur, max_cur;    /* concurrent connections */
    _Atomic int reqs;            /* requests read */
    _Atomic int closed_by_peer;  /* connections the client closed */
    pthread_mutex_t mu;
    char *req[UP_MAX_REQS];      /* raw requests, in arrival order */
};

struct up_conn {
    struct upstream *u;
    int fd;
};

static void up_sendall(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return;
        c += k;
        n -= (size_t)k;
    }
}

/* Reads one request (head + Content-Length body) into buf; its length, 0
 * on EOF or stop, -1 on error. */
static long up_read_req(struct upstream *u, int fd, char *buf, size_t cap)
{
    size_t len = 0;
    for (;;) {
        char *end = memmem(buf, len, "\r\n\r\n", 4);
        if (end) {
            size_t head = (size_t)(end + 4 - buf);
            long cl = 0;
            char *p = strcasestr(buf, "\r\nContent-Length:");
            if (p && p < end)
                cl = atol(p + 17);
            if (len >= head + (size_t)cl)
                return (long)(head + (size_t)cl);
        }
        if (len == cap)
            return -1;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int n = poll(&pfd, 1, 50);
        if (atomic_load(&u->stop))
            return 0;
        if (n <= 0)
            continue;
        ssize_t k = recv(fd, buf + len, cap - len, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k == 0 ? 0 : -1;
        len += (size_t)k;
    }
}

static void up_sleep_ms(unsigned ms)
{
    usleep(ms * 1000u);
}

static void up_rst(int fd)
{
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

/* Waits until the client closes (or stop). */
static void up_wait_eof(struct upstream *u, int fd)
{
    char b[4096];
    while (!atomic_load(&u->stop)) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        ssize_t k = recv(fd, b, sizeof b, 0);
        if (k <= 0) {
            atomic_fetch_add(&u->closed_by_peer, 1);
            return;
        }
    }
}

static void *up_conn_main(void *arg)
{
    struct up_conn *c = arg;
    struct upstream *u = c->u;
    int fd = c->fd;
    free(c);
    int now = atomic_fetch_add(&u->cur, 1) + 1;
    int m = atomic_load(&u->max_cur);
    while (now > m && !atomic_compare_exchange_weak(&u->max_cur, &m, now))
        ;
    static _Thread_local char buf[65536];
    char out[8192];
    for (int nreq = 0;; nreq++) {
        long n = up_read_req(u, fd, buf, sizeof buf - 1);
        if (n <= 0) {
            if (n == 0 && !atomic_load(&u->stop))
                atomic_fetch_add(&u->closed_by_peer, 1);
            break;
        }
        buf[n] = 0;
        int id = atomic_fetch_add(&u->reqs, 1);
        if (id < UP_MAX_REQS) {
            pthread_mutex_lock(&u->mu);
            u->req[id] = strdup(buf);
            pthread_mutex_unlock(&u->mu);
        }
        if (u->delay_ms)
            up_sleep_ms(u->delay_ms);
        char *eol = strstr(buf, "\r\n");
        *eol = 0;
        char *body = eol + 2;
        body = strstr(body, "\r\n\r\n") + 4;
        int k;
        const char *sc = u->mode == UP_SCRIPT && nreq < 4 ? u->script[nreq] : NULL;
        if (sc) {
            for (const char *p = sc; *p;) {
                size_t seg = strcspn(p, "\x01");
                up_sendall(fd, p, seg);
                p += seg;
                if (*p) {
                    up_sleep_ms(30);
                    p++;
                }
            }
            continue;
        }
        switch (u->mode) {
        case UP_SCRIPT:
        case UP_OK:
        case UP_CLOSE_AFTER:
        case UP_CLOSE_SECOND: {
            if (u->mode == UP_CLOSE_SECOND && nreq == 1)
                goto out; /* the keep-alive race: closed, not answered */
            char b[4096];
            int bl = snprintf(b, sizeof b, "echo:%s|%s", buf, body);
            k = snprintf(out, sizeof out,
                         "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Conn: %d\r\n\r\n%s", bl,
                         atomic_load(&u->conns), b);
            up_sendall(fd, out, (size_t)k);
            if (u->mode == UP_CLOSE_AFTER)
                goto out;
            break;
        }
        case UP_SILENT:
            up_wait_eof(u, fd);
            goto out;
        case UP_RESET_BODY:
        case UP_TRUNCATED:
            k = snprintf(out, sizeof out, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
            memset(out + k, 'y', 100);
            up_sendall(fd, out, (size_t)k + 100);
            up_sleep_ms(50);
            if (u->mode == UP_RESET_BODY)
                up_rst(fd);
            goto out;
        case UP_CHUNKED: {
            const char *parts[] = {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                                   "5\r\nhello\r\n", "1\r\n \r\n", "5\r\nworld\r\n",
                                   "0\r\n\r\n"};
            for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
                up_sendall(fd, parts[i], strlen(parts[i]));
                up_sleep_ms(5);
            }
            break;
        }
        case UP_UNTIL_CLOSE:
            k = snprintf(out, sizeof out, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil ");
            up_sendall(fd, out, (size_t)k);
            up_sleep_ms(10);
            up_sendall(fd, "close", 5);
            goto out;
        case UP_DRIP: {
            const char *r = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
            for (size_t i = 0; r[i] && !atomic_load(&u->stop); i++) {
                up_sendall(fd, r + i, 1);
                up_sleep_ms(20);
            }
            up_wait_eof(u, fd);
            goto out;
        }
        case UP_GARBAGE:
            up_sendall(fd, "SSH-2.0-OpenSSH\r\n\r\n", 19);
            up_wait_eof(u, fd);
            goto out;
        case UP_BIG: {
            size_t big = 2u << 20;
            k = snprintf(out, sizeof out, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", big);
            up_sendall(fd, out, (size_t)k);
            char *x = malloc(big);
            memset(x, 'x', big);
            up_sendall(fd, x, big);
            free(x);
            up_wait_eof(u, fd);
            goto out;
        }
        }
    }
out:
    close(fd);
    atomic_fetch_sub(&u->cur, 1);
    return NULL;
}

static void *up_accept_main(void *arg)
{
    struct upstream *u = arg;
    while (!atomic_load(&u->stop)) {
        struct pollfd pfd = {.fd = u->lfd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        int fd = accept4(u->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        int i = atomic_load(&u->nth);
        if (i >= UP_MAX_THREADS) {
            close(fd);
            continue;
        }
        atomic_fetch_add(&u->conns, 1);
        struct up_conn *c = malloc(sizeof *c);
        c->u = u;
        c->fd = fd;
        pthread_create(&u->th[i], NULL, up_conn_main, c);
        atomic_store(&u->nth, i + 1);
    }
    return NULL;
}

static void up_start(struct upstream *u, enum up_mode mode)
{
    memset(u, 0, sizeof *u);
    u->mode = mode;
    pthread_mutex_init(&u->mu, NULL);
    u->lfd = ts_listen(0, &u->port);
    assert_int_equal(pthread_create(&u->acceptor, NULL, up_accept_main, u), 0);
}

/* UP_SCRIPT with the answers to a connection's first and second requests
 * (the second NULL: echoed as UP_OK). */
static void up_start_script(struct upstream *u, const char *first, const char *second)
{
    memset(u, 0, sizeof *u);
    u->mode = UP_SCRIPT;
    u->script[0] = first;
    u->script[1] = second;
    pthread_mutex_init(&u->mu, NULL);
    u->lfd = ts_listen(0, &u->port);
    assert_int_equal(pthread_create(&u->acceptor, NULL, up_accept_main, u), 0);
}

static void up_stop(struct upstream *u)
{
    atomic_store(&u->stop, 1);
    pthread_join(u->acceptor, NULL);
    for (int i = 0; i < atomic_load(&u->nth); i++)
        pthread_join(u->th[i], NULL);
    close(u->lfd);
    for (int i = 0; i < UP_MAX_REQS; i++)
        free(u->req[i]);
    pthread_mutex_destroy(&u->mu);
}

/* The i-th request the upstream read (NULL if none). */
static const char *up_req(struct upstream *u, int i)
{
    pthread_mutex_lock(&u->mu);
    const char *r = i < UP_MAX_REQS ? u->req[i] : NULL;
    pthread_mutex_unlock(&u->mu);
    return r;
}

static void up_url(const struct upstream *u, char *out, size_t cap, const char *path)
{
    snprintf(out, cap, "http://127.0.0.1:%u%s", (unsigned)u->port, path);
}

#endif
