/* test_pool.c - the warm pool against the real emberd and real sandboxes:
 * stem cells, zygote scale-out, fresh_per_call, keep-alive, min_warm, the
 * memory budget, and live knob changes through PATCH /v1/pool. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static struct emberd d;

static void start_with(const char *const *args)
{
    const char *why = need_root_and_namespaces();
    if (why)
        cr_skip_test("%s", why);
    memset(&d, 0, sizeof(d));
    cr_assert_eq(emberd_start(&d, args), 0);
}

static void start(void)
{
    start_with(NULL);
}

static void stop(void)
{
    if (d.pid > 0)
        cr_expect_eq(emberd_stop(&d), 0, "emberd must drain and exit 0");
    emberd_cleanup(&d);
}

TestSuite(pool, .init = start, .fini = stop, .timeout = 120);

/* Start emberd again with --config holding @json, so that the knobs hold
 * from its first moment. */
static void restart_with_config(const char *json)
{
    emberd_stop(&d);
    emberd_cleanup(&d);
    char cfg[256];
    snprintf(cfg, sizeof(cfg), "/tmp/ember-cfg-%d.json", getpid());
    FILE *f = fopen(cfg, "w");
    cr_assert(f);
    fputs(json, f);
    fclose(f);
    const char *args[] = {"--config", cfg, NULL};
    start_with(args);
    unlink(cfg);
}

static void deploy(const char *name, const char *so, const char *extra)
{
    int status = deploy_test_function(d.port, name, so, extra);
    cr_assert(status == 201 || status == 200, "deploy %s: %d", name, status);
}

/* GET @target, which must answer 200; the caller frees @r. */
static void get_ok(const char *target, struct resp *r)
{
    cr_assert_eq(http_call(d.port, "GET", target, NULL, NULL, 0, r), 0);
    cr_assert_eq(r->status, 200, "%s: %s", target, r->body);
}

static int patch(const char *json, struct resp *r)
{
    cr_assert_eq(http_call(d.port, "PATCH", "/v1/pool", NULL, json, strlen(json), r), 0);
    return r->status;
}

static void patch_ok(const char *json)
{
    struct resp r;
    cr_assert_eq(patch(json, &r), 200, "PATCH %s: %s", json, r.body);
    resp_free(&r);
}

static json_t *get_json(const char *target)
{
    struct resp r;
    cr_assert_eq(http_call(d.port, "GET", target, NULL, NULL, 0, &r), 0);
    cr_assert_eq(r.status, 200, "%s: %s", target, r.body);
    json_t *j = json_loads(r.body, 0, NULL);
    cr_assert(j, "%s is JSON", target);
    resp_free(&r);
    return j;
}

static char *acquire_of(const struct resp *r)
{
    char *st = resp_header(r, "Server-Timing");
    cr_assert(st);
    char *p = strstr(st, "desc=\"");
    cr_assert(p, "%s", st);
    p += 6;
    char *kind = strndup(p, strcspn(p, "\""));
    free(st);
    return kind;
}

static json_int_t instances(const char *name, const char *state)
{
    int n = fn_instances(d.port, name, state);
    cr_assert_geq(n, 0, "stats of %s", name);
    return n;
}

static void wait_stems_ready(int want)
{
    for (int i = 0; i < 400; i++) {
        json_t *j = get_json("/v1/pool");
        json_int_t ready = json_integer_value(json_object_get(
            json_object_get(json_object_get(json_object_get(j, "state"), "backends"),
                            "container"),
            "stem_cells_ready"));
        json_decref(j);
        if (ready >= want)
            return;
        usleep(10000);
    }
    cr_assert_fail("stem cells never became ready");
}

Test(pool, cold_call_uses_a_stem_cell)
{
    patch_ok("{\"stem_cells\": 2}");
    wait_stems_ready(2);
    deploy("stemmy", "t_echo.so", NULL);
    struct resp r;
    cr_assert_eq(http_call(d.port, "GET", "/fn/stemmy", NULL, NULL, 0, &r), 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    char *kind = acquire_of(&r);
    cr_expect_str_eq(kind, "stem");
    free(kind);
    resp_free(&r);
    /* the pool refills in the background */
    wait_stems_ready(2);
}

Test(pool, cold_call_without_stem_cells)
{
    patch_ok("{\"stem_cells\": 0}");
    deploy("frozen", "t_echo.so", NULL);
    struct resp r;
    cr_assert_eq(http_call(d.port, "GET", "/fn/frozen", NULL, NULL, 0, &r), 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    char *kind = acquire_of(&r);
    cr_expect_str_eq(kind, "cold");
    free(kind);
    resp_free(&r);
}

struct slow_call {
    char kind[32];
    int status;
};

static void *slow(void *arg)
{
    struct slow_call *c = arg;
    struct resp r;
    if (http_call(d.port, "GET", "/fn/slow?ms=400", NULL, NULL, 0, &r) == 0) {
        c->status = r.status;
        char *k = r.status == 200 ? acquire_of(&r) : strdup("error");
        snprintf(c->kind, sizeof(c->kind), "%s", k);
        free(k);
    }
    resp_free(&r);
    return NULL;
}

Test(pool, scale_out_forks_from_the_zygote)
{
    deploy("slow", "t_sleep.so", NULL);
    struct resp r;
    get_ok("/fn/slow?ms=1", &r);
    /* The first instance is the specialized sandbox itself, no fork... */
    char *first = acquire_of(&r);
    cr_expect(strcmp(first, "stem") == 0 || strcmp(first, "cold") == 0, "first call: %s", first);
    free(first);
    resp_free(&r);
    cr_expect_eq(instances("slow", "idle"), 1);
    /* ...and the zygote for scale-out is made after that call, off its path. */
    int waited = 0;
    while (instances("slow", "zygote") != 1 && waited++ < 300)
        usleep(10000);
    cr_assert_eq(instances("slow", "zygote"), 1, "the zygote was made in the background");

    pthread_t th[3];
    struct slow_call calls[3] = {0};
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, slow, &calls[i]);
    int zygote = 0;
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        cr_expect_eq(calls[i].status, 200);
        if (strcmp(calls[i].kind, "zygote") == 0)
            zygote++;
    }
    cr_expect_geq(zygote, 2, "concurrent calls past the warm instance fork from the zygote");
}

/* @callers threads make @calls calls each to @target; every one must be
 * served. */
static void bursts(const char *target, int callers, int calls)
{
    int ok = concurrent_gets(d.port, target, callers, calls);
    cr_expect_eq(ok, callers * calls, "%s: %d of %d calls served", target, ok, callers * calls);
}

/* Calls that run for microseconds: a caller that finds every instance busy
 * waits for one (POOL_SCALE_OUT_WAIT_US) rather than make a new one per
 * concurrent caller, and every call is served. */
Test(pool, short_calls_wait_rather_than_scale_out)
{
    deploy("quick", "t_echo.so", NULL);
    for (int i = 0; i < 40; i++) { /* the pool learns how long a call runs */
        struct resp r;
        get_ok("/fn/quick", &r);
        resp_free(&r);
    }

    enum { CALLERS = 8, CALLS = 25 };
    bursts("/fn/quick", CALLERS, CALLS);
    json_t *j = get_json("/v1/functions/quick");
    json_t *acq = json_object_get(json_object_get(j, "stats"), "acquired");
    double run_p50 = json_real_value(json_object_get(
        json_object_get(json_object_get(j, "stats"), "run_latency"), "p50_ms"));
    json_int_t made = 0;
    const char *kinds[] = {"zygote", "stem", "snapshot", "cold"};
    for (size_t i = 0; i < 4; i++)
        made += json_integer_value(json_object_get(acq, kinds[i]));
    json_decref(j);
    cr_expect_lt(made, CALLERS, "%lld instances made for %d concurrent callers (run p50 %.3f ms)",
                 (long long)made, CALLERS, run_p50);

    /* scale_out_wait_us 0 (per function): every caller that finds the
     * instances busy gets a new one at once */
    patch_ok("{\"keepalive_ms\": 0}");
    for (int i = 0; i < 100 && fn_instances(d.port, "quick", "idle") > 0; i++)
        usleep(20000);
    patch_ok("{\"keepalive_ms\": 600000, \"functions\": {\"quick\": {\"scale_out_wait_us\": 0}}}");
    bursts("/fn/quick", CALLERS, CALLS);
    cr_expect_geq(fn_instances(d.port, "quick", "idle"), 2, "without waiting the pool scales out");
}

/* One instance, calls from several callers: calls wait inside the busy
 * instance (sent ahead) and run in turn; one that waits behind a call
 * that crashes or times out never started, so it runs on a new instance. */
Test(pool, calls_sent_ahead)
{
    deploy("ahead", "t_sleep.so", "\"timeout_ms\": 1000");
    patch_ok("{\"functions\": {\"ahead\": {\"max_instances\": 1, "
             "\"scale_out_wait_us\": 2000000}}}");
    for (int i = 0; i < 20; i++) { /* the pool learns how long a call runs */
        struct resp r;
        get_ok("/fn/ahead?ms=0", &r);
        resp_free(&r);
    }
    bursts("/fn/ahead?ms=0", 4, 25);
    cr_expect_gt(fn_stat(d.port, "ahead", "sent_ahead"), 0);
    cr_expect_eq(fn_stat(d.port, "ahead", "requeued"), 0);

    static const struct {
        const char *first;
        int status;
    } behind[] = {{"/fn/ahead?ms=300&crash=1", 502}, {"/fn/ahead?ms=3000", 504}};
    for (size_t k = 0; k < 2; k++) {
        long long ahead = fn_stat(d.port, "ahead", "sent_ahead");
        struct bg_get first;
        bg_get_start(&first, d.port, behind[k].first);
        usleep(100000);
        struct resp r;
        get_ok("/fn/ahead?ms=0", &r);
        cr_expect_str_eq(r.body, "slept 0");
        resp_free(&r);
        bg_get_join(&first);
        cr_expect_eq(first.status, behind[k].status, "%s: %s", first.target, first.body);
        cr_expect_eq(fn_stat(d.port, "ahead", "sent_ahead"), ahead + 1);
        cr_expect_eq(fn_stat(d.port, "ahead", "requeued"), (long long)k + 1);
    }
}

Test(pool, fresh_per_call_keeps_no_state)
{
    deploy("fresh", "t_counter.so", "\"fresh_per_call\": true");
    for (int i = 0; i < 5; i++) {
        struct resp r;
        cr_assert_eq(http_call(d.port, "GET", "/fn/fresh", NULL, NULL, 0, &r), 0);
        cr_assert_eq(r.status, 200, "%s", r.body);
        cr_expect_eq(atoi(r.body), 1, "call %d saw count %s", i, r.body);
        resp_free(&r);
    }
    /* and without it, state survives in the warm instance */
    deploy("sticky", "t_counter.so", NULL);
    int last = 0;
    for (int i = 0; i < 3; i++) {
        struct resp r;
        cr_assert_eq(http_call(d.port, "GET", "/fn/sticky", NULL, NULL, 0, &r), 0);
        last = atoi(r.body);
        resp_free(&r);
    }
    cr_expect_eq(last, 3);
}

Test(pool, keepalive_expiry_and_min_warm)
{
    patch_ok("{\"keepalive_ms\": 200}");
    deploy("brief", "t_echo.so", NULL);
    struct resp r;
    cr_assert_eq(http_call(d.port, "GET", "/fn/brief", NULL, NULL, 0, &r), 0);
    resp_free(&r);
    cr_expect_eq(instances("brief", "idle"), 1);
    usleep(600000);
    cr_expect_eq(instances("brief", "idle"), 0, "idle instance destroyed after keep-alive");

    deploy("kept", "t_echo.so", NULL);
    patch_ok("{\"functions\": {\"kept\": {\"min_warm\": 2}}}");
    json_int_t idle = 0;
    for (int i = 0; i < 200 && idle < 2; i++) {
        usleep(20000);
        idle = instances("kept", "idle");
    }
    cr_expect_eq(idle, 2, "min_warm provisions instances without calls");
    usleep(600000);
    cr_expect_eq(instances("kept", "idle"), 2, "min_warm instances survive keep-alive");
}

static void *hold(void *arg)
{
    (void)arg;
    struct resp r;
    http_call(d.port, "GET", "/fn/holder?ms=1500", NULL, NULL, 0, &r);
    resp_free(&r);
    return NULL;
}

static json_int_t metric(const char *name)
{
    struct resp r;
    cr_assert_eq(http_call(d.port, "GET", "/metrics", NULL, NULL, 0, &r), 0);
    char *p = strstr(r.body, name);
    json_int_t v = -1;
    while (p) {
        if ((p == r.body || p[-1] == '\n') && p[strlen(name)] == ' ') {
            v = strtoll(p + strlen(name) + 1, NULL, 10);
            break;
        }
        p = strstr(p + 1, name);
    }
    resp_free(&r);
    return v;
}

Test(pool, memory_budget_evicts_then_refuses)
{
    /* 60 MiB: one instance at 48 MiB fits, two do not (a function's first
     * instance serves by itself; its zygote is made only if it fits). Set
     * from the start (--config) so the peak covers the whole run. */
    restart_with_config("{\"stem_cells\": 0, \"memory_budget_mb\": 60, \"queue_timeout_ms\": 300}");
    deploy("mem-a", "t_echo.so", "\"memory_mb\": 48");
    deploy("mem-b", "t_echo.so", "\"memory_mb\": 48");
    deploy("holder", "t_sleep.so", "\"memory_mb\": 48");
    struct resp r;
    cr_assert_eq(http_call(d.port, "GET", "/fn/mem-a", NULL, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 200, "%s", r.body);
    resp_free(&r);
    /* b needs a's memory: a's idle instance is evicted */
    cr_assert_eq(http_call(d.port, "GET", "/fn/mem-b", NULL, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 200, "%s", r.body);
    resp_free(&r);
    cr_expect_eq(instances("mem-a", "idle"), 0, "a was evicted");
    cr_expect_geq(metric("ember_pool_evictions_total"), 1);

    /* a busy instance cannot be evicted: the next function waits, then 429 */
    pthread_t th;
    pthread_create(&th, NULL, hold, NULL);
    usleep(500000);
    cr_assert_eq(http_call(d.port, "GET", "/fn/mem-a", NULL, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 429, "%s", r.body);
    char *ra = resp_header(&r, "Retry-After");
    cr_expect(ra != NULL, "429 carries Retry-After");
    free(ra);
    resp_free(&r);
    pthread_join(th, NULL);

    json_int_t peak = metric("ember_pool_memory_peak_bytes");
    cr_expect(peak > 0 && peak <= 60ll << 20, "peak %lld within the budget", (long long)peak);
}

Test(pool, patch_validates_and_applies)
{
    const char *bad[] = {
        "{\"stem_cells\": -1}",        "{\"stem_cells\": \"x\"}",
        "{\"stem_cells\": {\"nope\": 1}}", "{\"keepalive_ms\": -5}",
        "{\"min_warm\": 2000}",        "{\"max_instances\": 0}",
        "{\"max_calls_per_instance\": 1.5}", "{\"queue_length\": -1}",
        "{\"queue_timeout_ms\": true}", "{\"memory_budget_mb\": 1}",
        "{\"bogus\": 1}",              "[1]",
        "{\"functions\": {\"Bad_Name\": {}}}", "{\"functions\": {\"ok\": {\"memory_budget_mb\": 5}}}",
        "{\"scale_out_wait_us\": -1}", "{\"zygote_prefork\": 2}",
    };
    const char *named[] = {"stem_cells", "stem_cells", "nope", "keepalive_ms", "min_warm",
                           "max_instances", "max_calls_per_instance", "queue_length",
                           "queue_timeout_ms", "memory_budget_mb", "bogus", "object",
                           "Bad_Name", "memory_budget_mb", "scale_out_wait_us",
                           "zygote_prefork"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct resp r;
        cr_expect_eq(patch(bad[i], &r), 400, "%s -> %d", bad[i], r.status);
        cr_expect(strstr(r.body, named[i]), "%s: message names %s: %s", bad[i], named[i],
                  r.body);
        resp_free(&r);
    }
    patch_ok("{\"stem_cells\": 3, \"keepalive_ms\": 1234, \"min_warm\": 0, "
             "\"max_instances\": 7, \"max_calls_per_instance\": 100, \"queue_length\": 9, "
             "\"queue_timeout_ms\": 999, \"memory_budget_mb\": 4096, \"scale_out_wait_us\": 250, "
             "\"zygote_prefork\": 0}");
    json_t *j = get_json("/v1/pool");
    cr_expect_eq(json_integer_value(json_object_get(j, "scale_out_wait_us")), 250);
    cr_expect_eq(json_integer_value(json_object_get(j, "zygote_prefork")), 0);
    cr_expect_eq(json_integer_value(json_object_get(j, "keepalive_ms")), 1234);
    cr_expect_eq(json_integer_value(json_object_get(j, "max_instances")), 7);
    cr_expect_eq(json_integer_value(json_object_get(j, "max_calls_per_instance")), 100);
    cr_expect_eq(json_integer_value(json_object_get(j, "queue_length")), 9);
    cr_expect_eq(json_integer_value(json_object_get(j, "queue_timeout_ms")), 999);
    cr_expect_eq(json_integer_value(json_object_get(j, "memory_budget_mb")), 4096);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(j, "stem_cells"), "container")), 3);
    json_decref(j);
    wait_stems_ready(3);
}

Test(pool, max_calls_per_instance_recycles)
{
    patch_ok("{\"max_calls_per_instance\": 2}");
    deploy("recycled", "t_counter.so", NULL);
    int counts[4];
    for (int i = 0; i < 4; i++) {
        struct resp r;
        cr_assert_eq(http_call(d.port, "GET", "/fn/recycled", NULL, NULL, 0, &r), 0);
        counts[i] = atoi(r.body);
        resp_free(&r);
    }
    cr_expect(counts[0] == 1 && counts[1] == 2 && counts[2] == 1 && counts[3] == 2,
              "counts %d %d %d %d", counts[0], counts[1], counts[2], counts[3]);
}

Test(pool, config_file_sets_knobs)
{
    restart_with_config("{\"keepalive_ms\": 4321, \"stem_cells\": {\"container\": 1}}");
    json_t *j = get_json("/v1/pool");
    cr_expect_eq(json_integer_value(json_object_get(j, "keepalive_ms")), 4321);
    json_decref(j);
}

Test(pool, metrics_count_acquire_kinds)
{
    deploy("counted", "t_echo.so", NULL);
    for (int i = 0; i < 3; i++) {
        struct resp r;
        http_call(d.port, "GET", "/fn/counted", NULL, NULL, 0, &r);
        resp_free(&r);
    }
    struct resp r;
    cr_assert_eq(http_call(d.port, "GET", "/metrics", NULL, NULL, 0, &r), 0);
    cr_expect(strstr(r.body, "ember_acquires_total{function=\"counted\",kind=\"warm\"} 2"),
              "%s", r.body);
    cr_expect(strstr(r.body, "ember_run_seconds_bucket{function=\"counted\",le=\"+Inf\"} 3"));
    resp_free(&r);
}

static json_int_t charged(void)
{
    json_t *j = get_json("/v1/pool");
    json_int_t v =
        json_integer_value(json_object_get(json_object_get(j, "state"), "memory_charged_bytes"));
    json_decref(j);
    return v;
}

/* Wait (up to 2 s) for the ledger to show @want bytes. */
static json_int_t charged_settles(json_int_t want)
{
    json_int_t v = -1;
    for (int i = 0; i < 200 && (v = charged()) != want; i++)
        usleep(10000);
    return v;
}

static bool count_live(pid_t pid, const char *status, void *data)
{
    if (!proc_status_dead(status))
        ++*(int *)data;
    return true;
}

static bool count_live_children(pid_t pid, const char *status, void *data)
{
    if (!proc_status_dead(status))
        proc_children_each(pid, count_live, data);
    return true;
}

/* Wait (up to 2 s) until the sandboxes under emberd have exactly one live
 * child between them: with one function whose instances go after each
 * call, that is its zygote's instance forked ahead, waiting. */
static bool one_waits_ahead(void)
{
    for (int i = 0; i < 200; i++) {
        int n = 0;
        proc_children_each(d.pid, count_live_children, &n);
        if (n == 1)
            return true;
        usleep(10000);
    }
    return false;
}

static void counts_one(const char *target, int calls)
{
    for (int i = 0; i < calls; i++) {
        struct resp r;
        cr_assert_eq(http_call(d.port, "GET", target, NULL, NULL, 0, &r), 0);
        cr_assert_eq(r.status, 200, "%s", r.body);
        cr_expect_eq(atoi(r.body), 1, "call %d saw count %s", i, r.body);
        resp_free(&r);
    }
}

Test(pool, zygote_forks_ahead_within_the_ledger)
{
    /* No stem cells, so that the ledger holds only this function. */
    restart_with_config("{\"stem_cells\": 0}");
    const json_int_t mb32 = 32ll << 20;
    deploy("ahead", "t_counter.so", "\"fresh_per_call\": true, \"memory_mb\": 32");

    /* Each call's instance was forked before the call (after the previous
     * call's fork), from the zygote's state: it has served nothing. */
    counts_one("/fn/ahead", 6);
    json_int_t ahead = metric("ember_pool_forked_ahead_total");
    cr_expect_geq(ahead, 3, "instances forked ahead: %lld", (long long)ahead);
    /* The zygote and the instance that waits are charged; nothing else. */
    cr_expect_eq(charged_settles(2 * mb32), 2 * mb32);

    /* Off for this function: the waiting instance goes with its charge,
     * and scale-out forks on the path again. */
    patch_ok("{\"functions\": {\"ahead\": {\"zygote_prefork\": 0}}}");
    cr_expect_eq(charged_settles(mb32), mb32);
    counts_one("/fn/ahead", 3);
    cr_expect_eq(metric("ember_pool_forked_ahead_total"), ahead);
    cr_expect_eq(charged_settles(mb32), mb32);

    /* Back on: charged again, and the next calls but one find one waiting. */
    patch_ok("{\"functions\": {\"ahead\": {\"zygote_prefork\": null}}}");
    cr_expect_eq(charged_settles(2 * mb32), 2 * mb32);
    counts_one("/fn/ahead", 3);
    json_int_t ahead_on = metric("ember_pool_forked_ahead_total");
    cr_expect_geq(ahead_on, ahead + 2);

    /* A budget with room for the zygote, its child and nothing more: the
     * next call's instance is that child, which takes over its charge, and
     * no other is forked ahead while the budget has no room for it. */
    cr_expect_eq(charged_settles(2 * mb32), 2 * mb32);
    patch_ok("{\"memory_budget_mb\": 80}");
    cr_expect_eq(charged(), 2 * mb32, "within the budget: nothing taken back");
    /* (The zygote forks it once the last call's instance is up and the
     * next group made: a call sent sooner would find none waiting.) */
    cr_assert(one_waits_ahead(), "an instance waits forked ahead");
    counts_one("/fn/ahead", 1);
    cr_expect_eq(metric("ember_pool_forked_ahead_total"), ahead_on + 1);
    cr_expect_eq(charged_settles(mb32), mb32);
    counts_one("/fn/ahead", 2);
    cr_expect_eq(instances("ahead", "zygote"), 1);
    cr_expect_eq(metric("ember_pool_forked_ahead_total"), ahead_on + 1);

    /* Room again: forked ahead again. Another function's instance that
     * needs the room takes it back before anything is evicted. */
    patch_ok("{\"memory_budget_mb\": 100}");
    cr_expect_eq(charged_settles(2 * mb32), 2 * mb32);
    deploy("other", "t_echo.so", "\"memory_mb\": 48");
    struct resp r;
    cr_assert_eq(http_call(d.port, "GET", "/fn/other", NULL, NULL, 0, &r), 0);
    cr_expect_eq(r.status, 200, "%s", r.body);
    resp_free(&r);
    cr_expect_eq(charged_settles(mb32 + (48ll << 20)), mb32 + (48ll << 20));
    cr_expect_eq(instances("ahead", "zygote"), 1);
    cr_expect_eq(metric("ember_pool_evictions_total"), 0);
}
