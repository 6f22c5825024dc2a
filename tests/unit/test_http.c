/* test_http.c - the HTTP server over real loopback sockets.
 *
 * Each test starts the server on 127.0.0.1 port 0 with a small handler, runs
 * the uv loop on a thread of its own, and talks to it with blocking sockets
 * from the test thread. Stopping goes through uv_async: shutdown on the loop
 * thread, then the loop must end with every handle closed and done called
 * exactly once. Criterion runs each test in its own process.
 */
#include "gateway/http.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- the server side (runs on the loop thread) -------------------------- */

enum job_kind { JOB_STREAM, JOB_SLOW, JOB_LATE_BODY };

struct job {
    uv_timer_t timer;
    struct http_request *req;
    enum job_kind kind;
    bool aborted;
    char *buf;
    size_t len, cap;
    unsigned chunks;
};

static struct {
    uv_loop_t loop;
    uv_async_t stop;
    pthread_t thread;
    struct http_server *server;
    uint16_t port;
    sem_t slow_started;
    atomic_int done_calls;
    atomic_int aborts;
    atomic_int stream_chunks;
} fx;

static void on_job_closed(uv_handle_t *h)
{
    struct job *j = h->data;
    free(j->buf);
    free(j);
}

static void job_finish(struct job *j)
{
    uv_close((uv_handle_t *)&j->timer, on_job_closed);
}

static struct job *job_new(struct http_request *req, enum job_kind kind)
{
    struct job *j = calloc(1, sizeof(*j));
    cr_assert(j);
    uv_timer_init(&fx.loop, &j->timer);
    j->timer.data = j;
    j->req = req;
    j->kind = kind;
    req->data = j;
    return j;
}

static void respond_text(struct http_request *req, int status, const char *text, size_t len)
{
    struct http_header h = {"Content-Type", 12, "text/plain", 10};
    http_respond(req, status, &h, 1, text, len);
}

static uint64_t query_max(const struct http_request *req)
{
    const char *m = strstr(req->query, "max=");
    return m ? strtoull(m + 4, NULL, 10) : (1u << 20);
}

static void on_slow_timer(uv_timer_t *t)
{
    struct job *j = t->data;
    respond_text(j->req, 200, "slow", 4); /* after an abort this only frees */
    job_finish(j);
}

static void on_late_body_timer(uv_timer_t *t)
{
    struct job *j = t->data;
    int rc = http_request_read_body(j->req, HTTP_BODY_BUFFER, 1024);
    if (rc == -ECONNABORTED)
        respond_text(j->req, 500, "gone", 4);
    if (rc < 0)
        job_finish(j);
}

static void on_resume_timer(uv_timer_t *t)
{
    struct job *j = t->data;
    http_request_resume(j->req);
}

static void on_request(struct http_request *req, void *data)
{
    const char *p = req->path;
    if (strcmp(p, "/hello") == 0) {
        respond_text(req, 200, "hello", 5);
    } else if (strcmp(p, "/echo") == 0) {
        http_request_read_body(req, HTTP_BODY_BUFFER, query_max(req));
    } else if (strcmp(p, "/stream") == 0) {
        job_new(req, JOB_STREAM);
        if (http_request_read_body(req, HTTP_BODY_STREAM, query_max(req)) < 0)
            job_finish(req->data);
    } else if (strcmp(p, "/auth") == 0) {
        http_respond_error(req, 401, "unauthorized", "no token", false);
    } else if (strcmp(p, "/slow") == 0) {
        struct job *j = job_new(req, JOB_SLOW);
        uv_timer_start(&j->timer, on_slow_timer, 100, 0);
        sem_post(&fx.slow_started);
    } else if (strcmp(p, "/late-body") == 0) {
        struct job *j = job_new(req, JOB_LATE_BODY);
        uv_timer_start(&j->timer, on_late_body_timer, 100, 0);
    } else if (strcmp(p, "/stats") == 0) {
        struct http_stats st;
        char text[256];
        http_server_stats(req->server, &st);
        int n = snprintf(text, sizeof(text),
                         "total=%llu current=%llu requests=%llu rejected=%llu parse=%llu "
                         "timeouts=%llu aborts=%d",
                         (unsigned long long)st.connections_total,
                         (unsigned long long)st.connections_current,
                         (unsigned long long)st.requests_total,
                         (unsigned long long)st.rejected_total,
                         (unsigned long long)st.parse_errors_total,
                         (unsigned long long)st.timeouts_total, atomic_load(&fx.aborts));
        respond_text(req, 200, text, (size_t)n);
    } else if (strcmp(p, "/big") == 0 || strcmp(p, "/big-owned") == 0) {
        /* a body larger than the socket buffers: the write goes through
         * uv_write, and /big's buffer is gone as soon as http_respond returns */
        size_t n = (size_t)query_max(req);
        char *big = malloc(n);
        cr_assert(big);
        for (size_t i = 0; i < n; i++)
            big[i] = (char)('a' + i % 23);
        if (p[4] == '-') {
            http_respond_owned(req, 200, NULL, 0, big, n);
        } else {
            http_respond(req, 200, NULL, 0, big, n);
            memset(big, 'X', n);
            free(big);
        }
    } else if (strncmp(p, "/p/", 3) == 0) {
        char text[512];
        int n = snprintf(text, sizeof(text), "%s|%s|%s", p, req->query, req->method);
        respond_text(req, 200, text, (size_t)n);
    } else {
        http_respond_error(req, 404, "not found", p, false);
    }
}

static void on_body(struct http_request *req, void *data)
{
    struct job *j = req->data;
    if (j->len + req->chunk_len > j->cap) {
        j->cap = (j->len + req->chunk_len) * 2;
        j->buf = realloc(j->buf, j->cap);
        cr_assert(j->buf);
    }
    memcpy(j->buf + j->len, req->chunk, req->chunk_len);
    j->len += req->chunk_len;
    j->chunks++;
    atomic_fetch_add(&fx.stream_chunks, 1);
    /* Backpressure as a real consumer would: pause, resume a bit later. */
    http_request_pause(req);
    uv_timer_start(&j->timer, on_resume_timer, 2, 0);
}

static void on_body_end(struct http_request *req, void *data)
{
    if (strcmp(req->path, "/stream") == 0) {
        struct job *j = req->data;
        uv_timer_stop(&j->timer);
        respond_text(req, 200, j->buf ? j->buf : "", j->len);
        job_finish(j);
        return;
    }
    if (strcmp(req->path, "/late-body") == 0) {
        struct job *j = req->data;
        respond_text(req, 200, (const char *)req->body, req->body_len);
        job_finish(j);
        return;
    }
    /* /echo: the body, and a check that it is NUL-terminated */
    cr_assert_eq(req->body[req->body_len], '\0');
    respond_text(req, 200, (const char *)req->body, req->body_len);
}

static void on_abort(struct http_request *req, void *data)
{
    atomic_fetch_add(&fx.aborts, 1);
    struct job *j = req->data;
    if (!j) { /* /echo: nothing pending, answer now (only frees) */
        respond_text(req, 500, "aborted", 7);
        return;
    }
    j->aborted = true;
    if (j->kind == JOB_STREAM) {
        respond_text(req, 500, "aborted", 7);
        job_finish(j);
    } /* slow and late-body answer from their timer */
}

static const struct http_handler handler = {
    .on_request = on_request,
    .on_body = on_body,
    .on_body_end = on_body_end,
    .on_abort = on_abort,
};

static void on_done(void *data)
{
    atomic_fetch_add(&fx.done_calls, 1);
}

static void on_stop(uv_async_t *a)
{
    http_server_shutdown(fx.server, on_done, NULL);
    uv_close((uv_handle_t *)a, NULL);
}

static void *loop_main(void *arg)
{
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    return NULL;
}

static void server_start(const struct http_limits *limits)
{
    cr_assert_eq(uv_loop_init(&fx.loop), 0);
    cr_assert_eq(uv_async_init(&fx.loop, &fx.stop, on_stop), 0);
    sem_init(&fx.slow_started, 0, 0);
    int rc = http_server_start(&fx.loop, "127.0.0.1", 0, limits, &handler, &fx.server);
    cr_assert_eq(rc, 0, "http_server_start: %s", strerror(-rc));
    fx.port = http_server_port(fx.server);
    cr_assert_neq(fx.port, 0);
    cr_assert_eq(pthread_create(&fx.thread, NULL, loop_main, NULL), 0);
}

static void server_start_default(void)
{
    struct http_limits l;
    http_limits_default(&l);
    server_start(&l);
}

/* Drain, wait for the loop to run dry, and check it closed clean. */
static void server_stop(void)
{
    uv_async_send(&fx.stop);
    pthread_join(fx.thread, NULL);
    cr_assert_eq(atomic_load(&fx.done_calls), 1);
    cr_assert_eq(uv_loop_close(&fx.loop), 0, "a handle was left open");
    sem_destroy(&fx.slow_started);
}

/* ---- the client side (test thread, blocking sockets) ---------------------- */

struct client {
    int fd;
    size_t len;
    char buf[1 << 20];
};

struct resp {
    int status;
    char head[8192];
    char *body; /* malloc()ed, NUL-terminated */
    size_t body_len;
    bool close;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct client *cl_connect(void)
{
    struct client *c = calloc(1, sizeof(*c));
    cr_assert(c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(c->fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(fx.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect: %s",
                 strerror(errno));
    struct timeval tv = {.tv_sec = 2};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return c;
}

static void cl_close(struct client *c)
{
    close(c->fd);
    free(c);
}

static void cl_sendn(struct client *c, const char *data, size_t n)
{
    while (n) {
        ssize_t w = send(c->fd, data, n, MSG_NOSIGNAL);
        cr_assert_gt(w, 0, "send: %s", strerror(errno));
        data += w;
        n -= (size_t)w;
    }
}

static void cl_send(struct client *c, const char *s)
{
    cl_sendn(c, s, strlen(s));
}

/* More bytes into c->buf; 0 on EOF or reset, -1 on timeout. */
static ssize_t cl_fill(struct client *c)
{
    cr_assert_lt(c->len, sizeof(c->buf));
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
    if (n > 0)
        c->len += (size_t)n;
    if (n < 0 && errno == ECONNRESET)
        return 0;
    return n;
}

/* One response; false on EOF/timeout before a complete one. */
static bool cl_response(struct client *c, struct resp *r)
{
    memset(r, 0, sizeof(*r));
    char *end;
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
        if (cl_fill(c) <= 0)
            return false;
    size_t hlen = (size_t)(end - c->buf) + 4;
    cr_assert_lt(hlen, sizeof(r->head));
    memcpy(r->head, c->buf, hlen);
    r->head[hlen] = '\0';
    cr_assert_eq(sscanf(r->head, "HTTP/1.1 %d", &r->status), 1, "bad status line: %s", r->head);
    size_t cl = 0;
    const char *h = strcasestr(r->head, "\r\nContent-Length:");
    if (h)
        cl = strtoul(h + 17, NULL, 10);
    r->close = strcasestr(r->head, "\r\nConnection: close\r\n") != NULL;
    while (c->len < hlen + cl)
        if (cl_fill(c) <= 0)
            return false;
    r->body = malloc(cl + 1);
    memcpy(r->body, c->buf + hlen, cl);
    r->body[cl] = '\0';
    r->body_len = cl;
    memmove(c->buf, c->buf + hlen + cl, c->len - hlen - cl);
    c->len -= hlen + cl;
    return true;
}

static void resp_free(struct resp *r)
{
    free(r->body);
    r->body = NULL;
}

/* The server closed the connection (EOF or reset) with nothing more sent. */
static bool cl_eof(struct client *c)
{
    if (c->len)
        return false;
    return cl_fill(c) == 0;
}

/* Nothing arrives within @ms. */
static bool cl_quiet(struct client *c, int ms)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    return poll(&p, 1, ms) == 0;
}

static void expect(struct client *c, int status, const char *body)
{
    struct resp r;
    cr_assert(cl_response(c, &r), "no response (wanted %d)", status);
    cr_assert_eq(r.status, status, "status %d, wanted %d: %s%s", r.status, status, r.head,
                 r.body);
    if (body)
        cr_assert_str_eq(r.body, body);
    resp_free(&r);
}

static void expect_error_and_close(struct client *c, int status)
{
    struct resp r;
    cr_assert(cl_response(c, &r), "no response (wanted %d)", status);
    cr_assert_eq(r.status, status, "status %d, wanted %d: %s%s", r.status, status, r.head,
                 r.body);
    cr_assert(r.close, "no Connection: close in %s", r.head);
    cr_assert(strcasestr(r.head, "Content-Type: application/json"));
    cr_assert(strstr(r.body, "\"error\":\"") == r.body + 1, "body %s", r.body);
    cr_assert(strstr(r.body, "\"detail\":\""), "body %s", r.body);
    resp_free(&r);
    cr_assert(cl_eof(c), "connection still open after %d", status);
}

static void stats(char *out, size_t size)
{
    struct client *c = cl_connect();
    cl_send(c, "GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    struct resp r;
    cr_assert(cl_response(c, &r));
    snprintf(out, size, "%s", r.body);
    resp_free(&r);
    cl_close(c);
}

/* ---- tests ---------------------------------------------------------------- */

TestSuite(http, .timeout = 10);

Test(http, get_keepalive)
{
    server_start_default();
    struct client *c = cl_connect();
    for (int i = 0; i < 2; i++) {
        cl_send(c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        struct resp r;
        cr_assert(cl_response(c, &r));
        cr_assert_eq(r.status, 200);
        cr_assert_str_eq(r.body, "hello");
        cr_assert(!r.close);
        cr_assert(strstr(r.head, "HTTP/1.1 200 OK\r\n") == r.head);
        cr_assert(strcasestr(r.head, "\r\nConnection: keep-alive\r\n"));
        cr_assert(strcasestr(r.head, "\r\nServer: ember\r\n"));
        cr_assert(strcasestr(r.head, "\r\nDate: "));
        cr_assert(strcasestr(r.head, " GMT\r\n"));
        cr_assert(strcasestr(r.head, "\r\nContent-Type: text/plain\r\n"));
        resp_free(&r);
    }
    /* HEAD: the length of what GET would send, no body */
    cl_send(c, "HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    cl_send(c, "GET /p/after-head HTTP/1.1\r\nHost: t\r\n\r\n");
    char *end;
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
        cr_assert_gt(cl_fill(c), 0);
    cr_assert(strcasestr(c->buf, "Content-Length: 5\r\n"));
    size_t hl = (size_t)(end - c->buf) + 4;
    memmove(c->buf, c->buf + hl, c->len - hl);
    c->len -= hl;
    expect(c, 200, "/p/after-head||GET");
    cl_close(c);
    server_stop();
}

Test(http, pipelined_in_order)
{
    server_start_default();
    struct client *c = cl_connect();
    cl_send(c, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"
               "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
               "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
               "GET /p/third?q=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    expect(c, 200, "slow");
    expect(c, 200, "hello");
    expect(c, 200, "abc");
    expect(c, 200, "/p/third|q=1|GET");
    cl_close(c);
    server_stop();
}

Test(http, content_length_body)
{
    server_start_default();
    struct client *c = cl_connect();
    cl_send(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello");
    usleep(20000);
    cl_send(c, " world");
    expect(c, 200, "hello world");

    /* a large one, in many reads */
    size_t n = 300000;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    char head[128];
    snprintf(head, sizeof(head), "POST /echo?max=1000000 HTTP/1.1\r\nContent-Length: %zu\r\n\r\n",
             n);
    cl_send(c, head);
    cl_sendn(c, big, n);
    struct resp r;
    cr_assert(cl_response(c, &r));
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.body_len, n);
    cr_assert(memcmp(r.body, big, n) == 0);
    resp_free(&r);
    free(big);

    /* a body the handler never reads is discarded; the connection lives on */
    cl_send(c, "POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nxxxx"
               "GET /p/next HTTP/1.1\r\nHost: t\r\n\r\n");
    expect(c, 200, "hello");
    expect(c, 200, "/p/next||GET");
    cl_close(c);
    server_stop();
}

Test(http, chunked_buffered)
{
    server_start_default();
    struct client *c = cl_connect();
    cl_send(c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5\r\nhello\r\n");
    usleep(20000);
    cl_send(c, "6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n");
    expect(c, 200, "hello world");
    cl_send(c, "GET /hello HTTP/1.1\r\n\r\n");
    expect(c, 200, "hello");
    cl_close(c);
    server_stop();
}

Test(http, chunked_streamed_pause_resume)
{
    server_start_default();
    struct client *c = cl_connect();
    cl_send(c, "POST /stream HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    /* 40 chunks of 1000 bytes in one burst, then a few small ones trickled */
    char *all = malloc(50000);
    size_t total = 0;
    char chunk[1100];
    for (int i = 0; i < 40; i++) {
        char data[1000];
        memset(data, 'A' + i % 26, sizeof(data));
        memcpy(all + total, data, sizeof(data));
        total += sizeof(data);
        int n = snprintf(chunk, sizeof(chunk), "%zx\r\n", sizeof(data));
        memcpy(chunk + n, data, sizeof(data));
        memcpy(chunk + n + sizeof(data), "\r\n", 2);
        cl_sendn(c, chunk, (size_t)n + sizeof(data) + 2);
    }
    for (int i = 0; i < 3; i++) {
        usleep(10000);
        cl_send(c, "3\r\nxyz\r\n");
        memcpy(all + total, "xyz", 3);
        total += 3;
    }
    cl_send(c, "0\r\n\r\n");
    struct resp r;
    cr_assert(cl_response(c, &r));
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.body_len, total);
    cr_assert(memcmp(r.body, all, total) == 0);
    resp_free(&r);
    free(all);
    cr_assert_geq(atomic_load(&fx.stream_chunks), 4);
    /* and the connection is still usable */
    cl_send(c, "GET /hello HTTP/1.1\r\n\r\n");
    expect(c, 200, "hello");
    cl_close(c);
    server_stop();
}

Test(http, expect_continue)
{
    server_start_default();
    struct client *c = cl_connect();
    cl_send(c, "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    expect(c, 100, "");
    cl_send(c, "abcde");
    expect(c, 200, "abcde");

    /* 100 goes out only once the handler asks for the body (100 ms later) */
    cl_send(c, "POST /late-body HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
               "Content-Length: 3\r\n\r\n");
    cr_assert(cl_quiet(c, 50), "something was sent before the body was requested");
    expect(c, 100, "");
    cl_send(c, "xyz");
    expect(c, 200, "xyz");
    cl_close(c);
    server_stop();
}

Test(http, expect_continue_rejected)
{
    server_start_default();
    struct client *c = cl_connect();
    cl_send(c, "POST /auth HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    struct resp r;
    cr_assert(cl_response(c, &r));
    cr_assert_eq(r.status, 401, "%s", r.head);
    cr_assert(r.close);
    cr_assert_str_eq(r.body, "{\"error\":\"unauthorized\",\"detail\":\"no token\"}");
    resp_free(&r);
    cr_assert(cl_eof(c));
    cl_close(c);
    server_stop();
}

Test(http, header_bytes_limit)
{
    struct http_limits l;
    http_limits_default(&l);
    l.header_bytes = 1024;
    server_start(&l);
    struct client *c = cl_connect();
    char req[4096];
    char val[2001];
    memset(val, 'v', 2000);
    val[2000] = '\0';
    snprintf(req, sizeof(req), "GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: %s\r\n\r\n", val);
    cl_send(c, req);
    expect_error_and_close(c, 431);
    cl_close(c);

    /* a long request-target counts too */
    c = cl_connect();
    snprintf(req, sizeof(req), "GET /p/%s HTTP/1.1\r\n\r\n", val);
    cl_send(c, req);
    expect_error_and_close(c, 431);
    cl_close(c);

    /* just under the limit is fine */
    c = cl_connect();
    val[900] = '\0';
    snprintf(req, sizeof(req), "GET /hello HTTP/1.1\r\nX-Big: %s\r\n\r\n", val);
    cl_send(c, req);
    expect(c, 200, "hello");
    cl_close(c);
    server_stop();
}

Test(http, too_many_headers)
{
    server_start_default();
    char *req = malloc(8192);
    for (int n = HTTP_MAX_HEADERS; n <= HTTP_MAX_HEADERS + 1; n++) {
        size_t off = (size_t)sprintf(req, "GET /hello HTTP/1.1\r\n");
        for (int i = 0; i < n; i++)
            off += (size_t)sprintf(req + off, "X-H%d: %d\r\n", i, i);
        strcpy(req + off, "\r\n");
        struct client *c = cl_connect();
        cl_send(c, req);
        if (n == HTTP_MAX_HEADERS)
            expect(c, 200, "hello");
        else
            expect_error_and_close(c, 431);
        cl_close(c);
    }
    free(req);
    server_stop();
}

Test(http, header_timeout)
{
    struct http_limits l;
    http_limits_default(&l);
    l.header_timeout_ms = 200;
    server_start(&l);
    struct client *c = cl_connect();
    uint64_t t0 = now_ms();
    cl_send(c, "GET /hello HTTP/1.1\r\nHost: t\r\n"); /* never finished */
    expect_error_and_close(c, 408);
    uint64_t dt = now_ms() - t0;
    cr_assert(dt >= 150 && dt < 900, "408 after %llu ms", (unsigned long long)dt);
    cl_close(c);

    /* a slowloris that keeps trickling bytes is cut off all the same */
    c = cl_connect();
    t0 = now_ms();
    cl_send(c, "GET /hello HTTP/1.1\r\n");
    for (int i = 0; i < 6; i++) {
        usleep(50000);
        if (send(c->fd, "X: y\r\n", 6, MSG_NOSIGNAL) < 0)
            break;
    }
    expect_error_and_close(c, 408);
    dt = now_ms() - t0;
    cr_assert(dt < 600, "408 after %llu ms", (unsigned long long)dt);
    cl_close(c);
    char st[256];
    stats(st, sizeof(st));
    cr_assert(strstr(st, "timeouts=2"), "%s", st);
    server_stop();
}

Test(http, keepalive_idle_timeout)
{
    struct http_limits l;
    http_limits_default(&l);
    l.keepalive_timeout_ms = 200;
    server_start(&l);
    struct client *c = cl_connect();
    cl_send(c, "GET /hello HTTP/1.1\r\n\r\n");
    expect(c, 200, "hello");
    uint64_t t0 = now_ms();
    cr_assert(cl_eof(c), "idle connection not closed");
    uint64_t dt = now_ms() - t0;
    cr_assert(dt >= 150 && dt < 900, "closed after %llu ms", (unsigned long long)dt);
    cl_close(c);
    server_stop();
}

Test(http, max_connections)
{
    struct http_limits l;
    http_limits_default(&l);
    l.max_connections = 2;
    server_start(&l);
    struct client *a = cl_connect(), *b = cl_connect();
    cl_send(a, "GET /hello HTTP/1.1\r\n\r\n");
    expect(a, 200, "hello");
    cl_send(b, "GET /hello HTTP/1.1\r\n\r\n");
    expect(b, 200, "hello");
    struct client *c = cl_connect(); /* the kernel accepts; the server closes */
    cr_assert(cl_eof(c), "third connection was served");
    cl_close(c);
    cl_send(a, "GET /stats HTTP/1.1\r\n\r\n");
    struct resp r;
    cr_assert(cl_response(a, &r));
    cr_assert(strstr(r.body, "rejected=1"), "%s", r.body);
    cr_assert(strstr(r.body, "current=2"), "%s", r.body);
    resp_free(&r);
    cl_close(a);
    cl_close(b);
    server_stop();
}

Test(http, body_too_large_by_content_length)
{
    server_start_default();
    struct client *c = cl_connect();
    cl_send(c, "POST /echo?max=10 HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n");
    cl_sendn(c, "0123456789012345678901234567890123456789", 40);
    expect_error_and_close(c, 413);
    cl_close(c);
    server_stop();
}

Test(http, body_too_large_chunked)
{
    server_start_default();
    struct client *c = cl_connect();
    cl_send(c, "POST /echo?max=10 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               "8\r\n01234567\r\n");
    usleep(20000);
    cl_send(c, "8\r\n01234567\r\n");
    expect_error_and_close(c, 413);
    cl_close(c);
    char st[256];
    stats(st, sizeof(st));
    cr_assert(strstr(st, "aborts=1"), "%s", st);
    server_stop();
}

Test(http, malformed_request)
{
    server_start_default();
    static const char *const bad[] = {
        "GARBAGE\r\n\r\n",
        "GET /hello HTTP/1.1 extra\r\n\r\n",
        "GET http://example.com/hello HTTP/1.1\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\n\r\n",
        "GET /hello HTTP/1.1\r\nBad Header: x\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost : x\r\n\r\n",
        "GET /hello HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n", /* obs-fold */
        "POST /echo HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct client *c = cl_connect();
        cl_send(c, bad[i]);
        struct resp r;
        cr_assert(cl_response(c, &r), "no response to %s", bad[i]);
        cr_assert_eq(r.status, 400, "%d for %s", r.status, bad[i]);
        cr_assert(r.close);
        cr_assert(strncmp(r.body, "{\"error\":\"bad request\",\"detail\":\"", 33) == 0, "%s",
                  r.body);
        resp_free(&r);
        cr_assert(cl_eof(c));
        cl_close(c);
    }
    /* bad chunk framing in a body the handler is reading: 400 and close */
    struct client *c = cl_connect();
    cl_send(c, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    expect_error_and_close(c, 400);
    cl_close(c);
    char st[256];
    stats(st, sizeof(st));
    cr_assert(strstr(st, "parse=10"), "%s", st);
    server_stop();
}

Test(http, percent_encoding)
{
    server_start_default();
    static const char *const bad[] = {"/p/a%zz", "/p/a%2", "/p/a%", "/p/%00x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct client *c = cl_connect();
        char req[128];
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\n\r\n", bad[i]);
        cl_send(c, req);
        expect_error_and_close(c, 400);
        cl_close(c);
    }
    struct client *c = cl_connect();
    cl_send(c, "GET /p/a%20b%2Fc%C3%A9?x=%zz&y=1 HTTP/1.1\r\n\r\n");
    expect(c, 200, "/p/a b/c\xc3\xa9|x=%zz&y=1|GET");
    cl_close(c);
    server_stop();
}

Test(http, http10)
{
    server_start_default();
    struct client *c = cl_connect();
    cl_send(c, "GET /hello HTTP/1.0\r\n\r\n");
    struct resp r;
    cr_assert(cl_response(c, &r));
    cr_assert_eq(r.status, 200);
    cr_assert(r.close);
    resp_free(&r);
    cr_assert(cl_eof(c));
    cl_close(c);

    c = cl_connect();
    for (int i = 0; i < 2; i++) {
        cl_send(c, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        cr_assert(cl_response(c, &r));
        cr_assert_eq(r.status, 200);
        cr_assert(!r.close);
        cr_assert(strcasestr(r.head, "\r\nConnection: keep-alive\r\n"));
        resp_free(&r);
    }
    cl_close(c);

    /* 1.1 with Connection: close */
    c = cl_connect();
    cl_send(c, "GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n");
    cr_assert(cl_response(c, &r));
    cr_assert(r.close);
    resp_free(&r);
    cr_assert(cl_eof(c));
    cl_close(c);
    server_stop();
}

Test(http, client_abort_mid_body)
{
    server_start_default();
    struct client *c = cl_connect();
    cl_send(c, "POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly-some");
    usleep(30000);
    cl_close(c);
    usleep(30000);
    char st[256];
    stats(st, sizeof(st));
    cr_assert(strstr(st, "aborts=1"), "%s", st);
    server_stop();
}

Test(http, shutdown_drains_in_flight)
{
    server_start_default();
    struct client *idle = cl_connect();
    cl_send(idle, "GET /hello HTTP/1.1\r\n\r\n");
    expect(idle, 200, "hello");

    struct client *c = cl_connect();
    cl_send(c, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    sem_wait(&fx.slow_started);
    uint64_t t0 = now_ms();
    uv_async_send(&fx.stop);

    cr_assert(cl_eof(idle), "idle connection not closed by shutdown");
    struct resp r;
    cr_assert(cl_response(c, &r), "in-flight request not answered");
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "slow");
    cr_assert(r.close, "response during drain must close: %s", r.head);
    resp_free(&r);
    cr_assert(cl_eof(c));
    pthread_join(fx.thread, NULL);
    cr_assert_eq(atomic_load(&fx.done_calls), 1);
    cr_assert_lt(now_ms() - t0, 900);
    cr_assert_eq(uv_loop_close(&fx.loop), 0);

    /* the port is closed */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(fx.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_neq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    cl_close(c);
    cl_close(idle);
    sem_destroy(&fx.slow_started);
}

Test(http, ipv6_listen)
{
    cr_assert_eq(uv_loop_init(&fx.loop), 0);
    struct http_server *s;
    int rc = http_server_start(&fx.loop, "::1", 0, NULL, &handler, &s);
    if (rc == -EADDRNOTAVAIL || rc == -EAFNOSUPPORT) {
        uv_run(&fx.loop, UV_RUN_DEFAULT);
        uv_loop_close(&fx.loop);
        cr_skip_test("no IPv6 loopback here");
    }
    cr_assert_eq(rc, 0, "%s", strerror(-rc));
    uint16_t port = http_server_port(s);
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
    sa.sin6_addr = in6addr_loopback;
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    const char *req = "GET /p/v6 HTTP/1.1\r\nConnection: close\r\n\r\n";
    cr_assert_eq(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
    /* drive the loop here until the server has answered and closed */
    char buf[1024];
    size_t len = 0;
    int flags = MSG_DONTWAIT;
    for (int i = 0; i < 2000; i++) {
        uv_run(&fx.loop, UV_RUN_NOWAIT);
        ssize_t n = recv(fd, buf + len, sizeof(buf) - 1 - len, flags);
        if (n == 0)
            break;
        if (n > 0)
            len += (size_t)n;
        usleep(500);
    }
    buf[len] = '\0';
    cr_assert(strstr(buf, "HTTP/1.1 200 OK\r\n") == buf, "%s", buf);
    cr_assert(strstr(buf, "\r\n\r\n/p/v6||GET"), "%s", buf);
    close(fd);
    http_server_shutdown(s, on_done, NULL);
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    cr_assert_eq(atomic_load(&fx.done_calls), 1);
    cr_assert_eq(uv_loop_close(&fx.loop), 0);

    /* names are not resolved: an address is required */
    uv_loop_init(&fx.loop);
    cr_assert_eq(http_server_start(&fx.loop, "localhost", 0, NULL, &handler, &s), -EINVAL);
    uv_loop_close(&fx.loop);
}

/* Read one response with a large pattern body, checking it as it streams in. */
static void check_big(struct client *c, size_t n)
{
    char *end;
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
        cr_assert_gt(cl_fill(c), 0);
    size_t hlen = (size_t)(end - c->buf) + 4;
    cr_assert(strncmp(c->buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
    const char *cl = strcasestr(c->buf, "\r\nContent-Length:");
    cr_assert(cl && cl < end);
    cr_assert_eq(strtoull(cl + 17, NULL, 10), n);
    memmove(c->buf, c->buf + hlen, c->len - hlen);
    c->len -= hlen;
    size_t seen = 0;
    while (seen < n) {
        if (c->len == 0)
            cr_assert_gt(cl_fill(c), 0, "body cut at %zu of %zu", seen, n);
        size_t take = c->len < n - seen ? c->len : n - seen;
        for (size_t i = 0; i < take; i++)
            if (c->buf[i] != (char)('a' + (seen + i) % 23))
                cr_assert_fail("byte %zu is %d", seen + i, c->buf[i]);
        memmove(c->buf, c->buf + take, c->len - take);
        c->len -= take;
        seen += take;
    }
}

Test(http, large_response_partial_write)
{
    server_start_default();
    struct client *c = cl_connect();
    /* bigger than any kernel send buffer: the first try_write is partial and
     * the rest goes through uv_write - from a copy for /big (its buffer is
     * freed when http_respond returns), from the owned buffer for /big-owned */
    size_t n = 16u << 20;
    char req[256];
    snprintf(req, sizeof(req),
             "GET /big?max=%zu HTTP/1.1\r\n\r\nGET /big-owned?max=%zu HTTP/1.1\r\n\r\n"
             "GET /hello HTTP/1.1\r\n\r\n", n, n);
    cl_send(c, req);
    usleep(50000);
    check_big(c, n);
    check_big(c, n);
    expect(c, 200, "hello");
    cl_close(c);
    server_stop();
}

Test(http, stalled_reader_is_cut_off)
{
    struct http_limits l;
    http_limits_default(&l);
    l.body_timeout_ms = 200;
    server_start(&l);
    struct client *c = cl_connect();
    cl_send(c, "GET /big?max=33554432 HTTP/1.1\r\n\r\n"); /* and never read it */
    usleep(600000);
    char st[256];
    stats(st, sizeof(st));
    cr_assert(strstr(st, "timeouts=1"), "%s", st);
    cr_assert(strstr(st, "current=1"), "%s", st); /* only the stats connection */
    cl_close(c);
    server_stop();
}

Test(http, listen_errors_free_cleanly)
{
    cr_assert_eq(uv_loop_init(&fx.loop), 0);
    struct http_server *a, *b;
    cr_assert_eq(http_server_start(&fx.loop, "127.0.0.1", 0, NULL, &handler, &a), 0);
    int rc = http_server_start(&fx.loop, "127.0.0.1", http_server_port(a), NULL, &handler, &b);
    cr_assert_eq(rc, -EADDRINUSE, "%d", rc);
    cr_assert_eq(http_server_start(&fx.loop, "300.1.2.3", 0, NULL, &handler, &b), -EINVAL);
    cr_assert_eq(http_server_start(&fx.loop, "127.0.0.1", 0, NULL, NULL, &b), -EINVAL);
    http_server_shutdown(a, on_done, NULL);
    http_server_shutdown(a, on_done, NULL); /* a second call does nothing */
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    cr_assert_eq(atomic_load(&fx.done_calls), 1);
    cr_assert_eq(uv_loop_close(&fx.loop), 0);
}
