/* test_invoke.c - functions run in real container sandboxes: both runtimes,
 * warm reuse, passthrough, concurrency, every failure mode followed by a
 * working call, and isolation probes run as functions. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static struct emberd d;

static void start(void)
{
    const char *why = need_root_and_namespaces();
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

TestSuite(invoke, .init = start, .fini = stop, .timeout = 120);

static void deploy(const char *name, const char *so, const char *extra)
{
    int status = deploy_test_function(d.port, name, so, extra);
    cr_assert(status == 201 || status == 200, "deploy %s: %d", name, status);
}

static int call(const char *target, const char *const *headers, const char *body, struct resp *r)
{
    cr_assert_eq(
        http_call(d.port, body ? "POST" : "GET", target, headers, body, body ? strlen(body) : 0, r),
        0, "transport error on %s", target);
    return r->status;
}

/* The acquire kind in Server-Timing: warm, stem, zygote, snapshot, cold. */
static char *acquire_kind(const struct resp *r)
{
    char *st = resp_header(r, "Server-Timing");
    cr_assert(st, "Server-Timing present");
    char *p = strstr(st, "acquire;desc=\"");
    cr_assert(p, "acquire phase in %s", st);
    p += 14;
    char *e = strchr(p, '"');
    char *kind = strndup(p, (size_t)(e - p));
    cr_expect(strstr(st, "queue;"), "queue phase in %s", st);
    cr_expect(strstr(st, "init;"), "init phase in %s", st);
    cr_expect(strstr(st, "run;"), "run phase in %s", st);
    free(st);
    return kind;
}

Test(invoke, native_passthrough_and_warm)
{
    deploy("echo", "t_echo.so", NULL);
    struct resp r;
    const char *hdrs[] = {"X-Test: abc", "X-Set-Status: 202", NULL};
    cr_assert_eq(call("/fn/echo/some/path?x=1&y=2", hdrs, "hello body", &r), 202, "%s", r.body);
    cr_expect_str_eq(r.body, "hello body", "body passes through byte for byte");
    const char *want[][2] = {{"X-Echo", "1"},
                             {"X-Echo-Method", "POST"},
                             {"X-Echo-Path", "/some/path"},
                             {"X-Echo-Query", "x=1&y=2"},
                             {"X-Echo-Test", "abc"}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        char *v = resp_header(&r, want[i][0]);
        cr_expect(v && strcmp(v, want[i][1]) == 0, "%s: got %s, want %s", want[i][0],
                  v ? v : "(none)", want[i][1]);
        free(v);
    }
    char *inv = resp_header(&r, "X-Ember-Invocation");
    cr_expect(inv && strlen(inv) > 0);
    free(inv);
    char *kind = acquire_kind(&r);
    cr_expect(strcmp(kind, "warm") != 0, "first call is not warm (%s)", kind);
    free(kind);
    resp_free(&r);

    cr_assert_eq(call("/fn/echo/", NULL, "again", &r), 200, "%s", r.body);
    cr_expect_str_eq(r.body, "again", "nothing of the longer answer before it");
    kind = acquire_kind(&r);
    cr_expect_str_eq(kind, "warm", "second call reuses the instance");
    free(kind);
    resp_free(&r);

    /* more headers each way than emberd keeps without an allocation */
    char pads[24][32];
    const char *many[28];
    size_t k = 0;
    for (int i = 0; i < 24; i++) {
        snprintf(pads[i], sizeof(pads[i]), "X-Pad-%d: %d", i, i);
        many[k++] = pads[i];
    }
    many[k++] = "X-Echo-Headers: 30";
    many[k++] = "X-Test: last";
    many[k] = NULL;
    cr_assert_eq(call("/fn/echo/", many, "", &r), 200, "%s", r.body);
    char *v = resp_header(&r, "X-Echo-Test");
    cr_expect(v && strcmp(v, "last") == 0, "the 26th request header: %s", v ? v : "(none)");
    free(v);
    v = resp_header(&r, "X-Echo-N-29");
    cr_expect(v && strcmp(v, "29") == 0, "the 37th response header: %s", v ? v : "(none)");
    free(v);
    resp_free(&r);

    /* the invoke route: POST, path "/" */
    cr_assert_eq(http_call(d.port, "POST", "/v1/functions/echo/invoke?q=1", NULL, "b", 1, &r), 0);
    cr_expect_eq(r.status, 200, "%s", r.body);
    resp_free(&r);
}

/* Deploy an exec function: @manifest and the shell @script as @file. */
static void deploy_exec(const char *name, const char *manifest, const char *file,
                        const char *script)
{
    char pkg[256];
    snprintf(pkg, sizeof(pkg), "/tmp/ember-exec-%d.tar.gz", getpid());
    struct pkg_entry e[] = {
        {.path = "function.json", .kind = PKG_FILE, .data = manifest, .len = strlen(manifest)},
        {.path = file, .kind = PKG_FILE, .data = script, .len = strlen(script), .mode = 0755},
    };
    cr_assert_eq(pkg_write(pkg, PKG_TAR_GZ, e, 2), 0);
    struct resp r;
    cr_assert_eq(deploy_file(d.port, name, pkg, &r), 201, "%s", r.body);
    resp_free(&r);
    unlink(pkg);
}

Test(invoke, exec_runtime)
{
    static const char manifest[] = "{\"runtime\": \"exec\", \"handler\": \"cgi.sh\"}";
    static const char script[] =
        "#!/bin/sh\n"
        "echo 'Status: 201 Created'\n"
        "echo 'Content-Type: text/plain'\n"
        "echo 'X-From: script'\n"
        "echo\n"
        "echo \"method=$REQUEST_METHOD path=$PATH_INFO query=$QUERY_STRING hdr=$HTTP_X_TEST\"\n"
        "cat\n"
        "echo 'to the log' >&2\n";
    deploy_exec("cgi", manifest, "cgi.sh", script);
    struct resp r;
    const char *hdrs[] = {"X-Test: zz", NULL};
    cr_assert_eq(call("/fn/cgi/p/q?a=b", hdrs, "BODY", &r), 201, "%s", r.body);
    cr_expect(strstr(r.body, "method=POST path=/p/q query=a=b hdr=zz"), "%s", r.body);
    cr_expect(strstr(r.body, "BODY"), "%s", r.body);
    char *from = resp_header(&r, "X-From");
    cr_expect(from && strcmp(from, "script") == 0);
    free(from);
    resp_free(&r);

    /* stderr became a log line */
    for (int i = 0; i < 50; i++) {
        cr_assert_eq(http_call(d.port, "GET", "/v1/functions/cgi/logs", NULL, NULL, 0, &r), 0);
        bool found = strstr(r.body, "to the log") != NULL;
        resp_free(&r);
        if (found)
            return;
        usleep(20000);
    }
    cr_expect(0, "stderr line not found in the function's logs");
}

struct worker {
    int ok, failed;
};

static void *hammer(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 10; i++) {
        struct resp r;
        if (http_call(d.port, "POST", "/fn/conc/", NULL, "x", 1, &r) == 0 && r.status == 200)
            w->ok++;
        else
            w->failed++;
        resp_free(&r);
    }
    return NULL;
}

Test(invoke, concurrent_calls)
{
    deploy("conc", "t_echo.so", NULL);
    pthread_t th[8];
    struct worker w[8] = {0};
    for (int i = 0; i < 8; i++)
        pthread_create(&th[i], NULL, hammer, &w[i]);
    int ok = 0, failed = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        ok += w[i].ok;
        failed += w[i].failed;
    }
    cr_expect_eq(ok, 80, "%d ok, %d failed", ok, failed);
}

static void expect_error(const char *target, int status, const char *detail_part)
{
    struct resp r;
    int got = call(target, NULL, NULL, &r);
    cr_expect_eq(got, status, "%s: %d %s", target, got, r.body);
    if (detail_part)
        cr_expect(r.body && strstr(r.body, detail_part), "%s: detail '%s' in %s", target,
                  detail_part, r.body);
    char *inv = resp_header(&r, "X-Ember-Invocation");
    cr_expect(inv, "errors carry the invocation id too");
    free(inv);
    resp_free(&r);
}

static void expect_works(const char *target)
{
    struct resp r;
    int got = call(target, NULL, NULL, &r);
    cr_expect_eq(got, 200, "%s after a failure: %d %s", target, got, r.body);
    resp_free(&r);
}

Test(invoke, timeout_then_works)
{
    deploy("sleepy", "t_sleep.so", "\"timeout_ms\": 300");
    expect_error("/fn/sleepy?ms=5000", 504, "timed out");
    expect_works("/fn/sleepy?ms=1");
}

Test(invoke, crash_then_works)
{
    deploy("crashy", "t_crash.so", NULL);
    deploy("fine", "t_echo.so", NULL);
    expect_error("/fn/crashy", 502, "SIGSEGV");
    expect_works("/fn/fine");
    /* The first instance was the specialized sandbox itself (pid 1 of its
     * namespaces); once the zygote is there, a forked one crashes too. */
    for (int i = 0; i < 300 && fn_instances(d.port, "crashy", "zygote") != 1; i++)
        usleep(10000);
    cr_expect_eq(fn_instances(d.port, "crashy", "zygote"), 1);
    expect_error("/fn/crashy", 502, "SIGSEGV");
    deploy("aborty", "t_abort.so", NULL);
    expect_error("/fn/aborty", 502, "SIGABRT");
    expect_works("/fn/fine");
}

Test(invoke, oom_then_works)
{
    deploy("hungry", "t_oom.so", "\"memory_mb\": 32");
    deploy("fine2", "t_echo.so", NULL);
    expect_error("/fn/hungry", 502, "out of memory");
    expect_works("/fn/fine2");
    expect_error("/fn/hungry", 502, "out of memory");
}

Test(invoke, huge_output_then_works)
{
    deploy("huge", "t_huge.so", NULL);
    deploy("fine3", "t_echo.so", NULL);
    expect_error("/fn/huge", 502, NULL);
    expect_works("/fn/fine3");
}

Test(invoke, fork_bomb_stops_at_pids_limit)
{
    deploy("bomb", "t_forkbomb.so", "\"timeout_ms\": 20000");
    struct resp r;
    cr_assert_eq(call("/fn/bomb", NULL, NULL, &r), 200, "%s", r.body);
    long forks = strncmp(r.body, "forked ", 7) == 0 ? strtol(r.body + 7, NULL, 10) : -1;
    cr_expect(forks > 0 && forks < 64, "forks stopped by the pids limit: %s", r.body);
    resp_free(&r);
    deploy("fine4", "t_echo.so", NULL);
    expect_works("/fn/fine4");
}

Test(invoke, init_failure_is_502)
{
    deploy("badinit", "t_init_fail.so", NULL);
    expect_error("/fn/badinit", 502, NULL);
}

/* ---- isolation probes ---------------------------------------------------------- */

static char *probe(const char *query)
{
    char target[512];
    snprintf(target, sizeof(target), "/fn/probe?%s", query);
    struct resp r;
    cr_assert_eq(call(target, NULL, NULL, &r), 200, "%s: %s", query, r.body);
    char *out = strdup(r.body);
    resp_free(&r);
    return out;
}

#define EXPECT_DENIED(q)                                                                           \
    do {                                                                                           \
        char *o_ = probe(q);                                                                       \
        cr_expect(strncmp(o_, "denied", 6) == 0, "%s should be denied: %s", q, o_);                \
        free(o_);                                                                                  \
    } while (0)

Test(invoke, isolation)
{
    deploy("probe", "t_probe.so", NULL);
    deploy("other", "t_echo.so", NULL);

    /* host files outside the grant */
    EXPECT_DENIED("check=read_file&path=/etc/shadow");
    EXPECT_DENIED("check=read_file&path=/root/.bashrc");
    char q[PATH_MAX + 64];
    snprintf(q, sizeof(q), "check=ls&path=%s", d.state_dir);
    EXPECT_DENIED(q);
    /* the package is there, read-only */
    char *o = probe("check=read_file&path=/fn/function.json");
    cr_expect(strncmp(o, "ok", 2) == 0, "%s", o);
    free(o);
    EXPECT_DENIED("check=write&path=/fn/x");
    EXPECT_DENIED("check=write&path=/etc/passwd");

    /* host processes: only the sandbox's own few */
    o = probe("check=count_procs");
    long n = strtol(o + 3, NULL, 10);
    cr_expect(strncmp(o, "ok", 2) == 0 && n >= 1 && n < 5, "%s", o);
    free(o);

    /* a host TCP listener on 127.0.0.1: our own emberd */
    snprintf(q, sizeof(q), "check=connect&port=%u", d.port);
    EXPECT_DENIED(q);

    /* not host uid 0 */
    o = probe("check=uid");
    cr_expect(strstr(o, "uid=1000") || strstr(o, "uid="), "%s", o);
    cr_expect(!strstr(o, "\n         0          0 "), "uid 0 of the host is not mapped: %s", o);
    free(o);

    EXPECT_DENIED("check=mount");
    EXPECT_DENIED("check=ptrace");
    EXPECT_DENIED("check=module");
    /* EPERM, not the kernel's EBADF: the seccomp filter refused it */
    o = probe("check=move_mount");
    cr_expect_str_eq(o, "denied: Operation not permitted", "%s", o);
    free(o);
    /* another function's package is not visible */
    EXPECT_DENIED("check=ls&path=/fn/../other");
    snprintf(q, sizeof(q), "check=ls&path=%s/functions/other", d.state_dir);
    EXPECT_DENIED(q);
}

Test(invoke, no_leftovers_after_stop)
{
    deploy("left", "t_echo.so", NULL);
    expect_works("/fn/left");
    cr_assert_eq(emberd_stop(&d), 0);
    char what[512];
    cr_expect(!emberd_leftovers(&d, what, sizeof(what)), "left behind: %s", what);
}

Test(invoke, async_invocation_record)
{
    deploy("later", "t_echo.so", NULL);
    struct resp r;
    cr_assert_eq(http_call(d.port, "POST", "/v1/functions/later/invoke?async=1&q=7", NULL,
                           "queued body", 11, &r),
                 0);
    cr_assert_eq(r.status, 202, "%s", r.body);
    char *loc = resp_header(&r, "Location");
    cr_assert(loc && strncmp(loc, "/v1/invocations/", 16) == 0, "Location: %s", loc);
    resp_free(&r);

    json_t *j = NULL;
    for (int i = 0; i < 200; i++) {
        cr_assert_eq(http_call(d.port, "GET", loc, NULL, NULL, 0, &r), 0);
        cr_assert_eq(r.status, 200, "%s", r.body);
        j = json_loads(r.body, 0, NULL);
        resp_free(&r);
        cr_assert(j);
        if (strcmp(json_string_value(json_object_get(j, "status")), "done") == 0)
            break;
        json_decref(j);
        j = NULL;
        usleep(10000);
    }
    cr_assert(j, "the asynchronous call finished");
    cr_expect_eq(json_integer_value(json_object_get(j, "http_status")), 200);
    cr_expect_str_eq(json_string_value(json_object_get(j, "result")), "queued body");
    cr_expect(json_string_value(json_object_get(j, "server_timing")));
    json_decref(j);
    free(loc);

    cr_assert_eq(http_call(d.port, "GET", "/v1/invocations/0123-4", NULL, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 404);
    resp_free(&r);
}

Test(invoke, logs_are_captured_and_bounded)
{
    deploy("chatty", "t_log.so", NULL);
    struct resp r;
    cr_assert_eq(call("/fn/chatty", NULL, NULL, &r), 200, "%s", r.body);
    cr_expect_str_eq(r.body, "ok", "a 1 MiB flood of stdout does not touch the response");
    resp_free(&r);
    bool hello = false, dropped = false;
    for (int i = 0; i < 100 && !(hello && dropped); i++) {
        cr_assert_eq(
            http_call(d.port, "GET", "/v1/functions/chatty/logs?lines=1000", NULL, NULL, 0, &r), 0);
        hello = strstr(r.body, "hello from stdout") && strstr(r.body, "hello from stderr");
        dropped = strstr(r.body, "dropped") != NULL;
        resp_free(&r);
        if (!(hello && dropped))
            usleep(20000);
    }
    cr_expect(hello, "both streams reach the log");
    cr_expect(dropped, "the flood is cut and says so");
}

Test(invoke, cli_drives_the_api)
{
    char path[PATH_MAX], cmd[PATH_MAX * 2 + 256], pkg[PATH_MAX];
    build_path("examples/hello.tar.gz", pkg);
    snprintf(cmd, sizeof(cmd), "%s --url http://127.0.0.1:%u deploy clihello %s >/dev/null",
             build_path("ember", path), d.port, pkg);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
    snprintf(cmd, sizeof(cmd), "%s --url http://127.0.0.1:%u call clihello --method GET",
             build_path("ember", path), d.port);
    FILE *f = popen(cmd, "r");
    char out[256] = "";
    size_t n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = '\0';
    cr_expect_eq(pclose(f), 0);
    cr_expect(strstr(out, "hi"), "the CLI printed the function's answer: %s", out);
    snprintf(cmd, sizeof(cmd), "%s --url http://127.0.0.1:%u get nothere >/dev/null",
             build_path("ember", path), d.port);
    int status = system(cmd);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 1, "a 404 exits 1");
}

Test(invoke, sigterm_lets_running_calls_finish)
{
    deploy("slowpoke", "t_sleep.so", NULL);
    struct resp r;
    cr_assert_eq(call("/fn/slowpoke?ms=1", NULL, NULL, &r), 200, "%s", r.body);
    resp_free(&r);
    int fd = tcp_connect(d.port);
    const char *req = "GET /fn/slowpoke?ms=600 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    tcp_send_all(fd, req, strlen(req));
    usleep(150000); /* the call is running */
    kill(d.pid, SIGTERM);
    char *out = tcp_read_all(fd, 10000, NULL);
    close(fd);
    cr_expect(strncmp(out, "HTTP/1.1 200", 12) == 0, "the running call finished: %s", out);
    cr_expect(strstr(out, "slept 600"), "%s", out);
    free(out);
    /* the drain ends by itself: the daemon exits 0 */
    int status = 0;
    cr_assert_eq(waitpid(d.pid, &status, 0), d.pid);
    d.pid = 0;
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d", status);
}

Test(invoke, kill9_takes_the_sandboxes_along_and_restart_works)
{
    deploy("phoenix", "t_counter.so", NULL);
    expect_works("/fn/phoenix");
    emberd_kill9(&d);
    /* stem cells, the zygote and its instances die with the daemon */
    char what[512];
    cr_expect(!emberd_leftovers(&d, what, sizeof(what)), "left behind: %s", what);
    cr_assert_eq(emberd_start(&d, NULL), 0);
    expect_works("/fn/phoenix");
}

/* A warm call wakes its instance once: the agent waits for calls in poll,
 * not in a unix stream recvmsg, where emberd's read of the previous answer
 * would wake it a second time. And sandboxes run as SCHED_BATCH, so that a
 * woken instance does not preempt emberd. */
Test(invoke, an_instance_wakes_once_per_call_and_runs_as_batch)
{
    deploy("waker", "t_noop.so", NULL);
    struct resp r;
    cr_assert_eq(call("/fn/waker/", NULL, NULL, &r), 200);
    resp_free(&r);
    usleep(200000); /* the stem cell refill settles */

    struct warm_wakeups w;
    cr_assert_eq(warm_wakeups(&d, "/fn/waker/", "ember-agent", 200, &w), 0);
    char why[160];
    cr_expect(warm_wakeups_ok(&w, 200, why, sizeof(why)), "%s", why);
}

static bool count_zombie(pid_t pid, const char *status, void *data)
{
    (void)pid;
    if (proc_status_dead(status))
        ++*(int *)data;
    return true;
}

/* Zombies among the children of each ember-agent under emberd. */
static bool zombies_under_agent(pid_t pid, const char *status, void *data)
{
    if (strncmp(status, "Name:\tember-agent\n", 18) != 0)
        return true;
    proc_children_each(pid, count_zombie, data);
    proc_children_each(pid, zombies_under_agent, data);
    return true;
}

/* An exec handler that leaves a background process behind, on a function
 * with concurrency 2: the orphans are reaped (by the zygote, whose
 * namespace they are in), not left as zombies until the pids limit stops
 * every fork of the function. */
Test(invoke, orphans_of_concurrent_exec_calls_are_reaped)
{
    static const char manifest[] =
        "{\"runtime\": \"exec\", \"handler\": \"bg.sh\", \"concurrency\": 2}";
    static const char script[] = "#!/bin/sh\n"
                                 "(sleep 0.01 &)\n"
                                 "echo 'Content-Type: text/plain'\n"
                                 "echo\n"
                                 "echo ok\n";
    deploy_exec("bg", manifest, "bg.sh", script);
    struct resp r;
    for (int i = 0; i < 40; i++) {
        cr_assert_eq(call("/fn/bg/", NULL, NULL, &r), 200, "call %d: %s", i, r.body);
        resp_free(&r);
    }
    int zombies = 0;
    for (int i = 0; i < 50; i++) {
        usleep(20000); /* the last sleeps end */
        zombies = 0;
        proc_children_each(d.pid, zombies_under_agent, &zombies);
        if (zombies == 0)
            break;
    }
    cr_expect_eq(zombies, 0, "%d zombies left in the function's sandboxes", zombies);
}
