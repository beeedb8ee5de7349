/*
 * Name resolution for the asynchronous client (client.h, struct resolver):
 * getaddrinfo() on up to RESOLVER_THREADS threads of the client's own, the
 * result posted back to the loop (eddy_post_threadsafe) and handed to
 * client.c there (origin_resolved).  While a name is out, the client holds
 * a reference on the loop so it keeps running.
 */
#define _GNU_SOURCE
#include "client.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>

int resolver_init(struct resolver *rs)
{
    int rc = pthread_mutex_init(&rs->mu, NULL);
    if (rc != 0)
        return -rc;
    rc = pthread_cond_init(&rs->cv, NULL);
    if (rc != 0) {
        pthread_mutex_destroy(&rs->mu);
        return -rc;
    }
    return 0;
}

void resolver_destroy(struct resolver *rs)
{
    /* Every resolution has been posted back: the threads are idle, or about
     * to be.  Joining them cannot wait for a name. */
    pthread_mutex_lock(&rs->mu);
    rs->stop = 1;
    pthread_cond_broadcast(&rs->cv);
    pthread_mutex_unlock(&rs->mu);
    for (unsigned i = 0; i < rs->nthreads; i++)
        pthread_join(rs->th[i], NULL);
    pthread_cond_destroy(&rs->cv);
    pthread_mutex_destroy(&rs->mu);
}

/* Runs on a resolver thread: touches only o->host, o->port and o->addrs,
 * which the loop thread leaves alone while the resolution is busy. */
static int resolve(struct origin *o)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(o->host, NULL, &hints, &res);
    if (rc != 0)
        return gai_to_errno(rc);
    int n = 0;
    for (struct addrinfo *ai = res; ai && n < MAX_ADDRS; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        memcpy(&o->addrs[n], ai->ai_addr, ai->ai_addrlen);
        o->addrlens[n] = ai->ai_addrlen;
        if (ai->ai_family == AF_INET)
            ((struct sockaddr_in *)&o->addrs[n])->sin_port = htons(o->port);
        else
            ((struct sockaddr_in6 *)&o->addrs[n])->sin6_port = htons(o->port);
        n++;
    }
    freeaddrinfo(res);
    o->naddrs = n;
    return n ? 0 : -ENOENT;
}

/* On the loop thread: the resolution's end, posted by resolver_main. */
static void on_resolved(struct eddy_op *op, int posted)
{
    struct origin *o = eddy_container_of(op, struct origin, resolved);
    struct eddy_http_client *cli = o->cli;
    (void)posted;
    cli->nresolving--;
    cli->st.resolutions++;
    eddy_loop_unref(cli->loop);
    origin_resolved(o, o->rres);
}

static void *resolver_main(void *arg)
{
    struct eddy_http_client *cli = arg;
    struct resolver *rs = &cli->rs;
    pthread_mutex_lock(&rs->mu);
    for (;;) {
        struct origin *o = resolve_queue_pop(&rs->q);
        if (!o) {
            if (rs->stop)
                break;
            rs->nidle++;
            pthread_cond_wait(&rs->cv, &rs->mu);
            rs->nidle--;
            continue;
        }
        o->rqueued = 0;
        rs->nwait--;
        pthread_mutex_unlock(&rs->mu);
        o->rres = resolve(o);
        /* o is the loop's again from here.  The client outlives this: its
         * destroy waits for every result and then joins us. */
        eddy_post_threadsafe(cli->loop, &o->resolved, on_resolved);
        pthread_mutex_lock(&rs->mu);
    }
    pthread_mutex_unlock(&rs->mu);
    return NULL;
}

/* Queues o for resolution, starting a thread when none is idle and the cap
 * allows.  0, or -errno of pthread_create when no thread exists at all. */
int resolve_start(struct origin *o)
{
    struct eddy_http_client *cli = o->cli;
    struct resolver *rs = &cli->rs;
    int rc = 0;
    pthread_mutex_lock(&rs->mu);
    if (rs->nwait >= rs->nidle && rs->nthreads < RESOLVER_THREADS) {
        /* Every signal blocked in the thread, as in the worker pool: a
         * process that takes its signals through eddy_signal() (a
         * signalfd) must not have them delivered to a thread of ours. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        rc = pthread_create(&rs->th[rs->nthreads], NULL, resolver_main, cli);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc == 0)
            rs->nthreads++;
        else if (rs->nthreads > 0)
            rc = 0; /* a running thread gets to it */
    }
    if (rc == 0) {
        resolve_queue_push(&rs->q, o);
        o->rqueued = 1;
        rs->nwait++;
        pthread_cond_signal(&rs->cv);
    }
    pthread_mutex_unlock(&rs->mu);
    if (rc != 0)
        return -rc;
    cli->nresolving++;
    eddy_loop_ref(cli->loop); /* the result comes as a post: keep the loop running */
    return 0;
}

/* Nobody wants o's name any more: takes its resolution out of the
 * resolver's queue if no thread has picked it yet, and ends it here, so
 * close and destroy wait only for the names a thread is resolving.  A
 * running resolution cannot be stopped; its result comes as usual.  The
 * caller frees o (origin_maybe_free) if it is unused. */
void resolve_drop(struct origin *o)
{
    struct eddy_http_client *cli = o->cli;
    struct resolver *rs = &cli->rs;
    if (o->resolve != RS_BUSY)
        return;
    pthread_mutex_lock(&rs->mu);
    int queued = o->rqueued;
    if (queued) {
        resolve_queue_remove(&rs->q, o);
        o->rqueued = 0;
        rs->nwait--;
    }
    pthread_mutex_unlock(&rs->mu);
    if (!queued)
        return;
    cli->nresolving--;
    eddy_loop_unref(cli->loop);
    o->resolve = RS_NONE; /* a later fetch queues the name again */
}
