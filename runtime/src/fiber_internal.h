/*
 * Internals of eddy's fibers: not installed.  The files and their seams:
 *   fiber.c        the registry (loop -> scheduler), switching, the run
 *                  queue, parking in a wait, set-up, spawn, exit, join and
 *                  cancel;
 *   fiber_wait.c   how waits end: wake and interrupt, the deadline heap and
 *                  its one timer, sleeps, deadlines, waiting for operations
 *                  (one, all, the first);
 *   fiber_ops.c    the awaiting forms of eddy.h's operations;
 *   fiber_chan.c   events and channels (fiber-to-fiber);
 *   fiber_stack.c  the stack pool, guard pages, overflow reports.
 */
#ifndef EDDY_FIBER_INTERNAL_H
#define EDDY_FIBER_INTERNAL_H

#include "eddy/fiber.h"

#include <stdbool.h>
#include <stdint.h>
#include <ucontext.h>

/* The assembly switch exists for these targets, unless the build asks for
 * ucontext (-DEDDY_FIBER_SWITCH=ucontext defines EDDY_FIBER_UCONTEXT_ONLY). */
#if !defined(EDDY_FIBER_UCONTEXT_ONLY) && (defined(__x86_64__) || defined(__aarch64__))
#define EDDY_FIBER_ASM 1
#else
#define EDDY_FIBER_ASM 0
#endif

#if defined(__SANITIZE_ADDRESS__)
#define EDDY_FIBER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EDDY_FIBER_ASAN 1
#endif
#endif
#ifndef EDDY_FIBER_ASAN
#define EDDY_FIBER_ASAN 0
#endif

struct fiber_sched;
struct stack_class;

/* A saved context: the stack pointer (assembly) or a ucontext. */
struct fiber_ctx {
    void *sp;
    void *uc;                 /* ucontext_t *, ucontext mode */
#if EDDY_FIBER_ASAN
    void *fake;               /* ASan's fake stack of the suspended context */
    const void *bottom;       /* this context's stack, for the sanitizer */
    size_t size;
#endif
};

enum { FS_READY = 1, FS_RUNNING, FS_PARKED, FS_DONE, FS_HELD };

/*
 * A fiber's record.  It lives at the top of its own stack slot (the page a
 * running fiber touches first anyway), so a fiber costs no allocation of
 * its own: the stack and the record come and go together.
 */
struct eddy_fiber {
    struct fiber_ctx ctx;
    struct fiber_sched *s;
    struct eddy_fiber *next;        /* run queue / pool free list */
    struct eddy_fiber *all_next, *all_prev; /* the loop's live fibers */
    struct eddy_fiber_waiter *wait; /* the wait it is parked in */
    struct eddy_fiber_waiter *joiner;
    eddy_fiber_fn fn;
    void *arg;
    void *ret;
    int64_t deadline;               /* block deadline (0 = none) */
    int64_t call_deadline;          /* for the next wait only */
    uint8_t state;
    uint8_t cancelled;
    uint8_t detached;
    /* the stack */
    uint8_t guarded;                /* a guard page below lo (else packed: a canary in
                                     * the 16 bytes below lo, the slot's first) */
    uint8_t cold;                   /* pooled with its pages given back */
    struct stack_class *cls;
    char *lo;                       /* lowest usable byte */
    char *top;                      /* initial stack pointer bound (16-aligned) */
    size_t slot;                    /* whole slot: stack + record (the stack size) */
    unsigned vg_id;
    char label[32];
    char name[40];                  /* "fiber <label>", for the watchdog */
    void *data;                     /* eddy_fiber_set_data() */
};

/* Why a wait was interrupted (waiter why_), and waiter flags (pad_[0]). */
enum { WHY_CANCEL = 1, WHY_TIME = 2 };
enum { W_EXEMPT = 1 }; /* not interrupted by cancel or deadlines (close, shutdown) */

struct fiber_stash; /* fiber_ops.c: descriptors accepted ahead of a fiber_accept */

/* A loop's fibers: one per loop set up with eddy_fiber_setup(). */
struct fiber_sched {
    struct eddy_loop *loop;
    struct fiber_sched *next;       /* the registry */
    struct stack_pool *pool;
    size_t stack_size;
    int use_uc;
    struct fiber_ctx main;          /* the loop's own stack */
    ucontext_t main_uc;
    void *main_fn;                  /* the callback a switch left (watchdog) */
    const char *main_label;
    struct eddy_fiber *current;
    struct eddy_fiber *dead;        /* returned: release after the switch */
    bool from_main;
    struct eddy_fiber *rq_head, *rq_tail;
    struct eddy_fiber *all;         /* live fibers, for eddy_fiber_cancel_all */
    unsigned budget;
    unsigned live, records;
    unsigned in_hook;               /* inside a cancel hook: never resume directly */
    struct eddy_op run_op;
    /* deadlines (fiber_wait.c) */
    struct eddy_fiber_waiter **heap;
    unsigned nheap, capheap;
    struct eddy_op tmr;
    int64_t tmr_at;
    bool tmr_cancel;
    struct fiber_stash *stash;
};

/* ---- fiber.c: scheduling ---- */
/* Parks f in w until woken (runs the next ready fiber, or the loop); dl =
 * absolute deadline or 0.  Returns the wake's res (-ECANCELED caused by a
 * deadline as -ETIME).  In fiber.c, where the switch is inlined. */
int fiber_wait(struct fiber_sched *s, struct eddy_fiber *f, struct eddy_fiber_waiter *w,
               void (*cancel)(struct eddy_fiber_waiter *), int64_t dl);
/* Queues f to run (from the loop's next iteration, or the next switch). */
void fiber_make_ready(struct fiber_sched *s, struct eddy_fiber *f);
/* Runs f now, from the loop's stack (inside a callback). */
void fiber_resume(struct fiber_sched *s, struct eddy_fiber *f);

/* ---- fiber_wait.c: waits ---- */
/* Ends w's wait with res; direct: from a callback, run the fiber at once. */
void fiber_wake(struct eddy_fiber_waiter *w, int res, bool direct);
/* Cancel or deadline (why): calls w's cancel hook, or wakes it -ECANCELED. */
void fiber_interrupt(struct fiber_sched *s, struct eddy_fiber_waiter *w, int why);
/* Puts w (deadline_ set) in the deadline heap and keeps the timer armed. */
void fiber_deadline_add(struct fiber_sched *s, struct eddy_fiber_waiter *w);
/* The next wait's deadline (the block's or the call's, the earlier); uses
 * up the call's. */
int64_t fiber_take_deadline(struct eddy_fiber *f);
/* Before a wait that may start something: -ECANCELED or -ETIME (a passed
 * deadline), the call's deadline then used up; else 0. */
int fiber_pre(struct eddy_fiber *f);
/* Room in the deadline heap for n waits (one per live fiber): 0, -ENOMEM. */
int fiber_heap_reserve(struct fiber_sched *s, unsigned n);
/* The last fiber ended: the deadline timer goes. */
void fiber_timer_stop(struct fiber_sched *s);
/* Waits for one op; exempt: neither cancel nor deadlines interrupt it. */
int fiber_await_one(struct eddy_fiber_op *fo, bool exempt);

/* ---- fiber_ops.c ---- */
/* Closes and frees the descriptors accepted ahead (teardown). */
void fiber_stash_free(struct fiber_sched *s);

/* fiber_switch_*.S: saves the callee-saved registers and the FP control
 * words on the current stack, stores the stack pointer in *save, loads to
 * and restores from there.  A fresh stack starts in eddy__fiber_start,
 * which calls eddy__fiber_main() and never returns. */
void eddy__fiber_jump(void **save, void *to);
void eddy__fiber_start(void);
void eddy__fiber_main(void);

/* The running fiber of this thread (NULL: the loop's own stack). */
extern __thread struct eddy_fiber *eddy__fiber_cur;

/* fiber_stack.c: the pool of stacks (one per loop). */
struct stack_pool;
int stack_pool_new(struct eddy_loop *loop, const struct eddy_fiber_config *cfg,
                   struct stack_pool **out);
void stack_pool_free(struct stack_pool *p);
/* A record at the top of a stack of slot bytes (zeroed record; stack
 * fields set), or NULL with *err (-ENOMEM / -EAGAIN). */
struct eddy_fiber *stack_take(struct stack_pool *p, size_t slot, int *err);
void stack_give(struct stack_pool *p, struct eddy_fiber *f);
/* Aborts with a report if an unguarded stack's canary was overwritten (the
 * report and abort() run on a stack of their own, not the overflowed one). */
void stack_check(const struct eddy_fiber *f);
/* Installs the SIGSEGV handler (at every setup, unless it is in place). */
void stack_overflow_install(void);
/* This thread's alternate signal stack (once per thread). */
void stack_overflow_arm(void);
size_t stack_page(void);

/*
 * watchdog.c: the stall watchdog's one hook for fibers, called by fiber.c
 * at every switch (watch_switch(), its only caller).  A switch inside a
 * callback ends the "callback" the watchdog is timing and starts a new one
 * named fn/label (the fiber's entry and "fiber <label>"; or, switching back
 * to the loop's stack, the callback the first switch left), so a stall is
 * blamed on the fiber that holds the loop.  When old_fn / old_label are not
 * NULL they get the callback that is ended (fiber.c keeps it to restore on
 * the way back).  Loop thread only; nothing when the watchdog is off.
 */
void watchdog_fiber_switch(struct eddy_loop *loop, void *fn, const char *label,
                           void **old_fn, const char **old_label);

#endif
