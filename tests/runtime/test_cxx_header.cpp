// The runtime's public header used from C++, compiled with -Wall -Wextra
// -Werror: EDDY_OP_INIT (once {0}, which C++ warns about as missing field
// initializers), an op embedded in a struct and found again with
// eddy_container_of, and one post through a real loop.  The runtime's other
// public headers are included too, so each is proven to compile as C++.
#include "eddy/eddy.h"
#include "eddy/fault.h"
#include "eddy/fiber.h"
#include "eddy/group.h"

#include <cerrno>
#include <cstdio>

namespace {

struct request {
    int id;
    eddy_op op;
    int calls;
    int res;
};

void on_post(eddy_op *op, int res)
{
    request *r = eddy_container_of(op, request, op);
    r->calls++;
    r->res = res;
}

} // namespace

int main()
{
    eddy_op plain = EDDY_OP_INIT;
    struct eddy_op tagged = EDDY_OP_INIT;
    request r = {42, EDDY_OP_INIT, 0, -1};
    if (eddy_op_active(&plain) || eddy_op_active(&tagged) || eddy_op_active(&r.op))
        return 1;
    eddy_loop *loop = nullptr;
    int rc = eddy_loop_init(&loop, nullptr);
    if (rc < 0) {
        std::fprintf(stderr, "eddy_loop_init: %s\n", eddy_strerror(rc));
        return 1;
    }
    if (eddy_post(loop, &r.op, on_post) != 0 || eddy_post(loop, &r.op, on_post) != -EBUSY)
        return 1;
    if (eddy_loop_run(loop, EDDY_RUN_DEFAULT) != 0)
        return 1;
    if (r.calls != 1 || r.res != 0 || r.id != 42 || eddy_loop_destroy(loop) != 0)
        return 1;
    std::printf("ok\n");
    return 0;
}
