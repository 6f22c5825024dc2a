/* native.c - the native runtime: ember.h's request and response, and a call.
 *
 * The accessors are exported from the ember-agent executable (see
 * sdk.dynlist) so that the dlopen()ed handler binds to them.
 *
 * A request is one allocation: NUL-terminated copies of method, path, query
 * and headers (the frame's strings are length-prefixed, C callers want
 * terminators). The body is borrowed from the frame. A response's body
 * buffer is kept for the thread's next call when it is small (KEEP_BODY):
 * a 4 KiB malloc and free per call showed in the agent's profile.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/cleanup.h"
#include "sandbox/agent/agent.h"
#include "sandbox/agent/cgi.h"

struct ember_header {
    char *name;
    char *value;
};

struct ember_request {
    const char *method, *path, *query;
    uint32_t n_headers;
    struct ember_header *headers;
    const void *body;
    size_t body_len;
};

#define KEEP_BODY (64u << 10) /* body buffers up to this serve the next call */

static __thread char *kept_body;
static __thread size_t kept_cap;

struct ember_response {
    int status;
    uint32_t n_headers;
    struct proto_pair headers[AGENT_RESPONSE_HEADERS_MAX]; /* own their bytes */
    char *body;
    size_t len, cap;
    bool too_large;
    bool no_memory;
};

const char *ember_request_method(const ember_request *req)
{
    return req ? req->method : "";
}

const char *ember_request_path(const ember_request *req)
{
    return req ? req->path : "/";
}

const char *ember_request_query(const ember_request *req)
{
    return req ? req->query : "";
}

const char *ember_request_header(const ember_request *req, const char *name)
{
    if (!req || !name)
        return NULL;
    for (uint32_t i = 0; i < req->n_headers; i++)
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

const void *ember_request_body(const ember_request *req, size_t *len)
{
    if (len)
        *len = req ? req->body_len : 0;
    return req && req->body_len ? req->body : "";
}

void ember_response_status(ember_response *res, int code)
{
    if (res)
        res->status = code;
}

int ember_response_header(ember_response *res, const char *name, const char *value)
{
    if (!res || !name || !value)
        return -1;
    size_t nl = strlen(name), vl = strlen(value);
    if (!agent__http_token_valid(name, nl) || !agent__http_value_valid(value, vl) ||
        nl > UINT32_MAX / 2 || vl > AGENT_RESPONSE_MAX)
        return -1;
    if (agent__http_header_dropped(name, nl))
        return 0;
    if (res->n_headers == AGENT_RESPONSE_HEADERS_MAX)
        return -1;
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        res->no_memory = true;
        return -1;
    }
    struct proto_pair *h = &res->headers[res->n_headers++];
    h->key.p = n;
    h->key.len = (uint32_t)nl;
    h->value.p = v;
    h->value.len = (uint32_t)vl;
    return 0;
}

int ember_response_write(ember_response *res, const void *data, size_t len)
{
    if (!res || (!data && len))
        return -1;
    if (len > AGENT_RESPONSE_MAX - res->len) {
        res->too_large = true;
        return -1;
    }
    if (res->len + len > res->cap) {
        size_t cap = res->cap ? res->cap : 4096;
        while (cap < res->len + len)
            cap *= 2;
        if (cap > AGENT_RESPONSE_MAX)
            cap = AGENT_RESPONSE_MAX;
        char *b = realloc(res->body, cap);
        if (!b) {
            res->no_memory = true;
            return -1;
        }
        res->body = b;
        res->cap = cap;
    }
    if (len)
        memcpy(res->body + res->len, data, len);
    res->len += len;
    return 0;
}

/* Copy @s with a terminator to *@at; returns the copy. */
static char *put_str(char **at, struct proto_str s)
{
    char *p = *at;
    memcpy(p, s.p, s.len);
    p[s.len] = '\0';
    *at += s.len + 1;
    return p;
}

/* One allocation holding the request and all its strings; free() it. */
static ember_request *request_new(const struct proto_request *pr)
{
    size_t size = sizeof(ember_request) + pr->n_headers * sizeof(struct ember_header) +
                  pr->method.len + pr->path.len + pr->query.len + 3;
    for (uint32_t i = 0; i < pr->n_headers; i++)
        size += pr->headers[i].key.len + pr->headers[i].value.len + 2;
    ember_request *req = malloc(size);
    if (!req)
        return NULL;
    req->headers = (struct ember_header *)(req + 1);
    char *at = (char *)(req->headers + pr->n_headers);
    req->method = put_str(&at, pr->method);
    req->path = put_str(&at, pr->path);
    req->query = put_str(&at, pr->query);
    req->n_headers = pr->n_headers;
    for (uint32_t i = 0; i < pr->n_headers; i++) {
        req->headers[i].name = put_str(&at, pr->headers[i].key);
        req->headers[i].value = put_str(&at, pr->headers[i].value);
    }
    req->body = pr->body.p;
    req->body_len = pr->body.len;
    return req;
}

static void response_release(ember_response *res)
{
    for (uint32_t i = 0; i < res->n_headers; i++) {
        free((char *)res->headers[i].key.p);
        free((char *)res->headers[i].value.p);
    }
    if (res->cap <= KEEP_BODY) {
        kept_body = res->body;
        kept_cap = res->cap;
    } else {
        free(res->body);
    }
}

int agent__native_call(const struct agent_fn *fn, uint32_t id, const struct proto_request *pr,
                       struct proto_buf *out)
{
    cleanup_free ember_request *req = request_new(pr);
    if (!req)
        return -ENOMEM;
    ember_response res = {.status = 200, .body = kept_body, .cap = kept_cap};
    kept_body = NULL; /* the response owns it until released */
    kept_cap = 0;
    int rc = fn->handle(req, &res);

    int r;
    if (res.too_large)
        r = agent__frame_failed(out, id, PROTO_FAIL_TOO_LARGE, "response body over %u bytes",
                                AGENT_RESPONSE_MAX);
    else if (res.no_memory)
        r = agent__frame_failed(out, id, PROTO_FAIL_INTERNAL,
                                "out of memory building the response");
    else if (rc != 0)
        r = agent__frame_failed(out, id, PROTO_FAIL_HANDLER, "ember_handle returned %d", rc);
    else if (res.status < 100 || res.status > 599)
        r = agent__frame_failed(out, id, PROTO_FAIL_BAD_OUTPUT, "invalid status %d", res.status);
    else
        r = agent__frame_response(out, id, (uint32_t)res.status, res.headers, res.n_headers,
                                  res.body, res.len);
    response_release(&res);
    return r;
}
