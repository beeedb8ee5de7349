/*
 * Intrusive doubly linked lists for structs that carry their own typed
 * next/prev pointers (struct eddy_op's are public, so the links cannot be a
 * list_head of ours).  LIST_DEFINE(name, type, next, prev) declares
 * struct name { type *head, *tail; } and static inline name_push (at the
 * tail), name_remove, name_pop (from the head) and name_empty.
 *
 * An element off every list has next == prev == NULL: remove and pop leave
 * it so, and push asserts it (a double insertion is a bug).  All O(1); no
 * allocation.  Standard headers only, so any layer may use it.
 */
#ifndef EDDY_LIST_H
#define EDDY_LIST_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>

#define LIST_DEFINE(name, type, next, prev)                                    \
    struct name {                                                              \
        type *head, *tail;                                                     \
    };                                                                         \
                                                                               \
    static inline bool name##_empty(const struct name *l)                      \
    {                                                                          \
        return l->head == NULL;                                                \
    }                                                                          \
                                                                               \
    static inline void name##_push(struct name *l, type *x)                    \
    {                                                                          \
        assert(!x->next && !x->prev && l->head != x);                          \
        x->next = NULL;                                                        \
        x->prev = l->tail;                                                     \
        if (l->tail)                                                           \
            l->tail->next = x;                                                 \
        else                                                                   \
            l->head = x;                                                       \
        l->tail = x;                                                           \
    }                                                                          \
                                                                               \
    static inline void name##_remove(struct name *l, type *x)                  \
    {                                                                          \
        if (x->prev)                                                           \
            x->prev->next = x->next;                                           \
        else                                                                   \
            l->head = x->next;                                                 \
        if (x->next)                                                           \
            x->next->prev = x->prev;                                           \
        else                                                                   \
            l->tail = x->prev;                                                 \
        x->next = x->prev = NULL;                                              \
    }                                                                          \
                                                                               \
    static inline type *name##_pop(struct name *l)                             \
    {                                                                          \
        type *x = l->head;                                                     \
        if (x)                                                                 \
            name##_remove(l, x);                                               \
        return x;                                                              \
    }

#endif
