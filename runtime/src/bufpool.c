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
        rc = loop->be->buf_register(loop, pool);
        if (rc < 0)
            goto err_mem;
        if (rc == 0) {
            eddy_loop_attach(loop);
            *out = pool;
            return 0;
        }
        /* refused: the user-space pool serves */
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
    if (pool->ring)
        loop->be->buf_unregister(pool);
    loop_free(loop, pool->free_ids);
    loop_free(loop, pool->mem);
    loop_free(loop, pool);
    eddy_loop_detach(loop);
    return 0;
}

void *eddy_bufpool_buf(const struct eddy_bufpool *pool, uint16_t bid)
{
    return bufpool_buf(pool, bid);
}

unsigned eddy_bufpool_bufsize(const struct eddy_bufpool *pool)
{
    return pool->size;
}

int eddy_bufpool_lazy(const struct eddy_bufpool *pool)
{
    return pool->ring || pool->loop->be->lazy_bufs;
}

unsigned eddy_bufpool_free_count(const struct eddy_bufpool *pool)
{
    return pool->ring ? pool->count - pool->out : pool->nfree;
}

void bufpool_park(struct eddy_bufpool *pool, struct eddy_op *op)
{
    op->state = ST_PARKED;
    oplist_push(&pool->waiters, op);
}

void eddy_bufpool_put(struct eddy_bufpool *pool, uint16_t bid)
{
    if (pool->ring) {
        pool->loop->be->buf_put(pool, bid);
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
