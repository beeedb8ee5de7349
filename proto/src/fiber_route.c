/*
 * Fiber routes (eddy/http_fiber.h): a route whose handler runs on a fiber
 * of its own.  Built on the public API only — eddy_http_route() with a
 * trampoline handler, eddy_http_on_abort(), and fiber.h — so the server
 * knows nothing of fibers (and this file nothing of the server's insides).
 *
 * Per request one small context (the loop's allocator) links the request,
 * the route and the fiber: the spawn needs it before the fiber's stack
 * runs, and the abort callback needs the fiber's handle.  The fiber is
 * spawned joinable so that handle stays valid while the abort may still
 * come, and detaches itself when it ends: the handler has answered by
 * then (its contract), after which the server calls no abort callback.
 */
#define _GNU_SOURCE
#include "eddy/http_fiber.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

struct fctx {
    struct eddy_http_fiber_route *rt;
    struct eddy_http_req *req;
    struct eddy_fiber *fiber;
};

static void *route_main(void *arg)
{
    struct fctx *c = arg;
    struct eddy_http_fiber_route *rt = c->rt;
    struct eddy_fiber *self = c->fiber;
    rt->handler_(c->req, rt->ud_);
    /* req is answered (the handler's contract): no abort can come now. */
    eddy_loop_free(rt->loop_, c);
    rt->running--;
    eddy_fiber_detach(self); /* its stack goes back to the pool as it returns */
    return NULL;
}

/* The client went away, or a draining shutdown gave up on the request:
 * the fiber's waits end with -ECANCELED and it unwinds, answering. */
static void route_abort(struct eddy_http_req *req, void *ud)
{
    (void)req;
    struct fctx *c = ud;
    eddy_fiber_cancel(c->fiber);
}

static void route_tramp(struct eddy_http_req *req, void *ud)
{
    static const char busy[] = "no fiber could be started for this request\n";
    struct eddy_http_fiber_route *rt = ud;
    struct fctx *c = eddy_loop_alloc(rt->loop_, sizeof *c);
    int rc = -ENOMEM;
    if (c) {
        c->rt = rt;
        c->req = req;
        struct eddy_fiber_options o = {rt->stack_size_, rt->label_};
        rc = eddy_fiber_spawn(rt->loop_, &c->fiber, route_main, c, &o);
    }
    if (rc < 0) {
        if (c)
            eddy_loop_free(rt->loop_, c);
        rt->refused++;
        eddy_http_respond(req, 503, "text/plain; charset=UTF-8", busy, sizeof busy - 1);
        return;
    }
    rt->spawned++;
    rt->running++;
    eddy_http_on_abort(req, route_abort, c);
}

static void *probe_fn(void *arg)
{
    return arg;
}

/* -ENOENT unless loop has fibers set up.  eddy_fiber_spawn() looks for the
 * set-up before it checks the stack size, so a size below the minimum
 * asks without spawning anything (test_http_fiber checks both answers). */
static int fibers_ready(struct eddy_loop *loop)
{
    struct eddy_fiber_options o = {1, NULL};
    int rc = eddy_fiber_spawn(loop, NULL, probe_fn, NULL, &o);
    assert(rc < 0);
    return rc == -ENOENT ? -ENOENT : 0;
}

int eddy_http_route_fiber(struct eddy_http_server *srv, struct eddy_http_fiber_route *rt,
                          const char *method, const char *path, int flags,
                          eddy_http_handler handler, void *ud,
                          const struct eddy_fiber_options *fo)
{
    if (!rt || !handler || !path)
        return -EINVAL;
    size_t ss = fo ? fo->stack_size : 0;
    if (ss && (ss < EDDY_FIBER_STACK_MIN || ss > EDDY_FIBER_STACK_MAX))
        return -EINVAL;
    int rc = fibers_ready(eddy_http_server_loop(srv));
    if (rc < 0)
        return rc;
    memset(rt, 0, sizeof *rt);
    rt->loop_ = eddy_http_server_loop(srv);
    rt->handler_ = handler;
    rt->ud_ = ud;
    rt->stack_size_ = ss;
    if (fo && fo->label && fo->label[0])
        snprintf(rt->label_, sizeof rt->label_, "%s", fo->label);
    else
        snprintf(rt->label_, sizeof rt->label_, "%s %s", method ? method : "*", path);
    return eddy_http_route(srv, method, path, flags, route_tramp, rt);
}
