/* ember_guest.h - what a microVM guest has beyond ember.h and the libc
 * subset: entropy from the host. Include only in code built for the guest. */
#ifndef EMBER_GUEST_H
#define EMBER_GUEST_H
#include <stddef.h>
/** Fill @buf with @len bytes from the host's getrandom(). 0 or -1. */
int getentropy(void *buf, size_t len);
/** Log @len bytes as one line of @stream (1 stdout, 2 stderr), unbuffered. */
void ember_guest_log(int stream, const char *line, size_t len);
#endif
