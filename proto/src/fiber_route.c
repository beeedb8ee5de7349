/*
 * Fiber routes (eddy/http_fiber.h): a route whose handler runs on a fiber
 * of its own.  Built on the public API only — eddy_http_route() with a
 * trampoline handler, eddy_http_on_abort(), and fiber.h — so the server
 * knows nothing of fibers (and this file nothing of the server's insides).
 *
 * Per request nothing is allocated: the fiber's argument is the request,
 * its fiber-local (eddy_fiber_set_data) the route, and the abort
 * callback's user data the fiber's handle.  The fiber is spawned held, so
 * that all this is in place before it runs, then started at once inside
 * the server's callback; joinable, so its handle stays valid while the
 * abort may still come; and it detaches itself when it ends: the handler
 * has answered by then (its contract), after which the server calls no
 * abort callback.
 */
#define _GNU_SOURCE
#include "eddy/http_fiber.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static void *route_main(void *arg)
{
    struct eddy_http_req *req = arg;
    struct eddy_fiber *self = eddy_fiber_self();
    struct eddy_http_fiber_route *rt = eddy_fiber_data(self); /* before the handler may reuse it */
    rt->handler_(req, rt->ud_);
    /* req is answered (the handler's contract): no abort can come now. */
    rt->running--;
    eddy_fiber_detach(self); /* its stack goes back to the pool as it returns */
    return NULL;
}

/* The client went away, or a draining shutdown gave up on the request:
 * the fiber's waits end with -ECANCELED and it unwinds, answering. */
static void route_abort(struct eddy_http_req *req, void *ud)
{
    (void)req;
    eddy_fiber_cancel(ud);
}

static void route_tramp(struct eddy_http_req *req, void *ud)
{
    static const char busy[] = "no fiber could be started for this request\n";
    struct eddy_http_fiber_route *rt = ud;
    struct eddy_fiber_options o = {rt->stack_size_, rt->label_, EDDY_FIBER_HELD};
    struct eddy_fiber *f;
    if (eddy_fiber_spawn(rt->loop_, &f, route_main, req, &o) < 0) {
        rt->refused++;
        eddy_http_respond(req, 503, "text/plain; charset=UTF-8", busy, sizeof busy - 1);
        return;
    }
    eddy_fiber_set_data(f, rt);
    rt->spawned++;
    rt->running++;
    eddy_http_on_abort(req, route_abort, f);
    /* Runs the handler now, until it first waits: where a callback handler
     * would run, and a handler that never waits has given its stack back
     * (warm, for the next request) before this returns. */
    eddy_fiber_start(f);
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
    if (!eddy_fiber_is_setup(eddy_http_server_loop(srv)))
        return -ENOENT;
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
