/* api.c - routes and handlers of ember's HTTP API: routing and the bearer
 * token, the simple handlers (health, metrics, functions, logs), the pool's
 * settings, delete, and the callbacks the HTTP server calls, which hand
 * deploys to deploy.c and invocations to invoke.c.
 */
#include "gateway/api_internal.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "common/clock.h"
#include "common/list.h"
#include "common/log.h"

/* ---- small helpers ------------------------------------------------------------- */

bool api_token_matches(const char *expected, const char *given)
{
    size_t el = strlen(expected), gl = strlen(given);
    unsigned char diff = (unsigned char)(el != gl);
    /* Compare every byte of the expected token whatever the input. */
    for (size_t i = 0; i < el; i++)
        diff |= (unsigned char)expected[i] ^ (unsigned char)(i < gl ? given[i] : 0);
    return diff == 0;
}

void api__respond_json(struct http_request *req, int status, json_t *body,
                       const struct http_header *extra, size_t n_extra)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(body);
    if (!text) {
        http_respond_error(req, 500, "internal error", "cannot encode JSON", false);
        return;
    }
    struct http_header hdrs[8];
    size_t n = 0;
    hdrs[n++] = (struct http_header){"Content-Type", 12, "application/json", 16};
    for (size_t i = 0; i < n_extra && n < 8; i++)
        hdrs[n++] = extra[i];
    size_t len = strlen(text);
    http_respond_owned(req, status, hdrs, n, text, len);
}

void api__req_free(struct api_req *ar)
{
    if (ar->rec)
        store_record_unref(ar->rec);
    free(ar->buf);
    if (ar->hdrs != ar->hdrs_inline)
        free(ar->hdrs);
    ar->api->pending--;
    free(ar);
}

/* Respond once and release the per-request state. */
void api__finish_error(struct api_req *ar, int status, const char *error, const char *detail)
{
    http_respond_error(ar->req, status, error, detail, false);
    api__req_free(ar);
}

static bool method_is(const struct http_request *req, const char *m)
{
    return strcmp(req->method, m) == 0;
}

/* ---- routing ----------------------------------------------------------------------- */

/*
 * Split @path into a route and a function name. Returns 0, -ENOENT (no such
 * route: 404) or -EINVAL (bad function name: 400).
 */
static int route_match(const char *path, enum route *route, char name[STORE_NAME_MAX + 1],
                       const char **rest)
{
    *rest = NULL;
    if (strcmp(path, "/healthz") == 0) {
        *route = R_HEALTHZ;
        return 0;
    }
    if (strcmp(path, "/metrics") == 0) {
        *route = R_METRICS;
        return 0;
    }
    if (strcmp(path, "/v1/pool") == 0) {
        *route = R_POOL;
        return 0;
    }
    if (strcmp(path, "/v1/functions") == 0 || strcmp(path, "/v1/functions/") == 0) {
        *route = R_FUNCTIONS;
        return 0;
    }
    const char *p;
    if (strncmp(path, "/v1/invocations/", 16) == 0) {
        p = path + 16;
        size_t len = strlen(p);
        if (len == 0 || len >= 48 || strspn(p, "0123456789abcdef-") != len)
            return -ENOENT;
        snprintf(name, STORE_NAME_MAX + 1, "%s", p);
        *route = R_INVOCATION;
        return 0;
    }
    bool fn_url = false;
    if (strncmp(path, "/v1/functions/", 14) == 0)
        p = path + 14;
    else if (strncmp(path, "/fn/", 4) == 0) {
        p = path + 4;
        fn_url = true;
    } else if (strcmp(path, "/fn") == 0) {
        return -EINVAL;
    } else {
        return -ENOENT;
    }
    const char *slash = strchr(p, '/');
    size_t len = slash ? (size_t)(slash - p) : strlen(p);
    if (!store_name_valid(p, len))
        return -EINVAL;
    memcpy(name, p, len);
    name[len] = '\0';
    if (fn_url) {
        *route = R_FN_URL;
        *rest = slash ? slash : "/";
        return 0;
    }
    if (!slash) {
        *route = R_FUNCTION;
        return 0;
    }
    if (strcmp(slash, "/invoke") == 0)
        *route = R_INVOKE;
    else if (strcmp(slash, "/logs") == 0)
        *route = R_LOGS;
    else
        return -ENOENT;
    return 0;
}

static void method_not_allowed(struct http_request *req, const char *allow)
{
    json_t *o = json_pack("{s:s,s:s}", "error", "method not allowed", "detail", allow);
    struct http_header h = {"Allow", 5, allow, strlen(allow)};
    api__respond_json(req, 405, o, &h, 1);
}

/* ---- simple handlers ------------------------------------------------------------------ */

static void handle_healthz(struct api *a, struct http_request *req)
{
    json_t *o = json_pack("{s:s,s:s,s:b}", "status", a->draining ? "draining" : "ok", "version",
                          a->version ? a->version : "dev", "draining", a->draining);
    api__respond_json(req, a->draining ? 503 : 200, o, NULL, 0);
}

static void handle_metrics(struct api *a, struct http_request *req)
{
    struct pool_textbuf b = {0};
    struct http_stats hs = {0};
    if (a->server)
        http_server_stats(a->server, &hs);
    pool_textbuf_printf(&b,
                        "# HELP ember_http_connections Open HTTP connections.\n"
                        "# TYPE ember_http_connections gauge\n"
                        "ember_http_connections %" PRIu64 "\n"
                        "# HELP ember_http_connections_total Accepted HTTP connections.\n"
                        "# TYPE ember_http_connections_total counter\n"
                        "ember_http_connections_total %" PRIu64 "\n"
                        "# HELP ember_http_requests_total HTTP requests parsed.\n"
                        "# TYPE ember_http_requests_total counter\n"
                        "ember_http_requests_total %" PRIu64 "\n"
                        "# HELP ember_http_parse_errors_total Malformed requests.\n"
                        "# TYPE ember_http_parse_errors_total counter\n"
                        "ember_http_parse_errors_total %" PRIu64 "\n"
                        "# HELP ember_http_timeouts_total Connections closed by a timeout.\n"
                        "# TYPE ember_http_timeouts_total counter\n"
                        "ember_http_timeouts_total %" PRIu64 "\n"
                        "# HELP ember_functions Deployed functions.\n"
                        "# TYPE ember_functions gauge\n"
                        "ember_functions %zu\n"
                        "# HELP ember_deploys_total Successful deploys.\n"
                        "# TYPE ember_deploys_total counter\n"
                        "ember_deploys_total %" PRIu64 "\n"
                        "# HELP ember_deploy_failures_total Refused or failed deploys.\n"
                        "# TYPE ember_deploy_failures_total counter\n"
                        "ember_deploy_failures_total %" PRIu64 "\n",
                        hs.connections_current, hs.connections_total, hs.requests_total,
                        hs.parse_errors_total, hs.timeouts_total, store_function_count(a->store),
                        a->deploys, a->deploy_failures);
    pool_metrics_write(a->pool, &b);
    struct http_header h = {"Content-Type", 12, "text/plain; version=0.0.4", 25};
    http_respond_owned(req, 200, &h, 1, b.data, b.len);
}

json_t *api__function_json(struct api *a, struct function_record *rec, bool with_stats)
{
    json_t *o = store_record_json(rec);
    if (with_stats && o)
        json_object_set_new(o, "stats", pool_function_json(a->pool, rec->name));
    return o;
}

static void handle_list(struct api *a, struct http_request *req)
{
    struct function_record **recs = NULL;
    size_t n = 0;
    if (store_function_list(a->store, &recs, &n) < 0) {
        http_respond_error(req, 500, "internal error", "cannot list functions", false);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(arr, api__function_json(a, recs[i], false));
        store_record_unref(recs[i]);
    }
    free(recs);
    api__respond_json(req, 200, json_pack("{s:o}", "functions", arr), NULL, 0);
}

static void handle_get(struct api *a, struct http_request *req, const char *name)
{
    struct function_record *rec = store_function_get(a->store, name);
    if (!rec) {
        http_respond_error(req, 404, "not found", "no such function", false);
        return;
    }
    json_t *o = api__function_json(a, rec, true);
    store_record_unref(rec);
    api__respond_json(req, 200, o, NULL, 0);
}

static void handle_logs(struct api *a, struct http_request *req, const char *name)
{
    struct function_record *rec = store_function_get(a->store, name);
    if (!rec) {
        http_respond_error(req, 404, "not found", "no such function", false);
        return;
    }
    store_record_unref(rec);
    size_t max = API_LOG_LINES_DEFAULT;
    const char *q = strstr(req->query, "lines=");
    if (q && (q == req->query || q[-1] == '&')) {
        long v = strtol(q + 6, NULL, 10);
        if (v > 0 && v <= 1000)
            max = (size_t)v;
    }
    api__respond_json(req, 200,
                      json_pack("{s:s,s:o}", "function", name, "lines",
                                pool_function_logs(a->pool, name, max)),
                      NULL, 0);
}

/* ---- pool -------------------------------------------------------------------------- */

static void handle_pool_patch(struct api_req *ar)
{
    struct api *a = ar->api;
    json_error_t jerr;
    json_t *patch = json_loadb((const char *)ar->req->body, ar->req->body_len,
                               JSON_REJECT_DUPLICATES, &jerr);
    if (!patch) {
        char detail[256];
        snprintf(detail, sizeof(detail), "invalid JSON at line %d: %s", jerr.line, jerr.text);
        api__finish_error(ar, 400, "bad request", detail);
        return;
    }
    struct ember_error err = {0};
    int r = pool_configure(a->pool, patch, &err);
    json_decref(patch);
    if (r < 0) {
        api__finish_error(ar, 400, "bad request", err.msg);
        return;
    }
    log_info("api: pool settings changed");
    api__respond_json(ar->req, 200, pool_json(a->pool), NULL, 0);
    api__req_free(ar);
}

/* ---- delete ------------------------------------------------------------------------------ */

static void work_delete(uv_work_t *w)
{
    struct api_req *ar = w->data;
    ar->status = store_function_delete(ar->api->store, ar->name, &ar->err);
}

static void after_delete(uv_work_t *w, int status)
{
    struct api_req *ar = w->data;
    if (status < 0 && ar->status == 0)
        ar->status = status;
    if (ar->status == -ENOENT) {
        api__finish_error(ar, 404, "not found", "no such function");
        return;
    }
    if (ar->status < 0) {
        api__finish_error(ar, 500, "store failed",
                          ar->err.msg[0] ? ar->err.msg : strerror(-ar->status));
        return;
    }
    pool_function_remove(ar->api->pool, ar->name);
    log_info("api: deleted %s", ar->name);
    api__respond_json(ar->req, 200, json_pack("{s:s,s:b}", "name", ar->name, "deleted", 1), NULL,
                      0);
    api__req_free(ar);
}

static void handle_delete(struct api_req *ar)
{
    ar->work.data = ar;
    int r = uv_queue_work(ar->api->loop, &ar->work, work_delete, after_delete);
    if (r < 0)
        api__finish_error(ar, 500, "internal error", uv_strerror(r));
}

/* ---- the handler callbacks ---------------------------------------------------------------- */

static bool authorized(struct api *a, struct http_request *req)
{
    if (!a->token)
        return true;
    const char *h = http_request_header(req, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    while (*h == ' ')
        h++;
    return api_token_matches(a->token, h);
}

static void on_request(struct http_request *req, void *data)
{
    struct api *a = data;
    enum route route;
    char name[STORE_NAME_MAX + 1] = "";
    const char *rest = NULL;

    int r = route_match(req->path, &route, name, &rest);
    if (r == -EINVAL) {
        http_respond_error(req, 400, "bad request",
                           "function names are 1 to 63 characters of a-z, 0-9 and '-', "
                           "starting with a letter or digit",
                           false);
        return;
    }
    if (r < 0) {
        http_respond_error(req, 404, "not found", "no such route", false);
        return;
    }
    if (strncmp(req->path, "/v1/", 4) == 0 && !authorized(a, req)) {
        struct http_header h = {"WWW-Authenticate", 16, "Bearer realm=\"ember\"", 20};
        json_t *o = json_pack("{s:s,s:s}", "error", "unauthorized", "detail",
                              "this route needs Authorization: Bearer <token>");
        api__respond_json(req, 401, o, &h, 1);
        return;
    }
    if (a->draining && route != R_HEALTHZ && route != R_METRICS) {
        http_respond_error(req, 503, "draining", "emberd is shutting down", true);
        return;
    }

    switch (route) {
    case R_HEALTHZ:
        if (!method_is(req, "GET") && !method_is(req, "HEAD"))
            return method_not_allowed(req, "GET");
        return handle_healthz(a, req);
    case R_METRICS:
        if (!method_is(req, "GET"))
            return method_not_allowed(req, "GET");
        return handle_metrics(a, req);
    case R_FUNCTIONS:
        if (!method_is(req, "GET"))
            return method_not_allowed(req, "GET");
        return handle_list(a, req);
    case R_LOGS:
        if (!method_is(req, "GET"))
            return method_not_allowed(req, "GET");
        return handle_logs(a, req, name);
    case R_INVOCATION:
        if (!method_is(req, "GET"))
            return method_not_allowed(req, "GET");
        return api__handle_invocation(a, req, name);
    case R_FUNCTION:
        if (method_is(req, "GET"))
            return handle_get(a, req, name);
        if (!method_is(req, "PUT") && !method_is(req, "DELETE"))
            return method_not_allowed(req, "GET, PUT, DELETE");
        break;
    case R_POOL:
        if (method_is(req, "GET")) {
            api__respond_json(req, 200, pool_json(a->pool), NULL, 0);
            return;
        }
        if (!method_is(req, "PATCH"))
            return method_not_allowed(req, "GET, PATCH");
        break;
    case R_INVOKE:
        if (!method_is(req, "POST"))
            return method_not_allowed(req, "POST");
        break;
    case R_FN_URL:
        break;
    }

    struct api_req *ar = calloc(1, sizeof(*ar));
    if (!ar) {
        http_respond_error(req, 500, "internal error", "out of memory", false);
        return;
    }
    ar->api = a;
    ar->req = req;
    ar->route = route;
    snprintf(ar->name, sizeof(ar->name), "%s", name);
    req->data = ar;
    a->pending++;

    switch (route) {
    case R_FUNCTION:
        if (method_is(req, "PUT"))
            api__handle_deploy(ar);
        else
            handle_delete(ar);
        return;
    case R_POOL:
        if (http_request_read_body(req, HTTP_BODY_BUFFER, 1u << 20) < 0)
            api__req_free(ar);
        return;
    case R_INVOKE:
    case R_FN_URL:
        api__handle_invoke(ar, rest);
        return;
    default:
        api__finish_error(ar, 500, "internal error", "unrouted request");
        return;
    }
}

static void on_body(struct http_request *req, void *data)
{
    struct api_req *ar = req->data;
    (void)data;
    if (ar && ar->route == R_FUNCTION && !ar->aborted)
        api__deploy_on_body(ar);
}

static void on_body_end(struct http_request *req, void *data)
{
    struct api_req *ar = req->data;
    (void)data;
    if (!ar)
        return;
    switch (ar->route) {
    case R_FUNCTION:
        ar->body_done = true;
        api__deploy_step(ar);
        return;
    case R_POOL:
        handle_pool_patch(ar);
        return;
    case R_INVOKE:
    case R_FN_URL:
        api__invoke_start(ar);
        return;
    default:
        return;
    }
}

static void on_abort(struct http_request *req, void *data)
{
    struct api_req *ar = req->data;
    (void)data;
    if (!ar)
        return;
    ar->aborted = true;
    switch (ar->route) {
    case R_FUNCTION:
        if (method_is(req, "PUT")) {
            if (ar->busy)
                return; /* the step in flight finishes, then api__deploy_step cleans up */
            if (ar->status == 0 && !ar->body_done)
                ar->status = -ECONNRESET;
            api__deploy_step(ar);
        }
        /* a delete runs to completion and answers into the void */
        return;
    case R_INVOKE:
    case R_FN_URL:
        if (ar->ticket) {
            pool_ticket_cancel(ar->ticket);
            ar->ticket = NULL;
            http_respond_error(req, 499, "client closed request", NULL, true);
            api__req_free(ar);
        } else if (!ar->hdrs) {
            /* still reading the body: nothing started */
            http_respond_error(req, 400, "aborted", NULL, true);
            api__req_free(ar);
        }
        return;
    case R_POOL:
        http_respond_error(req, 400, "aborted", NULL, true);
        api__req_free(ar);
        return;
    default:
        return;
    }
}

int api_open(const struct api_config *cfg, struct api **out, struct http_handler *handler)
{
    struct api *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->loop = cfg->loop;
    a->store = cfg->store;
    a->pool = cfg->pool;
    a->token = cfg->token && cfg->token[0] ? strdup(cfg->token) : NULL;
    a->package_max = cfg->package_max ? cfg->package_max : API_PACKAGE_MAX_DEFAULT;
    a->invoke_max = cfg->invoke_max ? cfg->invoke_max : API_INVOKE_MAX_DEFAULT;
    a->version = cfg->version;
    list_init(&a->async_records);
    if (getrandom(&a->boot_id, sizeof(a->boot_id), 0) != sizeof(a->boot_id))
        a->boot_id = ember_now_ns();
    handler->on_request = on_request;
    handler->on_body = on_body;
    handler->on_body_end = on_body_end;
    handler->on_abort = on_abort;
    handler->data = a;
    *out = a;
    return 0;
}

void api_set_server(struct api *a, struct http_server *s)
{
    a->server = s;
}

void api_set_draining(struct api *a, bool draining)
{
    a->draining = draining;
}

uint32_t api_pending(const struct api *a)
{
    return a->pending;
}

void api_close(struct api *a)
{
    api__invocations_free(a);
    free(a->token);
    free(a);
}
