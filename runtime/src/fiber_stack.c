/*
 * Fiber stacks: the per-loop pool, guard pages and the mapping budget, the
 * canary of unguarded stacks, and the SIGSEGV handler that names a fiber
 * whose stack overflowed into its guard page.
 *
 * A stack slot is `slot` bytes (the stack size the user asked for): the
 * stack grows down from its top, where the fiber's record sits.  An
 * unguarded slot's first 16 bytes hold its canary (f->lo, the lowest usable
 * byte, is just above it), so an overflow of a packed slot runs first into
 * its own canary, then into the top of the slot below (that slot's record),
 * or for slot 0 into the chunk's guard page:
 *
 *   guarded:    [guard page][slot]                          two mappings each
 *   packed:     [guard page][c|slot 0][c|slot 1]...[c|slot n-1]   two per ~2 MiB
 *
 * Nothing but a guard page, or the canary and top of another stack, lies
 * below a stack: the pool's bookkeeping (struct chunk) is allocated apart.
 * Mappings are budgeted (vm.max_map_count): a guarded stack and a chunk's
 * guard page cost two each; guarded stacks stop CHUNK_GUARD_RESERVE short
 * of the budget, so that the packed stacks AUTO falls back to keep a guard
 * page below their chunk.  A chunk mapped when even that is spent has a
 * plain page in its place (a landing zone for an overflow of slot 0 by less
 * than a page, which the canary then reports) and costs one mapping that
 * can merge with its neighbours, as all chunks did before.
 *
 * The canary check runs at switches, on the stack of the fiber that is
 * leaving, whose stack pointer may be below its stack already: a failed
 * check moves to a stack of its own (last_stack) before it reports and
 * aborts, so the report cannot run further down, and abort() (its lazy
 * binding included, which saves the whole vector state on the stack: more
 * than 3 KiB with AVX-512) never runs there.
 */
#define _GNU_SOURCE
#include "fiber_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define EDDY_HAVE_VALGRIND 1
#endif
#endif
#if EDDY_FIBER_ASAN
#include <sanitizer/asan_interface.h>
#endif

#define CANARY_BYTES 16
#define CANARY 0xE5D1F1BE5A5AA5A5ull
#define MAP_RESERVE 8192 /* mappings left to the rest of the process */
#define CHUNK_GUARD_RESERVE 2048 /* mappings kept for chunks' guard pages */
#define CHUNK_BYTES (2u << 20)
#define NCLASSES 8

/* A chunk of packed stacks: [guard page][slot 0]...; allocated apart from
 * it, so that no overflow reaches it. */
struct chunk {
    struct chunk *next;
    char *base;      /* the mapping; slot 0 at base + page */
    size_t len;
    bool guarded;    /* its first page is PROT_NONE (two mappings counted) */
};

struct stack_class {
    size_t slot;
    struct eddy_fiber *warm_g, *warm_u, *cold; /* free lists */
    unsigned nwarm;
    char *carve;     /* next unused slot of the newest chunk */
    unsigned carve_left;
};

struct stack_pool {
    struct eddy_loop *loop;
    unsigned guard, pool_max, max_fibers;
    unsigned taken;
    struct stack_class cls[NCLASSES];
    unsigned ncls;
    struct chunk *chunks;
    bool warned, warned_chunk;
};

static size_t g_page;
static long g_map_budget;            /* mappings all stacks may use, all loops */
static atomic_long g_maps;           /* mappings counted against it */
static atomic_long g_guarded;        /* guarded stacks mapped, all loops */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void init_once(void)
{
    g_page = (size_t)sysconf(_SC_PAGESIZE);
    long max = 65530;
    int fd = open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char buf[32];
        ssize_t n = read(fd, buf, sizeof buf - 1);
        if (n > 0) {
            buf[n] = 0;
            max = strtol(buf, NULL, 10);
        }
        close(fd);
    }
    g_map_budget = max > MAP_RESERVE ? max - MAP_RESERVE : 0;
}

/* Takes n mappings of the budget, leaving `keep` of it untaken. */
static bool maps_take(long n, long keep)
{
    if (atomic_fetch_add(&g_maps, n) + n > g_map_budget - keep) {
        atomic_fetch_sub(&g_maps, n);
        return false;
    }
    return true;
}

static void maps_put(long n)
{
    atomic_fetch_sub(&g_maps, n);
}

size_t stack_page(void)
{
    pthread_once(&g_once, init_once);
    return g_page;
}

int stack_pool_new(struct eddy_loop *loop, const struct eddy_fiber_config *cfg,
                   struct stack_pool **out)
{
    stack_page();
    struct stack_pool *p = eddy_loop_alloc(loop, sizeof *p);
    if (!p)
        return -ENOMEM;
    memset(p, 0, sizeof *p);
    p->loop = loop;
    p->guard = cfg ? cfg->guard : EDDY_FIBER_GUARD_AUTO;
    p->pool_max = cfg && cfg->pool_max ? cfg->pool_max : 1024;
    p->max_fibers = cfg ? cfg->max_fibers : 0;
    *out = p;
    return 0;
}

static uint64_t canary_of(const struct eddy_fiber *f)
{
    return CANARY ^ (uint64_t)(uintptr_t)f->lo;
}

/* The lowest byte of f's slot: its canary, if it has one. */
static char *slot_base(const struct eddy_fiber *f)
{
    return f->lo - (f->guarded ? 0 : CANARY_BYTES);
}

/* The record of the slot at base; canary: bytes kept for the canary at its
 * bottom (0 or CANARY_BYTES). */
static struct eddy_fiber *record_at(char *base, size_t slot, size_t canary)
{
    uintptr_t r = (uintptr_t)base + slot - sizeof(struct eddy_fiber);
    r &= ~(uintptr_t)63;
    struct eddy_fiber *f = (struct eddy_fiber *)r;
    memset(f, 0, sizeof *f);
    f->lo = base + canary;
    f->slot = slot;
    f->top = (char *)((uintptr_t)f & ~(uintptr_t)15);
#ifdef EDDY_HAVE_VALGRIND
    f->vg_id = VALGRIND_STACK_REGISTER(f->lo, base + slot);
#endif
    return f;
}

static void unregister(struct eddy_fiber *f)
{
#ifdef EDDY_HAVE_VALGRIND
    VALGRIND_STACK_DEREGISTER(f->vg_id);
#endif
#if EDDY_FIBER_ASAN
    /* Dead frames leave poisoned redzones behind: clear them, or a later
     * mapping at this address inherits them. */
    ASAN_UNPOISON_MEMORY_REGION(slot_base(f), f->slot);
#endif
}

static struct eddy_fiber *new_guarded(size_t slot, int *err)
{
    if (!maps_take(2, CHUNK_GUARD_RESERVE)) {
        *err = -EAGAIN;
        return NULL;
    }
    size_t len = g_page + slot;
    char *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (m == MAP_FAILED) {
        *err = errno == EAGAIN ? -EAGAIN : -ENOMEM;
        maps_put(2);
        return NULL;
    }
    if (mprotect(m, g_page, PROT_NONE) < 0) {
        *err = -ENOMEM; /* the split needs a mapping: max_map_count */
        munmap(m, len);
        maps_put(2);
        return NULL;
    }
    atomic_fetch_add(&g_guarded, 1);
    struct eddy_fiber *f = record_at(m + g_page, slot, 0);
    f->guarded = 1;
    return f;
}

static void free_guarded(struct eddy_fiber *f)
{
    char *lo = f->lo;
    size_t slot = f->slot;
    unregister(f);
    munmap(lo - g_page, g_page + slot);
    atomic_fetch_sub(&g_guarded, 1);
    maps_put(2);
}

static struct eddy_fiber *new_packed(struct stack_pool *p, struct stack_class *c, int *err)
{
    if (!c) {
        *err = -EAGAIN; /* packed stacks need a size class */
        return NULL;
    }
    if (!c->carve_left) {
        size_t n = CHUNK_BYTES / c->slot;
        if (n < 1)
            n = 1;
        size_t len = g_page + n * c->slot;
        struct chunk *ch = eddy_loop_alloc(p->loop, sizeof *ch);
        if (!ch) {
            *err = -ENOMEM;
            return NULL;
        }
        char *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
        if (m == MAP_FAILED) {
            *err = errno == EAGAIN ? -EAGAIN : -ENOMEM;
            eddy_loop_free(p->loop, ch);
            return NULL;
        }
        /* A guard page below slot 0 while the budget allows; else the page
         * stays an unused landing zone (see the top of this file). */
        ch->guarded = maps_take(2, 0);
        if (ch->guarded && mprotect(m, g_page, PROT_NONE) < 0) {
            maps_put(2);
            ch->guarded = false;
        }
        if (!ch->guarded && !p->warned_chunk) {
            p->warned_chunk = true;
            eddy_loop_log(p->loop, EDDY_LOG_WARN,
                          "fibers: the mappings vm.max_map_count allows are spent; new chunks "
                          "of packed stacks have no guard page below them, only canaries "
                          "(raise vm.max_map_count)");
        }
        ch->base = m;
        ch->len = len;
        ch->next = p->chunks;
        p->chunks = ch;
        c->carve = m + g_page;
        c->carve_left = (unsigned)n;
    }
    char *base = c->carve;
    c->carve += c->slot;
    c->carve_left--;
    return record_at(base, c->slot, CANARY_BYTES);
}

static struct stack_class *class_for(struct stack_pool *p, size_t slot)
{
    for (unsigned i = 0; i < p->ncls; i++)
        if (p->cls[i].slot == slot)
            return &p->cls[i];
    if (p->ncls == NCLASSES)
        return NULL; /* unpooled: guarded stacks mapped and unmapped each time */
    struct stack_class *c = &p->cls[p->ncls++];
    c->slot = slot;
    return c;
}

static struct eddy_fiber *pop(struct eddy_fiber **l)
{
    struct eddy_fiber *f = *l;
    if (f)
        *l = f->next;
    return f;
}

struct eddy_fiber *stack_take(struct stack_pool *p, size_t slot, int *err)
{
    /* A fiber that overflowed into the slot below (maybe a pooled record)
     * is reported before the pool's lists are used. */
    if (eddy__fiber_cur)
        stack_check(eddy__fiber_cur);
    if (p->max_fibers && p->taken >= p->max_fibers) {
        *err = -EAGAIN;
        return NULL;
    }
    struct stack_class *c = class_for(p, slot);
    struct eddy_fiber *f = NULL;
    if (c) {
        if (p->guard != EDDY_FIBER_GUARD_NONE && (f = pop(&c->warm_g)))
            c->nwarm--;
        else if (p->guard != EDDY_FIBER_GUARD_PAGE && (f = pop(&c->warm_u)))
            c->nwarm--;
        else if (p->guard != EDDY_FIBER_GUARD_PAGE)
            f = pop(&c->cold);
    }
    if (f) {
        /* A recycled record: the stack's fields stay, the fiber's are reset
         * (field by field: this is the hot path of a spawn). */
        memset(&f->ctx, 0, sizeof f->ctx);
        f->s = NULL;
        f->next = f->all_next = f->all_prev = NULL;
        f->wait = f->joiner = NULL;
        f->ret = NULL;
        f->deadline = f->call_deadline = 0;
        f->state = f->cancelled = f->detached = 0;
        f->cold = 0;
        f->label[0] = f->name[0] = 0;
    } else {
        int e = 0;
        if (p->guard != EDDY_FIBER_GUARD_NONE)
            f = new_guarded(slot, &e);
        if (!f && p->guard == EDDY_FIBER_GUARD_PAGE) {
            if (e == -EAGAIN && !p->warned) {
                p->warned = true;
                eddy_loop_log(p->loop, EDDY_LOG_WARN,
                              "fibers: %ld guarded stacks mapped, the budget vm.max_map_count "
                              "allows; spawns fail with EAGAIN (raise vm.max_map_count)",
                              (long)atomic_load(&g_guarded));
            }
            *err = e;
            return NULL;
        }
        if (!f) {
            if (p->guard == EDDY_FIBER_GUARD_AUTO && e == -EAGAIN && !p->warned) {
                p->warned = true;
                eddy_loop_log(p->loop, EDDY_LOG_WARN,
                              "fibers: %ld guarded stacks use the mappings vm.max_map_count "
                              "allows; further stacks are packed, without a guard page of "
                              "their own, checked by a canary (raise vm.max_map_count to keep "
                              "guard pages)",
                              (long)atomic_load(&g_guarded));
            }
            f = new_packed(p, c, err);
            if (!f)
                return NULL;
        }
    }
    f->cls = c;
    if (!f->guarded) {
        uint64_t *can = (uint64_t *)(void *)(f->lo - CANARY_BYTES);
        can[0] = can[1] = canary_of(f);
    }
    p->taken++;
    return f;
}

void stack_give(struct stack_pool *p, struct eddy_fiber *f)
{
    if (eddy__fiber_cur)
        stack_check(eddy__fiber_cur);
#if EDDY_FIBER_ASAN
    /* The dead frames' redzones go now, not when the stack is taken again:
     * the pooled stack below a packed one is then plain memory to ASan, so
     * that an overflow into it reaches the canary check (a live fiber's
     * redzones there make ASan report the overflow itself). */
    ASAN_UNPOISON_MEMORY_REGION(f->lo, (size_t)(f->top - f->lo));
#endif
    struct stack_class *c = f->cls;
    p->taken--;
    if (!c) {
        free_guarded(f);
        return;
    }
    if (c->nwarm < p->pool_max) {
        struct eddy_fiber **l = f->guarded ? &c->warm_g : &c->warm_u;
        f->next = *l;
        *l = f;
        c->nwarm++;
        return;
    }
    if (f->guarded) {
        free_guarded(f);
        return;
    }
    /* A packed stack stays mapped with its chunk: give back all its pages
     * but the one at the top, the record's (the canary, in the bottom page,
     * is written again when the stack is taken). */
    madvise(slot_base(f), f->slot - g_page, MADV_DONTNEED);
    f->cold = 1;
    f->next = c->cold;
    c->cold = f;
}

void stack_pool_free(struct stack_pool *p)
{
    for (unsigned i = 0; i < p->ncls; i++) {
        struct stack_class *c = &p->cls[i];
        struct eddy_fiber *f;
        while ((f = pop(&c->warm_g)))
            free_guarded(f);
        while ((f = pop(&c->warm_u)))
            unregister(f);
        while ((f = pop(&c->cold)))
            unregister(f);
    }
    struct chunk *ch = p->chunks;
    while (ch) {
        struct chunk *next = ch->next;
#if EDDY_FIBER_ASAN
        ASAN_UNPOISON_MEMORY_REGION(ch->base + g_page, ch->len - g_page);
#endif
        munmap(ch->base, ch->len);
        if (ch->guarded)
            maps_put(2);
        eddy_loop_free(p->loop, ch);
        ch = next;
    }
    eddy_loop_free(p->loop, p);
}

/* ---- overflow reports ------------------------------------------------- */

/* Async-signal-safe formatting. */
struct msg {
    char buf[256];
    size_t n;
};

static void put(struct msg *m, const char *s)
{
    while (*s && m->n < sizeof m->buf - 1)
        m->buf[m->n++] = *s++;
}

static void put_num(struct msg *m, uint64_t v, unsigned base)
{
    char tmp[24];
    int i = 0;
    do {
        tmp[i++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (base == 16)
        put(m, "0x");
    while (i > 0 && m->n < sizeof m->buf - 1)
        m->buf[m->n++] = tmp[--i];
}

static void report(const struct eddy_fiber *f, const char *how, const void *addr)
{
    struct msg m = {.n = 0};
    put(&m, "eddy: fiber '");
    put(&m, f->label[0] ? f->label : "(no label)");
    put(&m, "' overflowed its ");
    put_num(&m, f->slot, 10);
    put(&m, "-byte stack (");
    put(&m, how);
    if (addr) {
        put(&m, " at ");
        put_num(&m, (uint64_t)(uintptr_t)addr, 16);
    }
    put(&m, "); raise its stack_size\n");
    ssize_t w = write(STDERR_FILENO, m.buf, m.n);
    (void)w;
}

/*
 * A failed canary check: the leaving fiber's stack pointer may be below its
 * stack already (in the slot below, or in the page below a chunk), so the
 * report and abort() run on last_stack, the process's last stack: nothing
 * in the overflowed region is read or written after the check.  One thread
 * uses it; another that fails its check meanwhile waits for the abort.
 */
#define LAST_STACK_SIZE (64u * 1024)
static char last_stack[LAST_STACK_SIZE] __attribute__((aligned(64)));
static atomic_flag last_stack_taken = ATOMIC_FLAG_INIT;

static void canary_failed(const struct eddy_fiber *f)
{
#if EDDY_FIBER_ASAN
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
    report(f, "the canary at its end was overwritten; the stack has no guard page", NULL);
    abort();
}

__attribute__((noreturn, noinline)) static void on_last_stack(const struct eddy_fiber *f)
{
    void (*fn)(const struct eddy_fiber *) = canary_failed;
    if (atomic_flag_test_and_set(&last_stack_taken))
        for (;;)
            __asm__ volatile("" ::: "memory"); /* the other thread's abort ends the process */
#if EDDY_FIBER_ASAN
    __sanitizer_start_switch_fiber(NULL, last_stack, LAST_STACK_SIZE);
#endif
    char *top = last_stack + LAST_STACK_SIZE; /* 16-aligned */
#if defined(__x86_64__)
    __asm__ volatile("mov %0, %%rsp\n\t"
                     "xor %%ebp, %%ebp\n\t"
                     "call *%1\n\t"
                     "ud2"
                     :
                     : "r"(top), "r"(fn), "D"(f)
                     : "memory");
#elif defined(__aarch64__)
    __asm__ volatile("mov sp, %0\n\t"
                     "mov x0, %2\n\t"
                     "mov x29, xzr\n\t"
                     "blr %1\n\t"
                     "brk #0"
                     :
                     : "r"(top), "r"(fn), "r"(f)
                     : "x0", "x29", "x30", "memory");
#else
    (void)top, (void)fn; /* elsewhere: on the overflowed stack */
    canary_failed(f);
#endif
    __builtin_unreachable();
}

void stack_check(const struct eddy_fiber *f)
{
    if (f->guarded)
        return;
    const uint64_t *can = (const uint64_t *)(const void *)(f->lo - CANARY_BYTES);
    if (__builtin_expect(can[0] == canary_of(f) && can[1] == canary_of(f), 1))
        return;
    on_last_stack(f);
}

static struct sigaction g_prev;
static pthread_once_t g_segv_once = PTHREAD_ONCE_INIT;
static pthread_key_t g_alt_key;
static __thread bool tls_alt_armed;
#define ALT_SIZE (64u * 1024)

static void restore_default(int sig)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
}

static void on_segv(int sig, siginfo_t *si, void *uc)
{
    const struct eddy_fiber *f = eddy__fiber_cur;
    const char *a = si->si_addr;
    /* The page below the running fiber's slot faults only when it is a
     * guard page: its own, or its chunk's (slot 0 of a packed chunk; above
     * any other slot lies the slot below, mapped). */
    if (f && a >= slot_base(f) - g_page && a < slot_base(f)) {
        report(f, f->guarded ? "fault in its guard page"
                             : "fault in the guard page below its chunk of packed stacks",
               a);
        /* Return into the faulting access: it faults again and the default
         * action ends the process by SIGSEGV (a core dump, if enabled). */
        restore_default(sig);
        return;
    }
    if (g_prev.sa_flags & SA_SIGINFO) {
        if (g_prev.sa_sigaction) {
            g_prev.sa_sigaction(sig, si, uc);
            return;
        }
    } else if (g_prev.sa_handler != SIG_DFL && g_prev.sa_handler != SIG_IGN) {
        g_prev.sa_handler(sig);
        return;
    }
    restore_default(sig); /* the access repeats and the process dies as it would have */
}

static void alt_free(void *mem)
{
    stack_t ss, cur;
    if (sigaltstack(NULL, &cur) == 0 && cur.ss_sp == mem) {
        memset(&ss, 0, sizeof ss);
        ss.ss_flags = SS_DISABLE;
        sigaltstack(&ss, NULL);
    }
    munmap(mem, ALT_SIZE);
}

static void segv_once(void)
{
    pthread_key_create(&g_alt_key, alt_free);
}

/* Installs on_segv unless it is the handler already; what it replaces is
 * where faults that are not fiber overflows go.  At every setup, because
 * others (test harnesses, crash reporters) swap handlers too. */
void stack_overflow_install(void)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_once(&g_segv_once, segv_once);
    stack_page();
    pthread_mutex_lock(&mu);
    struct sigaction cur;
    if (sigaction(SIGSEGV, NULL, &cur) == 0 &&
        !((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_segv)) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &g_prev);
    }
    pthread_mutex_unlock(&mu);
}

void stack_overflow_arm(void)
{
    if (tls_alt_armed)
        return;
    tls_alt_armed = true;
    stack_page();
    pthread_once(&g_segv_once, segv_once);
    /* An overflowed stack has no room for the signal frame: the handler
     * needs its own stack, per thread.  Keep one the thread already has. */
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
        return;
    void *mem = mmap(NULL, ALT_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return; /* then an overflow dies by SIGSEGV without the message */
    stack_t ss = {.ss_sp = mem, .ss_size = ALT_SIZE, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) < 0) {
        munmap(mem, ALT_SIZE);
        return;
    }
    pthread_setspecific(g_alt_key, mem);
}
