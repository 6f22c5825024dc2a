/* sweep.c - one pool knob, several settings, the same load against each.
 *
 * For every value: PATCH /v1/pool {"knob": value}, let the pool settle,
 * replay the load (same arrivals: the seed is fixed), poll GET /metrics
 * for the pool's peak memory, and keep one row. Then: a table, a CSV, an
 * SVG chart, and the smallest setting that meets the target. The knob is
 * PATCHed back to the value GET /v1/pool showed before the sweep.
 */
#include "bench/bench.h"
#include "common/cleanup.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum target_metric { TM_P50, TM_P90, TM_P99, TM_P999, TM_MAX, TM_COLD, TM_ERRORS };

struct target_cond {
    enum target_metric metric;
    double limit; /* ms for latencies, a ratio otherwise */
    char text[64];
};

struct target {
    struct target_cond conds[8];
    size_t n;
    bool errors_given;
};

static const struct {
    const char *name;
    enum target_metric metric;
} target_names[] = {
    {"p50", TM_P50},         {"p90", TM_P90},
    {"p99", TM_P99},         {"p99.9", TM_P999},
    {"p999", TM_P999},       {"max", TM_MAX},
    {"cold_ratio", TM_COLD}, {"cold", TM_COLD},
    {"errors", TM_ERRORS},   {"error_ratio", TM_ERRORS},
};

/* "5ms", "800us", "0.2s", "5" (ms) -> ms. */
static int parse_duration_ms(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0))
        return -1;
    double scale = 1;
    if (*end == '\0' || strcmp(end, "ms") == 0)
        scale = 1;
    else if (strcmp(end, "us") == 0)
        scale = 1e-3;
    else if (strcmp(end, "ns") == 0)
        scale = 1e-6;
    else if (strcmp(end, "s") == 0)
        scale = 1e3;
    else
        return -1;
    *out = v * scale;
    return 0;
}

static int parse_target(const char *spec, struct target *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    cleanup_free char *copy = strdup(spec);
    if (!copy)
        return -1;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            snprintf(err, errlen, "--target '%s': expected NAME=VALUE (e.g. p99=5ms)", tok);
            return -1;
        }
        *eq = '\0';
        const char *val = eq + 1;
        int found = -1;
        for (size_t i = 0; i < ARRAY_SIZE(target_names); i++)
            if (strcasecmp(tok, target_names[i].name) == 0)
                found = (int)i;
        if (found < 0) {
            snprintf(err, errlen,
                     "--target: unknown metric '%s' (use p50, p90, p99, p99.9, max, cold_ratio, "
                     "errors)",
                     tok);
            return -1;
        }
        if (t->n == ARRAY_SIZE(t->conds)) {
            snprintf(err, errlen, "--target: too many conditions");
            return -1;
        }
        struct target_cond *c = &t->conds[t->n++];
        c->metric = target_names[found].metric;
        int rc;
        if (c->metric == TM_COLD || c->metric == TM_ERRORS) {
            char *end;
            errno = 0;
            c->limit = strtod(val, &end);
            bool pct = *end == '%';
            rc = (end == val || errno || (*end && !(pct && end[1] == '\0')) || c->limit < 0) ? -1
                                                                                             : 0;
            if (pct)
                c->limit /= 100;
            if (c->metric == TM_ERRORS)
                t->errors_given = true;
        } else {
            rc = parse_duration_ms(val, &c->limit);
        }
        if (rc < 0) {
            snprintf(err, errlen, "--target %s=%s: bad value", tok, val);
            return -1;
        }
        snprintf(c->text, sizeof(c->text), "%s<=%s", target_names[found].name, val);
    }
    if (t->n == 0) {
        snprintf(err, errlen, "--target is empty");
        return -1;
    }
    return 0;
}

static double row_metric(const struct sweep_row *r, enum target_metric m)
{
    switch (m) {
    case TM_P50:
        return r->p50_ms;
    case TM_P90:
        return r->p90_ms;
    case TM_P99:
        return r->p99_ms;
    case TM_P999:
        return r->p999_ms;
    case TM_MAX:
        return r->max_ms;
    case TM_COLD:
        return r->cold_ratio;
    case TM_ERRORS:
        return r->completed + r->errors ? (double)r->errors / (double)(r->completed + r->errors)
                                        : 1.0;
    }
    return NAN;
}

/* A setting meets the target when it answered, every condition holds, and,
 * unless the target names its own error budget, at most 1% failed: a pool
 * that answers 429 quickly is not fast. */
static bool row_meets(const struct sweep_row *r, const struct target *t)
{
    if (r->completed == 0)
        return false;
    for (size_t i = 0; i < t->n; i++) {
        double v = row_metric(r, t->conds[i].metric);
        if (v < 0 || isnan(v) || v > t->conds[i].limit)
            return false; /* n/a (no cold-start data) counts as not met */
    }
    if (!t->errors_given && row_metric(r, TM_ERRORS) > 0.01)
        return false;
    return true;
}

static json_t *value_json(const char *v)
{
    json_error_t jerr;
    json_t *j = json_loads(v, JSON_DECODE_ANY, &jerr);
    if (j && (json_is_number(j) || json_is_boolean(j) || json_is_null(j)))
        return j;
    json_decref(j);
    return json_string(v);
}

/* The knob's current value in GET /v1/pool: a top-level member, or one in an
 * object one level down ("knobs", "config", ...). A new reference or NULL. */
static json_t *find_knob(json_t *pool, const char *knob)
{
    json_t *v = json_object_get(pool, knob);
    if (v)
        return json_incref(v);
    const char *key;
    json_t *sub;
    json_object_foreach(pool, key, sub)
    {
        if (json_is_object(sub) && (v = json_object_get(sub, knob)))
            return json_incref(v);
    }
    return NULL;
}

static int patch_knob(uv_loop_t *loop, const struct bench_target *t, const char *knob,
                      json_t *value)
{
    json_t *body = json_object();
    json_object_set(body, knob, value);
    cleanup_free char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text)
        return -1;
    cleanup_free char *resp = NULL;
    int err = 0;
    int status = httpc_call(loop, t, "PATCH", "/v1/pool", "application/json", text, strlen(text),
                            10000, &resp, &err);
    if (status == 200 || status == 204)
        return 0;
    if (status < 0)
        fprintf(stderr, "ember-bench: PATCH /v1/pool %s: %s\n", text, uv_strerror(err));
    else
        fprintf(stderr, "ember-bench: PATCH /v1/pool %s: HTTP %d %s\n", text, status,
                resp ? resp : "");
    return -1;
}

static void fill_row(struct sweep_row *row, const struct load_result *r)
{
    row->completed = r->completed;
    row->errors = load_result_errors(r);
    row->throughput = r->elapsed_s > 0 ? (double)r->completed / r->elapsed_s : 0;
    row->cold_ratio = load_result_cold_ratio(r);
    row->p50_ms = (double)hist_percentile(r->latency, 50) / 1e6;
    row->p90_ms = (double)hist_percentile(r->latency, 90) / 1e6;
    row->p99_ms = (double)hist_percentile(r->latency, 99) / 1e6;
    row->p999_ms = (double)hist_percentile(r->latency, 99.9) / 1e6;
    row->max_ms = (double)r->latency->max / 1e6;
    row->peak_memory_bytes = r->peak_memory_bytes;
    row->peak_sandboxes = r->peak_sandboxes;
}

static void fmt_mem(char *buf, size_t len, int64_t bytes)
{
    if (bytes < 0)
        snprintf(buf, len, "n/a");
    else
        snprintf(buf, len, "%.1f MiB", (double)bytes / 1048576.0);
}

static void print_table(FILE *f, const char *knob, const struct sweep_row *rows, size_t n,
                        bool have_target)
{
    fprintf(f, "%-14s %8s %10s %10s %10s %10s %9s %8s %11s %9s%s\n", knob, "cold", "p50", "p99",
            "p99.9", "max", "req/s", "errors", "peak mem", "sandboxes",
            have_target ? "  target" : "");
    for (size_t i = 0; i < n; i++) {
        const struct sweep_row *r = &rows[i];
        char cold[16], mem[24], sb[24];
        if (r->cold_ratio >= 0)
            snprintf(cold, sizeof(cold), "%.4f", r->cold_ratio);
        else
            snprintf(cold, sizeof(cold), "n/a");
        fmt_mem(mem, sizeof(mem), r->peak_memory_bytes);
        if (r->peak_sandboxes >= 0)
            snprintf(sb, sizeof(sb), "%lld", (long long)r->peak_sandboxes);
        else
            snprintf(sb, sizeof(sb), "n/a");
        fprintf(f, "%-14s %8s %7.3f ms %7.3f ms %7.3f ms %7.3f ms %9.1f %8llu %11s %9s%s\n",
                r->value, cold, r->p50_ms, r->p99_ms, r->p999_ms, r->max_ms, r->throughput,
                (unsigned long long)r->errors, mem, sb,
                have_target ? (r->meets ? "  yes" : "  no") : "");
    }
}

static int write_csv(const char *path, const char *knob, const struct sweep_row *rows, size_t n,
                     bool have_target)
{
    cleanup_fclose FILE *f = fopen(path, "w");
    if (!f)
        return -errno;
    fprintf(f, "knob,value,completed,errors,throughput_rps,cold_ratio,p50_ms,p90_ms,p99_ms,"
               "p999_ms,max_ms,peak_memory_bytes,peak_sandboxes,meets_target\n");
    for (size_t i = 0; i < n; i++) {
        const struct sweep_row *r = &rows[i];
        fprintf(f, "%s,%s,%llu,%llu,%.2f,", knob, r->value, (unsigned long long)r->completed,
                (unsigned long long)r->errors, r->throughput);
        if (r->cold_ratio >= 0)
            fprintf(f, "%.6f", r->cold_ratio);
        fprintf(f, ",%.4f,%.4f,%.4f,%.4f,%.4f,", r->p50_ms, r->p90_ms, r->p99_ms, r->p999_ms,
                r->max_ms);
        if (r->peak_memory_bytes >= 0)
            fprintf(f, "%lld", (long long)r->peak_memory_bytes);
        fputc(',', f);
        if (r->peak_sandboxes >= 0)
            fprintf(f, "%lld", (long long)r->peak_sandboxes);
        fprintf(f, ",%s\n", have_target ? (r->meets ? "yes" : "no") : "");
    }
    if (fflush(f) != 0 || ferror(f))
        return -EIO;
    return 0;
}

int sweep_main(uv_loop_t *loop, struct load_config *cfg, const struct sweep_options *o)
{
    struct target target;
    bool have_target = o->target != NULL;
    char err[256];
    if (have_target && parse_target(o->target, &target, err, sizeof(err)) < 0) {
        fprintf(stderr, "ember-bench: %s\n", err);
        return 2;
    }

    /* What to put back afterwards. */
    json_t *original = NULL;
    if (o->restore) {
        cleanup_free char *body = NULL;
        int status =
            httpc_call(loop, cfg->target, "GET", "/v1/pool", NULL, NULL, 0, 10000, &body, NULL);
        if (status < 0) {
            fprintf(stderr, "ember-bench: GET /v1/pool: cannot reach %s\n", cfg->target->url);
            return 1;
        }
        json_t *pool = status == 200 && body ? json_loads(body, 0, NULL) : NULL;
        if (pool)
            original = find_knob(pool, o->knob);
        json_decref(pool);
        if (!original)
            fprintf(stderr,
                    "ember-bench: note: GET /v1/pool does not show '%s'; it will not be "
                    "restored after the sweep\n",
                    o->knob);
    }

    cleanup_free struct sweep_row *rows = calloc(o->n_values, sizeof(*rows));
    if (!rows) {
        json_decref(original);
        return 1;
    }
    int rc = 0;
    size_t done = 0;
    for (size_t i = 0; i < o->n_values; i++) {
        struct sweep_row *row = &rows[i];
        snprintf(row->value, sizeof(row->value), "%s", o->values[i]);
        char *end;
        row->numeric = strtod(o->values[i], &end);
        if (end == o->values[i] || *end)
            row->numeric = NAN;

        json_t *v = value_json(o->values[i]);
        int prc = patch_knob(loop, cfg->target, o->knob, v);
        json_decref(v);
        if (prc < 0) {
            rc = 1;
            break;
        }
        if (!cfg->quiet)
            fprintf(stderr, "== %s=%s: settling %u ms, then %.6g s of load\n", o->knob,
                    o->values[i], o->settle_ms, cfg->duration_s);
        if (o->settle_ms)
            usleep((useconds_t)o->settle_ms * 1000);

        struct load_result res;
        if (load_result_init(&res) < 0) {
            rc = 1;
            break;
        }
        if (load_run(loop, cfg, &res) < 0) {
            load_result_destroy(&res);
            rc = 1;
            break;
        }
        fill_row(row, &res);
        row->meets = have_target && row_meets(row, &target);
        if (!cfg->quiet)
            fprintf(stderr, "   %s=%s: %llu answered, %llu errors, p99 %.3f ms, cold %s%.4f\n",
                    o->knob, o->values[i], (unsigned long long)row->completed,
                    (unsigned long long)row->errors, row->p99_ms, row->cold_ratio < 0 ? "n/a " : "",
                    row->cold_ratio < 0 ? 0 : row->cold_ratio);
        load_result_destroy(&res);
        done++;
    }

    if (original) {
        if (patch_knob(loop, cfg->target, o->knob, original) < 0)
            fprintf(stderr, "ember-bench: could not restore %s\n", o->knob);
        json_decref(original);
    }
    if (done == 0)
        return 1;

    /* The smallest setting that meets the target: by number when every value
     * is one, else the first in the order given. */
    int chosen = -1;
    if (have_target) {
        bool numeric = true;
        for (size_t i = 0; i < done; i++)
            numeric = numeric && !isnan(rows[i].numeric);
        for (size_t i = 0; i < done; i++) {
            if (!rows[i].meets)
                continue;
            if (chosen < 0 || (numeric && rows[i].numeric < rows[chosen].numeric))
                chosen = (int)i;
        }
    }

    if (o->json) {
        json_t *out = json_object();
        json_object_set_new(out, "knob", json_string(o->knob));
        json_t *arr = json_array();
        for (size_t i = 0; i < done; i++) {
            const struct sweep_row *r = &rows[i];
            json_t *j = json_object();
            json_object_set_new(j, "value", json_string(r->value));
            json_object_set_new(j, "completed", json_integer((json_int_t)r->completed));
            json_object_set_new(j, "errors", json_integer((json_int_t)r->errors));
            json_object_set_new(j, "throughput_rps", json_real(r->throughput));
            json_object_set_new(j, "cold_ratio",
                                r->cold_ratio >= 0 ? json_real(r->cold_ratio) : json_null());
            json_object_set_new(j, "p50_ms", json_real(r->p50_ms));
            json_object_set_new(j, "p90_ms", json_real(r->p90_ms));
            json_object_set_new(j, "p99_ms", json_real(r->p99_ms));
            json_object_set_new(j, "p999_ms", json_real(r->p999_ms));
            json_object_set_new(j, "max_ms", json_real(r->max_ms));
            json_object_set_new(j, "peak_memory_bytes",
                                r->peak_memory_bytes >= 0 ? json_integer(r->peak_memory_bytes)
                                                          : json_null());
            json_object_set_new(j, "peak_sandboxes",
                                r->peak_sandboxes >= 0 ? json_integer(r->peak_sandboxes)
                                                       : json_null());
            if (have_target)
                json_object_set_new(j, "meets_target", json_boolean(r->meets));
            json_array_append_new(arr, j);
        }
        json_object_set_new(out, "settings", arr);
        if (have_target) {
            json_object_set_new(out, "target", json_string(o->target));
            json_object_set_new(out, "chosen",
                                chosen >= 0 ? json_string(rows[chosen].value) : json_null());
        }
        json_dumpf(out, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        fputc('\n', stdout);
        json_decref(out);
    } else {
        print_table(stdout, o->knob, rows, done, have_target);
        if (have_target) {
            if (chosen >= 0)
                printf("smallest %s meeting %s: %s\n", o->knob, o->target, rows[chosen].value);
            else
                printf("no %s setting tried meets %s\n", o->knob, o->target);
        }
    }

    if (o->csv_path) {
        int wrc = write_csv(o->csv_path, o->knob, rows, done, have_target);
        if (wrc < 0) {
            fprintf(stderr, "ember-bench: %s: %s\n", o->csv_path, strerror(-wrc));
            rc = 1;
        }
    }
    if (o->svg_path) {
        char title[640];
        snprintf(title, sizeof(title), "%s sweep: latency and cold starts (%s)", o->knob,
                 cfg->target->url);
        double target_ms = NAN;
        const char *target_label = NULL;
        for (size_t i = 0; have_target && i < target.n; i++) {
            if (target.conds[i].metric != TM_COLD && target.conds[i].metric != TM_ERRORS) {
                target_ms = target.conds[i].limit;
                target_label = target.conds[i].text;
                break;
            }
        }
        struct svg_chart chart = {.title = title,
                                  .knob = o->knob,
                                  .rows = rows,
                                  .n_rows = done,
                                  .target_ms = target_ms,
                                  .target_label = target_label,
                                  .chosen = chosen};
        int wrc = svg_write_sweep(o->svg_path, &chart);
        if (wrc < 0) {
            fprintf(stderr, "ember-bench: %s: %s\n", o->svg_path, strerror(-wrc));
            rc = 1;
        }
    }
    if (rc == 0 && have_target && chosen < 0)
        rc = 3;
    return rc;
}
