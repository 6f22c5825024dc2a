/* admin.c - deploy-rate (how fast the store takes packages) and cold (what a
 * function's first call costs). Both are closed loops over the admin API:
 * they measure service time per call, not behaviour under offered load. */
#include "bench/bench.h"
#include "common/cleanup.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void *bench_read_file(const char *path, size_t *len)
{
    cleanup_fclose FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    for (;;) {
        if (n == cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) {
                free(buf);
                errno = ENOMEM;
                return NULL;
            }
            buf = b;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                free(buf);
                errno = EIO;
                return NULL;
            }
            break;
        }
    }
    *len = n;
    return buf;
}

struct summary {
    const char *first_error; /* body of the first refused request, borrowed */
    size_t n, ok;
    size_t status[600];
    size_t transport;
    int last_err;
    struct hist *lat;
    uint64_t kinds[ACQ__COUNT];
    long double phase_sum[PH__COUNT];
    uint64_t phase_n[PH__COUNT];
};

static void summarize(struct summary *s, const struct batch_item *items, size_t n, int ok_lo,
                      int ok_hi)
{
    memset(s->status, 0, sizeof(s->status));
    s->n = n;
    s->ok = s->transport = 0;
    s->first_error = NULL;
    hist_reset(s->lat);
    memset(s->kinds, 0, sizeof(s->kinds));
    memset(s->phase_sum, 0, sizeof(s->phase_sum));
    memset(s->phase_n, 0, sizeof(s->phase_n));
    for (size_t i = 0; i < n; i++) {
        const struct batch_item *it = &items[i];
        if (it->err) {
            s->transport++;
            s->last_err = it->err;
            continue;
        }
        s->status[it->status >= 0 && it->status < 600 ? it->status : 0]++;
        if ((it->status < ok_lo || it->status > ok_hi) && !s->first_error && it->resp_body)
            s->first_error = it->resp_body;
        if (it->status >= ok_lo && it->status <= ok_hi) {
            s->ok++;
            hist_record(s->lat, it->latency_ns);
            s->kinds[it->timing.kind]++;
            for (int p = 0; p < PH__COUNT; p++) {
                if (it->timing.have & (1u << p)) {
                    s->phase_sum[p] += it->timing.dur_ms[p];
                    s->phase_n[p]++;
                }
            }
        }
    }
}

static void print_statuses(FILE *f, const struct summary *s)
{
    for (int c = 0; c < 600; c++)
        if (s->status[c])
            fprintf(f, " %d: %zu", c, s->status[c]);
    if (s->transport)
        fprintf(f, " transport errors: %zu (%s)", s->transport, uv_strerror(s->last_err));
    if (s->first_error) {
        int len = (int)strcspn(s->first_error, "\r\n");
        fprintf(f, "\n           first refusal: %.*s", len > 300 ? 300 : len, s->first_error);
    }
}

static void print_latency(FILE *f, const char *label, const struct hist *h)
{
    char a[32], b[32], c[32], d[32];
    if (!h->total) {
        fprintf(f, "%-10s n/a (nothing succeeded)\n", label);
        return;
    }
    fprintf(f, "%-10s p50 %s p90 %s p99 %s max %s\n", label,
            report_fmt_ns(a, sizeof(a), (double)hist_percentile(h, 50)),
            report_fmt_ns(b, sizeof(b), (double)hist_percentile(h, 90)),
            report_fmt_ns(c, sizeof(c), (double)hist_percentile(h, 99)),
            report_fmt_ns(d, sizeof(d), (double)h->max));
}

static json_t *summary_json(const struct summary *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "count", json_integer((json_int_t)s->n));
    json_object_set_new(o, "ok", json_integer((json_int_t)s->ok));
    json_object_set_new(o, "transport_errors", json_integer((json_int_t)s->transport));
    json_t *st = json_object();
    for (int c = 0; c < 600; c++) {
        if (s->status[c]) {
            char k[8];
            snprintf(k, sizeof(k), "%d", c);
            json_object_set_new(st, k, json_integer((json_int_t)s->status[c]));
        }
    }
    json_object_set_new(o, "status", st);
    json_t *lat = json_object();
    json_object_set_new(lat, "p50", json_real((double)hist_percentile(s->lat, 50) / 1e6));
    json_object_set_new(lat, "p90", json_real((double)hist_percentile(s->lat, 90) / 1e6));
    json_object_set_new(lat, "p99", json_real((double)hist_percentile(s->lat, 99) / 1e6));
    json_object_set_new(lat, "max", json_real((double)s->lat->max / 1e6));
    json_object_set_new(lat, "mean", json_real(hist_mean(s->lat) / 1e6));
    json_object_set_new(o, "latency_ms", lat);
    json_t *kinds = json_object();
    for (int k = 0; k < ACQ__COUNT; k++)
        if (s->kinds[k])
            json_object_set_new(kinds, acq_kind_names[k], json_integer((json_int_t)s->kinds[k]));
    json_object_set_new(o, "acquire", kinds);
    json_t *ph = json_object();
    for (int p = 0; p < PH__COUNT; p++)
        json_object_set_new(ph, phase_names[p],
                            s->phase_n[p] ? json_real((double)(s->phase_sum[p] / s->phase_n[p]))
                                          : json_null());
    json_object_set_new(o, "phase_means_ms", ph);
    return o;
}

static char **make_names(const char *prefix, uint32_t n)
{
    char **names = calloc(n, sizeof(*names));
    if (!names)
        return NULL;
    for (uint32_t i = 0; i < n; i++) {
        if (asprintf(&names[i], "%s%u", prefix, i) < 0) {
            for (uint32_t k = 0; k < i; k++)
                free(names[k]);
            free(names);
            return NULL;
        }
    }
    return names;
}

static void free_items(struct batch_item *items, size_t n)
{
    for (size_t i = 0; items && i < n; i++) {
        free(items[i].path);
        free(items[i].resp_body);
    }
    free(items);
}

static struct batch_item *make_items(size_t n)
{
    return calloc(n ? n : 1, sizeof(struct batch_item));
}

/* DELETE every name we created; not timed, failures only reported. */
static void delete_all(uv_loop_t *loop, const struct bench_target *t, char **names, size_t n,
                       const bool *created, unsigned concurrency, uint32_t timeout_ms)
{
    struct batch_item *items = make_items(n);
    if (!items)
        return;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (created && !created[i])
            continue;
        items[k].method = "DELETE";
        if (asprintf(&items[k].path, "/v1/functions/%s", names[i]) < 0)
            items[k].path = NULL;
        if (items[k].path)
            k++;
    }
    httpc_batch(loop, t, items, k, concurrency, timeout_ms, false, NULL);
    size_t failed = 0;
    for (size_t i = 0; i < k; i++)
        failed += items[i].err || items[i].status < 200 || items[i].status >= 300;
    if (failed)
        fprintf(stderr, "ember-bench: %zu of %zu DELETEs failed (names %s...)\n", failed, k,
                names[0]);
    free_items(items, k);
}

int admin_deploy_rate(uv_loop_t *loop, const struct bench_target *t, const struct admin_options *o)
{
    size_t len1 = 0, len2 = 0;
    cleanup_free char *pkg1 = bench_read_file(o->package, &len1);
    if (!pkg1) {
        fprintf(stderr, "ember-bench: --package %s: %s\n", o->package, strerror(errno));
        return 1;
    }
    cleanup_free char *pkg2 = NULL;
    if (o->package2) {
        pkg2 = bench_read_file(o->package2, &len2);
        if (!pkg2) {
            fprintf(stderr, "ember-bench: --package2 %s: %s\n", o->package2, strerror(errno));
            return 1;
        }
    }
    uint32_t n = o->count;
    char **names = o->name ? NULL : make_names(o->prefix, n);
    struct batch_item *items = make_items(n);
    if ((!o->name && !names) || !items) {
        free(items);
        return 1;
    }
    for (uint32_t i = 0; i < n; i++) {
        items[i].method = "PUT";
        if (asprintf(&items[i].path, "/v1/functions/%s", o->name ? o->name : names[i]) < 0)
            items[i].path = NULL;
        bool second = pkg2 && (i % 2 == 1);
        items[i].body = second ? pkg2 : pkg1;
        items[i].body_len = second ? len2 : len1;
        items[i].content_type = "application/octet-stream";
    }
    uint64_t elapsed = 0;
    httpc_batch(loop, t, items, n, o->concurrency, o->timeout_ms, true, &elapsed);

    struct summary s = {.lat = hist_new()};
    if (!s.lat)
        return 1;
    summarize(&s, items, n, 200, 201);
    double secs = (double)elapsed / 1e9;
    double rate = secs > 0 ? (double)s.ok / secs : 0;
    if (o->json) {
        json_t *j = summary_json(&s);
        json_object_set_new(j, "elapsed_s", json_real(secs));
        json_object_set_new(j, "packages_per_s", json_real(rate));
        json_object_set_new(j, "package_bytes", json_integer((json_int_t)len1));
        json_object_set_new(j, "concurrency", json_integer(o->concurrency));
        json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        fputc('\n', stdout);
        json_decref(j);
    } else {
        printf("deploy     %u PUTs of %zu-byte package%s %s, concurrency %u\n", n, len1,
               pkg2 ? "s (alternating)" : "", o->name ? "to one name" : "under distinct names",
               o->concurrency);
        printf("result     %zu ok in %.3f s: %.1f packages/s;", s.ok, secs, rate);
        print_statuses(stdout, &s);
        printf("\n");
        print_latency(stdout, "latency", s.lat);
    }

    if (!o->keep) {
        bool *created = calloc(n ? n : 1, sizeof(bool));
        for (uint32_t i = 0; created && i < n; i++)
            created[i] = items[i].status == 200 || items[i].status == 201;
        if (o->name) {
            char *one[1] = {(char *)o->name};
            bool any = s.ok > 0;
            delete_all(loop, t, one, 1, &any, 1, o->timeout_ms);
        } else if (created) {
            delete_all(loop, t, names, n, created, o->concurrency, o->timeout_ms);
        }
        free(created);
    }
    size_t ok = s.ok;
    free(s.lat);
    free_items(items, n);
    for (uint32_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    return ok > 0 ? 0 : 1;
}

static struct batch_item *invoke_items(char **names, const bool *deployed, uint32_t n,
                                       const struct admin_options *o, size_t *count)
{
    struct batch_item *items = make_items(n);
    if (!items)
        return NULL;
    size_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!deployed[i])
            continue;
        items[k].method = o->method;
        if (asprintf(&items[k].path, "/fn/%s%s", names[i], o->path) < 0) {
            items[k].path = NULL;
            continue;
        }
        k++;
    }
    *count = k;
    return items;
}

int admin_cold(uv_loop_t *loop, const struct bench_target *t, const struct admin_options *o)
{
    size_t len = 0;
    cleanup_free char *pkg = bench_read_file(o->package, &len);
    if (!pkg) {
        fprintf(stderr, "ember-bench: --package %s: %s\n", o->package, strerror(errno));
        return 1;
    }
    uint32_t n = o->count;
    char **names = make_names(o->prefix, n);
    struct batch_item *deploys = make_items(n);
    bool *deployed = calloc(n ? n : 1, sizeof(bool));
    if (!names || !deploys || !deployed)
        return 1;
    for (uint32_t i = 0; i < n; i++) {
        deploys[i].method = "PUT";
        if (asprintf(&deploys[i].path, "/v1/functions/%s", names[i]) < 0)
            deploys[i].path = NULL;
        deploys[i].body = pkg;
        deploys[i].body_len = len;
        deploys[i].content_type = "application/octet-stream";
    }
    uint64_t deploy_ns = 0;
    httpc_batch(loop, t, deploys, n, o->concurrency, o->timeout_ms, true, &deploy_ns);
    struct summary dep = {.lat = hist_new()}, first = {.lat = hist_new()},
                   second = {.lat = hist_new()};
    if (!dep.lat || !first.lat || !second.lat)
        return 1;
    summarize(&dep, deploys, n, 200, 201);
    for (uint32_t i = 0; i < n; i++)
        deployed[i] = deploys[i].status == 200 || deploys[i].status == 201;

    /* First calls one at a time, so each measures a cold start alone rather
     * than cold starts queued behind each other. */
    size_t m = 0;
    struct batch_item *calls1 = invoke_items(names, deployed, n, o, &m);
    struct batch_item *calls2 = NULL;
    uint64_t first_ns = 0;
    if (calls1) {
        httpc_batch(loop, t, calls1, m, 1, o->timeout_ms, false, &first_ns);
        summarize(&first, calls1, m, 200, 399);
    }
    if (o->second_call && calls1) {
        size_t m2 = 0;
        calls2 = invoke_items(names, deployed, n, o, &m2);
        if (calls2) {
            httpc_batch(loop, t, calls2, m2, 1, o->timeout_ms, false, NULL);
            summarize(&second, calls2, m2, 200, 399);
        }
    }

    if (o->json) {
        json_t *j = json_object();
        json_t *d = summary_json(&dep);
        json_object_set_new(d, "elapsed_s", json_real((double)deploy_ns / 1e9));
        json_object_set_new(j, "deploy", d);
        json_object_set_new(j, "first_call", summary_json(&first));
        if (calls2)
            json_object_set_new(j, "second_call", summary_json(&second));
        json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        fputc('\n', stdout);
        json_decref(j);
    } else {
        printf("deploy     %u functions from %s: %zu ok in %.2f s;", n, o->package, dep.ok,
               (double)deploy_ns / 1e9);
        print_statuses(stdout, &dep);
        printf("\n");
        printf("first call %zu answered;", first.ok);
        print_statuses(stdout, &first);
        printf("\n");
        print_latency(stdout, "  latency", first.lat);
        printf("  acquire ");
        for (int k = 0; k < ACQ__COUNT; k++)
            if (first.kinds[k])
                printf(" %s %llu", acq_kind_names[k], (unsigned long long)first.kinds[k]);
        printf("\n  phases   ");
        for (int p = 0; p < PH__COUNT; p++) {
            if (first.phase_n[p])
                printf(" %s %.3f ms", phase_names[p],
                       (double)(first.phase_sum[p] / first.phase_n[p]));
            else
                printf(" %s n/a", phase_names[p]);
        }
        printf(" (means)\n");
        if (calls2) {
            printf("2nd call   %zu answered;", second.ok);
            print_statuses(stdout, &second);
            printf("\n");
            print_latency(stdout, "  latency", second.lat);
            printf("  acquire ");
            for (int k = 0; k < ACQ__COUNT; k++)
                if (second.kinds[k])
                    printf(" %s %llu", acq_kind_names[k], (unsigned long long)second.kinds[k]);
            printf("\n");
        }
    }

    if (!o->keep)
        delete_all(loop, t, names, n, deployed, o->concurrency, o->timeout_ms);
    size_t ok = first.ok;
    free(dep.lat);
    free(first.lat);
    free(second.lat);
    free_items(calls1, m);
    free_items(calls2, m);
    free_items(deploys, n);
    free(deployed);
    for (uint32_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return ok > 0 ? 0 : 1;
}
