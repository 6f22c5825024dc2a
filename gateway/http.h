/* http.h - ember's HTTP/1.1 server: libuv + llhttp, one loop, no blocking.
 *
 * The server parses requests and enforces the transport limits; a handler
 * (api.c) decides what each request means. Per connection, requests are
 * handled one at a time in arrival order: while a response is pending the
 * parser is paused, so pipelined requests are answered in order.
 *
 * Handler contract:
 *   on_request(req)  headers are complete. The handler either responds at once
 *                    (http_respond*) or asks for the body with
 *                    http_request_read_body(). Sends "100 Continue" when the
 *                    client expects it and the body is wanted.
 *   on_body(req)     streaming mode: a chunk arrived (req->chunk, chunk_len).
 *                    The handler may http_request_pause() until it has written
 *                    the chunk, then http_request_resume().
 *   on_body_end(req) the whole body arrived (buffered: in req->body).
 *   on_abort(req)    the connection failed before the response went out (peer
 *                    closed, timeout, bad body framing). The handler still
 *                    responds exactly once, later; that response only frees.
 * Every request gets exactly one http_respond* call from the handler; the
 * server owns and frees the request after the response is written.
 */
#ifndef EMBER_GATEWAY_HTTP_H
#define EMBER_GATEWAY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct http_server;
struct http_request;

/* Transport limits; every one has a name, a default and an emberd flag. */
#define HTTP_HEADER_BYTES_DEFAULT (16u << 10)      /* --max-header-bytes  -> 431 */
#define HTTP_HEADER_TIMEOUT_MS_DEFAULT 10000       /* --header-timeout-ms -> 408, close */
#define HTTP_BODY_TIMEOUT_MS_DEFAULT 30000         /* --body-timeout-ms: gap between body bytes -> 408 */
#define HTTP_KEEPALIVE_TIMEOUT_MS_DEFAULT 60000    /* --keepalive-timeout-ms: idle close */
#define HTTP_MAX_CONNECTIONS_DEFAULT 10000         /* --max-connections: excess closed at accept */
#define HTTP_MAX_HEADERS 100                       /* header fields per request -> 431 */

struct http_limits {
    uint32_t header_bytes;
    uint32_t header_timeout_ms;
    uint32_t body_timeout_ms;
    uint32_t keepalive_timeout_ms;
    uint32_t max_connections;
};

void http_limits_default(struct http_limits *l);

struct http_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

enum http_body_mode {
    HTTP_BODY_BUFFER, /* collect into req->body (up to max bytes) */
    HTTP_BODY_STREAM, /* deliver chunks through on_body */
};

/** A request. Strings are NUL-terminated and live until the response is written. */
struct http_request {
    struct http_server *server;
    const char *method;       /* "GET", ... */
    const char *target;       /* raw request-target */
    const char *path;         /* percent-decoded path, no query */
    const char *query;        /* raw query without '?', "" if none */
    const struct http_header *headers;
    size_t n_headers;
    int http_minor;           /* 0 or 1 */
    bool keep_alive;          /* what the client asked for */
    int64_t content_length;   /* -1 if absent (chunked or no body) */
    bool has_body;            /* Content-Length > 0 or chunked */
    char peer[64];            /* "127.0.0.1:54321" */

    /* body, when HTTP_BODY_BUFFER */
    const uint8_t *body;
    size_t body_len;
    /* current chunk, when HTTP_BODY_STREAM (valid during on_body only) */
    const uint8_t *chunk;
    size_t chunk_len;
    uint64_t body_received;   /* bytes so far */

    void *data;               /* the handler's */
};

struct http_handler {
    void (*on_request)(struct http_request *req, void *data);
    void (*on_body)(struct http_request *req, void *data);
    void (*on_body_end)(struct http_request *req, void *data);
    void (*on_abort)(struct http_request *req, void *data);
    void *data;
};

/** Counters for GET /metrics. */
struct http_stats {
    uint64_t connections_total;
    uint64_t connections_current;
    uint64_t requests_total;
    uint64_t rejected_total;  /* refused at accept (max connections, draining) */
    uint64_t parse_errors_total;
    uint64_t timeouts_total;
};

/**
 * Bind and listen on @host:@port (port 0 picks one; http_server_port tells).
 * 0 or -errno with *err_msg (static string) set.
 */
int http_server_start(uv_loop_t *loop, const char *host, uint16_t port,
                      const struct http_limits *limits, const struct http_handler *handler,
                      struct http_server **out);
uint16_t http_server_port(const struct http_server *s);
void http_server_stats(const struct http_server *s, struct http_stats *out);

/**
 * Drain: stop accepting, close idle connections, let in-flight requests
 * finish (each connection closes after its current response), then call
 * @done once every connection is closed. The server is freed after @done.
 */
void http_server_shutdown(struct http_server *s, void (*done)(void *data), void *data);

/** Case-insensitive header lookup; NULL if absent. */
const char *http_request_header(const struct http_request *req, const char *name);

/**
 * Ask for the body. If Content-Length exceeds @max_bytes, the server answers
 * 413 itself (the handler's on_abort is not called; the handler must not
 * respond). A chunked body that grows past @max_bytes gets 413 and close.
 * Returns 0, or -E2BIG when the 413 was sent.
 */
int http_request_read_body(struct http_request *req, enum http_body_mode mode, uint64_t max_bytes);

/** Stop / restart delivering body chunks (backpressure for streaming). */
void http_request_pause(struct http_request *req);
void http_request_resume(struct http_request *req);

/** Respond. Headers and body are copied. Content-Length, Connection, Date and
 *  Server are added by the server. */
void http_respond(struct http_request *req, int status, const struct http_header *headers,
                  size_t n_headers, const void *body, size_t body_len);
/** Respond, taking ownership of @body (free()d after writing). */
void http_respond_owned(struct http_request *req, int status, const struct http_header *headers,
                        size_t n_headers, void *body, size_t body_len);
/** {"error": error, "detail": detail} with application/json. @detail may be NULL.
 *  @close forces "Connection: close" (the stream can't be trusted). */
void http_respond_error(struct http_request *req, int status, const char *error,
                        const char *detail, bool close);

/** "Not Found" for 404 etc. */
const char *http_status_reason(int status);

#endif
