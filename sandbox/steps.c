/* steps.c - waits for one expected frame from a sandbox, and the
 * exchanges built on them: HELLO after a start, LOAD -> LOADED,
 * FORK -> FORKED, RESET -> RESET_DONE, PARK -> PARKED. chan.c's dispatch
 * hands a wait its frame (sandbox__wait_deliver); a wait that times out
 * kills its sandbox (it is wedged); a dead or destroyed sandbox fails its
 * waits (sandbox__fail_waits).
 */
#include "sandbox/sandbox_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <unistd.h>

/* One outstanding sandbox__expect. */
struct sandbox__wait {
    TAILQ_ENTRY(sandbox__wait) link;
    struct sandbox *sb;
    uint16_t type;
    uint32_t id;
    uint32_t timeout_ms;
    sandbox__frame_cb cb;
    void *data;
    uv_timer_t timer;
};

/* ---- waits and the exchanges built on them ---- */

static struct sandbox__wait *find_wait(struct sandbox *sb, const struct proto_hdr *h)
{
    struct sandbox__wait *w;
    TAILQ_FOREACH(w, &sb->waits, link)
    {
        if (w->type == h->type && (w->id == SANDBOX__ANY_ID || w->id == h->id))
            return w;
    }
    return NULL;
}

static void on_wait_closed(uv_handle_t *h)
{
    struct sandbox__wait *w = h->data;
    struct sandbox *sb = w->sb;
    free(w);
    sb->handles--;
    sandbox__maybe_free(sb);
}

static void wait_complete(struct sandbox *sb, struct sandbox__wait *w, int status,
                          struct sandbox__frame *f)
{
    TAILQ_REMOVE(&sb->waits, w, link);
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, on_wait_closed);
    w->cb(sb, status, f, w->data);
}

void sandbox__fail_waits(struct sandbox *sb, int status)
{
    struct sandbox__wait *w;
    while ((w = TAILQ_FIRST(&sb->waits)))
        wait_complete(sb, w, status, NULL);
}

bool sandbox__wait_deliver(struct sandbox *sb, struct sandbox__frame *f)
{
    struct sandbox__wait *w = find_wait(sb, &f->hdr);
    if (!w)
        return false;
    wait_complete(sb, w, 0, f);
    return true;
}

static void on_wait_timeout(uv_timer_t *t)
{
    struct sandbox__wait *w = t->data;
    struct sandbox *sb = w->sb;
    sandbox__hold(sb);
    /* Take this wait out first so that the kill fails only the others. The
     * wait's memory lives until its timer's close callback. */
    TAILQ_REMOVE(&sb->waits, w, link);
    uv_close((uv_handle_t *)&w->timer, on_wait_closed);
    sandbox__kill(sb, SANDBOX_ERR_INTERNAL, "no %s from the sandbox after %" PRIu32 " ms",
                  sandbox__type_name(w->type), w->timeout_ms);
    w->cb(sb, -ETIMEDOUT, NULL, w->data);
    sandbox__release(sb);
}

/* HELLO was read before anyone waited for it: the wait succeeds on the next
 * loop iteration (never inside sandbox__expect itself). */
static void on_wait_ready(uv_timer_t *t)
{
    struct sandbox__wait *w = t->data;
    wait_complete(w->sb, w, 0, NULL);
}

static int expect(struct sandbox *sb, uint16_t type, uint32_t id, uint32_t timeout_ms,
                  sandbox__frame_cb cb, void *data, struct sandbox__wait **out)
{
    if (sb->destroyed)
        return -ECANCELED;
    if (sb->killed || sb->exited)
        return -ECHILD;
    if (!sb->attached)
        return -ENOTCONN;
    struct sandbox__wait *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    int r = uv_timer_init(sb->loop, &w->timer);
    if (r < 0) {
        free(w);
        return r;
    }
    sb->handles++;
    w->sb = sb;
    w->type = type;
    w->id = id;
    w->timeout_ms = timeout_ms;
    w->cb = cb;
    w->data = data;
    w->timer.data = w;
    TAILQ_INSERT_TAIL(&sb->waits, w, link);
    if (type == PROTO_HELLO && sb->hello_seen)
        uv_timer_start(&w->timer, on_wait_ready, 0, 0);
    else if (timeout_ms > 0)
        uv_timer_start(&w->timer, on_wait_timeout, timeout_ms, 0);
    if (out)
        *out = w;
    return 0;
}

int sandbox__expect(struct sandbox *sb, uint16_t type, uint32_t id, uint32_t timeout_ms,
                    sandbox__frame_cb cb, void *data)
{
    return expect(sb, type, id, timeout_ms, cb, data, NULL);
}

/* Take back a wait that was never announced (its send failed): no callback. */
static void unexpect(struct sandbox *sb, struct sandbox__wait *w)
{
    TAILQ_REMOVE(&sb->waits, w, link);
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, on_wait_closed);
}

/* A status callback and its data, for the exchanges below. */
struct step {
    sandbox__status_cb cb;
    sandbox__forked_cb forked_cb;
    void *data;
    const char *what; /* step_send: the step's name for errors */
};

static struct step *step_new(sandbox__status_cb cb, sandbox__forked_cb forked_cb, void *data)
{
    struct step *s = malloc(sizeof(*s));
    if (s) {
        s->cb = cb;
        s->forked_cb = forked_cb;
        s->data = data;
        s->what = "";
    }
    return s;
}

static void on_hello(struct sandbox *sb, int status, struct sandbox__frame *f, void *data)
{
    struct step *s = data;
    sandbox__status_cb cb = s->cb;
    void *d = s->data;
    free(s);
    cb(sb, status, d);
}

int sandbox__wait_hello(struct sandbox *sb, uint32_t timeout_ms, sandbox__status_cb cb, void *data)
{
    struct step *s = step_new(cb, NULL, data);
    if (!s)
        return -ENOMEM;
    int r = sandbox__expect(sb, PROTO_HELLO, SANDBOX__ANY_ID, timeout_ms, on_hello, s);
    if (r < 0) {
        free(s);
        return r;
    }
    return 0;
}

static int put_opt(struct proto_buf *b, const char *key, const char *value, size_t vlen)
{
    int r = proto_put_bytes(b, key, strlen(key));
    return r < 0 ? r : proto_put_bytes(b, value, vlen);
}

static int put_opt_u32(struct proto_buf *b, const char *key, uint32_t v)
{
    char num[16];
    int n = snprintf(num, sizeof(num), "%" PRIu32, v);
    return put_opt(b, key, num, (size_t)n);
}

int sandbox__load_encode(struct proto_buf *b, const struct sandbox_spec *spec,
                         const struct proto_pair *extra, uint32_t n_extra)
{
    const struct manifest *m = spec->manifest;
    uint64_t n = 7 + (uint64_t)m->n_env + n_extra;
    if (n > PROTO_MAX_PAIRS)
        return -E2BIG;
    int r = proto_buf_begin(b, PROTO_LOAD, 0);
    if (r < 0)
        return r;
    const char *function = spec->function ? spec->function : "";
    const char *version = spec->version ? spec->version : "";
    const char *runtime = manifest_runtime_name(m->runtime);
    r = proto_put_u32(b, (uint32_t)n);
    if (r == 0)
        r = put_opt(b, PROTO_OPT_FUNCTION, function, strlen(function));
    if (r == 0)
        r = put_opt(b, PROTO_OPT_VERSION, version, strlen(version));
    if (r == 0)
        r = put_opt(b, PROTO_OPT_RUNTIME, runtime, strlen(runtime));
    if (r == 0)
        r = put_opt(b, PROTO_OPT_HANDLER, m->handler, strlen(m->handler));
    if (r == 0)
        r = put_opt_u32(b, PROTO_OPT_TIMEOUT_MS, m->timeout_ms);
    if (r == 0)
        r = put_opt_u32(b, PROTO_OPT_MEMORY_MB, m->memory_mb);
    if (r == 0)
        r = put_opt_u32(b, PROTO_OPT_CONCURRENCY, m->concurrency);
    for (size_t i = 0; r == 0 && i < m->n_env; i++) {
        char key[sizeof(PROTO_OPT_ENV_PREFIX) + MANIFEST_ENV_KEY_MAX + 1];
        int k = snprintf(key, sizeof(key), PROTO_OPT_ENV_PREFIX "%s", m->env[i].key);
        if (k < 0 || (size_t)k >= sizeof(key))
            r = -ENAMETOOLONG;
        else
            r = put_opt(b, key, m->env[i].value, strlen(m->env[i].value));
    }
    for (uint32_t i = 0; r == 0 && i < n_extra; i++) {
        r = proto_put_bytes(b, extra[i].key.p, extra[i].key.len);
        if (r == 0)
            r = proto_put_bytes(b, extra[i].value.p, extra[i].value.len);
    }
    if (r == 0)
        r = proto_buf_finish(b);
    return r;
}

static void on_loaded(struct sandbox *sb, int status, struct sandbox__frame *f, void *data)
{
    struct step *s = data;
    sandbox__status_cb cb = s->cb;
    void *d = s->data;
    free(s);
    if (status == 0) {
        struct proto_loaded m;
        proto_loaded_decode(f->payload, f->hdr.len, &m); /* validated by dispatch */
        sb->init_ns = m.init_ns;
        if (m.status != 0) {
            char msg[200];
            sandbox__sanitize(msg, sizeof(msg), m.message.p, m.message.len);
            sandbox__set_error(sb, "load failed: %s", msg[0] ? msg : strerror((int)m.status));
            status = (m.status > 0 && m.status < 4096) ? -(int)m.status : -EPROTO;
        }
    }
    cb(sb, status, d);
}

int sandbox__load_send(struct sandbox *sb, struct proto_buf *frame, int *fds, int n_fds,
                       sandbox__status_cb cb, void *data)
{
    struct step *s = step_new(cb, NULL, data);
    if (!s) {
        for (int i = 0; i < n_fds; i++)
            close(fds[i]);
        proto_buf_free(frame);
        return -ENOMEM;
    }
    /* Wait first: the answer cannot be read before this returns anyway, and
     * a failed send then leaves nothing to undo but the wait. */
    uint32_t timeout = SANDBOX_LOAD_TIMEOUT_MS + sb->timeout_ms;
    struct sandbox__wait *w;
    int r = expect(sb, PROTO_LOADED, SANDBOX__ANY_ID, timeout, on_loaded, s, &w);
    if (r < 0) {
        free(s);
        for (int i = 0; i < n_fds; i++)
            close(fds[i]);
        proto_buf_free(frame);
        return r;
    }
    r = sandbox__send(sb, frame, fds, n_fds);
    if (r < 0) {
        unexpect(sb, w);
        free(s);
        return r;
    }
    return 0;
}

static void on_forked(struct sandbox *zygote, int status, struct sandbox__frame *f, void *data)
{
    struct step *s = data;
    sandbox__forked_cb cb = s->forked_cb;
    void *d = s->data;
    free(s);
    int pidfd = -1;
    pid_t ns_pid = 0;
    uint64_t ahead_ns = 0;
    if (status == 0) {
        struct proto_forked m;
        proto_forked_decode(f->payload, f->hdr.len, &m); /* validated by dispatch */
        if (m.status != 0) {
            sandbox__set_error(zygote, "fork failed in the zygote: %s", strerror((int)m.status));
            status = (m.status < 4096) ? -(int)m.status : -EPROTO;
        } else if (pidfd_send_signal(f->fds[0], 0, NULL, 0) < 0 && errno != ESRCH) {
            /* Signal 0 checks that the fd is a pidfd at all. */
            sandbox__bad_frame(zygote, "FORKED fd is not a pidfd");
            status = -EBADMSG;
        } else if (m.pid == 0 || m.pid > INT32_MAX) {
            sandbox__bad_frame(zygote, "FORKED pid %" PRIu32, m.pid);
            status = -EBADMSG;
        } else {
            pidfd = f->fds[0];
            f->fds[0] = -1;
            ns_pid = (pid_t)m.pid;
            ahead_ns = m.ahead_ns;
        }
    }
    cb(zygote, status, pidfd, ns_pid, ahead_ns, d);
}

/* Send an empty frame of @type and @id with @fds (taken), once its answer
 * is expected (@w, for step @s): on failure the wait is withdrawn and @s
 * freed. */
static int send_empty(struct sandbox *sb, uint16_t type, uint32_t id, int *fds, int n_fds,
                      struct sandbox__wait *w, struct step *s)
{
    struct proto_buf b;
    proto_buf_init(&b);
    int r = proto_buf_begin(&b, type, id);
    if (r == 0)
        r = proto_buf_finish(&b);
    if (r == 0) {
        r = sandbox__send(sb, &b, fds, n_fds);
    } else {
        for (int i = 0; i < n_fds; i++)
            close(fds[i]);
        proto_buf_free(&b);
    }
    if (r < 0) {
        unexpect(sb, w);
        free(s);
    }
    return r;
}

int sandbox__fork_send(struct sandbox *zygote, int *fds, int n_fds, sandbox__forked_cb cb,
                       void *data)
{
    struct step *s = step_new(NULL, cb, data);
    if (!s) {
        for (int i = 0; i < n_fds; i++)
            close(fds[i]);
        return -ENOMEM;
    }
    uint32_t tag = ++zygote->backend->next_tag;
    if (tag == SANDBOX__ANY_ID)
        tag = ++zygote->backend->next_tag;
    struct sandbox__wait *w;
    int r = expect(zygote, PROTO_FORKED, tag, SANDBOX_STEP_TIMEOUT_MS, on_forked, s, &w);
    if (r < 0) {
        for (int i = 0; i < n_fds; i++)
            close(fds[i]);
        free(s);
        return r;
    }
    return send_empty(zygote, PROTO_FORK, tag, fds, n_fds, w, s);
}

static void on_step_done(struct sandbox *sb, int status, struct sandbox__frame *f, void *data)
{
    struct step *s = data;
    sandbox__status_cb cb = s->cb;
    void *d = s->data;
    const char *what = s->what;
    free(s);
    if (status == 0) {
        struct proto_done m;
        proto_done_decode(f->payload, f->hdr.len, &m); /* validated by dispatch */
        if (m.status != 0) {
            sandbox__set_error(sb, "%s failed: %s", what, strerror((int)m.status));
            status = (m.status < 4096) ? -(int)m.status : -EPROTO;
        }
    }
    cb(sb, status, d);
}

/* Send an empty frame of @type with @fds (taken) and wait for @reply, whose
 * payload is a struct proto_done. */
static int step_send(struct sandbox *sb, uint16_t type, uint16_t reply, const char *what, int *fds,
                     int n_fds, sandbox__status_cb cb, void *data)
{
    struct step *s = step_new(cb, NULL, data);
    struct sandbox__wait *w;
    int r = s ? expect(sb, reply, SANDBOX__ANY_ID, SANDBOX_STEP_TIMEOUT_MS, on_step_done, s, &w)
              : -ENOMEM;
    if (r < 0) {
        for (int i = 0; i < n_fds; i++)
            close(fds[i]);
        free(s);
        return r;
    }
    s->what = what;
    return send_empty(sb, type, 0, fds, n_fds, w, s);
}

int sandbox__reset_send(struct sandbox *sb, sandbox__status_cb cb, void *data)
{
    return step_send(sb, PROTO_RESET, PROTO_RESET_DONE, "reset", NULL, 0, cb, data);
}

int sandbox__park_send(struct sandbox *zygote, int *fds, int n_fds, sandbox__status_cb cb,
                       void *data)
{
    return step_send(zygote, PROTO_PARK, PROTO_PARKED, "park", fds, n_fds, cb, data);
}
