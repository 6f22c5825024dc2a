/* runtime.c - the microVM guest runtime: the call loop and the ember.h
 * accessors over the request the monitor wrote into guest memory.
 *
 *   _start -> ember__guest_main: heap, ember_init (if the function has one),
 *   WAIT (the snapshot point), then forever: ember_handle -> RESPOND, which
 *   returns when the monitor has written the next request.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ember.h"
#include "hypercall.h"

/* ember_init is optional: a weak reference is NULL when the function has none. */
#pragma weak ember_init

#define RESP_HEADERS_MAX 128
#define RESP_BODY_MAX (6u << 20)

struct ember_request {
    struct ember_guest_req r;
};

struct ember_response {
    int status;
    uint32_t flags;
    uint32_t n_headers;
    struct ember_guest_pair headers[RESP_HEADERS_MAX];
    char *body;
    size_t body_len, body_cap;
};

static const struct ember_boot *const boot = (const struct ember_boot *)EMBER_GUEST_BOOT;
static uint64_t seen_seed_gen;

const char *ember_request_method(const ember_request *req)
{
    return (const char *)req->r.method.ptr;
}

const char *ember_request_path(const ember_request *req)
{
    return (const char *)req->r.path.ptr;
}

const char *ember_request_query(const ember_request *req)
{
    return (const char *)req->r.query.ptr;
}

const char *ember_request_header(const ember_request *req, const char *name)
{
    const struct ember_guest_pair *h = (const struct ember_guest_pair *)req->r.headers;
    size_t len = strlen(name);
    for (uint32_t i = 0; i < req->r.n_headers; i++)
        if (h[i].name.len == len && strncasecmp((const char *)h[i].name.ptr, name, len) == 0)
            return (const char *)h[i].value.ptr;
    return NULL;
}

const void *ember_request_body(const ember_request *req, size_t *len)
{
    if (len)
        *len = req->r.body.len;
    return (const void *)req->r.body.ptr;
}

void ember_response_status(ember_response *res, int code)
{
    res->status = code;
}

static int is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static const char *const dropped_headers[] = {
    "connection", "keep-alive", "proxy-connection", "transfer-encoding",
    "upgrade",    "te",         "trailer",          "content-length",
};

int ember_response_header(ember_response *res, const char *name, const char *value)
{
    size_t nlen = strlen(name), vlen = strlen(value);
    if (nlen == 0)
        return -1;
    for (size_t i = 0; i < nlen; i++)
        if (!is_tchar((unsigned char)name[i]))
            return -1;
    for (size_t i = 0; i < vlen; i++)
        if (value[i] == '\r' || value[i] == '\n')
            return -1;
    for (size_t i = 0; i < sizeof(dropped_headers) / sizeof(dropped_headers[0]); i++)
        if (strcasecmp(name, dropped_headers[i]) == 0)
            return 0;
    if (res->n_headers == RESP_HEADERS_MAX)
        return -1;
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        return -1;
    }
    struct ember_guest_pair *h = &res->headers[res->n_headers++];
    h->name.ptr = (uint64_t)n;
    h->name.len = nlen;
    h->value.ptr = (uint64_t)v;
    h->value.len = vlen;
    return 0;
}

int ember_response_write(ember_response *res, const void *data, size_t len)
{
    if (len > RESP_BODY_MAX - res->body_len) {
        res->flags |= EMBER_RESP_TOO_LARGE;
        return -1;
    }
    if (res->body_len + len > res->body_cap) {
        size_t cap = res->body_cap ? res->body_cap : 4096;
        while (cap < res->body_len + len)
            cap *= 2;
        char *p = realloc(res->body, cap);
        if (!p) {
            res->flags |= EMBER_RESP_TOO_LARGE;
            return -1;
        }
        res->body = p;
        res->body_cap = cap;
    }
    memcpy(res->body + res->body_len, data, len);
    res->body_len += len;
    return 0;
}

static void response_release(ember_response *res)
{
    for (uint32_t i = 0; i < res->n_headers; i++) {
        free((void *)res->headers[i].name.ptr);
        free((void *)res->headers[i].value.ptr);
    }
    free(res->body);
}

/* The monitor rewrites the seed on every restore and reset; pick it up before
 * the function runs so two VMs restored from one snapshot differ. */
static void after_wait(void)
{
    if (boot->seed_gen != seen_seed_gen) {
        seen_seed_gen = boot->seed_gen;
        ember__guest_reseed(boot);
    }
}

__attribute__((noreturn)) void ember__guest_main(void);

__attribute__((noreturn)) void ember__guest_main(void)
{
    if (boot->magic != EMBER_BOOT_MAGIC || boot->abi_version != EMBER_GUEST_ABI_VERSION) {
        static const char msg[] = "boot info: bad magic or ABI version";
        ember__guest_abort(msg, sizeof(msg) - 1);
    }
    ember__guest_heap_init(boot->heap_start, boot->heap_end);
    after_wait();
    if (ember_init) {
        int rc = ember_init();
        ember__guest_stdio_flush();
        if (rc != 0) {
            char msg[64];
            int n = snprintf(msg, sizeof(msg), "ember_init returned %d", rc);
            ember__guest_abort(msg, (uint64_t)n);
        }
    }
    ember__guest_stdio_flush();

    ember_hc(EMBER_HC_WAIT, 0, 0, 0);
    for (;;) {
        after_wait();
        const ember_request *req = (const ember_request *)boot->req_base;
        /* On the stack, not static: a reset rewinds the stack anyway, and a
         * static would be a second copy of the state to keep right. */
        ember_response res;
        res.status = 200;
        res.flags = 0;
        res.n_headers = 0;
        res.body = NULL;
        res.body_len = res.body_cap = 0;

        int rc = ember_handle(req, &res);
        ember__guest_stdio_flush();

        struct ember_guest_resp out = {
            .status = res.status,
            .handler_rc = rc,
            .flags = res.flags,
            .n_headers = res.n_headers,
            .headers = (uint64_t)res.headers,
            .body = {.ptr = (uint64_t)(res.body ? res.body : ""), .len = res.body_len},
        };
        if (res.status < 100 || res.status > 599)
            out.flags |= EMBER_RESP_BAD_STATUS;
        ember_hc(EMBER_HC_RESPOND, &out, 0, 0);
        response_release(&res);
    }
}
