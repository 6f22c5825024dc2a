/* main.c - ember-bench's command line. */
#include "bench/bench.h"
#include "common/cleanup.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#define EXIT_USAGE 2

static const char usage_text[] =
    "usage: ember-bench COMMAND --url http://HOST:PORT [options]\n"
    "\n"
    "Load generator and pool-tuning tool for emberd (or any HTTP server).\n"
    "\n"
    "commands:\n"
    "  run          drive functions with an open-loop arrival pattern and report\n"
    "               throughput, errors, cold-start ratio and latency percentiles\n"
    "  sweep        run the same load once per value of a /v1/pool knob; table, CSV,\n"
    "               SVG chart, and the smallest value that meets --target\n"
    "  deploy-rate  PUT a package N times; packages/s and latency\n"
    "  cold         deploy N functions, call each once (a cold start); first-call\n"
    "               latency and acquire kinds; then delete them\n"
    "\n"
    "common options:\n"
    "  --url URL              emberd base URL (http:// only; loopback recommended)\n"
    "  --token T              bearer token for /v1/ and /metrics (default $EMBER_TOKEN);\n"
    "                         never sent on /fn/ routes\n"
    "  --timeout-ms T         per-request timeout (default 10000)\n"
    "  --json                 machine-readable result on stdout\n"
    "  --quiet                no progress lines on stderr\n"
    "\n"
    "load options (run, sweep):\n"
    "  --function A[,B...]    functions to call, round-robin (not with --pattern trace)\n"
    "  --route fn|invoke      ANY /fn/NAME/PATH (default) or POST /v1/functions/NAME/invoke\n"
    "  --path /P              path after /fn/NAME (default /)\n"
    "  --method M             HTTP method (default POST)\n"
    "  --body STR|@FILE       request body (default none)\n"
    "  --pattern P            constant (default) | poisson | burst | trace\n"
    "  --rate R               total requests/s (constant, poisson)\n"
    "  --burst-size N         burst: N requests at once ...\n"
    "  --burst-interval-ms M  ... every M ms\n"
    "  --trace FILE.csv       trace: rows time_ms,function (header optional)\n"
    "  --duration S           seconds of arrivals (default 10; trace: its span)\n"
    "  --connections C        keep-alive connections = max requests in flight (default 32)\n"
    "  --seed N               Poisson seed (default 1; same seed, same schedule)\n"
    "  --max-requests N       stop scheduling after N requests\n"
    "  --csv FILE             run: one row per request; sweep: one row per setting\n"
    "  --metrics              run: also poll GET /metrics for peak pool memory\n"
    "\n"
    "sweep options:\n"
    "  --knob NAME            a /v1/pool knob: stem_cells, keepalive_ms, min_warm, ...\n"
    "  --values V1,V2,...     settings to try (JSON literals: 4, 0.5, true, or strings)\n"
    "  --settle-ms MS         wait after each PATCH before the load (default 1000)\n"
    "  --target SPEC          p50|p90|p99|p99.9|max=5ms, cold_ratio=0.05, errors=0.01;\n"
    "                         comma-separated conditions must all hold\n"
    "  --svg FILE             chart: latency percentiles and cold-start ratio per setting\n"
    "  --metrics-poll-ms MS   GET /metrics period during each run (default 250)\n"
    "  --no-restore           leave the knob at the last value tried\n"
    "\n"
    "deploy-rate / cold options:\n"
    "  --package FILE         the package (.tar.gz or .zip) to PUT\n"
    "  --package2 FILE        deploy-rate: alternate with this one (new versions)\n"
    "  --name NAME            deploy-rate: PUT every copy to NAME instead of distinct names\n"
    "  --count N              how many (default 100)\n"
    "  --concurrency C        PUTs in flight (default 4; cold calls run one at a time)\n"
    "  --prefix P             function name prefix (default bench-PID-)\n"
    "  --keep                 do not delete the functions afterwards\n"
    "  --no-second            cold: skip the second (warm) call per function\n"
    "\n"
    "exit status: 0 done; 1 could not run or nothing succeeded; 2 bad usage;\n"
    "             3 sweep: no setting meets --target\n"
    "\n"
    "examples:\n"
    "  ember-bench run --url http://127.0.0.1:8080 --function hello --rate 2000 --duration 10\n"
    "  ember-bench sweep --url http://127.0.0.1:8080 --function hello --pattern poisson \\\n"
    "      --rate 200 --duration 5 --knob stem_cells --values 0,1,2,4 --target p99=5ms \\\n"
    "      --csv sweep.csv --svg sweep.svg\n"
    "  ember-bench cold --url http://127.0.0.1:8080 --package noop.tar.gz --count 100\n";

static void usage(FILE *f)
{
    fputs(usage_text, f);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ember-bench: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(ember-bench --help for usage)\n");
    return EXIT_USAGE;
}

enum opt {
    OPT_URL = 256,
    OPT_TOKEN,
    OPT_TIMEOUT,
    OPT_JSON,
    OPT_QUIET,
    OPT_FUNCTION,
    OPT_ROUTE,
    OPT_PATH,
    OPT_METHOD,
    OPT_BODY,
    OPT_PATTERN,
    OPT_RATE,
    OPT_BURST_SIZE,
    OPT_BURST_INTERVAL,
    OPT_TRACE,
    OPT_DURATION,
    OPT_CONNECTIONS,
    OPT_SEED,
    OPT_MAX_REQUESTS,
    OPT_CSV,
    OPT_METRICS,
    OPT_KNOB,
    OPT_VALUES,
    OPT_SETTLE,
    OPT_TARGET,
    OPT_SVG,
    OPT_POLL,
    OPT_NO_RESTORE,
    OPT_PACKAGE,
    OPT_PACKAGE2,
    OPT_NAME,
    OPT_COUNT,
    OPT_CONCURRENCY,
    OPT_PREFIX,
    OPT_KEEP,
    OPT_NO_SECOND,
    OPT_HELP,
};

static const struct option long_opts[] = {
    {"url", required_argument, NULL, OPT_URL},
    {"token", required_argument, NULL, OPT_TOKEN},
    {"timeout-ms", required_argument, NULL, OPT_TIMEOUT},
    {"json", no_argument, NULL, OPT_JSON},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"function", required_argument, NULL, OPT_FUNCTION},
    {"route", required_argument, NULL, OPT_ROUTE},
    {"path", required_argument, NULL, OPT_PATH},
    {"method", required_argument, NULL, OPT_METHOD},
    {"body", required_argument, NULL, OPT_BODY},
    {"pattern", required_argument, NULL, OPT_PATTERN},
    {"rate", required_argument, NULL, OPT_RATE},
    {"burst-size", required_argument, NULL, OPT_BURST_SIZE},
    {"burst-interval-ms", required_argument, NULL, OPT_BURST_INTERVAL},
    {"trace", required_argument, NULL, OPT_TRACE},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"connections", required_argument, NULL, OPT_CONNECTIONS},
    {"seed", required_argument, NULL, OPT_SEED},
    {"max-requests", required_argument, NULL, OPT_MAX_REQUESTS},
    {"csv", required_argument, NULL, OPT_CSV},
    {"metrics", no_argument, NULL, OPT_METRICS},
    {"knob", required_argument, NULL, OPT_KNOB},
    {"values", required_argument, NULL, OPT_VALUES},
    {"settle-ms", required_argument, NULL, OPT_SETTLE},
    {"target", required_argument, NULL, OPT_TARGET},
    {"svg", required_argument, NULL, OPT_SVG},
    {"metrics-poll-ms", required_argument, NULL, OPT_POLL},
    {"no-restore", no_argument, NULL, OPT_NO_RESTORE},
    {"package", required_argument, NULL, OPT_PACKAGE},
    {"package2", required_argument, NULL, OPT_PACKAGE2},
    {"name", required_argument, NULL, OPT_NAME},
    {"count", required_argument, NULL, OPT_COUNT},
    {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
    {"prefix", required_argument, NULL, OPT_PREFIX},
    {"keep", no_argument, NULL, OPT_KEEP},
    {"no-second", no_argument, NULL, OPT_NO_SECOND},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

struct args {
    const char *cmd;
    const char *url, *token;
    uint32_t timeout_ms;
    bool json, quiet;
    const char *functions, *route, *path, *method, *body;
    const char *pattern;
    double rate;
    uint32_t burst_size, burst_interval_ms;
    const char *trace;
    double duration;
    bool duration_set;
    uint32_t connections;
    uint64_t seed, max_requests;
    const char *csv;
    bool metrics;
    const char *knob, *values, *target, *svg;
    uint32_t settle_ms, poll_ms;
    bool no_restore;
    const char *package, *package2, *name, *prefix;
    uint32_t count, concurrency;
    bool concurrency_set;
    bool keep, no_second;
    /* which options were given, to reject the ones a command does not take */
    bool given[OPT_HELP + 1];
};

static int parse_u64(const char *opt, const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || errno || *s == '-' || v < lo || v > hi)
        return usage_error("--%s: expected an integer in [%llu, %llu], got '%s'", opt,
                           (unsigned long long)lo, (unsigned long long)hi, s);
    *out = v;
    return 0;
}

static int parse_u32(const char *opt, const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
    uint64_t v;
    int rc = parse_u64(opt, s, lo, hi, &v);
    if (rc == 0)
        *out = (uint32_t)v;
    return rc;
}

static int parse_pos_double(const char *opt, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !(v > 0) || !isfinite(v))
        return usage_error("--%s: expected a positive number, got '%s'", opt, s);
    *out = v;
    return 0;
}

/* Function names go into URLs unescaped: keep them to the safe set. */
static bool name_ok(const char *s)
{
    if (!*s || strlen(s) > 128)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return false;
    return true;
}

static int split_list(const char *s, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    cleanup_free char *copy = strdup(s);
    if (!copy)
        return -1;
    size_t cap = 8;
    char **v = calloc(cap, sizeof(*v));
    if (!v)
        return -1;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (!*tok)
            continue;
        if (*n == cap) {
            char **w = realloc(v, cap * 2 * sizeof(*v));
            if (!w)
                break;
            v = w;
            cap *= 2;
        }
        v[(*n)++] = strdup(tok);
    }
    *out = v;
    return 0;
}

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int fn_index(char ***names, size_t *n, size_t *cap, const char *name)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*names)[i], name) == 0)
            return (int)i;
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 16;
        char **w = realloc(*names, c * sizeof(**names));
        if (!w)
            return -1;
        *names = w;
        *cap = c;
    }
    (*names)[*n] = strdup(name);
    return (int)(*n)++;
}

static int cmp_event(const void *a, const void *b)
{
    const struct trace_event *x = a, *y = b;
    if (x->t_ns != y->t_ns)
        return x->t_ns < y->t_ns ? -1 : 1;
    return x->fn < y->fn ? -1 : x->fn > y->fn;
}

/* Rows "time_ms,function"; a first row that does not start with a number is
 * a header; blank lines and '#' comments are skipped. Sorted by time. */
static int read_trace(const char *path, char ***names_out, size_t *n_names,
                      struct trace_event **events_out, size_t *n_events)
{
    cleanup_fclose FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "ember-bench: --trace %s: %s\n", path, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t nn = 0, ncap = 0, ne = 0, ecap = 0;
    struct trace_event *ev = NULL;
    char line[1024];
    unsigned lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p || *p == '#')
            continue;
        char *comma = strchr(p, ',');
        char *end;
        double t = strtod(p, &end);
        if (!comma || end == p) {
            if (lineno == 1 || ne == 0)
                continue; /* header */
            fprintf(stderr, "ember-bench: %s:%u: expected time_ms,function\n", path, lineno);
            goto fail;
        }
        while (*end == ' ')
            end++;
        char *fn = comma + 1;
        while (*fn == ' ')
            fn++;
        fn[strcspn(fn, " ,\t")] = '\0';
        if (end != comma || !(t >= 0) || !isfinite(t) || !name_ok(fn)) {
            fprintf(stderr, "ember-bench: %s:%u: bad row (time_ms >= 0, function [A-Za-z0-9._-])\n",
                    path, lineno);
            goto fail;
        }
        int idx = fn_index(&names, &nn, &ncap, fn);
        if (idx < 0)
            goto fail;
        if (ne == ecap) {
            size_t c = ecap ? ecap * 2 : 1024;
            struct trace_event *w = realloc(ev, c * sizeof(*ev));
            if (!w)
                goto fail;
            ev = w;
            ecap = c;
        }
        ev[ne++] = (struct trace_event){(uint64_t)(t * 1e6), (uint32_t)idx};
    }
    if (ne == 0) {
        fprintf(stderr, "ember-bench: --trace %s: no events\n", path);
        goto fail;
    }
    /* Usually sorted already; then keep the file's order for equal times. */
    bool sorted = true;
    for (size_t i = 1; i < ne && sorted; i++)
        sorted = ev[i - 1].t_ns <= ev[i].t_ns;
    if (!sorted)
        qsort(ev, ne, sizeof(*ev), cmp_event);
    *names_out = names;
    *n_names = nn;
    *events_out = ev;
    *n_events = ne;
    return 0;
fail:
    free_list(names, nn);
    free(ev);
    return -1;
}

/* Which commands take which options. */
static bool allowed(const char *cmd, int opt)
{
    static const int common[] = {OPT_URL, OPT_TOKEN, OPT_TIMEOUT, OPT_JSON, OPT_QUIET, OPT_HELP};
    static const int load[] = {OPT_FUNCTION,       OPT_ROUTE,        OPT_PATH,     OPT_METHOD,
                               OPT_BODY,           OPT_PATTERN,      OPT_RATE,     OPT_BURST_SIZE,
                               OPT_BURST_INTERVAL, OPT_TRACE,        OPT_DURATION, OPT_CONNECTIONS,
                               OPT_SEED,           OPT_MAX_REQUESTS, OPT_CSV};
    static const int sweep[] = {OPT_KNOB, OPT_VALUES, OPT_SETTLE,    OPT_TARGET,
                                OPT_SVG,  OPT_POLL,   OPT_NO_RESTORE};
    static const int deploy[] = {OPT_PACKAGE,     OPT_PACKAGE2, OPT_NAME, OPT_COUNT,
                                 OPT_CONCURRENCY, OPT_PREFIX,   OPT_KEEP};
    static const int cold[] = {OPT_PACKAGE, OPT_COUNT,     OPT_CONCURRENCY, OPT_PREFIX,
                               OPT_KEEP,    OPT_NO_SECOND, OPT_METHOD,      OPT_PATH};
    for (size_t i = 0; i < ARRAY_SIZE(common); i++)
        if (common[i] == opt)
            return true;
    bool is_run = strcmp(cmd, "run") == 0, is_sweep = strcmp(cmd, "sweep") == 0;
    if (is_run || is_sweep) {
        for (size_t i = 0; i < ARRAY_SIZE(load); i++)
            if (load[i] == opt)
                return true;
    }
    if (is_run && opt == OPT_METRICS)
        return true;
    if (is_sweep)
        for (size_t i = 0; i < ARRAY_SIZE(sweep); i++)
            if (sweep[i] == opt)
                return true;
    if (strcmp(cmd, "deploy-rate") == 0)
        for (size_t i = 0; i < ARRAY_SIZE(deploy); i++)
            if (deploy[i] == opt)
                return true;
    if (strcmp(cmd, "cold") == 0)
        for (size_t i = 0; i < ARRAY_SIZE(cold); i++)
            if (cold[i] == opt)
                return true;
    return false;
}

static int parse_args(int argc, char **argv, struct args *a)
{
    memset(a, 0, sizeof(*a));
    a->timeout_ms = 10000;
    a->route = "fn";
    a->path = "/";
    a->method = "POST";
    a->pattern = "constant";
    a->duration = 10;
    a->connections = 32;
    a->seed = 1;
    a->settle_ms = 1000;
    a->poll_ms = 250;
    a->count = 100;
    a->concurrency = 4;
    a->token = getenv("EMBER_TOKEN");

    if (argc < 2)
        return usage_error("no command given");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        exit(0);
    }
    a->cmd = argv[1];
    if (strcmp(a->cmd, "run") && strcmp(a->cmd, "sweep") && strcmp(a->cmd, "deploy-rate") &&
        strcmp(a->cmd, "cold"))
        return usage_error("unknown command '%s' (run, sweep, deploy-rate, cold)", a->cmd);

    optind = 2;
    opterr = 0;
    int c, rc, li = -1;
    while ((li = -1, c = getopt_long(argc, argv, ":h", long_opts, &li)) != -1) {
        if (c == 'h')
            c = OPT_HELP;
        if (c == '?')
            return usage_error("unknown option '%s'", argv[optind - 1]);
        if (c == ':')
            return usage_error("option '%s' needs a value", argv[optind - 1]);
        if (!allowed(a->cmd, c))
            return usage_error("'%s' does not take --%s", a->cmd,
                               li >= 0 ? long_opts[li].name : "that option");
        a->given[c] = true;
        switch (c) {
        case OPT_HELP:
            usage(stdout);
            exit(0);
        case OPT_URL:
            a->url = optarg;
            break;
        case OPT_TOKEN:
            a->token = optarg;
            break;
        case OPT_TIMEOUT:
            if ((rc = parse_u32("timeout-ms", optarg, 1, 3600000, &a->timeout_ms)))
                return rc;
            break;
        case OPT_JSON:
            a->json = true;
            break;
        case OPT_QUIET:
            a->quiet = true;
            break;
        case OPT_FUNCTION:
            a->functions = optarg;
            break;
        case OPT_ROUTE:
            a->route = optarg;
            break;
        case OPT_PATH:
            a->path = optarg;
            break;
        case OPT_METHOD:
            a->method = optarg;
            break;
        case OPT_BODY:
            a->body = optarg;
            break;
        case OPT_PATTERN:
            a->pattern = optarg;
            break;
        case OPT_RATE:
            if ((rc = parse_pos_double("rate", optarg, &a->rate)))
                return rc;
            break;
        case OPT_BURST_SIZE:
            if ((rc = parse_u32("burst-size", optarg, 1, 1000000, &a->burst_size)))
                return rc;
            break;
        case OPT_BURST_INTERVAL:
            if ((rc = parse_u32("burst-interval-ms", optarg, 1, 3600000, &a->burst_interval_ms)))
                return rc;
            break;
        case OPT_TRACE:
            a->trace = optarg;
            break;
        case OPT_DURATION:
            if ((rc = parse_pos_double("duration", optarg, &a->duration)))
                return rc;
            if (a->duration > 86400)
                return usage_error("--duration: at most 86400 s");
            a->duration_set = true;
            break;
        case OPT_CONNECTIONS:
            if ((rc = parse_u32("connections", optarg, 1, 20000, &a->connections)))
                return rc;
            break;
        case OPT_SEED:
            if ((rc = parse_u64("seed", optarg, 0, UINT64_MAX, &a->seed)))
                return rc;
            break;
        case OPT_MAX_REQUESTS:
            if ((rc = parse_u64("max-requests", optarg, 1, UINT64_MAX, &a->max_requests)))
                return rc;
            break;
        case OPT_CSV:
            a->csv = optarg;
            break;
        case OPT_METRICS:
            a->metrics = true;
            break;
        case OPT_KNOB:
            a->knob = optarg;
            break;
        case OPT_VALUES:
            a->values = optarg;
            break;
        case OPT_SETTLE:
            if ((rc = parse_u32("settle-ms", optarg, 0, 3600000, &a->settle_ms)))
                return rc;
            break;
        case OPT_TARGET:
            a->target = optarg;
            break;
        case OPT_SVG:
            a->svg = optarg;
            break;
        case OPT_POLL:
            if ((rc = parse_u32("metrics-poll-ms", optarg, 10, 600000, &a->poll_ms)))
                return rc;
            break;
        case OPT_NO_RESTORE:
            a->no_restore = true;
            break;
        case OPT_PACKAGE:
            a->package = optarg;
            break;
        case OPT_PACKAGE2:
            a->package2 = optarg;
            break;
        case OPT_NAME:
            a->name = optarg;
            break;
        case OPT_COUNT:
            if ((rc = parse_u32("count", optarg, 1, 1000000, &a->count)))
                return rc;
            break;
        case OPT_CONCURRENCY:
            if ((rc = parse_u32("concurrency", optarg, 1, 10000, &a->concurrency)))
                return rc;
            break;
        case OPT_PREFIX:
            a->prefix = optarg;
            break;
        case OPT_KEEP:
            a->keep = true;
            break;
        case OPT_NO_SECOND:
            a->no_second = true;
            break;
        default:
            return usage_error("unexpected option");
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (!a->url)
        return usage_error("--url is required");
    if (a->path[0] != '/')
        return usage_error("--path must start with '/'");
    for (const char *m = a->method; *m; m++)
        if (*m < 'A' || *m > 'Z')
            return usage_error("--method '%s': expected an upper-case token like POST", a->method);
    if (!*a->method)
        return usage_error("--method is empty");
    return 0;
}

/* Build the load from the arguments; owned pieces go back through the out
 * pointers for main to free. */
static int build_load(const struct args *a, const struct bench_target *t, struct load_config *cfg,
                      char ***names, size_t *n_names, struct trace_event **events, char **body)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->target = t;
    cfg->timeout_ms = a->timeout_ms;
    cfg->connections = a->connections;
    cfg->seed = a->seed;
    cfg->max_requests = a->max_requests;
    cfg->quiet = a->quiet;
    cfg->duration_s = a->duration;

    if (strcmp(a->pattern, "constant") == 0)
        cfg->pattern = PAT_CONSTANT;
    else if (strcmp(a->pattern, "poisson") == 0)
        cfg->pattern = PAT_POISSON;
    else if (strcmp(a->pattern, "burst") == 0)
        cfg->pattern = PAT_BURST;
    else if (strcmp(a->pattern, "trace") == 0)
        cfg->pattern = PAT_TRACE;
    else
        return usage_error("--pattern '%s': use constant, poisson, burst or trace", a->pattern);

    bool invoke = strcmp(a->route, "invoke") == 0;
    if (!invoke && strcmp(a->route, "fn") != 0)
        return usage_error("--route '%s': use fn or invoke", a->route);
    if (invoke && a->given[OPT_PATH])
        return usage_error("--path applies to --route fn only");
    if (invoke && strcmp(a->method, "POST") != 0)
        return usage_error("--route invoke is POST only");

    switch (cfg->pattern) {
    case PAT_CONSTANT:
    case PAT_POISSON:
        if (!a->given[OPT_RATE])
            return usage_error("--pattern %s needs --rate", a->pattern);
        if (a->given[OPT_BURST_SIZE] || a->given[OPT_BURST_INTERVAL] || a->given[OPT_TRACE])
            return usage_error("--burst-* and --trace do not apply to --pattern %s", a->pattern);
        cfg->rate = a->rate;
        break;
    case PAT_BURST:
        if (!a->given[OPT_BURST_SIZE] || !a->given[OPT_BURST_INTERVAL])
            return usage_error("--pattern burst needs --burst-size and --burst-interval-ms");
        if (a->given[OPT_RATE])
            return usage_error("--pattern burst takes its rate from --burst-size and "
                               "--burst-interval-ms; drop --rate");
        cfg->burst_size = a->burst_size;
        cfg->burst_interval_ms = a->burst_interval_ms;
        break;
    case PAT_TRACE:
        if (!a->trace)
            return usage_error("--pattern trace needs --trace FILE.csv");
        if (a->functions)
            return usage_error("--pattern trace takes the functions from the trace; drop "
                               "--function");
        if (a->given[OPT_RATE])
            return usage_error("--pattern trace takes its times from the trace; drop --rate");
        break;
    }

    if (cfg->pattern == PAT_TRACE) {
        size_t n_events = 0;
        if (read_trace(a->trace, names, n_names, events, &n_events) < 0)
            return 1;
        cfg->trace = *events;
        cfg->n_trace = n_events;
        if (!a->duration_set) /* the whole trace, and the last event in it */
            cfg->duration_s = (double)(*events)[n_events - 1].t_ns / 1e9 + 0.001;
    } else {
        if (!a->functions)
            return usage_error("--function is required");
        if (split_list(a->functions, names, n_names) < 0 || *n_names == 0)
            return usage_error("--function: no names");
        for (size_t i = 0; i < *n_names; i++)
            if (!name_ok((*names)[i]))
                return usage_error("--function '%s': names are [A-Za-z0-9._-]", (*names)[i]);
    }

    cfg->n_fns = *n_names;
    cfg->fns = calloc(cfg->n_fns, sizeof(*cfg->fns));
    if (!cfg->fns)
        return 1;

    size_t body_len = 0;
    if (a->body && a->body[0] == '@') {
        *body = bench_read_file(a->body + 1, &body_len);
        if (!*body) {
            fprintf(stderr, "ember-bench: --body %s: %s\n", a->body, strerror(errno));
            return 1;
        }
    } else if (a->body) {
        *body = strdup(a->body);
        body_len = strlen(a->body);
    }
    cfg->body = *body;
    cfg->body_len = body_len;
    cfg->head_method = strcmp(a->method, "HEAD") == 0;

    for (size_t i = 0; i < cfg->n_fns; i++) {
        char path[512];
        if (invoke)
            snprintf(path, sizeof(path), "/v1/functions/%s/invoke", (*names)[i]);
        else
            snprintf(path, sizeof(path), "/fn/%s%s", (*names)[i], a->path);
        cfg->fns[i].name = (*names)[i];
        cfg->fns[i].head = httpc_format_head(
            t, a->method, path, body_len ? "application/octet-stream" : NULL, body_len);
        if (!cfg->fns[i].head)
            return 1;
        cfg->fns[i].head_len = strlen(cfg->fns[i].head);
    }

    /* A run must end: arrivals stop at --duration, and past the last
     * arrival plus one timeout whatever is left counts as failed. */
    double expected = 0;
    switch (cfg->pattern) {
    case PAT_CONSTANT:
    case PAT_POISSON:
        expected = cfg->rate * cfg->duration_s;
        break;
    case PAT_BURST:
        expected = cfg->burst_size * (cfg->duration_s * 1000.0 / cfg->burst_interval_ms + 1);
        break;
    case PAT_TRACE:
        expected = (double)cfg->n_trace;
        break;
    }
    if (expected < 1 && !cfg->max_requests)
        return usage_error("this load schedules no request (--rate x --duration < 1)");
    return 0;
}

/* Up to the hard limit of open files: one per connection. */
static void raise_nofile(uint32_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need + 64)
            fprintf(stderr, "ember-bench: warning: open-file limit %llu is below %u connections\n",
                    (unsigned long long)rl.rlim_cur, need);
    }
}

static int cmd_run_or_sweep(uv_loop_t *loop, const struct args *a, const struct bench_target *t)
{
    bool sweep = strcmp(a->cmd, "sweep") == 0;
    if (sweep) {
        if (!a->knob)
            return usage_error("sweep needs --knob");
        if (!a->values)
            return usage_error("sweep needs --values");
        for (const char *k = a->knob; *k; k++)
            if (!((*k >= 'a' && *k <= 'z') || (*k >= '0' && *k <= '9') || *k == '_'))
                return usage_error("--knob '%s': knob names are [a-z0-9_]", a->knob);
    }

    struct load_config cfg;
    char **names = NULL;
    size_t n_names = 0;
    struct trace_event *events = NULL;
    char *body = NULL;
    int rc = build_load(a, t, &cfg, &names, &n_names, &events, &body);
    if (rc)
        goto out;
    raise_nofile(cfg.connections);

    if (sweep) {
        char **values = NULL;
        size_t n_values = 0;
        if (split_list(a->values, &values, &n_values) < 0 || n_values == 0) {
            rc = usage_error("--values: no values");
            free_list(values, n_values);
            goto out;
        }
        cfg.metrics_poll_ms = a->poll_ms;
        struct sweep_options o = {.knob = a->knob,
                                  .values = values,
                                  .n_values = n_values,
                                  .settle_ms = a->settle_ms,
                                  .target = a->target,
                                  .csv_path = a->csv,
                                  .svg_path = a->svg,
                                  .json = a->json,
                                  .restore = !a->no_restore};
        rc = sweep_main(loop, &cfg, &o);
        free_list(values, n_values);
        goto out;
    }

    cfg.keep_records = a->csv != NULL;
    cfg.metrics_poll_ms = a->metrics ? a->poll_ms : 0;
    struct load_result res;
    if (load_result_init(&res) < 0) {
        rc = 1;
        goto out;
    }
    int lrc = load_run(loop, &cfg, &res);
    if (lrc < 0) {
        fprintf(stderr, "ember-bench: cannot run: %s\n", strerror(-lrc));
        rc = 1;
    } else {
        if (a->json) {
            json_t *j = report_run_json(&cfg, &res);
            if (j) {
                json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
                fputc('\n', stdout);
                json_decref(j);
            }
        } else {
            report_run_text(stdout, &cfg, &res);
        }
        if (a->csv) {
            int crc = report_run_csv(a->csv, &cfg, &res);
            if (crc < 0) {
                fprintf(stderr, "ember-bench: --csv %s: %s\n", a->csv, strerror(-crc));
                rc = 1;
            }
        }
        if (res.completed == 0) {
            fprintf(stderr, "ember-bench: no request was answered (is %s up?)\n", t->url);
            rc = 1;
        }
    }
    load_result_destroy(&res);
out:
    for (size_t i = 0; cfg.fns && i < cfg.n_fns; i++)
        free(cfg.fns[i].head);
    free(cfg.fns);
    free_list(names, n_names);
    free(events);
    free(body);
    return rc;
}

int main(int argc, char **argv)
{
    struct args a;
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc;
    /* A peer closing mid-write must be an error on that connection, not our death. */
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stderr, NULL, _IOLBF, 0);

    struct bench_target t;
    char err[512];
    if (httpc_target_parse(a.url, a.token, &t, err, sizeof(err)) < 0)
        return usage_error("%s", err);

    uv_loop_t loop;
    if (uv_loop_init(&loop) < 0) {
        fprintf(stderr, "ember-bench: cannot start the event loop\n");
        return 1;
    }
    char prefix[64];
    if (!a.prefix) {
        snprintf(prefix, sizeof(prefix), "bench-%d-", (int)getpid());
        a.prefix = prefix;
    } else if (!name_ok(a.prefix)) {
        return usage_error("--prefix '%s': names are [A-Za-z0-9._-]", a.prefix);
    }
    if (a.name && !name_ok(a.name))
        return usage_error("--name '%s': names are [A-Za-z0-9._-]", a.name);

    if (strcmp(a.cmd, "run") == 0 || strcmp(a.cmd, "sweep") == 0) {
        rc = cmd_run_or_sweep(&loop, &a, &t);
    } else {
        if (!a.package)
            return usage_error("%s needs --package FILE", a.cmd);
        if (a.package2 && !a.name)
            fprintf(stderr, "ember-bench: note: --package2 alternates packages under distinct "
                            "names; add --name to deploy new versions of one function\n");
        struct admin_options o = {.package = a.package,
                                  .package2 = a.package2,
                                  .name = a.name,
                                  .prefix = a.prefix,
                                  .count = a.count,
                                  .concurrency = a.concurrency,
                                  .timeout_ms = a.timeout_ms,
                                  .keep = a.keep,
                                  .json = a.json,
                                  .second_call = !a.no_second,
                                  .method = a.method,
                                  .path = a.path};
        raise_nofile(a.concurrency);
        if (strcmp(a.cmd, "deploy-rate") == 0)
            rc = admin_deploy_rate(&loop, &t, &o);
        else
            rc = admin_cold(&loop, &t, &o);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    if (uv_loop_close(&loop) != 0)
        fprintf(stderr, "ember-bench: note: handles left on the loop at exit\n");
    return rc;
}
