/*
 * eddy/http_fiber.h — HTTP handlers on fibers: a route whose handler runs
 * on a fiber of its own, so it may wait in straight lines
 * (eddy_http_fetch_await(), eddy_fiber_sleep(), any awaiting call of
 * eddy/fiber.h) and then answer, while the loop serves everything else:
 *
 *     static void h(struct eddy_http_req *req, void *ud)   // on its own fiber
 *     {
 *         struct eddy_http_fetch f = {.url = "http://127.0.0.1:2346/api/time"};
 *         int err = eddy_http_fetch_await(cli, &f);        // only this fiber waits
 *         eddy_http_respond(req, err ? 502 : 200, "text/plain", f.resp.body, f.resp.body_len);
 *         eddy_http_fetch_release(&f);
 *     }
 *
 * Opt-in: the callback routes of eddy/http.h stay first-class and cost
 * nothing of this.  A separate header so that servers without fibers do
 * not see fiber.h.
 *
 * Set-up.  The application sets the server's loop up for fibers
 * (eddy_fiber_setup(loop, cfg), which also sizes the stack pool: stack
 * size, guard pages, max_fibers) before it adds a fiber route, and tears
 * fibers down (eddy_fiber_teardown) after eddy_http_server_destroy() and
 * before eddy_loop_destroy().  Between the server's shutdown and its done
 * callback, fiber handlers still running finish or are cancelled like any
 * handler (see "Aborts"); live fibers keep the loop running
 * (eddy_loop_ref), so a loop run in EDDY_RUN_DEFAULT returns only once
 * every handler fiber has returned.
 *
 * Per request.  The route's handler (a plain callback of the server)
 * spawns a fiber from the loop's stack pool and runs it at once: handler(req,
 * ud) runs where a callback handler would, until it first waits; then the
 * server goes on (with the next pipelined request, say) and the fiber
 * resumes when what it waits for completes.  A handler that never waits
 * costs one spawn and two switches, and its stack goes back to the pool
 * before the next request takes it.  Pipelined requests get a fiber each
 * and run concurrently; their answers still go out in request order
 * (eddy/http.h).  Nothing is allocated per request
 * beyond the fiber's pooled stack; the fiber's eddy_fiber_data() is the
 * handler's to use.  When no fiber can be spawned
 * (stack memory or mappings exhausted, max_fibers reached, no memory) the
 * request is answered 503 at once and the handler never runs; the
 * route's refused counter counts it.
 *
 * The handler's contract: it answers req (eddy_http_respond() or a whole
 * stream) on its fiber before it returns, on every path.  It may wait
 * before and after answering (after the answer req must not be used).
 *
 * Aborts.  The route watches the request (eddy_http_on_abort): when the
 * client goes away before the answer (or a draining shutdown gives up on
 * it), the fiber is cancelled (eddy_fiber_cancel): its current wait ends
 * with -ECANCELED once the operation it waits for has had its final
 * callback (a fetch is cancelled), and so does every later wait, so the
 * handler unwinds; it still answers (the answer is discarded).  The
 * handler must not call eddy_http_on_abort() on req itself (it would
 * replace the route's); eddy_http_aborted(req) and eddy_fiber_cancelled()
 * tell it what happened.
 */
#ifndef EDDY_HTTP_FIBER_H
#define EDDY_HTTP_FIBER_H

#include <stdint.h>

#include "eddy/fiber.h"
#include "eddy/http.h"
#include "eddy/http_client.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A fiber route: yours (static, or in your server's context), valid and
 * unmoved from eddy_http_route_fiber() until eddy_http_server_destroy().
 * Zero it before use.
 */
struct eddy_http_fiber_route {
    /* read-only */
    uint64_t spawned;  /* requests given a fiber */
    uint64_t refused;  /* requests answered 503: no fiber could be spawned */
    unsigned running;  /* handler fibers alive now */
    /* private */
    struct eddy_loop *loop_;
    eddy_http_handler handler_;
    void *ud_;
    size_t stack_size_;
    char label_[32];
};

/*
 * Adds a route as eddy_http_route() does (same method, path and flags
 * rules, same errors), whose handler runs on a fiber of its own per
 * request.  fo (may be NULL) gives the fibers' stack size (0 = the loop's
 * default, see eddy_fiber_setup) and label (for the stall watchdog and
 * overflow reports; NULL = "METHOD path", e.g. "GET /api/coro"; copied, at
 * most 31 bytes).  Returns 0, -ENOENT when the server's loop has no
 * eddy_fiber_setup() yet, -EINVAL (a stack size out
 * of EDDY_FIBER_STACK_MIN..MAX, a NULL rt or handler, or what
 * eddy_http_route() refuses), -EEXIST, -ENOMEM.  Before listen only.
 */
int eddy_http_route_fiber(struct eddy_http_server *srv, struct eddy_http_fiber_route *rt,
                          const char *method, const char *path, int flags,
                          eddy_http_handler handler, void *ud,
                          const struct eddy_fiber_options *fo);

#ifdef __cplusplus
}
#endif

#endif /* EDDY_HTTP_FIBER_H */
