/* httpc.c - the client side of HTTP/1.1 for ember-bench.
 *
 * A connection carries one request at a time and is kept alive between
 * requests. Responses are parsed with llhttp; of the headers only
 * Server-Timing is kept, so the per-response work is the parse itself.
 * on_message_complete pauses the parser: the owner is told about the
 * response after llhttp_execute() returned, when it is safe to send the next
 * request on the same connection.
 */
#include "bench/bench.h"
#include "common/cleanup.h"
#include "common/clock.h"

#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- target ------------------------------------------------------------ */

int httpc_target_parse(const char *url, const char *token, struct bench_target *t, char *err,
                       size_t errlen)
{
    memset(t, 0, sizeof(*t));
    t->token = token;
    if (strlen(url) >= sizeof(t->url)) {
        snprintf(err, errlen, "--url is too long");
        return -1;
    }
    snprintf(t->url, sizeof(t->url), "%s", url);
    if (strncmp(url, "http://", 7) != 0) {
        snprintf(err, errlen, "--url must start with http:// (got '%s')", url);
        return -1;
    }
    const char *p = url + 7;
    const char *path = strchr(p, '/');
    size_t hostport_len = path ? (size_t)(path - p) : strlen(p);
    if (hostport_len == 0 || hostport_len >= sizeof(t->host_header)) {
        snprintf(err, errlen, "--url '%s' has no usable host", url);
        return -1;
    }
    char hostport[300];
    memcpy(hostport, p, hostport_len);
    hostport[hostport_len] = '\0';
    snprintf(t->host_header, sizeof(t->host_header), "%s", hostport);

    char host[300];
    const char *port = "80";
    if (hostport[0] == '[') { /* [v6]:port */
        char *close = strchr(hostport, ']');
        if (!close || (size_t)(close - hostport - 1) >= sizeof(host)) {
            snprintf(err, errlen, "--url '%s': bad IPv6 literal", url);
            return -1;
        }
        memcpy(host, hostport + 1, (size_t)(close - hostport - 1));
        host[close - hostport - 1] = '\0';
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0') {
            snprintf(err, errlen, "--url '%s': junk after ']'", url);
            return -1;
        }
    } else {
        char *colon = strrchr(hostport, ':');
        if (colon) {
            *colon = '\0';
            port = colon + 1;
        }
        snprintf(host, sizeof(host), "%s", hostport);
    }
    char *end;
    errno = 0;
    long pn = strtol(port, &end, 10);
    if (!*port || *end || errno || pn < 1 || pn > 65535) {
        snprintf(err, errlen, "--url '%s': bad port '%s'", url, port);
        return -1;
    }
    if (path) {
        size_t n = strlen(path);
        while (n > 0 && path[n - 1] == '/')
            n--;
        if (n >= sizeof(t->prefix)) {
            snprintf(err, errlen, "--url path prefix is too long");
            return -1;
        }
        memcpy(t->prefix, path, n);
        t->prefix[n] = '\0';
    }

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "--url '%s': cannot resolve '%s': %s", url, host,
                 rc ? gai_strerror(rc) : "no address");
        return -1;
    }
    memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

char *httpc_format_head(const struct bench_target *t, const char *method, const char *path,
                        const char *content_type, size_t body_len)
{
    bool fn_route = strncmp(path, "/fn/", 4) == 0;
    bool auth = t->token && *t->token && !fn_route;
    bool length = body_len > 0 || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
                  strcmp(method, "PATCH") == 0;
    char auth_line[512] = "", type_line[256] = "", length_line[64] = "";
    if (auth)
        snprintf(auth_line, sizeof(auth_line), "Authorization: Bearer %s\r\n", t->token);
    if (content_type)
        snprintf(type_line, sizeof(type_line), "Content-Type: %s\r\n", content_type);
    if (length)
        snprintf(length_line, sizeof(length_line), "Content-Length: %zu\r\n", body_len);
    char *head = NULL;
    if (asprintf(&head, "%s %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ember-bench\r\n%s%s%s\r\n",
                 method, t->prefix, path, t->host_header, auth_line, type_line, length_line) < 0)
        return NULL;
    return head;
}

/* ---- Server-Timing ------------------------------------------------------- */

const char *const acq_kind_names[ACQ__COUNT] = {"warm", "stem",  "zygote", "snapshot",
                                                "cold", "other", "none"};
const char *const phase_names[PH__COUNT] = {"queue", "acquire", "init", "run"};

static bool tok_eq(const char *s, size_t n, const char *lit)
{
    for (size_t i = 0; i < n; i++) {
        char a = s[i], b = lit[i];
        if (!b)
            return false;
        if (a >= 'A' && a <= 'Z')
            a = (char)(a - 'A' + 'a');
        if (a != b)
            return false;
    }
    return lit[n] == '\0';
}

/* "12", "0.034": the common case without strtod's locale and exponent
 * handling; anything else goes to strtod. -1 if not a number. */
static double parse_dur(const char *s, size_t n)
{
    double v = 0, scale = 0;
    size_t i = 0;
    for (; i < n; i++) {
        char ch = s[i];
        if (ch >= '0' && ch <= '9') {
            v = v * 10 + (ch - '0');
            if (scale)
                scale *= 10;
        } else if (ch == '.' && !scale) {
            scale = 1;
        } else {
            break;
        }
    }
    if (i == n && n > 0)
        return scale ? v / scale : v;
    char num[32];
    if (n >= sizeof(num))
        return -1;
    memcpy(num, s, n);
    num[n] = '\0';
    char *e;
    double d = strtod(num, &e);
    return e != num && *e == '\0' && d >= 0 ? d : -1;
}

static const char *skip_ows(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

/*
 * metric = name *( OWS ";" OWS param ), param = pname [ "=" (token | quoted) ],
 * metrics separated by ",". Unknown metrics and params are skipped; a
 * malformed piece ends the parse with what was understood so far.
 */
void httpc_timing_parse(const char *s, size_t len, struct timing *out)
{
    memset(out, 0, sizeof(*out));
    out->kind = ACQ_NONE;
    const char *p = s, *end = s + len;
    while (p < end) {
        p = skip_ows(p, end);
        const char *name = p;
        while (p < end && *p != ';' && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        size_t name_len = (size_t)(p - name);
        /* The four names differ in their first letter: one compare each. */
        int phase = -1;
        switch (name_len ? name[0] | 0x20 : 0) {
        case 'q':
            phase = PH_QUEUE;
            break;
        case 'a':
            phase = PH_ACQUIRE;
            break;
        case 'i':
            phase = PH_INIT;
            break;
        case 'r':
            phase = PH_RUN;
            break;
        }
        if (phase >= 0 && !tok_eq(name, name_len, phase_names[phase]))
            phase = -1;
        bool acquire = phase == PH_ACQUIRE;
        if (acquire)
            out->kind = ACQ_OTHER; /* until a desc says which */
        for (;;) {
            p = skip_ows(p, end);
            if (p >= end || *p != ';')
                break;
            p = skip_ows(p + 1, end);
            const char *pn = p;
            while (p < end && *p != '=' && *p != ';' && *p != ',' && *p != ' ')
                p++;
            size_t pn_len = (size_t)(p - pn);
            p = skip_ows(p, end);
            const char *val = p;
            size_t val_len = 0;
            char unq[64];
            if (p < end && *p == '=') {
                p = skip_ows(p + 1, end);
                if (p < end && *p == '"') {
                    size_t k = 0;
                    p++;
                    while (p < end && *p != '"') {
                        if (*p == '\\' && p + 1 < end)
                            p++;
                        if (k < sizeof(unq) - 1)
                            unq[k++] = *p;
                        p++;
                    }
                    if (p < end)
                        p++; /* closing quote */
                    unq[k] = '\0';
                    val = unq;
                    val_len = k;
                } else {
                    val = p;
                    while (p < end && *p != ';' && *p != ',' && *p != ' ' && *p != '\t')
                        p++;
                    val_len = (size_t)(p - val);
                }
            }
            if (phase >= 0 && tok_eq(pn, pn_len, "dur") && val_len > 0) {
                double d = parse_dur(val, val_len);
                if (d >= 0) {
                    out->dur_ms[phase] = d;
                    out->have |= 1u << phase;
                }
            } else if (acquire && tok_eq(pn, pn_len, "desc")) {
                /* "none": the call never reached a sandbox (429, 503...). */
                out->kind = tok_eq(val, val_len, "none") ? ACQ_NONE : ACQ_OTHER;
                for (int k = 0; k < ACQ_OTHER; k++)
                    if (tok_eq(val, val_len, acq_kind_names[k]))
                        out->kind = (enum acq_kind)k;
            }
        }
        p = skip_ows(p, end);
        if (p < end && *p != ',')
            return; /* malformed: keep what we have */
        if (p < end)
            p++;
    }
}

/* ---- connections ------------------------------------------------------- */

static int on_message_begin(llhttp_t *p);
static int on_header_field(llhttp_t *p, const char *at, size_t len);
static int on_header_field_complete(llhttp_t *p);
static int on_header_value(llhttp_t *p, const char *at, size_t len);
static int on_headers_complete(llhttp_t *p);
static int on_body(llhttp_t *p, const char *at, size_t len);
static int on_message_complete(llhttp_t *p);

static llhttp_settings_t parser_settings;
static bool parser_settings_ready;

static void settings_once(void)
{
    if (parser_settings_ready)
        return;
    llhttp_settings_init(&parser_settings);
    parser_settings.on_message_begin = on_message_begin;
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_field_complete = on_header_field_complete;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_body = on_body;
    parser_settings.on_message_complete = on_message_complete;
    parser_settings_ready = true;
}

static struct hconn *conn_of(llhttp_t *p)
{
    return container_of(p, struct hconn, parser);
}

static int on_message_begin(llhttp_t *p)
{
    struct hconn *c = conn_of(p);
    c->resp.status = 0;
    c->resp.timing_len = 0;
    c->resp.body_len = 0;
    c->field_len = 0;
    c->field_timing = false;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct hconn *c = conn_of(p);
    /* Only "server-timing" (13) matters; longer names just mark overflow. */
    size_t room = sizeof(c->field) - c->field_len;
    size_t n = len < room ? len : room;
    memcpy(c->field + c->field_len, at, n);
    c->field_len += len; /* may exceed the buffer: then it is not our header */
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    struct hconn *c = conn_of(p);
    c->field_timing = c->field_len == 13 && strncasecmp(c->field, "server-timing", 13) == 0;
    c->value_started = false;
    c->field_len = 0;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct hconn *c = conn_of(p);
    if (!c->field_timing)
        return 0;
    struct hresp *r = &c->resp;
    if (!c->value_started && r->timing_len > 0 && r->timing_len + 2 < HRESP_TIMING_MAX) {
        r->timing[r->timing_len++] = ',';
        r->timing[r->timing_len++] = ' ';
    }
    c->value_started = true;
    size_t room = HRESP_TIMING_MAX - 1 - r->timing_len;
    size_t n = len < room ? len : room;
    memcpy(r->timing + r->timing_len, at, n);
    r->timing_len += n;
    r->timing[r->timing_len] = '\0';
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct hconn *c = conn_of(p);
    c->resp.status = llhttp_get_status_code(p);
    /* A response to HEAD has headers only, whatever Content-Length says. */
    return c->head ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct hconn *c = conn_of(p);
    if (!c->keep_body)
        return 0;
    struct hresp *r = &c->resp;
    if (r->body_len + len + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 4096;
        while (cap < r->body_len + len + 1)
            cap *= 2;
        if (cap > HRESP_BODY_MAX)
            return -1;
        char *b = realloc(r->body, cap);
        if (!b)
            return -1;
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, at, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct hconn *c = conn_of(p);
    int status = llhttp_get_status_code(p);
    if (status >= 100 && status < 200)
        return 0; /* an interim response: the real one follows */
    c->resp.keep_alive = llhttp_should_keep_alive(p);
    c->resp.done_ns = ember_now_ns();
    c->complete = true;
    return HPE_PAUSED;
}

static void on_close(uv_handle_t *h);
static void on_connect(uv_connect_t *req, int status);
static void on_write(uv_write_t *req, int status);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

void hconn_init(struct hconn *c, uv_loop_t *loop, const struct bench_target *t,
                const struct hconn_ops *ops)
{
    settings_once();
    memset(c, 0, offsetof(struct hconn, rbuf));
    c->loop = loop;
    c->target = t;
    c->ops = ops;
    c->state = HCONN_CLOSED;
}

void hconn_destroy(struct hconn *c)
{
    free(c->resp.body);
    c->resp.body = NULL;
    c->resp.body_cap = 0;
}

/* Close the handle; on_close decides what the owner hears. */
static void drop(struct hconn *c)
{
    if (c->state == HCONN_CLOSED || c->state == HCONN_CLOSING)
        return;
    c->state = HCONN_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

/* The request ended (either way); tell the owner, then keep or drop the connection. */
static void finish(struct hconn *c, int err)
{
    if (!c->in_flight) { /* a connect without a request failed */
        drop(c);
        return;
    }
    /* A response that overtook its own request body (an early 413, say)
     * leaves the write queued: that stream cannot carry another request. */
    bool keep = err == 0 && c->resp.keep_alive && !c->write_pending;
    c->in_flight = false;
    if (!keep) {
        c->idle_pending = true;
        drop(c);
    } else
        c->state = HCONN_IDLE;
    c->ops->on_response(c, err);
    /* on_response may have closed us for good; otherwise a kept connection is
     * ready now and a dropped one will be after on_close. */
    if (keep && c->state == HCONN_IDLE && !c->final && !c->in_flight)
        c->ops->on_idle(c);
}

static void start_write(struct hconn *c)
{
    c->state = HCONN_BUSY;
    c->complete = false;
    llhttp_init(&c->parser, HTTP_RESPONSE, &parser_settings);
    /* Most requests fit the socket buffer: write them now, and only queue
     * (uv_write, a callback, epoll changes) what the kernel did not take. */
    int n = uv_try_write((uv_stream_t *)&c->tcp, c->bufs, c->nbufs);
    if (n < 0 && n != UV_EAGAIN) {
        finish(c, n);
        return;
    }
    size_t done = n > 0 ? (size_t)n : 0;
    unsigned i = 0;
    while (i < c->nbufs && done >= c->bufs[i].len)
        done -= c->bufs[i++].len;
    if (i == c->nbufs)
        return;
    uv_buf_t rest[2];
    unsigned k = 0;
    for (; i < c->nbufs; i++, done = 0)
        rest[k++] = uv_buf_init(c->bufs[i].base + done, (unsigned)(c->bufs[i].len - done));
    int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, rest, k, on_write);
    if (rc < 0)
        finish(c, rc);
    else
        c->write_pending = true;
}

static void start_connect(struct hconn *c)
{
    int rc = uv_tcp_init(c->loop, &c->tcp);
    if (rc < 0) { /* no handle to close: the owner hears nothing more */
        if (c->in_flight) {
            c->in_flight = false;
            c->ops->on_response(c, rc);
        }
        return;
    }
    c->state = HCONN_CONNECTING;
    rc = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&c->target->addr,
                        on_connect);
    if (rc < 0)
        finish(c, rc);
}

void hconn_connect(struct hconn *c)
{
    if (c->state == HCONN_CLOSED && !c->final)
        start_connect(c);
}

void hconn_send(struct hconn *c, const uv_buf_t *bufs, unsigned nbufs, bool head, uint64_t now_ns)
{
    if (c->in_flight) { /* caller bug; fail the new request rather than corrupt the stream */
        c->ops->on_response(c, UV_EBUSY);
        return;
    }
    c->nbufs = nbufs > 2 ? 2 : nbufs;
    for (unsigned i = 0; i < c->nbufs; i++)
        c->bufs[i] = bufs[i];
    c->head = head;
    c->in_flight = true;
    c->sent_ns = now_ns ? now_ns : ember_now_ns();
    switch (c->state) {
    case HCONN_IDLE:
        start_write(c);
        break;
    case HCONN_CLOSED:
        start_connect(c);
        break;
    case HCONN_CLOSING:    /* on_close connects */
    case HCONN_CONNECTING: /* on_connect writes */
        break;
    case HCONN_BUSY:
        c->in_flight = false;
        c->ops->on_response(c, UV_EBUSY);
        break;
    }
}

void hconn_abort(struct hconn *c, int err)
{
    if (c->in_flight) {
        c->in_flight = false;
        c->idle_pending = true;
        drop(c);
        c->ops->on_response(c, err);
    } else {
        drop(c);
    }
}

void hconn_close_final(struct hconn *c)
{
    c->final = true;
    c->in_flight = false;
    if (c->state == HCONN_CLOSED) {
        if (c->ops->on_closed)
            c->ops->on_closed(c);
        return;
    }
    drop(c); /* if CLOSING already, on_close sees final */
}

static void on_close(uv_handle_t *h)
{
    struct hconn *c = container_of(h, struct hconn, tcp);
    c->state = HCONN_CLOSED;
    if (c->final) {
        if (c->ops->on_closed)
            c->ops->on_closed(c);
        return;
    }
    if (c->in_flight) { /* a send arrived while we were closing */
        c->idle_pending = false;
        start_connect(c);
    } else if (c->idle_pending) {
        c->idle_pending = false;
        c->ops->on_idle(c);
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    struct hconn *c = container_of(req, struct hconn, connect_req);
    if (c->state != HCONN_CONNECTING)
        return; /* aborted meanwhile */
    if (status < 0) {
        finish(c, status);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) {
        finish(c, rc);
        return;
    }
    if (c->in_flight)
        start_write(c);
    else
        c->state = HCONN_IDLE;
}

static void on_write(uv_write_t *req, int status)
{
    struct hconn *c = container_of(req, struct hconn, write_req);
    c->write_pending = false;
    if (status < 0 && c->in_flight && c->state == HCONN_BUSY)
        finish(c, status);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct hconn *c = container_of(h, struct hconn, tcp);
    buf->base = c->rbuf;
    buf->len = sizeof(c->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct hconn *c = container_of(s, struct hconn, tcp);
    if (nread == 0 || c->state == HCONN_CLOSING || c->state == HCONN_CLOSED)
        return;
    if (nread < 0) {
        if (c->state != HCONN_BUSY) {
            drop(c); /* the server closed an idle keep-alive connection */
            return;
        }
        if (nread == UV_EOF) {
            /* A body delimited by EOF ends here. */
            llhttp_errno_t e = llhttp_finish(&c->parser);
            if ((e == HPE_OK || e == HPE_PAUSED) && c->complete) {
                c->resp.keep_alive = false;
                finish(c, 0);
                return;
            }
        }
        finish(c, (int)nread);
        return;
    }
    if (c->state != HCONN_BUSY) {
        drop(c); /* bytes nobody asked for */
        return;
    }
    llhttp_errno_t e = llhttp_execute(&c->parser, buf->base, (size_t)nread);
    if (e == HPE_PAUSED && c->complete) {
        size_t used = (size_t)(llhttp_get_error_pos(&c->parser) - buf->base);
        llhttp_resume(&c->parser);
        if (used < (size_t)nread)
            c->resp.keep_alive = false; /* a second response we never asked for */
        finish(c, 0);
        return;
    }
    if (e != HPE_OK)
        finish(c, UV_EPROTO);
}

/* ---- closed-loop batches ----------------------------------------------- */

struct batch;

struct batch_conn {
    struct hconn h;
    struct batch *b;
    size_t item; /* index in flight */
    char *head;
    bool busy;
    bool closed;
};

struct batch {
    uv_loop_t *loop;
    const struct bench_target *t;
    struct batch_item *items;
    size_t n, next, done;
    struct batch_conn *conns;
    unsigned n_conns, n_closed;
    uint32_t timeout_ms;
    bool keep_body;
    bool closing;
    uv_timer_t timer;
    bool timer_closed;
};

static void batch_next(struct batch_conn *bc);

static void batch_on_response(struct hconn *h, int err)
{
    struct batch_conn *bc = container_of(h, struct batch_conn, h);
    struct batch *b = bc->b;
    if (!bc->busy)
        return;
    struct batch_item *it = &b->items[bc->item];
    bc->busy = false;
    free(bc->head);
    bc->head = NULL;
    uint64_t now = ember_now_ns();
    it->err = err;
    it->latency_ns = now - h->sent_ns;
    if (err == 0) {
        it->status = h->resp.status;
        it->latency_ns = h->resp.done_ns - h->sent_ns;
        httpc_timing_parse(h->resp.timing, h->resp.timing_len, &it->timing);
        if (b->keep_body) {
            it->resp_body = malloc(h->resp.body_len + 1);
            if (it->resp_body) {
                memcpy(it->resp_body, h->resp.body ? h->resp.body : "", h->resp.body_len);
                it->resp_body[h->resp.body_len] = '\0';
                it->resp_body_len = h->resp.body_len;
            }
        }
    } else {
        it->status = 0;
        it->timing.kind = ACQ_NONE;
    }
    b->done++;
}

static void batch_on_timer_closed(uv_handle_t *h)
{
    struct batch *b = container_of(h, struct batch, timer);
    b->timer_closed = true;
}

static void batch_finish_if_done(struct batch *b)
{
    if (b->done < b->n || b->closing)
        return;
    b->closing = true;
    for (unsigned i = 0; i < b->n_conns; i++)
        hconn_close_final(&b->conns[i].h);
    uv_close((uv_handle_t *)&b->timer, batch_on_timer_closed);
}

static void batch_on_idle(struct hconn *h)
{
    struct batch_conn *bc = container_of(h, struct batch_conn, h);
    batch_next(bc);
}

static void batch_on_closed(struct hconn *h)
{
    struct batch_conn *bc = container_of(h, struct batch_conn, h);
    bc->closed = true;
    bc->b->n_closed++;
}

static const struct hconn_ops batch_ops = {
    .on_response = batch_on_response,
    .on_idle = batch_on_idle,
    .on_closed = batch_on_closed,
};

static void batch_next(struct batch_conn *bc)
{
    struct batch *b = bc->b;
    if (bc->busy || b->closing)
        return;
    if (b->next >= b->n) {
        batch_finish_if_done(b);
        return;
    }
    size_t i = b->next++;
    struct batch_item *it = &b->items[i];
    bc->head = it->path
                   ? httpc_format_head(b->t, it->method, it->path, it->content_type, it->body_len)
                   : NULL;
    if (!bc->head) {
        it->err = UV_ENOMEM;
        b->done++;
        batch_next(bc);
        return;
    }
    bc->item = i;
    bc->busy = true;
    uv_buf_t bufs[2] = {uv_buf_init(bc->head, (unsigned)strlen(bc->head)),
                        uv_buf_init((char *)it->body, (unsigned)it->body_len)};
    hconn_send(&bc->h, bufs, it->body_len ? 2 : 1, strcmp(it->method, "HEAD") == 0, 0);
}

static void batch_on_timer(uv_timer_t *t)
{
    struct batch *b = container_of(t, struct batch, timer);
    uint64_t now = ember_now_ns();
    for (unsigned i = 0; i < b->n_conns; i++) {
        struct batch_conn *bc = &b->conns[i];
        if (bc->busy && now - bc->h.sent_ns > (uint64_t)b->timeout_ms * 1000000ull)
            hconn_abort(&bc->h, UV_ETIMEDOUT);
    }
    batch_finish_if_done(b);
}

int httpc_batch(uv_loop_t *loop, const struct bench_target *t, struct batch_item *items, size_t n,
                unsigned concurrency, uint32_t timeout_ms, bool keep_body, uint64_t *elapsed_ns)
{
    uint64_t start = ember_now_ns();
    if (concurrency == 0)
        concurrency = 1;
    if (concurrency > n)
        concurrency = n ? (unsigned)n : 1;
    struct batch b = {.loop = loop,
                      .t = t,
                      .items = items,
                      .n = n,
                      .timeout_ms = timeout_ms,
                      .keep_body = keep_body,
                      .n_conns = concurrency};
    b.conns = calloc(concurrency, sizeof(*b.conns));
    if (!b.conns)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        items[i].status = 0;
        items[i].err = 0;
        items[i].resp_body = NULL;
        items[i].resp_body_len = 0;
        items[i].timing.kind = ACQ_NONE;
    }
    uv_timer_init(loop, &b.timer);
    uint64_t tick = timeout_ms / 10 ? timeout_ms / 10 : 1;
    if (tick > 100)
        tick = 100;
    uv_timer_start(&b.timer, batch_on_timer, tick, tick);
    for (unsigned i = 0; i < concurrency; i++) {
        hconn_init(&b.conns[i].h, loop, t, &batch_ops);
        b.conns[i].h.keep_body = keep_body;
        b.conns[i].b = &b;
    }
    for (unsigned i = 0; i < concurrency; i++)
        batch_next(&b.conns[i]);
    batch_finish_if_done(&b);
    while (b.n_closed < b.n_conns || !b.timer_closed)
        uv_run(loop, UV_RUN_ONCE);
    for (unsigned i = 0; i < concurrency; i++) {
        free(b.conns[i].head);
        hconn_destroy(&b.conns[i].h);
    }
    free(b.conns);
    if (elapsed_ns)
        *elapsed_ns = ember_now_ns() - start;
    return 0;
}

int httpc_call(uv_loop_t *loop, const struct bench_target *t, const char *method, const char *path,
               const char *content_type, const void *body, size_t body_len, uint32_t timeout_ms,
               char **body_out, int *err_out)
{
    cleanup_free char *p = strdup(path);
    if (!p)
        return -1;
    struct batch_item it = {.method = method,
                            .path = p,
                            .body = body,
                            .body_len = body_len,
                            .content_type = content_type};
    if (httpc_batch(loop, t, &it, 1, 1, timeout_ms, true, NULL) < 0)
        return -1;
    if (err_out)
        *err_out = it.err;
    if (body_out)
        *body_out = it.resp_body;
    else
        free(it.resp_body);
    return it.err ? -1 : it.status;
}
