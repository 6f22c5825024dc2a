/* test_proto.c - the framed channel: header check, encoders, decoders under
 * every truncation and bad length, and the blocking send/receive with fds. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "sandbox/proto.h"

static struct proto_str S(const char *s) {
    return (struct proto_str){.p = s, .len = (uint32_t)strlen(s)};
}

static void
build_request(struct proto_buf *b, uint32_t n_headers)
{
    proto_buf_init(b);
    cr_assert_eq(proto_buf_begin(b, PROTO_INVOKE, 7), 0);
    cr_assert_eq(proto_put_bytes(b, "POST", 4), 0);
    cr_assert_eq(proto_put_bytes(b, "/a/b", 4), 0);
    cr_assert_eq(proto_put_bytes(b, "x=1", 3), 0);
    struct proto_pair pairs[PROTO_MAX_PAIRS];
    for (uint32_t i = 0; i < n_headers; i++) {
        pairs[i].key = S(i % 2 ? "content-type" : "x-h");
        pairs[i].value = S(i % 2 ? "text/plain" : "");
    }
    cr_assert_eq(proto_put_pairs(b, pairs, n_headers), 0);
    static const char body[] = {'h', 'i', 0, '\n', (char)0xff};
    cr_assert_eq(proto_put_bytes(b, body, sizeof(body)), 0);
    cr_assert_eq(proto_buf_finish(b), 0);
}

Test(proto, hdr_check)
{
    static const uint16_t ok[] = {PROTO_LOAD,       PROTO_INVOKE, PROTO_FORK,   PROTO_RESET,
                                  PROTO_SHUTDOWN,   PROTO_HELLO,  PROTO_LOADED, PROTO_RESPONSE,
                                  PROTO_FAILED,     PROTO_FORKED, PROTO_LOG,    PROTO_EXITED,
                                  PROTO_RESET_DONE, PROTO_PARK,   PROTO_PARKED, PROTO_PREFORK};
    for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
        struct proto_hdr h = {.type = ok[i], .len = 10};
        cr_assert_eq(proto_hdr_check(&h), 0, "type %u", ok[i]);
    }
    static const uint16_t bad[] = {0, 8, 63, 73, 0xffff};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct proto_hdr h = {.type = bad[i]};
        cr_assert_eq(proto_hdr_check(&h), -EBADMSG, "type %u", bad[i]);
    }
    struct proto_hdr h = {.type = PROTO_LOG, .flags = 1};
    cr_assert_eq(proto_hdr_check(&h), -EBADMSG);
    h = (struct proto_hdr){.type = PROTO_RESPONSE, .len = PROTO_MAX_PAYLOAD};
    cr_assert_eq(proto_hdr_check(&h), 0);
    h.len = PROTO_MAX_PAYLOAD + 1;
    cr_assert_eq(proto_hdr_check(&h), -EMSGSIZE);
    h.len = UINT32_MAX;
    cr_assert_eq(proto_hdr_check(&h), -EMSGSIZE);
}

Test(proto, header_layout)
{
    struct proto_buf b;
    build_request(&b, 2);
    struct proto_hdr h;
    memcpy(&h, b.data, PROTO_HDR_SIZE);
    cr_assert_eq(sizeof(struct proto_hdr), PROTO_HDR_SIZE);
    cr_assert_eq(h.type, PROTO_INVOKE);
    cr_assert_eq(h.flags, 0);
    cr_assert_eq(h.id, 7);
    cr_assert_eq(h.len, b.len - PROTO_HDR_SIZE);
    /* begin again reuses the buffer for a new frame */
    cr_assert_eq(proto_buf_begin(&b, PROTO_SHUTDOWN, 1), 0);
    cr_assert_eq(proto_buf_finish(&b), 0);
    cr_assert_eq(b.len, PROTO_HDR_SIZE);
    memcpy(&h, b.data, PROTO_HDR_SIZE);
    cr_assert_eq(h.type, PROTO_SHUTDOWN);
    cr_assert_eq(h.len, 0);
    proto_buf_free(&b);
    cr_assert_null(b.data);
}

Test(proto, request_round_trip)
{
    struct proto_buf b;
    build_request(&b, 3);
    static struct proto_request req;
    cr_assert_eq(proto_request_decode(b.data + PROTO_HDR_SIZE, b.len - PROTO_HDR_SIZE, &req), 0);
    cr_assert(proto_str_eq(req.method, "POST"));
    cr_assert(proto_str_eq(req.path, "/a/b"));
    cr_assert(proto_str_eq(req.query, "x=1"));
    cr_assert_eq(req.n_headers, 3);
    cr_assert(proto_str_eq(req.headers[0].key, "x-h"));
    cr_assert(proto_str_eq(req.headers[0].value, ""));
    cr_assert(proto_str_eq(req.headers[1].key, "content-type"));
    cr_assert(proto_str_eq(req.headers[1].value, "text/plain"));
    cr_assert_eq(req.body.len, 5);
    cr_assert_eq(memcmp(req.body.p, "hi\0\n\xff", 5), 0);
    proto_buf_free(&b);
}

Test(proto, response_round_trip)
{
    struct proto_buf b;
    proto_buf_init(&b);
    cr_assert_eq(proto_buf_begin(&b, PROTO_RESPONSE, 9), 0);
    cr_assert_eq(proto_put_u32(&b, 418), 0);
    struct proto_pair p[1] = {{S("x-a"), S("1")}};
    cr_assert_eq(proto_put_pairs(&b, p, 1), 0);
    cr_assert_eq(proto_put_bytes(&b, "", 0), 0);
    cr_assert_eq(proto_buf_finish(&b), 0);

    static struct proto_response res;
    const uint8_t *pl = b.data + PROTO_HDR_SIZE;
    size_t n = b.len - PROTO_HDR_SIZE;
    cr_assert_eq(proto_response_decode(pl, n, &res), 0);
    cr_assert_eq(res.status, 418);
    cr_assert_eq(res.n_headers, 1);
    cr_assert(proto_str_eq(res.headers[0].key, "x-a"));
    cr_assert_eq(res.body.len, 0);

    /* every truncation fails, and so does a trailing byte */
    for (size_t k = 0; k < n; k++)
        cr_assert_eq(proto_response_decode(pl, k, &res), -EBADMSG, "len %zu", k);
    cr_assert_eq(proto_put_raw(&b, "", 1), 0);
    cr_assert_eq(proto_response_decode(pl, n + 1, &res), -EBADMSG);
    cr_assert_eq(res.run_ns, 0);

    /* the sandbox's own run time may follow, 8 bytes exactly */
    b.len = PROTO_HDR_SIZE + n;
    cr_assert_eq(proto_put_u64(&b, 4321), 0);
    cr_assert_eq(proto_put_raw(&b, "", 1), 0);
    pl = b.data + PROTO_HDR_SIZE;
    cr_assert_eq(proto_response_decode(pl, n + 8, &res), 0);
    cr_assert_eq(res.run_ns, 4321);
    cr_assert_eq(res.status, 418);
    for (size_t k = n + 1; k < n + 8; k++)
        cr_assert_eq(proto_response_decode(pl, k, &res), -EBADMSG, "len %zu", k);
    cr_assert_eq(proto_response_decode(pl, n + 9, &res), -EBADMSG);
    proto_buf_free(&b);
}

Test(proto, request_every_truncation)
{
    struct proto_buf b;
    build_request(&b, 4);
    static struct proto_request req;
    const uint8_t *pl = b.data + PROTO_HDR_SIZE;
    size_t n = b.len - PROTO_HDR_SIZE;
    for (size_t k = 0; k < n; k++)
        cr_assert_eq(proto_request_decode(pl, k, &req), -EBADMSG, "len %zu", k);
    /* trailing garbage */
    uint8_t *copy = malloc(n + 3);
    memcpy(copy, pl, n);
    memset(copy + n, 0, 3);
    cr_assert_eq(proto_request_decode(copy, n + 3, &req), -EBADMSG);
    free(copy);
    cr_assert_eq(proto_request_decode(NULL, 0, &req), -EBADMSG);
    proto_buf_free(&b);
}

Test(proto, bad_lengths)
{
    static struct proto_request req;
    /* method length far past the end */
    uint8_t p1[8] = {0};
    uint32_t huge = UINT32_MAX;
    memcpy(p1, &huge, 4);
    cr_assert_eq(proto_request_decode(p1, sizeof(p1), &req), -EBADMSG);
    /* length one past the end */
    uint32_t five = 5;
    memcpy(p1, &five, 4);
    cr_assert_eq(proto_request_decode(p1, sizeof(p1), &req), -EBADMSG);

    /* a byte string whose length is exactly the rest decodes */
    struct proto_reader r;
    uint32_t four = 4;
    memcpy(p1, &four, 4);
    proto_reader_init(&r, p1, sizeof(p1));
    struct proto_str s;
    cr_assert_eq(proto_get_bytes(&r, &s), 0);
    cr_assert_eq(s.len, 4);
    cr_assert_eq(r.left, 0);
    uint32_t v;
    uint64_t w;
    cr_assert_eq(proto_get_u32(&r, &v), -EBADMSG);
    cr_assert_eq(proto_get_u64(&r, &w), -EBADMSG);
    cr_assert_eq(proto_get_bytes(&r, &s), -EBADMSG);

    /* a pair count the remaining bytes cannot hold */
    uint8_t p2[12] = {0};
    uint32_t cnt = 3;
    memcpy(p2, &cnt, 4);
    struct proto_pair pairs[8];
    uint32_t n;
    proto_reader_init(&r, p2, sizeof(p2));
    cr_assert_eq(proto_get_pairs(&r, pairs, 8, &n), -EBADMSG);
    /* one empty pair fits exactly */
    cnt = 1;
    memcpy(p2, &cnt, 4);
    proto_reader_init(&r, p2, sizeof(p2));
    cr_assert_eq(proto_get_pairs(&r, pairs, 8, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(pairs[0].key.len, 0);
}

Test(proto, too_many_pairs)
{
    static struct proto_pair pairs[PROTO_MAX_PAIRS + 1];
    for (size_t i = 0; i < ARRAY_SIZE(pairs); i++)
        pairs[i] = (struct proto_pair){S("k"), S("v")};
    struct proto_buf b;
    proto_buf_init(&b);
    cr_assert_eq(proto_buf_begin(&b, PROTO_LOAD, 0), 0);
    cr_assert_eq(proto_put_pairs(&b, pairs, PROTO_MAX_PAIRS + 1), -E2BIG);
    cr_assert_eq(b.len, PROTO_HDR_SIZE, "a failed put leaves nothing behind");
    cr_assert_eq(proto_put_pairs(&b, pairs, PROTO_MAX_PAIRS), 0);

    /* a reader with a smaller capacity refuses */
    struct proto_reader r;
    uint32_t n = 0;
    proto_reader_init(&r, b.data + PROTO_HDR_SIZE, b.len - PROTO_HDR_SIZE);
    cr_assert_eq(proto_get_pairs(&r, pairs, 10, &n), -E2BIG);
    proto_reader_init(&r, b.data + PROTO_HDR_SIZE, b.len - PROTO_HDR_SIZE);
    cr_assert_eq(proto_get_pairs(&r, pairs, PROTO_MAX_PAIRS, &n), 0);
    cr_assert_eq(n, PROTO_MAX_PAIRS);

    /* a request claiming PROTO_MAX_PAIRS + 1 headers, all present */
    cr_assert_eq(proto_buf_begin(&b, PROTO_INVOKE, 1), 0);
    for (int i = 0; i < 3; i++)
        proto_put_bytes(&b, "x", 1);
    proto_put_u32(&b, PROTO_MAX_PAIRS + 1);
    for (uint32_t i = 0; i < PROTO_MAX_PAIRS + 1; i++) {
        proto_put_bytes(&b, "k", 1);
        proto_put_bytes(&b, "v", 1);
    }
    proto_put_bytes(&b, "", 0);
    cr_assert_eq(proto_buf_finish(&b), 0);
    static struct proto_request req;
    cr_assert_eq(proto_request_decode(b.data + PROTO_HDR_SIZE, b.len - PROTO_HDR_SIZE, &req),
                 -EBADMSG);
    proto_buf_free(&b);
}

Test(proto, oversize)
{
    struct proto_buf b;
    proto_buf_init(&b);
    cr_assert_eq(proto_buf_begin(&b, PROTO_RESPONSE, 1), 0);
    char *big = calloc(1, PROTO_MAX_PAYLOAD + 1);
    cr_assert_eq(proto_put_raw(&b, big, PROTO_MAX_PAYLOAD + 1), -EMSGSIZE);
    cr_assert_eq(b.len, PROTO_HDR_SIZE);
    cr_assert_eq(proto_put_raw(&b, big, PROTO_MAX_PAYLOAD), 0);
    cr_assert_eq(proto_put_u32(&b, 0), -EMSGSIZE);
    cr_assert_eq(proto_buf_finish(&b), 0);
    struct proto_hdr h;
    memcpy(&h, b.data, sizeof(h));
    cr_assert_eq(h.len, PROTO_MAX_PAYLOAD);
    cr_assert_eq(proto_hdr_check(&h), 0);

    cr_assert_eq(proto_buf_begin(&b, PROTO_RESPONSE, 1), 0);
    cr_assert_eq(proto_put_bytes(&b, big, PROTO_MAX_PAYLOAD), -EMSGSIZE,
                 "length word plus the payload is over");
    cr_assert_eq(b.len, PROTO_HDR_SIZE);
    free(big);
    proto_buf_free(&b);

    struct proto_buf empty;
    proto_buf_init(&empty);
    cr_assert_eq(proto_buf_finish(&empty), -EINVAL);
}

Test(proto, str_eq)
{
    cr_assert(proto_str_eq(S(""), ""));
    cr_assert(proto_str_eq((struct proto_str){NULL, 0}, ""));
    cr_assert(!proto_str_eq(S("ab"), "abc"));
    cr_assert(!proto_str_eq(S("abc"), "ab"));
    cr_assert(proto_str_eq((struct proto_str){"abcdef", 3}, "abc"));
}

/* ---- blocking send/receive ---- */

Test(proto, send_recv_with_fds)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);

    struct proto_buf b;
    proto_buf_init(&b);
    proto_buf_begin(&b, PROTO_FORKED, 42);
    proto_put_u32(&b, 0);
    proto_put_u32(&b, 17);
    proto_buf_finish(&b);
    int send_fds[2] = {pfd[0], pfd[1]};
    cr_assert_eq(proto_send_frame(sv[0], &b, send_fds, 2), 0);
    close(pfd[0]);
    close(pfd[1]);

    struct proto_hdr h;
    cleanup_free uint8_t *payload = NULL;
    int fds[PROTO_MAX_FDS];
    int n_fds = -1;
    cr_assert_eq(proto_recv_frame(sv[1], &h, &payload, fds, &n_fds), 0);
    cr_assert_eq(h.type, PROTO_FORKED);
    cr_assert_eq(h.id, 42);
    cr_assert_eq(h.len, 8);
    cr_assert_eq(n_fds, 2);
    cr_assert(fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
    /* the fds are the pipe: write one end, read the other */
    cr_assert_eq(write(fds[1], "z", 1), 1);
    char c;
    cr_assert_eq(read(fds[0], &c, 1), 1);
    cr_assert_eq(c, 'z');
    close(fds[0]);
    close(fds[1]);

    /* a frame without fds, then EOF */
    proto_buf_begin(&b, PROTO_HELLO, 0);
    proto_put_pairs(&b, NULL, 0);
    proto_buf_finish(&b);
    cr_assert_eq(proto_send_frame(sv[0], &b, NULL, 0), 0);
    close(sv[0]);
    free(payload);
    payload = NULL;
    cr_assert_eq(proto_recv_frame(sv[1], &h, &payload, fds, &n_fds), 0);
    cr_assert_eq(h.type, PROTO_HELLO);
    cr_assert_eq(n_fds, 0);
    free(payload);
    payload = NULL;
    cr_assert_eq(proto_recv_frame(sv[1], &h, &payload, fds, &n_fds), -ECONNRESET);
    cr_assert_null(payload);
    close(sv[1]);
    proto_buf_free(&b);
}

Test(proto, send_rejects_bad_args)
{
    struct proto_buf b;
    proto_buf_init(&b);
    cr_assert_eq(proto_send_frame(0, &b, NULL, 0), -EINVAL);
    proto_buf_begin(&b, PROTO_HELLO, 0);
    proto_buf_finish(&b);
    int fds[PROTO_MAX_FDS + 1] = {0};
    cr_assert_eq(proto_send_frame(0, &b, fds, PROTO_MAX_FDS + 1), -EINVAL);
    cr_assert_eq(proto_send_frame(0, &b, NULL, 1), -EINVAL);
    proto_buf_free(&b);
}

Test(proto, recv_rejects_bad_header_and_truncation)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct proto_hdr bad = {.type = 999, .len = 0};
    cr_assert_eq(write(sv[0], &bad, sizeof(bad)), (ssize_t)sizeof(bad));
    struct proto_hdr h;
    uint8_t *payload = NULL;
    int fds[PROTO_MAX_FDS], n_fds;
    cr_assert_eq(proto_recv_frame(sv[1], &h, &payload, fds, &n_fds), -EBADMSG);

    struct proto_hdr big = {.type = PROTO_RESPONSE, .len = PROTO_MAX_PAYLOAD + 1};
    cr_assert_eq(write(sv[0], &big, sizeof(big)), (ssize_t)sizeof(big));
    cr_assert_eq(proto_recv_frame(sv[1], &h, &payload, fds, &n_fds), -EMSGSIZE);

    /* header promises 10 bytes, 3 arrive, then EOF */
    struct proto_hdr shortf = {.type = PROTO_LOG, .len = 10};
    cr_assert_eq(write(sv[0], &shortf, sizeof(shortf)), (ssize_t)sizeof(shortf));
    cr_assert_eq(write(sv[0], "abc", 3), 3);
    /* and a half header on a second pair */
    close(sv[0]);
    cr_assert_eq(proto_recv_frame(sv[1], &h, &payload, fds, &n_fds), -ECONNRESET);
    cr_assert_null(payload);
    close(sv[1]);

    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    cr_assert_eq(write(sv[0], &shortf, 5), 5);
    close(sv[0]);
    cr_assert_eq(proto_recv_frame(sv[1], &h, &payload, fds, &n_fds), -ECONNRESET);
    close(sv[1]);
}

Test(proto, recv_without_fd_array_closes_fds)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    struct proto_buf b;
    proto_buf_init(&b);
    proto_buf_begin(&b, PROTO_LOG, 0);
    proto_put_u32(&b, 1);
    proto_buf_finish(&b);
    cr_assert_eq(proto_send_frame(sv[0], &b, &pfd[1], 1), 0);
    close(pfd[1]);
    struct proto_hdr h;
    uint8_t *payload = NULL;
    cr_assert_eq(proto_recv_frame(sv[1], &h, &payload, NULL, NULL), 0);
    free(payload);
    /* every write end is closed now, so the read end sees EOF */
    char c;
    cr_assert_eq(read(pfd[0], &c, 1), 0);
    close(pfd[0]);
    close(sv[0]);
    close(sv[1]);
    proto_buf_free(&b);
}

/* A frame larger than the socket buffer: the writer blocks in pieces, the
 * reader assembles it. */
Test(proto, large_frame_across_processes)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    size_t n = 5u << 20;
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(sv[1]);
        struct proto_buf b;
        proto_buf_init(&b);
        proto_buf_begin(&b, PROTO_RESPONSE, 3);
        proto_put_u32(&b, 200);
        proto_put_pairs(&b, NULL, 0);
        uint8_t *body = malloc(n);
        for (size_t i = 0; i < n; i++)
            body[i] = (uint8_t)(i * 31);
        proto_put_bytes(&b, body, n);
        proto_buf_finish(&b);
        int devnull = open("/dev/null", O_RDONLY);
        _exit(proto_send_frame(sv[0], &b, &devnull, 1) == 0 ? 0 : 1);
    }
    close(sv[0]);
    struct proto_hdr h;
    cleanup_free uint8_t *payload = NULL;
    int fds[PROTO_MAX_FDS], n_fds;
    cr_assert_eq(proto_recv_frame(sv[1], &h, &payload, fds, &n_fds), 0);
    cr_assert_eq(n_fds, 1);
    close(fds[0]);
    static struct proto_response res;
    cr_assert_eq(proto_response_decode(payload, h.len, &res), 0);
    cr_assert_eq(res.body.len, n);
    for (size_t i = 0; i < n; i += 4097)
        cr_assert_eq((uint8_t)res.body.p[i], (uint8_t)(i * 31));
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(sv[1]);
}

/* An instance's reads ahead: frames that are all in the buffer are lent
 * from it when asked, one bigger than the buffer is copied whole. */
Test(proto, buffered_recv_lends_what_it_holds)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    /* all four fit in the socket's buffer; the third not in the reader's */
    size_t sizes[] = {5, 0, 3 * PROTO_RXBUF_SIZE, 7};
    for (size_t k = 0; k < 4; k++) {
        struct proto_buf b;
        proto_buf_init(&b);
        cr_assert_eq(proto_buf_begin(&b, PROTO_INVOKE, (uint32_t)k), 0);
        for (size_t i = 0; i < sizes[k]; i++)
            cr_assert_eq(proto_put_raw(&b, &(uint8_t){(uint8_t)(k * 7 + i)}, 1), 0);
        cr_assert_eq(proto_buf_finish(&b), 0);
        cr_assert_eq(proto_send_frame(sv[0], &b, NULL, 0), 0);
        proto_buf_free(&b);
    }
    static struct proto_rxbuf rb;
    for (size_t k = 0; k < 4; k++) {
        struct proto_hdr h;
        uint8_t *p = NULL;
        bool borrowed;
        cr_assert_eq(proto_recv_frame_buffered(sv[1], &rb, &h, &p, &borrowed), 0);
        cr_assert_eq(h.id, k);
        cr_assert_eq(h.len, sizes[k]);
        cr_assert_eq(borrowed, k != 2, "frame %zu of %zu bytes", k, sizes[k]);
        for (size_t i = 0; i < sizes[k]; i++)
            cr_assert_eq(p[i], (uint8_t)(k * 7 + i));
        if (!borrowed)
            free(p);
    }
    close(sv[0]);
    close(sv[1]);
}

/* The small payloads: what the agent and the monitor encode, emberd decodes;
 * every truncation and any trailing byte is refused. */
Test(proto, small_payloads)
{
    struct proto_buf b;
    proto_buf_init(&b);
    cr_assert_eq(proto_buf_begin(&b, PROTO_LOADED, 1), 0);
    proto_put_u32(&b, 5);
    proto_put_bytes(&b, "msg", 3);
    proto_put_u64(&b, 1234);
    cr_assert_eq(proto_buf_finish(&b), 0);
    const uint8_t *p = b.data + PROTO_HDR_SIZE;
    size_t len = b.len - PROTO_HDR_SIZE;
    struct proto_loaded lo;
    cr_assert_eq(proto_loaded_decode(p, len, &lo), 0);
    cr_expect_eq(lo.status, 5);
    cr_expect(proto_str_eq(lo.message, "msg"));
    cr_expect_eq(lo.init_ns, 1234);
    for (size_t cut = 0; cut < len; cut++)
        cr_expect_eq(proto_loaded_decode(p, cut, &lo), -EBADMSG, "cut at %zu", cut);
    proto_buf_free(&b);

    proto_buf_init(&b);
    proto_buf_begin(&b, PROTO_FORKED, 2);
    proto_put_u32(&b, 0);
    proto_put_u32(&b, 42);
    proto_put_raw(&b, "x", 1); /* one byte too many */
    proto_buf_finish(&b);
    struct proto_forked fo;
    cr_expect_eq(proto_forked_decode(b.data + PROTO_HDR_SIZE, b.len - PROTO_HDR_SIZE - 1, &fo), 0);
    cr_expect_eq(fo.pid, 42);
    cr_expect_eq(fo.ahead_ns, 0);
    cr_expect_eq(proto_forked_decode(b.data + PROTO_HDR_SIZE, b.len - PROTO_HDR_SIZE, &fo),
                 -EBADMSG);
    proto_buf_free(&b);

    /* the optional u64 of a child forked ahead; nothing between or after */
    proto_buf_init(&b);
    proto_buf_begin(&b, PROTO_FORKED, 3);
    proto_put_u32(&b, 0);
    proto_put_u32(&b, 43);
    proto_put_u64(&b, 5000);
    proto_put_raw(&b, "x", 1);
    proto_buf_finish(&b);
    len = b.len - PROTO_HDR_SIZE;
    cr_expect_eq(proto_forked_decode(b.data + PROTO_HDR_SIZE, len - 1, &fo), 0);
    cr_expect_eq(fo.pid, 43);
    cr_expect_eq(fo.ahead_ns, 5000);
    for (size_t cut = 0; cut < len; cut++)
        if (cut != 8 && cut != 16)
            cr_expect_eq(proto_forked_decode(b.data + PROTO_HDR_SIZE, cut, &fo), -EBADMSG,
                         "cut at %zu", cut);
    proto_buf_free(&b);

    uint8_t logp[4 + PROTO_LOG_LINE_MAX + 1];
    uint32_t stream = 2;
    memcpy(logp, &stream, 4);
    memset(logp + 4, 'x', sizeof(logp) - 4);
    struct proto_log lg;
    cr_expect_eq(proto_log_decode(logp, 4 + 5, &lg), 0);
    cr_expect_eq(lg.len, 5);
    cr_expect_eq(proto_log_decode(logp, sizeof(logp), &lg), -EMSGSIZE);
    stream = 3;
    memcpy(logp, &stream, 4);
    cr_expect_eq(proto_log_decode(logp, 9, &lg), -EBADMSG, "only stdout and stderr");
}

Test(proto, header_validity)
{
    struct proto_pair ok = {{"X-A", 3}, {"v v", 3}};
    struct proto_pair bad_name = {{"X A", 3}, {"v", 1}};
    struct proto_pair empty = {{"", 0}, {"v", 1}};
    struct proto_pair crlf = {{"X-A", 3}, {"a\r\nb", 4}};
    cr_expect(proto_header_valid(&ok));
    cr_expect_not(proto_header_valid(&bad_name));
    cr_expect_not(proto_header_valid(&empty));
    cr_expect_not(proto_header_valid(&crlf));
}

/* Numbers in frames (HELLO's pid, LOAD's limits) are digits only. */
Test(proto, str_u32_takes_digits_up_to_uint32_max)
{
    struct {
        const char *s;
        int r;
        uint32_t v;
    } cases[] = {
        {"0", 0, 0},
        {"7", 0, 7},
        {"4294967295", 0, UINT32_MAX},
        {"4294967296", -EINVAL, 0},
        {"00000000001", -EINVAL, 0},
        {"", -EINVAL, 0},
        {"12a", -EINVAL, 0},
        {"-1", -EINVAL, 0},
        {" 1", -EINVAL, 0},
        {"+1", -EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint32_t v = 12345;
        struct proto_str s = {cases[i].s, (uint32_t)strlen(cases[i].s)};
        cr_expect_eq(proto_str_u32(s, &v), cases[i].r, "'%s'", cases[i].s);
        cr_expect_eq(v, cases[i].r == 0 ? cases[i].v : 12345u, "'%s' -> %u", cases[i].s, v);
    }
}

/* The agent's HELLO writes its numbers with proto_u32_str: they must read
 * back through proto_str_u32, at both ends of the range. */
Test(proto, u32_str_round_trips)
{
    const uint32_t vals[] = {0, 9, 10, 99, 100, 65535, 1000000000u, UINT32_MAX};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        char buf[10];
        size_t n = proto_u32_str(vals[i], buf);
        char want[16];
        snprintf(want, sizeof(want), "%" PRIu32, vals[i]);
        cr_expect_eq(n, strlen(want), "%" PRIu32 ": %zu digits", vals[i], n);
        cr_expect_eq(memcmp(buf, want, n), 0, "%" PRIu32 ": '%.*s'", vals[i], (int)n, buf);
        uint32_t back = 0;
        cr_expect_eq(proto_str_u32((struct proto_str){buf, (uint32_t)n}, &back), 0);
        cr_expect_eq(back, vals[i]);
    }
}

/* A frame built over the caller's memory is the same frame as a growable
 * buffer's; one that does not fit fails instead of reallocating the
 * caller's memory, and freeing leaves that memory alone. */
Test(proto, fixed_buffer_encodes_in_place_and_never_grows)
{
    struct proto_pair pairs[] = {{{"version", 7}, {"1", 1}}, {{"pid", 3}, {"42", 2}}};
    struct proto_buf grow, fixed;
    uint8_t mem[PROTO_HDR_SIZE + 64];
    proto_buf_init(&grow);
    proto_buf_init_fixed(&fixed, mem, sizeof(mem));
    struct proto_buf *bufs[] = {&grow, &fixed};
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(proto_buf_begin(bufs[i], PROTO_HELLO, 0), 0);
        cr_assert_eq(proto_put_pairs(bufs[i], pairs, 2), 0);
        cr_assert_eq(proto_buf_finish(bufs[i]), 0);
    }
    cr_assert_eq(fixed.data, mem);
    cr_assert_eq(fixed.len, grow.len);
    cr_expect_eq(memcmp(fixed.data, grow.data, grow.len), 0);

    uint8_t big[sizeof(mem)] = {0};
    cr_assert_eq(proto_buf_begin(&fixed, PROTO_LOG, 0), 0);
    cr_expect_eq(proto_put_raw(&fixed, big, sizeof(big)), -EMSGSIZE);
    cr_expect_eq(fixed.data, mem);
    proto_buf_free(&fixed); /* must not free() the stack */
    cr_expect_null(fixed.data);
    proto_buf_free(&grow);
}
