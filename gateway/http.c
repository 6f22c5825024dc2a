/* http.c - ember's HTTP/1.1 server: libuv for I/O, llhttp for parsing.
 *
 * Shape of a connection
 *   One uv_tcp_t, one llhttp parser, and - only while it holds bytes that are
 *   not consumed yet - one read buffer from a server-wide pool. A keep-alive
 *   connection that is idle holds no buffer and no request.
 *
 * One request at a time
 *   The parser pauses (HPE_PAUSED from our callbacks) after the request head
 *   when a body follows, and after every complete message. Bytes behind the
 *   pause stay in the read buffer; nothing more is parsed until the handler
 *   asks for the body or the response has been written. That is what answers
 *   pipelined requests in order.
 *
 * Where request bytes live
 *   llhttp reports the head as spans of the read buffer. We record them as
 *   offsets from the start of the head (the buffer may be compacted between
 *   reads), keep the head's bytes until it is complete, and then copy the head
 *   once into the request's arena: a pooled 4 KiB block that also holds the
 *   request object and the response head, released when the response has been
 *   written. A buffered body is copied once, from the read buffer into its own
 *   allocation (sized by Content-Length when known).
 *
 * Re-entrancy
 *   Handler callbacks run only from the connection's dispatch loop or from
 *   libuv callbacks, never from inside an http_* call the handler made: calls
 *   made outside dispatch (from a timer, the pool, ...) only change state and
 *   queue the connection on a server-wide idle handle ("kick").
 *
 * Timeouts
 *   Each timeout kind has a fixed duration, so deadlines in a per-kind FIFO
 *   list are sorted by construction (h2o's timeout lists): arming and
 *   disarming is O(1) and one uv_timer per server serves every connection.
 *
 * Files
 *   This one keeps the connections: pools and the request arena, timeouts,
 *   the dispatch loop, reading, closing, the public request API, the server.
 *   The llhttp callbacks (bytes into requests) are in http_parse.c, writing
 *   responses in http_write.c; the types all of them share, in
 *   http_internal.h.
 */
#include "gateway/http_internal.h"

#include "common/log.h"

#include <errno.h>
#include <llhttp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>

#define REQ_BLOCK_SIZE 4096u          /* request object + first arena chunk */
#define POOL_MAX_REQS 256u            /* free request blocks kept per server */
#define POOL_MAX_RBUFS 64u            /* free read buffers kept per server */
#define RBUF_MIN (16u << 10)
#define RBUF_SLACK (4u << 10)         /* read buffer = header limit + slack */
#define HEADER_BYTES_MIN 256u
#define HEADER_BYTES_MAX (1u << 20)
#define SMALL_BODY 2048u              /* buffered bodies this small use the arena */
#define LINGER_MS 2000u               /* write + drain budget when closing */
#define LISTEN_BACKLOG 511

/* ---- intrusive lists ---------------------------------------------------- */

static inline void link_init(struct link *l)
{
    l->prev = l->next = l;
}

/** A node is linked when it is not pointing at itself; a head when non-empty. */
static inline bool link_linked(const struct link *l)
{
    return l->next != l;
}

static inline void link_append(struct link *head, struct link *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

static inline void link_remove(struct link *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    link_init(n);
}

static int conn_read_start(struct conn *c);
static void on_kick(uv_idle_t *h);
static void on_timer(uv_timer_t *t);
static void server_maybe_finish(struct http_server *s);

/* ---- limits ------------------------------------------------------------- */

void http_limits_default(struct http_limits *l)
{
    l->header_bytes = HTTP_HEADER_BYTES_DEFAULT;
    l->header_timeout_ms = HTTP_HEADER_TIMEOUT_MS_DEFAULT;
    l->body_timeout_ms = HTTP_BODY_TIMEOUT_MS_DEFAULT;
    l->keepalive_timeout_ms = HTTP_KEEPALIVE_TIMEOUT_MS_DEFAULT;
    l->max_connections = HTTP_MAX_CONNECTIONS_DEFAULT;
}

/* ---- pools and the request arena ---------------------------------------- */

struct arena_chunk {
    struct arena_chunk *next;
    char data[];
};

static struct rbuf *rbuf_get(struct http_server *s)
{
    struct rbuf *rb = s->free_rbufs;
    if (rb) {
        s->free_rbufs = rb->next_free;
        s->n_free_rbufs--;
        return rb;
    }
    return malloc(sizeof(*rb) + s->rbuf_cap);
}

static void rbuf_put(struct http_server *s, struct rbuf *rb)
{
    if (s->n_free_rbufs < POOL_MAX_RBUFS && !s->finishing) {
        rb->next_free = s->free_rbufs;
        s->free_rbufs = rb;
        s->n_free_rbufs++;
    } else {
        free(rb);
    }
}

static void conn_rbuf_release(struct conn *c)
{
    if (c->rb) {
        rbuf_put(c->server, c->rb);
        c->rb = NULL;
    }
    c->rlen = c->rpos = c->head_start = 0;
}

struct request *http__request_new(struct http_server *s)
{
    struct request *r = s->free_reqs;
    if (r) {
        s->free_reqs = r->next_free;
        s->n_free_reqs--;
    } else {
        r = malloc(REQ_BLOCK_SIZE);
        if (!r)
            return NULL;
    }
    memset(r, 0, sizeof(*r));
    r->server = s;
    r->pub.server = s;
    r->pub.content_length = -1;
    r->cur = (char *)(r + 1);
    r->end = (char *)r + REQ_BLOCK_SIZE;
    s->live_requests++;
    return r;
}

void http__request_free(struct request *r)
{
    struct http_server *s = r->server;
    while (r->chunks) {
        struct arena_chunk *next = r->chunks->next;
        free(r->chunks);
        r->chunks = next;
    }
    if (r->body_heap)
        free(r->body_buf);
    free(r->free_after);
    s->live_requests--;
    if (s->n_free_reqs < POOL_MAX_REQS && !s->finishing) {
        r->next_free = s->free_reqs;
        s->free_reqs = r;
        s->n_free_reqs++;
    } else {
        free(r);
    }
    if (s->draining)
        server_maybe_finish(s);
}

/** Bump allocation from the request's arena; freed with the request. */
void *http__arena_alloc(struct request *r, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    if ((size_t)(r->end - r->cur) < n) {
        size_t size = n > ARENA_CHUNK_MIN ? n : ARENA_CHUNK_MIN;
        struct arena_chunk *ch = malloc(sizeof(*ch) + size);
        if (!ch)
            return NULL;
        ch->next = r->chunks;
        r->chunks = ch;
        r->cur = ch->data;
        r->end = ch->data + size;
    }
    void *p = r->cur;
    r->cur += n;
    return p;
}

/* ---- timeouts ------------------------------------------------------------ */

static uint32_t tmo_ms(const struct http_server *s, enum tmo k)
{
    switch (k) {
    case TMO_HEADER: return s->limits.header_timeout_ms;
    case TMO_BODY: return s->limits.body_timeout_ms;
    case TMO_KEEPALIVE: return s->limits.keepalive_timeout_ms;
    case TMO_LINGER: return LINGER_MS;
    default: return 0;
    }
}

static void timer_arm(struct http_server *s, uint64_t due)
{
    if (s->timer_armed && s->timer_due <= due)
        return;
    uint64_t now = uv_now(s->loop);
    uv_timer_start(&s->timer, on_timer, due > now ? due - now : 0, 0);
    s->timer_armed = true;
    s->timer_due = due;
}

/** (Re)start timeout @k for @c from now, or disarm with TMO_NONE. */
void http__conn_timeout_set(struct conn *c, enum tmo k)
{
    struct http_server *s = c->server;
    if (link_linked(&c->tmo_link))
        link_remove(&c->tmo_link);
    c->tmo = TMO_NONE;
    if (k == TMO_NONE)
        return;
    uint32_t ms = tmo_ms(s, k);
    if (ms == 0) /* 0 disables that timeout */
        return;
    c->tmo = k;
    c->deadline = uv_now(s->loop) + ms;
    link_append(&s->tmo[k], &c->tmo_link);
    timer_arm(s, c->deadline);
}

static void conn_fail_request(struct conn *c, int status, const char *detail);

static void conn_expire(struct conn *c, enum tmo k)
{
    struct http_server *s = c->server;
    switch (k) {
    case TMO_HEADER:
        s->stats.timeouts_total++;
        if (c->state == C_HEAD)
            http__conn_send_error(c, 408, "timed out waiting for the request headers");
        else
            http__conn_close_now(c);
        break;
    case TMO_BODY:
        s->stats.timeouts_total++;
        if (c->state == C_REQUEST)
            conn_fail_request(c, 408, "timed out waiting for the request body");
        else /* a stalled response write or an unread body after one */
            http__conn_close_now(c);
        break;
    case TMO_KEEPALIVE:
    case TMO_LINGER:
    default:
        http__conn_close_now(c);
        break;
    }
}

static void on_timer(uv_timer_t *t)
{
    struct http_server *s = t->data;
    s->timer_armed = false;
    uint64_t now = uv_now(s->loop);
    for (int k = 0; k < TMO_N; k++) {
        while (link_linked(&s->tmo[k])) {
            struct conn *c = container_of(s->tmo[k].next, struct conn, tmo_link);
            if (c->deadline > now)
                break;
            http__conn_timeout_set(c, TMO_NONE);
            conn_expire(c, (enum tmo)k);
        }
    }
    uint64_t due = UINT64_MAX;
    for (int k = 0; k < TMO_N; k++) {
        if (link_linked(&s->tmo[k])) {
            struct conn *c = container_of(s->tmo[k].next, struct conn, tmo_link);
            if (c->deadline < due)
                due = c->deadline;
        }
    }
    if (due != UINT64_MAX)
        timer_arm(s, due);
}

/* ---- deferred dispatch ----------------------------------------------------- */

/* Run @c's dispatch loop soon: right away if it is running, else on the next
 * loop iteration. Never calls the handler itself. */
void http__conn_kick(struct conn *c)
{
    if (c->in_dispatch || c->closing || link_linked(&c->kick_link))
        return;
    link_append(&c->server->kicks, &c->kick_link);
    uv_idle_start(&c->server->kick, on_kick);
}

static void on_kick(uv_idle_t *h)
{
    struct http_server *s = h->data;
    struct link pending;
    uv_idle_stop(h);
    if (!link_linked(&s->kicks))
        return;
    pending.next = s->kicks.next;
    pending.prev = s->kicks.prev;
    pending.next->prev = &pending;
    pending.prev->next = &pending;
    link_init(&s->kicks);
    while (link_linked(&pending)) {
        struct conn *c = container_of(pending.next, struct conn, kick_link);
        link_remove(&c->kick_link);
        http__conn_dispatch(c);
    }
}

/* ---- the dispatch loop ----------------------------------------------------- */

enum feed_result { FEED_MORE, FEED_PAUSED, FEED_ERROR };

/* Give the parser the bytes it has not seen. */
static enum feed_result conn_feed(struct conn *c)
{
    const char *p = c->rb->data + c->rpos;
    size_t n = c->rlen - c->rpos;
    llhttp_errno_t e = llhttp_execute(&c->parser, p, n);
    if (e == HPE_OK) {
        c->rpos = c->rlen;
        return FEED_MORE;
    }
    const char *pos = llhttp_get_error_pos(&c->parser);
    if (pos && pos >= p && pos <= p + n)
        c->rpos = (uint32_t)(pos - c->rb->data);
    if (e == HPE_PAUSED) {
        llhttp_resume(&c->parser);
        return FEED_PAUSED;
    }
    if (!c->err_status) {
        c->err_status = 400;
        c->err_detail = llhttp_get_error_reason(&c->parser);
        if (!c->err_detail)
            c->err_detail = llhttp_errno_name(e);
    }
    return FEED_ERROR;
}

static void conn_enter_head(struct conn *c)
{
    c->state = C_HEAD;
    c->head_start = c->rpos;
    c->msg_complete = false;
    c->err_status = 0;
    c->err_detail = NULL;
    c->head_started = c->rpos < c->rlen;
    http__conn_timeout_set(c, c->head_started ? TMO_HEADER : TMO_KEEPALIVE);
}

static void conn_head_error(struct conn *c)
{
    struct http_server *s = c->server;
    if (c->req) { /* built, then found wanting (head size) */
        struct request *r = c->req;
        c->req = NULL;
        http__request_free(r);
    }
    if (c->err_status != 408)
        s->stats.parse_errors_total++;
    http__conn_send_error(c, c->err_status ? c->err_status : 400, c->err_detail);
}

static bool step_head(struct conn *c)
{
    struct http_server *s = c->server;
    if (s->draining) {
        http__conn_close_now(c);
        return false;
    }
    if (c->rpos == c->rlen) {
        if (c->peer_eof)
            http__conn_close_now(c);
        return false;
    }
    if (!c->head_started) { /* first byte after keep-alive idle */
        c->head_started = true;
        http__conn_timeout_set(c, TMO_HEADER);
    }
    switch (conn_feed(c)) {
    case FEED_ERROR:
        conn_head_error(c);
        return false;
    case FEED_MORE:
        if (c->rlen - c->head_start > s->limits.header_bytes) {
            c->err_status = 431;
            c->err_detail = "request line and headers exceed the size limit";
            conn_head_error(c);
        } else if (c->peer_eof) {
            http__conn_close_now(c);
        }
        return false;
    case FEED_PAUSED:
        break;
    }
    if (!c->req || c->rpos - c->head_start > s->limits.header_bytes) {
        if (!c->err_status) {
            c->err_status = c->req ? 431 : 400;
            c->err_detail = c->req ? "request line and headers exceed the size limit"
                                   : "unexpected parser pause";
        }
        conn_head_error(c);
        return false;
    }
    struct request *r = c->req;
    c->state = C_REQUEST;
    http__conn_timeout_set(c, TMO_NONE);
    s->stats.requests_total++;
    r->delivered = true;
    s->handler.on_request(&r->pub, s->handler.data);
    return true;
}

static bool step_request(struct conn *c)
{
    struct http_server *s = c->server;
    struct request *r = c->req;
    if (!r->body_requested)
        return false;
    if (!c->msg_complete) {
        if (r->paused)
            return false;
        if (c->rpos == c->rlen) {
            if (c->peer_eof) /* body cut short: abort */
                http__conn_close_now(c);
            return false;
        }
        uint32_t before = c->rpos;
        if (conn_feed(c) == FEED_ERROR) {
            if (c->err_status == 400)
                s->stats.parse_errors_total++;
            conn_fail_request(c, c->err_status, c->err_detail);
            return false;
        }
        if (c->state == C_REQUEST && c->req == r && !c->msg_complete && !r->paused &&
            c->rpos != before)
            http__conn_timeout_set(c, TMO_BODY); /* progress: restart the inactivity clock */
        return true;
    }
    if (!r->body_end_sent && !r->paused) { /* paused: no body events at all */
        r->body_end_sent = true;
        http__conn_timeout_set(c, TMO_NONE);
        if (r->mode == HTTP_BODY_BUFFER && r->body_buf) {
            r->body_buf[r->pub.body_len] = '\0';
            r->pub.body = r->body_buf;
        }
        if (s->handler.on_body_end)
            s->handler.on_body_end(&r->pub, s->handler.data);
        return true;
    }
    return false;
}

static bool step_done(struct conn *c)
{
    struct request *r = c->req;
    c->req = NULL;
    if (r)
        http__request_free(r);
    if (c->must_close || c->server->draining) {
        http__conn_shutdown(c, !c->msg_complete || c->rpos < c->rlen);
        return false;
    }
    if (!c->msg_complete) {
        c->state = C_DISCARD;
        http__conn_timeout_set(c, TMO_BODY);
        return true;
    }
    conn_enter_head(c);
    return true;
}

static bool step_discard(struct conn *c)
{
    if (c->msg_complete) {
        conn_enter_head(c);
        return true;
    }
    if (c->rpos == c->rlen) {
        if (c->peer_eof)
            http__conn_close_now(c);
        return false;
    }
    uint32_t before = c->rpos;
    if (conn_feed(c) == FEED_ERROR) {
        http__conn_close_now(c); /* the response is out; nothing more to say */
        return false;
    }
    if (c->rpos != before && !c->msg_complete)
        http__conn_timeout_set(c, TMO_BODY);
    return true;
}

/* Read while there is room and the peer may still send. */
static void conn_update_reading(struct conn *c)
{
    struct http_server *s = c->server;
    uint32_t keep = c->state == C_HEAD ? c->head_start : c->rpos;
    bool full = c->rb && c->rlen - keep >= s->rbuf_cap;
    bool want = !c->peer_eof && !full;
    if (want && !c->reading) {
        if (conn_read_start(c) == 0)
            c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    if (c->rb && c->rlen == keep && c->state != C_CLOSING)
        conn_rbuf_release(c);
}

void http__conn_dispatch(struct conn *c)
{
    if (c->in_dispatch || c->closing)
        return;
    c->in_dispatch = true;
    bool more = true;
    while (more && !c->closing) {
        if (c->failed) {
            http__conn_close_now(c);
            break;
        }
        switch (c->state) {
        case C_HEAD: more = step_head(c); break;
        case C_REQUEST: more = step_request(c); break;
        case C_DONE: more = step_done(c); break;
        case C_DISCARD: more = step_discard(c); break;
        case C_WRITING:
        case C_CLOSING:
        default: more = false; break;
        }
    }
    c->in_dispatch = false;
    if (!c->closing && c->state != C_CLOSING)
        conn_update_reading(c);
}

/* ---- reading ------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = (struct conn *)h;
    struct http_server *s = c->server;
    if (!c->rb) {
        c->rb = rbuf_get(s);
        c->rlen = c->rpos = c->head_start = 0;
        if (!c->rb) {
            *buf = uv_buf_init(NULL, 0); /* UV_ENOBUFS: the connection closes */
            return;
        }
    }
    if (c->state == C_CLOSING)
        c->rlen = c->rpos = c->head_start = 0; /* draining: discard */
    uint32_t keep = c->state == C_HEAD ? c->head_start : c->rpos;
    if (keep == c->rlen) {
        c->rlen = c->rpos = c->head_start = 0;
    } else if (keep > 0 && s->rbuf_cap - c->rlen < s->rbuf_cap / 4) {
        /* Slide the retained bytes down; spans are relative to head_start. */
        memmove(c->rb->data, c->rb->data + keep, c->rlen - keep);
        c->rlen -= keep;
        c->rpos -= keep;
        c->head_start = c->head_start >= keep ? c->head_start - keep : 0;
    }
    *buf = uv_buf_init(c->rb->data + c->rlen, s->rbuf_cap - c->rlen);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = (struct conn *)st;
    if (c->closing)
        return;
    if (nread > 0) {
        if (c->state == C_CLOSING) {
            conn_rbuf_release(c);
            return;
        }
        c->rlen += (uint32_t)nread;
        http__conn_dispatch(c);
        return;
    }
    if (nread == 0) {
        if (c->state != C_CLOSING)
            conn_update_reading(c);
        return;
    }
    if (nread == UV_EOF) {
        c->peer_eof = true;
        if (c->reading) {
            uv_read_stop(st);
            c->reading = false;
        }
        if (c->state == C_CLOSING) {
            if (c->lingering)
                http__conn_close_now(c);
            return; /* on_shutdown sees peer_eof */
        }
        http__conn_dispatch(c);
        return;
    }
    http__conn_close_now(c); /* ECONNRESET, ENOBUFS, ... */
}

/* uv_read_start needs the callbacks every time; keep them in one place. */
static int conn_read_start(struct conn *c)
{
    return uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- closing ------------------------------------------------------------- */

static void on_shutdown(uv_shutdown_t *sr, int status)
{
    struct conn *c = container_of(sr, struct conn, sreq);
    if (c->closing)
        return;
    if (status < 0 || !c->linger || c->peer_eof) {
        http__conn_close_now(c);
        return;
    }
    /* The client may still be sending (a body we refused): read and drop it
     * until EOF or the linger deadline, so our response is not lost to a RST. */
    c->lingering = true;
    if (!c->reading && conn_read_start(c) == 0)
        c->reading = true;
}

/* Close after what is queued has been written: shut down our side, then
 * (with @linger) drain the peer for a bounded time. */
void http__conn_shutdown(struct conn *c, bool linger)
{
    c->state = C_CLOSING;
    c->linger = linger;
    http__conn_timeout_set(c, TMO_LINGER);
    if (link_linked(&c->kick_link))
        link_remove(&c->kick_link);
    if (!c->peer_eof && !c->reading && conn_read_start(c) == 0)
        c->reading = true;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
        http__conn_close_now(c);
}

/* Take the request away from the connection (the handler's later response
 * only frees it), answer with an error of our own, then tell the handler. */
static void conn_fail_request(struct conn *c, int status, const char *detail)
{
    struct http_server *s = c->server;
    struct request *r = c->req;
    c->req = NULL;
    if (r)
        r->conn = NULL;
    http__conn_send_error(c, status, detail);
    if (r) {
        if (r->delivered && s->handler.on_abort)
            s->handler.on_abort(&r->pub, s->handler.data);
        else if (!r->delivered)
            http__request_free(r);
    }
}

static void on_conn_close(uv_handle_t *h)
{
    struct conn *c = (struct conn *)h;
    struct http_server *s = c->server;
    conn_rbuf_release(c);
    link_remove(&c->link);
    if (!c->rejected)
        s->stats.connections_current--;
    s->n_handles--;
    free(c);
    server_maybe_finish(s);
}

/* Close at once. A request the handler still owns is aborted. */
void http__conn_close_now(struct conn *c)
{
    struct http_server *s = c->server;
    if (c->closing)
        return;
    c->closing = true;
    c->state = C_CLOSING;
    http__conn_timeout_set(c, TMO_NONE);
    if (link_linked(&c->kick_link))
        link_remove(&c->kick_link);
    struct request *aborted = NULL;
    struct request *r = c->req;
    if (r) {
        if (r->responded) {
            if (!r->writing) { /* else on_write (UV_ECANCELED) frees it */
                c->req = NULL;
                http__request_free(r);
            }
        } else {
            c->req = NULL;
            r->conn = NULL;
            if (r->delivered)
                aborted = r;
            else
                http__request_free(r);
        }
    }
    uv_close((uv_handle_t *)&c->tcp, on_conn_close);
    if (aborted && s->handler.on_abort)
        s->handler.on_abort(&aborted->pub, s->handler.data);
}

/* ---- public request API ------------------------------------------------------ */

const char *http_request_header(const struct http_request *req, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < req->n_headers; i++)
        if (req->headers[i].name_len == len && strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

int http_request_read_body(struct http_request *req, enum http_body_mode mode, uint64_t max_bytes)
{
    struct request *r = container_of(req, struct request, pub);
    struct conn *c = r->conn;
    if (r->responded || r->body_requested)
        return -EINVAL;
    if (!c)
        return -ECONNABORTED;
    if (req->content_length > 0 && (uint64_t)req->content_length > max_bytes) {
        char detail[96];
        snprintf(detail, sizeof(detail), "request body of %lld bytes exceeds the limit of %llu",
                 (long long)req->content_length, (unsigned long long)max_bytes);
        http_respond_error(req, 413, "payload too large", detail, true);
        return -E2BIG;
    }
    r->body_requested = true;
    r->mode = mode;
    r->body_max = max_bytes;
    if (mode == HTTP_BODY_BUFFER) {
        req->body = (const uint8_t *)"";
        if (req->content_length > 0) {
            size_t need = (size_t)req->content_length + 1;
            r->body_buf = need <= SMALL_BODY ? http__arena_alloc(r, need) : malloc(need);
            if (!r->body_buf) {
                http_respond_error(req, 503, "out of memory", "no memory for the request body",
                                   true);
                return -ENOMEM;
            }
            r->body_heap = need > SMALL_BODY;
            r->body_cap = need;
        }
    }
    if (!c->msg_complete) {
        if (r->expect_continue)
            http__send_continue(c, r);
        http__conn_timeout_set(c, TMO_BODY);
    }
    http__conn_kick(c);
    return 0;
}

void http_request_pause(struct http_request *req)
{
    struct request *r = container_of(req, struct request, pub);
    r->paused = true;
    if (r->conn && r->conn->state == C_REQUEST && r->conn->tmo == TMO_BODY)
        http__conn_timeout_set(r->conn, TMO_NONE); /* our choice, not the client's fault */
}

void http_request_resume(struct http_request *req)
{
    struct request *r = container_of(req, struct request, pub);
    struct conn *c = r->conn;
    if (!r->paused)
        return;
    r->paused = false;
    if (c && c->state == C_REQUEST && r->body_requested && !c->msg_complete) {
        http__conn_timeout_set(c, TMO_BODY);
        http__conn_kick(c);
    }
}

/* ---- server --------------------------------------------------------------- */

static void format_peer(uv_tcp_t *t, char *out, size_t size)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char ip[INET6_ADDRSTRLEN];
    snprintf(out, size, "unknown");
    if (uv_tcp_getpeername(t, (struct sockaddr *)&ss, &len) < 0)
        return;
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        if (uv_ip6_name(a, ip, sizeof(ip)) == 0)
            snprintf(out, size, "[%s]:%u", ip, (unsigned)ntohs(a->sin6_port));
    } else if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        if (uv_ip4_name(a, ip, sizeof(ip)) == 0)
            snprintf(out, size, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
    }
}

static void on_connection(uv_stream_t *ls, int status)
{
    struct http_server *s = ls->data;
    if (status < 0) {
        log_warn("http: accept: %s", uv_strerror(status));
        return;
    }
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        log_error("http: accept: out of memory");
        return;
    }
    uv_tcp_init(s->loop, &c->tcp);
    c->server = s;
    link_init(&c->kick_link);
    link_init(&c->tmo_link);
    c->tmo = TMO_NONE;
    link_append(&s->conns, &c->link);
    s->n_handles++;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) < 0) {
        c->rejected = true;
        http__conn_close_now(c);
        return;
    }
    if (s->draining ||
        (s->limits.max_connections && s->stats.connections_current >= s->limits.max_connections)) {
        s->stats.rejected_total++;
        c->rejected = true;
        http__conn_close_now(c);
        return;
    }
    s->stats.connections_total++;
    s->stats.connections_current++;
    uv_tcp_nodelay(&c->tcp, 1);
    format_peer(&c->tcp, c->peer, sizeof(c->peer));
    llhttp_init(&c->parser, HTTP_REQUEST, &s->settings);
    c->parser.data = c;
    c->state = C_HEAD;
    c->head_started = true; /* the header clock runs from accept */
    http__conn_timeout_set(c, TMO_HEADER);
    if (conn_read_start(c) < 0) {
        http__conn_close_now(c);
        return;
    }
    c->reading = true;
}

static void server_free(struct http_server *s)
{
    while (s->free_rbufs) {
        struct rbuf *next = s->free_rbufs->next_free;
        free(s->free_rbufs);
        s->free_rbufs = next;
    }
    while (s->free_reqs) {
        struct request *next = s->free_reqs->next_free;
        free(s->free_reqs);
        s->free_reqs = next;
    }
    free(s);
}

static void on_aux_close(uv_handle_t *h)
{
    struct http_server *s = h->data;
    if (--s->open_aux > 0)
        return;
    if (s->done)
        s->done(s->done_data);
    server_free(s);
}

/* When draining and nothing is left (no connection handle, no request the
 * handler still holds), close our own handles; on_aux_close calls done. */
static void server_maybe_finish(struct http_server *s)
{
    if (!s->draining || s->finishing || s->n_handles || s->live_requests)
        return;
    s->finishing = true;
    uv_close((uv_handle_t *)&s->timer, on_aux_close);
    uv_close((uv_handle_t *)&s->kick, on_aux_close);
}

static int parse_host(const char *host, uint16_t port, struct sockaddr_storage *ss)
{
    char buf[INET6_ADDRSTRLEN + 2];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        if (n - 2 >= sizeof(buf))
            return -EINVAL;
        memcpy(buf, host + 1, n - 2);
        buf[n - 2] = '\0';
        host = buf;
    }
    memset(ss, 0, sizeof(*ss));
    if (strchr(host, ':'))
        return uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) ? -EINVAL : 0;
    return uv_ip4_addr(host, port, (struct sockaddr_in *)ss) ? -EINVAL : 0;
}

int http_server_start(uv_loop_t *loop, const char *host, uint16_t port,
                      const struct http_limits *limits, const struct http_handler *handler,
                      struct http_server **out)
{
    struct sockaddr_storage addr;
    int rc;

    if (!loop || !host || !handler || !handler->on_request || !out)
        return -EINVAL;
    rc = parse_host(host, port, &addr);
    if (rc < 0) {
        log_error("http: '%s' is not an IPv4 or IPv6 address", host);
        return rc;
    }
    struct http_server *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->loop = loop;
    if (limits)
        s->limits = *limits;
    else
        http_limits_default(&s->limits);
    if (s->limits.header_bytes == 0)
        s->limits.header_bytes = HTTP_HEADER_BYTES_DEFAULT;
    if (s->limits.header_bytes < HEADER_BYTES_MIN)
        s->limits.header_bytes = HEADER_BYTES_MIN;
    if (s->limits.header_bytes > HEADER_BYTES_MAX)
        s->limits.header_bytes = HEADER_BYTES_MAX;
    s->rbuf_cap = s->limits.header_bytes + RBUF_SLACK;
    if (s->rbuf_cap < RBUF_MIN)
        s->rbuf_cap = RBUF_MIN;
    s->handler = *handler;

    http__parser_settings_init(&s->settings);

    link_init(&s->conns);
    link_init(&s->kicks);
    for (int k = 0; k < TMO_N; k++)
        link_init(&s->tmo[k]);

    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    uv_idle_init(loop, &s->kick);
    s->kick.data = s;
    rc = uv_tcp_init(loop, &s->listener);
    if (rc < 0) {
        s->open_aux = 2;
        goto err_close;
    }
    s->listener.data = s;
    s->open_aux = 3;

    rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, LISTEN_BACKLOG, on_connection);
    if (rc < 0)
        goto err_listener;

    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen) == 0)
        s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                    : ((struct sockaddr_in *)&bound)->sin_port);
    *out = s;
    return 0;

err_listener:
    log_error("http: listen on %s:%u: %s", host, (unsigned)port, uv_strerror(rc));
    uv_close((uv_handle_t *)&s->listener, on_aux_close);
err_close:
    /* Handles on the loop are freed in their close callbacks, with the server. */
    s->draining = s->finishing = true;
    uv_close((uv_handle_t *)&s->timer, on_aux_close);
    uv_close((uv_handle_t *)&s->kick, on_aux_close);
    return rc;
}

uint16_t http_server_port(const struct http_server *s)
{
    return s->port;
}

void http_server_stats(const struct http_server *s, struct http_stats *out)
{
    *out = s->stats;
}

void http_server_shutdown(struct http_server *s, void (*done)(void *data), void *data)
{
    if (!s || s->draining)
        return;
    s->draining = true;
    s->done = done;
    s->done_data = data;
    uv_close((uv_handle_t *)&s->listener, on_aux_close);
    /* Idle connections go now; the others close after their response
     * (step_done and respond look at draining). http__conn_close_now unlinks
     * nothing, so walking the list is safe; it aborts no request here. */
    for (struct link *l = s->conns.next; l != &s->conns; l = l->next) {
        struct conn *c = container_of(l, struct conn, link);
        if (!c->closing && (c->state == C_HEAD || c->state == C_DISCARD))
            http__conn_close_now(c);
    }
    server_maybe_finish(s);
}
