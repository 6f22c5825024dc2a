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
 *                    (A client that half-closes after sending the whole
 *                    request is not an abort: it gets its response.)
 * Every request gets exactly one http_respond* call from the handler; the
 * server owns and frees the request after the response is written.
 *
 * Callbacks are never made from inside an http_* call: a call made outside a
 * callback (from a timer, the pool, ...) takes effect on the next loop turn.
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

/** 0 disables a timeout; max_connections 0 means no limit; header_bytes is
 *  kept within [256, 1 MiB] (0 means the default). */
struct http_limits {
    uint32_t header_bytes;
    uint32_t header_timeout_ms;
    uint32_t body_timeout_ms;
    uint32_t keepalive_timeout_ms;
    uint32_t max_connections;
};

void http_limits_default(struct http_limits *l);

/** A header field. In a request both strings are NUL-terminated and the
 *  lengths exact. In a response a length of 0 means strlen(); fields whose
 *  name is not a token or whose value holds CR, LF or NUL are dropped, and so
 *  are Content-Length, Transfer-Encoding, Connection, Date and Server (the
 *  server writes those; "Connection: close" from the handler is honoured). */
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
 * @host is an IPv4 or IPv6 literal ("127.0.0.1", "::1", "[::1]", "0.0.0.0");
 * names are not resolved. @limits may be NULL (defaults); both structs are
 * copied. Returns 0, -EINVAL for a bad host, or the -errno of bind/listen
 * (also logged). On failure the loop must still run once to free what the
 * server attached to it.
 */
int http_server_start(uv_loop_t *loop, const char *host, uint16_t port,
                      const struct http_limits *limits, const struct http_handler *handler,
                      struct http_server **out);
uint16_t http_server_port(const struct http_server *s);
void http_server_stats(const struct http_server *s, struct http_stats *out);

/**
 * Drain: stop accepting, close idle connections, let in-flight requests
 * finish (each connection closes after its current response), then call
 * @done once every connection is closed and every request - including
 * aborted ones the handler has yet to answer - has had its response. The
 * server is freed after @done. Calling it again does nothing.
 */
void http_server_shutdown(struct http_server *s, void (*done)(void *data), void *data);

/** Case-insensitive header lookup; NULL if absent. */
const char *http_request_header(const struct http_request *req, const char *name);

/**
 * Ask for the body. If Content-Length exceeds @max_bytes, the server answers
 * 413 itself (the handler's on_abort is not called; the handler must not
 * respond). A chunked body that grows past @max_bytes gets 413 and close.
 * Returns 0, or -E2BIG when the 413 was sent (-ENOMEM: a 503 was sent; the
 * handler must not respond either). -ECONNABORTED: the connection is gone,
 * -EINVAL: the body was already asked for or the request answered; in both
 * cases the handler still responds.
 */
int http_request_read_body(struct http_request *req, enum http_body_mode mode, uint64_t max_bytes);

/** Stop / restart delivering body chunks (backpressure for streaming).
 *  While paused no body event is delivered, on_body_end included, and the
 *  body timeout does not run. */
void http_request_pause(struct http_request *req);
void http_request_resume(struct http_request *req);

/** Respond. Headers and body are copied. Content-Length, Connection, Date and
 *  Server are added by the server. A status outside 200..599 becomes 500;
 *  HEAD, 204 and 304 get no body. */
void http_respond(struct http_request *req, int status, const struct http_header *headers,
                  size_t n_headers, const void *body, size_t body_len);
/** Respond, taking ownership of @body (free()d after writing). */
void http_respond_owned(struct http_request *req, int status, const struct http_header *headers,
                        size_t n_headers, void *body, size_t body_len);
/** {"error": error, "detail": detail} with application/json. @detail may be NULL
 *  ("detail" is then ""). @close forces "Connection: close" (the stream can't
 *  be trusted). */
void http_respond_error(struct http_request *req, int status, const char *error,
                        const char *detail, bool close);

/** "Not Found" for 404 etc. */
const char *http_status_reason(int status);

#endif
