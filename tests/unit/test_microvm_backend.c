/* test_microvm_backend.c - sandbox_microvm_ops with real sandboxes: ember-vmm
 * spawned in the container jail, specialized with a guest image from
 * tests/guests (boot + snapshot through LOAD's fds), reset, "forked" (a new
 * monitor restoring the snapshot), a crashing guest, and a clean teardown.
 * Skips with the reason when the host or the build cannot do it.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "sandbox/sandbox.h"

static uv_loop_t loop;
static uv_timer_t tick;
static struct sandbox_backend *be;
static char state_dir[64];
static char snap_dir[128];
static char vmm_path[PATH_MAX], agent_path[PATH_MAX];

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

static void setup(void)
{
    snprintf(vmm_path, sizeof(vmm_path), "%s/ember-vmm", EMBER_BUILD_DIR);
    snprintf(agent_path, sizeof(agent_path), "%s/ember-agent", EMBER_BUILD_DIR);
    if (geteuid() != 0)
        cr_skip_test("needs root (namespaces, uid maps, cgroups)");
    if (access("/dev/kvm", R_OK | W_OK) != 0)
        cr_skip_test("no /dev/kvm");
    if (access(vmm_path, X_OK) != 0)
        cr_skip_test("%s not built", vmm_path);

    snprintf(state_dir, sizeof(state_dir), "/tmp/ember-vmtest-XXXXXX");
    cr_assert_not_null(mkdtemp(state_dir));
    chmod(state_dir, 0755);
    snprintf(snap_dir, sizeof(snap_dir), "%s/snap", state_dir);

    cr_assert_eq(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 10, 10);
    struct sandbox_config cfg = {
        .state_dir = state_dir, .agent_path = agent_path, .vmm_path = vmm_path};
    struct ember_error err = {0};
    int r = sandbox_backend_open(SANDBOX_MICROVM, &loop, &cfg, &be, &err);
    if (r == -ENOTSUP || r == -EPERM) {
        uv_close((uv_handle_t *)&tick, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        be = NULL;
        cr_skip_test("microvm backend unusable here: %s", err.msg);
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
}

static struct result_rec call(struct sandbox *sb, const char *path)
{
    static uint32_t id;
    struct result_rec r = {0};
    struct sandbox_call c = {
        .id = ++id, .method = "GET", .path = path, .query = "", .body = "", .body_len = 0};
    cr_assert_eq(sandbox_invoke(sb, &c, on_result, &r), 0);
    cr_assert(spin(&r.count, 1, 20000), "no answer to %s", path);
    return r;
}

static struct sandbox *zygote_of_probe(struct manifest *m, struct sandbox_spec *spec)
{
    struct sandbox *sb;
    struct done_rec d = {0};
    cr_assert_eq(sandbox_create(be, &sb, on_done, &d), 0);
    cr_assert(spin(&d.count, 1, 30000), "stem cell did not start");
    cr_assert_eq(d.status, 0, "create: %s", sandbox_last_error(sb));
    cr_assert_eq(sandbox_role(sb), SANDBOX_ROLE_STEM);

    *m = (struct manifest){.runtime = MANIFEST_RUNTIME_NATIVE,
                           .sandbox = MANIFEST_SANDBOX_MICROVM,
                           .memory_mb = 32,
                           .timeout_ms = 2000,
                           .concurrency = 1,
                           .fresh_per_call = true};
    snprintf(m->handler, sizeof(m->handler), "g_probe.elf");
    *spec = (struct sandbox_spec){.function = "probe",
                                  .version = "v1",
                                  .package_dir = EMBER_BUILD_DIR "/tests/guests",
                                  .snapshot_dir = snap_dir,
                                  .manifest = m};
    d.count = 0;
    cr_assert_eq(sandbox_specialize(sb, spec, on_done, &d), 0);
    cr_assert(spin(&d.count, 1, 30000), "specialize did not finish");
    cr_assert_eq(d.status, 0, "specialize: %s", sandbox_last_error(sb));
    cr_assert_eq(sandbox_role(sb), SANDBOX_ROLE_INSTANCE, "a specialized microVM serves calls");
    return sb;
}

TestSuite(microvm_backend, .init = setup, .fini = teardown, .timeout = 120);

Test(microvm_backend, stem_zygote_reset_fork)
{
    struct manifest m;
    struct sandbox_spec spec;
    struct sandbox *z = zygote_of_probe(&m, &spec);
    struct stat st;
    char path[256];
    snprintf(path, sizeof(path), "%s/microvm.state", snap_dir);
    cr_assert_eq(stat(path, &st), 0, "the snapshot was renamed into place");

    /* fork: a new monitor restoring the snapshot */
    struct sandbox *in;
    struct done_rec d = {0};
    cr_assert_eq(sandbox_fork(z, &in, on_done, &d), 0);
    cr_assert(spin(&d.count, 1, 30000), "fork did not finish");
    cr_assert_eq(d.status, 0, "fork: %s", sandbox_last_error(in));
    cr_assert_eq(sandbox_role(in), SANDBOX_ROLE_INSTANCE);
    cr_assert_neq(sandbox_pid(in), sandbox_pid(z));
    struct sandbox_stats stats;
    cr_assert_eq(sandbox_stats(in, &stats), 0);
    cr_assert_gt(stats.memory_limit, 32ull << 20);

    /* reset: the counter is back to its snapshot value */
    struct result_rec r = call(in, "/count");
    cr_assert_eq(r.error, SANDBOX_OK, "%s", r.detail);
    cr_assert_str_eq(r.body, "1");
    r = call(in, "/count");
    cr_assert_str_eq(r.body, "2");
    d.count = 0;
    cr_assert_eq(sandbox_reset(in, on_done, &d), 0);
    cr_assert(spin(&d.count, 1, 10000));
    cr_assert_eq(d.status, 0, "reset: %s", sandbox_last_error(in));
    r = call(in, "/count");
    cr_assert_str_eq(r.body, "1");

    /* a guest fault costs the call and the VM */
    r = call(in, "/write_null");
    cr_assert_eq(r.error, SANDBOX_ERR_CRASH, "%d %s", r.error, r.detail);
    cr_assert(strstr(r.detail, "triple fault"), "%s", r.detail);

    /* a stem cell specialized now restores instead of booting, and its
     * instances work */
    struct sandbox *z2 = zygote_of_probe(&m, &spec);
    struct sandbox *in2;
    d.count = 0;
    cr_assert_eq(sandbox_fork(z2, &in2, on_done, &d), 0);
    cr_assert(spin(&d.count, 1, 30000), "fork did not finish");
    cr_assert_eq(d.status, 0, "fork: %s", sandbox_last_error(in2));
    r = call(in2, "/env");
    cr_assert_eq(r.error, SANDBOX_OK, "%s", r.detail);
    cr_assert_str_eq(r.body, "none");
    sandbox_destroy(in2);

    sandbox_destroy(in);
    sandbox_destroy(z2);
    sandbox_destroy(z);
}
