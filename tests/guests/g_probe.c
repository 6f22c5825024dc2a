/* g_probe - the test guest of tests/unit/test_vmm.c: one behaviour per
 * request path, from well-behaved to hostile.
 *
 *   /echo      body and X-Test header back         /count   a counter in memory
 *   /env       $GREETING                           /rand    rand() after reseed
 *   /log       two stdout lines, one stderr line   /sse     double arithmetic
 *   /clock     realtime and monotonic seconds      /malloc  heap churn
 *   /big       7 MiB body (too large)              /fail    ember_handle returns 1
 *   /hcbench   ns per hypercall (2000 clocks)      /dirty?N touch N heap pages
 *   /status    status 42                           /cli     cli (IOPL 3 allows it on
 *                                                           hardware; kvm_pvm faults it)
 *   hostile: /read_oob /write_oob /write_null /write_pt /exec_data /write_text
 *            /bad_respond
 *            /bad_log /hlt /cr3 /triple /outport /abort /loop /stack
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ember.h"

static int counter;
static char greeting[64] = "none";

int ember_init(void)
{
    const char *g = getenv("GREETING");
    if (g)
        snprintf(greeting, sizeof(greeting), "%s", g);
    printf("init done\n");
    return 0;
}

static int reply(ember_response *res, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int reply(ember_response *res, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return ember_response_write(res, buf, (size_t)n);
}

static int recurse(int n)
{
    volatile char pad[4096];
    pad[0] = (char)n;
    if (n > (1 << 30)) /* never: the 2 MiB stack ends first */
        return 0;
    return recurse(n + 1) + pad[0];
}

int ember_handle(const ember_request *req, ember_response *res)
{
    const char *p = ember_request_path(req);
    volatile uint64_t *bad;

    if (strcmp(p, "/echo") == 0) {
        size_t len;
        const void *body = ember_request_body(req, &len);
        const char *x = ember_request_header(req, "x-test");
        ember_response_header(res, "X-Echo", x ? x : "(none)");
        ember_response_header(res, "Content-Length", "999"); /* dropped */
        ember_response_status(res, 201);
        return ember_response_write(res, body, len);
    }
    if (strcmp(p, "/count") == 0)
        return reply(res, "%d", ++counter);
    if (strcmp(p, "/env") == 0)
        return reply(res, "%s", greeting);
    if (strcmp(p, "/rand") == 0)
        return reply(res, "%d %d", rand(), rand());
    if (strcmp(p, "/log") == 0) {
        printf("line one %d\n", 1);
        printf("line two\n");
        fprintf(stderr, "to stderr\n");
        return reply(res, "logged");
    }
    if (strcmp(p, "/sse") == 0) {
        volatile double x = 1.5;
        double acc = 0;
        for (int i = 1; i <= 100; i++)
            acc += x * i / 3.0;
        return reply(res, "%.3f", acc);
    }
    if (strcmp(p, "/clock") == 0) {
        struct timespec a, b;
        clock_gettime(CLOCK_REALTIME, &a);
        clock_gettime(CLOCK_MONOTONIC, &b);
        return reply(res, "%ld %ld", (long)a.tv_sec, (long)b.tv_sec);
    }
    if (strcmp(p, "/malloc") == 0) {
        void *ptrs[256];
        size_t total = 0;
        for (int round = 0; round < 20; round++) {
            for (int i = 0; i < 256; i++) {
                size_t n = (size_t)((i * 7919 + round * 31) % 5000) + 1;
                ptrs[i] = malloc(n);
                if (!ptrs[i])
                    return 1;
                memset(ptrs[i], i, n);
                total += n;
            }
            for (int i = 0; i < 256; i++)
                free(ptrs[i]);
        }
        char *s = strdup("grow");
        for (int i = 0; i < 10; i++) {
            s = realloc(s, 4096u << i);
            if (!s)
                return 1;
        }
        free(s);
        return reply(res, "%zu", total);
    }
    if (strcmp(p, "/big") == 0) {
        static char chunk[65536];
        for (int i = 0; i < 7 * 16; i++)
            if (ember_response_write(res, chunk, sizeof(chunk)) < 0)
                return 0; /* the runtime flags the response as too large */
        return 0;
    }
    if (strcmp(p, "/hcbench") == 0) {
        /* hypercall round trip, measured inside: n CLOCK calls */
        struct timespec a, b, t;
        int n = 2000;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (int i = 0; i < n; i++)
            clock_gettime(CLOCK_MONOTONIC, &t);
        clock_gettime(CLOCK_MONOTONIC, &b);
        long ns = (b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec);
        return reply(res, "%ld", ns / n);
    }
    if (strcmp(p, "/dirty") == 0) {
        /* touch the request's number of heap pages (query: pages) */
        int pages = atoi(ember_request_query(req));
        char *m = malloc((size_t)pages * 4096 + 1);
        if (!m)
            return 1;
        for (int i = 0; i < pages; i++)
            m[(size_t)i * 4096] = 1;
        free(m);
        return reply(res, "%d", pages);
    }
    if (strcmp(p, "/fail") == 0)
        return 1;
    if (strcmp(p, "/status") == 0) {
        ember_response_status(res, 42);
        return 0;
    }
    if (strcmp(p, "/cli") == 0) {
        __asm__ volatile("cli; sti");
        return reply(res, "cli ok");
    }

    /* ---- hostile ---- */
    if (strcmp(p, "/read_oob") == 0) {
        bad = (volatile uint64_t *)(1ull << 40);
        return reply(res, "%llu", (unsigned long long)*bad);
    }
    if (strcmp(p, "/write_oob") == 0) {
        bad = (volatile uint64_t *)(64ull << 30);
        *bad = 1;
        return 0;
    }
    if (strcmp(p, "/write_null") == 0) {
        static volatile uintptr_t null_addr = 0x8;
        bad = (volatile uint64_t *)null_addr;
        *bad = 1;
        return 0;
    }
    if (strcmp(p, "/write_pt") == 0) {
        bad = (volatile uint64_t *)0x10000; /* page tables: supervisor-only */
        *bad = 0;
        return 0;
    }
    if (strcmp(p, "/exec_data") == 0) {
        static const unsigned char ret_insn[] = {0xc3};
        void *heap = malloc(16);
        memcpy(heap, ret_insn, 1);
        ((void (*)(void))heap)(); /* heap is NX */
        return reply(res, "executed the heap");
    }
    if (strcmp(p, "/write_text") == 0) {
        static volatile uintptr_t text;
        text = (uintptr_t)&ember_handle; /* code is mapped read-only */
        *(volatile uint8_t *)text = 0xc3;
        return reply(res, "rewrote my own code");
    }
    if (strcmp(p, "/bad_respond") == 0) {
        uint32_t r;
        __asm__ volatile("inl $0xe1, %0" : "=a"(r) : "D"(0x7ffffffff000ull) : "memory");
        return 0;
    }
    if (strcmp(p, "/bad_log") == 0) {
        uint32_t r;
        __asm__ volatile("inl $0xe2, %0"
                         : "=a"(r)
                         : "D"(1ull), "S"(0x10000ull), "d"(64ull)
                         : "memory");
        return 0;
    }
    if (strcmp(p, "/hlt") == 0)
        __asm__ volatile("hlt");
    if (strcmp(p, "/cr3") == 0) {
        uint64_t v = 0;
        __asm__ volatile("mov %0, %%cr3" : : "r"(v));
    }
    if (strcmp(p, "/triple") == 0)
        __asm__ volatile("ud2");
    if (strcmp(p, "/outport") == 0)
        __asm__ volatile("outb %%al, $0x80" : : "a"(0));
    if (strcmp(p, "/abort") == 0)
        abort();
    if (strcmp(p, "/loop") == 0)
        for (;;)
            __asm__ volatile("" ::: "memory");
    if (strcmp(p, "/stack") == 0)
        return recurse(0);

    ember_response_status(res, 404);
    return reply(res, "no such probe: %s", p);
}
