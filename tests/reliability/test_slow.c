/*
 * Slow and abusive clients against the HTTP server: 500 slowloris
 * connections trickling header bytes (each closed at the header deadline,
 * a normal client served all the while), a trickled body (killed by the
 * total body deadline), a slow reader of a 16 MiB answer (closed at the
 * send deadline, memory bounded), 100,000 pipelined requests never read
 * (reading stops, memory bounded, and every answer arrives once the client
 * reads), idle keep-alive connections (closed at the idle deadline), and
 * Debian's slowhttptest (skipped when not installed).
 */
#include "stress_util.h"

#include <signal.h>

#define S(x) x, sizeof(x) - 1

#define SWEEP_MS 50
/* How late a deadline may be noticed: one sweep, plus scheduling on a
 * loaded 2-core machine (and ASan). */
#define LATE_MS 600

static struct ssrv H;

static void base_opts(void)
{
    memset(&H, 0, sizeof H);
    H.o.sweep_ms = SWEEP_MS;
    H.o.max_body = 1u << 20;
    H.o.max_conns = 4000;
}

/* ---- slowloris ------------------------------------------------------------ */

#define NSLOW 500

static void test_slowloris_500(void **state)
{
    (void)state;
    base_opts();
    H.o.header_timeout_ms = 1000;
    ss_start(&H);
    int port = atomic_load(&H.port);
    static int fd[NSLOW];
    static int64_t t0[NSLOW], tend[NSLOW], tlast[NSLOW];
    static size_t sent[NSLOW];
    static char got[NSLOW][64];
    static size_t gotn[NSLOW];
    static const char head[] = "GET /plaintext HTTP/1.1\r\nHost: t\r\nX-Slow: "
                               "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for (int i = 0; i < NSLOW; i++) {
        fd[i] = nb_connect(port);
        t0[i] = ts_now_ms();
        tend[i] = 0;
        sent[i] = gotn[i] = 0;
        /* The first byte at once: under emulation the other connects can
         * take most of the deadline. */
        if (send(fd[i], head, 1, MSG_NOSIGNAL) == 1) {
            sent[i] = 1;
            tlast[i] = t0[i];
        }
    }
    struct prober pr;
    prober_start(&pr, port, 20);
    /* Every connection sends one more header byte every 100 ms until the
     * server closes it. */
    int open = NSLOW;
    int64_t last_tick = 0, deadline = ts_now_ms() + 5000, max_iter = 0, prev = ts_now_ms();
    static struct pollfd pfd[NSLOW];
    while (open > 0 && ts_now_ms() < deadline) {
        int64_t now = ts_now_ms();
        /* How long one pass over the 500 connections takes on this machine
         * (a tick's sends, the poll, the reads): the measure of its speed. */
        max_iter = now - prev > max_iter ? now - prev : max_iter;
        prev = now;
        if (now - last_tick >= 100) {
            last_tick = now;
            for (int i = 0; i < NSLOW; i++) {
                if (tend[i] || gotn[i] || sent[i] >= sizeof head - 1)
                    continue; /* closed, or answered: the trickle ends */
                ssize_t k = send(fd[i], head + sent[i], 1, MSG_NOSIGNAL);
                if (k == 1) {
                    sent[i]++;
                    tlast[i] = now;
                }
            }
        }
        int n = 0;
        static int idx[NSLOW];
        for (int i = 0; i < NSLOW; i++) {
            if (tend[i])
                continue;
            pfd[n].fd = fd[i];
            pfd[n].events = POLLIN;
            idx[n++] = i;
        }
        if (poll(pfd, (nfds_t)n, 20) <= 0)
            continue;
        for (int j = 0; j < n; j++) {
            if (!pfd[j].revents)
                continue;
            int i = idx[j];
            char buf[256];
            ssize_t k = ts_recv(fd[i], buf, sizeof buf, 0);
            if (k > 0) {
                size_t room = sizeof got[i] - 1 - gotn[i];
                size_t c = (size_t)k < room ? (size_t)k : room;
                memcpy(got[i] + gotn[i], buf, c);
                gotn[i] += c;
                continue;
            }
            if (k < 0 && errno == EAGAIN)
                continue;
            tend[i] = ts_now_ms();
            open--;
        }
    }
    prober_stop(&pr);
    int64_t min_dt = INT64_MAX, max_dt = 0, max_gap = 0;
    int n408 = 0;
    size_t min_sent = SIZE_MAX;
    for (int i = 0; i < NSLOW; i++) {
        assert_true(tend[i] != 0); /* closed, not kept forever */
        int64_t dt = tend[i] - t0[i];
        min_dt = dt < min_dt ? dt : min_dt;
        max_dt = dt > max_dt ? dt : max_dt;
        got[i][gotn[i]] = 0;
        if (!strncmp(got[i], "HTTP/1.1 408 ", 13))
            n408++;
        /* The trickle kept coming: bytes went on arriving, the last one
         * less than a deadline before the close, so a deadline restarted by
         * each byte would not have closed it.  (Counted in bytes this
         * depended on the machine's speed: a tick of 500 sends and a poll of
         * 500 descriptors takes far longer than 100 ms under emulation.) */
        assert_true(sent[i] >= 2);
        assert_true(tend[i] - tlast[i] < 1000);
        min_sent = sent[i] < min_sent ? sent[i] : min_sent;
        max_gap = tend[i] - tlast[i] > max_gap ? tend[i] - tlast[i] : max_gap;
        close(fd[i]);
    }
    print_message("slowloris: %d conns closed after %lld..%lld ms (deadline 1000), "
                  "%d got 408, each sent >= %zu bytes, the last <= %lld ms before the close; "
                  "prober %d GETs, max %d ms, %d failed; a pass over them took <= %lld ms\n",
                  NSLOW, (long long)min_dt, (long long)max_dt, n408, min_sent,
                  (long long)max_gap, pr.n, pr.max_ms, pr.fails, (long long)max_iter);
    assert_true(min_dt >= 1000 - 5); /* the deadline counts from the accept, after connect */
    /* Late by at most: a sweep and the scheduling of a loaded machine
     * (LATE_MS), the server's own pass over the 500 expiries (about what
     * the client's pass over them costs on the same machine), and the
     * client noticing (up to one pass of its own).  Natively a pass takes
     * a few ms; under emulation hundreds. */
    assert_true(max_dt <= 1000 + LATE_MS + 2 * max_iter);
    assert_int_equal(n408, NSLOW); /* each was told why */
    assert_int_equal(pr.fails, 0);
    assert_true(pr.n >= 3); /* served all the while (50 GETs natively, 5 under emulation) */
    /* A GET waits at most for one pass of the server's loop over the 500
     * connections, besides its own round trip. */
    assert_true(pr.max_ms < 300 + max_iter);
    struct eddy_http_stats st;
    ss_stats(&H, &st, NULL);
    assert_true(st.timeouts >= NSLOW);
    assert_int_equal(ss_wait_conns(&H, 0, 2000), 0);
    ss_stop(&H);
}

/* ---- slow body ------------------------------------------------------------ */

static void test_slow_body(void **state)
{
    (void)state;
    base_opts();
    H.o.header_timeout_ms = 2000;
    H.o.body_timeout_ms = 500;
    ss_start(&H);
    int port = atomic_load(&H.port);
    enum { N = 20 };
    int fd[N];
    int64_t thead[N];
    for (int i = 0; i < N; i++) {
        fd[i] = cli_connect(port);
        cli_send(fd[i], S("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"));
        thead[i] = ts_now_ms();
    }
    /* One body byte every 20 ms: far more than the 500 ms deadline needs if
     * each byte restarted it. */
    int64_t tend[N] = {0};
    int open = N, sent = 0;
    int64_t stop_at = ts_now_ms() + 3000;
    while (open > 0 && ts_now_ms() < stop_at) {
        for (int i = 0; i < N; i++)
            if (!tend[i])
                cli_send(fd[i], "x", 1);
        sent++;
        usleep(20000);
        for (int i = 0; i < N; i++) {
            if (tend[i])
                continue;
            char buf[256];
            ssize_t k = ts_recv(fd[i], buf, sizeof buf, MSG_DONTWAIT);
            if (k > 0) {
                assert_memory_equal(buf, "HTTP/1.1 408 ", 13);
                tend[i] = ts_now_ms();
                open--;
            } else if (k == 0 || (k < 0 && errno != EAGAIN)) {
                fail_msg("connection %d closed without a 408", i);
            }
        }
    }
    int64_t mn = INT64_MAX, mx = 0;
    for (int i = 0; i < N; i++) {
        assert_true(tend[i] != 0);
        int64_t dt = tend[i] - thead[i];
        mn = dt < mn ? dt : mn;
        mx = dt > mx ? dt : mx;
        close(fd[i]);
    }
    print_message("slow body: %d conns, 408 after %lld..%lld ms (body deadline 500, %d bytes "
                  "trickled)\n", N, (long long)mn, (long long)mx, sent);
    assert_true(mn >= 500 - 25);
    assert_true(mx <= 500 + LATE_MS);
    assert_true(timed_get(port) >= 0);
    assert_int_equal(ss_wait_conns(&H, 0, 2000), 0);
    ss_stop(&H);
}

/* ---- slow reader ---------------------------------------------------------- */

static void test_slow_reader(void **state)
{
    (void)state;
    base_opts();
    H.o.send_timeout_ms = 500;
    ss_start(&H);
    int port = atomic_load(&H.port);
    long base = atomic_load(&H.live);
    enum { BIG = 16 << 20 };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    int64_t t0 = ts_now_ms();
    char req[128];
    int n = snprintf(req, sizeof req, "GET /big?n=%d HTTP/1.1\r\nHost: t\r\n\r\n", BIG);
    cli_send(fd, req, (size_t)n);
    /* What writing 16 MiB into fresh memory costs on this machine: the
     * server's handler does that on its loop (the answer's body, copied
     * once more as the buffer grows), and a GET arriving meanwhile waits
     * for it (natively a few ms, under emulation a few hundred). */
    int64_t tf = ts_now_ms();
    char *fill = malloc(BIG);
    assert_non_null(fill);
    memset(fill, 'x', BIG);
    tf = ts_now_ms() - tf;
    free(fill);
    /* Never read; meanwhile others are served. */
    usleep(100000);
    int ms = timed_get(port);
    assert_true(ms >= 0 && ms < 300 + 2 * tf);
    assert_int_equal(ss_wait_conns(&H, 0, 3000), 0);
    int64_t dt = ts_now_ms() - t0;
    long peak = atomic_load(&H.peak) - base;
    long after = atomic_load(&H.live) - base;
    /* The client sees less than the whole body, then the end. */
    static char buf[1 << 16];
    size_t total = 0;
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (;;) {
        ssize_t k = ts_recv(fd, buf, sizeof buf, 0);
        if (k <= 0) {
            assert_true(k == 0 || errno == ECONNRESET);
            break;
        }
        total += (size_t)k;
    }
    close(fd);
    struct eddy_http_stats st;
    ss_stats(&H, &st, NULL);
    print_message("slow reader: closed %lld ms after the request (send deadline 500); client "
                  "got %zu of %d bytes; server heap peak +%ld bytes, +%ld after the close; "
                  "a GET meanwhile took %d ms (16 MiB written here in %lld ms)\n",
                  (long long)dt, total, BIG, peak, after, ms, (long long)tf);
    assert_true(dt >= 500);
    assert_true(dt <= 500 + 1000 + LATE_MS); /* filling the socket buffers takes a moment */
    assert_true(total < (size_t)BIG);
    assert_true(st.timeouts >= 1);
    /* Bounded: the answer (copied once), its growth slack, nothing more. */
    assert_true(peak < 2L * BIG + (1L << 20));
    assert_true(after < (1L << 20)); /* the 16 MiB went back when the connection closed */
    ss_stop(&H);
}

/* ---- 100,000 pipelined requests, never read ------------------------------ */

#define NPIPE 100000
static const char preq[] = "GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n";

struct pipe_reader {
    pthread_t th;
    int fd;
    long answers, bad;
};

static void *pipe_reader_main(void *arg)
{
    struct pipe_reader *r = arg;
    static char buf[1 << 16];
    static const char one[] = "HTTP/1.1 200 OK\r\n";
    /* Answers are identical apart from Date: count status lines and check
     * each body. */
    size_t len = 0;
    while (r->answers < NPIPE) {
        ssize_t k = ts_recv(r->fd, buf + len, sizeof buf - len, 0);
        if (k <= 0)
            break;
        len += (size_t)k;
        size_t off = 0;
        for (;;) {
            char *end = memmem(buf + off, len - off, "\r\n\r\n", 4);
            if (!end || (size_t)(end + 4 + 13 - buf) > len)
                break;
            if (memcmp(buf + off, one, sizeof one - 1) || memcmp(end + 4, "Hello, World!", 13))
                r->bad++;
            r->answers++;
            off = (size_t)(end + 4 + 13 - buf);
        }
        memmove(buf, buf + off, len - off);
        len -= off;
    }
    return NULL;
}

/*
 * What the server may hold for a connection whose reading it stopped: its
 * stash of unparsed bytes grows to PEND_STOP (64 KiB, proto/src/server.c),
 * then the multishot receive is cancelled; every receive buffer the kernel
 * filled before the cancel lands is stashed too.  On 6.1 a multishot
 * receive fills every free buffer of the ring in one go (measured under
 * QEMU: stash capacity 256 KiB with a 64-buffer ring, 1 MiB with 256,
 * 4 MiB with 1024; 6.18 stopped near 1 MiB with 1024), so the bound is
 * the ring: at most PEND_STOP + ring bytes, in a buffer that doubles, plus
 * the pipelined requests' answers and the session (about 110 KB).  A ring
 * of 64 x 4 KiB keeps that well under the 3.6 MB sent.
 */
#define PIPE_RBUFS 64u
#define PIPE_HELD_MAX (2L * ((64L << 10) + PIPE_RBUFS * 4096L) + (256L << 10))

static void test_pipeline_never_read(void **state)
{
    (void)state;
    base_opts();
    H.o.rbuf_count = PIPE_RBUFS;
    H.o.rbuf_size = 4096;
    ss_start(&H);
    int port = atomic_load(&H.port);
    long base = atomic_load(&H.live);
    /* A small receive buffer: the answers the server sends before its
     * send stalls fit in less. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int small = 16384;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    /* Send as fast as the socket takes it; stop when it has taken nothing
     * for 300 ms. */
    enum { BATCH = 512 };
    static char batch[BATCH * (sizeof preq - 1)];
    for (int i = 0; i < BATCH; i++)
        memcpy(batch + (size_t)i * (sizeof preq - 1), preq, sizeof preq - 1);
    const size_t total = (size_t)NPIPE * (sizeof preq - 1);
    size_t sent = 0;
    int64_t last_progress = ts_now_ms();
    while (sent < total && ts_now_ms() - last_progress < 300) {
        size_t off = sent % sizeof batch;
        size_t n = sizeof batch - off;
        if (n > total - sent)
            n = total - sent;
        ssize_t k = send(fd, batch + off, n, MSG_NOSIGNAL);
        if (k > 0) {
            sent += (size_t)k;
            last_progress = ts_now_ms();
        } else {
            assert_true(k < 0 && errno == EAGAIN);
            usleep(1000);
        }
    }
    /* The server stopped reading: what it has parsed no longer grows. */
    struct eddy_http_stats st1, st2;
    ss_stats(&H, &st1, NULL);
    int64_t settle = ts_now_ms() + 5000;
    do {
        usleep(300000);
        st2 = st1;
        ss_stats(&H, &st1, NULL);
    } while (st1.requests != st2.requests && ts_now_ms() < settle);
    usleep(300000);
    ss_stats(&H, &st2, NULL);
    long grown = atomic_load(&H.live) - base;
    long peak = atomic_load(&H.peak) - base;
    print_message("pipeline: client sent %zu of %zu bytes (%zu requests) before the socket "
                  "stopped taking them; server parsed %llu, read_stops %llu; heap +%ld "
                  "(peak +%ld) bytes\n", sent, total, sent / (sizeof preq - 1),
                  (unsigned long long)st2.requests, (unsigned long long)st2.read_stops, grown,
                  peak);
    /* (The kernel's socket buffers on loopback may take all 3.6 MB: the
     * server is what must stop, with the rest left unread in its socket.) */
    assert_true(st2.read_stops >= 1);
    assert_true(st2.requests == st1.requests);
    assert_true(st2.requests < NPIPE);
    assert_true(peak < PIPE_HELD_MAX); /* the ring's worth, not 100,000 requests' */
    /* Others are still served. */
    int ms = timed_get(port);
    assert_true(ms >= 0 && ms < 300);
    /* Now read: reading resumes and every request is answered, in order. */
    fcntl(fd, F_SETFL, fl);
    struct pipe_reader rd = {.fd = fd};
    assert_int_equal(pthread_create(&rd.th, NULL, pipe_reader_main, &rd), 0);
    int64_t end = ts_now_ms() + 15000;
    while (sent < total && ts_now_ms() < end) {
        size_t off = sent % sizeof batch;
        size_t n = sizeof batch - off;
        if (n > total - sent)
            n = total - sent;
        ssize_t k = send(fd, batch + off, n, MSG_NOSIGNAL);
        assert_true(k > 0);
        sent += (size_t)k;
    }
    pthread_join(rd.th, NULL);
    close(fd);
    ss_stats(&H, &st2, NULL);
    print_message("pipeline: %ld answers read, %ld bad; read_stops %llu\n", rd.answers, rd.bad,
                  (unsigned long long)st2.read_stops);
    assert_int_equal(sent, total);
    assert_int_equal(rd.answers, NPIPE);
    assert_int_equal(rd.bad, 0);
    assert_true(atomic_load(&H.peak) - base < PIPE_HELD_MAX);
    ss_stop(&H);
}

/* ---- idle keep-alive ------------------------------------------------------ */

static void test_idle_close(void **state)
{
    (void)state;
    base_opts();
    H.o.idle_timeout_ms = 500;
    ss_start(&H);
    int port = atomic_load(&H.port);
    enum { N = 200 };
    static int fd[N];
    static int64_t t0[N], tend[N];
    static struct resp r;
    for (int i = 0; i < N; i++) {
        fd[i] = cli_connect(port);
        cli_send(fd[i], S("GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"));
        int eof;
        assert_int_equal(cli_read(fd[i], &r, 1, 0, &eof, 0), 1);
        assert_int_equal(r.status, 200);
        assert_false(r.close);
        t0[i] = ts_now_ms();
        tend[i] = 0;
    }
    int open = N;
    static struct pollfd pfd[N];
    int64_t stop_at = ts_now_ms() + 3000;
    while (open > 0 && ts_now_ms() < stop_at) {
        for (int i = 0; i < N; i++) {
            pfd[i].fd = tend[i] ? -1 : fd[i];
            pfd[i].events = POLLIN;
        }
        if (poll(pfd, N, 50) <= 0)
            continue;
        for (int i = 0; i < N; i++) {
            if (!pfd[i].revents || tend[i])
                continue;
            char buf[64];
            ssize_t k = ts_recv(fd[i], buf, sizeof buf, MSG_DONTWAIT);
            assert_true(k <= 0); /* closed quietly, no answer */
            tend[i] = ts_now_ms();
            open--;
        }
    }
    int64_t mn = INT64_MAX, mx = 0;
    for (int i = 0; i < N; i++) {
        assert_true(tend[i] != 0);
        int64_t dt = tend[i] - t0[i];
        mn = dt < mn ? dt : mn;
        mx = dt > mx ? dt : mx;
        close(fd[i]);
    }
    print_message("idle: %d keep-alive conns closed after %lld..%lld ms (idle deadline 500)\n",
                  N, (long long)mn, (long long)mx);
    assert_true(mn >= 500 - 25);
    assert_true(mx <= 500 + LATE_MS);
    ss_stop(&H);
}

/* ---- slowhttptest --------------------------------------------------------- */

static int have_tool(const char *name)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
    return system(cmd) == 0;
}

static void test_slowhttptest(void **state)
{
    (void)state;
    if (!have_tool("slowhttptest")) {
        print_message("slowhttptest is not installed (tools/setup.sh installs it): skipped\n");
        skip();
    }
    base_opts();
    H.o.header_timeout_ms = 2000;
    ss_start(&H);
    int port = atomic_load(&H.port);
    struct prober pr;
    prober_start(&pr, port, 50);
    /* 500 slowloris connections at 200 a second, a follow-up header every
     * second, for at most 10 s. */
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "timeout -s KILL 20 slowhttptest -H -c 500 -r 200 -i 1 -l 10 -x 24 -p 3 "
             "-u http://127.0.0.1:%d/plaintext >/dev/null 2>&1", port);
    int64_t t0 = ts_now_ms();
    int rc = system(cmd);
    int64_t dt = ts_now_ms() - t0;
    prober_stop(&pr);
    struct eddy_http_stats st;
    ss_stats(&H, &st, NULL);
    print_message("slowhttptest: exit %d after %lld ms; server accepted %llu, timed out %llu; "
                  "prober %d GETs, max %d ms, %d failed\n", WEXITSTATUS(rc), (long long)dt,
                  (unsigned long long)st.accepted, (unsigned long long)st.timeouts, pr.n,
                  pr.max_ms, pr.fails);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) != 137);
    assert_true(st.accepted >= 450 + (unsigned)pr.n);
    assert_true(st.timeouts >= 450); /* the header deadline closed them */
    assert_int_equal(pr.fails, 0);
    assert_true(pr.n >= 50);
    assert_true(pr.max_ms < 300);
    assert_int_equal(ss_wait_conns(&H, 0, 3000), 0);
    ss_stop(&H);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slowloris_500),
        cmocka_unit_test(test_slow_body),
        cmocka_unit_test(test_slow_reader),
        cmocka_unit_test(test_pipeline_never_read),
        cmocka_unit_test(test_idle_close),
        cmocka_unit_test(test_slowhttptest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
