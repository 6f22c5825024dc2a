/* hypercall.h - the guest side of ember_guest_abi.h's port hypercalls
 * (internal to the guest runtime). */
#ifndef EMBER_GUEST_HYPERCALL_H
#define EMBER_GUEST_HYPERCALL_H

#include <stdint.h>

#include "ember_guest_abi.h"

/* One `in` on @port: the monitor reads rdi/rsi/rdx, does the call and puts
 * the result in eax. The memory clobber orders the guest's buffer writes
 * before the exit and makes it re-read what the monitor wrote. */
#define ember_hc(port, a0, a1, a2)                                                                 \
    ({                                                                                             \
        uint32_t _r;                                                                               \
        __asm__ volatile("inl %1, %0"                                                              \
                         : "=a"(_r)                                                                \
                         : "i"(port), "D"((uint64_t)(a0)), "S"((uint64_t)(a1)),                    \
                           "d"((uint64_t)(a2))                                                     \
                         : "memory");                                                              \
        _r;                                                                                        \
    })

__attribute__((noreturn)) void ember__guest_abort(const char *msg, uint64_t len);
void ember__guest_stdio_flush(void);
void ember__guest_heap_init(uint64_t start, uint64_t end);
void ember__guest_reseed(const struct ember_boot *boot);

#endif
