/* ember_guest_abi.h - the contract between ember-vmm and a microVM guest image.
 *
 * A guest image is a static ELF64 x86-64 executable (ET_EXEC) linked at
 * EMBER_GUEST_IMAGE_BASE with the runtime in functions/sdk/guest/. It runs
 * with no kernel, at CPL 3 with IOPL 3, on identity-mapped memory. It talks
 * to the monitor with one `in` instruction per hypercall: the port names the
 * call, arguments travel in rdi, rsi, rdx; the 32-bit result comes back in
 * eax. Payloads never travel through port I/O: the guest passes guest
 * addresses and the monitor reads and writes guest memory directly, after
 * checking every address and length against the guest's memory.
 *
 * Guest memory (guest physical == guest virtual):
 *
 *   0x000000  page 0: not mapped (NULL dereference -> fault -> crash)
 *   0x001000  GDT + TSS                      supervisor only
 *   0x010000  page tables (up to 32 pages)   supervisor only
 *   0x030000  struct ember_boot (one page)   user read/write
 *   0x040000  environment block              user read/write
 *   0x200000  stack guard page: not mapped
 *   0x201000  stack, grows down from 0x400000
 *   0x400000  the ELF image, then the heap
 *   req_base  request area (top of memory, written by the monitor)
 *
 * Everything in this header is fixed for EMBER_GUEST_ABI_VERSION; the image
 * says which version it speaks in its ".note.ember" note.
 */
#ifndef EMBER_GUEST_ABI_H
#define EMBER_GUEST_ABI_H

#include <stdint.h>

#define EMBER_GUEST_ABI_VERSION 1

/* The ELF note every guest image carries: owner "ember", this type, and a
 * descriptor of one u32: the ABI version. */
#define EMBER_NOTE_OWNER "ember"
#define EMBER_NOTE_TYPE 0x454d4252u /* "EMBR" */

/* Layout. */
#define EMBER_GUEST_GDT 0x1000ull
#define EMBER_GUEST_PT_BASE 0x10000ull
#define EMBER_GUEST_PT_PAGES 32
#define EMBER_GUEST_BOOT 0x30000ull
#define EMBER_GUEST_ENV 0x40000ull
#define EMBER_GUEST_ENV_MAX (0x200000ull - 0x40000ull)
#define EMBER_GUEST_STACK_GUARD 0x200000ull
#define EMBER_GUEST_STACK_TOP 0x400000ull
#define EMBER_GUEST_IMAGE_BASE 0x400000ull
#define EMBER_GUEST_REQ_MAX (8ull << 20) /* request area: min(this, memory / 4) */
#define EMBER_GUEST_HEAP_MIN (1ull << 20)

/* Hypercall ports. */
#define EMBER_HC_WAIT                                                                              \
    0xe0 /* ready for a request; returns 0 when one is in                                          \
            the request area (the snapshot point) */
#define EMBER_HC_RESPOND                                                                           \
    0xe1                     /* rdi = struct ember_guest_resp *; answers the                       \
                                call, returns 0 when the next request is in */
#define EMBER_HC_LOG 0xe2    /* rdi = stream (1, 2), rsi = bytes, rdx = len */
#define EMBER_HC_CLOCK 0xe3  /* rdi = EMBER_CLOCK_*, rsi = uint64_t *ns */
#define EMBER_HC_RANDOM 0xe4 /* rdi = buffer, rsi = len (<= EMBER_RANDOM_MAX) */
#define EMBER_HC_ABORT 0xe5  /* rdi = message, rsi = len; never returns */

#define EMBER_CLOCK_REALTIME 0
#define EMBER_CLOCK_MONOTONIC 1
#define EMBER_RANDOM_MAX 65536u
#define EMBER_LOG_MAX 4096u

#define EMBER_BOOT_MAGIC 0x31544f4f4252424dull /* "MBRBOOT1" */

/** A byte string in guest memory; a NUL follows the bytes when the monitor
 *  wrote it (not counted in len). */
struct ember_guest_str {
    uint64_t ptr;
    uint64_t len;
};

struct ember_guest_pair {
    struct ember_guest_str name, value;
};

/** At EMBER_GUEST_BOOT; written by the monitor before the first instruction
 *  (layout, env) and before every resume from a snapshot (seed). */
struct ember_boot {
    uint64_t magic;
    uint32_t abi_version;
    uint32_t n_env;
    uint64_t mem_size;
    uint64_t heap_start, heap_end; /* [start, end) */
    uint64_t req_base, req_cap;    /* the request area */
    uint64_t env, env_len;         /* "K=V\0K=V\0..." */
    /* Fresh random bytes, rewritten by the monitor on every restore and
     * reset; seed_gen changes each time so the guest knows to reseed. */
    uint64_t seed_gen;
    uint8_t seed[32];
};

/** At req_base when WAIT or RESPOND returns. Every pointer points inside the
 *  request area; every string is NUL-terminated. */
struct ember_guest_req {
    uint32_t id;
    uint32_t n_headers;
    struct ember_guest_str method, path, query, body;
    uint64_t headers; /* struct ember_guest_pair[n_headers] */
};

/* ember_guest_resp.flags */
#define EMBER_RESP_TOO_LARGE 1u  /* a write went over the body limit */
#define EMBER_RESP_BAD_STATUS 2u /* status outside 100..599 */

/** Built by the guest and passed to RESPOND. */
struct ember_guest_resp {
    int32_t status;
    int32_t handler_rc; /* ember_handle's return value */
    uint32_t flags;
    uint32_t n_headers;
    uint64_t headers; /* struct ember_guest_pair[n_headers] */
    struct ember_guest_str body;
};

#endif
