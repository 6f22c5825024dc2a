/* http_parse.c - turning a connection's bytes into requests: the llhttp
 * callbacks of the HTTP server (http.c feeds the parser and acts on what
 * these leave behind).
 *
 * While a head arrives its pieces are recorded as spans of the read buffer,
 * bounded by the header limit and checked where llhttp is lenient (obs-fold,
 * SP in a field name, the request-target); when it is complete it is copied
 * once into a new request's arena. A body the handler asked for goes to it
 * chunk by chunk (streamed) or into one buffer (buffered), bounded by the
 * handler's limit; trailer fields are counted, not kept.
 *
 * A callback returns HPE_PAUSED where the dispatch loop must decide what
 * comes next: after a head with a body, after each message, and when the
 * handler paused during a streamed chunk. One that fails returns -1 with
 * c->err_status and c->err_detail set: they become the error response.
 */
#include "gateway/http_internal.h"

#include <llhttp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CHUNKED_BODY_START (16u << 10)

static int span_add(struct conn *c, struct span *sp, const char *at, size_t len)
{
    uint32_t off = (uint32_t)(at - c->rb->data) - c->head_start;
    if (sp->len == 0)
        sp->off = off;
    else if (off != sp->off + sp->len) {
        /* We feed the buffer in order, so a piece that does not follow the
         * last one is llhttp accepting obs-fold (a value continued on the
         * next line), which RFC 9112 lets us reject. */
        c->err_status = 400;
        c->err_detail = "obsolete line folding in a header field";
        return -1;
    }
    sp->len += (uint32_t)len;
    if ((uint64_t)sp->off + sp->len > c->server->limits.header_bytes) {
        c->err_status = 431;
        c->err_detail = "request line and headers exceed the size limit";
        return -1;
    }
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    struct conn *c = p->data;
    struct head_spans *hs = &c->rb->spans;
    hs->method.len = hs->url.len = 0;
    hs->n_headers = 0;
    hs->in_header = false;
    c->msg_complete = false;
    c->trailer_bytes = 0;
    return 0;
}

static int on_method(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    return span_add(c, &c->rb->spans.method, at, len);
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    return span_add(c, &c->rb->spans.url, at, len);
}

/* Trailer fields of a chunked body: not kept, but bounded like a head. */
static int trailer_bytes(struct conn *c, size_t len)
{
    c->trailer_bytes += (uint32_t)len;
    if (c->trailer_bytes > c->server->limits.header_bytes) {
        c->err_status = 431;
        c->err_detail = "trailer fields exceed the size limit";
        return -1;
    }
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    struct head_spans *hs = &c->rb->spans;
    if (c->state != C_HEAD)
        return trailer_bytes(c, len);
    if (!hs->in_header) {
        if (hs->n_headers == HTTP_MAX_HEADERS) {
            c->err_status = 431;
            c->err_detail = "too many header fields";
            return -1;
        }
        hs->in_header = true;
        hs->name[hs->n_headers].len = 0;
        hs->value[hs->n_headers].len = 0;
        hs->value[hs->n_headers].off = 0;
    }
    return span_add(c, &hs->name[hs->n_headers], at, len);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    struct head_spans *hs = &c->rb->spans;
    if (c->state != C_HEAD)
        return trailer_bytes(c, len);
    return span_add(c, &hs->value[hs->n_headers], at, len);
}

static int on_header_value_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    struct head_spans *hs = &c->rb->spans;
    if (c->state == C_HEAD && hs->in_header) {
        hs->n_headers++;
        hs->in_header = false;
    }
    return 0;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decode @n bytes of path into @out (NUL-terminated). */
static const char *decode_path(const char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = in[i];
        if (ch == '%') {
            if (n - i < 3)
                return "truncated percent-encoding in path";
            int hi = hexval(in[i + 1]), lo = hexval(in[i + 2]);
            if (hi < 0 || lo < 0)
                return "invalid percent-encoding in path";
            ch = (char)(hi << 4 | lo);
            if (ch == '\0')
                return "percent-encoded NUL in path";
            i += 2;
        } else if (ch == '\0') {
            return "NUL in path";
        }
        out[o++] = ch;
    }
    out[o] = '\0';
    return NULL;
}

static const char *copy_str(char **dst, const char *src, size_t n)
{
    char *d = *dst;
    memcpy(d, src, n);
    d[n] = '\0';
    *dst = d + n + 1;
    return d;
}

/* RFC 9110 tchar */
bool http__is_tchar(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* Headers complete: copy the head into a new request's arena. */
static int on_headers_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    struct http_server *s = c->server;
    const struct head_spans *hs = &c->rb->spans;
    const char *base = c->rb->data + c->head_start;

    if (p->http_major != 1) {
        c->err_status = 505;
        c->err_detail = "only HTTP/1.0 and HTTP/1.1 are supported";
        return -1;
    }
    const char *url = base + hs->url.off;
    size_t url_len = hs->url.len;
    if (url_len == 0 || url[0] != '/') {
        c->err_status = 400;
        c->err_detail = "request-target must be in origin-form (start with '/')";
        return -1;
    }
    if (memchr(url, '#', url_len)) {
        c->err_status = 400;
        c->err_detail = "fragment in request-target";
        return -1;
    }
    const char *q = memchr(url, '?', url_len);
    size_t path_len = q ? (size_t)(q - url) : url_len;
    size_t query_len = q ? url_len - path_len - 1 : 0;

    size_t need = (size_t)hs->n_headers * sizeof(struct http_header) + hs->method.len + 1 +
                  url_len + 1 + path_len + 1 + query_len + 1;
    for (uint32_t i = 0; i < hs->n_headers; i++) {
        /* llhttp's loose build lets SP into field names ("Name : v"), which
         * RFC 9112 says to reject: a proxy in front may read it differently. */
        const char *name = base + hs->name[i].off;
        for (uint32_t k = 0; k < hs->name[i].len; k++) {
            if (!http__is_tchar((unsigned char)name[k])) {
                c->err_status = 400;
                c->err_detail = "invalid character in a header field name";
                return -1;
            }
        }
        need += hs->name[i].len + 1 + hs->value[i].len + 1;
    }

    struct request *r = http__request_new(s);
    char *m = r ? http__arena_alloc(r, need) : NULL;
    if (!m) {
        if (r)
            http__request_free(r);
        c->err_status = 503;
        c->err_detail = "out of memory";
        return -1;
    }
    struct http_header *h = (struct http_header *)(void *)m;
    char *w = m + (size_t)hs->n_headers * sizeof(*h);

    r->pub.method = copy_str(&w, base + hs->method.off, hs->method.len);
    r->pub.target = copy_str(&w, url, url_len);
    const char *bad = decode_path(url, path_len, w);
    if (bad) {
        http__request_free(r);
        c->err_status = 400;
        c->err_detail = bad;
        return -1;
    }
    r->pub.path = w;
    w += strlen(w) + 1;
    r->pub.query = copy_str(&w, q ? q + 1 : "", query_len);
    for (uint32_t i = 0; i < hs->n_headers; i++) {
        size_t vl = hs->value[i].len;
        const char *v = base + hs->value[i].off;
        while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) /* llhttp keeps trailing OWS */
            vl--;
        h[i].name_len = hs->name[i].len;
        h[i].name = copy_str(&w, base + hs->name[i].off, hs->name[i].len);
        h[i].value_len = vl;
        h[i].value = copy_str(&w, v, vl);
    }
    r->pub.headers = h;
    r->pub.n_headers = hs->n_headers;
    r->pub.http_minor = p->http_minor ? 1 : 0;
    r->pub.keep_alive = llhttp_should_keep_alive(p) != 0;
    bool chunked = (p->flags & F_CHUNKED) != 0;
    if (!chunked && (p->flags & F_CONTENT_LENGTH))
        r->pub.content_length = (int64_t)p->content_length;
    r->pub.has_body = chunked || r->pub.content_length > 0;
    r->is_head = p->method == HTTP_HEAD;
    if (r->pub.http_minor >= 1 && r->pub.has_body) {
        const char *e = http_request_header(&r->pub, "expect");
        r->expect_continue = e && strcasecmp(e, "100-continue") == 0;
    }
    memcpy(r->pub.peer, c->peer, sizeof(r->pub.peer));
    if (p->upgrade) /* we do not switch protocols; the stream ends with this request */
        c->must_close = true;
    r->conn = c;
    c->req = r;
    /* With a body, stop right after the head: the handler decides about it. */
    return r->pub.has_body ? HPE_PAUSED : 0;
}

static int body_append(struct conn *c, struct request *r, const char *at, size_t len)
{
    size_t need = r->pub.body_len + len + 1;
    if (need > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap * 2 : CHUNKED_BODY_START;
        size_t lim = r->body_max >= SIZE_MAX - 1 ? SIZE_MAX - 1 : (size_t)r->body_max + 1;
        if (cap > lim)
            cap = lim;
        if (cap < need)
            cap = need;
        uint8_t *nb;
        if (r->body_heap) {
            nb = realloc(r->body_buf, cap);
        } else {
            nb = malloc(cap);
            if (nb && r->pub.body_len)
                memcpy(nb, r->body_buf, r->pub.body_len);
        }
        if (!nb) {
            c->err_status = 503;
            c->err_detail = "out of memory for the request body";
            return -1;
        }
        r->body_buf = nb;
        r->body_cap = cap;
        r->body_heap = true;
    }
    memcpy(r->body_buf + r->pub.body_len, at, len);
    r->pub.body_len += len;
    r->pub.body = r->body_buf;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    struct request *r = c->req;
    if (!r || c->state != C_REQUEST || !r->body_requested || len == 0)
        return 0; /* discarding after the response */
    if (r->pub.body_received + len > r->body_max) {
        c->err_status = 413;
        c->err_detail = "request body exceeds the limit";
        return -1;
    }
    r->pub.body_received += len;
    if (r->mode == HTTP_BODY_BUFFER)
        return body_append(c, r, at, len);

    struct http_server *s = c->server;
    r->pub.chunk = (const uint8_t *)at;
    r->pub.chunk_len = len;
    if (s->handler.on_body)
        s->handler.on_body(&r->pub, s->handler.data);
    /* Requests are freed only from the dispatch loop, so r is still ours. */
    r->pub.chunk = NULL;
    r->pub.chunk_len = 0;
    if (c->req != r || c->state != C_REQUEST || r->paused || c->failed)
        return HPE_PAUSED; /* llhttp resumes after this span */
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    c->msg_complete = true;
    return HPE_PAUSED; /* one message at a time */
}

void http__parser_settings_init(llhttp_settings_t *settings)
{
    llhttp_settings_init(settings);
    settings->on_message_begin = on_message_begin;
    settings->on_method = on_method;
    settings->on_url = on_url;
    settings->on_header_field = on_header_field;
    settings->on_header_value = on_header_value;
    settings->on_header_value_complete = on_header_value_complete;
    settings->on_headers_complete = on_headers_complete;
    settings->on_body = on_body;
    settings->on_message_complete = on_message_complete;
}
