/* knobs.c - the pool's tuning knobs: defaults, validation, live changes.
 *
 * One table describes every global knob (name, range, where it lives), so
 * GET /v1/pool, PATCH /v1/pool, --config and the error messages agree.
 */
#include "pool/pool_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"

#define MB (1024ull * 1024ull)

enum knob_field {
    K_KEEPALIVE_MS,
    K_MIN_WARM,
    K_MAX_INSTANCES,
    K_MAX_CALLS,
    K_QUEUE_LENGTH,
    K_QUEUE_TIMEOUT_MS,
    K_MEMORY_BUDGET_MB,
    K_SCALE_OUT_WAIT_US,
    K_ZYGOTE_PREFORK,
};

struct knob_desc {
    const char *name;
    enum knob_field field;
    int64_t min, max;
    bool per_function;
};

static const struct knob_desc knob_table[] = {
    {"keepalive_ms", K_KEEPALIVE_MS, 0, 7 * 24 * 3600 * 1000ll, true},
    {"min_warm", K_MIN_WARM, 0, POOL_MAX_INSTANCES_MAX, true},
    {"max_instances", K_MAX_INSTANCES, 1, POOL_MAX_INSTANCES_MAX, true},
    {"max_calls_per_instance", K_MAX_CALLS, 0, INT64_MAX / 2, true},
    {"queue_length", K_QUEUE_LENGTH, 0, POOL_QUEUE_LENGTH_MAX, true},
    {"queue_timeout_ms", K_QUEUE_TIMEOUT_MS, 0, 3600 * 1000ll, true},
    {"memory_budget_mb", K_MEMORY_BUDGET_MB, 16, 1ll << 30, false},
    {"scale_out_wait_us", K_SCALE_OUT_WAIT_US, 0, 10 * 1000 * 1000ll, true},
    {"zygote_prefork", K_ZYGOTE_PREFORK, 0, 1, true},
};

static uint64_t host_memory_mb(void)
{
    long pages = sysconf(_SC_PHYS_PAGES);
    long page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0)
        return 1024;
    return (uint64_t)pages * (uint64_t)page / MB;
}

void pool_knobs_default(struct pool_knobs *k)
{
    memset(k, 0, sizeof(*k));
    for (int i = 0; i < SANDBOX_KIND_COUNT; i++)
        k->stem_cells[i] = POOL_STEM_CELLS_DEFAULT;
    k->keepalive_ms = POOL_KEEPALIVE_MS_DEFAULT;
    k->min_warm = POOL_MIN_WARM_DEFAULT;
    k->max_instances = POOL_MAX_INSTANCES_DEFAULT;
    k->max_calls_per_instance = POOL_MAX_CALLS_DEFAULT;
    k->queue_length = POOL_QUEUE_LENGTH_DEFAULT;
    k->queue_timeout_ms = POOL_QUEUE_TIMEOUT_MS_DEFAULT;
    k->memory_budget_mb = host_memory_mb() / 2;
    k->scale_out_wait_us = POOL_SCALE_OUT_WAIT_US_DEFAULT;
    k->zygote_prefork = POOL_ZYGOTE_PREFORK_DEFAULT;
}

static int knob_int(const json_t *v, const char *path, int64_t min, int64_t max, int64_t *out,
                    struct ember_error *err)
{
    if (!json_is_integer(v))
        return ember_error_set(err, -EINVAL, "%s: must be an integer between %" PRId64
                                             " and %" PRId64, path, min, max);
    json_int_t x = json_integer_value(v);
    if (x < min || x > max)
        return ember_error_set(err, -EINVAL, "%s: must be an integer between %" PRId64
                                             " and %" PRId64, path, min, max);
    *out = x;
    return 0;
}

static void knob_store(struct pool_knobs *k, enum knob_field f, int64_t v)
{
    switch (f) {
    case K_KEEPALIVE_MS: k->keepalive_ms = (uint64_t)v; break;
    case K_MIN_WARM: k->min_warm = (uint32_t)v; break;
    case K_MAX_INSTANCES: k->max_instances = (uint32_t)v; break;
    case K_MAX_CALLS: k->max_calls_per_instance = (uint64_t)v; break;
    case K_QUEUE_LENGTH: k->queue_length = (uint32_t)v; break;
    case K_QUEUE_TIMEOUT_MS: k->queue_timeout_ms = (uint64_t)v; break;
    case K_MEMORY_BUDGET_MB: k->memory_budget_mb = (uint64_t)v; break;
    case K_SCALE_OUT_WAIT_US: k->scale_out_wait_us = (uint64_t)v; break;
    case K_ZYGOTE_PREFORK: k->zygote_prefork = (uint32_t)v; break;
    }
}

static int64_t knob_load(const struct pool_knobs *k, enum knob_field f)
{
    switch (f) {
    case K_KEEPALIVE_MS: return (int64_t)k->keepalive_ms;
    case K_MIN_WARM: return k->min_warm;
    case K_MAX_INSTANCES: return k->max_instances;
    case K_MAX_CALLS: return (int64_t)k->max_calls_per_instance;
    case K_QUEUE_LENGTH: return k->queue_length;
    case K_QUEUE_TIMEOUT_MS: return (int64_t)k->queue_timeout_ms;
    case K_MEMORY_BUDGET_MB: return (int64_t)k->memory_budget_mb;
    case K_SCALE_OUT_WAIT_US: return (int64_t)k->scale_out_wait_us;
    case K_ZYGOTE_PREFORK: return k->zygote_prefork;
    }
    return 0;
}

static int64_t *fn_knob_slot(struct pool_fn_knobs *k, enum knob_field f)
{
    switch (f) {
    case K_KEEPALIVE_MS: return &k->keepalive_ms;
    case K_MIN_WARM: return &k->min_warm;
    case K_MAX_INSTANCES: return &k->max_instances;
    case K_MAX_CALLS: return &k->max_calls_per_instance;
    case K_QUEUE_LENGTH: return &k->queue_length;
    case K_QUEUE_TIMEOUT_MS: return &k->queue_timeout_ms;
    case K_SCALE_OUT_WAIT_US: return &k->scale_out_wait_us;
    case K_ZYGOTE_PREFORK: return &k->zygote_prefork;
    default: return NULL;
    }
}

static const struct knob_desc *knob_find(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(knob_table); i++)
        if (strcmp(knob_table[i].name, name) == 0)
            return &knob_table[i];
    return NULL;
}

static int parse_stem_cells(const json_t *v, struct pool_knobs *k, struct ember_error *err)
{
    int64_t n;
    if (json_is_integer(v)) {
        int r = knob_int(v, "stem_cells", 0, POOL_STEM_CELLS_MAX, &n, err);
        if (r < 0)
            return r;
        for (int i = 0; i < SANDBOX_KIND_COUNT; i++)
            k->stem_cells[i] = (uint32_t)n;
        return 0;
    }
    if (!json_is_object(v))
        return ember_error_set(err, -EINVAL,
                               "stem_cells: must be an integer or an object of backend counts");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val)
    {
        enum sandbox_kind kind;
        char path[96];
        snprintf(path, sizeof(path), "stem_cells.%s", key);
        if (sandbox_kind_parse(key, &kind) < 0)
            return ember_error_set(err, -EINVAL, "%s: unknown backend (container, microvm)",
                                   path);
        int r = knob_int(val, path, 0, POOL_STEM_CELLS_MAX, &n, err);
        if (r < 0)
            return r;
        k->stem_cells[kind] = (uint32_t)n;
    }
    return 0;
}

int pool_knobs_parse(const json_t *obj, struct pool_knobs *k, struct ember_error *err)
{
    if (!json_is_object(obj))
        return ember_error_set(err, -EINVAL, "pool settings: must be a JSON object");
    struct pool_knobs tmp = *k;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        if (strcmp(key, "functions") == 0)
            continue; /* per-function overrides: pool_configure */
        if (strcmp(key, "stem_cells") == 0) {
            int r = parse_stem_cells(val, &tmp, err);
            if (r < 0)
                return r;
            continue;
        }
        const struct knob_desc *d = knob_find(key);
        if (!d)
            return ember_error_set(err, -EINVAL, "%s: unknown pool setting", key);
        int64_t n;
        int r = knob_int(val, key, d->min, d->max, &n, err);
        if (r < 0)
            return r;
        knob_store(&tmp, d->field, n);
    }
    if (tmp.min_warm > tmp.max_instances)
        return ember_error_set(err, -EINVAL, "min_warm: must not exceed max_instances (%u)",
                               tmp.max_instances);
    *k = tmp;
    return 0;
}

void pool__fn_knobs_clear(struct pool_fn_knobs *k)
{
    k->keepalive_ms = k->min_warm = k->max_instances = -1;
    k->max_calls_per_instance = k->queue_length = k->queue_timeout_ms = -1;
    k->scale_out_wait_us = k->zygote_prefork = -1;
}

int pool__fn_knobs_parse(const json_t *obj, struct pool_fn_knobs *k, const char *name,
                         struct ember_error *err)
{
    if (json_is_null(obj)) {
        pool__fn_knobs_clear(k);
        return 0;
    }
    if (!json_is_object(obj))
        return ember_error_set(err, -EINVAL, "functions.%s: must be an object or null", name);
    struct pool_fn_knobs tmp = *k;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        char path[160];
        snprintf(path, sizeof(path), "functions.%s.%s", name, key);
        const struct knob_desc *d = knob_find(key);
        if (!d || !d->per_function)
            return ember_error_set(err, -EINVAL, "%s: unknown per-function setting", path);
        int64_t *slot = fn_knob_slot(&tmp, d->field);
        if (json_is_null(val)) {
            *slot = -1;
            continue;
        }
        int r = knob_int(val, path, d->min, d->max, slot, err);
        if (r < 0)
            return r;
    }
    *k = tmp;
    return 0;
}

json_t *pool__fn_knobs_json(const struct pool_fn_knobs *k)
{
    json_t *o = json_object();
    for (size_t i = 0; i < ARRAY_SIZE(knob_table); i++) {
        if (!knob_table[i].per_function)
            continue;
        int64_t v = *fn_knob_slot((struct pool_fn_knobs *)k, knob_table[i].field);
        if (v >= 0)
            json_object_set_new(o, knob_table[i].name, json_integer(v));
    }
    return o;
}

#define FN_KNOB(getter, type, field, global)                                                       \
    type getter(const struct pool *p, const struct pool_fn *fn)                                   \
    {                                                                                              \
        if (fn && fn->over.field >= 0)                                                             \
            return (type)fn->over.field;                                                           \
        return (type)p->knobs.global;                                                              \
    }

FN_KNOB(pool__fn_keepalive_ms, uint64_t, keepalive_ms, keepalive_ms)
FN_KNOB(pool__fn_min_warm, uint32_t, min_warm, min_warm)
FN_KNOB(pool__fn_max_instances, uint32_t, max_instances, max_instances)
FN_KNOB(pool__fn_max_calls, uint64_t, max_calls_per_instance, max_calls_per_instance)
FN_KNOB(pool__fn_queue_length, uint32_t, queue_length, queue_length)
FN_KNOB(pool__fn_queue_timeout_ms, uint64_t, queue_timeout_ms, queue_timeout_ms)
FN_KNOB(pool__fn_scale_out_wait_us, uint64_t, scale_out_wait_us, scale_out_wait_us)
FN_KNOB(pool__fn_zygote_prefork, uint32_t, zygote_prefork, zygote_prefork)

struct pool_fn *pool__fn_get(struct pool *p, const char *name, bool create)
{
    struct list *pos;
    for (pos = p->functions.next; pos != &p->functions; pos = pos->next) {
        struct pool_fn *fn = list_entry(pos, struct pool_fn, link);
        if (strcmp(fn->name, name) == 0)
            return fn;
    }
    if (!create)
        return NULL;
    struct pool_fn *fn = calloc(1, sizeof(*fn));
    if (!fn)
        return NULL;
    snprintf(fn->name, sizeof(fn->name), "%s", name);
    pool__fn_knobs_clear(&fn->over);
    list_init(&fn->zygotes);
    list_init(&fn->instances);
    list_init(&fn->queue);
    list_insert_tail(&p->functions, &fn->link);
    return fn;
}

int pool_configure(struct pool *p, const json_t *patch, struct ember_error *err)
{
    struct pool_knobs k = p->knobs;
    int r = pool_knobs_parse(patch, &k, err);
    if (r < 0)
        return r;

    /* Validate every per-function override before applying any. */
    json_t *fns = json_object_get(patch, "functions");
    if (fns && !json_is_object(fns))
        return ember_error_set(err, -EINVAL, "functions: must be an object of function names");
    const char *name;
    json_t *val;
    json_object_foreach(fns, name, val)
    {
        if (!store_name_valid(name, strlen(name)))
            return ember_error_set(err, -EINVAL, "functions.%s: not a valid function name",
                                   name);
        struct pool_fn *existing = pool__fn_get(p, name, false);
        struct pool_fn_knobs tmp;
        if (existing)
            tmp = existing->over;
        else
            pool__fn_knobs_clear(&tmp);
        r = pool__fn_knobs_parse(val, &tmp, name, err);
        if (r < 0)
            return r;
    }

    p->knobs = k;
    json_object_foreach(fns, name, val)
    {
        struct pool_fn *fn = pool__fn_get(p, name, true);
        if (fn)
            pool__fn_knobs_parse(val, &fn->over, name, NULL);
    }
    pool__knobs_changed(p);
    return 0;
}

json_t *pool_json(struct pool *p)
{
    json_t *o = json_object();
    json_t *stems = json_object();
    for (int k = 0; k < SANDBOX_KIND_COUNT; k++)
        json_object_set_new(stems, sandbox_kind_name((enum sandbox_kind)k),
                            json_integer(p->knobs.stem_cells[k]));
    json_object_set_new(o, "stem_cells", stems);
    for (size_t i = 0; i < ARRAY_SIZE(knob_table); i++)
        json_object_set_new(o, knob_table[i].name,
                            json_integer(knob_load(&p->knobs, knob_table[i].field)));

    json_t *fns = json_object();
    struct list *pos;
    for (pos = p->functions.next; pos != &p->functions; pos = pos->next) {
        struct pool_fn *fn = list_entry(pos, struct pool_fn, link);
        json_t *over = pool__fn_knobs_json(&fn->over);
        if (json_object_size(over) > 0)
            json_object_set_new(fns, fn->name, over);
        else
            json_decref(over);
    }
    json_object_set_new(o, "functions", fns);

    json_t *state = json_object();
    json_t *ready = json_object();
    for (int k = 0; k < SANDBOX_KIND_COUNT; k++) {
        json_t *b = json_object();
        json_object_set_new(b, "available", json_boolean(p->be[k] != NULL));
        if (!p->be[k] && p->be_err[k][0])
            json_object_set_new(b, "error", json_string(p->be_err[k]));
        json_object_set_new(b, "stem_cells_ready", json_integer(p->n_stems[k]));
        json_object_set_new(b, "stem_cells_starting", json_integer(p->n_stems_starting[k]));
        json_object_set_new(ready, sandbox_kind_name((enum sandbox_kind)k), b);
    }
    json_object_set_new(state, "backends", ready);
    json_object_set_new(state, "default_backend", json_string(sandbox_kind_name(p->default_kind)));
    json_object_set_new(state, "memory_charged_bytes", json_integer((json_int_t)p->mem_charged));
    json_object_set_new(state, "memory_peak_bytes", json_integer((json_int_t)p->mem_peak));
    json_object_set_new(state, "memory_budget_bytes",
                        json_integer((json_int_t)(p->knobs.memory_budget_mb * MB)));
    json_object_set_new(state, "sandboxes", json_integer(p->live_sandboxes));
    json_object_set_new(state, "evictions", json_integer((json_int_t)p->evictions));
    json_object_set_new(state, "forked_ahead", json_integer((json_int_t)p->forked_ahead));
    json_object_set_new(state, "rejected", json_integer((json_int_t)p->rejected));
    json_object_set_new(o, "state", state);
    return o;
}
