/*
 * Buffer pools for eddy_recv_multi: a kernel provided-buffer ring (5.19+)
 * or, before that, a free stack the loop picks from for each single recv.
 * Both look the same to the caller: buffers come with completions and go
 * back with eddy_bufpool_put().
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int eddy_bufpool_init(struct eddy_loop *loop, struct eddy_bufpool **out,
                      unsigned count, unsigned size)
{
    if (count == 0 || count > 32768 || (count & (count - 1)) || size == 0 ||
        size > (1u << 30))
        return -EINVAL;
    struct eddy_bufpool *pool = loop_alloc(loop, sizeof *pool);
    if (!pool)
        return -ENOMEM;
    memset(pool, 0, sizeof *pool);
    pool->loop = loop;
    pool->count = count;
    pool->size = size;
    pool->mem = loop_alloc(loop, (size_t)count * size);
    int rc = -ENOMEM;
    if (!pool->mem)
        goto err_pool;

    if (loop->features & EDDY_FEAT_BUF_RING) {
        /* liburing 2.3 has no io_uring_setup_buf_ring(): map the ring
         * ourselves, page-aligned as the kernel requires. */
        pool->br_bytes = (size_t)count * sizeof(struct io_uring_buf);
        void *br = mmap(NULL, pool->br_bytes, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (br == MAP_FAILED) {
            rc = -errno;
            goto err_mem;
        }
        pool->br = br;
        io_uring_buf_ring_init(pool->br);
        struct io_uring_buf_reg reg;
        memset(&reg, 0, sizeof reg);
        reg.ring_addr = (uint64_t)(uintptr_t)pool->br;
        reg.ring_entries = count;
        reg.bgid = loop->next_bgid;
        rc = io_uring_register_buf_ring(&loop->ring, &reg, 0);
        if (rc == 0) {
            pool->bgid = loop->next_bgid++;
            pool->ring = true;
            int mask = io_uring_buf_ring_mask(count);
            for (unsigned i = 0; i < count; i++)
                io_uring_buf_ring_add(pool->br, pool->mem + (size_t)i * size, size,
                                      (unsigned short)i, mask, (int)i);
            io_uring_buf_ring_advance(pool->br, (int)count);
            eddy_loop_attach(loop);
            *out = pool;
            return 0;
        }
        munmap(pool->br, pool->br_bytes);
        pool->br = NULL;
        /* fall through to the user-space pool */
    }
    pool->free_ids = loop_alloc(loop, count * sizeof(uint16_t));
    rc = -ENOMEM;
    if (!pool->free_ids)
        goto err_mem;
    for (unsigned i = 0; i < count; i++)
        pool->free_ids[i] = (uint16_t)(count - 1 - i);
    pool->nfree = count;
    eddy_loop_attach(loop);
    *out = pool;
    return 0;

err_mem:
    loop_free(loop, pool->mem);
err_pool:
    loop_free(loop, pool);
    return rc;
}

int eddy_bufpool_destroy(struct eddy_bufpool *pool)
{
    if (!pool)
        return 0;
    if (pool->users)
        return -EBUSY;
    struct eddy_loop *loop = pool->loop;
    if (pool->ring) {
        io_uring_unregister_buf_ring(&loop->ring, pool->bgid);
        munmap(pool->br, pool->br_bytes);
    }
    loop_free(loop, pool->free_ids);
    loop_free(loop, pool->mem);
    loop_free(loop, pool);
    eddy_loop_detach(loop);
    return 0;
}

void *eddy_bufpool_buf(const struct eddy_bufpool *pool, uint16_t bid)
{
    return pool->mem + (size_t)bid * pool->size;
}

unsigned eddy_bufpool_bufsize(const struct eddy_bufpool *pool)
{
    return pool->size;
}

unsigned eddy_bufpool_free_count(const struct eddy_bufpool *pool)
{
    return pool->ring ? pool->count - pool->out : pool->nfree;
}

bool bufpool_take(struct eddy_bufpool *pool, uint16_t *bid)
{
    if (!pool->nfree)
        return false;
    *bid = pool->free_ids[--pool->nfree];
    return true;
}

void bufpool_park(struct eddy_bufpool *pool, struct eddy_op *op)
{
    op->state = ST_PARKED;
    oplist_push(&pool->waiters, op);
}

void eddy_bufpool_put(struct eddy_bufpool *pool, uint16_t bid)
{
    if (pool->ring) {
        io_uring_buf_ring_add(pool->br, eddy_bufpool_buf(pool, bid), pool->size,
                              bid, io_uring_buf_ring_mask(pool->count), 0);
        io_uring_buf_ring_advance(pool->br, 1);
        pool->out--;
    } else {
        pool->free_ids[pool->nfree++] = bid;
    }
    /* Resume as many parked receives as there are buffers to fill. */
    unsigned avail = eddy_bufpool_free_count(pool);
    struct eddy_op *op;
    while (avail-- && (op = oplist_pop(&pool->waiters)))
        op_arm(pool->loop, op);
}
