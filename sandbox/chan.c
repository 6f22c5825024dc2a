/* chan.c - the channel to a sandbox: emberd's end of its SOCK_STREAM
 * socketpair. Frames go out from a queue as fast as the socket takes them;
 * frames come in incrementally, are checked before anything acts on them
 * (sandbox output is untrusted), and are dispatched: answers to the calls
 * in flight (sandbox.c) or to the waits (steps.c), logs and exit statuses
 * to the owner and the zygote's children.
 *
 * Why uv_poll_t and recvmsg/sendmsg, not uv_pipe_open: a channel carries
 * file descriptors both ways (the package mount and new channel ends out,
 * pidfds in). libuv's pipe API sends an fd only as the fd of a uv_tcp_t,
 * uv_pipe_t or uv_udp_t handle (uv_write2's send_handle), so a detached
 * mount would have to pose as a pipe. On the receiving side it keeps
 * received fds in a queue of "pending handles" meant to be uv_accept()ed
 * into a stream handle: uv_pipe_pending_type calls a pidfd
 * UV_UNKNOWN_HANDLE and there is no handle to accept it into. And the
 * queue is kept apart from the bytes, so which frame an fd came with is
 * lost as soon as one read spans two frames. So the channel is a plain
 * non-blocking socket watched by uv_poll_t: reads never cross the frame
 * being assembled, and fds are collected from each recvmsg's SCM_RIGHTS,
 * so they belong to the frame whose bytes they arrived with (senders attach
 * them to the first byte of the header).
 */
#include "sandbox/sandbox_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"

/* One frame waiting to be written (fds ride on its first byte). */
struct sandbox__out {
    TAILQ_ENTRY(sandbox__out) link;
    uint8_t *data;
    size_t len, off;
    int fds[PROTO_MAX_FDS];
    int n_fds;
};

/* Bytes drained from a channel after its process died: enough for the last
 * frames it wrote, bounded in case a descendant still holds the socket. */
#define DRAIN_BUDGET (2 * ((size_t)PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD))

/* ---- the channel: writing ---- */

#define FLUSH_IOV 16 /* frames per sendmsg */

static void on_chan_event(uv_poll_t *h, int status, int events);
static void flush(struct sandbox *sb);

static void on_flush_due(uv_prepare_t *h)
{
    struct sandbox *sb = h->data;
    uv_prepare_stop(h);
    sandbox__hold(sb);
    flush(sb);
    sandbox__release(sb);
}

static void out_free(struct sandbox__out *o)
{
    for (int i = 0; i < o->n_fds; i++)
        close(o->fds[i]);
    free(o->data);
    free(o);
}

static void chan_update(struct sandbox *sb)
{
    if (!sb->chan_open)
        return;
    int want = UV_READABLE | (TAILQ_EMPTY(&sb->outq) ? 0 : UV_WRITABLE);
    if (want != sb->chan_events) {
        sb->chan_events = want;
        uv_poll_start(&sb->chan_poll, want, on_chan_event);
    }
}

static void on_flush_closed(uv_handle_t *h)
{
    struct sandbox *sb = h->data;
    sb->handles--;
    sandbox__maybe_free(sb);
}

static void on_chan_closed(uv_handle_t *h)
{
    struct sandbox *sb = h->data;
    struct sandbox__out *o;
    while ((o = TAILQ_FIRST(&sb->outq))) {
        TAILQ_REMOVE(&sb->outq, o, link);
        out_free(o);
    }
    close(sb->chan_fd);
    sb->chan_fd = -1;
    free(sb->rx_payload);
    sb->rx_payload = NULL;
    for (int i = 0; i < sb->rx_n_fds; i++)
        close(sb->rx_fds[i]);
    sb->rx_n_fds = 0;
    sb->handles--;
    sandbox__maybe_free(sb);
}

/* Stop talking to the sandbox. The handle closes; the fd and buffers go in
 * its close callback. */
void sandbox__chan_close(struct sandbox *sb)
{
    if (!sb->chan_open)
        return;
    sb->chan_open = false;
    uv_close((uv_handle_t *)&sb->chan_flush, on_flush_closed);
    uv_close((uv_handle_t *)&sb->chan_poll, on_chan_closed);
}

/* The channel broke (EOF, error): a sandbox that cannot talk is of no use.
 * Kill it but leave the verdict on its calls to the death handler, which
 * knows more (OOM counter, wait status) than a closed socket does. */
static void chan_lost(struct sandbox *sb, int err)
{
    log_debug("sandbox %" PRIu64 ": channel lost: %s", sb->id,
              err ? strerror(-err) : "end of file");
    sandbox__chan_close(sb);
    sandbox__signal_kill(sb);
}

/* Write what is queued until the socket is full: as many frames per
 * sendmsg as fit in its iovec (an instance's channel carries no fds; the
 * frame that carries some goes alone, its fds on its first byte). */
static void flush(struct sandbox *sb)
{
    struct sandbox__out *o;
    while (sb->chan_open && (o = TAILQ_FIRST(&sb->outq))) {
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(sizeof(int) * PROTO_MAX_FDS)];
        } ctl;
        struct iovec iov[FLUSH_IOV];
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 0};
        if (o->off == 0 && o->n_fds > 0) {
            memset(&ctl, 0, sizeof(ctl));
            msg.msg_control = ctl.buf;
            msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)o->n_fds);
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)o->n_fds);
            memcpy(CMSG_DATA(c), o->fds, sizeof(int) * (size_t)o->n_fds);
        }
        for (struct sandbox__out *f = o; f && msg.msg_iovlen < FLUSH_IOV; f = TAILQ_NEXT(f, link)) {
            if (f != o && f->n_fds > 0)
                break;
            iov[msg.msg_iovlen++] =
                (struct iovec){.iov_base = f->data + f->off, .iov_len = f->len - f->off};
        }
        ssize_t n = sendmsg(sb->chan_fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            /* The sandbox stopped reading (it is dying, or hostile). Stop
             * writing and kill it, but keep reading: its last frames (an
             * answer, its crash report) are still worth having, and this may
             * run inside a dispatch, where reading must not nest. */
            log_debug("sandbox %" PRIu64 ": write: %s", sb->id, strerror(errno));
            sb->chan_wbroken = true;
            while ((o = TAILQ_FIRST(&sb->outq))) {
                TAILQ_REMOVE(&sb->outq, o, link);
                out_free(o);
            }
            sandbox__signal_kill(sb);
            break;
        }
        /* The fds went with the first byte; our copies are done. */
        for (int i = 0; i < o->n_fds; i++)
            close(o->fds[i]);
        o->n_fds = 0;
        size_t left = (size_t)n;
        while (left > 0 && (o = TAILQ_FIRST(&sb->outq))) {
            size_t k = o->len - o->off < left ? o->len - o->off : left;
            o->off += k;
            left -= k;
            if (o->off == o->len) {
                TAILQ_REMOVE(&sb->outq, o, link);
                out_free(o);
            }
        }
    }
    chan_update(sb);
}

int sandbox__send(struct sandbox *sb, struct proto_buf *frame, int *fds, int n_fds)
{
    if (n_fds < 0 || n_fds > PROTO_MAX_FDS || !frame->data || frame->len < PROTO_HDR_SIZE) {
        for (int i = 0; i < n_fds && i < PROTO_MAX_FDS; i++)
            if (fds[i] >= 0)
                close(fds[i]);
        proto_buf_free(frame);
        return -EINVAL;
    }
    struct sandbox__out *o = calloc(1, sizeof(*o));
    if (!o) {
        for (int i = 0; i < n_fds; i++)
            close(fds[i]);
        proto_buf_free(frame);
        return -ENOMEM;
    }
    o->data = frame->data;
    o->len = frame->len;
    proto_buf_init(frame);
    for (int i = 0; i < n_fds; i++) {
        o->fds[i] = fds[i];
        fds[i] = -1;
    }
    o->n_fds = n_fds;

    if (!sb->attached) {
        out_free(o);
        return -ENOTCONN;
    }
    if (!sb->chan_open || sb->chan_wbroken || sb->destroyed || sb->killed) {
        out_free(o);
        return -ESRCH;
    }
    bool was_empty = TAILQ_EMPTY(&sb->outq);
    TAILQ_INSERT_TAIL(&sb->outq, o, link);
    /* Written when this loop iteration is done with its events, before the
     * loop waits again: the calls an iteration sends one instance go out
     * in one sendmsg. (With frames already waiting for the socket to take
     * them, the writable event writes this one too.) A frame with fds (LOAD,
     * FORK, PARK) goes alone anyway, so it goes now: a FORK is on a call's
     * path. A failure either way is handled as a lost channel: the frame
     * was accepted. */
    if (was_empty && n_fds > 0)
        flush(sb);
    else if (was_empty)
        uv_prepare_start(&sb->chan_flush, on_flush_due);
    return 0;
}

/* ---- the channel: reading and dispatch ---- */

void sandbox__bad_frame(struct sandbox *sb, const char *fmt, ...)
{
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    log_warn("sandbox %" PRIu64 " (pid %d): bad frame: %s", sb->id, (int)sb->pid, what);
    sandbox__kill(sb, SANDBOX_ERR_BAD_OUTPUT, "bad frame from sandbox: %s", what);
}

/* HELLO: strings with "version" == PROTO_VERSION and optionally "pid". */
static int check_hello(struct sandbox *sb, const uint8_t *p, size_t len)
{
    static struct proto_pair pairs[PROTO_MAX_PAIRS]; /* loop thread only */
    uint32_t n;
    struct proto_reader r;
    proto_reader_init(&r, p, len);
    if (proto_get_pairs(&r, pairs, PROTO_MAX_PAIRS, &n) < 0 || r.left) {
        sandbox__bad_frame(sb, "HELLO does not decode");
        return -EBADMSG;
    }
    bool version_ok = false;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t v;
        if (proto_str_eq(pairs[i].key, "version")) {
            if (proto_str_u32(pairs[i].value, &v) < 0 || v != PROTO_VERSION) {
                char got[32];
                sandbox__sanitize(got, sizeof(got), pairs[i].value.p, pairs[i].value.len);
                sandbox__bad_frame(sb, "HELLO: protocol version '%s', emberd speaks %d", got,
                                   PROTO_VERSION);
                return -EPROTO;
            }
            version_ok = true;
        } else if (proto_str_eq(pairs[i].key, "pid")) {
            if (proto_str_u32(pairs[i].value, &v) < 0 || v == 0 || v > INT32_MAX) {
                sandbox__bad_frame(sb, "HELLO: bad pid");
                return -EBADMSG;
            }
            sb->ns_pid = (pid_t)v;
        }
    }
    if (!version_ok) {
        sandbox__bad_frame(sb, "HELLO without a protocol version");
        return -EPROTO;
    }
    return 0;
}

/* Check and act on one whole frame. @f's fds not taken are closed by the
 * caller. */
static void dispatch(struct sandbox *sb, struct sandbox__frame *f)
{
    const struct proto_hdr *h = &f->hdr;
    const uint8_t *p = f->payload;

    if (!sb->hello_seen && h->type != PROTO_HELLO) {
        sandbox__bad_frame(sb, "first frame is %s, not HELLO", sandbox__type_name(h->type));
        return;
    }
    if (f->n_fds > 0 && h->type != PROTO_FORKED) {
        sandbox__bad_frame(sb, "%s carries file descriptors", sandbox__type_name(h->type));
        return;
    }

    switch (h->type) {
    case PROTO_HELLO: {
        if (sb->hello_seen) {
            sandbox__bad_frame(sb, "second HELLO");
            return;
        }
        if (check_hello(sb, p, h->len) < 0)
            return;
        sb->hello_seen = true;
        /* Nobody waiting yet is fine: a later wait finds hello_seen. */
        sandbox__wait_deliver(sb, f);
        return;
    }
    case PROTO_RESPONSE:
        sandbox__on_response(sb, h, p);
        return;
    case PROTO_FAILED:
        sandbox__on_failed(sb, h, p);
        return;
    case PROTO_LOG: {
        struct proto_log m;
        int r = proto_log_decode(p, h->len, &m);
        if (r < 0) {
            sandbox__bad_frame(sb, "LOG %s", r == -EMSGSIZE ? "line too long" : "does not decode");
            return;
        }
        if (!sb->destroyed && sb->events.on_log)
            sb->events.on_log(sb, (int)m.stream, m.line, m.len, sb->events.data);
        return;
    }
    case PROTO_EXITED: {
        struct proto_exited m;
        if (proto_exited_decode(p, h->len, &m) < 0) {
            sandbox__bad_frame(sb, "EXITED does not decode");
            return;
        }
        sandbox__child_exited(sb, m.pid, m.status);
        return;
    }
    case PROTO_LOADED:
    case PROTO_FORKED:
    case PROTO_RESET_DONE:
    case PROTO_PARKED: {
        /* Answers: valid only as the answer something waits for. */
        int r;
        struct proto_loaded lm;
        struct proto_forked fm;
        struct proto_done rm;
        if (h->type == PROTO_LOADED)
            r = proto_loaded_decode(p, h->len, &lm);
        else if (h->type == PROTO_RESET_DONE || h->type == PROTO_PARKED)
            r = proto_done_decode(p, h->len, &rm);
        else
            r = proto_forked_decode(p, h->len, &fm);
        if (r < 0) {
            sandbox__bad_frame(sb, "%s does not decode", sandbox__type_name(h->type));
            return;
        }
        if (h->type == PROTO_FORKED && f->n_fds != (fm.status == 0 ? 1 : 0)) {
            sandbox__bad_frame(sb, "FORKED with status %" PRIu32 " carries %d fds", fm.status,
                               f->n_fds);
            return;
        }
        if (!sandbox__wait_deliver(sb, f))
            sandbox__bad_frame(sb, "unexpected %s (id %" PRIu32 ")", sandbox__type_name(h->type),
                               h->id);
        return;
    }
    default:
        /* emberd -> sandbox types coming back, or anything proto_hdr_check
         * would let through later without this switch knowing it. */
        sandbox__bad_frame(sb, "%s is not a frame a sandbox sends", sandbox__type_name(h->type));
        return;
    }
}

/* A header from the sandbox: false (and the sandbox killed) if it is bad. */
static bool hdr_ok(struct sandbox *sb, const struct proto_hdr *h)
{
    int r = proto_hdr_check(h);
    if (r == -EMSGSIZE) {
        sandbox__bad_frame(sb, "%s of %" PRIu32 " bytes is over the limit of %u",
                           sandbox__type_name(h->type), h->len, PROTO_MAX_PAYLOAD);
        return false;
    }
    if (r < 0) {
        if (h->flags)
            sandbox__bad_frame(sb, "%s with flags 0x%x", sandbox__type_name(h->type), h->flags);
        else
            sandbox__bad_frame(sb, "unknown type %u", h->type);
        return false;
    }
    return true;
}

#define READ_AHEAD (16u << 10)

/*
 * An instance's channel carries no fds, so its reads need not stop at the
 * frame being assembled: one recvmsg takes a RESPONSE whole (and whatever
 * follows), where header and payload would take two, plus the one that
 * finds the socket empty. Whole frames are dispatched from the buffer; a
 * partial one goes to the rx state for read_frames to finish. Returns bytes
 * read (0: would block), or -errno when the channel is lost. *@drained: the
 * read came back short, so the socket was empty.
 */
static ssize_t read_ahead(struct sandbox *sb, bool *drained)
{
    uint8_t buf[READ_AHEAD];
    union {
        struct cmsghdr align;
        char b[CMSG_SPACE(sizeof(int) * PROTO_MAX_FDS)];
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof(ctl.b)};
    ssize_t n;
    do
        n = recvmsg(sb->chan_fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
    int none = 0;
    if (proto_cmsg_fds(&msg, NULL, &none, 0)) {
        sandbox__bad_frame(sb, "an instance sent file descriptors");
        return (ssize_t)n;
    }
    if (n == 0)
        return -ECONNRESET;
    *drained = (size_t)n < sizeof(buf);

    size_t at = 0, len = (size_t)n;
    while (sb->chan_open && !sb->killed && len - at >= PROTO_HDR_SIZE) {
        struct sandbox__frame f = {.n_fds = 0};
        memcpy(&f.hdr, buf + at, PROTO_HDR_SIZE);
        if (!hdr_ok(sb, &f.hdr))
            return n;
        if (len - at - PROTO_HDR_SIZE < f.hdr.len)
            break;
        f.payload = buf + at + PROTO_HDR_SIZE;
        at += PROTO_HDR_SIZE + f.hdr.len;
        dispatch(sb, &f);
    }
    if (!sb->chan_open || sb->killed || at == len)
        return n;
    /* The start of a frame: the rest comes through read_frames. */
    size_t part = len - at;
    if (part < PROTO_HDR_SIZE) {
        memcpy(sb->rx_hdr_raw, buf + at, part);
        sb->rx_hdr_got = part;
        return n;
    }
    memcpy(sb->rx_hdr_raw, buf + at, PROTO_HDR_SIZE);
    memcpy(&sb->rx_hdr, buf + at, PROTO_HDR_SIZE);
    sb->rx_hdr_got = PROTO_HDR_SIZE;
    part -= PROTO_HDR_SIZE;
    if (part > 0) {
        uint8_t *p = malloc(part);
        if (!p) {
            sandbox__kill(sb, SANDBOX_ERR_INTERNAL, "out of memory reading a frame");
            return n;
        }
        memcpy(p, buf + at + PROTO_HDR_SIZE, part);
        sb->rx_payload = p;
        sb->rx_payload_cap = part;
        sb->rx_payload_got = part;
    }
    *drained = false;
    return n;
}

/* Read and dispatch frames until the socket is empty or @budget bytes have
 * been read. Reads never cross the frame being assembled, so fds received
 * belong to it (an instance's reads do: read_ahead). Returns 0 (would block
 * or budget spent) or -errno when the channel is lost (-ECONNRESET on EOF);
 * the caller handles the loss. */
static int read_frames(struct sandbox *sb, size_t budget)
{
    while (sb->chan_open && !sb->killed && budget > 0) {
        if (sb->role == SANDBOX_ROLE_INSTANCE && sb->rx_hdr_got == 0) {
            bool drained = false;
            ssize_t n = read_ahead(sb, &drained);
            if (n <= 0)
                return (int)n;
            budget = (size_t)n < budget ? budget - (size_t)n : 0;
            if (drained)
                return 0;
            continue;
        }
        uint8_t *dst;
        size_t want;
        if (sb->rx_hdr_got < PROTO_HDR_SIZE) {
            dst = sb->rx_hdr_raw + sb->rx_hdr_got;
            want = PROTO_HDR_SIZE - sb->rx_hdr_got;
        } else {
            want = sb->rx_hdr.len - sb->rx_payload_got;
            /* The payload buffer grows with what arrives, so a header that
             * only claims 6 MiB costs nothing until the bytes come. */
            size_t need = sb->rx_payload_got + (want < (64u << 10) ? want : (64u << 10));
            if (need > sb->rx_payload_cap) {
                size_t cap = sb->rx_payload_cap ? sb->rx_payload_cap : 4096;
                while (cap < need)
                    cap *= 2;
                if (cap > sb->rx_hdr.len)
                    cap = sb->rx_hdr.len;
                uint8_t *np = realloc(sb->rx_payload, cap ? cap : 1);
                if (!np) {
                    sandbox__kill(sb, SANDBOX_ERR_INTERNAL, "out of memory reading a frame");
                    return 0;
                }
                sb->rx_payload = np;
                sb->rx_payload_cap = cap;
            }
            dst = sb->rx_payload + sb->rx_payload_got;
            if (want > sb->rx_payload_cap - sb->rx_payload_got)
                want = sb->rx_payload_cap - sb->rx_payload_got;
        }
        if (want > budget)
            want = budget;

        ssize_t n = 0;
        if (want > 0) {
            union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * PROTO_MAX_FDS)];
            } ctl;
            struct iovec iov = {.iov_base = dst, .iov_len = want};
            struct msghdr msg = {.msg_iov = &iov,
                                 .msg_iovlen = 1,
                                 .msg_control = ctl.buf,
                                 .msg_controllen = sizeof(ctl.buf)};
            n = recvmsg(sb->chan_fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return 0;
                return -errno;
            }
            if (proto_cmsg_fds(&msg, sb->rx_fds, &sb->rx_n_fds, PROTO_MAX_FDS)) {
                sandbox__bad_frame(sb, "more than %d file descriptors", PROTO_MAX_FDS);
                return 0;
            }
            if (n == 0)
                return -ECONNRESET;
            budget -= (size_t)n;
        }

        if (sb->rx_hdr_got < PROTO_HDR_SIZE) {
            sb->rx_hdr_got += (size_t)n;
            if (sb->rx_hdr_got < PROTO_HDR_SIZE)
                continue;
            memcpy(&sb->rx_hdr, sb->rx_hdr_raw, PROTO_HDR_SIZE);
            if (!hdr_ok(sb, &sb->rx_hdr))
                return 0;
            sb->rx_payload_got = 0;
            if (sb->rx_hdr.len > 0)
                continue;
        } else {
            sb->rx_payload_got += (size_t)n;
            if (sb->rx_payload_got < sb->rx_hdr.len)
                continue;
        }

        /* A whole frame: detach it from the channel state first, since a
         * callback may close the channel (and free its buffers) under us. */
        struct sandbox__frame f;
        f.hdr = sb->rx_hdr;
        cleanup_free uint8_t *payload = sb->rx_payload;
        f.payload = payload;
        f.n_fds = sb->rx_n_fds;
        memcpy(f.fds, sb->rx_fds, sizeof(f.fds));
        sb->rx_payload = NULL;
        sb->rx_payload_cap = 0;
        sb->rx_payload_got = 0;
        sb->rx_hdr_got = 0;
        sb->rx_n_fds = 0;

        dispatch(sb, &f);
        for (int i = 0; i < f.n_fds; i++)
            if (f.fds[i] >= 0)
                close(f.fds[i]);
    }
    return 0;
}

void sandbox__chan_drain(struct sandbox *sb)
{
    int r = read_frames(sb, DRAIN_BUDGET);
    (void)r;
}

static void on_chan_event(uv_poll_t *h, int status, int events)
{
    struct sandbox *sb = h->data;
    sandbox__hold(sb);
    if (status < 0) {
        sandbox__chan_drain(sb);
        chan_lost(sb, status);
    } else {
        if ((events & UV_WRITABLE) && sb->chan_open)
            flush(sb);
        if ((events & (UV_READABLE | UV_DISCONNECT)) && sb->chan_open) {
            int r = read_frames(sb, SANDBOX_READ_BUDGET);
            if (r < 0 && sb->chan_open)
                chan_lost(sb, r == -ECONNRESET ? 0 : r);
        }
    }
    sandbox__release(sb);
}

int sandbox__chan_attach(struct sandbox *sb, int chan_fd)
{
    cleanup_close int chan = chan_fd;
    /* uv_poll_init makes the fd non-blocking (FIONBIO): the loop never
     * waits on a sandbox's channel. */
    int r = uv_poll_init(sb->loop, &sb->chan_poll, chan);
    if (r < 0) {
        sandbox__kill(sb, SANDBOX_ERR_INTERNAL, "channel: %s", uv_strerror(r));
        return r;
    }
    sb->chan_fd = steal_fd(&chan);
    sb->chan_poll.data = sb;
    uv_prepare_init(sb->loop, &sb->chan_flush); /* (cannot fail) */
    sb->chan_flush.data = sb;
    sb->chan_open = true;
    sb->handles += 2;
    sb->chan_events = 0;
    chan_update(sb);
    return 0;
}
