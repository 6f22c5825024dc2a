/* proto.c - frames between emberd and a sandbox: header check, encoders,
 * bounds-checked decoders, and the blocking send/receive used inside
 * sandboxes (the agent, the vmm). emberd's non-blocking reader lives in
 * chan.c and uses only the header check and the decoders from here.
 *
 * Every decoder treats its input as hostile: each length is checked against
 * what is left before anything is read, counts are checked against the
 * capacity before any pair is stored, and a whole-payload decode rejects
 * trailing bytes.
 */
#include "sandbox/proto.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fmt.h"

/* The largest frame anything may build: header plus the largest payload. */
#define FRAME_MAX ((size_t)PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD)

int proto_hdr_check(const struct proto_hdr *h)
{
    switch ((enum proto_type)h->type) {
    case PROTO_LOAD:
    case PROTO_INVOKE:
    case PROTO_FORK:
    case PROTO_RESET:
    case PROTO_SHUTDOWN:
    case PROTO_HELLO:
    case PROTO_LOADED:
    case PROTO_RESPONSE:
    case PROTO_FAILED:
    case PROTO_FORKED:
    case PROTO_LOG:
    case PROTO_EXITED:
    case PROTO_RESET_DONE:
    case PROTO_PARK:
    case PROTO_PARKED:
    case PROTO_PREFORK:
        break;
    default:
        return -EBADMSG;
    }
    if (h->flags != 0)
        return -EBADMSG;
    if (h->len > PROTO_MAX_PAYLOAD)
        return -EMSGSIZE;
    return 0;
}

/* ---- encoding ---- */

void proto_buf_init(struct proto_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->fixed = false;
}

void proto_buf_init_fixed(struct proto_buf *b, void *mem, size_t cap)
{
    b->data = mem;
    b->len = 0;
    b->cap = cap;
    b->fixed = true;
}

void proto_buf_free(struct proto_buf *b)
{
    if (!b->fixed)
        free(b->data);
    proto_buf_init(b);
}

/* Make room for @more bytes; never beyond one maximal frame, so a caller
 * encoding something too large fails here instead of allocating it. */
static int reserve(struct proto_buf *b, size_t more)
{
    if (more > FRAME_MAX || b->len > FRAME_MAX - more)
        return -EMSGSIZE;
    size_t need = b->len + more;
    if (need <= b->cap)
        return 0;
    if (b->fixed)
        return -EMSGSIZE;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    if (cap > FRAME_MAX)
        cap = FRAME_MAX;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int proto_buf_begin(struct proto_buf *b, uint16_t type, uint32_t id)
{
    /* A buffer holds one frame: beginning discards what was there. */
    b->len = 0;
    int r = reserve(b, PROTO_HDR_SIZE);
    if (r < 0)
        return r;
    struct proto_hdr h = {.type = type, .flags = 0, .id = id, .len = 0};
    memcpy(b->data, &h, PROTO_HDR_SIZE);
    b->len = PROTO_HDR_SIZE;
    return 0;
}

int proto_buf_finish(struct proto_buf *b)
{
    if (b->len < PROTO_HDR_SIZE)
        return -EINVAL;
    size_t payload = b->len - PROTO_HDR_SIZE;
    if (payload > PROTO_MAX_PAYLOAD)
        return -EMSGSIZE;
    uint32_t len = (uint32_t)payload;
    memcpy(b->data + offsetof(struct proto_hdr, len), &len, sizeof(len));
    return 0;
}

int proto_put_raw(struct proto_buf *b, const void *p, size_t len)
{
    int r = reserve(b, len);
    if (r < 0)
        return r;
    if (len)
        memcpy(b->data + b->len, p, len);
    b->len += len;
    return 0;
}

int proto_put_u32(struct proto_buf *b, uint32_t v)
{
    return proto_put_raw(b, &v, sizeof(v));
}

int proto_put_u64(struct proto_buf *b, uint64_t v)
{
    return proto_put_raw(b, &v, sizeof(v));
}

int proto_put_bytes(struct proto_buf *b, const void *p, size_t len)
{
    if (len > UINT32_MAX)
        return -EMSGSIZE;
    /* Reserve both parts first so a failure leaves no half-written field. */
    int r = reserve(b, sizeof(uint32_t) + len);
    if (r < 0)
        return r;
    proto_put_u32(b, (uint32_t)len);
    return proto_put_raw(b, p, len);
}

int proto_put_pairs(struct proto_buf *b, const struct proto_pair *pairs, uint32_t n)
{
    if (n > PROTO_MAX_PAIRS)
        return -E2BIG;
    size_t start = b->len;
    int r = proto_put_u32(b, n);
    for (uint32_t i = 0; r == 0 && i < n; i++) {
        r = proto_put_bytes(b, pairs[i].key.p, pairs[i].key.len);
        if (r == 0)
            r = proto_put_bytes(b, pairs[i].value.p, pairs[i].value.len);
    }
    if (r < 0)
        b->len = start;
    return r;
}

/* ---- decoding ---- */

void proto_reader_init(struct proto_reader *r, const void *payload, size_t len)
{
    r->p = payload;
    r->left = payload ? len : 0;
}

int proto_get_u32(struct proto_reader *r, uint32_t *v)
{
    if (r->left < sizeof(*v))
        return -EBADMSG;
    memcpy(v, r->p, sizeof(*v));
    r->p += sizeof(*v);
    r->left -= sizeof(*v);
    return 0;
}

int proto_get_u64(struct proto_reader *r, uint64_t *v)
{
    if (r->left < sizeof(*v))
        return -EBADMSG;
    memcpy(v, r->p, sizeof(*v));
    r->p += sizeof(*v);
    r->left -= sizeof(*v);
    return 0;
}

int proto_get_bytes(struct proto_reader *r, struct proto_str *s)
{
    uint32_t len;
    if (proto_get_u32(r, &len) < 0)
        return -EBADMSG;
    if (len > r->left)
        return -EBADMSG;
    s->p = (const char *)r->p;
    s->len = len;
    r->p += len;
    r->left -= len;
    return 0;
}

int proto_get_pairs(struct proto_reader *r, struct proto_pair *pairs, uint32_t cap, uint32_t *n)
{
    uint32_t count;
    if (proto_get_u32(r, &count) < 0)
        return -EBADMSG;
    if (count > cap || count > PROTO_MAX_PAIRS)
        return -E2BIG;
    /* Each pair takes at least its two length words: reject an impossible
     * count before walking it. */
    if ((size_t)count * 2 * sizeof(uint32_t) > r->left)
        return -EBADMSG;
    for (uint32_t i = 0; i < count; i++) {
        if (proto_get_bytes(r, &pairs[i].key) < 0 || proto_get_bytes(r, &pairs[i].value) < 0)
            return -EBADMSG;
    }
    *n = count;
    return 0;
}

int proto_request_decode(const void *payload, size_t len, struct proto_request *out)
{
    struct proto_reader r;
    proto_reader_init(&r, payload, len);
    if (proto_get_bytes(&r, &out->method) < 0 || proto_get_bytes(&r, &out->path) < 0 ||
        proto_get_bytes(&r, &out->query) < 0)
        return -EBADMSG;
    if (proto_get_pairs(&r, out->headers, PROTO_MAX_PAIRS, &out->n_headers) < 0)
        return -EBADMSG;
    if (proto_get_bytes(&r, &out->body) < 0 || r.left != 0)
        return -EBADMSG;
    return 0;
}

int proto_response_decode(const void *payload, size_t len, struct proto_response *out)
{
    struct proto_reader r;
    proto_reader_init(&r, payload, len);
    if (proto_get_u32(&r, &out->status) < 0)
        return -EBADMSG;
    if (proto_get_pairs(&r, out->headers, PROTO_MAX_PAIRS, &out->n_headers) < 0)
        return -EBADMSG;
    if (proto_get_bytes(&r, &out->body) < 0)
        return -EBADMSG;
    out->run_ns = 0;
    if (r.left && proto_get_u64(&r, &out->run_ns) < 0)
        return -EBADMSG;
    return r.left ? -EBADMSG : 0;
}

int proto_str_eq(struct proto_str s, const char *c)
{
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.p, c, n) == 0);
}

int proto_str_u32(struct proto_str s, uint32_t *out)
{
    if (s.len == 0 || s.len > 10)
        return -EINVAL;
    uint64_t v = 0;
    for (uint32_t i = 0; i < s.len; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return -EINVAL;
        v = v * 10 + (uint64_t)(s.p[i] - '0');
    }
    if (v > UINT32_MAX)
        return -EINVAL;
    *out = (uint32_t)v;
    return 0;
}

size_t proto_u32_str(uint32_t v, char out[10])
{
    return (size_t)(fmt_u64(out, v) - out);
}

/* ---- blocking I/O for the sandbox side ---- */

int proto_wait_readable(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    return poll(&pfd, 1, -1) < 0 ? -errno : 0;
}

int proto_send_frame(int fd, const struct proto_buf *frame, const int *fds, int n_fds)
{
    if (!frame->data || frame->len < PROTO_HDR_SIZE || n_fds < 0 || n_fds > PROTO_MAX_FDS ||
        (n_fds > 0 && !fds))
        return -EINVAL;

    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * PROTO_MAX_FDS)];
    } ctl;
    const uint8_t *p = frame->data;
    size_t left = frame->len;
    bool first = true;

    while (left > 0) {
        struct iovec iov = {.iov_base = (void *)p, .iov_len = left};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
        /* The fds ride on the first sendmsg, i.e. with the header's bytes,
         * which is where every reader looks for them. */
        if (first && n_fds > 0) {
            memset(&ctl, 0, sizeof(ctl));
            msg.msg_control = ctl.buf;
            msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n_fds);
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n_fds);
            memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)n_fds);
        }
        ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        first = false;
        p += n;
        left -= (size_t)n;
    }
    return 0;
}

static void close_fds(int *fds, int *n)
{
    for (int i = 0; i < *n; i++)
        close(fds[i]);
    *n = 0;
}

/* Read exactly @len bytes, collecting any SCM_RIGHTS fds into @fds. Reads
 * never go past @len, so fds that arrive belong to this frame. -ECONNRESET
 * on EOF, -EBADMSG if the peer sent more fds than fit. */
bool proto_cmsg_fds(const struct msghdr *msg, int *fds, int *n_fds, int max)
{
    bool overflow = (msg->msg_flags & MSG_CTRUNC) != 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (*n_fds < max) {
                fds[(*n_fds)++] = fd;
            } else {
                close(fd);
                overflow = true;
            }
        }
    }
    return overflow;
}

/* One blocking recvmsg into @buf: bytes read (> 0), -ECONNRESET at EOF, or
 * -errno. Received fds are appended to @fds (-EBADMSG past PROTO_MAX_FDS). */
static ssize_t recv_some(int sock, void *buf, size_t len, int *fds, int *n_fds)
{
    for (;;) {
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(sizeof(int) * PROTO_MAX_FDS)];
        } ctl;
        struct iovec iov = {.iov_base = buf, .iov_len = len};
        struct msghdr msg = {.msg_iov = &iov,
                             .msg_iovlen = 1,
                             .msg_control = ctl.buf,
                             .msg_controllen = sizeof(ctl.buf)};
        ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (proto_cmsg_fds(&msg, fds, n_fds, PROTO_MAX_FDS))
            return -EBADMSG;
        return n == 0 ? -ECONNRESET : n;
    }
}

static int recv_exact(int sock, void *buf, size_t len, int *fds, int *n_fds)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = recv_some(sock, p, len, fds, n_fds);
        if (n < 0)
            return (int)n;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int proto_recv_frame(int fd, struct proto_hdr *h, uint8_t **payload, int *fds, int *n_fds)
{
    int got_fds[PROTO_MAX_FDS];
    int n_got = 0;
    uint8_t raw[PROTO_HDR_SIZE];
    cleanup_free uint8_t *buf = NULL;

    *payload = NULL;
    if (n_fds)
        *n_fds = 0;

    int r = recv_exact(fd, raw, sizeof(raw), got_fds, &n_got);
    if (r < 0)
        goto err_fds;
    memcpy(h, raw, sizeof(raw));
    r = proto_hdr_check(h);
    if (r < 0)
        goto err_fds;

    buf = malloc(h->len ? h->len : 1);
    if (!buf) {
        r = -ENOMEM;
        goto err_fds;
    }
    r = recv_exact(fd, buf, h->len, got_fds, &n_got);
    if (r < 0)
        goto err_fds;

    /* A caller that takes no fds gets none: close what came. */
    if (!fds || !n_fds) {
        close_fds(got_fds, &n_got);
    } else {
        memcpy(fds, got_fds, sizeof(int) * (size_t)n_got);
        *n_fds = n_got;
    }
    *payload = steal_pointer(&buf);
    return 0;

err_fds:
    close_fds(got_fds, &n_got);
    return r;
}

bool proto_rxbuf_has_frame(const struct proto_rxbuf *rb)
{
    size_t have = rb->end - rb->start;
    if (have < PROTO_HDR_SIZE)
        return false;
    struct proto_hdr h;
    memcpy(&h, rb->data + rb->start, PROTO_HDR_SIZE);
    return have - PROTO_HDR_SIZE >= h.len;
}

int proto_recv_frame_buffered(int fd, struct proto_rxbuf *rb, struct proto_hdr *h,
                              uint8_t **payload, bool *borrowed)
{
    int fds[PROTO_MAX_FDS];
    int n_fds = 0, r = 0;
    *payload = NULL;
    if (borrowed)
        *borrowed = false;
    while (rb->end - rb->start < PROTO_HDR_SIZE) {
        if (rb->start > 0) {
            memmove(rb->data, rb->data + rb->start, rb->end - rb->start);
            rb->end -= rb->start;
            rb->start = 0;
        }
        ssize_t n = recv_some(fd, rb->data + rb->end, sizeof(rb->data) - rb->end, fds, &n_fds);
        close_fds(fds, &n_fds); /* this channel carries none */
        if (n < 0)
            return (int)n;
        rb->end += (size_t)n;
    }
    memcpy(h, rb->data + rb->start, PROTO_HDR_SIZE);
    r = proto_hdr_check(h);
    if (r < 0)
        return r;
    rb->start += PROTO_HDR_SIZE;
    if (borrowed && rb->end - rb->start >= h->len) {
        /* all there: lend it, valid until the next read into @rb */
        *payload = rb->data + rb->start;
        rb->start += h->len;
        *borrowed = true;
        return 0;
    }
    uint8_t *buf = malloc(h->len ? h->len : 1);
    if (!buf)
        return -ENOMEM;
    size_t have = rb->end - rb->start;
    if (have > h->len)
        have = h->len;
    memcpy(buf, rb->data + rb->start, have);
    rb->start += have;
    if (rb->start == rb->end)
        rb->start = rb->end = 0;
    /* The rest of a big payload goes straight to its place. */
    if (have < h->len)
        r = recv_exact(fd, buf + have, h->len - have, fds, &n_fds);
    close_fds(fds, &n_fds);
    if (r < 0) {
        free(buf);
        return r;
    }
    *payload = buf;
    return 0;
}

/* ---- the small sandbox -> emberd payloads (proto.h) ---- */

int proto_loaded_decode(const void *p, size_t len, struct proto_loaded *m)
{
    struct proto_reader r;
    proto_reader_init(&r, p, len);
    if (proto_get_u32(&r, &m->status) < 0 || proto_get_bytes(&r, &m->message) < 0 ||
        proto_get_u64(&r, &m->init_ns) < 0 || r.left)
        return -EBADMSG;
    return 0;
}

int proto_failed_decode(const void *p, size_t len, struct proto_failed *m)
{
    struct proto_reader r;
    proto_reader_init(&r, p, len);
    if (proto_get_u32(&r, &m->reason) < 0 || proto_get_bytes(&r, &m->message) < 0 || r.left)
        return -EBADMSG;
    return 0;
}

int proto_forked_decode(const void *p, size_t len, struct proto_forked *m)
{
    struct proto_reader r;
    proto_reader_init(&r, p, len);
    if (proto_get_u32(&r, &m->status) < 0 || proto_get_u32(&r, &m->pid) < 0)
        return -EBADMSG;
    m->ahead_ns = 0;
    if (r.left && proto_get_u64(&r, &m->ahead_ns) < 0)
        return -EBADMSG;
    return r.left ? -EBADMSG : 0;
}

int proto_exited_decode(const void *p, size_t len, struct proto_exited *m)
{
    struct proto_reader r;
    proto_reader_init(&r, p, len);
    if (proto_get_u32(&r, &m->pid) < 0 || proto_get_u32(&r, &m->status) < 0 || r.left)
        return -EBADMSG;
    return 0;
}

int proto_done_decode(const void *p, size_t len, struct proto_done *m)
{
    struct proto_reader r;
    proto_reader_init(&r, p, len);
    if (proto_get_u32(&r, &m->status) < 0 || proto_get_u64(&r, &m->ns) < 0 || r.left)
        return -EBADMSG;
    return 0;
}

int proto_log_decode(const void *p, size_t len, struct proto_log *m)
{
    struct proto_reader r;
    proto_reader_init(&r, p, len);
    if (proto_get_u32(&r, &m->stream) < 0)
        return -EBADMSG;
    if (m->stream != 1 && m->stream != 2)
        return -EBADMSG;
    if (r.left > PROTO_LOG_LINE_MAX)
        return -EMSGSIZE;
    m->line = (const char *)r.p;
    m->len = r.left;
    return 0;
}

/* RFC 9110 token characters, for header names. */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

bool proto_header_valid(const struct proto_pair *h)
{
    if (h->key.len == 0)
        return false;
    for (uint32_t i = 0; i < h->key.len; i++)
        if (!is_tchar((unsigned char)h->key.p[i]))
            return false;
    for (uint32_t i = 0; i < h->value.len; i++) {
        unsigned char c = (unsigned char)h->value.p[i];
        if (c == '\r' || c == '\n' || c == '\0')
            return false;
    }
    return true;
}
