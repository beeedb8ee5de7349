/*
 * The fault injector (eddy/fault.h): rules parsed once into loop->faults,
 * a seeded generator in the set (no global state), and the sites the loop
 * and the backends call only while loop->faults is set:
 *
 *   fault_start    op_start(): fail:E, the starter returns -E, no callback
 *                  (else it goes on with op_start_tail()).
 *   fault_arm      op_arm(), a starter arming its op: short:N shrinks the
 *                  length of recv/read/write (the kernel is asked for fewer
 *                  bytes); errno on recv, read and recv_once defers the final
 *                  callback with it before the kernel reads a byte, so no
 *                  byte it read is ever hidden.
 *   fault_clamp    a backend preparing a send (each re-submission) or a
 *                  receive into a pool buffer: short:N.
 *   fault_deliver  op_deliver(), a non-final callback of a multishot op:
 *                  errno ends it.  recv_multi: the buffer is delivered as
 *                  usual, then the op is cancelled and its final callback
 *                  carries the errno.  accept: the new descriptor is closed
 *                  (the peer sees its connection closed, as when the
 *                  kernel's accept fails late); EMFILE/ENFILE/ENOMEM/ENOBUFS
 *                  are delivered with EDDY_OP_MORE as the kernel's are, the
 *                  transient ones (ECONNABORTED ...) are retried quietly as
 *                  the kernel's are, other errors end the op.  timer: the
 *                  tick is delivered, then it ends.
 *   fault_final    op_end(), every final callback: errno replaces the result
 *                  (the kernel is done with the op by then); delay:N holds
 *                  the op in ST_DELAYED and delivers it from an internal
 *                  timer.  A final -ECANCELED (cancel, deadline) is never
 *                  touched, and an op eddy_cancel()led is never faulted.
 *
 * A rule counts as events only what its effect can change at a site (a
 * kind it names; for short:N, a transfer asked for more than N bytes).
 * Every rule an event matches counts it (and draws, for P%), and the first
 * that fires injects: a rule's nth:K and draws do not depend on the rules
 * before it, and the same seed with the same completions replays.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "eddy/fault.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum fault_kind {
    FK_ACCEPT = 1u << 0,
    FK_CONNECT = 1u << 1,
    FK_RECV = 1u << 2,
    FK_RECV_MULTI = 1u << 3,
    FK_RECV_ONCE = 1u << 4,
    FK_SEND = 1u << 5,
    FK_SENDMSG = 1u << 6,
    FK_SEND_ZC = 1u << 7,
    FK_READ = 1u << 8,
    FK_WRITE = 1u << 9,
    FK_CLOSE = 1u << 10,
    FK_SHUTDOWN = 1u << 11,
    FK_TIMER = 1u << 12,
    FK_POLL = 1u << 13,
    FK_WORK = 1u << 14,
    FK_ALL = (1u << 15) - 1,
};

static const struct {
    const char *name;
    unsigned mask;
} kind_names[] = {
    {"accept", FK_ACCEPT},
    {"connect", FK_CONNECT},
    {"recv", FK_RECV | FK_RECV_MULTI | FK_RECV_ONCE},
    {"recv_multi", FK_RECV_MULTI},
    {"recv_once", FK_RECV_ONCE},
    {"send", FK_SEND | FK_SENDMSG | FK_SEND_ZC},
    {"sendmsg", FK_SENDMSG},
    {"send_zc", FK_SEND_ZC},
    {"read", FK_READ},
    {"write", FK_WRITE},
    {"close", FK_CLOSE},
    {"shutdown", FK_SHUTDOWN},
    {"timer", FK_TIMER},
    {"poll", FK_POLL},
    {"work", FK_WORK},
    {"all", FK_ALL},
};

/* Kinds a short:N can shorten somewhere. */
#define FK_SHORTABLE                                                           \
    (FK_RECV | FK_RECV_MULTI | FK_RECV_ONCE | FK_SEND | FK_SENDMSG | FK_SEND_ZC | FK_READ | \
     FK_WRITE)

/* The errors an effect may name.  EAGAIN is never a result (eddy.h), and
 * ECANCELED belongs to cancel: neither is offered. */
#define E(x) {#x, x}
static const struct {
    const char *name;
    int err;
} errno_names[] = {
    E(ECONNRESET), E(EPIPE),        E(ENOBUFS),       E(EMFILE),     E(ENFILE),
    E(ENOMEM),     E(ECONNREFUSED), E(ECONNABORTED),  E(ETIMEDOUT),  E(ETIME),
    E(EIO),        E(EINTR),        E(EHOSTUNREACH),  E(ENETUNREACH), E(ENETDOWN),
    E(ENOTCONN),   E(EBADF),        E(EINVAL),        E(ENOSPC),     E(EACCES),
    E(EPERM),      E(EADDRINUSE),   E(EADDRNOTAVAIL), E(EPROTO),     E(EMSGSIZE),
    E(ESHUTDOWN),  E(EFAULT),
};
#undef E

enum effect { EF_ERRNO, EF_SHORT, EF_DELAY, EF_FAIL };

struct fault_rule {
    unsigned kinds;
    uint8_t effect;
    int err;             /* EF_ERRNO, EF_FAIL: positive errno */
    uint32_t n;          /* EF_SHORT bytes, EF_DELAY ms */
    uint32_t ppb;        /* probability in parts per 10^9; 0 = nth */
    uint64_t nth;        /* the Kth event, or 0 */
    uint64_t cap;        /* at most this many injections; 0 = no cap */
    uint64_t events, injected;
    char text[64];
};

#define MAX_RULES 32

struct fault_set {
    uint64_t seed;
    uint64_t rng;        /* splitmix64 state */
    unsigned nrules;
    struct fault_rule rule[MAX_RULES];
    struct oplist delayed; /* ST_DELAYED ops, due time in op->ts */
    unsigned ending;       /* multishot ops with PF_FAULT_END bits (end_with) */
    struct eddy_op timer;  /* internal: fires when the first one is due */
};

/* ---- the generator ---------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- parsing ---------------------------------------------------------- */

/* A decimal u64 of exactly [p, end); false if not one. */
static bool parse_u64(const char *p, const char *end, uint64_t *out)
{
    uint64_t v = 0;
    if (p == end)
        return false;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return false;
        if (v > UINT64_MAX / 10 || v * 10 > UINT64_MAX - (uint64_t)(*p - '0'))
            return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *out = v;
    return true;
}

/* "2", "0.5", "100": a percentage to parts per 10^9 (9 decimals at most). */
static bool parse_percent(const char *p, const char *end, uint32_t *ppb)
{
    const char *dot = memchr(p, '.', (size_t)(end - p));
    uint64_t whole = 0, frac = 0;
    if (!parse_u64(p, dot ? dot : end, &whole))
        return false;
    if (dot) {
        const char *f = dot + 1;
        if (f == end || end - f > 7)
            return false; /* a percent has 7 decimals of 10^-9 */
        if (!parse_u64(f, end, &frac))
            return false;
        for (long i = end - f; i < 7; i++)
            frac *= 10;
    }
    if (whole > 100 || (whole == 100 && frac))
        return false;
    uint64_t v = whole * 10000000 + frac;
    if (v == 0)
        return false;
    *ppb = (uint32_t)v;
    return true;
}

static int errno_by_name(const char *p, size_t n)
{
    for (size_t i = 0; i < sizeof errno_names / sizeof errno_names[0]; i++)
        if (strlen(errno_names[i].name) == n && !strncmp(p, errno_names[i].name, n))
            return errno_names[i].err;
    return 0;
}

/* Trims spaces around [*p, *end). */
static void trim(const char **p, const char **end)
{
    while (*p < *end && (**p == ' ' || **p == '\t'))
        (*p)++;
    while (*end > *p && ((*end)[-1] == ' ' || (*end)[-1] == '\t'))
        (*end)--;
}

/* One rule "KIND[,KIND]=EFFECT@TRIGGER[xM]"; NULL or the reason it is bad. */
static const char *parse_rule(const char *p, const char *end, struct fault_rule *r)
{
    memset(r, 0, sizeof r[0]);
    size_t len = (size_t)(end - p);
    snprintf(r->text, sizeof r->text, "%.*s", (int)(len < 63 ? len : 63), p);
    const char *eq = memchr(p, '=', len);
    if (!eq)
        return "no '=' (KIND=EFFECT@TRIGGER)";
    /* kinds */
    for (const char *k = p; k < eq;) {
        const char *ke = memchr(k, ',', (size_t)(eq - k));
        if (!ke)
            ke = eq;
        const char *ks = k, *kend = ke;
        trim(&ks, &kend);
        bool found = false;
        for (size_t i = 0; i < sizeof kind_names / sizeof kind_names[0]; i++)
            if (strlen(kind_names[i].name) == (size_t)(kend - ks) &&
                !strncmp(ks, kind_names[i].name, (size_t)(kend - ks))) {
                r->kinds |= kind_names[i].mask;
                found = true;
            }
        if (!found)
            return "unknown kind";
        k = ke + 1;
    }
    const char *at = memchr(eq, '@', (size_t)(end - eq));
    if (!at)
        return "no '@' (EFFECT@TRIGGER)";
    /* effect */
    const char *e = eq + 1, *eend = at;
    trim(&e, &eend);
    uint64_t v;
    if (eend - e > 6 && !strncmp(e, "short:", 6)) {
        if (!parse_u64(e + 6, eend, &v) || v == 0 || v > UINT32_MAX)
            return "short:N needs N >= 1";
        if (!(r->kinds & FK_SHORTABLE))
            return "short:N applies to recv, send, read and write kinds only";
        r->effect = EF_SHORT;
        r->n = (uint32_t)v;
    } else if (eend - e > 6 && !strncmp(e, "delay:", 6)) {
        if (!parse_u64(e + 6, eend, &v) || v == 0 || v > 3600000)
            return "delay:N needs 1 <= N <= 3600000 (ms)";
        r->effect = EF_DELAY;
        r->n = (uint32_t)v;
    } else if (eend - e > 5 && !strncmp(e, "fail:", 5)) {
        if (!strncmp(e + 5, "EAGAIN", (size_t)(eend - e - 5)) && eend - e - 5 == 6)
            r->err = EAGAIN;
        else if (!strncmp(e + 5, "ENOMEM", (size_t)(eend - e - 5)) && eend - e - 5 == 6)
            r->err = ENOMEM;
        else
            return "fail: takes EAGAIN or ENOMEM";
        r->effect = EF_FAIL;
    } else {
        r->err = errno_by_name(e, (size_t)(eend - e));
        if (!r->err)
            return "unknown effect (an errno name, short:N, delay:N or fail:E)";
        r->effect = EF_ERRNO;
    }
    /* trigger */
    const char *t = at + 1, *tend = end;
    trim(&t, &tend);
    const char *x = memchr(t, 'x', (size_t)(tend - t));
    if (x) {
        if (!parse_u64(x + 1, tend, &r->cap) || r->cap == 0)
            return "xM needs M >= 1";
        tend = x;
    }
    if (tend - t > 4 && !strncmp(t, "nth:", 4)) {
        if (!parse_u64(t + 4, tend, &r->nth) || r->nth == 0)
            return "nth:K needs K >= 1";
    } else if (tend > t && tend[-1] == '%') {
        if (!parse_percent(t, tend - 1, &r->ppb))
            return "P% needs 0 < P <= 100";
    } else {
        return "unknown trigger (P% or nth:K)";
    }
    return NULL;
}

/* Parses spec into set (zeroed); 0, or -EINVAL with the warning logged. */
static int parse_spec(struct eddy_loop *loop, const char *src, const char *spec,
                      struct fault_set *set)
{
    bool have_seed = false;
    for (const char *p = spec; *p;) {
        const char *end = strchr(p, ';');
        if (!end)
            end = p + strlen(p);
        const char *s = p, *e = end;
        trim(&s, &e);
        p = *end ? end + 1 : end;
        if (s == e)
            continue;
        if (e - s > 5 && !strncmp(s, "seed=", 5)) {
            if (!parse_u64(s + 5, e, &set->seed)) {
                eddy_loop_log(loop, EDDY_LOG_WARN,
                              "%s: bad part \"%.*s\": seed=N needs a decimal number; "
                              "no faults injected", src, (int)(e - s), s);
                return -EINVAL;
            }
            have_seed = true;
            continue;
        }
        if (set->nrules == MAX_RULES) {
            eddy_loop_log(loop, EDDY_LOG_WARN,
                          "%s: bad part \"%.*s\": more than %d rules; no faults injected",
                          src, (int)(e - s), s, MAX_RULES);
            return -EINVAL;
        }
        const char *why = parse_rule(s, e, &set->rule[set->nrules]);
        if (why) {
            eddy_loop_log(loop, EDDY_LOG_WARN,
                          "%s: bad part \"%.*s\": %s; no faults injected", src,
                          (int)(e - s), s, why);
            return -EINVAL;
        }
        set->nrules++;
    }
    if (!have_seed)
        set->seed = (uint64_t)mono_ns() ^ ((uint64_t)getpid() << 32);
    set->rng = set->seed;
    return 0;
}

static int fault_set_from(struct eddy_loop *loop, const char *src, const char *spec)
{
    struct fault_set *old = loop->faults;
    /* Held finals and ends on their way need this set to finish. */
    if (old && (old->delayed.head || old->timer.state != ST_IDLE || old->ending))
        return -EBUSY;
    struct fault_set *set = NULL;
    int rc = 0;
    if (spec && *spec) {
        set = loop_alloc(loop, sizeof *set);
        if (!set)
            return -ENOMEM;
        memset(set, 0, sizeof *set);
        rc = parse_spec(loop, src, spec, set);
        if (rc < 0 || set->nrules == 0) {
            loop_free(loop, set);
            set = NULL;
        }
    }
    /* Never half a set: a bad spec leaves none. */
    loop->faults = set;
    loop_free(loop, old);
    if (set) {
        char line[400];
        int n = snprintf(line, sizeof line, "seed=%" PRIu64, set->seed);
        for (unsigned i = 0; i < set->nrules && n > 0 && (size_t)n < sizeof line; i++)
            n += snprintf(line + n, sizeof line - (size_t)n, ";%s", set->rule[i].text);
        eddy_loop_log(loop, EDDY_LOG_INFO, "faults on: EDDY_FAULTS=\"%s\" replays this run",
                      line);
    }
    return rc;
}

int eddy_fault_set(struct eddy_loop *loop, const char *spec)
{
    return fault_set_from(loop, "eddy_fault_set", spec);
}

void fault_env(struct eddy_loop *loop, const char *spec)
{
    if (fault_set_from(loop, "EDDY_FAULTS", spec) == -ENOMEM)
        eddy_loop_log(loop, EDDY_LOG_WARN, "EDDY_FAULTS: out of memory; no faults injected");
}

void fault_free(struct eddy_loop *loop)
{
    loop_free(loop, loop->faults);
    loop->faults = NULL;
}

uint64_t eddy_fault_seed(const struct eddy_loop *loop)
{
    return loop->faults ? loop->faults->seed : 0;
}

unsigned eddy_fault_stats(const struct eddy_loop *loop, struct eddy_fault_stat *out,
                          unsigned n)
{
    const struct fault_set *set = loop->faults;
    if (!set)
        return 0;
    for (unsigned i = 0; i < n && i < set->nrules; i++) {
        memcpy(out[i].rule, set->rule[i].text, sizeof out[i].rule);
        out[i].events = set->rule[i].events;
        out[i].injected = set->rule[i].injected;
    }
    return set->nrules;
}

/* ---- matching --------------------------------------------------------- */

/* The fault kind of an op (0: never faulted: posts, signals, internals). */
static unsigned op_fkind(const struct eddy_op *op, int kind)
{
    switch (kind) {
    case K_ACCEPT: return FK_ACCEPT;
    case K_CONNECT: return FK_CONNECT;
    case K_RECV: return FK_RECV;
    case K_RECV_MULTI: return op->pflags & PF_ONCE ? FK_RECV_ONCE : FK_RECV_MULTI;
    case K_SEND: return op->pflags & PF_ZC ? FK_SEND_ZC : FK_SEND;
    case K_SENDMSG: return FK_SENDMSG;
    case K_READ: return FK_READ;
    case K_WRITE: return FK_WRITE;
    case K_CLOSE: return FK_CLOSE;
    case K_SHUTDOWN: return FK_SHUTDOWN;
    case K_TIMER: return FK_TIMER;
    case K_POLL: return FK_POLL;
    case K_WORK: return FK_WORK;
    default: return 0;
    }
}

static const char *fkind_name(unsigned fk)
{
    if (fk == FK_RECV)
        return "recv"; /* the family's name is eddy_recv's too */
    if (fk == FK_SEND)
        return "send";
    for (size_t i = 0; i < sizeof kind_names / sizeof kind_names[0]; i++)
        if (kind_names[i].mask == fk)
            return kind_names[i].name;
    return "?";
}

/* One event at a site: the first rule (of kind fk and effect ef) that
 * fires, or NULL.  Every rule the event matches counts it (and draws, for
 * P%), so a rule's nth:K and draws do not depend on the rules before it. */
static struct fault_rule *pick(struct fault_set *set, unsigned fk, int ef, uint32_t len)
{
    struct fault_rule *hit = NULL;
    for (unsigned i = 0; i < set->nrules; i++) {
        struct fault_rule *r = &set->rule[i];
        if (!(r->kinds & fk) || r->effect != ef)
            continue;
        if (ef == EF_SHORT && len <= r->n)
            continue; /* nothing to shorten: not an event */
        r->events++;
        bool fire;
        if (r->nth)
            fire = r->events == r->nth;
        else
            fire = splitmix64(&set->rng) % 1000000000u < r->ppb;
        if (fire && r->cap && r->injected >= r->cap)
            fire = false;
        if (fire && !hit) {
            r->injected++;
            hit = r;
        }
    }
    return hit;
}

static void log_injection(struct eddy_loop *loop, struct fault_rule *r, unsigned fk,
                          const struct eddy_op *op, const char *site)
{
    struct fault_set *set = loop->faults;
    eddy_loop_log(loop, EDDY_LOG_INFO,
                  "fault: seed=%" PRIu64 " rule=%u \"%s\" kind=%s label=%s at=%s n=%" PRIu64,
                  set->seed, (unsigned)(r - set->rule) + 1, r->text, fkind_name(fk),
                  op->label ? op->label : "-", site, r->injected);
}

/* ---- the sites -------------------------------------------------------- */

static int start_verdict(struct eddy_loop *loop, struct eddy_op *op, int kind)
{
    unsigned fk = op_fkind(op, kind);
    /* pflags are not set yet: a recv_once counts as recv_multi here, a
     * send_zc as send. */
    if (kind == K_RECV_MULTI)
        fk = FK_RECV_MULTI | FK_RECV_ONCE;
    else if (kind == K_SEND)
        fk = FK_SEND | FK_SEND_ZC;
    if (!fk)
        return 0;
    struct fault_rule *r = pick(loop->faults, fk, EF_FAIL, 0);
    if (!r)
        return 0;
    log_injection(loop, r, op_fkind(op, kind), op, "start");
    return -r->err;
}

int fault_start(struct eddy_loop *loop, struct eddy_op *op, int kind, eddy_cb cb)
{
    return op_start_tail(loop, op, kind, cb, start_verdict(loop, op, kind));
}

bool fault_arm(struct eddy_loop *loop, struct eddy_op *op)
{
    if (op->pflags & PF_INTERNAL)
        return false;
    unsigned fk = op_fkind(op, op->kind);
    struct fault_rule *r;
    if (fk & (FK_RECV | FK_READ | FK_WRITE)) {
        uint32_t *len = op->kind == K_RECV ? (uint32_t *)NULL : &op->u.rw.len;
        size_t cur = len ? *len : op->u.recv.len;
        uint32_t l32 = cur > UINT32_MAX ? UINT32_MAX : (uint32_t)cur;
        if ((r = pick(loop->faults, fk, EF_SHORT, l32))) {
            if (len)
                *len = r->n;
            else
                op->u.recv.len = r->n;
            log_injection(loop, r, fk, op, "arm");
        }
    }
    /* An error before the kernel reads anything: no byte is hidden. */
    if (fk & (FK_RECV | FK_READ | FK_RECV_ONCE)) {
        if ((r = pick(loop->faults, fk, EF_ERRNO, 0))) {
            log_injection(loop, r, fk, op, "arm");
            op_defer_final(loop, op, -r->err);
            return true;
        }
    }
    return false;
}

unsigned fault_clamp(struct eddy_loop *loop, struct eddy_op *op, unsigned len)
{
    unsigned fk = op_fkind(op, op->kind);
    struct fault_rule *r = pick(loop->faults, fk, EF_SHORT, len);
    if (!r)
        return len;
    log_injection(loop, r, fk, op, "prep");
    return r->n;
}

size_t fault_sendmsg_cut(struct eddy_loop *loop, struct eddy_op *op, const void **buf)
{
    const struct msghdr *m = op->u.sendmsg.msg;
    const struct iovec *first = NULL;
    size_t total = 0;
    for (size_t i = 0; i < (size_t)m->msg_iovlen; i++) {
        if (!first && m->msg_iov[i].iov_len)
            first = &m->msg_iov[i];
        total += m->msg_iov[i].iov_len;
    }
    if (!first)
        return 0;
    unsigned len = total > UINT_MAX ? UINT_MAX : (unsigned)total;
    unsigned n = fault_clamp(loop, op, len);
    if (n >= len)
        return 0;
    *buf = first->iov_base;
    return n < first->iov_len ? n : first->iov_len;
}

/* Ends a multishot op with err: its cancel goes to the kernel, and its
 * final callback (-ECANCELED) carries err instead (fault_final). */
static void end_with(struct eddy_loop *loop, struct eddy_op *op, int err)
{
    if (eddy_cancel(loop, op) == 0 && err < 256) {
        op->pflags |= (uint32_t)err << PF_FAULT_END_SHIFT;
        loop->faults->ending++;
    }
}

/* eddy_cancel() of an op a fault is ending: the cancel is the caller's now,
 * and its final callback says -ECANCELED. */
int fault_cancel(struct eddy_loop *loop, struct eddy_op *op)
{
    op->pflags &= ~(uint32_t)PF_FAULT_END_MASK;
    loop->faults->ending--;
    return 0;
}

int fault_deliver(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    if ((op->pflags & (PF_INTERNAL | PF_CANCEL)) || op->state == ST_PENDING)
        return res; /* ending already */
    unsigned fk = op_fkind(op, op->kind);
    if (!(fk & (FK_ACCEPT | FK_RECV_MULTI | FK_TIMER)))
        return res;
    if (fk == FK_ACCEPT && res < 0)
        return res; /* already an error */
    struct fault_rule *r = pick(loop->faults, fk, EF_ERRNO, 0);
    if (!r)
        return res;
    log_injection(loop, r, fk, op, "deliver");
    if (fk == FK_ACCEPT) {
        close(res); /* the connection the caller never hears of */
        if (accept_exhausted(-r->err))
            return -r->err; /* as the kernel's: EDDY_OP_MORE, accepting goes on */
        if (!accept_transient(-r->err))
            end_with(loop, op, r->err); /* a fatal error ends it */
        return FAULT_HELD; /* a transient one is retried quietly, as the kernel's */
    }
    end_with(loop, op, r->err); /* this delivery (its buffer, its tick) goes through */
    return res;
}

static void delay_fire(struct eddy_op *t, int res);

static void delay_arm(struct eddy_loop *loop, struct fault_set *set, int64_t due)
{
    struct eddy_op *t = &set->timer;
    if (t->state != ST_IDLE)
        return; /* it fires at an earlier due; delay_fire re-arms for the rest */
    op_begin(loop, t, K_TIMER, delay_fire);
    loop->active--;
    t->pflags = PF_INTERNAL;
    t->label = "eddy fault delay";
    t->data = loop;
    t->deadline_ns = 0;
    t->u.timer.next_ns = due;
    t->u.timer.interval_ns = 0;
    op_arm(loop, t);
}

static void delay_fire(struct eddy_op *t, int res)
{
    (void)res;
    struct eddy_loop *loop = t->data;
    struct fault_set *set = loop->faults;
    int64_t now = eddy_update_time(loop);
    struct oplist due = {0};
    int64_t next = 0;
    for (struct eddy_op *op = set->delayed.head, *n; op; op = n) {
        n = op->next;
        int64_t at = op->ts.tv_sec;
        if (at <= now) {
            oplist_remove(&set->delayed, op);
            oplist_push(&due, op);
        } else if (!next || at < next) {
            next = at;
        }
    }
    if (next)
        delay_arm(loop, set, next);
    struct eddy_op *op;
    while ((op = oplist_pop(&due))) {
        op->pflags |= PF_FAULT_SKIP;
        if (op->flags & EDDY_OP_BUFFER)
            op_finish_buffer(loop, op, op->res, op->bid);
        else
            op_finish(loop, op, op->res);
    }
}

int fault_final(struct eddy_loop *loop, struct eddy_op *op, int res)
{
    if (op->pflags & PF_FAULT_SKIP) {
        op->pflags &= ~(uint32_t)PF_FAULT_SKIP;
        return res;
    }
    if (op->pflags & PF_INTERNAL)
        return res;
    if (op->pflags & PF_FAULT_END_MASK) {
        /* A multishot op a fault ended: the errno instead of -ECANCELED
         * (or of whatever its last completion said). */
        res = -(int)((op->pflags & PF_FAULT_END_MASK) >> PF_FAULT_END_SHIFT);
        op->pflags &= ~(uint32_t)(PF_FAULT_END_MASK | PF_CANCEL);
        loop->faults->ending--;
        return res;
    }
    if ((op->pflags & PF_CANCEL) || res == -ECANCELED)
        return res; /* cancel and deadlines keep their results */
    unsigned fk = op_fkind(op, op->kind);
    if (!fk)
        return res;
    struct fault_set *set = loop->faults;
    struct fault_rule *r;
    /* recv, read and recv_once get their errors at arm (no byte hidden). */
    if (!(fk & (FK_RECV | FK_READ | FK_RECV_ONCE)) && (r = pick(set, fk, EF_ERRNO, 0))) {
        log_injection(loop, r, fk, op, "final");
        res = -r->err;
    }
    if ((r = pick(set, fk, EF_DELAY, 0))) {
        log_injection(loop, r, fk, op, "final");
        int64_t due = eddy_update_time(loop) + (int64_t)r->n * 1000000;
        op->res = res;
        op->ts.tv_sec = due; /* the op's timespec is free: the kernel is done */
        op->state = ST_DELAYED;
        oplist_push(&set->delayed, op);
        delay_arm(loop, set, due);
        return FAULT_HELD;
    }
    return res;
}
