/* t_echo - echoes the request back.
 *
 * Body: the request body byte for byte; with no request body,
 * "<METHOD> <path>?<query>" instead.
 * Headers: X-Echo: 1, X-Echo-Method, X-Echo-Path, X-Echo-Query,
 * X-Echo-Body-Length, and X-Echo-Test / X-Echo-Content-Type copying the
 * request's X-Test and Content-Type when present.
 * With X-Echo-Headers: N, N more: X-Echo-N-0: 0 ... X-Echo-N-<N-1>.
 * Status: the request's X-Set-Status (e.g. "404"), else 200.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember.h"

int ember_handle(const ember_request *req, ember_response *res)
{
    const char *method = ember_request_method(req);
    const char *path = ember_request_path(req);
    const char *query = ember_request_query(req);
    size_t len;
    const void *body = ember_request_body(req, &len);
    char num[32];

    const char *set = ember_request_header(req, "X-Set-Status");
    if (set)
        ember_response_status(res, atoi(set));
    ember_response_header(res, "X-Echo", "1");
    ember_response_header(res, "X-Echo-Method", method);
    ember_response_header(res, "X-Echo-Path", path);
    ember_response_header(res, "X-Echo-Query", query);
    snprintf(num, sizeof(num), "%zu", len);
    ember_response_header(res, "X-Echo-Body-Length", num);
    const char *v = ember_request_header(req, "X-Test");
    if (v)
        ember_response_header(res, "X-Echo-Test", v);
    v = ember_request_header(req, "Content-Type");
    if (v)
        ember_response_header(res, "X-Echo-Content-Type", v);
    ember_response_header(res, "Content-Type", "application/octet-stream");
    v = ember_request_header(req, "X-Echo-Headers");
    for (int i = 0, n = v ? atoi(v) : 0; i < n && i < 100; i++) {
        char name[32];
        snprintf(name, sizeof(name), "X-Echo-N-%d", i);
        snprintf(num, sizeof(num), "%d", i);
        ember_response_header(res, name, num);
    }

    if (len > 0)
        return ember_response_write(res, body, len);
    if (ember_response_write(res, method, strlen(method)) || ember_response_write(res, " ", 1) ||
        ember_response_write(res, path, strlen(path)))
        return 1;
    if (*query &&
        (ember_response_write(res, "?", 1) || ember_response_write(res, query, strlen(query))))
        return 1;
    return 0;
}
