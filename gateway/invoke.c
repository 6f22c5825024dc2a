/* invoke.c - invocations: POST /v1/functions/{name}/invoke and /fn/{name}/...
 *
 * A call goes to the pool; its answer comes back on the loop and becomes the
 * response: the function's status, body and headers (less hop-by-hop and
 * server-owned ones), X-Ember-Invocation, and Server-Timing with the call's
 * queue, acquire, init and run times. With ?async=1 the call is answered 202
 * at once and runs on from owned copies of the request; its outcome is kept
 * in an invocation record (the last API_ASYNC_RECORDS_DEFAULT) for
 * GET /v1/invocations/{id}.
 */
#include "gateway/api_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/clock.h"
#include "common/fmt.h"
#include "common/list.h"

/* A call made with ?async=1, kept for GET /v1/invocations/{id}. */
#define TIMING_MAX 160 /* a Server-Timing value: 4 numbers of <= 20 characters */

struct async_record {
    struct list link;
    struct api *api;
    char id[48];
    char function[STORE_NAME_MAX + 1];
    bool done;
    int http_status;
    char *error, *detail;
    char *result;
    size_t result_len;
    bool truncated;
    char timing[TIMING_MAX];
    int64_t created_ms, finished_ms;
    /* owned copies of the call (the HTTP request is gone) */
    char *method, *path, *query;
    struct sandbox_header *hdrs;
    size_t n_hdrs;
    void *body;
    size_t body_len;
    bool running;
};

static bool hop_by_hop(const char *name, size_t len)
{
    static const char *const hop[] = {"connection", "keep-alive", "proxy-authenticate",
                                      "proxy-authorization", "te", "trailer",
                                      "transfer-encoding", "upgrade", "proxy-connection"};
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        if (strlen(hop[i]) == len && strncasecmp(hop[i], name, len) == 0)
            return true;
    return false;
}

/* Headers the server writes itself; a function's copy would duplicate them. */
static bool server_owned(const char *name, size_t len)
{
    static const char *const own[] = {"content-length", "date", "server"};
    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
        if (strlen(own[i]) == len && strncasecmp(own[i], name, len) == 0)
            return true;
    return false;
}

/* "<boot id, 16 hex digits>-<sequence in hex>" */
static void new_invocation_id(struct api *a, char out[48])
{
    char *p = fmt_hex64(out, a->boot_id, 16);
    *p++ = '-';
    p = fmt_hex64(p, ++a->inv_seq, 0);
    *p = '\0';
}

/* The Server-Timing value; @buf holds TIMING_MAX bytes. */
static void format_timing(const struct pool_result *res, char *buf)
{
    char *p = FMT_LIT(buf, "queue;dur=");
    p = fmt_ms3(p, res->queue_ns);
    p = FMT_LIT(p, ", acquire;desc=\"");
    const char *kind = res->acquired ? pool_acquire_name(res->acquire) : "none";
    p = fmt_bytes(p, kind, strlen(kind));
    p = FMT_LIT(p, "\";dur=");
    p = fmt_ms3(p, res->acquire_ns);
    p = FMT_LIT(p, ", init;dur=");
    p = fmt_ms3(p, res->init_ns);
    p = FMT_LIT(p, ", run;dur=");
    p = fmt_ms3(p, res->run_ns);
    *p = '\0';
}

static void on_invoke_result(const struct pool_result *res, void *data)
{
    struct api_req *ar = data;
    char timing[TIMING_MAX], retry[16];
    format_timing(res, timing);

    struct http_header base[3];
    size_t nb = 0;
    base[nb++] = (struct http_header){"X-Ember-Invocation", 18, ar->inv_id, strlen(ar->inv_id)};
    base[nb++] = (struct http_header){"Server-Timing", 13, timing, strlen(timing)};

    if (res->error_name) {
        if (res->retry_after_s) {
            snprintf(retry, sizeof(retry), "%u", res->retry_after_s);
            base[nb++] = (struct http_header){"Retry-After", 11, retry, strlen(retry)};
        }
        json_t *o = json_pack("{s:s,s:s,s:s}", "error", res->error_name, "detail",
                              res->detail ? res->detail : "", "invocation", ar->inv_id);
        api__respond_json(ar->req, res->http_status, o, base, nb);
        api__req_free(ar);
        return;
    }

    struct http_header inline_hdrs[API_CALL_HEADERS_INLINE];
    struct http_header *hdrs = res->n_headers + nb <= API_CALL_HEADERS_INLINE
                                   ? inline_hdrs
                                   : calloc(res->n_headers + nb, sizeof(*hdrs));
    if (!hdrs) {
        api__finish_error(ar, 500, "internal error", "out of memory");
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < nb; i++)
        hdrs[n++] = base[i];
    for (size_t i = 0; i < res->n_headers; i++) {
        const struct sandbox_header *h = &res->headers[i];
        if (hop_by_hop(h->name, h->name_len) || server_owned(h->name, h->name_len))
            continue;
        hdrs[n++] = (struct http_header){h->name, h->name_len, h->value, h->value_len};
    }
    int status = res->http_status;
    if (status < 100 || status > 599)
        status = 502;
    http_respond(ar->req, status, hdrs, n, res->body, res->body_len);
    if (hdrs != inline_hdrs)
        free(hdrs);
    api__req_free(ar);
}

#define REMOTE_ADDR_HEADER "X-Ember-Remote-Addr"

/*
 * Convert the HTTP request's headers into the call's, dropping hop-by-hop
 * ones and any client-sent X-Ember-Remote-Addr; ours (the peer's address,
 * REMOTE_ADDR for exec functions) is added last.
 */
static int build_call_headers(struct api_req *ar)
{
    struct http_request *req = ar->req;
    ar->hdrs = req->n_headers + 1 <= API_CALL_HEADERS_INLINE
                   ? ar->hdrs_inline
                   : calloc(req->n_headers + 1, sizeof(*ar->hdrs));
    if (!ar->hdrs)
        return -ENOMEM;
    size_t plen = strcspn(req->peer, " ");
    const char *colon = memrchr(req->peer, ':', plen);
    if (colon)
        plen = (size_t)(colon - req->peer);
    if (plen > 2 && req->peer[0] == '[') /* [::1]:port */
        ar->hdrs[ar->n_hdrs++] = (struct sandbox_header){REMOTE_ADDR_HEADER,
                                                          sizeof(REMOTE_ADDR_HEADER) - 1,
                                                          req->peer + 1, plen - 2};
    else if (plen > 0)
        ar->hdrs[ar->n_hdrs++] = (struct sandbox_header){REMOTE_ADDR_HEADER,
                                                          sizeof(REMOTE_ADDR_HEADER) - 1,
                                                          req->peer, plen};
    for (size_t i = 0; i < req->n_headers; i++) {
        const struct http_header *h = &req->headers[i];
        if (hop_by_hop(h->name, h->name_len))
            continue;
        if (h->name_len == sizeof(REMOTE_ADDR_HEADER) - 1 &&
            strncasecmp(h->name, REMOTE_ADDR_HEADER, h->name_len) == 0)
            continue;
        ar->hdrs[ar->n_hdrs++] =
            (struct sandbox_header){h->name, h->name_len, h->value, h->value_len};
    }
    return 0;
}

static bool query_has_async(const char *q)
{
    /* "async=1" or "async=true" as one of the &-separated parameters */
    const char *p = q;
    while (p && *p) {
        if (strncmp(p, "async=1", 7) == 0 && (p[7] == '\0' || p[7] == '&'))
            return true;
        if (strncmp(p, "async=true", 10) == 0 && (p[10] == '\0' || p[10] == '&'))
            return true;
        p = strchr(p, '&');
        if (p)
            p++;
    }
    return false;
}

/* Remove the async parameter from what the function sees. */
static char *query_without_async(const char *q)
{
    char *out = malloc(strlen(q) + 1);
    if (!out)
        return NULL;
    out[0] = '\0';
    const char *p = q;
    while (*p) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (!(len >= 6 && strncmp(p, "async=", 6) == 0)) {
            if (out[0])
                strcat(out, "&");
            strncat(out, p, len);
        }
        p += len;
        if (*p == '&')
            p++;
    }
    return out;
}

static void async_record_free(struct async_record *r)
{
    list_remove(&r->link);
    free(r->error);
    free(r->detail);
    free(r->result);
    free(r->method);
    free(r->path);
    free(r->query);
    free(r->hdrs);
    free(r->body);
    free(r);
}

static void on_async_result(const struct pool_result *res, void *data)
{
    struct async_record *r = data;
    r->running = false;
    r->done = true;
    r->http_status = res->http_status;
    r->finished_ms = ember_wall_ms();
    format_timing(res, r->timing);
    if (res->error_name) {
        r->error = strdup(res->error_name);
        r->detail = strdup(res->detail ? res->detail : "");
    } else {
        size_t keep = res->body_len < API_ASYNC_RESULT_MAX ? res->body_len : API_ASYNC_RESULT_MAX;
        r->truncated = keep < res->body_len;
        r->result = malloc(keep + 1);
        if (r->result) {
            memcpy(r->result, res->body, keep);
            r->result[keep] = '\0';
            r->result_len = keep;
        }
    }
    /* The call's copies are not needed any more. */
    free(r->hdrs);
    r->hdrs = NULL;
    free(r->body);
    r->body = NULL;
}

static void async_trim(struct api *a)
{
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &a->async_records)
    {
        if (a->n_async <= API_ASYNC_RECORDS_DEFAULT)
            break;
        struct async_record *r = list_entry(pos, struct async_record, link);
        if (r->running)
            continue; /* its callback still needs it */
        async_record_free(r);
        a->n_async--;
    }
}

static void start_async(struct api_req *ar)
{
    struct api *a = ar->api;
    struct http_request *req = ar->req;
    struct async_record *r = calloc(1, sizeof(*r));
    if (!r) {
        api__finish_error(ar, 500, "internal error", "out of memory");
        return;
    }
    list_init(&r->link);
    r->api = a;
    snprintf(r->id, sizeof(r->id), "%s", ar->inv_id);
    snprintf(r->function, sizeof(r->function), "%s", ar->name);
    r->created_ms = ember_wall_ms();
    r->method = strdup(req->method);
    r->path = strdup(ar->fn_path);
    r->query = query_without_async(req->query);
    r->body = malloc(req->body_len ? req->body_len : 1);
    r->body_len = req->body_len;
    /* Header strings are copied into one block after the array. */
    size_t strings = 0;
    for (size_t i = 0; i < ar->n_hdrs; i++)
        strings += ar->hdrs[i].name_len + ar->hdrs[i].value_len + 2;
    r->hdrs = malloc(ar->n_hdrs * sizeof(*r->hdrs) + strings + 1);
    if (!r->method || !r->path || !r->query || !r->body || !r->hdrs) {
        async_record_free(r);
        api__finish_error(ar, 500, "internal error", "out of memory");
        return;
    }
    if (req->body_len)
        memcpy(r->body, req->body, req->body_len);
    char *s = (char *)(r->hdrs + ar->n_hdrs);
    for (size_t i = 0; i < ar->n_hdrs; i++) {
        const struct sandbox_header *h = &ar->hdrs[i];
        memcpy(s, h->name, h->name_len);
        s[h->name_len] = '\0';
        r->hdrs[i].name = s;
        r->hdrs[i].name_len = h->name_len;
        s += h->name_len + 1;
        memcpy(s, h->value, h->value_len);
        s[h->value_len] = '\0';
        r->hdrs[i].value = s;
        r->hdrs[i].value_len = h->value_len;
        s += h->value_len + 1;
    }
    r->n_hdrs = ar->n_hdrs;
    list_insert_tail(&a->async_records, &r->link);
    a->n_async++;
    async_trim(a);

    struct sandbox_call call = {
        .method = r->method,
        .path = r->path,
        .query = r->query,
        .headers = r->hdrs,
        .n_headers = r->n_hdrs,
        .body = r->body,
        .body_len = r->body_len,
    };
    r->running = true;
    pool_invoke(a->pool, ar->rec, &call, on_async_result, r, NULL);

    char location[96];
    snprintf(location, sizeof(location), "/v1/invocations/%s", r->id);
    struct http_header h[2] = {
        {"Location", 8, location, strlen(location)},
        {"X-Ember-Invocation", 18, r->id, strlen(r->id)},
    };
    api__respond_json(req, 202, json_pack("{s:s,s:s}", "invocation", r->id, "status", "accepted"),
                      h, 2);
    api__req_free(ar);
}

void api__invoke_start(struct api_req *ar)
{
    struct api *a = ar->api;
    struct http_request *req = ar->req;
    if (build_call_headers(ar) < 0) {
        api__finish_error(ar, 500, "internal error", "out of memory");
        return;
    }
    new_invocation_id(a, ar->inv_id);
    if (ar->async) {
        start_async(ar);
        return;
    }
    struct sandbox_call call = {
        .method = req->method,
        .path = ar->fn_path,
        .query = req->query,
        .headers = ar->hdrs,
        .n_headers = ar->n_hdrs,
        .body = req->body,
        .body_len = req->body_len,
    };
    pool_invoke(a->pool, ar->rec, &call, on_invoke_result, ar, &ar->ticket);
}

void api__handle_invoke(struct api_req *ar, const char *rest)
{
    struct api *a = ar->api;
    ar->rec = store_function_get(a->store, ar->name);
    if (!ar->rec) {
        api__finish_error(ar, 404, "not found", "no such function");
        return;
    }
    if (ar->route == R_INVOKE) {
        ar->fn_path = "/";
        ar->async = query_has_async(ar->req->query);
    } else {
        ar->fn_path = rest;
    }
    if (!ar->req->has_body) {
        api__invoke_start(ar);
        return;
    }
    if (http_request_read_body(ar->req, HTTP_BODY_BUFFER, a->invoke_max) < 0)
        api__req_free(ar); /* 413 already sent */
}

void api__handle_invocation(struct api *a, struct http_request *req, const char *id)
{
    struct list *pos;
    for (pos = a->async_records.next; pos != &a->async_records; pos = pos->next) {
        struct async_record *r = list_entry(pos, struct async_record, link);
        if (strcmp(r->id, id) != 0)
            continue;
        json_t *o = json_pack("{s:s,s:s,s:s,s:I}", "invocation", r->id, "function", r->function,
                              "status", r->done ? "done" : "running", "created_ms",
                              (json_int_t)r->created_ms);
        if (r->done) {
            json_object_set_new(o, "http_status", json_integer(r->http_status));
            json_object_set_new(o, "finished_ms", json_integer(r->finished_ms));
            json_object_set_new(o, "server_timing", json_string(r->timing));
            if (r->error) {
                json_object_set_new(o, "error", json_string(r->error));
                json_object_set_new(o, "detail", json_string(r->detail ? r->detail : ""));
            } else if (r->result) {
                json_t *s = json_stringn(r->result, r->result_len);
                if (s) {
                    json_object_set_new(o, "result", s);
                } else {
                    /* not UTF-8: hex keeps it exact and simple to decode */
                    char *hex = malloc(r->result_len * 2 + 1);
                    for (size_t i = 0; hex && i < r->result_len; i++)
                        sprintf(hex + 2 * i, "%02x", (unsigned char)r->result[i]);
                    if (hex) {
                        hex[r->result_len * 2] = '\0';
                        json_object_set_new(o, "result_hex", json_string(hex));
                    }
                    free(hex);
                }
                json_object_set_new(o, "truncated", json_boolean(r->truncated));
            }
        }
        api__respond_json(req, 200, o, NULL, 0);
        return;
    }
    http_respond_error(req, 404, "not found", "no such invocation (records are kept for the last "
                                              "1000 asynchronous calls)", false);
}

void api__invocations_free(struct api *a)
{
    while (!list_empty(&a->async_records))
        async_record_free(list_entry(a->async_records.next, struct async_record, link));
}
