/* test_sandbox.c - the generic sandbox core (sandbox.c, chan.c, steps.c)
 * with a fake backend.
 *
 * The fake backend's sandbox processes are real: children of the test
 * process that speak the protocol on a real socketpair with the blocking
 * helpers of proto.c, the way ember-agent does. A "stem" is forked by the
 * backend's create; specialize sends LOAD (with an fd); the fake zygote
 * forks instances on FORK, answers FORKED with a pidfd and reports its
 * children's deaths with EXITED. What an instance does with a call depends
 * on the call's path (see agent_invoke).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "common/cleanup.h"
#include "sandbox/proto.h"
#include "sandbox/sandbox.h"
#include "sandbox/sandbox_internal.h"

/* ---------------------------------------------------------------------- */
/* the fake sandbox process                                                */
/* ---------------------------------------------------------------------- */

enum agent_mode { AGENT_NORMAL, AGENT_MUTE, AGENT_EXIT7 };

static enum agent_mode agent_mode;    /* read by the next forked stem */
static volatile uint64_t *shared_oom; /* MAP_SHARED: the "cgroup" OOM counter */

static void agent_send(int chan, struct proto_buf *b, const int *fds, int n)
{
    proto_buf_finish(b);
    if (proto_send_frame(chan, b, fds, n) < 0)
        _exit(90);
    proto_buf_free(b);
}

static void agent_hello(int chan)
{
    char pid[16];
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    struct proto_pair p[2] = {{{"version", 7}, {"1", 1}},
                              {{"pid", 3}, {pid, (uint32_t)strlen(pid)}}};
    struct proto_buf b;
    proto_buf_init(&b);
    proto_buf_begin(&b, PROTO_HELLO, 0);
    proto_put_pairs(&b, p, 2);
    agent_send(chan, &b, NULL, 0);
}

static void agent_response(int chan, uint32_t id, uint32_t status, const char *hname,
                           const char *hval, const void *body, size_t len)
{
    struct proto_buf b;
    proto_buf_init(&b);
    proto_buf_begin(&b, PROTO_RESPONSE, id);
    proto_put_u32(&b, status);
    struct proto_pair h = {{hname, hname ? (uint32_t)strlen(hname) : 0},
                           {hval, hval ? (uint32_t)strlen(hval) : 0}};
    proto_put_pairs(&b, &h, hname ? 1 : 0);
    proto_put_bytes(&b, body, len);
    agent_send(chan, &b, NULL, 0);
}

static void agent_failed(int chan, uint32_t id, uint32_t reason, const char *msg)
{
    struct proto_buf b;
    proto_buf_init(&b);
    proto_buf_begin(&b, PROTO_FAILED, id);
    proto_put_u32(&b, reason);
    proto_put_bytes(&b, msg, strlen(msg));
    agent_send(chan, &b, NULL, 0);
}

static void die_by(int sig)
{
    struct sigaction sa = {.sa_handler = SIG_DFL};
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    kill(getpid(), sig);
    _exit(91);
}

static uint32_t held[8];
static int n_held;

static void agent_invoke(int chan, const struct proto_hdr *h, const uint8_t *payload)
{
    static struct proto_request req;
    if (proto_request_decode(payload, h->len, &req) < 0)
        _exit(92);
    char path[64];
    snprintf(path, sizeof(path), "%.*s", (int)req.path.len, req.path.p);
    char method[16];
    snprintf(method, sizeof(method), "%.*s", (int)req.method.len, req.method.p);

    if (strcmp(path, "/echo") == 0) {
        agent_response(chan, h->id, 200, "x-echo", method, req.body.p, req.body.len);
    } else if (strcmp(path, "/slow_echo") == 0) {
        usleep(5000);
        agent_response(chan, h->id, 200, "x-echo", method, req.body.p, req.body.len);
    } else if (strcmp(path, "/log") == 0) {
        struct proto_buf b;
        proto_buf_init(&b);
        proto_buf_begin(&b, PROTO_LOG, 0);
        proto_put_u32(&b, 1);
        proto_put_raw(&b, "hello log", 9);
        agent_send(chan, &b, NULL, 0);
        agent_response(chan, h->id, 204, NULL, NULL, "", 0);
    } else if (strcmp(path, "/dribble") == 0) {
        /* a LOG and the RESPONSE back to back, written a few bytes at a
         * time: frames and headers split across emberd's reads */
        struct proto_buf lb, rb;
        proto_buf_init(&lb);
        proto_buf_begin(&lb, PROTO_LOG, 0);
        proto_put_u32(&lb, 2);
        proto_put_raw(&lb, "dribbled", 8);
        proto_buf_finish(&lb);
        proto_buf_init(&rb);
        proto_buf_begin(&rb, PROTO_RESPONSE, h->id);
        proto_put_u32(&rb, 200);
        proto_put_pairs(&rb, NULL, 0);
        proto_put_bytes(&rb, "drop by drop", 12);
        proto_buf_finish(&rb);
        uint8_t both[256];
        memcpy(both, lb.data, lb.len);
        memcpy(both + lb.len, rb.data, rb.len);
        size_t total = lb.len + rb.len;
        for (size_t at = 0; at < total; at += 5) {
            size_t k = total - at < 5 ? total - at : 5;
            if (write(chan, both + at, k) != (ssize_t)k)
                _exit(94);
            usleep(300);
        }
        proto_buf_free(&lb);
        proto_buf_free(&rb);
    } else if (strcmp(path, "/big") == 0) {
        size_t n = 1u << 20;
        char *body = malloc(n);
        for (size_t i = 0; i < n; i++)
            body[i] = (char)('a' + i % 26);
        agent_response(chan, h->id, 200, NULL, NULL, body, n);
        free(body);
    } else if (strcmp(path, "/toolarge") == 0) {
        size_t n = SANDBOX_RESPONSE_MAX + 1;
        char *body = calloc(1, n);
        agent_response(chan, h->id, 200, NULL, NULL, body, n);
        free(body);
    } else if (strcmp(path, "/sleep") == 0) {
        /* never answers */
    } else if (strcmp(path, "/garbage") == 0) {
        struct proto_hdr g = {.type = 999, .id = h->id, .len = 4};
        if (write(chan, &g, sizeof(g)) < 0)
            _exit(93);
    } else if (strcmp(path, "/oversize") == 0) {
        struct proto_hdr g = {.type = PROTO_RESPONSE, .id = h->id, .len = PROTO_MAX_PAYLOAD + 1};
        if (write(chan, &g, sizeof(g)) < 0)
            _exit(93);
    } else if (strcmp(path, "/badpayload") == 0) {
        struct proto_buf b;
        proto_buf_init(&b);
        proto_buf_begin(&b, PROTO_RESPONSE, h->id);
        proto_put_raw(&b, "abc", 3);
        agent_send(chan, &b, NULL, 0);
    } else if (strcmp(path, "/badheader") == 0) {
        agent_response(chan, h->id, 200, "x-a", "1\r\nx-injected: 2", "", 0);
    } else if (strcmp(path, "/unknown_id") == 0) {
        agent_response(chan, h->id + 1000, 200, NULL, NULL, "", 0);
    } else if (strcmp(path, "/segv") == 0) {
        die_by(SIGSEGV);
    } else if (strcmp(path, "/crashframe") == 0) {
        agent_failed(chan, h->id, PROTO_FAIL_CRASH, "killed by signal 11 (SIGSEGV)");
        die_by(SIGSEGV);
    } else if (strcmp(path, "/exit3") == 0) {
        _exit(3);
    } else if (strcmp(path, "/oom") == 0) {
        (*shared_oom)++;
        die_by(SIGKILL);
    } else if (strcmp(path, "/handler_fail") == 0) {
        agent_failed(chan, h->id, PROTO_FAIL_HANDLER, "ember_handle returned 1");
    } else if (strcmp(path, "/hold") == 0) {
        held[n_held++] = h->id;
    } else if (strcmp(path, "/release") == 0) {
        /* answer the held calls newest first, then this one */
        char body[32];
        while (n_held > 0) {
            uint32_t id = held[--n_held];
            int n = snprintf(body, sizeof(body), "id:%u", id);
            agent_response(chan, id, 200, NULL, NULL, body, (size_t)n);
        }
        int n = snprintf(body, sizeof(body), "id:%u", h->id);
        agent_response(chan, h->id, 200, NULL, NULL, body, (size_t)n);
    } else {
        agent_response(chan, h->id, 404, NULL, NULL, "", 0);
    }
}

static void agent_load(int chan, const struct proto_hdr *h, const uint8_t *payload, int *fds,
                       int n_fds)
{
    static struct proto_pair pairs[PROTO_MAX_PAIRS];
    uint32_t n = 0;
    struct proto_reader r;
    proto_reader_init(&r, payload, h->len);
    if (proto_get_pairs(&r, pairs, PROTO_MAX_PAIRS, &n) < 0 || n_fds != 1)
        _exit(94);
    close(fds[0]);
    bool fail = false, env_ok = false;
    for (uint32_t i = 0; i < n; i++) {
        if (proto_str_eq(pairs[i].key, "handler") && proto_str_eq(pairs[i].value, "fail"))
            fail = true;
        if (proto_str_eq(pairs[i].key, "env.GREETING") && proto_str_eq(pairs[i].value, "hi"))
            env_ok = true;
    }
    const char *msg = fail ? "handler not found: fail" : env_ok ? "" : "env missing";
    struct proto_buf b;
    proto_buf_init(&b);
    proto_buf_begin(&b, PROTO_LOADED, h->id);
    proto_put_u32(&b, fail ? ENOENT : env_ok ? 0 : EINVAL);
    proto_put_bytes(&b, msg, strlen(msg));
    proto_put_u64(&b, 1234);
    agent_send(chan, &b, NULL, 0);
}

static void agent_main(int chan) __attribute__((noreturn));

static void agent_fork(int chan, int sfd, const struct proto_hdr *h, int *fds, int n_fds)
{
    if (n_fds != 1)
        _exit(95);
    pid_t pid = fork();
    if (pid == 0) {
        close(sfd);
        close(chan);
        agent_main(fds[0]);
    }
    close(fds[0]);
    int pidfd = (int)pidfd_open(pid, 0);
    struct proto_buf b;
    proto_buf_init(&b);
    proto_buf_begin(&b, PROTO_FORKED, h->id);
    proto_put_u32(&b, 0);
    proto_put_u32(&b, (uint32_t)pid);
    agent_send(chan, &b, &pidfd, 1);
    close(pidfd);
}

/* A sandbox process: HELLO, then serve frames until the channel closes;
 * report children's deaths (a zygote's job) from a signalfd. */
static void agent_main(int chan)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    n_held = 0;
    if (agent_mode == AGENT_EXIT7)
        _exit(7);
    if (agent_mode == AGENT_NORMAL)
        agent_hello(chan);
    for (;;) {
        struct pollfd p[2] = {{.fd = chan, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        if (poll(p, 2, -1) < 0)
            continue;
        if (p[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof(si)) < 0)
                _exit(96);
            int st;
            pid_t pid;
            while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
                struct proto_buf b;
                proto_buf_init(&b);
                proto_buf_begin(&b, PROTO_EXITED, 0);
                proto_put_u32(&b, (uint32_t)pid);
                proto_put_u32(&b, (uint32_t)st);
                agent_send(chan, &b, NULL, 0);
            }
        }
        if (p[0].revents) {
            struct proto_hdr h;
            uint8_t *payload = NULL;
            int fds[PROTO_MAX_FDS], n_fds = 0;
            if (proto_recv_frame(chan, &h, &payload, fds, &n_fds) < 0)
                _exit(0);
            switch (h.type) {
            case PROTO_LOAD:
                agent_load(chan, &h, payload, fds, n_fds);
                break;
            case PROTO_FORK:
                agent_fork(chan, sfd, &h, fds, n_fds);
                break;
            case PROTO_INVOKE:
                agent_invoke(chan, &h, payload);
                break;
            case PROTO_RESET: {
                struct proto_buf b;
                proto_buf_init(&b);
                proto_buf_begin(&b, PROTO_RESET_DONE, h.id);
                proto_put_u32(&b, 0);
                proto_put_u64(&b, 42);
                agent_send(chan, &b, NULL, 0);
                break;
            }
            default:
                _exit(97);
            }
            free(payload);
        }
    }
}

/* ---------------------------------------------------------------------- */
/* the fake backend                                                        */
/* ---------------------------------------------------------------------- */

static int backend_destroyed;
static int sandboxes_released;

struct fake_step {
    struct sandbox *sb;
    sandbox_done_cb cb;
    void *data;
    int chan;
};

static struct fake_step *step_new(struct sandbox *sb, sandbox_done_cb cb, void *data)
{
    struct fake_step *s = calloc(1, sizeof(*s));
    s->sb = sb;
    s->cb = cb;
    s->data = data;
    s->chan = -1;
    return s;
}

static void on_step(struct sandbox *sb, int status, void *data)
{
    struct fake_step *s = data;
    s->cb(sb, status, s->data);
    free(s);
}

static int fake_create(struct sandbox_backend *be, struct sandbox *sb, sandbox_done_cb cb,
                       void *data)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        close(sv[0]);
        agent_main(sv[1]);
    }
    close(sv[1]);
    int pidfd = (int)pidfd_open(pid, 0);
    cr_assert_geq(pidfd, 0);
    int r = sandbox__attach(sb, sv[0], pidfd, pid, SANDBOX__DIRECT_CHILD);
    cr_assert_eq(r, 0);
    struct fake_step *s = step_new(sb, cb, data);
    uint32_t timeout = agent_mode == AGENT_MUTE ? 300 : 5000;
    return sandbox__wait_hello(sb, timeout, on_step, s);
}

static int fake_specialize(struct sandbox *sb, const struct sandbox_spec *spec, sandbox_done_cb cb,
                           void *data)
{
    struct proto_buf b;
    proto_buf_init(&b);
    int r = sandbox__load_encode(&b, spec, NULL, 0);
    if (r < 0)
        return r;
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    struct fake_step *s = step_new(sb, cb, data);
    r = sandbox__load_send(sb, &b, &fd, 1, on_step, s);
    if (r < 0)
        free(s);
    return r;
}

static void on_fake_forked(struct sandbox *zygote, int status, int pidfd, pid_t ns_pid,
                           uint64_t ahead_ns, void *data)
{
    struct fake_step *s = data;
    struct sandbox *child = s->sb;
    if (status == 0 && !sandbox__destroyed(child)) {
        /* no pid namespace here: the pid inside is the host pid */
        int r = sandbox__attach(child, s->chan, pidfd, ns_pid, 0);
        s->chan = -1;
        if (r == 0)
            r = sandbox__wait_hello(child, 5000, on_step, s);
        if (r == 0) {
            sandbox__release(child);
            return;
        }
        status = r;
    } else if (pidfd >= 0) {
        pidfd_send_signal(pidfd, SIGKILL, NULL, 0);
        close(pidfd);
    }
    if (s->chan >= 0)
        close(s->chan);
    s->cb(child, status, s->data);
    free(s);
    sandbox__release(child);
}

static int fake_fork(struct sandbox *zygote, struct sandbox *child, sandbox_done_cb cb, void *data)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    struct fake_step *s = step_new(child, cb, data);
    s->chan = sv[0];
    int r = sandbox__fork_send(zygote, &sv[1], 1, on_fake_forked, s);
    if (r < 0) {
        close(sv[0]);
        free(s);
        return r;
    }
    sandbox__hold(child);
    return 0;
}

static int fake_reset(struct sandbox *sb, sandbox_done_cb cb, void *data)
{
    struct fake_step *s = step_new(sb, cb, data);
    int r = sandbox__reset_send(sb, on_step, s);
    if (r < 0)
        free(s);
    return r;
}

static int fake_stats(struct sandbox *sb, struct sandbox_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->oom_kills = *shared_oom;
    return 0;
}

/* Release like the container backend does: through the thread pool. */
static void work_release(void *ctx)
{
    usleep(1000);
}

static void after_release(struct sandbox *sb, void *ctx)
{
    sandboxes_released++;
}

static void fake_destroy(struct sandbox *sb)
{
    cr_assert_eq(sandbox__queue_work(sb, work_release, after_release, NULL), 0);
}

static void fake_backend_destroy(struct sandbox_backend *be)
{
    backend_destroyed++;
}

static const struct sandbox_ops fake_ops = {
    .name = "fake",
    .backend_destroy = fake_backend_destroy,
    .create = fake_create,
    .specialize = fake_specialize,
    .fork = fake_fork,
    .reset = fake_reset,
    .invoke = sandbox__invoke,
    .stats = fake_stats,
    .destroy = fake_destroy,
};

/* ---------------------------------------------------------------------- */
/* fixture and helpers                                                     */
/* ---------------------------------------------------------------------- */

static uv_loop_t loop;
static uv_timer_t tick;
static struct sandbox_backend *be;
static struct manifest manifest;
static struct manifest_env env[1];

static void on_tick(uv_timer_t *t)
{
}

static void setup(void)
{
    shared_oom = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(shared_oom, MAP_FAILED);
    *shared_oom = 0;
    agent_mode = AGENT_NORMAL;
    backend_destroyed = 0;
    sandboxes_released = 0;
    cr_assert_eq(uv_loop_init(&loop), 0);
    /* keeps uv_run(UV_RUN_ONCE) returning while the test waits */
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 10, 10);
    struct sandbox_config cfg = {.state_dir = "/tmp", .agent_path = "/bin/false"};
    struct ember_error err = {0};
    cr_assert_eq(sandbox__backend_open(&fake_ops, SANDBOX_CONTAINER, &loop, &cfg, &be, &err), 0,
                 "%s", err.msg);
    cr_assert_eq(be->cfg.pids_max, 64, "zero knobs get their defaults");

    env[0].key = (char *)"GREETING";
    env[0].value = (char *)"hi";
    memset(&manifest, 0, sizeof(manifest));
    manifest.runtime = MANIFEST_RUNTIME_NATIVE;
    snprintf(manifest.handler, sizeof(manifest.handler), "hello.so");
    manifest.memory_mb = 128;
    manifest.timeout_ms = 5000;
    manifest.concurrency = 1;
    manifest.n_env = 1;
    manifest.env = env;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        fprintf(stderr, "open handle: type %d\n", (int)h->type);
}

/* Every sandbox must be destroyed by the test first. */
static void teardown(void)
{
    sandbox_backend_close(be);
    uv_close((uv_handle_t *)&tick, NULL);
    /* Direct children are reaped through their pidfd; the release jobs run
     * on the pool: the loop ends when all of it is done. */
    int r = uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(r, 0);
    uv_walk(&loop, close_walk, NULL);
    cr_assert_eq(uv_loop_close(&loop), 0, "loop closes clean");
    cr_assert_eq(backend_destroyed, 1, "the backend is finished after its sandboxes");
    munmap((void *)shared_oom, 4096);
}

static bool spin(const int *counter, int want, int timeout_ms)
{
    uint64_t end = uv_now(&loop) + (uint64_t)timeout_ms;
    while (*counter < want) {
        uv_run(&loop, UV_RUN_ONCE);
        uv_update_time(&loop);
        if (uv_now(&loop) > end)
            return false;
    }
    return true;
}

/* Let the loop run for @ms regardless. */
static void settle(int ms)
{
    uint64_t end = uv_now(&loop) + (uint64_t)ms;
    while (uv_now(&loop) < end) {
        uv_run(&loop, UV_RUN_ONCE);
        uv_update_time(&loop);
    }
}

struct done_rec {
    int count;
    int status;
};

static void on_done(struct sandbox *sb, int status, void *data)
{
    struct done_rec *d = data;
    d->count++;
    d->status = status;
}

struct exit_rec {
    int count;
    char why[256];
};

static void on_exit_ev(struct sandbox *sb, const char *why, void *data)
{
    struct exit_rec *e = data;
    e->count++;
    snprintf(e->why, sizeof(e->why), "%s", why);
}

struct log_rec {
    int count;
    int stream;
    char line[64];
};

static struct log_rec logs;

static void on_log_ev(struct sandbox *sb, int stream, const char *line, size_t len, void *data)
{
    logs.count++;
    logs.stream = stream;
    snprintf(logs.line, sizeof(logs.line), "%.*s", (int)len, line);
}

static struct sandbox *make_zygote(void)
{
    struct sandbox *sb;
    struct done_rec d = {0};
    cr_assert_eq(sandbox_create(be, &sb, on_done, &d), 0);
    cr_assert_eq(sandbox_role(sb), SANDBOX_ROLE_STEM);
    cr_assert(spin(&d.count, 1, 5000));
    cr_assert_eq(d.status, 0, "create: %s", sandbox_last_error(sb));
    cr_assert_gt(sandbox_pid(sb), 0);

    struct sandbox_spec spec = {.function = "fn",
                                .version = "v1",
                                .package_dir = "/tmp",
                                .snapshot_dir = "/tmp",
                                .manifest = &manifest};
    d.count = 0;
    cr_assert_eq(sandbox_specialize(sb, &spec, on_done, &d), 0);
    cr_assert(spin(&d.count, 1, 5000));
    cr_assert_eq(d.status, 0, "specialize: %s", sandbox_last_error(sb));
    cr_assert_eq(sandbox_role(sb), SANDBOX_ROLE_ZYGOTE);
    cr_assert_eq(sandbox_init_ns(sb), 1234);
    return sb;
}

static struct sandbox *make_instance(struct sandbox *zygote, struct exit_rec *ex)
{
    struct sandbox *sb;
    struct done_rec d = {0};
    cr_assert_eq(sandbox_fork(zygote, &sb, on_done, &d), 0);
    cr_assert(spin(&d.count, 1, 5000));
    cr_assert_eq(d.status, 0, "fork: %s", sandbox_last_error(sb));
    cr_assert_eq(sandbox_role(sb), SANDBOX_ROLE_INSTANCE);
    cr_assert_neq(sandbox_pid(sb), sandbox_pid(zygote));
    struct sandbox_events ev = {.on_exit = on_exit_ev, .on_log = on_log_ev, .data = ex};
    sandbox_set_events(sb, &ev);
    return sb;
}

struct result_rec {
    int count;
    uint32_t call_id;
    enum sandbox_error error;
    char detail[256];
    int status;
    char header[64];
    size_t body_len;
    char body[64];
    uint64_t run_ns, pending_ns;
    bool unstarted;
};

static void on_result(struct sandbox *sb, const struct sandbox_result *res, void *data)
{
    struct result_rec *r = data;
    r->count++;
    r->error = res->error;
    snprintf(r->detail, sizeof(r->detail), "%s", res->detail);
    r->status = res->status;
    r->header[0] = '\0';
    if (res->n_headers > 0)
        snprintf(r->header, sizeof(r->header), "%.*s=%.*s", (int)res->headers[0].name_len,
                 res->headers[0].name, (int)res->headers[0].value_len, res->headers[0].value);
    r->body_len = res->body_len;
    snprintf(r->body, sizeof(r->body), "%.*s", (int)(res->body_len < 63 ? res->body_len : 63),
             (const char *)res->body);
    r->run_ns = res->run_ns;
    r->unstarted = res->unstarted;
    r->pending_ns = res->pending_ns;
}

static int invoke(struct sandbox *sb, uint32_t id, const char *path, uint32_t timeout_ms,
                  struct result_rec *r)
{
    static const struct sandbox_header h[] = {{"content-type", 12, "text/plain", 10}};
    struct sandbox_call call = {.id = id,
                                .method = "POST",
                                .path = path,
                                .query = "a=1",
                                .headers = h,
                                .n_headers = 1,
                                .body = "ping",
                                .body_len = 4,
                                .timeout_ms = timeout_ms};
    r->call_id = id;
    return sandbox_invoke(sb, &call, on_result, r);
}

TestSuite(sandbox, .init = setup, .fini = teardown, .timeout = 60);

/* ---------------------------------------------------------------------- */

Test(sandbox, invoke_round_trip_and_log)
{
    struct sandbox *z = make_zygote();
    struct exit_rec ex = {0};
    struct sandbox *in = make_instance(z, &ex);

    struct result_rec r = {0};
    cr_assert_eq(invoke(in, 1, "/echo", 0, &r), 0);
    cr_assert(spin(&r.count, 1, 5000));
    cr_assert_eq(r.error, SANDBOX_OK, "%s", r.detail);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.header, "x-echo=POST");
    cr_assert_str_eq(r.body, "ping");
    cr_assert_gt(r.run_ns, 0);

    memset(&logs, 0, sizeof(logs));
    struct result_rec r2 = {0};
    cr_assert_eq(invoke(in, 2, "/log", 0, &r2), 0);
    cr_assert(spin(&r2.count, 1, 5000));
    cr_assert_eq(r2.status, 204);
    cr_assert_eq(logs.count, 1);
    cr_assert_eq(logs.stream, 1);
    cr_assert_str_eq(logs.line, "hello log");

    /* frames that arrive in pieces, two in a row */
    memset(&logs, 0, sizeof(logs));
    struct result_rec rd = {0};
    cr_assert_eq(invoke(in, 4, "/dribble", 0, &rd), 0);
    cr_assert(spin(&rd.count, 1, 5000));
    cr_assert_eq(rd.error, SANDBOX_OK, "%s", rd.detail);
    cr_assert_str_eq(rd.body, "drop by drop");
    cr_assert_eq(logs.count, 1);
    cr_assert_str_eq(logs.line, "dribbled");

    /* a 404 of the function is a result, not an error */
    struct result_rec r3 = {0};
    cr_assert_eq(invoke(in, 3, "/nothing", 0, &r3), 0);
    cr_assert(spin(&r3.count, 1, 5000));
    cr_assert_eq(r3.error, SANDBOX_OK);
    cr_assert_eq(r3.status, 404);

    /* a zygote serves no calls, a stem neither */
    struct result_rec rz = {0};
    cr_assert_eq(invoke(z, 9, "/echo", 0, &rz), -EINVAL);

    sandbox_destroy(in);
    sandbox_destroy(z);
    cr_assert_eq(ex.count, 0, "no on_exit for a destroyed sandbox");
}

Test(sandbox, large_request_and_response)
{
    struct sandbox *z = make_zygote();
    struct exit_rec ex = {0};
    struct sandbox *in = make_instance(z, &ex);

    /* 4 MiB in: more than the socket buffer, written in pieces */
    size_t n = 4u << 20;
    char *body = malloc(n);
    memset(body, 'x', n);
    struct result_rec r = {0};
    struct sandbox_call call = {
        .id = 5, .method = "PUT", .path = "/echo", .body = body, .body_len = n};
    cr_assert_eq(sandbox_invoke(in, &call, on_result, &r), 0);
    free(body); /* copied by sandbox_invoke */
    cr_assert(spin(&r.count, 1, 10000));
    cr_assert_eq(r.error, SANDBOX_OK, "%s", r.detail);
    cr_assert_eq(r.body_len, n);

    /* calls sent ahead, queued together: one sendmsg carries several
     * frames, and the socket takes them a piece at a time */
    struct result_rec many[1 + SANDBOX_PIPELINE_DEPTH] = {0};
    size_t sizes[] = {300000, 17, 250001, 1, 200003};
    char *bodies[1 + SANDBOX_PIPELINE_DEPTH];
    for (uint32_t i = 0; i <= SANDBOX_PIPELINE_DEPTH; i++) {
        size_t len = sizes[i % 5];
        bodies[i] = malloc(len);
        memset(bodies[i], 'a' + (int)i, len);
        struct sandbox_call c = {
            .id = 10 + i, .method = "PUT", .path = "/echo", .body = bodies[i], .body_len = len};
        cr_assert_eq(sandbox_invoke(in, &c, on_result, &many[i]), 0);
    }
    struct result_rec over = {0};
    cr_assert_eq(invoke(in, 9, "/echo", 0, &over), -EBUSY,
                 "one running and SANDBOX_PIPELINE_DEPTH ahead at most");
    for (uint32_t i = 0; i <= SANDBOX_PIPELINE_DEPTH; i++) {
        cr_assert(spin(&many[i].count, 1, 10000));
        cr_assert_eq(many[i].error, SANDBOX_OK, "call %u: %s", i, many[i].detail);
        cr_assert_eq(many[i].body_len, sizes[i % 5], "call %u", i);
        cr_assert_eq(many[i].body[0], 'a' + (int)i, "call %u got another's body", i);
        free(bodies[i]);
    }

    struct result_rec r2 = {0};
    cr_assert_eq(invoke(in, 6, "/big", 0, &r2), 0);
    cr_assert(spin(&r2.count, 1, 10000));
    cr_assert_eq(r2.error, SANDBOX_OK, "%s", r2.detail);
    cr_assert_eq(r2.body_len, 1u << 20);
    cr_assert_eq(strncmp(r2.body, "abcdef", 6), 0);

    sandbox_destroy(in);
    sandbox_destroy(z);
}

Test(sandbox, timeout_kills_and_reports)
{
    struct sandbox *z = make_zygote();
    struct exit_rec ex = {0};
    struct sandbox *in = make_instance(z, &ex);

    struct result_rec r = {0};
    cr_assert_eq(invoke(in, 1, "/sleep", 100, &r), 0);
    cr_assert(spin(&r.count, 1, 5000));
    cr_assert_eq(r.error, SANDBOX_ERR_TIMEOUT);
    cr_assert_str_eq(r.detail, "timed out after 100 ms");
    cr_assert_eq(sandbox_error_http_status(r.error), 504);
    /* the process was killed: on_exit follows once the pidfd says so */
    cr_assert(spin(&ex.count, 1, 5000));
    cr_assert_str_eq(ex.why, "timed out after 100 ms");
    cr_assert_str_eq(sandbox_last_error(in), "timed out after 100 ms");

    struct result_rec r2 = {0};
    cr_assert_eq(invoke(in, 2, "/echo", 0, &r2), -ESRCH, "a dead sandbox refuses calls");

    sandbox_destroy(in);
    settle(50);
    cr_assert_eq(ex.count, 1, "on_exit once");
    cr_assert_eq(r.count, 1, "the result once");
    sandbox_destroy(z);
}

Test(sandbox, garbage_frame_kills_only_that_sandbox)
{
    struct sandbox *z = make_zygote();
    struct exit_rec ex1 = {0}, ex2 = {0};
    struct sandbox *a = make_instance(z, &ex1);
    struct sandbox *b = make_instance(z, &ex2);

    struct result_rec r = {0};
    cr_assert_eq(invoke(a, 1, "/garbage", 0, &r), 0);
    cr_assert(spin(&r.count, 1, 5000));
    cr_assert_eq(r.error, SANDBOX_ERR_BAD_OUTPUT);
    cr_assert(strncmp(r.detail, "bad frame from sandbox: ", 24) == 0, "%s", r.detail);
    cr_assert(strstr(r.detail, "unknown type 999"), "%s", r.detail);
    cr_assert_eq(sandbox_error_http_status(r.error), 502);
    cr_assert(spin(&ex1.count, 1, 5000));
    cr_assert(strncmp(ex1.why, "bad frame from sandbox", 22) == 0, "%s", ex1.why);

    /* the other instance and the zygote are untouched */
    struct result_rec r2 = {0};
    cr_assert_eq(invoke(b, 2, "/echo", 0, &r2), 0);
    cr_assert(spin(&r2.count, 1, 5000));
    cr_assert_eq(r2.error, SANDBOX_OK);
    cr_assert_eq(ex2.count, 0);
    struct sandbox *c = make_instance(z, &ex2);

    sandbox_destroy(a);
    sandbox_destroy(b);
    sandbox_destroy(c);
    sandbox_destroy(z);
}

Test(sandbox, oversize_length_kills)
{
    struct sandbox *z = make_zygote();
    struct exit_rec ex = {0};
    struct sandbox *in = make_instance(z, &ex);
    struct result_rec r = {0};
    cr_assert_eq(invoke(in, 1, "/oversize", 0, &r), 0);
    cr_assert(spin(&r.count, 1, 5000));
    cr_assert_eq(r.error, SANDBOX_ERR_BAD_OUTPUT);
    cr_assert(strstr(r.detail, "over the limit"), "%s", r.detail);
    cr_assert(spin(&ex.count, 1, 5000));
    sandbox_destroy(in);
    sandbox_destroy(z);
}

Test(sandbox, payloads_that_fail_to_decode_kill)
{
    static const char *const paths[] = {"/badpayload", "/badheader", "/unknown_id"};
    static const char *const expect[] = {"RESPONSE does not decode", "not a valid HTTP header",
                                         "not in flight"};
    struct sandbox *z = make_zygote();
    for (size_t i = 0; i < ARRAY_SIZE(paths); i++) {
        struct exit_rec ex = {0};
        struct sandbox *in = make_instance(z, &ex);
        struct result_rec r = {0};
        cr_assert_eq(invoke(in, 1, paths[i], 0, &r), 0);
        cr_assert(spin(&r.count, 1, 5000));
        cr_assert_eq(r.error, SANDBOX_ERR_BAD_OUTPUT, "%s", paths[i]);
        cr_assert(strstr(r.detail, expect[i]), "%s: %s", paths[i], r.detail);
        cr_assert(spin(&ex.count, 1, 5000));
        sandbox_destroy(in);
    }
    sandbox_destroy(z);
}

Test(sandbox, death_mid_call_reports_the_signal)
{
    struct sandbox *z = make_zygote();
    struct exit_rec ex = {0};
    struct sandbox *in = make_instance(z, &ex);
    /* No crash frame: the instance is not our child, so the signal comes
     * from the zygote's EXITED. */
    struct result_rec r = {0};
    cr_assert_eq(invoke(in, 1, "/segv", 0, &r), 0);
    cr_assert(spin(&r.count, 1, 5000));
    cr_assert_eq(r.error, SANDBOX_ERR_CRASH);
    cr_assert_str_eq(r.detail, "killed by signal 11 (SIGSEGV)");
    cr_assert(spin(&ex.count, 1, 5000));
    cr_assert_str_eq(ex.why, "killed by signal 11 (SIGSEGV)");
    sandbox_destroy(in);

    struct sandbox *in2 = make_instance(z, &ex);
    struct result_rec r2 = {0};
    cr_assert_eq(invoke(in2, 1, "/exit3", 0, &r2), 0);
    cr_assert(spin(&r2.count, 1, 5000));
    cr_assert_eq(r2.error, SANDBOX_ERR_CRASH);
    cr_assert_str_eq(r2.detail, "exited with status 3");
    sandbox_destroy(in2);
    sandbox_destroy(z);
}

Test(sandbox, crash_frame_and_oom)
{
    struct sandbox *z = make_zygote();
    struct exit_rec ex = {0};
    struct sandbox *in = make_instance(z, &ex);
    struct result_rec r = {0};
    cr_assert_eq(invoke(in, 1, "/crashframe", 0, &r), 0);
    cr_assert(spin(&r.count, 1, 5000));
    cr_assert_eq(r.error, SANDBOX_ERR_CRASH);
    cr_assert_str_eq(r.detail, "killed by signal 11 (SIGSEGV)");
    cr_assert(spin(&ex.count, 1, 5000));
    sandbox_destroy(in);

    /* the OOM counter moved: that explains the death, not the signal */
    struct exit_rec ex2 = {0};
    struct sandbox *in2 = make_instance(z, &ex2);
    struct result_rec r2 = {0};
    cr_assert_eq(invoke(in2, 1, "/oom", 0, &r2), 0);
    cr_assert(spin(&r2.count, 1, 5000));
    cr_assert_eq(r2.error, SANDBOX_ERR_OOM);
    cr_assert_str_eq(r2.detail, "out of memory");
    cr_assert(spin(&ex2.count, 1, 5000));
    cr_assert_str_eq(ex2.why, "out of memory");
    sandbox_destroy(in2);

    struct exit_rec ex3 = {0};
    struct sandbox *in3 = make_instance(z, &ex3);
    struct result_rec r3 = {0};
    cr_assert_eq(invoke(in3, 1, "/handler_fail", 0, &r3), 0);
    cr_assert(spin(&r3.count, 1, 5000));
    cr_assert_eq(r3.error, SANDBOX_ERR_HANDLER);
    cr_assert_str_eq(r3.detail, "ember_handle returned 1");
    /* a handler failure costs the call, not the instance */
    struct result_rec r4 = {0};
    cr_assert_eq(invoke(in3, 2, "/echo", 0, &r4), 0);
    cr_assert(spin(&r4.count, 1, 5000));
    cr_assert_eq(r4.error, SANDBOX_OK);
    cr_assert_eq(ex3.count, 0);
    sandbox_destroy(in3);
    sandbox_destroy(z);
}

/* A call sent ahead waits behind the running one: its timeout starts
 * when it does, and if the instance dies first it comes back unstarted. */
Test(sandbox, calls_sent_ahead)
{
    struct sandbox *z = make_zygote();
    struct exit_rec ex = {0};

    /* the fake agent answers the held call 1, then call 2; each starts
     * when the one before it answers */
    struct sandbox *in = make_instance(z, &ex);
    struct result_rec a = {0}, b = {0}, c = {0};
    cr_assert_eq(invoke(in, 1, "/hold", 0, &a), 0);
    cr_assert_eq(invoke(in, 2, "/release", 0, &b), 0, "sent ahead");
    cr_assert(spin(&b.count, 1, 5000));
    cr_assert_eq(a.count, 1);
    cr_assert_str_eq(a.body, "id:1");
    cr_assert_str_eq(b.body, "id:2");
    cr_assert_eq(b.error, SANDBOX_OK);
    cr_assert_not(b.unstarted);
    cr_assert_gt(b.pending_ns, 0, "it waited behind call 1");

    /* a 20 ms timeout that has not started cannot fire: the running call's
     * 100 ms one does, and the waiting call comes back unstarted */
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    cr_assert_eq(invoke(in, 4, "/sleep", 100, &a), 0);
    cr_assert_eq(invoke(in, 5, "/hold", 20, &b), 0);
    cr_assert(spin(&b.count, 1, 5000));
    cr_assert_eq(a.count, 1);
    cr_assert_eq(a.error, SANDBOX_ERR_TIMEOUT);
    cr_assert_str_eq(a.detail, "timed out after 100 ms");
    cr_assert_not(a.unstarted);
    cr_assert(b.unstarted, "%s", b.detail);
    cr_assert_eq(invoke(in, 6, "/echo", 0, &c), -ESRCH);
    sandbox_destroy(in);

    /* a native call's crash frame: the instance is dying, so what waits
     * behind the call comes back at once */
    in = make_instance(z, &ex);
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    cr_assert_eq(invoke(in, 1, "/crashframe", 0, &a), 0);
    cr_assert_eq(invoke(in, 2, "/echo", 0, &b), 0);
    cr_assert(spin(&b.count, 1, 5000));
    cr_assert_eq(a.error, SANDBOX_ERR_CRASH);
    cr_assert(b.unstarted);
    cr_assert_eq(b.error, SANDBOX_ERR_GONE);
    sandbox_destroy(in);
    sandbox_destroy(z);
}

/* Timers run before the loop reads: an answer already in the channel when
 * the call's timer fires is read first, and the call succeeds. */
Test(sandbox, an_answer_waiting_when_the_timer_fires_wins)
{
    struct sandbox *z = make_zygote();
    struct exit_rec ex = {0};
    struct sandbox *in = make_instance(z, &ex);
    struct result_rec r = {0};
    cr_assert_eq(invoke(in, 1, "/slow_echo", 20, &r), 0);
    uv_run(&loop, UV_RUN_NOWAIT); /* the INVOKE goes out */
    usleep(60000);                /* answered after 5 ms; the loop has not run */
    cr_assert(spin(&r.count, 1, 5000));
    cr_assert_eq(r.error, SANDBOX_OK, "%s", r.detail);
    memset(&r, 0, sizeof(r));
    cr_assert_eq(invoke(in, 2, "/echo", 0, &r), 0, "the instance lives");
    cr_assert(spin(&r.count, 1, 5000));
    cr_assert_eq(r.error, SANDBOX_OK);
    cr_assert_eq(ex.count, 0);
    sandbox_destroy(in);
    sandbox_destroy(z);
}

Test(sandbox, destroy_with_pending_call_is_gone)
{
    struct sandbox *z = make_zygote();
    struct exit_rec ex = {0};
    struct sandbox *in = make_instance(z, &ex);
    struct result_rec r = {0};
    cr_assert_eq(invoke(in, 1, "/sleep", 0, &r), 0);
    settle(20);
    sandbox_destroy(in);
    cr_assert_eq(r.count, 1, "completed inside destroy");
    cr_assert_eq(r.error, SANDBOX_ERR_GONE);
    cr_assert_eq(sandbox_error_http_status(r.error), 503);
    settle(100);
    cr_assert_eq(r.count, 1);
    cr_assert_eq(ex.count, 0, "no callback after destroy");
    sandbox_destroy(z);
}

Test(sandbox, destroy_while_starting)
{
    struct sandbox *sb;
    struct done_rec d = {0};
    cr_assert_eq(sandbox_create(be, &sb, on_done, &d), 0);
    sandbox_destroy(sb);
    settle(100);
    cr_assert_eq(d.count, 0, "no callback after destroy");

    struct sandbox *z = make_zygote();
    struct sandbox *in;
    cr_assert_eq(sandbox_fork(z, &in, on_done, &d), 0);
    sandbox_destroy(in);
    settle(100);
    cr_assert_eq(d.count, 0);
    sandbox_destroy(z);
}

Test(sandbox, concurrent_calls_match_by_id)
{
    manifest.concurrency = 3;
    struct sandbox *z = make_zygote();
    struct exit_rec ex = {0};
    struct sandbox *in = make_instance(z, &ex);

    struct result_rec r1 = {0}, r2 = {0}, r3 = {0}, r4 = {0};
    cr_assert_eq(invoke(in, 11, "/hold", 0, &r1), 0);
    cr_assert_eq(invoke(in, 11, "/hold", 0, &r4), -EEXIST, "ids are unique in flight");
    cr_assert_eq(invoke(in, 12, "/hold", 0, &r2), 0);
    cr_assert_eq(invoke(in, 13, "/release", 0, &r3), 0);
    cr_assert_eq(invoke(in, 14, "/echo", 0, &r4), -EBUSY,
                 "over the manifest's concurrency (nothing is sent ahead above 1)");
    cr_assert(spin(&r1.count, 1, 5000));
    cr_assert(spin(&r3.count, 1, 5000));
    cr_assert(spin(&r2.count, 1, 5000));
    cr_assert_str_eq(r1.body, "id:11");
    cr_assert_str_eq(r2.body, "id:12");
    cr_assert_str_eq(r3.body, "id:13");
    cr_assert_eq(invoke(in, 14, "/echo", 0, &r4), 0);
    cr_assert(spin(&r4.count, 1, 5000));

    /* a timeout with calls in flight fails all of them */
    struct result_rec t1 = {0}, t2 = {0};
    cr_assert_eq(invoke(in, 21, "/hold", 0, &t1), 0);
    cr_assert_eq(invoke(in, 22, "/sleep", 50, &t2), 0);
    cr_assert(spin(&t2.count, 1, 5000));
    cr_assert(spin(&t1.count, 1, 5000));
    cr_assert_eq(t1.error, SANDBOX_ERR_TIMEOUT);
    cr_assert_eq(t2.error, SANDBOX_ERR_TIMEOUT);
    sandbox_destroy(in);
    sandbox_destroy(z);
}

Test(sandbox, specialize_failure_reports_the_message)
{
    snprintf(manifest.handler, sizeof(manifest.handler), "fail");
    struct sandbox *sb;
    struct done_rec d = {0};
    cr_assert_eq(sandbox_create(be, &sb, on_done, &d), 0);
    cr_assert(spin(&d.count, 1, 5000));
    struct sandbox_spec spec = {
        .function = "fn", .version = "v1", .package_dir = "/tmp", .manifest = &manifest};
    d.count = 0;
    cr_assert_eq(sandbox_specialize(sb, &spec, on_done, &d), 0);
    cr_assert_eq(sandbox_specialize(sb, &spec, on_done, &d), -EBUSY);
    cr_assert(spin(&d.count, 1, 5000));
    cr_assert_eq(d.status, -ENOENT);
    cr_assert(strstr(sandbox_last_error(sb), "handler not found: fail"), "%s",
              sandbox_last_error(sb));
    cr_assert_eq(sandbox_role(sb), SANDBOX_ROLE_STEM);
    /* never back to being a usable stem cell */
    cr_assert_eq(sandbox_specialize(sb, &spec, on_done, &d), -EINVAL);
    sandbox_destroy(sb);
}

Test(sandbox, no_hello_times_out)
{
    agent_mode = AGENT_MUTE;
    struct sandbox *sb;
    struct done_rec d = {0};
    struct exit_rec ex = {0};
    cr_assert_eq(sandbox_create(be, &sb, on_done, &d), 0);
    struct sandbox_events ev = {.on_exit = on_exit_ev, .data = &ex};
    sandbox_set_events(sb, &ev);
    cr_assert(spin(&d.count, 1, 5000));
    cr_assert_eq(d.status, -ETIMEDOUT);
    cr_assert(spin(&ex.count, 1, 5000));
    cr_assert_str_eq(ex.why, "no HELLO from the sandbox after 300 ms");
    sandbox_destroy(sb);
}

Test(sandbox, zygote_killed_from_outside)
{
    struct sandbox *z = make_zygote();
    struct exit_rec ex = {0};
    struct sandbox_events ev = {.on_exit = on_exit_ev, .data = &ex};
    sandbox_set_events(z, &ev);
    cr_assert_eq(kill(sandbox_pid(z), SIGTERM), 0);
    cr_assert(spin(&ex.count, 1, 5000));
    /* a direct child: the status comes from waitid */
    cr_assert_str_eq(ex.why, "killed by signal 15 (SIGTERM)");
    struct sandbox *in;
    struct done_rec d = {0};
    cr_assert_eq(sandbox_fork(z, &in, on_done, &d), -ESRCH);
    sandbox_destroy(z);
}

Test(sandbox, names_and_statuses)
{
    enum sandbox_kind k;
    cr_assert_eq(sandbox_kind_parse("container", &k), 0);
    cr_assert_eq(k, SANDBOX_CONTAINER);
    cr_assert_eq(sandbox_kind_parse("microvm", &k), 0);
    cr_assert_eq(k, SANDBOX_MICROVM);
    cr_assert_eq(sandbox_kind_parse("vm", &k), -EINVAL);
    cr_assert_eq(sandbox_kind_parse(NULL, &k), -EINVAL);
    cr_assert_str_eq(sandbox_kind_name(SANDBOX_MICROVM), "microvm");
    cr_assert_eq(sandbox_error_http_status(SANDBOX_ERR_TIMEOUT), 504);
    cr_assert_eq(sandbox_error_http_status(SANDBOX_ERR_OOM), 502);
    cr_assert_eq(sandbox_error_http_status(SANDBOX_ERR_TOO_LARGE), 502);
    cr_assert_eq(sandbox_error_http_status(SANDBOX_ERR_GONE), 503);
    cr_assert_eq(sandbox_error_http_status(SANDBOX_ERR_INTERNAL), 500);
    cr_assert_str_eq(sandbox_error_name(SANDBOX_ERR_BAD_OUTPUT), "bad_output");
    char buf[64];
    sandbox__describe_status(3 << 8, buf, sizeof(buf));
    cr_assert_str_eq(buf, "exited with status 3");
    sandbox__describe_status(SIGKILL, buf, sizeof(buf));
    cr_assert_str_eq(buf, "killed by signal 9 (SIGKILL)");
}

Test(sandbox, stem_that_exits_before_hello)
{
    agent_mode = AGENT_EXIT7;
    struct sandbox *sb;
    struct done_rec d = {0};
    struct exit_rec ex = {0};
    cr_assert_eq(sandbox_create(be, &sb, on_done, &d), 0);
    struct sandbox_events ev = {.on_exit = on_exit_ev, .data = &ex};
    sandbox_set_events(sb, &ev);
    cr_assert(spin(&d.count, 1, 5000));
    cr_assert_eq(d.status, -ECHILD);
    cr_assert_str_eq(sandbox_last_error(sb), "exited with status 7");
    cr_assert(spin(&ex.count, 1, 5000));
    cr_assert_str_eq(ex.why, "exited with status 7");
    sandbox_destroy(sb);
}

Test(sandbox, too_large_response_costs_only_the_call)
{
    struct sandbox *z = make_zygote();
    struct exit_rec ex = {0};
    struct sandbox *in = make_instance(z, &ex);
    struct result_rec r = {0};
    cr_assert_eq(invoke(in, 1, "/toolarge", 0, &r), 0);
    cr_assert(spin(&r.count, 1, 10000));
    cr_assert_eq(r.error, SANDBOX_ERR_TOO_LARGE);
    struct result_rec r2 = {0};
    cr_assert_eq(invoke(in, 2, "/echo", 0, &r2), 0);
    cr_assert(spin(&r2.count, 1, 5000));
    cr_assert_eq(r2.error, SANDBOX_OK);
    cr_assert_eq(ex.count, 0);
    sandbox_destroy(in);
    sandbox_destroy(z);
}

Test(sandbox, concurrent_forks_match_by_tag)
{
    struct sandbox *z = make_zygote();
    struct sandbox *in[4];
    struct done_rec d = {0};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(sandbox_fork(z, &in[i], on_done, &d), 0);
    cr_assert(spin(&d.count, 4, 10000));
    cr_assert_eq(d.status, 0);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(sandbox_role(in[i]), SANDBOX_ROLE_INSTANCE);
        for (int j = 0; j < i; j++)
            cr_assert_neq(sandbox_pid(in[i]), sandbox_pid(in[j]));
        struct result_rec r = {0};
        cr_assert_eq(invoke(in[i], 1, "/echo", 0, &r), 0);
        cr_assert(spin(&r.count, 1, 5000));
        cr_assert_eq(r.error, SANDBOX_OK);
    }
    /* the zygote dies: its instances stay ours to destroy */
    sandbox_destroy(z);
    for (int i = 0; i < 4; i++)
        sandbox_destroy(in[i]);
}

Test(sandbox, reset_round_trip)
{
    struct sandbox *z = make_zygote();
    struct exit_rec ex = {0};
    struct sandbox *in = make_instance(z, &ex);
    struct done_rec d = {0};
    cr_assert_eq(sandbox_reset(z, on_done, &d), -EINVAL, "only an instance resets");
    cr_assert_eq(sandbox_reset(in, on_done, &d), 0);
    struct result_rec r = {0};
    cr_assert_eq(invoke(in, 1, "/echo", 0, &r), -EBUSY, "no call while resetting");
    cr_assert(spin(&d.count, 1, 5000));
    cr_assert_eq(d.status, 0);
    cr_assert_eq(invoke(in, 1, "/echo", 0, &r), 0);
    cr_assert(spin(&r.count, 1, 5000));
    cr_assert_eq(r.error, SANDBOX_OK);
    sandbox_destroy(in);
    sandbox_destroy(z);
}
