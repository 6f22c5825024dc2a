/* emberd - the ember daemon: gateway, function store, warm pool, sandboxes.
 *
 * One libuv loop does all I/O. Start-up may block (opening the store,
 * probing the backends) because nothing is served yet; after the listener
 * opens, everything slow runs on the thread pool.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "functions/store.h"
#include "gateway/api.h"
#include "gateway/http.h"
#include "pool/pool.h"
#include "sandbox/sandbox.h"

#define EMBERD_VERSION "0.1.0"
#define DRAIN_DEADLINE_MS_DEFAULT 30000 /* --drain-timeout-ms: then calls are cut */

struct emberd {
    uv_loop_t *loop;
    struct store *store;
    struct pool *pool;
    struct api *api;
    struct http_server *server;
    struct sandbox_backend *backends[SANDBOX_KIND_COUNT];
    uv_signal_t sigterm, sigint;
    uv_timer_t drain_timer;
    uv_timer_t trash_timer;
    uv_work_t trash_work;
    bool trash_busy;
    bool draining;
    bool http_done, pool_done, pool_shutting;
    uint64_t drain_deadline_ms;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: emberd [options]\n"
            "  --listen HOST:PORT          address to serve (default 127.0.0.1:8080; port 0 picks one)\n"
            "  --state DIR                 function store and records (default ./ember-state)\n"
            "  --backend container|microvm default sandbox backend (default container)\n"
            "  --token TOKEN               require 'Authorization: Bearer TOKEN' on /v1/\n"
            "                              (required to listen on a non-loopback address;\n"
            "                              EMBER_TOKEN in the environment works too)\n"
            "  --config FILE               JSON pool settings, the keys of PATCH /v1/pool\n"
            "  --agent PATH                ember-agent (default: beside emberd)\n"
            "  --vmm PATH                  ember-vmm (default: beside emberd)\n"
            "limits:\n"
            "  --max-header-bytes N        request line + headers (default %u) -> 431\n"
            "  --header-timeout-ms N       time to receive the headers (default %u) -> 408\n"
            "  --body-timeout-ms N         silence while receiving a body (default %u) -> 408\n"
            "  --keepalive-timeout-ms N    idle keep-alive connections close (default %u)\n"
            "  --max-connections N         open connections (default %u)\n"
            "  --max-package-bytes N       uploaded package (default %llu) -> 413\n"
            "  --max-invoke-bytes N        invocation body (default %llu) -> 413\n"
            "  --max-unpacked-bytes N      package contents (default %llu) -> 400\n"
            "  --max-package-entries N     files in a package (default %u) -> 400\n"
            "  --pids-max N                processes per sandbox (default 64)\n"
            "  --tmp-mb N                  /tmp size in a sandbox (default 64)\n"
            "  --cpu-quota-pct N           CPU per sandbox, %% of one core (default 100)\n"
            "  --drain-timeout-ms N        longest wait for calls on SIGTERM (default %u)\n"
            "  --no-favordynmods           do not hold a favordynmods cgroup root (moves of\n"
            "                              processes between cgroups stay slow, forks and\n"
            "                              exits on the host stay as cheap as by default)\n",
            HTTP_HEADER_BYTES_DEFAULT, HTTP_HEADER_TIMEOUT_MS_DEFAULT, HTTP_BODY_TIMEOUT_MS_DEFAULT,
            HTTP_KEEPALIVE_TIMEOUT_MS_DEFAULT, HTTP_MAX_CONNECTIONS_DEFAULT,
            (unsigned long long)API_PACKAGE_MAX_DEFAULT, (unsigned long long)API_INVOKE_MAX_DEFAULT,
            (unsigned long long)PACKAGE_MAX_UNPACKED_DEFAULT, PACKAGE_MAX_ENTRIES_DEFAULT,
            DRAIN_DEADLINE_MS_DEFAULT);
}

static int parse_u64(const char *flag, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
        fprintf(stderr, "emberd: %s: expected an integer between %llu and %llu, got '%s'\n",
                flag, (unsigned long long)min, (unsigned long long)max, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int split_listen(const char *s, char *host, size_t host_len, uint16_t *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon)
        return -1;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') { /* [::1]:8080 */
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= host_len)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    uint64_t p;
    char *end;
    p = strtoull(colon + 1, &end, 10);
    if (end == colon + 1 || *end || p > 65535)
        return -1;
    *port = (uint16_t)p;
    return 0;
}

static bool host_is_loopback(const char *host)
{
    return strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 ||
           strcmp(host, "::1") == 0;
}

/* A sibling of our own executable (ember-agent, ember-vmm). */
static void beside_self(const char *name, char *out, size_t len)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        snprintf(out, len, "%s", name);
        return;
    }
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    if ((size_t)snprintf(out, len, "%s/%s", self, name) >= len)
        snprintf(out, len, "%s", name); /* absurdly long path: rely on PATH */
}

#define TRASH_SWEEP_INTERVAL_MS 60000 /* how often trash/ is looked at */

static void work_trash(uv_work_t *w)
{
    struct emberd *d = w->data;
    int n = store_trash_sweep(d->store, STORE_TRASH_GRACE_MS);
    if (n > 0)
        log_info("store: removed %d old version(s) from the trash", n);
}

static void after_trash(uv_work_t *w, int status)
{
    struct emberd *d = w->data;
    (void)status;
    d->trash_busy = false;
}

/* Deleted functions and pruned versions wait in trash/ until no call can
 * still be running in them; their removal is disk work, off the loop. */
static void on_trash_timer(uv_timer_t *t)
{
    struct emberd *d = t->data;
    if (d->trash_busy || d->draining)
        return;
    d->trash_work.data = d;
    if (uv_queue_work(d->loop, &d->trash_work, work_trash, after_trash) == 0)
        d->trash_busy = true;
}

static void maybe_exit(struct emberd *d)
{
    if (d->http_done && d->pool_done)
        uv_stop(d->loop);
}

static void on_pool_drained(void *data)
{
    struct emberd *d = data;
    d->pool = NULL;
    d->pool_done = true;
    log_info("emberd: every sandbox destroyed");
    maybe_exit(d);
}

static void on_drain_deadline(uv_timer_t *t)
{
    struct emberd *d = t->data;
    if (d->pool && !d->pool_shutting) {
        d->pool_shutting = true;
        log_warn("emberd: drain deadline passed, cutting the remaining calls");
        struct pool *p = d->pool;
        pool_shutdown(p, on_pool_drained, d);
    }
}

static void on_http_drained(void *data)
{
    struct emberd *d = data;
    d->server = NULL;
    d->http_done = true;
    log_info("emberd: connections drained");
    uv_timer_stop(&d->drain_timer);
    if (d->pool && !d->pool_shutting) {
        d->pool_shutting = true;
        struct pool *p = d->pool;
        pool_shutdown(p, on_pool_drained, d);
    } else {
        maybe_exit(d);
    }
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct emberd *d = s->data;
    if (d->draining) {
        log_warn("emberd: second signal, exiting now");
        exit(1);
    }
    d->draining = true;
    log_info("emberd: %s: draining (stop accepting, finish calls, destroy sandboxes)",
             strsignal(signum));
    api_set_draining(d->api, true);
    uv_timer_start(&d->drain_timer, on_drain_deadline, d->drain_deadline_ms, 0);
    http_server_shutdown(d->server, on_http_drained, d);
}

static int load_config(const char *path, struct pool_knobs *knobs, json_t **out)
{
    json_error_t jerr;
    json_t *cfg = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!cfg) {
        fprintf(stderr, "emberd: --config %s: line %d: %s\n", path, jerr.line, jerr.text);
        return -1;
    }
    struct ember_error err = {0};
    if (pool_knobs_parse(cfg, knobs, &err) < 0) {
        fprintf(stderr, "emberd: --config %s: %s\n", path, err.msg);
        json_decref(cfg);
        return -1;
    }
    *out = cfg;
    return 0;
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:8080";
    const char *state = "./ember-state";
    const char *backend_name = "container";
    const char *token = getenv("EMBER_TOKEN");
    const char *config_path = NULL;
    char agent_path[PATH_MAX] = "", vmm_path[PATH_MAX] = "";
    struct http_limits limits;
    struct package_limits pkg_limits;
    uint64_t package_max = API_PACKAGE_MAX_DEFAULT, invoke_max = API_INVOKE_MAX_DEFAULT;
    uint64_t pids_max = 64, tmp_mb = 64, cpu_pct = 100, drain_ms = DRAIN_DEADLINE_MS_DEFAULT;
    bool no_favor = false;
    http_limits_default(&limits);
    package_limits_default(&pkg_limits);

    enum {
        O_LISTEN = 256, O_STATE, O_BACKEND, O_TOKEN, O_CONFIG, O_AGENT, O_VMM, O_HDR_BYTES,
        O_HDR_TIMEOUT, O_BODY_TIMEOUT, O_KA_TIMEOUT, O_MAX_CONN, O_PKG_MAX, O_INV_MAX,
        O_UNPACKED_MAX, O_ENTRIES_MAX, O_PIDS, O_TMP, O_CPU, O_DRAIN, O_NO_FAVOR, O_HELP, O_VERSION,
    };
    static const struct option opts[] = {
        {"listen", required_argument, NULL, O_LISTEN},
        {"state", required_argument, NULL, O_STATE},
        {"backend", required_argument, NULL, O_BACKEND},
        {"token", required_argument, NULL, O_TOKEN},
        {"config", required_argument, NULL, O_CONFIG},
        {"agent", required_argument, NULL, O_AGENT},
        {"vmm", required_argument, NULL, O_VMM},
        {"max-header-bytes", required_argument, NULL, O_HDR_BYTES},
        {"header-timeout-ms", required_argument, NULL, O_HDR_TIMEOUT},
        {"body-timeout-ms", required_argument, NULL, O_BODY_TIMEOUT},
        {"keepalive-timeout-ms", required_argument, NULL, O_KA_TIMEOUT},
        {"max-connections", required_argument, NULL, O_MAX_CONN},
        {"max-package-bytes", required_argument, NULL, O_PKG_MAX},
        {"max-invoke-bytes", required_argument, NULL, O_INV_MAX},
        {"max-unpacked-bytes", required_argument, NULL, O_UNPACKED_MAX},
        {"max-package-entries", required_argument, NULL, O_ENTRIES_MAX},
        {"pids-max", required_argument, NULL, O_PIDS},
        {"tmp-mb", required_argument, NULL, O_TMP},
        {"cpu-quota-pct", required_argument, NULL, O_CPU},
        {"drain-timeout-ms", required_argument, NULL, O_DRAIN},
        {"no-favordynmods", no_argument, NULL, O_NO_FAVOR},
        {"help", no_argument, NULL, O_HELP},
        {"version", no_argument, NULL, O_VERSION},
        {0},
    };
    int c;
    uint64_t v;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_LISTEN: listen = optarg; break;
        case O_STATE: state = optarg; break;
        case O_BACKEND: backend_name = optarg; break;
        case O_TOKEN: token = optarg; break;
        case O_CONFIG: config_path = optarg; break;
        case O_AGENT: snprintf(agent_path, sizeof(agent_path), "%s", optarg); break;
        case O_VMM: snprintf(vmm_path, sizeof(vmm_path), "%s", optarg); break;
#define U32_FLAG(opt, name, min, max, dst)                                                         \
    case opt:                                                                                      \
        if (parse_u64(name, optarg, min, max, &v) < 0)                                             \
            return 2;                                                                              \
        dst = (uint32_t)v;                                                                         \
        break;
        U32_FLAG(O_HDR_BYTES, "--max-header-bytes", 1024, 1u << 20, limits.header_bytes)
        U32_FLAG(O_HDR_TIMEOUT, "--header-timeout-ms", 10, 3600000, limits.header_timeout_ms)
        U32_FLAG(O_BODY_TIMEOUT, "--body-timeout-ms", 10, 3600000, limits.body_timeout_ms)
        U32_FLAG(O_KA_TIMEOUT, "--keepalive-timeout-ms", 10, 3600000, limits.keepalive_timeout_ms)
        U32_FLAG(O_MAX_CONN, "--max-connections", 1, 1000000, limits.max_connections)
        case O_PKG_MAX:
            if (parse_u64("--max-package-bytes", optarg, 1024, 1ull << 40, &package_max) < 0)
                return 2;
            break;
        case O_INV_MAX:
            if (parse_u64("--max-invoke-bytes", optarg, 0, 1ull << 30, &invoke_max) < 0)
                return 2;
            break;
        case O_UNPACKED_MAX:
            if (parse_u64("--max-unpacked-bytes", optarg, 1024, 1ull << 40, &v) < 0)
                return 2;
            pkg_limits.max_unpacked_bytes = v;
            if (pkg_limits.max_file_bytes > v)
                pkg_limits.max_file_bytes = v;
            break;
        case O_ENTRIES_MAX:
            if (parse_u64("--max-package-entries", optarg, 1, 10000000, &v) < 0)
                return 2;
            pkg_limits.max_entries = v;
            break;
        case O_PIDS:
            if (parse_u64("--pids-max", optarg, 4, 100000, &pids_max) < 0)
                return 2;
            break;
        case O_TMP:
            if (parse_u64("--tmp-mb", optarg, 1, 1u << 20, &tmp_mb) < 0)
                return 2;
            break;
        case O_CPU:
            if (parse_u64("--cpu-quota-pct", optarg, 1, 100000, &cpu_pct) < 0)
                return 2;
            break;
        case O_DRAIN:
            if (parse_u64("--drain-timeout-ms", optarg, 0, 3600000, &drain_ms) < 0)
                return 2;
            break;
        case O_NO_FAVOR: no_favor = true; break;
        case O_HELP: usage(stdout); return 0;
        case O_VERSION: printf("emberd %s\n", EMBERD_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "emberd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    char host[256];
    uint16_t port;
    if (split_listen(listen, host, sizeof(host), &port) < 0) {
        fprintf(stderr, "emberd: --listen: expected HOST:PORT, got '%s'\n", listen);
        return 2;
    }
    if (!host_is_loopback(host) && (!token || !token[0])) {
        fprintf(stderr, "emberd: refusing to listen on non-loopback address %s without --token\n",
                host);
        return 2;
    }
    enum sandbox_kind default_kind;
    if (sandbox_kind_parse(backend_name, &default_kind) < 0) {
        fprintf(stderr, "emberd: --backend: expected container or microvm, got '%s'\n",
                backend_name);
        return 2;
    }
    struct pool_knobs knobs;
    pool_knobs_default(&knobs);
    json_t *config = NULL;
    if (config_path && load_config(config_path, &knobs, &config) < 0)
        return 2;

    signal(SIGPIPE, SIG_IGN);
    /* Deploy writes and fsyncs, sandbox creation and cgroup work share the
     * thread pool; libuv's default of 4 threads is small for that. */
    setenv("UV_THREADPOOL_SIZE", "16", 0);

    if (mkdir(state, 0700) < 0 && errno != EEXIST) {
        fprintf(stderr, "emberd: --state %s: %s\n", state, strerror(errno));
        return 1;
    }
    char state_abs[PATH_MAX];
    if (!realpath(state, state_abs)) {
        fprintf(stderr, "emberd: --state %s: %s\n", state, strerror(errno));
        return 1;
    }
    if (!agent_path[0])
        beside_self("ember-agent", agent_path, sizeof(agent_path));
    if (!vmm_path[0])
        beside_self("ember-vmm", vmm_path, sizeof(vmm_path));

    struct emberd d = {0};
    d.loop = uv_default_loop();
    d.drain_deadline_ms = drain_ms;
    struct ember_error err = {0};

    if (store_open(state_abs, &pkg_limits, &d.store, &err) < 0) {
        log_error("emberd: cannot open the store in %s: %s", state_abs, err.msg);
        return 1;
    }

    store_set_default_sandbox(d.store, default_kind == SANDBOX_MICROVM ? MANIFEST_SANDBOX_MICROVM
                                                                       : MANIFEST_SANDBOX_CONTAINER);

    struct sandbox_config sbcfg = {
        .state_dir = state_abs,
        .agent_path = agent_path,
        .vmm_path = vmm_path,
        .pids_max = (uint32_t)pids_max,
        .stem_memory_mb = POOL_STEM_MEMORY_MB_DEFAULT,
        .tmp_size_mb = (uint32_t)tmp_mb,
        .cpu_quota_pct = (uint32_t)cpu_pct,
        .uid_base = 1000000000u,
        .uid_count = 65536,
        .no_favordynmods = no_favor,
    };
    struct pool_config pcfg = {
        .loop = d.loop,
        .store = d.store,
        .default_kind = default_kind,
        .knobs = knobs,
    };
    static char backend_errors[SANDBOX_KIND_COUNT][512];
    for (int k = 0; k < SANDBOX_KIND_COUNT; k++) {
        struct ember_error berr = {0};
        int r = sandbox_backend_open((enum sandbox_kind)k, d.loop, &sbcfg, &d.backends[k], &berr);
        if (r < 0) {
            snprintf(backend_errors[k], sizeof(backend_errors[k]), "%s",
                     berr.msg[0] ? berr.msg : strerror(-r));
            pcfg.backend_errors[k] = backend_errors[k];
            d.backends[k] = NULL;
            if ((enum sandbox_kind)k == default_kind)
                log_warn("emberd: default backend %s unavailable: %s (invocations will get "
                         "503)", sandbox_kind_name((enum sandbox_kind)k), backend_errors[k]);
            else
                log_info("emberd: backend %s unavailable: %s",
                         sandbox_kind_name((enum sandbox_kind)k), backend_errors[k]);
        } else {
            log_info("emberd: backend %s ready", sandbox_kind_name((enum sandbox_kind)k));
        }
        pcfg.backends[k] = d.backends[k];
    }

    if (pool_open(&pcfg, &d.pool, &err) < 0) {
        log_error("emberd: %s", err.msg);
        return 1;
    }
    if (config) {
        if (pool_configure(d.pool, config, &err) < 0) {
            log_error("emberd: --config %s: %s", config_path, err.msg);
            return 2;
        }
        json_decref(config);
    }
    struct function_record **recs = NULL;
    size_t n = 0;
    if (store_function_list(d.store, &recs, &n) == 0) {
        for (size_t i = 0; i < n; i++) {
            pool_function_update(d.pool, recs[i]);
            store_record_unref(recs[i]);
        }
        free(recs);
        log_info("emberd: %zu function(s) in the store", n);
    }

    struct api_config acfg = {
        .loop = d.loop,
        .store = d.store,
        .pool = d.pool,
        .token = token,
        .package_max = package_max,
        .invoke_max = invoke_max,
        .version = EMBERD_VERSION,
    };
    struct http_handler handler;
    if (api_open(&acfg, &d.api, &handler) < 0) {
        log_error("emberd: out of memory");
        return 1;
    }
    int r = http_server_start(d.loop, host, port, &limits, &handler, &d.server);
    if (r < 0) {
        log_error("emberd: cannot listen on %s: %s", listen, uv_strerror(r));
        return 1;
    }
    api_set_server(d.api, d.server);

    uv_signal_init(d.loop, &d.sigterm);
    uv_signal_init(d.loop, &d.sigint);
    d.sigterm.data = d.sigint.data = &d;
    uv_signal_start(&d.sigterm, on_signal, SIGTERM);
    uv_signal_start(&d.sigint, on_signal, SIGINT);
    uv_timer_init(d.loop, &d.drain_timer);
    d.drain_timer.data = &d;
    uv_timer_init(d.loop, &d.trash_timer);
    d.trash_timer.data = &d;
    uv_timer_start(&d.trash_timer, on_trash_timer, TRASH_SWEEP_INTERVAL_MS,
                   TRASH_SWEEP_INTERVAL_MS);

    bool v6 = strchr(host, ':') != NULL;
    log_info("listening on http://%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "",
             http_server_port(d.server));

    uv_run(d.loop, UV_RUN_DEFAULT);

    /* Drained. Backends may still be releasing destroyed sandboxes (cgroup
     * removal, reaping) on the loop: close them while it runs, then let
     * every remaining handle close through its own callback. */
    uv_close((uv_handle_t *)&d.sigterm, NULL);
    uv_close((uv_handle_t *)&d.sigint, NULL);
    uv_close((uv_handle_t *)&d.drain_timer, NULL);
    uv_close((uv_handle_t *)&d.trash_timer, NULL);
    for (int k = 0; k < SANDBOX_KIND_COUNT; k++)
        if (d.backends[k])
            sandbox_backend_close(d.backends[k]);
    uv_run(d.loop, UV_RUN_DEFAULT);
    api_close(d.api);
    store_close(d.store);
    uv_loop_close(d.loop);
    log_info("emberd: stopped");
    return 0;
}
