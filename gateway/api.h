/* api.h - ember's HTTP API (DESIGN.md "HTTP API") on top of http.h. */
#ifndef EMBER_GATEWAY_API_H
#define EMBER_GATEWAY_API_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "functions/store.h"
#include "gateway/http.h"
#include "pool/pool.h"

#define API_PACKAGE_MAX_DEFAULT (64ull << 20) /* --max-package-bytes -> 413 */
#define API_INVOKE_MAX_DEFAULT (6ull << 20)   /* --max-invoke-bytes  -> 413 */
#define API_ASYNC_RECORDS_DEFAULT 1000        /* async invocation records kept */
#define API_ASYNC_RESULT_MAX (1u << 20)       /* bytes of result kept per record */
#define API_LOG_LINES_DEFAULT 200             /* lines returned by .../logs */

struct api;

struct api_config {
    uv_loop_t *loop;
    struct store *store;
    struct pool *pool;
    const char *token;         /* NULL: /v1/ is open (loopback only) */
    uint64_t package_max;      /* bytes of an uploaded package */
    uint64_t invoke_max;       /* bytes of an invocation body */
    const char *version;       /* emberd version for /healthz */
};

/** Create the API; fills @handler for http_server_start. */
int api_open(const struct api_config *cfg, struct api **out, struct http_handler *handler);
/** Tell the API the HTTP server (for its stats in /metrics). */
void api_set_server(struct api *a, struct http_server *s);
/** New requests get 503 while draining. */
void api_set_draining(struct api *a, bool draining);
/** Number of requests the API still owes a response or background work. */
uint32_t api_pending(const struct api *a);
void api_close(struct api *a);

/** Is @token equal to the configured one? Constant time in the token length. */
bool api_token_matches(const char *expected, const char *given);

#endif
