/* test_container_backend.c - the container ops with real sandboxes: a stem
 * cell spawned by container_spawn running the real ember-agent, specialized
 * with an exec handler written by the test, an instance forked from that
 * zygote, calls through it, and a clean teardown (cgroups removed, loop
 * closed). Skips with the reason when the host or the build cannot do it
 * (not root, no ember-agent built, no user namespaces or cgroups).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "common/cleanup.h"
#include "sandbox/sandbox.h"

static uv_loop_t loop;
static uv_timer_t tick;
static struct sandbox_backend *be;
static char state_dir[64];
static char pkg_dir[128];
static char agent_path[PATH_MAX];

static void on_tick(uv_timer_t *t)
{
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

static void write_file(const char *dir, const char *name, const char *text, mode_t mode)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    fchmod(fd, mode);
    close(fd);
}

/* Skip (with its reason) unless a real container backend can run here. */
static void setup(void)
{
    snprintf(agent_path, sizeof(agent_path), "%s/ember-agent", EMBER_BUILD_DIR);
    if (geteuid() != 0)
        cr_skip_test("needs root (namespaces, uid maps, cgroups)");
    if (access(agent_path, X_OK) != 0)
        cr_skip_test("%s not built", agent_path);

    snprintf(state_dir, sizeof(state_dir), "/tmp/ember-ctest-XXXXXX");
    cr_assert_not_null(mkdtemp(state_dir));
    snprintf(pkg_dir, sizeof(pkg_dir), "%s/pkg", state_dir);
    cr_assert_eq(mkdir(pkg_dir, 0755), 0);
    chmod(state_dir, 0755);
    /* An exec handler: a CGI program, run once per call inside the sandbox. */
    write_file(pkg_dir, "run.sh",
               "#!/bin/sh\n"
               "case \"$PATH_INFO\" in\n"
               "/sleep) sleep 30 ;;\n"
               "esac\n"
               "printf 'Status: 201 Created\\r\\nX-Greeting: %s\\r\\n\\r\\n' \"$GREETING\"\n"
               "printf 'hello from %s' \"$REQUEST_METHOD\"\n",
               0755);

    cr_assert_eq(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 10, 10);
    struct sandbox_config cfg = {.state_dir = state_dir, .agent_path = agent_path};
    struct ember_error err = {0};
    int r = sandbox_backend_open(SANDBOX_CONTAINER, &loop, &cfg, &be, &err);
    if (r == -ENOTSUP || r == -EPERM) {
        uv_close((uv_handle_t *)&tick, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        be = NULL;
        cr_skip_test("container backend unusable here: %s", err.msg);
    }
    cr_assert_eq(r, 0, "sandbox_backend_open: %s", err.msg);
}

static void teardown(void)
{
    if (!be)
        return;
    sandbox_backend_close(be);
    uv_close((uv_handle_t *)&tick, NULL);
    cr_assert_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    cr_assert_eq(uv_loop_close(&loop), 0, "loop closes clean");
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", state_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", state_dir);
}

struct done_rec {
    int count, status;
};

static void on_done(struct sandbox *sb, int status, void *data)
{
    struct done_rec *d = data;
    d->count++;
    d->status = status;
}

struct result_rec {
    int count;
    enum sandbox_error error;
    int status;
    char detail[256];
    char body[128];
    char greeting[64];
};

static void on_result(struct sandbox *sb, const struct sandbox_result *res, void *data)
{
    struct result_rec *r = data;
    r->count++;
    r->error = res->error;
    r->status = res->status;
    snprintf(r->detail, sizeof(r->detail), "%s", res->detail);
    snprintf(r->body, sizeof(r->body), "%.*s", (int)(res->body_len < 127 ? res->body_len : 127),
             (const char *)res->body);
    for (size_t i = 0; i < res->n_headers; i++)
        if (res->headers[i].name_len == 10 &&
            strncasecmp(res->headers[i].name, "x-greeting", 10) == 0)
            snprintf(r->greeting, sizeof(r->greeting), "%.*s", (int)res->headers[i].value_len,
                     res->headers[i].value);
}

/* The exec function of the test package (run.sh) with one env entry. */
static void greet_manifest(struct manifest *m, struct manifest_env *env, uint32_t memory_mb)
{
    *m = (struct manifest){.runtime = MANIFEST_RUNTIME_EXEC,
                           .memory_mb = memory_mb,
                           .timeout_ms = 2000,
                           .concurrency = 1,
                           .n_env = 1,
                           .env = env};
    snprintf(m->handler, sizeof(m->handler), "run.sh");
}

TestSuite(container_backend, .init = setup, .fini = teardown, .timeout = 120);

Test(container_backend, stem_zygote_instance_invoke)
{
    struct sandbox *stem;
    struct done_rec d = {0};
    cr_assert_eq(sandbox_create(be, &stem, on_done, &d), 0);
    cr_assert(spin(&d.count, 1, 30000), "stem cell did not start");
    cr_assert_eq(d.status, 0, "create: %s", sandbox_last_error(stem));
    cr_assert_eq(sandbox_role(stem), SANDBOX_ROLE_STEM);
    cr_assert_gt(sandbox_pid(stem), 0);

    struct manifest_env env[1] = {{(char *)"GREETING", (char *)"hi"}};
    struct manifest m;
    greet_manifest(&m, env, 64);
    struct sandbox_spec spec = {.function = "greet",
                                .version = "v1",
                                .package_dir = pkg_dir,
                                .snapshot_dir = state_dir,
                                .manifest = &m};
    d.count = 0;
    cr_assert_eq(sandbox_specialize(stem, &spec, on_done, &d), 0);
    cr_assert(spin(&d.count, 1, 30000), "specialize did not finish");
    cr_assert_eq(d.status, 0, "specialize: %s", sandbox_last_error(stem));
    struct sandbox *zygote = stem;
    cr_assert_eq(sandbox_role(zygote), SANDBOX_ROLE_ZYGOTE);

    struct sandbox *in;
    d.count = 0;
    cr_assert_eq(sandbox_fork(zygote, &in, on_done, &d), 0);
    cr_assert(spin(&d.count, 1, 30000), "fork did not finish");
    cr_assert_eq(d.status, 0, "fork: %s", sandbox_last_error(in));
    cr_assert_eq(sandbox_role(in), SANDBOX_ROLE_INSTANCE);
    cr_assert_neq(sandbox_pid(in), sandbox_pid(zygote));

    struct sandbox_stats st;
    cr_assert_eq(sandbox_stats(in, &st), 0);
    cr_assert_eq(st.memory_limit, 64ull << 20, "the instance has the function's limit");

    struct result_rec r = {0};
    struct sandbox_call call = {
        .id = 1, .method = "POST", .path = "/", .query = "", .body = "x", .body_len = 1};
    cr_assert_eq(sandbox_invoke(in, &call, on_result, &r), 0);
    cr_assert(spin(&r.count, 1, 20000));
    cr_assert_eq(r.error, SANDBOX_OK, "%s", r.detail);
    cr_assert_eq(r.status, 201);
    cr_assert_str_eq(r.body, "hello from POST");
    cr_assert_str_eq(r.greeting, "hi");

    /* a call over its timeout: TIMEOUT, and the instance is killed */
    struct result_rec t = {0};
    struct sandbox_call slow = {.id = 2, .method = "GET", .path = "/sleep", .timeout_ms = 300};
    cr_assert_eq(sandbox_invoke(in, &slow, on_result, &t), 0);
    cr_assert(spin(&t.count, 1, 20000));
    cr_assert_eq(t.error, SANDBOX_ERR_TIMEOUT);
    cr_assert_str_eq(t.detail, "timed out after 300 ms");

    sandbox_destroy(in);
    sandbox_destroy(zygote);
}

Test(container_backend, destroy_while_spawning)
{
    struct sandbox *stem;
    struct done_rec d = {0};
    cr_assert_eq(sandbox_create(be, &stem, on_done, &d), 0);
    sandbox_destroy(stem);
    /* the teardown's uv_run waits for the spawn, the kill, the reaping and
     * the cgroup removal; no callback may come */
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(d.count, 0);
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

/* An instance lives in its zygote's pid namespace, whose init the zygote
 * is: destroying the zygote takes its instances with it. The pool must
 * retire a zygote only after its instances. */
/* A ready stem cell, specialized to run.sh (to serve itself if @serve). */
static struct sandbox *specialized(uint32_t memory_mb, bool serve)
{
    struct sandbox *sb;
    struct done_rec d = {0};
    cr_assert_eq(sandbox_create(be, &sb, on_done, &d), 0);
    cr_assert(spin(&d.count, 1, 30000));
    cr_assert_eq(d.status, 0, "%s", sandbox_last_error(sb));
    struct manifest_env env[1] = {{(char *)"GREETING", (char *)"yo"}};
    struct manifest m;
    greet_manifest(&m, env, memory_mb);
    struct sandbox_spec spec = {
        .function = "greet", .version = "v1", .package_dir = pkg_dir, .manifest = &m,
        .serve = serve};
    d.count = 0;
    cr_assert_eq(sandbox_specialize(sb, &spec, on_done, &d), 0);
    cr_assert(spin(&d.count, 1, 30000));
    cr_assert_eq(d.status, 0, "specialize: %s", sandbox_last_error(sb));
    return sb;
}

Test(container_backend, instances_die_with_their_zygote)
{
    struct sandbox *z = specialized(64, false);
    struct done_rec d = {0};
    struct sandbox *in;
    cr_assert_eq(sandbox_fork(z, &in, on_done, &d), 0);
    cr_assert(spin(&d.count, 1, 30000));
    cr_assert_eq(d.status, 0, "%s", sandbox_last_error(in));
    struct exit_rec ex = {0};
    struct sandbox_events ev = {.on_exit = on_exit_ev, .data = &ex};
    sandbox_set_events(in, &ev);

    sandbox_destroy(z);
    cr_assert(spin(&ex.count, 1, 10000), "the instance outlived its zygote");
    cr_assert_str_eq(ex.why, "died with its zygote");
    sandbox_destroy(in);
}

Test(container_backend, specialized_to_serve)
{
    struct sandbox *sb = specialized(48, true);
    struct done_rec d = {0};
    /* the stem cell itself is the instance, in its own cgroup */
    cr_assert_eq(sandbox_role(sb), SANDBOX_ROLE_INSTANCE);
    struct sandbox_stats st;
    cr_assert_eq(sandbox_stats(sb, &st), 0);
    cr_assert_eq(st.memory_limit, 48ull << 20);

    for (uint32_t id = 1; id <= 2; id++) {
        struct result_rec r = {0};
        struct sandbox_call call = {
            .id = id, .method = "POST", .path = "/", .query = "", .body = "x", .body_len = 1};
        cr_assert_eq(sandbox_invoke(sb, &call, on_result, &r), 0);
        cr_assert(spin(&r.count, 1, 20000));
        cr_assert_eq(r.error, SANDBOX_OK, "call %u: %s", id, r.detail);
        cr_assert_str_eq(r.body, "hello from POST");
        cr_assert_str_eq(r.greeting, "yo");
    }
    /* it ran calls: nothing may be copied from it */
    struct sandbox *child;
    cr_assert_eq(sandbox_fork(sb, &child, on_done, &d), -EINVAL);
    sandbox_destroy(sb);
}

/* Fork, call and destroy, several times in a row, each instance destroyed
 * at once: each is born in the group the zygote was waiting in, so its
 * group must outlive it until the zygote has moved on. Were it removed
 * earlier, the removal would kill the zygote with it. */
Test(container_backend, instances_born_in_the_zygotes_group)
{
    struct sandbox *z = specialized(64, false);
    struct exit_rec zx = {0};
    struct sandbox_events zev = {.on_exit = on_exit_ev, .data = &zx};
    sandbox_set_events(z, &zev);
    for (uint32_t i = 1; i <= 6; i++) {
        struct sandbox *in;
        struct done_rec d = {0};
        cr_assert_eq(sandbox_fork(z, &in, on_done, &d), 0, "fork %u", i);
        cr_assert(spin(&d.count, 1, 30000));
        cr_assert_eq(d.status, 0, "fork %u: %s", i, sandbox_last_error(in));
        struct sandbox_stats st;
        cr_assert_eq(sandbox_stats(in, &st), 0);
        cr_assert_eq(st.memory_limit, 64ull << 20, "instance %u has its own limit", i);
        if (i % 2 == 0) { /* odd ones go before the zygote can have moved on */
            struct result_rec r = {0};
            struct sandbox_call call = {.id = i, .method = "GET", .path = "/", .query = ""};
            cr_assert_eq(sandbox_invoke(in, &call, on_result, &r), 0);
            cr_assert(spin(&r.count, 1, 20000));
            cr_assert_eq(r.error, SANDBOX_OK, "call %u: %s", i, r.detail);
        }
        sandbox_destroy(in);
        uv_run(&loop, UV_RUN_NOWAIT);
        cr_assert_eq(zx.count, 0, "the zygote died after instance %u: %s", i, zx.why);
    }
    /* A burst: the first child is born in the park, the others move
     * themselves out of the zygote's group while it parks anew. */
    enum { BURST = 4 };
    struct sandbox *in[BURST];
    struct done_rec d = {0};
    for (int i = 0; i < BURST; i++)
        cr_assert_eq(sandbox_fork(z, &in[i], on_done, &d), 0, "fork %d", i);
    cr_assert(spin(&d.count, BURST, 30000));
    cr_assert_eq(d.status, 0, "burst: %s", sandbox_last_error(z));
    for (int i = 0; i < BURST; i++) {
        struct result_rec r = {0};
        struct sandbox_call call = {.id = 100 + (uint32_t)i, .method = "GET", .path = "/"};
        cr_assert_eq(sandbox_invoke(in[i], &call, on_result, &r), 0);
        cr_assert(spin(&r.count, 1, 20000));
        cr_assert_eq(r.error, SANDBOX_OK, "burst call %d: %s", i, r.detail);
        sandbox_destroy(in[i]);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(zx.count, 0, "the zygote died after the burst: %s", zx.why);
    sandbox_destroy(z);
}
