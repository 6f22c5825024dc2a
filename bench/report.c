/* report.c - what a run found, for people (text), for programs (JSON) and
 * request by request (CSV). */
#include "bench/bench.h"
#include "common/cleanup.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <string.h>

static const double percentiles[] = {50.0, 90.0, 99.0, 99.9};
static const char *const percentile_keys[] = {"p50", "p90", "p99", "p99_9"};
static const char *const percentile_labels[] = {"p50", "p90", "p99", "p99.9"};

static const char *const pattern_names[] = {"constant", "poisson", "burst", "trace"};

const char *report_fmt_ns(char *buf, size_t len, double ns)
{
    if (ns < 1e3)
        snprintf(buf, len, "%.0f ns", ns);
    else if (ns < 1e6)
        snprintf(buf, len, "%.1f us", ns / 1e3);
    else if (ns < 1e9)
        snprintf(buf, len, "%.2f ms", ns / 1e6);
    else
        snprintf(buf, len, "%.2f s", ns / 1e9);
    return buf;
}

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static void describe_load(FILE *f, const struct load_config *cfg)
{
    fprintf(f, "target     %s, %zu function%s", cfg->target->url, cfg->n_fns,
            cfg->n_fns == 1 ? "" : "s");
    for (size_t i = 0; i < cfg->n_fns && i < 4; i++)
        fprintf(f, "%s%s", i ? ", " : " (", cfg->fns[i].name);
    fprintf(f, "%s\n", cfg->n_fns > 4 ? ", ...)" : cfg->n_fns ? ")" : "");
    fprintf(f, "load       %s", pattern_names[cfg->pattern]);
    switch (cfg->pattern) {
    case PAT_CONSTANT:
    case PAT_POISSON:
        fprintf(f, " %.6g req/s", cfg->rate);
        break;
    case PAT_BURST:
        fprintf(f, " %u every %u ms", cfg->burst_size, cfg->burst_interval_ms);
        break;
    case PAT_TRACE:
        fprintf(f, " of %zu events", cfg->n_trace);
        break;
    }
    fprintf(f, " for %.6g s over %u connections (timeout %u ms)\n", cfg->duration_s,
            cfg->connections, cfg->timeout_ms);
}

void report_run_text(FILE *f, const struct load_config *cfg, const struct load_result *r)
{
    char a[32], b[32], c[32];
    describe_load(f, cfg);
    uint64_t errors = load_result_errors(r);
    double tput = r->elapsed_s > 0 ? (double)r->completed / r->elapsed_s : 0;
    fprintf(f,
            "requests   %llu scheduled, %llu sent, %llu answered, %llu errors in %.2f s: "
            "%.1f req/s\n",
            (unsigned long long)r->scheduled, (unsigned long long)r->sent,
            (unsigned long long)r->completed, (unsigned long long)errors, r->elapsed_s, tput);

    fprintf(f, "status    ");
    for (int s = 0; s < 600; s++)
        if (r->status_counts[s])
            fprintf(f, " %d: %llu", s, (unsigned long long)r->status_counts[s]);
    for (int e = 0; e < LERR__COUNT; e++)
        if (r->errs[e])
            fprintf(f, " %s: %llu", load_err_names[e], (unsigned long long)r->errs[e]);
    fprintf(f, "%s\n", r->completed || errors ? "" : " (nothing came back)");

    double cold = load_result_cold_ratio(r);
    fprintf(f, "acquire   ");
    for (int k = 0; k < ACQ__COUNT; k++)
        if (r->kinds[k])
            fprintf(f, " %s %llu (%.2f%%)", acq_kind_names[k], (unsigned long long)r->kinds[k],
                    r->completed ? 100.0 * (double)r->kinds[k] / (double)r->completed : 0.0);
    if (cold >= 0)
        fprintf(f, "; cold-start ratio %.4f\n", cold);
    else
        fprintf(f, "%scold-start ratio n/a (no Server-Timing acquire)\n",
                r->completed ? "; " : " ");

    const struct hist *h = r->latency;
    fprintf(f, "latency   ");
    for (size_t i = 0; i < 4; i++)
        fprintf(f, " %s %s", percentile_labels[i],
                report_fmt_ns(a, sizeof(a), (double)hist_percentile(h, percentiles[i])));
    fprintf(f, " max %s mean %s\n", report_fmt_ns(b, sizeof(b), (double)h->max),
            report_fmt_ns(c, sizeof(c), hist_mean(h)));
    int kinds_seen = 0;
    for (int k = 0; k < ACQ__COUNT; k++)
        kinds_seen += r->kinds[k] > 0;
    if (kinds_seen > 1) {
        for (int k = 0; k < ACQ__COUNT; k++) {
            const struct hist *kh = r->kind_latency[k];
            if (!kh->total)
                continue;
            fprintf(f, "  %-8s  p50 %s p99 %s max %s (%llu)\n", acq_kind_names[k],
                    report_fmt_ns(a, sizeof(a), (double)hist_percentile(kh, 50)),
                    report_fmt_ns(b, sizeof(b), (double)hist_percentile(kh, 99)),
                    report_fmt_ns(c, sizeof(c), (double)kh->max), (unsigned long long)kh->total);
        }
    }
    bool any_phase = false;
    for (int p = 0; p < PH__COUNT; p++)
        any_phase = any_phase || r->phase_n[p];
    if (any_phase) {
        fprintf(f, "phases     mean");
        for (int p = 0; p < PH__COUNT; p++) {
            if (r->phase_n[p])
                fprintf(f, " %s %.3f ms", phase_names[p],
                        (double)(r->phase_sum_ms[p] / r->phase_n[p]));
            else
                fprintf(f, " %s n/a", phase_names[p]);
        }
        fprintf(f, " (server's Server-Timing)\n");
    }
    fprintf(f,
            "send lag   p50 %s p99 %s max %s, max backlog %llu (generator lateness; "
            "included in latency)\n",
            report_fmt_ns(a, sizeof(a), (double)hist_percentile(r->send_lag, 50)),
            report_fmt_ns(b, sizeof(b), (double)hist_percentile(r->send_lag, 99)),
            report_fmt_ns(c, sizeof(c), (double)r->send_lag->max),
            (unsigned long long)r->max_backlog);
    if (cfg->metrics_poll_ms) {
        fprintf(f, "pool       peak memory ");
        if (r->peak_memory_bytes >= 0)
            fprintf(f, "%.1f MiB", (double)r->peak_memory_bytes / 1048576.0);
        else
            fprintf(f, "n/a");
        fprintf(f, ", peak sandboxes ");
        if (r->peak_sandboxes >= 0)
            fprintf(f, "%lld", (long long)r->peak_sandboxes);
        else
            fprintf(f, "n/a");
        fprintf(f, " (%u polls of /metrics)\n", r->metrics_polls);
    }
}

static json_t *percentiles_json(const struct hist *h)
{
    json_t *o = json_object();
    for (size_t i = 0; i < 4; i++)
        json_object_set_new(o, percentile_keys[i],
                            json_real(ms(hist_percentile(h, percentiles[i]))));
    json_object_set_new(o, "max", json_real(ms(h->max)));
    json_object_set_new(o, "min", json_real(h->total ? ms(h->min) : 0.0));
    json_object_set_new(o, "mean", json_real(hist_mean(h) / 1e6));
    json_object_set_new(o, "count", json_integer((json_int_t)h->total));
    return o;
}

void *report_run_json(const struct load_config *cfg, const struct load_result *r)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "url", json_string(cfg->target->url));
    json_t *fns = json_array();
    for (size_t i = 0; i < cfg->n_fns; i++)
        json_array_append_new(fns, json_string(cfg->fns[i].name));
    json_object_set_new(o, "functions", fns);
    json_object_set_new(o, "pattern", json_string(pattern_names[cfg->pattern]));
    if (cfg->pattern == PAT_CONSTANT || cfg->pattern == PAT_POISSON)
        json_object_set_new(o, "rate", json_real(cfg->rate));
    json_object_set_new(o, "duration_s", json_real(cfg->duration_s));
    json_object_set_new(o, "connections", json_integer(cfg->connections));
    json_object_set_new(o, "scheduled", json_integer((json_int_t)r->scheduled));
    json_object_set_new(o, "sent", json_integer((json_int_t)r->sent));
    json_object_set_new(o, "completed", json_integer((json_int_t)r->completed));
    json_object_set_new(o, "ok", json_integer((json_int_t)r->ok));
    json_object_set_new(o, "errors", json_integer((json_int_t)load_result_errors(r)));
    json_t *errs = json_object();
    for (int e = 0; e < LERR__COUNT; e++)
        json_object_set_new(errs, load_err_names[e], json_integer((json_int_t)r->errs[e]));
    json_object_set_new(o, "transport_errors", errs);
    json_t *st = json_object();
    for (int s = 0; s < 600; s++) {
        if (r->status_counts[s]) {
            char k[8];
            snprintf(k, sizeof(k), "%d", s);
            json_object_set_new(st, k, json_integer((json_int_t)r->status_counts[s]));
        }
    }
    json_object_set_new(o, "status", st);
    json_object_set_new(o, "elapsed_s", json_real(r->elapsed_s));
    json_object_set_new(o, "throughput_rps",
                        json_real(r->elapsed_s > 0 ? (double)r->completed / r->elapsed_s : 0));
    double cold = load_result_cold_ratio(r);
    json_object_set_new(o, "cold_ratio", cold >= 0 ? json_real(cold) : json_null());
    json_t *kinds = json_object();
    json_t *by_kind = json_object();
    for (int k = 0; k < ACQ__COUNT; k++) {
        json_object_set_new(kinds, acq_kind_names[k], json_integer((json_int_t)r->kinds[k]));
        if (r->kind_latency[k]->total)
            json_object_set_new(by_kind, acq_kind_names[k], percentiles_json(r->kind_latency[k]));
    }
    json_object_set_new(o, "acquire", kinds);
    json_object_set_new(o, "latency_ms", percentiles_json(r->latency));
    json_object_set_new(o, "latency_by_acquire_ms", by_kind);
    json_t *ph = json_object();
    for (int p = 0; p < PH__COUNT; p++)
        json_object_set_new(ph, phase_names[p],
                            r->phase_n[p] ? json_real((double)(r->phase_sum_ms[p] / r->phase_n[p]))
                                          : json_null());
    json_object_set_new(o, "phase_means_ms", ph);
    json_object_set_new(o, "send_lag_ms", percentiles_json(r->send_lag));
    json_object_set_new(o, "max_backlog", json_integer((json_int_t)r->max_backlog));
    if (cfg->metrics_poll_ms) {
        json_object_set_new(o, "peak_memory_bytes",
                            r->peak_memory_bytes >= 0 ? json_integer(r->peak_memory_bytes)
                                                      : json_null());
        json_object_set_new(o, "peak_sandboxes",
                            r->peak_sandboxes >= 0 ? json_integer(r->peak_sandboxes) : json_null());
    }
    return o;
}

int report_run_csv(const char *path, const struct load_config *cfg, const struct load_result *r)
{
    cleanup_fclose FILE *f = fopen(path, "w");
    if (!f)
        return -errno;
    fprintf(f, "intended_ms,function,status,error,latency_ms,acquire,queue_ms,acquire_ms,"
               "init_ms,run_ms\n");
    for (size_t i = 0; i < r->n_records; i++) {
        const struct load_record *rec = &r->records[i];
        fprintf(f, "%.3f,%s,%u,%s,", (double)rec->intended_ns / 1e6, cfg->fns[rec->fn].name,
                rec->status, rec->err ? load_err_names[rec->err - 1] : "");
        if (rec->err)
            fprintf(f, ",");
        else
            fprintf(f, "%.3f,", (double)rec->latency_ns / 1e6);
        fprintf(f, "%s", rec->err ? "" : acq_kind_names[rec->kind]);
        for (int p = 0; p < PH__COUNT; p++) {
            if (rec->phase_ms[p] >= 0)
                fprintf(f, ",%.3f", rec->phase_ms[p]);
            else
                fprintf(f, ",");
        }
        fputc('\n', f);
    }
    if (fflush(f) != 0 || ferror(f))
        return -EIO;
    return 0;
}
