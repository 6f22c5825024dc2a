/* sandbox.c - the front door of sandbox.h and the generic core of both
 * backends (see sandbox_internal.h for the model): the backend object,
 * allocation and holds, the process and its death, and kill. The calls in
 * flight are in inflight.c, the channel in chan.c, the waits and the
 * exchanges built on them in steps.c.
 */
#include "sandbox/sandbox_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/clock.h"
#include "common/log.h"

struct sandbox__work {
    uv_work_t req;
    struct sandbox *sb;
    sandbox__work_fn work;
    sandbox__after_fn after;
    void *ctx;
};

static void finish_death(struct sandbox *sb);

/* ---- names ---- */

static const char *const kind_names[SANDBOX_KIND_COUNT] = {
    [SANDBOX_CONTAINER] = "container",
    [SANDBOX_MICROVM] = "microvm",
};

const char *sandbox_kind_name(enum sandbox_kind kind)
{
    if ((unsigned)kind >= SANDBOX_KIND_COUNT)
        return "unknown";
    return kind_names[kind];
}

int sandbox_kind_parse(const char *s, enum sandbox_kind *out)
{
    for (unsigned i = 0; s && i < SANDBOX_KIND_COUNT; i++) {
        if (strcmp(s, kind_names[i]) == 0) {
            *out = (enum sandbox_kind)i;
            return 0;
        }
    }
    return -EINVAL;
}

int sandbox_error_http_status(enum sandbox_error e)
{
    switch (e) {
    case SANDBOX_OK:
        return 200;
    case SANDBOX_ERR_TIMEOUT:
        return 504;
    case SANDBOX_ERR_OOM:
    case SANDBOX_ERR_CRASH:
    case SANDBOX_ERR_HANDLER:
    case SANDBOX_ERR_BAD_OUTPUT:
    case SANDBOX_ERR_TOO_LARGE:
        return 502;
    case SANDBOX_ERR_GONE:
        return 503;
    case SANDBOX_ERR_INTERNAL:
        break;
    }
    return 500;
}

const char *sandbox_error_name(enum sandbox_error e)
{
    switch (e) {
    case SANDBOX_OK:
        return "ok";
    case SANDBOX_ERR_TIMEOUT:
        return "timeout";
    case SANDBOX_ERR_OOM:
        return "out_of_memory";
    case SANDBOX_ERR_CRASH:
        return "crash";
    case SANDBOX_ERR_HANDLER:
        return "handler_error";
    case SANDBOX_ERR_BAD_OUTPUT:
        return "bad_output";
    case SANDBOX_ERR_TOO_LARGE:
        return "too_large";
    case SANDBOX_ERR_GONE:
        return "gone";
    case SANDBOX_ERR_INTERNAL:
        break;
    }
    return "internal";
}

const char *sandbox__type_name(uint16_t type)
{
    switch (type) {
    case PROTO_LOAD:
        return "LOAD";
    case PROTO_INVOKE:
        return "INVOKE";
    case PROTO_FORK:
        return "FORK";
    case PROTO_RESET:
        return "RESET";
    case PROTO_SHUTDOWN:
        return "SHUTDOWN";
    case PROTO_PARK:
        return "PARK";
    case PROTO_PARKED:
        return "PARKED";
    case PROTO_PREFORK:
        return "PREFORK";
    case PROTO_HELLO:
        return "HELLO";
    case PROTO_LOADED:
        return "LOADED";
    case PROTO_RESPONSE:
        return "RESPONSE";
    case PROTO_FAILED:
        return "FAILED";
    case PROTO_FORKED:
        return "FORKED";
    case PROTO_LOG:
        return "LOG";
    case PROTO_EXITED:
        return "EXITED";
    case PROTO_RESET_DONE:
        return "RESET_DONE";
    }
    return "?";
}

void sandbox__describe_status(int wait_status, char *buf, size_t size)
{
    if (WIFEXITED(wait_status)) {
        snprintf(buf, size, "exited with status %d", WEXITSTATUS(wait_status));
    } else if (WIFSIGNALED(wait_status)) {
        int sig = WTERMSIG(wait_status);
        const char *abbrev = sigabbrev_np(sig);
        if (abbrev)
            snprintf(buf, size, "killed by signal %d (SIG%s)", sig, abbrev);
        else
            snprintf(buf, size, "killed by signal %d", sig);
    } else {
        snprintf(buf, size, "ended with wait status 0x%x", (unsigned)wait_status);
    }
}

/* Copy untrusted bytes into a C string fit for logs and JSON details:
 * printable ASCII only, truncated. */
void sandbox__sanitize(char *dst, size_t size, const char *src, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < size; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    dst[n] = '\0';
}

/* ---- the backend object ---- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void config_free(struct sandbox_config *c)
{
    free((char *)c->state_dir);
    free((char *)c->agent_path);
    free((char *)c->vmm_path);
}

int sandbox__backend_open(const struct sandbox_ops *ops, enum sandbox_kind kind, uv_loop_t *loop,
                          const struct sandbox_config *cfg, struct sandbox_backend **out,
                          struct ember_error *err)
{
    *out = NULL;
    struct sandbox_backend *be = calloc(1, sizeof(*be));
    if (!be)
        return ember_error_set(err, -ENOMEM, "sandbox backend: out of memory");
    be->ops = ops;
    be->kind = kind;
    be->loop = loop;
    be->cfg = *cfg;
    be->cfg.state_dir = dup_or_null(cfg->state_dir);
    be->cfg.agent_path = dup_or_null(cfg->agent_path);
    be->cfg.vmm_path = dup_or_null(cfg->vmm_path);
    if ((cfg->state_dir && !be->cfg.state_dir) || (cfg->agent_path && !be->cfg.agent_path) ||
        (cfg->vmm_path && !be->cfg.vmm_path)) {
        config_free(&be->cfg);
        free(be);
        return ember_error_set(err, -ENOMEM, "sandbox backend: out of memory");
    }
    /* The documented defaults, so that a zeroed knob means "default". */
    if (!be->cfg.pids_max)
        be->cfg.pids_max = 64;
    if (!be->cfg.stem_memory_mb)
        be->cfg.stem_memory_mb = MANIFEST_MEMORY_MB_DEFAULT;
    if (!be->cfg.tmp_size_mb)
        be->cfg.tmp_size_mb = 64;
    if (!be->cfg.cpu_quota_pct)
        be->cfg.cpu_quota_pct = 100;
    if (!be->cfg.uid_base)
        be->cfg.uid_base = 1000000000u;
    if (!be->cfg.uid_count)
        be->cfg.uid_count = 65536;

    if (ops->backend_init) {
        int r = ops->backend_init(be, err);
        if (r < 0) {
            config_free(&be->cfg);
            free(be);
            return r;
        }
    }
    *out = be;
    return 0;
}

static void backend_finish(struct sandbox_backend *be)
{
    if (be->ops->backend_destroy)
        be->ops->backend_destroy(be);
    config_free(&be->cfg);
    free(be);
}

void sandbox_backend_close(struct sandbox_backend *be)
{
    if (!be)
        return;
    /* Destroyed sandboxes may still be releasing (cgroup removal on the
     * thread pool, a child being reaped): the backend outlives them and is
     * finished by the last one, as the loop keeps running. */
    be->closing = true;
    if (be->n_sandboxes == 0)
        backend_finish(be);
    else
        log_debug("sandbox: backend %s waits for %zu sandboxes to be released", be->ops->name,
                  be->n_sandboxes);
}

/* ---- allocation, holds, free ---- */

static struct sandbox *sandbox_alloc(struct sandbox_backend *be)
{
    struct sandbox *sb = calloc(1, sizeof(*sb));
    if (!sb)
        return NULL;
    sb->ops = be->ops;
    sb->backend = be;
    sb->loop = be->loop;
    sb->kind = be->kind;
    sb->role = SANDBOX_ROLE_STEM;
    sb->id = ++be->next_id;
    sb->concurrency = 1;
    sb->chan_fd = -1;
    sb->pidfd = -1;
    LIST_INIT(&sb->children);
    TAILQ_INIT(&sb->outq);
    TAILQ_INIT(&sb->calls);
    TAILQ_INIT(&sb->waits);
    be->n_sandboxes++;
    return sb;
}

static void sandbox_free(struct sandbox *sb)
{
    struct sandbox_backend *be = sb->backend;
    free(sb->rx_payload);
    for (int i = 0; i < sb->rx_n_fds; i++)
        close(sb->rx_fds[i]);
    free(sb);
    if (--be->n_sandboxes == 0 && be->closing)
        backend_finish(be);
}

void sandbox__maybe_free(struct sandbox *sb)
{
    if (sb->destroyed && sb->handles == 0 && sb->holds == 0)
        sandbox_free(sb);
}

void sandbox__hold(struct sandbox *sb)
{
    sb->holds++;
}

void sandbox__release(struct sandbox *sb)
{
    sb->holds--;
    sandbox__maybe_free(sb);
}

bool sandbox__destroyed(const struct sandbox *sb)
{
    return sb->destroyed;
}

bool sandbox__alive(const struct sandbox *sb)
{
    return !sb->destroyed && !sb->killed && !sb->exited;
}

void sandbox__set_error(struct sandbox *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sb->last_error, sizeof(sb->last_error), fmt, ap);
    va_end(ap);
    log_warn("sandbox %" PRIu64 ": %s", sb->id, sb->last_error);
}

static void on_work(uv_work_t *req)
{
    struct sandbox__work *w = req->data;
    w->work(w->ctx);
}

static void on_work_done(uv_work_t *req, int status)
{
    struct sandbox__work *w = req->data;
    struct sandbox *sb = w->sb;
    /* Never cancelled (we do not call uv_cancel), so after always runs. */
    w->after(sb, w->ctx);
    free(w);
    sandbox__release(sb);
}

int sandbox__queue_work(struct sandbox *sb, sandbox__work_fn work, sandbox__after_fn after,
                        void *ctx)
{
    struct sandbox__work *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->sb = sb;
    w->work = work;
    w->after = after;
    w->ctx = ctx;
    w->req.data = w;
    int r = uv_queue_work(sb->loop, &w->req, on_work, on_work_done);
    if (r < 0) {
        free(w);
        return r;
    }
    sandbox__hold(sb);
    return 0;
}

/* ---- the process ---- */

void sandbox__signal_kill(struct sandbox *sb)
{
    if (sb->pidfd < 0 || sb->exited)
        return;
    if (pidfd_send_signal(sb->pidfd, SIGKILL, NULL, 0) < 0 && errno != ESRCH)
        log_warn("sandbox %" PRIu64 ": pidfd_send_signal: %s", sb->id, strerror(errno));
}

static void on_pid_closed(uv_handle_t *h)
{
    struct sandbox *sb = h->data;
    if (sb->pidfd >= 0)
        close(sb->pidfd);
    sb->pidfd = -1;
    sb->handles--;
    sandbox__maybe_free(sb);
}

static void pid_close(struct sandbox *sb)
{
    if (!sb->pid_open)
        return;
    sb->pid_open = false;
    uv_close((uv_handle_t *)&sb->pid_poll, on_pid_closed);
}

/* Collect a direct child's status without blocking. 1 reaped, 0 not yet. */
static int reap(struct sandbox *sb)
{
    if (!sb->direct_child || sb->reaped)
        return 1;
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    if (waitid((idtype_t)P_PIDFD, (id_t)sb->pidfd, &si, WEXITED | WNOHANG) < 0) {
        if (errno == EINTR)
            return 0;
        /* ECHILD: not ours after all (a spawner that double-forks); the
         * exit is still real, only its status is unknown. */
        log_debug("sandbox %" PRIu64 ": waitid: %s", sb->id, strerror(errno));
        sb->reaped = true;
        return 1;
    }
    if (si.si_pid == 0)
        return 0;
    sb->reaped = true;
    if (!sb->have_status) {
        sb->have_status = true;
        sb->wait_status = si.si_code == CLD_EXITED
                              ? (si.si_status & 0xff) << 8
                              : (si.si_status & 0x7f) | (si.si_code == CLD_DUMPED ? 0x80 : 0);
    }
    return 1;
}

static void on_exit_timer_closed(uv_handle_t *h)
{
    struct sandbox *sb = h->data;
    sb->handles--;
    sandbox__maybe_free(sb);
}

static void exit_timer_close(struct sandbox *sb)
{
    if (!sb->exit_timer_open)
        return;
    sb->exit_timer_open = false;
    uv_close((uv_handle_t *)&sb->exit_timer, on_exit_timer_closed);
}

static void on_exit_grace(uv_timer_t *t)
{
    struct sandbox *sb = t->data;
    finish_death(sb);
}

/* Did the backend's stats count an OOM kill since the sandbox became ready? */
bool sandbox__oom_seen(struct sandbox *sb)
{
    if (!sb->ops->stats || !sb->have_oom_base)
        return false;
    struct sandbox_stats st;
    if (sb->ops->stats(sb, &st) < 0)
        return false;
    if (st.oom_kills > sb->oom_base) {
        sb->oom_base = st.oom_kills;
        return true;
    }
    return false;
}

static void on_pid_event(uv_poll_t *h, int status, int events)
{
    struct sandbox *sb = h->data;
    if (status == 0 && !reap(sb))
        return; /* readable but not yet waitable: the poll fires again */
    if (status < 0)
        log_warn("sandbox %" PRIu64 ": pidfd poll: %s", sb->id, uv_strerror(status));
    sb->exited = true;
    pid_close(sb);
    if (sb->destroyed || sb->death_done)
        return;

    log_debug("sandbox %" PRIu64 ": process %d exited", sb->id, (int)sb->pid);
    sandbox__hold(sb);
    /* The channel may still hold what the process wrote last (an answer, the
     * crash frame of its signal handler): read it before judging. */
    if (sb->chan_open)
        sandbox__chan_drain(sb);
    if (!sb->destroyed && !sb->death_done) {
        /* An instance is not our child: its status comes from its zygote's
         * PROTO_EXITED, which may trail the pidfd. Wait for it briefly when
         * nothing else can explain the death of a call. */
        bool wait_status = sb->n_calls > 0 && !sb->have_status && !sb->killed &&
                           !sb->crash_detail[0] && sb->zygote && sandbox__alive(sb->zygote);
        if (wait_status && uv_timer_init(sb->loop, &sb->exit_timer) == 0) {
            sb->exit_timer.data = sb;
            sb->exit_timer_open = true;
            sb->handles++;
            uv_timer_start(&sb->exit_timer, on_exit_grace, SANDBOX_EXIT_STATUS_GRACE_MS, 0);
        } else {
            finish_death(sb);
        }
    }
    sandbox__release(sb);
}

/* The process is gone: explain it, fail what was pending, tell the owner. */
static void finish_death(struct sandbox *sb)
{
    if (sb->death_done || sb->destroyed)
        return;
    sb->death_done = true;
    exit_timer_close(sb);

    enum sandbox_error error = SANDBOX_ERR_CRASH;
    char why[256];
    if (sb->killed) {
        snprintf(why, sizeof(why), "%s", sb->kill_reason);
    } else if (sandbox__oom_seen(sb)) {
        error = SANDBOX_ERR_OOM;
        snprintf(why, sizeof(why), "out of memory");
    } else if (sb->crash_detail[0]) {
        snprintf(why, sizeof(why), "%s", sb->crash_detail);
    } else if (sb->have_status) {
        sandbox__describe_status(sb->wait_status, why, sizeof(why));
    } else if (sb->zygote_gone) {
        snprintf(why, sizeof(why), "died with its zygote");
    } else {
        snprintf(why, sizeof(why), "died (status unknown)");
    }
    snprintf(sb->last_error, sizeof(sb->last_error), "%s", why);
    struct sandbox *child;
    LIST_FOREACH(child, &sb->children, sibling)
    {
        child->zygote_gone = true;
    }
    if (sb->killed) /* the kill was logged with its reason */
        log_debug("sandbox %" PRIu64 " (pid %d): gone", sb->id, (int)sb->pid);
    else
        log_info("sandbox %" PRIu64 " (pid %d): %s", sb->id, (int)sb->pid, why);

    sandbox__hold(sb);
    sandbox__complete_calls(sb, error, why);
    sandbox__fail_waits(sb, -ECHILD);
    sandbox__chan_close(sb);
    if (!sb->destroyed && sb->events.on_exit)
        sb->events.on_exit(sb, why, sb->events.data);
    sandbox__release(sb);
}

/* A zygote reported the wait status of one of its children. */
void sandbox__child_exited(struct sandbox *zygote, uint32_t ns_pid, uint32_t wait_status)
{
    struct sandbox *child;
    LIST_FOREACH(child, &zygote->children, sibling)
    {
        if (child->ns_pid > 0 && (uint32_t)child->ns_pid == ns_pid)
            break;
    }
    if (!child) {
        log_debug("sandbox %" PRIu64 ": EXITED for unknown pid %u", zygote->id, ns_pid);
        return;
    }
    if (!child->have_status) {
        child->have_status = true;
        child->wait_status = (int)wait_status;
    }
    if (child->exit_timer_open)
        finish_death(child);
}

int sandbox__attach(struct sandbox *sb, int chan_fd, int pidfd, pid_t pid, unsigned flags)
{
    cleanup_close int chan = chan_fd;
    cleanup_close int pfd = pidfd;
    if (sb->attached)
        return -EALREADY;
    if (chan < 0 || pfd < 0)
        return -EBADF;

    int r = uv_poll_init(sb->loop, &sb->pid_poll, pfd);
    if (r < 0) {
        pidfd_send_signal(pfd, SIGKILL, NULL, 0);
        return r;
    }
    sb->attached = true;
    sb->pid = pid;
    sb->direct_child = (flags & SANDBOX__DIRECT_CHILD) != 0;
    sb->pidfd = steal_fd(&pfd);
    sb->pid_poll.data = sb;
    sb->pid_open = true;
    sb->handles++;
    uv_poll_start(&sb->pid_poll, UV_READABLE, on_pid_event);

    if (sb->destroyed) {
        /* Too late: the owner gave up on it while it was starting. Kill it;
         * the pid poll stays to reap a child of ours. */
        sandbox__signal_kill(sb);
        if (!sb->direct_child)
            pid_close(sb);
        return -ECANCELED;
    }

    r = sandbox__chan_attach(sb, steal_fd(&chan));
    if (r < 0)
        return r;
    log_debug("sandbox %" PRIu64 ": attached pid %d", sb->id, (int)pid);
    return 0;
}

/* ---- kill ---- */

void sandbox__kill(struct sandbox *sb, enum sandbox_error error, const char *fmt, ...)
{
    if (sb->destroyed)
        return;
    char detail[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);

    if (!sb->killed) {
        sb->killed = true;
        snprintf(sb->kill_reason, sizeof(sb->kill_reason), "%s", detail);
        snprintf(sb->last_error, sizeof(sb->last_error), "%s", detail);
        log_info("sandbox %" PRIu64 " (pid %d): killing: %s", sb->id, (int)sb->pid, detail);
    }
    sandbox__signal_kill(sb);
    sandbox__chan_close(sb);

    sandbox__hold(sb);
    sandbox__complete_calls(sb, error, detail);
    sandbox__fail_waits(sb, -ECHILD);
    /* Never attached, or already gone: no pidfd will report the death any
     * more, so report it now. */
    if (!sb->attached || sb->exited)
        finish_death(sb);
    sandbox__release(sb);
}

/* ---- the front door ---- */

/* Every owner operation completes through here: the role changes on
 * success, and nothing reaches the owner after sandbox_destroy. */
static void on_op_done(struct sandbox *sb, int status, void *unused)
{
    enum sandbox__op op = sb->op;
    sandbox_done_cb cb = sb->op_cb;
    void *data = sb->op_data;
    sb->op = SANDBOX__OP_NONE;
    sb->op_cb = NULL;
    sb->op_data = NULL;

    if (status == 0 && !sandbox__alive(sb))
        status = sb->destroyed ? -ECANCELED : -ECHILD;
    if (status == 0) {
        if (op == SANDBOX__OP_SPECIALIZE)
            sb->role = sb->ops->specialized_serves || sb->serves ? SANDBOX_ROLE_INSTANCE
                                                                 : SANDBOX_ROLE_ZYGOTE;
        else if (op == SANDBOX__OP_FORK)
            sb->role = SANDBOX_ROLE_INSTANCE;
        sb->last_error[0] = '\0';
        struct sandbox_stats st;
        bool known = op == SANDBOX__OP_FORK && sb->have_oom_base; /* set by the backend */
        if (!known && sb->ops->stats && sb->ops->stats(sb, &st) == 0) {
            sb->oom_base = st.oom_kills;
            sb->have_oom_base = true;
        }
    } else {
        /* Half-way through a transition nothing is known about the
         * sandbox's state (function code may have run): only destroy. */
        sb->failed = true;
        if (!sb->last_error[0])
            snprintf(sb->last_error, sizeof(sb->last_error), "%s", strerror(-status));
    }
    if (sb->destroyed || !cb)
        return;
    cb(sb, status, data);
}

static void link_child(struct sandbox *zygote, struct sandbox *child)
{
    child->zygote = zygote;
    LIST_INSERT_HEAD(&zygote->children, child, sibling);
}

static void unlink_child(struct sandbox *child)
{
    if (child->zygote) {
        LIST_REMOVE(child, sibling);
        child->zygote = NULL;
    }
}

/* Free a sandbox whose op failed synchronously (the backend left nothing). */
static void discard(struct sandbox *sb)
{
    sb->op = SANDBOX__OP_NONE;
    sb->op_cb = NULL;
    unlink_child(sb);
    sb->destroyed = true;
    sandbox__signal_kill(sb);
    sandbox__chan_close(sb);
    if (!sb->direct_child || sb->exited)
        pid_close(sb);
    sandbox__maybe_free(sb);
}

int sandbox_create(struct sandbox_backend *be, struct sandbox **out, sandbox_done_cb cb, void *data)
{
    *out = NULL;
    if (be->closing)
        return -ESHUTDOWN;
    struct sandbox *sb = sandbox_alloc(be);
    if (!sb)
        return -ENOMEM;
    sb->op = SANDBOX__OP_CREATE;
    sb->op_cb = cb;
    sb->op_data = data;
    int r = be->ops->create(be, sb, on_op_done, NULL);
    if (r < 0) {
        discard(sb);
        return r;
    }
    *out = sb;
    return 0;
}

int sandbox_specialize(struct sandbox *sb, const struct sandbox_spec *spec, sandbox_done_cb cb,
                       void *data)
{
    if (sb->destroyed || sb->failed || sb->role != SANDBOX_ROLE_STEM || !spec || !spec->manifest)
        return -EINVAL;
    if (sb->op != SANDBOX__OP_NONE)
        return -EBUSY;
    if (!sandbox__alive(sb))
        return -ESRCH;
    const struct manifest *m = spec->manifest;
    sb->memory_mb = m->memory_mb;
    sb->timeout_ms = m->timeout_ms;
    sb->concurrency = m->concurrency ? m->concurrency : 1;
    sb->crash_fatal = m->runtime != MANIFEST_RUNTIME_EXEC;
    sb->serves = spec->serve;
    sb->op = SANDBOX__OP_SPECIALIZE;
    sb->op_cb = cb;
    sb->op_data = data;
    int r = sb->ops->specialize(sb, spec, on_op_done, NULL);
    if (r < 0) {
        sb->op = SANDBOX__OP_NONE;
        sb->op_cb = NULL;
        sb->memory_mb = 0;
        sb->timeout_ms = 0;
        sb->concurrency = 1;
        sb->crash_fatal = false;
        sb->serves = false;
    }
    return r;
}

int sandbox_fork(struct sandbox *zygote, struct sandbox **out, sandbox_done_cb cb, void *data)
{
    *out = NULL;
    /* A backend whose specialized sandboxes serve (microVM) forks from any
     * of them: what is copied is the function's snapshot, not the VM. */
    bool can_fork = zygote->role == SANDBOX_ROLE_ZYGOTE ||
                    (zygote->ops->specialized_serves && zygote->role == SANDBOX_ROLE_INSTANCE);
    if (zygote->destroyed || zygote->failed || !can_fork)
        return -EINVAL;
    if (!sandbox__alive(zygote))
        return -ESRCH;
    if (!zygote->ops->fork)
        return -ENOTSUP;
    if (zygote->backend->closing)
        return -ESHUTDOWN;
    struct sandbox *child = sandbox_alloc(zygote->backend);
    if (!child)
        return -ENOMEM;
    child->role = SANDBOX_ROLE_INSTANCE;
    child->memory_mb = zygote->memory_mb;
    child->timeout_ms = zygote->timeout_ms;
    child->concurrency = zygote->concurrency;
    child->crash_fatal = zygote->crash_fatal;
    child->init_ns = zygote->init_ns;
    link_child(zygote, child);
    child->op = SANDBOX__OP_FORK;
    child->op_cb = cb;
    child->op_data = data;
    int r = zygote->ops->fork(zygote, child, on_op_done, NULL);
    if (r < 0) {
        discard(child);
        return r;
    }
    *out = child;
    return 0;
}

int sandbox_prefork(struct sandbox *zygote, uint32_t n)
{
    if (!zygote->ops->prefork)
        return -ENOTSUP;
    if (zygote->destroyed || zygote->failed || zygote->role != SANDBOX_ROLE_ZYGOTE ||
        zygote->op != SANDBOX__OP_NONE || n > 1)
        return -EINVAL;
    if (!sandbox__alive(zygote))
        return -ESRCH;
    return zygote->ops->prefork(zygote, n);
}

int sandbox_reset(struct sandbox *sb, sandbox_done_cb cb, void *data)
{
    if (!sb->ops->reset)
        return -ENOTSUP;
    if (sb->destroyed || sb->failed || sb->role != SANDBOX_ROLE_INSTANCE)
        return -EINVAL;
    if (sb->op != SANDBOX__OP_NONE || sb->n_calls > 0)
        return -EBUSY;
    if (!sandbox__alive(sb))
        return -ESRCH;
    sb->op = SANDBOX__OP_RESET;
    sb->op_cb = cb;
    sb->op_data = data;
    int r = sb->ops->reset(sb, on_op_done, NULL);
    if (r < 0) {
        sb->op = SANDBOX__OP_NONE;
        sb->op_cb = NULL;
    }
    return r;
}

int sandbox_invoke(struct sandbox *sb, const struct sandbox_call *call, sandbox_result_cb cb,
                   void *data)
{
    if (!sb->ops->invoke)
        return -ENOTSUP;
    return sb->ops->invoke(sb, call, cb, data);
}

int sandbox_stats(struct sandbox *sb, struct sandbox_stats *out)
{
    if (!sb->ops->stats)
        return -ENOTSUP;
    return sb->ops->stats(sb, out);
}

void sandbox_set_events(struct sandbox *sb, const struct sandbox_events *ev)
{
    if (ev)
        sb->events = *ev;
    else
        memset(&sb->events, 0, sizeof(sb->events));
}

void sandbox_destroy(struct sandbox *sb)
{
    if (!sb || sb->destroyed)
        return;
    log_debug("sandbox %" PRIu64 ": destroy", sb->id);
    sandbox__hold(sb);

    /* The owner hears about its calls once more, then never again (and a
     * destroy from inside those callbacks is a no-op). */
    sb->destroyed = true;
    memset(&sb->events, 0, sizeof(sb->events));
    sandbox__complete_calls(sb, SANDBOX_ERR_GONE, "sandbox destroyed");
    sandbox__fail_waits(sb, -ECANCELED);

    /* Instances of a zygote live on (or die with it, by the backend's
     * design); they only stop pointing at it. */
    struct sandbox *child;
    while ((child = LIST_FIRST(&sb->children))) {
        child->zygote_gone = true;
        unlink_child(child);
    }
    unlink_child(sb);

    sandbox__signal_kill(sb);
    sandbox__chan_close(sb);
    exit_timer_close(sb);
    /* A child of ours stays watched until it is reaped; anything else has
     * nothing left to tell. */
    if (!sb->direct_child || sb->exited)
        pid_close(sb);
    if (sb->ops->destroy)
        sb->ops->destroy(sb);
    sandbox__release(sb);
}

enum sandbox_role sandbox_role(const struct sandbox *sb)
{
    return sb->role;
}

enum sandbox_kind sandbox_kind_of(const struct sandbox *sb)
{
    return sb->kind;
}

pid_t sandbox_pid(const struct sandbox *sb)
{
    return sb->pid;
}

uint64_t sandbox_id(const struct sandbox *sb)
{
    return sb->id;
}

uint64_t sandbox_init_ns(const struct sandbox *sb)
{
    return sb->init_ns;
}

uint64_t sandbox_ahead_ns(const struct sandbox *sb)
{
    return sb->ahead_ns;
}

const char *sandbox_last_error(const struct sandbox *sb)
{
    return sb->last_error;
}

bool sandbox_backend_specialized_serves(const struct sandbox_backend *be)
{
    return be && be->ops->specialized_serves;
}
