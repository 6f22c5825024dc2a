/* fuzz_http.c - libFuzzer driver for the HTTP server (gateway/http*.c).
 *
 * The input is what a client sends on one connection. The real server runs
 * on a loop in this thread, listening on 127.0.0.1 port 0; each input is
 * written to a fresh loopback connection (split in two writes at a point the
 * first byte picks), the client half-closes, and the loop runs until the
 * server has closed the connection. A server that never closes is a bug:
 * the driver traps after a bound.
 *
 * The handler exercises every path by the first letter of the path:
 *   /e...  buffered body (max 4 KiB)     /s...  streamed body, paused and
 *   /r...  respond at once, body unread          resumed from a timer
 *   /a...  respond later from a timer    else   200 at once
 */
#include "gateway/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct later {
    uv_timer_t timer;
    struct http_request *req;
    bool respond; /* else resume */
};

static uv_loop_t *loop;
static struct http_server *server;
static uint16_t port;

static void on_later_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_later(uv_timer_t *t)
{
    struct later *l = t->data;
    if (l->respond) {
        http_respond(l->req, 202, NULL, 0, "later", 5);
        uv_close((uv_handle_t *)t, on_later_closed);
    } else {
        http_request_resume(l->req);
    }
}

static struct later *later_new(struct http_request *req, bool respond)
{
    struct later *l = calloc(1, sizeof(*l));
    if (!l)
        abort();
    uv_timer_init(loop, &l->timer);
    l->timer.data = l;
    l->req = req;
    l->respond = respond;
    return l;
}

static void on_request(struct http_request *req, void *data)
{
    static const struct http_header h[] = {
        {"Content-Type", 12, "text/plain", 10},
        {"X-Bad\r\nInjected", 0, "v", 0}, /* must be dropped */
        {"X-Ok", 0, "line\r\nbreak", 0},  /* must be dropped */
    };
    switch (req->path[1]) {
    case 'e':
        http_request_read_body(req, HTTP_BODY_BUFFER, 4096);
        break;
    case 's': {
        struct later *l = later_new(req, false);
        req->data = l;
        if (http_request_read_body(req, HTTP_BODY_STREAM, 8192) < 0) {
            req->data = NULL;
            uv_close((uv_handle_t *)&l->timer, on_later_closed);
        }
        break;
    }
    case 'a': {
        struct later *l = later_new(req, true);
        uv_timer_start(&l->timer, on_later, 0, 0);
        break;
    }
    case 'r':
        http_respond_error(req, 401, "unauthorized", req->path, false);
        break;
    default:
        http_respond(req, 200, h, sizeof(h) / sizeof(h[0]), req->target, strlen(req->target));
        break;
    }
}

static void on_body(struct http_request *req, void *data)
{
    struct later *l = req->data;
    http_request_pause(req);
    uv_timer_start(&l->timer, on_later, 0, 0);
}

static void finish_stream(struct http_request *req, int status)
{
    struct later *l = req->data;
    req->data = NULL;
    if (l)
        uv_close((uv_handle_t *)&l->timer, on_later_closed);
    http_respond(req, status, NULL, 0, NULL, 0);
}

static void on_body_end(struct http_request *req, void *data)
{
    if (req->path[1] == 's')
        finish_stream(req, 200);
    else
        http_respond(req, 200, NULL, 0, req->body, req->body_len);
}

static void on_abort(struct http_request *req, void *data)
{
    if (req->path[1] == 's')
        finish_stream(req, 500);
    else if (req->path[1] != 'a')
        http_respond(req, 500, NULL, 0, NULL, 0); /* only frees */
}

static void setup(void)
{
    static const struct http_handler handler = {
        .on_request = on_request,
        .on_body = on_body,
        .on_body_end = on_body_end,
        .on_abort = on_abort,
    };
    struct http_limits l;
    http_limits_default(&l);
    l.header_bytes = 2048;
    loop = uv_default_loop();
    if (http_server_start(loop, "127.0.0.1", 0, &l, &handler, &server) < 0)
        abort();
    port = http_server_port(server);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!server)
        setup();
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
        close(fd);
        return 0;
    }
    size_t split = size ? data[0] % (size + 1) : 0;
    size_t sent = 0;
    bool shut = false;
    char sink[65536];
    for (int spins = 0;; spins++) {
        if (spins > 200000)
            __builtin_trap(); /* the server never closed the connection */
        uv_run(loop, UV_RUN_NOWAIT);
        size_t want = sent < split ? split : size;
        if (sent < want) {
            ssize_t w = send(fd, data + sent, want - sent, MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != ENOTCONN)
                sent = size; /* reset by the server: stop sending */
        } else if (!shut && sent == size) {
            shutdown(fd, SHUT_WR);
            shut = true;
        }
        ssize_t n = recv(fd, sink, sizeof(sink), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != ENOTCONN))
            break;
    }
    close(fd);
    /* let the server notice and free what belonged to this connection */
    for (int i = 0; i < 8; i++)
        uv_run(loop, UV_RUN_NOWAIT);
    return 0;
}
