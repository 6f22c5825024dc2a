/* inflight.c - the calls in flight on an instance: INVOKE out, RESPONSE or
 * FAILED back, matched by call id; each call's timeout; calls sent ahead
 * of their start (sandbox_invoke), which start in order as running ones
 * answer and come back unstarted if the instance dies first. Part of the
 * generic core (sandbox.c).
 */
#include "sandbox/sandbox_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"

/* One call in flight: running in the sandbox, or sent ahead and waiting
 * there behind the running ones (!started). */
struct sandbox__inflight {
    TAILQ_ENTRY(sandbox__inflight) link;
    struct sandbox *sb;
    uint32_t id;
    uint32_t timeout_ms;
    bool started;
    uint64_t sent_ns, started_ns;
    sandbox_result_cb cb;
    void *data;
    uv_timer_t timer;
};

static struct sandbox__inflight *find_call(struct sandbox *sb, uint32_t id)
{
    struct sandbox__inflight *c;
    TAILQ_FOREACH(c, &sb->calls, link)
    {
        if (c->id == id)
            return c;
    }
    return NULL;
}

static void on_call_closed(uv_handle_t *h)
{
    struct sandbox__inflight *c = h->data;
    struct sandbox *sb = c->sb;
    free(c);
    sb->handles--;
    sandbox__maybe_free(sb);
}

static void on_call_timeout(uv_timer_t *t);

static void call_start(struct sandbox *sb, struct sandbox__inflight *c, uint64_t now)
{
    c->started = true;
    c->started_ns = now;
    sb->n_started++;
    uv_timer_start(&c->timer, on_call_timeout, c->timeout_ms, 0);
}

/* Calls sent ahead start, in order, as running ones make room. The agent
 * (or monitor) runs them in the order they came, so the oldest waiting one
 * is the one that starts. */
static void start_waiting(struct sandbox *sb)
{
    uint32_t limit = sb->concurrency ? sb->concurrency : 1;
    struct sandbox__inflight *c;
    uint64_t now = 0;
    TAILQ_FOREACH(c, &sb->calls, link)
    {
        if (sb->n_started >= limit || sb->starts_closed)
            return;
        if (!c->started) {
            if (!now)
                now = ember_now_ns();
            call_start(sb, c, now);
        }
    }
}

/* Take @c out of the table and give its owner @res; with @next, a call
 * waiting behind it starts (not when the sandbox is dying). */
static void call_complete(struct sandbox *sb, struct sandbox__inflight *c,
                          struct sandbox_result *res, bool next)
{
    uint64_t now = ember_now_ns();
    TAILQ_REMOVE(&sb->calls, c, link);
    sb->n_calls--;
    if (c->started)
        sb->n_started--;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_call_closed);
    res->run_ns = c->started ? now - c->started_ns : 0;
    if (res->inside_ns > res->run_ns)
        res->inside_ns = res->run_ns;
    res->pending_ns = (c->started ? c->started_ns : now) - c->sent_ns;
    if (next)
        start_waiting(sb);
    c->cb(sb, res, c->data);
}

static void call_fail(struct sandbox *sb, struct sandbox__inflight *c, enum sandbox_error error,
                      const char *detail, bool next)
{
    struct sandbox_result res;
    memset(&res, 0, sizeof(res));
    res.error = error;
    res.status = sandbox_error_http_status(error);
    res.unstarted = !c->started;
    snprintf(res.detail, sizeof(res.detail), "%s", detail);
    call_complete(sb, c, &res, next);
}

/* Fail every call in flight (the waiting ones as unstarted). A callback
 * may destroy the sandbox, which fails the rest itself: take one at a time
 * from the head. */
void sandbox__complete_calls(struct sandbox *sb, enum sandbox_error error, const char *detail)
{
    sb->starts_closed = true;
    struct sandbox__inflight *c;
    while ((c = TAILQ_FIRST(&sb->calls)))
        call_fail(sb, c, error, detail, false);
}

/* The instance is dying of a call's crash: what waited behind that call
 * never started, and never will. */
static void fail_waiting(struct sandbox *sb)
{
    sb->starts_closed = true;
    while (!sb->destroyed) { /* (destroy fails the rest itself) */
        struct sandbox__inflight *c;
        TAILQ_FOREACH(c, &sb->calls, link)
        {
            if (!c->started)
                break;
        }
        if (!c)
            return;
        call_fail(sb, c, SANDBOX_ERR_GONE, "the instance died before the call started", false);
    }
}

/* The call an answer (RESPONSE, FAILED) names; NULL, and the sandbox
 * killed for it, if none such is in flight. */
static struct sandbox__inflight *answered_call(struct sandbox *sb, const struct proto_hdr *h)
{
    struct sandbox__inflight *c = find_call(sb, h->id);
    if (!c)
        sandbox__bad_frame(sb, "%s for call %" PRIu32 ", which is not in flight",
                           sandbox__type_name(h->type), h->id);
    return c;
}

void sandbox__on_response(struct sandbox *sb, const struct proto_hdr *h, const uint8_t *payload)
{
    struct sandbox__inflight *c = answered_call(sb, h);
    if (!c)
        return;
    struct proto_response pr;
    if (proto_response_decode(payload, h->len, &pr) < 0) {
        sandbox__bad_frame(sb, "RESPONSE does not decode");
        return;
    }
    if (pr.status < 100 || pr.status > 599) {
        sandbox__bad_frame(sb, "RESPONSE status %" PRIu32, pr.status);
        return;
    }
    struct sandbox_header headers[PROTO_MAX_PAIRS];
    for (uint32_t i = 0; i < pr.n_headers; i++) {
        if (!proto_header_valid(&pr.headers[i])) {
            sandbox__bad_frame(sb, "RESPONSE header %" PRIu32 " is not a valid HTTP header", i);
            return;
        }
        headers[i] = (struct sandbox_header){.name = pr.headers[i].key.p,
                                             .name_len = pr.headers[i].key.len,
                                             .value = pr.headers[i].value.p,
                                             .value_len = pr.headers[i].value.len};
    }
    if (pr.body.len > SANDBOX_RESPONSE_MAX) {
        /* Well-formed, only too big: the call fails, the sandbox lives. */
        char detail[96];
        snprintf(detail, sizeof(detail), "response body over %u bytes", SANDBOX_RESPONSE_MAX);
        call_fail(sb, c, SANDBOX_ERR_TOO_LARGE, detail, true);
        return;
    }
    struct sandbox_result res;
    memset(&res, 0, sizeof(res));
    res.error = SANDBOX_OK;
    res.status = (int)pr.status;
    res.headers = headers;
    res.n_headers = pr.n_headers;
    res.body = pr.body.p;
    res.body_len = pr.body.len;
    res.inside_ns = pr.run_ns;
    call_complete(sb, c, &res, true);
}

void sandbox__on_failed(struct sandbox *sb, const struct proto_hdr *h, const uint8_t *payload)
{
    struct sandbox__inflight *c = answered_call(sb, h);
    if (!c)
        return;
    struct proto_failed m;
    if (proto_failed_decode(payload, h->len, &m) < 0) {
        sandbox__bad_frame(sb, "FAILED does not decode");
        return;
    }
    char msg[256];
    sandbox__sanitize(msg, sizeof(msg), m.message.p, m.message.len);
    enum sandbox_error error;
    const char *fallback;
    switch (m.reason) {
    case PROTO_FAIL_HANDLER:
        error = SANDBOX_ERR_HANDLER;
        fallback = "handler failed";
        break;
    case PROTO_FAIL_BAD_OUTPUT:
        error = SANDBOX_ERR_BAD_OUTPUT;
        fallback = "bad output from the function";
        break;
    case PROTO_FAIL_TOO_LARGE:
        error = SANDBOX_ERR_TOO_LARGE;
        fallback = "response too large";
        break;
    case PROTO_FAIL_CRASH:
        /* The crash frame of a dying instance, or an exec child that died.
         * An OOM kill explains it better than the signal does; otherwise
         * the message also explains the process's own death if it follows. */
        fallback = "crashed";
        snprintf(sb->crash_detail, sizeof(sb->crash_detail), "%s", msg[0] ? msg : fallback);
        bool oom = sandbox__oom_seen(sb);
        if (sb->crash_fatal) {
            /* Nothing after this call will run: what waits behind it can
             * go elsewhere now, not when the death is noticed. */
            sandbox__hold(sb);
            call_fail(sb, c, oom ? SANDBOX_ERR_OOM : SANDBOX_ERR_CRASH,
                      oom ? "out of memory" : sb->crash_detail, false);
            fail_waiting(sb);
            sandbox__release(sb);
            return;
        }
        if (oom) {
            call_fail(sb, c, SANDBOX_ERR_OOM, "out of memory", true);
            return;
        }
        error = SANDBOX_ERR_CRASH;
        break;
    case PROTO_FAIL_INTERNAL:
        error = SANDBOX_ERR_INTERNAL;
        fallback = "internal error in the sandbox";
        break;
    default:
        sandbox__bad_frame(sb, "FAILED with unknown reason %" PRIu32, m.reason);
        return;
    }
    call_fail(sb, c, error, msg[0] ? msg : fallback, true);
}

static void on_call_timeout(uv_timer_t *t)
{
    struct sandbox__inflight *c = t->data;
    struct sandbox *sb = c->sb;
    uint32_t id = c->id, ms = c->timeout_ms;
    sandbox__hold(sb);
    /* Timers run before the loop reads: an answer may be waiting. Read it
     * first, so that a call that made it is not killed, and a call sent
     * ahead that the instance went on to is not taken for unstarted. */
    if (sb->chan_open && !sb->killed)
        sandbox__chan_drain(sb);
    /* A call that overran leaves its instance in an unknown state: kill it.
     * Every call in flight there fails the same way (their sandbox hung);
     * those sent ahead come back unstarted. */
    c = find_call(sb, id);
    if (c && c->started && !sb->destroyed)
        sandbox__kill(sb, SANDBOX_ERR_TIMEOUT, "timed out after %" PRIu32 " ms", ms);
    sandbox__release(sb);
}

int sandbox__invoke(struct sandbox *sb, const struct sandbox_call *call, sandbox_result_cb cb,
                    void *data)
{
    if (sb->destroyed)
        return -EINVAL;
    if (!sandbox__alive(sb) || !sb->chan_open || sb->starts_closed)
        return -ESRCH;
    if (sb->role != SANDBOX_ROLE_INSTANCE || sb->failed)
        return -EINVAL;
    if (sb->op != SANDBOX__OP_NONE)
        return -EBUSY;
    uint32_t limit = sb->concurrency ? sb->concurrency : 1;
    if (sb->n_calls >= limit + (limit == 1 ? SANDBOX_PIPELINE_DEPTH : 0))
        return -EBUSY;
    if (find_call(sb, call->id))
        return -EEXIST;
    if (call->n_headers > PROTO_MAX_PAIRS)
        return -E2BIG;

    const char *method = call->method ? call->method : "GET";
    const char *path = call->path ? call->path : "/";
    const char *query = call->query ? call->query : "";
    struct proto_buf b;
    proto_buf_init(&b);
    int r = proto_buf_begin(&b, PROTO_INVOKE, call->id);
    if (r == 0)
        r = proto_put_bytes(&b, method, strlen(method));
    if (r == 0)
        r = proto_put_bytes(&b, path, strlen(path));
    if (r == 0)
        r = proto_put_bytes(&b, query, strlen(query));
    if (r == 0)
        r = proto_put_u32(&b, (uint32_t)call->n_headers);
    for (size_t i = 0; r == 0 && i < call->n_headers; i++) {
        const struct sandbox_header *h = &call->headers[i];
        r = proto_put_bytes(&b, h->name, h->name_len);
        if (r == 0)
            r = proto_put_bytes(&b, h->value, h->value_len);
    }
    if (r == 0)
        r = proto_put_bytes(&b, call->body, call->body_len);
    if (r == 0)
        r = proto_buf_finish(&b);
    if (r < 0) {
        proto_buf_free(&b);
        return r;
    }

    struct sandbox__inflight *c = calloc(1, sizeof(*c));
    if (!c) {
        proto_buf_free(&b);
        return -ENOMEM;
    }
    r = uv_timer_init(sb->loop, &c->timer);
    if (r < 0) {
        free(c);
        proto_buf_free(&b);
        return r;
    }
    sb->handles++;
    c->sb = sb;
    c->id = call->id;
    c->timeout_ms = call->timeout_ms ? call->timeout_ms
                    : sb->timeout_ms ? sb->timeout_ms
                                     : MANIFEST_TIMEOUT_MS_DEFAULT;
    c->cb = cb;
    c->data = data;
    c->timer.data = c;
    c->sent_ns = ember_now_ns();

    /* In the table before the send: a send that breaks the channel right
     * away leaves the call to the death handler, which completes it. */
    TAILQ_INSERT_TAIL(&sb->calls, c, link);
    sb->n_calls++;
    if (sb->n_started < limit)
        call_start(sb, c, c->sent_ns);
    r = sandbox__send(sb, &b, NULL, 0);
    if (r < 0) {
        TAILQ_REMOVE(&sb->calls, c, link);
        sb->n_calls--;
        if (c->started)
            sb->n_started--;
        uv_timer_stop(&c->timer);
        uv_close((uv_handle_t *)&c->timer, on_call_closed);
        return r;
    }
    return 0;
}
