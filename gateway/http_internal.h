/* http_internal.h - the HTTP server's types and what its files share
 * (internal to them; api.c and emberd.c use http.h only).
 *
 * A connection (struct conn), the request it carries (struct request, the
 * head of its arena block) and the server (struct http_server), with the
 * pieces they embed: the read buffer and the spans of a head being parsed,
 * the links of the server's lists, the timeout kinds, the connection states.
 *
 * The server's files:
 *   http.c        connections, pools and the request arena, timeouts, the
 *                 dispatch loop, reading, closing, the public request API,
 *                 the server;
 *   http_parse.c  the llhttp callbacks: bytes into requests, with their limits;
 *   http_write.c  responses: the head, the writes, the server's own errors.
 */
#ifndef EMBER_GATEWAY_HTTP_INTERNAL_H
#define EMBER_GATEWAY_HTTP_INTERNAL_H

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "gateway/http.h"

/* Smallest chunk the request arena adds; a response body remainder up to
 * this size is copied into the arena rather than malloc()ed. */
#define ARENA_CHUNK_MIN 4096u

#define container_of(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* An intrusive list node or head (operations in http.c). */
struct link {
    struct link *prev, *next;
};

/* Offsets of the head's pieces, relative to the start of the head. */
struct span {
    uint32_t off, len;
};

struct head_spans {
    struct span method, url;
    struct span name[HTTP_MAX_HEADERS], value[HTTP_MAX_HEADERS];
    uint32_t n_headers;
    bool in_header;
};

/* A pooled read buffer; spans live here because only a connection that is
 * in the middle of a head (and so holds a buffer) needs them. */
struct rbuf {
    struct rbuf *next_free;
    struct head_spans spans;
    char data[];
};

enum tmo { TMO_HEADER, TMO_BODY, TMO_KEEPALIVE, TMO_LINGER, TMO_N, TMO_NONE = TMO_N };

enum conn_state {
    C_HEAD,    /* waiting for / parsing a request head */
    C_REQUEST, /* the handler has the request; body read on demand */
    C_WRITING, /* response queued with uv_write */
    C_DONE,    /* response written; release the request, then next */
    C_DISCARD, /* response written; swallowing an unread small body */
    C_CLOSING, /* final write + shutdown + drain, or uv_close under way */
};

struct conn;
struct arena_chunk; /* only the arena (http.c) looks inside */

struct request {
    struct http_request pub;
    struct request *next_free;
    struct conn *conn; /* NULL once aborted: the response only frees */
    struct http_server *server;
    /* arena */
    char *cur, *end;
    struct arena_chunk *chunks;
    /* body */
    uint8_t *body_buf;
    size_t body_cap;
    uint64_t body_max;
    enum http_body_mode mode;
    bool body_heap;
    bool body_requested;
    bool body_end_sent;
    bool paused;
    bool is_head;
    bool expect_continue;
    bool continue_sent;
    bool delivered; /* on_request was called */
    bool responded;
    bool writing; /* wreq pending */
    /* response */
    void *free_after; /* owned body or copied remainder */
    uv_write_t wreq;
};

struct conn {
    uv_tcp_t tcp; /* first: libuv hands us &tcp */
    struct http_server *server;
    struct link link;      /* server->conns */
    struct link kick_link; /* server->kicks */
    struct link tmo_link;  /* server->tmo[tmo] */
    uint64_t deadline;
    enum tmo tmo;
    enum conn_state state;
    llhttp_t parser;
    struct rbuf *rb;
    uint32_t rlen;       /* valid bytes in rb */
    uint32_t rpos;       /* bytes given to the parser */
    uint32_t head_start; /* where the current head begins (C_HEAD) */
    struct request *req;
    int err_status;
    const char *err_detail;
    uint32_t trailer_bytes;
    bool head_started; /* a byte of this head arrived (header timeout runs) */
    bool msg_complete;
    bool in_dispatch;
    bool reading;
    bool peer_eof;
    bool must_close;
    bool failed;
    bool linger;
    bool lingering;
    bool closing; /* uv_close called */
    bool rejected;
    uv_shutdown_t sreq;
    uv_write_t cont_req;
    char peer[64];
};

struct http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t timer;
    uv_idle_t kick;
    struct http_limits limits;
    struct http_handler handler;
    llhttp_settings_t settings;
    struct http_stats stats;
    struct link conns;
    struct link kicks;
    struct link tmo[TMO_N];
    uint64_t timer_due;
    bool timer_armed;
    bool draining;
    bool finishing;
    uint16_t port;
    uint32_t rbuf_cap;
    uint32_t n_handles;     /* connection handles not yet closed */
    uint32_t live_requests; /* requests not yet freed */
    int open_aux;           /* listener, timer, kick */
    void (*done)(void *data);
    void *done_data;
    time_t date_sec;
    char date[32];
    struct rbuf *free_rbufs;
    uint32_t n_free_rbufs;
    struct request *free_reqs;
    uint32_t n_free_reqs;
};

/* ---- http.c: the request arena ---- */

/** A new request on @s (a pooled block, its arena empty), or NULL. */
struct request *http__request_new(struct http_server *s);
/** Free @r, its arena, body and owned response; a draining server may finish. */
void http__request_free(struct request *r);
/** Bump allocation from the request's arena; freed with the request. */
void *http__arena_alloc(struct request *r, size_t n);

/* ---- http.c: connections ---- */

/** (Re)start timeout @k for @c from now, or disarm with TMO_NONE. */
void http__conn_timeout_set(struct conn *c, enum tmo k);
/** Run @c's dispatch loop soon; never calls the handler itself. */
void http__conn_kick(struct conn *c);
/** Run @c's dispatch loop now (from libuv callbacks, not from inside http_*). */
void http__conn_dispatch(struct conn *c);
/** Close once what is queued is written; with @linger drain the peer first. */
void http__conn_shutdown(struct conn *c, bool linger);
/** Close at once; a request the handler still owns is aborted. */
void http__conn_close_now(struct conn *c);

/* ---- http_parse.c: bytes into requests ---- */

/** Fill @settings with the callbacks that parse requests on a struct conn. */
void http__parser_settings_init(llhttp_settings_t *settings);
/** RFC 9110 tchar: may @ch appear in a token (a header field name)? */
bool http__is_tchar(unsigned char ch);

/* ---- http_write.c: responses ---- */

/** Answer with an error response of the server's own, then close @c. */
void http__conn_send_error(struct conn *c, int status, const char *detail);
/** Send "100 Continue" for @r; a failed write marks @c failed. */
void http__send_continue(struct conn *c, struct request *r);

#endif
