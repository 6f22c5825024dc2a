/* stats.c - what the pool tells operators: latency histograms, per-function
 * counters, recent log lines, and the Prometheus text of GET /metrics. */
#include "pool/pool_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"

const double pool__hist_bounds[POOL_HIST_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,    0.25,    0.5,    1,     2.5,    5,     10,  1e300 /* +Inf */};

void pool__hist_add(struct pool_hist *h, uint64_t ns)
{
    double s = (double)ns / 1e9;
    int i = 0;
    while (i < POOL_HIST_BUCKETS - 1 && s > pool__hist_bounds[i])
        i++;
    h->buckets[i]++;
    h->count++;
    h->sum_s += s;
}

double pool__hist_quantile(const struct pool_hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count);
    if (rank >= h->count)
        rank = h->count - 1;
    uint64_t seen = 0;
    for (int i = 0; i < POOL_HIST_BUCKETS; i++) {
        if (seen + h->buckets[i] > rank) {
            /* interpolate linearly inside the bucket */
            double lo = i ? pool__hist_bounds[i - 1] : 0;
            double hi = i < POOL_HIST_BUCKETS - 1 ? pool__hist_bounds[i] : lo * 2;
            double frac = (double)(rank - seen + 1) / (double)h->buckets[i];
            return lo + (hi - lo) * frac;
        }
        seen += h->buckets[i];
    }
    return pool__hist_bounds[POOL_HIST_BUCKETS - 2];
}

/* ---- logs ------------------------------------------------------------------ */

void pool__log_add(struct pool_log *l, uint64_t instance, int stream, const char *line,
                   size_t len)
{
    /* Make room: drop the oldest lines while over the count or byte bound. */
    while (l->count > 0 && (l->count == POOL_LOG_LINES || l->bytes + len > POOL_LOG_BYTES)) {
        struct pool_log_line *old = &l->lines[l->head];
        l->bytes -= old->len;
        free(old->line);
        old->line = NULL;
        l->head = (l->head + 1) % POOL_LOG_LINES;
        l->count--;
        l->dropped++;
    }
    if (len > POOL_LOG_BYTES)
        len = POOL_LOG_BYTES;
    char *copy = malloc(len + 1);
    if (!copy)
        return;
    memcpy(copy, line, len);
    copy[len] = '\0';
    struct pool_log_line *slot = &l->lines[(l->head + l->count) % POOL_LOG_LINES];
    slot->time_ms = ember_wall_ms();
    slot->instance = instance;
    slot->stream = stream;
    slot->line = copy;
    slot->len = len;
    l->count++;
    l->bytes += len;
}

void pool__log_free(struct pool_log *l)
{
    for (size_t i = 0; i < l->count; i++)
        free(l->lines[(l->head + i) % POOL_LOG_LINES].line);
    l->count = 0;
}

json_t *pool_function_logs(struct pool *p, const char *name, size_t max_lines)
{
    json_t *arr = json_array();
    struct pool_fn *fn = pool__fn_get(p, name, false);
    if (!fn)
        return arr;
    struct pool_log *l = &fn->log;
    size_t start = l->count > max_lines ? l->count - max_lines : 0;
    for (size_t i = start; i < l->count; i++) {
        const struct pool_log_line *ln = &l->lines[(l->head + i) % POOL_LOG_LINES];
        json_t *o = json_object();
        json_object_set_new(o, "time_ms", json_integer(ln->time_ms));
        json_object_set_new(o, "instance", json_integer((json_int_t)ln->instance));
        json_object_set_new(o, "stream", json_string(ln->stream == 2 ? "stderr" : "stdout"));
        json_object_set_new(o, "line", json_stringn_nocheck(ln->line, ln->len));
        json_array_append_new(arr, o);
    }
    return arr;
}

/* ---- per-function JSON ---------------------------------------------------------- */

static void count_states(const struct pool_fn *fn, uint32_t counts[5])
{
    memset(counts, 0, 5 * sizeof(counts[0]));
    const struct list *pos;
    for (pos = fn->instances.next; pos != &fn->instances; pos = pos->next)
        counts[list_entry(pos, struct pool_sb, link)->state]++;
    if (fn->zygote)
        counts[fn->zygote->state == PSB_STARTING ? PSB_STARTING : PSB_ZYGOTE]++;
}

static json_t *hist_json(const struct pool_hist *h)
{
    json_t *o = json_object();
    json_object_set_new(o, "count", json_integer((json_int_t)h->count));
    json_object_set_new(o, "mean_ms", json_real(h->count ? h->sum_s * 1e3 / (double)h->count : 0));
    json_object_set_new(o, "p50_ms", json_real(pool__hist_quantile(h, 0.5) * 1e3));
    json_object_set_new(o, "p99_ms", json_real(pool__hist_quantile(h, 0.99) * 1e3));
    return o;
}

json_t *pool_function_json(struct pool *p, const char *name)
{
    json_t *o = json_object();
    struct pool_fn *fn = pool__fn_get(p, name, false);
    uint64_t cold = 0;
    if (fn)
        for (int a = 1; a < POOL_ACQUIRE_COUNT; a++)
            cold += fn->acquired[a];
    json_object_set_new(o, "invocations", json_integer(fn ? (json_int_t)fn->calls : 0));
    json_object_set_new(o, "cold_starts", json_integer((json_int_t)cold));
    json_object_set_new(o, "errors", json_integer(fn ? (json_int_t)fn->errors : 0));
    json_object_set_new(o, "timeouts", json_integer(fn ? (json_int_t)fn->timeouts : 0));
    json_object_set_new(o, "out_of_memory", json_integer(fn ? (json_int_t)fn->ooms : 0));
    json_object_set_new(o, "crashes", json_integer(fn ? (json_int_t)fn->crashes : 0));
    json_object_set_new(o, "rejected", json_integer(fn ? (json_int_t)fn->rejected : 0));
    json_object_set_new(o, "sent_ahead", json_integer(fn ? (json_int_t)fn->sent_ahead : 0));
    json_object_set_new(o, "requeued", json_integer(fn ? (json_int_t)fn->requeued : 0));
    json_t *acq = json_object();
    for (int a = 0; a < POOL_ACQUIRE_COUNT; a++)
        json_object_set_new(acq, pool_acquire_name((enum pool_acquire)a),
                            json_integer(fn ? (json_int_t)fn->acquired[a] : 0));
    json_object_set_new(o, "acquired", acq);
    uint32_t st[5] = {0};
    if (fn)
        count_states(fn, st);
    json_t *inst = json_object();
    for (int s = 0; s < 5; s++)
        if (s != PSB_STEM)
            json_object_set_new(inst, pool__state_name((enum pool_sb_state)s), json_integer(st[s]));
    json_object_set_new(o, "instances", inst);
    json_object_set_new(o, "queued", json_integer(fn ? fn->queue_len : 0));
    if (fn) {
        json_object_set_new(o, "acquire_latency", hist_json(&fn->acquire_hist));
        json_object_set_new(o, "run_latency", hist_json(&fn->run_hist));
        json_object_set_new(o, "pool_overrides", pool__fn_knobs_json(&fn->over));
    }
    return o;
}

/* ---- Prometheus text --------------------------------------------------------------- */

void pool_textbuf_printf(struct pool_textbuf *b, const char *fmt, ...)
{
    for (;;) {
        size_t room = b->cap - b->len;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->data ? b->data + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap - b->len <= (size_t)n)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d)
            return;
        b->data = d;
        b->cap = cap;
    }
}

static void hist_write(struct pool_textbuf *b, const char *metric, const char *labels,
                       const struct pool_hist *h)
{
    uint64_t cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (int i = 0; i < POOL_HIST_BUCKETS; i++) {
        cum += h->buckets[i];
        if (i == POOL_HIST_BUCKETS - 1)
            pool_textbuf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", metric, labels,
                                sep, cum);
        else
            pool_textbuf_printf(b, "%s_bucket{%s%sle=\"%g\"} %" PRIu64 "\n", metric, labels,
                                sep, pool__hist_bounds[i], cum);
    }
    if (labels[0]) {
        pool_textbuf_printf(b, "%s_sum{%s} %.9f\n", metric, labels, h->sum_s);
        pool_textbuf_printf(b, "%s_count{%s} %" PRIu64 "\n", metric, labels, h->count);
    } else {
        pool_textbuf_printf(b, "%s_sum %.9f\n", metric, h->sum_s);
        pool_textbuf_printf(b, "%s_count %" PRIu64 "\n", metric, h->count);
    }
}

/* One counter per function: the uint64_t at @field of struct pool_fn. */
static void fn_counter(struct pool *p, struct pool_textbuf *b, const char *metric, const char *help,
                       size_t field)
{
    pool_textbuf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", metric, help, metric);
    for (struct list *pos = p->functions.next; pos != &p->functions; pos = pos->next) {
        const struct pool_fn *fn = list_entry(pos, struct pool_fn, link);
        uint64_t v;
        memcpy(&v, (const char *)fn + field, sizeof(v));
        pool_textbuf_printf(b, "%s{function=\"%s\"} %" PRIu64 "\n", metric, fn->name, v);
    }
}

void pool_metrics_write(struct pool *p, struct pool_textbuf *b)
{
    struct list *pos;

    fn_counter(p, b, "ember_invocations_total", "Invocations completed.",
               offsetof(struct pool_fn, calls));
    fn_counter(p, b, "ember_invocation_errors_total", "Invocations that failed.",
               offsetof(struct pool_fn, errors));
    fn_counter(p, b, "ember_calls_sent_ahead_total", "Calls sent to a busy instance to wait there.",
               offsetof(struct pool_fn, sent_ahead));
    fn_counter(p, b, "ember_calls_requeued_total",
               "Calls sent ahead that came back unstarted, to the queue.",
               offsetof(struct pool_fn, requeued));
    pool_textbuf_printf(b, "# HELP ember_acquires_total How calls got their instance.\n"
                           "# TYPE ember_acquires_total counter\n");
    for (pos = p->functions.next; pos != &p->functions; pos = pos->next) {
        struct pool_fn *fn = list_entry(pos, struct pool_fn, link);
        for (int a = 0; a < POOL_ACQUIRE_COUNT; a++)
            pool_textbuf_printf(b, "ember_acquires_total{function=\"%s\",kind=\"%s\"} %" PRIu64
                                   "\n", fn->name, pool_acquire_name((enum pool_acquire)a),
                                fn->acquired[a]);
    }
    pool_textbuf_printf(b, "# HELP ember_instances Sandboxes of each function by state.\n"
                           "# TYPE ember_instances gauge\n");
    for (pos = p->functions.next; pos != &p->functions; pos = pos->next) {
        struct pool_fn *fn = list_entry(pos, struct pool_fn, link);
        uint32_t st[5];
        count_states(fn, st);
        for (int s = 0; s < 5; s++)
            if (s != PSB_STEM)
                pool_textbuf_printf(b, "ember_instances{function=\"%s\",state=\"%s\"} %u\n",
                                    fn->name, pool__state_name((enum pool_sb_state)s), st[s]);
    }
    pool_textbuf_printf(b, "# HELP ember_acquire_seconds Time to get an instance for a call.\n"
                           "# TYPE ember_acquire_seconds histogram\n");
    for (pos = p->functions.next; pos != &p->functions; pos = pos->next) {
        struct pool_fn *fn = list_entry(pos, struct pool_fn, link);
        char labels[96];
        snprintf(labels, sizeof(labels), "function=\"%s\"", fn->name);
        hist_write(b, "ember_acquire_seconds", labels, &fn->acquire_hist);
    }
    pool_textbuf_printf(b, "# HELP ember_run_seconds Time the function ran.\n"
                           "# TYPE ember_run_seconds histogram\n");
    for (pos = p->functions.next; pos != &p->functions; pos = pos->next) {
        struct pool_fn *fn = list_entry(pos, struct pool_fn, link);
        char labels[96];
        snprintf(labels, sizeof(labels), "function=\"%s\"", fn->name);
        hist_write(b, "ember_run_seconds", labels, &fn->run_hist);
    }
    pool_textbuf_printf(b, "# HELP ember_acquire_all_seconds Acquire latency, all functions.\n"
                           "# TYPE ember_acquire_all_seconds histogram\n");
    hist_write(b, "ember_acquire_all_seconds", "", &p->acquire_hist);
    pool_textbuf_printf(b, "# HELP ember_run_all_seconds Run latency, all functions.\n"
                           "# TYPE ember_run_all_seconds histogram\n");
    hist_write(b, "ember_run_all_seconds", "", &p->run_hist);

    pool_textbuf_printf(b, "# HELP ember_pool_invocations_total Invocations, all functions.\n"
                           "# TYPE ember_pool_invocations_total counter\n"
                           "ember_pool_invocations_total %" PRIu64 "\n", p->calls);
    pool_textbuf_printf(b, "# HELP ember_pool_errors_total Failed invocations, all functions.\n"
                           "# TYPE ember_pool_errors_total counter\n"
                           "ember_pool_errors_total %" PRIu64 "\n", p->errors);
    pool_textbuf_printf(b, "# HELP ember_pool_cold_starts_total New instances by how they were made.\n"
                           "# TYPE ember_pool_cold_starts_total counter\n");
    for (int a = 1; a < POOL_ACQUIRE_COUNT; a++)
        pool_textbuf_printf(b, "ember_pool_cold_starts_total{kind=\"%s\"} %" PRIu64 "\n",
                            pool_acquire_name((enum pool_acquire)a), p->created[a]);
    pool_textbuf_printf(b, "# HELP ember_stem_cells Ready stem cells per backend.\n"
                           "# TYPE ember_stem_cells gauge\n");
    for (int k = 0; k < SANDBOX_KIND_COUNT; k++)
        pool_textbuf_printf(b, "ember_stem_cells{backend=\"%s\"} %u\n",
                            sandbox_kind_name((enum sandbox_kind)k), p->n_stems[k]);
    pool_textbuf_printf(b, "# HELP ember_sandboxes Sandboxes the pool holds.\n"
                           "# TYPE ember_sandboxes gauge\n"
                           "ember_sandboxes %u\n", p->live_sandboxes);
    pool_textbuf_printf(b, "# HELP ember_pool_memory_bytes Memory charged in the ledger (cgroup limits).\n"
                           "# TYPE ember_pool_memory_bytes gauge\n"
                           "ember_pool_memory_bytes %" PRIu64 "\n", p->mem_charged);
    pool_textbuf_printf(b, "# HELP ember_pool_memory_peak_bytes Highest charge seen.\n"
                           "# TYPE ember_pool_memory_peak_bytes gauge\n"
                           "ember_pool_memory_peak_bytes %" PRIu64 "\n", p->mem_peak);
    pool_textbuf_printf(b, "# HELP ember_pool_memory_budget_bytes The ledger's budget.\n"
                           "# TYPE ember_pool_memory_budget_bytes gauge\n"
                           "ember_pool_memory_budget_bytes %" PRIu64 "\n",
                        (uint64_t)(p->knobs.memory_budget_mb * 1024u * 1024u));
    pool_textbuf_printf(b,
                        "# HELP ember_pool_forked_ahead_total Instances a zygote had forked "
                        "ahead (zygote_prefork).\n"
                        "# TYPE ember_pool_forked_ahead_total counter\n"
                        "ember_pool_forked_ahead_total %" PRIu64 "\n",
                        p->forked_ahead);
    pool_textbuf_printf(b, "# HELP ember_pool_evictions_total Idle sandboxes evicted for memory.\n"
                           "# TYPE ember_pool_evictions_total counter\n"
                           "ember_pool_evictions_total %" PRIu64 "\n", p->evictions);
    pool_textbuf_printf(b, "# HELP ember_pool_rejected_total Calls refused with 429.\n"
                           "# TYPE ember_pool_rejected_total counter\n"
                           "ember_pool_rejected_total %" PRIu64 "\n", p->rejected);
}
