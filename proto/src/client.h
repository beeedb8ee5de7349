/*
 * client.h: what the two files of the asynchronous HTTP client share.
 *
 *   client.c   the client: init/close/destroy, origins and their
 *              keep-alive pools and FIFO queues, connections (connect,
 *              send, receive, idle, close), fetches (start, timeout,
 *              cancel, deliver), awaiting on a fiber.
 *   resolve.c  name resolution on the client's own threads: the queue of
 *              names, the threads, the result posted back to the loop.
 *
 * Calls between them: client.c asks resolve.c to resolve an origin's name
 * (resolve_start) or to forget it (resolve_drop); resolve.c hands the
 * result back on the loop thread with origin_resolved().
 *
 * Not part of the public API; nothing here is installed.
 */
#ifndef EDDY_PROTO_CLIENT_H
#define EDDY_PROTO_CLIENT_H

#include "client_codec.h"
#include "../../runtime/src/list.h" /* the repository's intrusive list (internal, not installed) */

#include <pthread.h>
#include <sys/socket.h>

enum { RS_NONE = 0, RS_BUSY, RS_OK }; /* struct origin's resolve */
#define MAX_ADDRS 4
#define RBUF_SIZE 16384
#define RESOLVER_THREADS 2

struct conn {
    struct conn *next, *prev;         /* the origin's idle list */
    struct origin *o;
    struct eddy_http_fetch *f;
    int fd;
    int state;
    int addr_idx;
    unsigned served;                  /* responses completed on it */
    size_t got;                       /* bytes of the current response */
    int64_t idle_since;
    struct eddy_op op;                /* connect, send, recv: one at a time */
    struct eddy_op close_op;
    struct msghdr msg;
    struct resp_parser rp;
    char rbuf[RBUF_SIZE];
};

/* The lists, each through links of its own (runtime/src/list.h): an
 * origin's idle connections, an origin's waiting fetches, the client's
 * active fetches; after struct origin, the client's origins and the names
 * waiting for a resolver thread. */
LIST_DEFINE(idle_list, struct conn, next, prev)
LIST_DEFINE(fetch_queue, struct eddy_http_fetch, p_.next, p_.prev)
LIST_DEFINE(fetch_list, struct eddy_http_fetch, p_.anext, p_.aprev)

struct origin {
    struct origin *next, *prev;
    struct eddy_http_client *cli;
    char host[256];
    uint16_t port;
    int resolve;                      /* RS_NONE, RS_BUSY, RS_OK */
    int naddrs;
    struct sockaddr_storage addrs[MAX_ADDRS];
    socklen_t addrlens[MAX_ADDRS];
    struct origin *rnext, *rprev;     /* the resolver's queue */
    int rqueued;                      /* in that queue, no thread yet (resolver's mutex) */
    int rres;                         /* the resolution's result */
    struct eddy_op resolved;          /* posts the result back to the loop */
    unsigned nconns;                  /* every connection, closing ones too */
    struct idle_list idle;            /* least recently used first */
    struct fetch_queue q;
};

LIST_DEFINE(origin_list, struct origin, next, prev)
LIST_DEFINE(resolve_queue, struct origin, rnext, rprev)

/*
 * Name resolution has threads of its own rather than the loop's worker
 * pool, whose threads users fill with blocking work of their own: a fetch
 * must not wait behind that.  Up to RESOLVER_THREADS threads, started when
 * a name is queued and no thread is idle, living until the client is
 * destroyed.  The mutex guards the queue (with each origin's rqueued), the
 * counts and stop.  An origin being resolved belongs to the resolver until
 * its result is posted back; one still waiting in the queue may be taken
 * out again by the loop thread (resolve_drop) when nobody wants it.
 */
struct resolver {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct resolve_queue q;
    unsigned nwait, nidle, nthreads;
    int stop;
    pthread_t th[RESOLVER_THREADS];
};

struct eddy_http_client {
    struct eddy_loop *loop;
    struct resolver rs;
    struct eddy_http_client_options o;
    struct origin_list origins;
    struct fetch_list active;
    unsigned nfetches, nconns, nidle, nqueued, nresolving, norigins;
    struct eddy_op idle_timer;
    struct eddy_op done_post;
    int closing, done_posted;
    unsigned in_cb;                   /* inside a fetch callback: no destroy */
    eddy_http_client_done_cb done;
    void *done_ud;
    struct eddy_http_client_stats st;
};

/* ---- resolve.c ---------------------------------------------------------- */

/* 0, or the -errno of pthread_mutex_init / pthread_cond_init. */
int resolver_init(struct resolver *rs);
/* Stops and joins the threads (every result has been posted back). */
void resolver_destroy(struct resolver *rs);
/* Queues o's name (o->resolve is RS_BUSY); 0, or -errno of pthread_create
 * when no thread exists at all.  The result comes to origin_resolved(). */
int resolve_start(struct origin *o);
/* Nobody wants o's name any more: drops it if no thread has picked it. */
void resolve_drop(struct origin *o);

/* ---- client.c ----------------------------------------------------------- */

/* On the loop thread: o's resolution ended with res (0: o->addrs filled). */
void origin_resolved(struct origin *o, int res);

#endif /* EDDY_PROTO_CLIENT_H */
