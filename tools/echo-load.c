/*
 * echo-load: a load generator for TCP echo servers.
 *
 * N connections; each keeps D messages of S bytes in flight (D = 1 is
 * ping-pong) for T seconds or until M messages came back, whichever is
 * first.  A message counts when all its S bytes have been echoed; its
 * latency is from the write that sent it to the read that completed it.
 * Plain edge-triggered epoll, one thread, so it can be pinned to one CPU.
 *
 * Prints one line of key=value pairs (for scripts) and exits 0, or exits 1
 * if no connection could be made or every connection failed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    bool dead;
    uint64_t rx_bytes;         /* bytes of the current message received */
    unsigned inflight;         /* messages sent and not yet fully echoed */
    unsigned owed;             /* messages to send when the socket takes them */
    size_t woff;               /* bytes of the partial message write done */
    int64_t *sent_ns;          /* ring of send times, depth entries */
    unsigned shead, stail;
};

static struct {
    unsigned conns, depth, size;
    double seconds;
    uint64_t max_msgs;
    const char *host;
    uint16_t port;
    bool verify;
} cfg = {.conns = 100, .depth = 1, .size = 64, .seconds = 5, .host = "127.0.0.1"};

static char *wbuf, *rbuf;
static size_t rbuf_size;

/* Latency histogram in ns: 64 sub-buckets per power of two (~1.5 %). */
#define HSUB 64
#define HBUCKETS (64 * HSUB)
static uint64_t hist[HBUCKETS];

static unsigned hist_index(uint64_t v)
{
    if (v < HSUB)
        return (unsigned)v;
    unsigned lg = 63 - (unsigned)__builtin_clzll(v); /* >= 6 */
    unsigned sub = (unsigned)(v >> (lg - 6)) & (HSUB - 1);
    return (lg - 5) * HSUB + sub;
}

static uint64_t hist_value(unsigned idx)
{
    if (idx < HSUB)
        return idx;
    unsigned lg = idx / HSUB + 5;
    unsigned sub = idx % HSUB;
    return ((uint64_t)(HSUB + sub)) << (lg - 6);
}

static uint64_t hist_pct(uint64_t total, double p)
{
    uint64_t want = (uint64_t)(p * (double)total);
    if (want >= total)
        want = total - 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HBUCKETS; i++) {
        seen += hist[i];
        if (seen > want)
            return hist_value(i);
    }
    return 0;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t done_msgs, errors;
static unsigned live_conns;

static void conn_fail(struct conn *c)
{
    if (c->dead)
        return;
    c->dead = true;
    errors++;
    live_conns--;
    close(c->fd);
}

/* Sends the owed messages; whole messages go out in one write. */
static void conn_write(struct conn *c, int64_t now)
{
    while (c->owed) {
        size_t want = (size_t)c->owed * cfg.size - c->woff;
        ssize_t n = send(c->fd, wbuf + c->woff, want, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                conn_fail(c);
            return;
        }
        size_t total = c->woff + (size_t)n;
        unsigned whole = (unsigned)(total / cfg.size);
        c->woff = total % cfg.size;
        for (unsigned i = 0; i < whole; i++) {
            c->sent_ns[c->stail] = now;
            c->stail = (c->stail + 1) % cfg.depth;
        }
        c->owed -= whole;
        if ((size_t)n < want)
            return; /* the socket is full: EPOLLOUT brings us back */
    }
}

static void conn_read(struct conn *c, int64_t now)
{
    for (;;) {
        ssize_t n = recv(c->fd, rbuf, rbuf_size, 0);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno == EAGAIN)
                break;
            conn_fail(c);
            return;
        }
        if (cfg.verify) {
            /* Every message is the same pattern: byte i is 'a' + i % 26. */
            for (ssize_t i = 0; i < n; i++) {
                uint64_t pos = (c->rx_bytes + (uint64_t)i) % cfg.size;
                if (rbuf[i] != (char)('a' + pos % 26)) {
                    fprintf(stderr, "echo-load: corrupt byte from the server\n");
                    conn_fail(c);
                    return;
                }
            }
        }
        c->rx_bytes += (uint64_t)n;
        while (c->rx_bytes >= cfg.size) {
            c->rx_bytes -= cfg.size;
            c->inflight--;
            int64_t lat = now - c->sent_ns[c->shead];
            c->shead = (c->shead + 1) % cfg.depth;
            hist[hist_index(lat > 0 ? (uint64_t)lat : 0)]++;
            done_msgs++;
            c->owed++;
            c->inflight++;
        }
        if ((size_t)n < rbuf_size)
            break;
    }
    if (c->owed)
        conn_write(c, now);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: echo-load --port P [--host A] [-c CONNS] [-d DEPTH] [-s SIZE]\n"
            "                 [-t SECONDS] [-m MESSAGES] [--verify]\n"
            "  -c  connections (default 100)\n"
            "  -d  messages in flight per connection (default 1: ping-pong)\n"
            "  -s  message size in bytes (default 64)\n"
            "  -t  run time in seconds (default 5)\n"
            "  -m  stop after this many echoed messages (default: no limit)\n"
            "Prints: msgs= secs= msgs_per_s= p50_us= p99_us= errors= cpu_s=\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"port", required_argument, NULL, 'p'},
        {"host", required_argument, NULL, 'H'},
        {"conns", required_argument, NULL, 'c'},
        {"depth", required_argument, NULL, 'd'},
        {"size", required_argument, NULL, 's'},
        {"time", required_argument, NULL, 't'},
        {"messages", required_argument, NULL, 'm'},
        {"verify", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long port = -1;
    int ch;
    while ((ch = getopt_long(argc, argv, "p:H:c:d:s:t:m:Vh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'p': port = strtol(optarg, NULL, 10); break;
        case 'H': cfg.host = optarg; break;
        case 'c': cfg.conns = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'd': cfg.depth = (unsigned)strtoul(optarg, NULL, 10); break;
        case 's': cfg.size = (unsigned)strtoul(optarg, NULL, 10); break;
        case 't': cfg.seconds = strtod(optarg, NULL); break;
        case 'm': cfg.max_msgs = strtoull(optarg, NULL, 10); break;
        case 'V': cfg.verify = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (port <= 0 || port > 65535 || !cfg.conns || !cfg.depth || !cfg.size ||
        cfg.size > (1u << 24) || cfg.seconds <= 0 || cfg.seconds > 3600) {
        usage(stderr);
        return 2;
    }
    cfg.port = (uint16_t)port;
    wbuf = malloc((size_t)cfg.depth * cfg.size);
    rbuf_size = (size_t)cfg.depth * cfg.size;
    if (rbuf_size < 65536)
        rbuf_size = 65536;
    rbuf = malloc(rbuf_size);
    struct conn *conns = calloc(cfg.conns, sizeof *conns);
    int64_t *times = calloc((size_t)cfg.conns * cfg.depth, sizeof *times);
    if (!wbuf || !rbuf || !conns || !times)
        return 1;
    for (size_t i = 0; i < (size_t)cfg.depth * cfg.size; i++)
        wbuf[i] = (char)('a' + (i % cfg.size) % 26);

    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(cfg.port);
    if (inet_pton(AF_INET, cfg.host, &a.sin_addr) != 1) {
        fprintf(stderr, "echo-load: bad host %s\n", cfg.host);
        return 2;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (unsigned i = 0; i < cfg.conns; i++) {
        struct conn *c = &conns[i];
        c->sent_ns = times + (size_t)i * cfg.depth;
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        /* A blocking connect, bounded: a full backlog must not hang us. */
        struct timeval tmo = {.tv_sec = 5};
        if (c->fd < 0 || setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
            setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tmo, sizeof tmo) < 0 ||
            connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0) {
            fprintf(stderr, "echo-load: connect %s:%u: %s\n", cfg.host, cfg.port,
                    strerror(errno));
            return 1;
        }
        int fl = fcntl(c->fd, F_GETFL);
        fcntl(c->fd, F_SETFL, fl | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        live_conns++;
    }

    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    int64_t start = now_ns();
    int64_t end = start + (int64_t)(cfg.seconds * 1e9);
    for (unsigned i = 0; i < cfg.conns; i++) {
        conns[i].owed = cfg.depth;
        conns[i].inflight = cfg.depth;
        conn_write(&conns[i], start);
    }
    struct epoll_event evs[512];
    int64_t now = start;
    while (live_conns) {
        int n = epoll_wait(ep, evs, 512, 50);
        if (n < 0 && errno != EINTR) {
            perror("echo-load: epoll_wait");
            return 1;
        }
        now = now_ns();
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->dead)
                continue;
            if (evs[i].events & EPOLLERR) {
                conn_fail(c);
                continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP))
                conn_read(c, now);
            if (!c->dead && c->owed && (evs[i].events & EPOLLOUT))
                conn_write(c, now);
        }
        if (now >= end || (cfg.max_msgs && done_msgs >= cfg.max_msgs))
            break;
    }
    double secs = (double)(now - start) / 1e9;
    getrusage(RUSAGE_SELF, &ru1);
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                 (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                 (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    for (unsigned i = 0; i < cfg.conns; i++)
        if (!conns[i].dead)
            close(conns[i].fd);
    close(ep);
    uint64_t total = done_msgs;
    printf("msgs=%llu secs=%.3f msgs_per_s=%.0f p50_us=%.1f p99_us=%.1f errors=%llu "
           "cpu_s=%.3f\n",
           (unsigned long long)total, secs, secs > 0 ? (double)total / secs : 0.0,
           total ? (double)hist_pct(total, 0.50) / 1e3 : 0.0,
           total ? (double)hist_pct(total, 0.99) / 1e3 : 0.0,
           (unsigned long long)errors, cpu);
    free(conns);
    free(times);
    free(wbuf);
    free(rbuf);
    return total == 0 || errors == cfg.conns ? 1 : 0;
}
