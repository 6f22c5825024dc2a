/* pool.h - the warm pool: stem cells, zygotes, instances, recycling policy,
 * admission and the host memory ledger.
 *
 * The gateway knows the pool only through this header; the pool knows
 * sandboxes only through sandbox/sandbox.h.
 *
 * Acquire order for a call (the Server-Timing "acquire" desc):
 *   warm     an idle instance of the function (capacity left)
 *   zygote   a new instance forked from the function's zygote
 *   stem     a ready stem cell specialized into the zygote, then forked
 *   snapshot a microVM zygote restored from the function's snapshot file
 *   cold     nothing ready: create, specialize, fork
 * Past max_instances a call waits in the function's bounded queue; past the
 * queue (or the queue timeout, or the memory budget) it gets 429.
 *
 * Every function here runs on the loop thread and never blocks.
 */
#ifndef EMBER_POOL_POOL_H
#define EMBER_POOL_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

#include "common/error.h"
#include "functions/store.h"
#include "sandbox/sandbox.h"

struct pool;
struct pool_ticket;

/* Knob defaults; each is a key of GET/PATCH /v1/pool and of --config. */
#define POOL_STEM_CELLS_DEFAULT 2          /* "stem_cells": per backend */
#define POOL_KEEPALIVE_MS_DEFAULT 600000   /* "keepalive_ms": idle TTL (10 min) */
#define POOL_MIN_WARM_DEFAULT 0            /* "min_warm": provisioned instances */
#define POOL_MAX_INSTANCES_DEFAULT 16      /* "max_instances": per function */
#define POOL_MAX_CALLS_DEFAULT 0           /* "max_calls_per_instance": 0 = no limit */
#define POOL_QUEUE_LENGTH_DEFAULT 64       /* "queue_length": per function */
#define POOL_QUEUE_TIMEOUT_MS_DEFAULT 10000 /* "queue_timeout_ms" */
/* "memory_budget_mb": default half of the host's physical memory. */
#define POOL_STEM_MEMORY_MB_DEFAULT 64     /* charge of a stem cell */
#define POOL_SCALE_OUT_WAIT_US_DEFAULT 500 /* "scale_out_wait_us": a call waits for a
                                              busy instance rather than make one if it
                                              should be served within this; 0 = never
                                              wait (calls.c worth_waiting) */
#define POOL_SCALE_OUT_STUCK 10         /* ...unless no instance finished a call for
                                           this many times that (stuck) */
#define POOL_REFILL_DEFER_MAX_MS 20        /* longest a stem refill yields to acquisitions */
#define POOL_STEM_STARTS_MAX 2             /* stem cells being made at once, per backend
                                              (2 cores: more did not raise the rate) */

/* "zygote_prefork": instances a zygote keeps forked ahead (0 or 1), each
 * charged as one more instance of its function. */
#define POOL_ZYGOTE_PREFORK_DEFAULT 1

#define POOL_STEM_CELLS_MAX 256
#define POOL_MAX_INSTANCES_MAX 1024
#define POOL_QUEUE_LENGTH_MAX 100000

/** Per-function overrides; a field < 0 means "use the global knob". */
struct pool_fn_knobs {
    int64_t keepalive_ms;
    int64_t min_warm;
    int64_t max_instances;
    int64_t max_calls_per_instance;
    int64_t queue_length;
    int64_t queue_timeout_ms;
    int64_t scale_out_wait_us;
    int64_t zygote_prefork;
};

struct pool_knobs {
    uint32_t stem_cells[SANDBOX_KIND_COUNT];
    uint64_t keepalive_ms;
    uint32_t min_warm;
    uint32_t max_instances;
    uint64_t max_calls_per_instance;
    uint32_t queue_length;
    uint64_t queue_timeout_ms;
    uint64_t memory_budget_mb;
    uint64_t scale_out_wait_us;
    uint32_t zygote_prefork;
};

/** Fill @k with the defaults (memory budget from /proc/meminfo). */
void pool_knobs_default(struct pool_knobs *k);

/**
 * Apply a JSON object of knobs (PATCH /v1/pool, --config) to @k. Every key is
 * validated (type and range) before anything changes; unknown keys fail.
 * "stem_cells" takes an integer (every backend) or {"container": n, "microvm": n}.
 * "functions": {"<name>": {per-function knobs}} sets overrides (null clears).
 * -EINVAL with a message naming the key. Used by pool_configure.
 */
int pool_knobs_parse(const json_t *obj, struct pool_knobs *k, struct ember_error *err);

enum pool_acquire {
    POOL_ACQUIRE_WARM,
    POOL_ACQUIRE_ZYGOTE,
    POOL_ACQUIRE_STEM,
    POOL_ACQUIRE_SNAPSHOT,
    POOL_ACQUIRE_COLD,
};
#define POOL_ACQUIRE_COUNT 5
const char *pool_acquire_name(enum pool_acquire a);

/** The outcome of one invocation, valid during the callback only. */
struct pool_result {
    uint64_t invocation_id;
    int http_status;          /* the function's, or the error's (429, 502, 503, 504) */
    enum sandbox_error error; /* SANDBOX_OK when the function answered */
    const char *error_name;   /* short error ("function timed out", ...) */
    const char *detail;       /* "out of memory", "killed by signal 11 (SIGSEGV)", ... */
    uint32_t retry_after_s;   /* for 429 */
    const struct sandbox_header *headers;
    size_t n_headers;
    const void *body;
    size_t body_len;
    enum pool_acquire acquire;
    bool acquired;            /* false if it never reached a sandbox */
    uint64_t queue_ns, acquire_ns, init_ns, run_ns;
    uint64_t inside_ns; /* of run_ns, what the sandbox says it took (0: not said) */
};

typedef void (*pool_result_cb)(const struct pool_result *res, void *data);

struct pool_config {
    uv_loop_t *loop;
    struct store *store;
    enum sandbox_kind default_kind;                       /* --backend */
    struct sandbox_backend *backends[SANDBOX_KIND_COUNT]; /* NULL = unavailable */
    const char *backend_errors[SANDBOX_KIND_COUNT];       /* why unavailable */
    struct pool_knobs knobs;
};

/** Create the pool; starts filling stem cells. */
int pool_open(const struct pool_config *cfg, struct pool **out, struct ember_error *err);

/**
 * Drain: refuse new calls (503), fail queued ones (503), let running calls
 * finish, destroy every sandbox, then call @done. The pool is freed after.
 */
void pool_shutdown(struct pool *p, void (*done)(void *data), void *data);

/** A function was deployed (new version) or found at start: retire old
 *  instances, honour min_warm. Takes its own reference to @rec. */
void pool_function_update(struct pool *p, struct function_record *rec);
/** A function was deleted: queued calls fail (404), running calls finish,
 *  idle instances and the zygote are destroyed. */
void pool_function_remove(struct pool *p, const char *name);

/**
 * Invoke @rec with @call (copied). @cb runs exactly once, on the loop thread,
 * possibly before pool_invoke returns (immediate refusal). *ticket (may be
 * NULL) lets the caller cancel: pool_ticket_cancel drops a queued call or
 * detaches a running one (its result is discarded; @cb is not called).
 */
void pool_invoke(struct pool *p, struct function_record *rec, const struct sandbox_call *call,
                 pool_result_cb cb, void *data, struct pool_ticket **ticket);
void pool_ticket_cancel(struct pool_ticket *t);

/** Current knobs as JSON (GET /v1/pool adds state). New reference. */
json_t *pool_json(struct pool *p);
/** Validate and apply a knob patch live. -EINVAL + message naming the key. */
int pool_configure(struct pool *p, const json_t *patch, struct ember_error *err);
/** Counters, instances by state, latency summaries of one function. New ref. */
json_t *pool_function_json(struct pool *p, const char *name);
/** Recent log lines of a function: [{"time":..,"stream":"stdout","line":..}]. */
json_t *pool_function_logs(struct pool *p, const char *name, size_t max_lines);

/** Append the pool's metrics in Prometheus text format to a malloc'd buffer. */
struct pool_textbuf {
    char *data;
    size_t len, cap;
};
void pool_metrics_write(struct pool *p, struct pool_textbuf *out);
void pool_textbuf_printf(struct pool_textbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
