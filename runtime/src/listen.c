/*
 * Listening sockets: one helper for every listener eddy's layers and apps
 * make (the HTTP server, eddy-demo, eddy-echo), the private SO_REUSEPORT
 * group of a thread-per-core server, and the bound-port lookup.
 *
 * Why a group checks its port twice: SO_REUSEPORT lets any socket of the
 * same user bind a port that a group already holds, and the kernel then
 * spreads connections over the newcomer too.  A bind without SO_REUSEPORT
 * fails while anyone listens there (a group included), so it tells whether
 * the port is free; a second server may still slip in between that check
 * and our binds, so after listening the group looks at every listener on
 * the port in /proc/net/tcp{,6} and refuses if one is not its own.  Of two
 * servers racing, each listens before it looks, so at least one sees the
 * other.  Without /proc the first check is all there is.
 */
#define _GNU_SOURCE
#include "eddy/eddy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* host:port as a socket address; -EINVAL if host is not a numeric one. */
static int parse_addr(const char *host, uint16_t port, struct sockaddr_storage *ss,
                      socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (!host)
        host = "0.0.0.0";
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        *len = sizeof *a4;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        *len = sizeof *a6;
    } else {
        return -EINVAL;
    }
    return 0;
}

/* A bound TCP socket with the flags' options: 0 and *fd, or -errno. */
static int open_bound(const struct sockaddr_storage *ss, socklen_t len, unsigned flags, int *fd)
{
    /* Non-blocking: the epoll backend then accepts without a poll(2)
     * first, and io_uring does not care (it waits for readiness itself). */
    int s = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0)
        return -errno;
    int one = 1, v6only = (flags & EDDY_LISTEN_V6ONLY) != 0;
    unsigned defer = flags >> 16;
    /* SO_REUSEADDR: the TIME_WAIT sockets of a server just stopped do not
     * keep its successor off the port. */
    if (setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        ((flags & EDDY_LISTEN_REUSEPORT) &&
         setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) ||
        (ss->ss_family == AF_INET6 &&
         setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) < 0) ||
        ((flags & EDDY_LISTEN_NODELAY) &&
         setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) ||
        (defer && setsockopt(s, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof defer) < 0) ||
        bind(s, (const struct sockaddr *)ss, len) < 0) {
        int e = -errno;
        close(s);
        return e;
    }
    *fd = s;
    return 0;
}

int eddy_listen_tcp(const char *host, uint16_t port, int backlog, unsigned flags, int *fd)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int s, rc = parse_addr(host, port, &ss, &len);
    if (rc == 0)
        rc = open_bound(&ss, len, flags, &s);
    if (rc < 0)
        return rc;
    if (listen(s, backlog > 0 ? backlog : 1024) < 0) {
        rc = -errno;
        close(s);
        return rc;
    }
    *fd = s;
    return 0;
}

int eddy_sock_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -EAFNOSUPPORT;
}

/* ---- a private SO_REUSEPORT group -------------------------------------- */

/* Is host:port free?  An exclusive bind (no SO_REUSEPORT) fails with
 * EADDRINUSE while anyone listens there, a SO_REUSEPORT group included. */
static int port_free(const struct sockaddr_storage *ss, socklen_t len, unsigned flags)
{
    int s, rc = open_bound(ss, len, flags & EDDY_LISTEN_V6ONLY, &s);
    if (rc == 0)
        close(s);
    return rc;
}

/* An address as /proc/net/tcp{,6} prints it: each 32-bit word of the
 * network-order address, read as a host integer, in %08X. */
static void proc_hex(const struct sockaddr_storage *ss, char *out, size_t n)
{
    const unsigned char *a;
    size_t words;
    if (ss->ss_family == AF_INET) {
        a = (const unsigned char *)&((const struct sockaddr_in *)ss)->sin_addr;
        words = 1;
    } else {
        a = (const unsigned char *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
        words = 4;
    }
    out[0] = '\0';
    for (size_t i = 0; i < words && 8 * (i + 1) < n; i++) {
        uint32_t w;
        memcpy(&w, a + 4 * i, 4);
        snprintf(out + 8 * i, n - 8 * i, "%08X", w);
    }
}

static bool hex_wildcard(const char *hex)
{
    return strspn(hex, "0") == strlen(hex);
}

static bool inode_ours(unsigned long inode, const int *fds, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        struct stat sb;
        if (fds[i] >= 0 && fstat(fds[i], &sb) == 0 && sb.st_ino == inode)
            return true;
    }
    return false;
}

/*
 * Scans one table (v6: tcp6) for a listener on port that is not one of fds
 * and could take our connections: in our family at our address or where
 * either side is the wildcard; in the other family where either side is
 * (a dual-stack "::" overlaps IPv4; /proc cannot tell a v6only one, so it
 * counts too).  -EADDRINUSE if there is one.
 */
static int scan_table(const char *path, bool v6, const struct sockaddr_storage *ss,
                      unsigned port, const int *fds, unsigned n)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    char ours[40];
    proc_hex(ss, ours, sizeof ours);
    bool same_family = v6 == (ss->ss_family == AF_INET6);
    int rc = 0;
    char line[512];
    while (rc == 0 && fgets(line, sizeof line, f)) {
        /* "sl: local:port rem:port st tx:rx tr:when retrnsmt uid timeout inode" */
        char laddr[40];
        unsigned lport, st;
        unsigned long inode;
        if (sscanf(line, " %*u: %32[0-9A-Fa-f]:%4X %*[0-9A-Fa-f]:%*X %2X %*X:%*X %*X:%*X %*X %*u %*d %lu",
                   laddr, &lport, &st, &inode) != 4)
            continue; /* the header */
        if (lport != port || st != 0x0A /* TCP_LISTEN */)
            continue;
        bool overlap = hex_wildcard(laddr) || hex_wildcard(ours) ||
                       (same_family && !strcasecmp(laddr, ours));
        if (overlap && !inode_ours(inode, fds, n))
            rc = -EADDRINUSE;
    }
    fclose(f);
    return rc;
}

static int group_alone(const struct sockaddr_storage *ss, unsigned port, const int *fds,
                       unsigned n)
{
    int rc = scan_table("/proc/net/tcp", false, ss, port, fds, n);
    if (rc == 0)
        rc = scan_table("/proc/net/tcp6", true, ss, port, fds, n);
    return rc;
}

int eddy_listen_tcp_n(const char *host, uint16_t port, int backlog, unsigned flags,
                      unsigned n, int *fds)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int rc = parse_addr(host, port, &ss, &len);
    if (rc < 0 || n == 0)
        return rc < 0 ? rc : -EINVAL;
    if (n == 1)
        return eddy_listen_tcp(host, port, backlog, flags & ~(unsigned)EDDY_LISTEN_REUSEPORT,
                               fds);
    flags |= EDDY_LISTEN_REUSEPORT;
    if (port && (rc = port_free(&ss, len, flags)) < 0)
        return rc;
    for (unsigned i = 0; i < n; i++)
        fds[i] = -1;
    for (unsigned i = 0; i < n; i++) {
        rc = eddy_listen_tcp(host, port, backlog, flags, &fds[i]);
        if (rc < 0)
            goto err;
        if (port == 0) {
            rc = eddy_sock_port(fds[i]);
            if (rc < 0)
                goto err;
            port = (uint16_t)rc;
        }
    }
    rc = group_alone(&ss, port, fds, n);
    if (rc == 0)
        return 0;
err:
    for (unsigned i = 0; i < n; i++)
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
    return rc;
}
