/*
 * bench-limit: the "limit" row of tools/bench/bench-http.sh.
 *
 * An io_uring responder that does no HTTP parsing at all: it counts request
 * ends ("\r\n\r\n", also across reads) and answers each with one fixed
 * response; all the answers owed after one read go out in one send.  It
 * shows what a server on the same kernel interface reaches when HTTP costs
 * nothing: multishot accept, multishot recv from a provided-buffer ring,
 * SINGLE_ISSUER + DEFER_TASKRUN (falls back to a plain ring before 6.1).
 * No Date header, no routing, no request bodies: not a server, a yardstick.
 *
 *   bench-limit [--port P] [--close-port Q] [--defer-accept S] [--direct 1]
 *
 * --direct 1: accepted sockets go straight into the ring's registered file
 * table (IORING_FILE_INDEX_ALLOC) and every op uses IOSQE_FIXED_FILE: no
 * descriptor table, no fget/fput per op.  TCP_NODELAY then comes from the
 * listener (inherited), as it does in eddy.
 *
 * Listens on 127.0.0.1:P (0 = any) and prints "listening on P [close Q]".
 * Connections to Q get "Connection: close" and are shut down once answered.
 */
#define _GNU_SOURCE
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define NBUFS 1024 /* provided buffers (power of 2) */
#define BUFSZ 4096
#define BGID 1
#define COPIES 64 /* answers one send can carry; more just take another send */

enum { T_ACCEPT, T_ACCEPT_CLOSE, T_RECV, T_SEND, T_IGNORE }; /* low 3 bits of user_data */

struct conn {
    int fd, close_mode, sending, recv_done;
    unsigned match;  /* how much of "\r\n\r\n" the last read ended in */
    size_t owed, off; /* bytes still to send; offset into one answer */
};

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;
static char resp[2][COPIES * 128];
static size_t resp_len[2];
static int lfd[2] = {-1, -1};
static int defer_accept_s; /* TCP_DEFER_ACCEPT on every listener; 0 = off */
static int direct;         /* connections as registered (direct) descriptors */

/* With --direct, c->fd is an index into the registered file table. */
static void sqe_fixed(struct io_uring_sqe *sqe)
{
    if (direct)
        sqe->flags |= IOSQE_FIXED_FILE;
}

static struct io_uring_sqe *sqe_get(void)
{
    struct io_uring_sqe *sqe;
    while (!(sqe = io_uring_get_sqe(&ring)))
        io_uring_submit(&ring); /* a full SQ is back-pressure, not an error */
    return sqe;
}

static void arm_accept(int which)
{
    struct io_uring_sqe *sqe = sqe_get();
    if (direct)
        io_uring_prep_multishot_accept_direct(sqe, lfd[which], NULL, NULL, 0);
    else
        io_uring_prep_multishot_accept(sqe, lfd[which], NULL, NULL, 0);
    io_uring_sqe_set_data64(sqe, which ? T_ACCEPT_CLOSE : T_ACCEPT);
}

static void arm_recv(struct conn *c)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe_fixed(sqe);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    io_uring_sqe_set_data64(sqe, (uintptr_t)c | T_RECV);
}

static void arm_send(struct conn *c)
{
    /* resp[] holds whole answers back to back, so any offset into the first
     * one continues a short send exactly. */
    size_t room = COPIES * resp_len[c->close_mode] - c->off;
    size_t len = c->owed < room ? c->owed : room;
    int last = c->close_mode && len == c->owed;
    /* The half-close that ends a close-mode connection is linked to its
     * last answer, as nginx's close() follows its write at once; the
     * client's EOF then ends the recv, which closes.  MSG_WAITALL: a short
     * send breaks the link instead of losing bytes. */
    if (last && io_uring_sq_space_left(&ring) < 2)
        io_uring_submit(&ring);
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_send(sqe, c->fd, resp[c->close_mode] + c->off, len,
                       MSG_NOSIGNAL | (last ? MSG_WAITALL : 0));
    sqe_fixed(sqe);
    io_uring_sqe_set_data64(sqe, (uintptr_t)c | T_SEND);
    c->sending = 1;
    if (last) {
        sqe->flags |= IOSQE_IO_LINK;
        sqe = sqe_get();
        io_uring_prep_shutdown(sqe, c->fd, SHUT_WR);
        sqe_fixed(sqe);
        io_uring_sqe_set_data64(sqe, T_IGNORE);
    }
}

static void conn_end(struct conn *c)
{
    struct io_uring_sqe *sqe = sqe_get();
    if (direct)
        io_uring_prep_close_direct(sqe, (unsigned)c->fd);
    else
        io_uring_prep_close(sqe, c->fd);
    io_uring_sqe_set_data64(sqe, T_IGNORE);
    free(c);
}

static void on_recv(struct conn *c, struct io_uring_cqe *cqe)
{
    int res = cqe->res;
    if (res > 0) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        const char *p = bufs + (size_t)bid * BUFSZ;
        unsigned m = c->match, ends = 0;
        for (int i = 0; i < res; i++) {
            char ch = p[i];
            if (ch == '\r')
                m = m == 2 ? 3 : 1;
            else if (ch == '\n' && (m == 1 || m == 3))
                m == 3 ? (ends++, m = 0) : (m = 2);
            else
                m = 0;
        }
        c->match = m;
        io_uring_buf_ring_add(br, bufs + (size_t)bid * BUFSZ, BUFSZ, bid,
                              io_uring_buf_ring_mask(NBUFS), 0);
        io_uring_buf_ring_advance(br, 1);
        c->owed += (size_t)ends * resp_len[c->close_mode];
        if (c->owed && !c->sending)
            arm_send(c);
    }
    if (cqe->flags & IORING_CQE_F_MORE)
        return;
    if (res > 0 || res == -ENOBUFS) {
        arm_recv(c); /* the kernel ended the multishot; the connection goes on */
        return;
    }
    c->recv_done = 1;
    if (!c->sending)
        conn_end(c);
}

static void on_send(struct conn *c, int res)
{
    c->sending = 0;
    if (res > 0) {
        c->owed -= (size_t)res;
        c->off = (c->off + (size_t)res) % resp_len[c->close_mode];
        if (c->owed && !c->recv_done) {
            arm_send(c);
            return;
        }
    } else if (!c->recv_done) {
        struct io_uring_sqe *sqe = sqe_get();
        io_uring_prep_shutdown(sqe, c->fd, SHUT_RDWR);
        sqe_fixed(sqe);
        io_uring_sqe_set_data64(sqe, T_IGNORE);
    }
    if (c->recv_done)
        conn_end(c);
}


static int listen_on(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (defer_accept_s)
        setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer_accept_s, sizeof defer_accept_s);
    if (direct)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 4096) ||
        getsockname(fd, (struct sockaddr *)&a, &len)) {
        perror("bench-limit: listen");
        exit(1);
    }
    return fd;
}

int main(int argc, char **argv)
{
    int port = 0, close_port = -1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port"))
            port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--close-port"))
            close_port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--defer-accept"))
            defer_accept_s = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--direct"))
            direct = atoi(argv[i + 1]);
    }
    static const char body[] = "Content-Type: text/plain\r\nContent-Length: 13\r\n";
    for (int m = 0; m < 2; m++) {
        char one[128];
        resp_len[m] = (size_t)snprintf(one, sizeof one, "HTTP/1.1 200 OK\r\nServer: limit\r\n%s%s\r\n"
                                       "Hello, World!", body, m ? "Connection: close\r\n" : "");
        for (int i = 0; i < COPIES; i++)
            memcpy(resp[m] + (size_t)i * resp_len[m], one, resp_len[m]);
    }
    struct io_uring_params p = {.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                                         IORING_SETUP_CQSIZE, .cq_entries = 16384};
    int rc = io_uring_queue_init_params(4096, &ring, &p);
    if (rc == -EINVAL) { /* before 6.1 */
        p = (struct io_uring_params){.flags = IORING_SETUP_CQSIZE, .cq_entries = 16384};
        rc = io_uring_queue_init_params(4096, &ring, &p);
    }
    if (rc < 0) {
        fprintf(stderr, "bench-limit: io_uring: %s\n", strerror(-rc));
        return 1;
    }
    /* liburing 2.3 has no io_uring_setup_buf_ring: map and register by hand. */
    br = mmap(NULL, NBUFS * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
              MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    bufs = malloc((size_t)NBUFS * BUFSZ);
    struct io_uring_buf_reg reg = {.ring_addr = (uintptr_t)br, .ring_entries = NBUFS, .bgid = BGID};
    if (br == MAP_FAILED || !bufs || (rc = io_uring_register_buf_ring(&ring, &reg, 0)) < 0) {
        fprintf(stderr, "bench-limit: buffer ring: %s\n", strerror(rc < 0 ? -rc : ENOMEM));
        return 1;
    }
    io_uring_buf_ring_init(br);
    for (unsigned i = 0; i < NBUFS; i++)
        io_uring_buf_ring_add(br, bufs + (size_t)i * BUFSZ, BUFSZ, (unsigned short)i,
                              io_uring_buf_ring_mask(NBUFS), (int)i);
    io_uring_buf_ring_advance(br, NBUFS);

    struct rlimit nofile;
    getrlimit(RLIMIT_NOFILE, &nofile); /* the table may not be larger */
    unsigned nfiles = nofile.rlim_cur < 65536 ? (unsigned)nofile.rlim_cur : 65536;
    if (direct && (rc = io_uring_register_files_sparse(&ring, nfiles)) < 0) {
        fprintf(stderr, "bench-limit: registered files: %s\n", strerror(-rc));
        return 1;
    }
    lfd[0] = listen_on(port);
    arm_accept(0);
    if (close_port >= 0) {
        lfd[1] = listen_on(close_port);
        arm_accept(1);
    }
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    getsockname(lfd[0], (struct sockaddr *)&a, &len);
    printf("listening on %d", ntohs(a.sin_port));
    if (lfd[1] >= 0) {
        getsockname(lfd[1], (struct sockaddr *)&a, &len);
        printf(" close %d", ntohs(a.sin_port));
    }
    printf("\n");
    fflush(stdout);

    for (;;) {
        rc = io_uring_submit_and_wait(&ring, 1);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            fprintf(stderr, "bench-limit: submit: %s\n", strerror(-rc));
            return 1;
        }
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            n++;
            uint64_t ud = io_uring_cqe_get_data64(cqe);
            unsigned type = ud & 7;
            struct conn *c = (struct conn *)(uintptr_t)(ud & ~(uint64_t)7);
            if (type == T_ACCEPT || type == T_ACCEPT_CLOSE) {
                if (cqe->res >= 0) {
                    int one = 1;
                    if (!direct)
                        setsockopt(cqe->res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    c->fd = cqe->res;
                    c->close_mode = type == T_ACCEPT_CLOSE;
                    arm_recv(c);
                }
                if (!(cqe->flags & IORING_CQE_F_MORE))
                    arm_accept(type == T_ACCEPT_CLOSE); /* EMFILE and such: keep serving */
            } else if (type == T_RECV) {
                on_recv(c, cqe);
            } else if (type == T_SEND) {
                on_send(c, cqe->res);
            }
        }
        io_uring_cq_advance(&ring, n);
    }
}
