/* test_microvm.c - functions in kernel-less KVM microVMs through the real
 * emberd: the hello example built for the guest, warm calls, snapshot
 * restores, calls sent ahead to a busy VM, fresh_per_call resets, hostile
 * guests answered with a clean 5xx followed by a working call, and a
 * corrupted snapshot refused. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static struct emberd d;

static void start(void)
{
    const char *why = need_root_and_namespaces();
    if (!why)
        why = need_kvm();
    if (why)
        cr_skip_test("%s", why);
    memset(&d, 0, sizeof(d));
    cr_assert_eq(emberd_start(&d, NULL), 0);
}

static void stop(void)
{
    if (d.pid > 0)
        cr_expect_eq(emberd_stop(&d), 0, "emberd must drain and exit 0");
    emberd_cleanup(&d);
}

TestSuite(microvm, .init = start, .fini = stop, .timeout = 120);

/* Package a guest ELF from the build tree with a microvm manifest. */
static void deploy_guest(const char *name, const char *elf_rel, const char *extra)
{
    char manifest[1024];
    snprintf(manifest, sizeof(manifest),
             "{\"runtime\": \"native\", \"sandbox\": \"microvm\", \"handler\": \"fn.elf\", "
             "\"memory_mb\": 64, \"env\": {\"GREETING\": \"hej\"}%s%s}",
             extra ? ", " : "", extra ? extra : "");
    struct resp r;
    int status = deploy_native(d.port, name, manifest, elf_rel, "fn.elf", &r);
    cr_assert(status == 201 || status == 200, "deploy %s: %d %s", name, status, r.body);
    resp_free(&r);
}

static char *kind_of(const struct resp *r)
{
    char *st = resp_header(r, "Server-Timing");
    cr_assert(st, "Server-Timing present");
    char *p = strstr(st, "desc=\"");
    cr_assert(p);
    char *k = strndup(p + 6, strcspn(p + 6, "\""));
    free(st);
    return k;
}

static int get(const char *target, struct resp *r)
{
    cr_assert_eq(http_call(d.port, "GET", target, NULL, NULL, 0, r), 0, "%s", target);
    return r->status;
}

Test(microvm, example_package_deploys_and_answers)
{
    char path[PATH_MAX];
    struct resp r;
    int status = deploy_file(d.port, "hello-vm", build_path("examples/hello-vm.tar.gz", path), &r);
    cr_assert_eq(status, 201, "%s", r.body);
    cr_expect(strstr(r.body, "\"sandbox\":\"microvm\""), "%s", r.body);
    resp_free(&r);
    cr_assert_eq(get("/fn/hello-vm?name=Ada", &r), 200, "%s", r.body);
    cr_expect(strstr(r.body, "Ada"), "%s", r.body);
    resp_free(&r);
    cr_assert_eq(get("/fn/hello-vm?name=Bo", &r), 200, "%s", r.body);
    char *k = kind_of(&r);
    cr_expect_str_eq(k, "warm");
    free(k);
    resp_free(&r);
}

Test(microvm, warm_calls_and_snapshot_restores)
{
    deploy_guest("probe-vm", "tests/guests/g_probe.elf", NULL);
    struct resp r;
    /* the first call boots the guest and takes the snapshot */
    cr_assert_eq(get("/fn/probe-vm/env", &r), 200, "%s", r.body);
    cr_expect(strstr(r.body, "hej"), "env reaches the guest: %s", r.body);
    resp_free(&r);
    /* the counter grows in the warm instance */
    int last = 0;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(get("/fn/probe-vm/count", &r), 200, "%s", r.body);
        last = atoi(r.body + strcspn(r.body, "0123456789"));
        resp_free(&r);
    }
    cr_expect_geq(last, 3, "state survives in a warm instance");

    /* a second instance at the same time is restored from the snapshot */
    struct resp a;
    int fd = tcp_connect(d.port);
    const char *slow =
        "GET /fn/probe-vm/dirty?2000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    tcp_send_all(fd, slow, strlen(slow));
    cr_assert_eq(get("/fn/probe-vm/env", &a), 200, "%s", a.body);
    char *k = kind_of(&a);
    cr_expect(strcmp(k, "warm") == 0 || strcmp(k, "snapshot") == 0, "kind %s", k);
    free(k);
    resp_free(&a);
    char *out = tcp_read_all(fd, 10000, NULL);
    cr_expect(strstr(out, "HTTP/1.1 200"), "%s", out);
    free(out);
    close(fd);
}

/* Calls sent ahead to a busy VM: the monitor reads them in order after
 * the running one; one behind a call that hangs until its timeout never
 * started, so it runs in another VM. */
Test(microvm, calls_sent_ahead_to_a_monitor)
{
    deploy_guest("ahead-vm", "tests/guests/g_probe.elf", "\"timeout_ms\": 1000");
    const char *knobs = "{\"functions\": {\"ahead-vm\": {\"max_instances\": 1, "
                        "\"scale_out_wait_us\": 2000000}}}";
    struct resp r;
    cr_assert_eq(http_call(d.port, "PATCH", "/v1/pool", NULL, knobs, strlen(knobs), &r), 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    resp_free(&r);
    for (int i = 0; i < 20; i++) { /* the pool learns how long a call runs */
        cr_assert_eq(get("/fn/ahead-vm/env", &r), 200, "%s", r.body);
        resp_free(&r);
    }
    int ok = concurrent_gets(d.port, "/fn/ahead-vm/env", 4, 25);
    cr_expect_eq(ok, 100, "%d of 100 calls served", ok);
    cr_expect_gt(fn_stat(d.port, "ahead-vm", "sent_ahead"), 0);

    struct bg_get hang;
    bg_get_start(&hang, d.port, "/fn/ahead-vm/loop");
    usleep(100000);
    cr_expect_eq(get("/fn/ahead-vm/env", &r), 200, "%s", r.body);
    resp_free(&r);
    bg_get_join(&hang);
    cr_expect_eq(hang.status, 504, "%s", hang.body);
    cr_expect_eq(fn_stat(d.port, "ahead-vm", "requeued"), 1);
}

/* A warm call wakes the monitor once (it waits in poll, not in a unix
 * stream recvmsg, which emberd's read of each answer would wake too), and
 * monitors run as SCHED_BATCH like container sandboxes. */
Test(microvm, a_monitor_wakes_once_per_call_and_runs_as_batch)
{
    deploy_guest("waker-vm", "tests/guests/g_probe.elf", NULL);
    struct resp r;
    cr_assert_eq(get("/fn/waker-vm/env", &r), 200, "%s", r.body);
    resp_free(&r);
    usleep(200000); /* the stem monitors' refill settles */

    struct warm_wakeups w;
    cr_assert_eq(warm_wakeups(&d, "/fn/waker-vm/env", "ember-vmm", 200, &w), 0);
    char why[160];
    cr_expect(warm_wakeups_ok(&w, 200, why, sizeof(why)), "%s", why);
}

Test(microvm, fresh_per_call_resets_guest_memory)
{
    deploy_guest("fresh-vm", "tests/guests/g_probe.elf", "\"fresh_per_call\": true");
    for (int i = 0; i < 5; i++) {
        struct resp r;
        cr_assert_eq(get("/fn/fresh-vm/count", &r), 200, "%s", r.body);
        int n = atoi(r.body + strcspn(r.body, "0123456789"));
        cr_expect_eq(n, 1, "call %d saw counter %s", i, r.body);
        resp_free(&r);
    }
}

static void expect_5xx_then_works(const char *name, const char *path)
{
    char target[256];
    snprintf(target, sizeof(target), "/fn/%s%s", name, path);
    struct resp r;
    int status = get(target, &r);
    int want = strcmp(path, "/loop") == 0 ? 504 : 502; /* a hang times out; the rest fault */
    cr_expect_eq(status, want, "%s: %d %s", path, status, r.body);
    cr_expect(strstr(r.body, "\"error\""), "%s: JSON error: %s", path, r.body);
    resp_free(&r);
    snprintf(target, sizeof(target), "/fn/%s/env", name);
    cr_expect_eq(get(target, &r), 200, "after %s: %d %s", path, r.status, r.body);
    resp_free(&r);
}

Test(microvm, hostile_guests_fail_cleanly)
{
    deploy_guest("bad-vm", "tests/guests/g_probe.elf", "\"timeout_ms\": 1000");
    const char *paths[] = {"/read_oob",  "/write_oob",  "/write_null",  "/write_pt",
                           "/exec_data", "/write_text", "/bad_respond", "/bad_log",
                           "/hlt",       "/cr3",        "/triple",      "/outport",
                           "/abort",     "/stack",      "/loop",        "/big"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        expect_5xx_then_works("bad-vm", paths[i]);
}

static int corrupt_snapshots(const char *dir)
{
    /* flip a byte in every snapshot state file under dir (recursively) */
    DIR *dh = opendir(dir);
    if (!dh)
        return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dh))) {
        if (de->d_name[0] == '.')
            continue;
        char path[PATH_MAX];
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= sizeof(path))
            continue;
        struct stat st;
        if (lstat(path, &st) < 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            n += corrupt_snapshots(path);
        } else if (S_ISREG(st.st_mode) && strstr(path, "/snap/microvm.") && st.st_size > 64) {
            int fd = open(path, O_RDWR);
            unsigned char b;
            if (fd >= 0 && pread(fd, &b, 1, 40) == 1) {
                b ^= 0xff;
                if (pwrite(fd, &b, 1, 40) == 1)
                    n++;
            }
            if (fd >= 0)
                close(fd);
        }
    }
    closedir(dh);
    return n;
}

Test(microvm, corrupt_snapshot_is_refused_and_rebuilt)
{
    deploy_guest("snap-vm", "tests/guests/g_probe.elf", NULL);
    struct resp r;
    cr_assert_eq(get("/fn/snap-vm/env", &r), 200, "%s", r.body);
    resp_free(&r);
    cr_assert_eq(emberd_stop(&d), 0);
    char fns[PATH_MAX];
    snprintf(fns, sizeof(fns), "%.*s/functions/snap-vm", PATH_MAX - 32, d.state_dir);
    cr_assert_gt(corrupt_snapshots(fns), 0, "a snapshot was written under %s", fns);
    cr_assert_eq(emberd_start(&d, NULL), 0);
    /* the damaged snapshot is not trusted: the guest boots afresh */
    cr_assert_eq(get("/fn/snap-vm/env", &r), 200, "%s", r.body);
    cr_expect(strstr(r.body, "hej"), "%s", r.body);
    resp_free(&r);
    cr_expect(emberd_log_contains(&d, "snapshot rejected"),
              "the monitor said why it did not restore");
}

Test(microvm, default_backend_microvm_checks_uploads_for_it)
{
    emberd_stop(&d);
    emberd_cleanup(&d);
    memset(&d, 0, sizeof(d));
    const char *args[] = {"--backend", "microvm", NULL};
    cr_assert_eq(emberd_start(&d, args), 0);
    char path[PATH_MAX];
    struct resp r;
    /* hello.tar.gz names no sandbox: on this daemon that means a microVM,
     * and its handler is a shared object, not a guest image */
    int status = deploy_file(d.port, "wrong", build_path("examples/hello.tar.gz", path), &r);
    cr_expect_eq(status, 400, "%s", r.body);
    cr_expect(r.body && strstr(r.body, "hello.so"), "the message names the handler: %s", r.body);
    resp_free(&r);
    status = deploy_file(d.port, "right", build_path("examples/hello-vm.tar.gz", path), &r);
    cr_expect_eq(status, 201, "%s", r.body);
    resp_free(&r);
    cr_assert_eq(get("/fn/right?name=Cy", &r), 200, "%s", r.body);
    resp_free(&r);
}
