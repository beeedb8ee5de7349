/* Internals of eddy's fibers (fiber.c, fiber_stack.c): not installed. */
#ifndef EDDY_FIBER_INTERNAL_H
#define EDDY_FIBER_INTERNAL_H

#include "eddy/fiber.h"

#include <stdbool.h>
#include <stdint.h>

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

enum { FS_READY = 1, FS_RUNNING, FS_PARKED, FS_DONE };

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
};

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

/* watchdog.c: a fiber switch inside a callback starts a new "callback" for
 * the stall watchdog, named fn/label; the one it ends is returned in
 * *old_fn / *old_label (may be NULL).  Nothing when the watchdog is off. */
void watchdog_fiber_switch(struct eddy_loop *loop, void *fn, const char *label,
                           void **old_fn, const char **old_label);

#endif
