/* Links the installed eddy: a loop, one 10 ms timer, a clean destroy. */
#include <stdio.h>

#include <eddy/eddy.h>

static int fired;
static int fired_res = 1;

static void on_timer(struct eddy_op *op, int res)
{
    (void)op;
    fired++;
    fired_res = res;
}

int main(void)
{
    struct eddy_loop *loop;
    int rc = eddy_loop_init(&loop, NULL);
    if (rc < 0) {
        fprintf(stderr, "eddy_loop_init: %s (%s)\n", eddy_strerror(rc), eddy_loop_init_explain(rc));
        return 1;
    }
    struct eddy_op timer = EDDY_OP_INIT;
    rc = eddy_timer(loop, &timer, 10, on_timer);
    if (rc < 0) {
        fprintf(stderr, "eddy_timer: %s\n", eddy_strerror(rc));
        return 1;
    }
    rc = eddy_loop_run(loop, EDDY_RUN_DEFAULT);
    if (rc != 0 || fired != 1 || fired_res != 0) {
        fprintf(stderr, "run=%d fired=%d res=%d\n", rc, fired, fired_res);
        return 1;
    }
    rc = eddy_loop_destroy(loop);
    if (rc < 0) {
        fprintf(stderr, "eddy_loop_destroy: %s\n", eddy_strerror(rc));
        return 1;
    }
    puts("OK");
    return 0;
}
