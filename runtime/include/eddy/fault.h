/*
 * eddy — fault injection, for testing what runs on a loop.
 *
 * A loop can inject faults into its own operations: an error where the
 * kernel would have given a result, a short transfer, the end of a
 * multishot operation, a late completion, a starter that fails.  Faults
 * are data: a short text of rules and a seed, so a failing run replays
 * from the line it printed.  Off by default; when off, the loop pays one
 * predictable branch at each choke point.
 *
 * Every injected fault keeps the contract of eddy.h: a starter that fails
 * calls no callback; a started op gets exactly one final callback; every
 * non-final callback has EDDY_OP_MORE; buffers are delivered or returned;
 * eddy_cancel() still ends an op with -ECANCELED or its real result; no
 * byte is lost or invented (a short receive asks the kernel for fewer
 * bytes; a short send re-submits the rest, so the caller still sees every
 * byte or an error); an op never completes while the kernel still holds it.
 *
 * The rules, as text (the EDDY_FAULTS environment variable, read at
 * eddy_loop_init() unless opts->ignore_env, or eddy_fault_set()):
 *
 *     seed=N;KIND[,KIND...]=EFFECT@TRIGGER[;...]
 *
 *   KIND     accept connect recv recv_multi recv_once send sendmsg send_zc
 *            read write close shutdown timer poll work, or all.  "recv" is
 *            every receive kind (recv, recv_multi, recv_once), "send" every
 *            send kind (send, send_zc, sendmsg).
 *   EFFECT   an errno name (ECONNRESET, EPIPE, ENOBUFS, EMFILE ...): the
 *              result becomes -errno (on a multishot op: it ends with it);
 *            short:N   at most N bytes per transfer (recv, send, read, write
 *              kinds);
 *            delay:N   the final callback comes N ms late (at least);
 *            fail:EAGAIN or fail:ENOMEM   the starter returns it (no
 *              callback).
 *   TRIGGER  P%    each matching event with probability P (0.5% allowed),
 *              drawn from a generator seeded with N;
 *            nth:K exactly the Kth matching event;
 *            either followed by xM: at most M injections in all.
 *
 * Example: seed=7;recv=ECONNRESET@2%x100;send=short:1@10%;accept=EMFILE@nth:3
 *
 * Without seed= a seed is chosen and logged.  Every injection is logged
 * through the loop's log hook (EDDY_LOG_INFO) as one line with the seed,
 * the rule, the op kind and the op's label.  Two runs with the same seed
 * and the same sequence of completions inject the same faults.
 * docs/testing-with-faults.md says what each effect does where.
 */
#ifndef EDDY_FAULT_H
#define EDDY_FAULT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct eddy_loop;

/*
 * Replaces the loop's fault rules with spec (NULL or "" turns faults off).
 * Returns 0; -EINVAL for a malformed spec (a warning naming the bad part
 * goes to the log hook, and the loop is left with no faults at all, never
 * a part of the set); -ENOMEM; -EBUSY while a delayed completion is held or
 * a multishot op a fault ended has not had its final callback yet (the
 * rules stay as they were: run the loop, then try again).  Loop thread
 * only.
 */
int eddy_fault_set(struct eddy_loop *loop, const char *spec);

/* The seed in use (0 when faults are off). */
uint64_t eddy_fault_seed(const struct eddy_loop *loop);

/* Counters of one rule. */
struct eddy_fault_stat {
    char rule[64];      /* the rule as written ("recv=ECONNRESET@2%x100") */
    uint64_t events;    /* events the rule could apply to (matching kind and site) */
    uint64_t injected;  /* faults it injected */
};

/*
 * Fills out[0..n) with the counters of the first n rules, in the order of
 * the spec; returns the number of rules (0 when faults are off).
 */
unsigned eddy_fault_stats(const struct eddy_loop *loop, struct eddy_fault_stat *out,
                          unsigned n);

#ifdef __cplusplus
}
#endif

#endif /* EDDY_FAULT_H */
