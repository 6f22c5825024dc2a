/* http_write.c - writing responses for the HTTP server (http.c).
 *
 * A handler's response: the status line and head are built into the
 * request's arena (the handler's headers checked, the ones the server owns
 * added), head and body go out in one uv_try_write, and only what did not
 * fit is queued with uv_write (a borrowed body's remainder copied, an owned
 * body kept until it is written). Whether the connection stays open is
 * decided here too: an unread body is swallowed only when it is small and
 * on its way. The server's own answers, JSON error responses and
 * "100 Continue", are written here as well.
 *
 * A written response hands the connection back to the dispatch loop in
 * http.c (C_DONE); a failed write marks it failed, and the loop closes it.
 */
#include "gateway/http_internal.h"

#include "common/cleanup.h"
#include "common/fmt.h"
#include "common/log.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define DISCARD_MAX (64u << 10) /* unread body we swallow to keep alive */

/* ---- the response head and error bodies ---------------------------------- */

const char *http_status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request"; /* nginx's, for the log: no client hears it */
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* "bad request" for 400: the "error" member of the JSON errors we generate. */
static const char *status_error_name(int status, char *buf, size_t size)
{
    const char *r = http_status_reason(status);
    size_t i = 0;
    for (; r[i] && i + 1 < size; i++)
        buf[i] = (r[i] >= 'A' && r[i] <= 'Z') ? (char)(r[i] - 'A' + 'a') : r[i];
    buf[i] = '\0';
    return buf;
}

/* Date header value, formatted once per second; C-locale names on purpose. */
static const char *server_date(struct http_server *s)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    if (now != s->date_sec || !s->date[0]) {
        struct tm tm;
        gmtime_r(&now, &tm);
        /* "Sun, 06 Nov 1994 08:49:37 GMT" (IMF-fixdate), 29 bytes */
        char *d = s->date;
        unsigned year = (unsigned)(tm.tm_year + 1900) % 10000;
        memcpy(d, days[tm.tm_wday % 7], 3);
        d[3] = ',';
        d[4] = ' ';
        d[5] = (char)('0' + tm.tm_mday / 10 % 10);
        d[6] = (char)('0' + tm.tm_mday % 10);
        d[7] = ' ';
        memcpy(d + 8, months[tm.tm_mon % 12], 3);
        d[11] = ' ';
        d[12] = (char)('0' + year / 1000);
        d[13] = (char)('0' + year / 100 % 10);
        d[14] = (char)('0' + year / 10 % 10);
        d[15] = (char)('0' + year % 10);
        d[16] = ' ';
        d[17] = (char)('0' + tm.tm_hour / 10 % 10);
        d[18] = (char)('0' + tm.tm_hour % 10);
        d[19] = ':';
        d[20] = (char)('0' + tm.tm_min / 10 % 10);
        d[21] = (char)('0' + tm.tm_min % 10);
        d[22] = ':';
        d[23] = (char)('0' + tm.tm_sec / 10 % 10);
        d[24] = (char)('0' + tm.tm_sec % 10);
        memcpy(d + 25, " GMT", 5);
        s->date_sec = now;
    }
    return s->date;
}

static inline size_t str_len(const char *s, size_t len)
{
    return (len || !s) ? len : strlen(s);
}

static bool name_is(const char *name, size_t len, const char *lit, size_t lit_len)
{
    return len == lit_len && strncasecmp(name, lit, len) == 0;
}

#define NAME_IS(n, l, lit) name_is((n), (l), (lit), sizeof(lit) - 1)

/* A handler header we may put on the wire: token name, no CR/LF/NUL in the
 * value (response splitting), and none of the ones the server owns. */
static bool header_usable(const struct http_header *h, size_t nl, size_t vl)
{
    if (!h->name || nl == 0 || (vl && !h->value))
        return false;
    for (size_t i = 0; i < nl; i++)
        if (!http__is_tchar((unsigned char)h->name[i]))
            return false;
    for (size_t i = 0; i < vl; i++)
        if (h->value[i] == '\r' || h->value[i] == '\n' || h->value[i] == '\0')
            return false;
    if (NAME_IS(h->name, nl, "content-length") || NAME_IS(h->name, nl, "transfer-encoding") ||
        NAME_IS(h->name, nl, "connection") || NAME_IS(h->name, nl, "date") ||
        NAME_IS(h->name, nl, "server"))
        return false;
    return true;
}

/* Upper bound of the response head build_head() writes. */
static size_t head_bound(const struct http_header *h, size_t n)
{
    size_t size = 256;
    for (size_t i = 0; i < n; i++)
        size += str_len(h[i].name, h[i].name_len) + str_len(h[i].value, h[i].value_len) + 4;
    return size;
}

/* Status line, the handler's headers, then Content-Length (unless < 0),
 * Date, Server and Connection. Returns the length written. */
static size_t build_head(struct http_server *s, char *out, int status,
                         const struct http_header *h, size_t n, int64_t content_length,
                         bool close)
{
    char *p = out;
    const char *reason = http_status_reason(status);
    p = FMT_LIT(p, "HTTP/1.1 ");
    p = fmt_u64(p, (uint64_t)status);
    *p++ = ' ';
    p = fmt_bytes(p, reason, strlen(reason));
    p = FMT_LIT(p, "\r\n");
    for (size_t i = 0; i < n; i++) {
        size_t nl = str_len(h[i].name, h[i].name_len);
        size_t vl = str_len(h[i].value, h[i].value_len);
        if (!header_usable(&h[i], nl, vl)) {
            if (!(nl == 10 && strncasecmp(h[i].name, "connection", 10) == 0))
                log_debug("http: dropping response header '%.*s'", (int)(nl > 64 ? 64 : nl),
                          h[i].name ? h[i].name : "");
            continue;
        }
        p = fmt_bytes(p, h[i].name, nl);
        p = FMT_LIT(p, ": ");
        if (vl)
            p = fmt_bytes(p, h[i].value, vl);
        p = FMT_LIT(p, "\r\n");
    }
    if (content_length >= 0) {
        p = FMT_LIT(p, "Content-Length: ");
        p = fmt_u64(p, (uint64_t)content_length);
        p = FMT_LIT(p, "\r\n");
    }
    p = FMT_LIT(p, "Date: ");
    p = fmt_bytes(p, server_date(s), 29);
    p = FMT_LIT(p, "\r\nServer: ember\r\n");
    if (close)
        p = FMT_LIT(p, "Connection: close\r\n\r\n");
    else
        p = FMT_LIT(p, "Connection: keep-alive\r\n\r\n");
    return (size_t)(p - out);
}

/* A JSON string for @s; bytes that are not UTF-8 become '?'. */
static json_t *json_text(const char *s)
{
    if (!s)
        s = "";
    json_t *j = json_string(s);
    if (j)
        return j;
    size_t n = strlen(s);
    cleanup_free char *t = malloc(n + 1);
    if (!t)
        return NULL;
    for (size_t i = 0; i < n; i++)
        t[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
    t[n] = '\0';
    return json_string(t);
}

/* {"error":error,"detail":detail} in a malloc()ed buffer (not NUL-terminated). */
static char *error_json(const char *error, const char *detail, size_t *len)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "error", json_text(error));
    json_object_set_new(o, "detail", json_text(detail));
    size_t n = json_dumpb(o, NULL, 0, JSON_COMPACT);
    char *buf = n ? malloc(n) : NULL;
    if (buf && json_dumpb(o, buf, n, JSON_COMPACT) != n) {
        free(buf);
        buf = NULL;
    }
    json_decref(o);
    *len = buf ? n : 0;
    return buf;
}

/* ---- writing ------------------------------------------------------------- */

struct raw_write {
    uv_write_t w;
    char data[];
};

static void on_raw_written(uv_write_t *w, int status)
{
    free(container_of(w, struct raw_write, w));
}

/* Write bytes we own nothing else about (error responses): try now, copy
 * what did not fit. */
static void conn_write_raw(struct conn *c, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n >= 0 && (size_t)n == len)
        return;
    if (n < 0 && n != UV_EAGAIN)
        return; /* the shutdown that follows fails and closes */
    size_t done = n > 0 ? (size_t)n : 0;
    struct raw_write *rw = malloc(sizeof(*rw) + len - done);
    if (!rw)
        return;
    memcpy(rw->data, data + done, len - done);
    b = uv_buf_init(rw->data, (unsigned)(len - done));
    if (uv_write(&rw->w, (uv_stream_t *)&c->tcp, &b, 1, on_raw_written) < 0)
        free(rw);
}

/* A response of the server's own (400, 408, 413, 431, 505), then close. The
 * handler does not own a request on @c any more. */
void http__conn_send_error(struct conn *c, int status, const char *detail)
{
    struct http_server *s = c->server;
    char name[48];
    size_t blen = 0;
    cleanup_free char *body = error_json(status_error_name(status, name, sizeof(name)), detail,
                                         &blen);
    const struct http_header ct = {"Content-Type", 12, "application/json", 16};
    static const char fallback[] = "{\"error\":\"internal error\",\"detail\":\"\"}";
    const char *b = body ? body : fallback;
    if (!body)
        blen = sizeof(fallback) - 1;
    cleanup_free char *msg = malloc(head_bound(&ct, 1) + blen);
    if (msg) {
        size_t hlen = build_head(s, msg, status, &ct, 1, (int64_t)blen, true);
        memcpy(msg + hlen, b, blen);
        conn_write_raw(c, msg, hlen + blen);
    }
    http__conn_shutdown(c, true);
}

static void response_written(struct conn *c)
{
    c->state = C_DONE;
    http__conn_timeout_set(c, TMO_NONE);
    http__conn_kick(c);
}

static void on_write(uv_write_t *w, int status)
{
    struct request *r = w->data;
    struct conn *c = r->conn;
    r->writing = false;
    if (status < 0 || c->closing) {
        if (c->req == r)
            c->req = NULL;
        http__request_free(r);
        if (!c->closing)
            http__conn_close_now(c);
        return;
    }
    c->state = C_DONE;
    http__conn_timeout_set(c, TMO_NONE);
    http__conn_dispatch(c);
}

static void conn_write_failed(struct conn *c)
{
    c->failed = true;
    c->state = C_DONE; /* http__conn_close_now frees the responded request */
    http__conn_kick(c);
}

static void respond(struct request *r, int status, const struct http_header *hdrs, size_t n,
                    const void *body, size_t len, void *owned, bool force_close)
{
    struct conn *c = r->conn;
    struct http_server *s = r->server;
    if (r->responded) {
        log_error("http: second response to one request ignored");
        free(owned);
        return;
    }
    r->responded = true;
    r->free_after = owned;
    if (!c) { /* aborted: the response only frees */
        http__request_free(r);
        return;
    }
    if (status < 200 || status > 599) {
        log_warn("http: handler status %d is not a final status; sending 500", status);
        status = 500;
    }
    if (len > UINT32_MAX) { /* uv_buf_t lengths are 32-bit */
        log_error("http: response body of %zu bytes is too large", len);
        status = 500;
        len = 0;
        force_close = true;
    }

    bool close = force_close || !r->pub.keep_alive || s->draining || c->must_close;
    for (size_t i = 0; i < n && !close; i++) {
        size_t nl = str_len(hdrs[i].name, hdrs[i].name_len);
        size_t vl = str_len(hdrs[i].value, hdrs[i].value_len);
        if (hdrs[i].value && NAME_IS(hdrs[i].name, nl, "connection") && vl >= 5 &&
            memmem(hdrs[i].value, vl, "close", 5))
            close = true;
    }
    if (!close && !c->msg_complete) {
        /* An unread body: swallow it only when small, known and on its way
         * (a client waiting for 100 Continue would never send it). */
        bool continue_owed = r->expect_continue && !r->continue_sent;
        int64_t cl = r->pub.content_length;
        if (continue_owed || cl < 0 || (uint64_t)cl - r->pub.body_received > DISCARD_MAX)
            close = true;
    }
    if (close)
        c->must_close = true;

    bool no_body = r->is_head || status == 204 || status == 304;
    int64_t clen = (status == 204 || status == 304) ? -1 : (int64_t)len;
    char *head = http__arena_alloc(r, head_bound(hdrs, n));
    if (!head) {
        conn_write_failed(c);
        return;
    }
    size_t hlen = build_head(s, head, status, hdrs, n, clen, c->must_close);
    uv_buf_t iov[2] = {uv_buf_init(head, (unsigned)hlen),
                       uv_buf_init((char *)body, no_body ? 0 : (unsigned)len)};
    unsigned niov = (no_body || len == 0) ? 1 : 2;
    size_t total = hlen + (niov == 2 ? len : 0);
    c->state = C_WRITING;

    int w = uv_try_write((uv_stream_t *)&c->tcp, iov, niov);
    if (w >= 0 && (size_t)w == total) {
        response_written(c);
        return;
    }
    if (w < 0 && w != UV_EAGAIN) {
        conn_write_failed(c);
        return;
    }
    size_t done = w > 0 ? (size_t)w : 0;
    unsigned first = 0;
    while (first < niov && done >= iov[first].len) {
        done -= iov[first].len;
        first++;
    }
    iov[first].base += done;
    iov[first].len -= done;
    if (niov == 2 && !owned) {
        /* The caller's body may go away when we return: copy what is left. */
        size_t rem = iov[1].len;
        char *copy;
        if (rem <= ARENA_CHUNK_MIN) {
            copy = http__arena_alloc(r, rem);
        } else {
            copy = malloc(rem);
            r->free_after = copy;
        }
        if (!copy) {
            conn_write_failed(c);
            return;
        }
        memcpy(copy, iov[1].base, rem);
        iov[1].base = copy;
    }
    r->writing = true;
    r->wreq.data = r;
    if (uv_write(&r->wreq, (uv_stream_t *)&c->tcp, iov + first, niov - first, on_write) < 0) {
        r->writing = false;
        conn_write_failed(c);
        return;
    }
    http__conn_timeout_set(c, TMO_BODY); /* a client that stops reading is cut off */
}

static void on_continue_written(uv_write_t *w, int status)
{
    struct conn *c = container_of(w, struct conn, cont_req);
    if (status < 0 && !c->closing)
        http__conn_close_now(c);
}

void http__send_continue(struct conn *c, struct request *r)
{
    static const char msg[] = "HTTP/1.1 100 Continue\r\n\r\n";
    r->continue_sent = true;
    uv_buf_t b = uv_buf_init((char *)msg, sizeof(msg) - 1);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n >= 0 && (size_t)n == b.len)
        return;
    if (n < 0 && n != UV_EAGAIN) {
        c->failed = true;
        http__conn_kick(c);
        return;
    }
    if (n > 0) {
        b.base += n;
        b.len -= (size_t)n;
    }
    if (uv_write(&c->cont_req, (uv_stream_t *)&c->tcp, &b, 1, on_continue_written) < 0) {
        c->failed = true;
        http__conn_kick(c);
    }
}

/* ---- public response API ------------------------------------------------- */

void http_respond(struct http_request *req, int status, const struct http_header *headers,
                  size_t n_headers, const void *body, size_t body_len)
{
    respond(container_of(req, struct request, pub), status, headers, n_headers, body, body_len,
            NULL, false);
}

void http_respond_owned(struct http_request *req, int status, const struct http_header *headers,
                        size_t n_headers, void *body, size_t body_len)
{
    respond(container_of(req, struct request, pub), status, headers, n_headers, body, body_len,
            body, false);
}

void http_respond_error(struct http_request *req, int status, const char *error,
                        const char *detail, bool close)
{
    static const struct http_header ct = {"Content-Type", 12, "application/json", 16};
    static const char fallback[] = "{\"error\":\"internal error\",\"detail\":\"\"}";
    size_t len = 0;
    char *body = error_json(error, detail, &len);
    if (body)
        respond(container_of(req, struct request, pub), status, &ct, 1, body, len, body, close);
    else
        respond(container_of(req, struct request, pub), status, &ct, 1, fallback,
                sizeof(fallback) - 1, NULL, close);
}
