/*
 * Fiber stacks: the per-loop pool, guard pages and the mapping budget, the
 * canary of unguarded stacks, and the SIGSEGV handler that names a fiber
 * whose stack overflowed into its guard page.
 *
 * A stack slot is `slot` bytes (the stack size the user asked for): the
 * stack grows down from near its top, where the fiber's record sits; the
 * last 16 bytes hold the canary of the slot above it (unguarded slots are
 * packed, so an overflow of slot i runs first into those 16 bytes).
 *
 *   guarded:    [guard page][slot]                     one mapping each, split in two
 *   unguarded:  [header page][slot 0][slot 1]...       one mapping per ~2 MiB
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
#define CHUNK_BYTES (2u << 20)
#define NCLASSES 8

struct chunk {
    struct chunk *next;
    size_t len;
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
    bool warned;
};

static size_t g_page;
static long g_guard_budget;          /* guarded stacks the process may map */
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
    g_guard_budget = max > MAP_RESERVE ? (max - MAP_RESERVE) / 2 : 0;
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

/* The record of a slot whose lowest byte is lo. */
static struct eddy_fiber *record_at(char *lo, size_t slot)
{
    uintptr_t r = (uintptr_t)lo + slot - CANARY_BYTES - sizeof(struct eddy_fiber);
    r &= ~(uintptr_t)63;
    struct eddy_fiber *f = (struct eddy_fiber *)r;
    memset(f, 0, sizeof *f);
    f->lo = lo;
    f->slot = slot;
    f->top = (char *)((uintptr_t)f & ~(uintptr_t)15);
#ifdef EDDY_HAVE_VALGRIND
    f->vg_id = VALGRIND_STACK_REGISTER(lo, lo + slot);
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
    ASAN_UNPOISON_MEMORY_REGION(f->lo, f->slot);
#endif
}

static struct eddy_fiber *new_guarded(size_t slot, int *err)
{
    if (atomic_fetch_add(&g_guarded, 1) >= g_guard_budget) {
        atomic_fetch_sub(&g_guarded, 1);
        *err = -EAGAIN;
        return NULL;
    }
    size_t len = g_page + slot;
    char *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (m == MAP_FAILED) {
        *err = errno == EAGAIN ? -EAGAIN : -ENOMEM;
        atomic_fetch_sub(&g_guarded, 1);
        return NULL;
    }
    if (mprotect(m, g_page, PROT_NONE) < 0) {
        *err = -ENOMEM; /* the split needs a mapping: max_map_count */
        munmap(m, len);
        atomic_fetch_sub(&g_guarded, 1);
        return NULL;
    }
    struct eddy_fiber *f = record_at(m + g_page, slot);
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
        char *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
        if (m == MAP_FAILED) {
            *err = errno == EAGAIN ? -EAGAIN : -ENOMEM;
            return NULL;
        }
        struct chunk *ch = (struct chunk *)m;
        ch->len = len;
        ch->next = p->chunks;
        p->chunks = ch;
        c->carve = m + g_page;
        c->carve_left = (unsigned)n;
    }
    char *lo = c->carve;
    c->carve += c->slot;
    c->carve_left--;
    return record_at(lo, c->slot);
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
#if EDDY_FIBER_ASAN
        ASAN_UNPOISON_MEMORY_REGION(f->lo, (size_t)(f->top - f->lo));
#endif
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
                              "allows; further stacks have no guard page, only a canary "
                              "(raise vm.max_map_count to keep guard pages)",
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
     * but the two at the top (the record, and the canary of the slot above). */
#if EDDY_FIBER_ASAN
    ASAN_UNPOISON_MEMORY_REGION(f->lo, (size_t)(f->top - f->lo));
#endif
    madvise(f->lo, f->slot - 2 * g_page, MADV_DONTNEED);
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
        ASAN_UNPOISON_MEMORY_REGION(ch, ch->len);
#endif
        munmap(ch, ch->len);
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

void stack_check(const struct eddy_fiber *f)
{
    if (f->guarded)
        return;
    const uint64_t *can = (const uint64_t *)(const void *)(f->lo - CANARY_BYTES);
    if (__builtin_expect(can[0] == canary_of(f) && can[1] == canary_of(f), 1))
        return;
    report(f, "the canary at its end was overwritten; the stack has no guard page", NULL);
    abort();
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
    if (f && f->guarded && a >= f->lo - g_page && a < f->lo) {
        report(f, "fault in its guard page", a);
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
