/* test_bench.c - ember-bench against the real emberd: a one-second open-loop
 * run prints JSON with answers and no errors, and a two-value sweep writes
 * its CSV and SVG and puts the knob back; ember-probe prints its platform
 * costs. Smoke tests: they check that the tools work end to end, not how
 * fast anything is. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sched.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

extern char **environ;

static struct emberd d;
static char work[PATH_MAX];
static char url[64];

static void start(void)
{
    /* Root only: emberd runs its sandboxes with or without user namespaces. */
    if (geteuid() != 0)
        cr_skip_test("needs root (emberd's sandboxes use namespaces and cgroups)");
    char exe[PATH_MAX];
    if (access(build_path("ember-bench", exe), X_OK) != 0)
        cr_skip_test("%s is not built", exe);
    memset(&d, 0, sizeof(d));
    cr_assert_eq(emberd_start(&d, NULL), 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", (unsigned)d.port);
    snprintf(work, sizeof(work), "/tmp/ember-test-bench.XXXXXX");
    cr_assert(mkdtemp(work), "mkdtemp: %s", strerror(errno));

    struct resp r;
    int status =
        deploy_native(d.port, "noop", "{\"runtime\": \"native\", \"handler\": \"t_noop.so\"}",
                      "tests/functions/t_noop.so", "t_noop.so", &r);
    cr_assert(status == 201 || status == 200, "deploy noop: %d %s", status, r.body);
    resp_free(&r);
}

static void remove_work(void)
{
    if (!work[0])
        return;
    const char *files[] = {"out.json", "sweep.out", "sweep.csv", "sweep.svg", "probe.out"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char p[PATH_MAX + 32];
        snprintf(p, sizeof(p), "%s/%s", work, files[i]);
        unlink(p);
    }
    rmdir(work);
    work[0] = '\0';
}

static void stop(void)
{
    remove_work();
    if (d.pid > 0)
        cr_expect_eq(emberd_stop(&d), 0, "emberd must drain and exit 0");
    emberd_cleanup(&d);
}

TestSuite(bench, .init = start, .fini = stop, .timeout = 120);

/* Run build/@tool @args (NULL-terminated) with stdout into @out_path; the
 * exit status, or -1 if it did not exit normally. */
static int run_tool(const char *tool, const char *const *args, const char *out_path)
{
    char exe[PATH_MAX];
    build_path(tool, exe);
    const char *argv[32];
    size_t n = 0;
    argv[n++] = exe;
    for (size_t i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out_path, O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    pid_t pid;
    int rc = posix_spawn(&pid, exe, &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    cr_assert_eq(rc, 0, "posix_spawn %s: %s", exe, strerror(rc));
    int status;
    while (waitpid(pid, &status, 0) < 0)
        cr_assert_eq(errno, EINTR, "waitpid: %s", strerror(errno));
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static const char *in_work(const char *name, char buf[PATH_MAX + 32])
{
    snprintf(buf, PATH_MAX + 32, "%s/%s", work, name);
    return buf;
}

Test(bench, run_prints_json_with_answers_and_no_errors)
{
    char out[PATH_MAX + 32];
    const char *args[] = {"run",        "--url",   url,      "--function", "noop",
                          "--duration", "1",       "--rate", "50",         "--connections",
                          "4",          "--quiet", "--json", NULL};
    cr_assert_eq(run_tool("ember-bench", args, in_work("out.json", out)), 0,
                 "ember-bench run failed");

    json_error_t jerr;
    json_t *j = json_load_file(out, 0, &jerr);
    cr_assert(j, "output is not JSON: %s (line %d)", jerr.text, jerr.line);
    json_int_t completed = json_integer_value(json_object_get(j, "completed"));
    json_int_t scheduled = json_integer_value(json_object_get(j, "scheduled"));
    cr_expect_gt(completed, 0, "some calls answered");
    cr_expect_eq(completed, scheduled, "every scheduled call answered (%lld of %lld)",
                 (long long)completed, (long long)scheduled);
    cr_expect_eq(json_integer_value(json_object_get(j, "errors")), 0, "no errors");
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(j, "status"), "200")),
                 completed, "all 200");

    /* The daemon's Server-Timing was understood: every answer named its acquire kind. */
    json_t *acq = json_object_get(j, "acquire");
    cr_expect_eq(json_integer_value(json_object_get(acq, "none")), 0,
                 "every response carried Server-Timing acquire");
    cr_expect_gt(json_integer_value(json_object_get(acq, "warm")), 0, "warm calls seen");
    json_t *cold = json_object_get(j, "cold_ratio");
    cr_expect(json_is_number(cold) && json_number_value(cold) >= 0 && json_number_value(cold) <= 1,
              "cold_ratio is a ratio");
    json_t *lat = json_object_get(j, "latency_ms");
    double p50 = json_number_value(json_object_get(lat, "p50"));
    double p99 = json_number_value(json_object_get(lat, "p99"));
    cr_expect(p50 > 0 && p99 >= p50, "percentiles ordered: p50 %f p99 %f", p50, p99);
    cr_expect(json_is_number(json_object_get(json_object_get(j, "phase_means_ms"), "run")),
              "run phase mean reported");
    json_decref(j);
}

static char *slurp(const char *path)
{
    char *s = read_file(path, NULL);
    cr_assert(s, "%s missing", path);
    return s;
}

static json_t *pool_state(void)
{
    struct resp r;
    cr_assert_eq(http_call(d.port, "GET", "/v1/pool", NULL, NULL, 0, &r), 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *j = json_loads(r.body, 0, NULL);
    resp_free(&r);
    cr_assert(j, "GET /v1/pool is JSON");
    return j;
}

Test(bench, sweep_writes_csv_and_svg_and_restores_the_knob)
{
    json_t *before = pool_state();
    json_int_t keepalive = json_integer_value(json_object_get(before, "keepalive_ms"));
    json_decref(before);

    char out[PATH_MAX + 32], csv[PATH_MAX + 32], svg[PATH_MAX + 32];
    const char *args[] = {"sweep",
                          "--url",
                          url,
                          "--function",
                          "noop",
                          "--duration",
                          "1",
                          "--rate",
                          "20",
                          "--connections",
                          "4",
                          "--knob",
                          "keepalive_ms",
                          "--values",
                          "30000,60000",
                          "--settle-ms",
                          "0",
                          "--target",
                          "p99=10s",
                          "--csv",
                          in_work("sweep.csv", csv),
                          "--svg",
                          in_work("sweep.svg", svg),
                          "--quiet",
                          NULL};
    cr_assert_eq(run_tool("ember-bench", args, in_work("sweep.out", out)), 0,
                 "ember-bench sweep failed");

    char *table = slurp(out);
    cr_expect(strstr(table, "smallest keepalive_ms meeting p99=10s: 30000"),
              "names the smallest setting: %s", table);
    free(table);

    char *c = slurp(csv);
    cr_expect_eq(strncmp(c, "knob,value,", 11), 0, "CSV header: %s", c);
    cr_expect(strstr(c, "\nkeepalive_ms,30000,"), "row for 30000: %s", c);
    cr_expect(strstr(c, "\nkeepalive_ms,60000,"), "row for 60000: %s", c);
    size_t lines = 0;
    for (const char *p = c; *p; p++)
        lines += *p == '\n';
    cr_expect_eq(lines, 3, "header and two rows: %s", c);
    free(c);

    char *s = slurp(svg);
    cr_expect_eq(strncmp(s, "<?xml", 5), 0, "SVG prolog");
    cr_expect(strstr(s, "<svg xmlns=\"http://www.w3.org/2000/svg\""), "an svg element");
    cr_expect(strstr(s, "keepalive_ms"), "the knob is labelled");
    size_t len = strlen(s);
    cr_expect(len > 7 && strcmp(s + len - 7, "</svg>\n") == 0, "complete document");
    free(s);

    json_t *after = pool_state();
    cr_expect_eq(json_integer_value(json_object_get(after, "keepalive_ms")), keepalive,
                 "keepalive_ms restored after the sweep");
    json_decref(after);
}

Test(bench, sweep_of_an_unknown_knob_fails_cleanly)
{
    char out[PATH_MAX + 32];
    const char *args[] = {"sweep",        "--url",    url,      "--function",  "noop",
                          "--duration",   "1",        "--rate", "5",           "--knob",
                          "no_such_knob", "--values", "1",      "--settle-ms", "0",
                          "--quiet",      NULL};
    cr_expect_eq(run_tool("ember-bench", args, in_work("sweep.out", out)), 1,
                 "PATCH refused: exit 1, no load run");
}

Test(bench, probe_prints_every_platform_cost)
{
    char exe[PATH_MAX], out[PATH_MAX + 32];
    if (access(build_path("ember-probe", exe), X_OK) != 0)
        cr_skip_test("%s is not built", exe);
    const char *args[] = {NULL};
    cr_assert_eq(run_tool("ember-probe", args, in_work("probe.out", out)), 0, "ember-probe failed");
    FILE *f = fopen(out, "r");
    cr_assert(f, "%s: %s", out, strerror(errno));
    char line[256];
    int costs = 0, lines = 0;
    while (fgets(line, sizeof(line), f)) {
        lines++;
        double v;
        const char *us = strstr(line, " us\n");
        const char *num = us;
        while (num && num > line && num[-1] != ' ')
            num--;
        if (us && sscanf(num, "%lf", &v) == 1) {
            cr_expect_gt(v, 0.0, "a cost is positive: %s", line);
            costs++;
        }
    }
    fclose(f);
    cpu_set_t allowed;
    int cpus = sched_getaffinity(0, sizeof(allowed), &allowed) == 0 ? CPU_COUNT(&allowed) : 1;
    cr_expect_eq(lines, cpus > 1 ? 5 : 4,
                 "fork, copy-on-write, the wake-ups (one line if one CPU)");
    cr_expect_eq(costs, cpus > 1 ? 5 : 3, "every line but the one-CPU note has a cost in us");
}
