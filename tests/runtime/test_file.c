/* File operations: read, write (at an offset and at the file position) and
 * close on a temporary file, with their failure paths. */
#define _GNU_SOURCE
#include "testsupport.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct one {
    struct eddy_op op;
    int calls;
    int res;
    uint32_t flags;
};

static void one_cb(struct eddy_op *op, int res)
{
    struct one *o = eddy_container_of(op, struct one, op);
    o->calls++;
    o->res = res;
    o->flags = op->flags;
}

/* Starts nothing; runs until o has had n callbacks, then a little more to
 * catch a second one. */
static void wait_calls(struct eddy_loop *loop, struct one *o, int n)
{
    int64_t end = ts_now_ms() + 2000;
    while (o->calls < n) {
        if (ts_now_ms() > end)
            fail_msg("timed out waiting for callback %d", n);
        assert_true(eddy_loop_run(loop, EDDY_RUN_NOWAIT) >= 0);
        usleep(100);
    }
    for (int i = 0; i < 5; i++)
        assert_true(eddy_loop_run(loop, EDDY_RUN_NOWAIT) >= 0);
    assert_int_equal(o->calls, n);
    assert_int_equal(o->flags, 0);
}

static int tmpfile_fd(int flags)
{
    char path[] = "/tmp/eddy-test-XXXXXX";
    int fd = mkostemp(path, O_CLOEXEC | flags);
    assert_true(fd >= 0);
    unlink(path);
    return fd;
}

static void test_write_read_offsets(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    int fd = tmpfile_fd(0);
    struct one w = {0}, r = {0};
    static const char a[] = "0123456789";
    assert_int_equal(eddy_write(loop, &w.op, fd, a, 10, 0, one_cb), 0);
    assert_int_equal(w.calls, 0);
    wait_calls(loop, &w, 1);
    assert_int_equal(w.res, 10);
    /* At an offset past the end: a hole of zeros in between. */
    assert_int_equal(eddy_write(loop, &w.op, fd, "XYZ", 3, 100, one_cb), 0);
    wait_calls(loop, &w, 2);
    assert_int_equal(w.res, 3);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    assert_int_equal(sb.st_size, 103);
    /* Positioned writes leave the file position alone. */
    assert_int_equal(lseek(fd, 0, SEEK_CUR), 0);

    char buf[128];
    memset(buf, 0x55, sizeof buf);
    assert_int_equal(eddy_read(loop, &r.op, fd, buf, 4, 3, one_cb), 0);
    wait_calls(loop, &r, 1);
    assert_int_equal(r.res, 4);
    assert_memory_equal(buf, "3456", 4);
    assert_int_equal(eddy_read(loop, &r.op, fd, buf, sizeof buf, 98, one_cb), 0);
    wait_calls(loop, &r, 2);
    assert_int_equal(r.res, 5);
    assert_memory_equal(buf, "\0\0XYZ", 5);
    /* At the end of the file: 0. */
    assert_int_equal(eddy_read(loop, &r.op, fd, buf, sizeof buf, 103, one_cb), 0);
    wait_calls(loop, &r, 3);
    assert_int_equal(r.res, 0);

    /* Offset -1: the file position is used and moved. */
    assert_int_equal(eddy_write(loop, &w.op, fd, "ab", 2, (uint64_t)-1, one_cb), 0);
    wait_calls(loop, &w, 3);
    assert_int_equal(w.res, 2);
    assert_int_equal(lseek(fd, 0, SEEK_CUR), 2);
    assert_int_equal(eddy_read(loop, &r.op, fd, buf, 3, (uint64_t)-1, one_cb), 0);
    wait_calls(loop, &r, 4);
    assert_int_equal(r.res, 3);
    assert_memory_equal(buf, "234", 3);
    assert_int_equal(lseek(fd, 0, SEEK_CUR), 5);
    assert_int_equal(pread(fd, buf, 5, 0), 5);
    assert_memory_equal(buf, "ab234", 5);

    /* Zero-length I/O is legal and completes with 0. */
    assert_int_equal(eddy_read(loop, &r.op, fd, NULL, 0, 0, one_cb), 0);
    wait_calls(loop, &r, 5);
    assert_int_equal(r.res, 0);

    struct one c = {0};
    assert_int_equal(eddy_close(loop, &c.op, fd, one_cb), 0);
    wait_calls(loop, &c, 1);
    assert_int_equal(c.res, 0);
    assert_int_equal(fcntl(fd, F_GETFD), -1);
    assert_int_equal(errno, EBADF);
    ts_loop_free(loop);
}

static void test_large_write_read(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    int fd = tmpfile_fd(0);
    enum { SZ = 1 << 20 };
    uint8_t *out = malloc(SZ), *in = malloc(SZ);
    assert_non_null(out);
    assert_non_null(in);
    for (size_t i = 0; i < SZ; i++)
        out[i] = (uint8_t)(i * 131 + (i >> 9));
    /* Eight writes in flight at once, each to its own offset. */
    struct one w[8];
    memset(w, 0, sizeof w);
    for (int i = 0; i < 8; i++)
        assert_int_equal(eddy_write(loop, &w[i].op, fd, out + i * (SZ / 8), SZ / 8,
                                    (uint64_t)i * (SZ / 8), one_cb), 0);
    for (int i = 0; i < 8; i++) {
        wait_calls(loop, &w[i], 1);
        assert_int_equal(w[i].res, SZ / 8);
    }
    struct one r = {0};
    assert_int_equal(eddy_read(loop, &r.op, fd, in, SZ, 0, one_cb), 0);
    wait_calls(loop, &r, 1);
    assert_int_equal(r.res, SZ);
    assert_memory_equal(in, out, SZ);
    free(in);
    free(out);
    close(fd);
    ts_loop_free(loop);
}

static void test_file_errors(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    int fd = tmpfile_fd(0);
    int ro = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    assert_true(ro >= 0);
    struct one o = {0};
    char buf[8];

    /* Writing a read-only descriptor. */
    assert_int_equal(eddy_write(loop, &o.op, ro, "x", 1, 0, one_cb), 0);
    wait_calls(loop, &o, 1);
    assert_int_equal(o.res, -EBADF);
    /* Reading a write-only one. */
    int wo = open("/dev/null", O_WRONLY | O_CLOEXEC);
    assert_true(wo >= 0);
    assert_int_equal(eddy_read(loop, &o.op, wo, buf, sizeof buf, 0, one_cb), 0);
    wait_calls(loop, &o, 2);
    assert_int_equal(o.res, -EBADF);
    close(wo);
    /* Reading a directory. */
    int dir = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(dir >= 0);
    assert_int_equal(eddy_read(loop, &o.op, dir, buf, sizeof buf, 0, one_cb), 0);
    wait_calls(loop, &o, 3);
    assert_int_equal(o.res, -EISDIR);
    close(dir);

    /* Closing: a closed descriptor, then one closed twice. */
    assert_int_equal(eddy_close(loop, &o.op, fd, one_cb), 0);
    wait_calls(loop, &o, 4);
    assert_int_equal(o.res, 0);
    assert_int_equal(eddy_close(loop, &o.op, fd, one_cb), 0);
    wait_calls(loop, &o, 5);
    assert_int_equal(o.res, -EBADF);
    assert_int_equal(eddy_read(loop, &o.op, fd, buf, sizeof buf, 0, one_cb), 0);
    wait_calls(loop, &o, 6);
    assert_int_equal(o.res, -EBADF);

    /* Refused at the start: no callback. */
    assert_int_equal(eddy_close(loop, &o.op, -1, one_cb), -EBADF);
    assert_int_equal(eddy_read(loop, &o.op, -1, buf, 1, 0, one_cb), -EINVAL);
    assert_int_equal(eddy_write(loop, &o.op, ro, NULL, 1, 0, one_cb), -EINVAL);
    for (int i = 0; i < 5; i++)
        assert_true(eddy_loop_run(loop, EDDY_RUN_NOWAIT) >= 0);
    assert_int_equal(o.calls, 6);
    close(ro);
    ts_loop_free(loop);
}

/* A pipe with nobody writing: the read waits until cancelled. */
static void test_read_cancel(void **state)
{
    (void)state;
    struct eddy_loop *loop = ts_loop_new(NULL);
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    struct one o = {0};
    char buf[8];
    assert_int_equal(eddy_read(loop, &o.op, p[0], buf, sizeof buf, (uint64_t)-1, one_cb), 0);
    for (int i = 0; i < 20; i++) {
        assert_true(eddy_loop_run(loop, EDDY_RUN_NOWAIT) >= 0);
        usleep(500);
    }
    assert_int_equal(o.calls, 0);
    assert_int_equal(eddy_cancel(loop, &o.op), 0);
    wait_calls(loop, &o, 1);
    assert_int_equal(o.res, -ECANCELED);
    /* And a read that gets its data. */
    assert_int_equal(eddy_read(loop, &o.op, p[0], buf, sizeof buf, (uint64_t)-1, one_cb), 0);
    assert_int_equal(write(p[1], "hey", 3), 3);
    wait_calls(loop, &o, 2);
    assert_int_equal(o.res, 3);
    assert_memory_equal(buf, "hey", 3);
    close(p[0]);
    close(p[1]);
    ts_loop_free(loop);
}

#define T(f) cmocka_unit_test_setup_teardown(f, ts_fd_setup, ts_fd_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_write_read_offsets),
        T(test_large_write_read),
        T(test_file_errors),
        T(test_read_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
