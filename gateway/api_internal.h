/* api_internal.h - the API's state and per-request state, shared by the
 * files of the HTTP API: api.c (routing, the simple handlers, the pool
 * settings, delete and the handler callbacks), deploy.c (package uploads)
 * and invoke.c (invocations and their records). Not for use outside
 * gateway/. */
#ifndef EMBER_GATEWAY_API_INTERNAL_H
#define EMBER_GATEWAY_API_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

#include "common/error.h"
#include "common/list.h"
#include "gateway/api.h"
#include "gateway/http.h"

/* The API of one emberd (api_open). */
struct api {
    uv_loop_t *loop;
    struct store *store;
    struct pool *pool;
    char *token;
    uint64_t package_max, invoke_max;
    const char *version;
    struct http_server *server;
    bool draining;
    uint32_t pending;
    uint64_t boot_id;
    uint64_t inv_seq;
    struct list async_records; /* invoke.c's records, oldest first */
    uint32_t n_async;
    uint64_t deploys, deploy_failures;
};

/* What a request asks for, from its path (route_match). */
enum route {
    R_HEALTHZ,
    R_METRICS,
    R_FUNCTIONS,      /* /v1/functions */
    R_FUNCTION,       /* /v1/functions/{name} */
    R_INVOKE,         /* /v1/functions/{name}/invoke */
    R_LOGS,           /* /v1/functions/{name}/logs */
    R_INVOCATION,     /* /v1/invocations/{id} */
    R_POOL,           /* /v1/pool */
    R_FN_URL,         /* /fn/{name}[/{path}] */
};

/* Headers of a call (and of its answer) kept without an allocation; more
 * take one. */
#define API_CALL_HEADERS_INLINE 16

/* One request from on_request until its response is sent (api__req_free). */
struct api_req {
    struct api *api;
    struct http_request *req;
    enum route route;
    char name[STORE_NAME_MAX + 1];
    bool aborted;

    /* deploy (deploy.c); delete uses work, status and err */
    struct store_upload *upload;
    uint8_t *buf;
    size_t buf_len;
    bool busy;       /* thread-pool work in flight */
    bool body_done;
    int status;      /* of the work */
    struct ember_error err;
    struct function_record *rec;
    bool created, unchanged;
    uv_work_t work;
    uint8_t *wbuf;   /* buffer being written */
    size_t wlen;

    /* invoke (invoke.c) */
    struct pool_ticket *ticket;
    struct sandbox_header *hdrs; /* hdrs_inline, or malloc()ed if more */
    size_t n_hdrs;
    struct sandbox_header hdrs_inline[API_CALL_HEADERS_INLINE];
    const char *fn_path;
    char inv_id[48];
    bool async;
};

/* api.c */
/** Respond with @body (taken) as JSON, with up to seven @extra headers. */
void api__respond_json(struct http_request *req, int status, json_t *body,
                       const struct http_header *extra, size_t n_extra);
/** Free the per-request state; the request stops counting in api_pending. */
void api__req_free(struct api_req *ar);
/** Respond once and release the per-request state. */
void api__finish_error(struct api_req *ar, int status, const char *error, const char *detail);
/** A function's JSON, with the pool's stats for it if @with_stats. */
json_t *api__function_json(struct api *a, struct function_record *rec, bool with_stats);

/* deploy.c */
/** PUT /v1/functions/{name}: start streaming the body to a store upload. */
void api__handle_deploy(struct api_req *ar);
/** A chunk of the package arrived: buffer it; a full buffer pauses the request. */
void api__deploy_on_body(struct api_req *ar);
/** Re-enter the deploy state machine (body done, or aborted); waits out a step in flight. */
void api__deploy_step(struct api_req *ar);

/* invoke.c */
/** POST .../invoke or /fn/{name}/...: find the function, then read the body. */
void api__handle_invoke(struct api_req *ar, const char *rest);
/** The body is in: hand the call to the pool, or start an async one (202). */
void api__invoke_start(struct api_req *ar);
/** GET /v1/invocations/{id}: the record of an async call. */
void api__handle_invocation(struct api *a, struct http_request *req, const char *id);
/** Free every invocation record (api_close). */
void api__invocations_free(struct api *a);

#endif
