/* list.h - intrusive circular doubly-linked list (the kernel's and libuv's
 * queue idiom): embed a struct list in the element, recover the element with
 * list_entry. */
#ifndef EMBER_COMMON_LIST_H
#define EMBER_COMMON_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list {
    struct list *prev, *next;
};

static inline void list_init(struct list *h)
{
    h->prev = h->next = h;
}

static inline bool list_empty(const struct list *h)
{
    return h->next == h;
}

/** Is @n linked into some list? (Unlinked nodes are self-pointing.) */
static inline bool list_linked(const struct list *n)
{
    return n->next != n && n->next != NULL;
}

static inline void list_insert_tail(struct list *h, struct list *n)
{
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}

static inline void list_insert_head(struct list *h, struct list *n)
{
    n->next = h->next;
    n->prev = h;
    h->next->prev = n;
    h->next = n;
}

/** Unlink @n and leave it self-pointing (safe to call twice). */
static inline void list_remove(struct list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

#define list_entry(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define list_foreach_safe(pos, tmp, head)                                                          \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->next)

#endif
