/*
 * echo-epoll: the reference TCP echo server eddy-echo is measured against.
 *
 * The usual well-made readiness design, not a strawman: non-blocking
 * sockets, edge-triggered epoll registered once per connection for both
 * directions (no epoll_ctl per message), batched epoll_wait, and each read
 * written straight back from the one read buffer.  Only what a write could
 * not take is copied, into a per-connection backlog; while a backlog exists
 * the connection stops reading (back-pressure) until EPOLLOUT drains it.
 * A read shorter than the buffer means the socket is drained, so no extra
 * read() is spent to see EAGAIN (the next arrival raises a new edge).
 *
 * usage: echo-epoll --port P [--bind ADDR] [--buf-size B]
 * Prints "listening on PORT"; SIGINT/SIGTERM exit 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 512

struct conn {
    int fd;
    char *pending;         /* bytes a write could not take */
    size_t plen, pcap, poff;
    struct conn *next_free;
};

static char *rbuf;
static size_t rbuf_size = 16384;
static struct conn *free_conns;

static struct conn *conn_new(int fd)
{
    struct conn *c = free_conns;
    if (c)
        free_conns = c->next_free;
    else if (!(c = calloc(1, sizeof *c)))
        return NULL;
    c->fd = fd;
    c->plen = c->poff = 0;
    return c;
}

static void conn_close(struct conn *c)
{
    close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
    c->next_free = free_conns;
    free_conns = c;
}

/* Keeps the unsent tail of a write; returns false on allocation failure. */
static bool backlog(struct conn *c, const char *p, size_t n)
{
    if (c->pcap < n) {
        char *np = realloc(c->pending, n);
        if (!np)
            return false;
        c->pending = np;
        c->pcap = n;
    }
    memcpy(c->pending, p, n);
    c->plen = n;
    c->poff = 0;
    return true;
}

/* Writes the backlog; true when it is empty, false if still blocked.
 * *dead is set on error. */
static bool flush(struct conn *c, bool *dead)
{
    while (c->poff < c->plen) {
        ssize_t n = send(c->fd, c->pending + c->poff, c->plen - c->poff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN)
                return false;
            if (errno == EINTR)
                continue;
            *dead = true;
            return false;
        }
        c->poff += (size_t)n;
    }
    c->plen = c->poff = 0;
    return true;
}

/* Reads and echoes until the socket is drained or a write blocks. */
static void on_readable(struct conn *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, rbuf, rbuf_size, 0);
        if (n == 0)
            goto dead;
        if (n < 0) {
            if (errno == EAGAIN)
                return;
            if (errno == EINTR)
                continue;
            goto dead;
        }
        size_t off = 0;
        while (off < (size_t)n) {
            ssize_t w = send(c->fd, rbuf + off, (size_t)n - off, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                if (errno != EAGAIN)
                    goto dead;
                if (!backlog(c, rbuf + off, (size_t)n - off))
                    goto dead;
                return; /* EPOLLOUT resumes us */
            }
            off += (size_t)w;
        }
        if ((size_t)n < rbuf_size)
            return;
    }
dead:
    conn_close(c);
}

static int listen_socket(const char *bind_addr, uint16_t port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    if (inet_pton(AF_INET, bind_addr, &a.sin_addr) != 1) {
        fprintf(stderr, "echo-epoll: bad address %s\n", bind_addr);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 4096) < 0) {
        perror("echo-epoll: listen");
        return -1;
    }
    return fd;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: echo-epoll --port P [--bind ADDR] [--buf-size B]\n"
               "Reference epoll (edge-triggered) TCP echo server.  --port 0 picks a\n"
               "free port; prints \"listening on PORT\".  SIGINT/SIGTERM exit 0.\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"port", required_argument, NULL, 'p'},
        {"bind", required_argument, NULL, 'b'},
        {"buf-size", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long port = -1;
    const char *bind_addr = "0.0.0.0";
    int ch;
    while ((ch = getopt_long(argc, argv, "p:b:s:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'p':
            port = strtol(optarg, NULL, 10);
            break;
        case 'b':
            bind_addr = optarg;
            break;
        case 's':
            rbuf_size = strtoul(optarg, NULL, 10);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (port < 0 || port > 65535 || rbuf_size < 64) {
        usage(stderr);
        return 2;
    }
    rbuf = malloc(rbuf_size);
    int lfd = listen_socket(bind_addr, (uint16_t)port);
    if (!rbuf || lfd < 0)
        return 1;
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &alen);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (sfd < 0 || ep < 0) {
        perror("echo-epoll");
        return 1;
    }
    /* The listener and the signalfd are told apart by a NULL / 1 tag. */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.ptr = (void *)1;
    epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
    printf("listening on %u\n", ntohs(a.sin_port));
    fflush(stdout);

    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("echo-epoll: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            void *tag = evs[i].data.ptr;
            if (tag == (void *)1)
                return 0; /* SIGINT / SIGTERM */
            if (!tag) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) {
                        if (errno == EINTR || errno == ECONNABORTED)
                            continue;
                        break; /* EAGAIN, or EMFILE: next edge */
                    }
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *c = conn_new(fd);
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP,
                                              .data.ptr = c};
                    if (!c || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev) < 0) {
                        if (c)
                            conn_close(c);
                        else
                            close(fd);
                    }
                }
                continue;
            }
            struct conn *c = tag;
            if (c->fd < 0)
                continue; /* closed earlier in this batch */
            uint32_t e = evs[i].events;
            if (e & EPOLLERR) {
                conn_close(c);
                continue;
            }
            bool readable = e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP);
            if (c->plen) {
                bool dead = false;
                if (!flush(c, &dead)) {
                    if (dead)
                        conn_close(c);
                    continue;
                }
                readable = true; /* reads were skipped while backlogged */
            }
            if (readable)
                on_readable(c);
        }
    }
}
